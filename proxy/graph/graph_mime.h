/* A stored message made ready for Microsoft Graph (docs/graph.md), with GMime: Graph takes the
 * recipients from the MIME headers, and one request carries at most 4 MB.
 *
 * Recipients: the submitted copy's To, Cc and Bcc name exactly the envelope's recipients (what
 * the device gave in RCPT, in the envelope's order, compared case-insensitively): addresses of
 * To/Cc that are not envelope recipients are removed from those headers (Graph would send to
 * them), envelope recipients that are in neither To nor Cc are put in a Bcc: header (any Bcc:
 * the device wrote is replaced). Nothing else of the message changes, except From: with
 * sender_rewrite = header (the mailbox, the original kept as Reply-To:, as for SMTP).
 *
 * Size: when the whole submitted copy, in base64, fits in one request (GRAPH_MIME_REQUEST_MAX),
 * it is sent whole (sendMail). Otherwise the largest attachments are split off until the rest
 * fits: the rest becomes a draft, and each split-off attachment is uploaded on its own
 * (createUploadSession), its decoded bytes read in chunks. Memory stays bounded whatever the
 * message size: the parser keeps only offsets into the file, and reads are streamed.
 *
 * Not thread-safe (GMime's parser state); used on the event loop. */
#ifndef SOP_GRAPH_MIME_H
#define SOP_GRAPH_MIME_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* One request's body limit at Graph (4 MB), and what the base64 of a whole message (or a draft)
 * may take of it. */
#define GRAPH_MIME_REQUEST_MAX (4u * 1024u * 1024u)

struct graph_mime;

struct graph_mime_opts {
    const char *const *rcpts; /* the envelope recipients (at least one) */
    size_t nrcpts;
    const char *from_rewrite; /* sender_rewrite = header: the mailbox; NULL: From: unchanged */
    /* the most base64 one request may carry; 0: GRAPH_MIME_REQUEST_MAX (tests set less) */
    size_t request_max;
};

/* An attachment split off for its own upload. */
struct graph_mime_att {
    const char *name;         /* file name (a made-up "attachment-N" when the part has none) */
    const char *content_type; /* "application/pdf" */
    const char *content_id;   /* without <>; NULL when none */
    int is_inline;            /* Content-Disposition: inline */
    uint64_t size;            /* decoded bytes: what is uploaded */
};

/* Parse the message in fd (a regular file: the spool's body file), bytes [0, len). fd is not
 * taken (the file is reopened through /proc/self/fd: its own offset). NULL with err when it cannot
 * be used: not MIME at all is fine (a text message is one part), so only an unreadable file, no
 * recipient left, or out of memory. */
struct graph_mime *graph_mime_open_fd(int fd, uint64_t len, const struct graph_mime_opts *o,
                                      char *err, size_t errlen);
/* The same for a message in memory (copied), as `test` has it. */
struct graph_mime *graph_mime_open_mem(const void *buf, size_t len, const struct graph_mime_opts *o,
                                       char *err, size_t errlen);
void graph_mime_free(struct graph_mime *m);

/* NULL when the message can be sent; else the reply that refuses it for good, e.g. "552 5.3.4
 * Message too large for Microsoft Graph: its text without attachments passes 4 MB" (a part too
 * large to leave in the draft that is not an attachment). */
const char *graph_mime_refusal(const struct graph_mime *m);

/* How many attachments were split off: 0 means one sendMail of the whole message. */
size_t graph_mime_natt(const struct graph_mime *m);
const struct graph_mime_att *graph_mime_att(const struct graph_mime *m, size_t i);

/* The submitted copy (the whole message, or the draft without the split-off attachments),
 * base64-encoded with no line breaks, as sendMail and "create message" take it. Its length,
 * then its bytes, from the start after graph_mime_body_rewind. read: > 0 bytes; 0 the end; -1
 * with err. */
uint64_t graph_mime_body_b64_size(const struct graph_mime *m);
void graph_mime_body_rewind(struct graph_mime *m);
ssize_t graph_mime_body_read(struct graph_mime *m, void *buf, size_t cap, char *err, size_t errlen);

/* Attachment i's decoded bytes [off, off + cap): > 0 bytes; 0 past the end; -1 with err. Any
 * order of offsets (a retried chunk re-reads). */
ssize_t graph_mime_att_read(struct graph_mime *m, size_t i, uint64_t off, void *buf, size_t cap,
                            char *err, size_t errlen);

/* For the log: how many header recipients were dropped (not in the envelope), how many
 * envelope recipients went into Bcc:. */
void graph_mime_rcpt_stats(const struct graph_mime *m, unsigned *dropped, unsigned *bcc_added);

#endif
