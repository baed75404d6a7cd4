/* Graph's one verdict per message, turned into the engine's per-recipient result. */
#include "proxy/delivery/deliver_graph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "common/log.h"
#include "proxy/config/config.h"
#include "proxy/delivery/message_log.h"
#include "proxy/graph/graph_client.h"
#include "proxy/graph/graph_mime.h"
#include "proxy/runtime/server_gen.h"
#include "proxy/smtp/smtp_reply.h"
#include "store/spool.h"

#define DELIVER_GRAPH_CHUNK (64 * 1024)

static const char REPLY_DAMAGED[] = "554 5.3.0 The queued message is damaged on disk";
static const char REPLY_READ_FAILED[] = "451 4.3.0 The queued message cannot be read now";
static const char REPLY_NOMEM[] = "451 4.3.0 Out of memory in the proxy";

struct deliver_graph {
    const struct cfg_account *acct;
    const struct spool_envelope *env;
    struct spool_body *body;
    struct server_gen *gen; /* a reference while the attempt runs */
    struct graph_pool *pool;
    struct graph_mime *mime;
    struct graph_send *send;
    struct event_base *base;
    struct event *early; /* a verdict reached before Graph was asked: delivered from the loop */
    deliver_cb cb;
    void *arg;
    char log_id[64];
    struct timespec t0;
    struct graph_outcome out;
};

const char *deliver_graph_host(const struct cfg_account *acct, char *buf, size_t len)
{
    const char *u = acct->graph_url ? acct->graph_url : "";
    const char *h = strstr(u, "://");
    h = h ? h + 3 : u;
    size_t n = strcspn(h, "/");
    snprintf(buf, len, "%.*s", (int)n, h);
    return buf;
}

static void deliver_graph_free(struct deliver_graph *d)
{
    graph_send_cancel(d->send);
    graph_mime_free(d->mime);
    if (d->early)
        event_free(d->early);
    server_gen_unref(d->gen);
    free(d);
}

static void log_result(const struct deliver_graph *d, const struct txn_result *res)
{
    char up[TXN_REPLY_MAX + 64], from[300], ex[700], host[256], queue[40] = "";
    double ms = message_log_elapsed_ms(&d->t0);
    const char *f = d->env->mail_from ? d->env->mail_from : "";
    unsigned dropped = 0, bcc = 0;
    if (d->mime)
        graph_mime_rcpt_stats(d->mime, &dropped, &bcc);
    if (d->env->queue_id[0])
        snprintf(queue, sizeof(queue), " queue_id=%s", d->env->queue_id);
    log_info(
        "event=deliver session=%s%s account=%s host=%s transport=graph from=%s rcpts=%zu "
        "delivered=%u deferred=%u refused=%u size=%llu result=%s conn_failure=%d "
        "upstream=%s http_status=%ld graph_code=%s requests=%u attachments=%zu "
        "header_rcpts_dropped=%u bcc_added=%u duration_ms=%.0f%s%s",
        d->log_id, queue, d->acct->name, deliver_graph_host(d->acct, host, sizeof(host)),
        log_safe(from, sizeof(from), f, strlen(f)), d->env->nrcpts, res->delivered, res->deferred,
        res->refused, (unsigned long long)spool_body_size(d->body), txn_status_name(res->status),
        res->conn_failure, log_safe(up, sizeof(up), res->reply, strlen(res->reply)),
        d->out.http_status, d->out.code[0] ? d->out.code : "-", d->out.requests,
        d->mime ? graph_mime_natt(d->mime) : (size_t)0, dropped, bcc, ms,
        d->out.explain[0] ? " explain=" : "",
        d->out.explain[0] ? log_safe(ex, sizeof(ex), d->out.explain, strlen(d->out.explain)) : "");
}

/* The code and enhanced code of a one-line reply, read by the SMTP reply parser (what the
 * bounces and the log use, as for the engine's replies). */
static void reply_code(const char *reply, struct txn_result *res)
{
    char line[TXN_REPLY_MAX + 2];
    struct smtp_reply rep;
    const char *err = NULL;
    size_t used = 0;
    int n = snprintf(line, sizeof(line), "%s\r\n", reply);
    struct smtp_reply_parser *p = smtp_reply_new();
    if (p && n > 0 && (size_t)n < sizeof(line) &&
        smtp_reply_next(p, line, (size_t)n, &used, &rep, &err) == 1) {
        res->code = rep.code;
        snprintf(res->enhanced, sizeof(res->enhanced), "%s", rep.enhanced);
    }
    smtp_reply_free(p);
}

/* Every recipient gets the message's verdict; cb runs and d is freed. */
static void conclude(struct deliver_graph *d, enum txn_status st, int conn_failure,
                     const char *reply)
{
    size_t n = d->env->nrcpts;
    struct txn_rcpt_result *rr = calloc(n ? n : 1, sizeof(*rr));
    struct txn_result res = {.status = st, .conn_failure = conn_failure};
    res.retry_after_ms = st == TXN_TEMP && d->out.retry_after_ms > 0 ? d->out.retry_after_ms : 0;
    snprintf(res.reply, sizeof(res.reply), "%s", reply);
    reply_code(reply, &res);
    for (size_t i = 0; rr && i < n; i++) {
        rr[i].status = st;
        snprintf(rr[i].reply, sizeof(rr[i].reply), "%s", reply);
    }
    res.rcpts = rr;
    res.nrcpts = rr ? n : 0;
    unsigned un = (unsigned)n;
    res.delivered = st == TXN_OK ? un : 0;
    res.deferred = st == TXN_TEMP ? un : 0;
    res.refused = st == TXN_PERM ? un : 0;
    log_result(d, &res);
    deliver_cb cb = d->cb;
    void *arg = d->arg;
    d->send = NULL;
    deliver_graph_free(d);
    cb(arg, &res);
    free(rr);
}

static void on_sent(void *arg, const struct graph_outcome *o)
{
    struct deliver_graph *d = arg;
    d->send = NULL;
    d->out = *o;
    enum txn_status st = o->status == GRAPH_OK     ? TXN_OK
                         : o->status == GRAPH_PERM ? TXN_PERM
                                                   : TXN_TEMP;
    conclude(d, st, o->conn_failure, o->reply);
}

static void on_early(evutil_socket_t fd, short what, void *arg)
{
    struct deliver_graph *d = arg;
    (void)fd;
    (void)what;
    conclude(d, d->out.status == GRAPH_PERM ? TXN_PERM : TXN_TEMP, 0, d->out.reply);
}

/* A verdict before Graph was asked (unreadable body, a message Graph cannot take): from the
 * loop, as the contract says. 0 scheduled; -1 not (out of memory). */
static int conclude_soon(struct deliver_graph *d, enum graph_status st, const char *reply)
{
    d->out.status = st;
    snprintf(d->out.reply, sizeof(d->out.reply), "%s", reply);
    struct timeval now = {0, 0};
    d->early = evtimer_new(d->base, on_early, d);
    return d->early && evtimer_add(d->early, &now) == 0 ? 0 : -1;
}

/* The body is read once through the spool reader, which checks its SHA-256: a damaged file is
 * never sent as if whole. Page-cache reads; the parser then reads the same file by offsets. */
static int check_body(struct deliver_graph *d, const char **reply)
{
    char *buf = malloc(DELIVER_GRAPH_CHUNK), err[512], safe[600];
    ssize_t n;
    if (!buf) {
        *reply = REPLY_NOMEM;
        return -1;
    }
    while ((n = spool_body_read(d->body, buf, DELIVER_GRAPH_CHUNK, err, sizeof(err))) > 0)
        ;
    free(buf);
    if (n == 0)
        return 0;
    *reply = n == -2 ? REPLY_DAMAGED : REPLY_READ_FAILED;
    log_error("event=%s queue_id=%s session=%s reason=%s",
              n == -2 ? "spool_body_damaged" : "spool_body_unreadable", d->env->queue_id, d->log_id,
              log_safe(safe, sizeof(safe), err, strlen(err)));
    return -1;
}

struct deliver_graph *deliver_graph_start(struct event_base *base, struct graph_pools *pools,
                                          struct server_gen *gen, const struct cfg_account *acct,
                                          const struct spool_envelope *env, struct spool_body *body,
                                          const char *log_id, deliver_cb cb, void *arg)
{
    struct deliver_graph *d = calloc(1, sizeof(*d));
    char err[512], reply[TXN_REPLY_MAX];
    const char *why = NULL;
    if (!d)
        return NULL;
    d->base = base;
    d->acct = acct;
    d->env = env;
    d->body = body;
    d->gen = server_gen_ref(gen);
    d->cb = cb;
    d->arg = arg;
    snprintf(d->log_id, sizeof(d->log_id), "%s", log_id);
    clock_gettime(CLOCK_MONOTONIC, &d->t0);
    d->pool = graph_pools_get(pools, acct->name);
    if (!d->pool) {
        deliver_graph_free(d);
        return NULL;
    }
    if (check_body(d, &why) != 0)
        goto early;
    struct graph_mime_opts o = {
        .rcpts = (const char *const *)env->rcpts,
        .nrcpts = env->nrcpts,
        .from_rewrite = acct->sender_rewrite == SENDER_REWRITE_HEADER ? acct->mailbox : NULL,
    };
    d->mime = graph_mime_open_fd(spool_body_fd(body), spool_body_size(body), &o, err, sizeof(err));
    if (!d->mime) {
        char safe[600];
        log_error("event=graph_mime_failed session=%s account=%s reason=%s", d->log_id, acct->name,
                  log_safe(safe, sizeof(safe), err, strlen(err)));
        snprintf(reply, sizeof(reply), "451 4.3.0 The message cannot be prepared for Graph now");
        why = reply;
        goto early;
    }
    if ((why = graph_mime_refusal(d->mime)) != NULL) {
        if (conclude_soon(d, GRAPH_PERM, why) != 0) {
            deliver_graph_free(d);
            return NULL;
        }
        return d;
    }
    d->send = graph_send_start(d->pool, gen, acct, d->mime, d->log_id, on_sent, d);
    if (!d->send) {
        deliver_graph_free(d);
        return NULL;
    }
    return d;
early:
    if (conclude_soon(d, why == REPLY_DAMAGED ? GRAPH_PERM : GRAPH_TEMP, why) != 0) {
        deliver_graph_free(d);
        return NULL;
    }
    return d;
}

void deliver_graph_cancel(struct deliver_graph *d)
{
    if (!d)
        return;
    log_info("event=deliver_cancelled session=%s%s%s account=%s transport=graph", d->log_id,
             d->env->queue_id[0] ? " queue_id=" : "", d->env->queue_id, d->acct->name);
    deliver_graph_free(d);
}
