/* The queue runner: delivers what the spool (store/spool.h) holds, in order per account, and
 * never loses it.
 *
 * Every committed message is in memory here too (its envelope: at most SPOOL_MAX_RCPTS
 * addresses; the body stays on disk). Per account, messages go in creation order, one at a time
 * (the upstream pool paces them: rate_limit and max_upstream_connections). Delivered recipients
 * leave the envelope; permanently refused ones are bounced (an RFC 3464 DSN, proxy/smtp/dsn.h,
 * committed to the spool as a new message from the null sender <>, to bounce_to or the envelope
 * sender, and delivered like any other: so a bounce survives a restart, and is never bounced
 * itself); temporary failures wait (proxy/delivery/queue_backoff.h: 60 s doubling to 1 h, jitter)
 * and after max_queue_lifetime are bounced as expired (4.4.7).
 *
 * A failure of the connection (upstream down, TLS, token, 421, 4.3.2 throttled) stops the
 * account's run: the next message is not tried against a dead upstream, and nothing overtakes
 * the message at the head. A failure of one message (a 4xx to its RCPT or DATA) does not stop
 * the others.
 *
 * Every state change (attempts, next attempt, last error, held) is written to the envelope
 * (spool_update_state) before it takes effect; a message is removed from the spool only after
 * the upstream accepted it (or it was bounced or deleted): at-least-once delivery, with a
 * duplicate only if the proxy dies between the upstream's 250 and the removal. */
#ifndef SOP_QUEUE_H
#define SOP_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/smtp/dsn.h"
#include "proxy/runtime/metrics.h"
#include "store/spool_envelope.h"

struct delivery_ctx;
struct server_gen;
struct spool;
struct spool_body;
struct cfg_account;
struct txn_result;
struct queue;
typedef struct cJSON cJSON;

/* Opens STATE_DIR/spool (store/spool.h: takes its lock). ctx: the loop, counters and pools
 * (borrowed; its pools NULL: nothing is ever attempted, only expiry, as in unit tests). gen: the
 * current configuration (borrowed; queue_reconfigured hands over the next). do_fsync 0 only for
 * measurements. Nothing runs until queue_recover. NULL with err. */
struct queue *queue_new(const struct delivery_ctx *ctx, struct server_gen *gen,
                        const char *state_dir, int do_fsync, char *err, size_t errlen);
/* Cancels attempts in flight (their messages stay in the spool) and closes the spool. Accepts
 * NULL. */
void queue_free(struct queue *q);
/* The spool, for the device side's writers (spool_writer_new, spool_writer_commit). */
struct spool *queue_spool(struct queue *q);

/* Start-up: spool_scan, then schedule every committed message (those found due at once).
 * Logs event=queue_recovered messages=N (and the scan's quarantines). 0 ok, -1 with err. */
int queue_recover(struct queue *q, char *err, size_t errlen);
/* A message the device side just committed: schedule it (env is copied; its attempts,
 * next_attempt and last_error are kept, so a direct attempt that failed counts). 0 ok, -1 out of
 * memory (the message is still in the spool: it is delivered after the next restart). */
int queue_submit(struct queue *q, const struct spool_envelope *env);
/* 1 when account has messages waiting that are not held, or its run is stopped after a
 * connection failure: a new message of that account goes into the queue behind them rather than
 * straight upstream (order per account). */
int queue_account_waiting(const struct queue *q, const char *account);

/* When to try again after the attempts-th failed attempt ending at now: the backoff schedule
 * (proxy/delivery/queue_backoff.h) with its random jitter. One place for the queue's retries and
 * for a direct-then-spool attempt that failed before its message was queued. */
int64_t queue_next_attempt(const struct queue *q, uint32_t attempts, int64_t now);
/* The same, unless the upstream said when (retry_after_ms > 0: Graph's Retry-After on 429 and
 * 503): then that, rounded up to whole seconds, at least one. */
int64_t queue_retry_at(const struct queue *q, uint32_t attempts, int64_t now,
                       int64_t retry_after_ms);

/* The account's upstream failed as a connection (down, TLS, token, 421, 4.3.2) on an attempt
 * made outside the queue (direct-then-spool while the device waited): its run waits until then
 * (wall clock seconds), as after a connection failure of its own, so the message just queued
 * stays at the head and nothing overtakes it. `queue flush` ends the wait. */
void queue_account_stop(struct queue *q, const char *account, int64_t until);

/* Bounce the recipients of env whose status in res is TXN_PERM (reason REFUSED), or every
 * recipient of env (res NULL: reason must be EXPIRED). message/message_len: the start of the
 * original message (its header block is quoted; NULL: none). remote_mta: the upstream's host
 * (NULL: none). Builds the DSN (dsn_build), commits it to the spool as a message of the same
 * account from <> and submits it. 1 a bounce was queued; 0 none was due (null sender, no
 * permanent failure); -1 with err (logged by the caller; the original is then kept only if it
 * still has recipients to retry). */
int queue_bounce(struct queue *q, const struct cfg_account *acct, const struct spool_envelope *env,
                 enum dsn_reason reason, const struct txn_result *res, const char *remote_mta,
                 const char *message, size_t message_len, char *err, size_t errlen);

/* A reload made gen the current configuration (call it before the old one may be freed): every
 * account's run looks again, so an account that came back delivers at once rather than at its
 * next look (5 minutes), and a new max_queue_lifetime applies. Accepts NULL. */
void queue_reconfigured(struct queue *q, struct server_gen *gen);
/* Shutting down (SIGTERM): no new attempt starts; those in flight finish. Accepts NULL. */
void queue_stopping(struct queue *q);

/* The start of a message for queue_bounce (its header block is what a DSN quotes), read from b
 * (a committed body or a writer's reader; taken and freed, NULL allowed): *buf malloc'd (NULL
 * and 0 when nothing could be read). */
void queue_read_head(struct spool_body *b, char **buf, size_t *len);

/* The control socket's `queue` commands. */
/* Every queued message, oldest first: [{"id","account","device","from","rcpts":[...],"nrcpts",
 * "size","created","age","attempts","next_attempt","last_error","state":"queued|sending|held"}]
 * ("rcpts": the first 20, "nrcpts": how many there are). NULL: out of memory. */
cJSON *queue_list_json(const struct queue *q);
/* id NULL: every message that is not held. Due now; accounts whose run stopped start again.
 * 0 ok; -1 no such message (err). */
int queue_flush(struct queue *q, const char *id, char *err, size_t errlen);
/* Not delivered until released (durable: survives a restart). 0 ok; -1 with err. */
int queue_hold(struct queue *q, const char *id, char *err, size_t errlen);
int queue_release(struct queue *q, const char *id, char *err, size_t errlen);
/* Removed from the spool without delivery or bounce (an attempt in flight is cancelled).
 * 0 ok; -1 with err. */
int queue_delete(struct queue *q, const char *id, char *err, size_t errlen);

/* struct queue_stats is in metrics.h, which renders it. */
void queue_stats(const struct queue *q, struct queue_stats *st);

#endif
