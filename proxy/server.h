/* The running daemon's shared state: config, device table, TLS contexts, token caches, listeners.
 * Sessions borrow it; it outlives them. */
#ifndef SOP_SERVER_H
#define SOP_SERVER_H

#include <openssl/ssl.h>

#include "proxy/config.h"

struct event_base;
struct evdns_base;
struct device_table;
struct http;
struct token_cache;
struct token_store;
struct server_listener;
struct server_session;
struct auth_worker;
struct metrics;
struct device_stats_keeper;

struct server {
    struct event_base *base;
    struct evdns_base *dns;
    struct config *cfg;
    struct device_table *devices;
    struct auth_worker *auth; /* NULL when no device logs in */
    SSL_CTX *tls_server;      /* NULL when no tls_cert: no STARTTLS, no listen_tls */
    SSL_CTX **tls_clients;    /* upstream TLS, one per cfg->accounts[i] (its own ca_file) */
    struct http *http;
    struct token_cache **tokens;     /* one per cfg->accounts[i] */
    struct token_store *store;       /* NULL: no key_file, tokens are not persisted */
    struct server_session *sessions; /* open sessions, for shutdown */
    struct metrics *metrics;         /* counters for metrics_listen (always kept) */
    /* the `devices` history (device_stats.h); NULL: out of memory, not kept */
    struct device_stats_keeper *devstats;
    struct server_listener **listeners;
    size_t nlisteners;
    unsigned sessions_open;
    unsigned long sessions_total;
    int stopping;
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
/* The token cache of an account. */
struct token_cache *server_token_cache(struct server *s, const struct cfg_account *acct);
/* The upstream TLS context of an account. */
SSL_CTX *server_tls_client(struct server *s, const struct cfg_account *acct);
/* Called by sessions. */
void server_session_closed(struct server *s);

#endif
