#include "proxy/delivery/backend_store.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "common/log.h"
#include "proxy/config/config.h"
#include "proxy/delivery/deliver.h"
#include "proxy/delivery/deliver_graph.h"
#include "proxy/graph/graph_client.h"
#include "proxy/delivery/message_log.h"
#include "proxy/runtime/account_budget.h"
#include "proxy/runtime/metrics.h"
#include "proxy/delivery/queue.h"
#include "proxy/delivery/delivery_ctx.h"
#include "proxy/runtime/server_gen.h"
#include "proxy/delivery/spool_commit.h"
#include "proxy/upstream/upstream_pool.h"
#include "store/spool.h"

/* Body lines are gathered and written in blocks: one write(2) per line costs more than the
 * bytes (the relay batches its TLS writes for the same reason). */
#define STORE_BATCH (64 * 1024)
/* direct-then-spool: a device waits this long at most for the account's rate limit; beyond, the
 * message goes into the queue at once. */
#define STORE_RATE_WAIT_MAX_MS 2000
#define STORE_REPLY_MAX 600

struct store_backend {
    struct backend base; /* first: the device session holds &base */
    const struct delivery_ctx *ctx;
    struct server_gen *gen;
    const struct cfg_account *acct;
    char device[SPOOL_NAME_MAX + 1];
    char log_id[32];

    /* the transaction */
    char *from;             /* as the device sent it; "" is the null sender */
    int budget_held;        /* direct (graph): held for the daily budget (counted once) */
    int64_t retry_after_ms; /* the attempt's upstream said when to try again (0: backoff) */
    char budget_reply[256]; /* the 451 it heard */
    char **rcpts;
    size_t nrcpts, cap;
    struct txn_mail_opts opts;
    struct timespec t_start;

    /* the body */
    struct spool_writer *w;
    char *batch;
    size_t batch_len;
    uint64_t size;
    int write_failed;

    /* the end of DATA */
    struct spool_envelope env; /* borrows from, rcpts and device: never cleared */
    char **queue_rcpts;        /* the recipients left to queue after an attempt */
    struct upstream_lease *lease;
    struct deliver *dl;
    struct deliver_graph *gdl; /* a graph account's attempt */
    struct spool_commit *commit;
    struct spool_body *reader;
    struct event *deadline; /* direct-then-spool: the device waits no longer than this */
    backend_reply_cb cb;
    void *cb_arg;
    char reply[STORE_REPLY_MAX];
    size_t accepted; /* recipients the direct attempt delivered (for the daily budget) */
};

static void stop_deadline(struct store_backend *r)
{
    if (r->deadline)
        event_free(r->deadline);
    r->deadline = NULL;
}

/* End a direct-then-spool attempt, whatever stage it is at: the deadline, the wait for a
 * connection, the delivery, the reader of the uncommitted body. */
static void stop_attempt(struct store_backend *r)
{
    stop_deadline(r);
    if (r->lease)
        upstream_lease_cancel(r->lease);
    r->lease = NULL;
    deliver_cancel(r->dl);
    r->dl = NULL;
    deliver_graph_cancel(r->gdl);
    r->gdl = NULL;
    spool_body_free(r->reader);
    r->reader = NULL;
}

/* Drop the body and anything in flight; the envelope stays. */
static void drop_body(struct store_backend *r)
{
    stop_attempt(r);
    spool_commit_detach(r->commit); /* it completes and is queued all the same */
    r->commit = NULL;
    spool_writer_abort(r->w);
    r->w = NULL;
    free(r->batch);
    r->batch = NULL;
    r->batch_len = 0;
    r->size = 0;
    r->write_failed = 0;
    free(r->queue_rcpts);
    r->queue_rcpts = NULL;
    r->accepted = 0;
}

static void forget(struct store_backend *r)
{
    drop_body(r);
    free(r->from);
    r->from = NULL;
    for (size_t i = 0; i < r->nrcpts; i++)
        free(r->rcpts[i]);
    r->nrcpts = 0;
    r->retry_after_ms = 0;
    r->cb = NULL;
    r->cb_arg = NULL;
}

static void store_free(struct backend *b)
{
    struct store_backend *r = (struct store_backend *)b;
    forget(r);
    free(r->rcpts);
    free(r);
}

static const char *mail(struct store_backend *r, const char *from, const struct txn_mail_opts *o)
{
    forget(r);
    if (strlen(from) > SPOOL_ADDR_MAX)
        return "501 5.1.7 Sender address too long";
    if (r->acct->kind == UPSTREAM_KIND_GRAPH && o->size > DELIVER_GRAPH_SIZE_MAX)
        return DELIVER_GRAPH_TOO_BIG;
    /* direct (a graph account): nothing is queued, so the budget refuses as backend_direct's */
    r->budget_held = 0;
    const char *held = r->acct->delivery == DELIVERY_DIRECT
                           ? backend_budget_refusal(r->ctx, r->acct, 1, &r->budget_held,
                                                    r->budget_reply, sizeof(r->budget_reply))
                           : NULL;
    if (held)
        return held;
    r->from = strdup(from);
    if (!r->from)
        return "451 4.3.0 Out of memory";
    r->opts = *o;
    clock_gettime(CLOCK_MONOTONIC, &r->t_start);
    return "250 2.1.0 Sender OK";
}

static const char *rcpt(struct store_backend *r, const char *to)
{
    if (!r->from)
        return "503 5.5.1 MAIL first";
    if (r->nrcpts >= SPOOL_MAX_RCPTS)
        return "452 4.5.3 Too many recipients";
    if (strlen(to) > SPOOL_ADDR_MAX)
        return "501 5.1.3 Recipient address too long";
    const char *held = r->acct->delivery == DELIVERY_DIRECT
                           ? backend_budget_refusal(r->ctx, r->acct, r->nrcpts + 1, &r->budget_held,
                                                    r->budget_reply, sizeof(r->budget_reply))
                           : NULL;
    if (held)
        return held;
    if (r->nrcpts == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8;
        char **n = realloc(r->rcpts, cap * sizeof(*n));
        if (!n)
            return "451 4.3.0 Out of memory";
        r->rcpts = n;
        r->cap = cap;
    }
    r->rcpts[r->nrcpts] = strdup(to);
    if (!r->rcpts[r->nrcpts])
        return "451 4.3.0 Out of memory";
    r->nrcpts++;
    return "250 2.1.5 Recipient OK";
}

static const char *data(struct store_backend *r)
{
    char err[512], safe[600];
    drop_body(r);
    if (!r->ctx->queue) {
        log_error("event=spool_unavailable session=%s account=%s", r->log_id, r->acct->name);
        return "451 4.3.0 The spool is not available, try again later";
    }
    r->batch = malloc(STORE_BATCH);
    r->w = r->batch ? spool_writer_new(queue_spool(r->ctx->queue), err, sizeof(err)) : NULL;
    if (!r->w) {
        log_error("event=spool_write_failed session=%s account=%s reason=%s", r->log_id,
                  r->acct->name,
                  r->batch ? log_safe(safe, sizeof(safe), err, strlen(err)) : "out-of-memory");
        free(r->batch);
        r->batch = NULL;
        return "451 4.3.0 Cannot queue the message now, try again later";
    }
    return "354 End data with <CR><LF>.<CR><LF>";
}

static void flush_batch(struct store_backend *r)
{
    char err[512], safe[600];
    if (r->batch_len && !r->write_failed &&
        spool_writer_write(r->w, r->batch, r->batch_len, err, sizeof(err)) != 0) {
        log_error("event=spool_write_failed session=%s queue_id=%s reason=%s", r->log_id,
                  spool_writer_id(r->w), log_safe(safe, sizeof(safe), err, strlen(err)));
        r->write_failed = 1;
    }
    r->batch_len = 0;
}

static void store_data_line(struct backend *b, const char *line, size_t len)
{
    struct store_backend *r = (struct store_backend *)b;
    if (!r->w)
        return;
    r->size += len + 2;
    if (r->acct->kind == UPSTREAM_KIND_GRAPH && r->size > DELIVER_GRAPH_SIZE_MAX)
        return; /* refused at the end of DATA; nothing more on disk */
    if (len + 2 > STORE_BATCH - r->batch_len)
        flush_batch(r);
    if (len + 2 > STORE_BATCH) { /* the decoder's lines are far shorter; never overflow */
        r->write_failed = 1;
        return;
    }
    memcpy(r->batch + r->batch_len, line, len);
    memcpy(r->batch + r->batch_len + len, "\r\n", 2);
    r->batch_len += len + 2;
}

/* The message's end as the device hears it: one log line (the relay's event=message, with the
 * queue id when it was queued), the counters, the reply. */
static void finish(struct store_backend *r, const char *reply, enum metrics_result result,
                   const char *queue_id)
{
    backend_reply_cb cb = r->cb;
    void *arg = r->cb_arg;
    struct message_end e = {
        .log_id = r->log_id,
        .device = r->device,
        .acct = r->acct,
        .from = r->from,
        .rcpts = r->nrcpts,
        .size = r->size,
        .result = result,
        .reply = reply,
        .t_start = &r->t_start,
        .delivery = r->acct->delivery == DELIVERY_SPOOL    ? "spool"
                    : r->acct->delivery == DELIVERY_DIRECT ? "direct"
                                                           : "direct-then-spool",
        .queue_id = queue_id,
        .accepted = r->accepted,
    };
    message_log_end(r->ctx, &e);
    snprintf(r->reply, sizeof(r->reply), "%s", reply);
    forget(r); /* the transaction is over: drops the writer if it was not committed */
    if (cb)
        cb(arg, r->reply);
}

static void on_committed(void *arg, const char *queue_id, const char *err)
{
    struct store_backend *r = arg;
    char safe[600], reply[96];
    r->commit = NULL;
    if (!queue_id) {
        log_error("event=spool_commit_failed session=%s account=%s reason=%s", r->log_id,
                  r->acct->name, log_safe(safe, sizeof(safe), err, strlen(err)));
        finish(r, "451 4.3.0 Could not queue the message, try again later", METRICS_DEFERRED, NULL);
        return;
    }
    snprintf(reply, sizeof(reply), "250 2.0.0 Ok: queued as %s", queue_id);
    finish(r, reply, METRICS_QUEUED, queue_id);
}

/* Commit what the envelope names (the queue takes it from there) and answer 250 once it is
 * durable. attempted: an upstream attempt failed with last_error; it counts as the first, so
 * the queue waits the backoff before the next; conn_failure: the failure was the connection's. */
static void queue_message(struct store_backend *r, int attempted, const char *last_error,
                          int conn_failure)
{
    char errbuf[SPOOL_ERROR_MAX + 1];
    int64_t now = (int64_t)time(NULL);

    stop_attempt(r); /* every way an attempt ends without delivery leads here */
    r->env.attempts = attempted ? 1 : 0;
    r->env.next_attempt = 0;
    r->env.last_error = NULL;
    if (attempted) {
        r->env.next_attempt = queue_retry_at(r->ctx->queue, 1, now, r->retry_after_ms);
        r->env.last_error = spool_error_sanitize(errbuf, sizeof(errbuf), last_error);
        /* the upstream itself failed: the account's queue waits too, and this message stays
         * first in it */
        if (conn_failure)
            queue_account_stop(r->ctx->queue, r->acct->name, r->env.next_attempt);
    }
    struct spool_writer *w = r->w;
    r->w = NULL; /* the commit takes it */
    if (spool_commit_start(r->ctx->committer, w, &r->env, on_committed, r, &r->commit) != 0)
        finish(r, "451 4.3.0 Out of memory, try again later", METRICS_DEFERRED, NULL);
}

/* Bounce the recipients refused for good while others were delivered or queued: the device
 * hears 250, so only a DSN can tell the sender. 0 queued (or none due); -1 not. */
static int bounce_refused(struct store_backend *r, const struct txn_result *res)
{
    char err[512], safe[600];
    char *head = NULL;
    size_t len = 0;
    /* the bounce names the id the message was written under (it is not committed, so nothing
     * in the queue has it; the id is in the log line of this session) */
    snprintf(r->env.queue_id, sizeof(r->env.queue_id), "%s", spool_writer_id(r->w));
    queue_read_head(spool_writer_reader(r->w, err, sizeof(err)), &head, &len);
    char ghost[256];
    const char *host = r->acct->kind == UPSTREAM_KIND_GRAPH
                           ? deliver_graph_host(r->acct, ghost, sizeof(ghost))
                           : r->acct->upstream.host;
    int rc = queue_bounce(r->ctx->queue, r->acct, &r->env, DSN_REASON_REFUSED, res, host, head, len,
                          err, sizeof(err));
    if (rc < 0)
        log_error("event=bounce_failed session=%s account=%s reason=%s effect=\"the refused "
                  "recipients are queued and tried again\"",
                  r->log_id, r->acct->name, log_safe(safe, sizeof(safe), err, strlen(err)));
    free(head);
    return rc < 0 ? -1 : 0;
}

static void on_delivered(void *arg, const struct txn_result *res)
{
    struct store_backend *r = arg;
    size_t ok = 0, temp = 0, perm = 0;
    const char *temp_reply = NULL;
    r->dl = NULL; /* done: the rest of the attempt ends with it */
    r->gdl = NULL;
    r->retry_after_ms = res->retry_after_ms;
    stop_attempt(r);
    for (size_t i = 0; i < res->nrcpts && i < r->env.nrcpts; i++) {
        if (res->rcpts[i].status == TXN_OK) {
            ok++;
        } else if (res->rcpts[i].status == TXN_TEMP) {
            if (!temp_reply)
                temp_reply = res->rcpts[i].reply;
            temp++;
        } else {
            perm++;
        }
    }
    r->accepted = ok;           /* counted when the message ends, whatever else happens to it */
    if (temp == 0 && ok == 0) { /* refused for good: the device's screen says so */
        finish(r, res->reply, METRICS_REFUSED, NULL);
        return;
    }
    /* delivery = direct (a graph account): nothing is queued, the device hears the verdict.
     * Graph takes a message whole or not at all, so there is no mix to split here. */
    if (r->acct->delivery == DELIVERY_DIRECT && temp) {
        finish(r, temp_reply ? temp_reply : res->reply, METRICS_DEFERRED, NULL);
        return;
    }
    /* No bounce could be queued (disk full?): the refused recipients go into the queue with the
     * temporary ones, to be refused (and bounced) again later rather than dropped. */
    int requeue_perm = perm && bounce_refused(r, res) < 0;
    if (temp == 0 && !requeue_perm) { /* queue_id: what the bounce of the refused ones names */
        finish(r, res->reply, METRICS_DELIVERED, perm ? r->env.queue_id : NULL);
        return;
    }
    if (!temp_reply)
        temp_reply = res->reply;
    /* Queue only the recipients still to do. */
    r->queue_rcpts = malloc((temp + perm) * sizeof(*r->queue_rcpts));
    if (!r->queue_rcpts) {
        finish(r, "451 4.3.0 Out of memory", METRICS_DEFERRED, NULL);
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < res->nrcpts && i < r->env.nrcpts; i++)
        if (res->rcpts[i].status == TXN_TEMP || (requeue_perm && res->rcpts[i].status == TXN_PERM))
            r->queue_rcpts[n++] = r->env.rcpts[i];
    r->env.rcpts = r->queue_rcpts;
    r->env.nrcpts = n;
    queue_message(r, 1, temp_reply, res->conn_failure);
}

static void on_lease(void *arg, struct upstream_conn *c, const struct upstream_failure *f)
{
    struct store_backend *r = arg;
    char err[512], safe[600];
    r->lease = NULL;
    if (!c) { /* upstream down, TLS, token: the queue takes it */
        queue_message(r, 1, f && f->why ? f->why : "no upstream connection", 1);
        return;
    }
    r->reader = spool_writer_reader(r->w, err, sizeof(err));
    if (!r->reader) {
        upstream_conn_release(c, 1);
        log_error("event=spool_read_failed session=%s account=%s reason=%s", r->log_id,
                  r->acct->name, log_safe(safe, sizeof(safe), err, strlen(err)));
        queue_message(r, 0, NULL, 0);
        return;
    }
    r->dl =
        deliver_start(c, r->acct, &r->env, r->reader, r->ctx->metrics, r->log_id, on_delivered, r);
    if (!r->dl)
        queue_message(r, 0, NULL, 0);
}

/* The upstream is too slow (or every connection busy) for a device that waits: the message is
 * queued and the device hears 250 before it gives up (a copier that times out loses the scan).
 * An attempt cut after its final "." may have been delivered: the queue sends it again, the
 * at-least-once case. */
static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct store_backend *r = arg;
    char why[128];
    (void)fd;
    (void)what;
    if (r->acct->delivery == DELIVERY_DIRECT) { /* nothing is queued in direct */
        stop_attempt(r);
        log_warn("event=direct_attempt_timeout session=%s account=%s after_s=%u "
                 "effect=\"the device hears 451\"",
                 r->log_id, r->acct->name, r->gen->cfg->direct_attempt_timeout);
        finish(r, "451 4.4.2 No answer from the upstream in time, try again later",
               METRICS_DEFERRED, NULL);
        return;
    }
    snprintf(why, sizeof(why), "no answer from the upstream within %us (direct_attempt_timeout)",
             r->gen->cfg->direct_attempt_timeout);
    log_warn("event=direct_attempt_timeout session=%s account=%s after_s=%u "
             "effect=\"queued; the device hears 250\"",
             r->log_id, r->acct->name, r->gen->cfg->direct_attempt_timeout);
    queue_message(r, 1, why, 1);
}

/* direct-then-spool goes to the queue at once when it would overtake queued messages of the
 * account, when the account's daily recipient budget has no room for it (the queue holds it
 * until there is), or when pacing would keep the device waiting. */
static int straight_to_queue(struct store_backend *r, struct upstream_pool *pool,
                             struct graph_pool *gpool)
{
    if (r->acct->delivery == DELIVERY_DIRECT) /* a graph account: the device waits */
        return 0;
    if (r->acct->delivery == DELIVERY_SPOOL || (!pool && !gpool))
        return 1;
    if (queue_account_waiting(r->ctx->queue, r->acct->name))
        return 1;
    if (!account_budget_admit(r->ctx->budget, r->acct->name, r->acct->daily_recipient_limit,
                              r->nrcpts, (int64_t)time(NULL), NULL))
        return 1;
    return (gpool ? graph_pool_wait_ms(gpool) : upstream_pool_rate_wait_ms(pool)) >
           STORE_RATE_WAIT_MAX_MS;
}

/* No attempt could start (out of memory): the queue takes the message, or, in direct (a graph
 * account), the device hears to try again. */
static void no_attempt(struct store_backend *r)
{
    if (r->acct->delivery == DELIVERY_DIRECT)
        finish(r, "451 4.3.0 Cannot send the message now, try again later", METRICS_DEFERRED, NULL);
    else
        queue_message(r, 0, NULL, 0);
}

/* A graph account's attempt: Graph reads the body the writer has so far (not yet committed). */
static void start_graph(struct store_backend *r)
{
    char err[512], safe[600];
    r->reader = spool_writer_reader(r->w, err, sizeof(err));
    if (!r->reader) {
        log_error("event=spool_read_failed session=%s account=%s reason=%s", r->log_id,
                  r->acct->name, log_safe(safe, sizeof(safe), err, strlen(err)));
        goto fail;
    }
    r->gdl = deliver_graph_start(r->ctx->base, r->ctx->graph, r->gen, r->acct, &r->env, r->reader,
                                 r->log_id, on_delivered, r);
    if (r->gdl)
        return;
fail:
    no_attempt(r);
}

static void store_data_end(struct backend *b, backend_reply_cb cb, void *arg)
{
    struct store_backend *r = (struct store_backend *)b;
    r->cb = cb;
    r->cb_arg = arg;
    if (!r->w || !r->from || r->nrcpts == 0) {
        finish(r, "451 4.3.0 Cannot queue the message now, try again later", METRICS_DEFERRED,
               NULL);
        return;
    }
    flush_batch(r);
    if (r->acct->kind == UPSTREAM_KIND_GRAPH && r->size > DELIVER_GRAPH_SIZE_MAX) {
        finish(r, DELIVER_GRAPH_TOO_BIG, METRICS_REFUSED, NULL);
        return;
    }
    if (r->write_failed) {
        finish(r, "451 4.3.0 Could not write the message to the spool, try again later",
               METRICS_DEFERRED, NULL);
        return;
    }
    memset(&r->env, 0, sizeof(r->env));
    r->env.account = r->acct->name;
    r->env.device = r->device;
    r->env.mail_from = r->from;
    r->env.rcpts = r->rcpts;
    r->env.nrcpts = r->nrcpts;
    r->env.smtputf8 = r->opts.smtputf8 != 0;
    r->env.eightbit = r->opts.body_8bit != 0;
    r->env.created = (int64_t)time(NULL);

    int graph = r->acct->kind == UPSTREAM_KIND_GRAPH;
    struct upstream_pool *pool = graph ? NULL : upstream_pools_get(r->ctx->pools, r->acct->name);
    struct graph_pool *gpool =
        graph && r->ctx->graph ? graph_pools_get(r->ctx->graph, r->acct->name) : NULL;
    if (graph && !gpool) {
        no_attempt(r);
        return;
    }
    if (straight_to_queue(r, pool, gpool)) {
        queue_message(r, 0, NULL, 0);
        return;
    }
    struct timeval tv = {.tv_sec = (time_t)r->gen->cfg->direct_attempt_timeout};
    r->deadline = evtimer_new(r->ctx->base, on_deadline, r);
    if (!r->deadline || evtimer_add(r->deadline, &tv) != 0) {
        no_attempt(r);
        return;
    }
    if (graph) {
        start_graph(r);
        return;
    }
    r->lease = upstream_pool_get(pool, r->gen, r->acct, r->log_id, on_lease, r);
    if (!r->lease)
        queue_message(r, 0, NULL, 0);
}

static void store_data_abort(struct backend *b, const char *reason)
{
    struct store_backend *r = (struct store_backend *)b;
    r->cb = NULL; /* the device session answers itself */
    finish(r, reason, METRICS_REFUSED, NULL);
}

/* ---- the backend: MAIL, RCPT and DATA are answered at once ---- */

static void store_mail(struct backend *b, const char *from, const struct txn_mail_opts *o,
                       backend_reply_cb cb, void *arg)
{
    cb(arg, mail((struct store_backend *)b, from, o));
}

static void store_rcpt(struct backend *b, const char *to, backend_reply_cb cb, void *arg)
{
    cb(arg, rcpt((struct store_backend *)b, to));
}

static void store_data(struct backend *b, backend_reply_cb cb, void *arg)
{
    struct store_backend *r = (struct store_backend *)b;
    const char *reply = data(r);
    if (reply[0] != '3')
        forget(r); /* the spool cannot take it: the transaction ends here */
    cb(arg, reply);
}

static size_t store_data_flush(struct backend *b)
{
    (void)b;
    return 0; /* written to disk as it comes: nothing waits */
}

static void store_set_drain_cb(struct backend *b, size_t low_mark, void (*cb)(void *arg), void *arg)
{
    (void)b, (void)low_mark, (void)cb, (void)arg; /* never above a mark */
}

static void store_rset(struct backend *b, backend_reply_cb cb, void *arg)
{
    forget((struct store_backend *)b);
    cb(arg, "250 2.0.0 OK");
}

static int store_in_transaction(const struct backend *b)
{
    return ((const struct store_backend *)b)->from != NULL;
}

static const struct backend_ops store_ops = {
    .mail = store_mail,
    .rcpt = store_rcpt,
    .data = store_data,
    .data_line = store_data_line,
    .data_flush = store_data_flush,
    .set_drain_cb = store_set_drain_cb,
    .data_end = store_data_end,
    .data_abort = store_data_abort,
    .rset = store_rset,
    .in_transaction = store_in_transaction,
    .free = store_free,
};

struct backend *backend_store_new(const struct delivery_ctx *ctx, struct server_gen *gen,
                                  const struct cfg_account *acct, const char *device,
                                  const char *log_id)
{
    struct store_backend *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->base.ops = &store_ops;
    r->ctx = ctx;
    r->gen = gen;
    r->acct = acct;
    snprintf(r->device, sizeof(r->device), "%s", device);
    snprintf(r->log_id, sizeof(r->log_id), "%s", log_id);
    return &r->base;
}
