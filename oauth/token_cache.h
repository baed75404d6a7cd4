/* One account's access token: EMPTY, VALID(expiry), REFRESHING(waiters). One request in flight
 * however many sessions wait; every waiter woken by its answer; refresh ahead of expiry; back
 * off with jitter when the IdP fails. The API is asynchronous and message-shaped so that oauth/
 * can later move into a separate process that alone holds the secrets. */
#ifndef SOP_TOKEN_CACHE_H
#define SOP_TOKEN_CACHE_H

#include <stdint.h>

struct provider;
struct token_cache;
struct token_wait;

/* Injected time and randomness; NULL fields = CLOCK_MONOTONIC and OpenSSL's RAND_bytes. */
struct token_clock {
    int64_t (*now_ms)(void *arg);
    uint32_t (*random)(void *arg);
    void *arg;
};

/* token: NULL on failure, then err says why (log-safe). token is valid only during the call:
 * copy it. */
typedef void (*token_cb)(void *arg, const char *token, const char *err);

/* Takes ownership of p. clock may be NULL. */
struct token_cache *token_cache_new(struct provider *p, const struct token_clock *clock);
/* Pending waiters are dropped without a callback. Accepts NULL. */
void token_cache_free(struct token_cache *c);
/* Ask for a usable token. If one is at hand (or the cache is backing off after a failure and
 * has no token), cb runs before this returns and NULL is returned. Otherwise cb runs later,
 * once, unless the returned handle is cancelled first. A token inside the refresh-ahead window
 * is handed out at once and a background refresh starts. */
struct token_wait *token_cache_get(struct token_cache *c, token_cb cb, void *arg);
void token_cache_cancel(struct token_wait *w);
/* The upstream refused this token (535): forget it if it is still the current one, so the next
 * get fetches a fresh one at once (no backoff). */
void token_cache_invalidate(struct token_cache *c, const char *token);

struct token_cache_stats {
    int64_t expires_at_ms; /* on the cache's clock; 0 = no token */
    unsigned long requests, failures;
    int refreshing;
};
void token_cache_stats(const struct token_cache *c, struct token_cache_stats *st);

#endif
