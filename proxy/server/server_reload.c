/* SIGHUP: the config read again, checked whole, and swapped in only if every part of it works
 * (its certificates, its accounts' grants, its new listening addresses). Otherwise nothing
 * changes. */
#include "proxy/server/server_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "proxy/runtime/device_limits.h"
#include "proxy/runtime/account_budget.h"
#include "proxy/runtime/device_stats.h"
#include "proxy/runtime/metrics.h"
#include "proxy/delivery/queue.h"
#include "proxy/runtime/server_gen.h"

static int str_same(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

/* Keys whose objects live as long as the process (the token store, the control socket, the
 * metrics listener): a change is refused, naming the key. 0 none changed; -1 with err. */
static int fixed_keys_changed(const struct config *old, const struct config *cfg, char *err,
                              size_t errlen)
{
    const char *key = NULL;
    if (!str_same(old->state_dir, cfg->state_dir))
        key = "state_dir";
    else if (!str_same(old->key_file, cfg->key_file))
        key = "key_file";
    else if (!str_same(old->control_socket, cfg->control_socket))
        key = "control_socket";
    else if (!str_same(old->metrics_listen.host, cfg->metrics_listen.host) ||
             !str_same(old->metrics_listen.port, cfg->metrics_listen.port))
        key = "metrics_listen";
    else if (old->spool_commit_threads != cfg->spool_commit_threads)
        key = "spool_commit_threads"; /* the threads are started once, with the spool */
    if (!key)
        return 0;
    snprintf(err, errlen, "%s: %s cannot change on reload; restart the service", cfg->path, key);
    return -1;
}

/* The new config's listen and listen_tls entries, in that order. NULL: out of memory. */
static struct listen_key *config_keys(const struct config *cfg, size_t *n)
{
    *n = cfg->nlisten + cfg->nlisten_tls;
    struct listen_key *k = calloc(*n ? *n : 1, sizeof(*k));
    if (!k)
        return NULL;
    for (size_t i = 0; i < cfg->nlisten; i++)
        k[i] = (struct listen_key){cfg->listen[i].host, cfg->listen[i].port, 0};
    for (size_t i = 0; i < cfg->nlisten_tls; i++)
        k[cfg->nlisten + i] =
            (struct listen_key){cfg->listen_tls[i].host, cfg->listen_tls[i].port, 1};
    return k;
}

/* What a reload does to the listeners, prepared before anything changes. */
struct listen_plan {
    int *old_kept;                  /* s->listeners[i] stays */
    struct server_listener **added; /* bound for the new config, not accepting yet */
    size_t nadded;
};

static void plan_clear(struct listen_plan *p)
{
    for (size_t j = 0; j < p->nadded; j++)
        server_listener_free(p->added[j]);
    free(p->added);
    free(p->old_kept);
    memset(p, 0, sizeof(*p));
}

/* Bind what cfg adds; s->listeners gets room for them. Nothing is closed here. 0 ok; -1 with
 * err, and nothing bound. */
static int listeners_prepare(struct server *s, const struct config *cfg, struct listen_plan *p,
                             char *err, size_t errlen)
{
    size_t nnew, nold = s->nlisteners;
    struct listen_key *nw = config_keys(cfg, &nnew);
    struct listen_key *old = calloc(nold ? nold : 1, sizeof(*old));
    int *new_added = calloc(nnew ? nnew : 1, sizeof(int));
    int rc = -1;
    memset(p, 0, sizeof(*p));
    p->old_kept = calloc(nold ? nold : 1, sizeof(int));
    if (!nw || !old || !new_added || !p->old_kept) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nold; i++)
        old[i] =
            (struct listen_key){s->listeners[i]->host, s->listeners[i]->port, s->listeners[i]->tls};
    server_listen_diff(old, nold, nw, nnew, p->old_kept, new_added);
    for (size_t j = 0; j < nnew; j++) {
        if (!new_added[j])
            continue;
        const struct cfg_endpoint *ep =
            j < cfg->nlisten ? &cfg->listen[j] : &cfg->listen_tls[j - cfg->nlisten];
        if (server_listen_endpoint(s, cfg, ep, nw[j].tls, &p->added, &p->nadded, err, errlen) != 0)
            goto out;
    }
    struct server_listener **all =
        realloc(s->listeners, (nold + p->nadded ? nold + p->nadded : 1) * sizeof(*all));
    if (!all) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    s->listeners = all;
    rc = 0;
out:
    if (rc != 0)
        plan_clear(p);
    free(nw);
    free(old);
    free(new_added);
    return rc;
}

/* Close what the new config dropped, add what it added. Cannot fail. */
static void listeners_commit(struct server *s, struct listen_plan *p)
{
    size_t n = 0;
    for (size_t i = 0; i < s->nlisteners; i++) {
        if (p->old_kept[i]) {
            s->listeners[n++] = s->listeners[i];
            continue;
        }
        log_info("event=listener_closed address=%s", s->listeners[i]->name);
        server_listener_free(s->listeners[i]);
    }
    for (size_t j = 0; j < p->nadded; j++) {
        metrics_listener_add(s->metrics, p->added[j]->name);
        s->listeners[n++] = p->added[j];
    }
    s->nlisteners = n;
    p->nadded = 0;
    plan_clear(p);
}

int server_reload(struct server *s, const char *path, char **errors)
{
    char err[1024] = "";
    char *cerr = NULL;
    struct server_gen *g = NULL;
    *errors = NULL;
    struct config *cfg = config_load(path, &cerr);
    if (!cfg) {
        *errors = cerr ? cerr : strdup("cannot load the configuration");
        return -1;
    }
    free(cerr);
    if (fixed_keys_changed(s->gen->cfg, cfg, err, sizeof(err)) != 0) {
        config_free(cfg);
        goto fail;
    }
    g = server_gen_new(s->base, cfg, s->http, s->store, s->gen, err, sizeof(err));
    if (!g)
        goto fail;
    struct listen_plan plan;
    if (listeners_prepare(s, g->cfg, &plan, err, sizeof(err)) != 0)
        goto fail;
    /* the limits copy what they take from the config: first, as a failure after it changes
     * nothing that points into the new config */
    if (device_limits_configure(s->dctx.limits, g->cfg) != 0 ||
        metrics_reconfigure(s->metrics, g->cfg) != 0) {
        plan_clear(&plan);
        snprintf(err, sizeof(err), "out of memory");
        goto fail;
    }
    listeners_commit(s, &plan); /* from here on nothing fails */
    log_set_level(g->cfg->log_level);
    log_info("event=reloaded generation=%u listeners=%zu accounts=%zu devices=%zu "
             "token_caches_kept=%zu",
             g->id, s->nlisteners, g->cfg->naccounts, g->cfg->ndevices, g->tokens_kept);
    device_stats_keeper_retain(s->devstats, g->cfg); /* it borrowed the old config */
    account_budget_keeper_retain(s->budget, g->cfg);
    /* the queue borrows the current generation: it gets the new one before the old may go */
    queue_reconfigured(s->dctx.queue, g); /* an account that came back delivers at once */
    s->gen->retired = 1;
    server_gen_unref(s->gen); /* freed once its last session closes */
    s->gen = g;
    return 0;
fail:
    server_gen_unref(g);
    *errors = strdup(err);
    return -1;
}
