/* DATA transparency (RFC 5321 4.5.2), both directions. Pure: no I/O.
 * The decoder turns what a device sends after 354 into logical lines (unstuffed, no line
 * terminator); the encoder turns lines back into wire form (CRLF, dot-stuffed). Re-encoding every
 * line means the upstream sees exactly the message the proxy saw: no bare LF, no lone CR, no
 * ambiguous end of data ever crosses the proxy (SMTP smuggling, CVE-2023-51766 family). */
#ifndef SOP_SMTP_DATA_H
#define SOP_SMTP_DATA_H

#include <stddef.h>
#include <stdint.h>

#define SMTP_TEXT_LINE_MAX 1000 /* RFC 5321 4.5.3.1.6, including CRLF */

enum bare_lf_policy {
    BARE_LF_NORMALIZE, /* a bare LF (or a lone CR) ends a line, like CRLF */
    BARE_LF_REJECT,    /* a bare LF or a lone CR refuses the message */
};

/* Called for each complete line: bytes without terminator and without the stuffing dot. */
typedef void (*smtp_data_line_cb)(void *arg, const char *line, size_t len);

struct smtp_data_dec;

/* max_size: limit on the decoded message (sum of line lengths + 2 per line); 0 = none. */
struct smtp_data_dec *smtp_data_dec_new(enum bare_lf_policy policy, uint64_t max_size,
                                        smtp_data_line_cb cb, void *arg);
void smtp_data_dec_free(struct smtp_data_dec *d);
/* Feed bytes. *consumed = bytes taken (always set).
 *  1: end of data seen; *consumed stops right after the end marker; the message was fine.
 *     The end marker depends on how the message's first line ended: after a CRLF first line only
 *     CRLF "." CRLF ends the message (a bare-LF dot inside is content: SMTP smuggling,
 *     CVE-2023-51766); after a bare-LF first line (an LF-only client) a "." line after LF or
 *     CRLF, ended by LF or CRLF, ends it. A lone CR is never part of an end marker.
 *  0: need more; all consumed.
 * -1: end of data seen but the message is refused; *err is the reply for the client, e.g.
 *     "552 5.3.4 Message size exceeds fixed limit", "554 5.6.0 Message refused: line longer than
 *     1000 octets", "554 5.6.0 Message refused: bare LF in message (bare_lf = reject)",
 *     "554 5.6.0 Message refused: NUL byte in message" (a NUL anywhere, any policy). Once an
 *     error is found no more lines are passed to cb; the rest is read and dropped up to the end of
 *     data, found by the same rule.
 * After 1 or -1 the decoder must be reset before the next message. */
int smtp_data_dec_feed(struct smtp_data_dec *d, const char *data, size_t len, size_t *consumed,
                       const char **err);
/* True once an error was found (before the end of data): the caller can abort upstream early. */
int smtp_data_dec_failed(const struct smtp_data_dec *d);
/* Decoded bytes so far (each line + 2 for its CRLF). */
uint64_t smtp_data_dec_size(const struct smtp_data_dec *d);
void smtp_data_dec_reset(struct smtp_data_dec *d);

/* Wire form of one line into out (at least len + 3 bytes): optional stuffing dot, bytes, CRLF.
 * Returns the number of bytes written. */
size_t smtp_data_encode_line(char *out, const char *line, size_t len);

#endif
