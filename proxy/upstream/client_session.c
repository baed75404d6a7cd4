/* The upstream side: one SMTP client connection to the submission server (see
 * client_session.h for the contract). This file holds the object, its frames and deferred
 * callbacks, failure reporting, and the reading and dispatch of replies. client_open.c opens the
 * session, client_auth.c authenticates it, client_request.c sends commands, the body and QUIT.
 *
 * Two rules shape these files:
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
#include "proxy/upstream/client_session_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/crypto.h>
#include <openssl/err.h>

#include "common/log.h"

/* What a server may send while we expect nothing before we call it hostile. */
#define CLIENT_SESSION_UNSOLICITED_MAX 65536

/* Bufferevent events parked while one of our frames was active. */
#define CLIENT_SESSION_PARK_READ 0x1
#define CLIENT_SESSION_PARK_WRITE 0x2
#define CLIENT_SESSION_PARK_EVENT 0x4
#define CLIENT_SESSION_PARK_ERROR 0x8 /* an API call's failure to report */

const char *client_session_state_str(enum client_session_state s)
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

void client_session_enter_state(struct client_session *c, enum client_session_state s)
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

void client_session_close(struct client_session *c)
{
    client_connect_stop(c, NULL);
    if (c->timer)
        evtimer_del(c->timer);
    if (c->bev) {
        /* The filter owns the SSL and the socket bufferevent (BEV_OPT_CLOSE_ON_FREE). */
        bufferevent_free(c->bev);
        c->bev = NULL;
        c->ssl = NULL;
    }
    client_auth_wipe(c);
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

/* The QUIT is answered, or its time is up: the session frees itself once our frames unwind. */
static void client_session_end_quit(struct client_session *c)
{
    client_session_close(c);
    client_session_enter_state(c, CLIENT_SESSION_CLOSED);
    c->dead = 1;
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

void client_session_frame_enter(struct client_session *c)
{
    client_session_enter(c);
}

void client_session_frame_leave(struct client_session *c)
{
    client_session_leave(c);
}

void client_session_api_enter(struct client_session *c)
{
    c->api_depth++;
    client_session_enter(c);
}

void client_session_api_leave(struct client_session *c)
{
    c->api_depth--;
    client_session_leave(c);
}

static void client_session_park(struct client_session *c, int what)
{
    c->parked |= what;
    event_active(c->deferred, EV_TIMEOUT, 1);
}

void client_session_park_error(struct client_session *c, client_reply_cb cb, void *arg,
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

/* Only from a loop frame (api_depth == 0). */
int client_session_deliver(struct client_session *c, const struct smtp_reply *r, const char *err)
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
    if (c->state == CLIENT_SESSION_BODY) {
        /* progress: the upstream has reply_timeout again to take the rest; nothing queued,
         * nothing to wait for (a slow device is not the upstream's fault) */
        if (pending > 0)
            client_session_arm(c, c->reply_timeout);
        else
            evtimer_del(c->timer);
    }
    if (!c->drain_armed || !c->drain_cb || pending > c->drain_low)
        return c->dead ? -1 : 0;
    c->drain_armed = 0;
    c->drain_cb(c->drain_arg);
    return c->dead ? -1 : 0;
}

/* Returns -1 so that callers can `return client_session_fail(...)`. */
int client_session_fail(struct client_session *c, const char *fmt, ...)
{
    char safe[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
    int quitting = c->state == CLIENT_SESSION_QUIT;
    /* Between commands with nobody waiting: an idle pooled connection the upstream timed out,
     * which the pool replaces at its next use. Not worth a warning. */
    int idle = c->state == CLIENT_SESSION_READY && !c->cb;
    client_session_close(c);
    client_session_enter_state(c, CLIENT_SESSION_CLOSED);
    if (quitting) {
        /* Nobody listens any more; a lost connection after QUIT is the end we wanted. */
        c->dead = 1;
        return -1;
    }
    if (idle)
        log_info("event=upstream_idle_lost session=%s host=%s port=%u error=%s", c->log_id, c->host,
                 (unsigned)c->port, log_safe(safe, sizeof(safe), c->err, strlen(c->err)));
    else
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

void client_session_arm(struct client_session *c, unsigned seconds)
{
    struct timeval tv = {(time_t)seconds, 0};
    evtimer_add(c->timer, &tv);
}

int client_session_send(struct client_session *c, const char *line, const char *logged)
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

void client_session_read_buffered(struct client_session *c)
{
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        client_session_park(c, CLIENT_SESSION_PARK_READ);
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

/* One reply in the current state. -1: stop processing (closed, or the session is gone). */
static int client_session_on_reply(struct client_session *c, const struct smtp_reply *r)
{
    evtimer_del(c->timer);
    switch (c->state) {
    case CLIENT_SESSION_GREETING:
    case CLIENT_SESSION_EHLO:
    case CLIENT_SESSION_STARTTLS:
    case CLIENT_SESSION_EHLO_TLS:
        return client_open_on_reply(c, r);
    case CLIENT_SESSION_AUTH_CONT:
    case CLIENT_SESSION_AUTH_RESULT:
    case CLIENT_SESSION_AUTH_ABORT:
        return client_auth_on_reply(c, r);
    case CLIENT_SESSION_COMMAND:
        /* Only DATA is answered with 354; the caller streams the body next. */
        client_session_enter_state(c, r->code == 354 ? CLIENT_SESSION_BODY : CLIENT_SESSION_READY);
        return client_session_deliver(c, r, NULL);
    case CLIENT_SESSION_DATA_END:
        client_session_enter_state(c, CLIENT_SESSION_READY);
        return client_session_deliver(c, r, NULL);
    case CLIENT_SESSION_QUIT:
        client_session_end_quit(c);
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
        if (client_open_connected(c) == 0)
            client_session_read(c);
        return;
    }
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) || !c->bev)
        return;
    if (c->state == CLIENT_SESSION_CONNECTING || c->state == CLIENT_SESSION_HANDSHAKE) {
        client_open_lost(c, what, err_no);
        return;
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

/* Handle bufferevent events (CLIENT_SESSION_PARK_EVENT with what and err_no, then READ, then
 * WRITE) from a loop frame, stopping once the session is dead. */
static void client_session_dispatch(struct client_session *c, int which, short what, int err_no)
{
    if (!c->dead && (which & CLIENT_SESSION_PARK_EVENT))
        client_session_on_event(c, what, err_no);
    if (!c->dead && (which & CLIENT_SESSION_PARK_READ))
        client_session_read(c);
    if (!c->dead && (which & CLIENT_SESSION_PARK_WRITE))
        client_session_check_drain(c);
}

/* A bufferevent callback: handled in a frame of its own, or parked while one of ours is active. */
static void client_session_from_bev(struct client_session *c, int which, short what, int err_no)
{
    if (c->depth > 0) {
        if (which & CLIENT_SESSION_PARK_EVENT) {
            c->parked_what |= what;
            c->parked_errno = err_no;
        }
        client_session_park(c, which);
        return;
    }
    client_session_enter(c);
    client_session_dispatch(c, which, what, err_no);
    client_session_leave(c);
}

static void client_session_readcb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    client_session_from_bev(arg, CLIENT_SESSION_PARK_READ, 0, 0);
}

static void client_session_writecb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    client_session_from_bev(arg, CLIENT_SESSION_PARK_WRITE, 0, 0);
}

static void client_session_eventcb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    client_session_from_bev(arg, CLIENT_SESSION_PARK_EVENT, what, EVUTIL_SOCKET_ERROR());
}

void client_session_attach(struct client_session *c, struct bufferevent *bev)
{
    c->bev = bev;
    bufferevent_setcb(bev, client_session_readcb, client_session_writecb, client_session_eventcb,
                      c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void client_session_timercb(evutil_socket_t fd, short what, void *arg)
{
    struct client_session *c = arg;
    (void)fd;
    (void)what;
    client_session_enter(c);
    switch (c->state) {
    case CLIENT_SESSION_QUIT:
        client_session_end_quit(c);
        break;
    case CLIENT_SESSION_CONNECTING:
        client_connect_stop(c, "no answer within connect_timeout");
        /* fall through */
    case CLIENT_SESSION_GREETING:
    case CLIENT_SESSION_HANDSHAKE:
        client_session_fail(c, "timeout connecting to upstream %s:%u (state %s, %us)", c->host,
                            (unsigned)c->port, client_session_state_str(c->state),
                            c->connect_timeout);
        break;
    case CLIENT_SESSION_BODY:
        client_session_fail(c,
                            "timeout sending the message body: the upstream took nothing for %us",
                            c->reply_timeout);
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
    short ev = c->parked_what;
    c->parked_what = 0;
    client_session_dispatch(c, parked, ev, c->parked_errno);
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
    c->tls_mode = cfg->tls;
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

const struct smtp_caps *client_session_caps(const struct client_session *c)
{
    return &c->caps;
}

int client_session_tls_active(const struct client_session *c)
{
    return c && c->ssl != NULL;
}

void client_session_set_log_id(struct client_session *c, const char *log_id)
{
    char *id = c && log_id ? strdup(log_id) : NULL;
    if (!id)
        return;
    free(c->log_id);
    c->log_id = id;
}

int client_session_usable(const struct client_session *c)
{
    return c && !c->dead && c->bev && c->state != CLIENT_SESSION_CLOSED &&
           c->state != CLIENT_SESSION_QUIT;
}
