/* dsn_check (proxy/smtp/dsn.h): the form a DSN must have, checked from the bytes alone, the way a
 * strict receiver would read them. Independent of dsn_build's code on purpose. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/smtp/dsn.h"

#define DSN_BOUNDARY_MAX 70 /* RFC 2046 5.1.1 */

static int dsn_fail(char *err, size_t errlen, const char *msg, size_t at)
{
    if (err && errlen)
        snprintf(err, errlen, "%s (at byte %zu)", msg, at);
    return -1;
}

/* Line i of the message: [start, end) without the CRLF. */
struct dsn_line {
    size_t start, end;
};

static int dsn_starts(const char *msg, struct dsn_line l, const char *prefix)
{
    size_t n = strlen(prefix);
    return l.end - l.start >= n && strncasecmp(msg + l.start, prefix, n) == 0;
}

static int dsn_is(const char *msg, struct dsn_line l, const char *s, size_t n)
{
    return l.end - l.start == n && memcmp(msg + l.start, s, n) == 0;
}

/* The boundary parameter of the top-level Content-Type (header lines [0, body)). */
static int dsn_boundary(const char *msg, const struct dsn_line *lines, size_t body, char *out)
{
    size_t i, j;
    for (i = 0; i < body; i++) {
        char field[2048];
        size_t n = 0;
        const char *b;
        if (!dsn_starts(msg, lines[i], "Content-Type:"))
            continue;
        for (j = i;
             j < body && (j == i || msg[lines[j].start] == ' ' || msg[lines[j].start] == '\t');
             j++) {
            size_t len = lines[j].end - lines[j].start;
            if (n + len >= sizeof(field))
                return -1;
            memcpy(field + n, msg + lines[j].start, len);
            n += len;
        }
        field[n] = '\0';
        if (!strstr(field, "multipart/report") || !strstr(field, "report-type=delivery-status"))
            return -1;
        b = strstr(field, "boundary=");
        if (!b)
            return -1;
        b += strlen("boundary=");
        n = 0;
        if (*b == '"') {
            for (b++; b[n] && b[n] != '"'; n++)
                ;
            if (b[n] != '"')
                return -1;
        } else {
            while (b[n] && b[n] != ';' && b[n] != ' ' && b[n] != '\t')
                n++;
        }
        if (n < 1 || n > DSN_BOUNDARY_MAX)
            return -1;
        memcpy(out, b, n);
        out[n] = '\0';
        return 0;
    }
    return -1;
}

static int dsn_check_lines(const char *msg, size_t len, struct dsn_line *lines, size_t nlines,
                           size_t *nrcpts, char *err, size_t errlen)
{
    char boundary[DSN_BOUNDARY_MAX + 1], delim[DSN_BOUNDARY_MAX + 3], close[DSN_BOUNDARY_MAX + 5];
    size_t i, body = nlines, parts = 0, part_start[3] = {0}, part_end[3] = {0}, blocks = 0;
    int closed = 0, seen[3] = {0, 0, 0};
    for (i = 0; i < nlines; i++)
        if (lines[i].end == lines[i].start) {
            body = i;
            break;
        }
    if (body == nlines || dsn_boundary(msg, lines, body, boundary) < 0)
        return dsn_fail(err, errlen, "no multipart/report Content-Type with a boundary", 0);
    snprintf(delim, sizeof(delim), "--%s", boundary);
    snprintf(close, sizeof(close), "--%s--", boundary);
    for (i = body + 1; i < nlines; i++) {
        struct dsn_line l = lines[i];
        if (closed)
            return dsn_fail(err, errlen, "text after the close delimiter", l.start);
        if (dsn_is(msg, l, close, strlen(close))) {
            if (parts != 3)
                return dsn_fail(err, errlen, "not three parts", l.start);
            part_end[2] = i;
            closed = 1;
        } else if (dsn_is(msg, l, delim, strlen(delim))) {
            if (parts == 3)
                return dsn_fail(err, errlen, "more than three parts", l.start);
            if (parts > 0)
                part_end[parts - 1] = i;
            part_start[parts++] = i + 1;
        } else {
            size_t n = l.end - l.start, k, bl = strlen(boundary);
            for (k = 0; k + bl <= n; k++)
                if (memcmp(msg + l.start + k, boundary, bl) == 0)
                    return dsn_fail(err, errlen, "the boundary inside a part", l.start);
        }
    }
    if (!closed)
        return dsn_fail(err, errlen, "no close delimiter", len);
    if (part_end[1] < part_start[1] + 2 || part_end[2] < part_start[2] + 2)
        return dsn_fail(err, errlen, "a part without its headers", 0);
    /* part 2: its headers, an empty line, the per-message block, then per-recipient blocks */
    for (i = part_start[1]; i < part_end[1] && lines[i].end != lines[i].start; i++)
        ;
    if (i == part_end[1] || !dsn_starts(msg, lines[part_start[1]], "Content-Description:") ||
        !dsn_starts(msg, lines[part_start[1] + 1], "Content-Type: message/delivery-status"))
        return dsn_fail(err, errlen, "second part is not message/delivery-status", 0);
    if (i + 1 >= part_end[1] || !dsn_starts(msg, lines[i + 1], "Reporting-MTA: dns; "))
        return dsn_fail(err, errlen, "no Reporting-MTA", 0);
    for (i = i + 1; i < part_end[1]; i++) {
        struct dsn_line l = lines[i];
        if (l.end == l.start) {
            if (blocks > 0 && !(seen[0] && seen[1] && seen[2]))
                return dsn_fail(err, errlen, "recipient block without its fields", l.start);
            blocks++;
            seen[0] = seen[1] = seen[2] = 0;
            continue;
        }
        seen[0] |= dsn_starts(msg, l, "Final-Recipient: rfc822;");
        seen[1] |= dsn_starts(msg, l, "Action: failed") || dsn_starts(msg, l, "Action: delayed");
        seen[2] |= dsn_starts(msg, l, "Status: 4.") || dsn_starts(msg, l, "Status: 5.");
    }
    if (blocks == 0 || !(seen[0] && seen[1] && seen[2]))
        return dsn_fail(err, errlen, "no complete recipient block", 0);
    if (!dsn_starts(msg, lines[part_start[2] + 1], "Content-Type: text/rfc822-headers"))
        return dsn_fail(err, errlen, "third part is not text/rfc822-headers", 0);
    if (nrcpts)
        *nrcpts = blocks;
    return 0;
}

int dsn_check(const char *msg, size_t len, size_t *nrcpts, char *err, size_t errlen)
{
    struct dsn_line *lines;
    size_t nlines = 0, cap = 0, i, start = 0;
    int rc;
    if (len == 0 || len < 2 || msg[len - 2] != '\r' || msg[len - 1] != '\n')
        return dsn_fail(err, errlen, "does not end with CRLF", len);
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)msg[i];
        if (c == '\r') {
            if (i + 1 >= len || msg[i + 1] != '\n')
                return dsn_fail(err, errlen, "bare CR", i);
            if (i - start > DSN_LINE_MAX)
                return dsn_fail(err, errlen, "line longer than 998 octets", start);
            cap++;
            start = i + 2;
            i++;
        } else if (c == '\n') {
            return dsn_fail(err, errlen, "bare LF", i);
        } else if (!(c == '\t' || (c >= 0x20 && c <= 0x7e))) {
            return dsn_fail(err, errlen, "not 7-bit printable text", i);
        }
    }
    lines = calloc(cap, sizeof(*lines));
    if (!lines)
        return dsn_fail(err, errlen, "out of memory", 0);
    for (i = 0, start = 0; i < len; i++)
        if (msg[i] == '\r') {
            lines[nlines].start = start;
            lines[nlines++].end = i;
            start = i + 2;
            i++;
        }
    rc = dsn_check_lines(msg, len, lines, nlines, nrcpts, err, errlen);
    free(lines);
    return rc;
}
