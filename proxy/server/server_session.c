/* The device side of the proxy: one SMTP conversation with a copier, scanner or application.
 * Shape after OpenSMTPD's smtp_session.c: a state enum, one ss_enter_state(), a table of
 * {verb, allowed states, handler}, one ss_reply(). Commands are handled one at a time in order; a
 * command that waits for the upstream pauses reading, so PIPELINING needs nothing special and
 * replies always come out in order. */
#include "proxy/server/server_session.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "common/log.h"
#include "common/secret.h"
#include "common/sockaddr_text.h"
#include "proxy/runtime/auth_worker.h"
#include "proxy/config/config.h"
#include "proxy/runtime/device.h"
#include "proxy/runtime/metrics.h"
#include "proxy/delivery/backend.h"
#include "proxy/smtp/sasl.h"
#include "proxy/server/server.h"
#include "proxy/runtime/server_gen.h"
#include "proxy/smtp/smtp_data.h"
#include "proxy/smtp/smtp_parse.h"
#include "proxy/server/server_session_int.h"

struct ss_command {
    enum smtp_verb verb;
    unsigned states;
    void (*handler)(struct server_session *s, const struct smtp_cmd *cmd);
};

static void process_input(struct server_session *s);
static size_t output_pending(struct server_session *s);
static void session_free(struct server_session *s);

static const char *ss_state_str(enum ss_state st)
{
    static const char *const names[] = {"INIT", "HELO",       "MAIL",      "RCPT",
                                        "DATA", "AUTH-PLAIN", "AUTH-USER", "AUTH-PASS"};
    return names[st];
}

void ss_enter_state(struct server_session *s, enum ss_state st)
{
    if (s->state == st)
        return;
    log_debug("event=state session=%s from=%s to=%s", s->id, ss_state_str(s->state),
              ss_state_str(st));
    s->state = st;
    /* No read timeout: the per-record deadline (deadline_restart) takes its place. */
    struct timeval wt = {.tv_sec = SS_WRITE_TIMEOUT};
    bufferevent_set_timeouts(s->bev, NULL, &wt);
    smtp_parse_set_mode(s->parser, st >= SS_AUTH_PLAIN ? SMTP_PARSE_LINE : SMTP_PARSE_COMMAND);
}

/* The per-record deadline (Postfix's smtpd_per_record_deadline): a command line (or an AUTH
 * response) must be complete within command_timeout, a body line within data_timeout, counted
 * from the start of the wait for it: the reply before it, or the end of the line before it (a
 * pipelined line that arrives with its predecessor starts its wait then). Bytes of a line
 * extend nothing, so a client that trickles one byte every few seconds is cut like a silent
 * one. While the session waits for the upstream (busy), for the body to drain (paused) or for
 * its last reply to leave (closing), no deadline runs against the device. */
static void deadline_restart(struct server_session *s)
{
    if (s->busy || s->paused || s->closing) {
        event_del(s->deadline_ev);
        return;
    }
    unsigned t = s->state == SS_DATA ? s->gen->cfg->data_timeout : s->gen->cfg->command_timeout;
    struct timeval tv = {.tv_sec = t};
    event_add(s->deadline_ev, &tv);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct server_session *s = arg;
    (void)fd;
    (void)what;
    if (s->busy || s->paused || s->closing)
        return;
    size_t pending = evbuffer_get_length(bufferevent_get_input(s->bev));
    log_info("event=timeout session=%s ip=%s state=%s partial_bytes=%zu", s->id, s->ip,
             ss_state_str(s->state), pending);
    if (s->state == SS_DATA && s->backend) {
        /* nothing of a half-sent body goes anywhere */
        s->backend->ops->data_abort(s->backend, "421 4.4.2 Timeout, closing connection");
        ss_reset_transaction(s);
    }
    ss_reply(s, "421 4.4.2 Timeout, closing connection");
    ss_close_after_flush(s);
}

/* The one place replies are written. */
static void vreply(struct server_session *s, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void vreply(struct server_session *s, const char *fmt, va_list ap)
{
    char buf[4096];
    int n = vsnprintf(buf, sizeof(buf) - 2, fmt, ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof(buf) - 2 ? (size_t)n : sizeof(buf) - 3;
    if (log_get_level() >= LOGL_DEBUG) {
        char safe[600];
        log_debug("event=reply session=%s reply=%s", s->id, log_safe(safe, sizeof(safe), buf, len));
    }
    buf[len++] = '\r';
    buf[len++] = '\n';
    bufferevent_write(s->bev, buf, len);
}

void ss_reply(struct server_session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreply(s, fmt, ap);
    va_end(ap);
}

/* A reply to a device's mistake (syntax, sequence, failed login): these are counted, and a
 * session that keeps making them is closed. */
void ss_reply_error(struct server_session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreply(s, fmt, ap);
    va_end(ap);
    if (++s->errors >= s->gen->cfg->max_errors && !s->closing) {
        log_info("event=too_many_errors session=%s ip=%s errors=%u", s->id, s->ip, s->errors);
        ss_reply(s, "421 4.7.0 Too many errors, closing connection");
        ss_close_after_flush(s);
    }
}

void ss_close_after_flush(struct server_session *s)
{
    if (!s->closing)
        clock_gettime(CLOCK_MONOTONIC, &s->t_closing);
    s->closing = 1;
    event_del(s->deadline_ev);
    bufferevent_disable(s->bev, EV_READ);
    event_active(s->resume_ev, 0, 0);
}

/* Closing: free the session once the last reply has left. Under a STARTTLS filter that reply
 * waits in the socket bufferevent below, whose "drained" callback belongs to the filter, so look
 * again shortly instead of waiting for a callback that never comes; a peer that stops reading
 * gets CLOSE_FLUSH_MAX_MS. */
static void close_when_flushed(struct server_session *s)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long ms = (now.tv_sec - s->t_closing.tv_sec) * 1000L +
              (now.tv_nsec - s->t_closing.tv_nsec) / 1000000L;
    if (output_pending(s) == 0 || ms >= CLOSE_FLUSH_MAX_MS) {
        session_free(s);
        return;
    }
    struct timeval again = {.tv_sec = 0, .tv_usec = CLOSE_RECHECK_MS * 1000};
    event_add(s->resume_ev, &again);
}

static size_t output_pending(struct server_session *s)
{
    size_t n = evbuffer_get_length(bufferevent_get_output(s->bev));
    struct bufferevent *under = bufferevent_get_underlying(s->bev);
    if (under)
        n += evbuffer_get_length(bufferevent_get_output(under));
    return n;
}

/* Continue with the next pipelined command from the event loop, never from inside a callback
 * chain: backend callbacks may run before the backend call that caused them returns. */
static void resume_later(struct server_session *s)
{
    event_active(s->resume_ev, 0, 0);
}

/* Shutting down: a session with no message in flight is told so and closed; one in the middle of
 * a message gets here again once its message is done. */
static void close_if_draining(struct server_session *s)
{
    if (!s->srv->stopping || s->closing || s->busy || s->state == SS_MAIL || s->state == SS_RCPT ||
        s->state == SS_DATA)
        return;
    ss_reply(s, "421 4.3.2 Service shutting down, try again later");
    ss_close_after_flush(s);
}

void server_session_drain(struct server_session *s)
{
    close_if_draining(s);
}

struct server_session *server_session_next(const struct server_session *s)
{
    return s->next;
}

void ss_set_busy(struct server_session *s, int busy)
{
    s->busy = busy;
    close_if_draining(s);
    /* While the upstream works, the device is not expected to talk: no read timeout. */
    if (busy || s->paused)
        bufferevent_disable(s->bev, EV_READ);
    else if (!s->closing)
        bufferevent_enable(s->bev, EV_READ);
    deadline_restart(s); /* a reply was just given (or the upstream took over): wait afresh */
    if (!busy)
        resume_later(s);
}

void ss_reset_transaction(struct server_session *s)
{
    s->rcpts = 0;
    if (s->state == SS_MAIL || s->state == SS_RCPT || s->state == SS_DATA)
        ss_enter_state(s, SS_HELO);
}

/* ---- EHLO / HELO ---- */

static void send_ehlo(struct server_session *s)
{
    const struct config *cfg = s->gen->cfg;
    if (!s->ehlo_esmtp) {
        ss_reply(s, "250 %s", cfg->hostname);
        return;
    }
    char caps[1024];
    int n = snprintf(caps, sizeof(caps),
                     "250-%s\r\n250-PIPELINING\r\n250-SIZE %llu\r\n250-8BITMIME\r\n"
                     "250-SMTPUTF8\r\n",
                     cfg->hostname, (unsigned long long)cfg->max_message_size);
    if (s->gen->tls_server && !s->tls)
        n += snprintf(caps + n, sizeof(caps) - (size_t)n, "250-STARTTLS\r\n");
    if (device_has_logins(s->gen->devices) && !s->auth_device &&
        (s->tls || device_address_known(s->gen->devices, (struct sockaddr *)&s->peer)))
        n += snprintf(caps + n, sizeof(caps) - (size_t)n, "250-AUTH PLAIN LOGIN\r\n");
    snprintf(caps + n, sizeof(caps) - (size_t)n, "250 ENHANCEDSTATUSCODES");
    ss_reply(s, "%s", caps);
}

static void on_rset_then_ehlo(void *arg, const char *upstream_reply)
{
    struct server_session *s = arg;
    (void)upstream_reply;
    ss_reset_transaction(s);
    send_ehlo(s);
    ss_set_busy(s, 0);
}

static void cmd_helo(struct server_session *s, const struct smtp_cmd *cmd)
{
    s->ehlo_esmtp = cmd->verb == SMTP_EHLO;
    if (s->state == SS_MAIL || s->state == SS_RCPT) {
        ss_set_busy(s, 1);
        s->backend->ops->rset(s->backend, on_rset_then_ehlo, s);
        return;
    }
    ss_enter_state(s, SS_HELO);
    send_ehlo(s);
}

/* ---- STARTTLS ---- */

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);

static void cmd_starttls(struct server_session *s, const struct smtp_cmd *cmd)
{
    (void)cmd;
    if (!s->gen->tls_server) {
        ss_reply_error(s, "502 5.5.1 STARTTLS not available");
        return;
    }
    if (s->tls) {
        ss_reply_error(s, "503 5.5.1 TLS already active");
        return;
    }
    SSL *ssl = SSL_new(s->gen->tls_server);
    if (!ssl) {
        ss_reply(s, "454 4.7.0 TLS not available due to temporary reason");
        return;
    }
    ss_reply(s, "220 2.0.0 Ready to start TLS");
    /* Anything the client sent after STARTTLS was sent in the clear: throw it away
     * (CVE-2011-0411 class), and forget everything said before TLS (RFC 3207 4.2). */
    evbuffer_drain(bufferevent_get_input(s->bev),
                   evbuffer_get_length(bufferevent_get_input(s->bev)));
    smtp_parse_reset(s->parser);
    struct bufferevent *tls = bufferevent_openssl_filter_new(
        s->srv->base, s->bev, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (!tls) {
        SSL_free(ssl);
        log_error("event=starttls_failed session=%s reason=\"cannot create TLS filter\"", s->id);
        ss_close_after_flush(s);
        return;
    }
    s->bev = tls;
    s->tls = 1;
    s->auth_device = NULL;
    bufferevent_setcb(tls, on_read, on_write, on_event, s);
    bufferevent_setwatermark(tls, EV_READ, 0, SS_INPUT_HIGH_MARK);
    bufferevent_enable(tls, EV_READ | EV_WRITE);
    s->state = SS_HELO; /* force enter_state to apply timeouts to the new bufferevent */
    ss_enter_state(s, SS_INIT);
}

/* ---- small verbs ---- */

static void cmd_noop(struct server_session *s, const struct smtp_cmd *cmd)
{
    (void)cmd;
    ss_reply(s, "250 2.0.0 OK");
}

static void cmd_help(struct server_session *s, const struct smtp_cmd *cmd)
{
    (void)cmd;
    ss_reply(s,
             "214 2.0.0 Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA RSET NOOP VRFY HELP QUIT");
}

static void cmd_vrfy(struct server_session *s, const struct smtp_cmd *cmd)
{
    (void)cmd;
    ss_reply(s, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_not_implemented(struct server_session *s, const struct smtp_cmd *cmd)
{
    ss_reply_error(s, "502 5.5.1 %s not implemented", smtp_verb_str(cmd->verb));
}

static void cmd_quit(struct server_session *s, const struct smtp_cmd *cmd)
{
    (void)cmd;
    ss_reply(s, "221 2.0.0 Bye");
    ss_close_after_flush(s);
}

static const unsigned ANY = S(SS_INIT) | S(SS_HELO) | S(SS_MAIL) | S(SS_RCPT);

static const struct ss_command commands[] = {
    {SMTP_EHLO, S(SS_INIT) | S(SS_HELO) | S(SS_MAIL) | S(SS_RCPT), cmd_helo},
    {SMTP_HELO, S(SS_INIT) | S(SS_HELO) | S(SS_MAIL) | S(SS_RCPT), cmd_helo},
    {SMTP_STARTTLS, S(SS_INIT) | S(SS_HELO), cmd_starttls},
    {SMTP_AUTH, S(SS_HELO), server_auth_command},
    {SMTP_MAIL, S(SS_HELO), server_tx_mail},
    {SMTP_RCPT, S(SS_MAIL) | S(SS_RCPT), server_tx_rcpt},
    {SMTP_DATA, S(SS_MAIL) | S(SS_RCPT), server_tx_data},
    {SMTP_RSET, ANY, server_tx_rset},
    {SMTP_NOOP, ANY, cmd_noop},
    {SMTP_HELP, ANY, cmd_help},
    {SMTP_VRFY, ANY, cmd_vrfy},
    {SMTP_EXPN, ANY, cmd_not_implemented},
    {SMTP_BDAT, ANY, cmd_not_implemented},
    {SMTP_QUIT, ANY, cmd_quit},
};

static void dispatch(struct server_session *s, const struct smtp_cmd *cmd)
{
    if (s->state >= SS_AUTH_PLAIN) {
        server_auth_line(s, cmd);
        return;
    }
    if (log_get_level() >= LOGL_DEBUG) {
        char v[64];
        log_debug("event=command session=%s verb=%s", s->id,
                  log_safe(v, sizeof(v), cmd->verb_text, strlen(cmd->verb_text)));
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (commands[i].verb != cmd->verb)
            continue;
        if (!(commands[i].states & S(s->state))) {
            if (s->state == SS_INIT)
                ss_reply_error(s, "503 5.5.1 Send EHLO or HELO first");
            else if (cmd->verb == SMTP_MAIL)
                ss_reply_error(s, "503 5.5.1 Nested MAIL command");
            else if (cmd->verb == SMTP_AUTH)
                ss_reply_error(s, "503 5.5.1 AUTH not allowed during a mail transaction");
            else if (cmd->verb == SMTP_STARTTLS)
                ss_reply_error(s, "503 5.5.1 STARTTLS not allowed during a mail transaction");
            else
                ss_reply_error(s, "503 5.5.1 Bad sequence of commands: need MAIL first");
            return;
        }
        commands[i].handler(s, cmd);
        return;
    }
    ss_reply_error(s, "500 5.5.1 Command unrecognized");
}

/* Did these bytes end a line? A lone CR ends one too under bare_lf = normalize; counting a
 * CRLF's CR a moment early only starts the next line's deadline a moment early. */
static int ends_a_line(const void *p, size_t n)
{
    return n > 0 && (memchr(p, '\n', n) != NULL || memchr(p, '\r', n) != NULL);
}

static void process_input(struct server_session *s)
{
    int line_done = 0; /* a line ended: the next one's deadline starts now */
    while (!s->busy && !s->paused && !s->closing) {
        struct evbuffer *in = bufferevent_get_input(s->bev);
        struct evbuffer_iovec v;
        if (evbuffer_get_length(in) == 0 || evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        size_t consumed = 0;
        const char *err = NULL;
        if (s->state == SS_DATA) {
            int rc = smtp_data_dec_feed(s->dec, v.iov_base, v.iov_len, &consumed, &err);
            line_done |= ends_a_line(v.iov_base, consumed);
            evbuffer_drain(in, consumed);
            if (rc != 0) {
                server_tx_data_finished(s, rc, err);
                continue;
            }
            if (s->backend->ops->data_flush(s->backend) > SS_BODY_HIGH_MARK) {
                s->paused = 1;
                event_del(s->deadline_ev);
                bufferevent_disable(s->bev, EV_READ);
            }
            continue;
        }
        struct smtp_cmd cmd;
        int rc = smtp_parse_next(s->parser, v.iov_base, v.iov_len, &consumed, &cmd, &err);
        line_done |= rc != 0 || memchr(v.iov_base, '\n', consumed) != NULL;
        evbuffer_drain(in, consumed);
        if (rc < 0) {
            if (s->state >= SS_AUTH_PLAIN) { /* a broken AUTH response ends the exchange */
                secret_free(s->login_user);
                s->login_user = NULL;
                ss_enter_state(s, SS_HELO);
            }
            ss_reply_error(s, "%s", err);
        } else if (rc > 0) {
            dispatch(s, &cmd);
        }
    }
    if (line_done)
        deadline_restart(s);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct server_session *s = arg;
    (void)fd;
    (void)what;
    if (!s->closing)
        process_input(s);
    if (s->closing)
        close_when_flushed(s);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    on_resume(-1, 0, arg);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct server_session *s = arg;
    (void)bev;
    if (s->closing && output_pending(s) == 0)
        session_free(s);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct server_session *s = arg;
    if (what & BEV_EVENT_CONNECTED)
        return;
    if (what & BEV_EVENT_TIMEOUT) {
        log_info("event=timeout session=%s ip=%s state=%s", s->id, s->ip, ss_state_str(s->state));
        if (what & BEV_EVENT_WRITING) { /* the peer does not read: nothing more to say */
            session_free(s);
            return;
        }
        ss_reply(s, "421 4.4.2 Timeout, closing connection");
        ss_close_after_flush(s);
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        unsigned long e = bufferevent_get_openssl_error(bev);
        if (e) {
            char buf[256];
            ERR_error_string_n(e, buf, sizeof(buf));
            log_info("event=tls_failed session=%s ip=%s reason=\"%s\"", s->id, s->ip, buf);
        } else if (EVUTIL_SOCKET_ERROR()) {
            log_debug("event=socket_error session=%s reason=\"%s\"", s->id,
                      evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        }
    }
    session_free(s);
}

static void session_free(struct server_session *s)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - s->t_connect.tv_sec) * 1e3 +
                (double)(t1.tv_nsec - s->t_connect.tv_nsec) / 1e6;
    if (s->proxy_local)
        log_debug("event=disconnect session=%s ip=%s messages=%lu duration_ms=%.0f proxy_local=1",
                  s->id, s->ip, s->messages, ms);
    else
        log_info("event=disconnect session=%s ip=%s messages=%lu duration_ms=%.0f", s->id, s->ip,
                 s->messages, ms);
    auth_worker_cancel(s->auth_job);
    backend_free(s->backend);
    secret_free(s->login_user);
    smtp_parse_free(s->parser);
    smtp_data_dec_free(s->dec);
    if (s->bev)
        bufferevent_free(s->bev);
    if (s->resume_ev)
        event_free(s->resume_ev);
    if (s->deadline_ev)
        event_free(s->deadline_ev);
    if (s->prev)
        s->prev->next = s->next;
    else
        s->srv->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    metrics_session_closed(s->srv->metrics, s->metrics_slot);
    server_session_closed(s->srv);
    server_gen_unref(s->gen); /* after the backend and the password check, which borrow it */
    free(s);
}

void server_session_abort(struct server_session *s)
{
    log_info("event=session_aborted session=%s ip=%s state=%s", s->id, s->ip,
             ss_state_str(s->state));
    session_free(s);
}

struct server_session *server_session_start(struct server *srv, int fd, const struct sockaddr *sa,
                                            socklen_t salen, int tls, const char *listener,
                                            int proxy_local)
{
    struct server_session *s = calloc(1, sizeof(*s));
    SSL *ssl = NULL;
    if (!s) {
        evutil_closesocket(fd);
        return NULL;
    }
    /* Replies to pipelined commands go out as they are ready: Nagle would hold each one back
     * until the device's delayed ACK of the previous one. */
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    s->srv = srv;
    s->gen = server_gen_ref(srv->gen); /* kept across reloads until the session ends */
    s->next = srv->sessions;
    if (s->next)
        s->next->prev = s;
    srv->sessions = s;
    srv->sessions_open++;
    s->proxy_local = proxy_local;
    /* a balancer's health check is no device session: not counted (metrics_session_closed
     * ignores slot -1) */
    if (!proxy_local)
        srv->sessions_total++;
    s->metrics_slot = proxy_local ? -1 : metrics_session_opened(srv->metrics, listener);
    clock_gettime(CLOCK_MONOTONIC, &s->t_connect);
    memcpy(&s->peer, sa, salen < sizeof(s->peer) ? salen : sizeof(s->peer));
    (void)sockaddr_text(sa, 0, s->ip, sizeof(s->ip)); /* "" if neither family */
    unsigned char rnd[8];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        memset(rnd, 0, sizeof(rnd));
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(s->id + 2 * i, 3, "%02x", rnd[i]);
    snprintf(s->listener, sizeof(s->listener), "%s", listener);
    s->tls = tls;
    s->parser = smtp_parse_new();
    s->dec = smtp_data_dec_new(s->gen->cfg->bare_lf, s->gen->cfg->max_message_size,
                               server_tx_data_line, s);
    s->resume_ev = event_new(srv->base, -1, 0, on_resume, s);
    s->deadline_ev = evtimer_new(srv->base, on_deadline, s);
    if (tls) {
        ssl = SSL_new(s->gen->tls_server);
        if (ssl)
            s->bev = bufferevent_openssl_socket_new(srv->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                    BEV_OPT_CLOSE_ON_FREE);
    } else {
        s->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!s->parser || !s->dec || !s->resume_ev || !s->deadline_ev || !s->bev) {
        log_error("event=session_failed ip=%s reason=\"out of memory\"", s->ip);
        if (!s->bev) {
            if (ssl)
                SSL_free(ssl);
            evutil_closesocket(fd);
        }
        session_free(s);
        return NULL;
    }
    bufferevent_setcb(s->bev, on_read, on_write, on_event, s);
    bufferevent_setwatermark(s->bev, EV_READ, 0, SS_INPUT_HIGH_MARK);
    s->state = SS_HELO; /* so that enter_state applies the timeouts */
    ss_enter_state(s, SS_INIT);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    if (proxy_local)
        log_debug("event=connect session=%s ip=%s listener=%s tls=%d proxy_local=1", s->id, s->ip,
                  s->listener, tls);
    else
        log_info("event=connect session=%s ip=%s listener=%s tls=%d", s->id, s->ip, s->listener,
                 tls);

    const struct config *cfg = s->gen->cfg;
    if (srv->sessions_open > cfg->max_connections) {
        log_warn("event=refused session=%s ip=%s reason=\"max_connections reached\"", s->id, s->ip);
        ss_reply(s, "421 4.7.0 Too many connections, try again later");
        ss_close_after_flush(s);
        return s;
    }
    if (!proxy_local && !device_may_match(s->gen->devices, sa)) {
        /* No device could ever match: say so at once, clearly, and relay nothing. A health
         * check (PROXY LOCAL) from the balancer's address is answered (it may check the banner,
         * EHLO: option smtpchk); MAIL would still find no device there. */
        log_warn("event=refused session=%s ip=%s reason=\"unknown device\"", s->id, s->ip);
        ss_reply(s, "554 5.7.1 Client host [%s] is not a configured device of this relay", s->ip);
        ss_close_after_flush(s);
        return s;
    }
    ss_reply(s, "220 %s ESMTP smtp-oauth-proxy", cfg->hostname);
    deadline_restart(s); /* the wait for EHLO (and an implicit TLS handshake) starts now */
    return s;
}
