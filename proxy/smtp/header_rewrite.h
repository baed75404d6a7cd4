/* sender_rewrite = header: the message's From: becomes the account's mailbox and the original
 * From: is kept as Reply-To (unless the message has one), so replies still reach the person.
 * Pure: body lines in (decoded, no terminators), lines out through a callback.
 *
 * The edge cases (docs/header-rewrite.md), decided so that the sender Exchange sees is always the
 * account's mailbox, and exactly once, and the message still goes out (a device cannot fix what
 * it sends; a refusal would only lose its mail):
 * - two or more From: fields (RFC 5322 allows exactly one; a reader might show either): one
 *   From: <mailbox> where the first was; the others are dropped; their values join the first's
 *   in the one Reply-To:, in order, each later one on a continuation line " ," + value.
 * - an empty From: (nothing but white space in the value, continuation lines included): still
 *   replaced by the mailbox; it adds nothing to Reply-To: (an empty Reply-To: is invalid), so a
 *   message whose only From: is empty gets no Reply-To:.
 * - a From: holding a NUL: replaced by the mailbox, its value not copied into Reply-To:. The
 *   daemon never gets here with one: the DATA decoder refuses any message with a NUL (554 5.6.0).
 * - a message with a Reply-To: of its own keeps it, and the From: values are dropped.
 * - a message with no From: at all gets From: <mailbox> first in its header section (RFC 5322
 *   requires one; Exchange and Graph send as the mailbox anyway), and no Reply-To: (there is no
 *   original). A message with no header line at all gets it too, before its first line.
 * - a field name followed by white space before the colon ("From : x", RFC 5322 4.5's obsolete
 *   syntax, which readers still take as a field) is a field like "From: x": its line does not end
 *   the header section, and a "From :" is rewritten as a "From:" is (so is "Reply-To :"). */
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
 * a line that is neither "Name:" / "Name :" nor a continuation); body lines pass straight through.
 * 0 ok; -1 when the header section is larger than HEADER_REWRITE_MAX (then nothing more is emitted
 * for this message). */
int header_rewrite_line(struct header_rewrite *h, const char *line, size_t len);
/* End of the message: emit headers still held (a message with no body). */
void header_rewrite_finish(struct header_rewrite *h);

#endif
