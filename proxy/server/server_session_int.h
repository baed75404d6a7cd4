/* The device session's insides, shared by its three files: server_session.c (connection,
 * I/O, dispatch, EHLO, STARTTLS, small verbs), server_auth.c (AUTH) and server_tx.c (MAIL, RCPT,
 * DATA, RSET). Private to them: nothing else includes this. The ss_ prefix marks the session's
 * internal API. */
#ifndef SOP_SERVER_SESSION_INT_H
#define SOP_SERVER_SESSION_INT_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>
#include <time.h>

#include "proxy/server/server_session.h"
#include "proxy/smtp/smtp_parse.h"

struct bufferevent;
struct event;
struct cfg_device;
struct backend;
struct smtp_data_dec;

/* Stop reading from the device while this much of its body waits to go upstream. */
#define SS_BODY_HIGH_MARK (1024 * 1024)
#define SS_BODY_LOW_MARK (256 * 1024)
/* libevent stops reading the socket when this much input is buffered (pipelined commands). */
#define SS_INPUT_HIGH_MARK (256 * 1024)
#define SS_WRITE_TIMEOUT 300
/* Closing: how often to look whether the last reply has left, and for how long at most. */
#define CLOSE_RECHECK_MS 20
#define CLOSE_FLUSH_MAX_MS 5000

enum ss_state {
    SS_INIT,       /* greeting sent: EHLO/HELO first */
    SS_HELO,       /* no transaction */
    SS_MAIL,       /* MAIL accepted, no recipient yet */
    SS_RCPT,       /* at least one recipient accepted */
    SS_DATA,       /* reading the body */
    SS_AUTH_PLAIN, /* waiting for the PLAIN response */
    SS_AUTH_USER,  /* LOGIN: waiting for the user name */
    SS_AUTH_PASS,  /* LOGIN: waiting for the password */
};

#define S(x) (1u << (x))

struct server_session {
    struct server *srv;
    struct server_gen *gen; /* the config generation the session started on (a reference) */
    struct server_session *next, *prev; /* the server's list of open sessions */
    struct bufferevent *bev;
    struct event *resume_ev;
    struct event *deadline_ev; /* the per-record deadline (command_timeout / data_timeout) */
    struct sockaddr_storage peer;
    char ip[INET6_ADDRSTRLEN];
    char id[17];
    char listener[64];
    int metrics_slot; /* the listener's counters (metrics_session_opened) */
    struct timespec t_connect;

    enum ss_state state;
    int tls;
    int busy;    /* waiting for the upstream: input is not processed */
    int paused;  /* body backpressure */
    int closing; /* close once the output is flushed */
    struct timespec t_closing;
    unsigned errors;
    unsigned long messages;
    unsigned rcpts; /* accepted recipients of the current transaction */

    struct smtp_parser *parser;
    struct smtp_data_dec *dec;

    const struct cfg_device *auth_device;    /* set by a successful AUTH */
    char *login_user;                        /* AUTH LOGIN between its two steps */
    struct auth_job *auth_job;               /* a password being checked */
    char auth_user[200];                     /* log-safe user name of that check */
    int auth_user_device;                    /* whose username that is (-1: nobody's) */
    struct backend *backend;                 /* the delivery mode's: created at the first MAIL */
    const struct cfg_device *backend_device; /* the device it speaks for */
    int ehlo_esmtp;
    int proxy_local; /* a balancer's health check (PROXY v2 LOCAL): not a device's session */
};

/* Write one reply (lines joined by CRLF, no final CRLF) to the device. */
void ss_reply(struct server_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A reply to a device's mistake: counted; after max_errors the session is closed. */
void ss_reply_error(struct server_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Every state change goes through here: timeouts and parser mode follow the state. */
void ss_enter_state(struct server_session *s, enum ss_state st);
/* busy = waiting for the upstream: stop reading; not busy: go on with pipelined input. Also
 * runs the per-record deadline: off while busy, started afresh when the wait ends. */
void ss_set_busy(struct server_session *s, int busy);
/* Forget the current transaction (back to HELO state). */
void ss_reset_transaction(struct server_session *s);
void ss_close_after_flush(struct server_session *s);

/* server_auth.c */
void server_auth_command(struct server_session *s, const struct smtp_cmd *cmd);
/* A line answering a 334 (AUTH PLAIN response, LOGIN user name or password). */
void server_auth_line(struct server_session *s, const struct smtp_cmd *cmd);

/* server_tx.c */
void server_tx_mail(struct server_session *s, const struct smtp_cmd *cmd);
void server_tx_rcpt(struct server_session *s, const struct smtp_cmd *cmd);
void server_tx_data(struct server_session *s, const struct smtp_cmd *cmd);
void server_tx_rset(struct server_session *s, const struct smtp_cmd *cmd);
/* The DATA decoder's line callback (arg is the session). */
void server_tx_data_line(void *arg, const char *line, size_t len);
/* The decoder saw the end of the body: rc 1 = fine, -1 = refused with err. */
void server_tx_data_finished(struct server_session *s, int rc, const char *err);

#endif
