/* proxy/server/proxy_header.c: every case fed whole and then one byte at a time (every prefix
 * must say "more" or already the whole's answer). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/server/proxy_header.h"

static const unsigned char sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                      0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* Parse buf whole, then every prefix: a prefix gives 0 or exactly the whole's answer, and the
 * first prefix with an answer is where the header (or the error) ends. Returns the whole's. */
static int ph_feed(const unsigned char *buf, size_t len, struct proxy_header *out, const char **err)
{
    int whole = proxy_header_parse(buf, len, out, err);
    int decided = 0;
    for (size_t k = 0; k <= len; k++) {
        struct proxy_header h;
        const char *e = NULL;
        int r = proxy_header_parse(buf, k, &h, &e);
        if (r == 0) {
            assert_false(decided);
            assert_null(e);
            continue;
        }
        decided = 1;
        assert_int_equal(r, whole);
        if (r == 1) {
            assert_int_equal(h.len, out->len);
            assert_int_equal(h.version, out->version);
            assert_int_equal(h.has_addr, out->has_addr);
            assert_int_equal(h.local, out->local);
            assert_memory_equal(&h.src, &out->src, sizeof(h.src));
            assert_memory_equal(&h.dst, &out->dst, sizeof(h.dst));
            assert_true(h.len <= k);
        } else {
            assert_string_equal(e, *err);
        }
    }
    if (whole == 0)
        assert_false(decided);
    return whole;
}

static int ph_text(const char *s, struct proxy_header *out, const char **err)
{
    return ph_feed((const unsigned char *)s, strlen(s), out, err);
}

static void ph_want_in4(const struct sockaddr_storage *ss, const char *ip, unsigned port)
{
    const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
    char got[INET_ADDRSTRLEN];
    assert_int_equal(sin->sin_family, AF_INET);
    assert_non_null(inet_ntop(AF_INET, &sin->sin_addr, got, sizeof(got)));
    assert_string_equal(got, ip);
    assert_int_equal(ntohs(sin->sin_port), port);
}

static void ph_want_in6(const struct sockaddr_storage *ss, const char *ip, unsigned port)
{
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
    char got[INET6_ADDRSTRLEN];
    assert_int_equal(sin6->sin6_family, AF_INET6);
    assert_non_null(inet_ntop(AF_INET6, &sin6->sin6_addr, got, sizeof(got)));
    assert_string_equal(got, ip);
    assert_int_equal(ntohs(sin6->sin6_port), port);
}

static void ph_err(const char *s, const char *want)
{
    struct proxy_header h;
    const char *err = NULL;
    assert_int_equal(ph_text(s, &h, &err), -1);
    assert_non_null(err);
    assert_string_equal(err, want);
}

static void test_v1_tcp4(void **state)
{
    (void)state;
    struct proxy_header h;
    const char *err = NULL;
    const char *s = "PROXY TCP4 192.0.2.7 10.0.0.1 56324 2525\r\nEHLO x\r\n";
    assert_int_equal(ph_text(s, &h, &err), 1);
    assert_int_equal(h.version, 1);
    assert_int_equal(h.has_addr, 1);
    assert_int_equal(h.len, strlen("PROXY TCP4 192.0.2.7 10.0.0.1 56324 2525\r\n"));
    ph_want_in4(&h.src, "192.0.2.7", 56324);
    ph_want_in4(&h.dst, "10.0.0.1", 2525);
}

static void test_v1_tcp6(void **state)
{
    (void)state;
    struct proxy_header h;
    const char *err = NULL;
    assert_int_equal(ph_text("PROXY TCP6 2001:db8::1 ::1 0 65535\r\n", &h, &err), 1);
    ph_want_in6(&h.src, "2001:db8::1", 0);
    ph_want_in6(&h.dst, "::1", 65535);
}

static void test_v1_unknown(void **state)
{
    (void)state;
    struct proxy_header h;
    const char *err = NULL;
    assert_int_equal(ph_text("PROXY UNKNOWN\r\n", &h, &err), 1);
    assert_int_equal(h.has_addr, 0);
    assert_int_equal(h.local, 0); /* v1 has no LOCAL: UNKNOWN may be relayed */
    assert_int_equal(h.len, 15);
    /* anything after UNKNOWN is ignored */
    assert_int_equal(ph_text("PROXY UNKNOWN ffff::1 whatever\r\n", &h, &err), 1);
    assert_int_equal(h.has_addr, 0);
}

static void test_v1_longest(void **state)
{
    (void)state;
    struct proxy_header h;
    const char *err = NULL;
    const char *s = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_int_equal(strlen(s), PROXY_HEADER_V1_MAX);
    assert_int_equal(ph_text(s, &h, &err), 1);
    assert_int_equal(h.len, PROXY_HEADER_V1_MAX);
}

static void test_v1_bad(void **state)
{
    (void)state;
    char longer[200];
    memset(longer, 'x', sizeof(longer));
    memcpy(longer, "PROXY TCP4 ", 11);
    longer[sizeof(longer) - 1] = '\0';
    ph_err(longer, "v1 header too long (no CRLF in 107 bytes)");
    ph_err("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "v1 header does not end in CRLF");
    ph_err("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
           "v1 header: protocol is not TCP4, TCP6 or UNKNOWN");
    ph_err("PROXY \r\n", "v1 header: bad protocol");
    ph_err("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
           "v1 header: expected four fields after the protocol");
    ph_err("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "v1 header: empty or overlong field");
    ph_err("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "v1 header: extra data after the ports");
    ph_err("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "v1 header: extra data after the ports");
    ph_err("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "v1 header: bad IPv4 address");
    ph_err("PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "v1 header: bad IPv4 address");
    ph_err("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "v1 header: bad IPv6 address");
    ph_err("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "v1 header: bad port");
    ph_err("PROXY TCP4 1.2.3.4 5.6.7.8 025 2\r\n", "v1 header: bad port");
    ph_err("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "v1 header: bad port");
    ph_err("PROXY TCP4 1.2.3.4 5.6.7.8 1 2x\r\n", "v1 header: bad port");
    ph_err("PROXY TCP4 1.2.3.4 5.6.7.8 1 999999\r\n", "v1 header: bad port");
    ph_err("PROXY TCP4 1.2.3.4 5.6.7.8 1 123456789\r\n", "v1 header: empty or overlong field");
    ph_err("PROXY\tTCP4\r\n", "not a PROXY protocol header");
    ph_err("EHLO printer\r\n", "not a PROXY protocol header");
    ph_err("PRoXY", "not a PROXY protocol header");
}

static void test_v1_incomplete(void **state)
{
    (void)state;
    struct proxy_header h;
    const char *err = NULL;
    assert_int_equal(ph_text("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", &h, &err), 0);
    assert_int_equal(ph_text("", &h, &err), 0);
}

/* A v2 header: command, family/protocol, body (address block and TLVs). */
static size_t ph_v2(unsigned char *out, unsigned char vercmd, unsigned char famproto,
                    const unsigned char *body, size_t blen)
{
    memcpy(out, sig, 12);
    out[12] = vercmd;
    out[13] = famproto;
    out[14] = (unsigned char)(blen >> 8);
    out[15] = (unsigned char)(blen & 0xFF);
    if (blen)
        memcpy(out + 16, body, blen);
    return 16 + blen;
}

static void test_v2_proxy_ipv4(void **state)
{
    (void)state;
    unsigned char buf[64], body[12] = {127, 0, 0, 2, 127, 0, 0, 1, 0xC3, 0x50, 0x09, 0xC5};
    struct proxy_header h;
    const char *err = NULL;
    size_t n = ph_v2(buf, 0x21, 0x11, body, sizeof(body));
    buf[n] = 'E'; /* the client's first byte follows; it is not the header's */
    assert_int_equal(ph_feed(buf, n + 1, &h, &err), 1);
    assert_int_equal(h.version, 2);
    assert_int_equal(h.has_addr, 1);
    assert_int_equal(h.len, 28);
    ph_want_in4(&h.src, "127.0.0.2", 50000);
    ph_want_in4(&h.dst, "127.0.0.1", 2501);
}

static void test_v2_proxy_ipv6_tlvs(void **state)
{
    (void)state;
    unsigned char buf[128], body[36 + 12];
    struct proxy_header h;
    const char *err = NULL;
    memset(body, 0, sizeof(body));
    body[15] = 1;    /* ::1 */
    body[16] = 0x20; /* 2001:db8::5 */
    body[17] = 0x01;
    body[18] = 0x0d;
    body[19] = 0xb8;
    body[31] = 5;
    body[32] = 0x04; /* port 1024 */
    body[35] = 25;   /* port 25 */
    /* TLVs: ALPN "smtp", then NOOP with no value, then a CRC32C (not checked) */
    unsigned char tlv[] = {0x01, 0, 4, 's', 'm', 't', 'p', 0x04, 0, 0, 0x03, 0, 0};
    memcpy(body + 36, tlv, 12);
    size_t n = ph_v2(buf, 0x21, 0x21, body, 36 + 10);
    assert_int_equal(ph_feed(buf, n, &h, &err), 1);
    assert_int_equal(h.len, 16 + 46);
    ph_want_in6(&h.src, "::1", 1024);
    ph_want_in6(&h.dst, "2001:db8::5", 25);
    /* truncated and overlong TLVs */
    unsigned char body2[36 + 3];
    memcpy(body2, body, 36);
    body2[36] = 0x01;
    body2[37] = 0;
    body2[38] = 9;
    n = ph_v2(buf, 0x21, 0x21, body2, sizeof(body2));
    assert_int_equal(ph_feed(buf, n, &h, &err), -1);
    assert_string_equal(err, "v2 header: TLV longer than the header");
    n = ph_v2(buf, 0x21, 0x21, body2, 38);
    assert_int_equal(ph_feed(buf, n, &h, &err), -1);
    assert_string_equal(err, "v2 header: truncated TLV");
}

static void test_v2_local(void **state)
{
    (void)state;
    unsigned char buf[64], junk[5] = {1, 2, 3, 4, 5};
    struct proxy_header h;
    const char *err = NULL;
    size_t n = ph_v2(buf, 0x20, 0x00, NULL, 0);
    assert_int_equal(ph_feed(buf, n, &h, &err), 1);
    assert_int_equal(h.has_addr, 0);
    assert_int_equal(h.local, 1); /* a health check: not logged as a device (server_listen.c) */
    assert_int_equal(h.len, 16);
    /* LOCAL with an address block (haproxy's health checks send one): skipped */
    n = ph_v2(buf, 0x20, 0x11, junk, sizeof(junk));
    assert_int_equal(ph_feed(buf, n, &h, &err), 1);
    assert_int_equal(h.has_addr, 0);
    assert_int_equal(h.local, 1);
    assert_int_equal(h.len, 21);
    /* PROXY over UNSPEC: the connection's own address applies, but it is relayed, not LOCAL */
    n = ph_v2(buf, 0x21, 0x00, junk, sizeof(junk));
    assert_int_equal(ph_feed(buf, n, &h, &err), 1);
    assert_int_equal(h.has_addr, 0);
    assert_int_equal(h.local, 0);
    /* PROXY over TCP4: relayed */
    unsigned char in4[12] = {127, 0, 0, 2, 127, 0, 0, 1, 0x9c, 0x40, 0, 25};
    n = ph_v2(buf, 0x21, 0x11, in4, sizeof(in4));
    assert_int_equal(ph_feed(buf, n, &h, &err), 1);
    assert_int_equal(h.has_addr, 1);
    assert_int_equal(h.local, 0);
}

static void ph_v2_err(unsigned char vercmd, unsigned char famproto, size_t blen, const char *want)
{
    unsigned char buf[16 + 64], body[64];
    struct proxy_header h;
    const char *err = NULL;
    memset(body, 0, sizeof(body));
    size_t n = ph_v2(buf, vercmd, famproto, body, blen);
    assert_int_equal(ph_feed(buf, n, &h, &err), -1);
    assert_string_equal(err, want);
}

static void test_v2_bad(void **state)
{
    (void)state;
    ph_v2_err(0x11, 0x11, 12, "v2 header: unsupported version");
    ph_v2_err(0x22, 0x11, 12, "v2 header: unknown command");
    ph_v2_err(0x21, 0x41, 12, "v2 header: unknown address family or protocol");
    ph_v2_err(0x21, 0x13, 12, "v2 header: unknown address family or protocol");
    ph_v2_err(0x21, 0x12, 12, "v2 header: only TCP over IPv4 or IPv6 is supported");
    ph_v2_err(0x21, 0x31, 12, "v2 header: only TCP over IPv4 or IPv6 is supported");
    ph_v2_err(0x21, 0x11, 11, "v2 header: address block too short");
    ph_v2_err(0x21, 0x21, 35, "v2 header: address block too short");

    /* bad signature (at each of its bytes), and a body longer than accepted */
    for (size_t i = 0; i < 12; i++) {
        unsigned char buf[28];
        struct proxy_header h;
        const char *err = NULL;
        memset(buf, 0, sizeof(buf));
        ph_v2(buf, 0x21, 0x11, buf + 16, 12);
        buf[i] ^= 0x40;
        assert_int_equal(ph_feed(buf, sizeof(buf), &h, &err), -1);
        assert_non_null(strstr(err, "not a PROXY protocol header"));
    }
    unsigned char big[16];
    struct proxy_header h;
    const char *err = NULL;
    memcpy(big, sig, 12);
    big[12] = 0x21;
    big[13] = 0x11;
    big[14] = (unsigned char)((PROXY_HEADER_V2_BODY_MAX + 1) >> 8);
    big[15] = (unsigned char)((PROXY_HEADER_V2_BODY_MAX + 1) & 0xFF);
    assert_int_equal(ph_feed(big, sizeof(big), &h, &err), -1);
    assert_string_equal(err, "v2 header too long");
    /* incomplete: the announced body has not all arrived */
    big[14] = 0;
    big[15] = 12;
    assert_int_equal(ph_feed(big, sizeof(big), &h, &err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_tcp4),       cmocka_unit_test(test_v1_tcp6),
        cmocka_unit_test(test_v1_unknown),    cmocka_unit_test(test_v1_longest),
        cmocka_unit_test(test_v1_bad),        cmocka_unit_test(test_v1_incomplete),
        cmocka_unit_test(test_v2_proxy_ipv4), cmocka_unit_test(test_v2_proxy_ipv6_tlvs),
        cmocka_unit_test(test_v2_local),      cmocka_unit_test(test_v2_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
