/* One account's upstream connections: leases in FIFO order, the idle list (most recently used
 * first, so surplus connections time out), the connection cap and the message rate. Leases are
 * only ever served from the loop (the kick event, a timer, or a connection's callback), so no
 * callback runs inside an API call. Opening one connection is upstream_conn.c's job. */
#include "proxy/upstream/upstream_pool_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "common/log.h"
#include "proxy/config/config.h"
#include "proxy/runtime/metrics.h"
#include "proxy/upstream/rate_limit.h"
#include "proxy/runtime/server_gen.h"

struct upstream_lease {
    struct upstream_pool *p;
    struct upstream_lease *next, *prev; /* in the waiting FIFO while c is NULL */
    struct server_gen *gen;             /* a reference until cb ran or the lease was cancelled */
    const struct cfg_account *acct;
    char log_id[32];
    upstream_lease_cb cb;
    void *arg;
    struct upstream_conn *c; /* opened or checked for this lease; NULL while waiting */
};

struct upstream_pool {
    struct upstream_pools *ps;
    struct upstream_pool *next;
    char *name;
    struct upstream_conn *conns; /* every connection: opening, checking, busy, idle */
    unsigned nconns, nidle;
    struct upstream_lease *wait_head, *wait_tail;
    unsigned nwaiting;
    unsigned cap;             /* max_upstream_connections of the latest lease; 0: none */
    struct rate_limit *rl;    /* NULL: no rate limit */
    unsigned rl_per_minute;   /* what rl was made for */
    struct event *kick;       /* serve the waiting leases from the loop */
    struct event *rate_timer; /* the head lease waits for the rate window */
    uint64_t seq;             /* idle order */
    unsigned long next_id;
    unsigned long opened, reused, messages;
};

struct upstream_pools {
    struct event_base *base;
    struct evdns_base *dns;
    struct metrics *metrics;
    struct upstream_pool *head;
};

static void pool_run(struct upstream_pool *p);

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pool_run(arg);
}

static void pool_kick(struct upstream_pool *p)
{
    if (p->wait_head)
        event_active(p->kick, EV_TIMEOUT, 0);
}

/* ---- the set of pools ---- */

struct upstream_pools *upstream_pools_new(struct event_base *base, struct evdns_base *dns,
                                          struct metrics *m)
{
    struct upstream_pools *ps = calloc(1, sizeof(*ps));
    if (ps) {
        ps->base = base;
        ps->dns = dns;
        ps->metrics = m;
    }
    return ps;
}

static void conn_unlink(struct upstream_pool *p, struct upstream_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        p->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    p->nconns--;
    if (c->state == UPSTREAM_CONN_IDLE)
        p->nidle--;
}

static void conn_link(struct upstream_pool *p, struct upstream_conn *c)
{
    c->pool = p;
    c->prev = NULL;
    c->next = p->conns;
    if (p->conns)
        p->conns->prev = c;
    p->conns = c;
    p->nconns++;
}

static void lease_free(struct upstream_lease *l)
{
    server_gen_unref(l->gen);
    free(l);
}

static void pool_free(struct upstream_pool *p)
{
    for (struct upstream_lease *l = p->wait_head, *next; l; l = next) {
        next = l->next;
        lease_free(l); /* dropped without a callback */
    }
    while (p->conns) {
        struct upstream_conn *c = p->conns;
        enum upstream_conn_state st = c->state;
        conn_unlink(p, c);
        if (st == UPSTREAM_CONN_BUSY) {
            c->pool = NULL; /* its borrower still has it: release closes it */
            continue;
        }
        if (c->lease)
            lease_free(c->lease);
        upstream_conn_close(c, st == UPSTREAM_CONN_IDLE);
    }
    if (p->kick)
        event_free(p->kick);
    if (p->rate_timer)
        event_free(p->rate_timer);
    rate_limit_free(p->rl);
    free(p->name);
    free(p);
}

void upstream_pools_free(struct upstream_pools *ps)
{
    if (!ps)
        return;
    for (struct upstream_pool *p = ps->head, *next; p; p = next) {
        next = p->next;
        pool_free(p);
    }
    free(ps);
}

static void rate_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pool_run(arg);
}

struct upstream_pool *upstream_pools_get(struct upstream_pools *ps, const char *account)
{
    for (struct upstream_pool *p = ps->head; p; p = p->next)
        if (strcmp(p->name, account) == 0)
            return p;
    struct upstream_pool *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->ps = ps;
    p->name = strdup(account);
    p->kick = event_new(ps->base, -1, 0, kick_cb, p);
    p->rate_timer = evtimer_new(ps->base, rate_timer_cb, p);
    if (!p->name || !p->kick || !p->rate_timer) {
        pool_free(p);
        return NULL;
    }
    p->next = ps->head;
    ps->head = p;
    return p;
}

/* ---- connections ---- */

/* Close c and forget it (polite: QUIT first); a freed slot may serve a waiting lease. */
static void pool_drop(struct upstream_pool *p, struct upstream_conn *c, int polite,
                      const char *reason)
{
    log_debug("event=upstream_closed account=%s conn=%lu reason=%s", p->name, c->id, reason);
    conn_unlink(p, c);
    upstream_conn_close(c, polite);
    pool_kick(p);
}

static unsigned idle_timeout(const struct upstream_conn *c)
{
    return c->gen->cfg->upstream_idle_timeout;
}

static int token_expiring(const struct upstream_conn *c, int64_t now)
{
    return c->token_deadline_ms && now >= c->token_deadline_ms - UPSTREAM_TOKEN_MARGIN_MS;
}

static void idle_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct upstream_conn *c = arg;
    (void)fd;
    (void)what;
    pool_drop(c->pool, c, 1, "idle_timeout");
}

/* Why an authenticated connection with no transaction may not be kept or reused, or NULL. */
static const char *conn_unfit(const struct upstream_conn *c, int64_t now)
{
    if (!client_session_usable(c->cs))
        return "dead";
    if (token_expiring(c, now))
        return "token_expiring";
    if (c->gen->retired)
        return "reload"; /* opened on a configuration a reload replaced */
    return NULL;
}

/* c is authenticated and has no transaction (released, freshly opened for a lease that was
 * cancelled, or proven alive for one): keep it idle for the next lease, or close it. */
static void conn_park(struct upstream_pool *p, struct upstream_conn *c)
{
    const char *why = conn_unfit(c, upstream_now_ms());
    if (why) {
        pool_drop(p, c, 1, why);
        return;
    }
    /* Released while leases wait: the next one takes it at once, without an RSET (the
     * transaction just ended on a live connection). */
    c->handoff = p->wait_head != NULL;
    if (!c->handoff && idle_timeout(c) == 0) {
        pool_drop(p, c, 1, "idle_timeout");
        return;
    }
    c->state = UPSTREAM_CONN_IDLE;
    c->idle_seq = ++p->seq;
    p->nidle++;
    if (idle_timeout(c)) {
        if (!c->idle_timer)
            c->idle_timer = evtimer_new(c->base, idle_timer_cb, c);
        struct timeval tv = {.tv_sec = (time_t)idle_timeout(c), .tv_usec = 0};
        if (!c->idle_timer || evtimer_add(c->idle_timer, &tv) != 0) {
            pool_drop(p, c, 1, "out_of_memory");
            return;
        }
    }
    pool_kick(p);
}

static void lease_finish(struct upstream_lease *l, struct upstream_conn *c,
                         const struct upstream_failure *f)
{
    upstream_lease_cb cb = l->cb;
    void *arg = l->arg;
    struct server_gen *gen = l->gen;
    free(l);
    cb(arg, c, f);
    server_gen_unref(gen); /* after the callback: its acct belongs to gen */
}

static void conn_grant(struct upstream_conn *c)
{
    struct upstream_lease *l = c->lease;
    c->lease = NULL;
    /* its log lines follow the message they carry now */
    snprintf(c->log_id, sizeof(c->log_id), "%s", l->log_id);
    client_session_set_log_id(c->cs, l->log_id);
    c->state = UPSTREAM_CONN_BUSY;
    if (c->idle_timer)
        evtimer_del(c->idle_timer);
    lease_finish(l, c, NULL);
}

static void pool_open(struct upstream_pool *p, struct upstream_lease *l)
{
    struct upstream_conn *c =
        upstream_conn_new(p->ps->base, p->ps->dns, p->ps->metrics, l->gen, l->acct, l->log_id);
    if (!c) {
        struct upstream_failure f = {.reply = "451 4.3.0 Out of memory", .why = "out of memory"};
        lease_finish(l, NULL, &f);
        return;
    }
    conn_link(p, c);
    c->id = ++p->next_id;
    c->lease = l;
    l->c = c;
    p->opened++;
    metrics_upstream_conn(p->ps->metrics, l->acct, 0);
    upstream_conn_open(c); /* may finish (and free c) before returning */
}

void upstream_pool_conn_opened(struct upstream_conn *c, const struct upstream_failure *f)
{
    struct upstream_pool *p = c->pool;
    struct upstream_lease *l = c->lease;
    if (f) {
        conn_unlink(p, c);
        c->lease = NULL;
        if (l)
            lease_finish(l, NULL, f); /* f may point into c: close it afterwards */
        upstream_conn_close(c, 0);
        pool_kick(p);
        return;
    }
    /* client_open.c logged event=upstream_connected (at info) for the TLS connection */
    log_debug("event=upstream_authenticated session=%s account=%s conn=%lu mech=%s conns=%u",
              c->log_id, c->acct->name, c->id, c->authed ? client_auth_mech_name(c->mech) : "none",
              p->nconns);
    if (l)
        conn_grant(c);
    else
        conn_park(p, c);
}

static void on_rset(void *arg, const struct smtp_reply *rep, const char *err)
{
    struct upstream_conn *c = arg;
    struct upstream_pool *p = c->pool;
    if (rep && rep->code / 100 == 2) {
        if (c->lease)
            conn_grant(c);
        else
            conn_park(p, c);
        return;
    }
    /* Dead or confused: replace it; the borrower never hears of it. */
    struct upstream_lease *l = c->lease;
    char safe[300];
    const char *why = err ? err : "RSET refused";
    log_info("event=upstream_reuse_failed session=%s account=%s conn=%lu reason=%s",
             l ? l->log_id : c->log_id, p->name, c->id,
             log_safe(safe, sizeof(safe), why, strlen(why)));
    c->lease = NULL;
    conn_unlink(p, c);
    upstream_conn_close(c, 0);
    if (l) {
        l->c = NULL;
        pool_open(p, l);
    }
    pool_kick(p);
}

/* Lend idle c to l: at once after a handoff, else after an RSET proves it alive. */
static void pool_reuse(struct upstream_pool *p, struct upstream_conn *c, struct upstream_lease *l)
{
    p->nidle--;
    c->lease = l;
    l->c = c;
    p->reused++;
    metrics_upstream_conn(p->ps->metrics, l->acct, 1);
    if (c->idle_timer)
        evtimer_del(c->idle_timer);
    if (c->handoff) {
        c->handoff = 0;
        conn_grant(c);
        return;
    }
    c->state = UPSTREAM_CONN_CHECKING;
    snprintf(c->log_id, sizeof(c->log_id), "%s", l->log_id);
    client_session_set_log_id(c->cs, l->log_id);
    client_session_command(c->cs, "RSET", on_rset, c);
}

/* The idle connection to lend to l (the most recently used), closing the unfit ones met. */
static struct upstream_conn *pool_pick_idle(struct upstream_pool *p, struct upstream_lease *l,
                                            int64_t now)
{
    struct upstream_conn *best = NULL;
    for (struct upstream_conn *c = p->conns, *next; c; c = next) {
        next = c->next;
        if (c->state != UPSTREAM_CONN_IDLE)
            continue;
        const char *why = conn_unfit(c, now);
        if (why) {
            pool_drop(p, c, 1, why);
            continue;
        }
        if (c->gen == l->gen && (!best || c->idle_seq > best->idle_seq))
            best = c;
    }
    return best;
}

static struct upstream_conn *pool_oldest_idle(struct upstream_pool *p)
{
    struct upstream_conn *old = NULL;
    for (struct upstream_conn *c = p->conns; c; c = c->next)
        if (c->state == UPSTREAM_CONN_IDLE && (!old || c->idle_seq < old->idle_seq))
            old = c;
    return old;
}

/* The latest lease's settings apply (a reload changes them from the next lease on). */
static void pool_configure(struct upstream_pool *p, const struct cfg_account *acct)
{
    p->cap = acct->max_upstream_connections;
    if (acct->rate_limit == p->rl_per_minute)
        return;
    /* A changed rate keeps the recent send times: a fresh window would let a burst through
     * (and sessions older than a reload still bring the old rate, so it may change often). */
    struct rate_limit *rl = acct->rate_limit ? rate_limit_resized(p->rl, acct->rate_limit) : NULL;
    if (acct->rate_limit && !rl) {
        log_warn("event=rate_limit_unavailable account=%s reason=\"out of memory\"", p->name);
        return; /* the old limit stays */
    }
    rate_limit_free(p->rl);
    p->rl = rl;
    p->rl_per_minute = acct->rate_limit;
}

static void wait_unlink(struct upstream_pool *p, struct upstream_lease *l)
{
    if (l->prev)
        l->prev->next = l->next;
    else
        p->wait_head = l->next;
    if (l->next)
        l->next->prev = l->prev;
    else
        p->wait_tail = l->prev;
    l->next = l->prev = NULL;
    p->nwaiting--;
}

/* Serve the waiting leases in order while the rate and the cap allow. Lease callbacks may run
 * from here and call back into the pool: nothing is held across them but p. */
static void pool_run(struct upstream_pool *p)
{
    for (unsigned guard = 0; guard < 100000 && p->wait_head; guard++) {
        struct upstream_lease *l = p->wait_head;
        int64_t now = upstream_now_ms();
        pool_configure(p, l->acct);
        if (p->rl) {
            int64_t when = rate_limit_msg_when(p->rl, now);
            if (when > now) {
                int64_t ms = when - now;
                struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
                                     .tv_usec = (suseconds_t)((ms % 1000) * 1000)};
                evtimer_add(p->rate_timer, &tv);
                break;
            }
        }
        struct upstream_conn *c = pool_pick_idle(p, l, now);
        if (!c && p->cap && p->nconns >= p->cap) {
            /* At the cap: an idle connection this lease cannot use (another configuration)
             * gives way; with none, wait for a release. */
            struct upstream_conn *old = pool_oldest_idle(p);
            if (!old)
                break;
            pool_drop(p, old, 1, "cap");
        }
        wait_unlink(p, l);
        if (p->rl)
            (void)rate_limit_msg_take(p->rl, now, NULL);
        p->messages++;
        if (c)
            pool_reuse(p, c, l);
        else
            pool_open(p, l);
    }
    /* Handed off but not taken (the rate holds the next lease back): plain idle now. */
    for (struct upstream_conn *c = p->conns, *next; c; c = next) {
        next = c->next;
        if (c->state != UPSTREAM_CONN_IDLE || !c->handoff)
            continue;
        c->handoff = 0;
        if (idle_timeout(c) == 0)
            pool_drop(p, c, 1, "idle_timeout");
    }
}

/* ---- the API ---- */

struct upstream_lease *upstream_pool_get(struct upstream_pool *p, struct server_gen *gen,
                                         const struct cfg_account *acct, const char *log_id,
                                         upstream_lease_cb cb, void *arg)
{
    struct upstream_lease *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->p = p;
    l->gen = server_gen_ref(gen);
    l->acct = acct;
    snprintf(l->log_id, sizeof(l->log_id), "%s", log_id ? log_id : "-");
    l->cb = cb;
    l->arg = arg;
    l->prev = p->wait_tail;
    if (p->wait_tail)
        p->wait_tail->next = l;
    else
        p->wait_head = l;
    p->wait_tail = l;
    p->nwaiting++;
    pool_configure(p, acct);
    pool_kick(p);
    return l;
}

void upstream_lease_cancel(struct upstream_lease *l)
{
    if (!l)
        return;
    if (l->c)
        l->c->lease = NULL; /* it goes on opening (or checking) and becomes idle */
    else
        wait_unlink(l->p, l);
    lease_free(l);
}

int64_t upstream_pool_rate_wait_ms(const struct upstream_pool *p)
{
    if (!p->rl)
        return 0;
    int64_t now = upstream_now_ms();
    return rate_limit_msg_when_nth(p->rl, now, p->nwaiting) - now;
}

struct client_session *upstream_conn_session(struct upstream_conn *c)
{
    return c->cs;
}

const char *upstream_conn_host(const struct upstream_conn *c)
{
    return c->acct->upstream.host;
}

void upstream_conn_release(struct upstream_conn *c, int reusable)
{
    if (!c)
        return;
    struct upstream_pool *p = c->pool;
    client_session_set_drain_cb(c->cs, 0, NULL, NULL); /* the borrower's */
    if (!p) {
        upstream_conn_close(c, reusable);
        return;
    }
    if (!reusable) {
        pool_drop(p, c, 0, "released_broken");
        return;
    }
    conn_park(p, c);
}

void upstream_pool_stats(const struct upstream_pool *p, struct upstream_pool_stats *st)
{
    memset(st, 0, sizeof(*st));
    st->conns = p->nconns;
    st->idle = p->nidle;
    st->waiting = p->nwaiting;
    st->opened = p->opened;
    st->reused = p->reused;
    st->messages = p->messages;
}
