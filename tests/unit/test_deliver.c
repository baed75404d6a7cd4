/* One delivery attempt (proxy/delivery/deliver.c) against the in-process scripted upstream
 * (scripted_upstream.h) over a real client_session on loopback TLS, with the message in a real
 * spool (committed, or still being written). The pool's connection is a test double behind
 * deliver_int.h's seam: it records how the connection was given back, and closes it when it is
 * not reusable, as the pool does. Asserted: the bytes the upstream received (commands and the
 * dot-stuffed body), the per-recipient and overall outcome, conn_failure, whether the connection
 * came back reusable, before the callback ran; a damaged body never gets its final "."; memory
 * stays bounded under backpressure; cancel stops everything. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "common/log.h"
#include "proxy/upstream/client_session.h"
#include "proxy/config/config.h"
#include "proxy/delivery/deliver.h"
#include "proxy/runtime/metrics.h"
#include "proxy/smtp/smtp_data.h"
#include "proxy/runtime/tls.h"
#include "store/spool.h"
#include "cert_fixture.h"
#include "scripted_upstream.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static char tmpdir[] = "/tmp/test_deliver.XXXXXX";
static char cert[PATH_MAX], key[PATH_MAX], log_path[PATH_MAX + 16];

/* ---- the pool's connection, doubled ---- */

struct upstream_conn {
    struct client_session *cs;
    int released, reusable;
};

static struct client_session *conn_session(struct upstream_conn *c)
{
    return c->cs;
}

static const char *conn_host(const struct upstream_conn *c)
{
    (void)c;
    return "127.0.0.1";
}

static void conn_release(struct upstream_conn *c, int reusable)
{
    assert_int_equal(c->released, 0);
    c->released = 1;
    c->reusable = reusable;
    if (!reusable) { /* as the pool does: closed, nothing more is sent */
        client_session_free(c->cs);
        c->cs = NULL;
    }
}

static const struct txn_conn_ops test_ops = {conn_session, conn_host, conn_release, NULL};

/* ---- what the callback saw ---- */

struct outcome {
    int done;
    int released_first; /* the connection was given back before the callback */
    struct txn_result res;
    struct txn_rcpt_result rcpts[4];
};

static void on_result(void *arg, const struct txn_result *res)
{
    struct outcome *o = ((void **)arg)[0];
    struct upstream_conn *c = ((void **)arg)[1];
    assert_int_equal(o->done, 0);
    o->done = 1;
    o->released_first = c->released;
    o->res = *res;
    assert_true(res->nrcpts <= N(o->rcpts));
    memcpy(o->rcpts, res->rcpts, res->nrcpts * sizeof(*res->rcpts));
    o->res.rcpts = o->rcpts;
}

/* ---- the fixture: upstream, opened session, spool ---- */

#define EHLO_FULL                                                                                  \
    "250-upstream.test Hello\r\n250-SIZE 157286400\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"            \
    "250-AUTH XOAUTH2\r\n250 ENHANCEDSTATUSCODES\r\n"

struct fx {
    struct event_base *base;
    SSL_CTX *client_ctx;
    struct srv *srv;
    struct step steps[16];
    size_t nsteps;
    struct upstream_conn conn;
    struct spool *spool;
    struct spool_envelope env;
    char *rcpts[4];
    struct cfg_account acct;
    char state_dir[PATH_MAX];
    struct outcome out;
    void *cb_arg[2];
    struct metrics *metrics; /* NULL: not counted */
};

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static void run_until(struct event_base *base, const int *flag, double secs)
{
    struct timeval start, now, tv = {0, 20000};
    struct event *t = event_new(base, -1, EV_PERSIST, tick, NULL);
    event_add(t, &tv);
    gettimeofday(&start, NULL);
    while (!*flag) {
        event_base_loop(base, EVLOOP_ONCE);
        gettimeofday(&now, NULL);
        if ((double)(now.tv_sec - start.tv_sec) + (double)(now.tv_usec - start.tv_usec) / 1e6 >
            secs)
            break;
    }
    event_free(t);
}

static void run_for(struct event_base *base, unsigned ms)
{
    int never = 0;
    run_until(base, &never, ms / 1000.0);
}

/* A fixture whose upstream greets, does STARTTLS with ehlo as its capabilities, then follows
 * the steps added with fx_step. */
static struct fx *fx_new(const char *ehlo)
{
    char err[256];
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->base = event_base_new();
    assert_non_null(f->base);
    f->client_ctx = tls_client_ctx_new(cert, err, sizeof(err));
    if (!f->client_ctx)
        fail_msg("client ctx: %s", err);
    f->steps[f->nsteps++] = (struct step){NULL, "220 upstream.test ESMTP\r\n", ACT_NONE};
    f->steps[f->nsteps++] =
        (struct step){"EHLO proxy.test", "250-upstream.test\r\n250 STARTTLS\r\n", ACT_NONE};
    f->steps[f->nsteps++] = (struct step){"STARTTLS", "220 2.0.0 Go ahead\r\n", ACT_STARTTLS};
    f->steps[f->nsteps++] = (struct step){"EHLO proxy.test", ehlo ? ehlo : EHLO_FULL, ACT_NONE};

    snprintf(f->state_dir, sizeof(f->state_dir), "%s/state", tmpdir);
    f->spool = spool_new(f->state_dir, 0, err, sizeof(err));
    if (!f->spool)
        fail_msg("spool_new: %s", err);
    f->acct.name = "scanners";
    f->acct.mailbox = "scanners@contoso.edu";
    f->acct.client_id = "00000000-0000-0000-0000-000000000001";
    f->acct.sender_rewrite = SENDER_REWRITE_OFF;
    f->env.account = "scanners";
    f->env.device = "copier1";
    f->env.mail_from = "scan@example.org";
    f->rcpts[0] = "a@example.org";
    f->rcpts[1] = "b@example.org";
    f->env.rcpts = f->rcpts;
    f->env.nrcpts = 2;
    f->env.created = 1800000000;
    f->cb_arg[0] = &f->out;
    f->cb_arg[1] = &f->conn;
    return f;
}

static void fx_step(struct fx *f, const char *expect, const char *reply, enum srv_action act)
{
    assert_true(f->nsteps < N(f->steps));
    f->steps[f->nsteps++] = (struct step){expect, reply, act};
}

struct open_wait {
    int done, code;
};

static void on_open(void *arg, const struct smtp_reply *r, const char *err)
{
    struct open_wait *w = arg;
    (void)err;
    w->done = 1;
    w->code = r ? r->code : 0;
}

/* Start the upstream and open the session the double lends out. */
static void fx_open(struct fx *f)
{
    struct open_wait w = {0, 0};
    struct client_cfg cc = {0};
    f->srv = srv_new(f->base, f->steps, f->nsteps, cert, key);
    cc.host = "127.0.0.1";
    cc.port = f->srv->port;
    cc.helo = "proxy.test";
    cc.ssl_ctx = f->client_ctx;
    cc.connect_timeout = 5;
    cc.reply_timeout = 5;
    cc.log_id = "t1";
    f->conn.cs = client_session_new(f->base, NULL, &cc);
    assert_non_null(f->conn.cs);
    client_session_open(f->conn.cs, on_open, &w);
    run_until(f->base, &w.done, 10);
    assert_int_equal(w.code, 250);
}

static void fx_free(struct fx *f)
{
    if (f->conn.cs)
        client_session_quit(f->conn.cs);
    f->conn.cs = NULL;
    run_for(f->base, 50);
    srv_free(f->srv);
    event_base_dispatch(f->base);
    spool_free(f->spool);
    SSL_CTX_free(f->client_ctx);
    event_base_free(f->base);
    free(f);
    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s/state'", tmpdir);
    assert_int_equal(system(cmd), 0);
}

/* Write body into a spool writer; commit it (f->env gets its id) or keep it open. */
static struct spool_writer *fx_write(struct fx *f, const char *body, size_t len, int commit)
{
    char err[512];
    struct spool_writer *w = spool_writer_new(f->spool, err, sizeof(err));
    assert_non_null(w);
    for (size_t o = 0; o < len;) { /* odd chunks: the writer does not care */
        size_t n = len - o < 70001 ? len - o : 70001;
        assert_int_equal(spool_writer_write(w, body + o, n, err, sizeof(err)), 0);
        o += n;
    }
    if (!commit)
        return w;
    if (spool_writer_commit(w, &f->env, err, sizeof(err)) != 0)
        fail_msg("commit: %s", err);
    return NULL;
}

static struct spool_body *fx_open_body(struct fx *f)
{
    char err[512];
    struct spool_body *b = spool_body_open(f->spool, &f->env, err, sizeof(err));
    if (!b)
        fail_msg("spool_body_open: %s", err);
    return b;
}

/* Deliver f->env (committed) with body b and wait for the outcome. */
static void fx_deliver(struct fx *f, struct spool_body *b)
{
    struct deliver_body src = deliver_body_spool(b);
    struct deliver *d = deliver_start_ops(&test_ops, &f->conn, &f->acct, &f->env, &src, f->metrics,
                                          "t1", on_result, f->cb_arg);
    assert_non_null(d);
    assert_int_equal(f->out.done, 0); /* never from inside the call */
    run_until(f->base, &f->out.done, 30);
    assert_int_equal(f->out.done, 1);
    assert_true(f->out.released_first);
}

/* The usual case: connect, commit body, deliver it; the caller frees the returned reader. */
static struct spool_body *fx_run(struct fx *f, const char *body, size_t len)
{
    fx_open(f);
    fx_write(f, body, len, 1);
    struct spool_body *b = fx_open_body(f);
    fx_deliver(f, b);
    return b;
}

static char *received(struct fx *f)
{
    return srv_received(f->srv);
}

static int body_equals(struct fx *f, const char *want, size_t len)
{
    size_t n = evbuffer_get_length(f->srv->body);
    if (n != len)
        return 0;
    char *got = malloc(n + 1);
    evbuffer_copyout(f->srv->body, got, n);
    int same = memcmp(got, want, n) == 0;
    free(got);
    return same;
}

/* The wire form of a stored body: every line dot-stuffed. */
static char *stuffed(const char *body, size_t len, size_t *outlen)
{
    char *out = malloc(len + len / 2 + 16);
    size_t o = 0;
    const char *p = body, *end = body + len;
    while (p < end) {
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        assert_non_null(lf);
        o += smtp_data_encode_line(out + o, p, (size_t)(lf - 1 - p));
        p = lf + 1;
    }
    out[o] = '\0';
    *outlen = o;
    return out;
}

static int saved_stderr = -1;

static void log_capture(void)
{
    fflush(stderr);
    saved_stderr = dup(2);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    dup2(fd, 2);
    close(fd);
    log_set_level(LOGL_INFO);
}

static const char *log_release(void)
{
    static char buf[65536];
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    log_set_level(LOGL_ERROR);
    FILE *fp = fopen(log_path, "rb");
    assert_non_null(fp);
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    return buf;
}

static const char BODY[] = "From: Copier <scan@example.org>\r\n"
                           "To: a@example.org\r\n"
                           "Subject: scan\r\n"
                           "\r\n"
                           ".starts with a dot\r\n"
                           "..two dots\r\n"
                           ".\r\n"
                           "last line\r\n";

#define MAIL_LINE "MAIL FROM:<scan@example.org> SIZE=115"

/* ---- tests ---- */

static void test_all_accepted(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    assert_int_equal(sizeof(BODY) - 1, 115);
    fx_step(f, MAIL_LINE, "250 2.1.0 Sender OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<a@example.org>", "250 2.1.5 Recipient OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<b@example.org>", "250 2.1.5 Recipient OK\r\n", ACT_NONE);
    fx_step(f, "DATA", "354 Go ahead\r\n", ACT_DATA);
    fx_step(f, ".", "250 2.0.0 OK <queued\x01-1>\r\n250 ignored\r\n", ACT_NONE);
    fx_step(f, "QUIT", "221 2.0.0 Bye\r\n", ACT_CLOSE);
    fx_open(f);
    fx_write(f, BODY, sizeof(BODY) - 1, 1);
    struct spool_body *b = fx_open_body(f);

    log_capture();
    fx_deliver(f, b);
    const char *log = log_release();

    assert_int_equal(f->out.res.status, TXN_OK);
    assert_int_equal(f->out.res.conn_failure, 0);
    /* first line only, control bytes replaced: log-safe */
    assert_string_equal(f->out.res.reply, "250 2.0.0 OK <queued?-1>");
    assert_int_equal(f->out.res.nrcpts, 2);
    assert_int_equal(f->out.rcpts[0].status, TXN_OK);
    assert_int_equal(f->out.rcpts[1].status, TXN_OK);
    assert_string_equal(f->out.rcpts[1].reply, "250 2.0.0 OK <queued?-1>");
    assert_true(f->conn.reusable);
    assert_true(client_session_usable(f->conn.cs));
    char *got = received(f);
    assert_string_equal(got, "EHLO proxy.test\r\nSTARTTLS\r\nEHLO proxy.test\r\n" MAIL_LINE "\r\n"
                             "RCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n.\r\n");
    free(got);
    size_t wlen;
    char *wire = stuffed(BODY, sizeof(BODY) - 1, &wlen);
    assert_true(body_equals(f, wire, wlen));
    assert_non_null(strstr(wire, "\r\n..starts with a dot\r\n...two dots\r\n..\r\n"));
    free(wire);
    assert_non_null(strstr(log, "event=deliver session=t1 queue_id="));
    assert_non_null(strstr(log, " account=scanners host=\"127.0.0.1\" from=\"scan@example.org\" "
                                "rcpts=2 delivered=2 deferred=0 refused=0 size=115 "
                                "result=delivered conn_failure=0 upstream=\"250 2.0.0 OK "));
    assert_non_null(strstr(log, "duration_ms="));
    spool_body_free(b);
    assert_string_equal(f->srv->failure, "");
    fx_free(f);
}

static void test_one_refused_one_accepted_is_partial(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    fx_step(f, MAIL_LINE, "250 2.1.0 Sender OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<a@example.org>",
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<b@example.org>", "250 2.1.5 Recipient OK\r\n", ACT_NONE);
    fx_step(f, "DATA", "354 Go ahead\r\n", ACT_DATA);
    fx_step(f, ".", "250 2.0.0 OK\r\n", ACT_NONE);
    fx_open(f);
    fx_write(f, BODY, sizeof(BODY) - 1, 1);
    struct spool_body *b = fx_open_body(f);
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    f->metrics = metrics_new(&cfg);
    assert_non_null(f->metrics);
    fx_deliver(f, b);
    /* every reply to MAIL, RCPT and the end of DATA counted, as backend_direct.c counts them */
    struct evbuffer *prom = evbuffer_new();
    assert_int_equal(metrics_render(f->metrics, prom, NULL, NULL, 0), 0);
    evbuffer_add(prom, "", 1);
    const char *text = (const char *)evbuffer_pullup(prom, -1);
    assert_non_null(strstr(text, "{command=\"MAIL\",class=\"2xx\",code=\"2.1.0\"} 1\n"));
    assert_non_null(strstr(text, "{command=\"RCPT\",class=\"5xx\",code=\"5.1.10\"} 1\n"));
    assert_non_null(strstr(text, "{command=\"RCPT\",class=\"2xx\",code=\"2.1.5\"} 1\n"));
    assert_non_null(strstr(text, "{command=\"DATA\",class=\"2xx\",code=\"2.0.0\"} 1\n"));
    evbuffer_free(prom);
    metrics_free(f->metrics);
    assert_int_equal(f->out.res.status, TXN_PARTIAL);
    assert_int_equal(f->out.rcpts[0].status, TXN_PERM);
    assert_string_equal(f->out.rcpts[0].reply,
                        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found");
    assert_int_equal(f->out.rcpts[1].status, TXN_OK);
    assert_string_equal(f->out.res.reply, "250 2.0.0 OK"); /* some were delivered */
    assert_int_equal(f->out.res.conn_failure, 0);
    assert_true(f->conn.reusable);
    spool_body_free(b);
    fx_free(f);
}

static void test_temp_and_ok_is_temp(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    fx_step(f, MAIL_LINE, "250 2.1.0 Sender OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<a@example.org>", "250 2.1.5 Recipient OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<b@example.org>", "451 4.7.1 Try again later\r\n", ACT_NONE);
    fx_step(f, "DATA", "354 Go ahead\r\n", ACT_DATA);
    fx_step(f, ".", "250 2.0.0 OK\r\n", ACT_NONE);
    struct spool_body *b = fx_run(f, BODY, sizeof(BODY) - 1);
    assert_int_equal(f->out.res.status, TXN_TEMP);
    assert_int_equal(f->out.rcpts[0].status, TXN_OK);
    assert_int_equal(f->out.rcpts[1].status, TXN_TEMP);
    assert_string_equal(f->out.rcpts[1].reply, "451 4.7.1 Try again later");
    assert_int_equal(f->out.res.conn_failure, 0);
    spool_body_free(b);
    fx_free(f);
}

static void test_no_recipient_accepted_resets(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    fx_step(f, MAIL_LINE, "250 2.1.0 Sender OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<a@example.org>", "550 5.1.1 No such user a\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<b@example.org>", "550 5.1.1 No such user b\r\n", ACT_NONE);
    fx_step(f, "RSET", "250 2.0.0 Resetting\r\n", ACT_NONE);
    struct spool_body *b = fx_run(f, BODY, sizeof(BODY) - 1);
    assert_int_equal(f->out.res.status, TXN_PERM);
    assert_string_equal(f->out.res.reply, "550 5.1.1 No such user a"); /* the first refusal */
    assert_string_equal(f->out.rcpts[1].reply, "550 5.1.1 No such user b");
    assert_true(f->conn.reusable); /* RSET answered: no transaction left open */
    char *got = received(f);
    assert_null(strstr(got, "DATA"));
    assert_non_null(strstr(got, "RSET\r\n"));
    free(got);
    spool_body_free(b);
    fx_free(f);
}

static void test_mail_refused_all_perm(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    fx_step(f, MAIL_LINE,
            "550 5.7.60 SMTP; Client does not have permissions to send as this "
            "sender\r\n",
            ACT_NONE);
    fx_open(f);
    fx_write(f, BODY, sizeof(BODY) - 1, 1);
    struct spool_body *b = fx_open_body(f);
    log_capture();
    fx_deliver(f, b);
    const char *log = log_release();
    assert_int_equal(f->out.res.status, TXN_PERM);
    assert_int_equal(f->out.rcpts[0].status, TXN_PERM);
    assert_int_equal(f->out.rcpts[1].status, TXN_PERM);
    assert_string_equal(f->out.rcpts[1].reply, "550 5.7.60 SMTP; Client does not have "
                                               "permissions to send as this sender");
    assert_int_equal(f->out.res.conn_failure, 0);
    assert_true(f->conn.reusable);
    /* Exchange's table knows 5.7.60: the log line says what to change */
    assert_non_null(strstr(log, "result=refused"));
    assert_non_null(strstr(log, " explain=\""));
    char *got = received(f);
    assert_null(strstr(got, "RCPT"));
    free(got);
    spool_body_free(b);
    fx_free(f);
}

static void test_mail_throttled_is_conn_failure(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    fx_step(f, MAIL_LINE, "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded\r\n",
            ACT_NONE);
    struct spool_body *b = fx_run(f, BODY, sizeof(BODY) - 1);
    assert_int_equal(f->out.res.status, TXN_TEMP);
    assert_int_equal(f->out.res.conn_failure, 1);
    assert_string_equal(f->out.res.reply,
                        "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded");
    assert_false(f->conn.reusable);
    spool_body_free(b);
    fx_free(f);
}

static void test_data_end_451_is_temp(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    fx_step(f, MAIL_LINE, "250 2.1.0 Sender OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<a@example.org>", "250 2.1.5 OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<b@example.org>", "250 2.1.5 OK\r\n", ACT_NONE);
    fx_step(f, "DATA", "354 Go ahead\r\n", ACT_DATA);
    fx_step(f, ".", "451 4.7.0 Temporary server error\r\n", ACT_NONE);
    struct spool_body *b = fx_run(f, BODY, sizeof(BODY) - 1);
    assert_int_equal(f->out.res.status, TXN_TEMP);
    assert_int_equal(f->out.res.conn_failure, 0);
    assert_string_equal(f->out.res.reply, "451 4.7.0 Temporary server error");
    assert_int_equal(f->out.rcpts[0].status, TXN_TEMP);
    assert_int_equal(f->out.rcpts[1].status, TXN_TEMP);
    assert_true(f->conn.reusable); /* the transaction is over */
    spool_body_free(b);
    fx_free(f);
}

static void test_rcpt_421_is_conn_failure(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    fx_step(f, MAIL_LINE, "250 2.1.0 Sender OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<a@example.org>", "421 4.4.2 Connection dropped due to timeout\r\n",
            ACT_CLOSE);
    struct spool_body *b = fx_run(f, BODY, sizeof(BODY) - 1);
    assert_int_equal(f->out.res.status, TXN_TEMP);
    assert_int_equal(f->out.res.conn_failure, 1);
    assert_string_equal(f->out.rcpts[0].reply, "421 4.4.2 Connection dropped due to timeout");
    assert_int_equal(f->out.rcpts[1].status, TXN_TEMP); /* never asked */
    assert_false(f->conn.reusable);
    char *got = received(f);
    assert_null(strstr(got, "RCPT TO:<b@"));
    free(got);
    spool_body_free(b);
    assert_string_equal(f->srv->failure, "");
    fx_free(f);
}

/* A body of about len bytes of numbered lines, some starting with a dot. */
static char *make_body(size_t want, size_t *len)
{
    char *b = malloc(want + 128);
    size_t o = 0;
    assert_non_null(b);
    for (unsigned i = 0; o < want; i++)
        o += (size_t)sprintf(b + o, "%sline %07u the quick brown fox jumps over the lazy dog\r\n",
                             i % 7 == 0 ? "." : "", i);
    *len = o;
    return b;
}

static void test_connection_dropped_mid_body(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    size_t len;
    char *body = make_body(2 * 1024 * 1024, &len);
    char mail[128];
    snprintf(mail, sizeof(mail), "MAIL FROM:<scan@example.org> SIZE=%zu", len);
    fx_step(f, mail, "250 2.1.0 Sender OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<a@example.org>", "250 2.1.5 OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<b@example.org>", "250 2.1.5 OK\r\n", ACT_NONE);
    fx_step(f, "DATA", "354 Go ahead\r\n", ACT_DATA);
    fx_open(f);
    f->srv->drop_after = 100 * 1024;
    fx_write(f, body, len, 1);
    struct spool_body *b = fx_open_body(f);
    fx_deliver(f, b);
    assert_int_equal(f->out.res.status, TXN_TEMP);
    assert_int_equal(f->out.res.conn_failure, 1);
    assert_int_equal(f->out.rcpts[0].status, TXN_TEMP);
    assert_non_null(strstr(f->out.res.reply, "451 4.4.2 Upstream connection lost"));
    assert_false(f->conn.reusable);
    assert_true(f->srv->body_len < len);
    spool_body_free(b);
    free(body);
    fx_free(f);
}

static void test_damaged_body_never_completed(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    size_t len;
    char *body = make_body(300 * 1024, &len);
    char mail[128], path[PATH_MAX];
    snprintf(mail, sizeof(mail), "MAIL FROM:<scan@example.org> SIZE=%zu", len);
    fx_step(f, mail, "250 2.1.0 Sender OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<a@example.org>", "250 2.1.5 OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<b@example.org>", "250 2.1.5 OK\r\n", ACT_NONE);
    fx_step(f, "DATA", "354 Go ahead\r\n", ACT_DATA);
    fx_open(f);
    fx_write(f, body, len, 1);
    /* one letter changed near the end, length and trailer intact: only the hash can tell */
    assert_non_null(spool_body_path(f->spool, f->env.queue_id, path, sizeof(path)));
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "X", 1, (off_t)(len - 10)), 1);
    close(fd);
    struct spool_body *b = fx_open_body(f);
    log_capture();
    fx_deliver(f, b);
    const char *log = log_release();
    assert_int_equal(f->out.res.status, TXN_PERM);
    assert_int_equal(f->out.res.conn_failure, 0);
    assert_string_equal(f->out.res.reply, "554 5.3.0 The queued message is damaged on disk");
    assert_int_equal(f->out.rcpts[1].status, TXN_PERM);
    assert_false(f->conn.reusable);
    char want[64];
    snprintf(want, sizeof(want), "event=spool_body_damaged queue_id=%s", f->env.queue_id);
    assert_non_null(strstr(log, want));
    run_for(f->base, 100);
    assert_true(f->srv->in_data); /* no end of data ever arrived */
    char *got = received(f);
    assert_null(strstr(got, "DATA\r\n.\r\n"));
    free(got);
    spool_body_free(b);
    free(body);
    fx_free(f);
}

/* A stored line longer than any the DATA decoder lets through is damage, even within one read
 * chunk: refused whole, never sent cut short. */
static void test_overlong_stored_line_is_damage(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    char body[2048 + 64];
    size_t len = (size_t)snprintf(body, sizeof(body), "Subject: long\r\n\r\n");
    memset(body + len, 'a', 1500);
    len += 1500;
    memcpy(body + len, "\r\n", 2);
    len += 2;
    char mail[128];
    snprintf(mail, sizeof(mail), "MAIL FROM:<scan@example.org> SIZE=%zu", len);
    fx_step(f, mail, "250 2.1.0 Sender OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<a@example.org>", "250 2.1.5 OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<b@example.org>", "250 2.1.5 OK\r\n", ACT_NONE);
    fx_step(f, "DATA", "354 Go ahead\r\n", ACT_DATA);
    fx_open(f);
    fx_write(f, body, len, 1);
    struct spool_body *b = fx_open_body(f);
    fx_deliver(f, b);
    assert_int_equal(f->out.res.status, TXN_PERM);
    assert_string_equal(f->out.res.reply, "554 5.3.0 The queued message is damaged on disk");
    assert_false(f->conn.reusable);
    run_for(f->base, 100);
    char *got = received(f);
    assert_null(strstr(got, "aaaa\r\n"));
    assert_null(strstr(got, "DATA\r\n.\r\n"));
    free(got);
    spool_body_free(b);
    fx_free(f);
}

static void test_sender_rewrite_envelope(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    f->acct.sender_rewrite = SENDER_REWRITE_ENVELOPE;
    f->env.nrcpts = 1;
    fx_step(f, "MAIL FROM:<scanners@contoso.edu> SIZE=115", "250 2.1.0 OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<a@example.org>", "250 2.1.5 OK\r\n", ACT_NONE);
    fx_step(f, "DATA", "354 Go ahead\r\n", ACT_DATA);
    fx_step(f, ".", "250 2.0.0 OK\r\n", ACT_NONE);
    struct spool_body *b = fx_run(f, BODY, sizeof(BODY) - 1);
    assert_int_equal(f->out.res.status, TXN_OK);
    size_t wlen;
    char *wire = stuffed(BODY, sizeof(BODY) - 1, &wlen);
    assert_true(body_equals(f, wire, wlen)); /* the header is left alone */
    free(wire);
    assert_string_equal(f->srv->failure, "");
    spool_body_free(b);
    fx_free(f);
}

static void test_sender_rewrite_header(void **state)
{
    (void)state;
    static const char want[] = "From: <scanners@contoso.edu>\r\n"
                               "Reply-To: Copier <scan@example.org>\r\n"
                               "To: a@example.org\r\n"
                               "Subject: scan\r\n"
                               "\r\n"
                               "..starts with a dot\r\n"
                               "...two dots\r\n"
                               "..\r\n"
                               "last line\r\n";
    struct fx *f = fx_new(NULL);
    f->acct.sender_rewrite = SENDER_REWRITE_HEADER;
    f->env.nrcpts = 1;
    fx_step(f, "MAIL FROM:<scanners@contoso.edu> SIZE=115", "250 2.1.0 OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<a@example.org>", "250 2.1.5 OK\r\n", ACT_NONE);
    fx_step(f, "DATA", "354 Go ahead\r\n", ACT_DATA);
    fx_step(f, ".", "250 2.0.0 OK\r\n", ACT_NONE);
    struct spool_body *b = fx_run(f, BODY, sizeof(BODY) - 1);
    assert_int_equal(f->out.res.status, TXN_OK);
    assert_true(body_equals(f, want, sizeof(want) - 1));
    assert_string_equal(f->srv->failure, "");
    spool_body_free(b);
    fx_free(f);
}

static void test_null_sender_stays_null(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    f->acct.sender_rewrite = SENDER_REWRITE_HEADER;
    f->env.mail_from = "";
    f->env.nrcpts = 1;
    fx_step(f, "MAIL FROM:<> SIZE=115", "250 2.1.0 OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<a@example.org>", "250 2.1.5 OK\r\n", ACT_NONE);
    fx_step(f, "DATA", "354 Go ahead\r\n", ACT_DATA);
    fx_step(f, ".", "250 2.0.0 OK\r\n", ACT_NONE);
    struct spool_body *b = fx_run(f, BODY, sizeof(BODY) - 1);
    assert_int_equal(f->out.res.status, TXN_OK);
    assert_string_equal(f->srv->failure, "");
    spool_body_free(b);
    fx_free(f);
}

/* sender_rewrite = header cannot hold a header section over HEADER_REWRITE_MAX: refused, and
 * nothing of it is completed upstream. */
static void test_header_too_large_to_rewrite(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    size_t len = 0;
    char *body = malloc(400 * 1024), mail[128];
    assert_non_null(body);
    for (int i = 0; i < 330; i++) {
        len += (size_t)sprintf(body + len, "X-Filler-%03d: ", i);
        memset(body + len, 'a', 900);
        len += 900;
        len += (size_t)sprintf(body + len, "\r\n");
    }
    len += (size_t)sprintf(body + len, "\r\nbody\r\n");
    f->acct.sender_rewrite = SENDER_REWRITE_HEADER;
    f->env.nrcpts = 1;
    snprintf(mail, sizeof(mail), "MAIL FROM:<scanners@contoso.edu> SIZE=%zu", len);
    fx_step(f, mail, "250 2.1.0 OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<a@example.org>", "250 2.1.5 OK\r\n", ACT_NONE);
    fx_step(f, "DATA", "354 Go ahead\r\n", ACT_DATA);
    fx_open(f);
    fx_write(f, body, len, 1);
    struct spool_body *b = fx_open_body(f);
    fx_deliver(f, b);
    assert_int_equal(f->out.res.status, TXN_PERM);
    assert_string_equal(f->out.res.reply,
                        "552 5.3.4 Header section too large to rewrite the sender");
    assert_false(f->conn.reusable);
    run_for(f->base, 100);
    assert_true(f->srv->in_data || f->srv->closed); /* never ended with "." */
    char *got = received(f);
    assert_null(strstr(got, "DATA\r\n.\r\n"));
    free(got);
    spool_body_free(b);
    free(body);
    fx_free(f);
}

/* A recipient whose RCPT line would pass 512 octets is refused here (the envelope allows 512-byte
 * addresses; SMTP command lines do not), the others still go. */
static void test_recipient_too_long_refused_locally(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    char longaddr[520];
    memset(longaddr, 'x', 500);
    strcpy(longaddr + 500, "@example.org");
    f->rcpts[0] = longaddr;
    fx_step(f, MAIL_LINE, "250 2.1.0 OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<b@example.org>", "250 2.1.5 OK\r\n", ACT_NONE);
    fx_step(f, "DATA", "354 Go ahead\r\n", ACT_DATA);
    fx_step(f, ".", "250 2.0.0 OK\r\n", ACT_NONE);
    struct spool_body *b = fx_run(f, BODY, sizeof(BODY) - 1);
    assert_int_equal(f->out.res.status, TXN_PARTIAL);
    assert_int_equal(f->out.rcpts[0].status, TXN_PERM);
    assert_string_equal(f->out.rcpts[0].reply, "501 5.1.3 Recipient address too long");
    assert_int_equal(f->out.rcpts[1].status, TXN_OK);
    assert_string_equal(f->srv->failure, "");
    spool_body_free(b);
    fx_free(f);
}

/* Refusals decided before MAIL: nothing of the message is sent, the connection stays reusable. */
static void test_local_refusals(void **state)
{
    static char longfrom[520];
    memset(longfrom, 's', 500);
    strcpy(longfrom + 500, "@example.org");
    const struct {
        const char *ehlo;
        int smtputf8, eightbit;
        const char *reply;
        const char *from;
    } cases[] = {
        {"250-upstream.test\r\n250-SIZE 100\r\n250 8BITMIME\r\n", 0, 0,
         "552 5.3.4 Message size exceeds the upstream server's limit", NULL},
        {"250-upstream.test\r\n250 SIZE 1000\r\n", 0, 1,
         "555 5.6.3 8BITMIME is not supported by the upstream server", NULL},
        {"250-upstream.test\r\n250 8BITMIME\r\n", 1, 0,
         "555 5.6.7 SMTPUTF8 is not supported by the upstream server", NULL},
        {EHLO_FULL, 0, 0, "501 5.1.7 Sender address too long", longfrom},
    };
    (void)state;
    for (size_t i = 0; i < N(cases); i++) {
        struct fx *f = fx_new(cases[i].ehlo);
        f->env.smtputf8 = cases[i].smtputf8;
        f->env.eightbit = cases[i].eightbit;
        if (cases[i].from)
            f->env.mail_from = (char *)(uintptr_t)cases[i].from;
        fx_step(f, "RSET", "250 2.0.0 OK\r\n", ACT_NONE);
        fx_open(f);
        fx_write(f, BODY, sizeof(BODY) - 1, 1);
        struct spool_body *b = fx_open_body(f);
        fx_deliver(f, b);
        assert_int_equal(f->out.res.status, TXN_PERM);
        assert_string_equal(f->out.res.reply, cases[i].reply);
        assert_string_equal(f->out.rcpts[1].reply, cases[i].reply);
        assert_int_equal(f->out.res.conn_failure, 0);
        assert_true(f->conn.reusable);
        char *got = received(f);
        assert_null(strstr(got, "MAIL"));
        free(got);
        spool_body_free(b);
        fx_free(f);
    }
}

/* The upstream's SIZE and the 8-bit and SMTPUTF8 parameters when offered. */
static void test_mail_parameters(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    f->env.smtputf8 = 1;
    f->env.eightbit = 1;
    f->env.nrcpts = 1;
    fx_step(f, "MAIL FROM:<scan@example.org> SIZE=115 BODY=8BITMIME SMTPUTF8", "250 2.1.0 OK\r\n",
            ACT_NONE);
    fx_step(f, "RCPT TO:<a@example.org>", "250 2.1.5 OK\r\n", ACT_NONE);
    fx_step(f, "DATA", "554 5.6.0 No\r\n", ACT_NONE);
    fx_step(f, "RSET", "250 2.0.0 OK\r\n", ACT_NONE);
    struct spool_body *b = fx_run(f, BODY, sizeof(BODY) - 1);
    assert_int_equal(f->out.res.status, TXN_PERM);
    assert_string_equal(f->out.res.reply, "554 5.6.0 No");
    assert_true(f->conn.reusable);
    assert_string_equal(f->srv->failure, "");
    spool_body_free(b);
    fx_free(f);
}

struct sampler {
    struct client_session *cs;
    size_t peak;
};

static void sample(evutil_socket_t fd, short what, void *arg)
{
    struct sampler *s = arg;
    (void)fd;
    (void)what;
    size_t p = client_session_usable(s->cs) ? client_session_pending(s->cs) : 0;
    if (p > s->peak)
        s->peak = p;
}

/* 10 MB from a message still being written (direct-then-spool), to an upstream that pauses:
 * reading stops at the high mark, so what is queued stays about a megabyte. */
static void test_10mb_backpressure_from_writer(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    size_t len, wlen;
    char *body = make_body(10 * 1024 * 1024, &len);
    char mail[128], err[512];
    snprintf(mail, sizeof(mail), "MAIL FROM:<scan@example.org> SIZE=%zu", len);
    fx_step(f, mail, "250 2.1.0 Sender OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<a@example.org>", "250 2.1.5 OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<b@example.org>", "250 2.1.5 OK\r\n", ACT_NONE);
    fx_step(f, "DATA", "354 Go ahead\r\n", ACT_DATA);
    fx_step(f, ".", "250 2.0.0 OK\r\n", ACT_NONE);
    fx_open(f);
    f->srv->pause_ms = 300;
    struct spool_writer *w = fx_write(f, body, len, 0);
    /* env.size is not set before the commit: SIZE= comes from the reader */
    struct spool_body *b = spool_writer_reader(w, err, sizeof(err));
    assert_non_null(b);

    struct sampler smp = {f->conn.cs, 0};
    struct event *t = event_new(f->base, -1, EV_PERSIST, sample, &smp);
    struct timeval tv = {0, 1000};
    event_add(t, &tv);
    fx_deliver(f, b);
    event_free(t);

    assert_int_equal(f->out.res.status, TXN_OK);
    char *wire = stuffed(body, len, &wlen);
    assert_true(body_equals(f, wire, wlen));
    free(wire);
    /* it did stop (the upstream paused) and never queued much beyond the high mark */
    assert_true(smp.peak > 256 * 1024);
    assert_true(smp.peak <= 1024 * 1024 + 2 * 64 * 1024);
    spool_body_free(b);
    assert_int_equal(spool_writer_commit(w, &f->env, err, sizeof(err)), 0); /* still commits */
    free(body);
    fx_free(f);
}

static void never_called(void *arg, const struct txn_result *res)
{
    (void)arg;
    (void)res;
    fail_msg("callback after cancel");
}

static void test_cancel_mid_body(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    size_t len;
    char *body = make_body(4 * 1024 * 1024, &len);
    char mail[128];
    snprintf(mail, sizeof(mail), "MAIL FROM:<scan@example.org> SIZE=%zu", len);
    fx_step(f, mail, "250 2.1.0 Sender OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<a@example.org>", "250 2.1.5 OK\r\n", ACT_NONE);
    fx_step(f, "RCPT TO:<b@example.org>", "250 2.1.5 OK\r\n", ACT_NONE);
    fx_step(f, "DATA", "354 Go ahead\r\n", ACT_DATA);
    fx_open(f);
    f->srv->pause_ms = 2000;
    fx_write(f, body, len, 1);
    struct spool_body *b = fx_open_body(f);
    struct deliver_body src = deliver_body_spool(b);
    struct deliver *d = deliver_start_ops(&test_ops, &f->conn, &f->acct, &f->env, &src, NULL, "t1",
                                          never_called, f);
    assert_non_null(d);
    /* until the body is flowing (the upstream sits on it) */
    for (int i = 0; i < 500 && !(f->srv->in_data && client_session_pending(f->conn.cs) > 0); i++)
        event_base_loop(f->base, EVLOOP_ONCE);
    assert_true(f->srv->in_data);
    deliver_cancel(d);
    assert_true(f->conn.released);
    assert_false(f->conn.reusable);
    run_for(f->base, 200);
    assert_true(f->srv->body_len < len);
    char *got = received(f);
    assert_null(strstr(got, "DATA\r\n.\r\n"));
    free(got);
    spool_body_free(b);
    deliver_cancel(NULL);
    free(body);
    fx_free(f);
}

static int group_setup(void **state)
{
    (void)state;
    log_set_level(getenv("SOP_TEST_DEBUG") ? LOGL_DEBUG : LOGL_ERROR);
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(log_path, sizeof(log_path), "%s/log", tmpdir);
    return cert_fixture_make(tmpdir, "good", "localhost", "DNS:localhost,IP:127.0.0.1", cert,
                             sizeof(cert), key, sizeof(key));
}

static int group_teardown(void **state)
{
    char cmd[PATH_MAX + 32];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_accepted),
        cmocka_unit_test(test_one_refused_one_accepted_is_partial),
        cmocka_unit_test(test_temp_and_ok_is_temp),
        cmocka_unit_test(test_no_recipient_accepted_resets),
        cmocka_unit_test(test_mail_refused_all_perm),
        cmocka_unit_test(test_mail_throttled_is_conn_failure),
        cmocka_unit_test(test_data_end_451_is_temp),
        cmocka_unit_test(test_rcpt_421_is_conn_failure),
        cmocka_unit_test(test_connection_dropped_mid_body),
        cmocka_unit_test(test_damaged_body_never_completed),
        cmocka_unit_test(test_overlong_stored_line_is_damage),
        cmocka_unit_test(test_sender_rewrite_envelope),
        cmocka_unit_test(test_sender_rewrite_header),
        cmocka_unit_test(test_null_sender_stays_null),
        cmocka_unit_test(test_header_too_large_to_rewrite),
        cmocka_unit_test(test_recipient_too_long_refused_locally),
        cmocka_unit_test(test_local_refusals),
        cmocka_unit_test(test_mail_parameters),
        cmocka_unit_test(test_10mb_backpressure_from_writer),
        cmocka_unit_test(test_cancel_mid_body),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
