/* One message through Microsoft Graph (proxy/graph/graph_client.h): a small state machine per
 * send. START (refusal, rate_limit, token) -> SENDMAIL, or DRAFT -> for each attachment
 * SESSION -> PUT... -> SEND; a failure after the draft exists -> DELETE (best effort) -> the
 * failure. Each HTTP request waits for a slot of the account's pool (graph_pool.c). */
#include "proxy/graph/graph_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "common/log.h"
#include "oauth/http.h"
#include "oauth/token_cache.h"
#include "proxy/config/config.h"
#include "proxy/graph/graph_explain.h"
#include "proxy/graph/graph_mime.h"
#include "proxy/graph/graph_pool.h"
#include "proxy/runtime/metrics.h"
#include "proxy/runtime/server_gen.h"

/* 10 x 320 KiB: Graph wants upload chunks in multiples of 320 KiB, under 4 MB each */
#define GRAPH_CHUNK (10u * 320u * 1024u)
#define GRAPH_URL_MAX 4096
/* Graph takes upload sessions for attachments of 3 MB and more only
 * (ErrorAttachmentSizeShouldNotBeLessThanMinimumSize); a smaller one is posted whole, its bytes
 * in base64 in a fileAttachment (under 4 MB as JSON). */
#define GRAPH_UPLOAD_MIN (3u * 1024u * 1024u)

struct graph_send {
    struct graph_waiter w; /* first: the pool hands it back */
    struct graph_pool *p;
    struct graph_send *next, *prev; /* the pool's sends */
    struct server_gen *gen; /* a reference; NULL for test's sends (graph_send_start_tokens) */
    struct token_cache *tc; /* the account's tokens (the generation's, or test's own) */
    unsigned timeout_s;     /* per request */
    const struct cfg_account *acct;
    struct graph_mime *msg;
    char log_id[64];
    graph_send_cb cb;
    void *arg;
    graph_trace_cb trace;
    void *trace_arg;
    struct event *timer; /* the start, a rate_limit wait */

    struct token_wait *tw;
    int in_get; /* 1 inside token_cache_get; 2 its callback ran there */
    char *token;
    char token_err[256];
    int retried_401;
    int retry_pending; /* the request of s->step again once the fresh token is here */

    /* the request: prepared, waiting for a slot, or in flight */
    enum graph_step step;
    const char *method;
    char *url;
    char *body;
    size_t body_len;
    const char *ctype;
    char range[80];
    int auth;
    struct http_req *req;
    int64_t started_ms;

    char *msg_id;     /* the draft's id, once created */
    char *upload_url; /* the current attachment's upload session */
    size_t att_i;
    uint64_t att_off;
    unsigned puts; /* of this attachment: bounded, whatever nextExpectedRanges says */
    struct graph_outcome out;
    struct graph_outcome failure; /* kept while the draft is deleted */
    int deleting;
};

static void gs_step(struct graph_send *s);
static void gs_fail(struct graph_send *s, const struct graph_outcome *o);

void graph_send_link(struct graph_pool *p, struct graph_send *s)
{
    s->prev = NULL;
    s->next = p->sends;
    if (p->sends)
        p->sends->prev = s;
    p->sends = s;
}

void graph_send_unlink(struct graph_pool *p, struct graph_send *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else if (p->sends == s)
        p->sends = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
}

void graph_send_cancel_all(struct graph_pool *p)
{
    while (p->sends)
        graph_send_cancel(p->sends);
}

static void gs_wipe_token(struct graph_send *s)
{
    if (s->token) {
        OPENSSL_cleanse(s->token, strlen(s->token));
        free(s->token);
        s->token = NULL;
    }
}

static void gs_clear_request(struct graph_send *s)
{
    free(s->url);
    free(s->body);
    s->url = s->body = NULL;
    s->body_len = 0;
    s->range[0] = '\0';
}

/* Everything but the callback and the generation. */
static void gs_release(struct graph_send *s)
{
    graph_pool_unwait(s->p, &s->w);
    if (s->req) {
        http_cancel(s->req);
        s->req = NULL;
        graph_pool_release(s->p);
    }
    if (s->tw)
        token_cache_cancel(s->tw);
    s->tw = NULL;
    if (s->timer)
        event_free(s->timer);
    s->timer = NULL;
    graph_send_unlink(s->p, s);
    gs_wipe_token(s);
    gs_clear_request(s);
    free(s->msg_id);
    free(s->upload_url);
}

static void gs_finish(struct graph_send *s, const struct graph_outcome *o)
{
    struct graph_outcome out = *o;
    struct server_gen *gen = s->gen;
    graph_send_cb cb = s->cb;
    void *arg = s->arg;
    out.requests = s->out.requests;
    if (out.status == GRAPH_OK)
        s->p->st.messages++;
    gs_release(s);
    free(s);
    cb(arg, &out);
    server_gen_unref(gen);
}

void graph_send_cancel(struct graph_send *s)
{
    if (!s)
        return;
    struct server_gen *gen = s->gen;
    gs_release(s);
    free(s);
    server_gen_unref(gen);
}

void graph_send_set_trace(struct graph_send *s, graph_trace_cb trace, void *arg)
{
    if (!s)
        return;
    s->trace = trace;
    s->trace_arg = arg;
}

/* The outcome for a failure of ours (no HTTP answer to blame). */
static void gs_fail_local(struct graph_send *s, enum graph_status st, int conn_failure,
                          const char *reply, const char *explain)
{
    struct graph_outcome o;
    memset(&o, 0, sizeof(o));
    o.status = st;
    o.conn_failure = conn_failure;
    snprintf(o.reply, sizeof(o.reply), "%s", reply);
    snprintf(o.explain, sizeof(o.explain), "%s", explain ? explain : "");
    graph_sanitize(o.reply);
    gs_fail(s, &o);
}

/* Percent-encode s (everything but RFC 3986's unreserved) onto dst at *n. 0 ok, -1 too long. */
static int pct_append(char *dst, size_t cap, size_t *n, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        int keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '-' || c == '.' || c == '_' || c == '~';
        if (*n + 4 >= cap)
            return -1;
        if (keep) {
            dst[(*n)++] = (char)c;
        } else {
            dst[(*n)++] = '%';
            dst[(*n)++] = hex[c >> 4];
            dst[(*n)++] = hex[c & 15];
        }
    }
    dst[*n] = '\0';
    return 0;
}

/* {graph_url}/v1.0/users/{mailbox}[/messages[/{id}[tail]]]: malloc'd, NULL when too long. */
static char *gs_user_url(const struct graph_send *s, const char *what, const char *id,
                         const char *tail)
{
    char buf[GRAPH_URL_MAX];
    int k = snprintf(buf, sizeof(buf), "%s/v1.0/users/", s->acct->graph_url);
    if (k < 0 || (size_t)k >= sizeof(buf))
        return NULL;
    size_t n = (size_t)k;
    if (pct_append(buf, sizeof(buf), &n, s->acct->mailbox ? s->acct->mailbox : "") != 0)
        return NULL;
    k = snprintf(buf + n, sizeof(buf) - n, "/%s", what);
    if (k < 0 || (size_t)k >= sizeof(buf) - n)
        return NULL;
    n += (size_t)k;
    if (id) {
        buf[n++] = '/';
        buf[n] = '\0';
        if (pct_append(buf, sizeof(buf), &n, id) != 0)
            return NULL;
    }
    if (tail) {
        k = snprintf(buf + n, sizeof(buf) - n, "%s", tail);
        if (k < 0 || (size_t)k >= sizeof(buf) - n)
            return NULL;
    }
    return strdup(buf);
}

/* The URL's path without its query or fragment, log-safe. */
static void url_path(const char *url, char *out, size_t cap)
{
    const char *p = strstr(url, "://");
    p = p ? strchr(p + 3, '/') : NULL;
    if (!p)
        p = "/";
    size_t n = strcspn(p, "?#");
    if (n >= cap)
        n = cap - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    graph_sanitize(out);
}

static void gs_granted(struct graph_waiter *w);

/* The prepared request goes to the pool's queue. */
static void gs_submit(struct graph_send *s)
{
    s->w.granted = gs_granted;
    graph_pool_wait_slot(s->p, &s->w, s->acct->max_upstream_connections);
}

static void gs_answer(void *arg, const struct http_response *r);

static void gs_granted(struct graph_waiter *w)
{
    struct graph_send *s = (struct graph_send *)(void *)w;
    char path[512];
    struct http *h = graph_pool_http(s->p, s->acct);
    unsigned timeout_s = s->timeout_s;
    struct http_request rq = {
        .method = s->method,
        .url = s->url,
        .ca_file = s->acct->upstream.ca_file,
        .bearer = s->auth ? s->token : NULL,
        .content_type = s->ctype,
        .content_range = s->range[0] ? s->range : NULL,
        .body = s->body,
        .body_len = s->body_len,
        .timeout_ms = (long)timeout_s * 1000L,
    };
    url_path(s->url, path, sizeof(path));
    if (s->trace)
        s->trace(s->trace_arg, s->method, path, 0, NULL);
    s->started_ms = graph_now_ms();
    s->req = h ? http_request(h, &rq, gs_answer, s) : NULL;
    if (s->req) {
        /* http has its own copy: ours goes (body_len stays: the upload's progress) */
        free(s->body);
        s->body = NULL;
    } else {
        graph_pool_release(s->p);
        gs_fail_local(s, GRAPH_TEMP, 1, "451 4.3.0 Could not start a request to Microsoft Graph",
                      "out of memory, or graph_url / the upload URL is not https (plain http only "
                      "on loopback)");
    }
}

static void gs_token_cb(void *arg, const char *token, const char *err)
{
    struct graph_send *s = arg;
    s->tw = NULL;
    gs_wipe_token(s);
    s->token_err[0] = '\0';
    if (token)
        s->token = strdup(token);
    if (!token || !s->token)
        snprintf(s->token_err, sizeof(s->token_err), "%s", err ? err : "out of memory");
    if (s->in_get) {
        s->in_get = 2;
        return;
    }
    gs_step(s);
}

/* Get a token (s->token), then gs_step. */
static void gs_get_token(struct graph_send *s)
{
    struct token_cache *c = s->tc;
    if (!c) {
        gs_fail_local(s, GRAPH_TEMP, 1, "451 4.7.0 No token for the account", NULL);
        return;
    }
    s->in_get = 1;
    struct token_wait *tw = token_cache_get(c, gs_token_cb, s);
    if (s->in_get == 2) {
        s->in_get = 0;
        gs_step(s);
        return;
    }
    s->in_get = 0;
    s->tw = tw;
}

/* Read the submitted copy's base64 into s->body. 0 ok; -1 failed (s finished). */
static int gs_read_body(struct graph_send *s)
{
    char err[256] = "";
    uint64_t size = graph_mime_body_b64_size(s->msg);
    if (size > HTTP_REQUEST_BODY_MAX) {
        gs_fail_local(s, GRAPH_PERM, 0,
                      "552 5.3.4 Message too large for one Microsoft Graph request", NULL);
        return -1;
    }
    s->body = malloc(size ? (size_t)size : 1);
    if (!s->body) {
        gs_fail_local(s, GRAPH_TEMP, 0, "451 4.3.0 Out of memory", NULL);
        return -1;
    }
    graph_mime_body_rewind(s->msg);
    s->body_len = 0;
    while (s->body_len < size) {
        ssize_t n = graph_mime_body_read(s->msg, s->body + s->body_len, (size_t)size - s->body_len,
                                         err, sizeof(err));
        if (n < 0) {
            char reply[400];
            snprintf(reply, sizeof(reply), "451 4.3.0 Could not read the message: %s", err);
            gs_fail_local(s, GRAPH_TEMP, 0, reply, NULL);
            return -1;
        }
        if (n == 0)
            break;
        s->body_len += (size_t)n;
    }
    return 0;
}

/* The next chunk of attachment att_i from att_off into s->body. 0 ok; -1 failed. */
static int gs_read_chunk(struct graph_send *s, uint64_t size)
{
    char err[256] = "";
    uint64_t want = size - s->att_off;
    if (want > GRAPH_CHUNK)
        want = GRAPH_CHUNK;
    s->body = malloc(want ? (size_t)want : 1);
    if (!s->body) {
        gs_fail_local(s, GRAPH_TEMP, 0, "451 4.3.0 Out of memory", NULL);
        return -1;
    }
    s->body_len = 0;
    while (s->body_len < want) {
        ssize_t n =
            graph_mime_att_read(s->msg, s->att_i, s->att_off + s->body_len, s->body + s->body_len,
                                (size_t)want - s->body_len, err, sizeof(err));
        if (n <= 0) {
            char reply[400];
            snprintf(reply, sizeof(reply), "451 4.3.0 Could not read attachment %zu: %s",
                     s->att_i + 1, n < 0 ? err : "shorter than its size");
            gs_fail_local(s, GRAPH_TEMP, 0, reply, NULL);
            return -1;
        }
        s->body_len += (size_t)n;
    }
    snprintf(s->range, sizeof(s->range), "bytes %llu-%llu/%llu", (unsigned long long)s->att_off,
             (unsigned long long)(s->att_off + s->body_len - 1), (unsigned long long)size);
    return 0;
}

static char *gs_session_json(const struct graph_mime_att *a)
{
    cJSON *root = cJSON_CreateObject(), *item = cJSON_CreateObject();
    char *out = NULL;
    if (!root || !item) {
        cJSON_Delete(root);
        cJSON_Delete(item);
        return NULL;
    }
    cJSON_AddItemToObject(root, "AttachmentItem", item);
    if (cJSON_AddStringToObject(item, "attachmentType", "file") &&
        cJSON_AddStringToObject(item, "name", a->name ? a->name : "attachment") &&
        cJSON_AddNumberToObject(item, "size", (double)a->size) &&
        cJSON_AddStringToObject(item, "contentType",
                                a->content_type ? a->content_type : "application/octet-stream") &&
        cJSON_AddBoolToObject(item, "isInline", a->is_inline ? 1 : 0) &&
        (!a->content_id || cJSON_AddStringToObject(item, "contentId", a->content_id)))
        out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

/* A small attachment as Graph's fileAttachment: {"@odata.type", name, contentType, isInline,
 * contentId, contentBytes (its bytes in base64)}. NULL when it cannot be read (s failed) or out
 * of memory (*oom set). */
static char *gs_attach_json(struct graph_send *s, const struct graph_mime_att *a, int *oom)
{
    char err[256] = "";
    unsigned char *raw = malloc(a->size ? (size_t)a->size : 1);
    char *b64 = malloc(((size_t)a->size + 2) / 3 * 4 + 1), *out = NULL;
    cJSON *root = cJSON_CreateObject();
    *oom = 1;
    if (!raw || !b64 || !root)
        goto done;
    size_t got = 0;
    while (got < a->size) {
        ssize_t n = graph_mime_att_read(s->msg, s->att_i, got, raw + got, (size_t)a->size - got,
                                        err, sizeof(err));
        if (n <= 0) {
            char reply[400];
            snprintf(reply, sizeof(reply), "451 4.3.0 Could not read attachment %zu: %s",
                     s->att_i + 1, n < 0 ? err : "shorter than its size");
            *oom = 0;
            gs_fail_local(s, GRAPH_TEMP, 0, reply, NULL);
            goto done;
        }
        got += (size_t)n;
    }
    EVP_EncodeBlock((unsigned char *)b64, raw, (int)a->size);
    if (cJSON_AddStringToObject(root, "@odata.type", "#microsoft.graph.fileAttachment") &&
        cJSON_AddStringToObject(root, "name", a->name ? a->name : "attachment") &&
        cJSON_AddStringToObject(root, "contentType",
                                a->content_type ? a->content_type : "application/octet-stream") &&
        cJSON_AddBoolToObject(root, "isInline", a->is_inline ? 1 : 0) &&
        (!a->content_id || cJSON_AddStringToObject(root, "contentId", a->content_id)) &&
        cJSON_AddStringToObject(root, "contentBytes", b64))
        out = cJSON_PrintUnformatted(root);
done:
    cJSON_Delete(root);
    free(raw);
    free(b64);
    return out;
}

/* The step for attachment att_i: posted whole, or an upload session. */
static enum graph_step gs_att_step(const struct graph_send *s)
{
    const struct graph_mime_att *a = graph_mime_att(s->msg, s->att_i);
    return a && a->size < GRAPH_UPLOAD_MIN ? GRAPH_STEP_ATTACH : GRAPH_STEP_UPLOAD_SESSION;
}

/* Prepare the request of s->step and submit it. */
static void gs_prepare(struct graph_send *s)
{
    gs_clear_request(s);
    s->auth = 1;
    s->ctype = NULL;
    switch (s->step) {
    case GRAPH_STEP_SENDMAIL:
    case GRAPH_STEP_DRAFT:
        s->method = "POST";
        s->ctype = "text/plain";
        s->url =
            gs_user_url(s, s->step == GRAPH_STEP_SENDMAIL ? "sendMail" : "messages", NULL, NULL);
        if (s->url && gs_read_body(s) != 0)
            return;
        break;
    case GRAPH_STEP_UPLOAD_SESSION: {
        const struct graph_mime_att *a = graph_mime_att(s->msg, s->att_i);
        s->method = "POST";
        s->ctype = "application/json";
        s->url = gs_user_url(s, "messages", s->msg_id, "/attachments/createUploadSession");
        s->body = a ? gs_session_json(a) : NULL;
        s->body_len = s->body ? strlen(s->body) : 0;
        if (!s->body) {
            free(s->url);
            s->url = NULL;
        }
        break;
    }
    case GRAPH_STEP_UPLOAD: {
        const struct graph_mime_att *a = graph_mime_att(s->msg, s->att_i);
        s->method = "PUT";
        s->auth = 0; /* the upload URL carries its own authorisation */
        s->ctype = "application/octet-stream";
        s->url = s->upload_url ? strdup(s->upload_url) : NULL;
        if (s->url && a && gs_read_chunk(s, a->size) != 0)
            return;
        break;
    }
    case GRAPH_STEP_ATTACH: {
        const struct graph_mime_att *a = graph_mime_att(s->msg, s->att_i);
        int oom = 1;
        s->method = "POST";
        s->ctype = "application/json";
        s->url = gs_user_url(s, "messages", s->msg_id, "/attachments");
        s->body = s->url && a ? gs_attach_json(s, a, &oom) : NULL;
        if (!s->body && !oom)
            return; /* s failed: the attachment could not be read */
        s->body_len = s->body ? strlen(s->body) : 0;
        if (!s->body) {
            free(s->url);
            s->url = NULL;
        }
        break;
    }
    case GRAPH_STEP_SEND:
        s->method = "POST";
        s->url = gs_user_url(s, "messages", s->msg_id, "/send");
        break;
    case GRAPH_STEP_DELETE:
        s->method = "DELETE";
        s->url = gs_user_url(s, "messages", s->msg_id, NULL);
        break;
    }
    if (!s->url) {
        gs_fail_local(s, GRAPH_TEMP, 0, "451 4.3.0 Could not prepare the Microsoft Graph request",
                      "out of memory or a URL longer than 4 KiB");
        return;
    }
    gs_submit(s);
}

/* After the token: the first request. */
static void gs_step(struct graph_send *s)
{
    if (!s->token) {
        char reply[400];
        snprintf(reply, sizeof(reply), "451 4.7.0 No token for Microsoft Graph: %s", s->token_err);
        gs_fail_local(s, GRAPH_TEMP, 1, reply, "the token endpoint failed: see event=token lines");
        return;
    }
    if (s->retry_pending) { /* after a 401: the same request, prepared again */
        s->retry_pending = 0;
        gs_prepare(s);
        return;
    }
    s->step = graph_mime_natt(s->msg) == 0 ? GRAPH_STEP_SENDMAIL : GRAPH_STEP_DRAFT;
    gs_prepare(s);
}

static void gs_start_cb(evutil_socket_t fd, short what, void *arg)
{
    struct graph_send *s = arg;
    (void)fd;
    (void)what;
    const char *refusal = graph_mime_refusal(s->msg);
    if (refusal) {
        gs_fail_local(s, GRAPH_PERM, 0, refusal, NULL);
        return;
    }
    int64_t when = 0;
    if (!graph_pool_msg_take(s->p, s->acct->rate_limit, &when)) {
        int64_t ms = when - graph_now_ms();
        struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
                             .tv_usec = (suseconds_t)(ms % 1000) * 1000};
        evtimer_add(s->timer, &tv);
        return;
    }
    gs_get_token(s);
}

static struct graph_send *gs_new(struct graph_pool *p, struct server_gen *gen,
                                 struct token_cache *tc, unsigned timeout_s,
                                 const struct cfg_account *acct, struct graph_mime *msg,
                                 const char *log_id, graph_send_cb cb, void *arg)
{
    if (!p || !acct || !msg || !cb)
        return NULL;
    struct graph_send *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->p = p;
    s->acct = acct;
    s->msg = msg;
    s->cb = cb;
    s->arg = arg;
    snprintf(s->log_id, sizeof(s->log_id), "%s", log_id ? log_id : "-");
    s->timer = evtimer_new(p->ps->base, gs_start_cb, s);
    struct timeval now = {0, 0};
    if (!s->timer || evtimer_add(s->timer, &now) != 0) {
        if (s->timer)
            event_free(s->timer);
        free(s);
        return NULL;
    }
    s->gen = gen ? server_gen_ref(gen) : NULL;
    s->tc = tc;
    s->timeout_s = timeout_s ? timeout_s : 300;
    graph_send_link(p, s);
    return s;
}

struct graph_send *graph_send_start(struct graph_pool *p, struct server_gen *gen,
                                    const struct cfg_account *acct, struct graph_mime *msg,
                                    const char *log_id, graph_send_cb cb, void *arg)
{
    if (!gen)
        return NULL;
    return gs_new(p, gen, server_gen_account_tokens(gen, acct), gen->cfg->upstream_timeout, acct,
                  msg, log_id, cb, arg);
}

struct graph_send *graph_send_start_tokens(struct graph_pool *p, struct token_cache *tokens,
                                           unsigned timeout_s, const struct cfg_account *acct,
                                           struct graph_mime *msg, const char *log_id,
                                           graph_send_cb cb, void *arg)
{
    return gs_new(p, NULL, tokens, timeout_s, acct, msg, log_id, cb, arg);
}

static void gs_fail(struct graph_send *s, const struct graph_outcome *o)
{
    if (s->msg_id && !s->deleting) {
        /* the draft must not stay behind: delete it, then report the failure */
        s->failure = *o;
        s->deleting = 1;
        s->step = GRAPH_STEP_DELETE;
        gs_prepare(s);
        return;
    }
    gs_finish(s, s->deleting ? &s->failure : o);
}

/* A string member of the JSON body, copied (malloc'd); NULL when none. */
static char *json_dup_str(const char *body, size_t len, const char *name)
{
    if (len > GRAPH_ERROR_BODY_MAX)
        return NULL;
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    char *out = cJSON_IsString(v) && v->valuestring[0] ? strdup(v->valuestring) : NULL;
    cJSON_Delete(root);
    return out;
}

/* The start of the first of nextExpectedRanges ("327680-", "327680-655359" or "327680"); -1
 * none. */
static long long json_next_range(const char *body, size_t len)
{
    long long at = -1;
    if (len > GRAPH_ERROR_BODY_MAX)
        return -1;
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "nextExpectedRanges");
    const cJSON *first = cJSON_IsArray(a) ? cJSON_GetArrayItem(a, 0) : NULL;
    if (cJSON_IsString(first)) {
        char *end = NULL;
        unsigned long long v = strtoull(first->valuestring, &end, 10);
        /* "327680-" or "327680-655359" (OneDrive's form), or "327680" (Outlook's) */
        if (end != first->valuestring && (*end == '-' || *end == '\0') && v < (1ull << 40))
            at = (long long)v;
    }
    cJSON_Delete(root);
    return at;
}

static void gs_next_attachment(struct graph_send *s)
{
    free(s->upload_url);
    s->upload_url = NULL;
    s->att_i++;
    s->att_off = 0;
    s->puts = 0;
    s->step = s->att_i < graph_mime_natt(s->msg) ? gs_att_step(s) : GRAPH_STEP_SEND;
    gs_prepare(s);
}

/* A chunk was taken: follow nextExpectedRanges. */
static void gs_uploaded(struct graph_send *s, const struct http_response *r)
{
    const struct graph_mime_att *a = graph_mime_att(s->msg, s->att_i);
    uint64_t size = a ? a->size : 0, sent_to = s->att_off + s->body_len;
    long long next = json_next_range(r->body, r->len);
    if (r->status == 201 || (next < 0 && sent_to >= size)) {
        gs_next_attachment(s);
        return;
    }
    /* a session that keeps asking for ranges it had: at most twice the chunks it needs, + 4 */
    if (++s->puts > 2 * (unsigned)((size + GRAPH_CHUNK - 1) / GRAPH_CHUNK) + 4) {
        gs_fail_local(s, GRAPH_TEMP, 0,
                      "451 4.3.0 Microsoft Graph's upload session does not progress", NULL);
        return;
    }
    if (next < 0 || (uint64_t)next >= size) {
        gs_fail_local(s, GRAPH_TEMP, 0,
                      "451 4.3.0 Microsoft Graph's upload session gave no next range", NULL);
        return;
    }
    s->att_off = (uint64_t)next;
    gs_prepare(s);
}

static void gs_answer(void *arg, const struct http_response *r)
{
    struct graph_send *s = arg;
    struct graph_outcome o;
    char path[512];
    s->req = NULL;
    graph_pool_release(s->p);
    s->out.requests++;
    s->p->st.requests++;
    memset(&o, 0, sizeof(o));
    if (r->status == 0)
        graph_explain_no_answer(r->err, r->timed_out, &o);
    else
        graph_explain_answer(r->status, r->body, r->len, s->step, s->acct->mailbox,
                             r->retry_after_ms, &o);
    metrics_graph_request(s->p->ps->m, s->acct, r->status);
    url_path(s->url, path, sizeof(path));
    log_debug("event=graph_request id=%s account=%s method=%s path=%s status=%ld ms=%lld%s%s",
              s->log_id, s->acct->name, s->method, path, r->status,
              (long long)(graph_now_ms() - s->started_ms), o.code[0] ? " code=" : "", o.code);
    if (s->trace)
        s->trace(s->trace_arg, s->method, path, r->status, o.code);
    if (r->status == 429 || r->status == 503) {
        graph_pool_hold(s->p, r->retry_after_ms);
        log_warn("event=graph_throttled id=%s account=%s status=%ld retry_after=%lld", s->log_id,
                 s->acct->name, r->status,
                 r->retry_after_ms > 0 ? (long long)((r->retry_after_ms + 999) / 1000) : 0LL);
    }
    if (s->step == GRAPH_STEP_DELETE) { /* best effort: the failure it follows is the outcome */
        gs_finish(s, &s->failure);
        return;
    }
    if (r->status == 401 && s->auth && s->token) {
        token_cache_invalidate(s->tc, s->token);
        if (!s->retried_401) { /* once: the same request with a fresh token */
            s->retried_401 = 1;
            s->retry_pending = 1;
            gs_wipe_token(s);
            gs_get_token(s);
            return;
        }
    }
    if (o.status != GRAPH_OK) {
        gs_fail(s, &o);
        return;
    }
    switch (s->step) {
    case GRAPH_STEP_SENDMAIL:
    case GRAPH_STEP_SEND:
    case GRAPH_STEP_DELETE:
        free(s->msg_id); /* sent: nothing to delete any more */
        s->msg_id = NULL;
        gs_finish(s, &o);
        return;
    case GRAPH_STEP_DRAFT:
        s->msg_id = json_dup_str(r->body, r->len, "id");
        if (!s->msg_id) {
            gs_fail_local(s, GRAPH_TEMP, 0, "451 4.3.0 Microsoft Graph created no draft id", NULL);
            return;
        }
        s->att_i = 0;
        s->att_off = 0;
        s->step = graph_mime_natt(s->msg) ? gs_att_step(s) : GRAPH_STEP_SEND;
        gs_prepare(s);
        return;
    case GRAPH_STEP_ATTACH: /* 201: the next one */
        gs_next_attachment(s);
        return;
    case GRAPH_STEP_UPLOAD_SESSION:
        s->upload_url = json_dup_str(r->body, r->len, "uploadUrl");
        if (!s->upload_url) {
            gs_fail_local(s, GRAPH_TEMP, 0,
                          "451 4.3.0 Microsoft Graph gave no upload URL for an attachment", NULL);
            return;
        }
        s->att_off = 0;
        s->puts = 0;
        s->step = GRAPH_STEP_UPLOAD;
        gs_prepare(s);
        return;
    case GRAPH_STEP_UPLOAD:
        gs_uploaded(s, r);
        return;
    }
}
