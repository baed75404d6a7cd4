/* The upstream side: one SMTP client connection to the submission server (see
 * client_session.h for the contract).
 *
 * Two rules shape this file:
 * - Callbacks run only from the event loop, never from inside an API call, so that a caller may
 *   free the session from inside its callback. Every frame of ours (API call, bufferevent
 *   callback, timer) counts itself in depth; a bufferevent callback that libevent runs
 *   synchronously while one of our frames is active (the OpenSSL filter does that from
 *   bufferevent_write) is parked and replayed from the session's own deferred event. An API call
 *   that fails at once also reports through that deferred event.
 * - A callback may free the session. client_session_free() inside one of our frames only closes
 *   the connection and marks the session dead; the outermost frame frees it on the way out, and
 *   every frame returns as soon as it sees dead.
 */
#include "proxy/client_session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include "common/log.h"
#include "common/secret.h"
#include "proxy/sasl.h"
#include "proxy/tls.h"

#define CLIENT_SESSION_DATA_END_TIMEOUT 600 /* RFC 5321 4.5.3.2.6: 10 minutes for the final '.' */
#define CLIENT_SESSION_QUIT_TIMEOUT 5
#define CLIENT_SESSION_LINE_MAX 510      /* command line without CRLF (RFC 5321 4.5.3.1.4) */
#define CLIENT_SESSION_AUTH_LINE_MAX 512 /* whole AUTH line with CRLF (RFC 4954 4) */
/* What a server may send while we expect nothing before we call it hostile. */
#define CLIENT_SESSION_UNSOLICITED_MAX 65536
/* TLS records queued towards the kernel. The filter stops encrypting above the high mark, so the
 * body waits as plaintext in the filter's output, where client_session_pending() counts it. */
#define CLIENT_SESSION_TLS_WBUF_LOW 16384
#define CLIENT_SESSION_TLS_WBUF_HIGH 65536

enum client_session_state {
    CLIENT_SESSION_IDLE,        /* created, not opened */
    CLIENT_SESSION_CONNECTING,  /* TCP connect (and DNS) */
    CLIENT_SESSION_GREETING,    /* waiting for 220 */
    CLIENT_SESSION_EHLO,        /* first EHLO sent, in clear */
    CLIENT_SESSION_STARTTLS,    /* STARTTLS sent, waiting for 220 */
    CLIENT_SESSION_HANDSHAKE,   /* TLS handshake running */
    CLIENT_SESSION_EHLO_TLS,    /* EHLO sent again over TLS */
    CLIENT_SESSION_READY,       /* idle, a command may be sent */
    CLIENT_SESSION_AUTH_CONT,   /* "AUTH XOAUTH2" sent without a response, waiting for 334 */
    CLIENT_SESSION_AUTH_RESULT, /* response sent: 235, 5xx, or a 334 error challenge */
    CLIENT_SESSION_AUTH_ABORT,  /* empty line sent after the error challenge */
    CLIENT_SESSION_COMMAND,     /* a command sent, waiting for its reply */
    CLIENT_SESSION_BODY,        /* after 354: the caller streams the body */
    CLIENT_SESSION_DATA_END,    /* '.' sent, waiting for the final reply */
    CLIENT_SESSION_QUIT,        /* QUIT sent; the session frees itself */
    CLIENT_SESSION_CLOSED,      /* connection gone or refused; nothing more will happen */
};

/* Bufferevent events parked while one of our frames was active. */
#define CLIENT_SESSION_PARK_READ 0x1
#define CLIENT_SESSION_PARK_WRITE 0x2
#define CLIENT_SESSION_PARK_EVENT 0x4
#define CLIENT_SESSION_PARK_ERROR 0x8 /* an API call's failure to report */

struct client_session {
    struct event_base *base;
    struct evdns_base *dns;
    char *host, *helo, *log_id;
    uint16_t port;
    SSL_CTX *ssl_ctx;
    unsigned connect_timeout, reply_timeout;

    enum client_session_state state;
    struct bufferevent *bev; /* top of the stack: the TLS filter once STARTTLS is done */
    SSL *ssl;                /* owned by the filter */
    struct smtp_reply_parser *parser;
    struct smtp_caps caps;
    struct event *timer;
    struct event *deferred;

    client_reply_cb cb; /* the one outstanding request */
    void *cb_arg;
    char *auth_resp; /* XOAUTH2 response held until the 334; wiped when sent or dropped */

    void (*drain_cb)(void *arg);
    void *drain_arg;
    size_t drain_low;
    int drain_armed; /* pending went above drain_low since the last drain callback */

    int depth;     /* our frames on the stack */
    int api_depth; /* of which API calls */
    int dead;      /* freed (or finished quitting) inside a frame: free when depth is 0 */
    int parked;    /* CLIENT_SESSION_PARK_* */
    short parked_what;
    int parked_errno;
    client_reply_cb parked_cb; /* the request an API call failed at once */
    void *parked_arg;
    char parked_err[256];

    char err[256]; /* why the connection was lost, for later calls */
};

static const char *client_session_state_str(enum client_session_state s)
{
    switch (s) {
    case CLIENT_SESSION_IDLE:
        return "idle";
    case CLIENT_SESSION_CONNECTING:
        return "connecting";
    case CLIENT_SESSION_GREETING:
        return "greeting";
    case CLIENT_SESSION_EHLO:
        return "ehlo";
    case CLIENT_SESSION_STARTTLS:
        return "starttls";
    case CLIENT_SESSION_HANDSHAKE:
        return "tls-handshake";
    case CLIENT_SESSION_EHLO_TLS:
        return "ehlo-tls";
    case CLIENT_SESSION_READY:
        return "ready";
    case CLIENT_SESSION_AUTH_CONT:
        return "auth-continue";
    case CLIENT_SESSION_AUTH_RESULT:
        return "auth-result";
    case CLIENT_SESSION_AUTH_ABORT:
        return "auth-abort";
    case CLIENT_SESSION_COMMAND:
        return "command";
    case CLIENT_SESSION_BODY:
        return "body";
    case CLIENT_SESSION_DATA_END:
        return "data-end";
    case CLIENT_SESSION_QUIT:
        return "quit";
    case CLIENT_SESSION_CLOSED:
        return "closed";
    }
    return "?";
}

static void client_session_enter_state(struct client_session *c, enum client_session_state s)
{
    if (c->state == s)
        return;
    log_debug("event=upstream_state session=%s from=%s to=%s", c->log_id,
              client_session_state_str(c->state), client_session_state_str(s));
    c->state = s;
}

/* States in which the next bytes from the server are the reply we wait for. */
static int client_session_expects_reply(enum client_session_state s)
{
    switch (s) {
    case CLIENT_SESSION_GREETING:
    case CLIENT_SESSION_EHLO:
    case CLIENT_SESSION_STARTTLS:
    case CLIENT_SESSION_EHLO_TLS:
    case CLIENT_SESSION_AUTH_CONT:
    case CLIENT_SESSION_AUTH_RESULT:
    case CLIENT_SESSION_AUTH_ABORT:
    case CLIENT_SESSION_COMMAND:
    case CLIENT_SESSION_DATA_END:
    case CLIENT_SESSION_QUIT:
        return 1;
    default:
        return 0;
    }
}

/* ---- frames, deferral and teardown ---- */

static void client_session_wipe_auth(struct client_session *c)
{
    secret_free(c->auth_resp);
    c->auth_resp = NULL;
}

/* Drop the connection; the session itself stays until freed. */
static void client_session_close(struct client_session *c)
{
    if (c->timer)
        evtimer_del(c->timer);
    if (c->bev) {
        /* The filter owns the SSL and the socket bufferevent (BEV_OPT_CLOSE_ON_FREE). */
        bufferevent_free(c->bev);
        c->bev = NULL;
        c->ssl = NULL;
    }
    client_session_wipe_auth(c);
}

static void client_session_destroy(struct client_session *c)
{
    client_session_close(c);
    if (c->timer)
        event_free(c->timer);
    if (c->deferred)
        event_free(c->deferred);
    smtp_reply_free(c->parser);
    free(c->host);
    free(c->helo);
    free(c->log_id);
    OPENSSL_cleanse(c, sizeof(*c));
    free(c);
}

static void client_session_enter(struct client_session *c)
{
    c->depth++;
}

/* Returns 1 when the session is gone (the caller must not touch it). */
static int client_session_leave(struct client_session *c)
{
    if (--c->depth == 0 && c->dead) {
        client_session_destroy(c);
        return 1;
    }
    return 0;
}

static void client_session_api_enter(struct client_session *c)
{
    c->api_depth++;
    client_session_enter(c);
}

static void client_session_api_leave(struct client_session *c)
{
    c->api_depth--;
    client_session_leave(c);
}

static void client_session_park(struct client_session *c, int what)
{
    c->parked |= what;
    event_active(c->deferred, EV_TIMEOUT, 1);
}

/* Report a failure of an API call from the loop. The session stays as it is. */
static void client_session_park_error(struct client_session *c, client_reply_cb cb, void *arg,
                                      const char *err)
{
    if (c->parked_cb) {
        /* Two requests at once is a caller bug; the first keeps its report. */
        log_error("event=upstream_api_misuse session=%s error=\"overlapping requests\"", c->log_id);
        return;
    }
    c->parked_cb = cb;
    c->parked_arg = arg;
    snprintf(c->parked_err, sizeof(c->parked_err), "%s", err);
    client_session_park(c, CLIENT_SESSION_PARK_ERROR);
}

/* Call the outstanding request's callback. Only from a loop frame (api_depth == 0).
 * Returns -1 when the callback freed the session. */
static int client_session_deliver(struct client_session *c, const struct smtp_reply *r,
                                  const char *err)
{
    client_reply_cb cb = c->cb;
    void *arg = c->cb_arg;
    c->cb = NULL;
    c->cb_arg = NULL;
    if (cb)
        cb(arg, r, err);
    return c->dead ? -1 : 0;
}

/* Wake a writer paused on backpressure. Only from a loop frame. -1 when the session is gone. */
static int client_session_check_drain(struct client_session *c)
{
    size_t pending = c->bev ? evbuffer_get_length(bufferevent_get_output(c->bev)) : 0;
    if (!c->drain_armed || !c->drain_cb || pending > c->drain_low)
        return c->dead ? -1 : 0;
    c->drain_armed = 0;
    c->drain_cb(c->drain_arg);
    return c->dead ? -1 : 0;
}

/* The connection is unusable: close it and tell whoever waits. Always returns -1 so that callers
 * can `return client_session_fail(...)`. */
static int client_session_fail(struct client_session *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int client_session_fail(struct client_session *c, const char *fmt, ...)
{
    char safe[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
    int quitting = c->state == CLIENT_SESSION_QUIT;
    client_session_close(c);
    client_session_enter_state(c, CLIENT_SESSION_CLOSED);
    if (quitting) {
        /* Nobody listens any more; a lost connection after QUIT is the end we wanted. */
        c->dead = 1;
        return -1;
    }
    log_warn("event=upstream_failed session=%s host=%s port=%u error=%s", c->log_id, c->host,
             (unsigned)c->port, log_safe(safe, sizeof(safe), c->err, strlen(c->err)));
    if (c->api_depth > 0) {
        if (c->cb) {
            client_session_park_error(c, c->cb, c->cb_arg, c->err);
            c->cb = NULL;
        } else if (c->drain_armed) {
            client_session_park(c, CLIENT_SESSION_PARK_WRITE);
        }
        return -1;
    }
    if (c->cb) {
        client_session_deliver(c, NULL, c->err);
        return -1;
    }
    /* A writer paused on backpressure learns about the loss at data_end; wake it up. */
    client_session_check_drain(c);
    return -1;
}

/* Close after a refusing reply (e.g. a 421 greeting) during open and report that reply. */
static int client_session_refuse(struct client_session *c, const struct smtp_reply *r)
{
    char safe[300];
    const char *text = r->nlines ? r->lines[0] : "";
    snprintf(c->err, sizeof(c->err), "upstream refused in state %s: %d %s",
             client_session_state_str(c->state), r->code, text);
    log_warn("event=upstream_refused session=%s host=%s state=%s reply=%s", c->log_id, c->host,
             client_session_state_str(c->state),
             log_safe(safe, sizeof(safe), c->err, strlen(c->err)));
    client_session_close(c);
    client_session_enter_state(c, CLIENT_SESSION_CLOSED);
    client_session_deliver(c, r, NULL);
    return -1;
}

static void client_session_arm(struct client_session *c, unsigned seconds)
{
    struct timeval tv = {(time_t)seconds, 0};
    evtimer_add(c->timer, &tv);
}

/* ---- sending ---- */

/* Queue one command line. logged: what the debug log shows instead of line (NULL: line). */
static int client_session_send(struct client_session *c, const char *line, const char *logged)
{
    char safe[600];
    const char *shown = logged ? logged : line;
    log_debug("event=upstream_send session=%s line=%s", c->log_id,
              log_safe(safe, sizeof(safe), shown, strlen(shown)));
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_add_printf(out, "%s\r\n", line) < 0)
        return client_session_fail(c, "out of memory queueing a command");
    return 0;
}

static void client_session_secret_cleanup(const void *data, size_t len, void *extra)
{
    (void)extra;
    OPENSSL_cleanse((void *)data, len);
    free((void *)data);
}

/* Queue prefix + secret + CRLF. The line is handed to libevent by reference so that the only
 * copy of the token is wiped as soon as libevent has passed it to OpenSSL, instead of lingering
 * in a freed evbuffer chain. */
static int client_session_send_secret(struct client_session *c, const char *prefix,
                                      const char *secret, const char *logged)
{
    size_t plen = strlen(prefix), slen = strlen(secret);
    size_t len = plen + slen + 2;
    char *line = malloc(len);
    if (!line)
        return client_session_fail(c, "out of memory queueing AUTH");
    memcpy(line, prefix, plen);
    memcpy(line + plen, secret, slen);
    memcpy(line + plen + slen, "\r\n", 2);
    log_debug("event=upstream_send session=%s line=\"%s\"", c->log_id, logged);
    if (evbuffer_add_reference(bufferevent_get_output(c->bev), line, len,
                               client_session_secret_cleanup, NULL) != 0) {
        client_session_secret_cleanup(line, len, NULL);
        return client_session_fail(c, "out of memory queueing AUTH");
    }
    return 0;
}

static int client_session_send_ehlo(struct client_session *c, enum client_session_state next)
{
    char line[CLIENT_SESSION_LINE_MAX + 1];
    snprintf(line, sizeof(line), "EHLO %s", c->helo);
    if (client_session_send(c, line, NULL) < 0)
        return -1;
    client_session_enter_state(c, next);
    client_session_arm(c, c->reply_timeout);
    return 0;
}

/* ---- TLS ---- */

static void client_session_readcb(struct bufferevent *bev, void *arg);
static void client_session_writecb(struct bufferevent *bev, void *arg);
static void client_session_eventcb(struct bufferevent *bev, short what, void *arg);

static int client_session_start_tls(struct client_session *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t junk = evbuffer_get_length(in);

    /* CVE-2011-0411: anything the server sent after its 220 came in clear and must not be read
     * as if it came over TLS. The pre-TLS capabilities are forgotten too (RFC 3207 4.2). */
    if (junk > 0) {
        log_warn("event=upstream_starttls_injection session=%s host=%s bytes=%zu", c->log_id,
                 c->host, junk);
        evbuffer_drain(in, junk);
    }
    smtp_reply_reset(c->parser);
    memset(&c->caps, 0, sizeof(c->caps));

    SSL *ssl = tls_client_ssl_new(c->ssl_ctx, c->host);
    if (!ssl)
        return client_session_fail(c, "cannot create a TLS session for %s", c->host);
    struct bufferevent *tls = bufferevent_openssl_filter_new(
        c->base, c->bev, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
    if (!tls) {
        SSL_free(ssl);
        return client_session_fail(c, "cannot start TLS");
    }
    bufferevent_setwatermark(c->bev, EV_WRITE, CLIENT_SESSION_TLS_WBUF_LOW,
                             CLIENT_SESSION_TLS_WBUF_HIGH);
    /* Servers (Exchange among them) often close without close_notify; SMTP replies carry their
     * own framing, so a missing close_notify cannot truncate anything we act on. */
    bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
    struct bufferevent *sock = c->bev;
    c->bev = tls;
    c->ssl = ssl;
    bufferevent_setcb(tls, client_session_readcb, client_session_writecb, client_session_eventcb,
                      c);
    bufferevent_enable(tls, EV_READ | EV_WRITE);
    client_session_enter_state(c, CLIENT_SESSION_HANDSHAKE);
    client_session_arm(c, c->connect_timeout);
    /* A filter only drives its handshake from the socket's callbacks, and a TLS client must
     * speak first: run the socket's write callback once to send the ClientHello. */
    bufferevent_trigger(sock, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS);
    return 0;
}

static int client_session_tls_done(struct client_session *c)
{
    char desc[128];
    long vr = SSL_get_verify_result(c->ssl);
    X509 *cert = SSL_get1_peer_certificate(c->ssl);

    /* SSL_VERIFY_PEER already fails the handshake; this check holds even if a caller's
     * SSL_CTX was built without it. */
    if (!cert)
        return client_session_fail(c, "upstream certificate verify failed: no certificate");
    X509_free(cert);
    if (vr != X509_V_OK)
        return client_session_fail(c, "upstream certificate verify failed: %s",
                                   X509_verify_cert_error_string(vr));
    log_info("event=upstream_connected session=%s host=%s port=%u tls=\"%s\"", c->log_id, c->host,
             (unsigned)c->port, tls_describe(c->ssl, desc, sizeof(desc)));
    if (c->drain_cb)
        bufferevent_setwatermark(c->bev, EV_WRITE, c->drain_low, 0);
    return client_session_send_ehlo(c, CLIENT_SESSION_EHLO_TLS);
}

/* Why the handshake failed: the certificate check if that was it, else OpenSSL's reason. */
static int client_session_tls_failed(struct client_session *c, short what, int err_no)
{
    long vr = c->ssl ? SSL_get_verify_result(c->ssl) : X509_V_OK;
    if (vr != X509_V_OK)
        return client_session_fail(c, "upstream certificate verify failed: %s",
                                   X509_verify_cert_error_string(vr));
    unsigned long e, first = 0;
    while ((e = bufferevent_get_openssl_error(c->bev)) != 0)
        if (!first)
            first = e;
    if (first) {
        const char *reason = ERR_reason_error_string(first);
        return client_session_fail(c, "TLS handshake with upstream failed: %s",
                                   reason ? reason : "unknown error");
    }
    if ((what & BEV_EVENT_EOF) || err_no == 0)
        return client_session_fail(c, "TLS handshake with upstream failed: connection closed");
    return client_session_fail(c, "TLS handshake with upstream failed: %s", strerror(err_no));
}

/* ---- replies ---- */

static void client_session_log_reply(struct client_session *c, const struct smtp_reply *r)
{
    char safe[600];
    if (log_get_level() < LOGL_DEBUG)
        return;
    for (size_t i = 0; i < r->nlines; i++) {
        /* Server text may hold any byte; log_safe keeps the log one line per event. */
        log_debug("event=upstream_reply session=%s code=%d%s text=%s", c->log_id, r->code,
                  i + 1 < r->nlines ? " more=1" : "",
                  log_safe(safe, sizeof(safe), r->lines[i], strlen(r->lines[i])));
    }
}

static int client_session_is_2xx(const struct smtp_reply *r)
{
    return r->code >= 200 && r->code < 300;
}

/* One reply in the current state. -1: stop processing (closed, or the session is gone). */
static int client_session_on_reply(struct client_session *c, const struct smtp_reply *r)
{
    evtimer_del(c->timer);
    switch (c->state) {
    case CLIENT_SESSION_GREETING:
        if (r->code != 220)
            return client_session_refuse(c, r);
        return client_session_send_ehlo(c, CLIENT_SESSION_EHLO);
    case CLIENT_SESSION_EHLO:
        if (!client_session_is_2xx(r))
            return client_session_refuse(c, r);
        smtp_reply_caps(r, &c->caps);
        if (!c->caps.starttls)
            return client_session_fail(c, "upstream does not offer STARTTLS");
        if (client_session_send(c, "STARTTLS", NULL) < 0)
            return -1;
        client_session_enter_state(c, CLIENT_SESSION_STARTTLS);
        client_session_arm(c, c->reply_timeout);
        return 0;
    case CLIENT_SESSION_STARTTLS:
        if (r->code != 220)
            return client_session_refuse(c, r);
        return client_session_start_tls(c);
    case CLIENT_SESSION_EHLO_TLS:
        if (!client_session_is_2xx(r))
            return client_session_refuse(c, r);
        smtp_reply_caps(r, &c->caps);
        client_session_enter_state(c, CLIENT_SESSION_READY);
        return client_session_deliver(c, r, NULL);
    case CLIENT_SESSION_AUTH_CONT:
        if (r->code == 334) {
            int rc = client_session_send_secret(c, "", c->auth_resp, "<redacted>");
            client_session_wipe_auth(c);
            if (rc < 0)
                return -1;
            client_session_enter_state(c, CLIENT_SESSION_AUTH_RESULT);
            client_session_arm(c, c->reply_timeout);
            return 0;
        }
        client_session_wipe_auth(c);
        client_session_enter_state(c, CLIENT_SESSION_READY);
        return client_session_deliver(c, r, NULL);
    case CLIENT_SESSION_AUTH_RESULT:
        if (r->code == 334) {
            /* An error challenge (base64 JSON): an empty line ends the exchange and the server
             * answers with the real failure. */
            if (client_session_send(c, "", NULL) < 0)
                return -1;
            client_session_enter_state(c, CLIENT_SESSION_AUTH_ABORT);
            client_session_arm(c, c->reply_timeout);
            return 0;
        }
        client_session_enter_state(c, CLIENT_SESSION_READY);
        return client_session_deliver(c, r, NULL);
    case CLIENT_SESSION_AUTH_ABORT:
        if (r->code == 334)
            return client_session_fail(c, "protocol violation: 334 after the AUTH exchange was "
                                          "cancelled");
        client_session_enter_state(c, CLIENT_SESSION_READY);
        return client_session_deliver(c, r, NULL);
    case CLIENT_SESSION_COMMAND:
        /* Only DATA is answered with 354; the caller streams the body next. */
        client_session_enter_state(c, r->code == 354 ? CLIENT_SESSION_BODY : CLIENT_SESSION_READY);
        return client_session_deliver(c, r, NULL);
    case CLIENT_SESSION_DATA_END:
        client_session_enter_state(c, CLIENT_SESSION_READY);
        return client_session_deliver(c, r, NULL);
    case CLIENT_SESSION_QUIT:
        client_session_close(c);
        client_session_enter_state(c, CLIENT_SESSION_CLOSED);
        c->dead = 1;
        return -1;
    default:
        return 0;
    }
}

/* Parse and handle whatever replies are buffered while we expect one. */
static void client_session_read(struct client_session *c)
{
    while (!c->dead && c->bev && client_session_expects_reply(c->state)) {
        struct evbuffer *in = bufferevent_get_input(c->bev);
        struct evbuffer_iovec v;
        struct smtp_reply r;
        const char *perr = "malformed reply";
        size_t consumed = 0;

        if (evbuffer_get_length(in) == 0)
            return;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
            return;
        int rc = smtp_reply_next(c->parser, v.iov_base, v.iov_len, &consumed, &r, &perr);
        evbuffer_drain(in, consumed);
        if (rc < 0) {
            client_session_fail(c, "protocol violation from upstream: %s", perr);
            return;
        }
        if (rc == 0) {
            if (consumed == 0)
                return; /* the parser's contract says it consumes all; never spin */
            continue;
        }
        client_session_log_reply(c, &r);
        if (client_session_on_reply(c, &r) < 0)
            return;
    }
    if (!c->dead && c->bev &&
        evbuffer_get_length(bufferevent_get_input(c->bev)) > CLIENT_SESSION_UNSOLICITED_MAX)
        client_session_fail(c, "upstream sent more than %d unsolicited bytes",
                            CLIENT_SESSION_UNSOLICITED_MAX);
}

/* ---- events from libevent ---- */

static void client_session_on_event(struct client_session *c, short what, int err_no)
{
    if (what & BEV_EVENT_CONNECTED) {
        if (c->state == CLIENT_SESSION_CONNECTING) {
            log_debug("event=upstream_tcp_connected session=%s host=%s port=%u", c->log_id, c->host,
                      (unsigned)c->port);
            client_session_enter_state(c, CLIENT_SESSION_GREETING);
            client_session_read(c);
        } else if (c->state == CLIENT_SESSION_HANDSHAKE) {
            if (client_session_tls_done(c) == 0)
                client_session_read(c);
        }
        return;
    }
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) || !c->bev)
        return;
    switch (c->state) {
    case CLIENT_SESSION_CONNECTING: {
        int dns_err = bufferevent_socket_get_dns_error(c->bev);
        if (dns_err)
            client_session_fail(c, "cannot resolve %s: %s", c->host, evutil_gai_strerror(dns_err));
        else
            client_session_fail(c, "cannot connect to %s:%u: %s", c->host, (unsigned)c->port,
                                err_no ? strerror(err_no) : "connection failed");
        return;
    }
    case CLIENT_SESSION_HANDSHAKE:
        client_session_tls_failed(c, what, err_no);
        return;
    default:
        break;
    }
    /* The server may have said goodbye (e.g. 421) just before closing: hand that over first. */
    client_session_read(c);
    if (c->dead || !c->bev)
        return;
    if (what & BEV_EVENT_EOF) {
        client_session_fail(c, "upstream closed the connection (state %s)",
                            client_session_state_str(c->state));
    } else {
        unsigned long e = c->ssl ? bufferevent_get_openssl_error(c->bev) : 0;
        const char *reason = e ? ERR_reason_error_string(e) : NULL;
        client_session_fail(c, "connection to upstream lost (state %s): %s",
                            client_session_state_str(c->state),
                            reason   ? reason
                            : err_no ? strerror(err_no)
                                     : "connection closed");
    }
}

static void client_session_readcb(struct bufferevent *bev, void *arg)
{
    struct client_session *c = arg;
    (void)bev;
    if (c->depth > 0) {
        client_session_park(c, CLIENT_SESSION_PARK_READ);
        return;
    }
    client_session_enter(c);
    client_session_read(c);
    client_session_leave(c);
}

static void client_session_writecb(struct bufferevent *bev, void *arg)
{
    struct client_session *c = arg;
    (void)bev;
    if (c->depth > 0) {
        client_session_park(c, CLIENT_SESSION_PARK_WRITE);
        return;
    }
    client_session_enter(c);
    client_session_check_drain(c);
    client_session_leave(c);
}

static void client_session_eventcb(struct bufferevent *bev, short what, void *arg)
{
    struct client_session *c = arg;
    int err_no = EVUTIL_SOCKET_ERROR();
    (void)bev;
    if (c->depth > 0) {
        c->parked_what |= what;
        c->parked_errno = err_no;
        client_session_park(c, CLIENT_SESSION_PARK_EVENT);
        return;
    }
    client_session_enter(c);
    client_session_on_event(c, what, err_no);
    client_session_leave(c);
}

static void client_session_timercb(evutil_socket_t fd, short what, void *arg)
{
    struct client_session *c = arg;
    (void)fd;
    (void)what;
    client_session_enter(c);
    switch (c->state) {
    case CLIENT_SESSION_QUIT:
        client_session_close(c);
        client_session_enter_state(c, CLIENT_SESSION_CLOSED);
        c->dead = 1;
        break;
    case CLIENT_SESSION_CONNECTING:
    case CLIENT_SESSION_GREETING:
    case CLIENT_SESSION_HANDSHAKE:
        client_session_fail(c, "timeout connecting to upstream %s:%u (state %s, %us)", c->host,
                            (unsigned)c->port, client_session_state_str(c->state),
                            c->connect_timeout);
        break;
    default:
        client_session_fail(c, "timeout waiting for the upstream reply (state %s)",
                            client_session_state_str(c->state));
        break;
    }
    client_session_leave(c);
}

/* Replays what was parked while a frame of ours was active. Runs from the loop. */
static void client_session_deferredcb(evutil_socket_t fd, short what, void *arg)
{
    struct client_session *c = arg;
    (void)fd;
    (void)what;
    client_session_enter(c);
    int parked = c->parked;
    c->parked = 0;
    if (parked & CLIENT_SESSION_PARK_ERROR) {
        client_reply_cb cb = c->parked_cb;
        void *cb_arg = c->parked_arg;
        c->parked_cb = NULL;
        c->parked_arg = NULL;
        if (cb)
            cb(cb_arg, NULL, c->parked_err);
    }
    if (!c->dead && (parked & CLIENT_SESSION_PARK_EVENT)) {
        short ev = c->parked_what;
        c->parked_what = 0;
        client_session_on_event(c, ev, c->parked_errno);
    }
    if (!c->dead && (parked & CLIENT_SESSION_PARK_READ))
        client_session_read(c);
    if (!c->dead && (parked & CLIENT_SESSION_PARK_WRITE))
        client_session_check_drain(c);
    client_session_leave(c);
}

/* ---- API ---- */

struct client_session *client_session_new(struct event_base *base, struct evdns_base *dns,
                                          const struct client_cfg *cfg)
{
    struct client_session *c;

    if (!base || !cfg || !cfg->host || !*cfg->host || !cfg->ssl_ctx)
        return NULL;
    c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->base = base;
    c->dns = dns;
    c->port = cfg->port;
    c->ssl_ctx = cfg->ssl_ctx;
    c->connect_timeout = cfg->connect_timeout ? cfg->connect_timeout : 30;
    c->reply_timeout = cfg->reply_timeout ? cfg->reply_timeout : 300;
    c->host = strdup(cfg->host);
    c->helo = strdup(cfg->helo && *cfg->helo ? cfg->helo : "localhost");
    c->log_id = strdup(cfg->log_id ? cfg->log_id : "-");
    c->parser = smtp_reply_new();
    c->timer = evtimer_new(base, client_session_timercb, c);
    c->deferred = event_new(base, -1, 0, client_session_deferredcb, c);
    c->state = CLIENT_SESSION_IDLE;
    if (!c->host || !c->helo || !c->log_id || !c->parser || !c->timer || !c->deferred ||
        strlen(c->helo) > CLIENT_SESSION_LINE_MAX - 5) {
        client_session_destroy(c);
        return NULL;
    }
    return c;
}

void client_session_free(struct client_session *c)
{
    if (!c)
        return;
    c->cb = NULL;
    c->parked_cb = NULL;
    c->drain_cb = NULL;
    if (c->depth > 0) {
        /* Inside one of our frames (a callback): the outermost frame frees it. */
        client_session_close(c);
        c->dead = 1;
        return;
    }
    client_session_destroy(c);
}

/* Parse host as an IP literal into ss. */
static int client_session_sockaddr(const char *host, uint16_t port, struct sockaddr_storage *ss,
                                   int *sslen)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        *sslen = (int)sizeof(*sin);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        *sslen = (int)sizeof(*sin6);
        return 0;
    }
    return -1;
}

static int client_session_connect(struct client_session *c)
{
    struct sockaddr_storage ss;
    int sslen = 0, rc;

    c->bev = bufferevent_socket_new(c->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev)
        return client_session_fail(c, "cannot create a socket bufferevent");
    bufferevent_setcb(c->bev, client_session_readcb, client_session_writecb, client_session_eventcb,
                      c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    client_session_enter_state(c, CLIENT_SESSION_CONNECTING);
    client_session_arm(c, c->connect_timeout);
    log_info("event=upstream_connecting session=%s host=%s port=%u", c->log_id, c->host,
             (unsigned)c->port);
    if (client_session_sockaddr(c->host, c->port, &ss, &sslen) == 0) {
        rc = bufferevent_socket_connect(c->bev, (struct sockaddr *)&ss, sslen);
    } else if (c->dns) {
        rc = bufferevent_socket_connect_hostname(c->bev, c->dns, AF_UNSPEC, c->host, c->port);
    } else {
        return client_session_fail(c, "%s is not an IP address and no resolver was given", c->host);
    }
    if (rc < 0 && c->bev && c->state == CLIENT_SESSION_CONNECTING) {
        int err_no = EVUTIL_SOCKET_ERROR();
        return client_session_fail(c, "cannot connect to %s:%u: %s", c->host, (unsigned)c->port,
                                   err_no ? strerror(err_no) : "connection failed");
    }
    return 0;
}

void client_session_open(struct client_session *c, client_reply_cb cb, void *arg)
{
    if (!c)
        return;
    client_session_api_enter(c);
    if (c->state != CLIENT_SESSION_IDLE) {
        client_session_park_error(c, cb, arg, "client_session_open called twice");
    } else {
        c->cb = cb;
        c->cb_arg = arg;
        client_session_connect(c);
    }
    client_session_api_leave(c);
}

const struct smtp_caps *client_session_caps(const struct client_session *c)
{
    return &c->caps;
}

/* Whether a new request may start now; otherwise its callback gets the reason from the loop. */
static int client_session_can_start(struct client_session *c, client_reply_cb cb, void *arg)
{
    char msg[300];
    if (c->dead || !c->bev || c->state == CLIENT_SESSION_CLOSED) {
        snprintf(msg, sizeof(msg), "upstream connection not usable: %s",
                 c->err[0] ? c->err : "not open");
        client_session_park_error(c, cb, arg, msg);
        return 0;
    }
    if (c->state != CLIENT_SESSION_READY) {
        snprintf(msg, sizeof(msg), "upstream session busy (state %s)",
                 client_session_state_str(c->state));
        client_session_park_error(c, cb, arg, msg);
        return 0;
    }
    return 1;
}

/* A reply we now wait for may already be buffered (a server that speaks early). */
static void client_session_wait_reply(struct client_session *c, enum client_session_state s,
                                      unsigned timeout, client_reply_cb cb, void *arg)
{
    c->cb = cb;
    c->cb_arg = arg;
    client_session_enter_state(c, s);
    client_session_arm(c, timeout);
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        client_session_park(c, CLIENT_SESSION_PARK_READ);
}

void client_session_auth_xoauth2(struct client_session *c, const char *user, const char *token,
                                 client_reply_cb cb, void *arg)
{
    static const char prefix[] = "AUTH XOAUTH2 ";
    if (!c)
        return;
    client_session_api_enter(c);
    if (!client_session_can_start(c, cb, arg))
        goto out;
    char *resp = sasl_xoauth2_encode(user ? user : "", token ? token : "");
    if (!resp) {
        client_session_park_error(c, cb, arg,
                                  "cannot build the XOAUTH2 response (empty user or token, or "
                                  "a byte outside 0x21..0x7e)");
        goto out;
    }
    if (strlen(prefix) + strlen(resp) + 2 <= CLIENT_SESSION_AUTH_LINE_MAX) {
        int rc = client_session_send_secret(c, prefix, resp, "AUTH XOAUTH2 <redacted>");
        secret_free(resp);
        if (rc < 0) {
            /* The failure was reported to nobody (no request yet): give it to this one. */
            client_session_park_error(c, cb, arg, c->err);
            goto out;
        }
        client_session_wait_reply(c, CLIENT_SESSION_AUTH_RESULT, c->reply_timeout, cb, arg);
    } else {
        /* RFC 4954 4: too long for the AUTH line; send it after the server's 334. */
        c->auth_resp = resp;
        if (client_session_send(c, "AUTH XOAUTH2", NULL) < 0) {
            client_session_park_error(c, cb, arg, c->err);
            goto out;
        }
        client_session_wait_reply(c, CLIENT_SESSION_AUTH_CONT, c->reply_timeout, cb, arg);
    }
out:
    client_session_api_leave(c);
}

void client_session_command(struct client_session *c, const char *line, client_reply_cb cb,
                            void *arg)
{
    if (!c)
        return;
    client_session_api_enter(c);
    if (!line || strlen(line) > CLIENT_SESSION_LINE_MAX || strpbrk(line, "\r\n")) {
        client_session_park_error(c, cb, arg, "invalid command line (CR, LF or over 510 bytes)");
        goto out;
    }
    if (!client_session_can_start(c, cb, arg))
        goto out;
    if (client_session_send(c, line, NULL) < 0) {
        client_session_park_error(c, cb, arg, c->err);
        goto out;
    }
    client_session_wait_reply(c, CLIENT_SESSION_COMMAND, c->reply_timeout, cb, arg);
out:
    client_session_api_leave(c);
}

void client_session_write(struct client_session *c, const char *data, size_t len)
{
    if (!c || len == 0)
        return;
    client_session_api_enter(c);
    /* Outside a body (or once the connection is gone) the bytes are dropped: the caller learns
     * why from data_end. */
    if (c->state == CLIENT_SESSION_BODY && c->bev) {
        if (bufferevent_write(c->bev, data, len) != 0)
            client_session_fail(c, "out of memory queueing the body");
        else if (c->drain_cb && client_session_pending(c) > c->drain_low)
            c->drain_armed = 1;
    }
    client_session_api_leave(c);
}

size_t client_session_pending(const struct client_session *c)
{
    if (!c || !c->bev)
        return 0;
    return evbuffer_get_length(bufferevent_get_output(c->bev));
}

void client_session_set_drain_cb(struct client_session *c, size_t low_mark, void (*cb)(void *arg),
                                 void *arg)
{
    if (!c)
        return;
    c->drain_low = low_mark;
    c->drain_cb = cb;
    c->drain_arg = arg;
    c->drain_armed = 0;
    /* The write callback runs whenever the output falls to the low watermark. Before STARTTLS
     * the socket bufferevent's marks are left alone (the filter needs its own); they are set on
     * the filter once TLS is up. */
    if (c->bev && c->ssl)
        bufferevent_setwatermark(c->bev, EV_WRITE, low_mark, 0);
}

void client_session_data_end(struct client_session *c, client_reply_cb cb, void *arg)
{
    if (!c)
        return;
    client_session_api_enter(c);
    if (c->dead || !c->bev || c->state == CLIENT_SESSION_CLOSED) {
        char msg[300];
        snprintf(msg, sizeof(msg), "upstream connection not usable: %s",
                 c->err[0] ? c->err : "not open");
        client_session_park_error(c, cb, arg, msg);
        goto out;
    }
    if (c->state != CLIENT_SESSION_BODY) {
        client_session_park_error(c, cb, arg, "data_end without a 354 to DATA");
        goto out;
    }
    c->drain_armed = 0;
    if (client_session_send(c, ".", NULL) < 0) {
        client_session_park_error(c, cb, arg, c->err);
        goto out;
    }
    client_session_wait_reply(c, CLIENT_SESSION_DATA_END, CLIENT_SESSION_DATA_END_TIMEOUT, cb, arg);
out:
    client_session_api_leave(c);
}

void client_session_quit(struct client_session *c)
{
    if (!c)
        return;
    client_session_api_enter(c);
    /* No callback runs after this call, whatever happens. */
    c->cb = NULL;
    c->parked_cb = NULL;
    c->drain_cb = NULL;
    if (c->state == CLIENT_SESSION_READY && c->bev && !c->dead) {
        if (client_session_send(c, "QUIT", NULL) == 0) {
            client_session_enter_state(c, CLIENT_SESSION_QUIT);
            client_session_arm(c, CLIENT_SESSION_QUIT_TIMEOUT);
            if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
                client_session_park(c, CLIENT_SESSION_PARK_READ);
        } else {
            c->dead = 1;
        }
    } else {
        /* Mid-body a QUIT would become part of the message; anything else has no clean end. */
        client_session_close(c);
        c->dead = 1;
    }
    client_session_api_leave(c);
}

int client_session_usable(const struct client_session *c)
{
    return c && !c->dead && c->bev && c->state != CLIENT_SESSION_CLOSED &&
           c->state != CLIENT_SESSION_QUIT;
}
