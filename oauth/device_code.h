/* The device authorization grant (RFC 8628), as `smtp-oauth-proxy authorize` runs it: ask the
 * device authorization endpoint for a code, show the person where to enter it, poll the token
 * endpoint at the server's interval (slow_down adds 5 s) until they have signed in, declined, or
 * the code expired. Runs on the event loop through oauth/http (its timers on http_base()).
 *
 * 1. POST device_authorization_url: client_id, scope (if set), client_secret (only if set).
 *    The answer must carry device_code (visible ASCII, <= 4096 bytes), user_code (printable
 *    ASCII, <= 64), verification_uri or Google's verification_url (https://, or http:// to
 *    loopback; visible ASCII, <= 512) and expires_in (>= 1 s; more than 3600 s is cut to 3600);
 *    interval is 0..60 s (absent: 5, 0: 1). Anything else ends the flow: nothing the IdP sent
 *    reaches a terminal unchecked. The optional message keeps printable text (UTF-8 included)
 *    with control characters, C1 controls and bidi overrides taken out, at most 1024 bytes.
 *    An error answer (invalid_scope, AADSTS codes, ...) ends it with the IdP's words.
 * 2. POST token_url every interval: grant_type=urn:ietf:params:oauth:grant-type:device_code,
 *    client_id, device_code, client_secret (only if set). authorization_pending: again;
 *    slow_down: interval + 5 s from now on; authorization_declined / access_denied: "the sign-in
 *    was declined"; expired_token: "the code expired before anyone signed in; run authorize
 *    again"; bad_verification_code and any other error: the IdP's error, AADSTS code and
 *    description. No answer, 429, 5xx, temporarily_unavailable, server_error: again, backing off
 *    (doubling, up to 60 s or the interval), until the code expires.
 * 3. The flow ends by itself when the code expires (expires_in after the first answer), however
 *    the server keeps answering; no request outlives the code by more than a second.
 *
 * The device code and any client secret are wiped when freed, never logged, and masked in
 * anything the IdP echoes into an error. Log lines: event=device_code_request, _issued,
 * _slow_down, _retry, _ok, _failed (and _poll at debug). */
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
    /* Milliseconds per second of the server's interval and expiry: 1000 (also if <= 0), except
     * in tests; more than 1000 is refused. */
    int64_t ms_per_second;
};

/* What to show the person: the URL, the code, and the server's own sentence when it sent one
 * (all checked or cleaned for a terminal, see above). Valid only during the callback. */
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
/* Stop everything (the timer, the request in flight): no callback runs after this. Accepts
 * NULL. Allowed from inside prompt; not from inside done (the flow is freed once done returns). */
void device_code_cancel(struct device_code *dc);

#endif
