/* One account's upstream connections, shared by every message of that account (devices in direct
 * and direct-then-spool mode, and the queue runner).
 *
 * A connection is opened (connect, STARTTLS, EHLO: client_session.h), authenticated (a token
 * from the account's token cache, XOAUTH2 or OAUTHBEARER per upstream_auth; a 535 gets one more
 * try with a fresh token), then lent out for ONE message at a time (a lease). Given back clean,
 * it stays open for upstream_idle_timeout and the next lease of the account reuses it after an
 * RSET (which also proves it is alive: a dead one is closed and replaced without the borrower
 * noticing). One whose token has expired since it authenticated is not reused: it is closed and
 * a new one authenticates with a fresh token.
 *
 * Pacing (Exchange Online: 30 messages per minute and 3 connections per mailbox, 432 4.3.2
 * beyond): a lease is granted only when rate_limit (proxy/upstream/rate_limit.h) lets one more
 * message start, and never more than max_upstream_connections connections exist (opening, busy or
 * idle). Excess leases wait in FIFO order; nothing is refused for pacing.
 *
 * Callbacks never run from inside an API call: always from the event loop. */
#ifndef SOP_UPSTREAM_POOL_H
#define SOP_UPSTREAM_POOL_H

#include <stdint.h>

#include <openssl/ssl.h>

#include "proxy/upstream/client_session.h"
#include "proxy/config/config.h"

struct event_base;
struct evdns_base;
struct metrics;
struct server_gen;
struct cfg_account;
struct client_session;
struct smtp_reply;
struct upstream_pools;
struct upstream_pool;
struct upstream_conn;
struct upstream_lease;

/* Why no connection could be had. */
struct upstream_failure {
    /* what a device waiting on it hears: always a 4xx reply, no CRLF ("451 4.4.1 Upstream server
     * unavailable, try again later", "454 4.7.0 Temporary authentication failure upstream, ...") */
    const char *reply;
    const char *why;              /* for the log (log-safe, no secret), e.g. "connect: refused" */
    const struct smtp_reply *rep; /* the upstream's refusing reply, if there was one */
    const char *rep_text;         /* that reply as text ("535 5.7.3 ..."), or NULL */
};

/* c: a leased, authenticated connection with no transaction open (MAIL may be sent at once), or
 * NULL and f says why. Every value is valid only during the call. */
typedef void (*upstream_lease_cb)(void *arg, struct upstream_conn *c,
                                  const struct upstream_failure *f);

/* Every account's pool, by account name; owned by the daemon, lives as long as it. base, dns
 * (NULL: only IP literals) and m (counters) are borrowed and outlive it. */
struct upstream_pools *upstream_pools_new(struct event_base *base, struct evdns_base *dns,
                                          struct metrics *m);
/* Closes every connection (QUIT if idle), drops waiting leases without callback. Accepts NULL. */
void upstream_pools_free(struct upstream_pools *ps);
/* The pool of account name (created on first use). NULL only when out of memory. */
struct upstream_pool *upstream_pools_get(struct upstream_pools *ps, const char *account);

/* Ask for a connection for one message. gen/acct: the configuration to open a new connection
 * with (taken from acct at each call: a reload's new rate_limit or max_upstream_connections
 * applies from the next lease; an idle connection opened on another generation is closed rather
 * than reused). The lease holds a reference on gen until its callback ran or it was cancelled.
 * log_id: the session or queue id for log lines. NULL only when out of memory (cb never runs). */
struct upstream_lease *upstream_pool_get(struct upstream_pool *p, struct server_gen *gen,
                                         const struct cfg_account *acct, const char *log_id,
                                         upstream_lease_cb cb, void *arg);
/* Withdraw a lease whose callback has not run yet. */
void upstream_lease_cancel(struct upstream_lease *l);

/* Milliseconds until rate_limit lets one more message of this pool start (0: now), counting
 * the leases already waiting. Direct-then-spool spools at once rather than keep a device
 * waiting for more than a moment. */
int64_t upstream_pool_rate_wait_ms(const struct upstream_pool *p);

/* The connection's session: send MAIL, RCPT, DATA, the body, and read replies with it. */
struct client_session *upstream_conn_session(struct upstream_conn *c);
/* The upstream's host name (for Remote-MTA in bounces and log lines). */
const char *upstream_conn_host(const struct upstream_conn *c);
/* Give the connection back. reusable 1: the message's transaction is over (final reply to the
 * end of DATA, or a reply to RSET) and the connection is healthy: it may be kept idle.
 * reusable 0: close it (mid-transaction, after an error, or a 421). c is gone afterwards. */
void upstream_conn_release(struct upstream_conn *c, int reusable);

/* How the pool opens acct's upstream (host, port, EHLO name, TLS mode, timeouts), for `test` to
 * open it the same way; ssl_ctx and log_id are the caller's (borrowed). */
void upstream_client_cfg(const struct config *cfg, const struct cfg_account *acct, SSL_CTX *ssl_ctx,
                         const char *log_id, struct client_cfg *cc);
/* upstream_auth against the mechanisms an EHLO offers (SMTP_AUTH_* bits): 0 and *mech, or -1
 * when none of those it allows is offered. auto prefers XOAUTH2. For none: -1. */
int upstream_pick_mech(enum upstream_auth want, unsigned offered, enum client_auth_mech *mech);

struct upstream_pool_stats {
    unsigned conns;         /* open or opening */
    unsigned idle;          /* of which idle */
    unsigned waiting;       /* leases waiting */
    unsigned long opened;   /* connections opened since start (each a TLS handshake) */
    unsigned long reused;   /* leases served by an idle connection */
    unsigned long messages; /* leases granted */
};
void upstream_pool_stats(const struct upstream_pool *p, struct upstream_pool_stats *st);

#endif
