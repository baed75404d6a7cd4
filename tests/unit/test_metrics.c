/* metrics: the exposition text for a small registry, label escaping, bounded reply-code labels,
 * and the HTTP side (/metrics, /healthz, 404, refused methods) over a real loopback socket. */
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

#include "oauth/token_cache.h"
#include "proxy/config/config.h"
#include "proxy/runtime/account_budget.h"
#include "proxy/runtime/metrics.h"
#include "proxy/admin/metrics_http.h"

struct fixture {
    struct config cfg;
    struct cfg_account accounts[2];
    struct cfg_device devices[3];
};

static void fixture_init(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    f->accounts[0].name = "scanners";
    f->accounts[1].name = "od\"d\\name";
    f->devices[0].name = "copier-1";
    f->devices[0].username = "copier";
    f->devices[1].name = "lab";
    f->devices[2].name = "printer";
    f->devices[2].username = "printer";
    f->cfg.accounts = f->accounts;
    f->cfg.naccounts = 2;
    f->cfg.devices = f->devices;
    f->cfg.ndevices = 3;
}

static char *render(const struct metrics *m, metrics_token_stats_fn fn, void *arg, int64_t now)
{
    struct evbuffer *b = evbuffer_new();
    assert_non_null(b);
    assert_int_equal(metrics_render(m, b, fn, arg, now), 0);
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    assert_non_null(s);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

static int stats_fn(void *arg, size_t account, struct token_cache_stats *st)
{
    (void)arg;
    if (account != 0)
        return -1; /* the second account has no cache: no token series for it */
    memset(st, 0, sizeof(*st));
    st->requests = 3;
    st->failures = 1;
    st->expires_at_wall = 1000 + 1234;
    st->reauthorize = 1;
    return 0;
}

static void test_render_exact(void **state)
{
    (void)state;
    struct fixture f;
    fixture_init(&f);
    struct metrics *m = metrics_new(&f.cfg);
    assert_non_null(m);
    metrics_listener_add(m, "127.0.0.1:2525");
    metrics_listener_add(m, "[::1]:2465");
    int a = metrics_session_opened(m, "127.0.0.1:2525");
    int b = metrics_session_opened(m, "127.0.0.1:2525");
    assert_int_equal(a, 0);
    assert_int_equal(b, 0);
    metrics_session_closed(m, a);
    metrics_message(m, &f.accounts[0], METRICS_DELIVERED, 100);
    metrics_message(m, &f.accounts[0], METRICS_DELIVERED, 23);
    metrics_message(m, &f.accounts[0], METRICS_REFUSED, 0);
    metrics_message(m, &f.accounts[1], METRICS_DEFERRED, 0);
    metrics_upstream_conn(m, &f.accounts[0], 0);
    metrics_upstream_conn(m, &f.accounts[0], 1);
    metrics_upstream_conn(m, &f.accounts[0], 1);
    metrics_upstream_reply(m, METRICS_CMD_DATA, 250, "2.0.0");
    metrics_upstream_reply(m, METRICS_CMD_DATA, 250, "2.0.0");
    metrics_upstream_reply(m, METRICS_CMD_RCPT, 550, "5.1.1");
    metrics_upstream_reply(m, METRICS_CMD_AUTH, 535, "");
    metrics_auth_failed(m, metrics_device_by_user(m, "copier"));
    metrics_auth_failed(m, metrics_device_by_user(m, "nobody"));
    metrics_auth_failed(m, metrics_device_by_user(m, "lab")); /* lab has no username */
    metrics_connection_refused(m, METRICS_REFUSED_PER_IP);
    metrics_connection_refused(m, METRICS_REFUSED_PER_IP);
    metrics_connection_refused(m, METRICS_REFUSED_AUTH_BLOCKED);
    metrics_device_limit(m, "lab", METRICS_LIMIT_MESSAGES);
    metrics_device_limit(m, "lab", METRICS_LIMIT_MESSAGES);
    metrics_device_limit(m, "copier-1", METRICS_LIMIT_BLOCKED);
    metrics_device_limit(m, "printer", METRICS_LIMIT_RECIPIENTS);
    metrics_device_limit(m, "nosuch", METRICS_LIMIT_BLOCKED); /* not a device: not counted */

    char *s = render(m, stats_fn, NULL, 1000);
    const char *want =
        "# HELP smtp_oauth_proxy_sessions_open Device sessions open now, by listener.\n"
        "# TYPE smtp_oauth_proxy_sessions_open gauge\n"
        "smtp_oauth_proxy_sessions_open{listener=\"127.0.0.1:2525\"} 1\n"
        "smtp_oauth_proxy_sessions_open{listener=\"[::1]:2465\"} 0\n"
        "# HELP smtp_oauth_proxy_sessions_total Device sessions accepted, by listener.\n"
        "# TYPE smtp_oauth_proxy_sessions_total counter\n"
        "smtp_oauth_proxy_sessions_total{listener=\"127.0.0.1:2525\"} 2\n"
        "smtp_oauth_proxy_sessions_total{listener=\"[::1]:2465\"} 0\n"
        "# HELP smtp_oauth_proxy_messages_total Messages by account and the result the device "
        "heard (delivered: upstream 2xx; refused: 5xx; deferred: 4xx; queued: 250 once committed "
        "to the spool).\n"
        "# TYPE smtp_oauth_proxy_messages_total counter\n"
        "smtp_oauth_proxy_messages_total{account=\"scanners\",result=\"delivered\"} 2\n"
        "smtp_oauth_proxy_messages_total{account=\"scanners\",result=\"refused\"} 1\n"
        "smtp_oauth_proxy_messages_total{account=\"scanners\",result=\"deferred\"} 0\n"
        "smtp_oauth_proxy_messages_total{account=\"scanners\",result=\"queued\"} 0\n"
        "smtp_oauth_proxy_messages_total{account=\"od\\\"d\\\\name\",result=\"delivered\"} 0\n"
        "smtp_oauth_proxy_messages_total{account=\"od\\\"d\\\\name\",result=\"refused\"} 0\n"
        "smtp_oauth_proxy_messages_total{account=\"od\\\"d\\\\name\",result=\"deferred\"} 1\n"
        "smtp_oauth_proxy_messages_total{account=\"od\\\"d\\\\name\",result=\"queued\"} 0\n"
        "# HELP smtp_oauth_proxy_relayed_bytes_total Message body bytes the upstream accepted, "
        "by account.\n"
        "# TYPE smtp_oauth_proxy_relayed_bytes_total counter\n"
        "smtp_oauth_proxy_relayed_bytes_total{account=\"scanners\"} 123\n"
        "smtp_oauth_proxy_relayed_bytes_total{account=\"od\\\"d\\\\name\"} 0\n"
        "# HELP smtp_oauth_proxy_upstream_connections_opened_total Upstream connections opened "
        "(each one a TLS handshake and an AUTH), by account.\n"
        "# TYPE smtp_oauth_proxy_upstream_connections_opened_total counter\n"
        "smtp_oauth_proxy_upstream_connections_opened_total{account=\"scanners\"} 1\n"
        "smtp_oauth_proxy_upstream_connections_opened_total{account=\"od\\\"d\\\\name\"} 0\n"
        "# HELP smtp_oauth_proxy_upstream_connection_reuses_total Messages sent over an already "
        "open upstream connection, by account.\n"
        "# TYPE smtp_oauth_proxy_upstream_connection_reuses_total counter\n"
        "smtp_oauth_proxy_upstream_connection_reuses_total{account=\"scanners\"} 2\n"
        "smtp_oauth_proxy_upstream_connection_reuses_total{account=\"od\\\"d\\\\name\"} 0\n"
        "# HELP smtp_oauth_proxy_upstream_replies_total Upstream replies to AUTH, MAIL, RCPT and "
        "the end of DATA, by class and enhanced status code.\n"
        "# TYPE smtp_oauth_proxy_upstream_replies_total counter\n"
        "smtp_oauth_proxy_upstream_replies_total{command=\"DATA\",class=\"2xx\",code=\"2.0.0\"} 2\n"
        "smtp_oauth_proxy_upstream_replies_total{command=\"RCPT\",class=\"5xx\",code=\"5.1.1\"} 1\n"
        "smtp_oauth_proxy_upstream_replies_total{command=\"AUTH\",class=\"5xx\",code=\"other\"} 1\n"
        "# HELP smtp_oauth_proxy_token_requests_total Token requests to the identity provider.\n"
        "# TYPE smtp_oauth_proxy_token_requests_total counter\n"
        "smtp_oauth_proxy_token_requests_total{account=\"scanners\"} 3\n"
        "# HELP smtp_oauth_proxy_token_failures_total Token requests that failed.\n"
        "# TYPE smtp_oauth_proxy_token_failures_total counter\n"
        "smtp_oauth_proxy_token_failures_total{account=\"scanners\"} 1\n"
        "# HELP smtp_oauth_proxy_token_expiry_seconds Seconds until the account's access token "
        "expires (0: it holds none).\n"
        "# TYPE smtp_oauth_proxy_token_expiry_seconds gauge\n"
        "smtp_oauth_proxy_token_expiry_seconds{account=\"scanners\"} 1234\n"
        "# HELP smtp_oauth_proxy_token_reauthorize_required 1 when a person must run "
        "`smtp-oauth-proxy authorize` for the account.\n"
        "# TYPE smtp_oauth_proxy_token_reauthorize_required gauge\n"
        "smtp_oauth_proxy_token_reauthorize_required{account=\"scanners\"} 1\n"
        "# HELP smtp_oauth_proxy_auth_failures_total Failed device logins, by the device the "
        "username belongs to (unknown: no such username).\n"
        "# TYPE smtp_oauth_proxy_auth_failures_total counter\n"
        "smtp_oauth_proxy_auth_failures_total{device=\"copier-1\"} 1\n"
        "smtp_oauth_proxy_auth_failures_total{device=\"printer\"} 0\n"
        "smtp_oauth_proxy_auth_failures_total{device=\"unknown\"} 2\n"
        "# HELP smtp_oauth_proxy_connections_refused_total Device connections refused at once "
        "with 421, by reason (per_ip: max_connections_per_ip; auth_blocked: the address failed "
        "auth_fail_limit logins; max_connections: the daemon is full).\n"
        "# TYPE smtp_oauth_proxy_connections_refused_total counter\n"
        "smtp_oauth_proxy_connections_refused_total{reason=\"per_ip\"} 2\n"
        "smtp_oauth_proxy_connections_refused_total{reason=\"auth_blocked\"} 1\n"
        "smtp_oauth_proxy_connections_refused_total{reason=\"max_connections\"} 0\n"
        "# HELP smtp_oauth_proxy_device_limit_refusals_total MAIL or RCPT of a device refused by "
        "its limits (docs/device-limits.md): max_messages_per_hour and max_recipients_per_day "
        "with 450 4.7.1, blocked with 550 5.7.1.\n"
        "# TYPE smtp_oauth_proxy_device_limit_refusals_total counter\n"
        "smtp_oauth_proxy_device_limit_refusals_total{device=\"copier-1\",limit=\"max_messages_"
        "per_hour\"} 0\n"
        "smtp_oauth_proxy_device_limit_refusals_total{device=\"copier-1\",limit=\"max_recipients_"
        "per_day\"} 0\n"
        "smtp_oauth_proxy_device_limit_refusals_total{device=\"copier-1\",limit=\"blocked\"} 1\n"
        "smtp_oauth_proxy_device_limit_refusals_total{device=\"lab\",limit=\"max_messages_per_"
        "hour\"} 2\n"
        "smtp_oauth_proxy_device_limit_refusals_total{device=\"lab\",limit=\"max_recipients_per_"
        "day\"} 0\n"
        "smtp_oauth_proxy_device_limit_refusals_total{device=\"lab\",limit=\"blocked\"} 0\n"
        "smtp_oauth_proxy_device_limit_refusals_total{device=\"printer\",limit=\"max_messages_"
        "per_hour\"} 0\n"
        "smtp_oauth_proxy_device_limit_refusals_total{device=\"printer\",limit=\"max_"
        "recipients_per_day\"} 1\n"
        "smtp_oauth_proxy_device_limit_refusals_total{device=\"printer\",limit=\"blocked\"} "
        "0\n";
    assert_string_equal(s, want);
    free(s);
    metrics_free(m);
}

static void test_escape(void **state)
{
    (void)state;
    char buf[64];
    assert_string_equal(metrics_escape(buf, sizeof(buf), "a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    assert_string_equal(metrics_escape(buf, sizeof(buf), "plain:2525"), "plain:2525");
    /* truncated, never in the middle of an escape */
    assert_string_equal(metrics_escape(buf, 4, "ab\"c"), "ab");
    assert_string_equal(metrics_escape(buf, 5, "ab\"c"), "ab\\\"");
    assert_string_equal(metrics_escape(buf, 1, "abc"), "");
}

/* The count of the series command=DATA with this class and code, -1 if absent. */
static long series(const char *text, const char *klass, const char *code)
{
    char key[160];
    snprintf(key, sizeof(key),
             "smtp_oauth_proxy_upstream_replies_total{command=\"DATA\",class=\"%s\",code=\"%s\"} ",
             klass, code);
    const char *p = strstr(text, key);
    return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

static void test_reply_codes_bounded(void **state)
{
    (void)state;
    struct fixture f;
    fixture_init(&f);
    struct metrics *m = metrics_new(&f.cfg);
    assert_non_null(m);
    metrics_upstream_reply(m, METRICS_CMD_DATA, 535, "5.7.139");
    metrics_upstream_reply(m, METRICS_CMD_DATA, 554, "5.2.252");
    metrics_upstream_reply(m, METRICS_CMD_DATA, 550, "5.7.03"); /* canonical 5.7.3 */
    metrics_upstream_reply(m, METRICS_CMD_DATA, 550, "5.7.3");
    metrics_upstream_reply(m, METRICS_CMD_DATA, 550, "5.77.1");   /* subject too big */
    metrics_upstream_reply(m, METRICS_CMD_DATA, 550, "5.7.1234"); /* detail too big */
    metrics_upstream_reply(m, METRICS_CMD_DATA, 550, "4.7.0");    /* class mismatch */
    metrics_upstream_reply(m, METRICS_CMD_DATA, 550, "5.7.x\"}");
    metrics_upstream_reply(m, METRICS_CMD_DATA, 550, NULL);
    metrics_upstream_reply(m, METRICS_CMD_DATA, 999, "9.9.9"); /* no class at all */
    char *s = render(m, NULL, NULL, 0);
    assert_int_equal(series(s, "5xx", "5.7.139"), 1);
    assert_int_equal(series(s, "5xx", "5.2.252"), 1);
    assert_int_equal(series(s, "5xx", "5.7.3"), 2);
    assert_int_equal(series(s, "5xx", "other"), 5);
    assert_int_equal(series(s, "other", "other"), 1);
    assert_null(strstr(s, "5.7.03"));
    assert_null(strstr(s, "5.77"));
    free(s);

    /* a hostile upstream cycling through every code: the series stay bounded */
    unsigned long sent = 0;
    for (int y = 0; y < 10; y++)
        for (int z = 0; z < 1000; z++) {
            char e[16];
            snprintf(e, sizeof(e), "4.%d.%d", y, z);
            metrics_upstream_reply(m, METRICS_CMD_DATA, 451, e);
            sent++;
        }
    s = render(m, NULL, NULL, 0);
    size_t lines = 0;
    long total = 0;
    for (const char *p = s;
         (p = strstr(p, "upstream_replies_total{command=\"DATA\",class=\"4xx\"")); p++) {
        const char *sp = strchr(p, '}');
        total += strtol(sp + 2, NULL, 10);
        lines++;
    }
    assert_true(lines <= 129); /* the cap, the 4 earlier series counted in, plus "other" */
    assert_int_equal(total, (long)sent);
    assert_true(series(s, "4xx", "other") > 0);
    free(s);
    metrics_free(m);
}

/* upstream = graph: requests by status (202 always, the others once seen), throttled; the lines
 * appear only for graph accounts, after everything else. */
static void test_graph_requests(void **state)
{
    (void)state;
    struct fixture f;
    fixture_init(&f);
    f.accounts[1].kind = UPSTREAM_KIND_GRAPH;
    struct metrics *m = metrics_new(&f.cfg);
    assert_non_null(m);
    char *s = render(m, NULL, NULL, 0);
    assert_non_null(strstr(s, "\n# HELP smtp_oauth_proxy_graph_requests_total Microsoft Graph "
                              "requests, by account and HTTP status (none: no answer; other: a "
                              "status not listed).\n# TYPE smtp_oauth_proxy_graph_requests_total "
                              "counter\nsmtp_oauth_proxy_graph_requests_total{account=\"od\\\"d\\\\"
                              "name\",status=\"202\"} 0\n# HELP smtp_oauth_proxy_graph_throttled_"
                              "total "));
    free(s);
    metrics_graph_request(m, &f.accounts[1], 202);
    metrics_graph_request(m, &f.accounts[1], 202);
    metrics_graph_request(m, &f.accounts[1], 429);
    metrics_graph_request(m, &f.accounts[1], 503);
    metrics_graph_request(m, &f.accounts[1], 0);
    metrics_graph_request(m, &f.accounts[1], 418); /* not listed: other */
    metrics_graph_request(m, &f.accounts[1], 999);
    metrics_graph_request(m, &f.accounts[0], 202); /* an smtp account: counted, not shown */
    metrics_graph_request(NULL, &f.accounts[1], 202);
    s = render(m, NULL, NULL, 0);
    const char *want = "smtp_oauth_proxy_graph_requests_total{account=\"od\\\"d\\\\name\","
                       "status=\"none\"} 1\n"
                       "smtp_oauth_proxy_graph_requests_total{account=\"od\\\"d\\\\name\","
                       "status=\"202\"} 2\n"
                       "smtp_oauth_proxy_graph_requests_total{account=\"od\\\"d\\\\name\","
                       "status=\"429\"} 1\n"
                       "smtp_oauth_proxy_graph_requests_total{account=\"od\\\"d\\\\name\","
                       "status=\"503\"} 1\n"
                       "smtp_oauth_proxy_graph_requests_total{account=\"od\\\"d\\\\name\","
                       "status=\"other\"} 2\n"
                       "# HELP smtp_oauth_proxy_graph_throttled_total Microsoft Graph answers 429 "
                       "or 503 (the account's requests wait for Retry-After), by account.\n"
                       "# TYPE smtp_oauth_proxy_graph_throttled_total counter\n"
                       "smtp_oauth_proxy_graph_throttled_total{account=\"od\\\"d\\\\name\"} 2\n";
    const char *p = strstr(s, "smtp_oauth_proxy_graph_requests_total{");
    assert_non_null(p);
    assert_string_equal(p, want);
    assert_null(strstr(s, "graph_requests_total{account=\"scanners\""));
    free(s);
    metrics_free(m);

    /* no graph account: no graph lines at all */
    fixture_init(&f);
    m = metrics_new(&f.cfg);
    s = render(m, NULL, NULL, 0);
    assert_null(strstr(s, "graph"));
    free(s);
    metrics_free(m);
}

static void test_null_registry(void **state)
{
    (void)state;
    /* the counting points run in tests and tools without a registry */
    metrics_listener_add(NULL, "x");
    assert_int_equal(metrics_session_opened(NULL, "x"), -1);
    metrics_session_closed(NULL, 0);
    metrics_message(NULL, NULL, METRICS_DELIVERED, 1);
    metrics_upstream_reply(NULL, METRICS_CMD_DATA, 250, "2.0.0");
    metrics_upstream_conn(NULL, NULL, 1);
    assert_int_equal(metrics_device_by_user(NULL, "x"), -1);
    metrics_auth_failed(NULL, 0);
    metrics_device_limit(NULL, "x", METRICS_LIMIT_BLOCKED);
    metrics_graph_request(NULL, NULL, 202);
}

/* ---- HTTP ---- */

struct http_ctx {
    const char *health; /* what the health op answers */
    int render_fail;
    struct event_base *base;
    int code;
    char body[4096];
    char ctype[128];
    int done;
};

static int ops_render(void *arg, struct evbuffer *out)
{
    struct http_ctx *c = arg;
    if (c->render_fail)
        return -1;
    evbuffer_add_printf(out, "# HELP x y\n# TYPE x counter\nx 1\n");
    return 0;
}

static const char *ops_health(void *arg)
{
    return ((struct http_ctx *)arg)->health;
}

static void on_response(struct evhttp_request *req, void *arg)
{
    struct http_ctx *c = arg;
    c->done = 1;
    c->code = req ? evhttp_request_get_response_code(req) : -1;
    c->body[0] = c->ctype[0] = '\0';
    if (req) {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t n = evbuffer_get_length(in);
        if (n >= sizeof(c->body))
            n = sizeof(c->body) - 1;
        evbuffer_remove(in, c->body, n);
        c->body[n] = '\0';
        const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
        if (ct)
            snprintf(c->ctype, sizeof(c->ctype), "%s", ct);
    }
    event_base_loopbreak(c->base);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

/* One request on a fresh connection; bounded by a 5 s timer. */
static void fetch(struct http_ctx *c, int port, enum evhttp_cmd_type type, const char *path)
{
    struct evhttp_connection *conn =
        evhttp_connection_base_new(c->base, NULL, "127.0.0.1", (ev_uint16_t)port);
    assert_non_null(conn);
    struct evhttp_request *req = evhttp_request_new(on_response, c);
    assert_non_null(req);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
    c->done = 0;
    assert_int_equal(evhttp_make_request(conn, req, type, path), 0);
    struct event *t = evtimer_new(c->base, on_timeout, c->base);
    struct timeval tv = {.tv_sec = 5};
    evtimer_add(t, &tv);
    event_base_dispatch(c->base);
    event_free(t);
    assert_true(c->done);
    evhttp_connection_free(conn);
}

static void test_http(void **state)
{
    (void)state;
    struct http_ctx c = {.base = event_base_new()};
    assert_non_null(c.base);
    const struct metrics_http_ops ops = {.render = ops_render, .health = ops_health};
    char err[256];
    struct metrics_http *h = metrics_http_new(c.base, "127.0.0.1", "0", &ops, &c, err, sizeof(err));
    assert_non_null(h);
    int port = metrics_http_port(h);
    assert_true(port > 0);

    fetch(&c, port, EVHTTP_REQ_GET, "/healthz");
    assert_int_equal(c.code, 200);
    assert_string_equal(c.body, "ok\n");

    c.health = "stopping";
    fetch(&c, port, EVHTTP_REQ_GET, "/healthz");
    assert_int_equal(c.code, 503);
    assert_string_equal(c.body, "stopping\n");

    c.health = "no listeners";
    fetch(&c, port, EVHTTP_REQ_HEAD, "/healthz");
    assert_int_equal(c.code, 503);
    assert_string_equal(c.body, ""); /* HEAD: no body */

    fetch(&c, port, EVHTTP_REQ_GET, "/metrics");
    assert_int_equal(c.code, 200);
    assert_string_equal(c.body, "# HELP x y\n# TYPE x counter\nx 1\n");
    assert_string_equal(c.ctype, "text/plain; version=0.0.4; charset=utf-8");

    fetch(&c, port, EVHTTP_REQ_GET, "/metrics?x=1"); /* a query does not change the path */
    assert_int_equal(c.code, 200);

    c.render_fail = 1;
    fetch(&c, port, EVHTTP_REQ_GET, "/metrics");
    assert_int_equal(c.code, 500);

    fetch(&c, port, EVHTTP_REQ_GET, "/");
    assert_int_equal(c.code, 404);
    fetch(&c, port, EVHTTP_REQ_GET, "/metricsx");
    assert_int_equal(c.code, 404);

    fetch(&c, port, EVHTTP_REQ_POST, "/metrics");
    assert_true(c.code >= 400); /* evhttp refuses methods not allowed (501) */
    assert_int_not_equal(c.code, 200);

    metrics_http_free(h);
    metrics_http_free(NULL);

    /* a port taken: an error naming the address */
    struct metrics_http *a = metrics_http_new(c.base, "127.0.0.1", "0", &ops, &c, err, sizeof(err));
    assert_non_null(a);
    char p[16];
    snprintf(p, sizeof(p), "%d", metrics_http_port(a));
    assert_null(metrics_http_new(c.base, "127.0.0.1", p, &ops, &c, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot listen on 127.0.0.1:"));
    assert_null(metrics_http_new(c.base, "127.0.0.1", "x", &ops, &c, err, sizeof(err)));
    metrics_http_free(a);
    event_base_free(c.base);
}

/* The daily recipient budget per account: used, limit and held, read live. */
static void test_render_budget(void **state)
{
    (void)state;
    struct fixture f;
    fixture_init(&f);
    f.accounts[0].daily_recipient_limit = 10000;
    struct metrics *m = metrics_new(&f.cfg);
    struct account_budget *b = account_budget_new();
    struct evbuffer *out = evbuffer_new();
    assert_non_null(m);
    assert_non_null(b);
    assert_non_null(out);
    account_budget_add(b, "scanners", 42, 100000);
    account_budget_count_held(b, "scanners");
    assert_int_equal(metrics_render_budget(m, out, NULL, 100000), 0); /* no budget: nothing */
    assert_int_equal(evbuffer_get_length(out), 0);
    assert_int_equal(metrics_render_budget(m, out, b, 100060), 0);
    size_t n = evbuffer_get_length(out);
    char *s = malloc(n + 1);
    assert_non_null(s);
    evbuffer_remove(out, s, n);
    s[n] = '\0';
    assert_string_equal(
        s, "# HELP smtp_oauth_proxy_account_recipients_24h Recipients the upstream accepted in the "
           "last 24 hours, by account (the daily recipient budget used).\n"
           "# TYPE smtp_oauth_proxy_account_recipients_24h gauge\n"
           "smtp_oauth_proxy_account_recipients_24h{account=\"scanners\"} 42\n"
           "smtp_oauth_proxy_account_recipients_24h{account=\"od\\\"d\\\\name\"} 0\n"
           "# HELP smtp_oauth_proxy_account_recipient_limit The account's daily_recipient_limit "
           "(0: none); messages are held from 95 % of it.\n"
           "# TYPE smtp_oauth_proxy_account_recipient_limit gauge\n"
           "smtp_oauth_proxy_account_recipient_limit{account=\"scanners\"} 10000\n"
           "smtp_oauth_proxy_account_recipient_limit{account=\"od\\\"d\\\\name\"} 0\n"
           "# HELP smtp_oauth_proxy_account_budget_held_total Messages held (queued, or 451 with "
           "delivery = direct) because the account's daily recipient budget was used.\n"
           "# TYPE smtp_oauth_proxy_account_budget_held_total counter\n"
           "smtp_oauth_proxy_account_budget_held_total{account=\"scanners\"} 1\n"
           "smtp_oauth_proxy_account_budget_held_total{account=\"od\\\"d\\\\name\"} 0\n");
    free(s);
    evbuffer_free(out);
    account_budget_free(b);
    metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_exact),        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_reply_codes_bounded), cmocka_unit_test(test_graph_requests),
        cmocka_unit_test(test_null_registry),       cmocka_unit_test(test_http),
        cmocka_unit_test(test_render_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
