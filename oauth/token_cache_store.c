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
    /* The refresh token the store holds (secret_free), so that a save that brings none keeps
     * it without reading the file back. */
    char *refresh_token;
};

static int token_cache_store_load(void *arg, char **token, int64_t *expires_at_s,
                                  int64_t *lifetime_s, char **refresh_token)
{
    struct token_cache_store *g = arg;
    struct token_record rec;
    int64_t now = (int64_t)time(NULL);
    if (token_store_load(g->st, g->account, now, &rec) != 1)
        return 0;
    if (rec.refresh_token) {
        secret_free(g->refresh_token);
        g->refresh_token = secret_dup(rec.refresh_token);
        *refresh_token = rec.refresh_token;
        rec.refresh_token = NULL;
        log_info("event=refresh_token_loaded account=%s source=token_store", g->account);
    }
    if (rec.access_token) {
        *token = rec.access_token;
        *expires_at_s = rec.expires_at;
        *lifetime_s = rec.lifetime;
        rec.access_token = NULL;
        log_info("event=token_loaded account=%s expires_in=%llds source=token_store", g->account,
                 (long long)(rec.expires_at - now));
    }
    token_record_clear(&rec);
    return 1;
}

static int token_cache_store_save(void *arg, const char *token, int64_t expires_at_s,
                                  int64_t lifetime_s, const char *refresh_token)
{
    struct token_cache_store *g = arg;
    /* One record per account: the access token with the newest refresh token (a rotated one,
     * or the one held since it was loaded). */
    const char *rt = refresh_token ? refresh_token : g->refresh_token;
    struct token_record rec = {.access_token = (char *)(uintptr_t)token,
                               .expires_at = token ? expires_at_s : 0,
                               .lifetime = token ? lifetime_s : 0,
                               .refresh_token = (char *)(uintptr_t)rt};
    char err[4608];
    char *copy = NULL;
    if (refresh_token && !(copy = secret_dup(refresh_token))) {
        log_error("event=token_store_write_failed account=%s reason=\"out of memory\"", g->account);
        return -1;
    }
    if (token_store_save(g->st, g->account, &rec, err, sizeof(err)) != 0) {
        log_error("event=token_store_write_failed account=%s reason=\"%s\" effect=\"%s\"",
                  g->account, err,
                  refresh_token ? "the new refresh token is held in memory only: if the proxy "
                                  "restarts before a later save works, run authorize again"
                                : "the token is used but a restart will fetch a new one");
        secret_free(copy);
        return -1;
    }
    if (copy) {
        secret_free(g->refresh_token);
        g->refresh_token = copy;
    }
    log_debug("event=token_saved account=%s refresh_token=%s", g->account,
              refresh_token ? "new"
              : rt          ? "kept"
                            : "none");
    return 0;
}

static void token_cache_store_free(void *arg)
{
    struct token_cache_store *g = arg;
    if (g)
        secret_free(g->refresh_token);
    free(g);
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
