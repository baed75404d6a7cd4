#include "proxy/relay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "proxy/client_session.h"
#include "proxy/config.h"
#include "proxy/exchange_explain.h"
#include "proxy/header_rewrite.h"
#include "proxy/message_log.h"
#include "proxy/metrics.h"
#include "proxy/server.h"
#include "proxy/server_gen.h"
#include "proxy/smtp_data.h"
#include "proxy/smtp_parse.h"
#include "proxy/upstream_pool.h"

#define RELAY_REPLY_MAX 4096
#define RELAY_BATCH (64 * 1024)

enum relay_op { OP_NONE, OP_MAIL, OP_RCPT, OP_DATA, OP_DATA_END, OP_RSET };

struct relay {
    struct server *srv;
    struct server_gen *gen; /* the session's config generation (borrowed) */
    const struct cfg_account *acct;
    char device[128];
    char log_id[32];

    /* The upstream connection is leased from the account's pool at MAIL and given back when the
     * transaction ends: a device session holds none between its messages. */
    struct upstream_lease *lease;
    struct upstream_conn *conn;
    struct client_session *up; /* conn's session */

    enum relay_op op;
    relay_reply_cb cb;
    void *cb_arg;
    struct relay_mail_opts mail_opts;
    char *mail_from; /* as sent upstream */

    /* the current transaction, for the log line */
    int in_tx;
    unsigned rcpts_ok;
    uint64_t size;
    struct timespec t_start;
    const char *fail_reply; /* set when the body can no longer be delivered */

    struct header_rewrite *rewrite; /* sender_rewrite = header */
    char batch[RELAY_BATCH];        /* encoded body lines not yet handed upstream */
    size_t batch_len;

    void (*drain_cb)(void *arg);
    void *drain_arg;
    size_t drain_low;
    int drain_set;
};

static const char *op_str(enum relay_op op)
{
    static const char *const names[] = {"none", "MAIL", "RCPT", "DATA", "DATA-END", "RSET"};
    return names[op];
}

/* Finish the pending operation: hand the device its reply. */
static void finish(struct relay *r, const char *reply)
{
    relay_reply_cb cb = r->cb;
    void *arg = r->cb_arg;
    r->op = OP_NONE;
    r->cb = NULL;
    r->cb_arg = NULL;
    if (cb)
        cb(arg, reply);
}

/* " explain=..." when the Exchange table knows the reply (text: its reply text), else "". */
static const char *explain_kv(const struct relay *r, const struct smtp_reply *rep, const char *text,
                              char *buf, size_t len)
{
    return exchange_explain_kv(rep ? rep->code : 0, rep ? rep->enhanced : NULL, text,
                               r->acct->mailbox, r->acct->client_id, buf, len);
}

/* rep: the upstream reply the message ended with, if any (for explain=). */
static void log_message(struct relay *r, enum metrics_result result, const char *reply,
                        const struct smtp_reply *rep)
{
    struct message_end e = {.log_id = r->log_id,
                            .device = r->device,
                            .acct = r->acct,
                            .from = r->mail_from,
                            .rcpts = r->rcpts_ok,
                            .size = r->size,
                            .result = result,
                            .reply = reply,
                            .rep = rep,
                            .t_start = &r->t_start};
    message_log_end(r->srv, &e);
}

/* Give the connection back to the pool (reusable: the transaction is over and it is healthy)
 * or stop waiting for one. */
static void release_upstream(struct relay *r, int reusable)
{
    if (r->lease) {
        upstream_lease_cancel(r->lease);
        r->lease = NULL;
    }
    if (r->conn)
        upstream_conn_release(r->conn, reusable && client_session_usable(r->up));
    r->conn = NULL;
    r->up = NULL;
}

/* rep: the upstream reply that failed the operation, if any (for explain=). */
static void fail_op_reply(struct relay *r, const char *reply, const char *why,
                          const struct smtp_reply *rep, const char *rep_text)
{
    char safe[600], explain[900];
    log_warn("event=upstream_failed session=%s account=%s op=%s reason=%s%s", r->log_id,
             r->acct->name, op_str(r->op), log_safe(safe, sizeof(safe), why, strlen(why)),
             explain_kv(r, rep, rep_text, explain, sizeof(explain)));
    release_upstream(r, 0);
    finish(r, reply);
}

static void fail_op(struct relay *r, const char *reply, const char *why)
{
    fail_op_reply(r, reply, why, NULL, NULL);
}

static void send_mail(struct relay *r);
static void on_drain(void *arg);

/* The pool's answer to the lease asked for at MAIL (it logged any failure itself). */
static void on_lease(void *arg, struct upstream_conn *c, const struct upstream_failure *f)
{
    struct relay *r = arg;
    r->lease = NULL;
    if (!c) {
        finish(r, f->reply);
        return;
    }
    r->conn = c;
    r->up = upstream_conn_session(c);
    if (r->drain_set)
        client_session_set_drain_cb(r->up, r->drain_low, on_drain, r);
    send_mail(r);
}

static void emit_rewritten(void *arg, const char *line, size_t len);

struct relay *relay_new(struct server *srv, struct server_gen *gen, const struct cfg_account *acct,
                        const char *device, const char *log_id)
{
    struct relay *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->srv = srv;
    r->gen = gen;
    r->acct = acct;
    snprintf(r->device, sizeof(r->device), "%s", device);
    snprintf(r->log_id, sizeof(r->log_id), "%s", log_id);
    if (acct->sender_rewrite == SENDER_REWRITE_HEADER) {
        r->rewrite = header_rewrite_new(acct->mailbox, emit_rewritten, r);
        if (!r->rewrite) {
            free(r);
            return NULL;
        }
    }
    return r;
}

void relay_free(struct relay *r)
{
    if (!r)
        return;
    release_upstream(r, r->op == OP_NONE && !r->in_tx);
    free(r->mail_from);
    header_rewrite_free(r->rewrite);
    free(r);
}

static void on_reply(void *arg, const struct smtp_reply *rep, const char *err)
{
    struct relay *r = arg;
    if (!rep) {
        r->in_tx = 0;
        if (r->op == OP_RSET) { /* nothing is lost: the next MAIL leases another connection */
            release_upstream(r, 0);
            finish(r, "250 2.0.0 OK");
            return;
        }
        fail_op(r, "451 4.4.2 Upstream connection lost, try again later", err ? err : "lost");
        return;
    }
    char text[RELAY_REPLY_MAX];
    smtp_reply_text(rep, text, sizeof(text));
    int ok = rep->code / 100 == 2;
    if (r->op == OP_MAIL || r->op == OP_RCPT)
        metrics_upstream_reply(r->srv->metrics,
                               r->op == OP_MAIL ? METRICS_CMD_MAIL : METRICS_CMD_RCPT, rep->code,
                               rep->enhanced);
    switch (r->op) {
    case OP_MAIL:
        r->in_tx = ok;
        if (!ok) {
            char safe[300], explain[900];
            log_info("event=mail_refused session=%s account=%s upstream=%s%s", r->log_id,
                     r->acct->name, log_safe(safe, sizeof(safe), text, strcspn(text, "\r\n")),
                     explain_kv(r, rep, text, explain, sizeof(explain)));
            release_upstream(r, rep->code != 421); /* no transaction: the connection is free */
        }
        break;
    case OP_RCPT:
        if (ok)
            r->rcpts_ok++;
        break;
    case OP_DATA:
        if (rep->code == 354) {
            r->size = 0;
            r->batch_len = 0;
            if (r->rewrite)
                header_rewrite_reset(r->rewrite);
        }
        break;
    case OP_RSET:
        r->in_tx = 0;
        release_upstream(r, ok);
        break;
    default:
        break;
    }
    if (rep->code == 421 && r->conn) { /* the upstream is closing it */
        r->in_tx = 0;
        release_upstream(r, 0);
    }
    finish(r, text);
}

static void send_mail(struct relay *r)
{
    const struct smtp_caps *caps = client_session_caps(r->up);
    const struct relay_mail_opts *o = &r->mail_opts;
    const char *refusal = NULL;
    if (o->smtputf8 && !caps->smtputf8)
        refusal = "555 5.6.7 SMTPUTF8 is not supported by the upstream server";
    else if (o->body_8bit && !caps->eightbitmime)
        refusal = "555 5.6.3 8BITMIME is not supported by the upstream server";
    else if (caps->has_size && caps->size && o->size > caps->size)
        refusal = "552 5.3.4 Message size exceeds the upstream server's limit";
    if (refusal) {
        release_upstream(r, 1); /* nothing was sent on it */
        finish(r, refusal);
        return;
    }
    char line[SMTP_PATH_MAX + 128];
    int n = snprintf(line, sizeof(line), "MAIL FROM:<%s>", r->mail_from);
    if (o->size && caps->has_size)
        n +=
            snprintf(line + n, sizeof(line) - (size_t)n, " SIZE=%llu", (unsigned long long)o->size);
    if (o->body_8bit)
        n += snprintf(line + n, sizeof(line) - (size_t)n, " BODY=8BITMIME");
    if (o->smtputf8)
        snprintf(line + n, sizeof(line) - (size_t)n, " SMTPUTF8");
    client_session_command(r->up, line, on_reply, r);
}

void relay_mail(struct relay *r, const char *from, const struct relay_mail_opts *o,
                relay_reply_cb cb, void *arg)
{
    r->op = OP_MAIL;
    r->cb = cb;
    r->cb_arg = arg;
    r->mail_opts = *o;
    r->rcpts_ok = 0;
    r->size = 0;
    release_upstream(r, !r->in_tx); /* none is held between transactions; belt and braces */
    r->in_tx = 0;
    r->fail_reply = NULL;
    clock_gettime(CLOCK_MONOTONIC, &r->t_start);
    free(r->mail_from);
    /* A null sender stays null: it marks a bounce, which must never bounce again. */
    int rewrite = r->acct->sender_rewrite != SENDER_REWRITE_OFF && from[0] != '\0';
    r->mail_from = strdup(rewrite ? r->acct->mailbox : from);
    struct upstream_pool *p =
        r->mail_from ? upstream_pools_get(r->srv->pools, r->acct->name) : NULL;
    if (p)
        r->lease = upstream_pool_get(p, r->gen, r->acct, r->log_id, on_lease, r);
    if (!r->lease)
        finish(r, "451 4.3.0 Out of memory");
}

/* A transaction verb needs a live, authenticated upstream (it may have died since MAIL). */
static int upstream_alive(struct relay *r)
{
    if (r->up && client_session_usable(r->up))
        return 1;
    r->in_tx = 0;
    release_upstream(r, 0);
    finish(r, "451 4.4.2 Upstream connection lost, try again later");
    return 0;
}

void relay_rcpt(struct relay *r, const char *to, relay_reply_cb cb, void *arg)
{
    r->op = OP_RCPT;
    r->cb = cb;
    r->cb_arg = arg;
    if (!upstream_alive(r))
        return;
    char line[SMTP_PATH_MAX + 16];
    snprintf(line, sizeof(line), "RCPT TO:<%s>", to);
    client_session_command(r->up, line, on_reply, r);
}

void relay_data(struct relay *r, relay_reply_cb cb, void *arg)
{
    r->op = OP_DATA;
    r->cb = cb;
    r->cb_arg = arg;
    if (!upstream_alive(r))
        return;
    client_session_command(r->up, "DATA", on_reply, r);
}

void relay_data_flush(struct relay *r)
{
    if (r->batch_len && r->up)
        client_session_write(r->up, r->batch, r->batch_len);
    r->batch_len = 0;
}

/* Lines are collected and handed upstream in batches: one write per line made one TLS record
 * per line (about 13,000 per MB, measured in bench/), costing the proxy and the upstream far
 * more than the bytes do. */
static void emit_line(struct relay *r, const char *line, size_t len)
{
    if (len > SMTP_TEXT_LINE_MAX)
        len = SMTP_TEXT_LINE_MAX; /* the decoder never passes longer lines; belt and braces */
    if (r->batch_len + len + 3 > RELAY_BATCH)
        relay_data_flush(r);
    r->batch_len += smtp_data_encode_line(r->batch + r->batch_len, line, len);
}

static void emit_rewritten(void *arg, const char *line, size_t len)
{
    emit_line(arg, line, len);
}

void relay_data_line(struct relay *r, const char *line, size_t len)
{
    r->size += len + 2;
    if (r->fail_reply || !r->up)
        return;
    if (r->rewrite && header_rewrite_line(r->rewrite, line, len) != 0)
        r->fail_reply = "552 5.3.4 Header section too large to rewrite the sender";
    else if (!r->rewrite)
        emit_line(r, line, len);
}

size_t relay_data_pending(const struct relay *r)
{
    if (!r->up || !client_session_usable(r->up))
        return 0;
    return client_session_pending(r->up);
}

static void on_drain(void *arg)
{
    struct relay *r = arg;
    if (r->drain_cb)
        r->drain_cb(r->drain_arg);
}

void relay_set_drain_cb(struct relay *r, size_t low_mark, void (*cb)(void *arg), void *arg)
{
    r->drain_cb = cb;
    r->drain_arg = arg;
    r->drain_low = low_mark;
    r->drain_set = 1; /* also for the connections leased later */
    if (r->up)
        client_session_set_drain_cb(r->up, low_mark, on_drain, r);
}

static void on_data_end(void *arg, const struct smtp_reply *rep, const char *err)
{
    struct relay *r = arg;
    r->in_tx = 0;
    if (!rep) {
        const char *reply = "451 4.4.2 Upstream connection lost before it accepted the message, "
                            "try again later";
        log_message(r, METRICS_DEFERRED, err ? err : "connection lost", NULL);
        fail_op(r, reply, err ? err : "lost");
        return;
    }
    metrics_upstream_reply(r->srv->metrics, METRICS_CMD_DATA, rep->code, rep->enhanced);
    char text[RELAY_REPLY_MAX];
    smtp_reply_text(rep, text, sizeof(text));
    enum metrics_result result = rep->code / 100 == 2   ? METRICS_DELIVERED
                                 : rep->code / 100 == 4 ? METRICS_DEFERRED
                                                        : METRICS_REFUSED;
    log_message(r, result, text, rep);
    /* the final reply ends the transaction: the connection may serve the next message */
    release_upstream(r, rep->code != 421);
    finish(r, text);
}

void relay_data_end(struct relay *r, relay_reply_cb cb, void *arg)
{
    r->op = OP_DATA_END;
    r->cb = cb;
    r->cb_arg = arg;
    if (r->rewrite && !r->fail_reply && r->up)
        header_rewrite_finish(r->rewrite);
    if (r->fail_reply) {
        char reply[256];
        snprintf(reply, sizeof(reply), "%s", r->fail_reply);
        log_message(r, reply[0] == '4' ? METRICS_DEFERRED : METRICS_REFUSED, reply, NULL);
        r->in_tx = 0;
        release_upstream(r, 0); /* nothing partial may be delivered */
        finish(r, reply);
        return;
    }
    if (!r->up || !client_session_usable(r->up)) {
        on_data_end(r, NULL, "upstream connection lost during DATA");
        return;
    }
    relay_data_flush(r);
    client_session_data_end(r->up, on_data_end, r);
}

void relay_data_abort(struct relay *r, const char *reason)
{
    log_message(r, METRICS_REFUSED, reason, NULL);
    r->in_tx = 0;
    release_upstream(r, 0);
}

int relay_in_transaction(const struct relay *r)
{
    return r->in_tx;
}

void relay_rset(struct relay *r, relay_reply_cb cb, void *arg)
{
    r->op = OP_RSET;
    r->cb = cb;
    r->cb_arg = arg;
    if (r->in_tx && r->up && client_session_usable(r->up)) {
        client_session_command(r->up, "RSET", on_reply, r);
        return;
    }
    r->in_tx = 0;
    release_upstream(r, 1);
    finish(r, "250 2.0.0 OK");
}
