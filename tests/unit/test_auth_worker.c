/* Password checks on the auth worker's threads: right answers, answered on the loop and never
 * from inside the call, cancel, free with jobs pending, and the loop keeps running meanwhile. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/time.h>

#include <cmocka.h>

#include <event2/event.h>

#include "proxy/runtime/auth_worker.h"
#include "proxy/runtime/device.h"

/* mkpasswd -m yescrypt copier-pw (the cost a real device hash has: ~20 ms a check) */
#define HASH_COPIER "$y$j9T$OhhI1Xf3T8K5XTJfmEJmM.$HXC1bBYRo8SrXcE/2ypDcJjLldisbPD8T/qrHCPw.59"

static struct cfg_account account = {.name = "scanners"};
static struct cfg_device devices[1];
static struct config cfg;

struct answer {
    int done;
    int in_call; /* set while auth_worker_check runs: a callback then would be a bug */
    const char *device;
    const char *why;
};

static void on_done(void *arg, const struct cfg_device *d, const char *why)
{
    struct answer *a = arg;
    assert_false(a->in_call);
    a->done++;
    a->device = d ? d->name : NULL;
    a->why = why;
}

static int ticks;
static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    ticks++;
}

static struct sockaddr_in peer(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    inet_pton(AF_INET, "10.9.9.9", &sin.sin_addr);
    return sin;
}

static void submit(struct auth_worker *w, const char *user, const char *pass, struct answer *a)
{
    struct sockaddr_in sin = peer();
    a->in_call = 1;
    assert_non_null(auth_worker_check(w, (struct sockaddr *)&sin, user, pass, on_done, a));
    a->in_call = 0;
}

/* Run the loop until every answer is in (bounded: 10 s). */
static void run_until_done(struct event_base *base, struct answer *a, size_t n)
{
    struct timeval start, now;
    gettimeofday(&start, NULL);
    for (;;) {
        size_t done = 0;
        for (size_t i = 0; i < n; i++)
            done += a[i].done > 0;
        if (done == n)
            return;
        event_base_loop(base, EVLOOP_ONCE);
        gettimeofday(&now, NULL);
        if (now.tv_sec - start.tv_sec > 10)
            fail_msg("auth answers not in after 10 s");
    }
}

static int setup(void **state)
{
    (void)state;
    devices[0] = (struct cfg_device){
        .name = "copier", .username = "copier", .password_hash = HASH_COPIER, .account = &account};
    cfg.devices = devices;
    cfg.ndevices = 1;
    return 0;
}

static void test_answers_and_loop_keeps_running(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct device_table *t = device_table_new(&cfg);
    struct auth_worker *w = auth_worker_new(base, t, 2);
    assert_non_null(w);
    struct timeval ms = {0, 1000};
    struct event *tk = event_new(base, -1, EV_PERSIST, tick, NULL);
    event_add(tk, &ms);

    struct answer a[4] = {{0}};
    ticks = 0;
    submit(w, "copier", "copier-pw", &a[0]);
    submit(w, "copier", "wrong", &a[1]);
    submit(w, "nobody", "copier-pw", &a[2]);
    submit(w, "copier", "copier-pw", &a[3]);
    for (int i = 0; i < 4; i++)
        assert_int_equal(a[i].done, 0); /* never answered from inside the call */
    run_until_done(base, a, 4);
    /* four ~20 ms hashes on two threads: the loop's 1 ms timer ran all along */
    assert_true(ticks >= 5);
    assert_string_equal(a[0].device, "copier");
    assert_null(a[1].device);
    assert_string_equal(a[1].why, "wrong password");
    assert_null(a[2].device);
    assert_string_equal(a[2].why, "unknown user");
    assert_string_equal(a[3].device, "copier");
    for (int i = 0; i < 4; i++)
        assert_int_equal(a[i].done, 1);

    event_free(tk);
    auth_worker_free(w);
    device_table_free(t);
    event_base_free(base);
}

static void test_cancel_and_free_with_jobs_pending(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct device_table *t = device_table_new(&cfg);
    struct auth_worker *w = auth_worker_new(base, t, 1);
    struct sockaddr_in sin = peer();
    struct answer kept = {0}, dropped = {0};

    struct auth_job *j =
        auth_worker_check(w, (struct sockaddr *)&sin, "copier", "copier-pw", on_done, &dropped);
    assert_non_null(j);
    auth_worker_cancel(j);
    submit(w, "copier", "copier-pw", &kept);
    run_until_done(base, &kept, 1);
    assert_string_equal(kept.device, "copier");
    /* the cancelled job ran before the kept one (one thread, in order): its answer is gone */
    assert_int_equal(dropped.done, 0);

    /* jobs still queued or finished but unread when the worker goes: no callback, no leak */
    struct answer late[3] = {{0}};
    for (int i = 0; i < 3; i++)
        submit(w, "copier", "copier-pw", &late[i]);
    auth_worker_free(w);
    for (int i = 0; i < 3; i++)
        assert_int_equal(late[i].done, 0);
    device_table_free(t);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answers_and_loop_keeps_running),
        cmocka_unit_test(test_cancel_and_free_with_jobs_pending),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
