/* Builds an account's provider and token cache from its config, and attaches the token store. */
#include "proxy/runtime/account_tokens.h"

#include <stdio.h>

#include "common/log.h"
#include "oauth/discovery.h"
#include "oauth/provider.h"
#include "oauth/token_cache.h"
#include "oauth/token_cache_store.h"
#include "proxy/config/config.h"

void account_tokens_authorize_hint(const struct config *cfg, const struct cfg_account *a, char *buf,
                                   size_t len)
{
    snprintf(buf, len, "smtp-oauth-proxy --config %s authorize %s", cfg->path, a->name);
}

/* One account: its discovered endpoints go into the config, which frees them, so that every
 * consumer (grant, `authorize`, logs) sees a plain token_url. */
static int account_tokens_discover_one(const struct config *cfg, struct cfg_account *a, char *err,
                                       size_t errlen)
{
    char derr[768];
    struct discovery d = {0};
    struct discovery_opts o = {
        .ca_file = NULL, .check = config_value_check_url, .proxy = a->http_proxy};

    if (!a->issuer || a->token_url)
        return 0;
    if (discovery_fetch(a->issuer, &o, &d, derr, sizeof(derr)) != 0) {
        snprintf(err, errlen, "%s line %d: account %s: issuer %s: %s", cfg->path, a->line, a->name,
                 a->issuer, derr);
        return -1;
    }
    a->token_url = d.token_endpoint;
    d.token_endpoint = NULL;
    if (!a->device_authorization_url) {
        a->device_authorization_url = d.device_authorization_endpoint;
        d.device_authorization_endpoint = NULL;
    }
    discovery_clear(&d);
    log_info("event=discovered account=%s issuer=%s token_url=%s device_authorization_url=%s",
             a->name, a->issuer, a->token_url,
             a->device_authorization_url ? a->device_authorization_url : "-");
    return 0;
}

int account_tokens_discover(struct config *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < cfg->naccounts; i++)
        if (account_tokens_discover_one(cfg, &cfg->accounts[i], err, errlen) != 0)
            return -1;
    return 0;
}

struct token_cache *account_tokens_new(const struct config *cfg, const struct cfg_account *a,
                                       struct http *http, struct token_store *store, char *err,
                                       size_t errlen)
{
    char hint[1024], perr[512];
    struct token_cache *c;
    struct provider *p;

    if (a->issuer && !a->token_url) {
        snprintf(err, errlen,
                 "%s line %d: account %s: issuer %s was not discovered "
                 "(call account_tokens_discover first)",
                 cfg->path, a->line, a->name, a->issuer);
        return NULL;
    }
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
        .http_proxy = a->http_proxy,
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
