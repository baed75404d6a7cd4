/* Pacing with a fake clock: 35 messages at 30 per minute (30 at once, 5 as the oldest leave the
 * 60 s window), never more than 30 in any 60 s, and the connection cap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proxy/upstream/rate_limit.h"

#define T0 INT64_C(5000000)

static void test_35_messages_at_30_per_minute(void **state)
{
    struct rate_limit *r = rate_limit_new(30, 3);
    int64_t retry = 0, now = T0;
    int64_t sent[35];
    int n = 0;
    (void)state;
    assert_non_null(r);
    /* 30 go at once */
    for (; n < 30; n++) {
        assert_int_equal(rate_limit_msg_take(r, now, &retry), 1);
        sent[n] = now;
    }
    /* the 31st must wait for the first to be a minute old */
    assert_int_equal(rate_limit_msg_take(r, now, &retry), 0);
    assert_int_equal(retry, T0 + 60000);
    assert_int_equal(rate_limit_msg_when(r, now), T0 + 60000);
    assert_int_equal(rate_limit_msg_take(r, T0 + 59999, &retry), 0);
    assert_int_equal(retry, T0 + 60000);
    /* a scheduler that sleeps until the time it was given: the other 5 go at T0 + 60 s */
    while (n < 35) {
        if (rate_limit_msg_take(r, now, &retry)) {
            sent[n++] = now;
        } else {
            assert_true(retry > now);
            now = retry;
        }
    }
    for (int i = 30; i < 35; i++)
        assert_int_equal(sent[i], T0 + 60000);
    /* the window [T0 + 1 ms, T0 + 60 s] holds those 5 only: 25 more may go now, the next one
     * waits until the 30 of T0 + 60 s are a minute old */
    for (int i = 0; i < 25; i++)
        assert_int_equal(rate_limit_msg_take(r, now, &retry), 1);
    assert_int_equal(rate_limit_msg_take(r, now, &retry), 0);
    assert_int_equal(retry, T0 + 120000);
    rate_limit_free(r);
}

static void test_spread_sends_and_window(void **state)
{
    struct rate_limit *r = rate_limit_new(30, 0);
    int64_t retry = 0;
    (void)state;
    /* one message every second for 30 s; the 31st may go 60 s after the first */
    for (int i = 0; i < 30; i++)
        assert_int_equal(rate_limit_msg_take(r, T0 + i * 1000, &retry), 1);
    assert_int_equal(rate_limit_msg_take(r, T0 + 30000, &retry), 0);
    assert_int_equal(retry, T0 + 60000);
    assert_int_equal(rate_limit_msg_take(r, T0 + 60000, &retry), 1);
    assert_int_equal(rate_limit_msg_take(r, T0 + 60000, &retry), 0);
    assert_int_equal(retry, T0 + 61000);
    rate_limit_free(r);
}

/* Whatever the arrival pattern, no 60 s window ever holds more than per_minute starts. */
static void test_never_more_than_limit_in_any_window(void **state)
{
    struct rate_limit *r = rate_limit_new(30, 0);
    int64_t starts[2000], now = T0, retry;
    int n = 0;
    uint32_t x = 7;
    (void)state;
    while (n < 2000) {
        x = x * 1664525u + 1013904223u;
        now += (int64_t)(x >> 20) % 5000; /* 0..5 s between tries */
        if (rate_limit_msg_take(r, now, &retry))
            starts[n++] = now;
        else
            assert_true(retry > now && retry <= now + 60000);
    }
    for (int i = 30; i < n; i++)
        assert_true(starts[i] - starts[i - 30] >= 60000);
    rate_limit_free(r);
}

static void test_clock_stepping_back(void **state)
{
    struct rate_limit *r = rate_limit_new(2, 0);
    int64_t retry = 0;
    (void)state;
    assert_int_equal(rate_limit_msg_take(r, T0, &retry), 1);
    assert_int_equal(rate_limit_msg_take(r, T0 - 50000, &retry), 1); /* counted at T0 */
    assert_int_equal(rate_limit_msg_take(r, T0 + 59999, &retry), 0);
    assert_int_equal(retry, T0 + 60000);
    rate_limit_free(r);
}

static void test_no_rate_limit(void **state)
{
    struct rate_limit *r = rate_limit_new(0, 0);
    (void)state;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(rate_limit_msg_take(r, T0, NULL), 1);
    assert_int_equal(rate_limit_msg_when(r, T0), T0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(rate_limit_conn_take(r), 1);
    rate_limit_free(r);
    assert_null(rate_limit_new(RATE_LIMIT_MAX_PER_MINUTE + 1, 3));
    rate_limit_free(NULL);
}

static void test_connection_cap(void **state)
{
    struct rate_limit *r = rate_limit_new(30, 3);
    (void)state;
    assert_int_equal(rate_limit_conn_take(r), 1);
    assert_int_equal(rate_limit_conn_take(r), 1);
    assert_int_equal(rate_limit_conn_take(r), 1);
    assert_int_equal(rate_limit_conns(r), 3);
    assert_int_equal(rate_limit_conn_take(r), 0); /* a 4th waits */
    assert_int_equal(rate_limit_conns(r), 3);
    rate_limit_conn_put(r);
    assert_int_equal(rate_limit_conn_take(r), 1);
    assert_int_equal(rate_limit_conn_take(r), 0);
    rate_limit_conn_put(r);
    rate_limit_conn_put(r);
    rate_limit_conn_put(r);
    rate_limit_conn_put(r); /* one too many is harmless */
    assert_int_equal(rate_limit_conns(r), 0);
    rate_limit_free(r);
}

/* The wait a device would have behind n queued messages: 2 per minute, sent at T0 and T0+10s. */
static void test_when_nth(void **state)
{
    struct rate_limit *r = rate_limit_new(2, 0);
    (void)state;
    assert_int_equal(rate_limit_msg_when_nth(r, T0, 0), T0);
    assert_int_equal(rate_limit_msg_when_nth(r, T0, 1), T0);
    assert_int_equal(rate_limit_msg_when_nth(r, T0, 2), T0 + 60000); /* next window */
    assert_int_equal(rate_limit_msg_take(r, T0, NULL), 1);
    assert_int_equal(rate_limit_msg_when_nth(r, T0 + 10000, 0), T0 + 10000); /* one slot left */
    assert_int_equal(rate_limit_msg_when_nth(r, T0 + 10000, 1), T0 + 60000);
    assert_int_equal(rate_limit_msg_take(r, T0 + 10000, NULL), 1);
    assert_int_equal(rate_limit_msg_when_nth(r, T0 + 20000, 0), T0 + 60000);
    assert_int_equal(rate_limit_msg_when_nth(r, T0 + 20000, 1), T0 + 70000);
    assert_int_equal(rate_limit_msg_when_nth(r, T0 + 20000, 2), T0 + 120000);
    assert_int_equal(rate_limit_msg_when_nth(r, T0 + 20000, 0), rate_limit_msg_when(r, T0 + 20000));
    rate_limit_free(r);
    r = rate_limit_new(0, 0);
    assert_int_equal(rate_limit_msg_when_nth(r, T0, 500), T0);
    rate_limit_free(r);
}

/* A reload that changes the rate keeps the window's send times: 30 sent just now still count,
 * so lowering to 20 admits nothing for a minute and raising to 40 admits 10 more at once. */
static void test_resized_keeps_history(void **state)
{
    (void)state;
    struct rate_limit *r = rate_limit_new(30, 0);
    for (int i = 0; i < 30; i++)
        assert_int_equal(rate_limit_msg_take(r, 1000 + i * 10, NULL), 1);
    struct rate_limit *lower = rate_limit_resized(r, 20);
    assert_non_null(lower);
    /* the newest 20 were sent at 1100..1290: the next may go when 1100 is a minute old */
    assert_int_equal(rate_limit_msg_when(lower, 2000), 1100 + RATE_LIMIT_WINDOW_MS);
    struct rate_limit *higher = rate_limit_resized(r, 40);
    int taken = 0;
    while (taken < 50 && rate_limit_msg_take(higher, 2000, NULL))
        taken++;
    assert_int_equal(taken, 10);
    assert_int_equal(rate_limit_msg_when(higher, 2000), 1000 + RATE_LIMIT_WINDOW_MS);
    /* back and forth (old and new sessions after a reload) never opens a fresh window */
    struct rate_limit *again = rate_limit_resized(higher, 30);
    assert_int_equal(rate_limit_msg_take(again, 3000, NULL), 0);
    struct rate_limit *none = rate_limit_resized(NULL, 5);
    assert_int_equal(rate_limit_msg_take(none, 0, NULL), 1);
    rate_limit_free(r);
    rate_limit_free(lower);
    rate_limit_free(higher);
    rate_limit_free(again);
    rate_limit_free(none);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_35_messages_at_30_per_minute),
        cmocka_unit_test(test_spread_sends_and_window),
        cmocka_unit_test(test_never_more_than_limit_in_any_window),
        cmocka_unit_test(test_clock_stepping_back),
        cmocka_unit_test(test_no_rate_limit),
        cmocka_unit_test(test_connection_cap),
        cmocka_unit_test(test_when_nth),
        cmocka_unit_test(test_resized_keeps_history),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
