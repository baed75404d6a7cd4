/* oauth/discovery.c: the parser fed whole documents (good and hostile), and the blocking fetch
 * against a scripted HTTP server on 127.0.0.1 in a thread (the fetch blocks the test's thread).
 * URLs are checked with the config's own rule, config_value_check_url. Nothing leaves loopback:
 * non-loopback http:// must be refused before any socket exists. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "oauth/discovery.h"
#include "proxy/config/config.h"

/* ---- a scripted HTTP server: one canned answer to every request, in its own thread ---- */

struct idp {
    int lfd;
    int port;
    int stop[2]; /* a byte on stop[1] ends the thread */
    pthread_t th;
    int running;
    char *answer; /* whole HTTP response; NULL: accept, read, never answer */
    size_t answer_len;
    pthread_mutex_t mu;
    int requests;
    char path[512]; /* of the last request */
    char base[64];  /* "http://127.0.0.1:PORT" */
};

/* Bounded: every wait here is at most 5 s, so a broken test cannot hang the suite. */
static int idp_wait(int fd, int stopfd)
{
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = stopfd, .events = POLLIN}};
    if (poll(p, 2, 5000) <= 0 || (p[1].revents & POLLIN))
        return -1;
    return 0;
}

static void *idp_thread(void *arg)
{
    struct idp *s = arg;
    for (;;) {
        char req[4096];
        size_t n = 0;
        if (idp_wait(s->lfd, s->stop[0]) != 0)
            break;
        int c = accept(s->lfd, NULL, NULL);
        if (c < 0)
            continue;
        while (n < sizeof(req) - 1 && idp_wait(c, s->stop[0]) == 0) {
            ssize_t r = recv(c, req + n, sizeof(req) - 1 - n, 0);
            if (r <= 0)
                break;
            n += (size_t)r;
            req[n] = '\0';
            if (strstr(req, "\r\n\r\n"))
                break;
        }
        req[n] = '\0';
        pthread_mutex_lock(&s->mu);
        s->requests++;
        if (sscanf(req, "GET %511s ", s->path) != 1)
            snprintf(s->path, sizeof(s->path), "(not a GET)");
        pthread_mutex_unlock(&s->mu);
        if (s->answer) {
            size_t off = 0;
            while (off < s->answer_len) {
                ssize_t w = send(c, s->answer + off, s->answer_len - off, MSG_NOSIGNAL);
                if (w <= 0)
                    break; /* the client gave up (a size cap): fine */
                off += (size_t)w;
            }
        } else {
            /* A server that never answers: hold the connection until the test ends. */
            struct pollfd p = {.fd = s->stop[0], .events = POLLIN};
            poll(&p, 1, 5000);
        }
        close(c);
    }
    return NULL;
}

static void idp_start(struct idp *s)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t sl = sizeof(sin);
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->lfd >= 0);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(s->lfd, 8), 0);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&sin, &sl), 0);
    s->port = ntohs(sin.sin_port);
    snprintf(s->base, sizeof(s->base), "http://127.0.0.1:%d", s->port);
    assert_int_equal(pipe(s->stop), 0);
}

/* The answer: status and body with a Content-Length (or, without one, ended by closing). */
static void idp_answer(struct idp *s, int status, const char *body, int with_length)
{
    size_t blen = strlen(body), cap = blen + 256;
    s->answer = malloc(cap);
    assert_non_null(s->answer);
    int n;
    if (with_length)
        n = snprintf(s->answer, cap,
                     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: "
                     "%zu\r\nConnection: close\r\n\r\n",
                     status, blen);
    else
        n = snprintf(s->answer, cap,
                     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nConnection: "
                     "close\r\n\r\n",
                     status);
    assert_true(n > 0 && (size_t)n < cap - blen);
    memcpy(s->answer + n, body, blen);
    s->answer_len = (size_t)n + blen;
    assert_int_equal(pthread_create(&s->th, NULL, idp_thread, s), 0);
    s->running = 1;
}

static void idp_silent(struct idp *s)
{
    assert_int_equal(pthread_create(&s->th, NULL, idp_thread, s), 0);
    s->running = 1;
}

static int idp_requests(struct idp *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->requests;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void idp_stop(struct idp *s)
{
    if (s->running) {
        assert_int_equal(write(s->stop[1], "x", 1), 1);
        pthread_join(s->th, NULL);
    }
    close(s->lfd);
    close(s->stop[0]);
    close(s->stop[1]);
    free(s->answer);
    pthread_mutex_destroy(&s->mu);
}

/* A document like Entra's, for issuer (the config's), naming doc_issuer. */
static char *doc_for(const char *doc_issuer, const char *token_endpoint, const char *device)
{
    char *d = malloc(4096);
    assert_non_null(d);
    int n = snprintf(d, 4096,
                     "{\"token_endpoint\":\"%s\",\"token_endpoint_auth_methods_supported\":"
                     "[\"client_secret_post\",\"private_key_jwt\"],\"jwks_uri\":\"%s/keys\","
                     "\"response_types_supported\":[\"code\"],\"issuer\":\"%s\"%s%s%s}",
                     token_endpoint, doc_issuer, doc_issuer,
                     device ? ",\"device_authorization_endpoint\":\"" : "", device ? device : "",
                     device ? "\"" : "");
    assert_true(n > 0 && n < 4096);
    return d;
}

static struct discovery_opts opts(long timeout_ms)
{
    struct discovery_opts o = {.timeout_ms = timeout_ms, .check = config_value_check_url};
    return o;
}

/* ---- the fetch ---- */

static void test_good_document(void **state)
{
    struct idp s;
    struct discovery d = {0};
    char issuer[128], tok[160], dev[160], err[1024] = "";
    (void)state;
    idp_start(&s);
    snprintf(issuer, sizeof(issuer), "%s/tenant1/v2.0", s.base);
    snprintf(tok, sizeof(tok), "%s/tenant1/oauth2/v2.0/token", s.base);
    snprintf(dev, sizeof(dev), "%s/tenant1/oauth2/v2.0/devicecode", s.base);
    char *doc = doc_for(issuer, tok, dev);
    idp_answer(&s, 200, doc, 1);
    struct discovery_opts o = opts(5000);
    assert_int_equal(discovery_fetch(issuer, &o, &d, err, sizeof(err)), 0);
    assert_string_equal(d.token_endpoint, tok);
    assert_string_equal(d.device_authorization_endpoint, dev);
    assert_int_equal(idp_requests(&s), 1);
    assert_string_equal(s.path, "/tenant1/v2.0/.well-known/openid-configuration");
    discovery_clear(&d);
    assert_null(d.token_endpoint);
    free(doc);
    idp_stop(&s);
}

/* Without device_authorization_endpoint: the token endpoint alone is enough. */
static void test_no_device_endpoint(void **state)
{
    struct idp s;
    struct discovery d = {0};
    char issuer[128], tok[160], err[1024] = "";
    (void)state;
    idp_start(&s);
    snprintf(issuer, sizeof(issuer), "%s/realms/mail", s.base);
    snprintf(tok, sizeof(tok), "%s/realms/mail/protocol/openid-connect/token", s.base);
    char *doc = doc_for(issuer, tok, NULL);
    idp_answer(&s, 200, doc, 0); /* no Content-Length: the body ends when the server closes */
    struct discovery_opts o = opts(5000);
    assert_int_equal(discovery_fetch(issuer, &o, &d, err, sizeof(err)), 0);
    assert_string_equal(d.token_endpoint, tok);
    assert_null(d.device_authorization_endpoint);
    discovery_clear(&d);
    free(doc);
    idp_stop(&s);
}

/* issuer = ".../v2.0/": the well-known path goes after one '/', and the document's issuer must
 * still be exactly the configured one (slash included). */
static void test_trailing_slash_issuer(void **state)
{
    struct idp s;
    struct discovery d = {0};
    char issuer[128], tok[160], err[1024] = "";
    (void)state;
    idp_start(&s);
    snprintf(issuer, sizeof(issuer), "%s/tenant1/v2.0/", s.base);
    snprintf(tok, sizeof(tok), "%s/tenant1/oauth2/v2.0/token", s.base);
    char *doc = doc_for(issuer, tok, NULL);
    idp_answer(&s, 200, doc, 1);
    struct discovery_opts o = opts(5000);
    assert_int_equal(discovery_fetch(issuer, &o, &d, err, sizeof(err)), 0);
    assert_string_equal(s.path, "/tenant1/v2.0/.well-known/openid-configuration");
    assert_string_equal(d.token_endpoint, tok);
    discovery_clear(&d);
    free(doc);
    idp_stop(&s);
}

/* The document names another issuer: refused (mix-up), nothing taken, the message says which. */
static void test_issuer_mismatch(void **state)
{
    struct idp s;
    struct discovery d = {0};
    char issuer[128], other[128], tok[160], err[1024] = "";
    (void)state;
    idp_start(&s);
    snprintf(issuer, sizeof(issuer), "%s/tenant1/v2.0", s.base);
    snprintf(other, sizeof(other), "%s/evil/v2.0", s.base);
    snprintf(tok, sizeof(tok), "%s/evil/oauth2/v2.0/token", s.base);
    char *doc = doc_for(other, tok, NULL);
    idp_answer(&s, 200, doc, 1);
    struct discovery_opts o = opts(5000);
    assert_int_equal(discovery_fetch(issuer, &o, &d, err, sizeof(err)), -1);
    assert_null(d.token_endpoint);
    assert_non_null(strstr(err, "the discovery document names issuer"));
    assert_non_null(strstr(err, other));
    assert_non_null(strstr(err, "not the configured one"));
    assert_null(strstr(err, "trailing"));
    discovery_clear(&d);
    free(doc);
    idp_stop(&s);
}

/* Configured with a trailing '/', the document without: still a mismatch, with a hint. */
static void test_issuer_mismatch_slash_hint(void **state)
{
    char err[1024] = "";
    struct discovery d = {0};
    const char *doc = "{\"issuer\":\"https://idp.example/t\",\"token_endpoint\":"
                      "\"https://idp.example/t/token\"}";
    (void)state;
    assert_int_equal(discovery_parse("https://idp.example/t/", doc, strlen(doc),
                                     config_value_check_url, &d, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "trailing '/'"));
    assert_null(d.token_endpoint);
}

static void test_http_token_endpoint_refused(void **state)
{
    struct idp s;
    struct discovery d = {0};
    char issuer[128], err[1024] = "";
    (void)state;
    idp_start(&s);
    snprintf(issuer, sizeof(issuer), "%s/t", s.base);
    char *doc = doc_for(issuer, "http://idp.example/t/token", NULL);
    idp_answer(&s, 200, doc, 1);
    struct discovery_opts o = opts(5000);
    assert_int_equal(discovery_fetch(issuer, &o, &d, err, sizeof(err)), -1);
    assert_null(d.token_endpoint);
    assert_non_null(strstr(err, "token_endpoint"));
    assert_non_null(strstr(err, "http://idp.example/t/token"));
    assert_non_null(strstr(err, "not loopback"));
    free(doc);
    idp_stop(&s);
}

/* A good token endpoint but a plain-http device endpoint elsewhere: refused as well. */
static void test_http_device_endpoint_refused(void **state)
{
    char err[1024] = "";
    struct discovery d = {0};
    const char *doc = "{\"issuer\":\"https://idp.example/t\",\"token_endpoint\":"
                      "\"https://idp.example/t/token\",\"device_authorization_endpoint\":"
                      "\"http://idp.example/t/device\"}";
    (void)state;
    assert_int_equal(discovery_parse("https://idp.example/t", doc, strlen(doc),
                                     config_value_check_url, &d, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "device_authorization_endpoint"));
    assert_null(d.token_endpoint);
    assert_null(d.device_authorization_endpoint);
}

static void test_missing_token_endpoint(void **state)
{
    struct idp s;
    struct discovery d = {0};
    char issuer[128], body[512], err[1024] = "";
    (void)state;
    idp_start(&s);
    snprintf(issuer, sizeof(issuer), "%s/t", s.base);
    snprintf(body, sizeof(body), "{\"issuer\":\"%s\",\"jwks_uri\":\"%s/keys\"}", issuer, issuer);
    idp_answer(&s, 200, body, 1);
    struct discovery_opts o = opts(5000);
    assert_int_equal(discovery_fetch(issuer, &o, &d, err, sizeof(err)), -1);
    assert_string_equal(err, "the discovery document has no token_endpoint");
    idp_stop(&s);
}

static void test_not_json(void **state)
{
    struct idp s;
    struct discovery d = {0};
    char issuer[128], err[1024] = "";
    (void)state;
    idp_start(&s);
    snprintf(issuer, sizeof(issuer), "%s/t", s.base);
    idp_answer(&s, 200, "<html><body>Sign in</body></html>", 1);
    struct discovery_opts o = opts(5000);
    assert_int_equal(discovery_fetch(issuer, &o, &d, err, sizeof(err)), -1);
    assert_string_equal(err, "the discovery document is not JSON");
    idp_stop(&s);
}

static void test_http_404(void **state)
{
    struct idp s;
    struct discovery d = {0};
    char issuer[128], want[256], err[1024] = "";
    (void)state;
    idp_start(&s);
    snprintf(issuer, sizeof(issuer), "%s/t", s.base);
    idp_answer(&s, 404, "{\"error\":\"not_found\"}", 1);
    struct discovery_opts o = opts(5000);
    assert_int_equal(discovery_fetch(issuer, &o, &d, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s/t/.well-known/openid-configuration: HTTP 404", s.base);
    assert_non_null(strstr(err, want));
    assert_null(d.token_endpoint);
    idp_stop(&s);
}

/* A body over the cap, announced by Content-Length or not: refused, never parsed. */
static void oversized(int with_length)
{
    struct idp s;
    struct discovery d = {0};
    char issuer[128], err[1024] = "";
    size_t n = DISCOVERY_MAX_BYTES + 1000;
    char *body = malloc(n + 1);
    assert_non_null(body);
    idp_start(&s);
    snprintf(issuer, sizeof(issuer), "%s/t", s.base);
    /* a valid document padded past the cap with blanks */
    int h = snprintf(body, n + 1, "{\"issuer\":\"%s\",\"token_endpoint\":\"%s/token\"}", issuer,
                     issuer);
    memset(body + h, ' ', n - (size_t)h);
    body[n] = '\0';
    idp_answer(&s, 200, body, with_length);
    struct discovery_opts o = opts(5000);
    assert_int_equal(discovery_fetch(issuer, &o, &d, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "the answer is larger than 65536 bytes"));
    assert_null(d.token_endpoint);
    free(body);
    idp_stop(&s);
}

static void test_oversized_with_length(void **state)
{
    (void)state;
    oversized(1);
}

static void test_oversized_streamed(void **state)
{
    (void)state;
    oversized(0);
}

/* A server that accepts and never answers: the fetch gives up after the timeout, not later. */
static void test_never_answers(void **state)
{
    struct idp s;
    struct discovery d = {0};
    char issuer[128], err[1024] = "";
    struct timespec t0, t1;
    (void)state;
    idp_start(&s);
    snprintf(issuer, sizeof(issuer), "%s/t", s.base);
    idp_silent(&s);
    struct discovery_opts o = opts(400);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(discovery_fetch(issuer, &o, &d, err, sizeof(err)), -1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (long)(t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_true(ms >= 350);
    assert_true(ms < 3000);
    assert_non_null(strstr(err, "no complete answer within 400 ms"));
    assert_int_equal(idp_requests(&s), 1);
    idp_stop(&s);
}

/* Nothing listening: a clear transport error, at once. */
static void test_connection_refused(void **state)
{
    struct idp s;
    struct discovery d = {0};
    char issuer[128], err[1024] = "";
    (void)state;
    idp_start(&s);
    snprintf(issuer, sizeof(issuer), "%s/t", s.base);
    idp_stop(&s); /* the port is free again */
    struct discovery_opts o = opts(5000);
    assert_int_equal(discovery_fetch(issuer, &o, &d, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "/t/.well-known/openid-configuration: "));
}

/* An issuer the config rule refuses is never fetched (no socket: these hosts do not exist). */
static void test_bad_issuer_not_fetched(void **state)
{
    struct discovery d = {0};
    char err[1024] = "";
    struct discovery_opts o = opts(5000);
    (void)state;
    assert_int_equal(discovery_fetch("http://idp.example/t", &o, &d, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not loopback"));
    assert_int_equal(discovery_fetch("ftp://idp.example/t", &o, &d, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not an https:// URL"));
    assert_int_equal(discovery_fetch("https://idp.example/t?x=1", &o, &d, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "no query or fragment"));
}

/* ---- the parser, fed hostile documents ---- */

/* An https issuer's document may not point at plain http, not even on loopback. */
static void test_https_issuer_no_http_endpoint(void **state)
{
    char err[1024] = "";
    struct discovery d = {0};
    const char *doc = "{\"issuer\":\"https://idp.example/t\",\"token_endpoint\":"
                      "\"http://127.0.0.1:8080/token\"}";
    (void)state;
    assert_int_equal(discovery_parse("https://idp.example/t", doc, strlen(doc),
                                     config_value_check_url, &d, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "is not https:// although the issuer is"));
    assert_null(d.token_endpoint);
}

static void test_parse_hostile(void **state)
{
    static const char *const docs[] = {
        "",
        "null",
        "[]",
        "\"https://idp.example/t\"",
        "{}",
        "{\"issuer\":42,\"token_endpoint\":\"https://idp.example/t/token\"}",
        "{\"issuer\":\"https://idp.example/t\",\"token_endpoint\":42}",
        "{\"issuer\":\"https://idp.example/t\",\"token_endpoint\":\"not a url\"}",
        "{\"issuer\":\"https://idp.example/t\",\"token_endpoint\":\"file:///etc/passwd\"}",
        "{\"issuer\":\"https://idp.example/t\",\"token_endpoint\":\"https://a@b/t\"}",
        "{\"issuer\":\"https://idp.example/t\",\"token_endpoint\":\"https://idp.example/\\u0001\"}",
        "{\"issuer\":\"https://idp.example/T\",\"token_endpoint\":\"https://idp.example/t/token\"}",
        "{\"issuer\":\"https://idp.example/t\",\"token_endpoint\":\"https://idp.example/t/token\","
        "\"device_authorization_endpoint\":[]}",
        "{\"issuer\":\"https://idp.example/t\",\"token_endpoint\":\"https://idp.example/t/token\"",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        char err[1024] = "";
        struct discovery d = {0};
        assert_int_equal(discovery_parse("https://idp.example/t", docs[i], strlen(docs[i]),
                                         config_value_check_url, &d, err, sizeof(err)),
                         -1);
        assert_true(err[0] != '\0');
        assert_null(d.token_endpoint);
        assert_null(d.device_authorization_endpoint);
    }
}

/* A peer's control characters never reach the message raw. */
static void test_parse_escapes_peer_text(void **state)
{
    char err[1024] = "";
    struct discovery d = {0};
    const char *doc = "{\"issuer\":\"https://evil.example/\\n\\u001b[2Jx\",\"token_endpoint\":"
                      "\"https://evil.example/token\"}";
    (void)state;
    assert_int_equal(discovery_parse("https://idp.example/t", doc, strlen(doc),
                                     config_value_check_url, &d, err, sizeof(err)),
                     -1);
    assert_null(strchr(err, '\n'));
    assert_null(strchr(err, '\x1b'));
    assert_non_null(strstr(err, "https://evil.example/"));
}

/* Fed one byte short at a time: never accepted until whole. */
static void test_parse_truncated(void **state)
{
    const char *doc = "{\"issuer\":\"https://idp.example/t\",\"token_endpoint\":"
                      "\"https://idp.example/t/token\"}";
    size_t n = strlen(doc);
    (void)state;
    for (size_t i = 0; i < n; i++) {
        char err[1024] = "";
        struct discovery d = {0};
        assert_int_equal(discovery_parse("https://idp.example/t", doc, i, config_value_check_url,
                                         &d, err, sizeof(err)),
                         -1);
        assert_null(d.token_endpoint);
    }
    char err[1024] = "";
    struct discovery d = {0};
    assert_int_equal(discovery_parse("https://idp.example/t", doc, n, config_value_check_url, &d,
                                     err, sizeof(err)),
                     0);
    assert_string_equal(d.token_endpoint, "https://idp.example/t/token");
    discovery_clear(&d);
    discovery_clear(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_document),
        cmocka_unit_test(test_no_device_endpoint),
        cmocka_unit_test(test_trailing_slash_issuer),
        cmocka_unit_test(test_issuer_mismatch),
        cmocka_unit_test(test_issuer_mismatch_slash_hint),
        cmocka_unit_test(test_http_token_endpoint_refused),
        cmocka_unit_test(test_http_device_endpoint_refused),
        cmocka_unit_test(test_missing_token_endpoint),
        cmocka_unit_test(test_not_json),
        cmocka_unit_test(test_http_404),
        cmocka_unit_test(test_oversized_with_length),
        cmocka_unit_test(test_oversized_streamed),
        cmocka_unit_test(test_never_answers),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_bad_issuer_not_fetched),
        cmocka_unit_test(test_https_issuer_no_http_endpoint),
        cmocka_unit_test(test_parse_hostile),
        cmocka_unit_test(test_parse_escapes_peer_text),
        cmocka_unit_test(test_parse_truncated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
