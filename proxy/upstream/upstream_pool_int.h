/* Private to upstream_pool.c (leases, the idle list, caps) and upstream_conn.c (opening and
 * authenticating one connection). Not part of the contract (that is upstream_pool.h). */
#ifndef SOP_UPSTREAM_POOL_INT_H
#define SOP_UPSTREAM_POOL_INT_H

#include <stdint.h>

#include "proxy/upstream/client_session.h"
#include "proxy/upstream/upstream_pool.h"

struct event;
struct token_cache;
struct token_wait;

/* A token this close to its expiry retires the connection it authenticated. Below the token
 * cache's own margin (30 s, oauth/token_cache.c) on purpose: when the pool retires a connection,
 * the cache no longer hands out that token either, so the replacement authenticates with a fresh
 * one instead of the same old token; and every token the cache hands out leaves a connection at
 * least 10 s of use. */
#define UPSTREAM_TOKEN_MARGIN_MS 20000

enum upstream_conn_state {
    UPSTREAM_CONN_OPENING,  /* connect, STARTTLS, EHLO, token or password, AUTH (or none) */
    UPSTREAM_CONN_CHECKING, /* idle one being proven alive with RSET for a lease */
    UPSTREAM_CONN_BUSY,     /* lent out */
    UPSTREAM_CONN_IDLE,     /* authenticated, waiting for the next lease */
};

struct upstream_conn {
    struct upstream_pool *pool; /* NULL: the pool is gone, release closes it */
    struct upstream_conn *next, *prev;
    enum upstream_conn_state state;
    struct event_base *base;
    struct evdns_base *dns;
    struct metrics *metrics;
    struct server_gen *gen; /* a reference: the configuration it was opened with */
    const struct cfg_account *acct;
    struct client_session *cs;
    struct upstream_lease *lease; /* OPENING/CHECKING: for whom (NULL: the lease was cancelled) */
    unsigned long id;             /* per pool, for log lines */
    char log_id[32];              /* the lease's that opened it */

    /* opening */
    struct token_cache *tokens;
    struct token_wait *token_wait;
    char *token; /* kept until AUTH is answered (to invalidate it on 535) */
    int auth_retried;
    int opened;      /* EHLO after STARTTLS done, waiting for the token */
    int mech_picked; /* mech is what the EHLO offered and upstream_auth allows */
    int authed;      /* AUTH succeeded (0: the connection sends unauthenticated) */
    enum client_auth_mech mech;
    int64_t token_deadline_ms; /* monotonic; 0: unknown, not retired for it */

    /* idle */
    struct event *idle_timer;
    uint64_t idle_seq; /* larger: released more recently (LIFO) */
    int handoff;       /* released while leases waited: no RSET needed before the next */
};

/* Monotonic milliseconds. */
int64_t upstream_now_ms(void);

/* ---- upstream_conn.c ---- */

/* A new connection for gen/acct (not yet opened); NULL when out of memory. */
struct upstream_conn *upstream_conn_new(struct event_base *base, struct evdns_base *dns,
                                        struct metrics *m, struct server_gen *gen,
                                        const struct cfg_account *acct, const char *log_id);
/* Connect and authenticate; upstream_pool_conn_opened() runs once with the outcome (perhaps
 * before this returns, always from the event loop as the pool only calls this from there). */
void upstream_conn_open(struct upstream_conn *c);
/* Close (QUIT when polite and usable) and free. */
void upstream_conn_close(struct upstream_conn *c, int polite);

/* ---- upstream_pool.c ---- */

/* c finished opening: f NULL, authenticated; else why not (c is then to be closed). */
void upstream_pool_conn_opened(struct upstream_conn *c, const struct upstream_failure *f);

#endif
