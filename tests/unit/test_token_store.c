/* token_store in a mkdtemp directory: round trip, the file discipline (modes, no temp files
 * left), and every kind of bad file rejected and reported without a token in the report. */
#include <dirent.h>
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

#include "common/log.h"
#include "store/token_store.h"

#define NOW INT64_C(1800000000)
#define TOKEN "eyJhbGciOiJSUzI1NiJ9.payload-of-the-access-token.signature"
#define REFRESH "0.refresh-token-value"

static char dir[] = "/tmp/test_token_store.XXXXXX";
static char state_dir[300], key_path[300], key2_path[300];

static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(fchmod(fd, mode), 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static size_t read_file(const char *path, unsigned char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static int contains(const unsigned char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return 1;
    return 0;
}

/* ---- stderr (the log) captured around a call ---- */

static char log_path[300];
static int saved_stderr = -1;

static void log_capture(void)
{
    fflush(stderr);
    saved_stderr = dup(2);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    dup2(fd, 2);
    close(fd);
}

/* What was logged since log_capture (NUL-terminated, static). */
static const char *log_release(void)
{
    static char buf[8192];
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    size_t n = read_file(log_path, (unsigned char *)buf, sizeof(buf) - 1);
    buf[n] = '\0';
    return buf;
}

static int setup(void **state)
{
    unsigned char key[TOKEN_STORE_KEY_LEN];
    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(state_dir, sizeof(state_dir), "%s/state", dir);
    snprintf(key_path, sizeof(key_path), "%s/store.key", dir);
    snprintf(key2_path, sizeof(key2_path), "%s/other.key", dir);
    snprintf(log_path, sizeof(log_path), "%s/log", dir);
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (unsigned char)(i * 13 + 5);
    write_file(key_path, key, sizeof(key), 0600);
    key[3] ^= 0x40;
    write_file(key2_path, key, sizeof(key), 0600);
    log_set_level(LOGL_DEBUG);
    return 0;
}

static int teardown(void **state)
{
    char cmd[400];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static struct token_store *open_store(const char *key_file)
{
    char err[1024] = "";
    struct token_store *s = token_store_new(state_dir, key_file, err, sizeof(err));
    if (!s)
        fail_msg("token_store_new: %s", err);
    return s;
}

static void save(struct token_store *s, const char *account, const char *token, int64_t exp)
{
    char err[1024] = "";
    struct token_record rec = {
        .access_token = (char *)(uintptr_t)token, .expires_at = exp, .lifetime = 3599};
    if (token_store_save(s, account, &rec, err, sizeof(err)) != 0)
        fail_msg("token_store_save: %s", err);
}

static void tok_path(const char *account, char *buf, size_t len)
{
    snprintf(buf, len, "%s/tokens/%s.tok", state_dir, account);
}

/* Loading account must find nothing and log event=token_store_unreadable with reason. */
static void load_rejected(struct token_store *s, const char *account, const char *reason)
{
    struct token_record rec;
    char want[256];
    log_capture();
    int r = token_store_load(s, account, NOW, &rec);
    const char *log = log_release();
    assert_int_equal(r, 0);
    assert_null(rec.access_token);
    assert_null(rec.refresh_token);
    snprintf(want, sizeof(want), "event=token_store_unreadable account=%s file=", account);
    if (!strstr(log, want) || !strstr(log, reason))
        fail_msg("expected a report with %s; log: %s", reason, log);
    assert_null(strstr(log, TOKEN));
    assert_null(strstr(log, "payload-of-the-access-token"));
}

static void test_round_trip_and_modes(void **state)
{
    struct token_store *s = open_store(key_path);
    struct token_record rec;
    struct stat st;
    char path[400], tdir[400];
    unsigned char buf[4096];
    (void)state;

    /* nothing stored yet: none, quietly */
    log_capture();
    assert_int_equal(token_store_load(s, "scanners", NOW, &rec), 0);
    assert_string_equal(log_release(), "");

    save(s, "scanners", TOKEN, NOW + 3000);
    assert_int_equal(token_store_load(s, "scanners", NOW, &rec), 1);
    assert_string_equal(rec.access_token, TOKEN);
    assert_int_equal(rec.expires_at, NOW + 3000);
    assert_int_equal(rec.lifetime, 3599);
    assert_null(rec.refresh_token);
    token_record_clear(&rec);

    /* overwrite, with a refresh token */
    struct token_record r2 = {.access_token = (char *)(uintptr_t) "second",
                              .expires_at = NOW + 100,
                              .lifetime = 100,
                              .refresh_token = (char *)(uintptr_t)REFRESH};
    char err[512];
    assert_int_equal(token_store_save(s, "scanners", &r2, err, sizeof(err)), 0);
    assert_int_equal(token_store_load(s, "scanners", NOW, &rec), 1);
    assert_string_equal(rec.access_token, "second");
    assert_string_equal(rec.refresh_token, REFRESH);
    token_record_clear(&rec);

    /* modes: file 0600, directory 0700; the token is not in clear */
    tok_path("scanners", path, sizeof(path));
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    snprintf(tdir, sizeof(tdir), "%s/tokens", state_dir);
    assert_int_equal(stat(tdir, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    size_t n = read_file(path, buf, sizeof(buf));
    assert_false(contains(buf, n, "second"));
    assert_false(contains(buf, n, REFRESH));
    assert_int_equal(buf[0], AEAD_VERSION);

    /* nothing but the one file: no temp file left behind */
    DIR *d = opendir(tdir);
    assert_non_null(d);
    int files = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        assert_string_equal(e->d_name, "scanners.tok");
        files++;
    }
    closedir(d);
    assert_int_equal(files, 1);

    /* a second store on the same directory (a restart) reads it */
    token_store_free(s);
    s = open_store(key_path);
    assert_int_equal(token_store_load(s, "scanners", NOW, &rec), 1);
    assert_string_equal(rec.access_token, "second");
    token_record_clear(&rec);
    token_store_free(s);
}

static void test_torn_file(void **state)
{
    struct token_store *s = open_store(key_path);
    char path[400];
    unsigned char buf[4096];
    (void)state;
    save(s, "torn", TOKEN, NOW + 3000);
    tok_path("torn", path, sizeof(path));
    size_t n = read_file(path, buf, sizeof(buf));
    /* cut short anywhere, even an empty file */
    size_t cuts[] = {0, 1, 5, AEAD_OVERHEAD - 1, AEAD_OVERHEAD, n / 2, n - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        write_file(path, buf, cuts[i], 0600);
        load_rejected(s, "torn", cuts[i] < AEAD_OVERHEAD ? "too short" : "authentication failed");
    }
    token_store_free(s);
}

static void test_tampered_file(void **state)
{
    struct token_store *s = open_store(key_path);
    char path[400];
    unsigned char buf[4096];
    (void)state;
    save(s, "tamper", TOKEN, NOW + 3000);
    tok_path("tamper", path, sizeof(path));
    size_t n = read_file(path, buf, sizeof(buf));
    buf[n / 2] ^= 0x01;
    write_file(path, buf, n, 0600);
    load_rejected(s, "tamper", "authentication failed");
    buf[n / 2] ^= 0x01;
    buf[0] = 9;
    write_file(path, buf, n, 0600);
    load_rejected(s, "tamper", "unknown format version");
    token_store_free(s);
}

static void test_wrong_key(void **state)
{
    struct token_store *s = open_store(key_path), *s2 = open_store(key2_path);
    (void)state;
    save(s, "keyed", TOKEN, NOW + 3000);
    load_rejected(s2, "keyed", "authentication failed");
    token_store_free(s);
    token_store_free(s2);
}

static void test_other_accounts_file(void **state)
{
    struct token_store *s = open_store(key_path);
    char a[400], b[400];
    struct token_record rec;
    (void)state;
    save(s, "alpha", TOKEN, NOW + 3000);
    save(s, "beta", "beta-token", NOW + 3000);
    tok_path("alpha", a, sizeof(a));
    tok_path("beta", b, sizeof(b));
    assert_int_equal(rename(a, b), 0); /* alpha's file in beta's place */
    load_rejected(s, "beta", "authentication failed");
    assert_int_equal(token_store_load(s, "alpha", NOW, &rec), 0); /* gone */
    token_store_free(s);
}

static void test_expired_ignored(void **state)
{
    struct token_store *s = open_store(key_path);
    struct token_record rec;
    (void)state;
    save(s, "old", TOKEN, NOW - 1);
    assert_int_equal(token_store_load(s, "old", NOW, &rec), 0);
    assert_null(rec.access_token);
    save(s, "old", TOKEN, NOW);
    assert_int_equal(token_store_load(s, "old", NOW, &rec), 0);
    save(s, "old", TOKEN, NOW + 1);
    assert_int_equal(token_store_load(s, "old", NOW, &rec), 1);
    token_record_clear(&rec);
    token_store_free(s);
}

static void test_bad_account_names(void **state)
{
    struct token_store *s = open_store(key_path);
    struct token_record rec = {.access_token = (char *)(uintptr_t)TOKEN, .expires_at = NOW + 5};
    char err[512];
    (void)state;
    assert_int_equal(token_store_save(s, "../escape", &rec, err, sizeof(err)), -1);
    assert_int_equal(token_store_save(s, ".hidden", &rec, err, sizeof(err)), -1);
    assert_int_equal(token_store_save(s, "", &rec, err, sizeof(err)), -1);
    assert_int_equal(token_store_load(s, "a/b", NOW, &rec), 0);
    token_store_free(s);
}

static void test_key_file_checks(void **state)
{
    unsigned char key[TOKEN_STORE_KEY_LEN], data[64];
    char err[1024], path[400];
    (void)state;
    memset(data, 'k', sizeof(data));
    snprintf(path, sizeof(path), "%s/bad.key", dir);

    write_file(path, data, 31, 0600);
    assert_int_equal(token_store_key_read(path, key, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "must be exactly 32 random bytes (it has 31)"));
    write_file(path, data, 33, 0600);
    assert_int_equal(token_store_key_read(path, key, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "(it has 33)"));
    write_file(path, data, 32, 0640);
    assert_int_equal(token_store_key_read(path, key, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "mode 0640 is readable or writable by group/others"));
    assert_null(strstr(err, "kkkk"));
    write_file(path, data, 32, 0400);
    assert_int_equal(token_store_key_read(path, key, err, sizeof(err)), 0);
    assert_memory_equal(key, data, 32);
    snprintf(path, sizeof(path), "%s/missing.key", dir);
    assert_int_equal(token_store_key_read(path, key, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "No such file"));
    /* the store refuses to open with a bad key */
    assert_null(token_store_new(state_dir, path, err, sizeof(err)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_and_modes), cmocka_unit_test(test_torn_file),
        cmocka_unit_test(test_tampered_file),        cmocka_unit_test(test_wrong_key),
        cmocka_unit_test(test_other_accounts_file),  cmocka_unit_test(test_expired_ignored),
        cmocka_unit_test(test_bad_account_names),    cmocka_unit_test(test_key_file_checks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
