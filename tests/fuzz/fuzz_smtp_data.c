/* libFuzzer target for proxy/smtp/smtp_data.c. The first byte picks the bare LF policy, a size
 * limit and a split point; the rest is fed whole and then in two pieces, and both runs must give
 * the same lines, result and consumed count; no decoded line holds a NUL (it refuses the message).
 * Then the smuggling property: the decoded lines,
 * re-encoded and terminated, must decode (in the strict reject mode) to exactly the same lines,
 * ending exactly at the terminator. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/smtp/smtp_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fuzz_lines {
    char *buf; /* each line as a 2-byte length and its bytes */
    size_t len, cap;
};

static void fuzz_line(void *arg, const char *line, size_t len)
{
    struct fuzz_lines *l = arg;
    /* no NUL either: a message holding one is refused, none of its lines from there on pass */
    if (len > SMTP_TEXT_LINE_MAX - 2 || memchr(line, '\n', len) || memchr(line, '\r', len) ||
        memchr(line, '\0', len))
        abort();
    if (l->len + len + 2 > l->cap) {
        l->cap = (l->len + len + 2) * 2;
        l->buf = realloc(l->buf, l->cap);
        if (!l->buf)
            abort();
    }
    l->buf[l->len++] = (char)(len >> 8);
    l->buf[l->len++] = (char)(len & 0xff);
    memcpy(l->buf + l->len, line, len);
    l->len += len;
}

struct fuzz_result {
    int r;
    size_t consumed;
    uint64_t size;
    const char *err;
};

static void fuzz_run(enum bare_lf_policy pol, uint64_t max, const char *in, size_t len,
                     size_t split, struct fuzz_lines *lines, struct fuzz_result *res)
{
    struct smtp_data_dec *d = smtp_data_dec_new(pol, max, fuzz_line, lines);
    size_t pos = 0;
    int r = 0;
    const char *err = NULL;
    if (!d)
        abort();
    while (pos < len && r == 0) {
        size_t end = pos < split ? split : len;
        size_t consumed = 0;
        r = smtp_data_dec_feed(d, in + pos, end - pos, &consumed, &err);
        if (consumed > end - pos || (r == 0 && consumed != end - pos))
            abort();
        pos += consumed;
    }
    if (r != 0 && smtp_data_dec_failed(d) != (r < 0))
        abort();
    res->r = r;
    res->consumed = pos;
    res->size = smtp_data_dec_size(d);
    res->err = r < 0 ? err : NULL;
    smtp_data_dec_free(d);
}

/* Re-encode what was decoded and decode it again: nothing may change. */
static void fuzz_round_trip(const struct fuzz_lines *lines)
{
    struct fuzz_lines again = {NULL, 0, 0};
    struct fuzz_result res;
    char *wire = malloc(lines->len * 2 + 8);
    size_t w = 0, i = 0;
    if (!wire)
        abort();
    while (i < lines->len) {
        size_t n = ((size_t)(unsigned char)lines->buf[i] << 8) | (unsigned char)lines->buf[i + 1];
        w += smtp_data_encode_line(wire + w, lines->buf + i + 2, n);
        i += 2 + n;
    }
    memcpy(wire + w, ".\r\n", 3);
    w += 3;
    fuzz_run(BARE_LF_REJECT, 0, wire, w, w, &again, &res);
    if (res.r != 1 || res.consumed != w || again.len != lines->len ||
        (lines->len && memcmp(again.buf, lines->buf, lines->len) != 0))
        abort();
    free(again.buf);
    free(wire);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_lines l1 = {NULL, 0, 0}, l2 = {NULL, 0, 0};
    struct fuzz_result r1, r2;
    enum bare_lf_policy pol;
    uint64_t max;
    const char *in;
    size_t len, split;
    if (size < 1)
        return 0;
    pol = (data[0] & 1) ? BARE_LF_REJECT : BARE_LF_NORMALIZE;
    max = (data[0] & 2) ? 64 : 0;
    in = (const char *)data + 1;
    len = size - 1;
    split = (size_t)(data[0] >> 2) * len / 63;
    fuzz_run(pol, max, in, len, len, &l1, &r1);
    fuzz_run(pol, max, in, len, split, &l2, &r2);
    if (r1.r != r2.r || r1.consumed != r2.consumed || r1.size != r2.size || r1.err != r2.err ||
        l1.len != l2.len || (l1.len && memcmp(l1.buf, l2.buf, l1.len) != 0))
        abort();
    if (r1.r == 1)
        fuzz_round_trip(&l1);
    free(l1.buf);
    free(l2.buf);
    return 0;
}
