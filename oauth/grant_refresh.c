/* The refresh token grant (RFC 6749 6): delegated access to a mailbox a person consented to once
 * (`authorize`, the device code flow, or an imported refresh token). The refresh token comes from
 * the token store through the cache (set_refresh_token); when the IdP rotates it, the new one is
 * used for the next request and travels with the access token to the cache, which persists it
 * before anyone uses the access token. invalid_grant means the person's consent is gone (expired,
 * revoked, password reset): reported as PROVIDER_REAUTHORIZE with the command that fixes it. */
#include "oauth/grant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/secret.h"
#include "oauth/http.h"
#include "oauth/provider.h"

struct grant_rt {
    struct grant_endpoint ep;
    char *client_secret; /* NULL: a public client; secret_free */
    char *refresh_token; /* NULL: none yet (authorize first); secret_free */
    char *hint;          /* the command that re-authorizes, for the log line */
    /* The cache's callback of the one request in flight (the cache never has two). */
    provider_done_cb cb;
    void *arg;
};

/* Entra and RFC 6749: errors that no retry fixes, only a person signing in again. */
static int grant_rt_needs_person(const char *err)
{
    static const char *const codes[] = {"error=invalid_grant", "error=interaction_required",
                                        "error=consent_required", "error=login_required"};
    if (!err)
        return 0;
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        size_t n = strlen(codes[i]);
        if (strncmp(err, codes[i], n) == 0 && (err[n] == ' ' || err[n] == '\0'))
            return 1;
    }
    return 0;
}

static void grant_rt_alert(const struct provider *p, const struct grant_rt *g, const char *why)
{
    char safe[600];
    log_error("event=reauthorize_needed account=%s reason=%s effect=\"the current access "
              "token is used until it expires, then mail for this account is refused with 4xx\" "
              "fix=\"%s\"",
              p->account, log_safe(safe, sizeof(safe), why, strlen(why)),
              g->hint ? g->hint : "run authorize for this account");
}

static void grant_rt_done(void *arg, const struct token_grant *tg, const char *err, int failure)
{
    struct provider *p = arg;
    struct grant_rt *g = p->ctx;
    provider_done_cb cb = g->cb;
    void *cbarg = g->arg;

    g->cb = NULL;
    g->arg = NULL;
    if (tg && tg->refresh_token && *tg->refresh_token) {
        /* Rotated: the new one is what works from now on (the old may be revoked any time). */
        char *rt = secret_dup(tg->refresh_token);
        if (rt) {
            secret_free(g->refresh_token);
            g->refresh_token = rt;
        }
    }
    if (!tg && failure == PROVIDER_REFUSED && grant_rt_needs_person(err)) {
        failure = PROVIDER_REAUTHORIZE;
        grant_rt_alert(p, g, err);
    }
    cb(cbarg, tg, err, failure);
}

static struct provider_req *grant_rt_request(struct provider *p, provider_done_cb cb, void *arg)
{
    struct grant_rt *g = p->ctx;
    struct provider_req *r = NULL;
    char *form = NULL;

    if (!cb)
        return NULL;
    if (!g->refresh_token) {
        snprintf(p->start_err, sizeof(p->start_err),
                 "no refresh token is stored for this account; run: %.180s",
                 g->hint ? g->hint : "authorize");
        p->start_failure = PROVIDER_REAUTHORIZE;
        grant_rt_alert(p, g, "no refresh token is stored");
        return NULL;
    }
    if (http_form_add(&form, "grant_type", "refresh_token") != 0 ||
        http_form_add(&form, "client_id", g->ep.client_id) != 0 ||
        http_form_add(&form, "refresh_token", g->refresh_token) != 0 ||
        (g->client_secret && http_form_add(&form, "client_secret", g->client_secret) != 0) ||
        (g->ep.scope && http_form_add(&form, "scope", g->ep.scope) != 0))
        goto out;
    g->cb = cb;
    g->arg = arg;
    r = grant_post(p, &g->ep, form, g->refresh_token, "refresh_token", grant_rt_done, p);
    if (!r)
        g->cb = NULL;
out:
    secret_free(form);
    return r;
}

static int grant_rt_set(struct provider *p, const char *rt)
{
    struct grant_rt *g = p->ctx;
    char *copy = secret_dup(rt);
    if (!copy)
        return -1;
    secret_free(g->refresh_token);
    g->refresh_token = copy;
    return 0;
}

static void grant_rt_destroy(struct provider *p)
{
    struct grant_rt *g = p ? p->ctx : NULL;
    if (!g)
        return;
    grant_endpoint_clear(&g->ep);
    secret_free(g->client_secret);
    secret_free(g->refresh_token);
    free(g->hint);
    free(g);
    p->ctx = NULL;
}

static const struct provider_ops grant_rt_ops = {
    .grant = "refresh_token",
    .request = grant_rt_request,
    .cancel = grant_post_cancel,
    .destroy = grant_rt_destroy,
    .set_refresh_token = grant_rt_set,
};

struct provider *grant_refresh_new(const struct oauth_client_cfg *cfg, struct http *http, char *err,
                                   size_t errlen)
{
    struct provider *p = NULL;
    struct grant_rt *g = NULL;
    const char *who = cfg->account ? cfg->account : "?";

    p = calloc(1, sizeof(*p));
    g = calloc(1, sizeof(*g));
    if (!p || !g) {
        free(g);
        free(p);
        snprintf(err, errlen, "account %s: out of memory", who);
        return NULL;
    }
    p->ops = &grant_rt_ops;
    p->ctx = g;
    snprintf(p->account, sizeof(p->account), "%s", who);
    if (grant_endpoint_init(&g->ep, cfg, http, err, errlen) != 0)
        goto fail;
    if (cfg->client_cert && *cfg->client_cert) {
        snprintf(err, errlen, "account %s: grant refresh_token does not use a certificate", who);
        goto fail;
    }
    if ((cfg->client_secret && *cfg->client_secret &&
         !(g->client_secret = secret_dup(cfg->client_secret))) ||
        (cfg->reauthorize_hint && !(g->hint = strdup(cfg->reauthorize_hint)))) {
        snprintf(err, errlen, "account %s: out of memory", who);
        goto fail;
    }
    return p;
fail:
    provider_free(p);
    return NULL;
}
