/* The control socket's line protocol, shared by the daemon (proxy/admin/control.c) and the commands
 * (proxy/admin/control_client.c). One request per connection:
 *     COMMAND [ARGUMENT]\n          at most CONTROL_LINE_MAX bytes, printable ASCII
 *     [PAYLOAD\n]                   only for commands that take one (refresh-token: a
 *                                   secret; device-block: the reason, a text line)
 * and one reply, then the daemon closes:
 *     ok\n BODY...                  the body runs to the end of the stream
 *     error MESSAGE\n               one line a person can act on (never a secret) */
#ifndef SOP_CONTROL_PROTO_H
#define SOP_CONTROL_PROTO_H

#include <stddef.h>

#define CONTROL_LINE_MAX 4096     /* a request line, without its \n */
#define CONTROL_PAYLOAD_MAX 16384 /* a payload line (a refresh token) */
#define CONTROL_REPLY_MAX (1024 * 1024)
#define CONTROL_TEXT_MAX 512 /* a text payload line (device-block's reason) */

/* Split a request line in place into its command and optional argument (NULL when absent).
 * Refused (-1): empty, longer than CONTROL_LINE_MAX, bytes outside printable ASCII, more than
 * one argument, or doubled spaces. A trailing \r is dropped. 0 ok. */
int control_split(char *line, size_t len, const char **cmd, const char **arg);
/* A payload line: non-empty, at most CONTROL_PAYLOAD_MAX bytes, printable ASCII without spaces
 * (refresh tokens are). A trailing \r is dropped in place. 0 ok, -1 not. */
int control_payload_ok(char *line, size_t len);
/* A text payload line: at most CONTROL_TEXT_MAX bytes of printable ASCII, spaces allowed, may be
 * empty. A trailing \r is dropped in place. 0 ok, -1 not. */
int control_text_ok(char *line, size_t len);
/* Parse a reply in place (buf NUL-terminated, len bytes). 1 "ok": *body is what follows the
 * first line ("" when nothing); 0 "error": *msg is the message; -1 malformed. */
int control_reply_parse(char *buf, size_t len, const char **msg, const char **body);

#endif
