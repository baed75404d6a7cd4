/* One delivery attempt of a whole message (see deliver.h): the engine's steps in order, the
 * recipients one at a time, and the body pumped from its source.
 *
 * The body is read in 64 KiB chunks and cut into its stored lines (unstuffed, CRLF:
 * docs/spool.md); the engine rewrites, stuffs and batches them. Above a high mark of queued
 * bytes reading stops until the connection drains, so a 50 MB scan costs about a megabyte of
 * memory whatever the upstream's speed. The final "." is sent only after the source has
 * confirmed the whole body (the spool reader checks its SHA-256): a damaged body is never
 * completed. */
#include "proxy/delivery/deliver.h"

#include "proxy/delivery/message_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "proxy/config/config.h"
#include "proxy/smtp/exchange_explain.h"
#include "proxy/smtp/smtp_data.h"
#include "store/spool.h"

#define DELIVER_CHUNK (64 * 1024)                 /* body read size */
#define DELIVER_HIGH_MARK (1024 * 1024)           /* stop reading above this much queued */
#define DELIVER_LOW_MARK (256 * 1024)             /* and resume below this */
#define DELIVER_LINE_MAX (SMTP_TEXT_LINE_MAX - 2) /* a stored line without its CRLF */

static const char REPLY_DAMAGED[] = "554 5.3.0 The queued message is damaged on disk";
static const char REPLY_READ_FAILED[] = "451 4.3.0 The queued message cannot be read now";

struct deliver {
    struct txn *t;
    const struct cfg_account *acct;
    const struct spool_envelope *env;
    struct deliver_body body;
    deliver_cb cb;
    void *arg;
    char log_id[64];
    struct timespec t0;
    size_t next_rcpt;
    int in_body; /* between the 354 and the end marker */
    char *chunk;
    char carry[DELIVER_LINE_MAX + 1]; /* a stored line (with its CR) cut by a chunk boundary */
    size_t carry_len;
};

static ssize_t spool_read(void *src, void *buf, size_t cap, char *err, size_t errlen)
{
    return spool_body_read(src, buf, cap, err, errlen);
}

struct deliver_body deliver_body_spool(struct spool_body *b)
{
    struct deliver_body body = {.read = spool_read, .size = spool_body_size(b), .src = b};
    return body;
}

static void log_attempt(const struct deliver *d, const struct txn_result *res)
{
    char from[300], up[TXN_REPLY_MAX + 64], host[300], queue[40] = "", why[320] = "";
    char explain[900];
    const char *h = txn_host(d->t), *f = txn_mail_from(d->t);
    if (d->env->queue_id[0])
        snprintf(queue, sizeof(queue), " queue_id=%s", d->env->queue_id);
    if (res->lost_why[0]) {
        char safe[300];
        snprintf(why, sizeof(why), " error=%s",
                 log_safe(safe, sizeof(safe), res->lost_why, strlen(res->lost_why)));
    }
    log_info("event=deliver session=%s%s account=%s host=%s from=%s rcpts=%zu delivered=%u "
             "deferred=%u refused=%u size=%llu result=%s conn_failure=%d upstream=%s "
             "duration_ms=%.0f%s%s",
             d->log_id, queue, d->acct->name, log_safe(host, sizeof(host), h, strlen(h)),
             log_safe(from, sizeof(from), f ? f : "", f ? strlen(f) : 0), d->env->nrcpts,
             res->delivered, res->deferred, res->refused, (unsigned long long)d->body.size,
             txn_status_name(res->status), res->conn_failure,
             log_safe(up, sizeof(up), res->reply, strlen(res->reply)),
             message_log_elapsed_ms(&d->t0), why,
             exchange_explain_kv(res->code, res->enhanced, res->reply, d->acct->mailbox,
                                 d->acct->client_id, explain, sizeof(explain)));
}

static void deliver_free(struct deliver *d)
{
    txn_free(d->t, 0);
    free(d->chunk);
    free(d);
}

/* The attempt is over: recipients never sent take the verdict that ended it; the connection
 * goes back (reusable if the engine finds it healthy), then the caller hears. From the loop. */
static void finish(struct deliver *d)
{
    while (d->next_rcpt < d->env->nrcpts) {
        txn_rcpt_skip(d->t);
        d->next_rcpt++;
    }
    const struct txn_result *res = txn_result(d->t);
    log_attempt(d, res);
    txn_release(d->t, 1);
    if (d->cb)
        d->cb(d->arg, res);
    deliver_free(d);
}

static void on_step_finish(void *arg, const struct txn_reply *r)
{
    (void)r;
    finish(arg);
}

/* ---- the body ---- */

/* The body cannot be sent whole: the final "." is never sent and the connection is closed. */
static void body_failed(struct deliver *d, const char *reply, const char *why)
{
    char safe[600];
    if (reply == REPLY_DAMAGED || reply == REPLY_READ_FAILED)
        log_error("event=%s queue_id=%s session=%s reason=%s",
                  reply == REPLY_DAMAGED ? "spool_body_damaged" : "spool_body_unreadable",
                  d->env->queue_id, d->log_id, log_safe(safe, sizeof(safe), why, strlen(why)));
    txn_body_fail(d->t, reply);
    finish(d);
}

/* One stored line, its CR included (its LF not). 0 ok, -1 the body is not what the spool
 * stores. */
static int body_line(struct deliver *d, const char *s, size_t len)
{
    /* a bare LF or CR, or a line longer than the decoder lets through: never from the spool
     * writer (and never cut short here: the engine would send it truncated) */
    if (len == 0 || len > DELIVER_LINE_MAX + 1 || s[len - 1] != '\r' || memchr(s, '\r', len - 1))
        return -1;
    txn_body_line(d->t, s, len - 1);
    return 0;
}

/* Cut a chunk into lines; a line cut by the chunk's end waits in carry. 0 ok, -1 damaged. */
static int body_chunk(struct deliver *d, const char *p, size_t n)
{
    while (n) {
        const char *lf = memchr(p, '\n', n);
        size_t take = lf ? (size_t)(lf - p) : n;
        if (d->carry_len || !lf) {
            if (d->carry_len + take > sizeof(d->carry))
                return -1; /* longer than any line the decoder lets through */
            memcpy(d->carry + d->carry_len, p, take);
            d->carry_len += take;
            if (!lf)
                return 0;
            if (body_line(d, d->carry, d->carry_len) != 0)
                return -1;
            d->carry_len = 0;
        } else if (body_line(d, p, take) != 0) {
            return -1;
        }
        p += take + 1;
        n -= take + 1;
    }
    return 0;
}

/* Read, cut and hand over until the connection holds enough or the body ends. */
static void pump(struct deliver *d)
{
    char err[512];
    while (d->in_body) {
        if (txn_body_failed(d->t)) { /* the header section was too large to rewrite */
            finish(d);
            return;
        }
        if (!txn_usable(d->t)) { /* the end marker's callback reports the lost connection */
            d->in_body = 0;
            txn_end(d->t, on_step_finish, d);
            return;
        }
        if (txn_pending(d->t) > DELIVER_HIGH_MARK)
            return; /* on_drain resumes */
        ssize_t n = d->body.read(d->body.src, d->chunk, DELIVER_CHUNK, err, sizeof(err));
        if (n < 0) { /* damaged: refused for good; an I/O error may pass: try later */
            body_failed(d, n == -2 ? REPLY_DAMAGED : REPLY_READ_FAILED, err);
            return;
        }
        if (n == 0) {
            if (d->carry_len) {
                body_failed(d, REPLY_DAMAGED, "the stored body does not end with CRLF");
                return;
            }
            d->in_body = 0;
            txn_set_drain_cb(d->t, 0, NULL, NULL);
            txn_end(d->t, on_step_finish, d);
            return;
        }
        if (body_chunk(d, d->chunk, (size_t)n) != 0) {
            body_failed(d, REPLY_DAMAGED,
                        "a stored line is not CRLF-terminated text of at most 1000 octets");
            return;
        }
    }
}

static void on_drain(void *arg)
{
    pump(arg);
}

static void on_data(void *arg, const struct txn_reply *r)
{
    struct deliver *d = arg;
    if (r->code != 354) {
        /* every accepted recipient has its verdict: end the transaction cleanly if we can */
        if (txn_usable(d->t))
            txn_rset(d->t, on_step_finish, d);
        else
            finish(d);
        return;
    }
    d->in_body = 1;
    txn_set_drain_cb(d->t, DELIVER_LOW_MARK, on_drain, d);
    pump(d);
}

/* ---- the envelope ---- */

static void on_rcpt(void *arg, const struct txn_reply *r);

static void send_rcpt(struct deliver *d)
{
    while (d->next_rcpt < d->env->nrcpts && txn_usable(d->t)) {
        if (!txn_rcpt(d->t, d->env->rcpts[d->next_rcpt++], on_rcpt, d))
            return; /* on_rcpt goes on; else it was refused here: the next one */
    }
    if (d->next_rcpt < d->env->nrcpts || !txn_open(d->t)) {
        finish(d); /* the connection went or is closing: the rest take its verdict */
        return;
    }
    if (txn_accepted(d->t) == 0) {
        txn_rset(d->t, on_step_finish, d); /* no message: the connection stays reusable */
        return;
    }
    txn_data(d->t, on_data, d);
}

static void on_rcpt(void *arg, const struct txn_reply *r)
{
    (void)r;
    send_rcpt(arg);
}

static void on_mail(void *arg, const struct txn_reply *r)
{
    struct deliver *d = arg;
    if (r->code / 100 == 2)
        send_rcpt(d);
    else
        finish(d); /* no transaction was opened: nothing to reset */
}

struct deliver *deliver_start_ops(const struct txn_conn_ops *ops, struct upstream_conn *c,
                                  const struct cfg_account *acct, const struct spool_envelope *env,
                                  const struct deliver_body *body, struct metrics *m,
                                  const char *log_id, deliver_cb cb, void *arg)
{
    struct deliver *d = calloc(1, sizeof(*d));
    if (!d) {
        ops->release(c, 0);
        return NULL;
    }
    d->t = txn_new(ops, c, acct, m, log_id);
    d->chunk = malloc(DELIVER_CHUNK);
    if (!d->t || !d->chunk) {
        deliver_free(d); /* the connection is released: by txn_new, or by txn_free */
        return NULL;
    }
    d->acct = acct;
    d->env = env;
    d->body = *body;
    d->cb = cb;
    d->arg = arg;
    snprintf(d->log_id, sizeof(d->log_id), "%s", log_id ? log_id : "-");
    clock_gettime(CLOCK_MONOTONIC, &d->t0);
    struct txn_mail_opts o = {
        .size = body->size, .body_8bit = env->eightbit, .smtputf8 = env->smtputf8};
    txn_mail(d->t, env->mail_from ? env->mail_from : "", &o, on_mail, d);
    return d;
}

void deliver_cancel(struct deliver *d)
{
    if (!d)
        return;
    log_info("event=deliver_cancelled session=%s%s%s account=%s step=%s", d->log_id,
             d->env->queue_id[0] ? " queue_id=" : "", d->env->queue_id, d->acct->name,
             d->in_body ? "body" : "envelope");
    deliver_free(d); /* closes the connection: no callback of ours runs afterwards */
}
