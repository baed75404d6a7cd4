/* One delivery attempt of a spooled message over a leased connection (see deliver.h).
 *
 * Commands go one at a time (client_session has one request outstanding; RCPT pipelining would
 * save a round trip per extra recipient, and copiers send to one or two). The body is read from
 * the spool in 64 KiB chunks, cut into its stored lines (unstuffed, CRLF: docs/spool.md), maybe
 * rewritten (sender_rewrite = header), dot-stuffed and handed to the session in 64 KiB batches;
 * above a high mark of queued bytes reading stops until the session drains, so a 50 MB scan
 * costs about a megabyte of memory whatever the upstream's speed. The final "." is sent only
 * after the spool reader has confirmed the body's SHA-256: a damaged body is never completed. */
#include "proxy/deliver_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "proxy/client_session.h"
#include "proxy/config.h"
#include "proxy/exchange_explain.h"
#include "proxy/header_rewrite.h"
#include "proxy/metrics.h"
#include "proxy/smtp_data.h"
#include "store/spool.h"

#define DELIVER_CHUNK (64 * 1024) /* spool read size */
/* Encoded lines are handed to the session in batches: one write per line made one TLS record
 * per line (relay.c's RELAY_BATCH, measured in bench/). */
#define DELIVER_BATCH (64 * 1024)
#define DELIVER_HIGH_MARK (1024 * 1024) /* stop reading the spool above this much queued */
#define DELIVER_LOW_MARK (256 * 1024)   /* and resume below this */
#define DELIVER_LINE_MAX (SMTP_TEXT_LINE_MAX - 2) /* a stored line without its CRLF */
#define DELIVER_CMD_MAX 510                       /* RFC 5321 4.5.3.1.4, without CRLF */

static const char REPLY_DAMAGED[] = "554 5.3.0 The queued message is damaged on disk";
static const char REPLY_READ_FAILED[] = "451 4.3.0 The queued message cannot be read now";

enum deliver_step { ST_LOCAL, ST_MAIL, ST_RCPT, ST_RSET, ST_DATA, ST_BODY, ST_DATA_END };

/* Where a recipient stands during the attempt. */
enum rcpt_state {
    RCPT_OPEN,     /* not yet accepted or refused */
    RCPT_ACCEPTED, /* 2xx to RCPT: the end of DATA decides */
    RCPT_DECIDED,  /* rcpts[i] holds the outcome */
};

struct rcpt_info {
    enum rcpt_state state;
    int code; /* of the deciding reply (0: the proxy's own words) */
    char enhanced[16];
};

struct deliver {
    const struct deliver_conn_ops *ops;
    struct upstream_conn *conn;
    struct client_session *cs;
    const struct cfg_account *acct;
    const struct spool_envelope *env;
    struct spool_body *body;
    struct metrics *m;
    uint64_t size; /* the body's, from the reader: also right before the commit */
    deliver_cb cb;
    void *arg;
    char log_id[64];
    struct timespec t0;

    enum deliver_step step;
    char *mail_from; /* as sent */
    const char *local_reply;
    size_t next_rcpt;
    size_t accepted;
    struct deliver_rcpt_result *rcpts;
    struct rcpt_info *info;
    int conn_failure;
    char lost_why[256]; /* the session's words when the connection went, for the log */
    /* the end-of-DATA reply, when there was one */
    char data_reply[DELIVER_REPLY_MAX];
    int data_code;
    char data_enhanced[16];

    struct header_rewrite *rewrite;
    char *chunk;
    char *batch;
    size_t batch_len;
    char carry[DELIVER_LINE_MAX + 1]; /* a stored line (with its CR) cut by a chunk boundary */
    size_t carry_len;
    const char *body_fail; /* set when the body cannot be sent whole: the reply */
};

static const char *step_str(enum deliver_step s)
{
    static const char *const names[] = {"local", "MAIL", "RCPT",       "RSET",
                                        "DATA",  "body", "end of DATA"};
    return names[s];
}

/* "550 5.1.1 text" from the first line, every byte outside printable ASCII a '?'. */
static void reply_first_line(const struct smtp_reply *rep, char *out, size_t len)
{
    char raw[DELIVER_REPLY_MAX];
    const char *text = rep->nlines ? rep->lines[0] : "";
    if (*text)
        snprintf(raw, sizeof(raw), "%03d %s", rep->code, text);
    else
        snprintf(raw, sizeof(raw), "%03d", rep->code);
    spool_error_sanitize(out, len, raw);
}

static enum deliver_status class_status(int code)
{
    if (code / 100 == 2)
        return DELIVER_OK;
    if (code / 100 == 5)
        return DELIVER_PERM;
    return DELIVER_TEMP; /* 4xx, and anything out of place */
}

/* A reply that says the connection, not the message, is the problem. */
static int is_conn_failure(const struct smtp_reply *rep)
{
    return rep->code == 421 || strcmp(rep->enhanced, "4.3.2") == 0;
}

static void decide(struct deliver *d, size_t i, enum deliver_status st, int code,
                   const char *enhanced, const char *text)
{
    d->rcpts[i].status = st;
    spool_error_sanitize(d->rcpts[i].reply, sizeof(d->rcpts[i].reply), text);
    d->info[i].state = RCPT_DECIDED;
    d->info[i].code = code;
    snprintf(d->info[i].enhanced, sizeof(d->info[i].enhanced), "%s", enhanced ? enhanced : "");
}

/* A verdict for every recipient still in play: open ones, and accepted ones unless only_open. */
static void decide_rest(struct deliver *d, enum deliver_status st, int code, const char *enhanced,
                        const char *text, int only_open)
{
    for (size_t i = 0; i < d->env->nrcpts; i++)
        if (d->info[i].state == RCPT_OPEN || (!only_open && d->info[i].state == RCPT_ACCEPTED))
            decide(d, i, st, code, enhanced, text);
}

static double elapsed_ms(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

static const char *status_str(enum deliver_status st)
{
    switch (st) {
    case DELIVER_OK:
        return "delivered";
    case DELIVER_TEMP:
        return "deferred";
    case DELIVER_PERM:
        return "refused";
    default:
        return "partial";
    }
}

static void log_attempt(const struct deliver *d, const struct deliver_result *res, unsigned ok,
                        unsigned temp, unsigned perm, int code, const char *enhanced)
{
    char from[300], up[DELIVER_REPLY_MAX + 64], host[300], queue[40] = "", why[320] = "";
    char explain[900];
    const char *h = d->ops->host ? d->ops->host(d->conn) : NULL;
    if (d->env->queue_id[0])
        snprintf(queue, sizeof(queue), " queue_id=%s", d->env->queue_id);
    if (d->lost_why[0]) {
        char safe[300];
        snprintf(why, sizeof(why), " error=%s",
                 log_safe(safe, sizeof(safe), d->lost_why, strlen(d->lost_why)));
    }
    log_info("event=deliver session=%s%s account=%s host=%s from=%s rcpts=%zu delivered=%u "
             "deferred=%u refused=%u size=%llu result=%s conn_failure=%d upstream=%s "
             "duration_ms=%.0f%s%s",
             d->log_id, queue, d->acct->name,
             log_safe(host, sizeof(host), h ? h : "", h ? strlen(h) : 0),
             log_safe(from, sizeof(from), d->mail_from ? d->mail_from : "",
                      d->mail_from ? strlen(d->mail_from) : 0),
             d->env->nrcpts, ok, temp, perm, (unsigned long long)d->size, status_str(res->status),
             res->conn_failure, log_safe(up, sizeof(up), res->reply, strlen(res->reply)),
             elapsed_ms(&d->t0), why,
             exchange_explain_kv(code, enhanced, res->reply, d->acct->mailbox, d->acct->client_id,
                                 explain, sizeof(explain)));
}

static void deliver_free(struct deliver *d)
{
    header_rewrite_free(d->rewrite);
    free(d->mail_from);
    free(d->rcpts);
    free(d->info);
    free(d->chunk);
    free(d->batch);
    free(d);
}

/* The attempt is over: give the connection back, then tell the caller. Only from the loop. */
static void finish(struct deliver *d, int reusable)
{
    struct deliver_result res;
    unsigned ok = 0, temp = 0, perm = 0;
    int code = 0;
    const char *enhanced = "";
    size_t i;

    memset(&res, 0, sizeof(res));
    /* anything still undecided (never the case on a clean path) is temporary */
    decide_rest(d, DELIVER_TEMP, 0, NULL, "451 4.3.0 Delivery attempt ended early", 0);
    for (i = 0; i < d->env->nrcpts; i++) {
        ok += d->rcpts[i].status == DELIVER_OK;
        temp += d->rcpts[i].status == DELIVER_TEMP;
        perm += d->rcpts[i].status == DELIVER_PERM;
    }
    res.status = temp ? DELIVER_TEMP : !ok ? DELIVER_PERM : perm ? DELIVER_PARTIAL : DELIVER_OK;
    res.conn_failure = d->conn_failure;
    res.rcpts = d->rcpts;
    res.nrcpts = d->env->nrcpts;
    if (ok) {
        snprintf(res.reply, sizeof(res.reply), "%s", d->data_reply);
        code = d->data_code;
        enhanced = d->data_enhanced;
    } else {
        /* the first refusal of the kind that decided: a temporary one if any */
        enum deliver_status want = temp ? DELIVER_TEMP : DELIVER_PERM;
        for (i = 0; i < d->env->nrcpts; i++)
            if (d->rcpts[i].status == want)
                break;
        snprintf(res.reply, sizeof(res.reply), "%s", d->rcpts[i].reply);
        code = d->info[i].code;
        enhanced = d->info[i].enhanced;
    }
    log_attempt(d, &res, ok, temp, perm, code, enhanced);

    reusable = reusable && !d->conn_failure && client_session_usable(d->cs);
    client_session_set_drain_cb(d->cs, 0, NULL, NULL);
    d->ops->release(d->conn, reusable);
    d->conn = NULL;
    d->cs = NULL;
    if (d->cb)
        d->cb(d->arg, &res);
    deliver_free(d);
}

/* No reply: the connection is gone (or the session refused the request). */
static void lost(struct deliver *d, const char *err)
{
    char reply[DELIVER_REPLY_MAX];
    snprintf(d->lost_why, sizeof(d->lost_why), "%s", err ? err : "connection lost");
    snprintf(reply, sizeof(reply), "451 4.4.2 Upstream connection lost during %s, try again later",
             step_str(d->step));
    d->conn_failure = 1;
    decide_rest(d, DELIVER_TEMP, 0, NULL, reply, 0);
    finish(d, 0);
}

static void on_rset(void *arg, const struct smtp_reply *rep, const char *err)
{
    struct deliver *d = arg;
    (void)err;
    /* every recipient is decided already: only the connection's fate is open */
    finish(d, rep && rep->code / 100 == 2);
}

/* End the transaction without a message; the connection stays reusable if RSET is answered. */
static void send_rset(struct deliver *d)
{
    d->step = ST_RSET;
    client_session_command(d->cs, "RSET", on_rset, d);
}

/* ---- the body ---- */

static void flush_batch(struct deliver *d)
{
    if (d->batch_len)
        client_session_write(d->cs, d->batch, d->batch_len);
    d->batch_len = 0;
}

static void emit_line(struct deliver *d, const char *line, size_t len)
{
    if (len > SMTP_TEXT_LINE_MAX)
        len = SMTP_TEXT_LINE_MAX; /* header_rewrite never makes longer lines; belt and braces */
    if (d->batch_len + len + 3 > DELIVER_BATCH)
        flush_batch(d);
    d->batch_len += smtp_data_encode_line(d->batch + d->batch_len, line, len);
}

static void emit_rewritten(void *arg, const char *line, size_t len)
{
    emit_line(arg, line, len);
}

/* One stored line, its CR included (its LF not). 0 ok, -1 the body is not what the spool
 * stores (set body_fail). */
static int body_line(struct deliver *d, const char *s, size_t len)
{
    if (len == 0 || s[len - 1] != '\r' || memchr(s, '\r', len - 1)) {
        d->body_fail = REPLY_DAMAGED; /* a bare LF or CR: never from the spool writer */
        return -1;
    }
    len--;
    if (!d->rewrite) {
        emit_line(d, s, len);
        return 0;
    }
    if (header_rewrite_line(d->rewrite, s, len) != 0) {
        d->body_fail = "552 5.3.4 Header section too large to rewrite the sender";
        return -1;
    }
    return 0;
}

/* Cut a chunk into lines; a line cut by the chunk's end waits in carry. 0 ok, -1 body_fail. */
static int body_chunk(struct deliver *d, const char *p, size_t n)
{
    while (n) {
        const char *lf = memchr(p, '\n', n);
        size_t take = lf ? (size_t)(lf - p) : n;
        if (d->carry_len || !lf) {
            if (d->carry_len + take > sizeof(d->carry)) {
                d->body_fail = REPLY_DAMAGED; /* longer than any line the decoder lets through */
                return -1;
            }
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

/* The body cannot be sent whole: the final "." is never sent and the connection is closed. */
static void body_failed(struct deliver *d, const char *why)
{
    char safe[600];
    if (d->body_fail == REPLY_DAMAGED || d->body_fail == REPLY_READ_FAILED)
        log_error("event=%s queue_id=%s session=%s reason=%s",
                  d->body_fail == REPLY_DAMAGED ? "spool_body_damaged" : "spool_body_unreadable",
                  d->env->queue_id, d->log_id, log_safe(safe, sizeof(safe), why, strlen(why)));
    decide_rest(d, d->body_fail[0] == '4' ? DELIVER_TEMP : DELIVER_PERM, 0, NULL, d->body_fail, 0);
    finish(d, 0);
}

static void on_data_end(void *arg, const struct smtp_reply *rep, const char *err)
{
    struct deliver *d = arg;
    if (!rep) {
        /* the upstream may have taken it just before the connection went: at-least-once */
        lost(d, err);
        return;
    }
    metrics_upstream_reply(d->m, METRICS_CMD_DATA, rep->code, rep->enhanced);
    reply_first_line(rep, d->data_reply, sizeof(d->data_reply));
    d->data_code = rep->code;
    snprintf(d->data_enhanced, sizeof(d->data_enhanced), "%s", rep->enhanced);
    if (is_conn_failure(rep))
        d->conn_failure = 1;
    decide_rest(d, class_status(rep->code), rep->code, rep->enhanced, d->data_reply, 0);
    finish(d, rep->code != 421);
}

/* Read, cut, encode and queue until the session holds enough or the body ends. */
static void pump(struct deliver *d)
{
    char err[512];
    while (d->step == ST_BODY) {
        if (!client_session_usable(d->cs)) {
            lost(d, "upstream connection lost while sending the body");
            return;
        }
        if (client_session_pending(d->cs) > DELIVER_HIGH_MARK)
            return; /* on_drain resumes */
        ssize_t n = spool_body_read(d->body, d->chunk, DELIVER_CHUNK, err, sizeof(err));
        if (n < 0) { /* damaged: refused for good; an I/O error may pass: try later */
            d->body_fail = n == -2 ? REPLY_DAMAGED : REPLY_READ_FAILED;
            body_failed(d, err);
            return;
        }
        if (n == 0) {
            if (d->carry_len) {
                d->body_fail = REPLY_DAMAGED;
                body_failed(d, "the stored body does not end with CRLF");
                return;
            }
            if (d->rewrite)
                header_rewrite_finish(d->rewrite);
            flush_batch(d);
            d->step = ST_DATA_END;
            client_session_data_end(d->cs, on_data_end, d);
            return;
        }
        if (body_chunk(d, d->chunk, (size_t)n) != 0) {
            body_failed(d, "a stored line is not CRLF-terminated text of at most 1000 octets");
            return;
        }
    }
}

static void on_drain(void *arg)
{
    pump(arg);
}

static void on_data(void *arg, const struct smtp_reply *rep, const char *err)
{
    struct deliver *d = arg;
    char text[DELIVER_REPLY_MAX];
    if (!rep) {
        lost(d, err);
        return;
    }
    if (rep->code != 354) {
        reply_first_line(rep, text, sizeof(text));
        if (is_conn_failure(rep))
            d->conn_failure = 1;
        decide_rest(d, rep->code / 100 == 5 ? DELIVER_PERM : DELIVER_TEMP, rep->code, rep->enhanced,
                    text, 0);
        if (rep->code == 421 || !client_session_usable(d->cs))
            finish(d, 0);
        else
            send_rset(d);
        return;
    }
    d->step = ST_BODY;
    if (d->rewrite)
        header_rewrite_reset(d->rewrite);
    client_session_set_drain_cb(d->cs, DELIVER_LOW_MARK, on_drain, d);
    pump(d);
}

/* ---- the envelope ---- */

static void send_rcpt(struct deliver *d);

static void after_rcpts(struct deliver *d)
{
    if (d->accepted == 0) {
        send_rset(d);
        return;
    }
    d->step = ST_DATA;
    client_session_command(d->cs, "DATA", on_data, d);
}

static void on_rcpt(void *arg, const struct smtp_reply *rep, const char *err)
{
    struct deliver *d = arg;
    char text[DELIVER_REPLY_MAX];
    size_t i = d->next_rcpt;
    if (!rep) {
        lost(d, err);
        return;
    }
    metrics_upstream_reply(d->m, METRICS_CMD_RCPT, rep->code, rep->enhanced);
    reply_first_line(rep, text, sizeof(text));
    if (rep->code / 100 == 2) {
        d->info[i].state = RCPT_ACCEPTED;
        d->accepted++;
    } else {
        decide(d, i, class_status(rep->code), rep->code, rep->enhanced, text);
    }
    if (is_conn_failure(rep))
        d->conn_failure = 1;
    if (rep->code == 421) { /* the upstream is closing: nothing more goes */
        decide_rest(d, DELIVER_TEMP, rep->code, rep->enhanced, text, 0);
        finish(d, 0);
        return;
    }
    d->next_rcpt++;
    send_rcpt(d);
}

static void send_rcpt(struct deliver *d)
{
    char line[DELIVER_CMD_MAX + 64];
    while (d->next_rcpt < d->env->nrcpts) {
        size_t i = d->next_rcpt;
        int n = snprintf(line, sizeof(line), "RCPT TO:<%s>", d->env->rcpts[i]);
        if (n > 0 && (size_t)n <= DELIVER_CMD_MAX) {
            d->step = ST_RCPT;
            client_session_command(d->cs, line, on_rcpt, d);
            return;
        }
        decide(d, i, DELIVER_PERM, 0, NULL, "501 5.1.3 Recipient address too long");
        d->next_rcpt++;
    }
    after_rcpts(d);
}

static void on_mail(void *arg, const struct smtp_reply *rep, const char *err)
{
    struct deliver *d = arg;
    char text[DELIVER_REPLY_MAX];
    if (!rep) {
        lost(d, err);
        return;
    }
    metrics_upstream_reply(d->m, METRICS_CMD_MAIL, rep->code, rep->enhanced);
    if (rep->code / 100 == 2) {
        send_rcpt(d);
        return;
    }
    reply_first_line(rep, text, sizeof(text));
    if (is_conn_failure(rep))
        d->conn_failure = 1;
    decide_rest(d, class_status(rep->code), rep->code, rep->enhanced, text, 0);
    finish(d, rep->code != 421); /* no transaction was opened: nothing to reset */
}

/* A refusal decided before anything is sent still reaches the caller from the loop: the RSET's
 * reply brings us there, and leaves the connection reusable. */
static void on_local(void *arg, const struct smtp_reply *rep, const char *err)
{
    struct deliver *d = arg;
    (void)err;
    decide_rest(d, DELIVER_PERM, 0, NULL, d->local_reply, 0);
    finish(d, rep && rep->code / 100 == 2);
}

static void send_mail(struct deliver *d)
{
    const struct smtp_caps *caps = client_session_caps(d->cs);
    const struct spool_envelope *env = d->env;
    char line[DELIVER_CMD_MAX + 128];
    int n;

    if (env->smtputf8 && !caps->smtputf8)
        d->local_reply = "555 5.6.7 SMTPUTF8 is not supported by the upstream server";
    else if (env->eightbit && !caps->eightbitmime)
        d->local_reply = "555 5.6.3 8BITMIME is not supported by the upstream server";
    else if (caps->has_size && caps->size && d->size > caps->size)
        d->local_reply = "552 5.3.4 Message size exceeds the upstream server's limit";
    n = snprintf(line, sizeof(line), "MAIL FROM:<%s>", d->mail_from);
    if (caps->has_size)
        n +=
            snprintf(line + n, sizeof(line) - (size_t)n, " SIZE=%llu", (unsigned long long)d->size);
    if (env->eightbit)
        n += snprintf(line + n, sizeof(line) - (size_t)n, " BODY=8BITMIME");
    if (env->smtputf8)
        n += snprintf(line + n, sizeof(line) - (size_t)n, " SMTPUTF8");
    if (!d->local_reply && (n < 0 || (size_t)n > DELIVER_CMD_MAX))
        d->local_reply = "501 5.1.7 Sender address too long";
    if (d->local_reply) {
        d->step = ST_LOCAL;
        client_session_command(d->cs, "RSET", on_local, d);
        return;
    }
    d->step = ST_MAIL;
    client_session_command(d->cs, line, on_mail, d);
}

struct deliver *deliver_start_ops(const struct deliver_conn_ops *ops, struct upstream_conn *c,
                                  const struct cfg_account *acct, const struct spool_envelope *env,
                                  struct spool_body *body, struct metrics *m, const char *log_id,
                                  deliver_cb cb, void *arg)
{
    struct deliver *d = calloc(1, sizeof(*d));
    if (!d)
        goto oom;
    d->ops = ops;
    d->conn = c;
    d->cs = ops->session(c);
    d->acct = acct;
    d->env = env;
    d->body = body;
    d->size = spool_body_size(body);
    d->m = m;
    d->cb = cb;
    d->arg = arg;
    snprintf(d->log_id, sizeof(d->log_id), "%s", log_id ? log_id : "-");
    clock_gettime(CLOCK_MONOTONIC, &d->t0);
    /* A null sender stays null: it marks a bounce, which must never bounce again. */
    const char *from = env->mail_from ? env->mail_from : "";
    int rewrite = acct->sender_rewrite != SENDER_REWRITE_OFF && from[0] != '\0';
    d->mail_from = strdup(rewrite ? acct->mailbox : from);
    d->rcpts = calloc(env->nrcpts ? env->nrcpts : 1, sizeof(*d->rcpts));
    d->info = calloc(env->nrcpts ? env->nrcpts : 1, sizeof(*d->info));
    d->chunk = malloc(DELIVER_CHUNK);
    d->batch = malloc(DELIVER_BATCH);
    if (!d->cs || !d->mail_from || !d->rcpts || !d->info || !d->chunk || !d->batch)
        goto oom;
    if (acct->sender_rewrite == SENDER_REWRITE_HEADER) {
        d->rewrite = header_rewrite_new(acct->mailbox, emit_rewritten, d);
        if (!d->rewrite)
            goto oom;
    }
    send_mail(d);
    return d;
oom:
    if (d)
        deliver_free(d);
    ops->release(c, 0);
    return NULL;
}

void deliver_cancel(struct deliver *d)
{
    if (!d)
        return;
    log_info("event=deliver_cancelled session=%s%s%s account=%s step=%s", d->log_id,
             d->env->queue_id[0] ? " queue_id=" : "", d->env->queue_id, d->acct->name,
             step_str(d->step));
    client_session_set_drain_cb(d->cs, 0, NULL, NULL);
    d->ops->release(d->conn, 0); /* closes it: no callback of ours runs afterwards */
    deliver_free(d);
}
