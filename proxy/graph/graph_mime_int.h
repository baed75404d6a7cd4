/* graph_mime's inside, shared by its files (graph_mime.c: opening, the submitted copy's base64;
 * graph_mime_rcpt.c: the recipient and From: rewrite; graph_mime_split.c: what goes whole, what
 * is split off, the attachments' bytes). Not for other modules. */
#ifndef SOP_GRAPH_MIME_INT_H
#define SOP_GRAPH_MIME_INT_H

#include <gmime/gmime.h>

#include "proxy/graph/graph_mime.h"

/* An attachment split off: its public description and the part it came from (a reference). */
struct gm_att {
    struct graph_mime_att pub;
    GMimePart *part;
    char *name, *content_type, *content_id; /* g_malloc'ed, what pub points at */
};

struct graph_mime {
    GMimeStream *src;        /* the message's bytes: [0, len) of the file, or a copy in memory */
    GMimeMessage *msg;       /* parsed in persist-stream mode: parts are offsets into src */
    GMimeFormatOptions *fmt; /* CRLF line ends, as mail is sent */
    size_t request_max;
    unsigned nfields; /* header fields GMime's parser met (all parts) */
    int refused;
    char refusal[160];
    unsigned dropped, bcc_added;

    struct gm_att *att;
    size_t natt;

    /* the submitted copy, serialised (at most request_max / 4 * 3 bytes), and where the base64
     * reader is in it */
    GByteArray *body;
    GMimeStream *body_stream; /* owns body */
    size_t body_pos;
    char pend[4100]; /* base64 made but not yet read */
    size_t pend_len, pend_off;

    /* the attachment reader: one decoding stream, for attachment rd_idx, at decoded offset
     * rd_pos; a read before rd_pos (or of another attachment) starts it again */
    GMimeStream *rd;
    size_t rd_idx;
    uint64_t rd_pos;
    char *scratch;
};

/* What GMime may hold of one message: its parser keeps every header field and every part as
 * objects (about 500 bytes a field, 1.3 KB a part: 10 MB of "a:b" lines would take 1 GB), so a
 * message with more of either is refused before it is held. Far above a real message's. */
#define GM_MAX_FIELDS 10000u
#define GM_MAX_BOUNDARY_LINES 10000u

/* The bytes obj takes when written as mail (CRLF), counted in a null stream; -1 when a read of
 * the message failed. */
int64_t gm_count(const struct graph_mime *m, GMimeObject *obj);

/* To/Cc filtered to the envelope, the rest in Bcc: (graph_mime.h). 0; -1 with err. */
int gm_rewrite_rcpts(struct graph_mime *m, const struct graph_mime_opts *o, char *err,
                     size_t errlen);
/* sender_rewrite = header (docs/header-rewrite.md): From: <mailbox>, the original in Reply-To:.
 * 0; -1 with err. */
int gm_rewrite_from(struct graph_mime *m, const char *mailbox, char *err, size_t errlen);

/* Decide whole or draft + attachments, splitting off parts as needed; sets refused/refusal when
 * it can never fit. 0; -1 with err (a read failed, out of memory). */
int gm_split(struct graph_mime *m, char *err, size_t errlen);
void gm_atts_free(struct graph_mime *m);

#endif
