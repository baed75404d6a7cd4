/* A generation: built from one config, shared by the sessions that started on it. */
#include "proxy/runtime/server_gen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "oauth/token_cache.h"
#include "proxy/runtime/account_tokens.h"
#include "proxy/runtime/auth_worker.h"
#include "proxy/config/config.h"
#include "proxy/runtime/device.h"
#include "proxy/runtime/tls.h"

/* A token cache outlives the generation that built it when a reload keeps its account: every
 * generation using it holds a reference. */
struct gen_tokens {
    unsigned refs;
    struct token_cache *cache;
};

static void tokens_unref(struct gen_tokens *t)
{
    if (t && --t->refs == 0) {
        token_cache_free(t->cache);
        free(t);
    }
}

static int str_same(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

int server_gen_account_same(const struct cfg_account *a, const struct cfg_account *b)
{
    /* b's endpoints may still be unresolved (issuer discovery runs after this test) */
    const char *b_token_url = b->token_url || !b->issuer ? b->token_url : a->token_url;
    const char *b_device_url = b->device_authorization_url || !b->issuer
                                   ? b->device_authorization_url
                                   : a->device_authorization_url;
    return str_same(a->name, b->name) && str_same(a->provider, b->provider) &&
           str_same(a->grant, b->grant) && str_same(a->tenant, b->tenant) &&
           str_same(a->client_id, b->client_id) && str_same(a->client_secret, b->client_secret) &&
           str_same(a->client_certificate, b->client_certificate) &&
           str_same(a->client_key, b->client_key) && str_same(a->mailbox, b->mailbox) &&
           str_same(a->service_account_key, b->service_account_key) &&
           str_same(a->issuer, b->issuer) && str_same(a->token_url, b_token_url) &&
           str_same(a->device_authorization_url, b_device_url) && str_same(a->scope, b->scope) &&
           str_same(a->http_proxy, b->http_proxy);
}

/* The generation's account that shares prev's cache: its endpoints discovered back then are
 * taken over, so the issuer is not asked again. -1 out of memory. */
static int keep_tokens(struct server_gen *g, size_t i, const struct server_gen *prev)
{
    struct cfg_account *b = &g->cfg->accounts[i];
    for (size_t j = 0; prev && j < prev->cfg->naccounts; j++) {
        const struct cfg_account *a = &prev->cfg->accounts[j];
        if (!server_gen_account_same(a, b))
            continue;
        if (!b->token_url && a->token_url && !(b->token_url = strdup(a->token_url)))
            return -1;
        if (!b->device_authorization_url && a->device_authorization_url &&
            !(b->device_authorization_url = strdup(a->device_authorization_url)))
            return -1;
        g->tokens[i] = prev->tokens[j];
        g->tokens[i]->refs++;
        g->tokens_kept++;
        return 0;
    }
    return 0;
}

struct server_gen *server_gen_new(struct event_base *base, struct config *cfg, struct http *http,
                                  struct token_store *store, const struct server_gen *prev,
                                  char *err, size_t errlen)
{
    struct server_gen *g = calloc(1, sizeof(*g));
    if (!g) {
        snprintf(err, errlen, "out of memory");
        config_free(cfg);
        return NULL;
    }
    g->refs = 1;
    g->id = prev ? prev->id + 1 : 1;
    g->cfg = cfg;
    g->devices = device_table_new(cfg);
    g->tokens = calloc(cfg->naccounts ? cfg->naccounts : 1, sizeof(*g->tokens));
    g->tls_clients = calloc(cfg->naccounts ? cfg->naccounts : 1, sizeof(*g->tls_clients));
    if (!g->devices || !g->tokens || !g->tls_clients) {
        snprintf(err, errlen, "cannot initialise: out of memory");
        goto fail;
    }
    if (device_has_logins(g->devices)) {
        /* password checks run on 2 threads: the loop never waits for crypt(3) */
        g->auth = auth_worker_new(base, g->devices, 2);
        if (!g->auth) {
            snprintf(err, errlen, "cannot start the password-check threads");
            goto fail;
        }
    }
    if (cfg->tls_cert) {
        g->tls_server =
            tls_server_ctx_new(cfg->tls_cert, cfg->tls_key, cfg->tls_min_version, err, errlen);
        if (!g->tls_server)
            goto fail;
    }
    for (size_t i = 0; i < cfg->naccounts; i++)
        if (keep_tokens(g, i, prev) != 0) {
            snprintf(err, errlen, "cannot initialise: out of memory");
            goto fail;
        }
    /* issuer: token endpoints come from discovery documents, before the loop serves anyone */
    if (account_tokens_discover(cfg, err, errlen) != 0)
        goto fail;
    for (size_t i = 0; i < cfg->naccounts; i++) {
        const struct cfg_account *a = &cfg->accounts[i];
        /* each account may trust its own upstream CA (upstream_ca_file) and present its own
         * client certificate (upstream_client_certificate: a certificate-based connector) */
        char terr[768];
        g->tls_clients[i] =
            tls_client_ctx_new_cert(a->upstream.ca_file, a->upstream.client_certificate,
                                    a->upstream.client_key, terr, sizeof(terr));
        if (!g->tls_clients[i]) {
            snprintf(err, errlen, "%s line %d: account %s: upstream TLS: %s", cfg->path, a->line,
                     a->name, terr);
            goto fail;
        }
        if (g->tokens[i])
            continue;
        g->tokens[i] = calloc(1, sizeof(*g->tokens[i]));
        if (!g->tokens[i]) {
            snprintf(err, errlen, "cannot initialise: out of memory");
            goto fail;
        }
        g->tokens[i]->refs = 1;
        g->tokens[i]->cache = account_tokens_new(cfg, a, http, store, err, errlen);
        if (!g->tokens[i]->cache)
            goto fail;
    }
    return g;
fail:
    server_gen_unref(g);
    return NULL;
}

struct server_gen *server_gen_ref(struct server_gen *g)
{
    g->refs++;
    return g;
}

void server_gen_unref(struct server_gen *g)
{
    if (!g || --g->refs > 0)
        return;
    if (g->retired) /* the last session that started on this config has closed */
        log_debug("event=config_released generation=%u", g->id);
    for (size_t i = 0; i < g->cfg->naccounts; i++) {
        if (g->tokens)
            tokens_unref(g->tokens[i]);
        if (g->tls_clients)
            SSL_CTX_free(g->tls_clients[i]);
    }
    free(g->tokens);
    free(g->tls_clients);
    SSL_CTX_free(g->tls_server);
    auth_worker_free(g->auth); /* its threads read the device table */
    device_table_free(g->devices);
    config_free(g->cfg);
    free(g);
}

struct token_cache *server_gen_token_cache(const struct server_gen *g, size_t i)
{
    return i < g->cfg->naccounts && g->tokens[i] ? g->tokens[i]->cache : NULL;
}

/* The index of acct in g's config: pointers compared for equality only (acct may belong to
 * another generation's config). */
static size_t account_index(const struct server_gen *g, const struct cfg_account *acct)
{
    size_t i;
    for (i = 0; i < g->cfg->naccounts; i++)
        if (&g->cfg->accounts[i] == acct)
            break;
    return i;
}

struct token_cache *server_gen_account_tokens(const struct server_gen *g,
                                              const struct cfg_account *acct)
{
    return server_gen_token_cache(g, account_index(g, acct));
}

SSL_CTX *server_gen_tls_client(const struct server_gen *g, const struct cfg_account *acct)
{
    size_t i = account_index(g, acct);
    return i < g->cfg->naccounts ? g->tls_clients[i] : NULL;
}
