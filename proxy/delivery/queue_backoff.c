/* Exponential backoff with jitter for spooled messages (see queue_backoff.h). */
#include "proxy/delivery/queue_backoff.h"

void queue_backoff_defaults(struct queue_backoff *p)
{
    p->first = QUEUE_BACKOFF_FIRST;
    p->max = QUEUE_BACKOFF_MAX;
    p->jitter_pct = QUEUE_BACKOFF_JITTER_PCT;
    p->lifetime = QUEUE_LIFETIME_DEFAULT;
}

int64_t queue_backoff_delay(const struct queue_backoff *p, uint32_t attempts)
{
    int64_t first = p->first < 1 ? 1 : p->first;
    int64_t max = p->max < first ? first : p->max;
    int64_t d = first;
    uint32_t i;
    /* Doubling stops at max, so the loop is short and never overflows. */
    for (i = 1; i < attempts && d < max; i++)
        d = d > max / 2 ? max : d * 2;
    return d < max ? d : max;
}

int64_t queue_backoff_next_attempt(const struct queue_backoff *p, uint32_t attempts, int64_t now,
                                   uint32_t random)
{
    int64_t d = queue_backoff_delay(p, attempts);
    unsigned pct = p->jitter_pct > 100 ? 100 : p->jitter_pct;
    uint64_t span = (uint64_t)(d / 100 * (int64_t)pct + d % 100 * (int64_t)pct / 100);
    /* span * random / 2^32 without overflow: span = hi * 2^32 + lo. */
    int64_t cut = (int64_t)((span >> 32) * random + (((span & 0xffffffffu) * random) >> 32));
    d -= cut;
    if (d < 1)
        d = 1;
    return now > INT64_MAX - d ? INT64_MAX : now + d;
}

int queue_backoff_expired(const struct queue_backoff *p, int64_t created, int64_t now)
{
    if (now <= created)
        return 0;
    return now - created >= p->lifetime;
}
