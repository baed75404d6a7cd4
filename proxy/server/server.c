#include "proxy/server/server_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "common/log.h"
#include "oauth/http.h"
#include "proxy/runtime/account_budget.h"
#include "proxy/runtime/auth_throttle.h"
#include "proxy/runtime/device_stats.h"
#include "proxy/runtime/metrics.h"
#include "proxy/delivery/queue.h"
#include "proxy/delivery/spool_commit.h"
#include "proxy/runtime/server_gen.h"
#include "proxy/server/server_session.h"
#include "proxy/upstream/upstream_pool.h"
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
    s->throttle = auth_throttle_new(SERVER_AUTH_TRACKED_MAX, NULL, NULL);
    s->dctx = (struct delivery_ctx){
        .base = base, .metrics = s->metrics, .devstats = s->devstats, .pools = s->pools};
    s->budget = account_budget_keeper_new(base, cfg); /* loads STATE_DIR/account-budget.state */
    s->dctx.budget = account_budget_keeper_budget(s->budget);
    if (!s->dns || !s->http || !s->metrics || !s->pools || !s->throttle) {
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
    /* after the sessions, which count into it; writes the file a last time; before the
     * config it borrows goes */
    device_stats_keeper_free(s->devstats);
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
