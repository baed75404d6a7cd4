/* Per-device rolling windows with a fake clock (proxy/runtime/device_limits.c): the hour and the
 * day slide bucket by bucket, a give-back undoes a take, devices count apart, a reload keeps the
 * counts of the names it keeps, and the spam refusals that reach block_after_refusals in 24 hours
 * report the block once, then start again. Also which upstream replies count as spam
 * (proxy/smtp/spam_reply.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "proxy/config/config.h"
#include "proxy/runtime/device_limits.h"
#include "proxy/smtp/spam_reply.h"

static int64_t fake_now;
static int64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_now;
}

static char copier[] = "copier", plotter[] = "plotter";

/* copier: 3 messages an hour, 5 recipients a day, blocked after 2 spam refusals; plotter: none */
static struct cfg_device devs[2];
static struct config cfg;

static struct device_limits *mk(void)
{
    memset(devs, 0, sizeof(devs));
    devs[0].name = copier;
    devs[0].max_messages_per_hour = 3;
    devs[0].max_recipients_per_day = 5;
    devs[0].block_after_refusals = 2;
    devs[1].name = plotter;
    memset(&cfg, 0, sizeof(cfg));
    cfg.devices = devs;
    cfg.ndevices = 2;
    struct device_limits *l = device_limits_new(fake_clock, NULL);
    assert_non_null(l);
    assert_int_equal(device_limits_configure(l, &cfg), 0);
    fake_now = 1800000000; /* a multiple of 60 and of 900 */
    return l;
}

static void test_hour_slides(void **state)
{
    (void)state;
    struct device_limits *l = mk();
    unsigned max = 0;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(device_limits_take(l, "copier", DEVICE_LIMIT_MESSAGES, &max), 0);
        fake_now += 600; /* at 0, 10 and 20 minutes */
    }
    /* at 30 minutes: full */
    assert_int_equal(device_limits_take(l, "copier", DEVICE_LIMIT_MESSAGES, &max), 1);
    assert_int_equal(max, 3);
    assert_int_equal(device_limits_count(l, "copier", DEVICE_LIMIT_MESSAGES), 3);
    /* a refusal takes nothing: still 3 */
    assert_int_equal(device_limits_count(l, "copier", DEVICE_LIMIT_MESSAGES), 3);
    /* 59 minutes after the first it still counts; at 60 minutes it has left the window */
    fake_now = 1800000000 + 3599;
    assert_int_equal(device_limits_take(l, "copier", DEVICE_LIMIT_MESSAGES, &max), 1);
    fake_now = 1800000000 + 3600;
    assert_int_equal(device_limits_count(l, "copier", DEVICE_LIMIT_MESSAGES), 2);
    assert_int_equal(device_limits_take(l, "copier", DEVICE_LIMIT_MESSAGES, &max), 0);
    assert_int_equal(device_limits_take(l, "copier", DEVICE_LIMIT_MESSAGES, &max), 1);
    /* two hours of silence: empty */
    fake_now += 2 * 3600;
    assert_int_equal(device_limits_count(l, "copier", DEVICE_LIMIT_MESSAGES), 0);
    device_limits_free(l);
}

static void test_day_and_give_back(void **state)
{
    (void)state;
    struct device_limits *l = mk();
    unsigned max = 0;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(device_limits_take(l, "copier", DEVICE_LIMIT_RECIPIENTS, &max), 0);
        fake_now += 3600;
    }
    assert_int_equal(device_limits_take(l, "copier", DEVICE_LIMIT_RECIPIENTS, &max), 1);
    assert_int_equal(max, 5);
    /* the upstream refused the last one: given back, one more fits */
    device_limits_give_back(l, "copier", DEVICE_LIMIT_RECIPIENTS);
    assert_int_equal(device_limits_count(l, "copier", DEVICE_LIMIT_RECIPIENTS), 4);
    assert_int_equal(device_limits_take(l, "copier", DEVICE_LIMIT_RECIPIENTS, &max), 0);
    assert_int_equal(device_limits_take(l, "copier", DEVICE_LIMIT_RECIPIENTS, &max), 1);
    /* 24 hours after the first, it is gone; the others stay */
    fake_now = 1800000000 + 86400;
    assert_int_equal(device_limits_count(l, "copier", DEVICE_LIMIT_RECIPIENTS), 4);
    /* a give-back never goes below zero */
    fake_now += 7 * 86400;
    device_limits_give_back(l, "copier", DEVICE_LIMIT_RECIPIENTS);
    assert_int_equal(device_limits_count(l, "copier", DEVICE_LIMIT_RECIPIENTS), 0);
    device_limits_free(l);
}

static void test_devices_apart_and_unknown(void **state)
{
    (void)state;
    struct device_limits *l = mk();
    unsigned max = 0;
    /* no limit, unknown device, no table: never refused */
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(device_limits_take(l, "plotter", DEVICE_LIMIT_MESSAGES, &max), 0);
        assert_int_equal(device_limits_take(l, "nosuch", DEVICE_LIMIT_MESSAGES, &max), 0);
        assert_int_equal(device_limits_take(NULL, "copier", DEVICE_LIMIT_MESSAGES, &max), 0);
    }
    assert_int_equal(device_limits_count(l, "copier", DEVICE_LIMIT_MESSAGES), 0);
    assert_int_equal(device_limits_take(l, "copier", DEVICE_LIMIT_MESSAGES, &max), 0);
    assert_int_equal(device_limits_count(l, "copier", DEVICE_LIMIT_RECIPIENTS), 0);
    device_limits_free(l);
}

static void test_reload_keeps_counts(void **state)
{
    (void)state;
    struct device_limits *l = mk();
    unsigned max = 0;
    for (int i = 0; i < 3; i++)
        assert_int_equal(device_limits_take(l, "copier", DEVICE_LIMIT_MESSAGES, &max), 0);
    /* the new config: copier's limit raised to 4, plotter gone, a new device with a limit */
    static char scanner[] = "scanner";
    struct cfg_device nd[2];
    memset(nd, 0, sizeof(nd));
    nd[0].name = scanner;
    nd[0].max_messages_per_hour = 1;
    nd[1].name = copier;
    nd[1].max_messages_per_hour = 4;
    struct config ncfg;
    memset(&ncfg, 0, sizeof(ncfg));
    ncfg.devices = nd;
    ncfg.ndevices = 2;
    assert_int_equal(device_limits_configure(l, &ncfg), 0);
    assert_int_equal(device_limits_count(l, "copier", DEVICE_LIMIT_MESSAGES), 3);
    assert_int_equal(device_limits_take(l, "copier", DEVICE_LIMIT_MESSAGES, &max), 0);
    assert_int_equal(device_limits_take(l, "copier", DEVICE_LIMIT_MESSAGES, &max), 1);
    assert_int_equal(max, 4);
    assert_int_equal(device_limits_take(l, "scanner", DEVICE_LIMIT_MESSAGES, &max), 0);
    assert_int_equal(device_limits_take(l, "scanner", DEVICE_LIMIT_MESSAGES, &max), 1);
    /* the limit removed: nothing refused, and counts do not grow meanwhile */
    nd[1].max_messages_per_hour = 0;
    assert_int_equal(device_limits_configure(l, &ncfg), 0);
    assert_int_equal(device_limits_take(l, "copier", DEVICE_LIMIT_MESSAGES, &max), 0);
    assert_int_equal(device_limits_count(l, "copier", DEVICE_LIMIT_MESSAGES), 4);
    assert_int_equal(device_limits_count(l, "plotter", DEVICE_LIMIT_MESSAGES), 0);
    device_limits_free(l);
}

static void test_spam_refusals(void **state)
{
    (void)state;
    struct device_limits *l = mk();
    assert_int_equal(device_limits_spam_refusal(l, "copier"), 0);
    /* 24 hours later the first has left the window */
    fake_now += 86400;
    assert_int_equal(device_limits_spam_refusal(l, "copier"), 0);
    fake_now += 3600;
    assert_int_equal(device_limits_spam_refusal(l, "copier"), 2); /* blocked */
    /* the count starts again */
    assert_int_equal(device_limits_spam_refusal(l, "copier"), 0);
    assert_int_equal(device_limits_spam_refusal(l, "copier"), 2);
    /* no block_after_refusals: never */
    for (int i = 0; i < 100; i++)
        assert_int_equal(device_limits_spam_refusal(l, "plotter"), 0);
    assert_int_equal(device_limits_spam_refusal(l, "nosuch"), 0);
    device_limits_free(l);
}

static void test_spam_replies(void **state)
{
    (void)state;
    assert_true(spam_reply_match(550, "5.7.708", "Access denied, traffic not accepted"));
    assert_true(spam_reply_match(550, "5.7.501", "Access denied, spam abuse detected"));
    assert_true(spam_reply_match(550, "5.7.705", NULL));
    assert_true(spam_reply_match(554, "5.7.1", "Message rejected as SPAM by Content Filtering"));
    assert_false(spam_reply_match(550, "5.7.1", "Relaying denied"));
    assert_false(spam_reply_match(550, "5.7.60", "Client does not have permissions"));
    assert_false(spam_reply_match(550, "5.7.703", "blocked by your organization"));
    assert_false(spam_reply_match(550, "5.7.520", "external forwarding"));
    assert_false(spam_reply_match(450, "4.7.708", "spam")); /* temporary */
    assert_false(spam_reply_match(550, "", "spam"));
    assert_false(spam_reply_match(550, NULL, "spam"));
    assert_true(spam_reply_line_match("550 5.7.708 Access denied, traffic not accepted"));
    assert_true(spam_reply_line_match("550-5.7.1 spam detected\r\n550 5.7.1 more"));
    assert_true(spam_reply_line_match("550 5.7.750"));
    assert_false(spam_reply_line_match("550 5.7.7080 x"));
    assert_false(spam_reply_line_match("550 spam"));
    assert_false(spam_reply_line_match("55 5.7.708"));
    assert_false(spam_reply_line_match("250 2.0.0 spam ok"));
    assert_false(spam_reply_line_match(""));
    assert_false(spam_reply_line_match(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hour_slides),
        cmocka_unit_test(test_day_and_give_back),
        cmocka_unit_test(test_devices_apart_and_unknown),
        cmocka_unit_test(test_reload_keeps_counts),
        cmocka_unit_test(test_spam_refusals),
        cmocka_unit_test(test_spam_replies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
