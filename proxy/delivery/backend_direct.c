/* delivery = direct: the device's transaction relayed step by step through the transaction
 * engine (txn.h), so the device hears the upstream's own replies. A connection is leased from
 * the account's pool at MAIL and given back when the transaction ends: a device session holds
 * none between its messages. */
#include "proxy/delivery/backend_direct.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "proxy/config/config.h"
#include "proxy/smtp/exchange_explain.h"
#include "proxy/delivery/message_log.h"
#include "proxy/runtime/account_budget.h"
#include "proxy/runtime/metrics.h"
#include "proxy/delivery/deliver.h"
#include "proxy/delivery/delivery_ctx.h"
#include "proxy/smtp/smtp_reply.h"
#include "proxy/delivery/txn.h"
#include "proxy/upstream/upstream_pool.h"

enum relay_op { OP_NONE, OP_MAIL, OP_RCPT, OP_DATA, OP_DATA_END, OP_RSET };

static const char REPLY_LOST[] = "451 4.4.2 Upstream connection lost, try again later";

struct direct_backend {
    struct backend base; /* first: the device session holds &base */
    const struct delivery_ctx *ctx;
    struct server_gen *gen; /* the session's config generation (borrowed) */
    const struct cfg_account *acct;
    char device[128];
    char log_id[32];

    struct upstream_lease *lease; /* waiting for a connection (MAIL) */
    struct txn *t;                /* the transaction, on its leased connection */

    enum relay_op op;
    backend_reply_cb cb;
    void *cb_arg;
    struct txn_mail_opts mail_opts;
    char *from; /* as the device gave it */

    /* the current transaction, for the log line */
    unsigned rcpts_ok;
    struct timespec t_start;

    void (*drain_cb)(void *arg);
    void *drain_arg;
    size_t drain_low;

    int budget_held;        /* this transaction was held for the daily budget (counted once) */
    char budget_reply[256]; /* the 451 it heard */
};

static const char *op_str(enum relay_op op)
{
    static const char *const names[] = {"none", "MAIL", "RCPT", "DATA", "DATA-END", "RSET"};
    return names[op];
}

/* Finish the pending operation: hand the device its reply. */
static void finish(struct direct_backend *r, const char *reply)
{
    backend_reply_cb cb = r->cb;
    void *arg = r->cb_arg;
    r->op = OP_NONE;
    r->cb = NULL;
    r->cb_arg = NULL;
    if (cb)
        cb(arg, reply);
}

/* " explain=..." when the Exchange table knows the reply (text: its reply text), else "". */
static const char *explain_kv(const struct direct_backend *r, const struct txn_reply *x, char *buf,
                              size_t len)
{
    return exchange_explain_kv(x->rep ? x->rep->code : 0, x->rep ? x->rep->enhanced : NULL, x->text,
                               r->acct->mailbox, r->acct->client_id, buf, len);
}

/* x: the reply the message ended with, if any (for explain=). Before the transaction is freed. */
static void log_message(struct direct_backend *r, enum metrics_result result, const char *reply,
                        const struct smtp_reply *rep)
{
    const char *from = r->t ? txn_mail_from(r->t) : NULL;
    struct message_end e = {.log_id = r->log_id,
                            .device = r->device,
                            .acct = r->acct,
                            .from = from ? from : r->from,
                            .rcpts = r->rcpts_ok,
                            .size = r->t ? txn_body_size(r->t) : 0,
                            .result = result,
                            .reply = reply,
                            .rep = rep,
                            .t_start = &r->t_start,
                            .accepted = result == METRICS_DELIVERED ? r->rcpts_ok : 0};
    message_log_end(r->ctx, &e);
}

/* The transaction is over: its connection goes back (reused if the engine finds it healthy),
 * or the wait for one stops. */
static void end_txn(struct direct_backend *r, int reusable)
{
    if (r->lease) {
        upstream_lease_cancel(r->lease);
        r->lease = NULL;
    }
    txn_free(r->t, reusable);
    r->t = NULL;
}

/* No reply at all: the connection went (the engine decided and phrased it). */
static void log_lost(struct direct_backend *r, const struct txn_reply *x)
{
    char safe[600], explain[900];
    log_warn("event=upstream_failed session=%s account=%s op=%s reason=%s%s", r->log_id,
             r->acct->name, op_str(r->op), log_safe(safe, sizeof(safe), x->err, strlen(x->err)),
             explain_kv(r, x, explain, sizeof(explain)));
}

/* The upstream refused a recipient for good: the device hears it, the log says it (and what it
 * means: direct send's 550 5.7.54, a connector's 5.7.64, ...), as on_mail does for MAIL. */
static void log_rcpt_refused(const struct direct_backend *r, const struct txn_reply *x)
{
    char safe[300], explain[900];
    log_info("event=rcpt_refused session=%s account=%s upstream=%s%s", r->log_id, r->acct->name,
             log_safe(safe, sizeof(safe), x->text, strcspn(x->text, "\r\n")),
             explain_kv(r, x, explain, sizeof(explain)));
}

/* A step's reply: the connection lost or closing ends the transaction with it. */
static void on_step(void *arg, const struct txn_reply *x)
{
    struct direct_backend *r = arg;
    if (x->err)
        log_lost(r, x);
    else if (r->op == OP_RCPT && x->code / 100 == 5 && x->rep)
        log_rcpt_refused(r, x);
    if (r->op == OP_RCPT && x->code / 100 == 2)
        r->rcpts_ok++;
    if (!txn_usable(r->t))
        end_txn(r, 0);
    finish(r, x->text);
}

static void on_mail(void *arg, const struct txn_reply *x)
{
    struct direct_backend *r = arg;
    if (x->err) {
        log_lost(r, x);
    } else if (x->code / 100 != 2 && x->rep) {
        char safe[300], explain[900];
        log_info("event=mail_refused session=%s account=%s upstream=%s%s", r->log_id, r->acct->name,
                 log_safe(safe, sizeof(safe), x->text, strcspn(x->text, "\r\n")),
                 explain_kv(r, x, explain, sizeof(explain)));
    }
    if (x->code / 100 != 2)
        end_txn(r, 1); /* no transaction: the connection is free (unless it is closing) */
    finish(r, x->text);
}

/* The pool's answer to the lease asked for at MAIL (it logged any failure itself). */
static void on_lease(void *arg, struct upstream_conn *c, const struct upstream_failure *f)
{
    struct direct_backend *r = arg;
    r->lease = NULL;
    if (!c) {
        finish(r, f->reply);
        return;
    }
    r->t = txn_new(&deliver_pool_ops, c, r->acct, r->ctx->metrics, r->log_id);
    if (!r->t) {
        finish(r, "451 4.3.0 Out of memory");
        return;
    }
    if (r->drain_cb)
        txn_set_drain_cb(r->t, r->drain_low, r->drain_cb, r->drain_arg);
    txn_mail(r->t, r->from, &r->mail_opts, on_mail, r);
}

static void relay_free(struct backend *b)
{
    struct direct_backend *r = (struct direct_backend *)b;
    end_txn(r, 1); /* reused only when no transaction or step is open on it */
    free(r->from);
    free(r);
}

/* The account's daily recipient budget has no room for n recipients: the 451 the device hears
 * (it tries again later; nothing is queued in this mode), else NULL. */
static const char *budget_refusal(struct direct_backend *r, size_t n)
{
    return backend_budget_refusal(r->ctx, r->acct, n, &r->budget_held, r->budget_reply,
                                  sizeof(r->budget_reply));
}

static void relay_mail(struct backend *b, const char *from, const struct txn_mail_opts *o,
                       backend_reply_cb cb, void *arg)
{
    struct direct_backend *r = (struct direct_backend *)b;
    r->op = OP_MAIL;
    r->cb = cb;
    r->cb_arg = arg;
    r->mail_opts = *o;
    r->rcpts_ok = 0;
    r->budget_held = 0;
    end_txn(r, 1); /* none is held between transactions; belt and braces */
    const char *held = budget_refusal(r, 1);
    if (held) {
        finish(r, held);
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &r->t_start);
    free(r->from);
    r->from = strdup(from);
    struct upstream_pool *p = r->from ? upstream_pools_get(r->ctx->pools, r->acct->name) : NULL;
    if (p)
        r->lease = upstream_pool_get(p, r->gen, r->acct, r->log_id, on_lease, r);
    if (!r->lease)
        finish(r, "451 4.3.0 Out of memory");
}

/* A transaction verb needs the transaction MAIL opened (it may have gone since). */
static int have_txn(struct direct_backend *r, enum relay_op op, backend_reply_cb cb, void *arg)
{
    r->op = op;
    r->cb = cb;
    r->cb_arg = arg;
    if (r->t)
        return 1;
    finish(r, REPLY_LOST);
    return 0;
}

static void relay_rcpt(struct backend *b, const char *to, backend_reply_cb cb, void *arg)
{
    struct direct_backend *r = (struct direct_backend *)b;
    const char *refusal;
    if (!have_txn(r, OP_RCPT, cb, arg))
        return;
    if ((refusal = budget_refusal(r, (size_t)r->rcpts_ok + 1)) != NULL ||
        (refusal = txn_rcpt(r->t, to, on_step, r)) != NULL)
        finish(r, refusal);
}

static void relay_data(struct backend *b, backend_reply_cb cb, void *arg)
{
    struct direct_backend *r = (struct direct_backend *)b;
    if (have_txn(r, OP_DATA, cb, arg))
        txn_data(r->t, on_step, r);
}

static size_t relay_data_flush(struct backend *b)
{
    struct direct_backend *r = (struct direct_backend *)b;
    if (!r->t)
        return 0;
    txn_body_flush(r->t);
    return txn_pending(r->t);
}

static void relay_data_line(struct backend *b, const char *line, size_t len)
{
    struct direct_backend *r = (struct direct_backend *)b;
    if (r->t)
        txn_body_line(r->t, line, len);
}

static void relay_set_drain_cb(struct backend *b, size_t low_mark, void (*cb)(void *arg), void *arg)
{
    struct direct_backend *r = (struct direct_backend *)b;
    r->drain_cb = cb; /* also for the connections leased later */
    r->drain_arg = arg;
    r->drain_low = low_mark;
    if (r->t)
        txn_set_drain_cb(r->t, low_mark, cb, arg);
}

static void on_data_end(void *arg, const struct txn_reply *x)
{
    struct direct_backend *r = arg;
    enum metrics_result result = x->code / 100 == 2   ? METRICS_DELIVERED
                                 : x->code / 100 == 4 ? METRICS_DEFERRED
                                                      : METRICS_REFUSED;
    if (x->err)
        log_lost(r, x);
    log_message(r, result, x->err ? x->err : x->text, x->rep);
    end_txn(r, 1); /* the final reply ends the transaction: the connection may serve the next */
    finish(r, x->text);
}

static void relay_data_end(struct backend *b, backend_reply_cb cb, void *arg)
{
    struct direct_backend *r = (struct direct_backend *)b;
    if (!have_txn(r, OP_DATA_END, cb, arg))
        return;
    if (txn_body_failed(r->t)) { /* e.g. a header section too large to rewrite */
        char reply[TXN_REPLY_MAX];
        snprintf(reply, sizeof(reply), "%s", txn_result(r->t)->reply);
        log_message(r, reply[0] == '4' ? METRICS_DEFERRED : METRICS_REFUSED, reply, NULL);
        end_txn(r, 0); /* nothing partial may be delivered */
        finish(r, reply);
        return;
    }
    txn_end(r->t, on_data_end, r);
}

static void relay_data_abort(struct backend *b, const char *reason)
{
    struct direct_backend *r = (struct direct_backend *)b;
    log_message(r, METRICS_REFUSED, reason, NULL);
    end_txn(r, 0);
}

static int relay_in_transaction(const struct backend *b)
{
    const struct direct_backend *r = (const struct direct_backend *)b;
    return r->t && txn_open(r->t);
}

static void on_rset(void *arg, const struct txn_reply *x)
{
    struct direct_backend *r = arg;
    end_txn(r, 1);
    finish(r, x->text);
}

static void relay_rset(struct backend *b, backend_reply_cb cb, void *arg)
{
    struct direct_backend *r = (struct direct_backend *)b;
    r->op = OP_RSET;
    r->cb = cb;
    r->cb_arg = arg;
    if (r->t && txn_open(r->t) && txn_usable(r->t)) {
        txn_rset(r->t, on_rset, r);
        return;
    }
    end_txn(r, 1);
    finish(r, "250 2.0.0 OK");
}

static const struct backend_ops relay_ops = {
    .mail = relay_mail,
    .rcpt = relay_rcpt,
    .data = relay_data,
    .data_line = relay_data_line,
    .data_flush = relay_data_flush,
    .set_drain_cb = relay_set_drain_cb,
    .data_end = relay_data_end,
    .data_abort = relay_data_abort,
    .rset = relay_rset,
    .in_transaction = relay_in_transaction,
    .free = relay_free,
};

struct backend *backend_direct_new(const struct delivery_ctx *ctx, struct server_gen *gen,
                                   const struct cfg_account *acct, const char *device,
                                   const char *log_id)
{
    struct direct_backend *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->base.ops = &relay_ops;
    r->ctx = ctx;
    r->gen = gen;
    r->acct = acct;
    snprintf(r->device, sizeof(r->device), "%s", device);
    snprintf(r->log_id, sizeof(r->log_id), "%s", log_id);
    return &r->base;
}
