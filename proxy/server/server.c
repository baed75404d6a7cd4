#include "proxy/server/server_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "common/log.h"
#include "common/state_file.h"
#include "oauth/http.h"
#include "proxy/runtime/account_budget.h"
#include "proxy/runtime/auth_throttle.h"
#include "proxy/runtime/device_blocks.h"
#include "proxy/runtime/device_limits.h"
#include "proxy/runtime/device_stats.h"
#include "proxy/runtime/metrics.h"
#include "proxy/delivery/queue.h"
#include "proxy/delivery/spool_commit.h"
#include "proxy/runtime/server_gen.h"
#include "proxy/server/server_session.h"
#include "proxy/upstream/upstream_pool.h"
#include "proxy/graph/graph_client.h"
#include "store/token_store.h"

int server_listen(struct server *s, char *err, size_t errlen)
{
    const struct config *cfg = s->gen->cfg;
    int rc = 0;
    for (size_t i = 0; i < cfg->nlisten && rc == 0; i++)
        rc = server_listen_endpoint(s, cfg, &cfg->listen[i], 0, &s->listeners, &s->nlisteners, err,
                                    errlen);
    for (size_t i = 0; i < cfg->nlisten_tls && rc == 0; i++)
        rc = server_listen_endpoint(s, cfg, &cfg->listen_tls[i], 1, &s->listeners, &s->nlisteners,
                                    err, errlen);
    for (size_t i = 0; i < s->nlisteners; i++)
        metrics_listener_add(s->metrics, s->listeners[i]->name);
    return rc;
}

void server_drain(struct server *s)
{
    server_stop_listening(s);
    for (struct server_session *ss = s->sessions, *next; ss; ss = next) {
        next = server_session_next(ss);
        server_session_drain(ss);
    }
}

void server_stop_listening(struct server *s)
{
    s->stopping = 1;
    queue_stopping(s->dctx.queue);
    for (size_t i = 0; i < s->nlisteners; i++)
        server_listener_free(s->listeners[i]);
    free(s->listeners);
    s->listeners = NULL;
    s->nlisteners = 0;
}

/* The per-device limits, with the counts the daemon wrote at its last shutdown (a bad file is
 * set aside and the counts start from zero). NULL: out of memory. */
static struct device_limits *server_limits_open(const struct config *cfg)
{
    char path[4096], err[1024];
    struct device_limits *l = device_limits_new(NULL, NULL);
    if (!l || device_limits_configure(l, cfg) != 0) {
        device_limits_free(l);
        return NULL;
    }
    if (device_limits_path(cfg, path, sizeof(path)) != 0)
        return l;
    int r = device_limits_load(l, path, err, sizeof(err));
    if (r < 0) {
        char aside[sizeof(path) + 8];
        int moved = state_file_set_aside(path, aside, sizeof(aside));
        log_warn("event=device_limits_ignored reason=\"%s\"%s%s effect=\"the devices' counts "
                 "start from zero\"",
                 err, moved ? " moved_to=" : "", moved ? aside : "");
    } else if (r > 0) {
        log_info("event=device_limits_loaded path=%s", path);
    }
    return l;
}

/* Write the counts for the next start (only a daemon that ran: one that opened the queue, not
 * --check, which would write back a running daemon's old counts), and free them. */
static void server_limits_close(struct server *s, int ran)
{
    char path[4096], err[1024];
    if (s->dctx.limits && ran && s->gen &&
        device_limits_path(s->gen->cfg, path, sizeof(path)) == 0 &&
        device_limits_save(s->dctx.limits, path, err, sizeof(err)) != 0)
        log_warn("event=device_limits_write_failed reason=\"%s\" effect=\"the devices' counts "
                 "start from zero at the next start\"",
                 err);
    device_limits_free(s->dctx.limits);
    s->dctx.limits = NULL;
}

/* The block list kept in STATE_DIR (docs/device-limits.md). A bad file is never half-used: it
 * is set aside for a person to look at (its blocks are then not in force: the log says so
 * loudly) and the list starts empty. NULL: out of memory. */
static struct device_blocks *server_blocks_open(const struct config *cfg)
{
    char path[4096], err[1024];
    if (device_blocks_path(cfg, path, sizeof(path)) != 0) {
        log_warn("event=device_blocks_off reason=\"state_dir too long\"");
        return device_blocks_new(NULL);
    }
    struct device_blocks *b = device_blocks_new(path);
    if (!b)
        return NULL;
    int r = device_blocks_load(b, err, sizeof(err));
    if (r < 0) {
        char aside[sizeof(path) + 8];
        int moved = state_file_set_aside(path, aside, sizeof(aside));
        log_error("event=device_blocks_ignored reason=\"%s\"%s%s effect=\"no device is blocked "
                  "until blocked again\"",
                  err, moved ? " moved_to=" : "", moved ? aside : "");
    } else if (r > 0) {
        log_info("event=device_blocks_loaded path=%s blocked=%zu", path, device_blocks_count(b));
    }
    return b;
}

struct server *server_new(struct event_base *base, struct config *cfg, char *err, size_t errlen)
{
    struct server *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        config_free(cfg);
        return NULL;
    }
    s->base = base;
    if (cfg->dns_server.host) {
        /* [proxy] dns_server: this one name server (and /etc/hosts), not resolv.conf's */
        char ns[128];
        int v6 = strchr(cfg->dns_server.host, ':') != NULL;
        snprintf(ns, sizeof(ns), "%s%s%s:%s", v6 ? "[" : "", cfg->dns_server.host, v6 ? "]" : "",
                 cfg->dns_server.port);
        s->dns = evdns_base_new(base, 0);
        if (s->dns) {
            evdns_base_load_hosts(s->dns, NULL);
            if (evdns_base_nameserver_ip_add(s->dns, ns) != 0) {
                snprintf(err, errlen, "dns_server: cannot use name server %s", ns);
                evdns_base_free(s->dns, 0);
                s->dns = NULL;
                config_free(cfg);
                free(s);
                return NULL;
            }
            log_info("event=dns_server server=%s", ns);
        }
    } else {
        s->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    }
    if (!s->dns && !cfg->dns_server.host) {
        /* No usable /etc/resolv.conf: still serve upstreams named in /etc/hosts or by IP. */
        log_warn("event=dns_degraded reason=\"cannot read nameservers from /etc/resolv.conf\" "
                 "effect=\"only /etc/hosts names and IP literals resolve\"");
        s->dns = evdns_base_new(base, 0);
        if (s->dns)
            evdns_base_load_hosts(s->dns, NULL);
    }
    s->http = http_new(base);
    s->metrics = metrics_new(cfg);
    s->devstats = device_stats_keeper_new(base, cfg); /* loads STATE_DIR/devices.state */
    s->pools = upstream_pools_new(base, s->dns, s->metrics);
    s->graph = graph_pools_new(base, s->metrics);
    s->throttle = auth_throttle_new(SERVER_AUTH_TRACKED_MAX, NULL, NULL);
    s->dctx = (struct delivery_ctx){.base = base,
                                    .metrics = s->metrics,
                                    .devstats = s->devstats,
                                    .pools = s->pools,
                                    .graph = s->graph};
    s->dctx.limits = server_limits_open(cfg);         /* loads STATE_DIR/device_limits.state */
    s->dctx.blocks = server_blocks_open(cfg);         /* loads STATE_DIR/device_blocks.state */
    s->budget = account_budget_keeper_new(base, cfg); /* loads STATE_DIR/account-budget.state */
    s->dctx.budget = account_budget_keeper_budget(s->budget);
    if (!s->dns || !s->http || !s->metrics || !s->pools || !s->graph || !s->throttle ||
        !s->dctx.limits || !s->dctx.blocks) {
        snprintf(err, errlen, "cannot initialise: out of memory");
        config_free(cfg);
        goto fail;
    }
    /* The token store lives as long as the daemon: key_file and state_dir cannot be reloaded. */
    if (cfg->key_file) {
        char serr[1024];
        s->store = token_store_new(cfg->state_dir, cfg->key_file, serr, sizeof(serr));
        if (!s->store) {
            snprintf(err, errlen, "token store: %s", serr);
            config_free(cfg);
            goto fail;
        }
        log_info("event=token_store dir=%s/tokens", cfg->state_dir);
    }
    s->gen = server_gen_new(base, cfg, s->http, s->store, NULL, err, errlen);
    if (!s->gen)
        goto fail;
    return s;
fail:
    server_free(s);
    return NULL;
}

void server_free(struct server *s)
{
    if (!s)
        return;
    int ran = s->dctx.queue != NULL; /* a daemon that ran, not --check */
    server_stop_listening(s);
    while (s->sessions)
        server_session_abort(s->sessions);
    server_auth_delays_free(s);
    auth_throttle_free(s->throttle);
    s->throttle = NULL;
    /* after the sessions (their spool writers), before the pools its attempts lease from:
     * attempts in flight are cancelled, their messages stay spooled */
    spool_committer_free(s->dctx.committer); /* joins: commits in flight end before the queue */
    s->dctx.committer = NULL;
    queue_free(s->dctx.queue);
    s->dctx.queue = NULL;
    /* after the sessions, which give their connections back; before the generations, which
     * idle connections hold */
    upstream_pools_free(s->pools);
    s->pools = NULL;
    graph_pools_free(s->graph);
    s->graph = NULL;
    /* after the sessions, which count into it; writes the file a last time; before the
     * config it borrows goes */
    device_stats_keeper_free(s->devstats);
    server_limits_close(s, ran); /* after the sessions and the queue, which count into them */
    device_blocks_free(s->dctx.blocks);
    account_budget_keeper_free(s->budget); /* after the queue and sessions that count into it */
    s->dctx.budget = NULL;
    server_gen_unref(s->gen);   /* the last one: sessions and control connections are gone */
    metrics_free(s->metrics);   /* sessions count into it until they are gone */
    token_store_free(s->store); /* after the caches, which borrow it */
    http_free(s->http);
    if (s->dns)
        evdns_base_free(s->dns, 0);
    free(s);
}

void server_session_closed(struct server *s)
{
    if (s->sessions_open)
        s->sessions_open--;
    if (s->stopping && s->sessions_open == 0)
        event_base_loopexit(s->base, NULL);
}
