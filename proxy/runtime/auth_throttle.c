/* Failed AUTH per source: growing delays, then a block. See auth_throttle.h. A flat array
 * searched linearly: max_entries is a few thousand, and the search is a few microseconds next
 * to a password check's milliseconds. */
#include "proxy/runtime/auth_throttle.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/sockaddr_text.h"

struct entry {
    struct auth_throttle_key key;
    int used;
    unsigned count;        /* failures since first_ms */
    int64_t first_ms;      /* the first failure of the current window */
    int64_t last_ms;       /* the latest failure: what eviction looks at */
    int64_t blocked_until; /* 0: not blocked */
};

struct auth_throttle {
    struct entry *e;
    size_t cap;
    auth_throttle_clock_fn now;
    void *clock_arg;
    struct auth_throttle_limits lim;
};

static int64_t mono_ms(void *arg)
{
    struct timespec ts;
    (void)arg;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct auth_throttle *auth_throttle_new(size_t max_entries, auth_throttle_clock_fn now,
                                        void *clock_arg)
{
    struct auth_throttle *t = calloc(1, sizeof(*t));
    if (!t || max_entries == 0)
        goto fail;
    t->e = calloc(max_entries, sizeof(*t->e));
    if (!t->e)
        goto fail;
    t->cap = max_entries;
    t->now = now ? now : mono_ms;
    t->clock_arg = clock_arg;
    t->lim = (struct auth_throttle_limits){.fail_limit = 5,
                                           .window_ms = 600000,
                                           .block_ms = 900000,
                                           .delay_first_ms = 500,
                                           .delay_max_ms = 8000};
    return t;
fail:
    free(t);
    return NULL;
}

void auth_throttle_free(struct auth_throttle *t)
{
    if (!t)
        return;
    free(t->e);
    free(t);
}

void auth_throttle_set_limits(struct auth_throttle *t, const struct auth_throttle_limits *lim)
{
    if (t && lim)
        t->lim = *lim;
}

int auth_throttle_key_of(const struct sockaddr *sa, struct auth_throttle_key *key)
{
    static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memset(key, 0, sizeof(*key));
    if (sa->sa_family == AF_INET) {
        key->b[0] = 4;
        memcpy(key->b + 1, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const unsigned char *a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
        if (memcmp(a, v4mapped, sizeof(v4mapped)) == 0) {
            key->b[0] = 4;
            memcpy(key->b + 1, a + 12, 4);
        } else {
            key->b[0] = 6;
            memcpy(key->b + 1, a, 8); /* the /64 */
        }
        return 0;
    }
    return -1;
}

const char *auth_throttle_key_str(const struct auth_throttle_key *key, char *buf, size_t len)
{
    char a[SOCKADDR_TEXT_MAX] = "";
    if (key->b[0] == 4) {
        (void)sockaddr_text_bytes(AF_INET, key->b + 1, a, sizeof(a));
        snprintf(buf, len, "%s", a);
    } else {
        unsigned char full[16] = {0};
        memcpy(full, key->b + 1, 8);
        (void)sockaddr_text_bytes(AF_INET6, full, a, sizeof(a));
        snprintf(buf, len, "%s/64", a);
    }
    return buf;
}

static struct entry *find(struct auth_throttle *t, const struct auth_throttle_key *key)
{
    for (size_t i = 0; i < t->cap; i++)
        if (t->e[i].used && memcmp(&t->e[i].key, key, sizeof(*key)) == 0)
            return &t->e[i];
    return NULL;
}

/* Nothing left to remember: no block in force and the window is over. */
static int expired(const struct auth_throttle *t, const struct entry *e, int64_t now)
{
    if (e->blocked_until)
        return e->blocked_until <= now;
    return now - e->first_ms >= t->lim.window_ms;
}

/* A slot for a new source: a free or expired one, else the least recently failing unblocked
 * one, else (every slot blocked) the least recently failing one. */
static struct entry *slot_for(struct auth_throttle *t, int64_t now)
{
    struct entry *old_free = NULL, *old_any = NULL;
    for (size_t i = 0; i < t->cap; i++) {
        struct entry *e = &t->e[i];
        if (!e->used || expired(t, e, now))
            return e;
        if (!old_any || e->last_ms < old_any->last_ms)
            old_any = e;
        if (e->blocked_until <= now && (!old_free || e->last_ms < old_free->last_ms))
            old_free = e;
    }
    return old_free ? old_free : old_any;
}

int auth_throttle_blocked(struct auth_throttle *t, const struct auth_throttle_key *key,
                          int64_t *remaining_ms)
{
    if (!t)
        return 0;
    int64_t now = t->now(t->clock_arg);
    const struct entry *e = find(t, key);
    if (!e || e->blocked_until <= now)
        return 0;
    if (remaining_ms)
        *remaining_ms = e->blocked_until - now;
    return 1;
}

static unsigned delay_for(const struct auth_throttle_limits *lim, unsigned count)
{
    uint64_t d = lim->delay_first_ms;
    for (unsigned i = 1; i < count && d < lim->delay_max_ms; i++)
        d *= 2;
    return d < lim->delay_max_ms ? (unsigned)d : lim->delay_max_ms;
}

unsigned auth_throttle_failed(struct auth_throttle *t, const struct auth_throttle_key *key,
                              int *blocked_now)
{
    *blocked_now = 0;
    if (!t)
        return 0;
    int64_t now = t->now(t->clock_arg);
    struct entry *e = find(t, key);
    if (!e) {
        e = slot_for(t, now);
        memset(e, 0, sizeof(*e));
        e->used = 1;
        e->key = *key;
    } else if (expired(t, e, now)) {
        e->count = 0;
        e->blocked_until = 0;
    }
    if (e->count == 0)
        e->first_ms = now;
    if (e->count < UINT32_MAX)
        e->count++;
    e->last_ms = now;
    if (!e->blocked_until && e->count >= t->lim.fail_limit) {
        e->blocked_until = now + t->lim.block_ms;
        if (e->blocked_until <= now)
            e->blocked_until = now + 1;
        *blocked_now = 1;
    }
    return delay_for(&t->lim, e->count);
}

size_t auth_throttle_tracked(const struct auth_throttle *t)
{
    size_t n = 0;
    for (size_t i = 0; t && i < t->cap; i++)
        n += t->e[i].used;
    return n;
}
