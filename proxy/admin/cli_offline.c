/* A command's own token source when no daemon runs: account_tokens_new on a private event loop,
 * run only until the one token it wants has arrived (or a bound has passed). */
#include <stdio.h>
#include <string.h>

#include <event2/event.h>

#include "common/secret.h"
#include "oauth/http.h"
#include "oauth/token_cache.h"
#include "proxy/runtime/account_tokens.h"
#include "proxy/admin/cli_int.h"
#include "proxy/config/config.h"
#include "store/token_store.h"

int cli_offline_open(struct cli_offline *o, struct config *cfg, const struct cfg_account *a,
                     int need_store, char *err, size_t errlen)
{
    memset(o, 0, sizeof(*o));
    if (account_tokens_discover(cfg, err, errlen) != 0)
        return -1;
    if (need_store && !cfg->key_file) {
        snprintf(err, errlen,
                 "%s: no key_file in [proxy], so there is no token store to keep the refresh "
                 "token in (set key_file, or start the daemon)",
                 cfg->path);
        return -1;
    }
    o->base = event_base_new();
    o->http = o->base ? http_new(o->base) : NULL;
    if (!o->http) {
        snprintf(err, errlen, "cannot create the event loop");
        goto fail;
    }
    if (cfg->key_file) {
        char serr[768];
        o->store = token_store_new(cfg->state_dir, cfg->key_file, serr, sizeof(serr));
        if (!o->store) {
            snprintf(err, errlen, "token store: %s", serr);
            goto fail;
        }
    }
    o->cache = account_tokens_new(cfg, a, o->http, o->store, err, errlen);
    if (!o->cache)
        goto fail;
    return 0;
fail:
    cli_offline_close(o);
    return -1;
}

struct wait_state {
    struct event_base *base;
    int done;
    char *token;
    char err[512];
};

static void on_token(void *arg, const char *token, const char *err)
{
    struct wait_state *w = arg;
    w->done = 1;
    if (token)
        w->token = secret_dup(token);
    if (!w->token)
        snprintf(w->err, sizeof(w->err), "%s", token ? "out of memory" : err ? err : "failed");
    event_base_loopbreak(w->base);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

int cli_offline_token(struct cli_offline *o, char **token, int64_t *expires_at, char *err,
                      size_t errlen)
{
    struct wait_state w = {.base = o->base};
    struct token_wait *tw = token_cache_get(o->cache, on_token, &w);
    if (!w.done) {
        struct timeval tv = {.tv_sec = CLI_TOKEN_TIMEOUT_SECONDS};
        struct event *t = evtimer_new(o->base, on_timeout, o->base);
        if (t && evtimer_add(t, &tv) == 0)
            event_base_dispatch(o->base);
        if (t)
            event_free(t);
        if (!w.done) {
            token_cache_cancel(tw);
            snprintf(err, errlen, "%s",
                     t ? "timed out waiting for the identity provider" : "cannot create a timer");
            return -1;
        }
    }
    if (!w.token) {
        snprintf(err, errlen, "%s", w.err);
        return -1;
    }
    struct token_cache_stats st;
    token_cache_stats(o->cache, &st);
    *expires_at = st.expires_at_wall;
    *token = w.token;
    return 0;
}

void cli_offline_close(struct cli_offline *o)
{
    token_cache_free(o->cache); /* before the store, which it borrows */
    token_store_free(o->store);
    http_free(o->http);
    if (o->base)
        event_base_free(o->base);
    memset(o, 0, sizeof(*o));
}
