/* common/state_file: the small state files' bounded reader, their line checks (magic first line,
 * no NUL byte, a final newline, each line to the module's callback with its number, the first
 * bad one named FILE:LINE), the atomic write and the bad file set aside. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/state_file.h"

#define MAGIC "test state 1"

static char dir[64];
static char path[160];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/test_state_file.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/sub/x.state", dir);
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

static void write_raw(const char *p, const char *data, size_t len)
{
    char d[160];
    snprintf(d, sizeof(d), "%s/sub", dir);
    (void)mkdir(d, 0700);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* What the callback saw: each line with its number, "N:TEXT|"; it refuses a line "bad". */
struct seen {
    char log[512];
    size_t calls;
};

static const char *on_line(void *arg, char *line, size_t lineno)
{
    struct seen *s = arg;
    size_t o = strlen(s->log);
    snprintf(s->log + o, sizeof(s->log) - o, "%zu:%s|", lineno, line);
    s->calls++;
    return strcmp(line, "bad") == 0 ? "a bad line" : NULL;
}

/* state_file_load on data written at path: its result, with err and what the callback saw. */
static int load(const char *data, size_t len, struct seen *s, char *err, size_t errlen)
{
    write_raw(path, data, len);
    memset(s, 0, sizeof(*s));
    err[0] = '\0';
    return state_file_load(path, 4096, MAGIC, "not a test file", on_line, s, err, errlen);
}

static void test_lines_in_order(void **state)
{
    struct seen s;
    char err[512];
    (void)state;
    const char ok[] = MAGIC "\none 1\n\ntwo 2\n";
    assert_int_equal(load(ok, strlen(ok), &s, err, sizeof(err)), 1);
    /* the magic line is line 1 and not handed out; an empty line is a line */
    assert_string_equal(s.log, "2:one 1|3:|4:two 2|");
    /* the magic alone: no entries */
    assert_int_equal(load(MAGIC "\n", strlen(MAGIC) + 1, &s, err, sizeof(err)), 1);
    assert_int_equal(s.calls, 0);
}

static void test_bad_files(void **state)
{
    struct seen s;
    char err[512], want[512];
    (void)state;
    /* the first bad line stops the walk, named by FILE:LINE and the callback's why */
    const char badline[] = MAGIC "\nfine\nbad\nnever\n";
    assert_int_equal(load(badline, strlen(badline), &s, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s:3: a bad line", path);
    assert_string_equal(err, want);
    assert_string_equal(s.log, "2:fine|3:bad|");
    /* another first line */
    const char other[] = "test state 2\nfine\n";
    assert_int_equal(load(other, strlen(other), &s, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s:1: not a test file", path);
    assert_string_equal(err, want);
    assert_int_equal(s.calls, 0);
    /* torn: no final newline, whatever came before it; the whole file is refused, no line seen */
    const char torn[] = MAGIC "\nfine\nfi";
    assert_int_equal(load(torn, strlen(torn), &s, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s:1: torn (no final newline)", path);
    assert_string_equal(err, want);
    assert_int_equal(s.calls, 0);
    assert_int_equal(load("", 0, &s, err, sizeof(err)), -1);
    assert_string_equal(err, want);
    /* a NUL byte anywhere */
    const char nul[] = MAGIC "\nfi\0ne\n";
    assert_int_equal(load(nul, sizeof(nul) - 1, &s, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s:1: a NUL byte", path);
    assert_string_equal(err, want);
    assert_int_equal(s.calls, 0);
    /* no file: nothing to load, no error */
    assert_int_equal(unlink(path), 0);
    memset(&s, 0, sizeof(s));
    assert_int_equal(
        state_file_load(path, 4096, MAGIC, "not a test file", on_line, &s, err, sizeof(err)), 0);
}

static void test_read_bounded(void **state)
{
    char err[512], want[512], *buf = NULL;
    size_t len = 0, big = 200000; /* past the first 64 KiB read: the buffer grows */
    (void)state;
    char *data = malloc(big);
    assert_non_null(data);
    for (size_t i = 0; i < big; i++)
        data[i] = (char)('a' + i % 26);
    write_raw(path, data, big);
    /* exactly max is fine; one byte more is refused */
    assert_int_equal(state_file_read(path, big, &buf, &len, err, sizeof(err)), 1);
    assert_int_equal(len, big);
    assert_memory_equal(buf, data, big);
    assert_int_equal(buf[big], '\0');
    free(buf);
    buf = NULL;
    assert_int_equal(state_file_read(path, big - 1, &buf, &len, err, sizeof(err)), -1);
    assert_null(buf);
    snprintf(want, sizeof(want), "%s: larger than %zu bytes", path, big - 1);
    assert_string_equal(err, want);
    /* a small bound, below the first read's size */
    assert_int_equal(state_file_read(path, 10, &buf, &len, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s: larger than 10 bytes", path);
    assert_string_equal(err, want);
    write_raw(path, data, 10);
    assert_int_equal(state_file_read(path, 10, &buf, &len, err, sizeof(err)), 1);
    assert_int_equal(len, 10);
    free(buf);
    free(data);
    /* a symlink is not followed */
    char link[200];
    snprintf(link, sizeof(link), "%s/link", dir);
    assert_int_equal(symlink(path, link), 0);
    assert_int_equal(state_file_read(link, 10, &buf, &len, err, sizeof(err)), -1);
    assert_non_null(strstr(err, link));
    /* a directory cannot be read */
    assert_int_equal(state_file_read(dir, 10, &buf, &len, err, sizeof(err)), -1);
    assert_non_null(strstr(err, dir));
}

static void test_write(void **state)
{
    char err[512], *buf = NULL;
    size_t len = 0;
    struct stat st;
    (void)state;
    /* the directory is made, mode 0700, the file 0600, and nothing else is left in it */
    const char one[] = MAGIC "\nfirst\n";
    assert_int_equal(state_file_write(path, one, strlen(one), err, sizeof(err)), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char sub[160];
    snprintf(sub, sizeof(sub), "%s/sub", dir);
    assert_int_equal(stat(sub, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(state_file_read(path, 4096, &buf, &len, err, sizeof(err)), 1);
    assert_string_equal(buf, one);
    free(buf);
    /* replaced whole */
    const char two[] = MAGIC "\nsecond\nthird\n";
    assert_int_equal(state_file_write(path, two, strlen(two), err, sizeof(err)), 0);
    assert_int_equal(state_file_read(path, 4096, &buf, &len, err, sizeof(err)), 1);
    assert_string_equal(buf, two);
    free(buf);
    DIR *d = opendir(sub);
    assert_non_null(d);
    size_t files = 0;
    for (struct dirent *de; (de = readdir(d)) != NULL;)
        if (de->d_name[0] != '.')
            files++;
    closedir(d);
    assert_int_equal(files, 1);
    /* what a module rendered: written and freed; NULL is a rendering out of memory */
    char *rendered = strdup(one);
    assert_non_null(rendered);
    assert_int_equal(state_file_write_rendered(path, rendered, strlen(one), err, sizeof(err)), 0);
    assert_int_equal(state_file_read(path, 4096, &buf, &len, err, sizeof(err)), 1);
    assert_string_equal(buf, one);
    free(buf);
    assert_int_equal(state_file_write_rendered(path, NULL, 0, err, sizeof(err)), -1);
    assert_string_equal(err, "out of memory");
    /* a name without a directory */
    assert_int_equal(state_file_write("x.state", one, strlen(one), err, sizeof(err)), -1);
    assert_string_equal(err, "x.state: no usable directory");
    /* a directory that cannot be made: the old file stays */
    char under_file[200];
    snprintf(under_file, sizeof(under_file), "%s/x.state", path);
    assert_int_equal(state_file_write(under_file, one, strlen(one), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not a directory"));
}

static void test_set_aside(void **state)
{
    char aside[200], want[200];
    struct seen s;
    char err[512];
    (void)state;
    const char bad[] = "garbage\n";
    assert_int_equal(load(bad, strlen(bad), &s, err, sizeof(err)), -1);
    assert_int_equal(state_file_set_aside(path, aside, sizeof(aside)), 1);
    snprintf(want, sizeof(want), "%s.bad", path);
    assert_string_equal(aside, want);
    assert_int_not_equal(access(path, F_OK), 0);
    assert_int_equal(access(want, F_OK), 0);
    /* nothing there to move */
    assert_int_equal(state_file_set_aside(path, aside, sizeof(aside)), 0);
    /* the name does not fit: not moved */
    write_raw(path, bad, strlen(bad));
    char small[8];
    assert_int_equal(state_file_set_aside(path, small, sizeof(small)), 0);
    assert_int_equal(access(path, F_OK), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lines_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_aside, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
