/* One account's access token. States:
 *   EMPTY       no token, no request        -> a get starts a request (unless backing off)
 *   VALID       a token until expires_at    -> a get answers at once; inside the refresh-ahead
 *                                              window it also starts a background request
 *   REFRESHING  a request in flight         -> gets without a usable token wait for it
 * One provider request at a time; its answer wakes every waiter. Failures back off
 * exponentially with jitter so that an IdP outage does not become a request storm. */
#include "oauth/token_cache.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "common/secret.h"
#include "oauth/provider.h"

#define TOKEN_CACHE_MARGIN_MS 30000     /* a token this close to expiry is not handed out */
#define TOKEN_CACHE_AHEAD_MAX_MS 300000 /* refresh-ahead window: at most 5 min ... */
#define TOKEN_CACHE_AHEAD_DIVISOR 10    /* ... or a tenth of the lifetime */
#define TOKEN_CACHE_BACKOFF_FIRST_MS 1000
#define TOKEN_CACHE_BACKOFF_MAX_MS 300000
#define TOKEN_CACHE_WALL_MAX_S (INT64_C(1) << 40) /* sanity bound on a stored expiry */

/* Circular doubly-linked list with a sentinel: a waiter can unlink itself from whichever list
 * holds it (the cache's, or a batch being woken) without knowing which. */
struct token_link {
    struct token_link *next, *prev;
};

struct token_wait {
    struct token_link link; /* first member: a link is its waiter */
    struct token_cache *c;
    token_cb cb;
    void *arg;
};

struct token_cache {
    struct provider *p;
    struct token_clock clock;
    struct token_persist persist; /* all NULL: none */
    char *token;                  /* secret_free */
    size_t token_len;
    int64_t expires_at_ms;
    int64_t lifetime_ms;
    struct provider_req *req;
    struct token_link waiters;
    unsigned fails_in_row;
    int64_t next_attempt_ms; /* backing off until then */
    char last_err[512];
    unsigned long requests, failures;
    int last_result;           /* -1 none yet, 0 failed, 1 ok */
    int64_t last_attempt_wall; /* seconds */
    int reauthorize;           /* the last failure needs a person: PROVIDER_REAUTHORIZE */
    /* Set by token_cache_free() while callbacks run, so the waking loop stops touching c. */
    int *freed;
};

static int64_t token_cache_default_now(void *arg)
{
    struct timespec ts;
    (void)arg;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t token_cache_default_wall(void *arg)
{
    struct timespec ts;
    (void)arg;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint32_t token_cache_default_random(void *arg)
{
    unsigned char b[4];
    (void)arg;
    if (RAND_bytes(b, sizeof(b)) != 1)
        return 0x80000000u; /* the middle of the jitter range */
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static void token_link_init(struct token_link *l)
{
    l->next = l->prev = l;
}

static void token_link_unlink(struct token_link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->next = l->prev = l;
}

static void token_link_append(struct token_link *head, struct token_link *l)
{
    l->prev = head->prev;
    l->next = head;
    head->prev->next = l;
    head->prev = l;
}

/* Move every node of from to (empty) to. */
static void token_link_move(struct token_link *to, struct token_link *from)
{
    token_link_init(to);
    if (from->next == from)
        return;
    to->next = from->next;
    to->prev = from->prev;
    to->next->prev = to;
    to->prev->next = to;
    token_link_init(from);
}

static void token_link_free_all(struct token_link *head)
{
    while (head->next != head) {
        struct token_link *l = head->next;
        token_link_unlink(l);
        free(l);
    }
}

static void token_cache_forget(struct token_cache *c)
{
    secret_free(c->token);
    c->token = NULL;
    c->token_len = 0;
    c->expires_at_ms = 0;
    c->lifetime_ms = 0;
}

static int token_cache_usable(const struct token_cache *c, int64_t now)
{
    return c->token && now < c->expires_at_ms - TOKEN_CACHE_MARGIN_MS;
}

static int token_cache_in_ahead_window(const struct token_cache *c, int64_t now)
{
    int64_t ahead = c->lifetime_ms / TOKEN_CACHE_AHEAD_DIVISOR;
    if (ahead > TOKEN_CACHE_AHEAD_MAX_MS)
        ahead = TOKEN_CACHE_AHEAD_MAX_MS;
    return now >= c->expires_at_ms - ahead;
}

/* 1 s, 2 s, 4 s ... capped at 5 min, times a jitter in [0.5, 1.0) so that many proxies (or
 * accounts) that failed together do not retry together. */
static void token_cache_backoff(struct token_cache *c, int64_t now, const char *err)
{
    int64_t base = TOKEN_CACHE_BACKOFF_FIRST_MS;
    for (unsigned i = 1; i < c->fails_in_row && base < TOKEN_CACHE_BACKOFF_MAX_MS; i++)
        base *= 2;
    if (base > TOKEN_CACHE_BACKOFF_MAX_MS)
        base = TOKEN_CACHE_BACKOFF_MAX_MS;
    uint32_t r = c->clock.random(c->clock.arg);
    /* base * (0.5 + r / 2^33), in integers: exact for the tests and never reaches base. */
    int64_t delay = base / 2 + (int64_t)(((uint64_t)base * r) >> 33);
    c->next_attempt_ms = now + delay;
    snprintf(c->last_err, sizeof(c->last_err), "%s", err && *err ? err : "token request failed");
}

static void token_cache_on_grant(void *arg, const struct token_grant *g, const char *err,
                                 int failure);

static void token_cache_record(struct token_cache *c, int ok, int failure)
{
    c->last_result = ok;
    c->last_attempt_wall = c->clock.wall_ms(c->clock.arg) / 1000;
    c->reauthorize = !ok && failure == PROVIDER_REAUTHORIZE;
}

/* Ask the provider; c->req is the request, or NULL if it could not start (then p->start_err
 * may say why). */
static struct provider_req *token_cache_begin(struct token_cache *c)
{
    c->requests++;
    c->p->start_err[0] = '\0';
    c->p->start_failure = PROVIDER_TEMPORARY;
    c->req = c->p->ops->request(c->p, token_cache_on_grant, c);
    return c->req;
}

/* Start the one request. 0 started; -1 could not (recorded as a failure, with backoff). */
static int token_cache_start(struct token_cache *c, int64_t now)
{
    if (token_cache_begin(c))
        return 0;
    c->failures++;
    c->fails_in_row++;
    token_cache_record(c, 0, c->p->start_failure);
    token_cache_backoff(
        c, now, c->p->start_err[0] ? c->p->start_err : "token request could not be started");
    return -1;
}

/* "<last error>; next attempt in Ns" */
static void token_cache_backoff_msg(const struct token_cache *c, int64_t now, char *buf, size_t len)
{
    int64_t left = c->next_attempt_ms - now;
    if (left < 0)
        left = 0;
    snprintf(buf, len, "%s; next attempt in %" PRId64 "s", c->last_err, (left + 999) / 1000);
}

static void token_cache_on_grant(void *arg, const struct token_grant *g, const char *err,
                                 int failure)
{
    struct token_cache *c = arg;
    int64_t now = c->clock.now_ms(c->clock.arg);
    char *copy = NULL;
    char errbuf[sizeof(c->last_err)];
    struct token_link batch;
    int freed = 0;
    int *outer;

    /* Every kind backs off alike (a person may fix a refused client at any moment); the
     * provider has logged which it was. */
    c->req = NULL;
    if (g && g->access_token && *g->access_token && g->expires_in > 0) {
        char *t = secret_dup(g->access_token);
        copy = secret_dup(g->access_token);
        if (t && copy) {
            token_cache_forget(c);
            c->token = t;
            c->token_len = strlen(t);
            c->lifetime_ms = g->expires_in * 1000;
            c->expires_at_ms = now + c->lifetime_ms;
            c->fails_in_row = 0;
            c->next_attempt_ms = 0;
            c->last_err[0] = '\0';
            token_cache_record(c, 1, 0);
            /* Persisted before any waiter hears of it (a rotated refresh token must never be
             * used before it is on disk). Expiry rounded down: never later than the IdP's. */
            if (c->persist.save) {
                int64_t wall = c->clock.wall_ms(c->clock.arg);
                (void)c->persist.save(c->persist.arg, t, (wall + c->lifetime_ms) / 1000,
                                      g->expires_in, g->refresh_token);
            }
        } else {
            secret_free(t);
            secret_free(copy);
            copy = NULL;
            err = "out of memory storing the token";
        }
    } else if (g) {
        err = "the token endpoint returned an empty token";
    }
    if (!copy) {
        c->failures++;
        c->fails_in_row++;
        token_cache_record(c, 0, g ? PROVIDER_TEMPORARY : failure);
        token_cache_backoff(c, now, err);
        snprintf(errbuf, sizeof(errbuf), "%s", c->last_err);
    }

    /* Wake the waiters of this answer only: detach them first, so a callback may get (and
     * wait again), cancel another waiter of this batch, or free the cache. Every waiter gets
     * its own view of the same copy, which lives until the loop ends whatever they do. */
    token_link_move(&batch, &c->waiters);
    outer = c->freed;
    c->freed = &freed;
    while (batch.next != &batch) {
        struct token_wait *w = (struct token_wait *)(void *)batch.next;
        token_link_unlink(&w->link);
        token_cb cb = w->cb;
        void *cbarg = w->arg;
        free(w);
        cb(cbarg, copy, copy ? NULL : errbuf);
        if (freed)
            break;
    }
    if (freed) {
        /* c is gone: drop the rest of the batch without callbacks, tell an outer loop. */
        token_link_free_all(&batch);
        if (outer)
            *outer = 1;
    } else {
        c->freed = outer;
    }
    secret_free(copy);
}

struct token_cache *token_cache_new(struct provider *p, const struct token_clock *clock)
{
    struct token_cache *c;
    if (!p || !p->ops || !p->ops->request)
        return NULL;
    c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->p = p;
    if (clock)
        c->clock = *clock;
    if (!c->clock.now_ms)
        c->clock.now_ms = token_cache_default_now;
    if (!c->clock.random)
        c->clock.random = token_cache_default_random;
    if (!c->clock.wall_ms)
        c->clock.wall_ms = token_cache_default_wall;
    token_link_init(&c->waiters);
    c->last_result = -1;
    return c;
}

void token_cache_free(struct token_cache *c)
{
    if (!c)
        return;
    if (c->req && c->p->ops->cancel)
        c->p->ops->cancel(c->req);
    c->req = NULL;
    token_link_free_all(&c->waiters);
    if (c->freed)
        *c->freed = 1;
    token_cache_forget(c);
    provider_free(c->p);
    if (c->persist.free)
        c->persist.free(c->persist.arg);
    OPENSSL_cleanse(c, sizeof(*c));
    free(c);
}

int token_cache_set_persist(struct token_cache *c, const struct token_persist *p)
{
    char *token = NULL, *refresh = NULL;
    int64_t expires_at_s = 0, lifetime_s = 0, now, remaining_ms;

    if (!c || !p || c->persist.load || c->persist.save || c->persist.free || c->token || c->req) {
        if (p && p->free)
            p->free(p->arg);
        return -1;
    }
    c->persist = *p;
    if (!p->load || p->load(p->arg, &token, &expires_at_s, &lifetime_s, &refresh) != 1)
        token = refresh = NULL;
    if (refresh) {
        (void)provider_set_refresh_token(c->p, refresh);
        secret_free(refresh);
    } else if (provider_uses_refresh_token(c->p)) {
        /* Known before anyone asks: `accounts` shows it, the first get fails at once. */
        c->reauthorize = 1;
        snprintf(c->last_err, sizeof(c->last_err), "no refresh token is stored");
    }
    if (!token)
        return 0;
    if (expires_at_s <= 0 || expires_at_s > TOKEN_CACHE_WALL_MAX_S) {
        secret_free(token);
        return 0;
    }
    if (lifetime_s < 0 || lifetime_s > TOKEN_CACHE_WALL_MAX_S)
        lifetime_s = 0;
    now = c->clock.now_ms(c->clock.arg);
    /* Wall clock to the cache's clock: what is left of the token's life, from now. */
    remaining_ms = expires_at_s * 1000 - c->clock.wall_ms(c->clock.arg);
    c->token = token;
    c->token_len = strlen(token);
    c->expires_at_ms = now + remaining_ms;
    c->lifetime_ms = lifetime_s * 1000 >= remaining_ms ? lifetime_s * 1000 : remaining_ms;
    if (!token_cache_usable(c, now)) {
        token_cache_forget(c); /* too close to expiry (or past it) to hand out */
        return 0;
    }
    return 1;
}

struct token_wait *token_cache_get(struct token_cache *c, token_cb cb, void *arg)
{
    int64_t now;
    char errbuf[sizeof(c->last_err) + 64];
    struct token_wait *w;

    if (!c || !cb)
        return NULL;
    now = c->clock.now_ms(c->clock.arg);

    if (token_cache_usable(c, now)) {
        /* A copy: the callback may invalidate the token (and so free c->token). */
        char *copy = NULL;
        if (!c->req && now >= c->next_attempt_ms && token_cache_in_ahead_window(c, now))
            (void)token_cache_start(c, now); /* a failure is recorded; keep serving */
        copy = secret_dup(c->token);
        if (!copy) {
            cb(arg, NULL, "out of memory");
            return NULL;
        }
        cb(arg, copy, NULL);
        secret_free(copy);
        return NULL;
    }
    if (c->token)
        token_cache_forget(c); /* too close to expiry to be of use to anyone */

    if (!c->req) {
        if (now < c->next_attempt_ms) {
            token_cache_backoff_msg(c, now, errbuf, sizeof(errbuf));
            cb(arg, NULL, errbuf);
            return NULL;
        }
        if (token_cache_start(c, now) != 0) {
            token_cache_backoff_msg(c, now, errbuf, sizeof(errbuf));
            cb(arg, NULL, errbuf);
            return NULL;
        }
    }
    w = calloc(1, sizeof(*w));
    if (!w) {
        /* The request goes on for the others; this caller hears now. */
        cb(arg, NULL, "out of memory");
        return NULL;
    }
    w->c = c;
    w->cb = cb;
    w->arg = arg;
    token_link_append(&c->waiters, &w->link);
    return w;
}

void token_cache_cancel(struct token_wait *w)
{
    if (!w)
        return;
    /* The request stays in flight: its token will serve the next get. */
    token_link_unlink(&w->link);
    free(w);
}

void token_cache_invalidate(struct token_cache *c, const char *token)
{
    size_t n;
    if (!c || !token || !c->token)
        return;
    n = strlen(token);
    if (n != c->token_len || CRYPTO_memcmp(token, c->token, n) != 0)
        return; /* already replaced: the new one has not been refused */
    token_cache_forget(c);
    c->fails_in_row = 0;
    c->next_attempt_ms = 0;
}

int token_cache_import_refresh_token(struct token_cache *c, const char *refresh_token)
{
    if (!c || !refresh_token || !*refresh_token || !provider_uses_refresh_token(c->p))
        return -1;
    if (c->persist.save && c->persist.save(c->persist.arg, NULL, 0, 0, refresh_token) != 0)
        return -1;
    if (provider_set_refresh_token(c->p, refresh_token) != 0)
        return -1;
    token_cache_forget(c);
    c->fails_in_row = 0;
    c->next_attempt_ms = 0;
    c->reauthorize = 0;
    c->last_err[0] = '\0';
    /* A request in flight carries the old grant, whose answer (invalid_grant, say) no longer
     * means anything: drop it, and let whoever waits hear the new grant's answer instead. */
    if (c->req) {
        if (c->p->ops->cancel)
            c->p->ops->cancel(c->req);
        c->req = NULL;
        if (c->waiters.next != &c->waiters && !token_cache_begin(c))
            token_cache_on_grant(c, NULL,
                                 c->p->start_err[0] ? c->p->start_err
                                                    : "token request could not be started",
                                 c->p->start_failure); /* wakes them; c may be gone after */
    }
    return 0;
}

void token_cache_stats(const struct token_cache *c, struct token_cache_stats *st)
{
    memset(st, 0, sizeof(*st));
    if (!c) {
        st->last_result = -1;
        return;
    }
    st->expires_at_ms = c->token ? c->expires_at_ms : 0;
    if (c->token) {
        int64_t left = c->expires_at_ms - c->clock.now_ms(c->clock.arg);
        st->expires_at_wall = (c->clock.wall_ms(c->clock.arg) + left) / 1000;
    }
    st->requests = c->requests;
    st->failures = c->failures;
    st->refreshing = c->req != NULL;
    st->last_result = c->last_result;
    st->last_attempt_wall = c->last_attempt_wall;
    st->reauthorize = c->reauthorize;
    snprintf(st->last_error, sizeof(st->last_error), "%s", c->last_err);
}
