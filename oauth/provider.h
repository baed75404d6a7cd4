/* Getting a token from an identity provider: one small table of operations, one file per grant
 * type behind it. oauth/ knows nothing of proxy/: the account is described by oauth_client_cfg. */
#ifndef SOP_PROVIDER_H
#define SOP_PROVIDER_H

#include <stddef.h>
#include <stdint.h>

struct http;

struct oauth_client_cfg {
    const char *account;  /* for logs */
    const char *provider; /* "microsoft" | "oauth2" */
    const char *grant;    /* "client_credentials" */
    const char *token_url;
    const char *client_id;
    const char *client_secret; /* borrowed; never logged */
    const char *client_cert;   /* PEM certificate path: a signed assertion instead of a secret */
    const char *client_key;    /* PEM private key path (mode 0600), with client_cert */
    const char *scope;         /* may be NULL */
    const char *ca_file;       /* for https token endpoints; NULL: system store */
};

struct token_grant {
    const char *access_token; /* valid only during the callback */
    int64_t expires_in;       /* seconds */
};

/* g NULL on failure; err is a log-safe explanation (IdP error, AADSTS code, description, or the
 * transport error); temporary: 1 for network/5xx/timeouts, 0 when the IdP refused the client. */
typedef void (*provider_done_cb)(void *arg, const struct token_grant *g, const char *err,
                                 int temporary);

struct provider;
struct provider_req;

struct provider_ops {
    const char *grant;
    /* Start one token request. NULL if it could not start (then cb is not called). */
    struct provider_req *(*request)(struct provider *p, provider_done_cb cb, void *arg);
    /* Stop a request in flight: its callback is never called. */
    void (*cancel)(struct provider_req *r);
    /* Free ctx. */
    void (*destroy)(struct provider *p);
};

/* Public so that tests can build a fake provider. */
struct provider {
    const struct provider_ops *ops;
    void *ctx;
    char account[128];
};

/* Picks the ops for cfg->grant; copies what it needs from cfg. NULL with err on a bad config. */
struct provider *provider_new(const struct oauth_client_cfg *cfg, struct http *http, char *err,
                              size_t errlen);
void provider_free(struct provider *p);

#endif
