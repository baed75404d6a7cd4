/* aead: round trip, and every way a sealed blob must fail to open. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "store/aead.h"

static unsigned char key1[AEAD_KEY_LEN], key2[AEAD_KEY_LEN]; /* differ in one bit */

static int setup_keys(void **state)
{
    (void)state;
    for (size_t i = 0; i < AEAD_KEY_LEN; i++)
        key1[i] = key2[i] = (unsigned char)(i * 7 + 1);
    key2[AEAD_KEY_LEN - 1] ^= 1;
    return 0;
}

static int contains(const unsigned char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return 1;
    return 0;
}
static const char msg[] = "eyJ0eXAiOiJKV1Qi.access-token.sig";

static size_t seal(const unsigned char *key, const char *ctx, unsigned char *out, size_t cap)
{
    size_t n = 0;
    assert_int_equal(aead_seal(key, ctx, (const unsigned char *)msg, strlen(msg), out, cap, &n), 0);
    assert_int_equal(n, strlen(msg) + AEAD_OVERHEAD);
    return n;
}

/* Opening must fail and leave nothing in out. */
static void open_fails(const unsigned char *key, const char *ctx, const unsigned char *in,
                       size_t inlen)
{
    unsigned char out[256];
    size_t n = 12345;
    const char *why = NULL;
    memset(out, 0xaa, sizeof(out));
    assert_int_equal(aead_open(key, ctx, in, inlen, out, sizeof(out), &n, &why), -1);
    assert_int_equal(n, 12345);
    assert_non_null(why);
    for (size_t i = 0; i < sizeof(out); i++)
        assert_int_equal(out[i], 0);
}

static void test_round_trip(void **state)
{
    unsigned char sealed[256], sealed2[256], out[256];
    size_t n, m = 0;
    (void)state;
    n = seal(key1, "scanners", sealed, sizeof(sealed));
    assert_int_equal(sealed[0], AEAD_VERSION);
    assert_false(contains(sealed, n, "access-token")); /* not in clear */
    assert_int_equal(aead_open(key1, "scanners", sealed, n, out, sizeof(out), &m, NULL), 0);
    assert_int_equal(m, strlen(msg));
    assert_memory_equal(out, msg, m);
    /* a fresh nonce every time */
    seal(key1, "scanners", sealed2, sizeof(sealed2));
    assert_memory_not_equal(sealed, sealed2, n);
    /* empty plaintext */
    assert_int_equal(aead_seal(key1, "a", NULL, 0, sealed, sizeof(sealed), &n), 0);
    assert_int_equal(n, AEAD_OVERHEAD);
    assert_int_equal(aead_open(key1, "a", sealed, n, out, sizeof(out), &m, NULL), 0);
    assert_int_equal(m, 0);
    /* no room */
    assert_int_equal(aead_seal(key1, "a", (const unsigned char *)msg, strlen(msg), sealed,
                               strlen(msg) + AEAD_OVERHEAD - 1, &n),
                     -1);
}

static void test_wrong_key_and_context(void **state)
{
    unsigned char sealed[256];
    size_t n;
    (void)state;
    n = seal(key1, "scanners", sealed, sizeof(sealed));
    open_fails(key2, "scanners", sealed, n);
    open_fails(key1, "scanners2", sealed, n);
    open_fails(key1, "scanner", sealed, n);
    open_fails(key1, "", sealed, n);
}

static void test_every_bit_flip(void **state)
{
    unsigned char sealed[256];
    size_t n;
    (void)state;
    n = seal(key1, "acct", sealed, sizeof(sealed));
    for (size_t i = 0; i < n; i++)
        for (int b = 0; b < 8; b++) {
            sealed[i] ^= (unsigned char)(1u << b);
            open_fails(key1, "acct", sealed, n);
            sealed[i] ^= (unsigned char)(1u << b);
        }
    /* and the original still opens */
    unsigned char out[256];
    size_t m;
    assert_int_equal(aead_open(key1, "acct", sealed, n, out, sizeof(out), &m, NULL), 0);
}

static void test_truncation_and_extension(void **state)
{
    unsigned char sealed[256];
    size_t n;
    (void)state;
    n = seal(key1, "acct", sealed, sizeof(sealed));
    for (size_t len = 0; len < n; len++)
        open_fails(key1, "acct", sealed, len);
    sealed[n] = 0;
    open_fails(key1, "acct", sealed, n + 1); /* a byte appended */
}

static void test_unknown_version(void **state)
{
    unsigned char sealed[256], out[256];
    size_t n, m;
    const char *why = NULL;
    (void)state;
    n = seal(key1, "acct", sealed, sizeof(sealed));
    sealed[0] = 2;
    assert_int_equal(aead_open(key1, "acct", sealed, n, out, sizeof(out), &m, &why), -1);
    assert_string_equal(why, "unknown format version");
    sealed[0] = 0;
    open_fails(key1, "acct", sealed, n);
}

static void test_output_too_small(void **state)
{
    unsigned char sealed[256], out[8];
    size_t n, m;
    (void)state;
    n = seal(key1, "acct", sealed, sizeof(sealed));
    assert_int_equal(aead_open(key1, "acct", sealed, n, out, sizeof(out), &m, NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),      cmocka_unit_test(test_wrong_key_and_context),
        cmocka_unit_test(test_every_bit_flip),  cmocka_unit_test(test_truncation_and_extension),
        cmocka_unit_test(test_unknown_version), cmocka_unit_test(test_output_too_small),
    };
    return cmocka_run_group_tests(tests, setup_keys, NULL);
}
