/* The pools of proxy/graph/graph_pool.h: per account, at most max requests in flight, the others
 * wait in order; a 429 or 503 holds the whole pool until its Retry-After has passed; rate_limit
 * paces messages (proxy/upstream/rate_limit.h's sliding window). */
#include "proxy/graph/graph_pool.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "common/log.h"
#include "oauth/http.h"
#include "proxy/config/config.h"
#include "proxy/upstream/rate_limit.h"

#define GRAPH_MAX_IN_FLIGHT 4u
#define GRAPH_DEFAULT_HOLD_MS 10000

int64_t graph_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void graph_pool_kick_cb(evutil_socket_t fd, short what, void *arg);

struct graph_pools *graph_pools_new(struct event_base *base, struct metrics *m)
{
    struct graph_pools *ps = calloc(1, sizeof(*ps));
    if (!ps)
        return NULL;
    ps->base = base;
    ps->m = m;
    ps->http = http_new(base);
    if (!ps->http) {
        free(ps);
        return NULL;
    }
    return ps;
}

void graph_pools_free(struct graph_pools *ps)
{
    if (!ps)
        return;
    while (ps->pools) {
        struct graph_pool *p = ps->pools;
        ps->pools = p->next;
        graph_send_cancel_all(p);
        http_free(p->own_http);
        free(p->own_proxy);
        event_free(p->kick);
        rate_limit_free(p->rl);
        free(p->name);
        free(p);
    }
    http_free(ps->http);
    free(ps);
}

struct graph_pool *graph_pools_get(struct graph_pools *ps, const char *account)
{
    if (!ps || !account)
        return NULL;
    for (struct graph_pool *p = ps->pools; p; p = p->next)
        if (strcmp(p->name, account) == 0)
            return p;
    struct graph_pool *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->ps = ps;
    p->max = GRAPH_MAX_IN_FLIGHT;
    p->name = strdup(account);
    p->kick = event_new(ps->base, -1, 0, graph_pool_kick_cb, p);
    if (!p->name || !p->kick) {
        if (p->kick)
            event_free(p->kick);
        free(p->name);
        free(p);
        return NULL;
    }
    p->next = ps->pools;
    ps->pools = p;
    return p;
}

struct http *graph_pool_http(struct graph_pool *p, const struct cfg_account *acct)
{
    const char *want = acct->http_proxy && *acct->http_proxy ? acct->http_proxy : NULL;
    int same = (!want && !p->own_http) || (want && p->own_proxy && strcmp(want, p->own_proxy) == 0);
    /* A changed proxy (a reload) takes effect once no other request of the pool is in flight
     * (the caller holds a slot already). */
    if (same || p->in_flight > 1)
        return p->own_http ? p->own_http : p->ps->http;
    http_free(p->own_http);
    free(p->own_proxy);
    p->own_http = NULL;
    p->own_proxy = NULL;
    if (want) {
        p->own_http = http_new(p->ps->base);
        p->own_proxy = strdup(want);
        if (!p->own_http || !p->own_proxy || http_set_proxy(p->own_http, want) != 0) {
            http_free(p->own_http);
            free(p->own_proxy);
            p->own_http = NULL;
            p->own_proxy = NULL;
            return NULL;
        }
    }
    return p->own_http ? p->own_http : p->ps->http;
}

static void graph_pool_schedule(struct graph_pool *p)
{
    if (!p->head || p->in_flight >= p->max)
        return;
    int64_t now = graph_now_ms();
    struct timeval tv = {0, 0};
    if (p->hold_until_ms > now) {
        int64_t ms = p->hold_until_ms - now;
        tv.tv_sec = (time_t)(ms / 1000);
        tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
    }
    event_add(p->kick, &tv);
}

static void graph_pool_kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct graph_pool *p = arg;
    (void)fd;
    (void)what;
    if (p->hold_until_ms > graph_now_ms()) {
        graph_pool_schedule(p);
        return;
    }
    while (p->head && p->in_flight < p->max && p->hold_until_ms <= graph_now_ms()) {
        struct graph_waiter *w = p->head;
        graph_pool_unwait(p, w);
        p->in_flight++;
        p->st.in_flight = p->in_flight;
        w->granted(w); /* may release, queue again or cancel others */
    }
    graph_pool_schedule(p);
}

void graph_pool_wait_slot(struct graph_pool *p, struct graph_waiter *w, unsigned max)
{
    p->max = max == 0 || max > GRAPH_MAX_IN_FLIGHT ? GRAPH_MAX_IN_FLIGHT : max;
    if (w->queued)
        return;
    w->queued = 1;
    w->next = NULL;
    w->prev = p->tail;
    if (p->tail)
        p->tail->next = w;
    else
        p->head = w;
    p->tail = w;
    p->nwaiting++;
    p->st.waiting = p->nwaiting;
    graph_pool_schedule(p);
}

void graph_pool_unwait(struct graph_pool *p, struct graph_waiter *w)
{
    if (!w->queued)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        p->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        p->tail = w->prev;
    w->next = w->prev = NULL;
    w->queued = 0;
    p->nwaiting--;
    p->st.waiting = p->nwaiting;
}

void graph_pool_release(struct graph_pool *p)
{
    if (p->in_flight > 0)
        p->in_flight--;
    p->st.in_flight = p->in_flight;
    graph_pool_schedule(p);
}

void graph_pool_hold(struct graph_pool *p, int64_t retry_after_ms)
{
    int64_t until = graph_now_ms() + (retry_after_ms > 0 ? retry_after_ms : GRAPH_DEFAULT_HOLD_MS);
    if (until > p->hold_until_ms)
        p->hold_until_ms = until;
    p->st.throttled++;
    if (event_pending(p->kick, EV_TIMEOUT, NULL))
        event_del(p->kick);
    graph_pool_schedule(p);
}

int graph_pool_msg_take(struct graph_pool *p, unsigned per_minute, int64_t *when_ms)
{
    int64_t now = graph_now_ms();
    if (per_minute == 0)
        return 1;
    if (!p->rl || p->rl_per_minute != per_minute) {
        struct rate_limit *n = rate_limit_resized(p->rl, per_minute);
        if (!n) {
            log_warn("event=rate_limit_unavailable account=%s reason=\"out of memory\"", p->name);
            return 1;
        }
        rate_limit_free(p->rl);
        p->rl = n;
        p->rl_per_minute = per_minute;
    }
    return rate_limit_msg_take(p->rl, now, when_ms);
}

int64_t graph_pool_wait_ms(const struct graph_pool *p)
{
    if (!p)
        return 0;
    int64_t now = graph_now_ms(), wait = 0;
    if (p->hold_until_ms > now)
        wait = p->hold_until_ms - now;
    if (p->rl) {
        int64_t when = rate_limit_msg_when(p->rl, now);
        if (when - now > wait)
            wait = when - now;
    }
    return wait;
}

void graph_pool_stats(const struct graph_pool *p, struct graph_pool_stats *st)
{
    memset(st, 0, sizeof(*st));
    if (p)
        *st = p->st;
}
