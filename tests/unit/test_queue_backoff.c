/* The retry schedule: exact with fixed randomness, bounded with any randomness, capped, and the
 * queue lifetime. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proxy/delivery/queue_backoff.h"

#define NOW INT64_C(1800000000)

static void test_schedule_exact_without_jitter(void **state)
{
    struct queue_backoff p;
    const int64_t want[] = {60, 120, 240, 480, 960, 1920, 3600, 3600, 3600};
    (void)state;
    queue_backoff_defaults(&p);
    for (uint32_t a = 1; a <= 9; a++) {
        assert_int_equal(queue_backoff_delay(&p, a), want[a - 1]);
        assert_int_equal(queue_backoff_next_attempt(&p, a, NOW, 0), NOW + want[a - 1]);
    }
    assert_int_equal(queue_backoff_delay(&p, 0), 60);
    assert_int_equal(queue_backoff_delay(&p, UINT32_MAX), 3600); /* no overflow, no long loop */
}

static void test_schedule_exact_with_fixed_jitter(void **state)
{
    struct queue_backoff p;
    (void)state;
    queue_backoff_defaults(&p);
    /* 25 % of 60 s is 15 s; half of the random range cuts half of it (7 s, rounded down) */
    assert_int_equal(queue_backoff_next_attempt(&p, 1, NOW, UINT32_C(0x80000000)), NOW + 53);
    assert_int_equal(queue_backoff_next_attempt(&p, 1, NOW, UINT32_MAX), NOW + 46);
    /* capped: 25 % of 3600 s */
    assert_int_equal(queue_backoff_next_attempt(&p, 20, NOW, UINT32_C(0x80000000)), NOW + 3150);
    p.jitter_pct = 0;
    assert_int_equal(queue_backoff_next_attempt(&p, 1, NOW, UINT32_MAX), NOW + 60);
}

static void test_jitter_bounded(void **state)
{
    struct queue_backoff p;
    uint32_t x = 1;
    (void)state;
    queue_backoff_defaults(&p);
    for (int i = 0; i < 100000; i++) {
        uint32_t a = (uint32_t)(i % 12) + 1;
        int64_t d, at;
        x = x * 1664525u + 1013904223u;
        d = queue_backoff_delay(&p, a);
        at = queue_backoff_next_attempt(&p, a, NOW, x);
        assert_true(at <= NOW + d);
        assert_true(at >= NOW + d - d / 4);
        assert_true(at > NOW);
    }
}

static void test_odd_policies(void **state)
{
    struct queue_backoff p = {.first = 0, .max = 0, .jitter_pct = 250, .lifetime = 10};
    (void)state;
    /* a zero first and max mean one second; jitter over 100 % is 100 %, never a retry at now */
    assert_int_equal(queue_backoff_delay(&p, 5), 1);
    assert_int_equal(queue_backoff_next_attempt(&p, 5, NOW, UINT32_MAX), NOW + 1);
    p.first = 1;
    p.max = INT64_MAX;
    p.jitter_pct = 100;
    assert_int_equal(queue_backoff_delay(&p, 63), INT64_C(1) << 62);
    assert_int_equal(queue_backoff_delay(&p, 200), INT64_MAX);
    assert_int_equal(queue_backoff_next_attempt(&p, 200, NOW, 0), INT64_MAX);
    assert_true(queue_backoff_next_attempt(&p, 200, NOW, UINT32_MAX) > NOW);
}

static void test_lifetime(void **state)
{
    struct queue_backoff p;
    (void)state;
    queue_backoff_defaults(&p);
    assert_int_equal(p.lifetime, 5 * 86400);
    assert_false(queue_backoff_expired(&p, NOW, NOW));
    assert_false(queue_backoff_expired(&p, NOW, NOW + 5 * 86400 - 1));
    assert_true(queue_backoff_expired(&p, NOW, NOW + 5 * 86400));
    assert_true(queue_backoff_expired(&p, NOW, NOW + 30 * 86400));
    assert_false(queue_backoff_expired(&p, NOW, NOW - 86400)); /* clock went backwards */
    p.lifetime = 0;
    assert_true(queue_backoff_expired(&p, NOW, NOW + 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule_exact_without_jitter),
        cmocka_unit_test(test_schedule_exact_with_fixed_jitter),
        cmocka_unit_test(test_jitter_bounded),
        cmocka_unit_test(test_odd_policies),
        cmocka_unit_test(test_lifetime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
