/* The running daemon's shared state: the current generation (config, device table, TLS
 * contexts, token caches: server_gen.h), the token store, listeners, sessions. Sessions borrow
 * it; it outlives them. A reload swaps the generation; sessions keep the one they started on. */
#ifndef SOP_SERVER_H
#define SOP_SERVER_H

#include <openssl/ssl.h>

#include "proxy/config/config.h"
#include "proxy/delivery/delivery_ctx.h"

struct event_base;
struct evdns_base;
struct http;
struct token_store;
struct server_listener;
struct server_session;
struct server_gen;
struct metrics;
struct device_stats_keeper;
struct upstream_pools;
struct queue;
struct spool_committer;
struct auth_throttle;
struct auth_delay;
struct account_budget_keeper;

struct server {
    /* what the delivery side borrows: the loop, counters, pools, the queue and its committer
     * (opened by main.c once it is not just --check: the spool's lock belongs to the running
     * daemon) */
    struct delivery_ctx dctx;
    struct event_base *base;
    struct evdns_base *dns;
    struct server_gen *gen; /* the current generation: new sessions start on it */
    struct http *http;
    struct token_store *store;       /* NULL: no key_file, tokens are not persisted */
    struct server_session *sessions; /* open sessions, for shutdown */
    struct metrics *metrics;         /* counters for metrics_listen (always kept) */
    /* the `devices` history (device_stats.h); NULL: out of memory, not kept */
    struct device_stats_keeper *devstats;
    struct upstream_pools *pools; /* upstream connections per account (upstream_pool.h) */
    struct graph_pools *graph;    /* Graph requests per account (graph_client.h) */
    /* failed AUTH per source address (auth_throttle.h), and
     * the failure replies waiting out their delay (server_auth.c) */
    struct auth_throttle *throttle;
    struct auth_delay *auth_delays;
    struct server_listener **listeners;
    size_t nlisteners;
    unsigned sessions_open;
    unsigned long sessions_total;
    int stopping;
    /* the daily recipient budget per account (account_budget.h); NULL: out of memory, none */
    struct account_budget_keeper *budget;
};

/* Builds everything from a validated config (takes ownership of cfg). NULL with err on failure:
 * a certificate that does not load, an account whose provider cannot be set up. */
struct server *server_new(struct event_base *base, struct config *cfg, char *err, size_t errlen);
/* Bind every listen and listen_tls address. 0 ok; -1 with err naming the address. */
int server_listen(struct server *s, char *err, size_t errlen);
/* Stop accepting (sessions in flight go on). */
void server_stop_listening(struct server *s);
/* Shut down gracefully: stop accepting, close idle sessions with a 421, let each session with a
 * message in flight finish that message first. The loop exits when the last session closes. */
void server_drain(struct server *s);
void server_free(struct server *s);
/* Read path again and swap the new config in (SIGHUP): a new generation, listeners the new
 * config adds are bound and those it drops are closed; unchanged ones keep their socket.
 * Sessions in flight finish on their generation. 0 done; -1 refused and nothing changed, with
 * *errors (malloc'd, one problem per line: config errors as FILE:LINE: message, a key that
 * cannot change without a restart, an address that cannot be bound). */
int server_reload(struct server *s, const char *path, char **errors);
/* Called by sessions. */
void server_session_closed(struct server *s);

#endif
