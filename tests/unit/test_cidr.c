#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/config/cidr.h"

static struct sockaddr_storage cidr_test_sa(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
    }
    return ss;
}

/* 1 if ip is inside the block text. */
static int cidr_test_match(const char *text, const char *ip)
{
    struct cidr c;
    char err[256];
    struct sockaddr_storage ss = cidr_test_sa(ip);
    assert_int_equal(cidr_parse(text, &c, err, sizeof(err)), 0);
    return cidr_match(&c, (struct sockaddr *)&ss);
}

static void cidr_test_parse_err(const char *text, const char *want)
{
    struct cidr c;
    char err[256] = "";
    assert_int_equal(cidr_parse(text, &c, err, sizeof(err)), -1);
    assert_string_equal(err, want);
}

static void test_v4_host(void **state)
{
    struct cidr c;
    char err[256], buf[64];
    (void)state;
    assert_int_equal(cidr_parse("10.20.3.15", &c, err, sizeof(err)), 0);
    assert_int_equal(c.family, AF_INET);
    assert_int_equal(c.prefix, 32);
    assert_string_equal(cidr_str(&c, buf, sizeof(buf)), "10.20.3.15/32");
    assert_true(cidr_test_match("10.20.3.15", "10.20.3.15"));
    assert_false(cidr_test_match("10.20.3.15", "10.20.3.14"));
    assert_false(cidr_test_match("10.20.3.15", "10.20.3.16"));
    assert_true(cidr_test_match("10.20.3.15/32", "10.20.3.15"));
}

static void test_v4_block_edges(void **state)
{
    struct cidr c;
    char err[256], buf[64];
    (void)state;
    assert_int_equal(cidr_parse("  10.20.4.0/24 ", &c, err, sizeof(err)), 0);
    assert_string_equal(cidr_str(&c, buf, sizeof(buf)), "10.20.4.0/24");
    assert_true(cidr_test_match("10.20.4.0/24", "10.20.4.0"));
    assert_true(cidr_test_match("10.20.4.0/24", "10.20.4.255"));
    assert_false(cidr_test_match("10.20.4.0/24", "10.20.3.255"));
    assert_false(cidr_test_match("10.20.4.0/24", "10.20.5.0"));
    /* A prefix that does not end on a byte boundary. */
    assert_true(cidr_test_match("192.168.8.0/21", "192.168.15.255"));
    assert_true(cidr_test_match("192.168.8.0/21", "192.168.8.0"));
    assert_false(cidr_test_match("192.168.8.0/21", "192.168.16.0"));
    assert_false(cidr_test_match("192.168.8.0/21", "192.168.7.255"));
    assert_true(cidr_test_match("10.0.0.0/31", "10.0.0.1"));
    assert_false(cidr_test_match("10.0.0.0/31", "10.0.0.2"));
}

static void test_v4_zero(void **state)
{
    (void)state;
    assert_true(cidr_test_match("0.0.0.0/0", "0.0.0.0"));
    assert_true(cidr_test_match("0.0.0.0/0", "255.255.255.255"));
    assert_true(cidr_test_match("0.0.0.0/0", "::ffff:1.2.3.4"));
    /* An IPv4 block never covers a native IPv6 client. */
    assert_false(cidr_test_match("0.0.0.0/0", "2001:db8::1"));
}

static void test_v6(void **state)
{
    struct cidr c;
    char err[256], buf[64];
    (void)state;
    assert_int_equal(cidr_parse("2001:db8::/32", &c, err, sizeof(err)), 0);
    assert_int_equal(c.family, AF_INET6);
    assert_int_equal(c.prefix, 32);
    assert_string_equal(cidr_str(&c, buf, sizeof(buf)), "2001:db8::/32");
    assert_true(cidr_test_match("2001:db8::/32", "2001:db8::"));
    assert_true(cidr_test_match("2001:db8::/32", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"));
    assert_false(cidr_test_match("2001:db8::/32", "2001:db9::"));
    assert_false(cidr_test_match("2001:db8::/32", "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff"));
    assert_false(cidr_test_match("2001:db8::/32", "10.0.0.1"));
    assert_true(cidr_test_match("::1", "::1"));
    assert_false(cidr_test_match("::1", "::2"));
    assert_true(cidr_test_match("::1/128", "::1"));
    assert_true(cidr_test_match("2001:db8::/127", "2001:db8::1"));
    assert_false(cidr_test_match("2001:db8::/127", "2001:db8::2"));
    assert_true(cidr_test_match("::/0", "2001:db8::1"));
    assert_true(cidr_test_match("fe80::/10", "febf::1"));
    assert_false(cidr_test_match("fe80::/10", "fec0::1"));
}

static void test_mapped_v4(void **state)
{
    (void)state;
    /* A dual-stack listener reports an IPv4 client as ::ffff:a.b.c.d. */
    assert_true(cidr_test_match("10.20.4.0/24", "::ffff:10.20.4.7"));
    assert_false(cidr_test_match("10.20.4.0/24", "::ffff:10.20.5.7"));
    assert_true(cidr_test_match("10.20.3.15", "::ffff:10.20.3.15"));
    /* A block written in mapped form covers plain IPv4 clients too. */
    assert_true(cidr_test_match("::ffff:10.20.4.0/120", "10.20.4.9"));
    assert_false(cidr_test_match("::ffff:10.20.4.0/120", "10.20.5.9"));
    /* Not mapped: the IPv4-compatible ::a.b.c.d form is plain IPv6. */
    assert_false(cidr_test_match("10.20.4.0/24", "::10.20.4.7"));
}

static void test_bad_input(void **state)
{
    (void)state;
    cidr_test_parse_err("", "empty address; expected an IPv4 or IPv6 address or CIDR block");
    cidr_test_parse_err("   ", "empty address; expected an IPv4 or IPv6 address or CIDR block");
    cidr_test_parse_err("10.20.3", "invalid address '10.20.3'; expected an IPv4 or IPv6 address "
                                   "or CIDR block such as 10.20.4.0/24 or 2001:db8::/32");
    cidr_test_parse_err("copier.example.edu",
                        "invalid address 'copier.example.edu'; expected an IPv4 or IPv6 address "
                        "or CIDR block such as 10.20.4.0/24 or 2001:db8::/32");
    cidr_test_parse_err("256.1.1.1/8", "invalid address '256.1.1.1/8'; expected an IPv4 or IPv6 "
                                       "address or CIDR block such as 10.20.4.0/24 or "
                                       "2001:db8::/32");
    cidr_test_parse_err("10.0.0.0/33",
                        "invalid prefix length '/33' in '10.0.0.0/33'; valid: /0../32 for IPv4");
    cidr_test_parse_err("2001:db8::/129", "invalid prefix length '/129' in '2001:db8::/129'; "
                                          "valid: /0../128 for IPv6");
    cidr_test_parse_err("10.0.0.0/", "invalid prefix length '/' in '10.0.0.0/'; valid: /0../32 "
                                     "for IPv4");
    cidr_test_parse_err("10.0.0.0/+8", "invalid prefix length '/+8' in '10.0.0.0/+8'; valid: "
                                       "/0../32 for IPv4");
    cidr_test_parse_err("10.0.0.0/ 8", "invalid prefix length '/ 8' in '10.0.0.0/ 8'; valid: "
                                       "/0../32 for IPv4");
    cidr_test_parse_err("10.0.0.0/8/8", "invalid prefix length '/8/8' in '10.0.0.0/8/8'; valid: "
                                        "/0../32 for IPv4");
}

static void test_host_bits(void **state)
{
    (void)state;
    cidr_test_parse_err("10.20.4.5/24", "'10.20.4.5/24' has host bits set; did you mean "
                                        "10.20.4.0/24?");
    cidr_test_parse_err("192.168.9.0/21", "'192.168.9.0/21' has host bits set; did you mean "
                                          "192.168.8.0/21?");
    cidr_test_parse_err("1.2.3.4/0", "'1.2.3.4/0' has host bits set; did you mean 0.0.0.0/0?");
    cidr_test_parse_err("2001:db8::1/64", "'2001:db8::1/64' has host bits set; did you mean "
                                          "2001:db8::/64?");
}

static void test_unknown_family(void **state)
{
    struct cidr c;
    char err[256];
    struct sockaddr sa;
    (void)state;
    memset(&sa, 0, sizeof(sa));
    sa.sa_family = AF_UNIX;
    assert_int_equal(cidr_parse("0.0.0.0/0", &c, err, sizeof(err)), 0);
    assert_false(cidr_match(&c, &sa));
    assert_false(cidr_match(&c, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v4_host),   cmocka_unit_test(test_v4_block_edges),
        cmocka_unit_test(test_v4_zero),   cmocka_unit_test(test_v6),
        cmocka_unit_test(test_mapped_v4), cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_host_bits), cmocka_unit_test(test_unknown_family),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
