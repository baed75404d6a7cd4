/* The refusal tables (Exchange's SMTP replies, Entra's AADSTS codes) and the JWT claim reader
 * the `test` command shows them with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "oauth/entra_explain.h"
#include "oauth/token_response.h"
#include "proxy/smtp/exchange_explain.h"
#include "proxy/admin/token_claims.h"

/* Replies as Exchange Online words them. */
static void test_exchange_known(void **state)
{
    (void)state;
    const struct exchange_explanation *e;

    e = exchange_explain(535, "5.7.3", "5.7.3 Authentication unsuccessful [DB8PR04CA0011]");
    assert_non_null(e);
    assert_non_null(strstr(e->fix, "New-ServicePrincipal"));
    assert_non_null(strstr(e->fix, "Add-MailboxPermission"));

    e = exchange_explain(535, "5.7.139",
                         "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is "
                         "disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled");
    assert_non_null(e);
    assert_non_null(strstr(e->meaning, "tenant"));
    assert_non_null(strstr(e->fix, "Set-TransportConfig -SmtpClientAuthenticationDisabled $false"));
    assert_non_null(strstr(e->fix, "Set-CASMailbox"));

    e = exchange_explain(535, "5.7.139",
                         "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is "
                         "disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled");
    assert_non_null(e);
    assert_non_null(strstr(e->meaning, "mailbox"));
    assert_null(strstr(e->fix, "Set-TransportConfig"));

    e = exchange_explain(535, "5.7.139",
                         "5.7.139 Authentication unsuccessful, user is locked by your "
                         "organization's security defaults policy. Contact your administrator.");
    assert_non_null(e);
    assert_non_null(strstr(e->fix, "security defaults"));

    /* 5.7.139 with words the table does not know: the general entry */
    e = exchange_explain(535, "5.7.139", "5.7.139 Authentication unsuccessful");
    assert_non_null(e);
    assert_null(e->fragment);

    e = exchange_explain(530, "5.7.57", "5.7.57 Client not authenticated to send mail.");
    assert_non_null(e);
    e = exchange_explain(550, "5.7.60",
                         "5.7.60 SMTP; Client does not have permissions to send as this sender");
    assert_non_null(e);
    assert_non_null(strstr(e->fix, "sender_rewrite"));
    assert_non_null(strstr(e->fix, "SendAs"));
    const struct exchange_explanation *e2 =
        exchange_explain(554, "5.2.252", "5.2.252 SendAsDenied; x not allowed");
    assert_non_null(e2);
    assert_string_equal(e2->fix, e->fix);
    assert_non_null(exchange_explain(554, "5.2.0",
                                     "STOREDRV.Submission.Exception:"
                                     "SendAsDeniedException.MapiExceptionSendAsDenied"));
    e = exchange_explain(432, "4.3.2", "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded");
    assert_non_null(e);
    assert_non_null(strstr(e->fix, "concurrency"));
    e = exchange_explain(430, "4.2.0", "4.2.0 STOREDRV; mailbox logon failure;");
    assert_non_null(e);
    assert_non_null(strstr(e->meaning, "STOREDRV"));
}

static void test_exchange_unknown(void **state)
{
    (void)state;
    /* unknown codes, a known code with another enhanced code, no enhanced code */
    assert_null(exchange_explain(250, "2.0.0", "OK"));
    assert_null(exchange_explain(550, "5.1.1", "5.1.1 User unknown"));
    assert_null(exchange_explain(535, "5.7.8", "5.7.8 Error: authentication failed"));
    assert_null(exchange_explain(535, "", "5.7.3 Authentication unsuccessful"));
    assert_null(exchange_explain(535, NULL, NULL));
    assert_null(exchange_explain(0, "5.7.3", NULL));
    /* the fragment is required: 430 4.2.0 without STOREDRV, 554 5.2.0 without SendAsDenied */
    assert_null(exchange_explain(430, "4.2.0", "4.2.0 something else"));
    assert_null(exchange_explain(554, "5.2.0", NULL));
}

/* Text a peer controls: huge, binary, a fragment beyond the scan limit, no NUL problems. */
static void test_exchange_hostile_text(void **state)
{
    (void)state;
    size_t n = 1 << 20;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'A', n);
    big[n] = '\0';
    assert_null(exchange_explain(430, "4.2.0", big));
    /* the fragment at the very end of a megabyte is not looked for (bounded scan) */
    memcpy(big + n - 8, "STOREDRV", 8);
    assert_null(exchange_explain(430, "4.2.0", big));
    memcpy(big, "storedrv", 8);
    assert_non_null(exchange_explain(430, "4.2.0", big));
    for (size_t i = 0; i < n; i++)
        big[i] = (char)(0x80 | (i & 0x7f));
    assert_null(exchange_explain(430, "4.2.0", big));
    free(big);
    /* an enhanced code longer than any in the table */
    assert_null(exchange_explain(535, "5.7.3333333333", "x"));
    assert_non_null(exchange_explain(535, "5.7.139", "DISABLED FOR THE MAILBOX"));
}

static void test_exchange_format(void **state)
{
    (void)state;
    char buf[1024];
    const struct exchange_explanation *e = exchange_explain(535, "5.7.3", "x");
    assert_non_null(e);
    exchange_explain_format(e, "scanners@contoso.edu", "1111-2222", buf, sizeof(buf));
    assert_non_null(strstr(buf, "; fix: "));
    assert_non_null(strstr(buf, "-AppId 1111-2222"));
    assert_non_null(strstr(buf, "-Identity scanners@contoso.edu"));
    assert_null(strstr(buf, "{mailbox}"));
    assert_null(strchr(buf, '"'));
    /* NULL values keep the placeholders; a short buffer is cut, NUL-terminated */
    exchange_explain_fix(e, NULL, NULL, buf, sizeof(buf));
    assert_non_null(strstr(buf, "{client_id}"));
    exchange_explain_format(e, "m@x", "c", buf, 10);
    assert_int_equal(strlen(buf), 9);
    exchange_explain_format(e, "m@x", "c", buf, 1);
    assert_string_equal(buf, "");
    assert_string_equal(
        exchange_phase_names(EXCHANGE_PHASE_MAIL | EXCHANGE_PHASE_DATA, buf, sizeof(buf)),
        "MAIL/DATA");
    /* every entry: one line, no double quote (they go into key="value" log lines) */
    size_t n;
    const struct exchange_explanation *t = exchange_explain_table(&n);
    assert_true(n >= 10);
    for (size_t i = 0; i < n; i++) {
        assert_null(strpbrk(t[i].meaning, "\"\r\n"));
        assert_null(strpbrk(t[i].fix, "\"\r\n"));
        assert_ptr_equal(
            exchange_explain(t[i].code, t[i].enhanced, t[i].fragment ? t[i].fragment : ""), &t[i]);
    }
}

/* Issue 11: what the MX endpoint says to direct send and connector relay, and the replies to AUTH
 * that mean something else for a password or at High Volume Email. */
static void test_exchange_upstream_kinds(void **state)
{
    (void)state;
    char buf[1200];
    const struct exchange_explanation *e;

    e = exchange_explain(550, "5.7.54",
                         "5.7.54 SMTP; Unable to relay recipient in non-accepted domain");
    assert_non_null(e);
    assert_true(e->phases & EXCHANGE_PHASE_RCPT);
    assert_non_null(strstr(e->meaning, "accepted domain"));
    assert_non_null(strstr(e->fix, "Connectors"));
    assert_non_null(strstr(e->fix, "upstream_client_certificate"));
    e = exchange_explain(550, "5.7.64", "5.7.64 TenantAttribution; Relay Access Denied");
    assert_non_null(e);
    assert_non_null(strstr(e->fix, "TlsSenderCertificateName"));
    e = exchange_explain(550, "5.7.51", "5.7.51 TenantInboundAttribution; Rejecting");
    assert_non_null(e);
    assert_non_null(strstr(e->meaning, "RestrictDomainsToCertificate"));
    e = exchange_explain(550, "5.7.68",
                         "5.7.68 TenantInboundAttribution; Direct Send not allowed for this "
                         "organization from unauthorized sources");
    assert_non_null(e);
    assert_non_null(strstr(e->fix, "RejectDirectSend"));
    e = exchange_explain(550, "5.4.1",
                         "5.4.1 Recipient address rejected: Access denied. "
                         "AS(201806281) [DB5EUR03FT012.eop-EUR03.prod.protection]");
    assert_non_null(e);
    assert_non_null(strstr(e->meaning, "does not exist"));
    assert_null(exchange_explain(550, "5.4.1", "5.4.1 Hop count exceeded"));
    e = exchange_explain(550, "5.7.30",
                         "5.7.30 Basic authentication is not supported for Client Submission");
    assert_non_null(e);
    assert_non_null(strstr(e->fix, "provider = microsoft"));

    /* the same 535 5.7.3, three contexts */
    struct exchange_ctx token = {.cred = EXCHANGE_CRED_TOKEN, .hve = 0};
    struct exchange_ctx hve = {.cred = EXCHANGE_CRED_TOKEN, .hve = 1};
    struct exchange_ctx pw = {.cred = EXCHANGE_CRED_PASSWORD, .hve = 0};
    const char *t535 = "5.7.3 Authentication unsuccessful [SN4PR0201CA0053]";
    e = exchange_explain_ctx(535, "5.7.3", t535, &token);
    assert_ptr_equal(e, exchange_explain(535, "5.7.3", t535));
    assert_ptr_equal(exchange_explain_ctx(535, "5.7.3", t535, NULL), e);
    assert_non_null(strstr(e->fix, "New-ServicePrincipal"));
    e = exchange_explain_ctx(535, "5.7.3", t535, &hve);
    assert_non_null(e);
    assert_non_null(strstr(e->fix, "Add-HVEAppAccess -Identity {mailbox} -AppIds {client_id}"));
    e = exchange_explain_ctx(535, "5.7.3", t535, &pw);
    assert_non_null(e);
    assert_non_null(strstr(e->meaning, "upstream_password_file"));
    assert_non_null(strstr(e->fix, "SMTP Usernames"));
    assert_null(strstr(e->fix, "New-ServicePrincipal"));
    /* HVE's 5.7.139: Security Defaults or an authentication policy, never the tenant switch */
    e = exchange_explain_ctx(535, "5.7.139",
                             "5.7.139 Authentication unsuccessful, the organization configuration "
                             "doesn't allow this authentication request.",
                             &hve);
    assert_non_null(e);
    assert_non_null(strstr(e->fix, "AllowBasicAuthSmtp"));
    assert_null(strstr(e->fix, "Set-TransportConfig"));
    /* a password at smtp.office365.com: the tenant switch is right there */
    e = exchange_explain_ctx(535, "5.7.139", "5.7.139 disabled for the Tenant", &pw);
    assert_non_null(strstr(e->fix, "Set-TransportConfig"));
    /* replies no context changes are found in every context */
    assert_ptr_equal(exchange_explain_ctx(550, "5.7.54", "x", &pw),
                     exchange_explain(550, "5.7.54", "x"));

    assert_true(exchange_host_is_hve("smtp.hve.mx.microsoft"));
    assert_true(exchange_host_is_hve("SMTP-HVE.office365.com"));
    assert_false(exchange_host_is_hve("smtp.office365.com"));
    assert_false(exchange_host_is_hve("hve.mx.microsoft.example"));
    assert_false(exchange_host_is_hve(NULL));

    exchange_explain_kv_ctx(535, "5.7.3", t535, "hve@contoso.edu", "1111-2222", &hve, buf,
                            sizeof(buf));
    assert_non_null(strstr(buf, " explain=\"High Volume Email refused the token"));
    assert_non_null(strstr(buf, "Add-HVEAppAccess -Identity hve@contoso.edu -AppIds 1111-2222"));
    exchange_explain_kv_ctx(250, "2.0.0", "ok", "m", "c", &pw, buf, sizeof(buf));
    assert_string_equal(buf, "");

    /* every context entry: one line, no double quote, found in its own context */
    size_t n;
    const unsigned *creds;
    const int *hves;
    const struct exchange_explanation *t = exchange_explain_ctx_table(&n, &creds, &hves);
    assert_true(n >= 3);
    for (size_t i = 0; i < n; i++) {
        assert_null(strpbrk(t[i].meaning, "\"\r\n"));
        assert_null(strpbrk(t[i].fix, "\"\r\n"));
        struct exchange_ctx x = {.cred = creds[i] ? creds[i] : EXCHANGE_CRED_TOKEN, .hve = hves[i]};
        assert_ptr_equal(exchange_explain_ctx(t[i].code, t[i].enhanced, "", &x), &t[i]);
    }
}

static void test_entra(void **state)
{
    (void)state;
    static const long codes[] = {7000215, 700016, 70011, 7000222};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        assert_non_null(entra_explain(codes[i]));
    assert_non_null(strstr(entra_explain(7000215)->fix, "client_secret_file"));
    assert_non_null(strstr(entra_explain(7000222)->meaning, "expired"));
    assert_null(entra_explain(0));
    assert_null(entra_explain(12345));
    assert_int_equal(token_response_aadsts("AADSTS7000215: Invalid client secret provided."),
                     7000215);
    assert_int_equal(token_response_aadsts("x AADSTS70011: The provided value"), 70011);
    assert_int_equal(token_response_aadsts("no code"), 0);
    assert_int_equal(token_response_aadsts(NULL), 0);
    assert_int_equal(token_response_aadsts("AADSTS"), 0);
    /* digits without end stay bounded */
    assert_true(token_response_aadsts("AADSTS99999999999999999999999") > 0);

    char buf[320];
    entra_explain_hint(NULL, "invalid_client", "AADSTS7000215: Invalid client secret", buf,
                       sizeof(buf));
    assert_non_null(strstr(buf, "; fix: "));
    buf[0] = '\0';
    entra_explain_hint(NULL, "invalid_client", "AADSTS1: whatever", buf, sizeof(buf));
    assert_string_equal(buf, "");
    entra_explain_hint(NULL, "invalid_client", NULL, buf, sizeof(buf));
    assert_string_equal(buf, "");
    /* every hint fits grant_post's 320-byte buffer whole */
    size_t n;
    const struct entra_explanation *t = entra_explain_table(&n);
    for (size_t i = 0; i < n; i++) {
        char line[1024];
        entra_explain_format(&t[i], line, sizeof(line));
        assert_true(strlen(line) < 320);
        assert_null(strpbrk(line, "\"\r\n"));
    }
}

static void test_claims(void **state)
{
    (void)state;
    /* {"aud":"https://outlook.office365.com","roles":["SMTP.SendAsApp"],"exp":1900000000} */
    const char *payload = "eyJhdWQiOiJodHRwczovL291dGxvb2sub2ZmaWNlMzY1LmNvbSIsInJvbGVzIjpbIlNNVFAu"
                          "U2VuZEFzQXBwIl0sImV4cCI6MTkwMDAwMDAwMH0";
    char tok[512];
    snprintf(tok, sizeof(tok), "eyJhbGciOiJSUzI1NiJ9.%s.c2ln", payload);
    cJSON *j = token_claims_decode(tok);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "aud")->valuestring,
                        "https://outlook.office365.com");
    assert_int_equal((long)cJSON_GetObjectItem(j, "exp")->valuedouble, 1900000000L);
    cJSON_Delete(j);

    /* '-' and '_' (base64url) and every padding length */
    j = token_claims_decode("h.eyJhIjoiPj4-In0.s"); /* {"a":">>>"} */
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "a")->valuestring, ">>>");
    cJSON_Delete(j);
    j = token_claims_decode("h.eyJhIjoiPz4_In0.s"); /* {"a":"?>?"} */
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "a")->valuestring, "?>?");
    cJSON_Delete(j);
    j = token_claims_decode("h.eyJhIjoxfQ.s"); /* {"a":1}, two '=' missing */
    assert_non_null(j);
    cJSON_Delete(j);

    /* not JWTs: opaque (Google's ya29.), two parts, four parts, bad alphabet, not an object */
    assert_null(token_claims_decode("ya29.a0AfH6SMBx-opaque-token"));
    assert_null(token_claims_decode("opaque"));
    assert_null(token_claims_decode(NULL));
    assert_null(token_claims_decode("a.b.c.d"));
    assert_null(token_claims_decode(".eyJhIjoxfQ.s"));
    assert_null(token_claims_decode("h..s"));
    assert_null(token_claims_decode("h.eyJhIjoxfQ==.s"));
    assert_null(token_claims_decode("h.eyJh+joxfQ.s"));
    assert_null(token_claims_decode("h.MTIz.s")); /* "123" */
    assert_null(token_claims_decode("h.e.s"));    /* length 1 mod 4 */
    char *big = malloc(40000);
    assert_non_null(big);
    memset(big, 'A', 39999);
    big[39999] = '\0';
    big[1] = '.';
    big[39990] = '.';
    assert_null(token_claims_decode(big));
    free(big);
}

/* Every explanation, with ordinary ids, fits whole in the log line's explain= (700 bytes with
 * its quoting; the fuzz target checks the same): a longer one was cut in the log. */
static void test_exchange_fits_the_log_line(void **state)
{
    size_t n;
    char line[4096];
    (void)state;
    const struct exchange_explanation *t = exchange_explain_table(&n);
    for (size_t i = 0; i < n; i++) {
        exchange_explain_format(&t[i], "scanners@contoso.edu",
                                "11111111-2222-3333-4444-555555555555", line, sizeof(line));
        if (strlen(line) >= 690)
            fail_msg("entry %zu (%03d %s) formats to %zu bytes", i, t[i].code, t[i].enhanced,
                     strlen(line));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exchange_known),
        cmocka_unit_test(test_exchange_unknown),
        cmocka_unit_test(test_exchange_hostile_text),
        cmocka_unit_test(test_exchange_format),
        cmocka_unit_test(test_exchange_upstream_kinds),
        cmocka_unit_test(test_exchange_fits_the_log_line),
        cmocka_unit_test(test_entra),
        cmocka_unit_test(test_claims),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
