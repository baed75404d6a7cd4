/* The device authorization grant against a scripted IdP: an in-process evhttp server on
 * 127.0.0.1 that answers the device authorization request with one canned body and each poll of
 * the token endpoint with the next step of a script (the last step repeats). ms_per_second is
 * small, so a "second" of the server's interval is a few milliseconds. The log is captured to
 * prove that no device code, secret or token reaches it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "oauth/device_code.h"
#include "oauth/device_code_parse.h"
#include "oauth/http.h"
#include "token_endpoint_fixture.h"

#define DEVICE_CODE                                                                                \
    "GAQABAAEAAAD--DLA3VO7QrddgJg7WevrAgB4sFZ1pXq7Rk0w5nDeviceCodeSecretPart9kq_2Yx4L3Z0aQ"
#define USER_CODE "ABCD-EFGH"
#define SECRET "Dev~ice/Secret&special=1234567890"
#define ACCESS "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJzY3AiOiJTTVRQLlNlbmQifQ.c2lnYXR1cmU"
#define REFRESH "0.AAAArefreshTokenThatMustNeverBeLogged_1234567890abcdefghijklmnop"
#define CLIENT_ID "11111111-2222-3333-4444-555555555555"
#define SCOPE "https://outlook.office.com/SMTP.Send offline_access"

#define AUTH_OK                                                                                    \
    "{\"user_code\":\"" USER_CODE "\",\"device_code\":\"" DEVICE_CODE "\","                        \
    "\"verification_uri\":\"https://microsoft.com/devicelogin\",\"expires_in\":900,"               \
    "\"interval\":1,\"message\":\"To sign in, use a web browser to open the page "                 \
    "https://microsoft.com/devicelogin and enter the code " USER_CODE " to authenticate.\"}"
#define PENDING                                                                                    \
    "{\"error\":\"authorization_pending\",\"error_description\":\"AADSTS70016: OAuth 2.0 device "  \
    "flow error. Authorization is pending. Continue polling.\",\"error_codes\":[70016]}"
#define TOKEN_OK                                                                                   \
    "{\"token_type\":\"Bearer\",\"scope\":\"https://outlook.office.com/SMTP.Send\","               \
    "\"expires_in\":3599,\"access_token\":\"" ACCESS "\",\"refresh_token\":\"" REFRESH "\"}"
#define TOKEN_NO_REFRESH                                                                           \
    "{\"token_type\":\"Bearer\",\"expires_in\":3599,\"access_token\":\"" ACCESS "\"}"

#define MAX_STEPS 16
#define MAX_POLLS 64

struct step {
    int status;
    const char *body; /* NULL: hold the request, never answer */
};

/* What one request carried. */
struct form {
    int fields;
    char grant_type[128], client_id[64], device_code[256], client_secret[64], scope[128];
    int has_secret, has_scope;
};

struct idp {
    struct evhttp *http;
    int auth_status;
    const char *auth_body;
    int auth_hits;
    struct form auth_form;
    struct step steps[MAX_STEPS];
    int nsteps;
    int polls;
    int64_t poll_ms[MAX_POLLS];
    struct form token_form;
    int other_hits;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void form_read(struct evhttp_request *req, struct form *f)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    char body[4096];
    struct evkeyvalq q;
    memset(f, 0, sizeof(*f));
    assert_true(n < sizeof(body));
    evbuffer_copyout(in, body, n);
    body[n] = '\0';
    assert_int_equal(evhttp_parse_query_str(body, &q), 0);
    for (struct evkeyval *kv = q.tqh_first; kv; kv = kv->next.tqe_next) {
        f->fields++;
        if (strcmp(kv->key, "grant_type") == 0)
            snprintf(f->grant_type, sizeof(f->grant_type), "%s", kv->value);
        else if (strcmp(kv->key, "client_id") == 0)
            snprintf(f->client_id, sizeof(f->client_id), "%s", kv->value);
        else if (strcmp(kv->key, "device_code") == 0)
            snprintf(f->device_code, sizeof(f->device_code), "%s", kv->value);
        else if (strcmp(kv->key, "client_secret") == 0) {
            f->has_secret = 1;
            snprintf(f->client_secret, sizeof(f->client_secret), "%s", kv->value);
        } else if (strcmp(kv->key, "scope") == 0) {
            f->has_scope = 1;
            snprintf(f->scope, sizeof(f->scope), "%s", kv->value);
        }
    }
    evhttp_clear_headers(&q);
}

static void reply(struct evhttp_request *req, int status, const char *body)
{
    struct evbuffer *out = evbuffer_new();
    assert_non_null(out);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json; charset=utf-8");
    evbuffer_add(out, body, strlen(body));
    evhttp_send_reply(req, status, status == 200 ? "OK" : "Error", out);
    evbuffer_free(out);
}

static void idp_handler(struct evhttp_request *req, void *arg)
{
    struct idp *s = arg;
    const char *uri = evhttp_request_get_uri(req);
    if (strcmp(uri, "/devicecode") == 0) {
        s->auth_hits++;
        form_read(req, &s->auth_form);
        reply(req, s->auth_status, s->auth_body);
    } else if (strcmp(uri, "/token") == 0) {
        int i = s->polls < s->nsteps ? s->polls : s->nsteps - 1;
        assert_true(s->nsteps > 0);
        if (s->polls < MAX_POLLS)
            s->poll_ms[s->polls] = now_ms();
        s->polls++;
        form_read(req, &s->token_form);
        if (s->steps[i].body)
            reply(req, s->steps[i].status, s->steps[i].body);
    } else {
        s->other_hits++;
        reply(req, 404, "{}");
    }
}

struct result {
    int prompts;
    char user_code[128], uri[256], message[1200];
    int has_message;
    int64_t expires_in, interval;
    int done;
    int ok;
    char access[256], refresh[256];
    int has_refresh;
    int64_t token_expires_in;
    char err[1024];
    int has_err;
    int64_t done_ms;
    int cancel_in_prompt;
    struct device_code *dc;
};

struct fixture {
    struct event_base *base;
    struct idp idp;
    struct http *h;
    char base_url[128];
    char device_url[160], token_url[160];
    struct log_capture lc;
    struct result r;
    int64_t started_ms;
};

static void prompt_cb(void *arg, const struct device_code_prompt *p)
{
    struct result *r = arg;
    r->prompts++;
    snprintf(r->user_code, sizeof(r->user_code), "%s", p->user_code);
    snprintf(r->uri, sizeof(r->uri), "%s", p->verification_uri);
    r->has_message = p->message != NULL;
    snprintf(r->message, sizeof(r->message), "%s", p->message ? p->message : "");
    r->expires_in = p->expires_in;
    r->interval = p->interval;
    if (r->cancel_in_prompt)
        device_code_cancel(r->dc);
}

static void done_cb(void *arg, const struct token_grant *g, const char *err)
{
    struct result *r = arg;
    r->done++;
    r->done_ms = now_ms();
    r->ok = g != NULL;
    r->has_err = err != NULL;
    snprintf(r->err, sizeof(r->err), "%s", err ? err : "");
    if (g) {
        snprintf(r->access, sizeof(r->access), "%s", g->access_token);
        r->has_refresh = g->refresh_token != NULL;
        snprintf(r->refresh, sizeof(r->refresh), "%s", g->refresh_token ? g->refresh_token : "");
        r->token_expires_in = g->expires_in;
    }
}

static void assert_no_secrets(const char *s)
{
    assert_null(strstr(s, DEVICE_CODE));
    assert_null(strstr(s, "DeviceCodeSecretPart"));
    assert_null(strstr(s, SECRET));
    assert_null(strstr(s, "Dev~ice"));
    assert_null(strstr(s, ACCESS));
    assert_null(strstr(s, REFRESH));
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->base = event_base_new();
    assert_non_null(f->base);
    f->idp.http =
        token_endpoint_new(f->base, idp_handler, &f->idp, "", f->base_url, sizeof(f->base_url));
    snprintf(f->device_url, sizeof(f->device_url), "%s/devicecode", f->base_url);
    snprintf(f->token_url, sizeof(f->token_url), "%s/token", f->base_url);
    f->idp.auth_status = 200;
    f->idp.auth_body = AUTH_OK;
    f->h = http_new(f->base);
    assert_non_null(f->h);
    log_capture_start(&f->lc);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char *captured = log_capture_stop(&f->lc);
    assert_no_secrets(captured);
    free(captured);
    assert_no_secrets(f->r.err);
    http_free(f->h);
    evhttp_free(f->idp.http);
    event_base_free(f->base);
    free(f);
    return 0;
}

static void script(struct fixture *f, int n, ...)
{
    va_list ap;
    va_start(ap, n);
    assert_true(n <= MAX_STEPS);
    for (int i = 0; i < n; i++) {
        f->idp.steps[i].status = va_arg(ap, int);
        f->idp.steps[i].body = va_arg(ap, const char *);
    }
    va_end(ap);
    f->idp.nsteps = n;
}

static struct device_code *start(struct fixture *f, const char *secret, int64_t ms_per_second)
{
    struct device_code_cfg cfg = {
        .account = "alice",
        .device_authorization_url = f->device_url,
        .token_url = f->token_url,
        .client_id = CLIENT_ID,
        .client_secret = secret,
        .scope = SCOPE,
        .ms_per_second = ms_per_second,
    };
    char err[256] = "";
    f->started_ms = now_ms();
    struct device_code *dc =
        device_code_start(f->h, &cfg, prompt_cb, done_cb, &f->r, err, sizeof(err));
    if (!dc)
        fail_msg("device_code_start: %s", err);
    f->r.dc = dc;
    assert_int_equal(f->r.done, 0);
    return dc;
}

/* Start, run to the end, and check the common outcome: one done, nothing secret in err. */
static void run(struct fixture *f, const char *secret, int64_t ms_per_second)
{
    start(f, secret, ms_per_second);
    run_until(f->base, &f->r.done, 10000);
    assert_int_equal(f->r.done, 1);
    assert_no_secrets(f->r.err);
}

static void test_success_after_pending(void **state)
{
    struct fixture *f = *state;
    script(f, 4, 400, PENDING, 400, PENDING, 400, PENDING, 200, TOKEN_OK);
    run(f, NULL, 10);
    assert_true(f->r.ok);
    assert_false(f->r.has_err);
    assert_string_equal(f->r.access, ACCESS);
    assert_true(f->r.has_refresh);
    assert_string_equal(f->r.refresh, REFRESH);
    assert_int_equal(f->r.token_expires_in, 3599);
    assert_int_equal(f->idp.polls, 4);
    /* the prompt, once, with what the server sent */
    assert_int_equal(f->r.prompts, 1);
    assert_string_equal(f->r.user_code, USER_CODE);
    assert_string_equal(f->r.uri, "https://microsoft.com/devicelogin");
    assert_true(f->r.has_message);
    assert_non_null(strstr(f->r.message, "enter the code " USER_CODE));
    assert_int_equal(f->r.expires_in, 900);
    assert_int_equal(f->r.interval, 1);
    /* exactly these fields: a public client sends no secret */
    assert_int_equal(f->idp.auth_hits, 1);
    assert_int_equal(f->idp.auth_form.fields, 2);
    assert_string_equal(f->idp.auth_form.client_id, CLIENT_ID);
    assert_string_equal(f->idp.auth_form.scope, SCOPE);
    assert_false(f->idp.auth_form.has_secret);
    assert_int_equal(f->idp.token_form.fields, 3);
    assert_string_equal(f->idp.token_form.grant_type,
                        "urn:ietf:params:oauth:grant-type:device_code");
    assert_string_equal(f->idp.token_form.client_id, CLIENT_ID);
    assert_string_equal(f->idp.token_form.device_code, DEVICE_CODE);
    assert_false(f->idp.token_form.has_secret);
    assert_int_equal(f->idp.other_hits, 0);
    /* each poll waited the interval: 1 "second" = 10 ms */
    for (int i = 1; i < 4; i++)
        assert_true(f->idp.poll_ms[i] - f->idp.poll_ms[i - 1] >= 10);
}

static void test_confidential_client_sends_secret(void **state)
{
    struct fixture *f = *state;
    script(f, 2, 400, PENDING, 200, TOKEN_OK);
    run(f, SECRET, 10);
    assert_true(f->r.ok);
    assert_int_equal(f->idp.auth_form.fields, 3);
    assert_true(f->idp.auth_form.has_secret);
    assert_string_equal(f->idp.auth_form.client_secret, SECRET);
    assert_int_equal(f->idp.token_form.fields, 4);
    assert_true(f->idp.token_form.has_secret);
    assert_string_equal(f->idp.token_form.client_secret, SECRET);
    assert_string_equal(f->idp.token_form.device_code, DEVICE_CODE);
}

static void test_slow_down_adds_five_seconds(void **state)
{
    struct fixture *f = *state;
    /* 1 "second" = 25 ms: interval 1 s = 25 ms, after slow_down 6 s = 150 ms */
    script(f, 4, 400, PENDING, 400, "{\"error\":\"slow_down\"}", 400, PENDING, 200, TOKEN_OK);
    run(f, NULL, 25);
    assert_true(f->r.ok);
    assert_int_equal(f->idp.polls, 4);
    int64_t before = f->idp.poll_ms[1] - f->idp.poll_ms[0];
    int64_t after1 = f->idp.poll_ms[2] - f->idp.poll_ms[1];
    int64_t after2 = f->idp.poll_ms[3] - f->idp.poll_ms[2];
    assert_true(before >= 25);
    assert_true(before < 125);
    /* the new interval stays for every later poll */
    assert_true(after1 >= 150);
    assert_true(after2 >= 150);
    assert_true(after1 - before >= 100);
}

static void test_declined(void **state)
{
    struct fixture *f = *state;
    script(f, 2, 400, PENDING, 400,
           "{\"error\":\"authorization_declined\",\"error_description\":\"AADSTS70000: the user "
           "declined\",\"error_codes\":[70000]}");
    run(f, NULL, 10);
    assert_false(f->r.ok);
    assert_string_equal(f->r.err, "the sign-in was declined");
    assert_int_equal(f->idp.polls, 2);
}

static void test_access_denied(void **state)
{
    struct fixture *f = *state;
    script(f, 1, 400, "{\"error\":\"access_denied\"}");
    run(f, NULL, 10);
    assert_false(f->r.ok);
    assert_string_equal(f->r.err, "the sign-in was declined");
}

static void test_expired_token(void **state)
{
    struct fixture *f = *state;
    script(f, 2, 400, PENDING, 400, "{\"error\":\"expired_token\"}");
    run(f, NULL, 10);
    assert_false(f->r.ok);
    assert_string_equal(f->r.err, "the code expired before anyone signed in; run authorize again");
}

static void test_bad_verification_code(void **state)
{
    struct fixture *f = *state;
    script(f, 1, 400, "{\"error\":\"bad_verification_code\"}");
    run(f, NULL, 10);
    assert_false(f->r.ok);
    assert_non_null(strstr(f->r.err, "bad_verification_code"));
    assert_int_equal(f->idp.polls, 1);
}

/* The server keeps saying pending: the flow stops by itself when the code expires. */
static void test_expiry_while_pending(void **state)
{
    struct fixture *f = *state;
    f->idp.auth_body = "{\"user_code\":\"" USER_CODE "\",\"device_code\":\"" DEVICE_CODE "\","
                       "\"verification_uri\":\"https://microsoft.com/devicelogin\","
                       "\"expires_in\":5,\"interval\":1}";
    script(f, 1, 400, PENDING);
    run(f, NULL, 20); /* expires after 5 * 20 = 100 ms */
    assert_false(f->r.ok);
    assert_string_equal(f->r.err, "the code expired before anyone signed in; run authorize again");
    /* not before the expiry: libevent's timers run on its cached clock, which may read a few
     * ms behind ours (seen once in CI: 97 ms), hence the margin */
    assert_true(f->r.done_ms - f->started_ms >= 90);
    assert_true(f->r.done_ms - f->started_ms < 2000);
    assert_true(f->idp.polls >= 2);
    assert_true(f->idp.polls <= 5);
    assert_false(f->r.has_message);
}

static void test_server_error_then_success(void **state)
{
    struct fixture *f = *state;
    script(f, 4, 500, "<html>Internal Server Error</html>", 503,
           "{\"error\":\"temporarily_unavailable\"}", 400, PENDING, 200, TOKEN_OK);
    run(f, NULL, 10);
    assert_true(f->r.ok);
    assert_string_equal(f->r.access, ACCESS);
    assert_int_equal(f->idp.polls, 4);
}

/* A token endpoint that only fails: polling goes on (backing off) until the code expires. */
static void test_server_errors_until_expiry(void **state)
{
    struct fixture *f = *state;
    f->idp.auth_body = "{\"user_code\":\"" USER_CODE "\",\"device_code\":\"" DEVICE_CODE "\","
                       "\"verification_uri\":\"https://microsoft.com/devicelogin\","
                       "\"expires_in\":8,\"interval\":1}";
    script(f, 1, 502, "bad gateway");
    run(f, NULL, 20); /* expires after 160 ms; waits 20, 40, 80 ms */
    assert_false(f->r.ok);
    assert_non_null(strstr(f->r.err, "expired"));
    assert_non_null(strstr(f->r.err, "HTTP 502"));
    assert_true(f->r.done_ms - f->started_ms >= 160);
    assert_true(f->idp.polls >= 2);
    assert_true(f->idp.polls <= 4);
}

/* Nobody listens at the token URL: the same, with curl's message. */
static void test_connect_failures_until_expiry(void **state)
{
    struct fixture *f = *state;
    f->idp.auth_body = "{\"user_code\":\"" USER_CODE "\",\"device_code\":\"" DEVICE_CODE "\","
                       "\"verification_uri\":\"https://microsoft.com/devicelogin\","
                       "\"expires_in\":5,\"interval\":1}";
    /* port 1 on loopback: refused at once */
    snprintf(f->token_url, sizeof(f->token_url), "http://127.0.0.1:1/token");
    script(f, 1, 200, TOKEN_OK);
    run(f, NULL, 20);
    assert_false(f->r.ok);
    assert_non_null(strstr(f->r.err, "expired while the token endpoint was failing"));
    assert_int_equal(f->idp.polls, 0);
}

static void test_no_refresh_token(void **state)
{
    struct fixture *f = *state;
    script(f, 1, 200, TOKEN_NO_REFRESH);
    run(f, NULL, 10);
    assert_true(f->r.ok);
    assert_string_equal(f->r.access, ACCESS);
    assert_false(f->r.has_refresh);
    assert_string_equal(f->r.err, "no refresh token: the scope must include offline_access");
}

static void test_idp_error_with_aadsts(void **state)
{
    struct fixture *f = *state;
    /* a careless IdP that echoes the device code it was sent */
    script(f, 1, 401,
           "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS7000218: The request "
           "body must contain client_assertion or client_secret. device_code=" DEVICE_CODE
           "\\r\\nTrace ID: 1\",\"error_codes\":[7000218]}");
    run(f, NULL, 10);
    assert_false(f->r.ok);
    assert_non_null(strstr(f->r.err, "error=invalid_client aadsts=7000218"));
    assert_non_null(strstr(f->r.err, "must contain client_assertion"));
    assert_non_null(strstr(f->r.err, "[redacted]"));
    assert_null(strchr(f->r.err, '\r'));
}

/* The device authorization endpoint itself says no (Entra: a scope it does not know). */
static void test_device_authorization_refused(void **state)
{
    struct fixture *f = *state;
    f->idp.auth_status = 400;
    f->idp.auth_body = "{\"error\":\"invalid_scope\",\"error_description\":\"AADSTS70011: The "
                       "provided value for the input parameter 'scope' is not valid.\","
                       "\"error_codes\":[70011]}";
    script(f, 1, 200, TOKEN_OK);
    run(f, NULL, 10);
    assert_false(f->r.ok);
    assert_non_null(strstr(f->r.err, "error=invalid_scope aadsts=70011"));
    assert_int_equal(f->r.prompts, 0);
    assert_int_equal(f->idp.polls, 0);
}

/* Answers that must not reach a person's terminal or the poll loop. */
static void test_bad_authorization_answers(void **state)
{
    struct fixture *f = *state;
    static const char *const bad[] = {
        "not json",
        "[]",
        /* device_code missing, empty, not a string */
        "{\"user_code\":\"AB\",\"verification_uri\":\"https://x.example/\",\"expires_in\":900}",
        "{\"device_code\":\"\",\"user_code\":\"AB\",\"verification_uri\":\"https://x.example/\","
        "\"expires_in\":900}",
        "{\"device_code\":5,\"user_code\":\"AB\",\"verification_uri\":\"https://x.example/\","
        "\"expires_in\":900}",
        /* user_code missing, with an escape sequence, with a newline, with C1 CSI, too long */
        "{\"device_code\":\"dc\",\"verification_uri\":\"https://x.example/\",\"expires_in\":900}",
        "{\"device_code\":\"dc\",\"user_code\":\"AB\\u001b[2JCD\","
        "\"verification_uri\":\"https://x.example/\",\"expires_in\":900}",
        "{\"device_code\":\"dc\",\"user_code\":\"AB\\nCD\","
        "\"verification_uri\":\"https://x.example/\",\"expires_in\":900}",
        "{\"device_code\":\"dc\",\"user_code\":\"AB\\u009b2JCD\","
        "\"verification_uri\":\"https://x.example/\",\"expires_in\":900}",
        "{\"device_code\":\"dc\",\"user_code\":\"" USER_CODE USER_CODE USER_CODE USER_CODE USER_CODE
            USER_CODE USER_CODE USER_CODE "\",\"verification_uri\":\"https://x.example/\","
        "\"expires_in\":900}",
        /* verification_uri missing, not https, with an escape, with a blank */
        "{\"device_code\":\"dc\",\"user_code\":\"AB\",\"expires_in\":900}",
        "{\"device_code\":\"dc\",\"user_code\":\"AB\",\"verification_uri\":\"http://x.example/\","
        "\"expires_in\":900}",
        "{\"device_code\":\"dc\",\"user_code\":\"AB\",\"verification_uri\":\"javascript:x\","
        "\"expires_in\":900}",
        "{\"device_code\":\"dc\",\"user_code\":\"AB\","
        "\"verification_uri\":\"https://x.example/\\u001b]8;;\",\"expires_in\":900}",
        "{\"device_code\":\"dc\",\"user_code\":\"AB\","
        "\"verification_uri\":\"https://x.example/ a\",\"expires_in\":900}",
        /* expires_in missing, zero, negative, not a number */
        "{\"device_code\":\"dc\",\"user_code\":\"AB\",\"verification_uri\":\"https://x.example/\"}",
        "{\"device_code\":\"dc\",\"user_code\":\"AB\",\"verification_uri\":\"https://x.example/\","
        "\"expires_in\":0}",
        "{\"device_code\":\"dc\",\"user_code\":\"AB\",\"verification_uri\":\"https://x.example/\","
        "\"expires_in\":-5}",
        "{\"device_code\":\"dc\",\"user_code\":\"AB\",\"verification_uri\":\"https://x.example/\","
        "\"expires_in\":\"soon\"}",
        /* interval above 60, negative, not a number */
        "{\"device_code\":\"dc\",\"user_code\":\"AB\",\"verification_uri\":\"https://x.example/\","
        "\"expires_in\":900,\"interval\":61}",
        "{\"device_code\":\"dc\",\"user_code\":\"AB\",\"verification_uri\":\"https://x.example/\","
        "\"expires_in\":900,\"interval\":-1}",
        "{\"device_code\":\"dc\",\"user_code\":\"AB\",\"verification_uri\":\"https://x.example/\","
        "\"expires_in\":900,\"interval\":\"5s\"}",
    };
    script(f, 1, 200, TOKEN_OK);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&f->r, 0, sizeof(f->r));
        f->idp.auth_body = bad[i];
        run(f, NULL, 10);
        if (f->r.ok || !strstr(f->r.err, "not usable"))
            fail_msg("answer %zu: ok=%d err=%s", i, f->r.ok, f->r.err);
        assert_int_equal(f->r.prompts, 0);
        assert_null(strchr(f->r.err, '\x1b'));
    }
    assert_int_equal(f->idp.polls, 0);
    assert_int_equal(f->idp.auth_hits, (int)(sizeof(bad) / sizeof(bad[0])));
}

/* Google's spelling, no interval (5 s), interval 0 (1 s), a life over an hour (cut to one), and a
 * message with control characters: what the prompt gets. Cancelled from inside the prompt. */
static void test_authorization_answer_normalised(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *body;
        int64_t expires_in, interval;
        const char *message;
    } cases[] = {
        {"{\"device_code\":\"dc1\",\"user_code\":\"GQVQ-JKEC\","
         "\"verification_url\":\"https://www.google.com/device\",\"expires_in\":1800}",
         1800, 5, NULL},
        {"{\"device_code\":\"dc1\",\"user_code\":\"GQVQ JKEC\","
         "\"verification_uri\":\"https://www.google.com/device\",\"expires_in\":\"7200\","
         "\"interval\":0}",
         3600, 1, NULL},
        {"{\"device_code\":\"dc1\",\"user_code\":\"AB\",\"verification_uri\":\"https://x.example/"
         "\","
         "\"expires_in\":900,\"interval\":\"60\",\"message\":\"Open\\u001b[2J the\\r\\npage "
         "\\u009b31m\\u202eSt\\u00e4dt\\u0007\\u007f\"}",
         900, 60,
         "Open [2J the page 31mSt\xc3\xa4"
         "dt"},
        {"{\"device_code\":\"dc1\",\"user_code\":\"AB\",\"verification_uri\":\"https://x.example/"
         "\","
         "\"expires_in\":900,\"message\":\"\\u001b\\r\\n\"}",
         900, 5, NULL},
    };
    script(f, 1, 200, TOKEN_OK);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(&f->r, 0, sizeof(f->r));
        f->r.cancel_in_prompt = 1;
        f->idp.auth_body = cases[i].body;
        start(f, NULL, 10);
        run_until(f->base, &f->r.prompts, 5000);
        assert_int_equal(f->r.prompts, 1);
        assert_int_equal(f->r.expires_in, cases[i].expires_in);
        assert_int_equal(f->r.interval, cases[i].interval);
        if (cases[i].message) {
            assert_true(f->r.has_message);
            assert_string_equal(f->r.message, cases[i].message);
        } else {
            assert_false(f->r.has_message);
        }
        /* cancelled in the prompt: no poll, no done */
        run_until(f->base, NULL, 100);
        assert_int_equal(f->r.done, 0);
    }
    assert_int_equal(f->idp.polls, 0);
}

/* Cancel while waiting for the next poll: no callback, no leak, no more polls. */
static void test_cancel_between_polls(void **state)
{
    struct fixture *f = *state;
    script(f, 1, 400, PENDING);
    struct device_code *dc = start(f, SECRET, 10);
    run_until(f->base, &f->idp.polls, 5000);
    while (f->idp.polls < 2)
        event_base_loop(f->base, EVLOOP_ONCE);
    device_code_cancel(dc);
    int polls = f->idp.polls;
    run_until(f->base, NULL, 100);
    assert_int_equal(f->r.done, 0);
    assert_true(f->idp.polls <= polls + 1);
}

/* Cancel with a poll in flight (the server holds it): no callback, the request is stopped. */
static void test_cancel_in_flight(void **state)
{
    struct fixture *f = *state;
    script(f, 2, 400, PENDING, 0, (const char *)NULL);
    struct device_code *dc = start(f, NULL, 10);
    while (f->idp.polls < 2)
        event_base_loop(f->base, EVLOOP_ONCE);
    device_code_cancel(dc);
    run_until(f->base, NULL, 100);
    assert_int_equal(f->r.done, 0);
    assert_int_equal(f->idp.polls, 2);
}

/* Cancel before the device authorization answer arrived. */
static void test_cancel_before_prompt(void **state)
{
    struct fixture *f = *state;
    script(f, 1, 200, TOKEN_OK);
    struct device_code *dc = start(f, NULL, 10);
    device_code_cancel(dc);
    device_code_cancel(NULL);
    run_until(f->base, NULL, 100);
    assert_int_equal(f->r.prompts, 0);
    assert_int_equal(f->r.done, 0);
}

static void test_bad_config(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct device_code_cfg ok = {
        .account = "alice",
        .device_authorization_url = f->device_url,
        .token_url = f->token_url,
        .client_id = CLIENT_ID,
        .scope = SCOPE,
    };
    struct device_code_cfg c;

    c = ok;
    c.device_authorization_url = "http://login.example.com/devicecode";
    assert_null(device_code_start(f->h, &c, prompt_cb, done_cb, &f->r, err, sizeof(err)));
    assert_non_null(strstr(err, "account alice: device_authorization_url must be https://"));
    c = ok;
    c.device_authorization_url = NULL;
    assert_null(device_code_start(f->h, &c, prompt_cb, done_cb, &f->r, err, sizeof(err)));
    assert_non_null(strstr(err, "device_authorization_url"));
    c = ok;
    c.token_url = "ftp://127.0.0.1/token";
    assert_null(device_code_start(f->h, &c, prompt_cb, done_cb, &f->r, err, sizeof(err)));
    assert_non_null(strstr(err, "token_url must be https://"));
    c = ok;
    c.client_id = "";
    assert_null(device_code_start(f->h, &c, prompt_cb, done_cb, &f->r, err, sizeof(err)));
    assert_non_null(strstr(err, "client_id is required"));
    assert_null(device_code_start(f->h, &ok, prompt_cb, NULL, &f->r, err, sizeof(err)));
    assert_null(device_code_start(NULL, &ok, prompt_cb, done_cb, &f->r, err, sizeof(err)));
    run_until(f->base, NULL, 50);
    assert_int_equal(f->r.done, 0);
    assert_int_equal(f->idp.auth_hits, 0);
}

/* ---- the pure parser (oauth/device_code_parse.c), without a loop or a server ---- */

#define PARSE_OK_TAIL "\"verification_uri\":\"https://x.example/\",\"expires_in\":900"

static int parse(const char *body, struct device_code_auth *a, char *err, size_t errlen)
{
    return device_code_auth_parse(body, strlen(body), a, err, errlen);
}

static void assert_zeroed(const struct device_code_auth *a)
{
    assert_null(a->device_code);
    assert_null(a->user_code);
    assert_null(a->verification_uri);
    assert_null(a->message);
    assert_int_equal(a->expires_in, 0);
    assert_int_equal(a->interval, 0);
}

/* A body of n chars of c for a field, the rest valid. */
static char *body_with(const char *name, size_t n, char c)
{
    size_t cap = n + 256;
    char *val = malloc(n + 1), *b = malloc(cap);
    assert_non_null(val);
    assert_non_null(b);
    memset(val, c, n);
    val[n] = '\0';
    if (strcmp(name, "device_code") == 0)
        snprintf(b, cap, "{\"device_code\":\"%s\",\"user_code\":\"AB\"," PARSE_OK_TAIL "}", val);
    else if (strcmp(name, "user_code") == 0)
        snprintf(b, cap, "{\"device_code\":\"dc\",\"user_code\":\"%s\"," PARSE_OK_TAIL "}", val);
    else if (strcmp(name, "verification_uri") == 0)
        snprintf(b, cap,
                 "{\"device_code\":\"dc\",\"user_code\":\"AB\",\"verification_uri\":"
                 "\"https://x.example/%s\",\"expires_in\":900}",
                 val + 18);
    else
        snprintf(b, cap,
                 "{\"device_code\":\"dc\",\"user_code\":\"AB\"," PARSE_OK_TAIL
                 ",\"message\":\"%s\"}",
                 val);
    free(val);
    return b;
}

static void test_parse_entra_answer(void **state)
{
    struct device_code_auth a;
    char err[256] = "";
    (void)state;
    assert_int_equal(parse(AUTH_OK, &a, err, sizeof(err)), 0);
    assert_string_equal(a.device_code, DEVICE_CODE);
    assert_string_equal(a.user_code, USER_CODE);
    assert_string_equal(a.verification_uri, "https://microsoft.com/devicelogin");
    assert_non_null(strstr(a.message, "enter the code " USER_CODE " to authenticate."));
    assert_int_equal(a.expires_in, 900);
    assert_int_equal(a.interval, 1);
    device_code_auth_clear(&a);
    assert_zeroed(&a);
    device_code_auth_clear(&a); /* twice, and NULL: harmless */
    device_code_auth_clear(NULL);
}

/* Bytes, not a C string: only len of them are read. */
static void test_parse_takes_len_bytes(void **state)
{
    static const char two[] = AUTH_OK "{\"trailing\":1}";
    struct device_code_auth a;
    char err[256];
    (void)state;
    assert_int_equal(device_code_auth_parse(two, strlen(AUTH_OK), &a, err, sizeof(err)), 0);
    assert_string_equal(a.user_code, USER_CODE);
    device_code_auth_clear(&a);
    assert_int_equal(device_code_auth_parse(two, strlen(AUTH_OK) - 1, &a, err, sizeof(err)), -1);
    assert_zeroed(&a);
    /* What follows the object is not looked at (cJSON_ParseWithLength, as for token answers). */
    assert_int_equal(device_code_auth_parse(two, sizeof(two) - 1, &a, err, sizeof(err)), 0);
    device_code_auth_clear(&a);
    assert_int_equal(device_code_auth_parse(NULL, 0, &a, err, sizeof(err)), -1);
    assert_zeroed(&a);
}

/* Google's names and strings, missing and zero interval, long lives, numbers as strings. */
static void test_parse_numbers(void **state)
{
    static const struct {
        const char *tail;
        int64_t expires_in, interval; /* expires_in 0: refused */
    } cases[] = {
        {"\"expires_in\":1800", 1800, 5},
        {"\"expires_in\":\"1800\",\"interval\":\"5\"", 1800, 5},
        {"\"expires_in\":1800,\"interval\":null", 1800, 5},
        {"\"expires_in\":1800,\"interval\":0", 1800, 1},
        {"\"expires_in\":1800,\"interval\":0.5", 1800, 1},
        {"\"expires_in\":1800,\"interval\":60", 1800, 60},
        {"\"expires_in\":1800,\"interval\":\"60\"", 1800, 60},
        {"\"expires_in\":1800,\"interval\":60.5", 1800, 60}, /* the fraction is dropped */
        {"\"expires_in\":1800,\"interval\":60.000001e0", 1800, 60},
        {"\"expires_in\":1800,\"interval\":61", 0, 0},
        {"\"expires_in\":1800,\"interval\":\"-1\"", 0, 0},
        {"\"expires_in\":1800,\"interval\":\"\"", 0, 0},
        {"\"expires_in\":1800,\"interval\":true", 0, 0},
        {"\"expires_in\":1800,\"interval\":[5]", 0, 0},
        {"\"expires_in\":3600", 3600, 5},
        {"\"expires_in\":3601", 3600, 5},
        {"\"expires_in\":1e9", 3600, 5},
        {"\"expires_in\":\"1000000000\"", 3600, 5},
        {"\"expires_in\":1.5", 1, 5},
        {"\"expires_in\":1e10", 0, 0},
        {"\"expires_in\":\"1000000001\"", 0, 0},
        {"\"expires_in\":\"00000000900\"", 0, 0}, /* more than 10 digits */
        {"\"expires_in\":\"0000000900\"", 900, 5},
        {"\"expires_in\":\"9e2\"", 0, 0},
        {"\"expires_in\":\" 900\"", 0, 0},
        {"\"expires_in\":0.5", 0, 0},
        {"\"expires_in\":\"0\"", 0, 0},
        {"\"expires_in\":null", 0, 0},
        {"\"expires_in\":false", 0, 0},
        {"\"expires_in\":{}", 0, 0},
        {"\"expires_in\":-1e300", 0, 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[512], err[256] = "";
        struct device_code_auth a;
        snprintf(body, sizeof(body),
                 "{\"device_code\":\"AH-1ng2\",\"user_code\":\"GQVQ-JKEC\","
                 "\"verification_url\":\"https://www.google.com/device\",%s}",
                 cases[i].tail);
        int rc = parse(body, &a, err, sizeof(err));
        if (rc != (cases[i].expires_in ? 0 : -1) ||
            (rc == 0 && (a.expires_in != cases[i].expires_in || a.interval != cases[i].interval)))
            fail_msg("case %zu (%s): rc=%d expires_in=%lld interval=%lld err=%s", i, cases[i].tail,
                     rc, (long long)a.expires_in, (long long)a.interval, err);
        if (rc == 0) {
            assert_string_equal(a.verification_uri, "https://www.google.com/device");
            assert_null(a.message);
        } else {
            assert_zeroed(&a);
            assert_true(strstr(err, "expires_in") || strstr(err, "interval"));
        }
        device_code_auth_clear(&a);
    }
}

/* verification_uri wins over verification_url; a non-string one counts as absent. */
static void test_parse_uri_names(void **state)
{
    struct device_code_auth a;
    char err[256];
    (void)state;
    assert_int_equal(parse("{\"device_code\":\"dc\",\"user_code\":\"AB\",\"expires_in\":9,"
                           "\"verification_uri\":\"https://a.example/\","
                           "\"verification_url\":\"https://b.example/\"}",
                           &a, err, sizeof(err)),
                     0);
    assert_string_equal(a.verification_uri, "https://a.example/");
    device_code_auth_clear(&a);
    assert_int_equal(parse("{\"device_code\":\"dc\",\"user_code\":\"AB\",\"expires_in\":9,"
                           "\"verification_uri\":7,\"verification_url\":\"https://b.example/\"}",
                           &a, err, sizeof(err)),
                     0);
    assert_string_equal(a.verification_uri, "https://b.example/");
    device_code_auth_clear(&a);
    assert_int_equal(parse("{\"device_code\":\"dc\",\"user_code\":\"AB\",\"expires_in\":9,"
                           "\"verification_uri\":\"http://127.0.0.1:8080/device\"}",
                           &a, err, sizeof(err)),
                     0);
    assert_string_equal(a.verification_uri, "http://127.0.0.1:8080/device");
    device_code_auth_clear(&a);
    assert_int_equal(parse("{\"device_code\":\"dc\",\"user_code\":\"AB\",\"expires_in\":9,"
                           "\"verification_uri\":\"HTTPS://a.example/\"}",
                           &a, err, sizeof(err)),
                     -1);
    assert_string_equal(err, "verification_uri is not an https:// URL");
}

/* Each field at its limit passes, one byte more does not. */
static void test_parse_lengths(void **state)
{
    static const struct {
        const char *name;
        size_t max;
        char c;
    } fields[] = {
        {"device_code", 4096, 'D'},
        {"user_code", 64, ' '},
        {"verification_uri", 512, 'u'},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        struct device_code_auth a;
        char err[256] = "";
        char *ok = body_with(fields[i].name, fields[i].max, fields[i].c);
        char *big = body_with(fields[i].name, fields[i].max + 1, fields[i].c);
        if (parse(ok, &a, err, sizeof(err)) != 0)
            fail_msg("%s of %zu: %s", fields[i].name, fields[i].max, err);
        device_code_auth_clear(&a);
        assert_int_equal(parse(big, &a, err, sizeof(err)), -1);
        assert_non_null(strstr(err, fields[i].name));
        assert_zeroed(&a);
        free(ok);
        free(big);
    }
}

/* The message as a terminal gets it. */
static void test_parse_message(void **state)
{
    static const struct {
        const char *json; /* the message, JSON-escaped */
        const char *want; /* NULL: none left */
    } cases[] = {
        {"plain text", "plain text"},
        {"  lead\\r\\n\\r\\ntrail \\t ", "  lead trail"},
        {"\\u001b[31mred\\u001b[0m", "[31mred [0m"},
        {"8-bit CSI \\u009b31m, NEL \\u0085, bidi \\u202eevil\\u202c \\u2066x\\u2069",
         "8-bit CSI 31m, NEL , bidi evil x"},
        {"St\\u00e4dte \\u2192 \\ud83d\\ude00 \\u00a0nbsp",
         "St\xc3\xa4"
         "dte \xe2\x86\x92 \xf0\x9f\x98\x80 \xc2\xa0nbsp"},
        {"\\u0007\\u007f\\u0000", NULL},
        {"", NULL},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[512], err[256];
        struct device_code_auth a;
        snprintf(body, sizeof(body),
                 "{\"device_code\":\"dc\",\"user_code\":\"AB\"," PARSE_OK_TAIL
                 ",\"message\":\"%s\"}",
                 cases[i].json);
        assert_int_equal(parse(body, &a, err, sizeof(err)), 0);
        if (cases[i].want)
            assert_string_equal(a.message, cases[i].want);
        else
            assert_null(a.message);
        device_code_auth_clear(&a);
    }
}

/* Raw bytes cJSON lets through: invalid UTF-8, overlong forms, surrogates, beyond U+10FFFF. */
static void test_parse_message_raw_utf8(void **state)
{
    static const struct {
        const char *raw, *want;
    } cases[] = {
        {"a\xff"
         "b\xc0\xaf"
         "c",
         "abc"}, /* 0xff; overlong '/' */
        {"a\xe0\x80\xaf"
         "b",
         "ab"}, /* overlong, 3 bytes */
        {"a\xed\xa0\x80"
         "b",
         "ab"}, /* a surrogate */
        {"a\xf4\x90\x80\x80"
         "b\xf5\x80\x80\x80",
         "ab"}, /* above U+10FFFF */
        {"a\xc3"
         "b\xe2\x82"
         "c",
         "abc"}, /* cut sequences */
        {"a\xc2\x9b"
         "b",
         "ab"}, /* C1 CSI */
        {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[512], err[256];
        struct device_code_auth a;
        snprintf(body, sizeof(body),
                 "{\"device_code\":\"dc\",\"user_code\":\"AB\"," PARSE_OK_TAIL
                 ",\"message\":\"%s\"}",
                 cases[i].raw);
        assert_int_equal(parse(body, &a, err, sizeof(err)), 0);
        if (!a.message || strcmp(a.message, cases[i].want) != 0)
            fail_msg("case %zu: got %s", i, a.message ? a.message : "(none)");
        device_code_auth_clear(&a);
    }
}

/* Cut to 1024 bytes, never inside a character. */
static void test_parse_message_cut(void **state)
{
    char *body = body_with("message", 2000, 'm'), err[256];
    char *at;
    struct device_code_auth a;
    (void)state;
    assert_int_equal(parse(body, &a, err, sizeof(err)), 0);
    assert_int_equal(strlen(a.message), 1024);
    device_code_auth_clear(&a);
    /* 1023 bytes, then a 2-byte character: the character does not fit. */
    at = strstr(body, "\"message\":\"") + 11;
    memcpy(at + 1023, "\xc3\xa4\"}", 5);
    assert_int_equal(parse(body, &a, err, sizeof(err)), 0);
    assert_int_equal(strlen(a.message), 1023);
    device_code_auth_clear(&a);
    /* 1022 bytes, then the same: it does. */
    memcpy(at + 1022, "\xc3\xa4\"}", 5);
    assert_int_equal(parse(body, &a, err, sizeof(err)), 0);
    assert_int_equal(strlen(a.message), 1024);
    assert_memory_equal(a.message + 1022, "\xc3\xa4", 2);
    device_code_auth_clear(&a);
    free(body);
}

/* What is refused says which field, leaves nothing behind, and never quotes the body. */
static void test_parse_refusals(void **state)
{
    static const struct {
        const char *body, *why;
    } cases[] = {
        {"", "not a JSON object"},
        {"[\"" DEVICE_CODE "\"]", "not a JSON object"},
        {"\"" DEVICE_CODE "\"", "not a JSON object"},
        {"{\"device_code\":\"" DEVICE_CODE "\"", "not a JSON object"},
        {"{\"error\":\"invalid_client\",\"error_description\":\"AADSTS7000215: Invalid client "
         "secret provided.\",\"error_codes\":[7000215]}",
         "device_code is missing"},
        {"{\"device_code\":[\"" DEVICE_CODE "\"],\"user_code\":\"AB\"," PARSE_OK_TAIL "}",
         "device_code is missing"},
        {"{\"device_code\":\"" DEVICE_CODE " x\",\"user_code\":\"AB\"," PARSE_OK_TAIL "}",
         "device_code is missing"},
        {"{\"device_code\":\"" DEVICE_CODE "\\u00e4\",\"user_code\":\"AB\"," PARSE_OK_TAIL "}",
         "device_code is missing"},
        {"{\"device_code\":\"" DEVICE_CODE "\",\"user_code\":\"\"," PARSE_OK_TAIL "}",
         "user_code is missing"},
        {"{\"device_code\":\"" DEVICE_CODE "\",\"user_code\":\"AB\\u007f\"," PARSE_OK_TAIL "}",
         "user_code is missing"},
        {"{\"device_code\":\"" DEVICE_CODE "\",\"user_code\":\"" DEVICE_CODE "\","
         "\"verification_uri\":\"https://x.example/\",\"expires_in\":900}",
         "user_code is missing"},
        {"{\"device_code\":\"" DEVICE_CODE "\",\"user_code\":\"AB\","
         "\"verification_uri\":\"http://x.example/" DEVICE_CODE "\",\"expires_in\":900}",
         "verification_uri is not an https:// URL"},
        {"{\"device_code\":\"" DEVICE_CODE "\",\"user_code\":\"AB\","
         "\"verification_uri\":\"\",\"expires_in\":900}",
         "verification_uri is missing"},
        {"{\"device_code\":\"" DEVICE_CODE "\",\"user_code\":\"AB\","
         "\"verification_uri\":\"https://x.example/\",\"expires_in\":\"" DEVICE_CODE "\"}",
         "expires_in is missing"},
        {"{\"device_code\":\"" DEVICE_CODE "\",\"user_code\":\"AB\"," PARSE_OK_TAIL
         ",\"interval\":\"" DEVICE_CODE "\"}",
         "interval is not a number of seconds between 0 and 60"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct device_code_auth a;
        char err[512] = "";
        if (parse(cases[i].body, &a, err, sizeof(err)) != -1 || !strstr(err, cases[i].why))
            fail_msg("case %zu: err=%s", i, err);
        assert_zeroed(&a);
        assert_no_secrets(err);
        assert_null(strstr(err, "x.example"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_success_after_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_confidential_client_sends_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_down_adds_five_seconds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_declined, setup, teardown),
        cmocka_unit_test_setup_teardown(test_access_denied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_verification_code, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry_while_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_error_then_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_errors_until_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_failures_until_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_refresh_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idp_error_with_aadsts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_device_authorization_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_authorization_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_authorization_answer_normalised, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_between_polls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_before_prompt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
        cmocka_unit_test(test_parse_entra_answer),
        cmocka_unit_test(test_parse_takes_len_bytes),
        cmocka_unit_test(test_parse_numbers),
        cmocka_unit_test(test_parse_uri_names),
        cmocka_unit_test(test_parse_lengths),
        cmocka_unit_test(test_parse_message),
        cmocka_unit_test(test_parse_message_raw_utf8),
        cmocka_unit_test(test_parse_message_cut),
        cmocka_unit_test(test_parse_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
