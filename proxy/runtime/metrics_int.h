/* The registry's insides, shared by metrics.c (counting) and metrics_render.c (the text
 * exposition). Private to them: nothing else includes this. */
#ifndef SOP_METRICS_INT_H
#define SOP_METRICS_INT_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/runtime/metrics.h"

#define METRICS_LISTENERS_MAX 64
/* Distinct (command, class, enhanced code) series; beyond it a code counts as "other". */
#define METRICS_REPLIES_MAX 128
#define METRICS_NCMDS 4
#define METRICS_NCLASSES 5 /* 2xx..5xx, and "other" for a code outside 200..599 */
#define METRICS_NRESULTS 4
/* Graph's statuses counted on their own; the last slot is "other", the first "none" (no answer) */
#define METRICS_GRAPH_NSTATUS 18
extern const long metrics_graph_statuses[METRICS_GRAPH_NSTATUS];

struct metrics_listener {
    char name[96];
    unsigned long open, total;
};

struct metrics_account {
    unsigned long messages[METRICS_NRESULTS]; /* by enum metrics_result */
    uint64_t bytes;
    unsigned long conns_opened, conns_reused; /* upstream connections (upstream_pool.c) */
    /* Microsoft Graph requests by status (metrics_graph_statuses), and 429/503 answers */
    unsigned long graph_requests[METRICS_GRAPH_NSTATUS];
    unsigned long graph_throttled;
};

struct metrics_reply {
    enum metrics_cmd cmd;
    int klass;    /* 2..5, or 0: not a valid reply code */
    char code[8]; /* "5.7.139", or "other" */
    unsigned long count;
};

struct metrics {
    const struct config *cfg;
    struct metrics_listener listeners[METRICS_LISTENERS_MAX];
    size_t nlisteners;
    struct metrics_account *accounts;         /* cfg->naccounts */
    unsigned long *auth_failures;             /* cfg->ndevices, then one for "unknown" */
    unsigned long refused[METRICS_NREFUSALS]; /* by enum metrics_refusal */
    /* "other" rows never need a free well-formed slot: room for one per command and class */
    struct metrics_reply replies[METRICS_REPLIES_MAX + METRICS_NCMDS * METRICS_NCLASSES];
    size_t nreplies, nreplies_coded;
    /* cfg->ndevices rows, by enum metrics_device_limit */
    unsigned long (*device_limits)[METRICS_NDEVICE_LIMITS];
};

extern const char *const metrics_cmd_names[METRICS_NCMDS];
extern const char *const metrics_result_names[METRICS_NRESULTS];
extern const char *const metrics_refusal_names[METRICS_NREFUSALS];
extern const char *const metrics_device_limit_names[METRICS_NDEVICE_LIMITS];

#endif
