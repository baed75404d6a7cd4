/* The table of grant types: provider_new() picks the constructor for cfg->grant. */
#include "oauth/provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oauth/grant.h"

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
        if (strcmp(grant, provider_grants[i].grant) == 0 &&
            certificate == provider_grants[i].certificate)
            return provider_grants[i].create(cfg, http, err, errlen);
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
    free(p);
}
