/* Per-device rolling windows with a fake clock (proxy/runtime/device_limits.c): the hour and the
 * day slide bucket by bucket, a give-back undoes a take, devices count apart, a reload keeps the
 * counts of the names it keeps, and the spam refusals that reach block_after_refusals in 24 hours
 * report the block once, then start again; the counts saved and loaded across a restart
 * (device_limits_file.c), a bad file refused whole. Also which upstream replies count as spam
 * (proxy/smtp/spam_reply.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

static char dir[64], path[160];

static void write_file(const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_save_load(void **state)
{
    (void)state;
    char err[512], cmd[128];
    unsigned max = 0;
    snprintf(dir, sizeof(dir), "/tmp/test_device_limits.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/state/%s", dir, DEVICE_LIMITS_FILE);

    struct device_limits *l = mk();
    for (int i = 0; i < 2; i++)
        assert_int_equal(device_limits_take(l, "copier", DEVICE_LIMIT_MESSAGES, &max), 0);
    fake_now += 1200;
    assert_int_equal(device_limits_take(l, "copier", DEVICE_LIMIT_MESSAGES, &max), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(device_limits_take(l, "copier", DEVICE_LIMIT_RECIPIENTS, &max), 0);
    assert_int_equal(device_limits_spam_refusal(l, "copier"), 0);
    assert_int_equal(device_limits_save(l, path, err, sizeof(err)), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    device_limits_free(l);

    /* a new start, 10 minutes later: the same counts */
    int64_t saved_at = fake_now;
    l = mk();
    fake_now = saved_at + 600;
    assert_int_equal(device_limits_load(l, path, err, sizeof(err)), 1);
    assert_int_equal(device_limits_count(l, "copier", DEVICE_LIMIT_MESSAGES), 3);
    assert_int_equal(device_limits_count(l, "copier", DEVICE_LIMIT_RECIPIENTS), 4);
    assert_int_equal(device_limits_take(l, "copier", DEVICE_LIMIT_MESSAGES, &max), 1);
    assert_int_equal(device_limits_spam_refusal(l, "copier"), 2); /* the one before counts */
    device_limits_free(l);

    /* 50 minutes after the first two: those left the hour, the third is still in it */
    l = mk();
    fake_now = saved_at - 1200 + 3600;
    assert_int_equal(device_limits_load(l, path, err, sizeof(err)), 1);
    assert_int_equal(device_limits_count(l, "copier", DEVICE_LIMIT_MESSAGES), 1);
    device_limits_free(l);

    /* names the config no longer has are dropped; an empty file is good */
    write_file(DEVICE_LIMITS_MAGIC "\ngone messages 30000000 5\n");
    l = mk();
    assert_int_equal(device_limits_load(l, path, err, sizeof(err)), 1);
    assert_int_equal(device_limits_count(l, "gone", DEVICE_LIMIT_MESSAGES), 0);
    write_file(DEVICE_LIMITS_MAGIC "\n");
    assert_int_equal(device_limits_load(l, path, err, sizeof(err)), 1);

    /* a bad file: refused whole with its line, nothing taken from it */
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"junk\n", ":1: not a device limits file"},
        {DEVICE_LIMITS_MAGIC "\ncopier messages 30000000 1", ":1: torn"},
        {DEVICE_LIMITS_MAGIC "\ncopier messages 30000000 1\ncopier hours 1 1\n",
         ":3: WINDOW is not"},
        {DEVICE_LIMITS_MAGIC "\ncopier messages x 1\n", ":2: SLOT is not a number"},
        {DEVICE_LIMITS_MAGIC "\ncopier messages 1 0\n", ":2: COUNT is not a positive"},
        {DEVICE_LIMITS_MAGIC "\ncopier messages 1 -1\n", ":2: COUNT is not a positive"},
        {DEVICE_LIMITS_MAGIC "\ncopier messages 1\n", ":2: expected NAME WINDOW SLOT COUNT"},
        {DEVICE_LIMITS_MAGIC "\ncopier messages 1 1 1\n", ":2: expected NAME"},
        {DEVICE_LIMITS_MAGIC "\nco/pier messages 1 1\n", ":2: not a device name"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_file(bad[i].text);
        err[0] = '\0';
        assert_int_equal(device_limits_load(l, path, err, sizeof(err)), -1);
        if (!strstr(err, bad[i].want))
            fail_msg("file %zu: got \"%s\", want \"%s\"", i, err, bad[i].want);
    }
    assert_int_equal(device_limits_count(l, "copier", DEVICE_LIMIT_MESSAGES), 0);
    unlink(path);
    assert_int_equal(device_limits_load(l, path, err, sizeof(err)), 0); /* no file */
    device_limits_free(l);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
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
        cmocka_unit_test(test_save_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
