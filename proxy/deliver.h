/* One delivery attempt of a complete message over a leased upstream connection
 * (proxy/upstream_pool.h): MAIL FROM (the account's sender_rewrite applied; a null sender stays
 * null), RCPT TO for each recipient, DATA, the body read from a spool body reader (lines rewritten
 * when sender_rewrite = header, dot-stuffed, in batches, with backpressure), then the end marker.
 * Used by direct-then-spool while the device waits (reading the spool writer's file before the
 * commit) and by the queue runner (reading a committed message).
 *
 * The outcome is per recipient, as Postfix's smtp client keeps it: a 2xx to RCPT and to the end
 * of DATA is delivered; a 4xx anywhere (or no reply: connection lost, timeout) is temporary; a
 * 5xx is permanent. MAIL and DATA verdicts apply to every recipient still in play. */
#ifndef SOP_DELIVER_H
#define SOP_DELIVER_H

#include <stddef.h>

#include "store/spool_envelope.h"

struct upstream_conn;
struct cfg_account;
struct metrics;
struct spool_body;
struct deliver;

#define DELIVER_REPLY_MAX 512

enum deliver_status {
    DELIVER_OK = 0,   /* the upstream accepted it */
    DELIVER_TEMP = 1, /* try again later */
    DELIVER_PERM = 2, /* refused for good: bounce (or tell the waiting device) */
    /* (the whole message only) some recipients delivered, every other one refused for good:
     * the message is done (nothing to retry); bounce the PERM recipients */
    DELIVER_PARTIAL = 3,
};

struct deliver_rcpt_result {
    enum deliver_status status;
    /* the reply that decided it, first line only, log-safe ("550 5.1.10 RESOLVER.ADR..."), or the
     * proxy's own words when there was no reply ("451 4.4.2 connection lost during DATA") */
    char reply[DELIVER_REPLY_MAX];
};

struct deliver_result {
    /* OK: every recipient delivered; TEMP: some recipient temporary (others may be OK or PERM:
     * look at rcpts; retry only the TEMP ones); PERM: none delivered and none temporary;
     * PARTIAL: some delivered, the rest PERM, none temporary */
    enum deliver_status status;
    /* 1 when the failure was the connection's, not this message's: lost before or during the
     * transaction, 421, or 4.3.2 (throttled). The queue runner stops the account's run on it and
     * retries later, instead of trying the next message against a dead or throttling upstream. */
    int conn_failure;
    /* the reply the device would have heard for the whole message: the end-of-DATA reply when
     * some recipient was delivered, else the first refusal that decided the outcome */
    char reply[DELIVER_REPLY_MAX];
    const struct deliver_rcpt_result *rcpts; /* env->nrcpts entries, in envelope order */
    size_t nrcpts;
};

/* Called once, from the event loop; res is valid only during the call. The connection has been
 * given back to its pool (reusable or not) before cb runs: the caller no longer owns it. */
typedef void (*deliver_cb)(void *arg, const struct deliver_result *res);

/* Start delivering env's message, reading its body from body (positioned at the start; the
 * caller keeps ownership of env and body and frees them after cb, or after deliver_cancel;
 * SIZE= and size= in the log come from body, so env->size may still be 0 before a commit).
 * acct: the account's settings (sender_rewrite, mailbox). Takes the connection. m: the server's
 * counters (upstream replies to MAIL, RCPT and DATA; NULL: not counted). log_id: session= in
 * log lines (the device's session, or the queue id for the queue runner); queue_id= is
 * env->queue_id when set. NULL only when out of memory (the connection is then released as not
 * reusable, cb never runs). */
struct deliver *deliver_start(struct upstream_conn *c, const struct cfg_account *acct,
                              const struct spool_envelope *env, struct spool_body *body,
                              struct metrics *m, const char *log_id, deliver_cb cb, void *arg);
/* Stop: the connection is closed (the message is not delivered, unless the upstream already
 * said 250: the caller treats a cancelled attempt as not delivered, which is at-least-once). cb
 * does not run. Accepts NULL. */
void deliver_cancel(struct deliver *d);

#endif
