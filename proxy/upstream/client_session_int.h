/* Private to client_session.c, client_open.c, client_auth.c and client_request.c: the session
 * object and the few functions they share. Not part of the contract (that is client_session.h). */
#ifndef SOP_CLIENT_SESSION_INT_H
#define SOP_CLIENT_SESSION_INT_H

#include "proxy/upstream/client_session.h"

struct bufferevent;
struct event;
struct client_connector;

#define CLIENT_SESSION_LINE_MAX 510 /* command line without CRLF (RFC 5321 4.5.3.1.4) */

enum client_session_state {
    CLIENT_SESSION_IDLE,        /* created, not opened */
    CLIENT_SESSION_CONNECTING,  /* TCP connect (and DNS) */
    CLIENT_SESSION_GREETING,    /* waiting for 220 */
    CLIENT_SESSION_EHLO,        /* first EHLO sent, in clear */
    CLIENT_SESSION_STARTTLS,    /* STARTTLS sent, waiting for 220 */
    CLIENT_SESSION_HANDSHAKE,   /* TLS handshake running */
    CLIENT_SESSION_EHLO_TLS,    /* EHLO sent again over TLS */
    CLIENT_SESSION_READY,       /* idle, a command may be sent */
    CLIENT_SESSION_AUTH_CONT,   /* "AUTH <mech>" sent without a response, waiting for 334 */
    CLIENT_SESSION_AUTH_RESULT, /* response sent: 235, 5xx, or a 334 error challenge */
    CLIENT_SESSION_AUTH_ABORT,  /* empty line (or ^A) sent after the error challenge */
    CLIENT_SESSION_COMMAND,     /* a command sent, waiting for its reply */
    CLIENT_SESSION_BODY,        /* after 354: the caller streams the body */
    CLIENT_SESSION_DATA_END,    /* '.' sent, waiting for the final reply */
    CLIENT_SESSION_QUIT,        /* QUIT sent; the session frees itself */
    CLIENT_SESSION_CLOSED,      /* connection gone or refused; nothing more will happen */
};

struct client_session {
    struct event_base *base;
    struct evdns_base *dns;
    char *host, *helo, *log_id;
    uint16_t port;
    SSL_CTX *ssl_ctx;
    unsigned connect_timeout, reply_timeout;
    enum client_tls_mode tls_mode;
    struct client_connector *connector; /* while CONNECTING (client_connect.c) */
    int greeted;          /* the 220 greeting came (implicit TLS: after the handshake) */
    int starttls_refused; /* opportunistic: STARTTLS was refused, EHLO again in clear */
    int plain;            /* opportunistic: no TLS on this connection, for good */

    enum client_session_state state;
    struct bufferevent *bev; /* top of the stack: the TLS filter once STARTTLS is done */
    SSL *ssl;                /* owned by the filter */
    struct smtp_reply_parser *parser;
    struct smtp_caps caps;
    struct event *timer;
    struct event *deferred;

    client_reply_cb cb; /* the one outstanding request */
    void *cb_arg;
    char *auth_resp; /* AUTH response held until the 334; wiped when sent or dropped */
    char *auth_user; /* AUTH LOGIN: the user name (base64) held for the first 334 */
    enum client_auth_mech auth_mech; /* of the AUTH exchange in progress */

    void (*drain_cb)(void *arg);
    void *drain_arg;
    size_t drain_low;
    int drain_armed; /* pending went above drain_low since the last drain callback */

    int depth;     /* our frames on the stack */
    int api_depth; /* of which API calls */
    int dead;      /* freed (or finished quitting) inside a frame: free when depth is 0 */
    int parked;    /* CLIENT_SESSION_PARK_* (client_session.c) */
    short parked_what;
    int parked_errno;
    client_reply_cb parked_cb; /* the request an API call failed at once */
    void *parked_arg;
    char parked_err[256];

    char err[256]; /* why the connection was lost, for later calls */
};

/* ---- client_session.c: the object, its frames and its I/O ---- */

/* The state's name for log lines and error texts. */
const char *client_session_state_str(enum client_session_state s);
/* Move to state s (logged at debug). */
void client_session_enter_state(struct client_session *c, enum client_session_state s);
/* (Re)start the timer: the current state must end within seconds. */
void client_session_arm(struct client_session *c, unsigned seconds);
/* Drop the connection (and any held AUTH response); the session itself stays until freed. */
void client_session_close(struct client_session *c);
/* Make bev the top of the stack: our callbacks, reading and writing enabled. */
void client_session_attach(struct client_session *c, struct bufferevent *bev);
/* The connection is unusable: close it and tell whoever waits. Always -1. */
int client_session_fail(struct client_session *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Call the outstanding request's callback; only from a loop frame. -1: the session is gone. */
int client_session_deliver(struct client_session *c, const struct smtp_reply *r, const char *err);
/* Queue one command line; logged replaces line in the debug log (NULL: line). -1: failed. */
int client_session_send(struct client_session *c, const char *line, const char *logged);
/* Bracket a loop callback of another file (client_connect.c's events) like the session's own;
 * after leave the session may be gone. */
void client_session_frame_enter(struct client_session *c);
void client_session_frame_leave(struct client_session *c);
/* Bracket every public API call (see the frame rule at the top of client_session.c). */
void client_session_api_enter(struct client_session *c);
void client_session_api_leave(struct client_session *c);
/* Report an API call's failure to cb from the loop. The session stays as it is. */
void client_session_park_error(struct client_session *c, client_reply_cb cb, void *arg,
                               const char *err);
/* Replies may already be buffered (a server that speaks early): read them from the loop. */
void client_session_read_buffered(struct client_session *c);

/* ---- client_open.c: connect, greeting, EHLO, STARTTLS, TLS verification, EHLO again ---- */

/* A reply in GREETING, EHLO, STARTTLS or EHLO_TLS. -1: stop processing. */
int client_open_on_reply(struct client_session *c, const struct smtp_reply *r);
/* TCP is up (client_connect.c) or the handshake is done (BEV_EVENT_CONNECTED). 0: read the
 * replies now. */
int client_open_connected(struct client_session *c);
/* The connection failed while CONNECTING or in the HANDSHAKE: fail with the reason why. */
void client_open_lost(struct client_session *c, short what, int err_no);

/* ---- client_connect.c: every address of the name, RFC 8305 style ---- */

/* Resolve and connect (CONNECTING is entered and its timer armed by the caller); the winner is
 * attached and client_open_connected() runs, from the loop. Always 0 unless it failed at once
 * (then -1 and the session failed). */
int client_connect_start(struct client_session *c);
/* Stop connecting: cancel the resolution, close every attempt; why non-NULL: log each attempt
 * still in flight as failed for that reason (the connect timeout). No-op when not connecting. */
void client_connect_stop(struct client_session *c, const char *why);

/* ---- client_request.c: commands, the body and QUIT, one request at a time ---- */

/* Whether a new request may start now; otherwise cb gets the reason from the loop. */
int client_request_can_start(struct client_session *c, client_reply_cb cb, void *arg);
/* Make cb the outstanding request and wait up to timeout seconds in state s for its reply. */
void client_request_wait(struct client_session *c, enum client_session_state s, unsigned timeout,
                         client_reply_cb cb, void *arg);
/* Send line, then client_request_wait; a failure to send is reported to cb from the loop. */
void client_request_send(struct client_session *c, const char *line, enum client_session_state s,
                         unsigned timeout, client_reply_cb cb, void *arg);

/* ---- client_auth.c: AUTH XOAUTH2 / OAUTHBEARER, the only code that sees the token ---- */

/* A reply in AUTH_CONT, AUTH_RESULT or AUTH_ABORT. -1: stop processing. */
int client_auth_on_reply(struct client_session *c, const struct smtp_reply *r);
/* Wipe and drop the held AUTH response, if any. */
void client_auth_wipe(struct client_session *c);

#endif
