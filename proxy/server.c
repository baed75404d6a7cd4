#include "proxy/server.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "common/log.h"
#include "oauth/http.h"
#include "oauth/token_cache.h"
#include "proxy/account_tokens.h"
#include "proxy/auth_worker.h"
#include "proxy/device.h"
#include "proxy/device_stats.h"
#include "proxy/metrics.h"
#include "proxy/server_session.h"
#include "proxy/tls.h"
#include "store/token_store.h"

struct server_listener {
    struct server *srv;
    struct evconnlistener *lev;
    int tls;
    char name[96]; /* "127.0.0.1:2525" */
};

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct server_listener *l = arg;
    (void)lev;
    if (l->srv->stopping) {
        evutil_closesocket(fd);
        return;
    }
    server_session_start(l->srv, fd, sa, (socklen_t)salen, l->tls, l->name);
}

static void on_accept_error(struct evconnlistener *lev, void *arg)
{
    struct server_listener *l = arg;
    int e = EVUTIL_SOCKET_ERROR();
    (void)lev;
    /* EMFILE and friends: log and keep the listener; libevent retries on the next event. */
    log_error("event=accept_failed listener=%s reason=\"%s\"", l->name,
              evutil_socket_error_to_string(e));
}

static int listen_one(struct server *s, const struct cfg_endpoint *ep, int tls, char *err,
                      size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    const char *host = strcmp(ep->host, "*") == 0 ? NULL : ep->host;
    int rc = getaddrinfo(host, ep->port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "%s line %d: cannot use listen address %s:%s: %s", s->cfg->path,
                 ep->line, ep->host, ep->port, gai_strerror(rc));
        return -1;
    }
    int ret = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        struct server_listener *l = calloc(1, sizeof(*l));
        struct server_listener **nl =
            realloc(s->listeners, (s->nlisteners + 1) * sizeof(*s->listeners));
        if (!l || !nl) {
            free(l);
            snprintf(err, errlen, "out of memory");
            ret = -1;
            break;
        }
        s->listeners = nl;
        l->srv = s;
        l->tls = tls;
        snprintf(l->name, sizeof(l->name), "%s%s%s:%s", ai->ai_family == AF_INET6 ? "[" : "",
                 ep->host, ai->ai_family == AF_INET6 ? "]" : "", ep->port);
        l->lev = evconnlistener_new_bind(s->base, on_accept, l,
                                         LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                             LEV_OPT_CLOSE_ON_EXEC,
                                         512, ai->ai_addr, (int)ai->ai_addrlen);
        if (!l->lev) {
            snprintf(err, errlen, "%s line %d: cannot listen on %s: %s", s->cfg->path, ep->line,
                     l->name, strerror(errno));
            free(l);
            ret = -1;
            break;
        }
        evconnlistener_set_error_cb(l->lev, on_accept_error);
        s->listeners[s->nlisteners++] = l;
        metrics_listener_add(s->metrics, l->name);
        log_info("event=listening address=%s tls=%s", l->name, tls ? "implicit" : "starttls");
    }
    freeaddrinfo(res);
    return ret;
}

int server_listen(struct server *s, char *err, size_t errlen)
{
    for (size_t i = 0; i < s->cfg->nlisten; i++)
        if (listen_one(s, &s->cfg->listen[i], 0, err, errlen) != 0)
            return -1;
    for (size_t i = 0; i < s->cfg->nlisten_tls; i++)
        if (listen_one(s, &s->cfg->listen_tls[i], 1, err, errlen) != 0)
            return -1;
    return 0;
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
    for (size_t i = 0; i < s->nlisteners; i++) {
        evconnlistener_free(s->listeners[i]->lev);
        free(s->listeners[i]);
    }
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
    s->cfg = cfg;
    s->devices = device_table_new(cfg);
    if (s->devices && device_has_logins(s->devices)) {
        /* password checks run on 2 threads: the loop never waits for crypt(3) */
        s->auth = auth_worker_new(base, s->devices, 2);
        if (!s->auth) {
            snprintf(err, errlen, "cannot start the password-check threads");
            goto fail;
        }
    }
    s->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!s->dns) {
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
    s->tokens = calloc(cfg->naccounts ? cfg->naccounts : 1, sizeof(*s->tokens));
    s->tls_clients = calloc(cfg->naccounts ? cfg->naccounts : 1, sizeof(*s->tls_clients));
    if (!s->devices || !s->dns || !s->http || !s->tokens || !s->tls_clients || !s->metrics) {
        snprintf(err, errlen, "cannot initialise: out of memory");
        goto fail;
    }
    if (cfg->key_file) {
        char serr[1024];
        s->store = token_store_new(cfg->state_dir, cfg->key_file, serr, sizeof(serr));
        if (!s->store) {
            snprintf(err, errlen, "token store: %s", serr);
            goto fail;
        }
        log_info("event=token_store dir=%s/tokens", cfg->state_dir);
    }
    if (cfg->tls_cert) {
        s->tls_server =
            tls_server_ctx_new(cfg->tls_cert, cfg->tls_key, cfg->tls_min_version, err, errlen);
        if (!s->tls_server)
            goto fail;
    }
    /* issuer: token endpoints come from discovery documents, before the loop serves anyone */
    if (account_tokens_discover(cfg, err, errlen) != 0)
        goto fail;
    for (size_t i = 0; i < cfg->naccounts; i++) {
        const struct cfg_account *a = &cfg->accounts[i];
        /* each account may trust its own upstream CA (upstream_ca_file) */
        s->tls_clients[i] = tls_client_ctx_new(a->upstream.ca_file, err, errlen);
        if (!s->tls_clients[i])
            goto fail;
        s->tokens[i] = account_tokens_new(cfg, a, s->http, s->store, err, errlen);
        if (!s->tokens[i])
            goto fail;
    }
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
    metrics_free(s->metrics); /* sessions count into it until they are gone */
    /* after the sessions, which count into it; writes the file a last time */
    device_stats_keeper_free(s->devstats);
    for (size_t i = 0; i < s->cfg->naccounts; i++) {
        if (s->tokens)
            token_cache_free(s->tokens[i]);
        if (s->tls_clients)
            SSL_CTX_free(s->tls_clients[i]);
    }
    free(s->tokens);
    token_store_free(s->store); /* after the caches, which borrow it */
    free(s->tls_clients);
    http_free(s->http);
    if (s->dns)
        evdns_base_free(s->dns, 0);
    SSL_CTX_free(s->tls_server);
    auth_worker_free(s->auth); /* its threads read the device table */
    device_table_free(s->devices);
    config_free(s->cfg);
    free(s);
}

struct token_cache *server_token_cache(struct server *s, const struct cfg_account *acct)
{
    size_t i = (size_t)(acct - s->cfg->accounts);
    return i < s->cfg->naccounts ? s->tokens[i] : NULL;
}

SSL_CTX *server_tls_client(struct server *s, const struct cfg_account *acct)
{
    size_t i = (size_t)(acct - s->cfg->accounts);
    return i < s->cfg->naccounts ? s->tls_clients[i] : NULL;
}

void server_session_closed(struct server *s)
{
    if (s->sessions_open)
        s->sessions_open--;
    if (s->stopping && s->sessions_open == 0)
        event_base_loopexit(s->base, NULL);
}
