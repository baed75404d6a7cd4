/* Requests on an open upstream session, one outstanding at a time: commands, the streamed DATA
 * body with its backpressure, the final '.', and QUIT. AUTH XOAUTH2 is in client_auth.c; the
 * frames, the reading of replies and failure reporting are client_session.c's. */
#include "proxy/upstream/client_session_int.h"

#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#define CLIENT_REQUEST_QUIT_TIMEOUT 5

/* When the connection is gone, tell cb why from the loop and return 1. */
static int client_request_park_if_gone(struct client_session *c, client_reply_cb cb, void *arg)
{
    char msg[300];
    if (!c->dead && c->bev && c->state != CLIENT_SESSION_CLOSED)
        return 0;
    snprintf(msg, sizeof(msg), "upstream connection not usable: %s",
             c->err[0] ? c->err : "not open");
    client_session_park_error(c, cb, arg, msg);
    return 1;
}

int client_request_can_start(struct client_session *c, client_reply_cb cb, void *arg)
{
    char msg[300];
    if (client_request_park_if_gone(c, cb, arg))
        return 0;
    if (c->state != CLIENT_SESSION_READY) {
        snprintf(msg, sizeof(msg), "upstream session busy (state %s)",
                 client_session_state_str(c->state));
        client_session_park_error(c, cb, arg, msg);
        return 0;
    }
    return 1;
}

void client_request_wait(struct client_session *c, enum client_session_state s, unsigned timeout,
                         client_reply_cb cb, void *arg)
{
    c->cb = cb;
    c->cb_arg = arg;
    client_session_enter_state(c, s);
    client_session_arm(c, timeout);
    client_session_read_buffered(c);
}

void client_request_send(struct client_session *c, const char *line, enum client_session_state s,
                         unsigned timeout, client_reply_cb cb, void *arg)
{
    if (client_session_send(c, line, NULL) < 0) {
        /* The failure was reported to nobody (no request yet): give it to this one. */
        client_session_park_error(c, cb, arg, c->err);
        return;
    }
    client_request_wait(c, s, timeout, cb, arg);
}

void client_session_command(struct client_session *c, const char *line, client_reply_cb cb,
                            void *arg)
{
    if (!c)
        return;
    client_session_api_enter(c);
    if (!line || strlen(line) > CLIENT_SESSION_LINE_MAX || strpbrk(line, "\r\n"))
        client_session_park_error(c, cb, arg, "invalid command line (CR, LF or over 510 bytes)");
    else if (client_request_can_start(c, cb, arg))
        client_request_send(c, line, CLIENT_SESSION_COMMAND, c->reply_timeout, cb, arg);
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
        if (bufferevent_write(c->bev, data, len) != 0) {
            client_session_fail(c, "out of memory queueing the body");
        } else {
            if (c->drain_cb && client_session_pending(c) > c->drain_low)
                c->drain_armed = 1;
            /* a body that stops moving fails after reply_timeout (re-armed on progress) */
            if (!evtimer_pending(c->timer, NULL))
                client_session_arm(c, c->reply_timeout);
        }
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
     * the filter once TLS is up, or on the socket once the session stays in plain text. */
    if (c->bev && (c->ssl || c->plain))
        bufferevent_setwatermark(c->bev, EV_WRITE, low_mark, 0);
}

void client_session_data_end(struct client_session *c, client_reply_cb cb, void *arg)
{
    if (!c)
        return;
    client_session_api_enter(c);
    if (client_request_park_if_gone(c, cb, arg))
        goto out;
    if (c->state != CLIENT_SESSION_BODY) {
        client_session_park_error(c, cb, arg, "data_end without a 354 to DATA");
        goto out;
    }
    c->drain_armed = 0;
    /* reply_timeout ([upstream] timeout) here too, not RFC 5321's 10 minutes: a device waiting
     * on this reply (delivery = direct) gives up and resends long before 10 minutes, and a queue
     * attempt would hold its connection as long. */
    client_request_send(c, ".", CLIENT_SESSION_DATA_END, c->reply_timeout, cb, arg);
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
            client_session_arm(c, CLIENT_REQUEST_QUIT_TIMEOUT);
            client_session_read_buffered(c);
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
