/* Unit tests for proxy/smtp/smtp_parse.c. Every case runs fed whole, one byte at a time, and in
 * 7-byte pieces; all must give the same exact result. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/smtp/smtp_parse.h"

#define OUT_MAX 65536

/* One line of text per result: "VERB|verb_text|arg|path|K=V K" or "ERR|reply". */
static void describe(char *out, size_t outlen, int r, const struct smtp_cmd *cmd, const char *err)
{
    size_t n = strlen(out), i;
    if (r < 0) {
        snprintf(out + n, outlen - n, "ERR|%s\n", err);
        return;
    }
    n += (size_t)snprintf(out + n, outlen - n, "%s|%s|%s|%s|", smtp_verb_str(cmd->verb),
                          cmd->verb_text, cmd->arg, cmd->path);
    for (i = 0; i < cmd->nparams && n < outlen; i++)
        n += (size_t)snprintf(out + n, outlen - n, "%s%s%s%s", i ? " " : "", cmd->params[i].key,
                              cmd->params[i].value ? "=" : "",
                              cmd->params[i].value ? cmd->params[i].value : "");
    if (n < outlen)
        snprintf(out + n, outlen - n, "\n");
}

/* Feed in pieces of `step` bytes, re-feeding what a completed line left unconsumed. */
static void run(enum smtp_parse_mode mode, const char *in, size_t len, size_t step, char *out,
                size_t outlen)
{
    struct smtp_parser *p = smtp_parse_new();
    size_t pos = 0;
    assert_non_null(p);
    smtp_parse_set_mode(p, mode);
    out[0] = '\0';
    while (pos < len) {
        size_t chunk = len - pos < step ? len - pos : step;
        size_t consumed = 12345;
        struct smtp_cmd cmd;
        const char *err = NULL;
        int r = smtp_parse_next(p, in + pos, chunk, &consumed, &cmd, &err);
        assert_true(consumed <= chunk);
        if (r == 0) {
            assert_int_equal(consumed, chunk);
        } else {
            assert_true(consumed > 0);
            assert_int_equal(in[pos + consumed - 1], '\n');
            describe(out, outlen, r, &cmd, err);
        }
        pos += consumed;
    }
    smtp_parse_free(p);
}

static void check_mode_n(enum smtp_parse_mode mode, const char *in, size_t len,
                         const char *expected)
{
    static const size_t steps[] = {0, 1, 7};
    static char out[OUT_MAX]; /* static: a failed assert longjmps past any free() */
    size_t i;
    for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        run(mode, in, len, steps[i] ? steps[i] : len, out, OUT_MAX);
        if (strcmp(out, expected) != 0)
            fprintf(stderr, "step %zu: got\n%s--- expected\n%s---\n", steps[i], out, expected);
        assert_string_equal(out, expected);
    }
}

static void check(const char *in, const char *expected)
{
    check_mode_n(SMTP_PARSE_COMMAND, in, strlen(in), expected);
}

static void test_basic_verbs(void **state)
{
    (void)state;
    check("EHLO copier.example\r\n", "EHLO|EHLO|copier.example||\n");
    check("ehlo copier\n", "EHLO|ehlo|copier||\n");
    check("HeLo x\r\n", "HELO|HeLo|x||\n");
    check("DATA\r\nRSET\r\nQUIT\r\nSTARTTLS\r\nNOOP\r\n",
          "DATA|DATA|||\nRSET|RSET|||\nQUIT|QUIT|||\nSTARTTLS|STARTTLS|||\nNOOP|NOOP|||\n");
    check("NOOP hello there\r\nHELP MAIL\r\nVRFY bob\r\nEXPN list\r\n",
          "NOOP|NOOP|hello there||\nHELP|HELP|MAIL||\nVRFY|VRFY|bob||\nEXPN|EXPN|list||\n");
    check("BDAT 100 LAST\r\n", "BDAT|BDAT|100 LAST||\n");
    check("AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n", "AUTH|AUTH|PLAIN AGJvYgBzZWNyZXQ=||\n");
    check("auth login\r\n", "AUTH|auth|login||\n");
    /* Trailing blanks carry nothing and are tolerated. */
    check("DATA \r\n", "DATA|DATA|||\n");
}

static void test_unknown_and_empty(void **state)
{
    (void)state;
    check("XFOO bar\r\n", "UNKNOWN|XFOO|bar||\n");
    check("MAILX FROM:<a@b>\r\n", "UNKNOWN|MAILX|FROM:<a@b>||\n");
    check("\r\n", "ERR|500 5.5.2 Empty command\n");
    check("\n", "ERR|500 5.5.2 Empty command\n");
    check("   \r\n", "ERR|500 5.5.2 Empty command\n");
    check(" NOOP\r\n", "ERR|500 5.5.2 Syntax error, command unrecognized\n");
}

static void test_no_args(void **state)
{
    (void)state;
    check("DATA x\r\n", "ERR|501 5.5.4 Syntax error: no parameters allowed\n");
    check("QUIT now\r\n", "ERR|501 5.5.4 Syntax error: no parameters allowed\n");
    check("RSET 1\r\n", "ERR|501 5.5.4 Syntax error: no parameters allowed\n");
    check("STARTTLS x\r\n", "ERR|501 5.5.4 Syntax error: no parameters allowed\n");
    check("EHLO\r\n", "ERR|501 5.5.4 Syntax: EHLO hostname\n");
    check("EHLO \r\n", "ERR|501 5.5.4 Syntax: EHLO hostname\n");
    check("HELO\r\n", "ERR|501 5.5.4 Syntax: HELO hostname\n");
    check("AUTH\r\n", "ERR|501 5.5.4 Syntax: AUTH mechanism [initial-response]\n");
    check("BDAT\r\n", "ERR|501 5.5.4 Syntax: BDAT size [LAST]\n");
}

static void test_mail(void **state)
{
    (void)state;
    check("MAIL FROM:<a@b.example>\r\n", "MAIL|MAIL|FROM:<a@b.example>|a@b.example|\n");
    check("mail from:<a@b>\r\n", "MAIL|mail|from:<a@b>|a@b|\n");
    check("MAIL FROM: <a@b>\r\n", "MAIL|MAIL|FROM: <a@b>|a@b|\n");
    check("MAIL FROM:<>\r\n", "MAIL|MAIL|FROM:<>||\n");
    check("MAIL FROM:<> SIZE=100\r\n", "MAIL|MAIL|FROM:<> SIZE=100||SIZE=100\n");
    check("MAIL FROM:<a@b> size=1000 body=8bitmime smtputf8\r\n",
          "MAIL|MAIL|FROM:<a@b> size=1000 body=8bitmime smtputf8|a@b|SIZE=1000 "
          "BODY=8bitmime SMTPUTF8\n");
    check("MAIL FROM:<a@b>  SIZE=1  \r\n", "MAIL|MAIL|FROM:<a@b>  SIZE=1|a@b|SIZE=1\n");
    check("MAIL FROM:<\"john doe\"@b>\r\n", "MAIL|MAIL|FROM:<\"john doe\"@b>|\"john doe\"@b|\n");
    check("MAIL FROM:<\"a\\\"b\"@b>\r\n", "MAIL|MAIL|FROM:<\"a\\\"b\"@b>|\"a\\\"b\"@b|\n");
    check("MAIL FROM:<a@[192.0.2.1]>\r\n", "MAIL|MAIL|FROM:<a@[192.0.2.1]>|a@[192.0.2.1]|\n");
    check("MAIL FROM:<j\xc3\xb6rg@b\xc3\xa4r.example>\r\n",
          "MAIL|MAIL|FROM:<j\xc3\xb6rg@b\xc3\xa4r.example>|j\xc3\xb6rg@b\xc3\xa4r.example|\n");
    /* Source route: accepted and dropped (RFC 5321 4.1.2). */
    check("MAIL FROM:<@relay1,@relay2:a@b>\r\n", "MAIL|MAIL|FROM:<@relay1,@relay2:a@b>|a@b|\n");
}

static void test_mail_bad(void **state)
{
    (void)state;
    check("MAIL a@b\r\n", "ERR|501 5.5.4 Syntax: MAIL FROM:<address>\n");
    check("MAIL FROM:a@b\r\n", "ERR|501 5.5.4 Syntax: MAIL FROM:<address>\n");
    check("MAIL FROM:  <a@b>\r\n", "ERR|501 5.5.4 Syntax: MAIL FROM:<address>\n");
    check("MAIL TO:<a@b>\r\n", "ERR|501 5.5.4 Syntax: MAIL FROM:<address>\n");
    check("MAIL\r\n", "ERR|501 5.5.4 Syntax: MAIL FROM:<address>\n");
    check("MAIL FROM:<a@b>SIZE=1\r\n", "ERR|501 5.5.4 Syntax: MAIL FROM:<address>\n");
    check("MAIL FROM:<a@b\r\n", "ERR|501 5.1.7 Bad sender address syntax\n");
    check("MAIL FROM:<a b@c>\r\n", "ERR|501 5.1.7 Bad sender address syntax\n");
    check("MAIL FROM:<a<b@c>\r\n", "ERR|501 5.1.7 Bad sender address syntax\n");
    check("MAIL FROM:<\"a>b\"@c>\r\n", "ERR|501 5.1.7 Bad sender address syntax\n");
    check("MAIL FROM:<\"a<b\"@c>\r\n", "ERR|501 5.1.7 Bad sender address syntax\n");
    check("MAIL FROM:<@b>\r\n", "ERR|501 5.1.7 Bad sender address syntax\n");
    check("MAIL FROM:<a@>\r\n", "ERR|501 5.1.7 Bad sender address syntax\n");
    check("MAIL FROM:<postmaster>\r\n", "ERR|501 5.1.7 Bad sender address syntax\n");
    check("MAIL FROM:<@r1,r2:a@b>\r\n", "ERR|501 5.1.7 Bad sender address syntax\n");
    check("MAIL FROM:<@r1:>\r\n", "ERR|501 5.1.7 Bad sender address syntax\n");
    check("MAIL FROM:<a@b c>\r\n", "ERR|501 5.1.7 Bad sender address syntax\n");
    check("MAIL FROM:<a@[1.2.3.4>\r\n", "ERR|501 5.1.7 Bad sender address syntax\n");
    /* Control bytes anywhere in a command are refused before any parsing. */
    check("MAIL FROM:<a\x01@b>\r\n", "ERR|500 5.5.2 Invalid character in command\n");
    check("MAIL FROM:<\"a\x01\"@b>\r\n", "ERR|500 5.5.2 Invalid character in command\n");
    check("MAIL FROM:<a@b>\tSIZE=1\r\n", "ERR|500 5.5.2 Invalid character in command\n");
    check("EHLO a\x7f\r\n", "ERR|500 5.5.2 Invalid character in command\n");
}

static void test_rcpt(void **state)
{
    (void)state;
    check("RCPT TO:<bob@example.org>\r\n", "RCPT|RCPT|TO:<bob@example.org>|bob@example.org|\n");
    check("rcpt to: <bob@x>\r\n", "RCPT|rcpt|to: <bob@x>|bob@x|\n");
    check("RCPT TO:<postmaster>\r\n", "RCPT|RCPT|TO:<postmaster>|postmaster|\n");
    check("RCPT TO:<PostMaster>\r\n", "RCPT|RCPT|TO:<PostMaster>|PostMaster|\n");
    check("RCPT TO:<@a,@b:bob@x> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@x\r\n",
          "RCPT|RCPT|TO:<@a,@b:bob@x> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@x|bob@x|"
          "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@x\n");
    check("RCPT TO:<>\r\n", "ERR|501 5.1.3 Bad recipient address syntax\n");
    check("RCPT TO:<bob>\r\n", "ERR|501 5.1.3 Bad recipient address syntax\n");
    check("RCPT TO:<postmasterx>\r\n", "ERR|501 5.1.3 Bad recipient address syntax\n");
    check("RCPT FROM:<a@b>\r\n", "ERR|501 5.5.4 Syntax: RCPT TO:<address>\n");
    check("RCPT TO:bob@x\r\n", "ERR|501 5.5.4 Syntax: RCPT TO:<address>\n");
}

static void test_path_length(void **state)
{
    char line[600], expect[1200];
    char local[300];
    (void)state;
    /* 254 + "@b" = 256 is the limit; 257 is over. */
    memset(local, 'a', sizeof(local));
    local[254] = '\0';
    snprintf(line, sizeof(line), "MAIL FROM:<%s@b>\r\n", local); /* 256 */
    snprintf(expect, sizeof(expect), "MAIL|MAIL|FROM:<%s@b>|%s@b|\n", local, local);
    check(line, expect);
    local[254] = 'a';
    local[255] = '\0';
    snprintf(line, sizeof(line), "MAIL FROM:<%s@b>\r\n", local); /* 257 */
    check(line, "ERR|501 5.1.3 Address too long\n");
}

static void test_params(void **state)
{
    char line[1024];
    size_t n, i;
    (void)state;
    check("MAIL FROM:<a@b> SIZE=\r\n", "ERR|501 5.5.4 Syntax error in parameters\n");
    check("MAIL FROM:<a@b> =1\r\n", "ERR|501 5.5.4 Syntax error in parameters\n");
    check("MAIL FROM:<a@b> -X\r\n", "ERR|501 5.5.4 Syntax error in parameters\n");
    check("MAIL FROM:<a@b> X_Y=1\r\n", "ERR|501 5.5.4 Syntax error in parameters\n");
    check("MAIL FROM:<a@b> X=1=2\r\n", "ERR|501 5.5.4 Syntax error in parameters\n");
    check("MAIL FROM:<a@b> X=\xc3\xa4\r\n", "ERR|501 5.5.4 Syntax error in parameters\n");
    check("MAIL FROM:<a@b> x-y=1\r\n", "MAIL|MAIL|FROM:<a@b> x-y=1|a@b|X-Y=1\n");
    /* Exactly SMTP_MAX_PARAMS is fine, one more is refused. */
    n = (size_t)snprintf(line, sizeof(line), "MAIL FROM:<a@b>");
    for (i = 0; i < SMTP_MAX_PARAMS; i++)
        n += (size_t)snprintf(line + n, sizeof(line) - n, " P%zu", i);
    snprintf(line + n, sizeof(line) - n, "\r\n");
    {
        struct smtp_parser *p = smtp_parse_new();
        struct smtp_cmd cmd;
        const char *err = NULL;
        size_t c;
        assert_int_equal(smtp_parse_next(p, line, strlen(line), &c, &cmd, &err), 1);
        assert_int_equal(cmd.nparams, SMTP_MAX_PARAMS);
        assert_string_equal(cmd.params[15].key, "P15");
        smtp_parse_free(p);
    }
    snprintf(line + n, sizeof(line) - n, " P16\r\n");
    check(line, "ERR|501 5.5.4 Too many parameters\n");
    /* A huge count of parameters within the line limit. */
    n = (size_t)snprintf(line, sizeof(line), "MAIL FROM:<a@b>");
    while (n < 500)
        n += (size_t)snprintf(line + n, sizeof(line) - n, " X");
    snprintf(line + n, sizeof(line) - n, "\r\n");
    check(line, "ERR|501 5.5.4 Too many parameters\n");
}

static void test_nul(void **state)
{
    static const char in[] = "NOOP a\0b\r\nNOOP\r\n";
    (void)state;
    check_mode_n(SMTP_PARSE_COMMAND, in, sizeof(in) - 1,
                 "ERR|500 5.5.2 Invalid character (NUL)\nNOOP|NOOP|||\n");
    check_mode_n(SMTP_PARSE_LINE, in, sizeof(in) - 1,
                 "ERR|500 5.5.2 Invalid character (NUL)\nLINE||NOOP||\n");
}

/* A line of `n` bytes of content (terminator excluded): verb, space, then 'x'. */
static char *make_line(const char *verb, size_t n, const char *term)
{
    size_t vl = strlen(verb), tl = strlen(term);
    char *s = malloc(n + tl + 1);
    assert_non_null(s);
    memcpy(s, verb, vl);
    memset(s + vl, 'x', n - vl);
    if (n > vl)
        s[vl] = ' ';
    memcpy(s + n, term, tl + 1);
    return s;
}

static void expect_len(const char *verb, size_t n, const char *term, int ok)
{
    char *line = make_line(verb, n, term);
    char *expect = malloc(n + 64);
    size_t vl = strlen(verb);
    assert_non_null(expect);
    if (ok)
        snprintf(expect, n + 64, "%s|%s|%.*s||\n", (verb[0] == 'N' ? "NOOP" : "AUTH"), verb,
                 (int)(n - vl - 1), line + vl + 1);
    else
        snprintf(expect, n + 64, "ERR|500 5.5.2 Line too long\n");
    check(line, expect);
    free(line);
    free(expect);
}

static void test_line_limits(void **state)
{
    (void)state;
    /* 510 + CRLF = 512 is the limit, for CRLF and bare LF alike. */
    expect_len("NOOP", SMTP_CMD_LINE_MAX - 2, "\r\n", 1);
    expect_len("NOOP", SMTP_CMD_LINE_MAX - 2, "\n", 1);
    expect_len("NOOP", SMTP_CMD_LINE_MAX - 1, "\r\n", 0);
    expect_len("NOOP", SMTP_CMD_LINE_MAX - 1, "\n", 0);
    expect_len("NOOP", 100000, "\r\n", 0);
    /* AUTH lines get the RFC 4954 limit. */
    expect_len("AUTH", SMTP_CMD_LINE_MAX + 100, "\r\n", 1);
    expect_len("auth", SMTP_AUTH_LINE_MAX - 2, "\r\n", 1);
    expect_len("AUTH", SMTP_AUTH_LINE_MAX - 1, "\r\n", 0);
    /* "AUTHX" is not AUTH. */
    expect_len("AUTHX", SMTP_CMD_LINE_MAX + 100, "\r\n", 0);
}

static void test_long_line_recovers(void **state)
{
    size_t big = 3 * 1024 * 1024;
    char *in = malloc(big + 64);
    (void)state;
    assert_non_null(in);
    memset(in, 'A', big);
    strcpy(in + big, "\r\nQUIT\r\n");
    check(in, "ERR|500 5.5.2 Line too long\nQUIT|QUIT|||\n");
    free(in);
}

static void test_line_mode(void **state)
{
    char *line;
    (void)state;
    check_mode_n(SMTP_PARSE_LINE, "dXNlcg==\r\n", 10, "LINE||dXNlcg==||\n");
    check_mode_n(SMTP_PARSE_LINE, "*\r\n", 3, "LINE||*||\n");
    check_mode_n(SMTP_PARSE_LINE, "\r\n", 2, "LINE||||\n");
    check_mode_n(SMTP_PARSE_LINE, " a b \n", 6, "LINE|| a b ||\n");
    line = make_line("x", SMTP_AUTH_LINE_MAX - 2, "\r\n");
    {
        char *expect = malloc(SMTP_AUTH_LINE_MAX + 64);
        assert_non_null(expect);
        snprintf(expect, SMTP_AUTH_LINE_MAX + 64, "LINE||%.*s||\n", SMTP_AUTH_LINE_MAX - 2, line);
        check_mode_n(SMTP_PARSE_LINE, line, strlen(line), expect);
        free(expect);
    }
    free(line);
    line = make_line("x", SMTP_AUTH_LINE_MAX - 1, "\r\n");
    check_mode_n(SMTP_PARSE_LINE, line, strlen(line), "ERR|500 5.5.2 Line too long\n");
    free(line);
}

static void test_pipelining_and_crlf(void **state)
{
    (void)state;
    check("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\nRCPT TO:<e@f>\r\nDATA\r\n",
          "MAIL|MAIL|FROM:<a@b>|a@b|\nRCPT|RCPT|TO:<c@d>|c@d|\nRCPT|RCPT|TO:<e@f>|e@f|\n"
          "DATA|DATA|||\n");
    /* Only one CR is stripped; a second one is a control character. */
    check("NOOP\r\r\n", "ERR|500 5.5.2 Invalid character in command\n");
    check("NO\rOP\r\n", "ERR|500 5.5.2 Invalid character in command\n");
}

static void test_partial_and_reset(void **state)
{
    struct smtp_parser *p = smtp_parse_new();
    struct smtp_cmd cmd;
    const char *err = NULL;
    size_t c = 99;
    (void)state;
    assert_int_equal(smtp_parse_next(p, "RSET", 4, &c, &cmd, &err), 0);
    assert_int_equal(c, 4);
    /* STARTTLS: what was buffered must be forgotten. */
    smtp_parse_reset(p);
    assert_int_equal(smtp_parse_next(p, "QUIT\r\nNOOP\r\n", 12, &c, &cmd, &err), 1);
    assert_int_equal(c, 6);
    assert_int_equal(cmd.verb, SMTP_QUIT);
    smtp_parse_set_mode(p, SMTP_PARSE_LINE);
    smtp_parse_reset(p);
    assert_int_equal(smtp_parse_next(p, "NOOP\r\n", 6, &c, &cmd, &err), 1);
    assert_int_equal(cmd.verb, SMTP_NOOP);
    assert_int_equal(smtp_parse_next(p, "", 0, &c, &cmd, &err), 0);
    assert_int_equal(c, 0);
    smtp_parse_free(p);
    smtp_parse_free(NULL);
    assert_string_equal(smtp_verb_str(SMTP_STARTTLS), "STARTTLS");
    assert_string_equal(smtp_verb_str(SMTP_LINE), "LINE");
    assert_string_equal(smtp_verb_str(SMTP_UNKNOWN), "UNKNOWN");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_verbs),
        cmocka_unit_test(test_unknown_and_empty),
        cmocka_unit_test(test_no_args),
        cmocka_unit_test(test_mail),
        cmocka_unit_test(test_mail_bad),
        cmocka_unit_test(test_rcpt),
        cmocka_unit_test(test_path_length),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_nul),
        cmocka_unit_test(test_line_limits),
        cmocka_unit_test(test_long_line_recovers),
        cmocka_unit_test(test_line_mode),
        cmocka_unit_test(test_pipelining_and_crlf),
        cmocka_unit_test(test_partial_and_reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
