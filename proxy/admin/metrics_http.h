/* metrics_listen: a small HTTP server (libevent's evhttp) on the daemon's loop. GET or HEAD
 * /metrics: the Prometheus text exposition; /healthz: 200 "ok" while serving, else 503 with the
 * reason; any other path 404, any other method 405. Requests are bounded in size and time. */
#ifndef SOP_METRICS_HTTP_H
#define SOP_METRICS_HTTP_H

#include <stddef.h>

struct event_base;
struct evbuffer;
struct server;
struct metrics_http;

struct metrics_http_ops {
    /* Append the exposition to out: 0 ok, -1 failed (the scrape gets a 500). */
    int (*render)(void *arg, struct evbuffer *out);
    /* NULL while the process serves, else why not ("stopping", "no listeners"). */
    const char *(*health)(void *arg);
};

/* Listen on host:port ("*" = every IPv4 address; port "0" = any free one). NULL with err. */
struct metrics_http *metrics_http_new(struct event_base *base, const char *host, const char *port,
                                      const struct metrics_http_ops *ops, void *arg, char *err,
                                      size_t errlen);
/* Stops listening and drops open connections. Accepts NULL. */
void metrics_http_free(struct metrics_http *h);
/* The port actually bound (useful with port "0"), 0 if unknown. */
int metrics_http_port(const struct metrics_http *h);

/* The daemon's: serves srv's registry and token caches on cfg->metrics_listen. NULL with err
 * when it cannot bind; NULL with err "" when metrics_listen is off. */
struct metrics_http *metrics_http_start(struct server *srv, char *err, size_t errlen);

#endif
