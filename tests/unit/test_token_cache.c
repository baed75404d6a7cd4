/* token_cache with a fake clock and a fake provider whose requests the test completes by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/secret.h"
#include "oauth/provider.h"
#include "oauth/token_cache.h"

/* ---- fake clock ---- */

struct fake_clock {
    int64_t now;
    uint32_t rnd;
    int64_t wall; /* ms since the epoch; moves with now in the persistence tests */
};

static int64_t fake_now(void *arg)
{
    return ((struct fake_clock *)arg)->now;
}

static uint32_t fake_random(void *arg)
{
    return ((struct fake_clock *)arg)->rnd;
}

static int64_t fake_wall(void *arg)
{
    return ((struct fake_clock *)arg)->wall;
}

/* ---- fake provider ---- */

#define FAKE_MAX 16

struct provider_req {
    struct fake_prov *fp;
    provider_done_cb cb;
    void *arg;
    int live;
};

struct fake_prov {
    int requests;  /* started */
    int cancelled; /* via ops->cancel */
    int fail_start;
    int destroyed;
    struct provider_req reqs[FAKE_MAX];
    struct provider_req *pending; /* the last started one, not yet answered */
};

static struct provider_req *fake_request(struct provider *p, provider_done_cb cb, void *arg)
{
    struct fake_prov *fp = p->ctx;
    if (fp->fail_start)
        return NULL;
    assert_true(fp->requests < FAKE_MAX);
    struct provider_req *r = &fp->reqs[fp->requests++];
    r->fp = fp;
    r->cb = cb;
    r->arg = arg;
    r->live = 1;
    fp->pending = r;
    return r;
}

static void fake_cancel(struct provider_req *r)
{
    assert_true(r->live);
    r->live = 0;
    r->fp->cancelled++;
    if (r->fp->pending == r)
        r->fp->pending = NULL;
}

static void fake_destroy(struct provider *p)
{
    struct fake_prov *fp = p->ctx;
    fp->destroyed = 1;
}

static const struct provider_ops fake_ops = {
    .grant = "fake",
    .request = fake_request,
    .cancel = fake_cancel,
    .destroy = fake_destroy,
};

/* Answer the pending request. token NULL: failure with err. */
static void fake_answer(struct fake_prov *fp, const char *token, int64_t expires_in,
                        const char *err)
{
    struct provider_req *r = fp->pending;
    assert_non_null(r);
    assert_true(r->live);
    r->live = 0;
    fp->pending = NULL;
    if (token) {
        struct token_grant g = {.access_token = token, .expires_in = expires_in};
        r->cb(r->arg, &g, NULL, 0);
    } else {
        r->cb(r->arg, NULL, err, 1);
    }
}

/* ---- waiters ---- */

struct waiter {
    int calls;
    char token[64];
    char err[512];
    /* optional actions inside the callback */
    struct token_wait **cancel_other;
    struct token_cache **free_cache;
    struct token_cache *invalidate_in;
};

static void waiter_cb(void *arg, const char *token, const char *err)
{
    struct waiter *w = arg;
    w->calls++;
    w->token[0] = w->err[0] = '\0';
    if (token)
        snprintf(w->token, sizeof(w->token), "%s", token);
    if (err)
        snprintf(w->err, sizeof(w->err), "%s", err);
    if (w->invalidate_in && token)
        token_cache_invalidate(w->invalidate_in, token);
    if (w->cancel_other && *w->cancel_other) {
        token_cache_cancel(*w->cancel_other);
        *w->cancel_other = NULL;
    }
    if (w->free_cache && *w->free_cache) {
        token_cache_free(*w->free_cache);
        *w->free_cache = NULL;
    }
}

struct fixture {
    struct fake_clock clk;
    struct token_clock tc;
    struct fake_prov *fp;
    struct provider *p;
    struct token_cache *c;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->clk.now = 1000000;
    f->clk.rnd = 0;
    f->tc.now_ms = fake_now;
    f->tc.random = fake_random;
    f->tc.arg = &f->clk;
    f->clk.wall = INT64_C(1800000000000);
    f->tc.wall_ms = fake_wall;
    f->fp = calloc(1, sizeof(*f->fp));
    f->p = calloc(1, sizeof(*f->p));
    assert_non_null(f->fp);
    assert_non_null(f->p);
    f->p->ops = &fake_ops;
    f->p->ctx = f->fp;
    snprintf(f->p->account, sizeof(f->p->account), "test");
    f->c = token_cache_new(f->p, &f->tc);
    assert_non_null(f->c);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    token_cache_free(f->c);
    if (f->c)
        assert_true(f->fp->destroyed);
    free(f->fp);
    free(f);
    return 0;
}

/* A get that must answer synchronously with a token. */
static void get_sync_token(struct fixture *f, const char *want)
{
    struct waiter w = {0};
    assert_null(token_cache_get(f->c, waiter_cb, &w));
    assert_int_equal(w.calls, 1);
    assert_string_equal(w.token, want);
}

/* Fill the cache with token "t1" valid for 3600 s. */
static void prime(struct fixture *f, const char *token, int64_t expires_in)
{
    struct waiter w = {0};
    struct token_wait *h = token_cache_get(f->c, waiter_cb, &w);
    assert_non_null(h);
    fake_answer(f->fp, token, expires_in, NULL);
    assert_int_equal(w.calls, 1);
    assert_string_equal(w.token, token);
}

static void test_single_flight(void **state)
{
    struct fixture *f = *state;
    struct waiter w[10];
    memset(w, 0, sizeof(w));
    for (int i = 0; i < 10; i++)
        assert_non_null(token_cache_get(f->c, waiter_cb, &w[i]));
    assert_int_equal(f->fp->requests, 1);
    struct token_cache_stats st;
    token_cache_stats(f->c, &st);
    assert_int_equal(st.refreshing, 1);
    assert_int_equal(st.requests, 1);
    for (int i = 0; i < 10; i++)
        assert_int_equal(w[i].calls, 0);
    fake_answer(f->fp, "tok-A", 3599, NULL);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(w[i].calls, 1);
        assert_string_equal(w[i].token, "tok-A");
        assert_string_equal(w[i].err, "");
    }
    token_cache_stats(f->c, &st);
    assert_int_equal(st.refreshing, 0);
    assert_int_equal(st.expires_at_ms, f->clk.now + 3599000);
    /* then served from the cache, no new request */
    get_sync_token(f, "tok-A");
    assert_int_equal(f->fp->requests, 1);
}

static void test_cancel_one_waiter(void **state)
{
    struct fixture *f = *state;
    struct waiter a = {0}, b = {0}, c = {0};
    struct token_wait *ha = token_cache_get(f->c, waiter_cb, &a);
    struct token_wait *hb = token_cache_get(f->c, waiter_cb, &b);
    struct token_wait *hc = token_cache_get(f->c, waiter_cb, &c);
    assert_non_null(ha);
    assert_non_null(hb);
    assert_non_null(hc);
    token_cache_cancel(hb);
    assert_int_equal(f->fp->cancelled, 0); /* the request goes on for the others */
    fake_answer(f->fp, "tok", 3600, NULL);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 0);
    assert_int_equal(c.calls, 1);
    assert_int_equal(f->fp->requests, 1);

    /* cancelling every waiter still lets the token land in the cache */
    token_cache_invalidate(f->c, "tok");
    struct waiter d = {0};
    struct token_wait *hd = token_cache_get(f->c, waiter_cb, &d);
    assert_non_null(hd);
    token_cache_cancel(hd);
    fake_answer(f->fp, "tok2", 3600, NULL);
    assert_int_equal(d.calls, 0);
    get_sync_token(f, "tok2");
    token_cache_cancel(NULL);
}

static void test_waiter_cancels_another_inside_callback(void **state)
{
    struct fixture *f = *state;
    struct waiter a = {0}, b = {0}, c = {0};
    struct token_wait *hb;
    a.cancel_other = &hb;
    assert_non_null(token_cache_get(f->c, waiter_cb, &a));
    hb = token_cache_get(f->c, waiter_cb, &b);
    assert_non_null(hb);
    assert_non_null(token_cache_get(f->c, waiter_cb, &c));
    fake_answer(f->fp, "tok", 3600, NULL);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 0); /* cancelled by a, before its turn */
    assert_int_equal(c.calls, 1);
}

static void test_waiter_invalidates_inside_callback(void **state)
{
    /* The first waiter's 535 drops the token: the next waiters of the same answer still get
     * a valid pointer to the same token, and the next get starts a new request. */
    struct fixture *f = *state;
    struct waiter a = {0}, b = {0};
    a.invalidate_in = f->c;
    assert_non_null(token_cache_get(f->c, waiter_cb, &a));
    assert_non_null(token_cache_get(f->c, waiter_cb, &b));
    fake_answer(f->fp, "tok", 3600, NULL);
    assert_string_equal(a.token, "tok");
    assert_string_equal(b.token, "tok");
    struct waiter c = {0};
    assert_non_null(token_cache_get(f->c, waiter_cb, &c));
    assert_int_equal(f->fp->requests, 2);
    fake_answer(f->fp, "tok2", 3600, NULL);
    assert_string_equal(c.token, "tok2");
}

static void test_waiter_frees_cache_inside_callback(void **state)
{
    struct fixture *f = *state;
    struct waiter a = {0}, b = {0}, c = {0};
    a.free_cache = &f->c;
    assert_non_null(token_cache_get(f->c, waiter_cb, &a));
    assert_non_null(token_cache_get(f->c, waiter_cb, &b));
    assert_non_null(token_cache_get(f->c, waiter_cb, &c));
    fake_answer(f->fp, "tok", 3600, NULL);
    assert_int_equal(a.calls, 1);
    assert_null(f->c);
    assert_int_equal(b.calls, 0);
    assert_int_equal(c.calls, 0);
    assert_true(f->fp->destroyed);
}

static void test_refresh_ahead(void **state)
{
    struct fixture *f = *state;
    prime(f, "old", 3600);
    int64_t t0 = f->clk.now;
    /* window = min(300 s, 360 s) = 300 s before expiry */
    f->clk.now = t0 + (3600 - 300) * 1000 - 1;
    get_sync_token(f, "old");
    assert_int_equal(f->fp->requests, 1);
    f->clk.now = t0 + (3600 - 300) * 1000;
    get_sync_token(f, "old");
    assert_int_equal(f->fp->requests, 2); /* exactly one background request ... */
    get_sync_token(f, "old");
    get_sync_token(f, "old");
    assert_int_equal(f->fp->requests, 2); /* ... however many gets */
    struct token_cache_stats st;
    token_cache_stats(f->c, &st);
    assert_int_equal(st.refreshing, 1);
    fake_answer(f->fp, "new", 3600, NULL);
    get_sync_token(f, "new");
    assert_int_equal(f->fp->requests, 2);

    /* a 10 min lifetime: the window is a tenth of it (60 s), not 300 s */
    token_cache_invalidate(f->c, "new");
    prime(f, "short", 600);
    t0 = f->clk.now;
    f->clk.now = t0 + 600 * 1000 - 60 * 1000 - 1;
    get_sync_token(f, "short");
    assert_int_equal(f->fp->requests, 3);
    f->clk.now = t0 + 600 * 1000 - 60 * 1000;
    get_sync_token(f, "short");
    assert_int_equal(f->fp->requests, 4);
    fake_answer(f->fp, "short2", 600, NULL);
}

static void test_expiry_margin(void **state)
{
    struct fixture *f = *state;
    prime(f, "tok", 3600);
    int64_t t0 = f->clk.now;
    /* block refresh-ahead from interfering: a failing background refresh puts us in backoff */
    f->clk.now = t0 + 3600 * 1000 - 30000 - 1;
    get_sync_token(f, "tok"); /* still usable; starts the background refresh */
    assert_int_equal(f->fp->requests, 2);
    fake_answer(f->fp, NULL, 0, "HTTP 503");
    f->clk.now = t0 + 3600 * 1000 - 30000; /* now unusable: 30 s margin */
    struct waiter w = {0};
    /* in backoff (1 s * 0.5) from the failure one ms ago, no usable token: immediate failure */
    assert_null(token_cache_get(f->c, waiter_cb, &w));
    assert_int_equal(w.calls, 1);
    assert_string_equal(w.token, "");
    struct token_cache_stats st;
    token_cache_stats(f->c, &st);
    assert_int_equal(st.expires_at_ms, 0); /* forgotten */
    /* after the backoff a get waits for a fresh request */
    f->clk.now += 500;
    struct waiter w2 = {0};
    assert_non_null(token_cache_get(f->c, waiter_cb, &w2));
    assert_int_equal(f->fp->requests, 3);
    fake_answer(f->fp, "tok2", 3600, NULL);
    assert_string_equal(w2.token, "tok2");
}

static void test_backoff_schedule(void **state)
{
    struct fixture *f = *state;
    /* jitter: random 0 -> x0.5; 2^31 -> x0.75; UINT32_MAX -> just under x1.0 */
    static const struct {
        uint32_t rnd;
        int64_t delay_ms;
    } steps[] = {
        {0, 500},              /* 1 s */
        {0x80000000u, 1500},   /* 2 s */
        {0xffffffffu, 3999},   /* 4 s */
        {0, 4000},             /* 8 s */
        {0, 8000},             /* 16 s */
        {0, 16000},            /* 32 s */
        {0, 32000},            /* 64 s */
        {0, 64000},            /* 128 s */
        {0, 128000},           /* 256 s */
        {0, 150000},           /* 512 s capped at 300 s */
        {0xffffffffu, 299999}, /* capped */
        {0x80000000u, 225000}, /* capped */
    };
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        struct waiter w = {0}, now_fail = {0};
        f->clk.rnd = steps[i].rnd;
        assert_non_null(token_cache_get(f->c, waiter_cb, &w));
        assert_int_equal(f->fp->requests, (int)i + 1);
        fake_answer(f->fp, NULL, 0, "error=invalid_client aadsts=7000215");
        assert_int_equal(w.calls, 1);
        assert_string_equal(w.err, "error=invalid_client aadsts=7000215");
        /* one ms before the next attempt: immediate failure, no request */
        f->clk.now += steps[i].delay_ms - 1;
        assert_null(token_cache_get(f->c, waiter_cb, &now_fail));
        assert_int_equal(now_fail.calls, 1);
        assert_int_equal(f->fp->requests, (int)i + 1);
        assert_non_null(strstr(now_fail.err, "error=invalid_client aadsts=7000215; next attempt "
                                             "in 1s"));
        f->clk.now += 1;
    }
    struct token_cache_stats st;
    token_cache_stats(f->c, &st);
    assert_int_equal(st.failures, sizeof(steps) / sizeof(steps[0]));

    /* success resets the schedule */
    struct waiter ok = {0};
    assert_non_null(token_cache_get(f->c, waiter_cb, &ok));
    fake_answer(f->fp, "tok", 3600, NULL);
    token_cache_invalidate(f->c, "tok");
    struct waiter w1 = {0}, w2 = {0};
    f->clk.rnd = 0;
    assert_non_null(token_cache_get(f->c, waiter_cb, &w1));
    fake_answer(f->fp, NULL, 0, "HTTP 503");
    f->clk.now += 499;
    assert_null(token_cache_get(f->c, waiter_cb, &w2));
    assert_non_null(strstr(w2.err, "HTTP 503; next attempt in 1s"));
}

static void test_immediate_failure_during_backoff(void **state)
{
    struct fixture *f = *state;
    struct waiter w = {0};
    f->clk.rnd = 0x80000000u;
    assert_non_null(token_cache_get(f->c, waiter_cb, &w));
    fake_answer(f->fp, NULL, 0, "connect failed: Couldn't connect to server");
    /* second failure -> 2 s * 0.75 = 1.5 s */
    f->clk.now += 750;
    assert_non_null(token_cache_get(f->c, waiter_cb, &w));
    fake_answer(f->fp, NULL, 0, "connect failed: Couldn't connect to server");
    for (int i = 0; i < 5; i++) {
        struct waiter x = {0};
        assert_null(token_cache_get(f->c, waiter_cb, &x));
        assert_int_equal(x.calls, 1);
        assert_string_equal(x.token, "");
        assert_string_equal(x.err,
                            "connect failed: Couldn't connect to server; next attempt in 2s");
    }
    assert_int_equal(f->fp->requests, 2);
    f->clk.now += 1500;
    struct waiter y = {0};
    assert_non_null(token_cache_get(f->c, waiter_cb, &y));
    assert_int_equal(f->fp->requests, 3);
    fake_answer(f->fp, "tok", 3600, NULL);
    assert_string_equal(y.token, "tok");
}

static void test_start_failure(void **state)
{
    struct fixture *f = *state;
    struct waiter w = {0};
    f->fp->fail_start = 1;
    assert_null(token_cache_get(f->c, waiter_cb, &w));
    assert_int_equal(w.calls, 1);
    assert_non_null(strstr(w.err, "could not be started"));
    struct token_cache_stats st;
    token_cache_stats(f->c, &st);
    assert_int_equal(st.failures, 1);
    assert_int_equal(st.refreshing, 0);
}

static void test_keep_serving_when_refresh_fails(void **state)
{
    struct fixture *f = *state;
    prime(f, "tok", 3600);
    int64_t t0 = f->clk.now;
    f->clk.now = t0 + 3400 * 1000; /* inside the window */
    get_sync_token(f, "tok");
    assert_int_equal(f->fp->requests, 2);
    fake_answer(f->fp, NULL, 0, "HTTP 500");
    /* still served; no request during the backoff (0.5 s) */
    get_sync_token(f, "tok");
    assert_int_equal(f->fp->requests, 2);
    /* after the backoff the next get tries again in the background, still serving */
    f->clk.now += 500;
    get_sync_token(f, "tok");
    assert_int_equal(f->fp->requests, 3);
    fake_answer(f->fp, NULL, 0, "HTTP 500");
    f->clk.now += 999; /* 2 s * 0.5 = 1 s */
    get_sync_token(f, "tok");
    assert_int_equal(f->fp->requests, 3);
    struct token_cache_stats st;
    token_cache_stats(f->c, &st);
    assert_int_equal(st.failures, 2);
    assert_int_equal(st.expires_at_ms, t0 + 3600 * 1000);
}

static void test_invalidate(void **state)
{
    struct fixture *f = *state;
    prime(f, "tok-1", 3600);
    /* a stale token (not the current one): nothing happens */
    token_cache_invalidate(f->c, "tok-0");
    token_cache_invalidate(f->c, "tok-1x");
    token_cache_invalidate(f->c, "tok-");
    token_cache_invalidate(f->c, NULL);
    get_sync_token(f, "tok-1");
    assert_int_equal(f->fp->requests, 1);

    /* the current one: the next get fetches at once */
    token_cache_invalidate(f->c, "tok-1");
    struct token_cache_stats st;
    token_cache_stats(f->c, &st);
    assert_int_equal(st.expires_at_ms, 0);
    struct waiter w = {0};
    assert_non_null(token_cache_get(f->c, waiter_cb, &w));
    assert_int_equal(f->fp->requests, 2);
    fake_answer(f->fp, "tok-2", 3600, NULL);
    assert_string_equal(w.token, "tok-2");

    /* invalidate also clears a backoff: a failed background refresh, then a 535 */
    f->clk.now += 3400 * 1000;
    get_sync_token(f, "tok-2");
    fake_answer(f->fp, NULL, 0, "HTTP 503");
    token_cache_invalidate(f->c, "tok-2");
    struct waiter w2 = {0};
    assert_non_null(token_cache_get(f->c, waiter_cb, &w2));
    assert_int_equal(f->fp->requests, 4);
    fake_answer(f->fp, "tok-3", 3600, NULL);
    assert_string_equal(w2.token, "tok-3");
}

static void test_free_with_pending_waiters(void **state)
{
    struct fixture *f = *state;
    struct waiter w[3];
    memset(w, 0, sizeof(w));
    for (int i = 0; i < 3; i++)
        assert_non_null(token_cache_get(f->c, waiter_cb, &w[i]));
    token_cache_free(f->c);
    f->c = NULL;
    assert_int_equal(f->fp->cancelled, 1);
    assert_true(f->fp->destroyed);
    for (int i = 0; i < 3; i++)
        assert_int_equal(w[i].calls, 0);
    token_cache_free(NULL);
}

static void test_sync_callback_may_free_cache(void **state)
{
    struct fixture *f = *state;
    prime(f, "tok", 3600);
    struct waiter w = {0};
    w.free_cache = &f->c;
    assert_null(token_cache_get(f->c, waiter_cb, &w));
    assert_int_equal(w.calls, 1);
    assert_null(f->c);
}

/* ---- persistence hooks ---- */

#define WALL_S INT64_C(1800000000)

struct fake_persist {
    /* what load hands out */
    const char *stored;
    int64_t stored_exp, stored_life;
    const char *stored_rt;
    int loads;
    int fail_save;
    char saved_rt[64];
    /* what save got */
    int saves;
    char saved[64];
    int64_t saved_exp, saved_life;
    int waiter_calls_at_save; /* how many waiters had heard of a token when save ran */
    struct waiter *watch;
    int frees;
};

static int fp_load(void *arg, char **token, int64_t *exp, int64_t *life, char **refresh)
{
    struct fake_persist *p = arg;
    p->loads++;
    if (!p->stored && !p->stored_rt)
        return 0;
    if (p->stored) {
        *token = secret_dup(p->stored);
        *exp = p->stored_exp;
        *life = p->stored_life;
    }
    if (p->stored_rt)
        *refresh = secret_dup(p->stored_rt);
    return 1;
}

static int fp_save(void *arg, const char *token, int64_t exp, int64_t life, const char *refresh)
{
    struct fake_persist *p = arg;
    p->saves++;
    if (p->fail_save)
        return -1;
    snprintf(p->saved, sizeof(p->saved), "%s", token ? token : "(none)");
    snprintf(p->saved_rt, sizeof(p->saved_rt), "%s", refresh ? refresh : "(kept)");
    p->saved_exp = exp;
    p->saved_life = life;
    p->waiter_calls_at_save = p->watch ? p->watch->calls : -1;
    return 0;
}

static void fp_free(void *arg)
{
    ((struct fake_persist *)arg)->frees++;
}

static int attach(struct fixture *f, struct fake_persist *p)
{
    struct token_persist tp = {.load = fp_load, .save = fp_save, .free = fp_free, .arg = p};
    return token_cache_set_persist(f->c, &tp);
}

static void test_persist_loads_valid_token(void **state)
{
    struct fixture *f = *state;
    struct token_cache_stats st;
    struct fake_persist p = {.stored = "stored", .stored_exp = WALL_S + 3000, .stored_life = 3599};
    assert_int_equal(attach(f, &p), 1);
    assert_int_equal(p.loads, 1);
    get_sync_token(f, "stored");
    assert_int_equal(f->fp->requests, 0); /* no IdP request */
    token_cache_stats(f->c, &st);
    /* 3000 s left on the wall clock = 3000 s left on the cache's clock */
    assert_int_equal(st.expires_at_ms, f->clk.now + 3000 * 1000);
    /* still served until the margin before expiry, then a request */
    f->clk.now += (3000 - 301) * 1000; /* outside the 5 min refresh-ahead window */
    get_sync_token(f, "stored");
    assert_int_equal(f->fp->requests, 0);
    f->clk.now += 2 * 1000; /* inside it: served, and a background refresh */
    get_sync_token(f, "stored");
    assert_int_equal(f->fp->requests, 1);
    token_cache_free(f->c);
    f->c = NULL;
    assert_int_equal(p.frees, 1);
    assert_int_equal(p.saves, 0);
}

static void test_persist_ignores_near_expiry(void **state)
{
    struct fixture *f = *state;
    struct waiter w = {0};
    /* 20 s left: inside the 30 s margin, of no use */
    struct fake_persist p = {.stored = "stale", .stored_exp = WALL_S + 20, .stored_life = 3599};
    assert_int_equal(attach(f, &p), 0);
    assert_non_null(token_cache_get(f->c, waiter_cb, &w));
    assert_int_equal(f->fp->requests, 1);
    fake_answer(f->fp, "fresh", 3600, NULL);
    assert_string_equal(w.token, "fresh");
}

static void test_persist_ignores_expired_and_nothing(void **state)
{
    struct fixture *f = *state;
    struct fake_persist p = {.stored = "old", .stored_exp = WALL_S - 10, .stored_life = 3599};
    struct fake_persist none = {0};
    assert_int_equal(attach(f, &p), 0);
    /* a second attach is refused, and its arg freed */
    assert_int_equal(attach(f, &none), -1);
    assert_int_equal(none.frees, 1);
    assert_int_equal(none.loads, 0);
    prime(f, "t1", 3600);
    assert_int_equal(p.saves, 1);
}

static void test_persist_saves_before_waiters(void **state)
{
    struct fixture *f = *state;
    struct waiter w = {0};
    struct fake_persist p = {0};
    p.watch = &w;
    assert_int_equal(attach(f, &p), 0);
    f->clk.wall += 500; /* not on a second boundary: the expiry rounds down */
    assert_non_null(token_cache_get(f->c, waiter_cb, &w));
    fake_answer(f->fp, "t1", 3600, NULL);
    assert_int_equal(p.saves, 1);
    assert_int_equal(p.waiter_calls_at_save, 0); /* saved before the waiter heard */
    assert_string_equal(p.saved, "t1");
    assert_int_equal(p.saved_exp, WALL_S + 3600);
    assert_int_equal(p.saved_life, 3600);
    assert_string_equal(w.token, "t1");
    /* a failed request saves nothing */
    token_cache_invalidate(f->c, "t1");
    struct waiter w2 = {0};
    assert_non_null(token_cache_get(f->c, waiter_cb, &w2));
    fake_answer(f->fp, NULL, 0, "boom");
    assert_int_equal(p.saves, 1);
    /* a refresh saves the new token */
    f->clk.now += 2000;
    struct waiter w3 = {0};
    assert_non_null(token_cache_get(f->c, waiter_cb, &w3));
    fake_answer(f->fp, "t2", 60, NULL);
    assert_int_equal(p.saves, 2);
    assert_string_equal(p.saved, "t2");
    assert_int_equal(p.saved_life, 60);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_single_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_one_waiter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_waiter_cancels_another_inside_callback, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_waiter_invalidates_inside_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_waiter_frees_cache_inside_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refresh_ahead, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry_margin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backoff_schedule, setup, teardown),
        cmocka_unit_test_setup_teardown(test_immediate_failure_during_backoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_serving_when_refresh_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalidate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_pending_waiters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_callback_may_free_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persist_loads_valid_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persist_ignores_near_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persist_ignores_expired_and_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persist_saves_before_waiters, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
