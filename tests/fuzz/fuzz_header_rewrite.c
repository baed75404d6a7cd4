/* libFuzzer target for proxy/smtp/header_rewrite.c, driven as backend_direct.c drives it: the
 * device's DATA bytes go through the DATA decoder (bare_lf = normalize), each decoded line to
 * header_rewrite_line, nothing more once it refuses, header_rewrite_finish at the end.
 *
 * The first byte: bits 0-1 == 3 first fill the header section to 406 bytes short of
 * HEADER_REWRITE_MAX (the refusal is reachable); bit 2 picks an over-long mailbox; bits 3-7 a
 * split point. The rest is cut there into two messages: run A rewrites both with one object
 * (reset in between, as the daemon reuses it), run B the second alone; both must emit exactly the
 * same lines for it. Every message's output is checked against its input lines: no line over
 * 998 bytes, at most two lines more, no NUL that was not there; the body (from the first blank or
 * non-header line) passes unchanged after header lines only; exactly one From:, the mailbox, where
 * the first From: was (first if there was none); a field name may have white space before its
 * colon ("From : x"); a Reply-To: is added only when there was none,
 * holding every usable From: value in order (not blank, no NUL); all other header lines pass
 * unchanged and in order. After a refusal nothing at all is emitted. (The decoder refuses a NUL,
 * so the lines fed here hold none; tests/unit/test_header_rewrite.c covers a NUL in From:.) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/smtp/header_rewrite.h"
#include "proxy/smtp/smtp_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_LINE_MAX (SMTP_TEXT_LINE_MAX - 2)
#define FUZZ_FILL_LINES 262 /* 262 lines of 998 bytes + '\n': 406 bytes left */

struct fuzz_lines {
    char *buf;
    size_t len, cap;
    size_t *off; /* line i: buf + off[i], off[i + 1] - off[i] bytes (off[n] = len) */
    size_t n, ncap;
};

static void fuzz_lines_add(struct fuzz_lines *l, const char *line, size_t len)
{
    if (!l->buf || l->len + len > l->cap) {
        l->cap = (l->len + len) * 2 + 64;
        l->buf = realloc(l->buf, l->cap);
        if (!l->buf)
            abort();
    }
    if (l->n + 2 > l->ncap) {
        l->ncap = (l->n + 2) * 2;
        l->off = realloc(l->off, l->ncap * sizeof(*l->off));
        if (!l->off)
            abort();
    }
    if (len)
        memcpy(l->buf + l->len, line, len);
    l->off[l->n++] = l->len;
    l->len += len;
    l->off[l->n] = l->len;
}

/* Empty the list, keeping its memory for the next input: big fresh allocations each run cost
 * more page faults than the rewriting itself. */
static void fuzz_lines_clear(struct fuzz_lines *l)
{
    l->len = 0;
    l->n = 0;
}

static const char *fuzz_line(const struct fuzz_lines *l, size_t i, size_t *len)
{
    *len = l->off[i + 1] - l->off[i];
    return l->buf + l->off[i];
}

static int fuzz_line_eq(const struct fuzz_lines *a, size_t i, const struct fuzz_lines *b, size_t j)
{
    size_t na, nb;
    const char *pa = fuzz_line(a, i, &na), *pb = fuzz_line(b, j, &nb);
    return na == nb && (na == 0 || memcmp(pa, pb, na) == 0);
}

/* RFC 5322 as header_rewrite.h describes it, written out again here. */
static int fuzz_is_cont(const char *s, size_t len)
{
    return len > 0 && (s[0] == ' ' || s[0] == '\t');
}

/* The offset just after the colon of a field's first line: a name of printable ASCII but the
 * colon, then any SP/HTAB (RFC 5322 4.5's obsolete "From : x"), then the colon; 0 if none. */
static size_t fuzz_value_off(const char *s, size_t len, size_t *name_len)
{
    size_t i = 0, n;
    while (i < len && (unsigned char)s[i] > 0x20 && (unsigned char)s[i] < 0x7f && s[i] != ':')
        i++;
    n = i;
    while (i < len && (s[i] == ' ' || s[i] == '\t'))
        i++;
    *name_len = n;
    return n > 0 && i < len && s[i] == ':' ? i + 1 : 0;
}

static int fuzz_is_header(const char *s, size_t len)
{
    size_t n;
    return fuzz_is_cont(s, len) || fuzz_value_off(s, len, &n) != 0;
}

/* The value's offset when s is the first line of a field called name; else 0. */
static size_t fuzz_field_is(const char *s, size_t len, const char *name)
{
    size_t n, off = fuzz_value_off(s, len, &n);
    return off && n == strlen(name) && strncasecmp(s, name, n) == 0 ? off : 0;
}

static size_t fuzz_nuls(const struct fuzz_lines *l)
{
    size_t k = 0;
    const char *p, *end, *z;
    if (!l->n)
        return 0;
    p = l->buf;
    end = l->buf + l->len;
    while ((z = memchr(p, '\0', (size_t)(end - p))) != NULL) { /* memchr: fast uninstrumented */
        k++;
        p = z + 1;
    }
    return k;
}

/* A From: field (lines i to e, its value at voff) whose value header_rewrite.c may copy: some
 * byte other than white space after the colon, and no NUL. */
static int fuzz_from_usable(const struct fuzz_lines *in, size_t i, size_t e, size_t voff)
{
    int text = 0;
    for (size_t k = i; k < e; k++) {
        size_t len;
        const char *s = fuzz_line(in, k, &len);
        for (size_t c = k == i ? voff : 0; c < len; c++) {
            if (s[c] == '\0')
                return 0;
            if (s[c] != ' ' && s[c] != '\t')
                text = 1;
        }
    }
    return text;
}

/* One message through one object. */
struct fuzz_msg {
    struct header_rewrite *h;
    struct fuzz_lines in, out;
    int failed;
};

static void fuzz_emit(void *arg, const char *line, size_t len)
{
    struct fuzz_msg *m = arg;
    if (m->failed)
        abort(); /* nothing may be emitted once the message was refused */
    fuzz_lines_add(&m->out, line, len);
}

static void fuzz_feed(struct fuzz_msg *m, const char *line, size_t len)
{
    if (m->failed)
        return; /* backend_direct.c stops here: fail_reply is set */
    fuzz_lines_add(&m->in, line, len);
    if (header_rewrite_line(m->h, line, len) != 0) {
        m->failed = 1;
        /* refused for good: the next line is refused too, and emits nothing */
        if (header_rewrite_line(m->h, "X: y", 4) != -1)
            abort();
    }
}

static void fuzz_decoded(void *arg, const char *line, size_t len)
{
    fuzz_feed(arg, line, len);
}

/* The output of one message against its input. */
static void fuzz_check(const struct fuzz_msg *m, const char *mailbox)
{
    const struct fuzz_lines *in = &m->in, *out = &m->out;
    size_t b, nbody, hout, i, j, len, froms = 0, rts = 0, out_froms = 0, out_rts = 0;
    size_t first_from = SIZE_MAX;
    char from_line[SMTP_TEXT_LINE_MAX + 16];
    size_t from_len;
    const char *s;

    if (m->failed) {
        if (out->n != 0)
            abort();
        return;
    }
    if (out->n > in->n + 2 || fuzz_nuls(out) > fuzz_nuls(in))
        abort();
    for (i = 0; i < out->n; i++) {
        fuzz_line(out, i, &len);
        if (len > FUZZ_LINE_MAX)
            abort();
    }
    /* the header section: up to the first blank or non-header line */
    for (b = 0; b < in->n; b++) {
        s = fuzz_line(in, b, &len);
        if (len == 0 || !fuzz_is_header(s, len))
            break;
    }
    nbody = in->n - b;
    if (out->n < nbody)
        abort();
    hout = out->n - nbody;
    for (i = 0; i < nbody; i++)
        if (!fuzz_line_eq(out, hout + i, in, b + i))
            abort();
    for (i = 0; i < hout; i++) {
        s = fuzz_line(out, i, &len);
        if (len == 0 || !fuzz_is_header(s, len))
            abort(); /* the boundary moved */
    }

    for (i = 0; i < b; i++) {
        s = fuzz_line(in, i, &len);
        if (fuzz_field_is(s, len, "From")) {
            if (first_from == SIZE_MAX)
                first_from = i;
            froms++;
        } else if (fuzz_field_is(s, len, "Reply-To")) {
            rts++;
        }
    }
    size_t mlen = strlen(mailbox);
    from_len = 8 + mlen > FUZZ_LINE_MAX ? FUZZ_LINE_MAX : 8 + mlen;
    memcpy(from_line, "From: <", 7);
    memcpy(from_line + 7, mailbox, mlen);
    from_line[7 + mlen] = '>';

    /* The expected header section, field by field (a first line and its continuation lines):
     * the first From: becomes the mailbox; when the message has no Reply-To:, it is followed by
     * one Reply-To: holding every usable From: value in order: the first as "Reply-To:" + its
     * value (folded after the name when the longer name would not fit), each later one as
     * " ," + its value, each with its continuation lines. Later From: fields vanish. Everything
     * else as it was. A message with no From: gets the mailbox's before its first field (after
     * continuation lines that have no field before them), or after its header lines when it has
     * no field at all. */
    int any_usable = 0, from_missing = froms == 0;
    for (i = 0, j = 0; i < b;) {
        size_t e = i + 1, flen;
        const char *f = fuzz_line(in, i, &flen);
        while (e < b && fuzz_is_cont(fuzz_line(in, e, &len), len))
            e++;
        if (from_missing && !fuzz_is_cont(f, flen)) {
            s = j < hout ? fuzz_line(out, j++, &len) : NULL;
            if (!s || len != from_len || memcmp(s, from_line, from_len) != 0)
                abort();
            out_froms++;
            from_missing = 0;
        }
        if (fuzz_is_cont(f, flen) || !fuzz_field_is(f, flen, "From")) {
            for (; i < e; i++, j++)
                if (j >= hout || !fuzz_line_eq(out, j, in, i))
                    abort();
            continue;
        }
        if (i != first_from) {
            i = e;
            continue;
        }
        s = j < hout ? fuzz_line(out, j++, &len) : NULL;
        if (!s || len != from_len || memcmp(s, from_line, from_len) != 0)
            abort();
        out_froms++;
        i = e;
        if (rts != 0)
            continue;
        int first = 1;
        for (size_t k = first_from; k < b;) {
            size_t ke = k + 1, klen;
            const char *kf = fuzz_line(in, k, &klen);
            while (ke < b && fuzz_is_cont(fuzz_line(in, ke, &len), len))
                ke++;
            size_t voff = fuzz_is_cont(kf, klen) ? 0 : fuzz_field_is(kf, klen, "From");
            if (!voff || !fuzz_from_usable(in, k, ke, voff)) {
                k = ke;
                continue;
            }
            any_usable = 1;
            const char *value = kf + voff;
            size_t vlen = klen - voff;
            s = j < hout ? fuzz_line(out, j++, &len) : NULL;
            if (!s)
                abort();
            if (!first) {
                if (len != 2 + vlen || s[0] != ' ' || s[1] != ',' ||
                    (vlen && memcmp(s + 2, value, vlen) != 0))
                    abort();
            } else if (len < 9 || memcmp(s, "Reply-To:", 9) != 0) {
                abort();
            } else if (9 + vlen <= FUZZ_LINE_MAX) {
                if (len != 9 + vlen || (vlen && memcmp(s + 9, value, vlen) != 0))
                    abort();
            } else {
                size_t pad = (value[0] == ' ' || value[0] == '\t') ? 0 : 1;
                if (len != 9)
                    abort();
                s = j < hout ? fuzz_line(out, j++, &len) : NULL;
                if (!s || len != pad + vlen || (pad && s[0] != ' ') ||
                    memcmp(s + pad, value, vlen) != 0)
                    abort();
            }
            if (first)
                out_rts++;
            first = 0;
            for (k++; k < ke; k++, j++)
                if (j >= hout || !fuzz_line_eq(out, j, in, k))
                    abort();
        }
    }
    if (from_missing) { /* no field at all */
        s = j < hout ? fuzz_line(out, j++, &len) : NULL;
        if (!s || len != from_len || memcmp(s, from_line, from_len) != 0)
            abort();
        out_froms++;
    }
    if (j != hout || out_froms != 1 || out_rts > 1 || (out_rts == 1) != (rts == 0 && any_usable))
        abort();
}

static void fuzz_message(struct fuzz_msg *m, const char *in, size_t len, int fill)
{
    static char fill_line[FUZZ_LINE_MAX];
    struct smtp_data_dec *d = smtp_data_dec_new(BARE_LF_NORMALIZE, 0, fuzz_decoded, m);
    size_t consumed = 0;
    const char *err = NULL;
    if (!d)
        abort();
    if (fill) {
        memset(fill_line, 'a', sizeof(fill_line));
        memcpy(fill_line, "X-Fill: ", 8);
        for (int i = 0; i < FUZZ_FILL_LINES; i++)
            fuzz_feed(m, fill_line, sizeof(fill_line));
    }
    int r = smtp_data_dec_feed(d, in, len, &consumed, &err);
    if (r == 0 && consumed != len)
        abort();
    if (!m->failed)
        header_rewrite_finish(m->h);
    smtp_data_dec_free(d);
}

static void fuzz_msg_clear(struct fuzz_msg *m)
{
    fuzz_lines_clear(&m->in);
    fuzz_lines_clear(&m->out);
    m->failed = 0;
}

static int fuzz_same(const struct fuzz_lines *a, const struct fuzz_lines *b)
{
    return a->n == b->n && a->len == b->len &&
           (a->n == 0 || memcmp(a->off, b->off, (a->n + 1) * sizeof(*a->off)) == 0) &&
           (a->len == 0 || memcmp(a->buf, b->buf, a->len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char long_mailbox[1000];
    const char *mailbox = "relay@example.com";
    static struct fuzz_msg a, b; /* the line lists' memory is reused */
    const char *in;
    size_t len, split;
    int fill;
    if (size < 1)
        return 0;
    fill = (data[0] & 3) == 3;
    if (data[0] & 4) { /* longer than a From: line can hold */
        memset(long_mailbox, 'm', sizeof(long_mailbox) - 1);
        memcpy(long_mailbox + sizeof(long_mailbox) - 13, "@example.com", 13);
        mailbox = long_mailbox;
    }
    in = (const char *)data + 1;
    len = size - 1;
    split = (size_t)(data[0] >> 3) * len / 31;

    a.h = header_rewrite_new(mailbox, fuzz_emit, &a);
    b.h = header_rewrite_new(mailbox, fuzz_emit, &b);
    if (!a.h || !b.h)
        abort();
    fuzz_message(&a, in, split, fill);
    fuzz_check(&a, mailbox);
    fuzz_msg_clear(&a);
    header_rewrite_reset(a.h);
    fuzz_message(&a, in + split, len - split, fill);
    fuzz_check(&a, mailbox);
    fuzz_message(&b, in + split, len - split, fill);
    if (!fuzz_same(&a.in, &b.in) || !fuzz_same(&a.out, &b.out) || a.failed != b.failed)
        abort();
    fuzz_msg_clear(&a);
    fuzz_msg_clear(&b);
    header_rewrite_free(a.h);
    header_rewrite_free(b.h);
    return 0;
}
