/* Glue between a token cache and the token store: one per account, owned by the cache. */
#include "oauth/token_cache_store.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/secret.h"
#include "oauth/token_cache.h"
#include "store/token_store.h"

struct token_cache_store {
    struct token_store *st;
    char account[160];
};

static int token_cache_store_load(void *arg, char **token, int64_t *expires_at_s,
                                  int64_t *lifetime_s)
{
    struct token_cache_store *g = arg;
    struct token_record rec;
    int64_t now = (int64_t)time(NULL);
    if (token_store_load(g->st, g->account, now, &rec) != 1)
        return 0;
    if (!rec.access_token) {
        token_record_clear(&rec);
        return 0;
    }
    *token = rec.access_token;
    *expires_at_s = rec.expires_at;
    *lifetime_s = rec.lifetime;
    rec.access_token = NULL;
    log_info("event=token_loaded account=%s expires_in=%llds source=token_store", g->account,
             (long long)(rec.expires_at - now));
    token_record_clear(&rec);
    return 1;
}

static int token_cache_store_save(void *arg, const char *token, int64_t expires_at_s,
                                  int64_t lifetime_s)
{
    struct token_cache_store *g = arg;
    /* The record holds only what the cache has: the access token. (The refresh_token grant
     * will carry its refresh token through here too.) */
    struct token_record rec = {.access_token = (char *)(uintptr_t)token,
                               .expires_at = expires_at_s,
                               .lifetime = lifetime_s};
    char err[4608];
    if (token_store_save(g->st, g->account, &rec, err, sizeof(err)) != 0) {
        log_error("event=token_store_write_failed account=%s reason=\"%s\" "
                  "effect=\"the token is used but a restart will fetch a new one\"",
                  g->account, err);
        return -1;
    }
    log_debug("event=token_saved account=%s", g->account);
    return 0;
}

static void token_cache_store_free(void *arg)
{
    free(arg);
}

int token_cache_store_attach(struct token_cache *c, struct token_store *st, const char *account)
{
    struct token_cache_store *g;
    struct token_persist p = {.load = token_cache_store_load,
                              .save = token_cache_store_save,
                              .free = token_cache_store_free};
    if (!c || !st || !account)
        return -1;
    g = calloc(1, sizeof(*g));
    if (!g)
        return -1;
    g->st = st;
    snprintf(g->account, sizeof(g->account), "%s", account);
    p.arg = g;
    return token_cache_set_persist(c, &p);
}
