/* HTTP for the token endpoints: libcurl's multi interface on the libevent loop (the pattern of
 * curl's docs/examples/hiperfifo.c). Nothing blocks the loop. */
#ifndef SOP_HTTP_H
#define SOP_HTTP_H

#include <stddef.h>

struct event_base;
struct http;
struct http_req;

/* status: the HTTP status, 0 if no HTTP answer came (then err says why: curl's message).
 * body: the response body (NUL-terminated, at most 1 MiB), valid only during the call. */
typedef void (*http_done_cb)(void *arg, long status, const char *body, size_t len, const char *err);

struct http *http_new(struct event_base *base);
/* Send every later request of h through the HTTP forward proxy proxy ("http://HOST:PORT"):
 * https:// endpoints through a CONNECT tunnel, loopback ones included (curl's no_proxy is
 * overridden). NULL or "": none, as after http_new: the environment's https_proxy and no_proxy
 * apply, and a loopback endpoint never goes through a proxy. 0 ok; -1 out of memory (h keeps
 * the proxy it had). */
int http_set_proxy(struct http *h, const char *proxy);
/* The loop h runs on, for callers that also need timers on it. */
struct event_base *http_base(const struct http *h);
/* Cancels every request in flight without calling their callbacks. Accepts NULL. */
void http_free(struct http *h);
/* POST application/x-www-form-urlencoded. https:// is verified (ca_file NULL: system store);
 * http:// is refused unless the host is loopback (127.0.0.0/8, ::1, localhost): tests only.
 * form is copied (and wiped after use: it may hold a client secret). timeout_ms bounds the
 * whole request. Returns NULL if the request could not be started (cb is not called). */
struct http_req *http_post_form(struct http *h, const char *url, const char *form,
                                const char *ca_file, long timeout_ms, http_done_cb cb, void *arg);
/* Stop a request; its callback is never called. */
void http_cancel(struct http_req *r);
/* Append "&key=value" (first pair without '&') to a form, URL-encoding value. *form is malloc'd
 * and grows; old copies are wiped. 0 ok, -1 out of memory. */
int http_form_add(char **form, const char *key, const char *value);
/* 1 if url is http:// or https:// with a loopback host, else 0 (http:// is allowed only then). */
int http_url_is_loopback(const char *url);

#endif
