/* The block list and its file (proxy/runtime/device_blocks.c): a block is written (mode 0600)
 * before it holds and a new list reads it back exactly; unblock rewrites the file; reasons are
 * made printable ASCII and bounded; a bad file (garbled, torn, unknown fields, a name twice, a
 * reason too long, too many entries) is refused whole with FILE:LINE and leaves the list as it was;
 * the `devices` document gets each device's block. */
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

#include <cjson/cJSON.h>

#include "proxy/config/config.h"
#include "proxy/runtime/device_blocks.h"

static char dir[64];
static char path[160];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/test_device_blocks.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/state/%s", dir, DEVICE_BLOCKS_FILE);
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

static void write_file(const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_persist_and_reload(void **state)
{
    (void)state;
    char err[512];
    struct device_blocks *b = device_blocks_new(path);
    assert_non_null(b);
    assert_int_equal(device_blocks_load(b, err, sizeof(err)), 0); /* no file yet */
    assert_int_equal(
        device_blocks_set(b, "copier", "admin", "stolen, ticket 42", 1800000000, err, sizeof(err)),
        0);
    assert_int_equal(device_blocks_set(b, "plotter-2", "auto",
                                       "automatic: 3 spam refusals, last: 550 5.7.708 x",
                                       1800000100, err, sizeof(err)),
                     0);
    /* set again: replaced, not added */
    assert_int_equal(
        device_blocks_set(b, "copier", "admin", "stolen", 1800000200, err, sizeof(err)), 0);
    assert_int_equal(device_blocks_count(b), 2);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    struct device_blocks *r = device_blocks_new(path);
    assert_int_equal(device_blocks_load(r, err, sizeof(err)), 1);
    assert_int_equal(device_blocks_count(r), 2);
    const struct device_block *c = device_blocks_get(r, "copier");
    assert_non_null(c);
    assert_string_equal(c->reason, "stolen");
    assert_string_equal(c->by, "admin");
    assert_int_equal(c->since, 1800000200);
    const struct device_block *p = device_blocks_get(r, "plotter-2");
    assert_non_null(p);
    assert_string_equal(p->by, "auto");
    assert_string_equal(p->reason, "automatic: 3 spam refusals, last: 550 5.7.708 x");
    assert_null(device_blocks_get(r, "nosuch"));

    /* unblock: gone from the file too */
    assert_int_equal(device_blocks_clear(b, "copier", err, sizeof(err)), 1);
    assert_int_equal(device_blocks_clear(b, "copier", err, sizeof(err)), 0);
    assert_null(device_blocks_get(b, "copier"));
    assert_int_equal(device_blocks_load(r, err, sizeof(err)), 1);
    assert_null(device_blocks_get(r, "copier"));
    assert_non_null(device_blocks_get(r, "plotter-2"));
    assert_int_equal(device_blocks_clear(b, "plotter-2", err, sizeof(err)), 1);
    assert_int_equal(device_blocks_load(r, err, sizeof(err)), 1);
    assert_int_equal(device_blocks_count(r), 0);
    device_blocks_free(r);
    device_blocks_free(b);
}

static void test_sanitize(void **state)
{
    (void)state;
    char out[DEVICE_BLOCK_REASON_MAX + 1], err[256], big[600];
    assert_string_equal(device_block_sanitize(out, sizeof(out), "  a\tb\x01\xc3\xa9 c \r\n "),
                        "a?b??? c ??");
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(strlen(device_block_sanitize(out, sizeof(out), big)), DEVICE_BLOCK_REASON_MAX);
    assert_string_equal(device_block_sanitize(out, 4, "abcdef"), "abc");
    /* set sanitises; an empty reason gets a default; a bad name is refused */
    struct device_blocks *b = device_blocks_new(NULL);
    assert_int_equal(device_blocks_set(b, "copier", "admin", "bad\nline", 1, err, sizeof(err)), 0);
    assert_string_equal(device_blocks_get(b, "copier")->reason, "bad?line");
    assert_int_equal(device_blocks_set(b, "copier", "admin", "", 1, err, sizeof(err)), 0);
    assert_string_equal(device_blocks_get(b, "copier")->reason, "blocked by an administrator");
    assert_int_equal(device_blocks_set(b, "../x", "admin", "r", 1, err, sizeof(err)), -1);
    assert_int_equal(device_blocks_set(b, "a b", "admin", "r", 1, err, sizeof(err)), -1);
    assert_false(device_block_name_ok(""));
    assert_true(device_block_name_ok("Copier_3.f-x"));
    memset(big, 'a', 65);
    big[65] = '\0';
    assert_false(device_block_name_ok(big));
    big[64] = '\0';
    assert_true(device_block_name_ok(big));
    device_blocks_free(b);
}

/* Each bad file is refused whole, with its line, and the list keeps what it had. */
static void test_bad_files(void **state)
{
    (void)state;
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"garbage\n", ":1: not a device block file"},
        {DEVICE_BLOCKS_MAGIC "\ncopier 1800000000 admin torn", ":1: torn"},
        {DEVICE_BLOCKS_MAGIC "\ncopier 1800000000 admin\n", ":2: expected NAME SINCE BY REASON"},
        {DEVICE_BLOCKS_MAGIC "\ncopier x admin r\n", ":2: SINCE is not a time"},
        {DEVICE_BLOCKS_MAGIC "\ncopier -5 admin r\n", ":2: SINCE is not a time"},
        {DEVICE_BLOCKS_MAGIC "\ncopier 1800000000 root r\n", ":2: BY is neither"},
        {DEVICE_BLOCKS_MAGIC "\nco/pier 1800000000 admin r\n", ":2: not a device name"},
        {DEVICE_BLOCKS_MAGIC "\ncopier 1800000000 admin a\tb\n", ":2: REASON is not printable"},
        {DEVICE_BLOCKS_MAGIC "\ncopier 1 admin r\nplotter 2 auto r\ncopier 3 admin r\n",
         ":4: a device listed twice"},
    };
    char err[512];
    struct device_blocks *b = device_blocks_new(path);
    assert_int_equal(device_blocks_set(b, "kept", "admin", "r", 1800000000, err, sizeof(err)), 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_file(bad[i].text);
        err[0] = '\0';
        assert_int_equal(device_blocks_load(b, err, sizeof(err)), -1);
        if (!strstr(err, bad[i].want) || strncmp(err, path, strlen(path)) != 0)
            fail_msg("file %zu: got \"%s\", want \"%s\"", i, err, bad[i].want);
        assert_int_equal(device_blocks_count(b), 1);
        assert_non_null(device_blocks_get(b, "kept"));
    }
    /* a reason over the limit */
    char line[400];
    snprintf(line, sizeof(line), DEVICE_BLOCKS_MAGIC "\ncopier 1 admin %0*d\n",
             DEVICE_BLOCK_REASON_MAX + 1, 0);
    write_file(line);
    assert_int_equal(device_blocks_load(b, err, sizeof(err)), -1);
    assert_non_null(strstr(err, ":2: REASON"));
    /* a NUL byte */
    FILE *f = fopen(path, "w");
    fwrite(DEVICE_BLOCKS_MAGIC "\ncop\0ier 1 admin r\n", 1, sizeof(DEVICE_BLOCKS_MAGIC) + 18, f);
    fclose(f);
    assert_int_equal(device_blocks_load(b, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "NUL"));
    /* more than DEVICE_BLOCKS_MAX entries */
    f = fopen(path, "w");
    fputs(DEVICE_BLOCKS_MAGIC "\n", f);
    for (int i = 0; i < DEVICE_BLOCKS_MAX + 1; i++)
        fprintf(f, "d%d 1 admin %0200d\n", i, 0);
    fputs("x\n", f);
    fclose(f);
    assert_int_equal(device_blocks_load(b, err, sizeof(err)), -1);
    assert_int_equal(device_blocks_count(b), 1);
    /* an empty list is a good file */
    write_file(DEVICE_BLOCKS_MAGIC "\n");
    assert_int_equal(device_blocks_load(b, err, sizeof(err)), 1);
    assert_int_equal(device_blocks_count(b), 0);
    device_blocks_free(b);
}

/* The file cannot be written (its directory is a regular file, for root too): nothing changes. */
static void test_unwritable_changes_nothing(void **state)
{
    (void)state;
    char err[512], bad[200], file[160];
    snprintf(file, sizeof(file), "%s/plain", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(bad, sizeof(bad), "%s/%s", file, DEVICE_BLOCKS_FILE);
    struct device_blocks *b = device_blocks_new(bad);
    assert_int_equal(device_blocks_set(b, "copier", "admin", "r", 1, err, sizeof(err)), -1);
    assert_null(device_blocks_get(b, "copier"));
    assert_int_equal(device_blocks_count(b), 0);
    device_blocks_free(b);
}

static void test_json(void **state)
{
    (void)state;
    char err[256];
    struct device_blocks *b = device_blocks_new(NULL);
    assert_int_equal(device_blocks_set(b, "copier", "admin", "why", 1800000000, err, sizeof(err)),
                     0);
    assert_int_equal(device_blocks_set(b, "gone", "auto", "r", 1800000000, err, sizeof(err)), 0);
    cJSON *doc = cJSON_Parse("{\"devices\":[{\"name\":\"copier\"},{\"name\":\"plotter\"}]}");
    assert_int_equal(device_blocks_json(b, doc), 0);
    char *text = cJSON_PrintUnformatted(doc);
    assert_string_equal(text,
                        "{\"devices\":[{\"name\":\"copier\",\"blocked\":true,"
                        "\"blocked_since\":1800000000,\"blocked_by\":\"admin\","
                        "\"blocked_reason\":\"why\"},{\"name\":\"plotter\",\"blocked\":false}],"
                        "\"blocked_other\":[\"gone\"]}");
    cJSON_free(text);
    cJSON_Delete(doc);
    /* no list: nobody blocked */
    doc = cJSON_Parse("{\"devices\":[{\"name\":\"copier\"}]}");
    assert_int_equal(device_blocks_json(NULL, doc), 0);
    text = cJSON_PrintUnformatted(doc);
    assert_string_equal(
        text, "{\"devices\":[{\"name\":\"copier\",\"blocked\":false}],\"blocked_other\":[]}");
    cJSON_free(text);
    cJSON_Delete(doc);
    device_blocks_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_persist_and_reload, setup, teardown),
        cmocka_unit_test(test_sanitize),
        cmocka_unit_test_setup_teardown(test_bad_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unwritable_changes_nothing, setup, teardown),
        cmocka_unit_test(test_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
