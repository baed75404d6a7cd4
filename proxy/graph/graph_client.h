/* Microsoft Graph as an upstream (docs/graph.md): one message per graph_send, over HTTPS with
 * libcurl on the loop (oauth/http.h), with the account's token.
 *
 * A message whose base64 fits one request goes in one POST {graph_url}/v1.0/users/{mailbox}/
 * sendMail (Content-Type: text/plain, 202 Accepted is success). A larger one is created as a
 * draft (POST .../messages with the MIME without its large attachments), each attachment is
 * uploaded with createUploadSession and PUTs of chunks that are multiples of 320 KiB (no
 * Authorization header: the upload URL carries its own), then POST .../messages/{id}/send. A
 * draft whose sending fails is deleted (best effort).
 *
 * Per account (mailbox) a pool: at most max_upstream_connections (1..4) requests in flight
 * (Graph's per-mailbox concurrency); a 429 or 503 holds every new request of the pool until its
 * Retry-After has passed; rate_limit, when set, paces messages per minute as for SMTP. A 401
 * invalidates the token and the request is tried once more with a fresh one. Every request has
 * a timeout ([upstream] timeout).
 *
 * Callbacks run from the event loop, never from inside a call. */
#ifndef SOP_GRAPH_CLIENT_H
#define SOP_GRAPH_CLIENT_H

#include <stdint.h>

struct event_base;
struct metrics;
struct server_gen;
struct cfg_account;
struct graph_mime;
struct graph_pools;
struct graph_pool;
struct graph_send;

enum graph_status {
    GRAPH_OK = 0,   /* Graph accepted the message (202) */
    GRAPH_TEMP = 1, /* try again later: 429, 503, 5xx, timeout, no connection, no token */
    GRAPH_PERM = 2, /* refused for good: 400, 403, 404, 413 ... */
};

struct graph_outcome {
    enum graph_status status;
    /* 1 when the failure is the mailbox's or the service's, not this message's (429, 503, a
     * token or connection failure): the queue runner stops the account's run and retries later */
    int conn_failure;
    long http_status; /* the deciding response's status; 0: no response (err in reply) */
    char code[64];    /* Graph's error code ("ErrorAccessDenied"); "" when none */
    /* what the device hears, one line, log-safe: Graph's verdict as an SMTP reply
     * ("550 5.7.1 Graph refused: ErrorAccessDenied ...") or "250 2.0.0 Accepted by Microsoft
     * Graph" */
    char reply[512];
    /* the explanation for the log and `test` (what to do about it), "" when none */
    char explain[512];
    int64_t retry_after_ms; /* from Retry-After on 429/503; 0: none */
    unsigned requests;      /* HTTP requests this message took, retries included */
};
typedef void (*graph_send_cb)(void *arg, const struct graph_outcome *o);

/* Optional: each request (method, URL path without query, 0 before the answer) and each answer
 * (its status and Graph's error code): `test` prints them. Never the token. */
typedef void (*graph_trace_cb)(void *arg, const char *method, const char *path, long status,
                               const char *code);

/* Every account's pool; base and m (counters, may be NULL) are borrowed and outlive it. */
struct graph_pools *graph_pools_new(struct event_base *base, struct metrics *m);
/* Cancels every request in flight (their callbacks do not run). Accepts NULL. */
void graph_pools_free(struct graph_pools *ps);
/* The pool of account name (created on first use). NULL only when out of memory. */
struct graph_pool *graph_pools_get(struct graph_pools *ps, const char *account);

/* Send one message. gen/acct: the configuration (graph_url, mailbox, token cache via
 * server_gen_account_tokens, max_upstream_connections, rate_limit, timeouts), taken at each
 * call; gen is referenced until cb ran or the send was cancelled. msg: the prepared message
 * (graph_mime.h), borrowed until then. log_id: session= or queue id in log lines. NULL only
 * when out of memory (cb never runs). */
struct graph_send *graph_send_start(struct graph_pool *p, struct server_gen *gen,
                                    const struct cfg_account *acct, struct graph_mime *msg,
                                    const char *log_id, graph_send_cb cb, void *arg);
/* The same without a generation, for `test` (its own process): tokens from its own cache
 * (borrowed, outlives the send), timeout_s per request. */
struct token_cache;
struct graph_send *graph_send_start_tokens(struct graph_pool *p, struct token_cache *tokens,
                                           unsigned timeout_s, const struct cfg_account *acct,
                                           struct graph_mime *msg, const char *log_id,
                                           graph_send_cb cb, void *arg);
/* A trace hook (test). */
void graph_send_set_trace(struct graph_send *s, graph_trace_cb trace, void *arg);
/* Stop: requests in flight are cancelled, cb does not run. A draft already created is left (it
 * is never sent). Accepts NULL. */
void graph_send_cancel(struct graph_send *s);

/* Milliseconds until the pool would start a new message (Retry-After hold, rate_limit), 0 now:
 * direct-then-spool spools at once rather than keep a device waiting. */
int64_t graph_pool_wait_ms(const struct graph_pool *p);

struct graph_pool_stats {
    unsigned in_flight;      /* requests now */
    unsigned waiting;        /* messages waiting for a slot */
    unsigned long requests;  /* since start */
    unsigned long throttled; /* 429 and 503 answers */
    unsigned long messages;  /* accepted (202) */
};
void graph_pool_stats(const struct graph_pool *p, struct graph_pool_stats *st);

#endif
