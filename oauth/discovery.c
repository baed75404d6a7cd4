/* OpenID Connect discovery: fetch and check an issuer's metadata document, once, at start-up.
 *
 * Why a blocking fetch (curl's easy interface) and not oauth/http.c on the loop: it runs while
 * the daemon (or --check) is being set up, before the event loop serves any device, so there is
 * nothing to keep responsive, and the daemon must not start without the endpoint anyway. The
 * fetch is bounded by a timeout and a size cap, so start-up cannot hang on a silent server. */
#include "oauth/discovery.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "common/log.h"
#include "oauth/http.h"

#define DISCOVERY_WELL_KNOWN "/.well-known/openid-configuration"
#define DISCOVERY_USER_AGENT "smtp-oauth-proxy/0.1"
#define DISCOVERY_SHOW 256 /* how much of a peer's string goes into a message */

struct discovery_body {
    char *buf;
    size_t len, cap, max;
    int too_big;
};

void discovery_clear(struct discovery *d)
{
    if (!d)
        return;
    free(d->token_endpoint);
    free(d->device_authorization_endpoint);
    d->token_endpoint = NULL;
    d->device_authorization_endpoint = NULL;
}

/* A string member of the document, escaped for a message. */
static const char *discovery_show(char *buf, size_t len, const char *s)
{
    return log_safe(buf, len, s, strlen(s));
}

/* An endpoint named `name` in doc, checked by check (and https:// only when the issuer is);
 * *out malloc'd. 1 taken, 0 absent (only allowed when !required), -1 with err. */
static int discovery_endpoint(const cJSON *doc, const char *name, int required, int https_only,
                              discovery_url_check check, char **out, char *err, size_t errlen)
{
    char shown[DISCOVERY_SHOW];
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, name);
    if (!v && !required)
        return 0;
    if (!v) {
        snprintf(err, errlen, "the discovery document has no %s", name);
        return -1;
    }
    if (!cJSON_IsString(v) || !v->valuestring) {
        snprintf(err, errlen, "the discovery document's %s is not a string", name);
        return -1;
    }
    discovery_show(shown, sizeof(shown), v->valuestring);
    switch (check(v->valuestring)) {
    case 0:
        /* A document fetched over https may not send the secret over plain http, even to a
         * loopback port: http:// endpoints are for an http:// (loopback, test) issuer only. */
        if (https_only && strncasecmp(v->valuestring, "https://", 8) != 0) {
            snprintf(err, errlen,
                     "the discovery document's %s %s is not https:// although the issuer is", name,
                     shown);
            return -1;
        }
        break;
    case -2:
        snprintf(err, errlen,
                 "the discovery document's %s %s uses http:// to a host that is not loopback; "
                 "refused (https:// only)",
                 name, shown);
        return -1;
    default:
        snprintf(err, errlen, "the discovery document's %s %s is not an https:// URL", name, shown);
        return -1;
    }
    *out = strdup(v->valuestring);
    if (!*out) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 1;
}

int discovery_parse(const char *issuer, const char *body, size_t len, discovery_url_check check,
                    struct discovery *out, char *err, size_t errlen)
{
    char shown[DISCOVERY_SHOW];
    struct discovery d = {0};
    int ret = -1, https;
    cJSON *doc = cJSON_ParseWithLength(body, len);
    const cJSON *iss;

    if (!doc) {
        snprintf(err, errlen, "the discovery document is not JSON");
        goto out;
    }
    if (!cJSON_IsObject(doc)) {
        snprintf(err, errlen, "the discovery document is not a JSON object");
        goto out;
    }
    iss = cJSON_GetObjectItemCaseSensitive(doc, "issuer");
    if (!cJSON_IsString(iss) || !iss->valuestring) {
        snprintf(err, errlen, "the discovery document has no issuer");
        goto out;
    }
    /* Exact, as OIDC Discovery 1.0 section 4.3 and RFC 8414 section 3.3 say: a document that
     * names another issuer may send our client secret to another IdP (mix-up). */
    if (strcmp(iss->valuestring, issuer) != 0) {
        size_t a = strlen(iss->valuestring), b = strlen(issuer);
        int slash = (a == b + 1 && iss->valuestring[b] == '/' &&
                     strncmp(iss->valuestring, issuer, b) == 0) ||
                    (b == a + 1 && issuer[a] == '/' && strncmp(iss->valuestring, issuer, a) == 0);
        snprintf(err, errlen, "the discovery document names issuer %s, not the configured one%s",
                 discovery_show(shown, sizeof(shown), iss->valuestring),
                 slash ? " (they differ in a trailing '/': write issuer exactly as the document "
                         "does)"
                       : "");
        goto out;
    }
    https = strncasecmp(issuer, "https://", 8) == 0;
    if (discovery_endpoint(doc, "token_endpoint", 1, https, check, &d.token_endpoint, err, errlen) <
            0 ||
        discovery_endpoint(doc, "device_authorization_endpoint", 0, https, check,
                           &d.device_authorization_endpoint, err, errlen) < 0)
        goto out;
    *out = d;
    d = (struct discovery){0};
    ret = 0;
out:
    discovery_clear(&d);
    cJSON_Delete(doc);
    return ret;
}

static size_t discovery_write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
    struct discovery_body *b = arg;
    size_t n = size * nmemb;
    if (n > b->max - b->len) {
        b->too_big = 1;
        return 0; /* curl stops with CURLE_WRITE_ERROR */
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (cap > b->max + 1)
            cap = b->max + 1;
        char *nb = realloc(b->buf, cap);
        if (!nb)
            return 0;
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, data, n);
    b->len += n;
    b->buf[b->len] = '\0';
    return n;
}

/* GET url into b. 0 with *status; -1 with err (no HTTP answer, or too big). */
static int discovery_get(const char *url, const struct discovery_opts *o, long timeout_ms,
                         struct discovery_body *b, long *status, char *err, size_t errlen)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = curl_slist_append(NULL, "Accept: application/json");
    CURL *e = curl_easy_init();
    CURLcode rc;
    int ret = -1, bad = 0;

    if (!e || !hdrs) {
        snprintf(err, errlen, "%s: cannot set up the request (out of memory)", url);
        goto out;
    }
    bad |= curl_easy_setopt(e, CURLOPT_URL, url) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_USERAGENT, DISCOVERY_USER_AGENT) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)b->max) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discovery_write_cb) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, b) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK;
    if (o->ca_file && *o->ca_file)
        bad |= curl_easy_setopt(e, CURLOPT_CAINFO, o->ca_file) != CURLE_OK;
    if (o->proxy && *o->proxy) {
        /* The configured proxy for every issuer, loopback ones too (NOPROXY "" overrides the
         * environment's no_proxy). */
        bad |= curl_easy_setopt(e, CURLOPT_PROXY, o->proxy) != CURLE_OK;
        bad |= curl_easy_setopt(e, CURLOPT_PROXYTYPE, (long)CURLPROXY_HTTP) != CURLE_OK;
        bad |= curl_easy_setopt(e, CURLOPT_NOPROXY, "") != CURLE_OK;
    } else if (http_url_is_loopback(url)) {
        /* A loopback IdP must never go through an http_proxy from the environment. */
        bad |= curl_easy_setopt(e, CURLOPT_PROXY, "") != CURLE_OK;
    }
    if (bad) {
        snprintf(err, errlen, "%s: cannot set up the request", url);
        goto out;
    }
    rc = curl_easy_perform(e);
    if (b->too_big || rc == CURLE_FILESIZE_EXCEEDED) {
        snprintf(err, errlen, "%s: the answer is larger than %zu bytes", url, b->max);
        goto out;
    }
    if (rc == CURLE_OPERATION_TIMEDOUT) {
        snprintf(err, errlen, "%s: no complete answer within %ld ms", url, timeout_ms);
        goto out;
    }
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "%s: %s", url, errbuf[0] ? errbuf : curl_easy_strerror(rc));
        goto out;
    }
    if (curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status) != CURLE_OK) {
        snprintf(err, errlen, "%s: no HTTP status", url);
        goto out;
    }
    ret = 0;
out:
    curl_slist_free_all(hdrs);
    if (e)
        curl_easy_cleanup(e);
    return ret;
}

int discovery_fetch(const char *issuer, const struct discovery_opts *o, struct discovery *out,
                    char *err, size_t errlen)
{
    struct discovery_body b = {.max = o->max_bytes ? o->max_bytes : DISCOVERY_MAX_BYTES};
    long timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : DISCOVERY_TIMEOUT_MS, status = 0;
    char *url = NULL;
    size_t n;
    int ret = -1;

    switch (o->check(issuer)) {
    case 0:
        break;
    case -2:
        snprintf(err, errlen,
                 "the issuer uses http:// to a host that is not loopback; use https://");
        goto out;
    default:
        snprintf(err, errlen, "the issuer is not an https:// URL");
        goto out;
    }
    /* The well-known path goes after the issuer's own path (OIDC Discovery 1.0 section 4):
     * a query or fragment would land in the middle. */
    if (strpbrk(issuer, "?#")) {
        snprintf(err, errlen, "an issuer has no query or fragment");
        goto out;
    }
    n = strlen(issuer);
    if (n && issuer[n - 1] == '/')
        n--;
    url = malloc(n + sizeof(DISCOVERY_WELL_KNOWN));
    if (!url) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    memcpy(url, issuer, n);
    memcpy(url + n, DISCOVERY_WELL_KNOWN, sizeof(DISCOVERY_WELL_KNOWN));

    if (discovery_get(url, o, timeout_ms, &b, &status, err, errlen) < 0)
        goto out;
    if (status != 200) {
        snprintf(err, errlen, "%s: HTTP %ld (expected 200 and the discovery document)", url,
                 status);
        goto out;
    }
    ret = discovery_parse(issuer, b.buf ? b.buf : "", b.len, o->check, out, err, errlen);
out:
    free(b.buf);
    free(url);
    return ret;
}
