/* The device authorization grant (RFC 8628 3.1-3.5; Entra's devicecode endpoint, Google's
 * device/code): one request for a code, then token requests every `interval` seconds on an
 * event timer until the IdP answers with tokens or a final no, or the code expires.
 *
 * Everything the IdP sends is hostile until checked: the code and the URL a person is shown go
 * to a terminal, so control characters are refused there and stripped from the message; the
 * device code is a credential (whoever holds it gets the tokens once someone signs in), so it is
 * wiped when freed and masked in anything the IdP echoes back. */
#include "oauth/device_code.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <event2/event.h>

#include "common/log.h"
#include "common/secret.h"
#include "oauth/device_code_parse.h"
#include "oauth/http.h"
#include "oauth/token_response.h"

#define DC_GRANT_TYPE "urn:ietf:params:oauth:grant-type:device_code"
#define DC_HTTP_TIMEOUT_MS 30000L
#define DC_HTTP_TIMEOUT_MIN_MS 1000L
#define DC_SLOW_DOWN 5    /* RFC 8628 3.5 */
#define DC_MAX_WAIT 300   /* slow_down and back-off stop growing the wait here */
#define DC_BACKOFF_CAP 60 /* transport failures back off up to here (or interval) */

struct device_code {
    struct http *http;
    struct event *timer;
    struct http_req *hr; /* the request in flight, if any */
    char *account, *device_url, *token_url, *client_id, *scope, *ca_file;
    char *client_secret; /* secret_free; NULL: a public client */
    char *device_code;   /* secret_free */
    int64_t ms_per_second;
    device_code_prompt_cb prompt;
    device_code_done_cb done;
    void *arg;
    int64_t interval;    /* seconds between polls, after slow_down */
    int64_t deadline_ms; /* monotonic: the code is dead from then on */
    int at_deadline;     /* the armed timer is the deadline, not a poll */
    int failures;        /* transport failures and 5xx in a row */
    int polls;
    char last_failure[256];
    int in_prompt, cancelled;
};

static int64_t dc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void dc_free(struct device_code *dc)
{
    if (!dc)
        return;
    http_cancel(dc->hr);
    if (dc->timer)
        event_free(dc->timer);
    free(dc->account);
    free(dc->device_url);
    free(dc->token_url);
    free(dc->client_id);
    free(dc->scope);
    free(dc->ca_file);
    secret_free(dc->client_secret);
    secret_free(dc->device_code);
    free(dc);
}

/* The one way out: log, call done, free. */
static void dc_finish(struct device_code *dc, const struct token_grant *g, const char *err)
{
    char safe[900];
    if (g)
        log_info("event=device_code_ok account=%s polls=%d refresh_token=%s", dc->account,
                 dc->polls, g->refresh_token ? "yes" : "no");
    else
        log_warn("event=device_code_failed account=%s polls=%d error=%s", dc->account, dc->polls,
                 log_safe(safe, sizeof(safe), err, strlen(err)));
    dc->done(dc->arg, g, err);
    dc_free(dc);
}

static void dc_fail(struct device_code *dc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void dc_fail(struct device_code *dc, const char *fmt, ...)
{
    char err[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, sizeof(err), fmt, ap);
    va_end(ap);
    secret_redact(err, dc->device_code);
    secret_redact(err, dc->client_secret);
    dc_finish(dc, NULL, err);
}

/* "error=X aadsts=N description=\"...\"" from an IdP's error answer, for err. */
static void dc_idp_error(char *out, size_t outlen, const struct token_response *tr)
{
    char desc[512];
    int n = snprintf(out, outlen, "error=%s", tr->error);
    if (tr->aadsts && n > 0 && (size_t)n < outlen)
        n += snprintf(out + n, outlen - (size_t)n, " aadsts=%ld", tr->aadsts);
    if (tr->error_description && n > 0 && (size_t)n < outlen)
        snprintf(
            out + n, outlen - (size_t)n, " description=%s",
            log_safe(desc, sizeof(desc), tr->error_description, strlen(tr->error_description)));
}

static void dc_timer_cb(evutil_socket_t fd, short what, void *arg);
static void dc_polled(void *arg, long status, const char *body, size_t len, const char *herr);

static void dc_fail_expired(struct device_code *dc)
{
    if (dc->failures)
        dc_fail(dc,
                "the code expired while the token endpoint was failing (last: %s); run "
                "authorize again",
                dc->last_failure);
    else
        dc_fail(dc, "the code expired before anyone signed in; run authorize again");
}

/* Poll again after wait seconds, or stop at the code's expiry if that comes first. */
static void dc_schedule(struct device_code *dc, int64_t wait)
{
    int64_t now = dc_now_ms();
    int64_t at = now + wait * dc->ms_per_second;
    struct timeval tv;
    if (at >= dc->deadline_ms) {
        at = dc->deadline_ms;
        dc->at_deadline = 1;
    }
    int64_t delay = at > now ? at - now : 0;
    tv.tv_sec = (time_t)(delay / 1000);
    tv.tv_usec = (suseconds_t)((delay % 1000) * 1000);
    if (evtimer_add(dc->timer, &tv) != 0)
        dc_fail(dc, "could not arm the poll timer");
}

static void dc_poll(struct device_code *dc)
{
    char *form = NULL;
    int64_t left = dc->deadline_ms - dc_now_ms();
    long timeout = DC_HTTP_TIMEOUT_MS;

    /* A request must not outlive the code by much: the code is the only thing it carries. */
    if (left < timeout)
        timeout = left > DC_HTTP_TIMEOUT_MIN_MS ? (long)left : DC_HTTP_TIMEOUT_MIN_MS;
    if (http_form_add(&form, "grant_type", DC_GRANT_TYPE) != 0 ||
        http_form_add(&form, "client_id", dc->client_id) != 0 ||
        http_form_add(&form, "device_code", dc->device_code) != 0 ||
        (dc->client_secret && http_form_add(&form, "client_secret", dc->client_secret) != 0)) {
        secret_free(form);
        dc_fail(dc, "out of memory");
        return;
    }
    dc->polls++;
    log_debug("event=device_code_poll account=%s poll=%d interval=%lld", dc->account, dc->polls,
              (long long)dc->interval);
    dc->hr = http_post_form(dc->http, dc->token_url, form, dc->ca_file, timeout, dc_polled, dc);
    secret_free(form);
    if (!dc->hr)
        dc_fail(dc, "the token request could not start");
}

static void dc_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct device_code *dc = arg;
    (void)fd;
    (void)what;
    if (dc->at_deadline)
        dc_fail_expired(dc);
    else
        dc_poll(dc);
}

/* No usable answer this time (network, 5xx, 429): try again, backing off (RFC 8628 3.5),
 * until the code expires. */
static void dc_transient(struct device_code *dc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void dc_transient(struct device_code *dc, const char *fmt, ...)
{
    va_list ap;
    int64_t wait = dc->interval;
    int64_t cap = dc->interval > DC_BACKOFF_CAP ? dc->interval : DC_BACKOFF_CAP;
    char safe[300];

    va_start(ap, fmt);
    vsnprintf(dc->last_failure, sizeof(dc->last_failure), fmt, ap);
    va_end(ap);
    secret_redact(dc->last_failure, dc->device_code);
    secret_redact(dc->last_failure, dc->client_secret);
    dc->failures++;
    for (int i = 1; i < dc->failures && wait < cap; i++)
        wait *= 2;
    if (wait > cap)
        wait = cap;
    log_warn("event=device_code_retry account=%s failures=%d wait_s=%lld error=%s", dc->account,
             dc->failures, (long long)wait,
             log_safe(safe, sizeof(safe), dc->last_failure, strlen(dc->last_failure)));
    dc_schedule(dc, wait);
}

static void dc_polled(void *arg, long status, const char *body, size_t len, const char *herr)
{
    struct device_code *dc = arg;
    struct token_response tr;
    char perr[256], idp[700];
    int rc;

    dc->hr = NULL;
    if (status == 0) {
        dc_transient(dc, "no answer: %s", herr ? herr : "connect failed");
        return;
    }
    rc = token_response_parse(body, len, status, &tr, perr, sizeof(perr));
    if (rc == 1) {
        struct token_grant g = {.access_token = tr.access_token,
                                .expires_in = tr.expires_in,
                                .refresh_token = tr.refresh_token};
        dc_finish(dc, &g,
                  tr.refresh_token ? NULL
                                   : "no refresh token: the scope must include offline_access");
        token_response_clear(&tr);
        return;
    }
    if (rc < 0) {
        if (status == 429 || status >= 500)
            dc_transient(dc, "HTTP %ld", status);
        else
            dc_fail(dc, "the token endpoint's answer is not usable: %s", perr);
        return;
    }
    /* RFC 8628 3.5, and Entra's authorization_declined. */
    if (strcmp(tr.error, "authorization_pending") == 0) {
        dc->failures = 0;
        dc_schedule(dc, dc->interval);
    } else if (strcmp(tr.error, "slow_down") == 0) {
        dc->failures = 0;
        if (dc->interval + DC_SLOW_DOWN <= DC_MAX_WAIT)
            dc->interval += DC_SLOW_DOWN;
        log_info("event=device_code_slow_down account=%s interval=%lld", dc->account,
                 (long long)dc->interval);
        dc_schedule(dc, dc->interval);
    } else if (strcmp(tr.error, "authorization_declined") == 0 ||
               strcmp(tr.error, "access_denied") == 0) {
        dc_fail(dc, "the sign-in was declined");
    } else if (strcmp(tr.error, "expired_token") == 0) {
        dc_fail(dc, "the code expired before anyone signed in; run authorize again");
    } else if (status == 429 || status >= 500 || strcmp(tr.error, "temporarily_unavailable") == 0 ||
               strcmp(tr.error, "server_error") == 0) {
        dc_idp_error(idp, sizeof(idp), &tr);
        dc_transient(dc, "HTTP %ld %s", status, idp);
    } else if (strcmp(tr.error, "bad_verification_code") == 0) {
        dc_fail(dc, "the identity provider does not know this device code "
                    "(bad_verification_code); run authorize again");
    } else {
        dc_idp_error(idp, sizeof(idp), &tr);
        dc_fail(dc, "the identity provider refused: %s", idp);
    }
    token_response_clear(&tr);
}

static void dc_authorized(void *arg, long status, const char *body, size_t len, const char *herr)
{
    struct device_code *dc = arg;
    struct token_response tr;
    struct device_code_auth a;
    char perr[512], idp[700];

    dc->hr = NULL;
    if (status == 0) {
        dc_fail(dc, "no answer from the device authorization endpoint: %s",
                herr ? herr : "connect failed");
        return;
    }
    /* An error answer has the token endpoint's shape (RFC 8628 3.2 -> RFC 6749 5.2). */
    if (token_response_parse(body, len, status, &tr, perr, sizeof(perr)) == 0) {
        dc_idp_error(idp, sizeof(idp), &tr);
        token_response_clear(&tr);
        dc_fail(dc, "the device authorization endpoint refused (HTTP %ld): %s", status, idp);
        return;
    }
    token_response_clear(&tr);
    if (status < 200 || status > 299) {
        dc_fail(dc, "the device authorization endpoint answered HTTP %ld", status);
        return;
    }
    if (device_code_auth_parse(body, len, &a, perr, sizeof(perr)) != 0) {
        dc_fail(dc, "the device authorization endpoint's answer is not usable: %s", perr);
        return;
    }
    dc->device_code = a.device_code;
    a.device_code = NULL;
    dc->interval = a.interval;
    dc->deadline_ms = dc_now_ms() + a.expires_in * dc->ms_per_second;
    log_info("event=device_code_issued account=%s expires_in=%lld interval=%lld", dc->account,
             (long long)a.expires_in, (long long)a.interval);

    struct device_code_prompt p = {.verification_uri = a.verification_uri,
                                   .user_code = a.user_code,
                                   .message = a.message,
                                   .expires_in = a.expires_in,
                                   .interval = a.interval};
    dc->in_prompt = 1;
    dc->prompt(dc->arg, &p);
    dc->in_prompt = 0;
    device_code_auth_clear(&a);
    if (dc->cancelled) {
        dc_free(dc);
        return;
    }
    dc_schedule(dc, dc->interval);
}

static int dc_url_ok(const char *url)
{
    return url && (strncmp(url, "https://", 8) == 0 ||
                   (strncmp(url, "http://", 7) == 0 && http_url_is_loopback(url)));
}

static char *dc_dup(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

struct device_code *device_code_start(struct http *http, const struct device_code_cfg *cfg,
                                      device_code_prompt_cb prompt, device_code_done_cb done,
                                      void *arg, char *err, size_t errlen)
{
    struct device_code *dc = NULL;
    char *form = NULL;
    const char *who = cfg && cfg->account ? cfg->account : "?";

    if (!http || !cfg || !prompt || !done || !http_base(http)) {
        snprintf(err, errlen, "account %s: device code flow started without its callbacks", who);
        return NULL;
    }
    if (!dc_url_ok(cfg->device_authorization_url)) {
        snprintf(err, errlen,
                 "account %s: device_authorization_url must be https:// (http:// only to a "
                 "loopback host)",
                 who);
        return NULL;
    }
    if (!dc_url_ok(cfg->token_url)) {
        snprintf(err, errlen,
                 "account %s: token_url must be https:// (http:// only to a loopback host)", who);
        return NULL;
    }
    if (!cfg->client_id || !*cfg->client_id) {
        snprintf(err, errlen, "account %s: client_id is required", who);
        return NULL;
    }
    if (cfg->ms_per_second > 1000) {
        snprintf(err, errlen, "account %s: ms_per_second must be at most 1000", who);
        return NULL;
    }
    dc = calloc(1, sizeof(*dc));
    if (!dc)
        goto oom;
    dc->http = http;
    dc->prompt = prompt;
    dc->done = done;
    dc->arg = arg;
    dc->ms_per_second = cfg->ms_per_second > 0 ? cfg->ms_per_second : 1000;
    dc->account = strdup(who);
    dc->device_url = strdup(cfg->device_authorization_url);
    dc->token_url = strdup(cfg->token_url);
    dc->client_id = strdup(cfg->client_id);
    dc->scope = dc_dup(cfg->scope);
    dc->ca_file = dc_dup(cfg->ca_file);
    if (cfg->client_secret && *cfg->client_secret)
        dc->client_secret = secret_dup(cfg->client_secret);
    dc->timer = evtimer_new(http_base(http), dc_timer_cb, dc);
    if (!dc->account || !dc->device_url || !dc->token_url || !dc->client_id ||
        (cfg->scope && *cfg->scope && !dc->scope) ||
        (cfg->ca_file && *cfg->ca_file && !dc->ca_file) ||
        (cfg->client_secret && *cfg->client_secret && !dc->client_secret) || !dc->timer)
        goto oom;
    if (http_form_add(&form, "client_id", dc->client_id) != 0 ||
        (dc->scope && http_form_add(&form, "scope", dc->scope) != 0) ||
        (dc->client_secret && http_form_add(&form, "client_secret", dc->client_secret) != 0))
        goto oom;
    log_info("event=device_code_request account=%s url=%s", dc->account, dc->device_url);
    dc->hr = http_post_form(http, dc->device_url, form, dc->ca_file, DC_HTTP_TIMEOUT_MS,
                            dc_authorized, dc);
    secret_free(form);
    if (!dc->hr) {
        snprintf(err, errlen, "account %s: the request to device_authorization_url could not start",
                 who);
        dc_free(dc);
        return NULL;
    }
    return dc;
oom:
    secret_free(form);
    dc_free(dc);
    snprintf(err, errlen, "account %s: out of memory", who);
    return NULL;
}

void device_code_cancel(struct device_code *dc)
{
    if (!dc)
        return;
    /* From inside prompt: the frame below frees it once prompt returns. */
    if (dc->in_prompt) {
        dc->cancelled = 1;
        return;
    }
    dc_free(dc);
}
