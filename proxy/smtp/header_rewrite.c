#include "proxy/smtp/header_rewrite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/smtp/smtp_data.h"

struct header_rewrite {
    char *mailbox;
    header_rewrite_emit_cb emit;
    void *arg;
    int in_headers;
    int failed;
    char *buf; /* held header lines, each followed by '\n' (decoded lines never hold LF) */
    size_t len, cap;
};

struct header_rewrite *header_rewrite_new(const char *mailbox, header_rewrite_emit_cb emit,
                                          void *arg)
{
    struct header_rewrite *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->mailbox = strdup(mailbox);
    if (!h->mailbox) {
        free(h);
        return NULL;
    }
    h->emit = emit;
    h->arg = arg;
    h->in_headers = 1;
    return h;
}

void header_rewrite_free(struct header_rewrite *h)
{
    if (!h)
        return;
    free(h->mailbox);
    free(h->buf);
    free(h);
}

void header_rewrite_reset(struct header_rewrite *h)
{
    h->in_headers = 1;
    h->failed = 0;
    h->len = 0;
}

/* The bytes at the start of line that a field name may hold (printable ASCII but the colon). A
 * field's first line is such a name (at least one byte), any SP/HTAB (RFC 5322 4.5's obsolete
 * "From : x", which readers still take as a field), then the colon. */
static size_t field_name_len(const char *line, size_t len)
{
    size_t n = 0;
    while (n < len && line[n] > 0x20 && line[n] < 0x7f && line[n] != ':')
        n++;
    return n;
}

/* Where the value of the field that starts line begins (just after its colon); 0 when line is
 * no field's first line. */
static size_t value_offset(const char *line, size_t len)
{
    size_t n = field_name_len(line, len), i = n;
    if (n == 0)
        return 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    return i < len && line[i] == ':' ? i + 1 : 0;
}

/* A header field's first line ("Name: value", "Name : value") or a continuation line (starts
 * with SP/HTAB). */
static int is_header_line(const char *line, size_t len)
{
    if (len && (line[0] == ' ' || line[0] == '\t'))
        return 1;
    return value_offset(line, len) != 0;
}

/* The offset of the value when line is the first line of a field called name (any case, white
 * space allowed before the colon); else 0. */
static size_t field_is(const char *line, size_t len, const char *name)
{
    size_t n = strlen(name);
    if (field_name_len(line, len) != n || strncasecmp(line, name, n) != 0)
        return 0;
    return value_offset(line, len);
}

static const char *next_line(const char *p, const char *end, size_t *len)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    *len = (size_t)(nl - p);
    return nl + 1;
}

static void emit_field(struct header_rewrite *h, const char *p, const char *end)
{
    while (p < end) {
        size_t n;
        const char *next = next_line(p, end, &n);
        h->emit(h->arg, p, n);
        p = next;
    }
}

/* A From: field (its value at field + voff, continuation lines up to fend) whose value can go
 * into Reply-To: something other than white space, and no NUL (the DATA decoder refuses a NUL
 * before it gets here; this module does not rely on it). */
static int from_usable(const char *field, size_t voff, const char *fend)
{
    int text = 0;
    for (const char *c = field + voff; c < fend; c++) {
        if (*c == '\0')
            return 0;
        if (*c != ' ' && *c != '\t' && *c != '\n')
            text = 1;
    }
    return text;
}

/* The first usable From: value as "Reply-To:" + the value, continuation lines kept as they were.
 * A From: line near the 998-byte limit would overflow with the longer name: fold it. The value is
 * copied byte for byte. */
static void emit_reply_to_first(struct header_rewrite *h, const char *field, size_t voff,
                                size_t first_len, const char *fend)
{
    char line[SMTP_TEXT_LINE_MAX];
    const char *value = field + voff;
    size_t vlen = first_len - voff, o = 0;
    if (9 + vlen <= SMTP_TEXT_LINE_MAX - 2) {
        memcpy(line, "Reply-To:", 9);
        memcpy(line + 9, value, vlen);
        h->emit(h->arg, line, 9 + vlen);
    } else {
        h->emit(h->arg, "Reply-To:", 9);
        if (value[0] != ' ' && value[0] != '\t')
            line[o++] = ' ';
        if (vlen > SMTP_TEXT_LINE_MAX - 2 - o) /* longer than any decoded line */
            vlen = SMTP_TEXT_LINE_MAX - 2 - o;
        memcpy(line + o, value, vlen);
        h->emit(h->arg, line, o + vlen);
    }
    emit_field(h, field + first_len + 1, fend);
}

/* A later usable From: value: one more address of the same Reply-To:, on a continuation line
 * " ," + the value (5 + 993 bytes at most in, 2 + 993 out: it fits), its own continuation lines
 * kept. */
static void emit_reply_to_more(struct header_rewrite *h, const char *field, size_t voff,
                               size_t first_len, const char *fend)
{
    char line[SMTP_TEXT_LINE_MAX];
    size_t vlen = first_len - voff;
    if (vlen > SMTP_TEXT_LINE_MAX - 4)
        vlen = SMTP_TEXT_LINE_MAX - 4;
    line[0] = ' ';
    line[1] = ',';
    memcpy(line + 2, field + voff, vlen);
    h->emit(h->arg, line, 2 + vlen);
    emit_field(h, field + first_len + 1, fend);
}

/* The end of the field that starts at p (its continuation lines included); *first_len the length
 * of its first line. */
static const char *field_end(const char *p, const char *end, size_t *first_len)
{
    size_t n;
    const char *fend = next_line(p, end, first_len);
    while (fend < end && (*fend == ' ' || *fend == '\t'))
        fend = next_line(fend, end, &n);
    return fend;
}

static void emit_from(struct header_rewrite *h)
{
    char line[SMTP_TEXT_LINE_MAX];
    /* cut to the 998 bytes a line may hold (a mailbox longer than any address could be) */
    int w = snprintf(line, sizeof(line), "From: <%s>", h->mailbox);
    h->emit(h->arg, line, (size_t)w < SMTP_TEXT_LINE_MAX - 2 ? (size_t)w : SMTP_TEXT_LINE_MAX - 2);
}

/* Emit the held section as header_rewrite.h decides: exactly one From: (the mailbox), where the
 * first From: was, or first when there was none; unless the message has a Reply-To: of its own,
 * one Reply-To: after it holding every From: value that is usable, in order; the other From:
 * fields are dropped. */
static void flush(struct header_rewrite *h)
{
    if (h->len == 0) { /* nothing held (buf may still be NULL: no arithmetic on it) */
        emit_from(h);
        h->in_headers = 0;
        return;
    }
    const char *end = h->buf + h->len;
    int has_reply_to = 0, has_from = 0, from_done = 0;
    size_t n;
    for (const char *q = h->buf; q < end;) {
        const char *next = next_line(q, end, &n);
        if (field_is(q, n, "Reply-To"))
            has_reply_to = 1;
        if (field_is(q, n, "From"))
            has_from = 1;
        q = next;
    }
    /* No From: at all: RFC 5322 requires one, so the mailbox goes first (there is no original
     * to keep as Reply-To:). First means before the first field: continuation lines with no
     * field before them (invalid, kept as they are) would otherwise fold into it. */
    int from_missing = !has_from;
    const char *p = h->buf;
    while (p < end) {
        /* one field: its first line and the continuation lines after it */
        const char *field = p;
        size_t first_len;
        const char *fend = field_end(p, end, &first_len);
        p = fend;
        if (from_missing && *field != ' ' && *field != '\t') {
            emit_from(h);
            from_missing = 0;
        }
        if (!field_is(field, first_len, "From")) {
            emit_field(h, field, fend);
            continue;
        }
        if (from_done)
            continue; /* a second From: (RFC 5322 allows one): its value is in the Reply-To: */
        from_done = 1;
        emit_from(h);
        if (has_reply_to)
            continue;
        int first = 1;
        for (const char *f = field; f < end;) {
            size_t flen;
            const char *fe = field_end(f, end, &flen);
            size_t voff = field_is(f, flen, "From");
            if (voff && from_usable(f, voff, fe)) {
                if (first)
                    emit_reply_to_first(h, f, voff, flen, fe);
                else
                    emit_reply_to_more(h, f, voff, flen, fe);
                first = 0;
            }
            f = fe;
        }
    }
    if (from_missing) /* only continuation lines were held */
        emit_from(h);
    h->len = 0;
    h->in_headers = 0;
}

static int hold(struct header_rewrite *h, const char *line, size_t len)
{
    if (h->len + len + 1 > HEADER_REWRITE_MAX)
        return -1;
    if (h->len + len + 1 > h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 8192;
        while (cap < h->len + len + 1)
            cap *= 2;
        char *b = realloc(h->buf, cap);
        if (!b)
            return -1;
        h->buf = b;
        h->cap = cap;
    }
    memcpy(h->buf + h->len, line, len);
    h->buf[h->len + len] = '\n';
    h->len += len + 1;
    return 0;
}

int header_rewrite_line(struct header_rewrite *h, const char *line, size_t len)
{
    if (h->failed)
        return -1;
    if (h->in_headers) {
        if (len > 0 && is_header_line(line, len)) {
            if (hold(h, line, len) != 0) {
                h->failed = 1;
                h->len = 0;
                return -1;
            }
            return 0;
        }
        /* the blank line, or a body line with no blank line before it */
        flush(h);
    }
    h->emit(h->arg, line, len);
    return 0;
}

void header_rewrite_finish(struct header_rewrite *h)
{
    if (h->in_headers && !h->failed)
        flush(h);
}
