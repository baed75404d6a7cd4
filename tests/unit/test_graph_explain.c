/* proxy/graph/graph_explain.c: Graph's error JSON parsed (bounded, hostile input) and every
 * status and code the issue names mapped to the device's reply, the outcome's class and an
 * explanation; nothing unsanitised (a token, control bytes, quotes) reaches a reply. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/graph/graph_explain.h"

#define MB "scanners@contoso.edu"

static void err_json(char *buf, size_t cap, const char *code, const char *message)
{
    snprintf(buf, cap,
             "{\"error\":{\"code\":\"%s\",\"message\":\"%s\",\"innerError\":{\"date\":"
             "\"2026-12-06T07:00:00\",\"request-id\":\"1b2c-3d\",\"client-request-id\":\"x\"}}}",
             code, message);
}

static void answer(long status, const char *code, const char *message, enum graph_step step,
                   int64_t retry_ms, struct graph_outcome *o)
{
    char body[2048];
    memset(o, 0x55, sizeof(*o));
    err_json(body, sizeof(body), code, message);
    graph_explain_answer(status, body, strlen(body), step, MB, retry_ms, o);
}

static void assert_printable(const char *s)
{
    for (; *s; s++) {
        assert_true(*s >= 0x20 && *s <= 0x7e);
        assert_true(*s != '"' && *s != '\\');
    }
}

static void expect(long status, const char *code, enum graph_step step, enum graph_status want,
                   int conn_failure, const char *reply_prefix, const char *explain_part)
{
    struct graph_outcome o;
    answer(status, code, "Some message.", step, 0, &o);
    if (strncmp(o.reply, reply_prefix, strlen(reply_prefix)) != 0)
        fail_msg("%ld %s: reply %s, want %s...", status, code, o.reply, reply_prefix);
    assert_int_equal(o.status, want);
    assert_int_equal(o.conn_failure, conn_failure);
    assert_int_equal(o.http_status, status);
    assert_string_equal(o.code, code);
    assert_printable(o.reply);
    assert_printable(o.explain);
    if (explain_part && !strstr(o.explain, explain_part))
        fail_msg("%ld %s: explain %s lacks %s", status, code, o.explain, explain_part);
    /* Graph's code and message are in the reply, after ours */
    if (code[0])
        assert_non_null(strstr(o.reply, code));
    assert_non_null(strstr(o.reply, "Some message."));
}

static void test_every_code(void **state)
{
    (void)state;
    expect(401, "InvalidAuthenticationToken", GRAPH_STEP_SENDMAIL, GRAPH_TEMP, 1, "451 4.7.0",
           "https://graph.microsoft.com/.default");
    expect(403, "ErrorAccessDenied", GRAPH_STEP_SENDMAIL, GRAPH_PERM, 0, "550 5.7.1",
           "New-ManagementRoleAssignment -App");
    expect(403, "ErrorAccessDenied", GRAPH_STEP_SENDMAIL, GRAPH_PERM, 0, "550 5.7.1",
           "Test-ApplicationAccessPolicy -Identity " MB);
    expect(403, "ErrorAccessDenied", GRAPH_STEP_SENDMAIL, GRAPH_PERM, 0, "550 5.7.1", "Mail.Send");
    expect(403, "ErrorAccessDenied", GRAPH_STEP_DRAFT, GRAPH_PERM, 0, "550 5.7.1",
           "Mail.ReadWrite");
    expect(403, "ErrorAccessDenied", GRAPH_STEP_SEND, GRAPH_PERM, 0, "550 5.7.1", "Mail.ReadWrite");
    expect(404, "ErrorInvalidUser", GRAPH_STEP_SENDMAIL, GRAPH_PERM, 0, "550 5.1.1", MB);
    expect(404, "ResourceNotFound", GRAPH_STEP_SENDMAIL, GRAPH_PERM, 0, "550 5.1.1",
           "Exchange Online licence");
    expect(400, "ErrorMimeContentInvalidBase64String", GRAPH_STEP_SENDMAIL, GRAPH_PERM, 0,
           "554 5.6.0", "base64");
    expect(400, "ErrorMessageSizeExceeded", GRAPH_STEP_SENDMAIL, GRAPH_PERM, 0, "552 5.3.4",
           "MaxSendSize");
    expect(413, "", GRAPH_STEP_SENDMAIL, GRAPH_PERM, 0, "552 5.3.4", "4 MB");
    expect(403, "ErrorSendAsDenied", GRAPH_STEP_SENDMAIL, GRAPH_PERM, 0, "550 5.7.60",
           "sender_rewrite = header");
    expect(400, "ErrorSendAsDenied", GRAPH_STEP_SENDMAIL, GRAPH_PERM, 0, "550 5.7.60",
           "sender_rewrite = header");
    expect(403, "MailboxNotEnabledForRESTAPI", GRAPH_STEP_SENDMAIL, GRAPH_PERM, 0, "550 5.7.1",
           "on-premises");
    expect(404, "MailboxNotEnabledForRESTAPI", GRAPH_STEP_SENDMAIL, GRAPH_PERM, 0, "550 5.7.1",
           "licence");
    expect(429, "ApplicationThrottled", GRAPH_STEP_SENDMAIL, GRAPH_TEMP, 1, "451 4.7.0",
           "Retry-After");
    expect(503, "", GRAPH_STEP_UPLOAD, GRAPH_TEMP, 1, "451 4.3.2", "Retry-After");
    expect(500, "", GRAPH_STEP_SENDMAIL, GRAPH_TEMP, 0, "451 4.3.0", NULL);
    expect(502, "", GRAPH_STEP_SENDMAIL, GRAPH_TEMP, 1, "451 4.3.0", NULL);
    expect(504, "", GRAPH_STEP_SEND, GRAPH_TEMP, 1, "451 4.3.0", NULL);
    expect(400, "ErrorInvalidRecipients", GRAPH_STEP_SENDMAIL, GRAPH_PERM, 0, "554 5.0.0", NULL);
    expect(404, "ErrorItemNotFound", GRAPH_STEP_SEND, GRAPH_TEMP, 0, "451 4.3.0", "draft");
}

/* 401: Graph's message tells a wrong audience from an expired token */
static void test_401_kinds(void **state)
{
    (void)state;
    struct graph_outcome o;
    answer(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.",
           GRAPH_STEP_SENDMAIL, 0, &o);
    assert_non_null(strstr(o.explain, "outlook.office365.com"));
    assert_non_null(strstr(o.explain, "scope = https://graph.microsoft.com/.default"));
    answer(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is EXPIRED.",
           GRAPH_STEP_SEND, 0, &o);
    assert_non_null(strstr(o.explain, "clock"));
    assert_int_equal(o.status, GRAPH_TEMP);
    assert_int_equal(o.conn_failure, 1);
    answer(401, "InvalidAuthenticationToken", "Something else.", GRAPH_STEP_SENDMAIL, 0, &o);
    assert_non_null(strstr(o.explain, "expired, or for another tenant"));
}

static void test_success_and_retry_after(void **state)
{
    (void)state;
    struct graph_outcome o;
    graph_explain_answer(202, "", 0, GRAPH_STEP_SENDMAIL, MB, -1, &o);
    assert_int_equal(o.status, GRAPH_OK);
    assert_string_equal(o.reply, "250 2.0.0 Accepted by Microsoft Graph");
    assert_string_equal(o.explain, "");
    assert_int_equal(o.retry_after_ms, 0);

    answer(429, "TooManyRequests", "Slow down", GRAPH_STEP_SENDMAIL, 7000, &o);
    assert_int_equal(o.retry_after_ms, 7000);
    assert_non_null(strstr(o.reply, "retry after 7 s"));
    answer(503, "", "", GRAPH_STEP_SENDMAIL, 1500, &o);
    assert_int_equal(o.retry_after_ms, 1500);
    assert_non_null(strstr(o.reply, "retry after 2 s"));
    /* a Retry-After on another status is not a hold */
    answer(500, "", "", GRAPH_STEP_SENDMAIL, 1500, &o);
    assert_int_equal(o.retry_after_ms, 0);

    /* a 3xx or an odd status: temporary, nothing else claimed */
    graph_explain_answer(302, "", 0, GRAPH_STEP_SENDMAIL, MB, -1, &o);
    assert_int_equal(o.status, GRAPH_TEMP);
    assert_string_equal(o.reply, "451 4.3.0 Unexpected answer from Microsoft Graph (HTTP 302)");
}

static void test_no_answer(void **state)
{
    (void)state;
    struct graph_outcome o;
    graph_explain_no_answer("Operation timed out after 300000 milliseconds", 1, &o);
    assert_int_equal(o.status, GRAPH_TEMP);
    assert_int_equal(o.conn_failure, 1);
    assert_int_equal(o.http_status, 0);
    assert_string_equal(o.reply, "451 4.4.2 Microsoft Graph did not answer in time: Operation "
                                 "timed out after 300000 milliseconds");
    graph_explain_no_answer("Could not resolve host: graph.microsoft.com\r\n\"x\"", 0, &o);
    assert_string_equal(o.reply, "451 4.4.1 No answer from Microsoft Graph: Could not resolve "
                                 "host: graph.microsoft.com___x_");
    graph_explain_no_answer(NULL, 0, &o);
    assert_string_equal(o.reply, "451 4.4.1 No answer from Microsoft Graph: no answer");
}

static void test_sanitised(void **state)
{
    (void)state;
    struct graph_outcome o;
    /* control bytes, quotes, backslashes, non-ASCII (JSON escapes), and a token */
    answer(403, "ErrorAccessDenied\\u0001\\\"; DROP",
           "Access \\\"denied\\\"\\r\\nX-Injected: 1 \\u00e9 Bearer eyJ0eXAiOiJKV1QiLCJhbGciOi.x.y",
           GRAPH_STEP_SENDMAIL, 0, &o);
    assert_printable(o.reply);
    assert_string_equal(o.code, "ErrorAccessDeniedDROP");
    assert_null(strstr(o.reply, "eyJ"));
    assert_null(strstr(o.reply, "\r"));
    assert_non_null(strstr(o.reply, "Access _denied___X-Injected: 1 __ Bearer"));

    /* a long message is cut: the reply stays bounded */
    char msg[3000], body[4000];
    memset(msg, 'm', sizeof(msg) - 1);
    msg[sizeof(msg) - 1] = '\0';
    err_json(body, sizeof(body), "ErrorAccessDenied", msg);
    graph_explain_answer(403, body, strlen(body), GRAPH_STEP_SENDMAIL, MB, 0, &o);
    assert_true(strlen(o.reply) < 400);
    assert_printable(o.reply);

    /* a hostile mailbox in the explanation */
    graph_explain_answer(404, "", 0, GRAPH_STEP_SENDMAIL, "a\"b\\c\nd@e", 0, &o);
    assert_printable(o.explain);
    assert_non_null(strstr(o.explain, "a_b_c_d@e"));
}

static void test_parse_hostile(void **state)
{
    (void)state;
    struct graph_error e;
    const char *bad[] = {
        "",
        "not json",
        "{\"error\":\"just a string\"}",
        "{\"error\":[1,2,3]}",
        "[{\"error\":{\"code\":\"X\"}}]",
        "{\"error\":{\"code\":",
        "{\"code\":\"ErrorAccessDenied\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(graph_error_parse(bad[i], strlen(bad[i]), &e), 0);
        assert_string_equal(e.code, "");
        assert_string_equal(e.message, "");
    }
    /* deep nesting: cJSON's nesting limit, no stack overflow */
    size_t n = 200000;
    char *deep = malloc(n + 1);
    assert_non_null(deep);
    memset(deep, '[', n);
    deep[n] = '\0';
    assert_int_equal(graph_error_parse(deep, n, &e), 0);
    free(deep);
    /* not NUL-terminated: only len bytes are read */
    const char *ok = "{\"error\":{\"code\":\"ErrorInvalidUser\",\"message\":\"m\"}}GARBAGE";
    assert_int_equal(graph_error_parse(ok, strlen(ok) - 7, &e), 1);
    assert_string_equal(e.code, "ErrorInvalidUser");
    /* the code's and the request id's fields */
    char body[512];
    err_json(body, sizeof(body), "ErrorSendAsDenied", "no");
    assert_int_equal(graph_error_parse(body, strlen(body), &e), 1);
    assert_string_equal(e.request_id, "1b2c-3d");
    /* wrong types are ignored */
    const char *types = "{\"error\":{\"code\":5,\"message\":{\"a\":1},\"innerError\":\"x\"}}";
    assert_int_equal(graph_error_parse(types, strlen(types), &e), 1);
    assert_string_equal(e.code, "");
    assert_string_equal(e.message, "");
}

static void test_explanations_fit(void **state)
{
    (void)state;
    /* every explanation, with a long mailbox, stays whole-ish and ends inside the buffer */
    long statuses[] = {400, 401, 403, 404, 408, 413, 429, 500, 502, 503};
    const char *codes[] = {"",
                           "ErrorAccessDenied",
                           "ErrorSendAsDenied",
                           "MailboxNotEnabledForRESTAPI",
                           "ErrorMessageSizeExceeded",
                           "ErrorMimeContentInvalidBase64String",
                           "ErrorInvalidUser"};
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
        for (size_t c = 0; c < sizeof(codes) / sizeof(codes[0]); c++)
            for (int step = GRAPH_STEP_SENDMAIL; step <= GRAPH_STEP_DELETE; step++) {
                struct graph_outcome o;
                char body[512];
                err_json(body, sizeof(body), codes[c], "m");
                graph_explain_answer(statuses[i], body, strlen(body), (enum graph_step)step,
                                     "scanner-mailbox-with-a-long-name@contoso.onmicrosoft.com",
                                     1000, &o);
                assert_true(strlen(o.reply) < sizeof(o.reply));
                if (strlen(o.explain) == 0 || strlen(o.explain) >= sizeof(o.explain) - 1)
                    fail_msg("%ld %s step %d: explain %zu bytes: %s", statuses[i], codes[c], step,
                             strlen(o.explain), o.explain);
                assert_printable(o.reply);
                assert_printable(o.explain);
                assert_true(o.reply[0] == '4' || o.reply[0] == '5');
                assert_int_equal(o.reply[0] == '4', o.status == GRAPH_TEMP);
            }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code),
        cmocka_unit_test(test_401_kinds),
        cmocka_unit_test(test_success_and_retry_after),
        cmocka_unit_test(test_no_answer),
        cmocka_unit_test(test_sanitised),
        cmocka_unit_test(test_parse_hostile),
        cmocka_unit_test(test_explanations_fit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
