#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/log.h"
#include "common/log_fields.h"

static struct log_fields parse(const char *msg)
{
    struct log_fields f;
    memset(&f, 'X', sizeof(f)); /* every member must be written */
    log_fields_parse(msg, strlen(msg), &f);
    return f;
}

static void test_bare_values(void **state)
{
    (void)state;
    struct log_fields f = parse("event=message session=3f9c0a1b2c3d4e5f device=copier-3f "
                                "account=scanners rcpts=2 queue_id=ABC123 duration_ms=812");
    assert_string_equal(f.event, "message");
    assert_string_equal(f.session, "3f9c0a1b2c3d4e5f");
    assert_string_equal(f.device, "copier-3f");
    assert_string_equal(f.account, "scanners");
    assert_string_equal(f.queue_id, "ABC123");
}

static void test_absent_keys_are_empty(void **state)
{
    (void)state;
    struct log_fields f = parse("event=token_ok account=scanners expires_in=3599");
    assert_string_equal(f.event, "token_ok");
    assert_string_equal(f.account, "scanners");
    assert_string_equal(f.session, "");
    assert_string_equal(f.device, "");
    assert_string_equal(f.queue_id, "");
    f = parse("");
    assert_string_equal(f.event, "");
}

static void test_no_event(void **state)
{
    (void)state;
    struct log_fields f = parse("listening on 0.0.0.0:25 session=ab12");
    assert_string_equal(f.event, "");
    assert_string_equal(f.session, "ab12");
    /* a key only counts whole: "subevent=" and "event" without '=' are not event= */
    f = parse("subevent=x event device_event=y");
    assert_string_equal(f.event, "");
}

static void test_quoted_values(void **state)
{
    (void)state;
    char safe[64];
    const char raw[] = "Copier \"3rd\" floor";
    char msg[256];
    snprintf(msg, sizeof(msg), "event=auth_ok device=%s account=\"scan ners\" upstream=\"250 OK\"",
             log_safe(safe, sizeof(safe), raw, strlen(raw)));
    assert_string_equal(safe, "\"Copier \\x223rd\\x22 floor\"");
    struct log_fields f = parse(msg);
    assert_string_equal(f.event, "auth_ok");
    assert_string_equal(f.device, "Copier \"3rd\" floor");
    assert_string_equal(f.account, "scan ners");
}

static void test_quoted_spaces_hide_keys(void **state)
{
    (void)state;
    /* key=value text inside a quoted value is data, not a field */
    struct log_fields f =
        parse("event=smtp_reply text=\"x account=evil event=forged session=1\" account=real");
    assert_string_equal(f.event, "smtp_reply");
    assert_string_equal(f.account, "real");
    assert_string_equal(f.session, "");
}

static void test_truncated_quote_is_dropped(void **state)
{
    (void)state;
    /* the line was cut inside the quote: the value is incomplete, so no field */
    struct log_fields f = parse("event=message session=ab account=\"scan ners");
    assert_string_equal(f.event, "message");
    assert_string_equal(f.session, "ab");
    assert_string_equal(f.account, "");
    f = parse("event=message device=\"");
    assert_string_equal(f.device, "");
    /* an escape cut short is kept as the bytes it is */
    f = parse("event=x device=\"ab\\x4\"");
    assert_string_equal(f.device, "ab\\x5cx4");
}

static void test_repeated_key_first_wins(void **state)
{
    (void)state;
    struct log_fields f = parse("event=one account=a event=two account=b");
    assert_string_equal(f.event, "one");
    assert_string_equal(f.account, "a");
    /* the first occurrence decides even when it yields nothing */
    f = parse("event=x account= account=b device=\"\" device=c");
    assert_string_equal(f.account, "");
    assert_string_equal(f.device, "");
}

static void test_hostile_bytes(void **state)
{
    (void)state;
    /* escaped control bytes, backslash and non-ASCII stay escaped; printable ones come back */
    struct log_fields f = parse("event=x device=\"a\\x0ab\\x00c\\x5cd\\xc3\\xa9\\x41\"");
    assert_string_equal(f.device, "a\\x0ab\\x00c\\x5cd\\xc3\\xa9A");
    /* raw control bytes and a raw backslash in a bare value are escaped the same way */
    const char msg[] = "event=x\tdevice=a\x01\x7f\\b account=\xff\r\n";
    f = parse(msg);
    assert_string_equal(f.event, "x\\x09device=a\\x01\\x7f\\x5cb");
    assert_string_equal(f.device, "");
    assert_string_equal(f.account, "\\xff\\x0d\\x0a");
    /* a NUL inside the length counts as a byte, not the end */
    const char nul[] = "event=x account=a\0b session=s";
    log_fields_parse(nul, sizeof(nul) - 1, &f);
    assert_string_equal(f.account, "a\\x00b");
    assert_string_equal(f.session, "s");
    /* garbage between tokens is skipped */
    f = parse("\"\" = == =x \"event=q account=z");
    assert_string_equal(f.event, "");
    assert_string_equal(f.account, "z");
    /* uppercase or odd key characters are not keys */
    f = parse("EVENT=a ev-ent=b event=c");
    assert_string_equal(f.event, "c");
}

static void test_length_is_honoured(void **state)
{
    (void)state;
    const char msg[] = "event=message account=scanners";
    struct log_fields f;
    log_fields_parse(msg, strlen("event=message account=scan"), &f);
    assert_string_equal(f.account, "scan");
    log_fields_parse(msg, 0, &f);
    assert_string_equal(f.event, "");
}

static void test_too_long_is_dropped_not_cut(void **state)
{
    (void)state;
    char msg[1024];
    char longv[LOG_FIELD_MAX + 1];
    memset(longv, 'a', sizeof(longv) - 1);
    longv[sizeof(longv) - 1] = '\0';
    snprintf(msg, sizeof(msg), "event=x account=%s device=d", longv);
    struct log_fields f = parse(msg);
    assert_string_equal(f.account, "");
    assert_string_equal(f.device, "d");
    /* exactly the largest that fits */
    longv[LOG_FIELD_MAX - 1] = '\0';
    snprintf(msg, sizeof(msg), "event=x account=%s", longv);
    f = parse(msg);
    assert_int_equal(strlen(f.account), LOG_FIELD_MAX - 1);
    /* escaping counts: 40 control bytes become 160 characters */
    char esc[256] = "event=x device=\"";
    for (int i = 0; i < 40; i++)
        strcat(esc, "\\x01");
    strcat(esc, "\"");
    f = parse(esc);
    assert_string_equal(f.device, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bare_values),
        cmocka_unit_test(test_absent_keys_are_empty),
        cmocka_unit_test(test_no_event),
        cmocka_unit_test(test_quoted_values),
        cmocka_unit_test(test_quoted_spaces_hide_keys),
        cmocka_unit_test(test_truncated_quote_is_dropped),
        cmocka_unit_test(test_repeated_key_first_wins),
        cmocka_unit_test(test_hostile_bytes),
        cmocka_unit_test(test_length_is_honoured),
        cmocka_unit_test(test_too_long_is_dropped_not_cut),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
