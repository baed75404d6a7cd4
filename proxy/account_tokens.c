/* Builds an account's provider and token cache from its config, and attaches the token store. */
#include "proxy/account_tokens.h"

#include <stdio.h>

#include "oauth/provider.h"
#include "oauth/token_cache.h"
#include "oauth/token_cache_store.h"
#include "proxy/config.h"

void account_tokens_authorize_hint(const struct config *cfg, const struct cfg_account *a, char *buf,
                                   size_t len)
{
    snprintf(buf, len, "smtp-oauth-proxy --config %s authorize %s", cfg->path, a->name);
}

struct token_cache *account_tokens_new(const struct config *cfg, const struct cfg_account *a,
                                       struct http *http, struct token_store *store, char *err,
                                       size_t errlen)
{
    char hint[1024], perr[512];
    struct token_cache *c;
    struct provider *p;

    account_tokens_authorize_hint(cfg, a, hint, sizeof(hint));
    struct oauth_client_cfg oc = {
        .account = a->name,
        .provider = a->provider,
        .grant = a->grant,
        .token_url = a->token_url,
        .client_id = a->client_id,
        .client_secret = a->client_secret,
        .client_cert = a->client_certificate,
        .client_key = a->client_key,
        .scope = a->scope,
        .ca_file = NULL,
        .mailbox = a->mailbox,
        .service_account_key = a->service_account_key,
        .reauthorize_hint = hint,
    };
    p = provider_new(&oc, http, perr, sizeof(perr));
    if (!p) {
        snprintf(err, errlen, "%s line %d: account %s: %s", cfg->path, a->line, a->name, perr);
        return NULL;
    }
    c = token_cache_new(p, NULL);
    if (!c) {
        provider_free(p);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (store && token_cache_store_attach(c, store, a->name) < 0) {
        token_cache_free(c);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return c;
}
