/* An in-process scripted SMTP server on 127.0.0.1 for unit tests of the upstream side: a table
 * of "expect this line -> send this reply (and maybe act)", STARTTLS with the test's throwaway
 * certificates, every line received and the DATA body recorded, so tests assert exactly what
 * went over the wire. Runs in the test's event loop. Header-only (like cert_fixture.h); include
 * it after cmocka.h. Used by test_client_session.c and test_deliver.c. */
#ifndef SOP_TEST_SCRIPTED_UPSTREAM_H
#define SOP_TEST_SCRIPTED_UPSTREAM_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "proxy/runtime/tls.h"

enum srv_action {
    ACT_NONE = 0,
    ACT_STARTTLS, /* after the reply, start TLS (server side) */
    ACT_CLOSE,    /* after the reply (if any), close the connection */
    ACT_HANG,     /* send nothing, keep the connection */
    ACT_DATA,     /* after the reply, read a body up to CRLF.CRLF; then expect "." */
};

struct step {
    const char *expect; /* NULL: on connect; "x*": any line starting with x; else exact */
    const char *reply;  /* raw bytes, CRLFs included; NULL: none */
    enum srv_action action;
};

struct srv {
    struct event_base *base;
    struct evconnlistener *lis;
    uint16_t port;
    SSL_CTX *ctx;
    const struct step *steps;
    size_t nsteps, next;
    struct bufferevent *bev;
    SSL *ssl;
    struct evbuffer *received; /* every line received, CRLF-terminated, body excluded */
    struct evbuffer *body;     /* the DATA body without the final ".\r\n" */
    char tail[5];              /* last bytes of the body seen so far */
    size_t body_len;
    int in_data;
    unsigned pause_ms; /* stop reading this long after the 354, to build backpressure */
    size_t drop_after; /* drop the connection once this many body bytes arrived (0: never) */
    struct event *resume;
    struct event *flush;
    int connected, handshake_done, closed;
    char sni[256];
    char failure[512];
};

static void srv_fail(struct srv *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void srv_fail(struct srv *s, const char *fmt, ...)
{
    va_list ap;
    if (s->failure[0])
        return;
    va_start(ap, fmt);
    vsnprintf(s->failure, sizeof(s->failure), fmt, ap);
    va_end(ap);
}

static void srv_close(struct srv *s)
{
    if (s->bev) {
        bufferevent_free(s->bev);
        s->bev = NULL;
        s->ssl = NULL;
    }
    s->closed = 1;
}

/* bufferevent_free() drops unsent output: wait until the reply (and, under TLS, its records)
 * reached the kernel, then close. */
static void srv_flush_check(evutil_socket_t fd, short what, void *arg)
{
    struct srv *s = arg;
    (void)fd;
    (void)what;
    if (!s->bev)
        return;
    struct bufferevent *under = bufferevent_get_underlying(s->bev);
    if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0 &&
        (!under || evbuffer_get_length(bufferevent_get_output(under)) == 0)) {
        srv_close(s);
        return;
    }
    struct timeval tv = {0, 5000};
    evtimer_add(s->flush, &tv);
}

static void srv_close_when_flushed(struct srv *s)
{
    bufferevent_disable(s->bev, EV_READ);
    srv_flush_check(-1, 0, s);
}

static void srv_readcb(struct bufferevent *bev, void *arg);
static void srv_eventcb(struct bufferevent *bev, short what, void *arg);

static void srv_start_tls(struct srv *s)
{
    s->ssl = SSL_new(s->ctx);
    struct bufferevent *tls = bufferevent_openssl_filter_new(
        s->base, s->bev, s->ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (!tls) {
        srv_fail(s, "server: cannot start TLS");
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
    s->bev = tls;
    bufferevent_setcb(tls, srv_readcb, NULL, srv_eventcb, s);
    bufferevent_enable(tls, EV_READ | EV_WRITE);
}

static void srv_resume(evutil_socket_t fd, short what, void *arg)
{
    struct srv *s = arg;
    (void)fd;
    (void)what;
    if (s->bev) {
        bufferevent_enable(s->bev, EV_READ);
        srv_readcb(s->bev, s);
    }
}

/* Run the step for line (NULL: the connection just opened). 1 if reading should stop. */
static int srv_step(struct srv *s, const char *line)
{
    if (s->next >= s->nsteps) {
        srv_fail(s, "server: unexpected line after the script: \"%s\"", line ? line : "(connect)");
        srv_close(s);
        return 1;
    }
    const struct step *st = &s->steps[s->next++];
    if (line) {
        size_t n = st->expect ? strlen(st->expect) : 0;
        int ok = st->expect &&
                 ((n > 0 && st->expect[n - 1] == '*') ? strncmp(line, st->expect, n - 1) == 0
                                                      : strcmp(line, st->expect) == 0);
        if (!ok) {
            srv_fail(s, "server: expected \"%s\", got \"%.200s\"",
                     st->expect ? st->expect : "(connect)", line);
            bufferevent_write(s->bev, "500 unexpected\r\n", 16);
            return 0;
        }
    }
    if (st->reply)
        bufferevent_write(s->bev, st->reply, strlen(st->reply));
    switch (st->action) {
    case ACT_STARTTLS:
        srv_start_tls(s);
        return 1;
    case ACT_CLOSE:
        srv_close_when_flushed(s);
        return 1;
    case ACT_DATA:
        s->in_data = 1;
        s->body_len = 0;
        if (s->pause_ms) {
            /* normalised: libevent does not fix a tv_usec of a second or more, and such a
             * timer misorders the timer heap (it hid the loop's tick and hung a test) */
            struct timeval tv = {(time_t)(s->pause_ms / 1000),
                                 (suseconds_t)(s->pause_ms % 1000) * 1000};
            bufferevent_disable(s->bev, EV_READ);
            evtimer_add(s->resume, &tv);
            return 1;
        }
        return 0;
    default:
        return 0;
    }
}

/* Move body bytes; 1 when the terminating CRLF.CRLF was seen. */
static int srv_read_body(struct srv *s, struct evbuffer *in)
{
    size_t n = evbuffer_get_length(in);
    size_t keep = n < 5 ? n : 5;
    char last[5];
    struct evbuffer_ptr p;

    evbuffer_ptr_set(in, &p, n - keep, EVBUFFER_PTR_SET);
    evbuffer_copyout_from(in, &p, last, keep);
    memmove(s->tail, s->tail + keep, 5 - keep);
    memcpy(s->tail + 5 - keep, last, keep);
    evbuffer_add_buffer(s->body, in);
    s->body_len += n;
    if ((s->body_len == 3 && memcmp(s->tail + 2, ".\r\n", 3) == 0) ||
        (s->body_len >= 5 && memcmp(s->tail, "\r\n.\r\n", 5) == 0)) {
        /* Keep the CRLF that ends the last line; drop ".\r\n". */
        size_t total = evbuffer_get_length(s->body);
        struct evbuffer *trimmed = evbuffer_new();
        evbuffer_remove_buffer(s->body, trimmed, total - 3);
        evbuffer_free(s->body);
        s->body = trimmed;
        s->in_data = 0;
        return 1;
    }
    return 0;
}

static void srv_readcb(struct bufferevent *bev, void *arg)
{
    struct srv *s = arg;
    (void)bev;
    while (s->bev) {
        struct evbuffer *in = bufferevent_get_input(s->bev);
        if (s->in_data) {
            if (evbuffer_get_length(in) == 0 || !srv_read_body(s, in)) {
                if (s->drop_after && s->body_len >= s->drop_after)
                    srv_close(s);
                return;
            }
            evbuffer_add(s->received, ".\r\n", 3);
            if (srv_step(s, "."))
                return;
            continue;
        }
        size_t len;
        char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF_STRICT);
        if (!line)
            return;
        evbuffer_add(s->received, line, len);
        evbuffer_add(s->received, "\r\n", 2);
        int stop = srv_step(s, line);
        free(line);
        if (stop)
            return;
    }
}

static void srv_eventcb(struct bufferevent *bev, short what, void *arg)
{
    struct srv *s = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        s->handshake_done = 1;
        const char *sni = s->ssl ? SSL_get_servername(s->ssl, TLSEXT_NAMETYPE_host_name) : NULL;
        snprintf(s->sni, sizeof(s->sni), "%s", sni ? sni : "");
        return;
    }
    srv_close(s);
}

static void srv_acceptcb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                         int salen, void *arg)
{
    struct srv *s = arg;
    (void)lis;
    (void)sa;
    (void)salen;
    if (s->bev) { /* one connection per test */
        evutil_closesocket(fd);
        return;
    }
    s->connected = 1;
    s->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(s->bev, srv_readcb, NULL, srv_eventcb, s);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    if (s->nsteps > 0 && s->steps[0].expect == NULL)
        srv_step(s, NULL);
}

static struct srv *srv_new(struct event_base *base, const struct step *steps, size_t nsteps,
                           const char *cert, const char *key)
{
    struct srv *s = calloc(1, sizeof(*s));
    struct sockaddr_in sin;
    socklen_t slen = sizeof(sin);
    char err[256];

    assert_non_null(s);
    s->base = base;
    s->steps = steps;
    s->nsteps = nsteps;
    s->received = evbuffer_new();
    s->body = evbuffer_new();
    s->resume = evtimer_new(base, srv_resume, s);
    s->flush = evtimer_new(base, srv_flush_check, s);
    s->ctx = tls_server_ctx_new(cert, key, TLS1_2_VERSION, err, sizeof(err));
    if (!s->ctx)
        fail_msg("server ctx: %s", err);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->lis =
        evconnlistener_new_bind(base, srv_acceptcb, s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                16, (struct sockaddr *)&sin, (int)sizeof(sin));
    assert_non_null(s->lis);
    /* A small receive buffer (inherited by the accepted socket) so a paused reader pushes back
     * on the client quickly. */
    int rcvbuf = 65536;
    setsockopt(evconnlistener_get_fd(s->lis), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    getsockname(evconnlistener_get_fd(s->lis), (struct sockaddr *)&sin, &slen);
    s->port = ntohs(sin.sin_port);
    return s;
}

static void srv_free(struct srv *s)
{
    if (!s)
        return;
    if (s->bev)
        bufferevent_free(s->bev);
    evconnlistener_free(s->lis);
    evbuffer_free(s->received);
    evbuffer_free(s->body);
    event_free(s->resume);
    event_free(s->flush);
    SSL_CTX_free(s->ctx);
    free(s);
}

/* What the server received, NUL-terminated (test helper; free it). */
static char *srv_received(struct srv *s)
{
    size_t n = evbuffer_get_length(s->received);
    char *out = malloc(n + 1);
    evbuffer_copyout(s->received, out, n);
    out[n] = '\0';
    return out;
}

#endif
