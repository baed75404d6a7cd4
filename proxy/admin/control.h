/* The daemon's control socket: a UNIX stream socket (mode 0600, peers must be our uid or root)
 * through which `smtp-oauth-proxy token|accounts|authorize` reach the running daemon, so that
 * one token cache per account serves the daemon and local tools alike. The protocol is in
 * control_proto.h; requests are a table in control.c. */
#ifndef SOP_CONTROL_H
#define SOP_CONTROL_H

#include <stddef.h>

struct server;
struct control;

/* Create cfg->control_socket (a stale socket file nobody answers on is replaced; anything else
 * at the path is an error) and serve it on s's event loop. NULL with err on failure. */
struct control *control_new(struct server *s, char *err, size_t errlen);
/* Close every control connection, stop listening and remove the socket file. Call before
 * server_free (connections may wait on its token caches). Accepts NULL. */
void control_free(struct control *ctl);

#endif
