/* The daily recipient budget per account on a fake clock: counting, the rolling 24 hours, the
 * hold decision and when room comes back, the state file's round trip and files that must be
 * ignored whole (torn, garbled), and the keeper that loads and writes it for the daemon. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "proxy/config/config.h"
#include "proxy/runtime/account_budget.h"

#define MIN 60
#define HOUR 3600
#define DAY 86400
/* noon UTC on some day (a whole minute) */
#define T0 ((int64_t)19675 * DAY + 12 * HOUR)

static char dir[64];
static char path[128];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/test_account_budget.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/state/%s", dir, ACCOUNT_BUDGET_FILE);
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static void write_file(const char *p, const char *text)
{
    char d[160];
    snprintf(d, sizeof(d), "%s/state", dir);
    mkdir(d, 0700);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *read_all(const char *p)
{
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    char *buf = calloc(1, 65536);
    assert_non_null(buf);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_mark(void **state)
{
    (void)state;
    assert_int_equal(account_budget_mark(10000), 9500); /* Exchange's limit less 5 % */
    assert_int_equal(account_budget_mark(5), 5);        /* 5 % of 5 rounds down to none */
    assert_int_equal(account_budget_mark(100), 95);
    assert_int_equal(account_budget_mark(0), 0);
}

/* Counted per account; each recipient counts for 24 hours (a minute more at most), then not. */
static void test_counting_and_window(void **state)
{
    (void)state;
    struct account_budget *b = account_budget_new();
    assert_non_null(b);
    assert_int_equal(account_budget_used(b, "scan", T0), 0);
    account_budget_add(b, "scan", 3, T0);
    account_budget_add(b, "scan", 2, T0 + 30);
    account_budget_add(b, "other", 7, T0 + 10 * MIN);
    account_budget_add(b, "scan", 4, T0 + 2 * HOUR);
    account_budget_add(b, "scan", 0, T0 + 2 * HOUR); /* nothing */
    assert_true(account_budget_dirty(b));
    assert_int_equal(account_budget_used(b, "scan", T0 + 2 * HOUR), 9);
    assert_int_equal(account_budget_used(b, "other", T0 + 2 * HOUR), 7);
    assert_int_equal(account_budget_used(b, "nobody", T0 + 2 * HOUR), 0);
    /* 24 hours after T0's minute the first 5 still count (the minute is counted whole) ... */
    assert_int_equal(account_budget_used(b, "scan", T0 + DAY), 9);
    assert_int_equal(account_budget_used(b, "scan", T0 + DAY + 59), 9);
    /* ... and not a minute later */
    assert_int_equal(account_budget_used(b, "scan", T0 + DAY + MIN), 4);
    assert_int_equal(account_budget_used(b, "other", T0 + DAY + MIN), 7);
    assert_int_equal(account_budget_used(b, "other", T0 + DAY + 11 * MIN), 0);
    assert_int_equal(account_budget_used(b, "scan", T0 + DAY + 2 * HOUR + MIN), 0);
    /* a slot used again a day later starts from zero */
    account_budget_add(b, "scan", 1, T0 + DAY + MIN);
    assert_int_equal(account_budget_used(b, "scan", T0 + DAY + MIN), 5);
    assert_int_equal(account_budget_used(b, "scan", T0 + 3 * DAY), 0);
    account_budget_mark_clean(b);
    assert_false(account_budget_dirty(b));
    /* NULL is no budget */
    account_budget_add(NULL, "scan", 1, T0);
    assert_int_equal(account_budget_used(NULL, "scan", T0), 0);
    assert_int_equal(account_budget_admit(NULL, "scan", 1, 100, T0, NULL), 1);
    account_budget_free(b);
}

/* Held when the count plus this message would pass the mark; room comes back when enough of the
 * oldest recipients age out. */
static void test_hold_decision(void **state)
{
    (void)state;
    struct account_budget *b = account_budget_new();
    int64_t room = 0;
    assert_non_null(b);
    /* limit 0: never held */
    account_budget_add(b, "free", 1000000, T0);
    assert_int_equal(account_budget_admit(b, "free", 0, 5, T0, &room), 1);

    /* limit 100: mark 95 */
    account_budget_add(b, "scan", 40, T0);
    account_budget_add(b, "scan", 30, T0 + HOUR);
    account_budget_add(b, "scan", 20, T0 + 2 * HOUR);
    assert_int_equal(account_budget_admit(b, "scan", 100, 5, T0 + 3 * HOUR, &room), 1); /* 95 */
    assert_int_equal(account_budget_admit(b, "scan", 100, 6, T0 + 3 * HOUR, &room), 0); /* 96 */
    /* the 40 of T0 age out at the end of its minute + 24 h */
    assert_int_equal(room, T0 + DAY + MIN);
    assert_int_equal(account_budget_admit(b, "scan", 100, 6, room - 1, NULL), 0);
    assert_int_equal(account_budget_admit(b, "scan", 100, 6, room, NULL), 1);
    /* a message needing the two oldest buckets gone */
    assert_int_equal(account_budget_admit(b, "scan", 100, 50, T0 + 3 * HOUR, &room), 0);
    assert_int_equal(room, T0 + HOUR + DAY + MIN);
    /* larger than the mark: waits for an empty window, then goes alone */
    assert_int_equal(account_budget_admit(b, "scan", 100, 200, T0 + 3 * HOUR, &room), 0);
    assert_int_equal(room, T0 + 2 * HOUR + DAY + MIN);
    assert_int_equal(account_budget_admit(b, "scan", 100, 200, room, NULL), 1);

    /* held messages are counted by the caller, per account */
    account_budget_count_held(b, "scan");
    account_budget_count_held(b, "scan");
    assert_int_equal(account_budget_held(b, "scan"), 2);
    assert_int_equal(account_budget_held(b, "other"), 0);

    /* Exchange's default: held from 9,500 */
    account_budget_add(b, "ms", 9499, T0);
    assert_int_equal(account_budget_admit(b, "ms", 10000, 1, T0, NULL), 1);
    assert_int_equal(account_budget_admit(b, "ms", 10000, 2, T0, NULL), 0);
    account_budget_free(b);
}

/* The `accounts` fields. */
static void test_json(void **state)
{
    (void)state;
    struct account_budget *b = account_budget_new();
    cJSON *o = cJSON_CreateObject();
    assert_non_null(b);
    account_budget_add(b, "scan", 12, T0);
    account_budget_count_held(b, "scan");
    assert_int_equal(account_budget_json(o, b, "scan", 5000, T0), 0);
    assert_int_equal(cJSON_GetObjectItem(o, "recipients_24h")->valuedouble, 12);
    assert_int_equal(cJSON_GetObjectItem(o, "recipient_limit")->valuedouble, 5000);
    assert_int_equal(cJSON_GetObjectItem(o, "budget_held")->valuedouble, 1);
    cJSON_Delete(o);
    account_budget_free(b);
}

static void test_save_load(void **state)
{
    (void)state;
    char err[512];
    struct stat st;
    struct account_budget *b = account_budget_new(), *c = account_budget_new();
    assert_non_null(b);
    assert_non_null(c);
    assert_int_equal(account_budget_load(c, path, T0, err, sizeof(err)), 0); /* no file yet */
    account_budget_add(b, "scan", 3, T0 - DAY + 30 * MIN);
    account_budget_add(b, "scan", 4, T0);
    account_budget_add(b, "m-2.x", 5, T0 + 30);
    assert_int_equal(account_budget_save(b, path, T0 + MIN, err, sizeof(err)), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char *text = read_all(path);
    char want[512];
    snprintf(want, sizeof(want),
             "smtp-oauth-proxy account-budget 1\nscan %lld 3\nscan %lld 4\nm-2.x %lld 5\nend 3\n",
             (long long)((T0 - DAY) / MIN + 30), (long long)(T0 / MIN), (long long)(T0 / MIN));
    assert_string_equal(text, want);
    free(text);

    /* a restart: the day is remembered; what aged out meanwhile is dropped */
    assert_int_equal(account_budget_load(c, path, T0 + MIN, err, sizeof(err)), 1);
    assert_int_equal(account_budget_used(c, "scan", T0 + MIN), 7);
    assert_int_equal(account_budget_used(c, "m-2.x", T0 + MIN), 5);
    assert_false(account_budget_dirty(c));
    account_budget_free(c);
    c = account_budget_new();
    assert_int_equal(account_budget_load(c, path, T0 + 31 * MIN, err, sizeof(err)), 1);
    assert_int_equal(account_budget_used(c, "scan", T0 + 31 * MIN), 4);

    /* a minute ahead of the clock (it went back) counts as now */
    write_file(path, "smtp-oauth-proxy account-budget 1\nscan 99999999 6\nend 1\n");
    account_budget_free(c);
    c = account_budget_new();
    assert_int_equal(account_budget_load(c, path, T0, err, sizeof(err)), 1);
    assert_int_equal(account_budget_used(c, "scan", T0), 6);
    assert_int_equal(account_budget_used(c, "scan", T0 + DAY + MIN), 0);
    account_budget_free(b);
    account_budget_free(c);
}

/* A damaged file is refused whole with a reason, and b keeps what it had. */
static void test_damaged_files(void **state)
{
    (void)state;
    static const struct {
        const char *text, *why;
    } bad[] = {
        {"", "no end line"},
        {"smtp-oauth-proxy account-budget 1\nscan 1 2\n", "no end line"},
        {"smtp-oauth-proxy account-budget 2\nend 0\n", "line 1: not an account-budget file"},
        {"smtp-oauth-proxy account-budget 1\nscan 1 2\nend 2\n", "the end line says 2"},
        {"smtp-oauth-proxy account-budget 1\nscan 1\nend 1\n", "line 2: expected"},
        {"smtp-oauth-proxy account-budget 1\nscan -1 2\nend 1\n", "line 2: expected"},
        {"smtp-oauth-proxy account-budget 1\nscan 1 2x\nend 1\n", "line 2: expected"},
        {"smtp-oauth-proxy account-budget 1\nsc\"an 1 2\nend 1\n", "line 2: expected"},
        {"smtp-oauth-proxy account-budget 1\nscan 1 2 3\nend 1\n", "line 2: expected"},
        {"smtp-oauth-proxy account-budget 1\nscan 1 9999999999\nend 1\n", "line 2: expected"},
        {"smtp-oauth-proxy account-budget 1\nend 0\nscan 1 2\n", "text after the end line"},
    };
    char err[512];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct account_budget *b = account_budget_new();
        assert_non_null(b);
        account_budget_add(b, "scan", 9, T0);
        write_file(path, bad[i].text);
        err[0] = '\0';
        assert_int_equal(account_budget_load(b, path, T0, err, sizeof(err)), -1);
        if (!strstr(err, bad[i].why))
            fail_msg("case %zu: '%s' does not say '%s'", i, err, bad[i].why);
        assert_int_equal(account_budget_used(b, "scan", T0), 9); /* unchanged */
        account_budget_free(b);
    }
    /* not text */
    static const char nul[] = "smtp-oauth-proxy account-budget 1\nscan 1 2\0\nend 1\n";
    struct account_budget *b = account_budget_new();
    assert_non_null(b);
    assert_int_equal(account_budget_parse(b, nul, sizeof(nul) - 1, T0, err, sizeof(err)), -1);
    assert_string_equal(err, "too large or not text");
    /* a minute's count is capped, so that what is written is read back */
    account_budget_add(b, "scan", ACCOUNT_BUDGET_COUNT_MAX, T0);
    account_budget_add(b, "scan", 5, T0);
    size_t len = 0;
    char *text = account_budget_text(b, T0, &len);
    assert_non_null(text);
    struct account_budget *c = account_budget_new();
    assert_non_null(c);
    assert_int_equal(account_budget_parse(c, text, len, T0, err, sizeof(err)), 0);
    assert_int_equal(account_budget_used(c, "scan", T0), ACCOUNT_BUDGET_COUNT_MAX);
    free(text);
    account_budget_free(b);
    account_budget_free(c);
}

/* The daemon's keeper: a bad file is set aside and start-up goes on; counts are written when it
 * is freed and read back by the next. */
static void test_keeper(void **state)
{
    (void)state;
    struct cfg_account acct = {.name = "scan", .daily_recipient_limit = 10};
    char sdir[96], aside[160];
    snprintf(sdir, sizeof(sdir), "%s/state", dir);
    struct config cfg = {.state_dir = sdir, .accounts = &acct, .naccounts = 1};
    struct stat st;
    snprintf(aside, sizeof(aside), "%s.bad", path);
    write_file(path, "garbage\n");
    struct account_budget_keeper *k = account_budget_keeper_new(NULL, &cfg);
    assert_non_null(k);
    assert_int_equal(stat(aside, &st), 0); /* kept for a person to look at */
    assert_int_not_equal(stat(path, &st), 0);
    struct account_budget *b = account_budget_keeper_budget(k);
    assert_int_equal(account_budget_used(b, "scan", time(NULL)), 0);
    account_budget_add(b, "scan", 4, time(NULL));
    account_budget_keeper_free(k); /* writes */
    assert_int_equal(stat(path, &st), 0);
    k = account_budget_keeper_new(NULL, &cfg);
    assert_non_null(k);
    assert_int_equal(account_budget_used(account_budget_keeper_budget(k), "scan", time(NULL)), 4);
    account_budget_keeper_free(k);
    assert_null(account_budget_keeper_budget(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mark),
        cmocka_unit_test(test_counting_and_window),
        cmocka_unit_test(test_hold_decision),
        cmocka_unit_test(test_json),
        cmocka_unit_test_setup_teardown(test_save_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keeper, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
