/* The queue's entries: every committed message's envelope in memory, per account, in creation
 * order; start-up recovery, submission, and the figures. The runs are queue_run.c. */
#include "proxy/delivery/queue_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <openssl/rand.h>

#include "common/log.h"
#include "proxy/config/config.h"
#include "proxy/delivery/delivery_ctx.h"
#include "proxy/runtime/server_gen.h"
#include "store/spool.h"

int64_t queue_now(void)
{
    return (int64_t)time(NULL);
}

void queue_backoff_params(const struct queue *q, struct queue_backoff *p)
{
    queue_backoff_defaults(p);
    const struct config *cfg = q->gen ? q->gen->cfg : NULL;
    if (cfg && cfg->max_queue_lifetime)
        p->lifetime = cfg->max_queue_lifetime;
}

int64_t queue_retry_at(const struct queue *q, uint32_t attempts, int64_t now,
                       int64_t retry_after_ms)
{
    if (retry_after_ms > 0)
        return now + (retry_after_ms + 999) / 1000;
    return queue_next_attempt(q, attempts, now);
}

int64_t queue_next_attempt(const struct queue *q, uint32_t attempts, int64_t now)
{
    struct queue_backoff bp;
    uint32_t rnd = 0;
    if (RAND_bytes((unsigned char *)&rnd, sizeof(rnd)) != 1)
        rnd = 0; /* no jitter: still a valid schedule */
    queue_backoff_params(q, &bp);
    return queue_backoff_next_attempt(&bp, attempts, now, rnd);
}

static void on_acct_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct queue_acct *a = arg;
    a->wake_at = 0;
    queue_run_acct(a);
}

struct queue_acct *queue_acct_get(struct queue *q, const char *name)
{
    struct queue_acct *a;
    for (a = q->accts; a; a = a->next)
        if (strcmp(a->name, name) == 0)
            return a;
    a = calloc(1, sizeof(*a));
    if (!a || !(a->name = strdup(name)) ||
        !(a->timer = evtimer_new(q->ctx->base, on_acct_timer, a))) {
        if (a)
            free(a->name);
        free(a);
        return NULL;
    }
    a->q = q;
    a->next = q->accts;
    q->accts = a;
    return a;
}

void queue_acct_wake_at(struct queue_acct *a, int64_t when)
{
    int64_t now = queue_now();
    /* one event per account, at its earliest due time */
    if (evtimer_pending(a->timer, NULL) && a->wake_at <= when)
        return;
    struct timeval tv = {.tv_sec = when > now ? (time_t)(when - now) : 0};
    a->wake_at = when;
    evtimer_add(a->timer, &tv);
}

void queue_acct_kick(struct queue_acct *a)
{
    if (a->q->running)
        queue_acct_wake_at(a, 0);
}

struct queue_msg *queue_find(const struct queue *q, const char *id)
{
    if (!id || !spool_id_valid(id))
        return NULL;
    for (const struct queue_acct *a = q->accts; a; a = a->next)
        for (struct queue_msg *m = a->head; m; m = m->next)
            if (strcmp(m->env.queue_id, id) == 0)
                return m;
    return NULL;
}

/* a before b: created earlier. Equal times (whole seconds) keep the order of arrival: two scans
 * in the same second go out as the copier sent them, not in the random order of their ids.
 * (After a restart, spool_scan's order applies: created, then id.) */
static int msg_before(const struct spool_envelope *a, const struct spool_envelope *b)
{
    return a->created < b->created;
}

/* Takes env's contents (env is zeroed). -1 out of memory (env untouched). */
static int msg_add(struct queue *q, struct spool_envelope *env, struct queue_msg **out)
{
    struct queue_acct *a = queue_acct_get(q, env->account);
    struct queue_msg *m = a ? calloc(1, sizeof(*m)) : NULL;
    if (!m)
        return -1;
    m->env = *env;
    memset(env, 0, sizeof(*env));
    m->acct = a;
    m->seq = ++q->seq;
    /* new messages are the newest: search from the tail */
    struct queue_msg *after = a->tail;
    while (after && msg_before(&m->env, &after->env))
        after = after->prev;
    m->prev = after;
    m->next = after ? after->next : a->head;
    if (m->next)
        m->next->prev = m;
    else
        a->tail = m;
    if (after)
        after->next = m;
    else
        a->head = m;
    a->n++;
    q->n++;
    if (m->env.held)
        q->held++;
    *out = m;
    return 0;
}

void queue_msg_drop(struct queue *q, struct queue_msg *m)
{
    struct queue_acct *a = m->acct;
    if (m->prev)
        m->prev->next = m->next;
    else
        a->head = m->next;
    if (m->next)
        m->next->prev = m->prev;
    else
        a->tail = m->prev;
    a->n--;
    q->n--;
    if (m->env.held)
        q->held--;
    spool_envelope_clear(&m->env);
    free(m);
}

struct queue *queue_new(const struct delivery_ctx *ctx, struct server_gen *gen,
                        const char *state_dir, int do_fsync, char *err, size_t errlen)
{
    struct queue *q = calloc(1, sizeof(*q));
    if (!q) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    q->ctx = ctx;
    q->gen = gen;
    q->spool = spool_new(state_dir, do_fsync, err, errlen);
    if (!q->spool) {
        free(q);
        return NULL;
    }
    return q;
}

void queue_free(struct queue *q)
{
    if (!q)
        return;
    for (struct queue_acct *a = q->accts, *next; a; a = next) {
        next = a->next;
        queue_attempt_cancel(a); /* its message stays in the spool */
        while (a->head)
            queue_msg_drop(q, a->head);
        if (a->timer)
            event_free(a->timer);
        free(a->name);
        free(a);
    }
    spool_free(q->spool);
    free(q);
}

struct spool *queue_spool(struct queue *q)
{
    return q->spool;
}

int queue_recover(struct queue *q, char *err, size_t errlen)
{
    struct spool_envelope *list = NULL;
    size_t n = 0, kept = 0;
    struct spool_scan_stats st;
    if (spool_scan(q->spool, &list, &n, &st, err, errlen) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        struct queue_msg *m;
        if (q->n && queue_find(q, list[i].queue_id))
            continue; /* submitted before the scan (only tests do that) */
        if (msg_add(q, &list[i], &m) != 0)
            /* still on disk: the next start finds it again */
            log_error("event=queue_recover_failed queue_id=%s reason=\"out of memory\"",
                      list[i].queue_id);
        else
            kept++;
    }
    spool_list_free(list, n);
    q->running = 1;
    for (struct queue_acct *a = q->accts; a; a = a->next)
        queue_acct_kick(a);
    log_info("event=queue_recovered messages=%zu held=%zu quarantined=%zu", kept, q->held,
             st.quarantined);
    return 0;
}

int queue_submit(struct queue *q, const struct spool_envelope *env)
{
    struct spool_envelope copy;
    struct queue_msg *m;
    if (spool_envelope_copy(&copy, env) != 0)
        goto oom;
    if (msg_add(q, &copy, &m) != 0) {
        spool_envelope_clear(&copy);
        goto oom;
    }
    log_info("event=queued queue_id=%s account=%s rcpts=%zu size=%llu attempts=%u", m->env.queue_id,
             m->acct->name, m->env.nrcpts, (unsigned long long)m->env.size, m->env.attempts);
    if (!m->env.held)
        queue_acct_kick(m->acct);
    return 0;
oom:
    log_error("event=queue_submit_failed queue_id=%s reason=\"out of memory\" "
              "effect=\"delivered after the next restart\"",
              env->queue_id);
    return -1;
}

void queue_reconfigured(struct queue *q, struct server_gen *gen)
{
    if (!q)
        return;
    q->gen = gen;
    for (struct queue_acct *a = q->accts; a; a = a->next)
        if (a->head)
            queue_acct_kick(a); /* a stopped run stays stopped: the run looks at stopped_until */
}

void queue_stopping(struct queue *q)
{
    if (q)
        q->stopping = 1;
}

int queue_account_waiting(const struct queue *q, const char *account)
{
    for (const struct queue_acct *a = q->accts; a; a = a->next) {
        if (strcmp(a->name, account) != 0)
            continue;
        /* stopped by a connection failure, whose message may still be on its way into the
         * queue (committing on a thread): what comes next must not overtake it */
        if (a->stopped_until > queue_now())
            return 1;
        for (const struct queue_msg *m = a->head; m; m = m->next)
            if (!m->env.held)
                return 1;
        return 0;
    }
    return 0;
}

void queue_account_stop(struct queue *q, const char *account, int64_t until)
{
    struct queue_acct *a = q ? queue_acct_get(q, account) : NULL;
    if (a && until > a->stopped_until)
        a->stopped_until = until;
}

void queue_stats(const struct queue *q, struct queue_stats *st)
{
    memset(st, 0, sizeof(*st));
    if (!q)
        return;
    st->messages = q->n;
    st->held = q->held;
    st->sending = q->sending;
    st->delivered = q->delivered;
    st->bounced = q->bounced;
    st->deferred = q->deferred;
    for (const struct queue_acct *a = q->accts; a; a = a->next)
        if (a->head && (!st->oldest_created || a->head->env.created < st->oldest_created))
            st->oldest_created = a->head->env.created;
}
