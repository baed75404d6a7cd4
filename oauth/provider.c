/* The table of grant types: provider_new() picks the constructor for cfg->grant. */
#include "oauth/provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oauth/grant.h"
#include "oauth/http.h"

/* grant "none": the account's upstream takes a password or nothing, so it never has a token. */
static struct provider_req *grant_none_request(struct provider *p, provider_done_cb cb, void *arg)
{
    (void)cb;
    (void)arg;
    snprintf(p->start_err, sizeof(p->start_err),
             "account %s gets no OAuth tokens: its upstream_auth sends a password or nothing "
             "(set provider to get tokens for it)",
             p->account);
    p->start_failure = PROVIDER_REFUSED;
    return NULL;
}

static void grant_none_cancel(struct provider_req *r)
{
    (void)r;
}

static void grant_none_destroy(struct provider *p)
{
    (void)p;
}

static const struct provider_ops grant_none_ops = {
    .grant = "none",
    .request = grant_none_request,
    .cancel = grant_none_cancel,
    .destroy = grant_none_destroy,
};

static struct provider *grant_none_new(const struct oauth_client_cfg *cfg, struct http *http,
                                       char *err, size_t errlen)
{
    (void)http;
    struct provider *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->ops = &grant_none_ops;
    snprintf(p->account, sizeof(p->account), "%s", cfg->account ? cfg->account : "?");
    return p;
}

static const struct {
    const char *grant;
    int certificate; /* 1: the account authenticates with client_cert + client_key */
    struct provider *(*create)(const struct oauth_client_cfg *cfg, struct http *http, char *err,
                               size_t errlen);
} provider_grants[] = {
    {"client_credentials", 0, grant_client_secret_new},
    {"client_credentials", 1, grant_client_assertion_new},
    {"service_account", 0, grant_google_new}, /* provider = google; it checks */
    {"refresh_token", 0, grant_refresh_new},
    {"none", 0, grant_none_new},
};

struct provider *provider_new(const struct oauth_client_cfg *cfg, struct http *http, char *err,
                              size_t errlen)
{
    const char *grant;
    int certificate;
    if (!cfg) {
        snprintf(err, errlen, "no account configuration");
        return NULL;
    }
    /* client_credentials is the default grant (config.h says so too). */
    grant = cfg->grant && *cfg->grant ? cfg->grant : "client_credentials";
    certificate = cfg->client_cert && *cfg->client_cert;
    for (size_t i = 0; i < sizeof(provider_grants) / sizeof(provider_grants[0]); i++) {
        if (strcmp(grant, provider_grants[i].grant) != 0 ||
            certificate != provider_grants[i].certificate)
            continue;
        struct http *own = NULL;
        if (cfg->http_proxy && *cfg->http_proxy) {
            /* this account's requests go through its proxy: an http of its own on the loop */
            own = http_new(http_base(http));
            if (!own || http_set_proxy(own, cfg->http_proxy) != 0) {
                http_free(own);
                snprintf(err, errlen, "cannot set up HTTP through the proxy (out of memory)");
                return NULL;
            }
        }
        struct provider *p = provider_grants[i].create(cfg, own ? own : http, err, errlen);
        if (!p)
            http_free(own);
        else
            p->own_http = own;
        return p;
    }
    snprintf(err, errlen,
             "grant \"%.64s\" is not supported here (valid: client_credentials, refresh_token, "
             "service_account with provider = google)",
             grant);
    return NULL;
}

int provider_uses_refresh_token(const struct provider *p)
{
    return p && p->ops && p->ops->set_refresh_token;
}

int provider_set_refresh_token(struct provider *p, const char *rt)
{
    if (!provider_uses_refresh_token(p) || !rt || !*rt)
        return -1;
    return p->ops->set_refresh_token(p, rt);
}

void provider_free(struct provider *p)
{
    if (!p)
        return;
    if (p->ops && p->ops->destroy)
        p->ops->destroy(p);
    http_free(p->own_http); /* after the grant let go of its requests */
    free(p);
}
