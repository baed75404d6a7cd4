/* The device side: one SMTP server session with a copier, scanner or application. */
#ifndef SOP_SERVER_SESSION_H
#define SOP_SERVER_SESSION_H

#include <sys/socket.h>

struct server;
struct server_session;

/* Takes the accepted socket. tls: implicit TLS (SMTPS) from the first byte. proxy_local: the
 * connection came with a PROXY v2 LOCAL header from a trusted balancer (its health check, sa its
 * own address): it is answered as any session, but is no device's session: no early refusal as
 * an unknown device, its lines at debug with proxy_local=1, not in the sessions metrics.
 * The session frees itself when the conversation ends. */
struct server_session *server_session_start(struct server *srv, int fd, const struct sockaddr *sa,
                                            socklen_t salen, int tls, const char *listener,
                                            int proxy_local);

/* Shutting down: close the session now with a 421 if no message is in flight, else once its
 * message is done. */
void server_session_drain(struct server_session *s);
/* The next session in the server's list (sessions close asynchronously, so a walk that drains
 * them stays valid). */
struct server_session *server_session_next(const struct server_session *s);
/* Close a session at once (shutdown): no reply, the upstream connection dropped. */
void server_session_abort(struct server_session *s);

#endif
