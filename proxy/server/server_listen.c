/* The listening sockets: bound at start-up, compared and adjusted by a reload. */
#include "proxy/server/server_int.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "common/log.h"
#include "common/sockaddr_text.h"
#include "proxy/runtime/auth_throttle.h"
#include "proxy/runtime/metrics.h"
#include "proxy/runtime/server_gen.h"
#include "proxy/server/proxy_header.h"
#include "proxy/server/server_session.h"

/* Refuse a connection before any session exists: one line and close. A TLS listener's peer
 * expects a handshake, not text: it is just closed; so is a connection refused for its PROXY
 * protocol header (reply NULL, not counted). */
static void refuse(struct server_listener *l, evutil_socket_t fd, const char *ip,
                   enum metrics_refusal why, const char *reason, const char *reply)
{
    log_warn("event=refused ip=%s listener=%s reason=\"%s\"", ip, l->name, reason);
    if (reply)
        metrics_connection_refused(l->srv->metrics, why);
    if (!l->tls && reply)
        (void)send(fd, reply, strlen(reply), MSG_NOSIGNAL | MSG_DONTWAIT);
    evutil_closesocket(fd);
}

static void ip_of(const struct sockaddr *sa, char *ip, size_t len)
{
    if (!sockaddr_text(sa, 0, ip, len))
        snprintf(ip, len, "?");
}

/* The limits on a device's address (sa: the socket's peer, or what a PROXY header named), then
 * the session. proxy_local: a PROXY v2 LOCAL connection (the balancer's health check). */
static void admit(struct server_listener *l, evutil_socket_t fd, const struct sockaddr *sa,
                  socklen_t salen, int proxy_local)
{
    struct server *srv = l->srv;
    if (srv->stopping) {
        evutil_closesocket(fd);
        return;
    }
    const struct config *cfg = srv->gen->cfg; /* the current generation: a reload applies */
    if (srv->sessions_open >= cfg->max_connections) {
        /* the session says 421 itself (over TLS too); counted here, where all refusals are */
        metrics_connection_refused(srv->metrics, METRICS_REFUSED_MAX_CONNECTIONS);
    } else {
        char ip[INET6_ADDRSTRLEN];
        struct auth_throttle_key k;
        ip_of(sa, ip, sizeof(ip));
        if (auth_throttle_key_of(sa, &k) == 0 &&
            auth_throttle_blocked(server_auth_throttle(srv), &k, NULL)) {
            refuse(l, fd, ip, METRICS_REFUSED_AUTH_BLOCKED, "auth_blocked",
                   "421 4.7.0 Too many failed logins from your address, try again later\r\n");
            return;
        }
        if (server_sessions_from(srv, sa) >= cfg->max_connections_per_ip) {
            refuse(l, fd, ip, METRICS_REFUSED_PER_IP, "max_connections_per_ip reached",
                   "421 4.7.0 Too many connections from your address\r\n");
            return;
        }
    }
    server_session_start(srv, fd, sa, salen, l->tls, l->name, proxy_local);
}

/* ---- PROXY protocol (listen = ADDR proxy_protocol) ---- */

/* A connection from a trusted balancer whose header is still arriving. The header is taken
 * off the socket and no further: what follows (EHLO, a TLS ClientHello) stays for the
 * session. Bytes are peeked; while the header is incomplete every byte seen belongs to it
 * (proxy_header_parse would have said 1 otherwise), so those are consumed into buf and the
 * socket does not stay readable. */
struct pp_pending {
    struct server_listener *l;
    struct pp_pending *prev, *next;
    evutil_socket_t fd;
    struct event *read_ev, *timer_ev;
    struct sockaddr_storage peer;
    socklen_t peerlen;
    char ip[INET6_ADDRSTRLEN]; /* the balancer's */
    size_t have;
    unsigned char buf[PROXY_HEADER_MAX];
};

/* The current config's flag for this listener's endpoint (a reload applies to new
 * connections). */
static int listener_proxy_protocol(const struct server_listener *l, const struct config *cfg)
{
    const struct cfg_endpoint *eps = l->tls ? cfg->listen_tls : cfg->listen;
    size_t n = l->tls ? cfg->nlisten_tls : cfg->nlisten;
    for (size_t i = 0; i < n; i++)
        if (strcmp(eps[i].host, l->host) == 0 && strcmp(eps[i].port, l->port) == 0)
            return eps[i].proxy_protocol;
    return 0;
}

static int trusted_proxy(const struct config *cfg, const struct sockaddr *sa)
{
    for (size_t i = 0; i < cfg->ntrusted_proxies; i++)
        if (cidr_match(&cfg->trusted_proxies[i], sa))
            return 1;
    return 0;
}

/* Forget p; close its socket unless keep_fd (it goes on to a session). */
static void pp_free(struct pp_pending *p, int keep_fd)
{
    struct server_listener *l = p->l;
    if (p->prev)
        p->prev->next = p->next;
    else
        l->pending = p->next;
    if (p->next)
        p->next->prev = p->prev;
    l->npending--;
    if (p->read_ev)
        event_free(p->read_ev);
    if (p->timer_ev)
        event_free(p->timer_ev);
    if (!keep_fd)
        evutil_closesocket(p->fd);
    free(p);
}

static void pp_refuse(struct pp_pending *p, const char *why)
{
    char reason[160];
    snprintf(reason, sizeof(reason), "proxy protocol: %s", why);
    log_warn("event=refused ip=%s listener=%s reason=\"%s\"", p->ip, p->l->name, reason);
    pp_free(p, 0);
}

static void pp_on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pp_refuse(arg, "no complete header within 5 seconds");
}

static void pp_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct pp_pending *p = arg;
    (void)what;
    ssize_t n = recv(fd, p->buf + p->have, sizeof(p->buf) - p->have, MSG_PEEK);
    if (n < 0) {
        int e = errno;
        if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR)
            return;
        pp_refuse(p, strerror(e));
        return;
    }
    if (n == 0) {
        pp_refuse(p, "closed before the header was complete");
        return;
    }
    struct proxy_header h;
    const char *err = NULL;
    size_t seen = p->have + (size_t)n;
    int r = proxy_header_parse(p->buf, seen, &h, &err);
    if (r < 0) {
        pp_refuse(p, err);
        return;
    }
    /* consume the header's bytes only: all of what was seen, or up to its end */
    size_t take = (r == 0 ? seen : h.len) - p->have;
    while (take > 0) {
        ssize_t got = recv(fd, p->buf + p->have, take, 0);
        if (got <= 0) {
            pp_refuse(p, "read failed");
            return;
        }
        p->have += (size_t)got;
        take -= (size_t)got;
    }
    if (r == 0) {
        if (p->have >= sizeof(p->buf)) { /* cannot happen: the parser decides by then */
            pp_refuse(p, "header too long");
            return;
        }
        return;
    }
    struct server_listener *l = p->l;
    struct sockaddr_storage sa;
    socklen_t salen;
    if (h.has_addr) {
        sa = h.src;
        salen = h.src.ss_family == AF_INET ? (socklen_t)sizeof(struct sockaddr_in)
                                           : (socklen_t)sizeof(struct sockaddr_in6);
    } else {
        sa = p->peer; /* UNKNOWN / LOCAL: the balancer's own address */
        salen = p->peerlen;
    }
    char ip[INET6_ADDRSTRLEN];
    ip_of((struct sockaddr *)&sa, ip, sizeof(ip));
    log_debug("event=proxy_header listener=%s proxy=%s ip=%s version=%d%s", l->name, p->ip, ip,
              h.version, h.local ? " proxy_local=1" : "");
    pp_free(p, 1);
    admit(l, fd, (struct sockaddr *)&sa, salen, h.local);
}

/* A proxy_protocol listener's new connection: from a trusted balancer, wait for its header. */
static void pp_start(struct server_listener *l, evutil_socket_t fd, const struct sockaddr *sa,
                     socklen_t salen, const struct config *cfg)
{
    char ip[INET6_ADDRSTRLEN];
    ip_of(sa, ip, sizeof(ip));
    if (!trusted_proxy(cfg, sa)) {
        refuse(l, fd, ip, METRICS_REFUSED_PER_IP, "proxy protocol: not in trusted_proxies", NULL);
        return;
    }
    if (l->npending >= cfg->max_connections) {
        refuse(l, fd, ip, METRICS_REFUSED_PER_IP,
               "proxy protocol: too many connections waiting for their header", NULL);
        return;
    }
    struct pp_pending *p = calloc(1, sizeof(*p));
    if (!p) {
        refuse(l, fd, ip, METRICS_REFUSED_PER_IP, "proxy protocol: out of memory", NULL);
        return;
    }
    p->l = l;
    p->fd = fd;
    memcpy(&p->peer, sa, salen < sizeof(p->peer) ? salen : sizeof(p->peer));
    p->peerlen = salen < sizeof(p->peer) ? salen : (socklen_t)sizeof(p->peer);
    snprintf(p->ip, sizeof(p->ip), "%s", ip);
    p->next = l->pending;
    if (p->next)
        p->next->prev = p;
    l->pending = p;
    l->npending++;
    p->read_ev = event_new(l->srv->base, fd, EV_READ | EV_PERSIST, pp_on_read, p);
    p->timer_ev = evtimer_new(l->srv->base, pp_on_timeout, p);
    struct timeval tv = {.tv_sec = SERVER_PROXY_HEADER_TIMEOUT_S};
    if (!p->read_ev || !p->timer_ev || event_add(p->read_ev, NULL) != 0 ||
        event_add(p->timer_ev, &tv) != 0)
        pp_refuse(p, "out of memory");
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct server_listener *l = arg;
    struct server *srv = l->srv;
    (void)lev;
    if (srv->stopping) {
        evutil_closesocket(fd);
        return;
    }
    const struct config *cfg = srv->gen->cfg;
    if (listener_proxy_protocol(l, cfg))
        pp_start(l, fd, sa, (socklen_t)salen, cfg);
    else
        admit(l, fd, sa, (socklen_t)salen, 0);
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

int server_listen_endpoint(struct server *s, const struct config *cfg,
                           const struct cfg_endpoint *ep, int tls, struct server_listener ***list,
                           size_t *n, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    const char *host = strcmp(ep->host, "*") == 0 ? NULL : ep->host;
    int rc = getaddrinfo(host, ep->port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "%s line %d: cannot use listen address %s:%s: %s", cfg->path,
                 ep->line, ep->host, ep->port, gai_strerror(rc));
        return -1;
    }
    int ret = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        struct server_listener *l = calloc(1, sizeof(*l));
        struct server_listener **nl = realloc(*list, (*n + 1) * sizeof(**list));
        if (nl)
            *list = nl;
        if (!l || !nl) {
            free(l);
            snprintf(err, errlen, "out of memory");
            ret = -1;
            break;
        }
        l->srv = s;
        l->tls = tls;
        snprintf(l->host, sizeof(l->host), "%s", ep->host);
        snprintf(l->port, sizeof(l->port), "%s", ep->port);
        snprintf(l->name, sizeof(l->name), "%s%s%s:%s", ai->ai_family == AF_INET6 ? "[" : "",
                 ep->host, ai->ai_family == AF_INET6 ? "]" : "", ep->port);
        l->lev = evconnlistener_new_bind(s->base, on_accept, l,
                                         LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                             LEV_OPT_CLOSE_ON_EXEC,
                                         512, ai->ai_addr, (int)ai->ai_addrlen);
        if (!l->lev) {
            snprintf(err, errlen, "%s line %d: cannot listen on %s: %s", cfg->path, ep->line,
                     l->name, strerror(errno));
            free(l);
            ret = -1;
            break;
        }
        evconnlistener_set_error_cb(l->lev, on_accept_error);
        (*list)[(*n)++] = l;
        log_info("event=listening address=%s tls=%s%s", l->name, tls ? "implicit" : "starttls",
                 ep->proxy_protocol ? " proxy_protocol=1" : "");
    }
    freeaddrinfo(res);
    return ret;
}

void server_listener_free(struct server_listener *l)
{
    if (!l)
        return;
    while (l->pending)
        pp_free(l->pending, 0);
    evconnlistener_free(l->lev);
    free(l);
}

static int key_same(const struct listen_key *a, const struct listen_key *b)
{
    return a->tls == b->tls && strcmp(a->host, b->host) == 0 && strcmp(a->port, b->port) == 0;
}

void server_listen_diff(const struct listen_key *old, size_t nold, const struct listen_key *nw,
                        size_t nnew, int *old_kept, int *new_added)
{
    for (size_t i = 0; i < nold; i++) {
        old_kept[i] = 0;
        for (size_t j = 0; j < nnew && !old_kept[i]; j++)
            old_kept[i] = key_same(&old[i], &nw[j]);
    }
    for (size_t j = 0; j < nnew; j++) {
        new_added[j] = 1;
        for (size_t i = 0; i < nold && new_added[j]; i++)
            new_added[j] = !key_same(&old[i], &nw[j]);
    }
}
