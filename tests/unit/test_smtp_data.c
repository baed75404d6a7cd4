/* Unit tests for proxy/smtp/smtp_data.c. Every decoder case runs fed whole, one byte at a time and
 * in 7-byte pieces; all must give the same exact lines, result, consumed count and size. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/smtp/smtp_data.h"

#define OUT_MAX 65536

struct sink {
    char *buf;
    size_t len;
};

/* Each decoded line followed by '\n' (a decoded line never holds CR or LF). */
static void sink_line(void *arg, const char *line, size_t len)
{
    struct sink *s = arg;
    assert_null(memchr(line, '\n', len));
    assert_null(memchr(line, '\r', len));
    assert_true(s->len + len + 1 < OUT_MAX);
    memcpy(s->buf + s->len, line, len);
    s->len += len;
    s->buf[s->len++] = '\n';
    s->buf[s->len] = '\0';
}

/* Result text: "<lines>#<r>|<err>|<consumed>|<size>". */
static void run(enum bare_lf_policy policy, uint64_t max, const char *in, size_t len, size_t step,
                char *out)
{
    struct sink s = {out, 0};
    struct smtp_data_dec *d = smtp_data_dec_new(policy, max, sink_line, &s);
    size_t pos = 0;
    int r = 0;
    const char *err = NULL;

    assert_non_null(d);
    out[0] = '\0';
    while (pos < len && r == 0) {
        size_t chunk = len - pos < step ? len - pos : step;
        size_t consumed = 12345;
        r = smtp_data_dec_feed(d, in + pos, chunk, &consumed, &err);
        assert_true(consumed <= chunk);
        if (r == 0)
            assert_int_equal(consumed, chunk);
        pos += consumed;
    }
    if (r != 0)
        assert_int_equal(smtp_data_dec_failed(d), r < 0);
    snprintf(out + s.len, OUT_MAX - s.len, "#%d|%s|%zu|%llu", r, r < 0 ? err : "", pos,
             (unsigned long long)smtp_data_dec_size(d));
    smtp_data_dec_free(d);
}

static void check_n(enum bare_lf_policy policy, uint64_t max, const char *in, size_t len,
                    const char *expected)
{
    static const size_t steps[] = {0, 1, 7};
    static char out[OUT_MAX]; /* static: a failed assert longjmps past any free() */
    size_t i;
    for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        run(policy, max, in, len, steps[i] ? steps[i] : len, out);
        if (strcmp(out, expected) != 0)
            fprintf(stderr, "step %zu: got\n%s\n--- expected\n%s\n---\n", steps[i], out, expected);
        assert_string_equal(out, expected);
    }
}

static void check_norm(const char *in, const char *expected)
{
    check_n(BARE_LF_NORMALIZE, 0, in, strlen(in), expected);
}

static void check_rej(const char *in, const char *expected)
{
    check_n(BARE_LF_REJECT, 0, in, strlen(in), expected);
}

static void check_both(const char *in, const char *expected)
{
    check_norm(in, expected);
    check_rej(in, expected);
}

#define ERR_LF "554 5.6.0 Message refused: bare LF in message (bare_lf = reject)"
#define ERR_CR "554 5.6.0 Message refused: bare CR in message (bare_lf = reject)"
#define ERR_LONG "554 5.6.0 Message refused: line longer than 1000 octets"
#define ERR_SIZE "552 5.3.4 Message size exceeds fixed limit"
#define ERR_NUL "554 5.6.0 Message refused: NUL byte in message"

static void test_simple(void **state)
{
    (void)state;
    check_both("Subject: x\r\n\r\nbody\r\n.\r\n", "Subject: x\n\nbody\n#1||23|20");
    check_both(".\r\n", "#1||3|0");
    check_both("a\r\n.\r\nQUIT\r\n", "a\n#1||6|3");
    check_both("a\r\n", "a\n#0||3|3");
    check_both("a\r\n.", "a\n#0||4|3");
    check_both("a\r\n.\r", "a\n#0||5|3");
    /* ".." alone and ". " are text, not the end. */
    check_both(" .\r\n.x\r\n. \r\n.\r\n", " .\nx\n \n#1||15|10");
}

static void test_dot_stuffing(void **state)
{
    char wire[64];
    size_t n;
    (void)state;
    check_both("..\r\n...\r\n..x\r\n.\r\n", ".\n..\n.x\n#1||17|11");
    /* Encoder: the other direction. */
    n = smtp_data_encode_line(wire, ".", 1);
    assert_int_equal(n, 4);
    assert_memory_equal(wire, "..\r\n", 4);
    n = smtp_data_encode_line(wire, "..x", 3);
    assert_int_equal(n, 6);
    assert_memory_equal(wire, "...x\r\n", 6);
    n = smtp_data_encode_line(wire, "a.b", 3);
    assert_int_equal(n, 5);
    assert_memory_equal(wire, "a.b\r\n", 5);
    n = smtp_data_encode_line(wire, "", 0);
    assert_int_equal(n, 2);
    assert_memory_equal(wire, "\r\n", 2);
    n = smtp_data_encode_line(wire, NULL, 0);
    assert_int_equal(n, 2);
}

static void test_normalize(void **state)
{
    (void)state;
    /* An LF-only client (its first line ends in LF): LF ends lines and its "." ends data. */
    check_norm("a\nb\rc\r\nd\n.\n", "a\nb\nc\nd\n#1||11|12");
    check_norm("a\n.\r\nMAIL FROM:<x@y>\r\n", "a\n#1||5|3");
    check_norm("a\n.\nMAIL FROM:<x@y>\r\n", "a\n#1||4|3");
    check_norm(".\n", "#1||2|0");
    check_norm("a\n..x\n.\n", "a\n.x\n#1||8|7"); /* it stuffs its LF lines */
    /* A CRLF client: only CRLF "." CRLF ends data. Smuggling attempts are message content and
     * the commands after them are not run (CVE-2023-51766). */
    check_norm("a\r\rb\r\n.\r\n", "a\n\nb\n#1||9|8");
    check_norm("a\r\nbefore\n.\nMAIL FROM:<x@y>\r\n.\r\n",
               "a\nbefore\n.\nMAIL FROM:<x@y>\n#1||32|31");
    check_norm("a\r.\r\nMAIL FROM:<x@y>\r\n", "a\n.\nMAIL FROM:<x@y>\n#0||22|23");
    check_norm("a\r\n.\nMAIL FROM:<x@y>\r\n", "a\n\nMAIL FROM:<x@y>\n#0||22|22");
    check_norm("a\r\n.\rMAIL FROM:<x@y>\r\n", "a\n\nMAIL FROM:<x@y>\n#0||22|22");
    check_norm("a\r.\rX", "a\n.\n#0||5|6");
    check_norm("a\r\nb\n\r\n.\r\n", "a\nb\n\n#1||10|8"); /* ends once CRLF.CRLF comes */
    /* A lone CR never ends data, nor does a "." ended by one. */
    check_norm(".\r", "#0||2|0");
    check_norm(".\rX", "\n#0||3|2");
}

static void test_reject(void **state)
{
    (void)state;
    check_rej("a\r\nb\r\n.\r\n", "a\nb\n#1||9|6");
    /* A bare LF refuses the message; no line is passed on after it. The end is found by the
     * same rule as in normalize mode. */
    check_rej("a\nb\r\n.\r\n", "#-1|" ERR_LF "|8|6");
    check_rej("a\r\nb\nc\r\n.\r\n", "a\n#-1|" ERR_LF "|11|9");
    check_rej("a\r\nb\nc\r\n.\n", "a\n#0||10|11"); /* a CRLF client's bare-LF dot is no end */
    /* Smuggling sequences: an LF-only client's end ends it; inside a CRLF client's message
     * they are refused content and nothing after them runs as a command. */
    check_rej("a\n.\r\nMAIL FROM:<x@y>\r\n", "#-1|" ERR_LF "|5|3");
    check_rej("a\r.\r\nMAIL FROM:<x@y>\r\n", "#0||22|23");
    check_rej("a\r\n.\nMAIL FROM:<x@y>\r\n", "a\n#0||22|22");
    check_rej("a\n.\nX", "#-1|" ERR_LF "|4|3");
    check_rej(".\n", "#-1|" ERR_LF "|2|0");
    /* A lone CR never ends data: ".\r" + "b" is a refused line, not the end. */
    check_rej("a\r\n.\rb\r\n.\r\n", "a\n#-1|" ERR_CR "|11|8");
    check_rej("a\rb\r\n.\r\n", "#-1|" ERR_CR "|8|6");
    /* The first reason wins. */
    check_rej("a\rb\nc\r\n.\r\n", "#-1|" ERR_CR "|10|9");
}

/* A NUL anywhere refuses the message in both modes: no line is passed on from the one holding
 * it, the end of data is found as usual, and the decoder serves the next message after a reset
 * (the session goes on). */
static void check_nul(const char *in, size_t len, const char *expected)
{
    check_n(BARE_LF_NORMALIZE, 0, in, len, expected);
    check_n(BARE_LF_REJECT, 0, in, len, expected);
}

static void test_nul_refuses_the_message(void **state)
{
    static const char mid[] = "a\r\nb\0c\r\nd\r\n.\r\nQUIT\r\n";
    static const char first[] = "\0\r\n.\r\n";
    static const char header[] = "From: x\0@y\r\n\r\nbody\r\n.\r\n";
    static const char dot[] = "a\r\n.\0\r\nb\r\n.\r\n"; /* ".\0" is no end marker */
    static const char last[] = "a\r\nb\0\r\n.\r\n";
    (void)state;
    check_nul(mid, sizeof(mid) - 1, "a\n#-1|" ERR_NUL "|14|11");
    check_nul(first, sizeof(first) - 1, "#-1|" ERR_NUL "|6|3");
    check_nul(header, sizeof(header) - 1, "#-1|" ERR_NUL "|23|20");
    check_nul(dot, sizeof(dot) - 1, "a\n#-1|" ERR_NUL "|13|9");
    check_nul(last, sizeof(last) - 1, "a\n#-1|" ERR_NUL "|10|7");

    /* the first reason wins: a bare LF before the NUL in reject mode, the NUL before a long
     * line */
    static const char lf_first[] = "a\r\nb\nc\0\r\n.\r\n";
    check_n(BARE_LF_REJECT, 0, lf_first, sizeof(lf_first) - 1, "a\n#-1|" ERR_LF "|12|10");
    check_n(BARE_LF_NORMALIZE, 0, lf_first, sizeof(lf_first) - 1, "a\nb\n#-1|" ERR_NUL "|12|10");
    static char longl[1200];
    memset(longl, 'x', sizeof(longl));
    longl[3] = '\0';
    memcpy(longl + sizeof(longl) - 5, "\r\n.\r\n", 5);
    check_nul(longl, sizeof(longl), "#-1|" ERR_NUL "|1200|0");

    /* the same decoder, reset, takes the next message */
    char out[256];
    struct sink sk = {out, 0};
    struct smtp_data_dec *d = smtp_data_dec_new(BARE_LF_NORMALIZE, 0, sink_line, &sk);
    size_t consumed;
    const char *err = NULL;
    assert_non_null(d);
    assert_int_equal(smtp_data_dec_feed(d, "x\0\r\n", 4, &consumed, &err), 0);
    assert_true(smtp_data_dec_failed(d)); /* known at once: upstream can be aborted */
    assert_int_equal(smtp_data_dec_feed(d, ".\r\n", 3, &consumed, &err), -1);
    assert_string_equal(err, ERR_NUL);
    smtp_data_dec_reset(d);
    assert_int_equal(smtp_data_dec_feed(d, "ok\r\n.\r\n", 7, &consumed, &err), 1);
    assert_int_equal(sk.len, 3);
    assert_memory_equal(out, "ok\n", 3);
    smtp_data_dec_free(d);
}

static void test_cr_at_feed_boundary(void **state)
{
    struct smtp_data_dec *d;
    char out[OUT_MAX];
    struct sink s = {out, 0};
    const char *err = NULL;
    size_t c;
    (void)state;
    d = smtp_data_dec_new(BARE_LF_REJECT, 0, sink_line, &s);
    assert_non_null(d);
    assert_int_equal(smtp_data_dec_feed(d, "abc\r", 4, &c, &err), 0);
    assert_int_equal(c, 4);
    assert_int_equal(s.len, 0); /* the CR's fate is not known yet */
    assert_int_equal(smtp_data_dec_feed(d, "\n.\r", 3, &c, &err), 0);
    assert_int_equal(c, 3);
    assert_false(smtp_data_dec_failed(d));
    assert_int_equal(smtp_data_dec_feed(d, "\nQUIT\r\n", 7, &c, &err), 1);
    assert_int_equal(c, 1);
    assert_string_equal(out, "abc\n");
    /* Fed again without a reset: the same answer, nothing consumed. */
    assert_int_equal(smtp_data_dec_feed(d, "x", 1, &c, &err), 1);
    assert_int_equal(c, 0);
    /* Reset, then a CR at the boundary followed by a non-LF in reject mode. */
    smtp_data_dec_reset(d);
    s.len = 0;
    assert_int_equal(smtp_data_dec_size(d), 0);
    assert_int_equal(smtp_data_dec_feed(d, "ab\r", 3, &c, &err), 0);
    assert_false(smtp_data_dec_failed(d));
    assert_int_equal(smtp_data_dec_feed(d, "x\r\n.\r\n", 6, &c, &err), -1);
    assert_int_equal(c, 6);
    assert_string_equal(err, ERR_CR);
    smtp_data_dec_free(d);
    smtp_data_dec_free(NULL);
}

/* A message of one line of `n` bytes: `first` then 'x's. */
static char *long_msg(char first, size_t n, const char *rest)
{
    size_t rl = strlen(rest);
    char *s = malloc(n + rl + 1);
    assert_non_null(s);
    memset(s, 'x', n);
    s[0] = first;
    memcpy(s + n, rest, rl + 1);
    return s;
}

static void test_line_length(void **state)
{
    char *in;
    char *expect = malloc(OUT_MAX);
    (void)state;
    assert_non_null(expect);
    /* 998 + CRLF = 1000 octets: fine. */
    in = long_msg('x', 998, "\r\n.\r\n");
    snprintf(expect, OUT_MAX, "%.998s\n#1||1003|1000", in);
    check_both(in, expect);
    free(in);
    /* 999: refused, and the rest is still read to the end. */
    in = long_msg('x', 999, "\r\nb\r\n.\r\n");
    check_both(in, "#-1|" ERR_LONG "|1007|3");
    free(in);
    /* The stuffing dot counts: "." + 997 is 998 on the wire, "." + 998 is 999. */
    in = long_msg('.', 998, "\r\n.\r\n");
    snprintf(expect, OUT_MAX, "%.997s\n#1||1003|999", in + 1);
    check_both(in, expect);
    free(in);
    in = long_msg('.', 999, "\r\n.\r\n");
    check_both(in, "#-1|" ERR_LONG "|1004|0");
    free(in);
    /* Bare LF terminated lines count the same in normalize mode. */
    in = long_msg('x', 999, "\n.\n");
    check_norm(in, "#-1|" ERR_LONG "|1002|0");
    free(in);
    free(expect);
}

static void test_huge_line_bounded(void **state)
{
    size_t big = 8 * 1024 * 1024;
    struct smtp_data_dec *d = smtp_data_dec_new(BARE_LF_REJECT, 0, NULL, NULL);
    char *in = malloc(big);
    const char *err = NULL;
    size_t c;
    (void)state;
    assert_non_null(d);
    assert_non_null(in);
    memset(in, 'y', big);
    assert_int_equal(smtp_data_dec_feed(d, in, big, &c, &err), 0);
    assert_int_equal(c, big);
    /* The caller can abort upstream before the end of data. */
    assert_true(smtp_data_dec_failed(d));
    assert_int_equal(smtp_data_dec_feed(d, "\r\n.\r\n", 5, &c, &err), -1);
    assert_string_equal(err, ERR_LONG);
    free(in);
    smtp_data_dec_free(d);
}

static void test_size_limit(void **state)
{
    (void)state;
    /* "12345678" + 2 = 10. */
    check_n(BARE_LF_REJECT, 10, "12345678\r\n.\r\n", 13, "12345678\n#1||13|10");
    check_n(BARE_LF_REJECT, 10, "123456789\r\n.\r\n", 14, "#-1|" ERR_SIZE "|14|11");
    /* 5 + 6 = 11: over 10 on the second line, which is not passed on; reading goes on. */
    check_n(BARE_LF_NORMALIZE, 11, "abc\r\nabcd\r\n.\r\n", 14, "abc\nabcd\n#1||14|11");
    check_n(BARE_LF_NORMALIZE, 10, "abc\r\nabcd\r\nmore\r\n.\r\n", 20,
            "abc\n#-1|" ERR_SIZE "|20|17");
    /* The stuffing dot is not part of the decoded size. */
    check_n(BARE_LF_NORMALIZE, 3, "..\r\n.\r\n", 7, ".\n#1||7|3");
    /* 0 means no limit. */
    check_n(BARE_LF_NORMALIZE, 0, "abc\r\n.\r\n", 8, "abc\n#1||8|5");
}

static void round_trip(const char *const *lines, size_t n)
{
    char wire[4096], out[OUT_MAX], expect[OUT_MAX];
    struct sink s = {out, 0};
    struct smtp_data_dec *d = smtp_data_dec_new(BARE_LF_REJECT, 0, sink_line, &s);
    size_t w = 0, i, c, e = 0;
    const char *err = NULL;
    assert_non_null(d);
    out[0] = '\0';
    expect[0] = '\0';
    for (i = 0; i < n; i++) {
        w += smtp_data_encode_line(wire + w, lines[i], strlen(lines[i]));
        e += (size_t)snprintf(expect + e, sizeof(expect) - e, "%s\n", lines[i]);
    }
    memcpy(wire + w, ".\r\n", 3);
    w += 3;
    assert_int_equal(smtp_data_dec_feed(d, wire, w, &c, &err), 1);
    assert_int_equal(c, w);
    assert_string_equal(out, expect);
    smtp_data_dec_free(d);
}

static void test_round_trip(void **state)
{
    static const char *const lines[] = {".", "..", ".x", "", "a", " .", ".\t.", "end."};
    (void)state;
    round_trip(lines, sizeof(lines) / sizeof(lines[0]));
    round_trip(lines, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple),
        cmocka_unit_test(test_dot_stuffing),
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_reject),
        cmocka_unit_test(test_nul_refuses_the_message),
        cmocka_unit_test(test_cr_at_feed_boundary),
        cmocka_unit_test(test_line_length),
        cmocka_unit_test(test_huge_line_bounded),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
