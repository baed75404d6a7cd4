/* The upstream pool in-process: a real server (server_new from a config file), a token
 * endpoint played by evhttp, and scripted SMTP upstreams (scripted_upstream.h, one script per
 * connection) on 127.0.0.1. Asserts what went over the wire and when each lease was served:
 * reuse after RSET, FIFO handoff at the connection cap (no RSET), cancel, the rate wait, an open
 * that fails, and that no callback runs inside an API call. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/http.h>

#include "common/log.h"
#include "proxy/config/config.h"
#include "proxy/server/server.h"
#include "proxy/runtime/server_gen.h"
#include "proxy/upstream/upstream_pool.h"

#include "cert_fixture.h"
#include "scripted_upstream.h"
#include "token_endpoint_fixture.h"

#define MAX_CONNS 8

static char tmpdir[] = "/tmp/test_upstream_pool.XXXXXX";
static char cert[PATH_MAX], key[PATH_MAX];

#define S_GREET                                                                                    \
    {                                                                                              \
        NULL, "220 up.test ESMTP\r\n", ACT_NONE                                                    \
    }
#define S_EHLO1                                                                                    \
    {                                                                                              \
        "EHLO proxy.test", "250-up.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n", ACT_NONE             \
    }
#define S_STARTTLS                                                                                 \
    {                                                                                              \
        "STARTTLS", "220 2.0.0 go ahead\r\n", ACT_STARTTLS                                         \
    }
#define S_EHLO2                                                                                    \
    {                                                                                              \
        "EHLO proxy.test", "250-up.test\r\n250-AUTH XOAUTH2\r\n250 8BITMIME\r\n", ACT_NONE         \
    }
#define S_AUTH                                                                                     \
    {                                                                                              \
        "AUTH XOAUTH2 *", "235 2.7.0 Authentication successful\r\n", ACT_NONE                      \
    }
#define S_RSET                                                                                     \
    {                                                                                              \
        "RSET", "250 2.0.0 OK\r\n", ACT_NONE                                                       \
    }
#define S_QUIT                                                                                     \
    {                                                                                              \
        "QUIT", "221 2.0.0 bye\r\n", ACT_CLOSE                                                     \
    }

/* Every connection plays the same script; each gets its own struct srv. */
struct upstream {
    struct event_base *base;
    struct evconnlistener *lis;
    SSL_CTX *ctx;
    uint16_t port;
    const struct step *steps;
    size_t nsteps;
    struct srv *conns[MAX_CONNS];
    size_t nconns;
};

static void up_acceptcb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                        int salen, void *arg)
{
    struct upstream *u = arg;
    (void)lis;
    (void)sa;
    (void)salen;
    if (u->nconns == MAX_CONNS) {
        evutil_closesocket(fd);
        return;
    }
    struct srv *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    s->base = u->base;
    s->steps = u->steps;
    s->nsteps = u->nsteps;
    s->ctx = u->ctx;
    s->received = evbuffer_new();
    s->body = evbuffer_new();
    s->resume = evtimer_new(u->base, srv_resume, s);
    s->flush = evtimer_new(u->base, srv_flush_check, s);
    u->conns[u->nconns++] = s;
    s->connected = 1;
    s->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(s->bev, srv_readcb, NULL, srv_eventcb, s);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    srv_step(s, NULL);
}

static struct upstream *up_new(struct event_base *base, const struct step *steps, size_t n)
{
    struct upstream *u = calloc(1, sizeof(*u));
    struct sockaddr_in sin;
    socklen_t slen = sizeof(sin);
    char err[256];
    assert_non_null(u);
    u->base = base;
    u->steps = steps;
    u->nsteps = n;
    u->ctx = tls_server_ctx_new(cert, key, TLS1_2_VERSION, err, sizeof(err));
    assert_non_null(u->ctx);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    u->lis = evconnlistener_new_bind(base, up_acceptcb, u, LEV_OPT_CLOSE_ON_FREE, 16,
                                     (struct sockaddr *)&sin, (int)sizeof(sin));
    assert_non_null(u->lis);
    getsockname(evconnlistener_get_fd(u->lis), (struct sockaddr *)&sin, &slen);
    u->port = ntohs(sin.sin_port);
    return u;
}

static void up_free(struct upstream *u)
{
    for (size_t i = 0; i < u->nconns; i++) {
        struct srv *s = u->conns[i];
        assert_string_equal(s->failure, "");
        if (s->bev)
            bufferevent_free(s->bev);
        evbuffer_free(s->received);
        evbuffer_free(s->body);
        event_free(s->resume);
        event_free(s->flush);
        free(s);
    }
    evconnlistener_free(u->lis);
    SSL_CTX_free(u->ctx);
    free(u);
}

/* The commands connection i received after AUTH, e.g. "RSET\r\nQUIT\r\n". */
static char *up_after_auth(struct upstream *u, size_t i)
{
    assert_true(i < u->nconns);
    char *all = srv_received(u->conns[i]);
    char *p = strstr(all, "AUTH XOAUTH2 ");
    assert_non_null(p);
    p = strstr(p, "\r\n");
    char *out = strdup(p + 2);
    free(all);
    return out;
}

static void token_cb(struct evhttp_request *req, void *arg)
{
    (void)arg;
    struct evbuffer *out = evbuffer_new();
    evbuffer_add_printf(out, "{\"token_type\":\"Bearer\",\"expires_in\":3599,"
                             "\"access_token\":\"tok-0123456789\"}");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, 200, "OK", out);
    evbuffer_free(out);
}

struct fx {
    struct event_base *base;
    struct evhttp *idp;
    struct upstream *up;
    struct server *srv;
    struct upstream_pool *pool;
    const struct cfg_account *acct;
};

static void fx_init(struct fx *f, const struct step *steps, size_t nsteps, int dead_port)
{
    char url[256], path[PATH_MAX], err[512];
    memset(f, 0, sizeof(*f));
    f->base = event_base_new();
    assert_non_null(f->base);
    f->idp = token_endpoint_new(f->base, token_cb, NULL, "/t/oauth2/v2.0/token", url, sizeof(url));
    f->up = up_new(f->base, steps, nsteps);
    snprintf(path, sizeof(path), "%s/proxy.ini", tmpdir);
    FILE *c = fopen(path, "w");
    assert_non_null(c);
    fprintf(c,
            "[proxy]\nlisten = 127.0.0.1:2525\nhostname = proxy.test\nstate_dir = %s/state\n"
            "[upstream]\nhost = 127.0.0.1\nport = %u\nca_file = %s\nidle_timeout = 30s\n"
            "connect_timeout = 5s\ntimeout = 5s\n"
            "[account a]\nprovider = microsoft\ntenant = t\nclient_id = cid\n"
            "client_secret_file = %s/a.secret\nmailbox = scan@contoso.test\ntoken_url = %s\n"
            "delivery = direct\nrate_limit = 0\nmax_upstream_connections = 0\n"
            "[device d]\naddress = 10.0.0.1\naccount = a\n",
            tmpdir, dead_port ? 1u : (unsigned)f->up->port, cert, tmpdir, url);
    fclose(c);
    char *errs = NULL;
    struct config *cfg = config_load(path, &errs);
    if (!cfg)
        fail_msg("config: %s", errs ? errs : "?");
    f->srv = server_new(f->base, cfg, err, sizeof(err));
    if (!f->srv)
        fail_msg("server_new: %s", err);
    f->acct = &f->srv->gen->cfg->accounts[0];
    f->pool = upstream_pools_get(f->srv->pools, "a");
    assert_non_null(f->pool);
    assert_ptr_equal(upstream_pools_get(f->srv->pools, "a"), f->pool);
}

static void fx_free(struct fx *f)
{
    server_free(f->srv); /* idle connections get QUIT: let them finish */
    run_until(f->base, NULL, 300);
    evhttp_free(f->idp);
    up_free(f->up);
    event_base_free(f->base);
}

struct lease_result {
    int in_api; /* set around API calls: a callback then is a contract breach */
    int done;
    struct upstream_conn *c;
    char reply[256];
};

static void lease_cb(void *arg, struct upstream_conn *c, const struct upstream_failure *f)
{
    struct lease_result *r = arg;
    assert_int_equal(r->in_api, 0);
    assert_int_equal(r->done, 0);
    r->done = 1;
    r->c = c;
    if (!c) {
        assert_non_null(f);
        snprintf(r->reply, sizeof(r->reply), "%s", f->reply);
    } else {
        assert_null(f);
        assert_non_null(upstream_conn_session(c));
        assert_string_equal(upstream_conn_host(c), "127.0.0.1");
    }
}

static struct upstream_lease *get(struct fx *f, struct lease_result *r)
{
    memset(r, 0, sizeof(*r));
    r->in_api = 1;
    struct upstream_lease *l = upstream_pool_get(f->pool, f->srv->gen, f->acct, "s1", lease_cb, r);
    r->in_api = 0;
    assert_non_null(l);
    assert_int_equal(r->done, 0);
    return l;
}

static void release(struct lease_result *r, int reusable, struct lease_result *others)
{
    if (others)
        others->in_api = 1;
    upstream_conn_release(r->c, reusable);
    if (others)
        others->in_api = 0;
    r->c = NULL;
}

static void test_reuse_after_rset(void **state)
{
    (void)state;
    static const struct step steps[] = {S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2,
                                        S_AUTH,  S_RSET,  S_QUIT};
    struct fx f;
    struct lease_result a, b;
    struct upstream_pool_stats st;
    fx_init(&f, steps, sizeof(steps) / sizeof(steps[0]), 0);

    get(&f, &a);
    run_until(f.base, &a.done, 5000);
    assert_non_null(a.c);
    upstream_pool_stats(f.pool, &st);
    assert_int_equal(st.conns, 1);
    assert_int_equal(st.opened, 1);
    assert_int_equal(st.idle, 0);
    release(&a, 1, NULL);
    upstream_pool_stats(f.pool, &st);
    assert_int_equal(st.idle, 1);

    get(&f, &b); /* served by the idle one, after an RSET */
    run_until(f.base, &b.done, 5000);
    assert_non_null(b.c);
    upstream_pool_stats(f.pool, &st);
    assert_int_equal(st.opened, 1);
    assert_int_equal(st.reused, 1);
    assert_int_equal(st.messages, 2);
    release(&b, 1, NULL);
    fx_free(&f); /* QUIT to the idle connection */
    /* (up_free checked the script: exactly one RSET, then QUIT) */
}

static void test_cap_fifo_handoff_and_cancel(void **state)
{
    (void)state;
    static const struct step steps[] = {S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2, S_AUTH, S_QUIT};
    struct fx f;
    struct lease_result a, b, c;
    struct upstream_pool_stats st;
    fx_init(&f, steps, sizeof(steps) / sizeof(steps[0]), 0);
    f.srv->gen->cfg->accounts[0].max_upstream_connections = 1;

    get(&f, &a);
    get(&f, &b);
    struct upstream_lease *lc = get(&f, &c);
    run_until(f.base, &a.done, 5000);
    assert_non_null(a.c);
    run_until(f.base, NULL, 200);
    assert_int_equal(b.done, 0); /* at the cap: waits */
    upstream_pool_stats(f.pool, &st);
    assert_int_equal(st.conns, 1);
    assert_int_equal(st.waiting, 2);

    release(&a, 1, &b); /* handed to b, the first waiter, without an RSET */
    run_until(f.base, &b.done, 5000);
    assert_non_null(b.c);
    assert_int_equal(c.done, 0);
    upstream_pool_stats(f.pool, &st);
    assert_int_equal(st.reused, 1);
    assert_int_equal(st.waiting, 1);

    upstream_lease_cancel(lc); /* c gives up: never called */
    upstream_pool_stats(f.pool, &st);
    assert_int_equal(st.waiting, 0);
    release(&b, 1, NULL);
    run_until(f.base, NULL, 100);
    assert_int_equal(c.done, 0);
    assert_int_equal(f.up->nconns, 1);
    char *after = up_after_auth(f.up, 0);
    assert_string_equal(after, ""); /* no RSET on the handoff */
    free(after);
    fx_free(&f);
}

static void test_broken_release_opens_new_for_waiter(void **state)
{
    (void)state;
    static const struct step steps[] = {S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2, S_AUTH, S_QUIT};
    struct fx f;
    struct lease_result a, b;
    fx_init(&f, steps, sizeof(steps) / sizeof(steps[0]), 0);
    f.srv->gen->cfg->accounts[0].max_upstream_connections = 1;
    get(&f, &a);
    get(&f, &b);
    run_until(f.base, &a.done, 5000);
    release(&a, 0, &b); /* closed: its slot goes to b with a new connection */
    run_until(f.base, &b.done, 5000);
    assert_non_null(b.c);
    struct upstream_pool_stats st;
    upstream_pool_stats(f.pool, &st);
    assert_int_equal(st.opened, 2);
    assert_int_equal(st.conns, 1);
    release(&b, 1, NULL);
    fx_free(&f);
}

static void test_rate_wait(void **state)
{
    (void)state;
    static const struct step steps[] = {S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2, S_AUTH, S_QUIT};
    struct fx f;
    struct lease_result a, c;
    fx_init(&f, steps, sizeof(steps) / sizeof(steps[0]), 0);
    f.srv->gen->cfg->accounts[0].rate_limit = 1; /* one message per minute */
    assert_true(upstream_pool_rate_wait_ms(f.pool) == 0);
    get(&f, &a);
    run_until(f.base, &a.done, 5000);
    assert_non_null(a.c);
    int64_t w = upstream_pool_rate_wait_ms(f.pool);
    assert_true(w > 50000 && w <= 60000);
    release(&a, 1, NULL);
    struct upstream_lease *lc = get(&f, &c);
    run_until(f.base, NULL, 300);
    assert_int_equal(c.done, 0); /* the window is full: it waits (idle connection and all) */
    struct upstream_pool_stats st;
    upstream_pool_stats(f.pool, &st);
    assert_int_equal(st.waiting, 1);
    assert_int_equal(st.idle, 1);
    /* one more would start a window after c */
    assert_true(upstream_pool_rate_wait_ms(f.pool) > 110000);
    upstream_lease_cancel(lc);
    fx_free(&f);
}

static void test_open_failure(void **state)
{
    (void)state;
    static const struct step steps[] = {S_GREET};
    struct fx f;
    struct lease_result a;
    struct log_capture lc;
    fx_init(&f, steps, 1, 1); /* port 1: nothing listens */
    log_capture_start(&lc);
    get(&f, &a);
    run_until(f.base, &a.done, 5000);
    char *log = log_capture_stop(&lc);
    assert_null(a.c);
    assert_string_equal(a.reply, "451 4.4.1 Upstream server unavailable, try again later");
    assert_non_null(strstr(log, "event=upstream_failed session=s1 account=a op=MAIL reason="));
    assert_null(strstr(log, "tok-0123456789"));
    free(log);
    struct upstream_pool_stats st;
    upstream_pool_stats(f.pool, &st);
    assert_int_equal(st.conns, 0);
    fx_free(&f);
}

static int setup(void **state)
{
    char path[PATH_MAX];
    (void)state;
    (void)srv_new; /* scripted_upstream.h's one-connection server: we accept many (up_new) */
    (void)srv_free;
    if (!mkdtemp(tmpdir))
        return -1;
    if (cert_fixture_make(tmpdir, "up", "localhost", "DNS:localhost,IP:127.0.0.1", cert,
                          sizeof(cert), key, sizeof(key)) != 0)
        return -1;
    snprintf(path, sizeof(path), "%s/a.secret", tmpdir);
    FILE *s = fopen(path, "w");
    if (!s)
        return -1;
    fputs("secret-value\n", s);
    fclose(s);
    chmod(path, 0600);
    snprintf(path, sizeof(path), "%s/state", tmpdir);
    mkdir(path, 0700);
    log_set_level(LOGL_DEBUG);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reuse_after_rset),
        cmocka_unit_test(test_cap_fifo_handoff_and_cancel),
        cmocka_unit_test(test_broken_release_opens_new_for_waiter),
        cmocka_unit_test(test_rate_wait),
        cmocka_unit_test(test_open_failure),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
