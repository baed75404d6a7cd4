/* Unit tests for proxy/smtp/sasl.c: strict base64, XOAUTH2/OAUTHBEARER encoders,
 * PLAIN/LOGIN/XOAUTH2 decoders, with hostile input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/secret.h"
#include "proxy/smtp/sasl.h"

static void dec_ok(const char *in, const char *expect, size_t expect_len)
{
    char *out = NULL;
    long n = sasl_b64_decode(in, strlen(in), &out);
    assert_int_equal(n, (long)expect_len);
    assert_non_null(out);
    assert_memory_equal(out, expect, expect_len);
    assert_int_equal(out[expect_len], '\0');
    free(out); /* may hold NULs: secret_free would not matter for test data */
}

static void dec_bad_n(const char *in, size_t len)
{
    char *out = (char *)0x1;
    assert_int_equal(sasl_b64_decode(in, len, &out), -1);
    assert_ptr_equal(out, (char *)0x1); /* untouched on failure */
}

static void dec_bad(const char *in)
{
    dec_bad_n(in, strlen(in));
}

static void test_b64_decode(void **state)
{
    (void)state;
    dec_ok("", "", 0);
    dec_ok("=", "", 0);
    dec_ok("YQ==", "a", 1);
    dec_ok("YWI=", "ab", 2);
    dec_ok("YWJj", "abc", 3);
    dec_ok("YWJjZA==", "abcd", 4);
    dec_ok("AGJvYgBzZWNyZXQ=", "\0bob\0secret", 11);
    dec_ok("+/+/", "\xfb\xff\xbf", 3);
    /* Non-zero pad bits are tolerated (RFC 4648 3.5 allows either). */
    dec_ok("YR==", "a", 1);
    dec_bad("Y");
    dec_bad("YQ");
    dec_bad("YQ=");
    dec_bad("Y===");
    dec_bad("====");
    dec_bad("==");
    dec_bad("YQ==YQ==");
    dec_bad("Y=Q=");
    dec_bad(" YQ==");
    dec_bad("YQ== ");
    dec_bad("YQ==\r\n");
    dec_bad("YWJj\n");
    dec_bad("YW\nJj");
    dec_bad("YWJ\tj");
    dec_bad("YQ!=");
    dec_bad("YW-_");
    dec_bad("YWJj=");
    dec_bad("YWJj====");
    dec_bad("\x80WJj");
    dec_bad_n("YW\0j", 4);
    dec_bad_n("YWJj\0\0\0\0", 8);
}

static void test_b64_encode(void **state)
{
    static const char bin[] = "\0\x01\xff\x80 x";
    char *e, *d = NULL;
    (void)state;
    e = sasl_b64_encode("", 0);
    assert_string_equal(e, "");
    secret_free(e);
    e = sasl_b64_encode("a", 1);
    assert_string_equal(e, "YQ==");
    secret_free(e);
    e = sasl_b64_encode("abcd", 4);
    assert_string_equal(e, "YWJjZA==");
    secret_free(e);
    e = sasl_b64_encode(bin, sizeof(bin) - 1);
    assert_int_equal(sasl_b64_decode(e, strlen(e), &d), (long)sizeof(bin) - 1);
    assert_memory_equal(d, bin, sizeof(bin) - 1);
    free(d);
    secret_free(e);
}

/* Decode b64 and compare with the expected plain bytes. */
static void expect_b64(char *b64, const char *plain, size_t plain_len)
{
    char *d = NULL;
    assert_non_null(b64);
    assert_int_equal(sasl_b64_decode(b64, strlen(b64), &d), (long)plain_len);
    assert_memory_equal(d, plain, plain_len);
    free(d);
    secret_free(b64);
}

static void test_xoauth2_encode(void **state)
{
    static const char plain[] = "user=someone@example.com\001auth=Bearer "
                                "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\001\001";
    char *e;
    (void)state;
    e = sasl_xoauth2_encode("someone@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg");
    assert_non_null(e);
    /* The example from Google's XOAUTH2 documentation. */
    assert_string_equal(e, "dXNlcj1zb21lb25lQGV4YW1wbGUuY29tAWF1dGg9QmVhcmVyIHlhMjkudkY5ZGZ0NHFtVGM"
                           "yTnZiM1JsY2tCaGRIUmhkbWx6ZEdFdVkyOXRDZwEB");
    expect_b64(e, plain, sizeof(plain) - 1);
    assert_null(sasl_xoauth2_encode("", "tok"));
    assert_null(sasl_xoauth2_encode("u@x", ""));
    assert_null(sasl_xoauth2_encode(NULL, "tok"));
    assert_null(sasl_xoauth2_encode("u@x", NULL));
    assert_null(sasl_xoauth2_encode("u@x", "to\001k"));
    assert_null(sasl_xoauth2_encode("u@x", "to k"));
    assert_null(sasl_xoauth2_encode("u@x", "tok\r\n"));
    assert_null(sasl_xoauth2_encode("u\001@x", "tok"));
    assert_null(sasl_xoauth2_encode("u@x", "t\xc3\xa4"));
}

static void test_oauthbearer_encode(void **state)
{
    static const char full[] =
        "n,a=a=2Cb=3Dc@x,\001host=smtp.example\001port=587\001auth=Bearer tok\001\001";
    static const char bare[] = "n,a=u@x,\001auth=Bearer tok\001\001";
    (void)state;
    expect_b64(sasl_oauthbearer_encode("a,b=c@x", "smtp.example", 587, "tok"), full,
               sizeof(full) - 1);
    expect_b64(sasl_oauthbearer_encode("u@x", NULL, 0, "tok"), bare, sizeof(bare) - 1);
    expect_b64(sasl_oauthbearer_encode("u@x", "", 0, "tok"), bare, sizeof(bare) - 1);
    {
        static const char portonly[] = "n,a=u@x,\001port=25\001auth=Bearer tok\001\001";
        expect_b64(sasl_oauthbearer_encode("u@x", NULL, 25, "tok"), portonly, sizeof(portonly) - 1);
    }
    assert_null(sasl_oauthbearer_encode("u@x", NULL, 0, "t\001k"));
    assert_null(sasl_oauthbearer_encode("u@x", "h\001", 0, "tok"));
    assert_null(sasl_oauthbearer_encode("", NULL, 0, "tok"));
    assert_null(sasl_oauthbearer_encode("u@x", NULL, 0, ""));
}

static char *b64_of(const char *plain, size_t len)
{
    char *e = sasl_b64_encode(plain, len);
    assert_non_null(e);
    return e;
}

static void xo_ok(const char *plain, size_t len, const char *user, const char *token)
{
    char *b = b64_of(plain, len), *u = NULL, *t = NULL;
    assert_int_equal(sasl_xoauth2_decode(b, strlen(b), &u, &t), 0);
    assert_string_equal(u, user);
    assert_string_equal(t, token);
    secret_free(u);
    secret_free(t);
    secret_free(b);
}

static void xo_bad(const char *plain, size_t len)
{
    char *b = b64_of(plain, len), *u = NULL, *t = NULL;
    assert_int_equal(sasl_xoauth2_decode(b, strlen(b), &u, &t), -1);
    assert_null(u);
    assert_null(t);
    secret_free(b);
}

#define XO_OK(s, u, t) xo_ok(s, sizeof(s) - 1, u, t)
#define XO_BAD(s) xo_bad(s, sizeof(s) - 1)

static void test_xoauth2_decode(void **state)
{
    char *e, *u = NULL, *t = NULL;
    (void)state;
    XO_OK("user=a@b\001auth=Bearer tok\001\001", "a@b", "tok");
    e = sasl_xoauth2_encode("x@y.z", "eyJ0eXAi.abc-_~");
    assert_int_equal(sasl_xoauth2_decode(e, strlen(e), &u, &t), 0);
    assert_string_equal(u, "x@y.z");
    assert_string_equal(t, "eyJ0eXAi.abc-_~");
    secret_free(u);
    secret_free(t);
    secret_free(e);
    XO_BAD("");
    XO_BAD("user=\001auth=Bearer tok\001\001");
    XO_BAD("user=a@b\001auth=Bearer \001\001");
    XO_BAD("user=a@b\001auth=Bearer tok\001");
    XO_BAD("user=a@b\001auth=Bearer tok\001\001x");
    XO_BAD("user=a@b\001auth=Bearer tok\001\001\001");
    XO_BAD("user=a@b\001auth=Basic tok\001\001");
    XO_BAD("usr=a@b\001auth=Bearer tok\001\001");
    XO_BAD("user=a@b\001auth=Bearer to k\001\001");
    XO_BAD("user=a@b\001auth=Bearer t\0k\001\001");
    XO_BAD("user=a\0b\001auth=Bearer tok\001\001");
    XO_BAD("user=a@b auth=Bearer tok");
    assert_int_equal(sasl_xoauth2_decode("!!!!", 4, &u, &t), -1);
}

static void plain_ok(const char *plain, size_t len, const char *user, const char *pass)
{
    char *b = b64_of(plain, len), *u = NULL, *p = NULL;
    assert_int_equal(sasl_plain_decode(b, strlen(b), &u, &p), 0);
    assert_string_equal(u, user);
    assert_string_equal(p, pass);
    secret_free(u);
    secret_free(p);
    secret_free(b);
}

static void plain_bad(const char *plain, size_t len)
{
    char *b = b64_of(plain, len), *u = NULL, *p = NULL;
    assert_int_equal(sasl_plain_decode(b, strlen(b), &u, &p), -1);
    assert_null(u);
    assert_null(p);
    secret_free(b);
}

#define PLAIN_OK(s, u, p) plain_ok(s, sizeof(s) - 1, u, p)
#define PLAIN_BAD(s) plain_bad(s, sizeof(s) - 1)

static void test_plain_decode(void **state)
{
    char *u = NULL, *p = NULL;
    (void)state;
    PLAIN_OK("\0bob\0secret", "bob", "secret");
    PLAIN_OK("bob\0bob\0s e c r e t", "bob", "s e c r e t");
    PLAIN_OK("\0scanner@uni.example\0p\xc3\xa4ss", "scanner@uni.example", "p\xc3\xa4ss");
    PLAIN_BAD("alice\0bob\0secret");
    PLAIN_BAD("\0\0secret");
    PLAIN_BAD("\0bob\0");
    PLAIN_BAD("\0bob\0sec\0ret");
    PLAIN_BAD("\0bob\0secret\0");
    PLAIN_BAD("bob");
    PLAIN_BAD("\0bob");
    PLAIN_BAD("");
    PLAIN_BAD("\0");
    PLAIN_BAD("\0\0");
    /* Real client strings. */
    assert_int_equal(sasl_plain_decode("AGJvYgBzZWNyZXQ=", 16, &u, &p), 0);
    assert_string_equal(u, "bob");
    assert_string_equal(p, "secret");
    secret_free(u);
    secret_free(p);
    u = p = NULL;
    assert_int_equal(sasl_plain_decode("AGJvYgBzZWNyZXQ= ", 17, &u, &p), -1);
    assert_int_equal(sasl_plain_decode("=", 1, &u, &p), -1);
    assert_int_equal(sasl_plain_decode("*", 1, &u, &p), -1);
    assert_null(u);
    assert_null(p);
}

static void test_login_decode(void **state)
{
    char *o = NULL;
    (void)state;
    assert_int_equal(sasl_login_decode("Ym9i", 4, &o), 0);
    assert_string_equal(o, "bob");
    secret_free(o);
    o = NULL;
    /* A length argument shorter than the string: only that much is read. */
    assert_int_equal(sasl_login_decode("c2VjcmV0IQ==trailing", 12, &o), 0);
    assert_string_equal(o, "secret!");
    secret_free(o);
    o = NULL;
    assert_int_equal(sasl_login_decode("", 0, &o), -1);
    assert_int_equal(sasl_login_decode("=", 1, &o), -1);
    assert_int_equal(sasl_login_decode("AA==", 4, &o), -1);
    assert_int_equal(sasl_login_decode("YQBi", 4, &o), -1); /* "a\0b" */
    assert_int_equal(sasl_login_decode("Ym9i\r\n", 6, &o), -1);
    assert_int_equal(sasl_login_decode("*", 1, &o), -1);
    assert_null(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64_decode),     cmocka_unit_test(test_b64_encode),
        cmocka_unit_test(test_xoauth2_encode), cmocka_unit_test(test_oauthbearer_encode),
        cmocka_unit_test(test_xoauth2_decode), cmocka_unit_test(test_plain_decode),
        cmocka_unit_test(test_login_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
