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

/* A header field's first line ("Name: value") or a continuation line (starts with SP/HTAB). */
static int is_header_line(const char *line, size_t len)
{
    if (len && (line[0] == ' ' || line[0] == '\t'))
        return 1;
    const char *colon = memchr(line, ':', len);
    if (!colon || colon == line)
        return 0;
    for (const char *c = line; c < colon; c++)
        if (*c <= 0x20 || *c >= 0x7f)
            return 0;
    return 1;
}

static int field_is(const char *line, size_t len, const char *name)
{
    size_t n = strlen(name);
    return len > n && strncasecmp(line, name, n) == 0 && line[n] == ':';
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

/* Emit the held section with every From: replaced; the first original From: becomes Reply-To
 * unless the message has a Reply-To of its own. */
static void flush(struct header_rewrite *h)
{
    if (h->len == 0) { /* nothing held (buf may still be NULL: no arithmetic on it) */
        h->in_headers = 0;
        return;
    }
    const char *end = h->buf + h->len;
    int has_reply_to = 0, reply_to_done = 0;
    size_t n;
    for (const char *q = h->buf; q < end;) {
        const char *next = next_line(q, end, &n);
        if (field_is(q, n, "Reply-To"))
            has_reply_to = 1;
        q = next;
    }
    const char *p = h->buf;
    while (p < end) {
        /* one field: its first line and the continuation lines after it */
        const char *field = p;
        size_t first_len;
        const char *fend = next_line(p, end, &first_len);
        while (fend < end && (*fend == ' ' || *fend == '\t'))
            fend = next_line(fend, end, &n);
        if (!field_is(field, first_len, "From")) {
            emit_field(h, field, fend);
            p = fend;
            continue;
        }
        char line[SMTP_TEXT_LINE_MAX];
        /* cut to the 998 bytes a line may hold (a mailbox longer than any address could be) */
        int w = snprintf(line, sizeof(line), "From: <%s>", h->mailbox);
        h->emit(h->arg, line,
                (size_t)w < SMTP_TEXT_LINE_MAX - 2 ? (size_t)w : SMTP_TEXT_LINE_MAX - 2);
        if (!has_reply_to && !reply_to_done) {
            /* "Reply-To:" + the original value, continuation lines kept as they were. A From:
             * line near the 998-byte limit would overflow with the longer name: fold it. The
             * value is copied byte for byte (a NUL in it must not cut it short). */
            const char *value = field + 5;
            size_t vlen = first_len - 5, o = 0;
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
            const char *cont = field + first_len + 1;
            emit_field(h, cont, fend);
            reply_to_done = 1;
        }
        p = fend;
    }
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
