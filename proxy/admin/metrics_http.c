/* The metrics_listen HTTP server. evhttp does the HTTP; this file only routes two paths and
 * bounds what a client may send. */
#include "proxy/admin/metrics_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "common/log.h"
#include "oauth/token_cache.h"
#include "proxy/runtime/metrics.h"
#include "proxy/delivery/queue.h"
#include "proxy/server/server.h"
#include "proxy/runtime/server_gen.h"

/* A scrape is one short GET: anything bigger or slower is not a Prometheus server. */
#define METRICS_HTTP_MAX_HEADERS 8192
#define METRICS_HTTP_MAX_BODY 1024
#define METRICS_HTTP_TIMEOUT_S 10

struct metrics_http {
    struct evhttp *http;
    struct evhttp_bound_socket *sock;
    struct metrics_http_ops ops;
    void *arg;
};

static void reply(struct evhttp_request *req, int code, const char *reason, const char *ctype,
                  struct evbuffer *body)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_send_reply(req, code, reason, body);
}

static void on_metrics(struct evhttp_request *req, void *arg)
{
    struct metrics_http *h = arg;
    struct evbuffer *body = evbuffer_new();
    if (!body) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    if (h->ops.render(h->arg, body) != 0) {
        evbuffer_free(body);
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    reply(req, HTTP_OK, "OK", "text/plain; version=0.0.4; charset=utf-8", body);
    evbuffer_free(body);
}

static void on_healthz(struct evhttp_request *req, void *arg)
{
    struct metrics_http *h = arg;
    const char *why = h->ops.health(h->arg);
    struct evbuffer *body = evbuffer_new();
    if (!body) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    evbuffer_add_printf(body, "%s\n", why ? why : "ok");
    reply(req, why ? 503 : HTTP_OK, why ? "Service Unavailable" : "OK", "text/plain; charset=utf-8",
          body);
    evbuffer_free(body);
}

static void on_other(struct evhttp_request *req, void *arg)
{
    (void)arg;
    evhttp_send_error(req, HTTP_NOTFOUND, NULL);
}

struct metrics_http *metrics_http_new(struct event_base *base, const char *host, const char *port,
                                      const struct metrics_http_ops *ops, void *arg, char *err,
                                      size_t errlen)
{
    char *end;
    unsigned long p = strtoul(port, &end, 10);
    if (*end || p > 65535 || port[0] < '0' || port[0] > '9') {
        snprintf(err, errlen, "metrics_listen: bad port '%s'", port);
        return NULL;
    }
    struct metrics_http *h = calloc(1, sizeof(*h));
    if (!h || !(h->http = evhttp_new(base))) {
        free(h);
        snprintf(err, errlen, "metrics_listen: out of memory");
        return NULL;
    }
    h->ops = *ops;
    h->arg = arg;
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_max_headers_size(h->http, METRICS_HTTP_MAX_HEADERS);
    evhttp_set_max_body_size(h->http, METRICS_HTTP_MAX_BODY);
    evhttp_set_timeout(h->http, METRICS_HTTP_TIMEOUT_S);
    if (evhttp_set_cb(h->http, "/metrics", on_metrics, h) != 0 ||
        evhttp_set_cb(h->http, "/healthz", on_healthz, h) != 0) {
        snprintf(err, errlen, "metrics_listen: out of memory");
        metrics_http_free(h);
        return NULL;
    }
    evhttp_set_gencb(h->http, on_other, h);
    const char *addr = strcmp(host, "*") == 0 ? "0.0.0.0" : host;
    h->sock = evhttp_bind_socket_with_handle(h->http, addr, (ev_uint16_t)p);
    if (!h->sock) {
        snprintf(err, errlen, "metrics_listen: cannot listen on %s%s%s:%s",
                 strchr(addr, ':') ? "[" : "", addr, strchr(addr, ':') ? "]" : "", port);
        metrics_http_free(h);
        return NULL;
    }
    return h;
}

void metrics_http_free(struct metrics_http *h)
{
    if (!h)
        return;
    if (h->http)
        evhttp_free(h->http); /* closes the bound socket and open connections */
    free(h);
}

int metrics_http_port(const struct metrics_http *h)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (!h || !h->sock ||
        getsockname(evhttp_bound_socket_get_fd(h->sock), (struct sockaddr *)&ss, &len) != 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

/* ---- the daemon's glue ---- */

static int server_token_stats(void *arg, size_t account, struct token_cache_stats *st)
{
    struct server *srv = arg;
    const struct token_cache *c = server_gen_token_cache(srv->gen, account);
    if (!c)
        return -1;
    token_cache_stats(c, st);
    return 0;
}

static int server_render(void *arg, struct evbuffer *out)
{
    struct server *srv = arg;
    struct queue_stats qs;
    int64_t now = (int64_t)time(NULL);
    queue_stats(srv->dctx.queue, &qs);
    if (metrics_render(srv->metrics, out, server_token_stats, srv, now) != 0)
        return -1;
    if (metrics_render_queue(out, srv->dctx.queue ? &qs : NULL, now) != 0)
        return -1;
    return metrics_render_budget(srv->metrics, out, srv->dctx.budget, now);
}

static const char *server_health(void *arg)
{
    const struct server *srv = arg;
    if (srv->stopping)
        return "stopping";
    if (srv->nlisteners == 0)
        return "no listeners";
    return NULL;
}

struct metrics_http *metrics_http_start(struct server *srv, char *err, size_t errlen)
{
    static const struct metrics_http_ops ops = {.render = server_render, .health = server_health};
    const struct cfg_endpoint *ep = &srv->gen->cfg->metrics_listen;
    err[0] = '\0';
    if (!ep->host)
        return NULL;
    struct metrics_http *h =
        metrics_http_new(srv->base, ep->host, ep->port, &ops, srv, err, errlen);
    if (h)
        log_info("event=metrics_listening address=%s%s%s:%d", strchr(ep->host, ':') ? "[" : "",
                 ep->host, strchr(ep->host, ':') ? "]" : "", metrics_http_port(h));
    return h;
}
