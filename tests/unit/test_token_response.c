/* token_response_parse: what real IdPs send, and what a broken or hostile one could. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "oauth/token_response.h"

static int parse(const char *body, long status, struct token_response *r, char *err, size_t errlen)
{
    return token_response_parse(body, strlen(body), status, r, err, errlen);
}

static void test_entra_success(void **state)
{
    (void)state;
    struct token_response r;
    char err[256];
    const char *body = "{\"token_type\":\"Bearer\",\"expires_in\":3599,\"ext_expires_in\":3599,"
                       "\"access_token\":\"eyJ0eXAiOiJKV1QiLCJub25jZSI6.eyJhdWQiOi.sig-_x\"}";
    assert_int_equal(parse(body, 200, &r, err, sizeof(err)), 1);
    assert_string_equal(r.access_token, "eyJ0eXAiOiJKV1QiLCJub25jZSI6.eyJhdWQiOi.sig-_x");
    assert_string_equal(r.token_type, "Bearer");
    assert_int_equal(r.expires_in, 3599);
    assert_null(r.refresh_token);
    assert_null(r.error);
    assert_int_equal(r.aadsts, 0);
    token_response_clear(&r);
    assert_null(r.access_token);
}

static void test_google_success(void **state)
{
    (void)state;
    struct token_response r;
    char err[256];
    const char *body =
        "{\n  \"access_token\": \"ya29.a0AfH6SMB-xyz_123\",\n  \"expires_in\": 3599,\n"
        "  \"scope\": \"https://mail.google.com/\",\n  \"token_type\": \"bearer\",\n"
        "  \"refresh_token\": \"1//0gABC-def\"\n}";
    assert_int_equal(parse(body, 200, &r, err, sizeof(err)), 1);
    assert_string_equal(r.access_token, "ya29.a0AfH6SMB-xyz_123");
    assert_string_equal(r.refresh_token, "1//0gABC-def");
    assert_string_equal(r.token_type, "Bearer");
    assert_int_equal(r.expires_in, 3599);
    token_response_clear(&r);
}

static void test_error_with_codes(void **state)
{
    (void)state;
    struct token_response r;
    char err[256];
    const char *body =
        "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS7000215: Invalid client "
        "secret provided. Ensure the secret being sent in the request is the client secret "
        "value, not the client secret ID.\\r\\nTrace ID: 1234\\r\\nCorrelation ID: 5678\\r\\n"
        "Timestamp: 2026-01-01 00:00:00Z\",\"error_codes\":[7000215],\"timestamp\":\"x\","
        "\"trace_id\":\"1234\",\"correlation_id\":\"5678\"}";
    assert_int_equal(parse(body, 401, &r, err, sizeof(err)), 0);
    assert_null(r.access_token);
    assert_string_equal(r.error, "invalid_client");
    assert_int_equal(r.aadsts, 7000215);
    assert_non_null(strstr(r.error_description, "Invalid client secret provided."));
    /* CR/LF became single spaces */
    assert_null(strchr(r.error_description, '\r'));
    assert_null(strchr(r.error_description, '\n'));
    assert_non_null(strstr(r.error_description, "value, not the client secret ID. Trace ID: 1234"));
    token_response_clear(&r);
}

static void test_aadsts_in_description_only(void **state)
{
    (void)state;
    struct token_response r;
    char err[256];
    const char *body = "{\"error\":\"unauthorized_client\",\"error_description\":"
                       "\"AADSTS700016: Application with identifier 'x' was not found\"}";
    assert_int_equal(parse(body, 400, &r, err, sizeof(err)), 0);
    assert_string_equal(r.error, "unauthorized_client");
    assert_int_equal(r.aadsts, 700016);
    token_response_clear(&r);

    /* error alone: no description, no code */
    assert_int_equal(parse("{\"error\":\"invalid_scope\"}", 400, &r, err, sizeof(err)), 0);
    assert_string_equal(r.error, "invalid_scope");
    assert_null(r.error_description);
    assert_int_equal(r.aadsts, 0);
    token_response_clear(&r);
}

static void test_missing_access_token(void **state)
{
    (void)state;
    struct token_response r;
    char err[256];
    assert_int_equal(
        parse("{\"token_type\":\"Bearer\",\"expires_in\":3599}", 200, &r, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "access_token"));
    assert_null(r.access_token);
    token_response_clear(&r);
    /* an empty token and a non-string one */
    assert_int_equal(parse("{\"access_token\":\"\"}", 200, &r, err, sizeof(err)), -1);
    assert_int_equal(parse("{\"access_token\":12}", 200, &r, err, sizeof(err)), -1);
    /* a 5xx without "error" is not an IdP refusal */
    assert_int_equal(parse("{\"message\":\"down\"}", 503, &r, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "503"));
}

static void test_not_json(void **state)
{
    (void)state;
    struct token_response r;
    char err[256];
    const char *body = "<html><body>Service Unavailable SECRETBODY</body></html>";
    assert_int_equal(parse(body, 503, &r, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not JSON"));
    assert_null(strstr(err, "SECRETBODY"));
    assert_int_equal(parse("", 200, &r, err, sizeof(err)), -1);
    /* truncated JSON, and a body without its NUL: only len bytes are read */
    assert_int_equal(parse("{\"access_token\":\"abc", 200, &r, err, sizeof(err)), -1);
    assert_int_equal(
        token_response_parse("{\"access_token\":\"abc\"}xx", 22, 200, &r, err, sizeof(err)), 1);
    assert_string_equal(r.access_token, "abc");
    token_response_clear(&r);
}

static void test_json_array(void **state)
{
    (void)state;
    struct token_response r;
    char err[256];
    assert_int_equal(parse("[{\"access_token\":\"abc\"}]", 200, &r, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not a JSON object"));
    assert_int_equal(parse("\"abc\"", 200, &r, err, sizeof(err)), -1);
    assert_int_equal(parse("null", 200, &r, err, sizeof(err)), -1);
}

static void test_bad_token_bytes(void **state)
{
    (void)state;
    struct token_response r;
    char err[256];
    const char *bad[] = {
        "{\"access_token\":\"abc\\u0001auth=Bearer evil\"}", /* XOAUTH2 separator */
        "{\"access_token\":\"abc def\"}",                    /* space */
        "{\"access_token\":\"abc\\u00e9def\"}",              /* non-ASCII (UTF-8 of e-acute) */
        "{\"access_token\":\"abc\\r\\nQUIT\"}",              /* SMTP injection */
        "{\"access_token\":\"abc\\u007fdef\"}",              /* DEL */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(parse(bad[i], 200, &r, err, sizeof(err)), -1);
        assert_null(r.access_token);
        /* err says why but never repeats the token */
        assert_null(strstr(err, "abc"));
        assert_non_null(strstr(err, "0x21-0x7e"));
    }
    /* the same check for a refresh token */
    assert_int_equal(
        parse("{\"access_token\":\"ok\",\"refresh_token\":\"a b\"}", 200, &r, err, sizeof(err)),
        -1);
    /* and a token type that is not Bearer */
    assert_int_equal(
        parse("{\"access_token\":\"ok\",\"token_type\":\"mac\"}", 200, &r, err, sizeof(err)), -1);
}

static void test_huge_description_cut(void **state)
{
    (void)state;
    struct token_response r;
    char err[256];
    size_t n = 100000;
    char *body = malloc(n + 200);
    assert_non_null(body);
    int o =
        sprintf(body, "{\"error\":\"invalid_request\u00e9\\u0007%s\",\"error_description\":\"", "");
    for (size_t i = 0; i < n; i++)
        body[o + (int)i] = (char)('a' + (char)(i % 26));
    strcpy(body + o + n, "\"}");
    assert_int_equal(parse(body, 400, &r, err, sizeof(err)), 0);
    assert_true(strlen(r.error_description) <= 300);
    assert_string_equal(r.error_description + strlen(r.error_description) - 3, "...");
    /* error: printable ASCII only */
    for (const char *p = r.error; *p; p++)
        assert_true(*p >= 0x21 && *p <= 0x7e);
    assert_int_equal(strncmp(r.error, "invalid_request", 15), 0);
    token_response_clear(&r);
    free(body);

    /* an error field that is huge itself is cut too */
    body = malloc(5000);
    assert_non_null(body);
    strcpy(body, "{\"error\":\"");
    memset(body + 10, 'x', 4000);
    strcpy(body + 4010, "\"}");
    assert_int_equal(parse(body, 400, &r, err, sizeof(err)), 0);
    assert_true(strlen(r.error) <= 64);
    token_response_clear(&r);
    free(body);

    /* a body over 1 MiB is not even parsed */
    assert_int_equal(token_response_parse("{}", 2 * 1024 * 1024, 200, &r, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "larger"));
}

static void test_expires_in_default_and_string(void **state)
{
    (void)state;
    struct token_response r;
    char err[256];
    assert_int_equal(
        parse("{\"access_token\":\"t\",\"token_type\":\"Bearer\"}", 200, &r, err, sizeof(err)), 1);
    assert_int_equal(r.expires_in, 3600);
    token_response_clear(&r);

    assert_int_equal(
        parse("{\"access_token\":\"t\",\"expires_in\":\"3599\"}", 200, &r, err, sizeof(err)), 1);
    assert_int_equal(r.expires_in, 3599);
    token_response_clear(&r);

    const char *bad[] = {
        "{\"access_token\":\"t\",\"expires_in\":\"35x9\"}",
        "{\"access_token\":\"t\",\"expires_in\":\"-5\"}",
        "{\"access_token\":\"t\",\"expires_in\":\"\"}",
        "{\"access_token\":\"t\",\"expires_in\":0}",
        "{\"access_token\":\"t\",\"expires_in\":-1}",
        "{\"access_token\":\"t\",\"expires_in\":true}",
        "{\"access_token\":\"t\",\"expires_in\":1e300}",
        "{\"access_token\":\"t\",\"expires_in\":\"99999999999999999999999\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(parse(bad[i], 200, &r, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "expires_in"));
    }
}

static void test_clear_after_failure_is_safe(void **state)
{
    (void)state;
    struct token_response r;
    char err[8];
    memset(&r, 0x5a, sizeof(r));
    assert_int_equal(parse("nope", 200, &r, err, sizeof(err)), -1);
    token_response_clear(&r); /* out was zeroed: nothing to free */
    assert_true(strlen(err) < sizeof(err));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entra_success),
        cmocka_unit_test(test_google_success),
        cmocka_unit_test(test_error_with_codes),
        cmocka_unit_test(test_aadsts_in_description_only),
        cmocka_unit_test(test_missing_access_token),
        cmocka_unit_test(test_not_json),
        cmocka_unit_test(test_json_array),
        cmocka_unit_test(test_bad_token_bytes),
        cmocka_unit_test(test_huge_description_cut),
        cmocka_unit_test(test_expires_in_default_and_string),
        cmocka_unit_test(test_clear_after_failure_is_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
