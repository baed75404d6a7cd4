/* The upstream transaction engine: one SMTP mail transaction (MAIL, RCPT..., DATA, the body, the
 * end marker) over a connection that is open and authenticated, with every rule a transaction
 * follows in one place: the MAIL command line (sender_rewrite, SIZE=, BODY=8BITMIME, SMTPUTF8),
 * the checks against the upstream's EHLO (SIZE limit, 8BITMIME, SMTPUTF8, command length), the
 * header rewrite, the body's dot-stuffing and batching with backpressure, and the outcome of
 * each recipient as Postfix's smtp client keeps it: a 2xx to RCPT and to the end of DATA is
 * delivered; a 4xx anywhere (or no reply: connection lost, timeout) is temporary; a 5xx is
 * permanent; MAIL and DATA verdicts apply to every recipient still in play.
 *
 * Its users drive it: deliver.c with a whole envelope and a stored body (direct-then-spool, the
 * queue runner, `test --to`), backend_direct.c step by step as the device speaks (delivery =
 * direct).
 *
 * Callbacks always run from the event loop, never from inside a call, and at most one step is
 * in flight. Every upstream reply, the final one included, is waited for at most the
 * connection's reply timeout ([upstream] timeout). */
#ifndef SOP_TXN_H
#define SOP_TXN_H

#include <stddef.h>
#include <stdint.h>

struct upstream_conn;
struct client_session;
struct cfg_account;
struct metrics;
struct smtp_reply;
struct txn;

#define TXN_REPLY_MAX 512 /* a recipient's or the message's deciding reply, first line */
#define TXN_TEXT_MAX 4096 /* a whole reply as the device hears it */

/* What the engine needs from a connection: the pool's (deliver_pool.c), or a test's own. */
struct txn_conn_ops {
    struct client_session *(*session)(struct upstream_conn *c);
    const char *(*host)(const struct upstream_conn *c); /* may be NULL */
    void (*release)(struct upstream_conn *c, int reusable);
    /* optional: each command line sent (rep NULL), each reply (line NULL); `test` prints them */
    void (*trace)(struct upstream_conn *c, const char *line, const struct smtp_reply *rep);
};

enum txn_status {
    TXN_OK = 0,   /* the upstream accepted it */
    TXN_TEMP = 1, /* try again later */
    TXN_PERM = 2, /* refused for good: bounce (or tell the waiting device) */
    /* (the whole message only) some recipients delivered, every other one refused for good:
     * the message is done (nothing to retry); bounce the PERM recipients */
    TXN_PARTIAL = 3,
};

struct txn_rcpt_result {
    enum txn_status status;
    /* the reply that decided it, first line only, log-safe ("550 5.1.10 RESOLVER.ADR..."), or the
     * proxy's own words when there was no reply ("451 4.4.2 connection lost during DATA") */
    char reply[TXN_REPLY_MAX];
};

struct txn_result {
    /* OK: every recipient delivered; TEMP: some recipient temporary (others may be OK or PERM:
     * look at rcpts; retry only the TEMP ones); PERM: none delivered and none temporary;
     * PARTIAL: some delivered, the rest PERM, none temporary */
    enum txn_status status;
    /* 1 when the failure was the connection's, not this message's: lost before or during the
     * transaction, 421, or 4.3.2 (throttled). The queue runner stops the account's run on it and
     * retries later, instead of trying the next message against a dead or throttling upstream. */
    int conn_failure;
    /* the reply the device would have heard for the whole message: the end-of-DATA reply when
     * some recipient was delivered, else the first refusal that decided the outcome */
    char reply[TXN_REPLY_MAX];
    int code;                            /* of that reply (0: the proxy's own words) */
    char enhanced[16];                   /* of that reply ("" when none) */
    const struct txn_rcpt_result *rcpts; /* in txn_rcpt order; valid until txn_free */
    size_t nrcpts;
    unsigned delivered, deferred, refused; /* how many rcpts have each status */
    char lost_why[256]; /* the session's words when the connection went ("" otherwise) */
    /* the upstream said when to try again (Graph's Retry-After on 429 and 503), in ms; 0: it
     * did not, and the queue's backoff applies */
    int64_t retry_after_ms;
};

/* One step's outcome, valid during the callback. */
struct txn_reply {
    int code; /* 2xx..5xx: the upstream's, or the proxy's own refusal */
    /* what the device hears: the upstream's whole reply (lines joined by CRLF), or the proxy's
     * own words (refusals it makes itself, a lost connection) */
    const char *text;
    const struct smtp_reply *rep; /* the upstream's reply; NULL for the proxy's own words */
    const char *err;              /* no reply at all: why (connection lost, timeout); else NULL */
};
typedef void (*txn_cb)(void *arg, const struct txn_reply *r);

/* The device's MAIL parameters (its SIZE= or the stored body's size; 0 when unknown). */
struct txn_mail_opts {
    uint64_t size;
    int body_8bit; /* BODY=8BITMIME */
    int smtputf8;  /* SMTPUTF8 */
};

/* A transaction on c, which it takes (txn_free gives it back). acct: sender_rewrite, mailbox,
 * client_id for explanations. m: the counters of upstream replies (NULL: not counted). log_id:
 * session= in log lines. NULL when out of memory (c is then released as not reusable). */
struct txn *txn_new(const struct txn_conn_ops *ops, struct upstream_conn *c,
                    const struct cfg_account *acct, struct metrics *m, const char *log_id);
/* Give the connection back: reusable when asked, healthy, and no transaction or step is open on
 * it (else it is closed). No callback runs afterwards; txn_result stays readable. Once only
 * (later calls do nothing). */
void txn_release(struct txn *t, int reusable);
/* txn_release, then free. Accepts NULL. */
void txn_free(struct txn *t, int reusable);

/* MAIL FROM: the sender as sent upstream is the account's mailbox when sender_rewrite is on,
 * except a null sender, which stays null (a bounce must never bounce again). Refused without
 * sending it (5xx): SMTPUTF8 or 8BITMIME the upstream lacks, a SIZE over its limit, a line
 * over 512 octets. */
void txn_mail(struct txn *t, const char *from, const struct txn_mail_opts *o, txn_cb cb, void *arg);
/* RCPT TO: one recipient, recorded in the outcome in call order. NULL: sent, cb will run.
 * Else the refusal, decided here without sending anything and without a callback: "501 5.1.3"
 * when the line would pass 512 octets (recorded as refused), or out of memory (not recorded). */
const char *txn_rcpt(struct txn *t, const char *to, txn_cb cb, void *arg);
/* A recipient that will not be sent because the transaction already ended (MAIL refused, the
 * connection lost or closing): recorded at once with the verdict that ended it, no callback. */
void txn_rcpt_skip(struct txn *t);
/* DATA: cb gets the 354 (then send the body) or the refusal (the transaction stays open: RSET
 * it, or free the transaction). */
void txn_data(struct txn *t, txn_cb cb, void *arg);
/* How many recipients the upstream accepted so far. */
size_t txn_accepted(const struct txn *t);
/* One body line, decoded (no terminator, unstuffed): rewritten, encoded and batched. */
void txn_body_line(struct txn *t, const char *line, size_t len);
/* Hand the batched lines to the connection (after each chunk read; txn_end flushes too). */
void txn_body_flush(struct txn *t);
/* Bytes handed over but not yet sent: the caller stops reading its source above a mark. */
size_t txn_pending(const struct txn *t);
/* cb runs when pending falls to low_mark after having been above it. */
void txn_set_drain_cb(struct txn *t, size_t low_mark, void (*cb)(void *arg), void *arg);
/* The body cannot be sent whole (reply: what decides the recipients still open, e.g. a damaged
 * spool file, or the device's body refused): nothing more is sent, the connection will not be
 * reused and the end marker is never sent; the caller reads txn_result and frees t. */
void txn_body_fail(struct txn *t, const char *reply);
/* 1 after txn_body_fail (or a header section too large to rewrite): the reply is in
 * txn_result. */
int txn_body_failed(const struct txn *t);
/* The body is complete: the end marker, cb gets the final verdict (a lost connection: a 451). */
void txn_end(struct txn *t, txn_cb cb, void *arg);
/* RSET: the transaction ends without a message (cb gets 250 even when the connection is gone:
 * nothing is lost, the next transaction leases another). */
void txn_rset(struct txn *t, txn_cb cb, void *arg);

/* 1 between an accepted MAIL and the end of the transaction (the upstream holds it open). */
int txn_open(const struct txn *t);
/* 1 while the connection is alive. */
int txn_usable(const struct txn *t);
/* The sender as sent upstream (NULL before txn_mail). */
const char *txn_mail_from(const struct txn *t);
/* Body bytes given so far, counted as the device's lines plus CRLF. */
uint64_t txn_body_size(const struct txn *t);
/* The outcome so far; recipients still undecided count as temporary ("attempt ended early").
 * Valid until the next call on t. */
const struct txn_result *txn_result(struct txn *t);
/* A status as log lines write it: "delivered", "deferred", "refused", "partial". */
const char *txn_status_name(enum txn_status st);
/* The connection's host, for the log ("" when unknown). */
const char *txn_host(const struct txn *t);

#endif
