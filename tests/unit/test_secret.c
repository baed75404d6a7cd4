/* common/secret.c: secret memory is whole pages of its own, kept out of core dumps (the "dd"
 * flag in /proc/self/smaps), wiped before it is freed; secret files are read into it. */
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

#include "common/secret.h"

static size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

/* The VmFlags of the mapping that holds p, from /proc/self/smaps: 1 when it has flag. */
static int smaps_flag(const void *p, const char *flag)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0, found = -1;
    uintptr_t a = (uintptr_t)p;
    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = a >= lo && a < hi;
            continue;
        }
        if (in && strncmp(line, "VmFlags:", 8) == 0) {
            char want[8];
            snprintf(want, sizeof(want), " %s", flag);
            size_t wl = strlen(want);
            found = 0;
            for (char *s = strstr(line, want); s; s = strstr(s + 1, want))
                if (s[wl] == ' ' || s[wl] == '\n')
                    found = 1;
            break;
        }
    }
    fclose(f);
    assert_int_not_equal(found, -1); /* the mapping was found */
    return found;
}

static void test_alloc_is_page_aligned_and_not_dumped(void **state)
{
    (void)state;
    size_t pg = page_size();
    unsigned char *p = secret_alloc(100);
    assert_non_null(p);
    assert_true(secret_is_guarded(p));
    /* the block starts on a page: the header is the only thing before p in it */
    uintptr_t base = (uintptr_t)p & ~(uintptr_t)(pg - 1);
    assert_true((uintptr_t)p - base < 256);
    for (size_t i = 0; i < 100; i++)
        assert_int_equal(p[i], 0);
    assert_int_equal(smaps_flag(p, "dd"), 1);
    secret_free_mem(p);

    /* larger than a page: every page of it */
    unsigned char *big = secret_alloc(3 * pg);
    assert_non_null(big);
    assert_int_equal(smaps_flag(big, "dd"), 1);
    assert_int_equal(smaps_flag(big + 3 * pg - 1, "dd"), 1);
    secret_free_mem(big);
}

static const unsigned char *released;
static size_t released_size;
static int released_clean;

static void on_release(const void *mem, size_t size)
{
    const unsigned char *m = mem;
    released = m;
    released_size = size;
    released_clean = 1;
    for (size_t i = 0; i < size; i++)
        if (m[i])
            released_clean = 0;
}

static void test_dup_is_guarded_and_wiped_whole(void **state)
{
    (void)state;
    char *s = secret_dup("client-secret-value");
    assert_non_null(s);
    assert_string_equal(s, "client-secret-value");
    assert_true(secret_is_guarded(s));
    /* cut short in place (as secret_read_file strips line ends): still wiped past the NUL */
    s[6] = '\0';
    secret_set_release_hook(on_release);
    released = NULL;
    secret_free(s);
    secret_set_release_hook(NULL);
    assert_non_null(released);
    assert_true(released_size >= page_size());
    assert_int_equal(released_size % page_size(), 0);
    assert_int_equal((uintptr_t)released % page_size(), 0);
    assert_true(released_clean);
    assert_false(secret_is_guarded(s));
}

static void test_free_mem_wipes(void **state)
{
    (void)state;
    unsigned char *p = secret_alloc(64);
    assert_non_null(p);
    memset(p, 0xAA, 64); /* no NUL at all */
    secret_set_release_hook(on_release);
    released = NULL;
    secret_free_mem(p);
    secret_set_release_hook(NULL);
    assert_non_null(released);
    assert_true(released_clean);
}

/* A string malloc'd elsewhere may still be given to secret_free. */
static void test_free_plain_heap_string(void **state)
{
    (void)state;
    char *s = strdup("not from secret_alloc");
    assert_non_null(s);
    assert_false(secret_is_guarded(s));
    released = NULL;
    secret_set_release_hook(on_release);
    secret_free(s);
    secret_set_release_hook(NULL);
    assert_null(released); /* not a block: freed as a plain string */
    secret_free(NULL);
    secret_free_mem(NULL);
    assert_null(secret_dup(NULL));
}

static void test_read_file_into_guarded_memory(void **state)
{
    (void)state;
    char path[] = "/tmp/test_secret_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(fchmod(fd, 0600), 0);
    assert_int_equal(write(fd, "s3cr3t\r\n", 8), 8);
    close(fd);
    char *out = NULL, err[256];
    assert_int_equal(secret_read_file(path, &out, err, sizeof(err)), 0);
    assert_string_equal(out, "s3cr3t");
    assert_true(secret_is_guarded(out));
    assert_int_equal(smaps_flag(out, "dd"), 1);
    secret_free(out);
    unlink(path);
}

/* Many live at once, freed in another order: the list holds. */
static void test_many(void **state)
{
    (void)state;
    char *v[64];
    for (int i = 0; i < 64; i++) {
        char buf[32];
        snprintf(buf, sizeof(buf), "token-%d", i);
        v[i] = secret_dup(buf);
        assert_non_null(v[i]);
    }
    for (int i = 0; i < 64; i += 2)
        secret_free(v[i]);
    for (int i = 1; i < 64; i += 2) {
        char buf[32];
        snprintf(buf, sizeof(buf), "token-%d", i);
        assert_true(secret_is_guarded(v[i]));
        assert_string_equal(v[i], buf);
        secret_free(v[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_is_page_aligned_and_not_dumped),
        cmocka_unit_test(test_dup_is_guarded_and_wiped_whole),
        cmocka_unit_test(test_free_mem_wipes),
        cmocka_unit_test(test_free_plain_heap_string),
        cmocka_unit_test(test_read_file_into_guarded_memory),
        cmocka_unit_test(test_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
