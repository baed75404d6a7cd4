/* The runs: per account, one attempt at a time, on the first due message (creation order); what
 * an attempt's result does to the envelope (written before it takes effect); expiry. */
#include "proxy/delivery/queue_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "proxy/config/config.h"
#include "proxy/delivery/deliver.h"
#include "proxy/delivery/delivery_ctx.h"
#include "proxy/delivery/message_log.h"
#include "proxy/runtime/account_budget.h"
#include "proxy/runtime/server_gen.h"
#include "proxy/upstream/upstream_pool.h"
#include "proxy/delivery/deliver_graph.h"
#include "store/spool.h"

/* An account no longer in the config: look again this often (a reload may bring it back). */
#define QUEUE_NO_ACCOUNT_RETRY 300

struct queue_attempt {
    struct queue_acct *a;
    struct queue_msg *m;
    /* the attempt's own copy: what deliver reads and what its result indexes, whatever hold or
     * flush do to the message meanwhile */
    struct spool_envelope env;
    struct server_gen *gen;         /* a reference: acct lives in gen->cfg */
    const struct cfg_account *acct; /* the account's config when the attempt started */
    struct upstream_lease *lease;
    struct deliver *d;
    struct deliver_graph *gd; /* a graph account's attempt */
    struct spool_body *body;
    char host[256]; /* the upstream's, for Remote-MTA */
};

/* The attempt is over for its message and account (its resources are still held). */
static void attempt_detach(struct queue_attempt *at)
{
    at->a->att = NULL;
    at->m->sending = 0;
    at->a->q->sending--;
}

static void attempt_release(struct queue_attempt *at)
{
    spool_body_free(at->body);
    spool_envelope_clear(&at->env);
    server_gen_unref(at->gen);
    free(at);
}

void queue_attempt_cancel(struct queue_acct *a)
{
    struct queue_attempt *at = a->att;
    if (!at)
        return;
    if (at->lease)
        upstream_lease_cancel(at->lease);
    deliver_cancel(at->d); /* closes the connection; the message was not delivered */
    deliver_graph_cancel(at->gd);
    attempt_detach(at);
    attempt_release(at);
}

/* Give up on every recipient left in m: bounce them as expired, then remove m. 1 removed; 0 the
 * bounce could not be queued (disk full?): m stays, to be bounced at its next turn, so the
 * sender is never left without word. */
static int expire(struct queue *q, struct queue_msg *m, const struct cfg_account *acct)
{
    char err[512], safe[600];
    char *hdrs = NULL;
    size_t hlen = 0;
    if (m->env.mail_from[0])
        queue_read_headers(q, &m->env, &hdrs, &hlen);
    int r = queue_bounce(q, acct, &m->env, DSN_REASON_EXPIRED, NULL, NULL, hdrs, hlen, err,
                         sizeof(err));
    free(hdrs);
    if (r < 0) {
        m->env.next_attempt = queue_now() + QUEUE_BACKOFF_FIRST;
        log_error("event=queue_bounce_failed queue_id=%s account=%s reason=%s "
                  "effect=\"the expired message is kept; the bounce is tried again in %ds\"",
                  m->env.queue_id, m->acct->name, log_safe(safe, sizeof(safe), err, strlen(err)),
                  QUEUE_BACKOFF_FIRST);
        return 0;
    }
    log_info("event=queue_expired queue_id=%s account=%s attempts=%u age=%llds bounce=%s",
             m->env.queue_id, m->acct->name, m->env.attempts,
             (long long)(queue_now() - m->env.created), r > 0 ? "queued" : "none");
    if (spool_remove(q->spool, m->env.queue_id, err, sizeof(err)) != 0)
        log_error("event=spool_remove_failed queue_id=%s reason=%s", m->env.queue_id,
                  log_safe(safe, sizeof(safe), err, strlen(err)));
    queue_msg_drop(q, m);
    return 1;
}

/* Keep only the recipients whose result is TEMP (env and res in the same order). */
static void keep_temp_rcpts(struct spool_envelope *env, const struct txn_result *res)
{
    size_t k = 0;
    for (size_t i = 0; i < env->nrcpts; i++) {
        if (res->rcpts[i].status == TXN_TEMP)
            env->rcpts[k++] = env->rcpts[i];
        else
            free(env->rcpts[i]);
    }
    env->nrcpts = k;
}

/* Some recipients are left to retry: attempts+1, the next attempt, the last error, written to
 * the spool before the memory copy changes. 0 rescheduled; 1 expired (bounced and removed). */
static int reschedule(struct queue_attempt *at, const struct txn_result *res, size_t ndone,
                      int64_t *next_out)
{
    struct queue *q = at->a->q;
    struct queue_msg *m = at->m;
    struct spool_envelope env;
    char err[512], safe[700], last[SPOOL_ERROR_MAX + 1];
    /* the reply that kept a recipient back (res->reply is the end of DATA's 250 when others
     * were delivered) */
    const char *why = "";
    struct queue_backoff bp;
    int64_t now = queue_now();

    for (size_t i = 0; !why[0] && i < res->nrcpts; i++)
        if (res->rcpts[i].status == TXN_TEMP)
            why = res->rcpts[i].reply;
    if (!why[0])
        why = res->reply;
    spool_error_sanitize(last, sizeof(last), why[0] ? why : "temporary failure");
    if (spool_envelope_copy(&env, &m->env) != 0) {
        log_error("event=queue_update_failed queue_id=%s reason=\"out of memory\"",
                  m->env.queue_id);
        m->env.next_attempt = now + QUEUE_BACKOFF_FIRST;
        *next_out = m->env.next_attempt;
        return 0;
    }
    /* the recipients decided now leave the envelope (the attempt's copy has the same ones) */
    if (ndone)
        keep_temp_rcpts(&env, res);
    char *le = strdup(last);
    if (le) {
        free(env.last_error);
        env.last_error = le;
    }
    env.attempts++;
    env.next_attempt = queue_retry_at(q, env.attempts, now, res->retry_after_ms);
    queue_backoff_params(q, &bp);
    if (queue_backoff_expired(&bp, env.created, now)) {
        spool_envelope_clear(&m->env);
        m->env = env;
        if (expire(q, m, at->acct))
            return 1;
        *next_out = m->env.next_attempt; /* kept: its bounce is tried again then */
        return 0;
    }
    if (spool_update_state(q->spool, &env, err, sizeof(err)) != 0)
        /* the memory copy still moves on: retrying at once would hammer the upstream; a restart
         * goes by the older record (at-least-once holds either way) */
        log_error("event=queue_update_failed queue_id=%s reason=%s", env.queue_id,
                  log_safe(safe, sizeof(safe), err, strlen(err)));
    spool_envelope_clear(&m->env);
    m->env = env;
    q->deferred++;
    log_info("event=queue_retry queue_id=%s account=%s attempts=%u rcpts=%zu next_in=%llds "
             "conn_failure=%d reason=%s",
             env.queue_id, at->a->name, env.attempts, env.nrcpts,
             (long long)(env.next_attempt - now), res->conn_failure,
             log_safe(safe, sizeof(safe), last, strlen(last)));
    *next_out = env.next_attempt;
    return 0;
}

/* An attempt's end, whatever happened: the result per recipient decides. res has one entry
 * per recipient of at->env. */
static void conclude(struct queue_attempt *at, const struct txn_result *res)
{
    struct queue_acct *a = at->a;
    struct queue *q = a->q;
    struct queue_msg *m = at->m;
    char err[512], safe[700];
    size_t ndel = 0, nperm = 0, ntemp = 0;
    struct txn_rcpt_result *kept = NULL; /* res with PERM as TEMP, when no bounce was made */
    struct txn_result again;

    attempt_detach(at);
    for (size_t i = 0; i < res->nrcpts; i++) {
        if (res->rcpts[i].status == TXN_OK)
            ndel++;
        else if (res->rcpts[i].status == TXN_PERM)
            nperm++;
        else
            ntemp++;
    }
    if (ndel) {
        q->delivered++;
        message_log_accepted(q->ctx, at->acct, ndel);
        log_info("event=queue_delivered queue_id=%s account=%s attempts=%u rcpts=%zu of=%zu "
                 "upstream=%s",
                 m->env.queue_id, a->name, m->env.attempts + 1, ndel, res->nrcpts,
                 log_safe(safe, sizeof(safe), res->reply, strlen(res->reply)));
    }
    if (nperm && ndel == 0 && ntemp == 0) /* refused as a whole: spam? (block_after_refusals) */
        message_log_refused_later(q->ctx, at->env.device, res->code, res->enhanced, res->reply);
    if (nperm) {
        char *hdrs = NULL;
        size_t hlen = 0;
        if (at->env.mail_from[0])
            queue_read_headers(q, &at->env, &hdrs, &hlen);
        int r = queue_bounce(q, at->acct, &at->env, DSN_REASON_REFUSED, res,
                             at->host[0] ? at->host : NULL, hdrs, hlen, err, sizeof(err));
        free(hdrs);
        if (r == 0) /* a bounce (or notification) itself: said here, as nobody else hears */
            log_warn("event=queue_refused_not_bounced queue_id=%s account=%s rcpts=%zu "
                     "reason=\"null sender: never bounced\" upstream=%s",
                     m->env.queue_id, a->name, nperm,
                     log_safe(safe, sizeof(safe), res->reply, strlen(res->reply)));
        if (r < 0) {
            /* No bounce, so the refused recipients stay with the message and are tried again:
             * refused once more, they are bounced then. Never removed without word. */
            kept = malloc(res->nrcpts * sizeof(*kept));
            log_error("event=queue_bounce_failed queue_id=%s account=%s reason=%s effect=%s",
                      m->env.queue_id, a->name, log_safe(safe, sizeof(safe), err, strlen(err)),
                      kept ? "\"the refused recipients are kept and tried again\""
                           : "\"out of memory: removed without a bounce\"");
            if (kept) {
                memcpy(kept, res->rcpts, res->nrcpts * sizeof(*kept));
                for (size_t i = 0; i < res->nrcpts; i++)
                    if (kept[i].status == TXN_PERM)
                        kept[i].status = TXN_TEMP;
                again = *res;
                again.rcpts = kept;
                res = &again;
                ntemp += nperm;
                nperm = 0;
            }
        }
    }
    if (ntemp == 0) {
        if (spool_remove(q->spool, m->env.queue_id, err, sizeof(err)) != 0)
            log_error("event=spool_remove_failed queue_id=%s reason=%s", m->env.queue_id,
                      log_safe(safe, sizeof(safe), err, strlen(err)));
        queue_msg_drop(q, m);
    } else {
        int64_t next = 0;
        /* the connection failed, not the message: nothing of the account overtakes it */
        if (reschedule(at, res, ndel + nperm, &next) == 0 && res->conn_failure)
            a->stopped_until = next;
    }
    free(kept);
    attempt_release(at);
    queue_acct_kick(a);
}

/* A failure before deliver could start: every recipient is temporary. */
static void conclude_temp(struct queue_attempt *at, int conn_failure, const char *reply)
{
    struct txn_result res = {.status = TXN_TEMP, .conn_failure = conn_failure};
    struct txn_rcpt_result *rr = calloc(at->env.nrcpts, sizeof(*rr));
    if (!rr) {
        /* no memory for the per-recipient view: the message waits, unchanged on disk */
        struct queue_acct *a = at->a;
        at->m->env.next_attempt = queue_now() + QUEUE_BACKOFF_FIRST;
        attempt_detach(at);
        attempt_release(at);
        queue_acct_kick(a);
        return;
    }
    snprintf(res.reply, sizeof(res.reply), "%s", reply);
    for (size_t i = 0; i < at->env.nrcpts; i++) {
        rr[i].status = TXN_TEMP;
        snprintf(rr[i].reply, sizeof(rr[i].reply), "%s", reply);
    }
    res.rcpts = rr;
    res.nrcpts = at->env.nrcpts;
    conclude(at, &res);
    free(rr);
}

static void on_delivered(void *arg, const struct txn_result *res)
{
    struct queue_attempt *at = arg;
    at->d = NULL;
    at->gd = NULL;
    if (res->nrcpts != at->env.nrcpts || !res->rcpts) {
        /* not the contract: treat it as a temporary failure of the whole message */
        conclude_temp(at, res->conn_failure, res->reply[0] ? res->reply : "451 4.3.0 no result");
        return;
    }
    conclude(at, res);
}

static void on_lease(void *arg, struct upstream_conn *c, const struct upstream_failure *f)
{
    struct queue_attempt *at = arg;
    char err[400], reply[TXN_REPLY_MAX], safe[700];
    at->lease = NULL;
    if (!c) {
        /* what the admin needs: the upstream's refusal if there was one, else the 4xx a
         * device would hear, and why */
        const char *text = f->rep && f->rep_text ? f->rep_text : f->reply;
        int why = f->why && f->why[0] && (!text || strcmp(f->why, text) != 0);
        snprintf(reply, sizeof(reply), "%s%s%s%s", text ? text : "", why ? " (" : "",
                 why ? f->why : "", why ? ")" : "");
        conclude_temp(at, 1, reply);
        return;
    }
    snprintf(at->host, sizeof(at->host), "%s", upstream_conn_host(c));
    at->body = spool_body_open(at->a->q->spool, &at->env, err, sizeof(err));
    if (!at->body) {
        upstream_conn_release(c, 1); /* no transaction was opened on it */
        log_error("event=queue_body_unreadable queue_id=%s account=%s reason=%s", at->env.queue_id,
                  at->a->name, log_safe(safe, sizeof(safe), err, strlen(err)));
        snprintf(reply, sizeof(reply), "451 4.3.0 the queued message cannot be read: %s", err);
        conclude_temp(at, 0, reply);
        return;
    }
    at->d = deliver_start(c, at->acct, &at->env, at->body, at->a->q->ctx->metrics, at->env.queue_id,
                          on_delivered, at);
    if (!at->d) /* the connection went back as not reusable */
        conclude_temp(at, 0, "451 4.3.0 out of memory in the proxy");
}

/* A graph account's attempt: the body is opened at once (there is no connection to wait for);
 * Graph's own waits (requests in flight, Retry-After) are the pool's. 0 started (its callback
 * will conclude it); -1 not. */
static int start_graph(struct queue_attempt *at)
{
    char err[400], reply[TXN_REPLY_MAX], safe[700];
    struct queue *q = at->a->q;
    deliver_graph_host(at->acct, at->host, sizeof(at->host));
    at->body = spool_body_open(q->spool, &at->env, err, sizeof(err));
    if (!at->body) {
        log_error("event=queue_body_unreadable queue_id=%s account=%s reason=%s", at->env.queue_id,
                  at->a->name, log_safe(safe, sizeof(safe), err, strlen(err)));
        snprintf(reply, sizeof(reply), "451 4.3.0 the queued message cannot be read: %s", err);
        conclude_temp(at, 0, reply);
        return 0;
    }
    at->gd = deliver_graph_start(q->ctx->base, q->ctx->graph, at->gen, at->acct, &at->env, at->body,
                                 at->env.queue_id, on_delivered, at);
    return at->gd ? 0 : -1;
}

/* Start an attempt on m. 0 started; -1 not (out of memory: the caller retries later). */
static int start_attempt(struct queue_acct *a, struct queue_msg *m, const struct cfg_account *acct)
{
    struct queue *q = a->q;
    int graph = acct->kind == UPSTREAM_KIND_GRAPH;
    struct upstream_pool *pool = graph ? NULL : upstream_pools_get(q->ctx->pools, a->name);
    struct queue_attempt *at = pool || (graph && q->ctx->graph) ? calloc(1, sizeof(*at)) : NULL;
    if (!at)
        return -1;
    if (spool_envelope_copy(&at->env, &m->env) != 0) {
        free(at);
        return -1;
    }
    at->a = a;
    at->m = m;
    at->gen = server_gen_ref(q->gen);
    at->acct = acct;
    m->sending = 1;
    m->budget_held = 0; /* a later hold is a new one */
    a->att = at;
    q->sending++;
    if (graph) {
        if (start_graph(at) == 0)
            return 0;
        attempt_detach(at);
        attempt_release(at);
        return -1;
    }
    /* the callback never runs from inside the call */
    at->lease = upstream_pool_get(pool, at->gen, acct, m->env.queue_id, on_lease, at);
    if (!at->lease) {
        attempt_detach(at);
        attempt_release(at);
        return -1;
    }
    return 0;
}

/* The account's daily recipient budget has no room for m now: 1, and *room is when there will
 * be. 0: m may start. */
static int budget_full(struct queue_acct *a, const struct queue_msg *m,
                       const struct cfg_account *acct, int64_t now, int64_t *room)
{
    return !account_budget_admit(a->q->ctx->budget, a->name, acct->daily_recipient_limit,
                                 m->env.nrcpts, now, room);
}

/* m waits for the budget (room: when it has room again): held, not bounced (max_queue_lifetime
 * still applies); counted and logged once per message. */
static void budget_hold(struct queue_acct *a, struct queue_msg *m, int64_t now, int64_t room)
{
    if (m->budget_held)
        return;
    m->budget_held = 1;
    account_budget_count_held(a->q->ctx->budget, a->name);
    log_info("event=queue_budget_hold queue_id=%s account=%s rcpts=%zu next_in=%llds",
             m->env.queue_id, a->name, m->env.nrcpts, (long long)(room - now));
}

void queue_run_acct(struct queue_acct *a)
{
    struct queue *q = a->q;
    struct queue_backoff bp;
    int64_t now = queue_now(), next = 0;
    int64_t room = 0; /* a message waits for the budget until then: none after it overtakes */
    if (!q->running || a->att || q->stopping || !a->head)
        return;
    if (a->stopped_until > now) {
        queue_acct_wake_at(a, a->stopped_until);
        return;
    }
    a->stopped_until = 0;
    const struct cfg_account *acct = config_account(q->gen->cfg, a->name);
    if (!acct) {
        /* kept: the account may come back with a reload; never bounced for that */
        log_warn("event=queue_no_account account=%s messages=%zu next_in=%ds "
                 "hint=\"add [account %s] back, or queue delete its messages\"",
                 a->name, a->n, QUEUE_NO_ACCOUNT_RETRY, a->name);
        queue_acct_wake_at(a, now + QUEUE_NO_ACCOUNT_RETRY);
        return;
    }
    queue_backoff_params(q, &bp);
    for (struct queue_msg *m = a->head, *nm; m; m = nm) {
        nm = m->next;
        if (m->env.held)
            continue;
        if (queue_backoff_expired(&bp, m->env.created, now)) {
            if (!expire(q, m, acct) && (!next || m->env.next_attempt < next))
                next = m->env.next_attempt;
            continue;
        }
        if (m->env.next_attempt > now) {
            if (!next || m->env.next_attempt < next)
                next = m->env.next_attempt;
            continue;
        }
        if (!q->ctx->pools)
            continue; /* no upstream (tests): expiry only */
        if (room || budget_full(a, m, acct, now, &room)) {
            budget_hold(a, m, now, room);
            if (!next || room < next)
                next = room;
            continue;
        }
        if (start_attempt(a, m, acct) == 0)
            return;
        log_error("event=queue_attempt_failed queue_id=%s account=%s reason=\"out of memory\"",
                  m->env.queue_id, a->name);
        next = now + QUEUE_BACKOFF_FIRST;
        break;
    }
    if (next)
        queue_acct_wake_at(a, next);
}
