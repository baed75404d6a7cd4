/* common/worker: jobs run off the loop thread, come back to the loop in order of completion,
 * never from inside worker_submit; worker_free drops (never completes) what was not reported. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/event.h>

#include "common/worker.h"

struct job {
    pthread_t loop;
    int ran_off_loop;
    int done, dropped;
    int *order;
    int *n;
    int id;
    unsigned sleep_ms;
};

static void run(void *arg)
{
    struct job *j = arg;
    j->ran_off_loop = !pthread_equal(pthread_self(), j->loop);
    if (j->sleep_ms)
        usleep(j->sleep_ms * 1000);
}

static void done(void *arg)
{
    struct job *j = arg;
    assert_true(pthread_equal(pthread_self(), j->loop));
    j->done++;
    j->order[(*j->n)++] = j->id;
}

static void drop(void *arg)
{
    struct job *j = arg;
    j->dropped++;
}

static void test_jobs_come_back_on_the_loop(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct worker *w = worker_new(base, 1, "test");
    assert_non_null(w);
    int order[8], n = 0;
    struct job jobs[8];
    for (int i = 0; i < 8; i++) {
        jobs[i] = (struct job){.loop = pthread_self(), .order = order, .n = &n, .id = i};
        assert_int_equal(worker_submit(w, run, done, drop, &jobs[i]), 0);
    }
    assert_int_equal(n, 0); /* never from inside the call */
    for (int spins = 0; n < 8 && spins < 1000; spins++)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(n, 8);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(order[i], i); /* one thread: FIFO */
        assert_true(jobs[i].ran_off_loop);
        assert_int_equal(jobs[i].done, 1);
        assert_int_equal(jobs[i].dropped, 0);
    }
    worker_free(w);
    event_base_free(base);
}

static void test_free_drops_what_was_not_reported(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct worker *w = worker_new(base, 1, "test");
    int order[4], n = 0;
    struct job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] =
            (struct job){.loop = pthread_self(), .order = order, .n = &n, .id = i, .sleep_ms = 20};
        assert_int_equal(worker_submit(w, run, done, drop, &jobs[i]), 0);
    }
    usleep(30 * 1000); /* the first has run (or is running), the rest wait */
    worker_free(w);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(jobs[i].done, 0);
        assert_int_equal(jobs[i].dropped, 1); /* each exactly once: its memory is freed */
    }
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jobs_come_back_on_the_loop),
        cmocka_unit_test(test_free_drops_what_was_not_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
