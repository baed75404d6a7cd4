/* When to retry a spooled message, and when to give up on it. Pure: the clock and the randomness
 * come from the caller, so the schedule is exact in tests.
 *
 * The n-th retry waits first * 2^(n-1) seconds, capped at max, then shortened by a random share
 * of up to jitter_pct percent so that messages that failed together (an outage) do not all come
 * back in the same second. Defaults: 60 s doubling to 1 h, 25 % jitter, 5 days lifetime. Postfix
 * waits longer (minimal_backoff_time 300 s, maximal_backoff_time 4000 s, maximal_queue_lifetime
 * 5 d); a copier's scan is more urgent and Exchange's throttling windows are about a minute. */
#ifndef SOP_QUEUE_BACKOFF_H
#define SOP_QUEUE_BACKOFF_H

#include <stdint.h>

#define QUEUE_BACKOFF_FIRST 60
#define QUEUE_BACKOFF_MAX 3600
#define QUEUE_BACKOFF_JITTER_PCT 25
#define QUEUE_LIFETIME_DEFAULT (5 * 24 * 3600)

struct queue_backoff {
    int64_t first;       /* seconds before the first retry, >= 1 */
    int64_t max;         /* the longest wait, >= first */
    unsigned jitter_pct; /* 0..100 */
    int64_t lifetime;    /* max_queue_lifetime, seconds */
};

/* The defaults above. */
void queue_backoff_defaults(struct queue_backoff *p);
/* The wait after the attempts-th failed attempt, before jitter: first * 2^(attempts-1), at most
 * max (attempts 0 counts as 1). */
int64_t queue_backoff_delay(const struct queue_backoff *p, uint32_t attempts);
/* The time (seconds) of the next attempt after attempts failures, the last one at now. random is
 * uniform over 0..UINT32_MAX; 0 means no jitter. Always later than now. */
int64_t queue_backoff_next_attempt(const struct queue_backoff *p, uint32_t attempts, int64_t now,
                                   uint32_t random);
/* 1 if a message created at created has been queued for lifetime or longer at now: bounce it
 * (unless its sender is null) instead of retrying. A clock that went backwards is not expiry. */
int queue_backoff_expired(const struct queue_backoff *p, int64_t created, int64_t now);

#endif
