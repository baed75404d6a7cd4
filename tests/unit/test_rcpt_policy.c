#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/config/rcpt_policy.h"

static int rp_match(const char *list, const char *addr)
{
    struct rcpt_policy p;
    char err[512];
    assert_int_equal(rcpt_policy_parse(list, &p, err, sizeof(err)), 0);
    int m = rcpt_policy_match(&p, addr);
    rcpt_policy_clear(&p);
    return m;
}

static void rp_bad(const char *list, const char *want)
{
    struct rcpt_policy p;
    char err[512] = "";
    assert_int_equal(rcpt_policy_parse(list, &p, err, sizeof(err)), -1);
    assert_string_equal(err, want);
    assert_null(p.rules);
    assert_null(p.display);
}

static void test_domain(void **state)
{
    (void)state;
    assert_true(rp_match("@upenn.edu", "x@upenn.edu"));
    assert_true(rp_match("@upenn.edu", "X.Y@UPenn.EDU"));
    assert_true(rp_match("@upenn.edu", "x@upenn.edu.")); /* trailing root dot */
    assert_false(rp_match("@upenn.edu", "x@isc.upenn.edu"));
    assert_false(rp_match("@upenn.edu", "x@notupenn.edu"));
    assert_false(rp_match("@upenn.edu", "x@upenn.edu.evil.com"));
    assert_false(rp_match("@upenn.edu", "upenn.edu@gmail.com"));
}

static void test_subdomains(void **state)
{
    (void)state;
    assert_true(rp_match("@.upenn.edu", "x@isc.upenn.edu"));
    assert_true(rp_match("@.upenn.edu", "x@A.B.UPENN.edu"));
    assert_false(rp_match("@.upenn.edu", "x@upenn.edu")); /* not the domain itself */
    assert_false(rp_match("@.upenn.edu", "x@xupenn.edu"));
    assert_false(rp_match("@.upenn.edu", "x@.upenn.edu.com"));
    /* Penn's rule: both */
    assert_true(rp_match("@upenn.edu, @.upenn.edu", "x@upenn.edu"));
    assert_true(rp_match("@upenn.edu, @.upenn.edu", "x@med.upenn.edu"));
    assert_false(rp_match("@upenn.edu, @.upenn.edu", "x@gmail.com"));
}

static void test_address(void **state)
{
    (void)state;
    assert_true(rp_match("alice@partner.org", "alice@partner.org"));
    assert_true(rp_match("alice@partner.org", "Alice@Partner.ORG")); /* local part too */
    assert_false(rp_match("alice@partner.org", "bob@partner.org"));
    assert_false(rp_match("alice@partner.org", "xalice@partner.org"));
    assert_false(rp_match("alice@partner.org", "alice@partner.org.evil"));
    assert_false(rp_match("alice@partner.org", "alice@sub.partner.org"));
}

static void test_any_and_odd_addresses(void **state)
{
    (void)state;
    assert_true(rp_match("*", "anyone@anywhere.example"));
    assert_true(rp_match("*", "postmaster"));
    assert_true(rp_match("@a.org, *", "x@b.org"));
    assert_false(rp_match("@a.org", "postmaster"));
    assert_false(rp_match("@a.org", "@a.org"));
    assert_false(rp_match("@a.org", "x@"));
    assert_false(rp_match("@a.org", "x@[10.0.0.1]"));
    assert_false(rp_match("@a.org", ""));
    assert_true(rp_match("@a.org", "\"odd@name\"@a.org")); /* the last '@' is the one */

    struct rcpt_policy p;
    char err[256];
    assert_int_equal(rcpt_policy_parse("*", &p, err, sizeof(err)), 0);
    assert_true(rcpt_policy_is_any(&p));
    rcpt_policy_clear(&p);
    assert_int_equal(rcpt_policy_parse("@a.org", &p, err, sizeof(err)), 0);
    assert_false(rcpt_policy_is_any(&p));
    rcpt_policy_clear(&p);
}

static void test_display(void **state)
{
    (void)state;
    struct rcpt_policy p;
    char err[256];
    assert_int_equal(
        rcpt_policy_parse("  @UPenn.edu ,@.upenn.edu,alice@Partner.org ", &p, err, sizeof(err)), 0);
    assert_string_equal(p.display, "@UPenn.edu, @.upenn.edu, alice@Partner.org");
    assert_int_equal(p.nrules, 3);
    assert_int_equal(p.rules[0].kind, RCPT_RULE_DOMAIN);
    assert_string_equal(p.rules[0].text, "upenn.edu");
    assert_int_equal(p.rules[1].kind, RCPT_RULE_SUBDOMAINS);
    assert_string_equal(p.rules[1].text, "upenn.edu");
    assert_int_equal(p.rules[2].kind, RCPT_RULE_ADDRESS);
    assert_string_equal(p.rules[2].text, "alice@partner.org");
    rcpt_policy_clear(&p);
}

#define WHAT                                                                                       \
    "expected @domain, @.domain (its subdomains), local@domain or * (anyone), comma-separated"

static void test_errors(void **state)
{
    (void)state;
    rp_bad("", "empty entry; " WHAT);
    rp_bad("@a.org,", "empty entry; " WHAT);
    rp_bad("@a.org, , @b.org", "empty entry; " WHAT);
    rp_bad("upenn.edu", "'upenn.edu' is not a recipient rule; " WHAT);
    rp_bad("*.upenn.edu", "'*.upenn.edu' is not a recipient rule; " WHAT);
    rp_bad("a@b@c.org", "'a@b@c.org' is not a recipient rule; " WHAT);
    rp_bad("@", "'@': '' is not a domain name; " WHAT);
    rp_bad("@.", "'@.': '' is not a domain name; " WHAT);
    rp_bad("@-a.org", "'@-a.org': '-a.org' is not a domain name; " WHAT);
    rp_bad("@a..org", "'@a..org': 'a..org' is not a domain name; " WHAT);
    rp_bad("@a_b.org", "'@a_b.org': 'a_b.org' is not a domain name; " WHAT);
    rp_bad("al ice@a.org", "'al ice@a.org': 'al ice' is not a valid local part; " WHAT);
    rp_bad(".x@a.org", "'.x@a.org': '.x' is not a valid local part; " WHAT);

    char big[600];
    memset(big, 'a', sizeof(big) - 1);
    big[0] = '@';
    big[sizeof(big) - 1] = '\0';
    struct rcpt_policy p;
    char err[256];
    assert_int_equal(rcpt_policy_parse(big, &p, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "is too long (at most 320 characters)"));

    char many[RCPT_POLICY_MAX_RULES * 8 + 16] = "";
    size_t off = 0;
    for (int i = 0; i <= RCPT_POLICY_MAX_RULES; i++)
        off += (size_t)snprintf(many + off, sizeof(many) - off, "%s@a%d.io", i ? "," : "", i % 10);
    rp_bad(many, "more than 256 entries");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_domain),  cmocka_unit_test(test_subdomains),
        cmocka_unit_test(test_address), cmocka_unit_test(test_any_and_odd_addresses),
        cmocka_unit_test(test_display), cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
