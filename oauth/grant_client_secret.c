/* Client credentials with a client secret (RFC 6749 4.4, client_secret_post): Entra ID app-only
 * tokens ("microsoft") and any OAuth 2 token endpoint ("oauth2").
 * The secret goes into the form and nowhere else: not in logs, not in err. */
#include "oauth/grant.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/secret.h"
#include "oauth/http.h"
#include "oauth/provider.h"
#include "oauth/token_response.h"

#define GRANT_CS_TIMEOUT_MS 30000L
#define GRANT_CS_MS_SCOPE "https://outlook.office365.com/.default"

struct grant_cs {
    struct http *http;
    char *token_url;
    char *client_id;
    char *client_secret; /* secret_free */
    char *scope;         /* NULL: not sent */
    char *ca_file;
};

struct provider_req {
    struct provider *p;
    struct http_req *hr;
    provider_done_cb cb;
    void *arg;
    int64_t started_ms;
};

static int64_t grant_cs_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An IdP may echo what it was sent: make sure the secret never leaves in err. */
static void grant_cs_redact(char *s, const char *secret)
{
    size_t sl = secret ? strlen(secret) : 0;
    char *p;
    if (sl == 0)
        return;
    while ((p = strstr(s, secret)) != NULL) {
        static const char mark[] = "[redacted]";
        size_t tail = strlen(p + sl);
        if (sl >= sizeof(mark) - 1) {
            memcpy(p, mark, sizeof(mark) - 1);
            memmove(p + sizeof(mark) - 1, p + sl, tail + 1);
        } else {
            /* A secret shorter than the mark: '*' in place keeps the length. */
            memset(p, '*', sl);
        }
    }
}

static int grant_cs_temporary_status(long status)
{
    return status == 0 || status == 429 || status >= 500;
}

static void grant_cs_done(void *arg, long status, const char *body, size_t len, const char *herr)
{
    struct provider_req *r = arg;
    struct provider *p = r->p;
    struct grant_cs *g = p->ctx;
    struct token_response tr;
    char err[768], perr[256];
    int temporary = 1, rc;
    int64_t duration = grant_cs_now_ms() - r->started_ms;
    provider_done_cb cb = r->cb;
    void *cbarg = r->arg;

    /* The handle is gone once the answer is in: the callback may free the provider. */
    free(r);
    err[0] = '\0';
    memset(&tr, 0, sizeof(tr));
    if (status == 0) {
        snprintf(err, sizeof(err), "connect failed: %s", herr ? herr : "no answer");
        goto fail;
    }
    rc = token_response_parse(body, len, status, &tr, perr, sizeof(perr));
    if (rc == 1) {
        struct token_grant tg = {.access_token = tr.access_token, .expires_in = tr.expires_in};
        log_info("event=token_ok account=%s status=%ld expires_in=%ld duration_ms=%lld", p->account,
                 status, tr.expires_in, (long long)duration);
        cb(cbarg, &tg, NULL, 0);
        token_response_clear(&tr);
        return;
    }
    if (rc == 0) {
        char desc[512];
        int n = snprintf(err, sizeof(err), "error=%s", tr.error);
        if (tr.aadsts && n > 0 && (size_t)n < sizeof(err))
            n += snprintf(err + n, sizeof(err) - (size_t)n, " aadsts=%ld", tr.aadsts);
        if (tr.error_description && n > 0 && (size_t)n < sizeof(err))
            snprintf(
                err + n, sizeof(err) - (size_t)n, " description=%s",
                log_safe(desc, sizeof(desc), tr.error_description, strlen(tr.error_description)));
        /* RFC 6749 5.2 and Entra: these two mean "try again later", the rest are refusals. */
        temporary = grant_cs_temporary_status(status) ||
                    strcmp(tr.error, "temporarily_unavailable") == 0 ||
                    strcmp(tr.error, "server_error") == 0;
        goto fail;
    }
    if (grant_cs_temporary_status(status)) {
        snprintf(err, sizeof(err), "HTTP %ld", status);
    } else {
        snprintf(err, sizeof(err), "%s", perr);
        /* A 2xx we cannot read is likely a middlebox: retry; a bare 4xx is a wrong URL. */
        temporary = status >= 200 && status <= 299;
    }
fail:
    token_response_clear(&tr);
    grant_cs_redact(err, g->client_secret);
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

static struct provider_req *grant_cs_request(struct provider *p, provider_done_cb cb, void *arg)
{
    struct grant_cs *g = p->ctx;
    struct provider_req *r = NULL;
    char *form = NULL;

    if (!cb)
        return NULL;
    if (http_form_add(&form, "grant_type", "client_credentials") != 0 ||
        http_form_add(&form, "client_id", g->client_id) != 0 ||
        http_form_add(&form, "client_secret", g->client_secret) != 0 ||
        (g->scope && http_form_add(&form, "scope", g->scope) != 0))
        goto fail;
    r = calloc(1, sizeof(*r));
    if (!r)
        goto fail;
    r->p = p;
    r->cb = cb;
    r->arg = arg;
    r->started_ms = grant_cs_now_ms();
    log_info("event=token_request account=%s grant=client_credentials url=%s", p->account,
             g->token_url);
    /* http keeps its own copy of the form (and wipes it). */
    r->hr = http_post_form(g->http, g->token_url, form, g->ca_file, GRANT_CS_TIMEOUT_MS,
                           grant_cs_done, r);
    if (!r->hr) {
        log_warn("event=token_failed account=%s temporary=1 error=\"request could not start\"",
                 p->account);
        goto fail;
    }
    secret_free(form);
    return r;
fail:
    secret_free(form);
    free(r);
    return NULL;
}

static void grant_cs_cancel(struct provider_req *r)
{
    if (!r)
        return;
    http_cancel(r->hr);
    free(r);
}

static void grant_cs_destroy(struct provider *p)
{
    struct grant_cs *g = p ? p->ctx : NULL;
    if (!g)
        return;
    free(g->token_url);
    free(g->client_id);
    secret_free(g->client_secret);
    free(g->scope);
    free(g->ca_file);
    free(g);
    p->ctx = NULL;
}

static const struct provider_ops grant_cs_ops = {
    .grant = "client_credentials",
    .request = grant_cs_request,
    .cancel = grant_cs_cancel,
    .destroy = grant_cs_destroy,
};

static char *grant_cs_dup(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

struct provider *grant_client_secret_new(const struct oauth_client_cfg *cfg, struct http *http,
                                         char *err, size_t errlen)
{
    struct provider *p = NULL;
    struct grant_cs *g = NULL;
    const char *who = cfg->account ? cfg->account : "?";
    const char *scope = cfg->scope;
    int microsoft;

    if (!cfg->provider ||
        (strcmp(cfg->provider, "microsoft") != 0 && strcmp(cfg->provider, "oauth2") != 0)) {
        snprintf(err, errlen, "account %s: provider must be microsoft or oauth2", who);
        goto fail;
    }
    microsoft = strcmp(cfg->provider, "microsoft") == 0;
    if (!http) {
        snprintf(err, errlen, "account %s: no http client", who);
        goto fail;
    }
    if (!cfg->token_url || !*cfg->token_url) {
        snprintf(err, errlen, "account %s: token_url is required", who);
        goto fail;
    }
    if (strncmp(cfg->token_url, "https://", 8) != 0 &&
        !(strncmp(cfg->token_url, "http://", 7) == 0 && http_url_is_loopback(cfg->token_url))) {
        snprintf(err, errlen,
                 "account %s: token_url must be https:// (http:// only to a loopback host)", who);
        goto fail;
    }
    if (!cfg->client_id || !*cfg->client_id) {
        snprintf(err, errlen, "account %s: client_id is required", who);
        goto fail;
    }
    if (!cfg->client_secret || !*cfg->client_secret) {
        snprintf(err, errlen, "account %s: client secret is empty", who);
        goto fail;
    }
    if ((!scope || !*scope) && microsoft)
        scope = GRANT_CS_MS_SCOPE;

    p = calloc(1, sizeof(*p));
    g = calloc(1, sizeof(*g));
    if (!p || !g)
        goto oom;
    g->http = http;
    g->token_url = strdup(cfg->token_url);
    g->client_id = strdup(cfg->client_id);
    g->client_secret = secret_dup(cfg->client_secret);
    g->scope = grant_cs_dup(scope);
    g->ca_file = grant_cs_dup(cfg->ca_file);
    if (!g->token_url || !g->client_id || !g->client_secret || (scope && *scope && !g->scope) ||
        (cfg->ca_file && *cfg->ca_file && !g->ca_file))
        goto oom;
    p->ops = &grant_cs_ops;
    p->ctx = g;
    snprintf(p->account, sizeof(p->account), "%s", who);
    return p;
oom:
    snprintf(err, errlen, "account %s: out of memory", who);
    if (p) {
        p->ctx = g;
        grant_cs_destroy(p);
        g = NULL;
    }
fail:
    free(g);
    free(p);
    return NULL;
}
