/* Opening an upstream session: connect (client_connect.c), greeting, EHLO, STARTTLS, the TLS
 * handshake with certificate and name verification, EHLO again. With implicit TLS the handshake
 * comes before the greeting; in opportunistic mode a server that offers no STARTTLS (or refuses
 * it) is used in plain text. The frames, callbacks and failure reporting are client_session.c's;
 * this file only drives the sequence. */
#include "proxy/upstream/client_session_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include "common/log.h"
#include "proxy/runtime/tls.h"

/* TLS records queued towards the kernel. The filter stops encrypting above the high mark, so the
 * body waits as plaintext in the filter's output, where client_session_pending() counts it. */
#define CLIENT_OPEN_TLS_WBUF_LOW 16384
#define CLIENT_OPEN_TLS_WBUF_HIGH 65536

static int client_open_is_2xx(const struct smtp_reply *r)
{
    return r->code >= 200 && r->code < 300;
}

/* Close after a refusing reply (e.g. a 421 greeting) during open and report that reply. */
static int client_open_refuse(struct client_session *c, const struct smtp_reply *r)
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

static int client_open_send_ehlo(struct client_session *c, enum client_session_state next)
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

static int client_open_start_tls(struct client_session *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t junk = evbuffer_get_length(in);

    /* CVE-2011-0411: anything the server sent after its 220 came in clear and must not be read
     * as if it came over TLS. The pre-TLS capabilities are forgotten too (RFC 3207 4.2). With
     * implicit TLS nothing came yet. */
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
    bufferevent_setwatermark(c->bev, EV_WRITE, CLIENT_OPEN_TLS_WBUF_LOW, CLIENT_OPEN_TLS_WBUF_HIGH);
    /* Servers (Exchange among them) often close without close_notify; SMTP replies carry their
     * own framing, so a missing close_notify cannot truncate anything we act on. */
    bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
    struct bufferevent *sock = c->bev;
    c->ssl = ssl;
    client_session_attach(c, tls);
    client_session_enter_state(c, CLIENT_SESSION_HANDSHAKE);
    client_session_arm(c, c->connect_timeout);
    /* A filter only drives its handshake from the socket's callbacks, and a TLS client must
     * speak first: run the socket's write callback once to send the ClientHello. */
    bufferevent_trigger(sock, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS);
    return 0;
}

static int client_open_fail_verify(struct client_session *c, long vr)
{
    return client_session_fail(c, "upstream certificate verify failed: %s",
                               X509_verify_cert_error_string(vr));
}

static int client_open_tls_done(struct client_session *c)
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
        return client_open_fail_verify(c, vr);
    log_info("event=upstream_connected session=%s host=%s port=%u tls=\"%s\"%s", c->log_id, c->host,
             (unsigned)c->port, tls_describe(c->ssl, desc, sizeof(desc)),
             SSL_get_certificate(c->ssl) ? " client_certificate=yes" : "");
    if (c->drain_cb)
        bufferevent_setwatermark(c->bev, EV_WRITE, c->drain_low, 0);
    if (!c->greeted) {
        /* implicit TLS: the greeting comes over TLS, within the connect timeout */
        client_session_enter_state(c, CLIENT_SESSION_GREETING);
        client_session_arm(c, c->connect_timeout);
        return 0;
    }
    return client_open_send_ehlo(c, CLIENT_SESSION_EHLO_TLS);
}

/* Opportunistic mode, no STARTTLS: the session goes on in plain text, for good. */
static int client_open_plain_ready(struct client_session *c, const struct smtp_reply *r,
                                   const char *why)
{
    log_info("event=upstream_connected session=%s host=%s port=%u tls=none reason=\"%s\"",
             c->log_id, c->host, (unsigned)c->port, why);
    c->plain = 1;
    if (c->drain_cb)
        bufferevent_setwatermark(c->bev, EV_WRITE, c->drain_low, 0);
    client_session_enter_state(c, CLIENT_SESSION_READY);
    return client_session_deliver(c, r, NULL);
}

/* Why the handshake failed: the certificate check if that was it, else OpenSSL's reason. */
static void client_open_tls_failed(struct client_session *c, short what, int err_no)
{
    long vr = c->ssl ? SSL_get_verify_result(c->ssl) : X509_V_OK;
    if (vr != X509_V_OK) {
        client_open_fail_verify(c, vr);
        return;
    }
    unsigned long e, first = 0;
    while ((e = bufferevent_get_openssl_error(c->bev)) != 0)
        if (!first)
            first = e;
    if (first) {
        const char *reason = ERR_reason_error_string(first);
        client_session_fail(c, "TLS handshake with upstream failed: %s",
                            reason ? reason : "unknown error");
    } else if ((what & BEV_EVENT_EOF) || err_no == 0) {
        client_session_fail(c, "TLS handshake with upstream failed: connection closed");
    } else {
        client_session_fail(c, "TLS handshake with upstream failed: %s", strerror(err_no));
    }
}

/* ---- the sequence ---- */

int client_open_on_reply(struct client_session *c, const struct smtp_reply *r)
{
    switch (c->state) {
    case CLIENT_SESSION_GREETING:
        if (r->code != 220)
            return client_open_refuse(c, r);
        c->greeted = 1;
        return client_open_send_ehlo(c, c->ssl ? CLIENT_SESSION_EHLO_TLS : CLIENT_SESSION_EHLO);
    case CLIENT_SESSION_EHLO:
        if (!client_open_is_2xx(r))
            return client_open_refuse(c, r);
        smtp_reply_caps(r, &c->caps);
        if (c->tls_mode == CLIENT_TLS_OPPORTUNISTIC && c->starttls_refused)
            return client_open_plain_ready(c, r, "STARTTLS refused");
        if (!c->caps.starttls) {
            if (c->tls_mode == CLIENT_TLS_OPPORTUNISTIC)
                return client_open_plain_ready(c, r, "no STARTTLS offered");
            return client_session_fail(c, "upstream does not offer STARTTLS");
        }
        if (client_session_send(c, "STARTTLS", NULL) < 0)
            return -1;
        client_session_enter_state(c, CLIENT_SESSION_STARTTLS);
        client_session_arm(c, c->reply_timeout);
        return 0;
    case CLIENT_SESSION_STARTTLS:
        if (r->code != 220 && c->tls_mode == CLIENT_TLS_OPPORTUNISTIC && r->code / 100 != 2) {
            /* A refused STARTTLS leaves the session as it was (RFC 3207 4): say hello again
             * and go on in plain text. */
            char text[300], safe[400];
            snprintf(text, sizeof(text), "%d %s", r->code, r->nlines ? r->lines[0] : "");
            log_info("event=upstream_starttls_refused session=%s host=%s reply=%s", c->log_id,
                     c->host, log_safe(safe, sizeof(safe), text, strlen(text)));
            c->starttls_refused = 1;
            return client_open_send_ehlo(c, CLIENT_SESSION_EHLO);
        }
        if (r->code != 220)
            return client_open_refuse(c, r);
        return client_open_start_tls(c);
    case CLIENT_SESSION_EHLO_TLS:
        if (!client_open_is_2xx(r))
            return client_open_refuse(c, r);
        smtp_reply_caps(r, &c->caps);
        client_session_enter_state(c, CLIENT_SESSION_READY);
        return client_session_deliver(c, r, NULL);
    default:
        return 0;
    }
}

int client_open_connected(struct client_session *c)
{
    if (c->state == CLIENT_SESSION_CONNECTING) {
        if (c->tls_mode == CLIENT_TLS_IMPLICIT)
            return client_open_start_tls(c); /* TLS from the first byte */
        client_session_enter_state(c, CLIENT_SESSION_GREETING);
        return 0;
    }
    if (c->state == CLIENT_SESSION_HANDSHAKE)
        return client_open_tls_done(c);
    return -1;
}

void client_open_lost(struct client_session *c, short what, int err_no)
{
    if (c->state == CLIENT_SESSION_HANDSHAKE) {
        client_open_tls_failed(c, what, err_no);
        return;
    }
    client_session_fail(c, "connection to %s:%u lost while connecting: %s", c->host,
                        (unsigned)c->port, err_no ? strerror(err_no) : "connection closed");
}

/* ---- connect ---- */

static int client_open_connect(struct client_session *c)
{
    client_session_enter_state(c, CLIENT_SESSION_CONNECTING);
    client_session_arm(c, c->connect_timeout);
    log_info("event=upstream_connecting session=%s host=%s port=%u tls=%s", c->log_id, c->host,
             (unsigned)c->port,
             c->tls_mode == CLIENT_TLS_IMPLICIT        ? "implicit"
             : c->tls_mode == CLIENT_TLS_OPPORTUNISTIC ? "opportunistic"
                                                       : "starttls");
    return client_connect_start(c);
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
        client_open_connect(c);
    }
    client_session_api_leave(c);
}
