/* Pacing per account: at most per_minute messages in any 60 s (Exchange Online allows 30 per
 * minute per mailbox and answers 432 4.3.2 beyond) and at most max_conns upstream connections at
 * once (Exchange: 3 per mailbox). Pure: the caller passes a monotonic clock in milliseconds.
 *
 * A sliding window, not a token bucket: a bucket of 30 refilled at one per 2 s lets a 31st
 * message go 2 s after a burst of 30, which is 31 in a minute and a throttled mailbox. The window
 * keeps the send times of the last per_minute messages; one more may go once the oldest of them
 * is 60 s old. Excess waits (the caller schedules a retry at the time given); nothing is refused.
 */
#ifndef SOP_RATE_LIMIT_H
#define SOP_RATE_LIMIT_H

#include <stdint.h>

#define RATE_LIMIT_WINDOW_MS 60000
#define RATE_LIMIT_MAX_PER_MINUTE 100000
#define RATE_LIMIT_DEFAULT_PER_MINUTE 30
#define RATE_LIMIT_DEFAULT_CONNS 3

struct rate_limit;

/* per_minute 0: no rate limit; max_conns 0: no connection cap. NULL if per_minute exceeds
 * RATE_LIMIT_MAX_PER_MINUTE or memory is short. */
struct rate_limit *rate_limit_new(unsigned per_minute, unsigned max_conns);
void rate_limit_free(struct rate_limit *r); /* accepts NULL */
/* A new limiter of per_minute that remembers old's most recent send times (and connections), so
 * that a reload changing the rate does not open a fresh window: 30 sent a second ago still count
 * against the new limit. old may be NULL (then as rate_limit_new with no connection cap). NULL
 * as rate_limit_new. */
struct rate_limit *rate_limit_resized(const struct rate_limit *old, unsigned per_minute);

/* The earliest time (ms) at which one more message may start: now_ms if it may start now. */
int64_t rate_limit_msg_when(const struct rate_limit *r, int64_t now_ms);
/* The earliest time at which one more message may start once n others (waiting ahead of it)
 * have started, each as early as the window allows: rate_limit_msg_when for n = 0. */
int64_t rate_limit_msg_when_nth(const struct rate_limit *r, int64_t now_ms, unsigned n);
/* May a message start at now_ms? 1: yes, and it is counted; 0: not yet, *retry_ms (if not NULL)
 * is when it may. A message counts when it starts, whatever its outcome. */
int rate_limit_msg_take(struct rate_limit *r, int64_t now_ms, int64_t *retry_ms);

/* May one more upstream connection open? 1: yes, and it is counted (give it back with
 * rate_limit_conn_put when it closes); 0: at the cap, wait for a put. */
int rate_limit_conn_take(struct rate_limit *r);
void rate_limit_conn_put(struct rate_limit *r);
/* Connections currently counted. */
unsigned rate_limit_conns(const struct rate_limit *r);

#endif
