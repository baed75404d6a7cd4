/* The device history behind `devices`: hourly and daily buckets on a fake clock, the 24 h and
 * 30 d windows, the last result, the state file's round trip, and files that must be ignored
 * whole (torn, changed, garbled). */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <openssl/evp.h>

#include "proxy/config/config.h"
#include "proxy/runtime/device_stats.h"

#define HOUR 3600
#define DAY 86400
/* noon UTC on some day */
#define T0 ((int64_t)19675 * DAY + 12 * HOUR)

static struct cfg_account test_acct = {.name = "scanners"};
static struct cfg_device devs[3];
static struct config cfg;
static char dir[64];
static char path[128];

static void use_devices(const char *a, const char *b)
{
    devs[0] = (struct cfg_device){.name = (char *)a, .account = &test_acct};
    devs[1] = (struct cfg_device){.name = (char *)b, .account = &test_acct, .username = "u"};
    cfg.devices = devs;
    cfg.ndevices = 2;
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/test_device_stats.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/state/%s", dir, DEVICE_STATS_FILE);
    cfg.state_dir = dir;
    cfg.stale_after = 365 * DAY;
    use_devices("copier", "scanner");
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

static struct device_stats_row row_of(struct device_stats *ds, const char *name, int64_t now)
{
    struct device_stats_row r;
    assert_int_equal(device_stats_get(ds, name, now, &r), 0);
    return r;
}

static void test_windows_roll_over(void **state)
{
    (void)state;
    struct device_stats *ds = device_stats_new(&cfg, T0);
    assert_non_null(ds);
    assert_false(device_stats_dirty(ds));
    struct device_stats_row r = row_of(ds, "copier", T0);
    assert_int_equal(r.last_seen, 0);
    assert_int_equal(r.tracked_since, T0);
    assert_int_equal(r.last_result, DEVICE_RESULT_NONE);
    assert_string_equal(r.last_reply, "");

    device_stats_message(ds, "copier", "delivered", "250 2.0.0 OK", T0);
    device_stats_message(ds, "copier", "delivered", "250 2.0.0 OK", T0 + 10);
    assert_true(device_stats_dirty(ds));
    r = row_of(ds, "copier", T0 + 10);
    assert_int_equal(r.msgs_24h, 2);
    assert_int_equal(r.msgs_30d, 2);
    assert_int_equal(r.last_seen, T0 + 10);
    /* the other device is untouched */
    assert_int_equal(row_of(ds, "scanner", T0).msgs_30d, 0);

    /* 24 h: hourly buckets, the current hour and the 23 before it */
    assert_int_equal(row_of(ds, "copier", T0 + 23 * HOUR).msgs_24h, 2);
    assert_int_equal(row_of(ds, "copier", T0 + 24 * HOUR).msgs_24h, 0);
    assert_int_equal(row_of(ds, "copier", T0 + 24 * HOUR).msgs_30d, 2);
    /* 30 d: UTC days, today and the 29 before */
    assert_int_equal(row_of(ds, "copier", T0 + 29 * DAY).msgs_30d, 2);
    assert_int_equal(row_of(ds, "copier", T0 + 30 * DAY).msgs_30d, 0);
    /* a clock stepped back sees nothing from "the future" */
    assert_int_equal(row_of(ds, "copier", T0 - DAY).msgs_30d, 0);

    /* one a day for 40 days: the window holds 30; the slots of old days were reused */
    for (int d = 1; d <= 40; d++)
        device_stats_message(ds, "copier", "delivered", "250 ok", T0 + d * DAY);
    r = row_of(ds, "copier", T0 + 40 * DAY);
    assert_int_equal(r.msgs_30d, 30);
    assert_int_equal(r.msgs_24h, 1);
    /* an hour slot reused the next day: only today's message counts */
    device_stats_message(ds, "copier", "delivered", "250 ok", T0 + 40 * DAY + HOUR);
    assert_int_equal(row_of(ds, "copier", T0 + 40 * DAY + HOUR).msgs_24h, 2);
    assert_int_equal(row_of(ds, "copier", T0 + 41 * DAY + HOUR).msgs_24h, 0);
    device_stats_free(ds);
}

static void test_last_result_and_seen(void **state)
{
    (void)state;
    struct device_stats *ds = device_stats_new(&cfg, T0);
    device_stats_seen(ds, "scanner", T0 + 5);
    struct device_stats_row r = row_of(ds, "scanner", T0 + 5);
    assert_int_equal(r.last_seen, T0 + 5);
    assert_int_equal(r.msgs_24h, 0); /* seen is not a message */
    /* unknown names and a NULL table are ignored */
    device_stats_seen(ds, "nobody", T0);
    device_stats_message(ds, "nobody", "delivered", "250", T0);
    device_stats_seen(NULL, "copier", T0);
    device_stats_message(NULL, "copier", "refused", "550", T0);
    assert_int_equal(device_stats_get(ds, "nobody", T0, &r), -1);

    /* a peer's reply: only its first line, control bytes escaped, cut to a bound */
    char big[2000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big, "550 5.7.1 \"no\"\x1b[2J\tdenied\r\n550 second line", 42);
    device_stats_message(ds, "scanner", "refused", big, T0 + 60);
    r = row_of(ds, "scanner", T0 + 60);
    assert_int_equal(r.last_result, DEVICE_RESULT_REFUSED);
    assert_int_equal(r.last_result_at, T0 + 60);
    assert_string_equal(r.last_reply, "550 5.7.1 \\x22no\\x22\\x1b[2J\\x09denied");
    assert_string_equal(device_result_str(r.last_result), "refused");

    device_stats_message(ds, "scanner", "delivered", big + 100, T0 + 61);
    r = row_of(ds, "scanner", T0 + 61);
    assert_int_equal(r.last_result, DEVICE_RESULT_DELIVERED);
    assert_true(strlen(r.last_reply) <= DEVICE_STATS_REPLY_MAX);
    assert_non_null(strstr(r.last_reply, "..."));
    for (const char *p = r.last_reply; *p; p++)
        assert_true(*p >= 0x20 && *p < 0x7f);
    device_stats_message(ds, "scanner", "deferred", "451 4.4.2 later", T0 + 62);
    assert_int_equal(row_of(ds, "scanner", T0 + 62).last_result, DEVICE_RESULT_DEFERRED);
    assert_int_equal(row_of(ds, "scanner", T0 + 62).msgs_24h, 3);
    device_stats_free(ds);
}

static void test_round_trip(void **state)
{
    char err[512];
    struct stat st;
    (void)state;
    struct device_stats *ds = device_stats_new(&cfg, T0 - 100 * DAY);
    device_stats_message(ds, "copier", "delivered", "250 2.0.0 OK queued", T0 - 3 * DAY);
    device_stats_message(ds, "copier", "refused", "554 5.2.0 STOREDRV", T0);
    device_stats_seen(ds, "scanner", T0 - 50 * DAY);
    assert_int_equal(device_stats_save(ds, path, err, sizeof(err)), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    struct device_stats *back = device_stats_new(&cfg, T0 + 5);
    assert_int_equal(device_stats_load(back, path, err, sizeof(err)), 1);
    assert_false(device_stats_dirty(back)); /* the file already says it all */
    for (int64_t now = T0; now <= T0 + 31 * DAY; now += 7 * HOUR) {
        for (size_t i = 0; i < 2; i++) {
            struct device_stats_row a = row_of(ds, devs[i].name, now);
            struct device_stats_row b = row_of(back, devs[i].name, now);
            assert_memory_equal(&a, &b, sizeof(a));
        }
    }
    struct device_stats_row r = row_of(back, "copier", T0);
    assert_int_equal(r.tracked_since, T0 - 100 * DAY);
    assert_int_equal(r.msgs_30d, 2);
    assert_int_equal(r.msgs_24h, 1);
    assert_string_equal(r.last_reply, "554 5.2.0 STOREDRV");
    /* no file: nothing loaded, nothing changed */
    char none[160];
    snprintf(none, sizeof(none), "%s/none", dir);
    assert_int_equal(device_stats_load(back, none, err, sizeof(err)), 0);
    device_stats_free(back);
    device_stats_free(ds);
}

static char *slurp(size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = malloc(1 << 20);
    *len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    buf[*len] = '\0';
    return buf;
}

static void spit(const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* doc with a correct trailer: the checksum alone must not make garbage acceptable */
static void spit_signed(const char *doc)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    char text[8192];
    assert_int_equal(EVP_Digest(doc, strlen(doc), md, &mdlen, EVP_sha256(), NULL), 1);
    int n = snprintf(text, sizeof(text), "%s\nend sha256=", doc);
    for (unsigned i = 0; i < mdlen; i++)
        n += snprintf(text + n, sizeof(text) - (size_t)n, "%02x", md[i]);
    n += snprintf(text + n, sizeof(text) - (size_t)n, "\n");
    spit(text, (size_t)n);
}

static void expect_ignored(const char *why)
{
    char err[512];
    struct device_stats *ds = device_stats_new(&cfg, T0);
    device_stats_message(ds, "copier", "delivered", "250 live", T0);
    struct device_stats_row before = row_of(ds, "copier", T0);
    assert_int_equal(device_stats_load(ds, path, err, sizeof(err)), -1);
    assert_non_null(strstr(err, why));
    struct device_stats_row after = row_of(ds, "copier", T0);
    assert_memory_equal(&before, &after, sizeof(before)); /* never half-used */
    assert_int_equal(row_of(ds, "scanner", T0).last_seen, 0);
    device_stats_free(ds);
}

static void test_bad_files_ignored(void **state)
{
    char err[512];
    size_t len;
    (void)state;
    struct device_stats *ds = device_stats_new(&cfg, T0);
    device_stats_message(ds, "copier", "delivered", "250 ok", T0);
    device_stats_seen(ds, "scanner", T0);
    assert_int_equal(device_stats_save(ds, path, err, sizeof(err)), 0);
    device_stats_free(ds);
    char *good = slurp(&len);

    /* torn anywhere: no end marker */
    for (size_t cut = 0; cut < len; cut += len / 13 + 1) {
        spit(good, cut);
        expect_ignored("no end marker");
    }
    spit(good, len - 1);
    expect_ignored("no end marker");
    /* a byte changed in the document */
    char *bad = strdup(good);
    char *digit = strstr(bad, "\"last_seen\":") + 14;
    *digit = *digit == '1' ? '2' : '1';
    spit(bad, len);
    expect_ignored("checksum mismatch");
    free(bad);
    /* well signed, but not a document we would use */
    spit_signed("{\"format\":\"smtp-oauth-proxy devices.state\",\"version\":2,\"devices\":[]}");
    expect_ignored("version");
    spit_signed("[1,2,3]");
    expect_ignored("not a devices.state document");
    spit_signed("{\"format\":\"smtp-oauth-proxy devices.state\",\"version\":1,\"devices\":["
                "{\"name\":\"scanner\",\"tracked_since\":1,\"last_seen\":5,"
                "\"last_result\":\"none\",\"last_result_at\":0,\"last_reply\":\"\","
                "\"hours\":[],\"days\":[]},"
                "{\"name\":\"copier\",\"tracked_since\":1,\"last_seen\":-5,"
                "\"last_result\":\"none\",\"last_result_at\":0,\"last_reply\":\"\","
                "\"hours\":[],\"days\":[]}]}");
    expect_ignored("garbled");
    spit_signed("{\"format\":\"smtp-oauth-proxy devices.state\",\"version\":1,\"devices\":["
                "{\"name\":\"copier\",\"tracked_since\":1,\"last_seen\":5,"
                "\"last_result\":\"delivered\",\"last_result_at\":5,\"last_reply\":\"a\\u0007b\","
                "\"hours\":[],\"days\":[]}]}");
    expect_ignored("garbled");
    spit_signed("{\"format\":\"smtp-oauth-proxy devices.state\",\"version\":1,\"devices\":["
                "{\"name\":\"copier\",\"tracked_since\":1,\"last_seen\":5,"
                "\"last_result\":\"exploded\",\"last_result_at\":5,\"last_reply\":\"\","
                "\"hours\":[[1,2,3]],\"days\":[]}]}");
    expect_ignored("garbled");
    /* the good file still loads */
    spit(good, len);
    ds = device_stats_new(&cfg, T0);
    assert_int_equal(device_stats_load(ds, path, err, sizeof(err)), 1);
    assert_int_equal(row_of(ds, "scanner", T0).last_seen, T0);
    device_stats_free(ds);
    free(good);
}

static void test_removed_devices_dropped(void **state)
{
    char err[512];
    size_t len;
    (void)state;
    struct device_stats *ds = device_stats_new(&cfg, T0);
    device_stats_message(ds, "copier", "delivered", "250 ok", T0);
    device_stats_message(ds, "scanner", "refused", "550 no", T0);
    assert_int_equal(device_stats_save(ds, path, err, sizeof(err)), 0);
    device_stats_free(ds);

    /* the config now has scanner and a new "plotter", no copier */
    use_devices("plotter", "scanner");
    ds = device_stats_new(&cfg, T0 + DAY);
    assert_int_equal(device_stats_load(ds, path, err, sizeof(err)), 1);
    assert_true(device_stats_dirty(ds)); /* the file must change */
    struct device_stats_row r;
    assert_int_equal(device_stats_get(ds, "copier", T0, &r), -1);
    assert_int_equal(row_of(ds, "scanner", T0).last_result, DEVICE_RESULT_REFUSED);
    r = row_of(ds, "plotter", T0 + DAY);
    assert_int_equal(r.last_seen, 0);
    assert_int_equal(r.tracked_since, T0 + DAY);
    assert_int_equal(device_stats_save(ds, path, err, sizeof(err)), 0);
    char *text = slurp(&len);
    assert_null(strstr(text, "copier"));
    assert_non_null(strstr(text, "plotter"));
    free(text);

    /* the same in memory, for a reloaded config */
    use_devices("copier", "scanner");
    assert_int_equal(device_stats_retain(ds, &cfg, T0 + 2 * DAY), 0);
    assert_int_equal(device_stats_get(ds, "plotter", T0, &r), -1);
    assert_int_equal(row_of(ds, "copier", T0).tracked_since, T0 + 2 * DAY);
    assert_int_equal(row_of(ds, "scanner", T0).msgs_24h, 1);
    device_stats_free(ds);
}

static const cJSON *device_of(const cJSON *doc, const char *name)
{
    const cJSON *o;
    cJSON_ArrayForEach(o, cJSON_GetObjectItem(doc, "devices"))
    {
        if (strcmp(cJSON_GetObjectItem(o, "name")->valuestring, name) == 0)
            return o;
    }
    fail_msg("no device %s", name);
    return NULL;
}

static void test_json_and_stale(void **state)
{
    (void)state;
    cfg.stale_after = 365 * DAY;
    struct device_stats *ds = device_stats_new(&cfg, T0);
    device_stats_message(ds, "copier", "refused", "550 5.7.60 SendAs denied", T0);
    cJSON *doc = device_stats_json(ds, &cfg, "daemon", T0 + 10);
    assert_string_equal(cJSON_GetObjectItem(doc, "source")->valuestring, "daemon");
    assert_int_equal(cJSON_GetObjectItem(doc, "stale_after")->valuedouble, 365 * DAY);
    const cJSON *c = device_of(doc, "copier"), *s = device_of(doc, "scanner");
    assert_string_equal(cJSON_GetObjectItem(c, "account")->valuestring, "scanners");
    assert_string_equal(cJSON_GetObjectItem(c, "match")->valuestring, "address");
    assert_string_equal(cJSON_GetObjectItem(s, "match")->valuestring, "username");
    assert_string_equal(cJSON_GetObjectItem(c, "last_result")->valuestring, "refused");
    assert_string_equal(cJSON_GetObjectItem(c, "last_reply")->valuestring,
                        "550 5.7.60 SendAs denied");
    assert_int_equal(cJSON_GetObjectItem(c, "msgs_24h")->valuedouble, 1);
    assert_int_equal(cJSON_GetObjectItem(c, "last_seen")->valuedouble, (double)T0);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(s, "last_seen")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(s, "last_result")));
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(c, "stale")));
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(s, "stale")));
    cJSON_Delete(doc);

    /* a year on: both silent for stale_after (scanner never seen since tracking began) */
    doc = device_stats_json(ds, &cfg, "file", T0 + 365 * DAY);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(device_of(doc, "copier"), "stale")));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(device_of(doc, "scanner"), "stale")));
    cJSON_Delete(doc);
    device_stats_seen(ds, "scanner", T0 + 365 * DAY - 1);
    doc = device_stats_json(ds, &cfg, "file", T0 + 365 * DAY);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(device_of(doc, "copier"), "stale")));
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(device_of(doc, "scanner"), "stale")));
    cJSON_Delete(doc);
    device_stats_free(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_windows_roll_over),
        cmocka_unit_test(test_last_result_and_seen),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_bad_files_ignored),
        cmocka_unit_test(test_removed_devices_dropped),
        cmocka_unit_test(test_json_and_stale),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
