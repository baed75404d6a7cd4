/* The upstream side: one SMTP client connection to the submission server.
 * Connect (every address of the name, both families), greeting, EHLO, STARTTLS (or TLS from the
 * first byte, or plain text when the upstream offers no STARTTLS and the caller allows it), TLS
 * 1.2+ verified, EHLO, AUTH XOAUTH2, OAUTHBEARER, PLAIN or LOGIN (or none), then
 * commands and a streamed DATA body. Callbacks are never called from inside an API call: they
 * always run from the event loop, so a caller may free the session from inside a callback. */
#ifndef SOP_CLIENT_SESSION_H
#define SOP_CLIENT_SESSION_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>

#include "proxy/smtp/smtp_reply.h"

struct event_base;
struct evdns_base;
struct client_session;

/* How the connection gets its TLS (upstream_tls). The certificate is verified whenever TLS is
 * used. */
enum client_tls_mode {
    CLIENT_TLS_STARTTLS = 0,  /* STARTTLS, or the connection is refused (the default) */
    CLIENT_TLS_IMPLICIT,      /* TLS from the first byte (SMTPS), then the greeting */
    CLIENT_TLS_OPPORTUNISTIC, /* STARTTLS when offered and accepted, else plain text (logged);
                               * a failed handshake is still a failure, never a downgrade */
};

struct client_cfg {
    const char *host; /* DNS name or IP literal */
    uint16_t port;
    const char *helo;         /* our name in EHLO */
    SSL_CTX *ssl_ctx;         /* from tls_client_ctx_new */
    unsigned connect_timeout; /* seconds, covers connect + greeting + TLS */
    unsigned reply_timeout;   /* seconds per reply, the final '.''s included */
    const char *log_id;       /* session id for log lines */
    enum client_tls_mode tls; /* 0: STARTTLS */
};

/* r: the server's reply (valid during the call), or NULL when there was none (connect failed,
 * TLS or certificate failure, connection lost, timeout, protocol violation); then err says why. */
typedef void (*client_reply_cb)(void *arg, const struct smtp_reply *r, const char *err);

/* cfg strings are copied. dns may be NULL (then host must be an IP literal). */
struct client_session *client_session_new(struct event_base *base, struct evdns_base *dns,
                                          const struct client_cfg *cfg);
/* Close at once; no callback runs afterwards. Accepts NULL. */
void client_session_free(struct client_session *c);
/* Connect and get ready to authenticate: every address of the name in turn (RFC 8305 style: see
 * client_connect.c; each failed address is logged), greeting, EHLO, STARTTLS, handshake
 * (certificate and name verified), EHLO again; with CLIENT_TLS_IMPLICIT the handshake comes
 * first. cb once: the last EHLO reply (2xx) on success; otherwise the refusing reply, or NULL
 * and err. A server without STARTTLS is refused unless the mode is opportunistic. */
void client_session_open(struct client_session *c, client_reply_cb cb, void *arg);
/* Capabilities of the last EHLO; valid after open succeeded. */
const struct smtp_caps *client_session_caps(const struct client_session *c);
/* 1 when the connection is encrypted (after a successful open: 0 only in opportunistic mode). */
int client_session_tls_active(const struct client_session *c);
/* AUTH XOAUTH2: the initial response on the AUTH line only when the whole line fits in 512
 * octets (RFC 4954 4), else "AUTH XOAUTH2", 334, then the response. A 334 error challenge (JSON)
 * is answered with an empty line and the final reply is reported. cb gets the final reply
 * (235 on success). user and token are not kept after the call. */
void client_session_auth_xoauth2(struct client_session *c, const char *user, const char *token,
                                 client_reply_cb cb, void *arg);
enum client_auth_mech {
    CLIENT_AUTH_XOAUTH2,     /* "user=" USER ^A "auth=Bearer " TOKEN ^A ^A */
    CLIENT_AUTH_OAUTHBEARER, /* RFC 7628: "n,a=" USER "," ^A "host=" ^A "port=" ^A "auth=..." */
    CLIENT_AUTH_PLAIN,       /* RFC 4616: NUL USER NUL PASSWORD (no authorization identity) */
    CLIENT_AUTH_LOGIN,       /* "AUTH LOGIN", 334, USER, 334, PASSWORD (each base64) */
};
/* The mechanism's name as in AUTH lines and EHLO ("XOAUTH2", "OAUTHBEARER", "PLAIN", ...). */
const char *client_auth_mech_name(enum client_auth_mech mech);
/* AUTH with mech, the same rules as client_session_auth_xoauth2. OAUTHBEARER carries the
 * session's host and port; its error challenge (a 334 with JSON) is answered with a single ^A
 * ("AQ==", RFC 7628 3.2.3) and the final reply is reported. For PLAIN and LOGIN, token is the
 * password; an unexpected 334 after the password is answered with "*" (RFC 4954 4: cancel).
 * Credentials are never sent on a connection without TLS: cb then gets an error. */
void client_session_auth(struct client_session *c, enum client_auth_mech mech, const char *user,
                         const char *token, client_reply_cb cb, void *arg);
/* Send one command line (no CRLF; at most 510 bytes) and report its reply. */
void client_session_command(struct client_session *c, const char *line, client_reply_cb cb,
                            void *arg);
/* After a 354 to DATA: queue wire-form body bytes (CRLF lines, dot-stuffed). */
void client_session_write(struct client_session *c, const char *data, size_t len);
/* Body bytes queued but not yet handed to the kernel: the caller stops reading its device
 * above a high mark and resumes from the drain callback. */
size_t client_session_pending(const struct client_session *c);
/* cb runs when pending falls to or below low_mark (after having been above it). */
void client_session_set_drain_cb(struct client_session *c, size_t low_mark, void (*cb)(void *arg),
                                 void *arg);
/* End the body (".\r\n") and report the final reply. */
void client_session_data_end(struct client_session *c, client_reply_cb cb, void *arg);
/* Send QUIT (if the connection is usable) and close once it is answered or after a short time;
 * the session frees itself. The caller must not use c afterwards. */
void client_session_quit(struct client_session *c);
/* The session id for log lines from now on (a pooled connection serves many sessions); kept
 * as it was if memory is short. */
void client_session_set_log_id(struct client_session *c, const char *log_id);
/* 0 once the connection is lost or a protocol error happened. */
int client_session_usable(const struct client_session *c);

#endif
