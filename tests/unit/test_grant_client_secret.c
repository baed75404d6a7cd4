/* The client-credentials grant against a token endpoint played by an in-process evhttp server
 * on 127.0.0.1. The log (stderr) is captured to prove the secret and the token never reach it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "oauth/http.h"
#include "oauth/provider.h"
#include "oauth/token_cache.h"
#include "token_endpoint_fixture.h"

#define SECRET "Sec~ret/with&special=chars+1234"
#define TOKEN "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL291dGxvb2sifQ.c2ln"

enum idp_mode {
    IDP_OK,
    IDP_OK_STRING_EXPIRES,
    IDP_BAD_SECRET,
    IDP_ECHO_SECRET,
    IDP_503,
    IDP_503_JSON,
    IDP_429,
    IDP_404_HTML,
    IDP_200_GARBAGE,
    IDP_HANG
};

struct idp {
    struct evhttp *http;
    enum idp_mode mode;
    int hits;
    char grant_type[64], client_id[64], client_secret[128], scope[128], extra[64];
    int fields;
};

static void idp_handler(struct evhttp_request *req, void *arg)
{
    struct idp *s = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    char body[2048];
    struct evkeyvalq q;
    struct evkeyval *kv;
    s->hits++;
    if (n >= sizeof(body))
        n = sizeof(body) - 1;
    evbuffer_copyout(in, body, n);
    body[n] = '\0';
    s->fields = 0;
    s->grant_type[0] = s->client_id[0] = s->client_secret[0] = s->scope[0] = s->extra[0] = '\0';
    assert_int_equal(evhttp_parse_query_str(body, &q), 0);
    for (kv = q.tqh_first; kv; kv = kv->next.tqe_next) {
        s->fields++;
        if (strcmp(kv->key, "grant_type") == 0)
            snprintf(s->grant_type, sizeof(s->grant_type), "%s", kv->value);
        else if (strcmp(kv->key, "client_id") == 0)
            snprintf(s->client_id, sizeof(s->client_id), "%s", kv->value);
        else if (strcmp(kv->key, "client_secret") == 0)
            snprintf(s->client_secret, sizeof(s->client_secret), "%s", kv->value);
        else if (strcmp(kv->key, "scope") == 0)
            snprintf(s->scope, sizeof(s->scope), "%s", kv->value);
        else
            snprintf(s->extra, sizeof(s->extra), "%s", kv->key);
    }
    evhttp_clear_headers(&q);

    struct evbuffer *out = evbuffer_new();
    assert_non_null(out);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json; charset=utf-8");
    switch (s->mode) {
    case IDP_OK:
        evbuffer_add_printf(out,
                            "{\"token_type\":\"Bearer\",\"expires_in\":3599,"
                            "\"ext_expires_in\":3599,\"access_token\":\"%s\"}",
                            TOKEN);
        evhttp_send_reply(req, 200, "OK", out);
        break;
    case IDP_OK_STRING_EXPIRES:
        evbuffer_add_printf(out,
                            "{\"token_type\":\"Bearer\",\"expires_in\":\"3599\","
                            "\"access_token\":\"%s\"}",
                            TOKEN);
        evhttp_send_reply(req, 200, "OK", out);
        break;
    case IDP_BAD_SECRET:
        evbuffer_add_printf(out, "{\"error\":\"invalid_client\",\"error_description\":"
                                 "\"AADSTS7000215: Invalid client secret provided. Ensure the "
                                 "secret being sent in the request is the client secret value, "
                                 "not the client secret ID, for a secret added to app "
                                 "'11111111-2222'.\\r\\nTrace ID: ab\\r\\nCorrelation ID: cd\\r\\n"
                                 "Timestamp: 2026-11-22 16:00:00Z\",\"error_codes\":[7000215],"
                                 "\"timestamp\":\"2026-11-22 16:00:00Z\",\"trace_id\":\"ab\","
                                 "\"correlation_id\":\"cd\",\"error_uri\":\"https://x/error\"}");
        evhttp_send_reply(req, 401, "Unauthorized", out);
        break;
    case IDP_ECHO_SECRET:
        /* a careless IdP that repeats what it was sent */
        evbuffer_add_printf(out,
                            "{\"error\":\"invalid_request\",\"error_description\":"
                            "\"bad client_secret %s for client\"}",
                            SECRET);
        evhttp_send_reply(req, 400, "Bad Request", out);
        break;
    case IDP_503:
        evbuffer_add_printf(out, "<html>Service Unavailable</html>");
        evhttp_send_reply(req, 503, "Service Unavailable", out);
        break;
    case IDP_503_JSON:
        evbuffer_add_printf(out, "{\"error\":\"temporarily_unavailable\",\"error_description\":"
                                 "\"AADSTS90033: A transient error has occurred.\"}");
        evhttp_send_reply(req, 503, "Service Unavailable", out);
        break;
    case IDP_429:
        evbuffer_add_printf(out, "{}");
        evhttp_send_reply(req, 429, "Too Many Requests", out);
        break;
    case IDP_404_HTML:
        evbuffer_add_printf(out, "<html>Not Found</html>");
        evhttp_send_reply(req, 404, "Not Found", out);
        break;
    case IDP_200_GARBAGE:
        evbuffer_add_printf(out, "{\"access_token\":\"" TOKEN "\x01\"}");
        evhttp_send_reply(req, 200, "OK", out);
        break;
    case IDP_HANG:
        break;
    }
    evbuffer_free(out);
}

struct fixture {
    struct event_base *base;
    struct idp idp;
    struct http *h;
    struct provider *p;
    char url[128];
    struct log_capture lc;
};

/* Everything logged since setup. */
static char *log_text(struct fixture *f)
{
    return log_capture_text(&f->lc);
}

static void assert_log_clean(const char *s)
{
    assert_null(strstr(s, SECRET));
    assert_null(strstr(s, "Sec~ret"));
    assert_null(strstr(s, "Sec%7Eret"));
    assert_null(strstr(s, TOKEN));
    assert_null(strstr(s, "client_secret="));
}

static void assert_log_has(struct fixture *f, const char *needle)
{
    char *s = log_text(f);
    if (!strstr(s, needle))
        fail_msg("log lacks \"%s\":\n%s", needle, s);
    free(s);
}

static struct provider *make_provider(struct fixture *f, const char *provider, const char *scope)
{
    struct oauth_client_cfg cfg = {
        .account = "scanners",
        .provider = provider,
        .grant = "client_credentials",
        .token_url = f->url,
        .client_id = "11111111-2222-3333-4444-555555555555",
        .client_secret = SECRET,
        .scope = scope,
        .ca_file = NULL,
    };
    char err[256] = "";
    struct provider *p = provider_new(&cfg, f->h, err, sizeof(err));
    if (!p)
        fail_msg("provider_new: %s", err);
    return p;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->base = event_base_new();
    assert_non_null(f->base);
    f->idp.http = token_endpoint_new(f->base, idp_handler, &f->idp, "/contoso/oauth2/v2.0/token",
                                     f->url, sizeof(f->url));
    f->h = http_new(f->base);
    assert_non_null(f->h);
    log_capture_start(&f->lc);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    /* stderr back first: cmocka reports failures there */
    char *captured = log_capture_stop(&f->lc);
    assert_log_clean(captured);
    free(captured);
    provider_free(f->p);
    http_free(f->h);
    evhttp_free(f->idp.http);
    event_base_free(f->base);
    free(f);
    return 0;
}

struct result {
    int calls;
    int ok;
    char token[256];
    int64_t expires_in;
    char err[1024];
    int temporary;
};

static void result_cb(void *arg, const struct token_grant *g, const char *err, int temporary)
{
    struct result *r = arg;
    r->calls++;
    r->ok = g != NULL;
    r->temporary = temporary;
    if (g) {
        assert_null(err);
        snprintf(r->token, sizeof(r->token), "%s", g->access_token);
        r->expires_in = g->expires_in;
    } else {
        assert_non_null(err);
        snprintf(r->err, sizeof(r->err), "%s", err);
    }
}

static void request(struct fixture *f, struct result *r)
{
    memset(r, 0, sizeof(*r));
    assert_non_null(f->p->ops->request(f->p, result_cb, r));
    assert_int_equal(r->calls, 0);
    run_until(f->base, &r->calls, 5000);
    assert_int_equal(r->calls, 1);
    /* err never carries the secret, whatever the IdP said */
    assert_null(strstr(r->err, SECRET));
    assert_null(strstr(r->err, "Sec~ret"));
}

static void test_success_microsoft(void **state)
{
    struct fixture *f = *state;
    struct result r;
    f->p = make_provider(f, "microsoft", NULL);
    request(f, &r);
    assert_true(r.ok);
    assert_string_equal(r.token, TOKEN);
    assert_int_equal(r.expires_in, 3599);
    /* the form fields as the IdP decoded them */
    assert_int_equal(f->idp.fields, 4);
    assert_string_equal(f->idp.grant_type, "client_credentials");
    assert_string_equal(f->idp.client_id, "11111111-2222-3333-4444-555555555555");
    assert_string_equal(f->idp.client_secret, SECRET);
    assert_string_equal(f->idp.scope, "https://outlook.office365.com/.default");
    assert_string_equal(f->idp.extra, "");
    assert_log_has(f, "event=token_request account=scanners");
    assert_log_has(f, "url=http://127.0.0.1:");
    assert_log_has(f, "event=token_ok account=scanners status=200 expires_in=3599 duration_ms=");
}

static void test_success_generic_no_scope(void **state)
{
    struct fixture *f = *state;
    struct result r;
    f->idp.mode = IDP_OK_STRING_EXPIRES;
    f->p = make_provider(f, "oauth2", NULL);
    request(f, &r);
    assert_true(r.ok);
    assert_int_equal(r.expires_in, 3599);
    assert_int_equal(f->idp.fields, 3); /* no scope sent */
    assert_string_equal(f->idp.scope, "");

    provider_free(f->p);
    f->p = make_provider(f, "oauth2", "https://mail.google.com/");
    request(f, &r);
    assert_string_equal(f->idp.scope, "https://mail.google.com/");
}

static void test_entra_error_permanent(void **state)
{
    struct fixture *f = *state;
    struct result r;
    f->idp.mode = IDP_BAD_SECRET;
    f->p = make_provider(f, "microsoft", NULL);
    request(f, &r);
    assert_false(r.ok);
    assert_int_equal(r.temporary, 0);
    /* what to do (oauth/entra_explain.c) before the IdP's own words */
    assert_int_equal(
        strncmp(r.err, "error=invalid_client aadsts=7000215 hint=\"the client secret is wrong",
                strlen("error=invalid_client aadsts=7000215 hint=\"the client secret is wrong")),
        0);
    assert_non_null(strstr(r.err, "client_secret_file\" description=\"AADSTS7000215: "
                                  "Invalid client secret provided."));
    assert_null(strchr(r.err, '\r'));
    assert_null(strchr(r.err, '\n'));
    assert_log_has(f, "event=token_failed account=scanners temporary=0 status=401");
    assert_log_has(f, "error=invalid_client aadsts=7000215");
}

static void test_echoed_secret_redacted(void **state)
{
    struct fixture *f = *state;
    struct result r;
    f->idp.mode = IDP_ECHO_SECRET;
    f->p = make_provider(f, "microsoft", NULL);
    request(f, &r);
    assert_false(r.ok);
    assert_int_equal(r.temporary, 0);
    assert_non_null(strstr(r.err, "error=invalid_request"));
    assert_non_null(strstr(r.err, "[redacted]"));
}

static void test_http_503_temporary(void **state)
{
    struct fixture *f = *state;
    struct result r;
    f->idp.mode = IDP_503;
    f->p = make_provider(f, "microsoft", NULL);
    request(f, &r);
    assert_false(r.ok);
    assert_int_equal(r.temporary, 1);
    assert_string_equal(r.err, "HTTP 503");
    assert_log_has(f, "event=token_failed account=scanners temporary=1 status=503");

    f->idp.mode = IDP_503_JSON;
    request(f, &r);
    assert_int_equal(r.temporary, 1);
    assert_non_null(strstr(r.err, "error=temporarily_unavailable aadsts=90033"));

    f->idp.mode = IDP_429;
    request(f, &r);
    assert_int_equal(r.temporary, 1);
    assert_string_equal(r.err, "HTTP 429");
}

static void test_unusable_answers(void **state)
{
    struct fixture *f = *state;
    struct result r;
    f->p = make_provider(f, "microsoft", NULL);
    f->idp.mode = IDP_404_HTML;
    request(f, &r);
    assert_false(r.ok);
    assert_int_equal(r.temporary, 0); /* a wrong token_url */
    assert_non_null(strstr(r.err, "HTTP 404"));

    f->idp.mode = IDP_200_GARBAGE;
    request(f, &r);
    assert_false(r.ok);
    assert_int_equal(r.temporary, 1);
    assert_non_null(strstr(r.err, "0x21-0x7e"));
    assert_null(strstr(r.err, "eyJ"));
}

static void test_connect_failed(void **state)
{
    struct fixture *f = *state;
    struct result r;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sin);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    close(fd);
    snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d/token", ntohs(sin.sin_port));
    f->p = make_provider(f, "microsoft", NULL);
    request(f, &r);
    assert_false(r.ok);
    assert_int_equal(r.temporary, 1);
    assert_int_equal(strncmp(r.err, "connect failed: ", 16), 0);
    assert_log_has(f, "event=token_failed account=scanners temporary=1 status=0");
}

static void test_cancel(void **state)
{
    struct fixture *f = *state;
    struct result r = {0};
    f->idp.mode = IDP_HANG;
    f->p = make_provider(f, "microsoft", NULL);
    struct provider_req *req = f->p->ops->request(f->p, result_cb, &r);
    assert_non_null(req);
    run_until(f->base, &f->idp.hits, 5000);
    f->p->ops->cancel(req);
    run_until(f->base, NULL, 200);
    assert_int_equal(r.calls, 0);
    /* and a provider freed with nothing in flight is fine; one freed by the cache cancels */
}

static void test_bad_config(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct oauth_client_cfg ok = {
        .account = "a",
        .provider = "microsoft",
        .grant = "client_credentials",
        .token_url = "https://login.microsoftonline.com/t/oauth2/v2.0/token",
        .client_id = "id",
        .client_secret = SECRET,
    };
    struct oauth_client_cfg c;
    struct provider *p = provider_new(&ok, f->h, err, sizeof(err));
    assert_non_null(p);
    provider_free(p);

    c = ok;
    c.grant = "device_code";
    assert_null(provider_new(&c, f->h, err, sizeof(err)));
    assert_non_null(strstr(err, "not supported"));
    c = ok;
    c.provider = "google";
    assert_null(provider_new(&c, f->h, err, sizeof(err)));
    assert_non_null(strstr(err, "provider"));
    c = ok;
    c.token_url = "http://login.example.com/token";
    assert_null(provider_new(&c, f->h, err, sizeof(err)));
    assert_non_null(strstr(err, "https"));
    c = ok;
    c.token_url = NULL;
    assert_null(provider_new(&c, f->h, err, sizeof(err)));
    c = ok;
    c.client_id = "";
    assert_null(provider_new(&c, f->h, err, sizeof(err)));
    c = ok;
    c.client_secret = "";
    assert_null(provider_new(&c, f->h, err, sizeof(err)));
    assert_null(strstr(err, SECRET));
    assert_null(provider_new(NULL, f->h, err, sizeof(err)));
    provider_free(NULL);
}

/* The whole chain: cache -> grant -> http -> endpoint, one request for many waiters. */
struct waiter {
    int calls;
    char token[256];
};

static void waiter_cb(void *arg, const char *token, const char *err)
{
    struct waiter *w = arg;
    (void)err;
    w->calls++;
    snprintf(w->token, sizeof(w->token), "%s", token ? token : "");
}

static void test_through_token_cache(void **state)
{
    struct fixture *f = *state;
    struct waiter w[4];
    memset(w, 0, sizeof(w));
    struct token_cache *c = token_cache_new(make_provider(f, "microsoft", NULL), NULL);
    assert_non_null(c);
    for (int i = 0; i < 4; i++)
        assert_non_null(token_cache_get(c, waiter_cb, &w[i]));
    run_until(f->base, &w[3].calls, 5000);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(w[i].calls, 1);
        assert_string_equal(w[i].token, TOKEN);
    }
    assert_int_equal(f->idp.hits, 1);
    struct waiter again = {0};
    assert_null(token_cache_get(c, waiter_cb, &again));
    assert_string_equal(again.token, TOKEN);
    /* freed with a request in flight: cancelled, no callback */
    token_cache_invalidate(c, TOKEN);
    f->idp.mode = IDP_HANG;
    struct waiter late = {0};
    assert_non_null(token_cache_get(c, waiter_cb, &late));
    run_until(f->base, NULL, 100);
    token_cache_free(c);
    run_until(f->base, NULL, 100);
    assert_int_equal(late.calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_success_microsoft, setup, teardown),
        cmocka_unit_test_setup_teardown(test_success_generic_no_scope, setup, teardown),
        cmocka_unit_test_setup_teardown(test_entra_error_permanent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_echoed_secret_redacted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_503_temporary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unusable_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_failed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_through_token_cache, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
