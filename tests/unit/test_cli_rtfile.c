/* The refresh-token file `authorize --refresh-token FILE` reads: a bare token or JSON with a
 * "refresh_token" field (sasl-xoauth2, scripts), whitespace trimmed; everything else refused
 * with a reason that never contains the file's content. */
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
#include "proxy/admin/cli_rtfile.h"
#include "proxy/admin/control_proto.h"

#define RT "0.AXoAbC-def_ghi.jkl~mno"

static char dir[] = "/tmp/test_cli_rtfile.XXXXXX";

static const char *write_file(const char *name, const char *text, mode_t mode)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    unlink(path);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static void parses_to(const char *text, const char *want)
{
    char *out = NULL, err[512] = "";
    assert_int_equal(cli_refresh_token_parse(text, &out, err, sizeof(err)), 0);
    assert_string_equal(out, want);
    secret_free(out);
}

static void refused(const char *text, const char *why)
{
    char *out = NULL, err[512] = "";
    assert_int_equal(cli_refresh_token_parse(text, &out, err, sizeof(err)), -1);
    assert_null(out);
    assert_non_null(strstr(err, why));
    assert_null(strstr(err, "AXoA")); /* never the token */
}

static void test_bare(void **state)
{
    (void)state;
    parses_to(RT, RT);
    parses_to(RT "\n", RT);
    parses_to("  \t" RT " \r\n\n", RT);
}

static void test_json(void **state)
{
    (void)state;
    /* sasl-xoauth2's token file */
    parses_to("{\"access_token\": \"ya29.x\", \"refresh_token\": \"" RT "\", \"expiry\": \"0\"}\n",
              RT);
    parses_to("\n  {\"refresh_token\":\"" RT "\"}  ", RT);
    refused("{\"access_token\": \"" RT "\"}", "JSON without a \"refresh_token\" string");
    refused("{\"refresh_token\": 12}", "JSON without a \"refresh_token\" string");
    refused("{\"refresh_token\": \"\"}", "no refresh token");
    refused("{\"refresh_token\": \"" RT " " RT "\"}", "white space");
    refused("{\"refresh_token\": \"" RT, "not valid JSON");
}

static void test_empty_and_junk(void **state)
{
    (void)state;
    refused("", "empty");
    refused(" \n\t\r\n", "empty");
    refused(RT " " RT, "white space at byte 25");
    refused(RT "\n" RT, "white space");
    refused("0.AXoA\x7f", "non-printable");
    refused("0.AXoA\xc3\xa9", "non-printable");
    char *big = malloc(CONTROL_PAYLOAD_MAX + 2);
    assert_non_null(big);
    memset(big, 'A', CONTROL_PAYLOAD_MAX + 1);
    big[CONTROL_PAYLOAD_MAX + 1] = '\0';
    refused(big, "longer than");
    big[CONTROL_PAYLOAD_MAX] = '\0';
    char *out = NULL, err[256];
    assert_int_equal(cli_refresh_token_parse(big, &out, err, sizeof(err)), 0);
    secret_free(out);
    free(big);
}

static void test_files(void **state)
{
    (void)state;
    char *out = NULL, err[1024] = "";
    const char *p = write_file("rt.json", "{\"refresh_token\": \"" RT "\"}\n", 0600);
    assert_int_equal(cli_refresh_token_read(p, &out, err, sizeof(err)), 0);
    assert_string_equal(out, RT);
    secret_free(out);
    out = NULL;

    p = write_file("open", RT "\n", 0644);
    assert_int_equal(cli_refresh_token_read(p, &out, err, sizeof(err)), -1);
    assert_null(out);
    assert_non_null(strstr(err, "readable"));
    assert_null(strstr(err, "AXoA"));

    p = write_file("empty", "\n", 0600);
    assert_int_equal(cli_refresh_token_read(p, &out, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "empty"));

    p = write_file("spaces", "   \n", 0600);
    assert_int_equal(cli_refresh_token_read(p, &out, err, sizeof(err)), -1);
    assert_non_null(strstr(err, p)); /* names the file */
    assert_non_null(strstr(err, "empty"));

    p = write_file("two", RT " " RT "\n", 0600);
    assert_int_equal(cli_refresh_token_read(p, &out, err, sizeof(err)), -1);
    assert_null(strstr(err, "AXoA"));

    snprintf(err, sizeof(err), "x");
    assert_int_equal(cli_refresh_token_read("/nonexistent/rt", &out, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "/nonexistent/rt"));
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    const char *names[] = {"rt.json", "open", "empty", "spaces", "two"};
    char path[512];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    return rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bare),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_empty_and_junk),
        cmocka_unit_test(test_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
