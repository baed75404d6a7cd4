/* The DSN's output buffer and sanitizers (proxy/smtp/dsn_int.h): every byte of hostile text passes
 * through here, so nothing a device or the upstream sends can end a line, a field or a part. */
#include <stdlib.h>
#include <string.h>

#include "proxy/smtp/dsn.h"
#include "proxy/smtp/dsn_int.h"

#define DSN_FOLD_SOFT 78 /* RFC 5322 2.1.1's SHOULD */
#define DSN_FOLD_HARD (DSN_LINE_MAX - 8)

void dsn_buf_add(struct dsn_buf *b, const char *s, size_t n)
{
    if (b->failed || n == 0)
        return;
    if (!b->p || n >= b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 4096;
        char *p;
        while (cap - b->len <= n) {
            if (cap > ((size_t)-1) / 2) {
                b->failed = 1;
                return;
            }
            cap *= 2;
        }
        p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void dsn_buf_str(struct dsn_buf *b, const char *s)
{
    dsn_buf_add(b, s, strlen(s));
}

void dsn_buf_free(struct dsn_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

static int dsn_printable(unsigned char c)
{
    return c >= 0x20 && c <= 0x7e;
}

void dsn_buf_safe(struct dsn_buf *b, const char *s, size_t max)
{
    size_t i;
    if (!s)
        return;
    for (i = 0; s[i] && !b->failed; i++) {
        char c = dsn_printable((unsigned char)s[i]) ? s[i] : '?';
        if (i == max) {
            dsn_buf_str(b, "...");
            return;
        }
        dsn_buf_add(b, &c, 1);
    }
}

/* value made safe, runs of spaces collapsed, no leading or trailing space: so a fold never
 * leaves a line of only white space. */
static void dsn_clean(struct dsn_buf *v, const char *value, size_t max)
{
    struct dsn_buf raw = {0};
    size_t i;
    dsn_buf_safe(&raw, value, max);
    if (raw.failed) {
        v->failed = 1;
        dsn_buf_free(&raw);
        return;
    }
    for (i = 0; i < raw.len; i++) {
        if (raw.p[i] == ' ' && (v->len == 0 || v->p[v->len - 1] == ' '))
            continue;
        dsn_buf_add(v, raw.p + i, 1);
    }
    while (v->len > 0 && v->p[v->len - 1] == ' ')
        v->p[--v->len] = '\0';
    dsn_buf_free(&raw);
}

void dsn_buf_field(struct dsn_buf *b, const char *name, const char *value, size_t max,
                   const char *indent)
{
    struct dsn_buf v = {0};
    int header = strcmp(indent, " ") == 0;
    size_t pos = 0, col;
    dsn_clean(&v, value, max);
    if (v.failed) {
        b->failed = 1;
        dsn_buf_free(&v);
        return;
    }
    dsn_buf_str(b, name);
    col = strlen(name);
    if (header) {
        dsn_buf_str(b, ": ");
        col += 2;
    }
    while (pos < v.len) {
        size_t rest = v.len - pos, soft, hard, k, brk = 0;
        soft = col < DSN_FOLD_SOFT ? DSN_FOLD_SOFT - col : 1;
        hard = col < DSN_FOLD_HARD ? DSN_FOLD_HARD - col : 1;
        if (rest <= soft) {
            dsn_buf_add(b, v.p + pos, rest);
            break;
        }
        /* the last space within the soft limit, else the first within the hard one */
        for (k = pos + soft; k > pos; k--)
            if (v.p[k] == ' ') {
                brk = k;
                break;
            }
        for (k = pos + soft + 1; !brk && k < pos + hard && k < v.len; k++)
            if (v.p[k] == ' ')
                brk = k;
        if (!brk && rest <= hard) {
            dsn_buf_add(b, v.p + pos, rest);
            break;
        }
        if (!brk) {
            /* no space at all: cut, the continuation's indent is the only added byte */
            dsn_buf_add(b, v.p + pos, hard);
            pos += hard;
        } else {
            dsn_buf_add(b, v.p + pos, brk - pos);
            pos = header ? brk : brk + 1; /* a header keeps the space as its fold */
        }
        dsn_buf_str(b, "\r\n");
        col = 0;
        if (!header || v.p[pos] != ' ') {
            dsn_buf_str(b, indent);
            col = strlen(indent);
        }
    }
    dsn_buf_str(b, "\r\n");
    dsn_buf_free(&v);
}

void dsn_buf_headers(struct dsn_buf *b, const char *msg, size_t len)
{
    size_t pos = 0;
    if (!msg)
        return;
    while (pos < len && !b->failed) {
        const char *nl = memchr(msg + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - msg) : len;
        size_t next = nl ? end + 1 : len, n, i, col = 0;
        n = end - pos;
        if (n > 0 && msg[pos + n - 1] == '\r')
            n--;
        if (n == 0 || next > DSN_HEADERS_MAX)
            break; /* the end of the header block, or past the cap: whole lines only */
        for (i = 0; i < n; i++) {
            unsigned char c = (unsigned char)msg[pos + i];
            char o = (char)(dsn_printable(c) || c == '\t' ? c : '?');
            if (col == DSN_FOLD_HARD) {
                dsn_buf_str(b, "\r\n ");
                col = 1;
            }
            dsn_buf_add(b, &o, 1);
            col++;
        }
        dsn_buf_str(b, "\r\n");
        pos = next;
    }
}
