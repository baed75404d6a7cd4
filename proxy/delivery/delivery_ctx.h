/* What the delivery side (the backends, the queue, the message log) works with: the event loop
 * and its collaborators, made by the daemon (server.c; the queue and the committer by main.c
 * once the spool is open) and borrowed by each delivery module when it is made. Delivery never
 * sees the daemon itself, so it cannot reach back into it. */
#ifndef SOP_DELIVERY_CTX_H
#define SOP_DELIVERY_CTX_H

struct event_base;
struct metrics;
struct device_stats_keeper;
struct upstream_pools;
struct graph_pools;
struct queue;
struct spool_committer;
struct device_limits;
struct device_blocks;
struct account_budget;

struct delivery_ctx {
    struct event_base *base;
    struct metrics *metrics;              /* counters (always there) */
    struct device_stats_keeper *devstats; /* the `devices` history; NULL: not kept */
    struct upstream_pools *pools;         /* upstream connections per account */
    struct graph_pools *graph;            /* Microsoft Graph requests per account */
    struct queue *queue;                  /* the spool and its runner; NULL until opened */
    struct spool_committer *committer;    /* commits off the loop; with queue */
    /* per-device limits and the block list (docs/device-limits.md); NULL: none kept */
    struct device_limits *limits;
    struct device_blocks *blocks;
    /* recipients accepted per account in 24 h, and the hold (account_budget.h); NULL: none */
    struct account_budget *budget;
};

#endif
