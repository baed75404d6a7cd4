/* Unit tests for proxy/smtp/smtp_reply.c. Every parser case runs fed whole, one byte at a time and
 * in 7-byte pieces; all must give the same exact result. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/smtp/smtp_reply.h"

#define OUT_MAX 65536

/* "code|enhanced|line1|line2...\n" per reply, "ERR|msg\n" for -1 (which ends the run). */
static void describe(char *out, size_t outlen, int r, const struct smtp_reply *rep, const char *err)
{
    size_t n = strlen(out), i;
    if (r < 0) {
        snprintf(out + n, outlen - n, "ERR|%s\n", err);
        return;
    }
    n += (size_t)snprintf(out + n, outlen - n, "%d|%s", rep->code, rep->enhanced);
    for (i = 0; i < rep->nlines && n < outlen; i++)
        n += (size_t)snprintf(out + n, outlen - n, "|%s", rep->lines[i]);
    if (n < outlen)
        snprintf(out + n, outlen - n, "\n");
}

static void run(const char *in, size_t len, size_t step, char *out)
{
    struct smtp_reply_parser *p = smtp_reply_new();
    size_t pos = 0;
    int r = 0;
    assert_non_null(p);
    out[0] = '\0';
    while (pos < len && r >= 0) {
        size_t chunk = len - pos < step ? len - pos : step;
        size_t consumed = 12345;
        struct smtp_reply rep;
        const char *err = NULL;
        r = smtp_reply_next(p, in + pos, chunk, &consumed, &rep, &err);
        assert_true(consumed <= chunk);
        if (r == 0)
            assert_int_equal(consumed, chunk);
        else
            describe(out, OUT_MAX, r, &rep, err);
        if (r == 1)
            assert_int_equal(in[pos + consumed - 1], '\n');
        pos += consumed;
    }
    if (r < 0) {
        /* Sticky: the connection is unusable. */
        struct smtp_reply rep;
        const char *err = NULL;
        size_t consumed = 1;
        assert_int_equal(smtp_reply_next(p, "250 ok\r\n", 8, &consumed, &rep, &err), -1);
        assert_int_equal(consumed, 0);
        assert_non_null(err);
    }
    smtp_reply_free(p);
}

static void check_n(const char *in, size_t len, const char *expected)
{
    static const size_t steps[] = {0, 1, 7};
    static char out[OUT_MAX]; /* static: a failed assert longjmps past any free() */
    size_t i;
    for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        run(in, len, steps[i] ? steps[i] : len, out);
        if (strcmp(out, expected) != 0)
            fprintf(stderr, "step %zu: got\n%s--- expected\n%s---\n", steps[i], out, expected);
        assert_string_equal(out, expected);
    }
}

static void check(const char *in, const char *expected)
{
    check_n(in, strlen(in), expected);
}

static void test_single(void **state)
{
    (void)state;
    check("220 mail.example ESMTP ready\r\n", "220||mail.example ESMTP ready\n");
    check("250 2.0.0 OK queued\r\n", "250|2.0.0|2.0.0 OK queued\n");
    check("250 2.1.5\r\n", "250|2.1.5|2.1.5\n");
    check("354\r\n", "354||\n");
    check("354 \r\n", "354||\n");
    check("535 5.7.3 Authentication unsuccessful\n",
          "535|5.7.3|5.7.3 Authentication unsuccessful\n");
    check("550 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled\r\n",
          "550|5.7.139|5.7.139 Authentication unsuccessful, SmtpClientAuthentication is "
          "disabled\n");
    check("432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded\r\n",
          "432|4.3.2|4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded\n");
}

static void test_enhanced(void **state)
{
    (void)state;
    /* The class must match the code's first digit. */
    check("250 5.1.1 odd\r\n", "250||5.1.1 odd\n");
    check("550 5.1.1\r\n", "550|5.1.1|5.1.1\n");
    check("250 2.0.0x\r\n", "250||2.0.0x\n");
    check("250 2.0\r\n", "250||2.0\n");
    check("250 2.0.1234 x\r\n", "250||2.0.1234 x\n");
    check("250 2.100.100 x\r\n", "250|2.100.100|2.100.100 x\n");
    check("250 2..0 x\r\n", "250||2..0 x\n");
    /* Only the first line is looked at. */
    check("250-hello\r\n250 2.0.0 OK\r\n", "250||hello|2.0.0 OK\n");
}

static void test_multiline(void **state)
{
    (void)state;
    check("250-smtp.office365.com Hello\r\n250-SIZE 157286400\r\n250-PIPELINING\r\n"
          "250 AUTH LOGIN XOAUTH2\r\n",
          "250||smtp.office365.com Hello|SIZE 157286400|PIPELINING|AUTH LOGIN XOAUTH2\n");
    check("250-a\n250-\n250\n", "250||a||\n");
    /* Pipelined replies: one at a time, bytes after a reply are left for the next call. */
    check("250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n354 Start mail input\r\n",
          "250|2.1.0|2.1.0 Sender OK\n250|2.1.5|2.1.5 Recipient OK\n354||Start mail input\n");
}

static void test_bad(void **state)
{
    (void)state;
    check("250-a\r\n251 b\r\n", "ERR|reply codes differ between lines\n");
    check("250-a\r\n550 b\r\n", "ERR|reply codes differ between lines\n");
    check("25 x\r\n", "ERR|malformed reply line\n");
    check("2500 x\r\n", "ERR|malformed reply line\n");
    check("250x\r\n", "ERR|malformed reply line\n");
    check("2a0 x\r\n", "ERR|malformed reply line\n");
    check(" 250 x\r\n", "ERR|malformed reply line\n");
    check("\r\n", "ERR|malformed reply line\n");
    check("199 x\r\n", "ERR|reply code out of range\n");
    check("600 x\r\n", "ERR|reply code out of range\n");
    check("099 x\r\n", "ERR|reply code out of range\n");
    check_n("250 a\0b\r\n", 9, "ERR|NUL byte in reply\n");
    /* A good reply first, then a bad one. */
    check("220 hi\r\n250-x\r\n5", "220||hi\n");
    check("220 hi\r\n250-x\r\n550 y\r\n", "220||hi\nERR|reply codes differ between lines\n");
}

static void test_limits(void **state)
{
    static char in[SMTP_REPLY_LINE_MAX * 2 + 64];
    static char expect[SMTP_REPLY_LINE_MAX * 2 + 64];
    size_t n, i;
    char *big;
    (void)state;
    /* 2046 + CRLF = 2048: fine; one more is too long. */
    memcpy(in, "250 ", 4);
    memset(in + 4, 'x', SMTP_REPLY_LINE_MAX - 2 - 4);
    memcpy(in + SMTP_REPLY_LINE_MAX - 2, "\r\n", 3);
    snprintf(expect, sizeof(expect), "250||%.*s\n", SMTP_REPLY_LINE_MAX - 6, in + 4);
    check(in, expect);
    memcpy(in + SMTP_REPLY_LINE_MAX - 2, "x\r\n", 4);
    check(in, "ERR|reply line too long\n");
    /* A line that never ends: error as soon as it is too long, not at its end. */
    big = malloc(1 << 20);
    assert_non_null(big);
    memset(big, '2', 1 << 20);
    {
        struct smtp_reply_parser *p = smtp_reply_new();
        struct smtp_reply rep;
        const char *err = NULL;
        size_t c;
        assert_int_equal(smtp_reply_next(p, big, 1 << 20, &c, &rep, &err), -1);
        assert_int_equal(c, SMTP_REPLY_LINE_MAX);
        assert_string_equal(err, "reply line too long");
        smtp_reply_reset(p);
        assert_int_equal(smtp_reply_next(p, "250 ok\r\n", 8, &c, &rep, &err), 1);
        assert_string_equal(rep.lines[0], "ok");
        smtp_reply_free(p);
        smtp_reply_free(NULL);
    }
    free(big);
    /* SMTP_REPLY_MAX_LINES lines are fine, one more is not. */
    big = malloc(SMTP_REPLY_MAX_LINES * 16 + 64);
    assert_non_null(big);
    for (n = 0, i = 0; i < SMTP_REPLY_MAX_LINES - 1; i++)
        n += (size_t)sprintf(big + n, "250-l%zu\r\n", i);
    sprintf(big + n, "250 end\r\n");
    {
        struct smtp_reply_parser *p = smtp_reply_new();
        struct smtp_reply rep;
        const char *err = NULL;
        size_t c;
        assert_int_equal(smtp_reply_next(p, big, strlen(big), &c, &rep, &err), 1);
        assert_int_equal(rep.nlines, SMTP_REPLY_MAX_LINES);
        assert_string_equal(rep.lines[0], "l0");
        assert_string_equal(rep.lines[SMTP_REPLY_MAX_LINES - 2], "l126");
        assert_string_equal(rep.lines[SMTP_REPLY_MAX_LINES - 1], "end");
        smtp_reply_free(p);
    }
    sprintf(big + n, "250-l127\r\n250 end\r\n");
    check(big, "ERR|too many reply lines\n");
    free(big);
}

static void parse_one(const char *in, struct smtp_reply_parser *p, struct smtp_reply *rep)
{
    const char *err = NULL;
    size_t c;
    assert_int_equal(smtp_reply_next(p, in, strlen(in), &c, rep, &err), 1);
    assert_int_equal(c, strlen(in));
}

static void test_caps_exchange(void **state)
{
    struct smtp_reply_parser *p = smtp_reply_new();
    struct smtp_reply rep;
    struct smtp_caps caps;
    (void)state;
    parse_one("250-SN4PR0501CA0057.outlook.office365.com Hello [192.0.2.1]\r\n"
              "250-SIZE 157286400\r\n250-PIPELINING\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n"
              "250-AUTH LOGIN XOAUTH2\r\n250-8BITMIME\r\n250-BINARYMIME\r\n250-CHUNKING\r\n"
              "250 SMTPUTF8\r\n",
              p, &rep);
    smtp_reply_caps(&rep, &caps);
    assert_false(caps.starttls);
    assert_true(caps.pipelining);
    assert_true(caps.eightbitmime);
    assert_true(caps.smtputf8);
    assert_true(caps.enhancedstatuscodes);
    assert_true(caps.dsn);
    assert_true(caps.chunking);
    assert_true(caps.has_size);
    assert_true(caps.size == 157286400ULL);
    assert_int_equal(caps.auth, SMTP_AUTH_LOGIN | SMTP_AUTH_XOAUTH2);
    smtp_reply_free(p);
}

static void test_caps_variants(void **state)
{
    struct smtp_reply_parser *p = smtp_reply_new();
    struct smtp_reply rep;
    struct smtp_caps caps;
    (void)state;
    /* Both AUTH forms, lower case, a SIZE without a number, and the greeting line (which must
     * not count even though it says STARTTLS). */
    parse_one("250-STARTTLS\r\n250-auth=login plain\r\n250-Auth oauthbearer\r\n"
              "250-starttls\r\n250-size\r\n250-AUTH=\r\n250-AUTHX PLAIN XOAUTH2\r\n"
              "250-PIPELINING=1\r\n250 X-OTHER\r\n",
              p, &rep);
    smtp_reply_caps(&rep, &caps);
    assert_true(caps.starttls);
    assert_false(caps.pipelining);
    assert_true(caps.has_size);
    assert_true(caps.size == 0);
    assert_int_equal(caps.auth, SMTP_AUTH_LOGIN | SMTP_AUTH_PLAIN | SMTP_AUTH_OAUTHBEARER);

    parse_one("250-gmail\r\n250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH\r\n"
              "250 SIZE 35882577\r\n",
              p, &rep);
    smtp_reply_caps(&rep, &caps);
    assert_int_equal(caps.auth,
                     SMTP_AUTH_LOGIN | SMTP_AUTH_PLAIN | SMTP_AUTH_XOAUTH2 | SMTP_AUTH_OAUTHBEARER);
    assert_true(caps.size == 35882577ULL);
    assert_false(caps.starttls);

    /* An overflowing or malformed SIZE means no known limit. */
    parse_one("250-x\r\n250 SIZE 99999999999999999999999\r\n", p, &rep);
    smtp_reply_caps(&rep, &caps);
    assert_true(caps.has_size);
    assert_true(caps.size == 0);
    parse_one("250-x\r\n250 SIZE 12ab\r\n", p, &rep);
    smtp_reply_caps(&rep, &caps);
    assert_true(caps.size == 0);
    /* A one-line reply has no capabilities. */
    parse_one("250 STARTTLS\r\n", p, &rep);
    smtp_reply_caps(&rep, &caps);
    assert_false(caps.starttls);
    assert_false(caps.has_size);
    smtp_reply_free(p);
}

static void test_auth_names(void **state)
{
    char buf[64];
    (void)state;
    assert_string_equal(smtp_reply_auth_names(0, buf, sizeof(buf)), "none");
    assert_string_equal(
        smtp_reply_auth_names(SMTP_AUTH_PLAIN | SMTP_AUTH_OAUTHBEARER, buf, sizeof(buf)),
        "PLAIN OAUTHBEARER");
    assert_string_equal(smtp_reply_auth_names(SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN, buf, 8), "PLAIN");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single),        cmocka_unit_test(test_enhanced),
        cmocka_unit_test(test_multiline),     cmocka_unit_test(test_bad),
        cmocka_unit_test(test_limits),        cmocka_unit_test(test_caps_exchange),
        cmocka_unit_test(test_caps_variants), cmocka_unit_test(test_auth_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
