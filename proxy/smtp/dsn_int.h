/* Inside proxy/dsn*.c: a growing output buffer and the sanitizers that keep hostile text inside
 * the field or part it belongs to. */
#ifndef SOP_DSN_INT_H
#define SOP_DSN_INT_H

#include <stddef.h>

struct dsn_buf {
    char *p;
    size_t len, cap;
    int failed; /* an allocation failed: every later append is a no-op */
};

void dsn_buf_add(struct dsn_buf *b, const char *s, size_t n);
void dsn_buf_str(struct dsn_buf *b, const char *s);
void dsn_buf_free(struct dsn_buf *b);

/* Append s (NULL: "") with every byte outside printable ASCII replaced by '?', at most max
 * bytes of s (cut marked with "..."). */
void dsn_buf_safe(struct dsn_buf *b, const char *s, size_t max);
/* Append "NAME: VALUE" CRLF, VALUE made safe as above (at most max bytes) and folded: lines
 * broken at a space before column 78 where there is one, and always before DSN_LINE_MAX;
 * continuation lines start with indent (" " for header fields). */
void dsn_buf_field(struct dsn_buf *b, const char *name, const char *value, size_t max,
                   const char *indent);
/* Append the header block of msg (what precedes the first empty line; at most DSN_HEADERS_MAX
 * bytes, whole lines) with CRLF line ends, bytes outside printable ASCII and TAB replaced by
 * '?', lines longer than DSN_LINE_MAX split as header continuations. */
void dsn_buf_headers(struct dsn_buf *b, const char *msg, size_t len);

#endif
