/* Client credentials with a client secret (RFC 6749 4.4, client_secret_post): Entra ID app-only
 * tokens ("microsoft") and any OAuth 2 token endpoint ("oauth2").
 * The secret goes into the form and nowhere else: not in logs, not in err. */
#include "oauth/grant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/secret.h"
#include "oauth/http.h"
#include "oauth/provider.h"

struct grant_cs {
    struct grant_endpoint ep;
    char *client_secret; /* secret_free */
};

static struct provider_req *grant_cs_request(struct provider *p, provider_done_cb cb, void *arg)
{
    struct grant_cs *g = p->ctx;
    struct provider_req *r = NULL;
    char *form = NULL;

    if (!cb)
        return NULL;
    if (http_form_add(&form, "grant_type", "client_credentials") != 0 ||
        http_form_add(&form, "client_id", g->ep.client_id) != 0 ||
        http_form_add(&form, "client_secret", g->client_secret) != 0 ||
        (g->ep.scope && http_form_add(&form, "scope", g->ep.scope) != 0))
        goto out;
    r = grant_post(p, &g->ep, form, g->client_secret, "secret", cb, arg);
out:
    secret_free(form);
    return r;
}

static void grant_cs_destroy(struct provider *p)
{
    struct grant_cs *g = p ? p->ctx : NULL;
    if (!g)
        return;
    grant_endpoint_clear(&g->ep);
    secret_free(g->client_secret);
    free(g);
    p->ctx = NULL;
}

static const struct provider_ops grant_cs_ops = {
    .grant = "client_credentials",
    .request = grant_cs_request,
    .cancel = grant_post_cancel,
    .destroy = grant_cs_destroy,
};

struct provider *grant_client_secret_new(const struct oauth_client_cfg *cfg, struct http *http,
                                         char *err, size_t errlen)
{
    struct provider *p = NULL;
    struct grant_cs *g = NULL;
    const char *who = cfg->account ? cfg->account : "?";

    p = calloc(1, sizeof(*p));
    g = calloc(1, sizeof(*g));
    if (!p || !g) {
        snprintf(err, errlen, "account %s: out of memory", who);
        goto fail;
    }
    p->ops = &grant_cs_ops;
    p->ctx = g;
    snprintf(p->account, sizeof(p->account), "%s", who);
    if (grant_endpoint_init(&g->ep, cfg, http, err, errlen) != 0)
        goto fail;
    if (!cfg->client_secret || !*cfg->client_secret) {
        snprintf(err, errlen, "account %s: client secret is empty", who);
        goto fail;
    }
    g->client_secret = secret_dup(cfg->client_secret);
    if (!g->client_secret) {
        snprintf(err, errlen, "account %s: out of memory", who);
        goto fail;
    }
    return p;
fail:
    if (p && g)
        provider_free(p);
    else {
        free(g);
        free(p);
    }
    return NULL;
}
