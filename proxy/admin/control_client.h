/* The commands' side of the control socket: one request to the running daemon, its reply read
 * whole (bounded), all within a timeout. */
#ifndef SOP_CONTROL_CLIENT_H
#define SOP_CONTROL_CLIENT_H

#include <stddef.h>

enum control_client_result {
    CONTROL_CLIENT_FAILED = -1,   /* err: the daemon's error message, or what went wrong */
    CONTROL_CLIENT_OK = 0,        /* *buf (free with secret_free), *body points into it */
    CONTROL_CLIENT_NO_DAEMON = 1, /* nothing listens at path (no file, or refused) */
};

/* Send "request\n" (and "payload\n" when payload is not NULL: a secret, wiped from our
 * buffers) to the daemon at path. The timeout bounds the whole exchange. */
enum control_client_result control_client_call(const char *path, const char *request,
                                               const char *payload, int timeout_ms, char **buf,
                                               const char **body, char *err, size_t errlen);

#endif
