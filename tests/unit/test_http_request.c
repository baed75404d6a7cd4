/* oauth/http.c's general request (http_request, for Microsoft Graph) against an in-process
 * evhttp server on 127.0.0.1: method, headers (Authorization, Content-Type, Content-Range),
 * a body of several MB, Retry-After and Location back, timeouts, and what is refused before any
 * socket exists. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "oauth/http.h"
#include "token_endpoint_fixture.h"

enum mode { M_ECHO, M_RETRY_SECONDS, M_RETRY_DATE, M_CREATED, M_HANG };

struct srv {
    enum mode mode;
    int hits;
    char method[16];
    char auth[256];
    char ctype[128];
    char range[128];
    char expect[64];
    char uri[512];
    size_t body_len;
    unsigned char first, last;
};

static const char *cmd_name(enum evhttp_cmd_type c)
{
    switch (c) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    default:
        return "other";
    }
}

static void hdr(struct evkeyvalq *h, const char *name, char *out, size_t cap)
{
    const char *v = evhttp_find_header(h, name);
    snprintf(out, cap, "%s", v ? v : "");
}

static void srv_cb(struct evhttp_request *req, void *arg)
{
    struct srv *s = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    s->hits++;
    snprintf(s->method, sizeof(s->method), "%s", cmd_name(evhttp_request_get_command(req)));
    hdr(h, "Authorization", s->auth, sizeof(s->auth));
    hdr(h, "Content-Type", s->ctype, sizeof(s->ctype));
    hdr(h, "Content-Range", s->range, sizeof(s->range));
    hdr(h, "Expect", s->expect, sizeof(s->expect));
    snprintf(s->uri, sizeof(s->uri), "%s", evhttp_request_get_uri(req));
    s->body_len = evbuffer_get_length(in);
    if (s->body_len) {
        evbuffer_copyout(in, &s->first, 1);
        unsigned char *all = evbuffer_pullup(in, -1);
        s->last = all[s->body_len - 1];
    }
    struct evbuffer *out = evbuffer_new();
    switch (s->mode) {
    case M_ECHO:
        evbuffer_add_printf(out, "{\"len\":%zu}", s->body_len);
        evhttp_send_reply(req, 200, "OK", out);
        break;
    case M_RETRY_SECONDS:
        evhttp_add_header(oh, "Retry-After", "7");
        evbuffer_add_printf(out, "{\"error\":{\"code\":\"TooManyRequests\"}}");
        evhttp_send_reply(req, 429, "Too Many Requests", out);
        break;
    case M_RETRY_DATE: {
        char date[64];
        time_t t = time(NULL) + 30;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        evhttp_add_header(oh, "Retry-After", date);
        evhttp_send_reply(req, 503, "Service Unavailable", out);
        break;
    }
    case M_CREATED:
        evhttp_add_header(oh, "Location", "https://graph.example/v1.0/x?secret=1");
        evhttp_send_reply(req, 201, "Created", out);
        break;
    case M_HANG:
        break;
    }
    evbuffer_free(out);
}

struct result {
    int calls;
    long status;
    char body[256];
    char err[256];
    long long retry_after_ms;
    char location[256];
    int timed_out;
};

static void result_cb(void *arg, const struct http_response *resp)
{
    struct result *r = arg;
    r->calls++;
    r->status = resp->status;
    assert_non_null(resp->body);
    assert_int_equal(resp->body[resp->len], '\0');
    snprintf(r->body, sizeof(r->body), "%s", resp->body);
    snprintf(r->err, sizeof(r->err), "%s", resp->err ? resp->err : "");
    r->retry_after_ms = resp->retry_after_ms;
    assert_non_null(resp->location);
    snprintf(r->location, sizeof(r->location), "%s", resp->location);
    r->timed_out = resp->timed_out;
}

struct fx {
    struct event_base *base;
    struct evhttp *srv_http;
    struct srv srv;
    struct http *h;
    char url[256];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->base = event_base_new();
    f->srv_http =
        token_endpoint_new(f->base, srv_cb, &f->srv, "/v1.0/users/a%40b/x", f->url, sizeof(f->url));
    f->h = http_new(f->base);
    assert_non_null(f->h);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    http_free(f->h);
    evhttp_free(f->srv_http);
    event_base_free(f->base);
    free(f);
    return 0;
}

static void test_put_with_headers_and_big_body(void **state)
{
    struct fx *f = *state;
    struct result r = {0};
    size_t n = 10u * 320u * 1024u; /* one upload chunk */
    unsigned char *body = malloc(n);
    assert_non_null(body);
    memset(body, 'm', n);
    body[0] = 'A';
    body[n - 1] = 'Z';
    struct http_request rq = {
        .method = "PUT",
        .url = f->url,
        .bearer = "tok-secret",
        .content_type = "application/octet-stream",
        .content_range = "bytes 0-3276799/5000000",
        .body = body,
        .body_len = n,
        .timeout_ms = 10000,
    };
    struct log_capture lc;
    log_capture_start(&lc);
    assert_non_null(http_request(f->h, &rq, result_cb, &r));
    free(body); /* copied */
    run_until(f->base, &r.calls, 10000);
    char *logged = log_capture_stop(&lc);
    assert_null(strstr(logged, "tok-secret")); /* the token is never logged */
    free(logged);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.err, "");
    assert_string_equal(f->srv.method, "PUT");
    assert_string_equal(f->srv.auth, "Bearer tok-secret");
    assert_string_equal(f->srv.ctype, "application/octet-stream");
    assert_string_equal(f->srv.range, "bytes 0-3276799/5000000");
    assert_string_equal(f->srv.expect, ""); /* no 100-continue round trip */
    assert_string_equal(f->srv.uri, "/v1.0/users/a%40b/x");
    assert_int_equal(f->srv.body_len, n);
    assert_int_equal(f->srv.first, 'A');
    assert_int_equal(f->srv.last, 'Z');
    assert_string_equal(r.body, "{\"len\":3276800}");
    assert_int_equal(r.retry_after_ms, -1);
    assert_string_equal(r.location, "");
}

static void test_post_empty_delete_get(void **state)
{
    struct fx *f = *state;
    const char *methods[] = {"POST", "DELETE", "GET"};
    for (size_t i = 0; i < 3; i++) {
        struct result r = {0};
        struct http_request rq = {.method = methods[i], .url = f->url};
        assert_non_null(http_request(f->h, &rq, result_cb, &r));
        run_until(f->base, &r.calls, 10000);
        assert_int_equal(r.status, 200);
        assert_string_equal(f->srv.method, methods[i]);
        assert_int_equal(f->srv.body_len, 0);
        assert_string_equal(f->srv.auth, ""); /* no bearer: no Authorization */
    }
}

static void test_retry_after_and_location(void **state)
{
    struct fx *f = *state;
    struct result r = {0};
    struct http_request rq = {.method = "POST", .url = f->url, .body = "x", .body_len = 1};
    f->srv.mode = M_RETRY_SECONDS;
    assert_non_null(http_request(f->h, &rq, result_cb, &r));
    run_until(f->base, &r.calls, 10000);
    assert_int_equal(r.status, 429);
    assert_int_equal(r.retry_after_ms, 7000);
    assert_string_equal(r.body, "{\"error\":{\"code\":\"TooManyRequests\"}}");

    memset(&r, 0, sizeof(r));
    f->srv.mode = M_RETRY_DATE;
    assert_non_null(http_request(f->h, &rq, result_cb, &r));
    run_until(f->base, &r.calls, 10000);
    assert_int_equal(r.status, 503);
    assert_true(r.retry_after_ms >= 28000 && r.retry_after_ms <= 31000);

    memset(&r, 0, sizeof(r));
    f->srv.mode = M_CREATED;
    assert_non_null(http_request(f->h, &rq, result_cb, &r));
    run_until(f->base, &r.calls, 10000);
    assert_int_equal(r.status, 201);
    assert_string_equal(r.location, "https://graph.example/v1.0/x?secret=1");
    assert_int_equal(r.retry_after_ms, -1);
}

static void test_timeout(void **state)
{
    struct fx *f = *state;
    struct result r = {0};
    struct http_request rq = {.method = "POST", .url = f->url, .timeout_ms = 300};
    f->srv.mode = M_HANG;
    assert_non_null(http_request(f->h, &rq, result_cb, &r));
    run_until(f->base, &r.calls, 5000);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.timed_out, 1);
    assert_string_not_equal(r.err, "");
}

static void test_refused_before_any_socket(void **state)
{
    struct fx *f = *state;
    struct result r = {0};
    struct http_request rq = {.method = "POST", .url = "http://graph.example.com/v1.0"};
    assert_null(http_request(f->h, &rq, result_cb, &r)); /* plain http off loopback */
    rq.url = f->url;
    rq.method = "PATCH";
    assert_null(http_request(f->h, &rq, result_cb, &r));
    rq.method = "PUT";
    rq.body = "x";
    rq.body_len = HTTP_REQUEST_BODY_MAX + 1;
    assert_null(http_request(f->h, &rq, result_cb, &r));
    rq.body_len = 1;
    assert_null(http_request(f->h, &rq, NULL, &r));
    rq.bearer = "tok\r\nX-Injected: 1"; /* a header value with a line break */
    assert_null(http_request(f->h, &rq, result_cb, &r));
    rq.bearer = NULL;
    rq.content_type = "text/plain\n";
    assert_null(http_request(f->h, &rq, result_cb, &r));
    rq.content_type = NULL;
    assert_null(http_request(f->h, NULL, result_cb, &r));
    run_until(f->base, NULL, 100);
    assert_int_equal(r.calls, 0);
    assert_int_equal(f->srv.hits, 0);
}

static void test_cancel(void **state)
{
    struct fx *f = *state;
    struct result r = {0};
    struct http_request rq = {.method = "GET", .url = f->url};
    f->srv.mode = M_HANG;
    struct http_req *q = http_request(f->h, &rq, result_cb, &r);
    assert_non_null(q);
    run_until(f->base, NULL, 100);
    http_cancel(q);
    run_until(f->base, NULL, 100);
    assert_int_equal(r.calls, 0);
}

static void test_retry_after_parse(void **state)
{
    (void)state;
    long long now = 1445412480; /* Wed, 21 Oct 2015 07:28:00 GMT */
    assert_int_equal(http_retry_after_ms("120", now), 120000);
    assert_int_equal(http_retry_after_ms(" 5 \r\n", now), 5000);
    assert_int_equal(http_retry_after_ms("0", now), 0);
    assert_int_equal(http_retry_after_ms("99999999999999999999", now), 86400000);
    assert_int_equal(http_retry_after_ms("Wed, 21 Oct 2015 07:28:10 GMT", now), 10000);
    assert_int_equal(http_retry_after_ms("Wed, 21 Oct 2015 07:27:00 GMT", now), 0); /* past */
    assert_int_equal(http_retry_after_ms("12abc", now), -1);
    assert_int_equal(http_retry_after_ms("soon", now), -1);
    assert_int_equal(http_retry_after_ms("", now), -1);
    assert_int_equal(http_retry_after_ms(NULL, now), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_with_headers_and_big_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_empty_delete_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_after_and_location, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_before_any_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test(test_retry_after_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
