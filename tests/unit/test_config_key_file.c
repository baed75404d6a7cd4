/* config_load and [proxy] key_file (the token store's key): accepted when it is 32 bytes of
 * mode 0600; refused, naming FILE:LINE, when it is readable by others, the wrong size or
 * missing; never quoted in a message. Not set: no key, tokens are not persisted. */
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

#include <cmocka.h>

#include "proxy/config/config.h"

static char dir[] = "/tmp/test_config_key_file.XXXXXX";
static char conf[300], keyp[300], secret[300];

static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(fchmod(fd, mode), 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

/* A config whose line 3 is "key_file = PATH" (or nothing at all when path is NULL). */
static struct config *load(const char *path, char **errs)
{
    char text[2048];
    snprintf(text, sizeof(text),
             "[proxy]\nlisten = 127.0.0.1:2525\n%s%s%sstate_dir = %s/state\n"
             "[account a]\nprovider = microsoft\ntenant = contoso.onmicrosoft.com\n"
             "client_id = cid\nclient_secret_file = %s\nmailbox = scan@contoso.edu\n"
             "[device d]\naddress = 10.0.0.1\naccount = a\n",
             path ? "key_file = " : "", path ? path : "", path ? "\n" : "", dir, secret);
    write_file(conf, text, strlen(text), 0600);
    *errs = NULL;
    return config_load(conf, errs);
}

static void expect_refused(const char *path, const char *what)
{
    char *errs = NULL;
    char want[1200];
    struct config *cfg = load(path, &errs);
    assert_null(cfg);
    assert_non_null(errs);
    snprintf(want, sizeof(want), "%s:3: key_file: %s: %s", conf, path, what);
    if (!strstr(errs, want))
        fail_msg("want %s in:\n%s", want, errs);
    assert_null(strstr(errs, "KKKK")); /* the key's bytes never appear */
    free(errs);
}

static int setup(void **state)
{
    (void)state;
    if (!mkdtemp(dir))
        return -1;
    snprintf(conf, sizeof(conf), "%s/c.conf", dir);
    snprintf(keyp, sizeof(keyp), "%s/store.key", dir);
    snprintf(secret, sizeof(secret), "%s/a.secret", dir);
    write_file(secret, "s3cr3t", 6, 0600);
    return 0;
}

static int teardown(void **state)
{
    char cmd[400];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_key_file(void **state)
{
    unsigned char key[64];
    char *errs = NULL;
    struct config *cfg;
    (void)state;
    memset(key, 'K', sizeof(key));

    /* not set: no key, nothing persisted */
    cfg = load(NULL, &errs);
    assert_non_null(cfg);
    assert_null(cfg->key_file);
    config_free(cfg);

    /* 32 bytes, 0600: accepted */
    write_file(keyp, key, 32, 0600);
    cfg = load(keyp, &errs);
    if (!cfg)
        fail_msg("%s", errs);
    assert_string_equal(cfg->key_file, keyp);
    config_free(cfg);

    /* group-readable, world-readable */
    write_file(keyp, key, 32, 0640);
    expect_refused(keyp, "mode 0640 is readable or writable by group/others; run: chmod 600");
    write_file(keyp, key, 32, 0604);
    expect_refused(keyp, "mode 0604 is readable or writable by group/others");

    /* wrong sizes: a hex or base64 text is not a key */
    write_file(keyp, key, 31, 0600);
    expect_refused(keyp, "must be exactly 32 random bytes (it has 31); make one with: "
                         "head -c 32 /dev/urandom >");
    write_file(keyp, key, 64, 0600);
    expect_refused(keyp, "must be exactly 32 random bytes (it has 64)");
    write_file(keyp, key, 0, 0600);
    expect_refused(keyp, "must be exactly 32 random bytes (it has 0)");

    /* missing */
    unlink(keyp);
    expect_refused(keyp, "No such file or directory");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
