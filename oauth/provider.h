/* Getting a token from an identity provider: one small table of operations, one file per grant
 * type behind it. oauth/ knows nothing of proxy/: the account is described by oauth_client_cfg. */
#ifndef SOP_PROVIDER_H
#define SOP_PROVIDER_H

#include <stddef.h>
#include <stdint.h>

struct http;

struct oauth_client_cfg {
    const char *account;  /* for logs */
    const char *provider; /* "microsoft" | "google" | "oauth2" */
    const char *grant;    /* "client_credentials" | "refresh_token" | "service_account" */
    const char *token_url;
    const char *client_id;
    const char *client_secret; /* borrowed; never logged */
    const char *client_cert;   /* PEM certificate path: a signed assertion instead of a secret */
    const char *client_key;    /* PEM private key path (mode 0600), with client_cert */
    const char *scope;         /* may be NULL */
    const char *ca_file;       /* for https token endpoints; NULL: system store */
    const char *mailbox;       /* the mailbox tokens act for (google's sub) */
    const char *service_account_key; /* google: path of the JSON key file (mode 0600) */
    /* What a person runs when the grant needs them again (refresh_token), for the log line. */
    const char *reauthorize_hint;
    /* Every token request through this HTTP forward proxy (http://HOST:PORT): the provider then
     * makes its own struct http on http's loop, with the proxy set. NULL: http as it is. */
    const char *http_proxy;
};

struct token_grant {
    const char *access_token; /* valid only during the callback */
    int64_t expires_in;       /* seconds */
    /* The refresh token the IdP sent with it (rotation): the provider already uses it for the
     * next request, and the cache persists it before anyone uses the access token. NULL: the
     * grant has none, or the IdP kept the old one. */
    const char *refresh_token;
};

/* Why a request failed. */
enum provider_failure {
    PROVIDER_REFUSED = 0,     /* the IdP refused the client (bad secret, unknown app, ...) */
    PROVIDER_TEMPORARY = 1,   /* network, 5xx, timeouts: try again later */
    PROVIDER_REAUTHORIZE = 2, /* the user's grant is gone (invalid_grant, no refresh token):
                               * a person must run `authorize` again */
};

/* g NULL on failure; err is a log-safe explanation (IdP error, AADSTS code, description, or the
 * transport error); failure: an enum provider_failure. */
typedef void (*provider_done_cb)(void *arg, const struct token_grant *g, const char *err,
                                 int failure);

struct provider;
struct provider_req;

struct provider_ops {
    const char *grant;
    /* Start one token request. NULL if it could not start (then cb is not called, and the
     * grant may say why in p->start_err and p->start_failure). */
    struct provider_req *(*request)(struct provider *p, provider_done_cb cb, void *arg);
    /* Stop a request in flight: its callback is never called. */
    void (*cancel)(struct provider_req *r);
    /* Free ctx. */
    void (*destroy)(struct provider *p);
    /* Grants that live on a refresh token (NULL for the others): use rt from now on (a copy). */
    int (*set_refresh_token)(struct provider *p, const char *rt);
};

/* Public so that tests can build a fake provider. */
struct provider {
    const struct provider_ops *ops;
    void *ctx;
    char account[128];
    /* Set by a request that could not start: why (log-safe), and an enum provider_failure. */
    char start_err[256];
    int start_failure;
    struct http *own_http; /* made for cfg->http_proxy, freed with the provider; else NULL */
};

/* Picks the ops for cfg->grant; copies what it needs from cfg. NULL with err on a bad config.
 * grant "none": an account whose upstream takes no token; every request fails at once, saying
 * so (the token broker's `token ACCOUNT` then explains why there is none). */
struct provider *provider_new(const struct oauth_client_cfg *cfg, struct http *http, char *err,
                              size_t errlen);
void provider_free(struct provider *p);
/* 1 if p's grant lives on a refresh token (refresh_token), else 0. */
int provider_uses_refresh_token(const struct provider *p);
/* Hand p the refresh token to use from now on. 0 ok; -1 the grant has none, or no memory. */
int provider_set_refresh_token(struct provider *p, const char *rt);

#endif
