/* `authorize ACCOUNT [--refresh-token FILE]`: give a refresh_token account its refresh token,
 * from a person signing in (device code flow, RFC 8628) or from a file an admin already has
 * (migrating from sasl-xoauth2 or email-oauth2-proxy needs no new consent). The running daemon
 * takes it and uses it at once; without one it goes into the token store. Either way one access
 * token is fetched with it, so the person learns now whether the IdP takes it. */
#include <stdio.h>
#include <string.h>

#include <event2/event.h>

#include "common/secret.h"
#include "oauth/device_code.h"
#include "oauth/http.h"
#include "oauth/token_cache.h"
#include "proxy/runtime/account_tokens.h"
#include "proxy/admin/cli_int.h"
#include "proxy/admin/cli_rtfile.h"
#include "proxy/config/config.h"
#include "proxy/admin/control_client.h"

/* Past the device code's own expiry (the flow ends itself then): only a safety net. */
#define DEVICE_FLOW_MAX_SECONDS (60 * 60)

struct device_state {
    struct event_base *base;
    const char *account;
    int done;
    char *refresh_token;
    char err[512];
};

static void on_prompt(void *arg, const struct device_code_prompt *p)
{
    struct device_state *st = arg;
    /* the server's own sentence when it sent one; it names the URL and the code */
    if (p->message && *p->message)
        fprintf(stderr, "%s\n", p->message);
    else
        fprintf(stderr, "To authorize account %s, open %s and enter the code %s\n", st->account,
                p->verification_uri, p->user_code);
    fprintf(stderr, "Waiting for the sign-in (the code expires in %lld minutes)...\n",
            (long long)((p->expires_in + 59) / 60));
    fflush(stderr);
}

static void on_done(void *arg, const struct token_grant *g, const char *err)
{
    struct device_state *st = arg;
    st->done = 1;
    if (g && g->refresh_token) {
        st->refresh_token = secret_dup(g->refresh_token);
        if (!st->refresh_token)
            snprintf(st->err, sizeof(st->err), "out of memory");
    } else {
        snprintf(st->err, sizeof(st->err), "%s",
                 err ? err : "the identity provider sent no refresh token");
    }
    event_base_loopbreak(st->base);
}

static void on_flow_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

/* Run the device code flow in the terminal. 0 and *rt (secret_free); -1 with err. */
static int device_flow(const struct cfg_account *a, char **rt, char *err, size_t errlen)
{
    struct device_state st = {.account = a->name};
    struct device_code_cfg dc = {
        .account = a->name,
        .device_authorization_url = a->device_authorization_url,
        .token_url = a->token_url,
        .client_id = a->client_id,
        .client_secret = a->client_secret,
        .scope = a->scope,
        .ca_file = NULL,
        .ms_per_second = 1000,
    };
    struct http *http = NULL;
    struct event *t = NULL;
    struct device_code *flow = NULL;
    int ret = -1;
    st.base = event_base_new();
    http = st.base ? http_new(st.base) : NULL;
    /* the device code and token requests go where every other request of the account goes */
    if (http && a->http_proxy && http_set_proxy(http, a->http_proxy) != 0) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    struct timeval tv = {.tv_sec = DEVICE_FLOW_MAX_SECONDS};
    t = http ? evtimer_new(st.base, on_flow_timeout, st.base) : NULL;
    if (!t || evtimer_add(t, &tv) != 0) {
        snprintf(err, errlen, "cannot create the event loop");
        goto out;
    }
    flow = device_code_start(http, &dc, on_prompt, on_done, &st, err, errlen);
    if (!flow)
        goto out;
    event_base_dispatch(st.base);
    if (!st.done) {
        device_code_cancel(flow);
        snprintf(err, errlen, "gave up waiting for the sign-in after %d minutes",
                 DEVICE_FLOW_MAX_SECONDS / 60);
        goto out;
    }
    /* the flow freed itself once done returned */
    if (!st.refresh_token) {
        snprintf(err, errlen, "%s", st.err);
        goto out;
    }
    *rt = st.refresh_token;
    st.refresh_token = NULL;
    ret = 0;
out:
    if (t)
        event_free(t);
    http_free(http);
    if (st.base)
        event_base_free(st.base);
    return ret;
}

/* Hand rt to the running daemon, or store it ourselves; then report the first access token's
 * expiry. 0 ok, 1 failed. */
static int deliver(struct config *cfg, const struct cfg_account *a, const char *rt)
{
    char err[1024], req[512], when[32];
    char *buf = NULL, *token = NULL;
    const char *body = NULL;
    long long expires_at = 0;
    snprintf(req, sizeof(req), "refresh-token %s", a->name);
    switch (control_client_call(cfg->control_socket, req, rt, CLI_DAEMON_TIMEOUT_MS, &buf, &body,
                                err, sizeof(err))) {
    case CONTROL_CLIENT_OK:
        if (sscanf(body, "expires_at=%lld", &expires_at) != 1)
            expires_at = 0;
        secret_free(buf);
        printf("account %s authorized: refresh token handed to the running daemon; access token "
               "valid until %s\n",
               a->name, cli_time(expires_at, when, sizeof(when)));
        return 0;
    case CONTROL_CLIENT_FAILED:
        fprintf(stderr, "smtp-oauth-proxy: account %s: %s\n", a->name, err);
        return 1;
    case CONTROL_CLIENT_NO_DAEMON:
        break;
    }

    struct cli_offline o;
    if (cli_offline_open(&o, cfg, a, 1, err, sizeof(err)) != 0) {
        fprintf(stderr, "smtp-oauth-proxy: %s\n", err);
        return 1;
    }
    int ret = 1;
    int64_t exp = 0;
    if (token_cache_import_refresh_token(o.cache, rt) != 0) {
        fprintf(stderr, "smtp-oauth-proxy: account %s: the refresh token could not be stored\n",
                a->name);
    } else if (cli_offline_token(&o, &token, &exp, err, sizeof(err)) != 0) {
        fprintf(stderr,
                "smtp-oauth-proxy: account %s: refresh token stored, but the identity provider "
                "did not take it: %s\n",
                a->name, err);
    } else {
        printf("account %s authorized: refresh token stored; access token valid until %s\n",
               a->name, cli_time(exp, when, sizeof(when)));
        ret = 0;
    }
    secret_free(token);
    cli_offline_close(&o);
    return ret;
}

int cli_authorize(struct config *cfg, int argc, char **argv)
{
    const char *name = NULL, *file = NULL;
    char err[1024];
    char *rt = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--refresh-token") == 0 && i + 1 < argc && !file) {
            file = argv[++i];
        } else if (strncmp(argv[i], "--refresh-token=", 16) == 0 && !file) {
            file = argv[i] + 16;
        } else if (argv[i][0] != '-' && !name) {
            name = argv[i];
        } else {
            name = NULL;
            break;
        }
    }
    if (!name) {
        fprintf(stderr,
                "usage: smtp-oauth-proxy [--config FILE] authorize ACCOUNT [--refresh-token "
                "FILE]\n");
        return 2;
    }
    const struct cfg_account *a = cli_account(cfg, name);
    if (!a)
        return 1;
    if (strcmp(a->grant, "refresh_token") != 0) {
        fprintf(stderr,
                "smtp-oauth-proxy: account %s uses grant = %s, which needs no person: authorize "
                "is for accounts with grant = refresh_token\n",
                a->name, a->grant);
        return 1;
    }
    if (file) {
        if (cli_refresh_token_read(file, &rt, err, sizeof(err)) != 0) {
            fprintf(stderr, "smtp-oauth-proxy: %s\n", err);
            return 1;
        }
    } else {
        /* an issuer's discovery document may name the device authorization endpoint */
        if (account_tokens_discover(cfg, err, sizeof(err)) != 0) {
            fprintf(stderr, "smtp-oauth-proxy: %s\n", err);
            return 1;
        }
        if (!a->device_authorization_url) {
            fprintf(stderr,
                    "smtp-oauth-proxy: %s line %d: account %s has no device_authorization_url: "
                    "set it to run the device code flow, or import a refresh token with "
                    "--refresh-token FILE\n",
                    cfg->path, a->line, a->name);
            return 1;
        }
        if (device_flow(a, &rt, err, sizeof(err)) != 0) {
            fprintf(stderr, "smtp-oauth-proxy: account %s not authorized: %s\n", a->name, err);
            return 1;
        }
    }
    int ret = deliver(cfg, a, rt);
    secret_free(rt);
    return ret;
}
