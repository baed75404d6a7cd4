/* One generation of the daemon's configured state: the config and everything built from it
 * (device table, password-check threads, TLS contexts, per-account token caches). A reload
 * builds a new generation and makes it current; every session holds a reference to the one it
 * started on and finishes on it, so the old generation is freed when its last session closes. */
#ifndef SOP_SERVER_GEN_H
#define SOP_SERVER_GEN_H

#include <stddef.h>

#include <openssl/ssl.h>

struct event_base;
struct config;
struct cfg_account;
struct device_table;
struct auth_worker;
struct http;
struct token_cache;
struct token_store;
struct gen_tokens;

struct server_gen {
    unsigned refs;
    unsigned id; /* 1 at start-up, +1 per reload: names it in log lines */
    struct config *cfg;
    struct device_table *devices;
    struct auth_worker *auth;   /* NULL when no device logs in */
    SSL_CTX *tls_server;        /* NULL when no tls_cert: no STARTTLS, no listen_tls */
    SSL_CTX **tls_clients;      /* upstream TLS, one per cfg->accounts[i] (its own ca_file) */
    struct gen_tokens **tokens; /* one per cfg->accounts[i], shared with other generations */
    size_t tokens_kept;         /* how many came from prev (server_gen_new) */
    int retired; /* a reload replaced it: its idle connections close; logged when it is freed */
};

/* Builds a generation from a validated config (takes ownership of cfg, also on failure), with
 * one reference. prev (may be NULL): the generation it replaces; an account whose token
 * settings are unchanged (server_gen_account_same) shares prev's token cache, so a reload
 * costs no new token request. Discovers issuers (blocking, like at start-up). NULL with err. */
struct server_gen *server_gen_new(struct event_base *base, struct config *cfg, struct http *http,
                                  struct token_store *store, const struct server_gen *prev,
                                  char *err, size_t errlen);
struct server_gen *server_gen_ref(struct server_gen *g);
/* Drops a reference; the last one frees the generation. Accepts NULL. */
void server_gen_unref(struct server_gen *g);
/* cfg->accounts[i]'s token cache (NULL: i out of range). */
struct token_cache *server_gen_token_cache(const struct server_gen *g, size_t i);
/* The token cache / upstream TLS context of an account of this generation's config. */
struct token_cache *server_gen_account_tokens(const struct server_gen *g,
                                              const struct cfg_account *acct);
SSL_CTX *server_gen_tls_client(const struct server_gen *g, const struct cfg_account *acct);
/* 1 when b gets its tokens exactly as a does (name, provider, grant, endpoints, client
 * credentials, scope, mailbox, http_proxy), so a's token cache can serve b; else 0. Pure. A
 * token_url or device_authorization_url that b leaves to its issuer's discovery is taken as a's. */
int server_gen_account_same(const struct cfg_account *a, const struct cfg_account *b);

#endif
