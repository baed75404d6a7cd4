/* The listening sockets: bound at start-up, compared and adjusted by a reload. */
#include "proxy/server/server_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "common/log.h"
#include "proxy/runtime/auth_throttle.h"
#include "proxy/runtime/metrics.h"
#include "proxy/runtime/server_gen.h"
#include "proxy/server/server_session.h"

/* Refuse a connection before any session exists: one line and close. A TLS listener's peer
 * expects a handshake, not text: it is just closed. */
static void refuse(struct server_listener *l, evutil_socket_t fd, const char *ip,
                   enum metrics_refusal why, const char *reason, const char *reply)
{
    log_warn("event=refused ip=%s listener=%s reason=\"%s\"", ip, l->name, reason);
    metrics_connection_refused(l->srv->metrics, why);
    if (!l->tls)
        (void)send(fd, reply, strlen(reply), MSG_NOSIGNAL | MSG_DONTWAIT);
    evutil_closesocket(fd);
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
    const struct config *cfg = srv->gen->cfg; /* the current generation: a reload applies */
    if (srv->sessions_open >= cfg->max_connections) {
        /* the session says 421 itself (over TLS too); counted here, where all refusals are */
        metrics_connection_refused(srv->metrics, METRICS_REFUSED_MAX_CONNECTIONS);
    } else {
        char ip[INET6_ADDRSTRLEN] = "?";
        struct auth_throttle_key k;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)sa)->sin_addr, ip, sizeof(ip));
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)sa)->sin6_addr, ip, sizeof(ip));
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
    server_session_start(srv, fd, sa, (socklen_t)salen, l->tls, l->name);
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
        log_info("event=listening address=%s tls=%s", l->name, tls ? "implicit" : "starttls");
    }
    freeaddrinfo(res);
    return ret;
}

void server_listener_free(struct server_listener *l)
{
    if (!l)
        return;
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
