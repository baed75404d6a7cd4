/* The server's insides shared by server.c (state, sessions), server_listen.c (listening
 * sockets) and server_reload.c (SIGHUP). Private to them and to their unit tests. */
#ifndef SOP_SERVER_INT_H
#define SOP_SERVER_INT_H

#include <stddef.h>

#include "proxy/server/server.h"

struct evconnlistener;
struct pp_pending;

struct server_listener {
    struct server *srv;
    struct evconnlistener *lev;
    int tls;
    char host[64]; /* the configured endpoint, what a reload compares */
    char port[8];
    char name[96]; /* "127.0.0.1:2525" */
    /* connections from a trusted load balancer whose PROXY protocol header has not all arrived
     * (server_listen.c); closed when the listener is freed */
    struct pp_pending *pending;
    unsigned npending;
};

/* How long a load balancer has to send the whole PROXY protocol header. */
#define SERVER_PROXY_HEADER_TIMEOUT_S 5

/* A listen or listen_tls entry as a reload compares them. */
struct listen_key {
    const char *host, *port;
    int tls;
};

/* Bind every address ep resolves to, appending the listeners to *list / *n (cfg names the file
 * in errors). 0 ok; -1 with err naming the address (listeners bound so far stay on *list). */
int server_listen_endpoint(struct server *s, const struct config *cfg,
                           const struct cfg_endpoint *ep, int tls, struct server_listener ***list,
                           size_t *n, char *err, size_t errlen);
void server_listener_free(struct server_listener *l);
/* What a reload does to the listeners: old_kept[i] = 1 when the new config still has old[i]
 * (its socket stays), new_added[j] = 1 when nw[j] is not among old (to be bound). Pure. */
void server_listen_diff(const struct listen_key *old, size_t nold, const struct listen_key *nw,
                        size_t nnew, int *old_kept, int *new_added);

struct sockaddr;
struct auth_throttle;

/* How many tracked sources of failed logins at most (oldest forgotten first). */
#define SERVER_AUTH_TRACKED_MAX 4096

/* server_auth.c: the open sessions whose peer is sa's address (per-IP limit). */
unsigned server_sessions_from(const struct server *s, const struct sockaddr *sa);
/* The throttle with the current generation's limits applied (NULL: none kept). */
struct auth_throttle *server_auth_throttle(struct server *s);
/* Shutdown: forget the failure replies still waiting out their delay. */
void server_auth_delays_free(struct server *s);

#endif
