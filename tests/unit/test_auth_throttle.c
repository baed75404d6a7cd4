/* Failed AUTH per source with a fake clock: the delays double up to their cap, the limit starts
 * a block that expires, the window forgets old failures, two sources are independent, the table
 * evicts the least recently failing (unblocked first), and IPv6 counts per /64. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "proxy/runtime/auth_throttle.h"

static int64_t fake_now;
static int64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_now;
}

static struct auth_throttle_key v4(const char *ip)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    struct auth_throttle_key k;
    assert_int_equal(inet_pton(AF_INET, ip, &sin.sin_addr), 1);
    assert_int_equal(auth_throttle_key_of((struct sockaddr *)&sin, &k), 0);
    return k;
}

static struct auth_throttle_key v6(const char *ip)
{
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};
    struct auth_throttle_key k;
    assert_int_equal(inet_pton(AF_INET6, ip, &sin6.sin6_addr), 1);
    assert_int_equal(auth_throttle_key_of((struct sockaddr *)&sin6, &k), 0);
    return k;
}

static struct auth_throttle *mk(size_t cap)
{
    struct auth_throttle *t = auth_throttle_new(cap, fake_clock, NULL);
    struct auth_throttle_limits lim = {.fail_limit = 5,
                                       .window_ms = 600000,
                                       .block_ms = 900000,
                                       .delay_first_ms = 500,
                                       .delay_max_ms = 8000};
    assert_non_null(t);
    auth_throttle_set_limits(t, &lim);
    fake_now = 1000000;
    return t;
}

static void test_delays_then_block_then_expiry(void **state)
{
    struct auth_throttle *t = mk(16);
    struct auth_throttle_key a = v4("192.0.2.1");
    int blocked_now = 0;
    int64_t left = 0;
    (void)state;
    const unsigned want[5] = {500, 1000, 2000, 4000, 8000};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(auth_throttle_blocked(t, &a, NULL), 0);
        assert_int_equal(auth_throttle_failed(t, &a, &blocked_now), want[i]);
        assert_int_equal(blocked_now, 0);
        fake_now += 1000;
    }
    assert_int_equal(auth_throttle_failed(t, &a, &blocked_now), want[4]);
    assert_int_equal(blocked_now, 1); /* the 5th within 10 minutes */
    assert_int_equal(auth_throttle_blocked(t, &a, &left), 1);
    assert_int_equal(left, 900000);
    /* a failure in flight while blocked does not start the block again */
    assert_int_equal(auth_throttle_failed(t, &a, &blocked_now), 8000);
    assert_int_equal(blocked_now, 0);
    fake_now += 899999;
    assert_int_equal(auth_throttle_blocked(t, &a, &left), 1);
    assert_int_equal(left, 1);
    fake_now += 1;
    assert_int_equal(auth_throttle_blocked(t, &a, NULL), 0);
    /* after the block the count starts again: the first delay */
    assert_int_equal(auth_throttle_failed(t, &a, &blocked_now), 500);
    assert_int_equal(blocked_now, 0);
    auth_throttle_free(t);
}

static void test_delay_cap(void **state)
{
    struct auth_throttle *t = mk(4);
    struct auth_throttle_limits lim = {.fail_limit = 1000,
                                       .window_ms = 600000,
                                       .block_ms = 900000,
                                       .delay_first_ms = 500,
                                       .delay_max_ms = 8000};
    struct auth_throttle_key a = v4("192.0.2.1");
    int b = 0;
    (void)state;
    auth_throttle_set_limits(t, &lim);
    unsigned d = 0;
    for (int i = 0; i < 200; i++)
        d = auth_throttle_failed(t, &a, &b);
    assert_int_equal(d, 8000);
    assert_int_equal(b, 0);
    auth_throttle_free(t);
}

static void test_window_forgets(void **state)
{
    struct auth_throttle *t = mk(16);
    struct auth_throttle_key a = v4("192.0.2.1");
    int b = 0;
    (void)state;
    for (int i = 0; i < 4; i++)
        auth_throttle_failed(t, &a, &b);
    fake_now += 600000; /* ten minutes after the first: a new window */
    assert_int_equal(auth_throttle_failed(t, &a, &b), 500);
    assert_int_equal(b, 0);
    for (int i = 0; i < 3; i++)
        auth_throttle_failed(t, &a, &b);
    assert_int_equal(b, 0);
    assert_int_equal(auth_throttle_blocked(t, &a, NULL), 0);
    auth_throttle_failed(t, &a, &b);
    assert_int_equal(b, 1);
    auth_throttle_free(t);
}

static void test_two_addresses_independent(void **state)
{
    struct auth_throttle *t = mk(16);
    struct auth_throttle_key a = v4("127.0.0.1"), c = v4("127.0.0.2");
    int b = 0;
    (void)state;
    for (int i = 0; i < 5; i++)
        auth_throttle_failed(t, &a, &b);
    assert_int_equal(auth_throttle_blocked(t, &a, NULL), 1);
    assert_int_equal(auth_throttle_blocked(t, &c, NULL), 0);
    assert_int_equal(auth_throttle_failed(t, &c, &b), 500);
    assert_int_equal(b, 0);
    auth_throttle_free(t);
}

static void test_eviction_bounded(void **state)
{
    struct auth_throttle *t = mk(8);
    struct auth_throttle_key blocked = v4("198.51.100.1");
    int b = 0;
    char ip[32];
    (void)state;
    for (int i = 0; i < 5; i++)
        auth_throttle_failed(t, &blocked, &b);
    assert_int_equal(b, 1);
    /* a flood of other sources never grows the table, and the blocked one stays */
    for (int i = 0; i < 1000; i++) {
        fake_now += 10;
        snprintf(ip, sizeof(ip), "10.0.%d.%d", i / 250, i % 250 + 1);
        struct auth_throttle_key k = v4(ip);
        auth_throttle_failed(t, &k, &b);
        assert_true(auth_throttle_tracked(t) <= 8);
    }
    assert_int_equal(auth_throttle_blocked(t, &blocked, NULL), 1);
    /* the least recently failing was evicted: the first of the flood is forgotten, the last
     * is still counted */
    struct auth_throttle_key first = v4("10.0.0.1"), last = v4(ip);
    assert_int_equal(auth_throttle_failed(t, &first, &b), 500);
    assert_int_equal(auth_throttle_failed(t, &last, &b), 1000);
    auth_throttle_free(t);
}

static void test_eviction_all_blocked(void **state)
{
    struct auth_throttle *t = mk(2);
    struct auth_throttle_key a = v4("192.0.2.1"), c = v4("192.0.2.2"), d = v4("192.0.2.3");
    int b = 0;
    (void)state;
    for (int i = 0; i < 5; i++)
        auth_throttle_failed(t, &a, &b);
    fake_now += 10;
    for (int i = 0; i < 5; i++)
        auth_throttle_failed(t, &c, &b);
    fake_now += 10;
    auth_throttle_failed(t, &d, &b); /* evicts a, the oldest */
    assert_int_equal(auth_throttle_tracked(t), 2);
    assert_int_equal(auth_throttle_blocked(t, &a, NULL), 0);
    assert_int_equal(auth_throttle_blocked(t, &c, NULL), 1);
    auth_throttle_free(t);
}

static void test_ipv6_per_64_and_mapped(void **state)
{
    struct auth_throttle *t = mk(16);
    struct auth_throttle_key x = v6("2001:db8:1:2::1"), y = v6("2001:db8:1:2:ffff::9"),
                             z = v6("2001:db8:1:3::1"), m = v6("::ffff:192.0.2.7"),
                             four = v4("192.0.2.7");
    char buf[64];
    int b = 0;
    (void)state;
    assert_memory_equal(&x, &y, sizeof(x));
    assert_memory_not_equal(&x, &z, sizeof(x));
    assert_memory_equal(&m, &four, sizeof(m));
    assert_string_equal(auth_throttle_key_str(&x, buf, sizeof(buf)), "2001:db8:1:2::/64");
    assert_string_equal(auth_throttle_key_str(&m, buf, sizeof(buf)), "192.0.2.7");
    for (int i = 0; i < 5; i++)
        auth_throttle_failed(t, &x, &b);
    assert_int_equal(auth_throttle_blocked(t, &y, NULL), 1);
    assert_int_equal(auth_throttle_blocked(t, &z, NULL), 0);
    auth_throttle_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delays_then_block_then_expiry),
        cmocka_unit_test(test_delay_cap),
        cmocka_unit_test(test_window_forgets),
        cmocka_unit_test(test_two_addresses_independent),
        cmocka_unit_test(test_eviction_bounded),
        cmocka_unit_test(test_eviction_all_blocked),
        cmocka_unit_test(test_ipv6_per_64_and_mapped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
