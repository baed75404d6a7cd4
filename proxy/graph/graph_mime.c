/* A stored message made ready for Microsoft Graph (graph_mime.h): opening and parsing with GMime,
 * the submitted copy's base64, the accessors. The recipient rewrite is graph_mime_rcpt.c, the
 * split into a draft and attachments graph_mime_split.c. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "proxy/graph/graph_mime_int.h"

static pthread_once_t gm_once = PTHREAD_ONCE_INIT;

static void gm_init(void)
{
    g_mime_init();
}

int64_t gm_count(const struct graph_mime *m, GMimeObject *obj)
{
    GMimeStream *null = g_mime_stream_null_new();
    ssize_t r = g_mime_object_write_to_stream(obj, m->fmt, null);
    int64_t n = (int64_t)GMIME_STREAM_NULL(null)->written;
    g_object_unref(null);
    return r < 0 ? -1 : n;
}

void graph_mime_free(struct graph_mime *m)
{
    if (!m)
        return;
    gm_atts_free(m);
    if (m->rd)
        g_object_unref(m->rd);
    if (m->body_stream)
        g_object_unref(m->body_stream);
    if (m->msg)
        g_object_unref(m->msg);
    if (m->src)
        g_object_unref(m->src);
    if (m->fmt)
        g_mime_format_options_free(m->fmt);
    free(m->scratch);
    free(m);
}

/* Each header field the parser reads (a regex that matches every name): past GM_MAX_FIELDS the
 * stream ends where the parser is, so it stops at once (what it has is dropped, refused). */
static void gm_field_seen(GMimeParser *p, const char *name, const char *value, gint64 offset,
                          gpointer arg)
{
    struct graph_mime *m = arg;
    (void)p;
    (void)name;
    (void)value;
    if (++m->nfields == GM_MAX_FIELDS + 1)
        g_mime_stream_set_bounds(m->src, m->src->bound_start,
                                 offset > m->src->bound_start ? offset : m->src->bound_start);
}

static GMimeMessage *gm_parse(struct graph_mime *m, GMimeStream *s)
{
    GMimeParser *p = g_mime_parser_new_with_stream(s);
    GMimeMessage *msg;
    /* persist: a part's content stays a substream of s (offsets), not a copy in memory */
    g_mime_parser_set_persist_stream(p, TRUE);
    g_mime_parser_set_header_regex(p, "^", gm_field_seen, m);
    msg = g_mime_parser_construct_message(p, NULL);
    g_object_unref(p);
    return msg;
}

/* Lines that begin with "--": every part of a multipart begins with one (its boundary), base64
 * never does. Counted before parsing, as a bound on the parts GMime would build. */
struct gm_dashes {
    uint64_t n;
    int state; /* 0: at a line's start, 1: after a '-' there, 2: inside a line */
};

static void gm_dashes_feed(struct gm_dashes *d, const unsigned char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '\n') {
            d->state = 0;
        } else if (d->state < 2 && p[i] == '-') {
            if (d->state == 1)
                d->n++;
            d->state++;
        } else if (d->state < 2) {
            d->state = 2;
        } else {
            const unsigned char *nl = memchr(p + i, '\n', len - i);
            if (!nl)
                return;
            i = (size_t)(nl - p) - 1; /* the '\n' next */
        }
    }
}

static void gm_refuse_complex(struct graph_mime *m, const char *what)
{
    m->refused = 1;
    snprintf(m->refusal, sizeof(m->refusal),
             "552 5.3.4 Message too complex for Microsoft Graph: more than %u %s",
             what[0] == 'h' ? GM_MAX_FIELDS : GM_MAX_BOUNDARY_LINES, what);
}

/* A header name as RFC 5322 has it: printable ASCII but the colon, at least one. GMime keeps
 * lines like ": x" as a header with an empty name; written out, another parser would end the
 * header section there (and the Bcc: after it would be body). */
static int gm_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    while (n > 0 && (name[n - 1] == ' ' || name[n - 1] == '\t'))
        n--; /* "Subject :" (obsolete, still read) */
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] <= 0x20 || (unsigned char)name[i] >= 0x7f || name[i] == ':')
            return 0;
    return 1;
}

/* A raw value that every reader splits into the same lines: each line end is a CRLF or LF
 * followed by a space or tab (a folded line) or the value's end, no lone CR, and it ends with a
 * line end (a message that stops inside its header section leaves the last one without: a
 * header added after it would run on in its value). NULL when raw is already so. */
static char *gm_fix_value(const char *raw)
{
    size_t n = strlen(raw);
    int ok = n > 0 && raw[n - 1] == '\n';
    GString *v;
    for (size_t i = 0; ok && i < n; i++)
        if ((raw[i] == '\r' && raw[i + 1] != '\n') ||
            (raw[i] == '\n' && i + 1 < n && raw[i + 1] != ' ' && raw[i + 1] != '\t'))
            ok = 0;
    if (ok)
        return NULL;
    v = g_string_sized_new(n + 2);
    for (size_t i = 0; i < n; i++) {
        if (raw[i] == '\r' && raw[i + 1] == '\n')
            continue; /* the LF writes the line end */
        if (raw[i] == '\r') {
            g_string_append_c(v, ' ');
        } else if (raw[i] == '\n') {
            g_string_append_c(v, '\n');
            if (i + 1 < n && raw[i + 1] != ' ' && raw[i + 1] != '\t')
                g_string_append_c(v, ' ');
        } else {
            g_string_append_c(v, raw[i]);
        }
    }
    if (v->len == 0 || v->str[v->len - 1] != '\n')
        g_string_append_c(v, '\n');
    return g_string_free(v, FALSE);
}

/* The header section as every reader will see it (the message's and its top part's): fields
 * with an unusable name go, values get sane line ends. */
static void gm_sane_headers(GMimeObject *o)
{
    GMimeHeaderList *hl = o ? g_mime_object_get_header_list(o) : NULL;
    for (int i = hl ? g_mime_header_list_get_count(hl) - 1 : -1; i >= 0; i--) {
        GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
        const char *raw = g_mime_header_get_raw_value(h);
        char *v;
        if (!gm_name_ok(g_mime_header_get_raw_name(h))) {
            g_mime_header_list_remove_at(hl, i);
            continue;
        }
        v = gm_fix_value(raw ? raw : "");
        if (v) {
            g_mime_header_set_raw_value(h, v);
            g_free(v);
        }
    }
}

/* Serialise the submitted copy (it fits one request, so it is small) for the base64 reader. */
static int gm_serialise(struct graph_mime *m, char *err, size_t errlen)
{
    m->body_stream = g_mime_stream_mem_new();
    if (g_mime_object_write_to_stream(GMIME_OBJECT(m->msg), m->fmt, m->body_stream) < 0) {
        snprintf(err, errlen, "cannot read the message: %s", strerror(errno ? errno : EIO));
        return -1;
    }
    m->body = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(m->body_stream));
    return 0;
}

/* Takes src. */
static struct graph_mime *gm_open(GMimeStream *src, uint64_t dashes,
                                  const struct graph_mime_opts *o, char *err, size_t errlen)
{
    struct graph_mime *m;
    if (!o || !o->rcpts || o->nrcpts == 0) {
        snprintf(err, errlen, "no recipient");
        g_object_unref(src);
        return NULL;
    }
    m = calloc(1, sizeof(*m));
    if (!m) {
        snprintf(err, errlen, "out of memory");
        g_object_unref(src);
        return NULL;
    }
    m->src = src;
    m->request_max = o->request_max ? o->request_max : GRAPH_MIME_REQUEST_MAX;
    m->fmt = g_mime_format_options_new();
    g_mime_format_options_set_newline_format(m->fmt, GMIME_NEWLINE_FORMAT_DOS);

    if (dashes > GM_MAX_BOUNDARY_LINES) {
        gm_refuse_complex(m, "boundary lines");
        return m;
    }
    m->msg = gm_parse(m, src);
    if (m->nfields > GM_MAX_FIELDS) {
        gm_refuse_complex(m, "header fields");
        return m;
    }
    if (!m->msg) {
        /* No header section GMime takes (text from the first byte, or nothing at all): the
         * message is all body, after an empty header section. */
        GMimeStream *cat = g_mime_stream_cat_new();
        GMimeStream *blank = g_mime_stream_mem_new_with_buffer("\r\n", 2);
        g_mime_stream_reset(src);
        g_mime_stream_cat_add_source(GMIME_STREAM_CAT(cat), blank);
        g_mime_stream_cat_add_source(GMIME_STREAM_CAT(cat), src);
        g_object_unref(blank);
        g_object_unref(src);
        m->src = cat;
        m->msg = gm_parse(m, cat); /* all body: one part, no field */
    }
    if (!m->msg) {
        snprintf(err, errlen, "cannot parse the message");
        graph_mime_free(m);
        return NULL;
    }
    gm_sane_headers(GMIME_OBJECT(m->msg));
    gm_sane_headers(g_mime_message_get_mime_part(m->msg));
    if (gm_rewrite_rcpts(m, o, err, errlen) != 0 ||
        (o->from_rewrite && gm_rewrite_from(m, o->from_rewrite, err, errlen) != 0) ||
        gm_split(m, err, errlen) != 0 || (!m->refused && gm_serialise(m, err, errlen) != 0)) {
        graph_mime_free(m);
        return NULL;
    }
    return m;
}

struct graph_mime *graph_mime_open_fd(int fd, uint64_t len, const struct graph_mime_opts *o,
                                      char *err, size_t errlen)
{
    struct stat st;
    struct gm_dashes dashes = {0, 0};
    char path[64];
    int d;
    pthread_once(&gm_once, gm_init);
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "cannot read the message: %s", strerror(errno));
        return NULL;
    }
    if (!S_ISREG(st.st_mode) || len > (uint64_t)INT64_MAX || (uint64_t)st.st_size < len) {
        snprintf(err, errlen, "cannot read the message: not a regular file of %llu bytes",
                 (unsigned long long)len);
        return NULL;
    }
    for (uint64_t off = 0; off < len;) {
        unsigned char buf[65536];
        size_t want = len - off < sizeof(buf) ? (size_t)(len - off) : sizeof(buf);
        ssize_t r = pread(fd, buf, want, (off_t)off);
        if (r <= 0) {
            snprintf(err, errlen, "cannot read the message: %s", r < 0 ? strerror(errno) : "EOF");
            return NULL;
        }
        gm_dashes_feed(&dashes, buf, (size_t)r);
        off += (uint64_t)r;
    }
    /* Its own open file (same file, own offset): a dup would share the caller's offset, and
     * GMime seeks. A dup only where /proc is not there. */
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    d = open(path, O_RDONLY | O_CLOEXEC);
    if (d < 0)
        d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (d < 0) {
        snprintf(err, errlen, "cannot read the message: %s", strerror(errno));
        return NULL;
    }
    /* bounded: the spool's trailer after len is not the message's */
    return gm_open(g_mime_stream_fs_new_with_bounds(d, 0, (gint64)len), dashes.n, o, err, errlen);
}

struct graph_mime *graph_mime_open_mem(const void *buf, size_t len, const struct graph_mime_opts *o,
                                       char *err, size_t errlen)
{
    struct gm_dashes dashes = {0, 0};
    pthread_once(&gm_once, gm_init);
    gm_dashes_feed(&dashes, buf, len);
    return gm_open(g_mime_stream_mem_new_with_buffer(len ? buf : "", len), dashes.n, o, err,
                   errlen);
}

const char *graph_mime_refusal(const struct graph_mime *m)
{
    return m->refused ? m->refusal : NULL;
}

size_t graph_mime_natt(const struct graph_mime *m)
{
    return m->refused ? 0 : m->natt;
}

const struct graph_mime_att *graph_mime_att(const struct graph_mime *m, size_t i)
{
    return i < graph_mime_natt(m) ? &m->att[i].pub : NULL;
}

uint64_t graph_mime_body_b64_size(const struct graph_mime *m)
{
    return m->body ? ((uint64_t)m->body->len + 2) / 3 * 4 : 0;
}

void graph_mime_body_rewind(struct graph_mime *m)
{
    m->body_pos = 0;
    m->pend_len = m->pend_off = 0;
}

ssize_t graph_mime_body_read(struct graph_mime *m, void *buf, size_t cap, char *err, size_t errlen)
{
    size_t out = 0;
    if (!m->body) {
        snprintf(err, errlen, "the message is refused: %s", m->refusal);
        return -1;
    }
    if (cap > SSIZE_MAX)
        cap = SSIZE_MAX;
    while (out < cap) {
        size_t n;
        if (m->pend_off < m->pend_len) {
            n = m->pend_len - m->pend_off;
            if (n > cap - out)
                n = cap - out;
            memcpy((char *)buf + out, m->pend + m->pend_off, n);
            m->pend_off += n;
            out += n;
            continue;
        }
        if (m->body_pos >= m->body->len)
            break;
        /* 3072 bytes make 4096 characters (and EVP_EncodeBlock's NUL) */
        n = m->body->len - m->body_pos;
        if (n > 3072)
            n = 3072;
        m->pend_len =
            (size_t)EVP_EncodeBlock((unsigned char *)m->pend, m->body->data + m->body_pos, (int)n);
        m->pend_off = 0;
        m->body_pos += n;
    }
    return (ssize_t)out;
}

void graph_mime_rcpt_stats(const struct graph_mime *m, unsigned *dropped, unsigned *bcc_added)
{
    if (dropped)
        *dropped = m->dropped;
    if (bcc_added)
        *bcc_added = m->bcc_added;
}
