/* Whole or draft + attachments (graph_mime.h), and the split-off attachments' decoded bytes.
 *
 * Sizes are counted by writing into GMime's null stream, never into memory (a candidate's, and
 * a message far too large, estimated from their length in the file; what is sent is always
 * counted). When the whole submitted copy's base64 passes request_max, the attachments (a part with
 * a file name, with Content-Disposition: attachment, or with a Content-ID that is not a text body)
 * are taken out of the tree, the largest first, until the rest fits; a rest that still does not fit
 * is refused.
 *
 * An attachment's bytes are not copied anywhere: its decoded size is counted once, and reads
 * decode from its place in the message (a GMime filter stream over the part's content). Reads
 * in order (the upload's chunks) continue one decoder; a read before where the decoder is (a
 * retried chunk) starts it again from the part's start. That keeps memory and disk at nothing
 * whatever the size, at the cost of decoding again on a retry (about 0.3 s per 100 MB). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/graph/graph_mime_int.h"

#define GM_SCRATCH (64 * 1024)

struct gm_cand {
    GMimePart *part;
    GMimeMultipart *parent; /* NULL: the message's own part */
    uint64_t cost;          /* what taking it out saves, about */
};

struct gm_cands {
    struct gm_cand *v;
    size_t n, cap;
};

static uint64_t gm_b64(uint64_t n)
{
    return (n + 2) / 3 * 4;
}

static int gm_is_candidate(GMimeObject *o)
{
    GMimeContentDisposition *d;
    GMimeContentType *ct;
    if (!GMIME_IS_PART(o))
        return 0;
    if (g_mime_part_get_filename(GMIME_PART(o)))
        return 1;
    d = g_mime_object_get_content_disposition(o);
    if (d && g_mime_content_disposition_is_attachment(d))
        return 1;
    if (!g_mime_object_get_content_id(o))
        return 0;
    ct = g_mime_object_get_content_type(o);
    /* a Content-ID on an inline part (an image in HTML), but not on a text body */
    return (d && !g_ascii_strcasecmp(g_mime_content_disposition_get_disposition(d), "inline")) ||
           !ct || !g_mime_content_type_is_type(ct, "text", "*");
}

static int gm_cands_add(struct gm_cands *c, GMimePart *p, GMimeMultipart *parent)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        struct gm_cand *v = realloc(c->v, cap * sizeof(*v));
        if (!v)
            return -1;
        c->v = v;
        c->cap = cap;
    }
    c->v[c->n].part = p;
    c->v[c->n].parent = parent;
    c->v[c->n].cost = 0;
    c->n++;
    return 0;
}

/* The candidates under o (GMime's parser nests at most 1024 deep). Not into an embedded message
 * (its parts are its own) nor an encrypted multipart (opaque). */
static int gm_collect(struct gm_cands *c, GMimeObject *o, GMimeMultipart *parent)
{
    if (GMIME_IS_MULTIPART(o)) {
        GMimeMultipart *mp = GMIME_MULTIPART(o);
        int n = g_mime_multipart_get_count(mp);
        if (GMIME_IS_MULTIPART_ENCRYPTED(o))
            return 0;
        for (int i = 0; i < n; i++)
            if (gm_collect(c, g_mime_multipart_get_part(mp, i), mp) != 0)
                return -1;
        return 0;
    }
    if (gm_is_candidate(o))
        return gm_cands_add(c, GMIME_PART(o), parent);
    return 0;
}

/* What a part takes in the message, about: its header fields written out, and its content's
 * length where it is in the file (no pass over the content; the split checks the rest by a real
 * count). A content whose length is not known is counted. */
static int64_t gm_part_size(const struct graph_mime *m, GMimePart *p)
{
    GMimeDataWrapper *w = g_mime_part_get_content(p);
    GMimeStream *s = w ? g_mime_data_wrapper_get_stream(w) : NULL;
    gint64 len = s ? g_mime_stream_length(s) : -1;
    GMimeStream *null;
    ssize_t r;
    int64_t n;
    if (len < 0)
        return gm_count(m, GMIME_OBJECT(p));
    null = g_mime_stream_null_new();
    r = g_mime_header_list_write_to_stream(g_mime_object_get_header_list(GMIME_OBJECT(p)), m->fmt,
                                           null);
    n = (int64_t)GMIME_STREAM_NULL(null)->written;
    g_object_unref(null);
    return r < 0 ? -1 : n + 2 + len;
}

static int gm_cost_cmp(const void *a, const void *b)
{
    const struct gm_cand *x = a, *y = b;
    return x->cost < y->cost ? 1 : x->cost > y->cost ? -1 : 0;
}

/* A printable UTF-8 string of at most max bytes (names come from the device). */
static char *gm_clean(const char *s, size_t max)
{
    char *v = g_utf8_make_valid(s, -1), *p;
    for (p = v; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '_';
    if (strlen(v) > max) {
        char *end = g_utf8_find_prev_char(v, v + max + 1);
        *(end ? end : v) = '\0';
    }
    return v;
}

/* The decoded size: the content written through its transfer decoding into a null stream. */
static int64_t gm_decoded_size(GMimePart *p)
{
    GMimeDataWrapper *w = g_mime_part_get_content(p);
    GMimeStream *null;
    ssize_t r;
    int64_t n;
    if (!w)
        return 0;
    null = g_mime_stream_null_new();
    r = g_mime_data_wrapper_write_to_stream(w, null);
    n = (int64_t)GMIME_STREAM_NULL(null)->written;
    g_object_unref(null);
    return r < 0 ? -1 : n;
}

static int gm_att_add(struct graph_mime *m, GMimePart *p, char *err, size_t errlen)
{
    struct gm_att *a = &m->att[m->natt];
    GMimeObject *o = GMIME_OBJECT(p);
    GMimeContentDisposition *d = g_mime_object_get_content_disposition(o);
    const char *fn = g_mime_part_get_filename(p), *cid = g_mime_object_get_content_id(o);
    char *ct = g_mime_content_type_get_mime_type(g_mime_object_get_content_type(o));
    int64_t size = gm_decoded_size(p);

    if (size < 0) {
        g_free(ct);
        snprintf(err, errlen, "cannot read the message's attachment %zu", m->natt + 1);
        return -1;
    }
    memset(a, 0, sizeof(*a));
    g_object_ref(p);
    a->part = p;
    if (fn && *fn)
        a->name = gm_clean(fn, 255);
    else
        a->name = g_strdup_printf("attachment-%zu", m->natt + 1);
    a->content_type = gm_clean(ct ? ct : "application/octet-stream", 255);
    g_free(ct);
    a->content_id = cid && *cid ? gm_clean(cid, 255) : NULL;
    a->pub.name = a->name;
    a->pub.content_type = a->content_type;
    a->pub.content_id = a->content_id;
    a->pub.is_inline =
        d ? !g_ascii_strcasecmp(g_mime_content_disposition_get_disposition(d), "inline")
          : a->content_id != NULL;
    a->pub.size = (uint64_t)size;
    m->natt++;
    return 0;
}

/* Take c's part out of the message: out of its multipart, or, the message's own part, replaced
 * by an empty text. */
static void gm_take_out(struct graph_mime *m, const struct gm_cand *c)
{
    if (c->parent) {
        g_mime_multipart_remove(c->parent, GMIME_OBJECT(c->part));
    } else {
        GMimeTextPart *t = g_mime_text_part_new_with_subtype("plain");
        g_mime_text_part_set_text(t, "");
        g_mime_message_set_mime_part(m->msg, GMIME_OBJECT(t));
        g_object_unref(t);
    }
}

static void gm_refuse(struct graph_mime *m)
{
    m->refused = 1;
    if (m->request_max % (1024 * 1024) == 0)
        snprintf(m->refusal, sizeof(m->refusal),
                 "552 5.3.4 Message too large for Microsoft Graph: its text without attachments "
                 "passes %zu MB",
                 m->request_max / (1024 * 1024));
    else
        snprintf(m->refusal, sizeof(m->refusal),
                 "552 5.3.4 Message too large for Microsoft Graph: its text without attachments "
                 "passes %zu bytes",
                 m->request_max);
}

int gm_split(struct graph_mime *m, char *err, size_t errlen)
{
    struct gm_cands c = {0};
    gint64 len = g_mime_stream_length(m->src);
    int64_t total;
    uint64_t est;
    int rc = -1;

    /* Written out, the message takes about its length in the file (the rewrite changes a few
     * header fields): one far too large for a request is not counted whole, a pass saved. */
    if (len > 0 && gm_b64((uint64_t)len) / 2 > m->request_max)
        total = len;
    else
        total = gm_count(m, GMIME_OBJECT(m->msg));
    if (total < 0)
        goto read_failed;
    if (gm_b64((uint64_t)total) <= m->request_max)
        return 0;
    if (gm_collect(&c, g_mime_message_get_mime_part(m->msg), NULL) != 0)
        goto oom;
    for (size_t i = 0; i < c.n; i++) {
        int64_t n = gm_part_size(m, c.v[i].part);
        const char *b = c.v[i].parent ? g_mime_multipart_get_boundary(c.v[i].parent) : NULL;
        if (n < 0)
            goto read_failed;
        c.v[i].cost = (uint64_t)n + (b ? strlen(b) + 6 : 0); /* CRLF "--" boundary CRLF */
    }
    if (c.n)
        qsort(c.v, c.n, sizeof(*c.v), gm_cost_cmp);
    m->att = calloc(c.n ? c.n : 1, sizeof(*m->att));
    if (!m->att)
        goto oom;
    est = (uint64_t)total;
    for (size_t i = 0; i < c.n; i++) {
        if (gm_att_add(m, c.v[i].part, err, errlen) != 0)
            goto out;
        gm_take_out(m, &c.v[i]);
        est = est > c.v[i].cost ? est - c.v[i].cost : 0;
        if (gm_b64(est) > m->request_max)
            continue;
        /* the estimate fits: count what is left for real */
        total = gm_count(m, GMIME_OBJECT(m->msg));
        if (total < 0)
            goto read_failed;
        est = (uint64_t)total;
        if (gm_b64(est) <= m->request_max) {
            rc = 0;
            goto out;
        }
    }
    gm_refuse(m);
    rc = 0;
    goto out;
read_failed:
    snprintf(err, errlen, "cannot read the message");
    goto out;
oom:
    snprintf(err, errlen, "out of memory");
out:
    free(c.v);
    return rc;
}

void gm_atts_free(struct graph_mime *m)
{
    for (size_t i = 0; i < m->natt; i++) {
        g_object_unref(m->att[i].part);
        g_free(m->att[i].name);
        g_free(m->att[i].content_type);
        g_free(m->att[i].content_id);
    }
    free(m->att);
    m->att = NULL;
    m->natt = 0;
}

/* A decoder at the start of attachment i. */
static GMimeStream *gm_decoder(struct gm_att *a)
{
    GMimeDataWrapper *w = g_mime_part_get_content(a->part);
    GMimeStream *s, *f;
    GMimeContentEncoding enc;
    if (!w || !(s = g_mime_data_wrapper_get_stream(w)))
        return NULL;
    g_mime_stream_reset(s);
    f = g_mime_stream_filter_new(s);
    enc = g_mime_data_wrapper_get_encoding(w);
    if (enc == GMIME_CONTENT_ENCODING_BASE64 || enc == GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE ||
        enc == GMIME_CONTENT_ENCODING_UUENCODE) {
        GMimeFilter *dec = g_mime_filter_basic_new(enc, FALSE);
        g_mime_stream_filter_add(GMIME_STREAM_FILTER(f), dec);
        g_object_unref(dec);
    }
    return f;
}

ssize_t graph_mime_att_read(struct graph_mime *m, size_t i, uint64_t off, void *buf, size_t cap,
                            char *err, size_t errlen)
{
    struct gm_att *a;
    size_t want, got = 0;
    if (i >= graph_mime_natt(m)) {
        snprintf(err, errlen, "no attachment %zu", i);
        return -1;
    }
    a = &m->att[i];
    if (off >= a->pub.size || cap == 0)
        return 0;
    if (!m->scratch && !(m->scratch = malloc(GM_SCRATCH))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (!m->rd || m->rd_idx != i || off < m->rd_pos) {
        if (m->rd)
            g_object_unref(m->rd);
        m->rd = gm_decoder(a);
        m->rd_idx = i;
        m->rd_pos = 0;
        if (!m->rd) {
            snprintf(err, errlen, "attachment %zu has no content", i);
            return -1;
        }
    }
    while (m->rd_pos < off) { /* skip to off */
        uint64_t left = off - m->rd_pos;
        ssize_t r = g_mime_stream_read(m->rd, m->scratch, left < GM_SCRATCH ? left : GM_SCRATCH);
        if (r <= 0)
            goto short_read;
        m->rd_pos += (uint64_t)r;
    }
    want = a->pub.size - off < cap ? (size_t)(a->pub.size - off) : cap;
    if (want > SSIZE_MAX)
        want = SSIZE_MAX;
    while (got < want) {
        ssize_t r = g_mime_stream_read(m->rd, (char *)buf + got, want - got);
        if (r < 0)
            goto short_read;
        if (r == 0)
            break;
        got += (size_t)r;
        m->rd_pos += (uint64_t)r;
    }
    if (got == 0)
        goto short_read;
    return (ssize_t)got;
short_read:
    g_object_unref(m->rd);
    m->rd = NULL;
    snprintf(err, errlen, "cannot read attachment %zu at %llu", i, (unsigned long long)off);
    return -1;
}
