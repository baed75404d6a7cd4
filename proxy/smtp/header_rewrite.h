/* sender_rewrite = header: the message's From: becomes the account's mailbox and the original
 * From: is kept as Reply-To (unless the message has one), so replies still reach the person.
 * Pure: body lines in (decoded, no terminators), lines out through a callback. */
#ifndef SOP_HEADER_REWRITE_H
#define SOP_HEADER_REWRITE_H

#include <stddef.h>

/* A header section larger than this cannot be rewritten: the message is refused. */
#define HEADER_REWRITE_MAX (256 * 1024)

typedef void (*header_rewrite_emit_cb)(void *arg, const char *line, size_t len);

struct header_rewrite;

/* mailbox is copied. */
struct header_rewrite *header_rewrite_new(const char *mailbox, header_rewrite_emit_cb emit,
                                          void *arg);
void header_rewrite_free(struct header_rewrite *h);
/* Start a new message. */
void header_rewrite_reset(struct header_rewrite *h);
/* One line of the message. Header lines are held until the header section ends (blank line, or
 * a line that is not a header); body lines pass straight through. 0 ok; -1 when the header
 * section is larger than HEADER_REWRITE_MAX (then nothing more is emitted for this message). */
int header_rewrite_line(struct header_rewrite *h, const char *line, size_t len);
/* End of the message: emit headers still held (a message with no body). */
void header_rewrite_finish(struct header_rewrite *h);

#endif
