/* Connecting an upstream session: every address of the upstream's name, both families, in the
 * manner of RFC 8305 ("Happy Eyeballs" v2) without its resolution delay: the name is resolved
 * for A and AAAA at once (evdns), the addresses are interleaved by family starting with IPv6,
 * and one attempt starts every CLIENT_CONNECT_STAGGER_MS (at once when the previous attempt
 * failed) until one connects; the others are closed. Each address that failed is logged
 * (event=upstream_connect_failed address=...), so a host whose first address is an unreachable
 * IPv6 still gets mail and the log says why it took longer. Nothing blocks: DNS, connect() and
 * the waits all run on the loop. The whole is bounded by the session's connect_timeout
 * (client_session.c's timer), which stops whatever is still running here. */
#include "proxy/upstream/client_session_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "common/log.h"
#include "common/sockaddr_text.h"

#define CLIENT_CONNECT_MAX_ADDRS 16   /* addresses tried of one name */
#define CLIENT_CONNECT_STAGGER_MS 250 /* RFC 8305 5: the recommended connection attempt delay */
#define CLIENT_CONNECT_ADDR_STRLEN 64 /* "[v6]" or v4, for log lines */

struct client_connect_attempt {
    evutil_socket_t fd;
    struct event *ev;
    char addr[CLIENT_CONNECT_ADDR_STRLEN];
};

/* The evdns request's argument. evdns may call back after a cancel (EVUTIL_EAI_CANCEL) from a
 * later loop turn, so it is not the connector itself: a cancelled waiter has conn NULL and is
 * freed by that last callback. */
struct client_connect_dns {
    struct client_connector *conn;
    struct evdns_getaddrinfo_request *req;
};

struct client_connector {
    struct client_session *c;
    struct client_connect_dns *dns; /* the pending resolution, if any */
    int dns_done, dns_err;
    struct sockaddr_storage addrs[CLIENT_CONNECT_MAX_ADDRS];
    socklen_t lens[CLIENT_CONNECT_MAX_ADDRS];
    size_t naddrs, next;
    struct client_connect_attempt att[CLIENT_CONNECT_MAX_ADDRS];
    size_t natt;           /* attempts in flight (a prefix of att, compacted) */
    struct event *kick;    /* run the next step from the loop */
    struct event *stagger; /* start the next attempt if none has connected by then */
    unsigned failed;       /* addresses that failed */
    char last_err[128];    /* the last one's reason, for the failure message */
};

static void client_connect_addr_str(const struct sockaddr *sa, char *buf, size_t len)
{
    char ip[SOCKADDR_TEXT_MAX];
    if (!sockaddr_text(sa, 0, ip, sizeof(ip)))
        snprintf(ip, sizeof(ip), "?");
    if (sa->sa_family == AF_INET6)
        snprintf(buf, len, "[%s]", ip);
    else
        snprintf(buf, len, "%s", ip);
}

static void client_connect_close_attempt(struct client_connect_attempt *a)
{
    if (a->ev)
        event_free(a->ev);
    if (a->fd >= 0)
        evutil_closesocket(a->fd);
    a->ev = NULL;
    a->fd = -1;
}

/* Drop attempt i from the set (its socket closed unless taken). */
static void client_connect_remove(struct client_connector *k, size_t i)
{
    client_connect_close_attempt(&k->att[i]);
    k->att[i] = k->att[k->natt - 1];
    k->att[k->natt - 1].fd = -1;
    k->att[k->natt - 1].ev = NULL;
    k->natt--;
}

void client_connect_stop(struct client_session *c, const char *why)
{
    struct client_connector *k = c->connector;
    if (!k)
        return;
    c->connector = NULL;
    if (k->dns) {
        k->dns->conn = NULL; /* the callback frees it */
        if (k->dns->req)
            evdns_getaddrinfo_cancel(k->dns->req);
        k->dns = NULL;
    }
    while (k->natt > 0) {
        if (why)
            log_warn("event=upstream_connect_failed session=%s host=%s port=%u address=%s "
                     "error=\"%s\"",
                     c->log_id, c->host, (unsigned)c->port, k->att[0].addr, why);
        client_connect_remove(k, 0);
    }
    if (k->kick)
        event_free(k->kick);
    if (k->stagger)
        event_free(k->stagger);
    free(k);
}

/* Every address failed (or there was none): the session fails with the last reason. */
static void client_connect_give_up(struct client_connector *k)
{
    struct client_session *c = k->c;
    char why[160];
    snprintf(why, sizeof(why), "%s", k->last_err);
    unsigned n = k->failed;
    client_connect_stop(c, NULL);
    if (n > 1)
        client_session_fail(c, "cannot connect to %s:%u: all %u addresses failed (last: %s)",
                            c->host, (unsigned)c->port, n, why);
    else
        client_session_fail(c, "cannot connect to %s:%u: %s", c->host, (unsigned)c->port, why);
}

static void client_connect_failed(struct client_connector *k, const char *addr, int err_no)
{
    struct client_session *c = k->c;
    snprintf(k->last_err, sizeof(k->last_err), "%s: %s", addr,
             err_no ? strerror(err_no) : "connection failed");
    k->failed++;
    log_warn("event=upstream_connect_failed session=%s host=%s port=%u address=%s error=\"%s\"",
             c->log_id, c->host, (unsigned)c->port, addr,
             err_no ? strerror(err_no) : "connection failed");
}

/* Attempt i connected: it becomes the session's socket, every other attempt is dropped. */
static void client_connect_won(struct client_connector *k, size_t i)
{
    struct client_session *c = k->c;
    evutil_socket_t fd = k->att[i].fd;
    char addr[CLIENT_CONNECT_ADDR_STRLEN];
    snprintf(addr, sizeof(addr), "%s", k->att[i].addr);
    k->att[i].fd = -1; /* taken */
    client_connect_stop(c, NULL);
    struct bufferevent *bev = bufferevent_socket_new(c->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        evutil_closesocket(fd);
        client_session_fail(c, "cannot create a socket bufferevent");
        return;
    }
    log_debug("event=upstream_tcp_connected session=%s host=%s port=%u address=%s", c->log_id,
              c->host, (unsigned)c->port, addr);
    client_session_attach(c, bev);
    if (client_open_connected(c) == 0)
        client_session_read_buffered(c);
}

static void client_connect_start_next(struct client_connector *k);

static void client_connect_writable(evutil_socket_t fd, short what, void *arg)
{
    struct client_connector *k = arg;
    struct client_session *c = k->c;
    (void)what;
    size_t i;
    for (i = 0; i < k->natt && k->att[i].fd != fd; i++)
        ;
    if (i == k->natt)
        return;
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    client_session_frame_enter(c);
    if (err == 0) {
        client_connect_won(k, i);
    } else {
        client_connect_failed(k, k->att[i].addr, err);
        client_connect_remove(k, i);
        client_connect_start_next(k); /* at once: no need to wait for the stagger */
    }
    client_session_frame_leave(c);
}

/* Start attempts until one is in flight (an address whose connect() fails at once is logged and
 * the next one tried), then arm the stagger for the one after. With nothing left in flight and
 * no address to try, give up. */
static void client_connect_start_next(struct client_connector *k)
{
    while (k->next < k->naddrs) {
        size_t j = k->next++;
        const struct sockaddr *sa = (const struct sockaddr *)&k->addrs[j];
        struct client_connect_attempt *a = &k->att[k->natt];
        client_connect_addr_str(sa, a->addr, sizeof(a->addr));
        a->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (a->fd < 0) {
            client_connect_failed(k, a->addr, errno);
            continue;
        }
        /* The body goes out in 64 KiB batches already; Nagle would only hold the final "." (and
         * each command) back until the previous segment's delayed ACK: 40 ms a message. */
        int one = 1;
        (void)setsockopt(a->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        log_debug("event=upstream_connect_attempt session=%s host=%s address=%s", k->c->log_id,
                  k->c->host, a->addr);
        if (connect(a->fd, sa, k->lens[j]) != 0 && errno != EINPROGRESS) {
            int e = errno;
            client_connect_failed(k, a->addr, e);
            evutil_closesocket(a->fd);
            a->fd = -1;
            continue;
        }
        /* Even an immediate success is reported through the event: one path. */
        a->ev = event_new(k->c->base, a->fd, EV_WRITE, client_connect_writable, k);
        if (!a->ev || event_add(a->ev, NULL) != 0) {
            client_connect_failed(k, a->addr, ENOMEM);
            client_connect_close_attempt(a);
            continue;
        }
        k->natt++;
        if (k->next < k->naddrs) {
            struct timeval tv = {0, CLIENT_CONNECT_STAGGER_MS * 1000};
            evtimer_add(k->stagger, &tv);
        }
        return;
    }
    if (k->natt == 0)
        client_connect_give_up(k);
}

static void client_connect_stagger_cb(evutil_socket_t fd, short what, void *arg)
{
    struct client_connector *k = arg;
    struct client_session *c = k->c;
    (void)fd;
    (void)what;
    client_session_frame_enter(c);
    client_connect_start_next(k);
    client_session_frame_leave(c);
}

/* The addresses in the order they are tried: IPv6 and IPv4 alternating, IPv6 first (RFC 8305
 * 4, with RFC 6724's default preference), each family in the resolver's order. */
static void client_connect_order(struct client_connector *k, const struct evutil_addrinfo *res)
{
    const struct evutil_addrinfo *v6 = res, *v4 = res;
    for (int want6 = 1; k->naddrs < CLIENT_CONNECT_MAX_ADDRS; want6 = !want6) {
        const struct evutil_addrinfo **p = want6 ? &v6 : &v4;
        int fam = want6 ? AF_INET6 : AF_INET;
        while (*p && ((*p)->ai_family != fam || (*p)->ai_addrlen > sizeof(k->addrs[0])))
            *p = (*p)->ai_next;
        if (*p) {
            memcpy(&k->addrs[k->naddrs], (*p)->ai_addr, (*p)->ai_addrlen);
            k->lens[k->naddrs++] = (socklen_t)(*p)->ai_addrlen;
            *p = (*p)->ai_next;
        } else if (!v6 && !v4) {
            break;
        }
    }
}

static void client_connect_kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct client_connector *k = arg;
    struct client_session *c = k->c;
    (void)fd;
    (void)what;
    client_session_frame_enter(c);
    if (k->naddrs == 0) {
        int e = k->dns_err;
        client_connect_stop(c, NULL);
        client_session_fail(c, "cannot resolve %s: %s", c->host,
                            e ? evutil_gai_strerror(e) : "no address");
    } else {
        if (log_get_level() >= LOGL_DEBUG) {
            char list[CLIENT_CONNECT_MAX_ADDRS * (CLIENT_CONNECT_ADDR_STRLEN + 1)] = "", a[64];
            size_t o = 0;
            for (size_t i = 0; i < k->naddrs && o < sizeof(list); i++) {
                client_connect_addr_str((const struct sockaddr *)&k->addrs[i], a, sizeof(a));
                int w = snprintf(list + o, sizeof(list) - o, "%s%s", i ? "," : "", a);
                if (w > 0)
                    o += (size_t)w;
            }
            log_debug("event=upstream_resolved session=%s host=%s addresses=%s", c->log_id, c->host,
                      list);
        }
        client_connect_start_next(k);
    }
    client_session_frame_leave(c);
}

static void client_connect_resolved(int err, struct evutil_addrinfo *res, void *arg)
{
    struct client_connect_dns *d = arg;
    struct client_connector *k = d->conn;
    if (k) {
        k->dns = NULL;
        k->dns_done = 1;
        k->dns_err = err;
        if (err == 0 && res)
            client_connect_order(k, res);
        /* From the loop, in a frame of the session's own (this may run inside
         * evdns_getaddrinfo(), i.e. inside client_session_open). */
        event_active(k->kick, EV_TIMEOUT, 1);
    }
    if (res)
        evutil_freeaddrinfo(res);
    free(d);
}

int client_connect_start(struct client_session *c)
{
    struct client_connector *k = calloc(1, sizeof(*k));
    if (!k)
        return client_session_fail(c, "out of memory connecting");
    k->c = c;
    for (size_t i = 0; i < CLIENT_CONNECT_MAX_ADDRS; i++)
        k->att[i].fd = -1;
    k->kick = event_new(c->base, -1, 0, client_connect_kick_cb, k);
    k->stagger = evtimer_new(c->base, client_connect_stagger_cb, k);
    c->connector = k;
    if (!k->kick || !k->stagger) {
        client_connect_stop(c, NULL);
        return client_session_fail(c, "out of memory connecting");
    }
    /* An IP literal needs no resolver. */
    struct sockaddr_storage ss;
    int sslen = (int)sizeof(ss);
    char lit[INET6_ADDRSTRLEN + 8];
    if (strchr(c->host, ':'))
        snprintf(lit, sizeof(lit), "[%s]:%u", c->host, (unsigned)c->port);
    else
        snprintf(lit, sizeof(lit), "%s:%u", c->host, (unsigned)c->port);
    if (evutil_parse_sockaddr_port(lit, (struct sockaddr *)&ss, &sslen) == 0) {
        memcpy(&k->addrs[0], &ss, (size_t)sslen);
        k->lens[0] = (socklen_t)sslen;
        k->naddrs = 1;
        k->dns_done = 1;
        event_active(k->kick, EV_TIMEOUT, 1);
        return 0;
    }
    if (!c->dns) {
        client_connect_stop(c, NULL);
        return client_session_fail(c, "%s is not an IP address and no resolver was given", c->host);
    }
    struct client_connect_dns *d = calloc(1, sizeof(*d));
    if (!d) {
        client_connect_stop(c, NULL);
        return client_session_fail(c, "out of memory connecting");
    }
    d->conn = k;
    k->dns = d;
    char port[8];
    snprintf(port, sizeof(port), "%u", (unsigned)c->port);
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC; /* both families, every address */
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    struct evdns_getaddrinfo_request *req =
        evdns_getaddrinfo(c->dns, c->host, port, &hints, client_connect_resolved, d);
    if (k->dns == d) {
        if (req) {
            d->req = req;
        } else {
            /* neither answered nor started: say so, as a resolver failure */
            k->dns = NULL;
            free(d);
            k->dns_done = 1;
            k->dns_err = EVUTIL_EAI_FAIL;
            event_active(k->kick, EV_TIMEOUT, 1);
        }
    }
    return 0;
}
