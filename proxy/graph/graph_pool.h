/* Inside proxy/graph/: the per-account pool that graph_client.c's sends share (request slots,
 * FIFO waiters, the Retry-After hold, rate_limit, the account's own http handle). Not for other
 * folders: graph_client.h is the API. */
#ifndef SOP_GRAPH_POOL_H
#define SOP_GRAPH_POOL_H

#include <stdint.h>

#include "proxy/graph/graph_client.h"

struct http;
struct event;
struct rate_limit;

/* Waiting for a slot: an entry of the pool's FIFO, embedded in the send. */
struct graph_waiter {
    struct graph_waiter *next, *prev;
    int queued;
    void (*granted)(struct graph_waiter *w); /* from the loop, with a slot taken */
};

struct graph_pools {
    struct event_base *base;
    struct metrics *m;
    struct http *http; /* shared by the accounts without an http_proxy */
    struct graph_pool *pools;
};

struct graph_pool {
    struct graph_pools *ps;
    struct graph_pool *next;
    char *name;
    struct http *own_http; /* with the account's http_proxy; NULL: the shared one */
    char *own_proxy;
    unsigned in_flight, max;
    struct graph_waiter *head, *tail;
    unsigned nwaiting;
    int64_t hold_until_ms; /* 429/503: no new request before (monotonic ms) */
    struct event *kick;    /* grants slots from the loop */
    struct rate_limit *rl;
    unsigned rl_per_minute;
    struct graph_send *sends; /* every send alive, for graph_pools_free */
    struct graph_pool_stats st;
};

int64_t graph_now_ms(void);
/* The http handle for acct (its http_proxy's own, made or remade when no other request is in
 * flight; the caller holds a slot); NULL: no memory. */
struct http *graph_pool_http(struct graph_pool *p, const struct cfg_account *acct);
/* Queue w for a slot (FIFO); granted() runs from the loop once one is free and no hold. max: the
 * account's max_upstream_connections at this call (1..4; 0 taken as 4). */
void graph_pool_wait_slot(struct graph_pool *p, struct graph_waiter *w, unsigned max);
/* Out of the queue (not granted yet). */
void graph_pool_unwait(struct graph_pool *p, struct graph_waiter *w);
/* A granted request ended: its slot goes to the next waiter. */
void graph_pool_release(struct graph_pool *p);
/* A 429 or 503: hold every new request for retry_after_ms (<= 0: 10 s). */
void graph_pool_hold(struct graph_pool *p, int64_t retry_after_ms);
/* rate_limit: 1 the message may start now (counted); 0 not before *when_ms. */
int graph_pool_msg_take(struct graph_pool *p, unsigned per_minute, int64_t *when_ms);

/* graph_client.c: the pool's sends list */
void graph_send_link(struct graph_pool *p, struct graph_send *s);
void graph_send_unlink(struct graph_pool *p, struct graph_send *s);
void graph_send_cancel_all(struct graph_pool *p);

#endif
