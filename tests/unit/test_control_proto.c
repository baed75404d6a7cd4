/* The control socket's line protocol: request lines split and bounded, payloads checked,
 * replies told apart ("ok" + body, "error" + message, anything else malformed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/admin/control_proto.h"

static int split(const char *text, const char **cmd, const char **arg)
{
    static char buf[CONTROL_LINE_MAX + 16];
    size_t len = strlen(text);
    memcpy(buf, text, len + 1);
    return control_split(buf, len, cmd, arg);
}

static void test_split(void **state)
{
    const char *cmd, *arg;
    (void)state;
    assert_int_equal(split("token scanners", &cmd, &arg), 0);
    assert_string_equal(cmd, "token");
    assert_string_equal(arg, "scanners");
    assert_int_equal(split("accounts", &cmd, &arg), 0);
    assert_string_equal(cmd, "accounts");
    assert_null(arg);
    assert_int_equal(split("accounts\r", &cmd, &arg), 0);
    assert_string_equal(cmd, "accounts");

    assert_int_equal(split("", &cmd, &arg), -1);
    assert_int_equal(split("\r", &cmd, &arg), -1);
    assert_int_equal(split(" token", &cmd, &arg), -1);
    assert_int_equal(split("token ", &cmd, &arg), -1);
    assert_int_equal(split("token  scanners", &cmd, &arg), -1);
    assert_int_equal(split("token a b", &cmd, &arg), -1);
    assert_int_equal(split("token sc\tanners", &cmd, &arg), -1);
    assert_int_equal(split("token sc\x7f", &cmd, &arg), -1);
    assert_int_equal(split("token \xc3\xa9", &cmd, &arg), -1);

    /* embedded NUL: the length says more than the string */
    char nul[] = "token\0scanners";
    assert_int_equal(control_split(nul, sizeof(nul) - 1, &cmd, &arg), -1);
}

static void test_split_limit(void **state)
{
    const char *cmd, *arg;
    char *line = malloc(CONTROL_LINE_MAX + 2);
    (void)state;
    assert_non_null(line);
    memcpy(line, "token ", 6);
    memset(line + 6, 'a', CONTROL_LINE_MAX - 6);
    line[CONTROL_LINE_MAX] = '\0';
    assert_int_equal(control_split(line, CONTROL_LINE_MAX, &cmd, &arg), 0);
    assert_int_equal(strlen(arg), CONTROL_LINE_MAX - 6);
    memcpy(line, "token ", 6);
    line[5] = ' ';
    line[CONTROL_LINE_MAX] = 'a';
    line[CONTROL_LINE_MAX + 1] = '\0';
    assert_int_equal(control_split(line, CONTROL_LINE_MAX + 1, &cmd, &arg), -1);
    free(line);
}

static void test_payload(void **state)
{
    char ok[] = "0.AXoA-abc_def~ghi\r", sp[] = "0.AXoA abc", ctl[] = "0.AX\x01", empty[] = "";
    (void)state;
    assert_int_equal(control_payload_ok(ok, strlen(ok)), 0);
    assert_string_equal(ok, "0.AXoA-abc_def~ghi");
    assert_int_equal(control_payload_ok(sp, strlen(sp)), -1);
    assert_int_equal(control_payload_ok(ctl, strlen(ctl)), -1);
    assert_int_equal(control_payload_ok(empty, 0), -1);
    char *big = malloc(CONTROL_PAYLOAD_MAX + 2);
    assert_non_null(big);
    memset(big, 'x', CONTROL_PAYLOAD_MAX + 1);
    big[CONTROL_PAYLOAD_MAX + 1] = '\0';
    assert_int_equal(control_payload_ok(big, CONTROL_PAYLOAD_MAX + 1), -1);
    big[CONTROL_PAYLOAD_MAX] = '\0';
    assert_int_equal(control_payload_ok(big, CONTROL_PAYLOAD_MAX), 0);
    free(big);
}

/* device-block's reason: a text line, spaces allowed, may be empty, bounded */
static void test_text(void **state)
{
    char ok[] = "stolen copier, ticket 42\r", empty[] = "", ctl[] = "a\tb", hi[] = "vol\xc3\xa9";
    char nul[] = "a\0b";
    (void)state;
    assert_int_equal(control_text_ok(ok, strlen(ok)), 0);
    assert_string_equal(ok, "stolen copier, ticket 42");
    assert_int_equal(control_text_ok(empty, 0), 0);
    assert_int_equal(control_text_ok(ctl, strlen(ctl)), -1);
    assert_int_equal(control_text_ok(hi, strlen(hi)), -1);
    assert_int_equal(control_text_ok(nul, 3), -1);
    char big[CONTROL_TEXT_MAX + 2];
    memset(big, ' ', CONTROL_TEXT_MAX + 1);
    big[CONTROL_TEXT_MAX + 1] = '\0';
    assert_int_equal(control_text_ok(big, CONTROL_TEXT_MAX + 1), -1);
    big[CONTROL_TEXT_MAX] = '\0';
    assert_int_equal(control_text_ok(big, CONTROL_TEXT_MAX), 0);
}

static int reply(const char *text, const char **msg, const char **body)
{
    static char buf[256];
    size_t len = strlen(text);
    memcpy(buf, text, len + 1);
    *msg = *body = NULL;
    return control_reply_parse(buf, len, msg, body);
}

static void test_reply(void **state)
{
    const char *msg, *body;
    (void)state;
    assert_int_equal(reply("ok\neyJ0.x.y\n", &msg, &body), 1);
    assert_string_equal(body, "eyJ0.x.y\n");
    assert_int_equal(reply("ok\r\n", &msg, &body), 1);
    assert_string_equal(body, "");
    assert_int_equal(reply("error unknown account (valid: a, b)\n", &msg, &body), 0);
    assert_string_equal(msg, "unknown account (valid: a, b)");

    assert_int_equal(reply("ok", &msg, &body), -1);       /* no line end: cut short */
    assert_int_equal(reply("error \n", &msg, &body), -1); /* no message */
    assert_int_equal(reply("okay\n", &msg, &body), -1);
    assert_int_equal(reply("", &msg, &body), -1);
    char nul[] = "ok\n\0tail";
    assert_int_equal(control_reply_parse(nul, sizeof(nul) - 1, &msg, &body), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),   cmocka_unit_test(test_split_limit),
        cmocka_unit_test(test_payload), cmocka_unit_test(test_text),
        cmocka_unit_test(test_reply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
