/* What every client-credentials grant shares: the checks of the account's settings, and one token
 * request: POST the form, read the answer, tell a refusal from a temporary failure, and log
 * event=token_request / token_ok / token_failed. The credential in the form (a client secret or
 * a signed assertion) is redacted from anything the IdP echoes and never logged. */
#include "oauth/grant.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/secret.h"
#include "oauth/entra_explain.h"
#include "oauth/http.h"
#include "oauth/provider.h"
#include "oauth/token_response.h"

#define GRANT_POST_TIMEOUT_MS 30000L
#define GRANT_POST_MS_SCOPE "https://outlook.office365.com/.default"

struct provider_req {
    struct provider *p;
    struct http_req *hr;
    provider_done_cb cb;
    void *arg;
    char *redact; /* secret_free: the credential that was sent */
    int64_t started_ms;
    grant_explain_fn explain;
};

static int64_t grant_post_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int grant_post_temporary_status(long status)
{
    return status == 0 || status == 429 || status >= 500;
}

static void grant_post_req_free(struct provider_req *r)
{
    if (!r)
        return;
    secret_free(r->redact);
    free(r);
}

static void grant_post_done(void *arg, long status, const char *body, size_t len, const char *herr)
{
    struct provider_req *r = arg;
    struct provider *p = r->p;
    struct token_response tr;
    char err[768], perr[256];
    int temporary = 1, rc;
    int64_t duration = grant_post_now_ms() - r->started_ms;
    provider_done_cb cb = r->cb;
    void *cbarg = r->arg;

    err[0] = '\0';
    memset(&tr, 0, sizeof(tr));
    if (status == 0) {
        snprintf(err, sizeof(err), "connect failed: %s", herr ? herr : "no answer");
        goto fail;
    }
    rc = token_response_parse(body, len, status, &tr, perr, sizeof(perr));
    if (rc == 1) {
        struct token_grant tg = {.access_token = tr.access_token,
                                 .expires_in = tr.expires_in,
                                 .refresh_token = tr.refresh_token};
        /* The handle is gone once the answer is in: the callback may free the provider. */
        grant_post_req_free(r);
        log_info("event=token_ok account=%s status=%ld expires_in=%ld duration_ms=%lld%s",
                 p->account, status, tr.expires_in, (long long)duration,
                 tr.refresh_token ? " refresh_token=rotated" : "");
        cb(cbarg, &tg, NULL, 0);
        token_response_clear(&tr);
        return;
    }
    if (rc == 0) {
        char desc[512];
        int n = snprintf(err, sizeof(err), "error=%s", tr.error);
        if (tr.aadsts && n > 0 && (size_t)n < sizeof(err))
            n += snprintf(err + n, sizeof(err) - (size_t)n, " aadsts=%ld", tr.aadsts);
        if (r->explain && n > 0 && (size_t)n < sizeof(err)) {
            /* Before the description: what to do must survive any cut. */
            char hint[320], qhint[400];
            hint[0] = '\0';
            r->explain(p, tr.error, tr.error_description, hint, sizeof(hint));
            if (hint[0])
                n += snprintf(err + n, sizeof(err) - (size_t)n, " hint=%s",
                              log_safe(qhint, sizeof(qhint), hint, strlen(hint)));
        }
        if (tr.error_description && n > 0 && (size_t)n < sizeof(err))
            snprintf(
                err + n, sizeof(err) - (size_t)n, " description=%s",
                log_safe(desc, sizeof(desc), tr.error_description, strlen(tr.error_description)));
        /* RFC 6749 5.2 and Entra: these two mean "try again later", the rest are refusals. */
        temporary = grant_post_temporary_status(status) ||
                    strcmp(tr.error, "temporarily_unavailable") == 0 ||
                    strcmp(tr.error, "server_error") == 0;
        goto fail;
    }
    if (grant_post_temporary_status(status)) {
        snprintf(err, sizeof(err), "HTTP %ld", status);
    } else {
        snprintf(err, sizeof(err), "%s", perr);
        /* A 2xx we cannot read is likely a middlebox: retry; a bare 4xx is a wrong URL. */
        temporary = status >= 200 && status <= 299;
    }
fail:
    token_response_clear(&tr);
    secret_redact(err, r->redact);
    grant_post_req_free(r);
    {
        char safe[900];
        /* IdP errors are already key=value; anything else is quoted. */
        if (strncmp(err, "error=", 6) == 0)
            log_warn("event=token_failed account=%s temporary=%d status=%ld duration_ms=%lld %s",
                     p->account, temporary, status, (long long)duration, err);
        else
            log_warn("event=token_failed account=%s temporary=%d status=%ld duration_ms=%lld "
                     "error=%s",
                     p->account, temporary, status, (long long)duration,
                     log_safe(safe, sizeof(safe), err, strlen(err)));
    }
    cb(cbarg, NULL, err, temporary);
}

struct provider_req *grant_post(struct provider *p, const struct grant_endpoint *ep,
                                const char *form, const char *credential, const char *kind,
                                provider_done_cb cb, void *arg)
{
    struct provider_req *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->redact = secret_dup(credential);
    if (!r->redact) {
        free(r);
        return NULL;
    }
    r->p = p;
    r->cb = cb;
    r->arg = arg;
    r->started_ms = grant_post_now_ms();
    r->explain = ep->explain;
    log_info("event=token_request account=%s grant=%s credential=%s url=%s", p->account,
             p->ops && p->ops->grant ? p->ops->grant : "?", kind, ep->token_url);
    /* http keeps its own copy of the form (and wipes it). */
    r->hr = http_post_form(ep->http, ep->token_url, form, ep->ca_file, GRANT_POST_TIMEOUT_MS,
                           grant_post_done, r);
    if (!r->hr) {
        log_warn("event=token_failed account=%s temporary=1 error=\"request could not start\"",
                 p->account);
        grant_post_req_free(r);
        return NULL;
    }
    return r;
}

void grant_post_cancel(struct provider_req *r)
{
    if (!r)
        return;
    http_cancel(r->hr);
    grant_post_req_free(r);
}

static char *grant_post_dup(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

static int grant_endpoint_url_ok(const char *url)
{
    return strncmp(url, "https://", 8) == 0 ||
           (strncmp(url, "http://", 7) == 0 && http_url_is_loopback(url));
}

int grant_endpoint_init(struct grant_endpoint *ep, const struct oauth_client_cfg *cfg,
                        struct http *http, char *err, size_t errlen)
{
    const char *who = cfg->account ? cfg->account : "?";
    const char *scope = cfg->scope;

    memset(ep, 0, sizeof(*ep));
    if (!cfg->provider ||
        (strcmp(cfg->provider, "microsoft") != 0 && strcmp(cfg->provider, "oauth2") != 0)) {
        snprintf(err, errlen, "account %s: provider must be microsoft or oauth2", who);
        return -1;
    }
    if (!http) {
        snprintf(err, errlen, "account %s: no http client", who);
        return -1;
    }
    if (!cfg->token_url || !*cfg->token_url) {
        snprintf(err, errlen, "account %s: token_url is required", who);
        return -1;
    }
    if (!grant_endpoint_url_ok(cfg->token_url)) {
        snprintf(err, errlen,
                 "account %s: token_url must be https:// (http:// only to a loopback host)", who);
        return -1;
    }
    if (!cfg->client_id || !*cfg->client_id) {
        snprintf(err, errlen, "account %s: client_id is required", who);
        return -1;
    }
    if ((!scope || !*scope) && strcmp(cfg->provider, "microsoft") == 0)
        scope = GRANT_POST_MS_SCOPE;
    ep->http = http;
    ep->token_url = strdup(cfg->token_url);
    ep->client_id = strdup(cfg->client_id);
    ep->scope = grant_post_dup(scope);
    ep->ca_file = grant_post_dup(cfg->ca_file);
    /* AADSTS codes come from Entra (provider microsoft, or an oauth2 issuer on Entra); the
     * hook stays silent for any other IdP's refusals. */
    ep->explain = entra_explain_hint;
    if (!ep->token_url || !ep->client_id || (scope && *scope && !ep->scope) ||
        (cfg->ca_file && *cfg->ca_file && !ep->ca_file)) {
        grant_endpoint_clear(ep);
        snprintf(err, errlen, "account %s: out of memory", who);
        return -1;
    }
    return 0;
}

int grant_endpoint_init_url(struct grant_endpoint *ep, const struct oauth_client_cfg *cfg,
                            const char *token_url, struct http *http, char *err, size_t errlen)
{
    const char *who = cfg->account ? cfg->account : "?";

    memset(ep, 0, sizeof(*ep));
    if (!http) {
        snprintf(err, errlen, "account %s: no http client", who);
        return -1;
    }
    if (!token_url || !grant_endpoint_url_ok(token_url)) {
        snprintf(err, errlen,
                 "account %s: the token URL must be https:// (http:// only to a loopback host)",
                 who);
        return -1;
    }
    ep->http = http;
    ep->token_url = strdup(token_url);
    ep->scope = grant_post_dup(cfg->scope);
    ep->ca_file = grant_post_dup(cfg->ca_file);
    if (!ep->token_url || (cfg->scope && *cfg->scope && !ep->scope) ||
        (cfg->ca_file && *cfg->ca_file && !ep->ca_file)) {
        grant_endpoint_clear(ep);
        snprintf(err, errlen, "account %s: out of memory", who);
        return -1;
    }
    return 0;
}

void grant_endpoint_clear(struct grant_endpoint *ep)
{
    if (!ep)
        return;
    free(ep->token_url);
    free(ep->client_id);
    free(ep->scope);
    free(ep->ca_file);
    memset(ep, 0, sizeof(*ep));
}
