/* oauth/http.c against an in-process libevent HTTP server on 127.0.0.1, in the same loop.
 * No test sends anything beyond loopback: non-loopback http:// must be refused before any
 * socket exists. */
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

enum srv_mode { SRV_JSON, SRV_500, SRV_BIG, SRV_BIG_CHUNKED, SRV_HANG };

struct srv {
    struct event_base *base;
    struct evhttp *http;
    int port;
    enum srv_mode mode;
    int hits;
    char method[16];
    char body[4096];
    char ctype[128];
    char ua[128];
    char uri[256];
};

static void srv_handler(struct evhttp_request *req, void *arg)
{
    struct srv *s = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    struct evkeyvalq *hdrs = evhttp_request_get_input_headers(req);
    const char *ct = evhttp_find_header(hdrs, "Content-Type");
    const char *ua = evhttp_find_header(hdrs, "User-Agent");
    size_t n = evbuffer_get_length(in);
    s->hits++;
    if (n >= sizeof(s->body))
        n = sizeof(s->body) - 1;
    evbuffer_copyout(in, s->body, n);
    s->body[n] = '\0';
    snprintf(s->ctype, sizeof(s->ctype), "%s", ct ? ct : "");
    snprintf(s->ua, sizeof(s->ua), "%s", ua ? ua : "");
    snprintf(s->uri, sizeof(s->uri), "%s", evhttp_request_get_uri(req));
    snprintf(s->method, sizeof(s->method), "%s",
             evhttp_request_get_command(req) == EVHTTP_REQ_POST ? "POST" : "other");

    struct evbuffer *out = evbuffer_new();
    assert_non_null(out);
    switch (s->mode) {
    case SRV_JSON:
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "application/json");
        evbuffer_add_printf(out, "{\"echo_len\":%zu}", n);
        evhttp_send_reply(req, 200, "OK", out);
        break;
    case SRV_500:
        evbuffer_add_printf(out, "internal trouble");
        evhttp_send_reply(req, 500, "Internal Server Error", out);
        break;
    case SRV_BIG: {
        size_t big = 2 * 1024 * 1024;
        char *b = malloc(big);
        assert_non_null(b);
        memset(b, 'x', big);
        evbuffer_add(out, b, big);
        free(b);
        evhttp_send_reply(req, 200, "OK", out);
        break;
    }
    case SRV_BIG_CHUNKED: {
        /* no Content-Length: curl cannot refuse up front, the write callback must cut */
        char *b = malloc(256 * 1024);
        assert_non_null(b);
        memset(b, 'y', 256 * 1024);
        evhttp_send_reply_start(req, 200, "OK");
        for (int i = 0; i < 8; i++) {
            evbuffer_add(out, b, 256 * 1024);
            evhttp_send_reply_chunk(req, out);
        }
        evhttp_send_reply_end(req);
        free(b);
        break;
    }
    case SRV_HANG:
        /* never answer: the client times out or cancels; evhttp frees req on close */
        break;
    }
    evbuffer_free(out);
}

static void srv_start(struct srv *s, struct event_base *base)
{
    memset(s, 0, sizeof(*s));
    s->base = base;
    s->http = evhttp_new(base);
    assert_non_null(s->http);
    evhttp_set_gencb(s->http, srv_handler, s);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(s->http, "127.0.0.1", 0);
    assert_non_null(bs);
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    assert_int_equal(getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sin, &sl), 0);
    s->port = ntohs(sin.sin_port);
    assert_true(s->port > 0);
}

/* ---- loop helpers ---- */

static void flag_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(int *)arg = 1;
}

/* Run the loop until *done or ms elapse. */
static void run_until(struct event_base *base, const int *done, int ms)
{
    int expired = 0;
    struct event *t = evtimer_new(base, flag_cb, &expired);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    assert_non_null(t);
    evtimer_add(t, &tv);
    while (!(done && *done) && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(t);
}

struct result {
    int calls;
    long status;
    size_t len;
    char body[256];
    char err[256];
    int body_nul_terminated;
    struct http **free_in_cb;
};

static void result_cb(void *arg, long status, const char *body, size_t len, const char *err)
{
    struct result *r = arg;
    r->calls++;
    r->status = status;
    r->len = len;
    assert_non_null(body);
    r->body_nul_terminated = body[len] == '\0';
    snprintf(r->body, sizeof(r->body), "%.*s", (int)(len < 255 ? len : 255), body);
    snprintf(r->err, sizeof(r->err), "%s", err ? err : "");
    if (r->free_in_cb && *r->free_in_cb) {
        http_free(*r->free_in_cb);
        *r->free_in_cb = NULL;
    }
}

struct fixture {
    struct event_base *base;
    struct srv srv;
    struct http *h;
    char url[128];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->base = event_base_new();
    assert_non_null(f->base);
    srv_start(&f->srv, f->base);
    f->h = http_new(f->base);
    assert_non_null(f->h);
    snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d/token", f->srv.port);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    http_free(f->h);
    evhttp_free(f->srv.http);
    event_base_free(f->base);
    free(f);
    return 0;
}

static void test_post_form(void **state)
{
    struct fixture *f = *state;
    struct result r = {0};
    char *form = NULL;
    assert_int_equal(http_form_add(&form, "grant_type", "client_credentials"), 0);
    assert_int_equal(http_form_add(&form, "client_secret", "s3cr&t"), 0);
    assert_non_null(http_post_form(f->h, f->url, form, NULL, 5000, result_cb, &r));
    /* the form was copied: the caller may wipe and free its own at once */
    memset(form, 'Z', strlen(form));
    free(form);
    assert_int_equal(r.calls, 0); /* never called back before returning */
    run_until(f->base, &r.calls, 5000);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.err, "");
    assert_true(r.body_nul_terminated);
    assert_string_equal(r.body, "{\"echo_len\":52}");
    assert_int_equal(r.len, strlen("{\"echo_len\":52}"));
    assert_string_equal(f->srv.method, "POST");
    assert_string_equal(f->srv.uri, "/token");
    assert_string_equal(f->srv.body, "grant_type=client_credentials&client_secret=s3cr%26t");
    assert_string_equal(f->srv.ctype, "application/x-www-form-urlencoded");
    assert_string_equal(f->srv.ua, "smtp-oauth-proxy/0.1");
}

static void test_localhost_name(void **state)
{
    /* "localhost" is resolved by curl itself (never DNS); the server listens on 127.0.0.1 */
    struct fixture *f = *state;
    struct result r = {0};
    char url[128];
    snprintf(url, sizeof(url), "http://localhost:%d/token", f->srv.port);
    assert_non_null(http_post_form(f->h, url, "a=b", NULL, 5000, result_cb, &r));
    run_until(f->base, &r.calls, 5000);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(f->srv.body, "a=b");
}

static void test_many_at_once(void **state)
{
    struct fixture *f = *state;
    struct result r[5];
    memset(r, 0, sizeof(r));
    for (int i = 0; i < 5; i++)
        assert_non_null(http_post_form(f->h, f->url, "a=b", NULL, 5000, result_cb, &r[i]));
    int done = 0;
    for (int tries = 0; tries < 100 && done < 5; tries++) {
        run_until(f->base, NULL, 50);
        done = 0;
        for (int i = 0; i < 5; i++)
            done += r[i].calls;
    }
    for (int i = 0; i < 5; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 200);
    }
    assert_int_equal(f->srv.hits, 5);
}

static void test_status_500(void **state)
{
    struct fixture *f = *state;
    struct result r = {0};
    f->srv.mode = SRV_500;
    assert_non_null(http_post_form(f->h, f->url, "a=b", NULL, 5000, result_cb, &r));
    run_until(f->base, &r.calls, 5000);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, 500);
    assert_string_equal(r.body, "internal trouble");
    assert_string_equal(r.err, ""); /* an HTTP answer is not a transport error */
}

static void test_body_too_big(void **state)
{
    struct fixture *f = *state;
    enum srv_mode modes[] = {SRV_BIG, SRV_BIG_CHUNKED};
    for (size_t i = 0; i < 2; i++) {
        struct result r = {0};
        f->srv.mode = modes[i];
        assert_non_null(http_post_form(f->h, f->url, "a=b", NULL, 5000, result_cb, &r));
        run_until(f->base, &r.calls, 5000);
        assert_int_equal(r.calls, 1);
        assert_int_equal(r.status, 0);
        assert_int_equal(r.len, 0);
        assert_non_null(strstr(r.err, "larger than 1048576"));
    }
}

static void test_closed_port(void **state)
{
    struct fixture *f = *state;
    struct result r = {0};
    char url[128];
    /* a port that was just free: bind, read it, close */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t sl = sizeof(sin);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    close(fd);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/token", ntohs(sin.sin_port));
    assert_non_null(http_post_form(f->h, url, "a=b", NULL, 5000, result_cb, &r));
    run_until(f->base, &r.calls, 5000);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, 0);
    assert_true(strlen(r.err) > 0);
    assert_int_equal(r.len, 0);

    /* https to a plain HTTP server: the TLS handshake fails, verification stays on */
    struct result r2 = {0};
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/token", f->srv.port);
    assert_non_null(http_post_form(f->h, url, "a=b", "/nonexistent/ca.pem", 5000, result_cb, &r2));
    run_until(f->base, &r2.calls, 5000);
    assert_int_equal(r2.calls, 1);
    assert_int_equal(r2.status, 0);
    assert_true(strlen(r2.err) > 0);
}

static void test_timeout(void **state)
{
    struct fixture *f = *state;
    struct result r = {0};
    f->srv.mode = SRV_HANG;
    assert_non_null(http_post_form(f->h, f->url, "a=b", NULL, 300, result_cb, &r));
    run_until(f->base, &r.calls, 5000);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.err, "timed out"));
    assert_int_equal(f->srv.hits, 1);
}

static void test_cancel(void **state)
{
    struct fixture *f = *state;
    struct result r = {0}, other = {0};
    f->srv.mode = SRV_HANG;
    struct http_req *req = http_post_form(f->h, f->url, "a=b", NULL, 2000, result_cb, &r);
    assert_non_null(req);
    run_until(f->base, &f->srv.hits, 5000);
    assert_int_equal(f->srv.hits, 1);
    http_cancel(req);
    run_until(f->base, NULL, 300);
    assert_int_equal(r.calls, 0);

    /* cancelled before it even started; the loop goes on serving others */
    req = http_post_form(f->h, f->url, "a=b", NULL, 2000, result_cb, &r);
    assert_non_null(req);
    http_cancel(req);
    f->srv.mode = SRV_JSON;
    assert_non_null(http_post_form(f->h, f->url, "a=b", NULL, 5000, result_cb, &other));
    run_until(f->base, &other.calls, 5000);
    assert_int_equal(other.calls, 1);
    assert_int_equal(other.status, 200);
    assert_int_equal(r.calls, 0);
    http_cancel(NULL);
}

static void test_free_with_requests_in_flight(void **state)
{
    struct fixture *f = *state;
    struct result r[3];
    memset(r, 0, sizeof(r));
    f->srv.mode = SRV_HANG;
    for (int i = 0; i < 3; i++)
        assert_non_null(http_post_form(f->h, f->url, "a=b", NULL, 2000, result_cb, &r[i]));
    run_until(f->base, NULL, 200);
    http_free(f->h);
    f->h = NULL;
    run_until(f->base, NULL, 200);
    for (int i = 0; i < 3; i++)
        assert_int_equal(r[i].calls, 0);
    http_free(NULL);
}

static void test_free_inside_callback(void **state)
{
    struct fixture *f = *state;
    struct result a = {0}, b = {0};
    a.free_in_cb = &f->h;
    b.free_in_cb = &f->h;
    assert_non_null(http_post_form(f->h, f->url, "a=b", NULL, 5000, result_cb, &a));
    assert_non_null(http_post_form(f->h, f->url, "a=b", NULL, 5000, result_cb, &b));
    int any = 0;
    while (!any) {
        run_until(f->base, NULL, 20);
        any = a.calls + b.calls;
    }
    /* the first answer freed h: the other request was dropped without a callback */
    assert_int_equal(a.calls + b.calls, 1);
    assert_null(f->h);
    run_until(f->base, NULL, 200);
    assert_int_equal(a.calls + b.calls, 1);
}

static void test_refuse_non_loopback_http(void **state)
{
    struct fixture *f = *state;
    struct result r = {0};
    /* all refused before any socket or DNS query: NULL at once, callback never runs */
    const char *refused[] = {
        "http://192.0.2.1/",
        "http://192.0.2.1:80/token",
        "http://example.com/token",
        "http://127.0.0.1.example.com/",
        "http://localhost.example.com/",
        "http://[2001:db8::1]/",
        "http://[::ffff:192.0.2.1]/",
        "ftp://127.0.0.1/",
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
        "not a url",
        "",
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        assert_null(http_post_form(f->h, refused[i], "a=b", NULL, 1000, result_cb, &r));
    run_until(f->base, NULL, 50);
    assert_int_equal(r.calls, 0);
    assert_int_equal(f->srv.hits, 0);
    assert_null(http_post_form(NULL, f->url, "a=b", NULL, 1000, result_cb, &r));
    assert_null(http_post_form(f->h, f->url, NULL, NULL, 1000, result_cb, &r));
}

static void test_url_is_loopback(void **state)
{
    (void)state;
    assert_int_equal(http_url_is_loopback("http://127.0.0.1/"), 1);
    assert_int_equal(http_url_is_loopback("http://127.0.0.1:8080/token"), 1);
    assert_int_equal(http_url_is_loopback("http://127.5.6.7/"), 1);
    assert_int_equal(http_url_is_loopback("http://localhost/x"), 1);
    assert_int_equal(http_url_is_loopback("http://LOCALHOST:99/x"), 1);
    assert_int_equal(http_url_is_loopback("http://[::1]:8080/x"), 1);
    assert_int_equal(http_url_is_loopback("https://127.0.0.1/"), 1);
    assert_int_equal(http_url_is_loopback("https://login.microsoftonline.com/t/oauth2/v2.0/token"),
                     0);
    assert_int_equal(http_url_is_loopback("http://128.0.0.1/"), 0);
    assert_int_equal(http_url_is_loopback("http://126.255.255.255/"), 0);
    assert_int_equal(http_url_is_loopback("http://127.0.0.1.nip.io/"), 0);
    assert_int_equal(http_url_is_loopback("http://evil.example#@127.0.0.1/"), 0);
    assert_int_equal(http_url_is_loopback("http://127.0.0.1@evil.example/"), 0);
    assert_int_equal(http_url_is_loopback("http://[::2]/"), 0);
    assert_int_equal(http_url_is_loopback("ftp://127.0.0.1/"), 0);
    assert_int_equal(http_url_is_loopback("127.0.0.1"), 0);
    assert_int_equal(http_url_is_loopback(""), 0);
    assert_int_equal(http_url_is_loopback(NULL), 0);
}

static void test_form_add(void **state)
{
    (void)state;
    char *form = NULL;
    assert_int_equal(http_form_add(&form, "grant_type", "client_credentials"), 0);
    assert_string_equal(form, "grant_type=client_credentials");
    assert_int_equal(http_form_add(&form, "scope", "https://outlook.office365.com/.default"), 0);
    assert_string_equal(form, "grant_type=client_credentials"
                              "&scope=https%3A%2F%2Foutlook.office365.com%2F.default");
    free(form);
    form = NULL;
    assert_int_equal(http_form_add(&form, "k", "a b&c=d+e%f~_.-\xc3\xa9\x01"), 0);
    assert_string_equal(form, "k=a%20b%26c%3Dd%2Be%25f~_.-%C3%A9%01");
    assert_int_equal(http_form_add(&form, "empty", ""), 0);
    assert_string_equal(form, "k=a%20b%26c%3Dd%2Be%25f~_.-%C3%A9%01&empty=");
    free(form);
    form = NULL;
    assert_int_equal(http_form_add(&form, "a&b", "1"), 0);
    assert_string_equal(form, "a%26b=1");
    free(form);
    assert_int_equal(http_form_add(NULL, "a", "b"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_post_form, setup, teardown),
        cmocka_unit_test_setup_teardown(test_localhost_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_500, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_too_big, setup, teardown),
        cmocka_unit_test_setup_teardown(test_closed_port, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_requests_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_inside_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_non_loopback_http, setup, teardown),
        cmocka_unit_test(test_url_is_loopback),
        cmocka_unit_test(test_form_add),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
