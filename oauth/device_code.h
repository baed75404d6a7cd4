/* The device authorization grant (RFC 8628), as `smtp-oauth-proxy authorize` runs it: ask the
 * device authorization endpoint for a code, show the person where to enter it, poll the token
 * endpoint at the server's interval (slow_down adds 5 s) until they have signed in, declined, or
 * the code expired. Runs on the event loop through oauth/http. */
#ifndef SOP_DEVICE_CODE_H
#define SOP_DEVICE_CODE_H

#include <stddef.h>
#include <stdint.h>

#include "oauth/provider.h"

struct http;
struct device_code;

struct device_code_cfg {
    const char *account; /* for messages */
    const char *device_authorization_url;
    const char *token_url;
    const char *client_id;
    const char *client_secret; /* NULL: a public client (the usual case); never logged */
    const char *scope;         /* must include offline_access to get a refresh token */
    const char *ca_file;       /* NULL: the system store */
    /* Milliseconds per second of the server's interval and expiry: 1000, except in tests. */
    int64_t ms_per_second;
};

/* What to show the person: the URL, the code, and the server's own sentence when it sent one.
 * Valid only during the callback. */
struct device_code_prompt {
    const char *verification_uri;
    const char *user_code;
    const char *message; /* may be NULL */
    int64_t expires_in;  /* seconds */
    int64_t interval;    /* seconds between polls */
};

typedef void (*device_code_prompt_cb)(void *arg, const struct device_code_prompt *p);
/* Once, at the end. On success g has the access token and the refresh token (g->refresh_token
 * NULL if the server sent none: then err explains, e.g. offline_access missing). On failure g
 * is NULL and err says why in words a person can act on (declined, expired, the IdP's error). */
typedef void (*device_code_done_cb)(void *arg, const struct token_grant *g, const char *err);

/* Start the flow. NULL with err if it could not start (then no callback runs). */
struct device_code *device_code_start(struct http *http, const struct device_code_cfg *cfg,
                                      device_code_prompt_cb prompt, device_code_done_cb done,
                                      void *arg, char *err, size_t errlen);
/* Stop: no callback runs after this. Accepts NULL. Not from inside done (the flow is freed
 * once done returns). */
void device_code_cancel(struct device_code *dc);

#endif
