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

/* Injected time and randomness; NULL fields = CLOCK_MONOTONIC, OpenSSL's RAND_bytes and
 * CLOCK_REALTIME. now_ms runs the cache; wall_ms only converts stored expiries. */
struct token_clock {
    int64_t (*now_ms)(void *arg);
    uint32_t (*random)(void *arg);
    void *arg;
    int64_t (*wall_ms)(void *arg);
};

/* Optional persistence (the token store), so that a restart does not hit the IdP. Expiries
 * cross this interface as wall-clock seconds since the epoch. */
struct token_persist {
    /* Once, from token_cache_set_persist: 1 with what is stored: an access token (*token from
     * secret_dup, the cache takes it, with its expiry and its lifetime as issued) and/or a
     * refresh token (*refresh_token from secret_dup, handed to the provider); 0 nothing. */
    int (*load)(void *arg, char **token, int64_t *expires_at_s, int64_t *lifetime_s,
                char **refresh_token);
    /* After every successful request, before any waiter hears of the token; refresh_token is
     * the rotated one, or NULL to keep the stored one. token NULL: only a new refresh token
     * (token_cache_import_refresh_token), the stored access token is dropped. 0 saved; -1 not
     * (the hook has logged why; the token is used all the same). */
    int (*save)(void *arg, const char *token, int64_t expires_at_s, int64_t lifetime_s,
                const char *refresh_token);
    /* Called with arg by token_cache_free. May be NULL. */
    void (*free)(void *arg);
    void *arg;
};

/* token: NULL on failure, then err says why (log-safe). token is valid only during the call:
 * copy it. */
typedef void (*token_cb)(void *arg, const char *token, const char *err);

/* Takes ownership of p. clock may be NULL. */
struct token_cache *token_cache_new(struct provider *p, const struct token_clock *clock);
/* Attach persistence (at most once, before the first get; the cache owns p->arg from now on,
 * even on failure) and load a still-usable stored token: the cache starts VALID with its
 * remaining lifetime. 1 a token was loaded; 0 none; -1 bad arguments. */
int token_cache_set_persist(struct token_cache *c, const struct token_persist *p);
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

/* A refresh token a person just obtained (`authorize`): persisted, handed to the provider, and
 * used from the next get on (the current access token, from the old grant, is dropped; any
 * backoff ends). 0 ok; -1 the account's grant has no refresh token, or it could not be saved
 * (then nothing changed). */
int token_cache_import_refresh_token(struct token_cache *c, const char *refresh_token);

struct token_cache_stats {
    int64_t expires_at_ms;   /* on the cache's clock; 0 = no token */
    int64_t expires_at_wall; /* the same, wall clock in seconds since the epoch; 0 = none */
    unsigned long requests, failures;
    int refreshing;
    int last_result;           /* -1 no request yet, 0 the last one failed, 1 it succeeded */
    int64_t last_attempt_wall; /* when the last request ended, wall clock seconds; 0 = none */
    int reauthorize;           /* a person must run `authorize` (invalid_grant, none stored) */
    char last_error[512];      /* the last failure, log-safe; "" after a success */
};
void token_cache_stats(const struct token_cache *c, struct token_cache_stats *st);

#endif
