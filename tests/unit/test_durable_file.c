/* common/durable_file: the one writer of files that must survive a crash whole. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/durable_file.h"

static char dir[] = "/tmp/test_durable.XXXXXX";

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void read_back(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
}

static void test_replace(void **state)
{
    char tmp[256], final[256], buf[64], err[256];
    struct stat st;
    int renamed = -1;
    (void)state;
    snprintf(tmp, sizeof(tmp), "%s/.f.tmp", dir);
    snprintf(final, sizeof(final), "%s/f", dir);
    assert_int_equal(durable_replace(tmp, final, dir, "one", 3, 1, &renamed, err, sizeof(err)), 0);
    assert_int_equal(renamed, 1);
    read_back(final, buf, sizeof(buf));
    assert_string_equal(buf, "one");
    assert_int_equal(stat(final, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_not_equal(access(tmp, F_OK), 0);
    /* replaced whole, fsync off too */
    assert_int_equal(durable_replace(tmp, final, dir, "second", 6, 0, NULL, err, sizeof(err)), 0);
    read_back(final, buf, sizeof(buf));
    assert_string_equal(buf, "second");
}

static void test_failures_leave_the_old_file(void **state)
{
    char tmp[256], final[256], buf[64], err[256];
    FILE *f;
    int renamed = -1;
    (void)state;
    snprintf(tmp, sizeof(tmp), "%s/.g.tmp", dir);
    snprintf(final, sizeof(final), "%s/g", dir);
    assert_int_equal(durable_replace(tmp, final, dir, "old", 3, 1, NULL, err, sizeof(err)), 0);
    /* a temp file that exists already (another writer, or an attack): refused, left alone */
    f = fopen(tmp, "w");
    assert_non_null(f);
    fputs("someone else's", f);
    fclose(f);
    assert_int_equal(durable_replace(tmp, final, dir, "new", 3, 1, &renamed, err, sizeof(err)), -1);
    assert_int_equal(renamed, 0);
    assert_non_null(strstr(err, "cannot create"));
    read_back(final, buf, sizeof(buf));
    assert_string_equal(buf, "old");
    read_back(tmp, buf, sizeof(buf));
    assert_string_equal(buf, "someone else's");
    unlink(tmp);
    /* the rename fails (the final name is a non-empty directory): the temp file goes away */
    snprintf(final, sizeof(final), "%s/d", dir);
    assert_int_equal(mkdir(final, 0700), 0);
    snprintf(buf, sizeof(buf), "%s/d/x", dir);
    f = fopen(buf, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(durable_replace(tmp, final, dir, "new", 3, 1, &renamed, err, sizeof(err)), -1);
    assert_int_equal(renamed, 0);
    assert_non_null(strstr(err, "cannot rename"));
    assert_int_not_equal(access(tmp, F_OK), 0);
    /* the directory to fsync is not there: the rename happened, and the caller is told */
    snprintf(final, sizeof(final), "%s/h", dir);
    assert_int_equal(
        durable_replace(tmp, final, "/nonexistent-dir", "x", 1, 1, &renamed, err, sizeof(err)), -1);
    assert_int_equal(renamed, 1);
    assert_non_null(strstr(err, "cannot fsync /nonexistent-dir"));
}

/* STATE_DIR under systemd's DynamicUser= is a symlink to /var/lib/private/...: it must do. */
static void test_mkdir(void **state)
{
    char d[256], link[256], file[256], err[256];
    FILE *f;
    struct stat st;
    (void)state;
    snprintf(d, sizeof(d), "%s/m", dir);
    assert_int_equal(durable_mkdir(d, err, sizeof(err)), 1);
    assert_int_equal(stat(d, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(durable_mkdir(d, err, sizeof(err)), 0);
    snprintf(link, sizeof(link), "%s/l", dir);
    assert_int_equal(symlink(d, link), 0);
    assert_int_equal(durable_mkdir(link, err, sizeof(err)), 0);
    snprintf(file, sizeof(file), "%s/file", dir);
    f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(durable_mkdir(file, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not a directory"));
    snprintf(d, sizeof(d), "%s/nonexistent/x", dir);
    assert_int_equal(durable_mkdir(d, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "cannot create"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replace),
        cmocka_unit_test(test_failures_leave_the_old_file),
        cmocka_unit_test(test_mkdir),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
