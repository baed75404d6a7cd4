/* proxy/graph/graph_client.c against an in-process evhttp "Graph" (and token endpoint) on
 * 127.0.0.1: a single sendMail (202); a draft, upload sessions and PUTs of 320 KiB multiples
 * following nextExpectedRanges, then send; the draft deleted when send fails; 401 then success
 * with a fresh token; 429 with Retry-After holding the pool; at most max_upstream_connections
 * requests in flight; the request timeout; cancel; the log lines (no token, no upload URL query).
 *
 * graph_mime.c is written in parallel (another helper): this file has its own small fake of the
 * graph_mime.h functions graph_client.c calls, defined below, so the linker never pulls
 * graph_mime.o from the library. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "common/log.h"
#include "oauth/http.h"
#include "proxy/config/config.h"
#include "proxy/graph/graph_client.h"
#include "proxy/graph/graph_mime.h"
#include "proxy/runtime/server_gen.h"
#include "token_endpoint_fixture.h"

/* ---- the fake graph_mime ---- */

struct graph_mime {
    const char *refusal;
    char *b64;
    size_t b64_len, pos;
    size_t natt;
    struct graph_mime_att att[2];
};

static unsigned char att_byte(size_t i, uint64_t off)
{
    return (unsigned char)((off * 7 + i * 13 + off / 4096) & 0xff);
}

const char *graph_mime_refusal(const struct graph_mime *m)
{
    return m->refusal;
}
size_t graph_mime_natt(const struct graph_mime *m)
{
    return m->natt;
}
const struct graph_mime_att *graph_mime_att(const struct graph_mime *m, size_t i)
{
    return i < m->natt ? &m->att[i] : NULL;
}
uint64_t graph_mime_body_b64_size(const struct graph_mime *m)
{
    return m->b64_len;
}
void graph_mime_body_rewind(struct graph_mime *m)
{
    m->pos = 0;
}
ssize_t graph_mime_body_read(struct graph_mime *m, void *buf, size_t cap, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    size_t n = m->b64_len - m->pos;
    if (n > cap)
        n = cap;
    if (n > 1000) /* short reads: the client must loop */
        n = 1000;
    memcpy(buf, m->b64 + m->pos, n);
    m->pos += n;
    return (ssize_t)n;
}
ssize_t graph_mime_att_read(struct graph_mime *m, size_t i, uint64_t off, void *buf, size_t cap,
                            char *err, size_t errlen)
{
    if (i >= m->natt) {
        snprintf(err, errlen, "no attachment %zu", i);
        return -1;
    }
    if (off >= m->att[i].size)
        return 0;
    size_t n = (size_t)(m->att[i].size - off);
    if (n > cap)
        n = cap;
    if (n > 1000000) /* short reads */
        n = 1000000;
    for (size_t k = 0; k < n; k++)
        ((unsigned char *)buf)[k] = att_byte(i, off + k);
    return (ssize_t)n;
}

static struct graph_mime *mime_new(size_t b64_len, size_t natt, uint64_t size0, uint64_t size1)
{
    struct graph_mime *m = calloc(1, sizeof(*m));
    assert_non_null(m);
    m->b64_len = b64_len;
    m->b64 = malloc(b64_len + 1);
    assert_non_null(m->b64);
    for (size_t i = 0; i < b64_len; i++)
        m->b64[i] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[i % 64];
    m->natt = natt;
    m->att[0] = (struct graph_mime_att){"scan.pdf", "application/pdf", NULL, 0, size0};
    m->att[1] = (struct graph_mime_att){"logo.png", "image/png", "logo@x", 1, size1};
    return m;
}

static void mime_free(struct graph_mime *m)
{
    free(m->b64);
    free(m);
}

/* ---- the stand-in: token endpoint and Graph ---- */

enum gmode { G_OK, G_401_ONCE, G_429_ONCE, G_HANG, G_SEND_403, G_PARTIAL_PUT, G_STALL };

#define MAXREQ 64

struct greq {
    char method[8];
    char uri[512];
    char auth[128];
    char range[96];
    char ctype[64];
    size_t len;
    int64_t at_ms;
    int bytes_ok; /* PUT: the chunk's bytes are the attachment's at its range */
};

struct graph_srv {
    enum gmode mode;
    int port;
    int tokens;    /* token requests */
    int token_401; /* G_401_ONCE: answered */
    int throttled;
    struct greq reqs[MAXREQ];
    size_t nreqs;
    struct evhttp_request *pending[16];
    size_t npending, max_pending;
    int partial_done;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *cmd(enum evhttp_cmd_type c)
{
    return c == EVHTTP_REQ_GET      ? "GET"
           : c == EVHTTP_REQ_POST   ? "POST"
           : c == EVHTTP_REQ_PUT    ? "PUT"
           : c == EVHTTP_REQ_DELETE ? "DELETE"
                                    : "?";
}

static void reply(struct evhttp_request *req, int code, const char *body)
{
    struct evbuffer *out = evbuffer_new();
    if (body)
        evbuffer_add_printf(out, "%s", body);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, code, "X", out);
    evbuffer_free(out);
}

static int put_bytes_ok(const struct greq *g, struct evbuffer *in)
{
    unsigned long long a, b, total;
    if (sscanf(g->range, "bytes %llu-%llu/%llu", &a, &b, &total) != 3 || b - a + 1 != g->len)
        return 0;
    size_t att = total == 5000000 ? 0 : 1;
    unsigned char *p = evbuffer_pullup(in, -1);
    for (size_t k = 0; k < g->len; k++)
        if (p[k] != att_byte(att, a + k))
            return 0;
    return 1;
}

static void srv_cb(struct evhttp_request *req, void *arg)
{
    struct graph_srv *s = arg;
    const char *uri = evhttp_request_get_uri(req);
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    char body[1024];

    if (strstr(uri, "/oauth2/v2.0/token")) {
        s->tokens++;
        snprintf(body, sizeof(body),
                 "{\"token_type\":\"Bearer\",\"expires_in\":3599,\"access_token\":\"tok-%d\"}",
                 s->tokens);
        reply(req, 200, body);
        return;
    }
    assert_true(s->nreqs < MAXREQ);
    struct greq *g = &s->reqs[s->nreqs++];
    const char *v;
    snprintf(g->method, sizeof(g->method), "%s", cmd(evhttp_request_get_command(req)));
    snprintf(g->uri, sizeof(g->uri), "%s", uri);
    snprintf(g->auth, sizeof(g->auth), "%s", (v = evhttp_find_header(h, "Authorization")) ? v : "");
    snprintf(g->range, sizeof(g->range), "%s",
             (v = evhttp_find_header(h, "Content-Range")) ? v : "");
    snprintf(g->ctype, sizeof(g->ctype), "%s",
             (v = evhttp_find_header(h, "Content-Type")) ? v : "");
    g->len = evbuffer_get_length(in);
    g->at_ms = mono_ms();

    if (s->mode == G_HANG) {
        assert_true(s->npending < 16);
        s->pending[s->npending++] = req;
        if (s->npending > s->max_pending)
            s->max_pending = s->npending;
        return;
    }
    if (s->mode == G_401_ONCE && !s->token_401) {
        s->token_401 = 1;
        reply(req, 401,
              "{\"error\":{\"code\":\"InvalidAuthenticationToken\",\"message\":\"Lifetime "
              "validation failed, the token is expired.\"}}");
        return;
    }
    if (s->mode == G_429_ONCE && !s->throttled) {
        s->throttled = 1;
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
        reply(req, 429,
              "{\"error\":{\"code\":\"ApplicationThrottled\",\"message\":\"Application is over "
              "its MailboxConcurrency limit.\"}}");
        return;
    }
    if (strstr(uri, "/sendMail")) {
        reply(req, 202, NULL);
    } else if (strcmp(g->method, "POST") == 0 && strstr(uri, "/createUploadSession")) {
        snprintf(body, sizeof(body),
                 "{\"uploadUrl\":\"http://127.0.0.1:%d/up/%zu?sig=SECRETSIG\","
                 "\"nextExpectedRanges\":[\"0-\"]}",
                 s->port, s->nreqs);
        reply(req, 201, body);
    } else if (strcmp(g->method, "POST") == 0 && strstr(uri, "/send")) {
        if (s->mode == G_SEND_403)
            reply(req, 403,
                  "{\"error\":{\"code\":\"ErrorAccessDenied\",\"message\":\"Access is denied.\"}}");
        else
            reply(req, 202, NULL);
    } else if (strcmp(g->method, "POST") == 0 && strstr(uri, "/messages")) {
        reply(req, 201, "{\"id\":\"draft/1=\",\"isDraft\":true}");
    } else if (strcmp(g->method, "PUT") == 0) {
        unsigned long long a = 0, b = 0, total = 0;
        g->bytes_ok = put_bytes_ok(g, in);
        sscanf(g->range, "bytes %llu-%llu/%llu", &a, &b, &total);
        if (s->mode == G_STALL) {
            reply(req, 200, "{\"nextExpectedRanges\":[\"0-\"]}"); /* never progresses */
        } else if (s->mode == G_PARTIAL_PUT && !s->partial_done) {
            /* as if only the first 1000000 bytes had arrived */
            s->partial_done = 1;
            reply(req, 200, "{\"nextExpectedRanges\":[\"1000000-\"]}");
        } else if (b + 1 >= total) {
            reply(req, 201, NULL);
        } else {
            /* Outlook's form: the next start only (the partial case above has OneDrive's) */
            snprintf(body, sizeof(body), "{\"nextExpectedRanges\":[\"%llu\"]}", b + 1);
            reply(req, 200, body);
        }
    } else if (strcmp(g->method, "DELETE") == 0) {
        reply(req, 204, NULL);
    } else {
        reply(req, 400, "{\"error\":{\"code\":\"BadRequest\"}}");
    }
}

/* ---- the fixture ---- */

static char tmpdir[] = "/tmp/test_graph_client.XXXXXX";

struct fx {
    struct event_base *base;
    struct evhttp *srv_http;
    struct graph_srv srv;
    struct http *http;
    struct server_gen *gen;
    const struct cfg_account *acct;
    struct graph_pools *ps;
    struct graph_pool *pool;
};

static void fx_init(struct fx *f, const char *extra)
{
    char url[256], path[PATH_MAX], err[512];
    memset(f, 0, sizeof(*f));
    f->base = event_base_new();
    assert_non_null(f->base);
    f->srv_http = token_endpoint_new(f->base, srv_cb, &f->srv, "", url, sizeof(url));
    assert_int_equal(sscanf(url, "http://127.0.0.1:%d", &f->srv.port), 1);
    snprintf(path, sizeof(path), "%s/a.secret", tmpdir);
    FILE *c = fopen(path, "w");
    assert_non_null(c);
    fputs("s3cret\n", c);
    fclose(c);
    chmod(path, 0600);
    snprintf(path, sizeof(path), "%s/proxy.ini", tmpdir);
    c = fopen(path, "w");
    assert_non_null(c);
    fprintf(c,
            "[proxy]\nlisten = 127.0.0.1:2525\nhostname = proxy.test\nstate_dir = %s/state\n"
            "[upstream]\ntimeout = 5s\n"
            "[account a]\nprovider = microsoft\ntenant = t\nclient_id = cid\n"
            "client_secret_file = %s/a.secret\nmailbox = scan@contoso.test\n"
            "token_url = %s/t/oauth2/v2.0/token\nupstream = graph\ngraph_url = %s\n%s"
            "[device d]\naddress = 10.0.0.1\naccount = a\n",
            tmpdir, tmpdir, url, url, extra ? extra : "");
    fclose(c);
    char *errs = NULL;
    struct config *cfg = config_load(path, &errs);
    if (!cfg)
        fail_msg("config: %s", errs ? errs : "?");
    f->http = http_new(f->base);
    f->gen = server_gen_new(f->base, cfg, f->http, NULL, NULL, err, sizeof(err));
    if (!f->gen)
        fail_msg("server_gen_new: %s", err);
    f->acct = &f->gen->cfg->accounts[0];
    f->ps = graph_pools_new(f->base, NULL);
    assert_non_null(f->ps);
    f->pool = graph_pools_get(f->ps, "a");
    assert_non_null(f->pool);
    assert_ptr_equal(graph_pools_get(f->ps, "a"), f->pool);
}

static void fx_free(struct fx *f)
{
    graph_pools_free(f->ps);
    for (size_t i = 0; i < f->srv.npending; i++)
        reply(f->srv.pending[i], 503, NULL);
    run_until(f->base, NULL, 50);
    server_gen_unref(f->gen);
    http_free(f->http);
    evhttp_free(f->srv_http);
    event_base_free(f->base);
}

struct res {
    int in_api;
    int done;
    struct graph_outcome o;
    char trace[2048];
};

static void send_cb(void *arg, const struct graph_outcome *o)
{
    struct res *r = arg;
    assert_int_equal(r->in_api, 0); /* never from inside a call */
    assert_int_equal(r->done, 0);
    r->done = 1;
    r->o = *o;
}

static void trace_cb(void *arg, const char *method, const char *path, long status, const char *code)
{
    struct res *r = arg;
    size_t n = strlen(r->trace);
    snprintf(r->trace + n, sizeof(r->trace) - n, "%s %s %ld%s%s\n", method, path, status,
             code && *code ? " " : "", code ? code : "");
}

static struct graph_send *start(struct fx *f, struct graph_mime *m, struct res *r)
{
    memset(r, 0, sizeof(*r));
    r->in_api = 1;
    struct graph_send *s = graph_send_start(f->pool, f->gen, f->acct, m, "s1", send_cb, r);
    assert_non_null(s);
    graph_send_set_trace(s, trace_cb, r);
    r->in_api = 0;
    return s;
}

/* ---- tests ---- */

static void test_sendmail_single(void **state)
{
    (void)state;
    struct fx f;
    struct res r;
    struct log_capture lc;
    fx_init(&f, NULL);
    struct graph_mime *m = mime_new(123456, 0, 0, 0);
    log_set_level(LOGL_DEBUG);
    log_capture_start(&lc);
    start(&f, m, &r);
    run_until(f.base, &r.done, 10000);
    char *logged = log_capture_stop(&lc);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.o.status, GRAPH_OK);
    assert_int_equal(r.o.http_status, 202);
    assert_string_equal(r.o.reply, "250 2.0.0 Accepted by Microsoft Graph");
    assert_int_equal(r.o.requests, 1);
    assert_int_equal(f.srv.nreqs, 1);
    assert_string_equal(f.srv.reqs[0].method, "POST");
    assert_string_equal(f.srv.reqs[0].uri, "/v1.0/users/scan%40contoso.test/sendMail");
    assert_string_equal(f.srv.reqs[0].auth, "Bearer tok-1");
    assert_string_equal(f.srv.reqs[0].ctype, "text/plain");
    assert_int_equal(f.srv.reqs[0].len, 123456);
    assert_string_equal(r.trace, "POST /v1.0/users/scan%40contoso.test/sendMail 0\n"
                                 "POST /v1.0/users/scan%40contoso.test/sendMail 202\n");
    assert_non_null(strstr(logged, "event=graph_request id=s1 account=a method=POST "
                                   "path=/v1.0/users/scan%40contoso.test/sendMail status=202 ms="));
    assert_null(strstr(logged, "tok-1"));
    free(logged);
    struct graph_pool_stats st;
    graph_pool_stats(f.pool, &st);
    assert_int_equal(st.requests, 1);
    assert_int_equal(st.messages, 1);
    assert_int_equal(st.in_flight, 0);
    log_set_level(LOGL_INFO);
    mime_free(m);
    fx_free(&f);
}

static void check_put(const struct greq *g, const char *range)
{
    assert_string_equal(g->method, "PUT");
    assert_string_equal(g->auth, ""); /* the upload URL carries its own authorisation */
    assert_string_equal(g->range, range);
    assert_non_null(strstr(g->uri, "?sig=SECRETSIG"));
    assert_int_equal(g->bytes_ok, 1);
}

static void test_draft_uploads_send(void **state)
{
    (void)state;
    struct fx f;
    struct res r;
    struct log_capture lc;
    fx_init(&f, NULL);
    struct graph_mime *m = mime_new(2000, 2, 5000000, 100);
    log_set_level(LOGL_DEBUG);
    log_capture_start(&lc);
    start(&f, m, &r);
    run_until(f.base, &r.done, 20000);
    char *logged = log_capture_stop(&lc);
    log_set_level(LOGL_INFO);
    assert_int_equal(r.o.status, GRAPH_OK);
    assert_string_equal(r.o.reply, "250 2.0.0 Accepted by Microsoft Graph");
    const char *drafts = "/v1.0/users/scan%40contoso.test/messages";
    assert_int_equal(f.srv.nreqs, 6);
    assert_int_equal(r.o.requests, 6);
    assert_string_equal(f.srv.reqs[0].method, "POST");
    assert_string_equal(f.srv.reqs[0].uri, drafts);
    assert_string_equal(f.srv.reqs[0].ctype, "text/plain");
    assert_int_equal(f.srv.reqs[0].len, 2000);
    assert_string_equal(f.srv.reqs[1].uri, "/v1.0/users/scan%40contoso.test/messages/"
                                           "draft%2F1%3D/attachments/createUploadSession");
    assert_string_equal(f.srv.reqs[1].auth, "Bearer tok-1");
    assert_string_equal(f.srv.reqs[1].ctype, "application/json");
    check_put(&f.srv.reqs[2], "bytes 0-3276799/5000000"); /* 10 x 320 KiB */
    assert_int_equal(f.srv.reqs[2].len, 3276800);
    check_put(&f.srv.reqs[3], "bytes 3276800-4999999/5000000");
    /* under 3 MB: posted whole as a fileAttachment (Graph refuses upload sessions for it) */
    assert_string_equal(f.srv.reqs[4].method, "POST");
    assert_string_equal(f.srv.reqs[4].uri, "/v1.0/users/scan%40contoso.test/messages/"
                                           "draft%2F1%3D/attachments");
    assert_string_equal(f.srv.reqs[4].ctype, "application/json");
    assert_string_equal(f.srv.reqs[4].auth, "Bearer tok-1");
    assert_true(f.srv.reqs[4].len > 136); /* 100 bytes are 136 in base64, and the JSON */
    assert_string_equal(f.srv.reqs[5].method, "POST");
    assert_string_equal(f.srv.reqs[5].uri,
                        "/v1.0/users/scan%40contoso.test/messages/draft%2F1%3D/send");
    assert_string_equal(f.srv.reqs[5].auth, "Bearer tok-1");
    assert_int_equal(f.srv.reqs[5].len, 0);
    /* the upload URL's query is never logged, nor the token */
    assert_null(strstr(logged, "SECRETSIG"));
    assert_null(strstr(logged, "tok-1"));
    assert_non_null(strstr(logged, "method=PUT path=/up/"));
    free(logged);
    mime_free(m);
    fx_free(&f);
}

static void test_upload_follows_next_range(void **state)
{
    (void)state;
    struct fx f;
    struct res r;
    fx_init(&f, NULL);
    f.srv.mode = G_PARTIAL_PUT;
    struct graph_mime *m = mime_new(100, 1, 5000000, 0);
    start(&f, m, &r);
    run_until(f.base, &r.done, 20000);
    assert_int_equal(r.o.status, GRAPH_OK);
    assert_int_equal(f.srv.nreqs, 6);
    check_put(&f.srv.reqs[2], "bytes 0-3276799/5000000");
    check_put(&f.srv.reqs[3], "bytes 1000000-4276799/5000000"); /* what Graph asked for */
    check_put(&f.srv.reqs[4], "bytes 4276800-4999999/5000000");
    mime_free(m);
    fx_free(&f);
}

/* A hostile upload session that always wants the start again: bounded, then the draft goes. */
static void test_upload_stall_bounded(void **state)
{
    (void)state;
    struct fx f;
    struct res r;
    fx_init(&f, NULL);
    f.srv.mode = G_STALL;
    struct graph_mime *m = mime_new(100, 1, 4000000, 0);
    start(&f, m, &r);
    run_until(f.base, &r.done, 20000);
    assert_int_equal(r.o.status, GRAPH_TEMP);
    assert_string_equal(r.o.reply, "451 4.3.0 Microsoft Graph's upload session does not progress");
    /* draft, session, 2 x 2 chunks + 4 + 1 PUTs, DELETE */
    assert_int_equal(f.srv.nreqs, 2 + 9 + 1);
    assert_string_equal(f.srv.reqs[f.srv.nreqs - 1].method, "DELETE");
    mime_free(m);
    fx_free(&f);
}

static void test_send_fails_draft_deleted(void **state)
{
    (void)state;
    struct fx f;
    struct res r;
    fx_init(&f, NULL);
    f.srv.mode = G_SEND_403;
    struct graph_mime *m = mime_new(100, 1, 1000, 0);
    start(&f, m, &r);
    run_until(f.base, &r.done, 20000);
    assert_int_equal(r.o.status, GRAPH_PERM);
    assert_int_equal(r.o.http_status, 403);
    assert_string_equal(r.o.code, "ErrorAccessDenied");
    assert_true(strncmp(r.o.reply, "550 5.7.1 ", 10) == 0);
    assert_non_null(strstr(r.o.explain, "Mail.ReadWrite"));
    /* draft, the attachment posted whole, send (403), DELETE */
    assert_int_equal(f.srv.nreqs, 4);
    assert_string_equal(f.srv.reqs[3].method, "DELETE");
    assert_string_equal(f.srv.reqs[3].uri, "/v1.0/users/scan%40contoso.test/messages/draft%2F1%3D");
    assert_string_equal(f.srv.reqs[3].auth, "Bearer tok-1");
    assert_int_equal(r.o.requests, 4);
    mime_free(m);
    fx_free(&f);
}

static void test_401_then_fresh_token(void **state)
{
    (void)state;
    struct fx f;
    struct res r;
    fx_init(&f, NULL);
    f.srv.mode = G_401_ONCE;
    struct graph_mime *m = mime_new(100, 0, 0, 0);
    start(&f, m, &r);
    run_until(f.base, &r.done, 10000);
    assert_int_equal(r.o.status, GRAPH_OK);
    assert_int_equal(f.srv.nreqs, 2);
    assert_string_equal(f.srv.reqs[0].auth, "Bearer tok-1");
    assert_string_equal(f.srv.reqs[1].auth, "Bearer tok-2"); /* invalidated, fetched again */
    assert_int_equal(f.srv.tokens, 2);
    assert_int_equal(r.o.requests, 2);
    mime_free(m);
    fx_free(&f);
}

static void test_429_holds_pool(void **state)
{
    (void)state;
    struct fx f;
    struct res r1, r2;
    struct log_capture lc;
    fx_init(&f, NULL);
    f.srv.mode = G_429_ONCE;
    struct graph_mime *m = mime_new(100, 0, 0, 0);
    log_capture_start(&lc);
    start(&f, m, &r1);
    run_until(f.base, &r1.done, 10000);
    char *logged = log_capture_stop(&lc);
    assert_int_equal(r1.o.status, GRAPH_TEMP);
    assert_int_equal(r1.o.conn_failure, 1);
    assert_int_equal(r1.o.http_status, 429);
    assert_int_equal(r1.o.retry_after_ms, 1000);
    assert_true(strncmp(r1.o.reply, "451 4.7.0 ", 10) == 0);
    assert_non_null(strstr(logged, "event=graph_throttled id=s1 account=a status=429 "
                                   "retry_after=1"));
    free(logged);
    int64_t held = graph_pool_wait_ms(f.pool);
    assert_true(held > 500 && held <= 1000);
    int64_t t0 = f.srv.reqs[0].at_ms;
    /* the next message waits for the hold: its request arrives about a second later */
    struct graph_mime *m2 = mime_new(100, 0, 0, 0);
    start(&f, m2, &r2);
    run_until(f.base, &r2.done, 10000);
    assert_int_equal(r2.o.status, GRAPH_OK);
    assert_int_equal(f.srv.nreqs, 2);
    assert_true(f.srv.reqs[1].at_ms - t0 >= 900);
    assert_int_equal(graph_pool_wait_ms(f.pool), 0);
    struct graph_pool_stats st;
    graph_pool_stats(f.pool, &st);
    assert_int_equal(st.throttled, 1);
    mime_free(m);
    mime_free(m2);
    fx_free(&f);
}

static void test_in_flight_cap(void **state)
{
    (void)state;
    struct fx f;
    struct res r[6];
    struct graph_mime *m[6];
    fx_init(&f, NULL); /* graph's default: 4 in flight */
    f.srv.mode = G_HANG;
    for (int i = 0; i < 6; i++) {
        m[i] = mime_new(100, 0, 0, 0);
        start(&f, m[i], &r[i]);
    }
    run_until(f.base, NULL, 500);
    assert_int_equal(f.srv.npending, 4);
    struct graph_pool_stats st;
    graph_pool_stats(f.pool, &st);
    assert_int_equal(st.in_flight, 4);
    assert_int_equal(st.waiting, 2);
    /* answer them: the waiting two go, never more than 4 at once */
    f.srv.mode = G_OK;
    for (size_t i = 0; i < f.srv.npending; i++)
        reply(f.srv.pending[i], 202, NULL);
    f.srv.npending = 0;
    f.srv.mode = G_HANG;
    run_until(f.base, NULL, 500);
    assert_int_equal(f.srv.npending, 2);
    for (size_t i = 0; i < f.srv.npending; i++)
        reply(f.srv.pending[i], 202, NULL);
    f.srv.npending = 0;
    int all = 0;
    for (int k = 0; k < 100 && !all; k++) {
        run_until(f.base, NULL, 20);
        all = 1;
        for (int i = 0; i < 6; i++)
            all &= r[i].done;
    }
    assert_true(all);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(r[i].o.status, GRAPH_OK);
        mime_free(m[i]);
    }
    assert_int_equal(f.srv.max_pending, 4);
    fx_free(&f);
}

static void test_in_flight_cap_configured(void **state)
{
    (void)state;
    struct fx f;
    struct res r[3];
    struct graph_mime *m[3];
    fx_init(&f, "max_upstream_connections = 1\n");
    f.srv.mode = G_HANG;
    for (int i = 0; i < 3; i++) {
        m[i] = mime_new(100, 0, 0, 0);
        start(&f, m[i], &r[i]);
    }
    run_until(f.base, NULL, 300);
    assert_int_equal(f.srv.npending, 1);
    /* one in flight, two waiting: freeing the pools cancels all three, no callback runs */
    graph_pools_free(f.ps);
    f.ps = graph_pools_new(f.base, NULL);
    run_until(f.base, NULL, 100);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].done, 0);
        mime_free(m[i]);
    }
    fx_free(&f);
}

static void test_timeout_and_cancel(void **state)
{
    (void)state;
    struct fx f;
    struct res r, r2;
    fx_init(&f, NULL);
    /* [upstream] timeout = 1s: the request's bound */
    f.gen->cfg->upstream_timeout = 1;
    f.srv.mode = G_HANG;
    struct graph_mime *m = mime_new(100, 0, 0, 0);
    start(&f, m, &r);
    struct graph_send *s2 = start(&f, m, &r2);
    run_until(f.base, NULL, 100);
    graph_send_cancel(s2); /* in flight: cancelled, no callback */
    run_until(f.base, &r.done, 5000);
    assert_int_equal(r.done, 1);
    assert_int_equal(r2.done, 0);
    assert_int_equal(r.o.status, GRAPH_TEMP);
    assert_int_equal(r.o.conn_failure, 1);
    assert_int_equal(r.o.http_status, 0);
    assert_true(strncmp(r.o.reply, "451 4.4.2 ", 10) == 0);
    mime_free(m);
    fx_free(&f);
}

static void test_refusal_and_rate_limit(void **state)
{
    (void)state;
    struct fx f;
    struct res r;
    fx_init(&f, "rate_limit = 1\n");
    struct graph_mime *m = mime_new(100, 0, 0, 0);
    m->refusal = "552 5.3.4 Message too large for Microsoft Graph";
    start(&f, m, &r);
    run_until(f.base, &r.done, 5000);
    assert_int_equal(r.o.status, GRAPH_PERM);
    assert_string_equal(r.o.reply, "552 5.3.4 Message too large for Microsoft Graph");
    assert_int_equal(f.srv.nreqs, 0);
    m->refusal = NULL;
    start(&f, m, &r);
    run_until(f.base, &r.done, 5000);
    assert_int_equal(r.o.status, GRAPH_OK);
    /* one a minute: the next waits */
    assert_true(graph_pool_wait_ms(f.pool) > 50000);
    start(&f, m, &r);
    run_until(f.base, &r.done, 300);
    assert_int_equal(r.done, 0);
    assert_int_equal(f.srv.nreqs, 1);
    mime_free(m);
    fx_free(&f); /* cancels the waiting send */
}

/* An account's http_proxy: its requests go through that proxy (here a second evhttp that sees
 * the absolute URI and answers itself), not straight to graph_url. */
struct fake_proxy {
    int hits;
    char uri[512];
};

static void proxy_cb(struct evhttp_request *req, void *arg)
{
    struct fake_proxy *p = arg;
    p->hits++;
    snprintf(p->uri, sizeof(p->uri), "%s", evhttp_request_get_uri(req));
    reply(req, 202, NULL);
}

static void test_account_http_proxy(void **state)
{
    (void)state;
    struct fx f;
    struct res r;
    struct fake_proxy fp = {0};
    char purl[128], want[256];
    fx_init(&f, NULL);
    struct evhttp *proxy = token_endpoint_new(f.base, proxy_cb, &fp, "", purl, sizeof(purl));
    /* the account's resolved http_proxy (config_load would set it from http_proxy =) */
    struct cfg_account *a = &f.gen->cfg->accounts[0];
    free(a->http_proxy);
    a->http_proxy = strdup(purl);
    struct graph_mime *m = mime_new(100, 0, 0, 0);
    start(&f, m, &r);
    run_until(f.base, &r.done, 10000);
    assert_int_equal(r.o.status, GRAPH_OK);
    assert_int_equal(fp.hits, 1);
    assert_int_equal(f.srv.nreqs, 0); /* Graph itself saw nothing: the proxy answered */
    snprintf(want, sizeof(want), "http://127.0.0.1:%d/v1.0/users/scan%%40contoso.test/sendMail",
             f.srv.port);
    assert_string_equal(fp.uri, want);
    /* the proxy removed (as by a reload): straight to Graph again */
    free(a->http_proxy);
    a->http_proxy = NULL;
    start(&f, m, &r);
    run_until(f.base, &r.done, 10000);
    assert_int_equal(r.o.status, GRAPH_OK);
    assert_int_equal(fp.hits, 1);
    assert_int_equal(f.srv.nreqs, 1);
    mime_free(m);
    evhttp_free(proxy);
    fx_free(&f);
}

static int group_setup(void **state)
{
    (void)state;
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    char cmdline[PATH_MAX + 16];
    snprintf(cmdline, sizeof(cmdline), "rm -rf %s", tmpdir);
    return system(cmdline) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sendmail_single),
        cmocka_unit_test(test_draft_uploads_send),
        cmocka_unit_test(test_upload_follows_next_range),
        cmocka_unit_test(test_upload_stall_bounded),
        cmocka_unit_test(test_send_fails_draft_deleted),
        cmocka_unit_test(test_401_then_fresh_token),
        cmocka_unit_test(test_429_holds_pool),
        cmocka_unit_test(test_in_flight_cap),
        cmocka_unit_test(test_in_flight_cap_configured),
        cmocka_unit_test(test_timeout_and_cancel),
        cmocka_unit_test(test_refusal_and_rate_limit),
        cmocka_unit_test(test_account_http_proxy),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
