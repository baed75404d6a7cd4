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
/* A general request (Microsoft Graph): any method, headers of our choosing, a body from memory,
 * and the response's status, body and the headers a client acts on. */
struct http_request {
    const char *method;  /* "GET", "POST", "PUT", "DELETE"; NULL: GET */
    const char *url;     /* absolute; https:// verified, http:// only to loopback */
    const char *ca_file; /* NULL: the system store */
    /* "Authorization: Bearer <bearer>" when not NULL: copied, wiped after use, never logged */
    const char *bearer;
    const char *content_type;  /* NULL: none */
    const char *content_range; /* "bytes 0-327679/1048576"; NULL: none */
    const void *body;          /* copied (at most HTTP_REQUEST_BODY_MAX bytes); NULL: none */
    size_t body_len;
    long timeout_ms; /* the whole request; <= 0: 30 s */
};
#define HTTP_REQUEST_BODY_MAX (5u * 1024u * 1024u)

struct http_response {
    long status;      /* 0: no HTTP answer (err says why) */
    const char *body; /* NUL-terminated, at most 1 MiB; "" when none */
    size_t len;
    const char *err;          /* NULL when an answer came */
    long long retry_after_ms; /* Retry-After (seconds or an HTTP-date) in ms; -1: none */
    const char *location;     /* the Location header, "" when none (bounded: 2 KiB) */
    int timed_out;            /* no answer within timeout_ms */
};
/* resp and everything in it is valid only during the call. */
typedef void (*http_response_cb)(void *arg, const struct http_response *resp);

/* Start rq (everything in it is copied). NULL if it could not be started (bad URL, plain http
 * to a non-loopback host, body too large, out of memory): cb is not called. */
struct http_req *http_request(struct http *h, const struct http_request *rq, http_response_cb cb,
                              void *arg);
/* Retry-After's value (delta-seconds or an HTTP-date, RFC 9110 10.2.3) in ms from now_s (wall
 * clock, seconds since the epoch); -1 when it is neither. Bounded to one day. */
long long http_retry_after_ms(const char *value, long long now_s);

/* Stop a request; its callback is never called. */
void http_cancel(struct http_req *r);
/* Append "&key=value" (first pair without '&') to a form, URL-encoding value. *form is malloc'd
 * and grows; old copies are wiped. 0 ok, -1 out of memory. */
int http_form_add(char **form, const char *key, const char *value);
/* 1 if url is http:// or https:// with a loopback host, else 0 (http:// is allowed only then). */
int http_url_is_loopback(const char *url);

#endif
