/* libcurl's multi interface driven by the libevent loop, the pattern of curl's
 * docs/examples/hiperfifo.c: curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and
 * when to wake it (CURLMOPT_TIMERFUNCTION); libevent tells curl what happened
 * (curl_multi_socket_action); finished transfers are collected in http_check_multi_info().
 *
 * curl_global_init() is called once by the first http_new(), so main() need not call it; it is
 * never undone (curl_global_cleanup() at exit would only free memory the process gives back
 * anyway, and would break any other http in the process). */
#include "oauth/http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <openssl/crypto.h>

#define HTTP_BODY_MAX (1024 * 1024)
#define HTTP_USER_AGENT "smtp-oauth-proxy/0.1"
#define HTTP_LOCATION_MAX 2048
#define HTTP_RETRY_AFTER_MAX_S 86400LL

struct http_sock {
    struct http *h;
    curl_socket_t fd;
    struct event *ev;
    struct http_sock *prev, *next;
};

struct http_req {
    struct http *h;
    CURL *easy;
    struct curl_slist *headers;
    /* our copy of the request body (a form, a message): curl borrows it (CURLOPT_POSTFIELDS) */
    char *form;
    size_t form_len;
    char *body;
    size_t body_len, body_cap;
    int too_big;
    http_done_cb cb;      /* http_post_form's callback, or NULL */
    http_response_cb rcb; /* http_request's, or NULL */
    void *arg;
    long long retry_after_ms; /* -1: none */
    char location[HTTP_LOCATION_MAX];
    struct http_req *prev, *next;
    char errbuf[CURL_ERROR_SIZE];
};

struct http {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;
    struct http_req *reqs;
    struct http_sock *socks;
    /* Callbacks may call http_free(): while we are inside curl or a callback (busy > 0), the
     * free is deferred to the outermost frame. */
    int busy;
    int dead;
    char *proxy; /* http_set_proxy; NULL: none */
};

static int http_global_done;

static void http_wipe_free(char *p, size_t len)
{
    if (!p)
        return;
    OPENSSL_cleanse(p, len);
    free(p);
}

/* Header lines may hold a bearer token: wipe them before they go. */
static void http_slist_wipe_free(struct curl_slist *l)
{
    for (struct curl_slist *i = l; i; i = i->next)
        if (i->data)
            OPENSSL_cleanse(i->data, strlen(i->data));
    curl_slist_free_all(l);
}

/* Unlink r from h, detach it from curl and free it. No callback. */
static void http_req_destroy(struct http_req *r)
{
    struct http *h = r->h;
    if (r->prev)
        r->prev->next = r->next;
    else if (h->reqs == r)
        h->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    if (r->easy) {
        curl_multi_remove_handle(h->multi, r->easy);
        curl_easy_cleanup(r->easy);
    }
    http_slist_wipe_free(r->headers);
    /* The form may hold a client secret, the body an access token. */
    http_wipe_free(r->form, r->form_len);
    http_wipe_free(r->body, r->body_cap);
    free(r);
}

static void http_destroy(struct http *h)
{
    while (h->reqs)
        http_req_destroy(h->reqs);
    /* curl may still call the socket and timer callbacks while it closes cached connections:
     * h must stay valid until curl_multi_cleanup() returns. */
    curl_multi_cleanup(h->multi);
    while (h->socks) {
        struct http_sock *s = h->socks;
        h->socks = s->next;
        event_free(s->ev);
        free(s);
    }
    event_free(h->timer);
    free(h->proxy);
    free(h);
}

static void http_leave(struct http *h)
{
    if (--h->busy == 0 && h->dead)
        http_destroy(h);
}

static void http_req_finish(struct http_req *r, CURLcode res)
{
    long status = 0;
    const char *err = NULL;
    char errmsg[CURL_ERROR_SIZE + 64];

    if (r->too_big || res == CURLE_FILESIZE_EXCEEDED) {
        snprintf(errmsg, sizeof(errmsg), "response body larger than %d bytes", HTTP_BODY_MAX);
        err = errmsg;
    } else if (res != CURLE_OK) {
        snprintf(errmsg, sizeof(errmsg), "%s", r->errbuf[0] ? r->errbuf : curl_easy_strerror(res));
        err = errmsg;
    } else {
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status == 0) {
            snprintf(errmsg, sizeof(errmsg), "no HTTP status in the answer");
            err = errmsg;
        }
    }
    if (err)
        status = 0;

    http_done_cb cb = r->cb;
    http_response_cb rcb = r->rcb;
    void *arg = r->arg;
    /* Take the request out of curl and of h before the callback: the callback may start new
     * requests, cancel others or free h. r itself stays ours until after the callback. */
    if (r->prev)
        r->prev->next = r->next;
    else if (r->h->reqs == r)
        r->h->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    curl_multi_remove_handle(r->h->multi, r->easy);
    curl_easy_cleanup(r->easy);
    r->easy = NULL;
    r->cb = NULL; /* http_cancel() on a finished request is then a no-op */
    r->rcb = NULL;

    const char *body = status && r->body ? r->body : "";
    size_t len = status && r->body ? r->body_len : 0;
    if (cb) {
        cb(arg, status, body, len, err);
    } else {
        struct http_response resp = {
            .status = status,
            .body = body,
            .len = len,
            .err = err,
            .retry_after_ms = status ? r->retry_after_ms : -1,
            .location = status ? r->location : "",
            .timed_out = res == CURLE_OPERATION_TIMEDOUT,
        };
        rcb(arg, &resp);
    }
    http_req_destroy(r);
}

static void http_check_multi_info(struct http *h)
{
    CURLMsg *msg;
    int left;
    /* Stop as soon as a callback frees h; curl drops the messages of handles removed by
     * http_cancel(), so a cancelled request is never reported here. */
    while (!h->dead && (msg = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        CURLcode res = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
        if (priv)
            http_req_finish((struct http_req *)(void *)priv, res);
    }
}

static void http_event_cb(evutil_socket_t fd, short kind, void *arg)
{
    struct http *h = arg;
    int running = 0;
    int action =
        ((kind & EV_READ) ? CURL_CSELECT_IN : 0) | ((kind & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    h->busy++;
    curl_multi_socket_action(h->multi, fd, action, &running);
    http_check_multi_info(h);
    http_leave(h);
}

static void http_timer_cb(evutil_socket_t fd, short kind, void *arg)
{
    struct http *h = arg;
    int running = 0;
    (void)fd;
    (void)kind;
    h->busy++;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    http_check_multi_info(h);
    http_leave(h);
}

/* CURLMOPT_TIMERFUNCTION: only arm the timer; curl must not be re-entered from here. */
static int http_multi_timer_cb(CURLM *multi, long timeout_ms, void *arg)
{
    struct http *h = arg;
    (void)multi;
    if (timeout_ms < 0) {
        evtimer_del(h->timer);
        return 0;
    }
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    return evtimer_add(h->timer, &tv) == 0 ? 0 : -1;
}

static void http_sock_remove(struct http *h, struct http_sock *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        h->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    event_free(s->ev);
    free(s);
}

/* CURLMOPT_SOCKETFUNCTION: one persistent event per socket, re-armed when curl changes what it
 * waits for. */
static int http_sock_cb(CURL *easy, curl_socket_t fd, int what, void *arg, void *sockp)
{
    struct http *h = arg;
    struct http_sock *s = sockp;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            curl_multi_assign(h->multi, fd, NULL);
            http_sock_remove(h, s);
        }
        return 0;
    }
    short kind = (short)(((what & CURL_POLL_IN) ? EV_READ : 0) |
                         ((what & CURL_POLL_OUT) ? EV_WRITE : 0) | EV_PERSIST);
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return -1;
        s->h = h;
        s->fd = fd;
        s->ev = event_new(h->base, fd, kind, http_event_cb, h);
        if (!s->ev) {
            free(s);
            return -1;
        }
        s->next = h->socks;
        if (h->socks)
            h->socks->prev = s;
        h->socks = s;
        curl_multi_assign(h->multi, fd, s);
    } else {
        event_del(s->ev);
        if (event_assign(s->ev, h->base, fd, kind, http_event_cb, h) != 0)
            return -1;
    }
    return event_add(s->ev, NULL) == 0 ? 0 : -1;
}

static size_t http_write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
    struct http_req *r = arg;
    size_t n = size * nmemb;
    if (n > HTTP_BODY_MAX - r->body_len) {
        r->too_big = 1;
        return 0; /* curl aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (r->body_len + n + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 4096;
        while (cap < r->body_len + n + 1)
            cap *= 2;
        if (cap > HTTP_BODY_MAX + 1)
            cap = HTTP_BODY_MAX + 1;
        /* Not realloc: the old buffer may already hold part of a token; wipe it. */
        char *nb = malloc(cap);
        if (!nb)
            return 0;
        if (r->body)
            memcpy(nb, r->body, r->body_len);
        http_wipe_free(r->body, r->body_cap);
        r->body = nb;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return n;
}

long long http_retry_after_ms(const char *value, long long now_s)
{
    long long v = 0;
    const char *p = value;
    if (!value)
        return -1;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p >= '0' && *p <= '9') {
        for (; *p >= '0' && *p <= '9'; p++)
            if ((v = v * 10 + (*p - '0')) > HTTP_RETRY_AFTER_MAX_S)
                v = HTTP_RETRY_AFTER_MAX_S;
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        return *p ? -1 : v * 1000;
    }
    char date[128];
    size_t n = strcspn(p, "\r\n");
    if (n == 0 || n >= sizeof(date))
        return -1;
    memcpy(date, p, n);
    date[n] = '\0';
    time_t t = curl_getdate(date, NULL);
    if (t == (time_t)-1)
        return -1;
    v = (long long)t - now_s;
    if (v < 0)
        v = 0;
    if (v > HTTP_RETRY_AFTER_MAX_S)
        v = HTTP_RETRY_AFTER_MAX_S;
    return v * 1000;
}

/* CURLOPT_HEADERFUNCTION: Retry-After and Location of the final answer (a status line starts a
 * new answer: 100 Continue's headers do not count). */
static size_t http_header_cb(char *data, size_t size, size_t nmemb, void *arg)
{
    struct http_req *r = arg;
    size_t n = size * nmemb;
    char line[HTTP_LOCATION_MAX + 32];
    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        r->retry_after_ms = -1;
        r->location[0] = '\0';
        return n;
    }
    if (n >= sizeof(line))
        return n; /* longer than anything we use: ignored */
    memcpy(line, data, n);
    line[n] = '\0';
    line[strcspn(line, "\r\n")] = '\0';
    if (strncasecmp(line, "Retry-After:", 12) == 0) {
        r->retry_after_ms = http_retry_after_ms(line + 12, (long long)time(NULL));
    } else if (strncasecmp(line, "Location:", 9) == 0) {
        const char *v = line + 9;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t vl = strlen(v);
        if (vl < sizeof(r->location)) {
            for (size_t i = 0; i < vl; i++) /* printable only: it may be logged */
                r->location[i] = (v[i] > 0x20 && v[i] < 0x7f) ? v[i] : '_';
            r->location[vl] = '\0';
        }
    }
    return n;
}

struct http *http_new(struct event_base *base)
{
    struct http *h = NULL;
    if (!base)
        return NULL;
    if (!http_global_done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return NULL;
        http_global_done = 1;
    }
    h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->base = base;
    h->multi = curl_multi_init();
    h->timer = evtimer_new(base, http_timer_cb, h);
    if (!h->multi || !h->timer)
        goto fail;
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, http_sock_cb);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, http_multi_timer_cb);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    return h;
fail:
    if (h->multi)
        curl_multi_cleanup(h->multi);
    if (h->timer)
        event_free(h->timer);
    free(h);
    return NULL;
}

int http_set_proxy(struct http *h, const char *proxy)
{
    char *p = NULL;
    if (!h)
        return -1;
    if (proxy && *proxy && !(p = strdup(proxy)))
        return -1;
    free(h->proxy);
    h->proxy = p;
    return 0;
}

struct event_base *http_base(const struct http *h)
{
    return h ? h->base : NULL;
}

void http_free(struct http *h)
{
    if (!h || h->dead)
        return;
    while (h->reqs)
        http_req_destroy(h->reqs);
    if (h->busy) {
        h->dead = 1;
        return;
    }
    http_destroy(h);
}

/* Host of url (lower case, IPv6 without brackets) and whether the scheme is http(s).
 * 0 ok, -1 not a URL we accept. */
static int http_url_parts(const char *url, int *is_https, char *host, size_t hostlen)
{
    int ret = -1;
    char *scheme = NULL, *h = NULL;
    CURLU *u = curl_url();
    if (!u || !url)
        goto out;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
        goto out;
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &h, 0) != CURLUE_OK)
        goto out;
    if (strcasecmp(scheme, "https") == 0)
        *is_https = 1;
    else if (strcasecmp(scheme, "http") == 0)
        *is_https = 0;
    else
        goto out;
    size_t n = strlen(h);
    const char *p = h;
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
        p++;
        n -= 2;
    }
    if (n == 0 || n >= hostlen)
        goto out;
    for (size_t i = 0; i < n; i++)
        host[i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] - 'A' + 'a' : p[i]);
    host[n] = '\0';
    ret = 0;
out:
    curl_free(scheme);
    curl_free(h);
    curl_url_cleanup(u);
    return ret;
}

static int http_host_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    /* curl resolves "localhost" to loopback itself, without asking DNS. */
    if (strcmp(host, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}

int http_url_is_loopback(const char *url)
{
    int is_https = 0;
    char host[256];
    if (http_url_parts(url, &is_https, host, sizeof(host)) != 0)
        return 0;
    return http_host_is_loopback(host);
}

/* One implementation for every request: method, headers and body as rq says; exactly one of
 * cb / rcb. */
static struct http_req *http_start(struct http *h, const struct http_request *rq,
                                   const char *accept, http_done_cb cb, http_response_cb rcb,
                                   void *arg)
{
    struct http_req *r = NULL;
    int is_https = 0, loopback;
    char host[256];
    const char *method = rq->method ? rq->method : "GET";

    if (!h || h->dead || !rq->url || (!cb && !rcb))
        return NULL;
    if (rq->body_len > HTTP_REQUEST_BODY_MAX || (rq->body_len && !rq->body))
        return NULL;
    /* header values: printable ASCII only, no line break that would start another header */
    const char *vals[] = {rq->bearer, rq->content_type, rq->content_range};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++)
        for (const char *c = vals[i]; c && *c; c++)
            if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
                return NULL;
    if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0 && strcmp(method, "PUT") != 0 &&
        strcmp(method, "DELETE") != 0)
        return NULL;
    if (http_url_parts(rq->url, &is_https, host, sizeof(host)) != 0)
        return NULL;
    loopback = http_host_is_loopback(host);
    /* Plain http would expose the secret or the token: only tests talk to a local endpoint. */
    if (!is_https && !loopback)
        return NULL;

    r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->h = h;
    r->cb = cb;
    r->rcb = rcb;
    r->arg = arg;
    r->retry_after_ms = -1;
    r->easy = curl_easy_init();
    if (!r->easy)
        goto fail;

    int bad = 0;
    struct curl_slist *l;
    char hdr[HTTP_LOCATION_MAX];
#define HTTP_ADD_HEADER(...)                                                                       \
    do {                                                                                           \
        snprintf(hdr, sizeof(hdr), __VA_ARGS__);                                                   \
        l = curl_slist_append(r->headers, hdr);                                                    \
        if (!l)                                                                                    \
            bad = 1;                                                                               \
        else                                                                                       \
            r->headers = l;                                                                        \
    } while (0)
    HTTP_ADD_HEADER("Accept: %s", accept);
    /* No "Expect: 100-continue" round trip before a large body. */
    HTTP_ADD_HEADER("Expect:");
    if (rq->content_type)
        HTTP_ADD_HEADER("Content-Type: %s", rq->content_type);
    if (rq->content_range)
        HTTP_ADD_HEADER("Content-Range: %s", rq->content_range);
    if (rq->bearer) {
        if (strlen(rq->bearer) + 32 > sizeof(hdr) - 1) {
            /* a token longer than 2 KiB: build the line on the heap */
            size_t bl = strlen(rq->bearer) + sizeof("Authorization: Bearer ");
            char *big = malloc(bl);
            if (!big) {
                bad = 1;
            } else {
                snprintf(big, bl, "Authorization: Bearer %s", rq->bearer);
                l = curl_slist_append(r->headers, big);
                OPENSSL_cleanse(big, bl);
                free(big);
                if (!l)
                    bad = 1;
                else
                    r->headers = l;
            }
        } else {
            HTTP_ADD_HEADER("Authorization: Bearer %s", rq->bearer);
        }
    }
#undef HTTP_ADD_HEADER
    OPENSSL_cleanse(hdr, sizeof(hdr));
    if (bad)
        goto fail;

    int has_body = rq->body != NULL || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0;
    if (has_body) {
        r->form_len = rq->body_len;
        r->form = malloc(r->form_len + 1);
        if (!r->form)
            goto fail;
        if (r->form_len)
            memcpy(r->form, rq->body, r->form_len);
        r->form[r->form_len] = '\0';
    }

    CURL *e = r->easy;
    bad |= curl_easy_setopt(e, CURLOPT_URL, rq->url) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_USERAGENT, HTTP_USER_AGENT) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers) != CURLE_OK;
    if (has_body) {
        bad |= curl_easy_setopt(e, CURLOPT_POST, 1L) != CURLE_OK;
        /* POSTFIELDS borrows r->form (no copy inside curl that we could not wipe). */
        bad |=
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->form_len) != CURLE_OK;
        bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->form) != CURLE_OK;
    } else {
        bad |= curl_easy_setopt(e, CURLOPT_HTTPGET, 1L) != CURLE_OK;
    }
    if (strcmp(method, "PUT") == 0 || strcmp(method, "DELETE") == 0)
        bad |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, rq->timeout_ms > 0 ? rq->timeout_ms : 30000L) !=
           CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)HTTP_BODY_MAX) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_write_cb) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, r) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, http_header_cb) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HEADERDATA, r) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)r) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK;
    if (rq->ca_file && *rq->ca_file)
        bad |= curl_easy_setopt(e, CURLOPT_CAINFO, rq->ca_file) != CURLE_OK;
    if (h->proxy) {
        /* The configured proxy, for every endpoint: NOPROXY "" overrides the environment's
         * no_proxy, and curl exempts no host by itself. */
        bad |= curl_easy_setopt(e, CURLOPT_PROXY, h->proxy) != CURLE_OK;
        bad |= curl_easy_setopt(e, CURLOPT_PROXYTYPE, (long)CURLPROXY_HTTP) != CURLE_OK;
        bad |= curl_easy_setopt(e, CURLOPT_NOPROXY, "") != CURLE_OK;
    } else if (loopback) {
        /* A loopback endpoint must never go through an http_proxy from the environment. */
        bad |= curl_easy_setopt(e, CURLOPT_PROXY, "") != CURLE_OK;
    }
    if (bad)
        goto fail;

    r->next = h->reqs;
    if (h->reqs)
        h->reqs->prev = r;
    h->reqs = r;
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
        h->reqs = r->next;
        if (h->reqs)
            h->reqs->prev = NULL;
        r->next = NULL;
        goto fail;
    }
    return r;
fail:
    if (r->easy)
        curl_easy_cleanup(r->easy);
    http_slist_wipe_free(r->headers);
    http_wipe_free(r->form, r->form_len + 1);
    free(r);
    return NULL;
}

struct http_req *http_post_form(struct http *h, const char *url, const char *form,
                                const char *ca_file, long timeout_ms, http_done_cb cb, void *arg)
{
    if (!form || !cb)
        return NULL;
    struct http_request rq = {
        .method = "POST",
        .url = url,
        .ca_file = ca_file,
        .content_type = "application/x-www-form-urlencoded",
        .body = form,
        .body_len = strlen(form),
        .timeout_ms = timeout_ms,
    };
    return http_start(h, &rq, "application/json", cb, NULL, arg);
}

struct http_req *http_request(struct http *h, const struct http_request *rq, http_response_cb cb,
                              void *arg)
{
    if (!rq || !cb)
        return NULL;
    return http_start(h, rq, "application/json", NULL, cb, arg);
}

void http_cancel(struct http_req *r)
{
    /* A finished request (its callback running) has no cb left: nothing to stop. */
    if (!r || (!r->cb && !r->rcb))
        return;
    http_req_destroy(r);
}

/* Form encoding length of s: unreserved characters as they are, everything else %XX. */
static int http_form_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static size_t http_form_enclen(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += http_form_unreserved((unsigned char)*s) ? 1 : 3;
    return n;
}

static char *http_form_encode(char *dst, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (http_form_unreserved(c)) {
            *dst++ = (char)c;
        } else {
            *dst++ = '%';
            *dst++ = hex[c >> 4];
            *dst++ = hex[c & 15];
        }
    }
    return dst;
}

int http_form_add(char **form, const char *key, const char *value)
{
    if (!form || !key || !value)
        return -1;
    size_t old = *form ? strlen(*form) : 0;
    size_t n = old + (old ? 1 : 0) + http_form_enclen(key) + 1 + http_form_enclen(value) + 1;
    char *nf = malloc(n);
    if (!nf)
        return -1;
    char *p = nf;
    if (old) {
        memcpy(p, *form, old);
        p += old;
        *p++ = '&';
    }
    p = http_form_encode(p, key);
    *p++ = '=';
    p = http_form_encode(p, value);
    *p = '\0';
    /* The old copy may hold a client secret. */
    if (*form)
        http_wipe_free(*form, old);
    *form = nf;
    return 0;
}
