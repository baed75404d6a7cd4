/* The upstream client session against an in-process scripted SMTP server on 127.0.0.1 in the
 * same event loop: a table of "expect this line -> send this reply (and maybe act)". The server
 * speaks STARTTLS with throwaway certificates made at start-up, records every line it receives
 * and the DATA body, so tests assert exactly what went over the wire. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "common/log.h"
#include "proxy/upstream/client_session.h"
#include "proxy/runtime/tls.h"
#include "cert_fixture.h"
#include "scripted_upstream.h"

/* ---- certificates (made once) ---- */

static char tmpdir[] = "/tmp/test_client_session.XXXXXX";
static char good_cert[PATH_MAX], good_key[PATH_MAX];           /* localhost + 127.0.0.1 */
static char other_cert[PATH_MAX], other_key[PATH_MAX];         /* DNS:other.example only */
static char untrusted_cert[PATH_MAX], untrusted_key[PATH_MAX]; /* right names, unknown key */

/* ---- the client side ---- */

struct result {
    int done;
    int code;
    char enhanced[16];
    char text[1024];
    char err[512];
    int in_api; /* set around API calls: a callback must never see it set */
    struct client_session **free_me;
};

static void result_cb(void *arg, const struct smtp_reply *r, const char *err)
{
    struct result *res = arg;
    assert_int_equal(res->in_api, 0);
    assert_int_equal(res->done, 0);
    res->done = 1;
    if (r) {
        res->code = r->code;
        snprintf(res->enhanced, sizeof(res->enhanced), "%s", r->enhanced);
        snprintf(res->text, sizeof(res->text), "%s", r->nlines ? r->lines[0] : "");
        assert_null(err);
    } else {
        assert_non_null(err);
        snprintf(res->err, sizeof(res->err), "%s", err);
    }
    if (res->free_me) {
        client_session_free(*res->free_me);
        *res->free_me = NULL;
    }
}

struct fixture {
    struct event_base *base;
    SSL_CTX *client_ctx;
    struct srv *srv;
    struct client_session *c;
    struct client_cfg cfg;
};

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Run the loop until *flag or secs elapsed. */
static void run_until(struct event_base *base, const int *flag, double secs)
{
    struct timeval start, now, tv = {0, 20000};
    struct event *t = event_new(base, -1, EV_PERSIST, tick, NULL);
    event_add(t, &tv);
    gettimeofday(&start, NULL);
    while (!*flag) {
        event_base_loop(base, EVLOOP_ONCE);
        gettimeofday(&now, NULL);
        double el =
            (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_usec - start.tv_usec) / 1e6;
        if (el > secs)
            break;
    }
    event_free(t);
}

static struct fixture *fx_new(const struct step *steps, size_t nsteps, const char *cert,
                              const char *key, const char *ca)
{
    char err[256];
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->base = event_base_new();
    assert_non_null(f->base);
    f->client_ctx = tls_client_ctx_new(ca, err, sizeof(err));
    if (!f->client_ctx)
        fail_msg("client ctx: %s", err);
    if (steps)
        f->srv = srv_new(f->base, steps, nsteps, cert, key);
    f->cfg.host = "127.0.0.1";
    f->cfg.port = f->srv ? f->srv->port : 0;
    f->cfg.helo = "proxy.test";
    f->cfg.ssl_ctx = f->client_ctx;
    f->cfg.connect_timeout = 5;
    f->cfg.reply_timeout = 5;
    f->cfg.log_id = "t1";
    return f;
}

static void fx_free(struct fixture *f)
{
    client_session_free(f->c);
    srv_free(f->srv);
    /* A session told to QUIT owns itself until its 221, EOF or 5 s timer: let the loop run dry
     * so it is gone before the base. */
    event_base_dispatch(f->base);
    SSL_CTX_free(f->client_ctx);
    event_base_free(f->base);
    free(f);
}

static void fx_open(struct fixture *f, struct result *res)
{
    f->c = client_session_new(f->base, NULL, &f->cfg);
    assert_non_null(f->c);
    res->in_api = 1;
    client_session_open(f->c, result_cb, res);
    res->in_api = 0;
    assert_int_equal(res->done, 0);
    run_until(f->base, &res->done, 10);
    assert_int_equal(res->done, 1);
}

static void fx_command(struct fixture *f, const char *line, struct result *res)
{
    memset(res, 0, sizeof(*res));
    res->in_api = 1;
    client_session_command(f->c, line, result_cb, res);
    res->in_api = 0;
    assert_int_equal(res->done, 0);
    run_until(f->base, &res->done, 10);
    assert_int_equal(res->done, 1);
}

static void assert_server_ok(struct srv *s)
{
    if (s->failure[0])
        fail_msg("%s", s->failure);
}

#define S_GREET                                                                                    \
    {                                                                                              \
        NULL, "220 upstream.test ESMTP ready\r\n", ACT_NONE                                        \
    }
#define S_EHLO1                                                                                    \
    {                                                                                              \
        "EHLO proxy.test",                                                                         \
            "250-upstream.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 STARTTLS\r\n", ACT_NONE   \
    }
#define S_STARTTLS                                                                                 \
    {                                                                                              \
        "STARTTLS", "220 2.0.0 Ready to start TLS\r\n", ACT_STARTTLS                               \
    }
#define S_EHLO2                                                                                    \
    {                                                                                              \
        "EHLO proxy.test",                                                                         \
            "250-upstream.test Hello\r\n250-SIZE 157286400\r\n250-8BITMIME\r\n"                    \
            "250-AUTH LOGIN XOAUTH2\r\n250 ENHANCEDSTATUSCODES\r\n",                               \
            ACT_NONE                                                                               \
    }
#define S_QUIT                                                                                     \
    {                                                                                              \
        "QUIT", "221 2.0.0 Bye\r\n", ACT_CLOSE                                                     \
    }
#define N(a) (sizeof(a) / sizeof((a)[0]))

static const char open_bytes[] = "EHLO proxy.test\r\nSTARTTLS\r\nEHLO proxy.test\r\n";

/* ---- tests ---- */

static void test_open_caps_and_quit(void **state)
{
    (void)state;
    static const struct step steps[] = {S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2, S_QUIT};
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};

    fx_open(f, &res);
    assert_string_equal(res.err, "");
    assert_int_equal(res.code, 250);
    assert_true(client_session_usable(f->c));
    const struct smtp_caps *caps = client_session_caps(f->c);
    /* From the EHLO after TLS only: PIPELINING and STARTTLS were offered in clear. */
    assert_int_equal(caps->auth, SMTP_AUTH_LOGIN | SMTP_AUTH_XOAUTH2);
    assert_true(caps->has_size);
    assert_true(caps->size == 157286400ULL);
    assert_true(caps->eightbitmime);
    assert_true(caps->enhancedstatuscodes);
    assert_false(caps->pipelining);
    assert_false(caps->starttls);
    assert_true(f->srv->handshake_done);
    assert_string_equal(f->srv->sni, ""); /* no SNI for an IP literal */
    assert_int_equal(SSL_version(f->srv->ssl) >= TLS1_2_VERSION, 1);

    client_session_quit(f->c); /* frees itself after the 221 */
    f->c = NULL;
    run_until(f->base, &f->srv->closed, 10);
    assert_true(f->srv->closed);
    char *got = srv_received(f->srv);
    assert_string_equal(got, "EHLO proxy.test\r\nSTARTTLS\r\nEHLO proxy.test\r\nQUIT\r\n");
    free(got);
    assert_server_ok(f->srv);
    fx_free(f);
}

static void test_open_by_name_sends_sni(void **state)
{
    (void)state;
    static const struct step steps[] = {S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2};
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    char hosts[PATH_MAX];

    /* A resolver with no name servers and a hosts file of its own: hermetic. */
    snprintf(hosts, sizeof(hosts), "%s/hosts", tmpdir);
    FILE *h = fopen(hosts, "w");
    assert_non_null(h);
    fputs("127.0.0.1 localhost\n", h);
    fclose(h);
    struct evdns_base *dns = evdns_base_new(f->base, 0);
    assert_non_null(dns);
    assert_int_equal(evdns_base_load_hosts(dns, hosts), 0);

    f->cfg.host = "localhost";
    f->c = client_session_new(f->base, dns, &f->cfg);
    assert_non_null(f->c);
    client_session_open(f->c, result_cb, &res);
    run_until(f->base, &res.done, 10);
    assert_string_equal(res.err, "");
    assert_int_equal(res.code, 250);
    assert_string_equal(f->srv->sni, "localhost");
    assert_server_ok(f->srv);
    client_session_free(f->c);
    f->c = NULL;
    evdns_base_free(dns, 0);
    fx_free(f);
}

static void test_no_starttls_refused(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET,
        {"EHLO proxy.test", "250-upstream.test\r\n250-AUTH PLAIN XOAUTH2\r\n250 8BITMIME\r\n",
         ACT_NONE},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};

    fx_open(f, &res);
    assert_int_equal(res.code, 0);
    assert_non_null(strstr(res.err, "upstream does not offer STARTTLS"));
    assert_false(client_session_usable(f->c));
    run_until(f->base, &f->srv->closed, 5);
    char *got = srv_received(f->srv);
    assert_string_equal(got, "EHLO proxy.test\r\n"); /* never AUTH in clear */
    free(got);
    assert_server_ok(f->srv);
    fx_free(f);
}

static void test_wrong_name_refused(void **state)
{
    (void)state;
    static const struct step steps[] = {S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2};
    /* Trusted (it is its own CA here) but names only other.example; we dial 127.0.0.1. */
    struct fixture *f = fx_new(steps, N(steps), other_cert, other_key, other_cert);
    struct result res = {0};

    fx_open(f, &res);
    assert_int_equal(res.code, 0);
    assert_non_null(strstr(res.err, "upstream certificate verify failed: "));
    assert_non_null(strstr(res.err, "IP address mismatch"));
    assert_false(client_session_usable(f->c));
    run_until(f->base, &f->srv->closed, 5);
    char *got = srv_received(f->srv);
    assert_string_equal(got, "EHLO proxy.test\r\nSTARTTLS\r\n");
    free(got);
    fx_free(f);
}

static void test_wrong_dns_name_refused(void **state)
{
    (void)state;
    static const struct step steps[] = {S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2};
    struct fixture *f = fx_new(steps, N(steps), other_cert, other_key, other_cert);
    struct result res = {0};
    char hosts[PATH_MAX];

    snprintf(hosts, sizeof(hosts), "%s/hosts2", tmpdir);
    FILE *h = fopen(hosts, "w");
    assert_non_null(h);
    fputs("127.0.0.1 localhost\n", h);
    fclose(h);
    struct evdns_base *dns = evdns_base_new(f->base, 0);
    assert_int_equal(evdns_base_load_hosts(dns, hosts), 0);
    f->cfg.host = "localhost";
    f->c = client_session_new(f->base, dns, &f->cfg);
    client_session_open(f->c, result_cb, &res);
    run_until(f->base, &res.done, 10);
    assert_non_null(strstr(res.err, "upstream certificate verify failed: "));
    assert_non_null(strstr(res.err, "hostname mismatch"));
    client_session_free(f->c);
    f->c = NULL;
    evdns_base_free(dns, 0);
    fx_free(f);
}

static void test_untrusted_refused(void **state)
{
    (void)state;
    static const struct step steps[] = {S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2};
    struct fixture *f = fx_new(steps, N(steps), untrusted_cert, untrusted_key, good_cert);
    struct result res = {0};

    fx_open(f, &res);
    assert_int_equal(res.code, 0);
    assert_non_null(strstr(res.err, "upstream certificate verify failed: "));
    assert_non_null(strstr(res.err, "self-signed"));
    assert_false(client_session_usable(f->c));
    fx_free(f);
}

/* A caller's SSL_CTX without SSL_VERIFY_PEER lets the handshake finish; the session still checks
 * the verify result and refuses before a single SMTP byte goes over TLS. */
static void test_verify_result_checked_without_verify_peer(void **state)
{
    (void)state;
    static const struct step steps[] = {S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2};
    struct fixture *f = fx_new(steps, N(steps), other_cert, other_key, other_cert);
    struct result res = {0};

    SSL_CTX_set_verify(f->client_ctx, SSL_VERIFY_NONE, NULL);
    fx_open(f, &res);
    assert_int_equal(res.code, 0);
    assert_non_null(strstr(res.err, "upstream certificate verify failed: IP address mismatch"));
    run_until(f->base, &f->srv->closed, 5);
    char *got = srv_received(f->srv);
    assert_string_equal(got, "EHLO proxy.test\r\nSTARTTLS\r\n");
    free(got);
    fx_free(f);
}

/* base64 of the XOAUTH2 string, computed here independently of sasl.c. */
static char *expected_xoauth2(const char *user, const char *token)
{
    size_t n = strlen("user=") + strlen(user) + strlen("\001auth=Bearer ") + strlen(token) + 2;
    char *raw = malloc(n + 1);
    snprintf(raw, n + 1, "user=%s\001auth=Bearer %s\001\001", user, token);
    char *b64 = malloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)raw, (int)n);
    free(raw);
    return b64;
}

static void decode_and_check(const char *b64, const char *user, const char *token)
{
    size_t n = strlen(b64);
    unsigned char *raw = malloc(n);
    int len = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)n);
    assert_true(len > 0);
    while (len > 0 && n > 0 && b64[n - 1] == '=') { /* EVP_DecodeBlock keeps padding zeros */
        len--;
        n--;
    }
    char want[4096];
    int wn = snprintf(want, sizeof(want), "user=%s\001auth=Bearer %s\001\001", user, token);
    assert_int_equal(len, wn);
    assert_memory_equal(raw, want, (size_t)wn);
    free(raw);
}

static void auth_prologue(struct fixture *f)
{
    struct result res = {0};
    fx_open(f, &res);
    assert_int_equal(res.code, 250);
}

static void test_auth_short_token_inline(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET,
        S_EHLO1,
        S_STARTTLS,
        S_EHLO2,
        {"AUTH XOAUTH2 *", "235 2.7.0 Authentication successful\r\n", ACT_NONE},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    const char *user = "scanners@contoso.edu", *token = "eyJ0eXAi.short-token_123";

    auth_prologue(f);
    res.in_api = 1;
    client_session_auth_xoauth2(f->c, user, token, result_cb, &res);
    res.in_api = 0;
    run_until(f->base, &res.done, 10);
    assert_int_equal(res.code, 235);
    assert_string_equal(res.enhanced, "2.7.0");

    char *b64 = expected_xoauth2(user, token);
    char want[2048];
    snprintf(want, sizeof(want), "%sAUTH XOAUTH2 %s\r\n", open_bytes, b64);
    char *got = srv_received(f->srv);
    assert_string_equal(got, want);
    char *resp = got + strlen(open_bytes) + strlen("AUTH XOAUTH2 ");
    resp[strlen(resp) - 2] = '\0'; /* CRLF */
    decode_and_check(resp, user, token);
    free(got);
    free(b64);
    assert_server_ok(f->srv);
    fx_free(f);
}

static void test_auth_long_token_continuation(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET,
        S_EHLO1,
        S_STARTTLS,
        S_EHLO2,
        {"AUTH XOAUTH2", "334 \r\n", ACT_NONE},
        {"*", "235 2.7.0 Authentication successful\r\n", ACT_NONE},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    const char *user = "scanners@contoso.edu";
    char token[2049];
    for (size_t i = 0; i < sizeof(token) - 1; i++)
        token[i] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._"[i % 65];
    token[sizeof(token) - 1] = '\0';

    auth_prologue(f);
    client_session_auth_xoauth2(f->c, user, token, result_cb, &res);
    run_until(f->base, &res.done, 10);
    assert_int_equal(res.code, 235);

    char *b64 = expected_xoauth2(user, token);
    size_t wl = strlen(open_bytes) + strlen("AUTH XOAUTH2\r\n") + strlen(b64) + 3;
    char *want = malloc(wl);
    snprintf(want, wl, "%sAUTH XOAUTH2\r\n%s\r\n", open_bytes, b64);
    char *got = srv_received(f->srv);
    assert_string_equal(got, want);
    char *resp = got + strlen(open_bytes) + strlen("AUTH XOAUTH2\r\n");
    resp[strlen(resp) - 2] = '\0';
    decode_and_check(resp, user, token);
    free(got);
    free(want);
    free(b64);
    assert_server_ok(f->srv);
    fx_free(f);
}

static void test_auth_boundary_512(void **state)
{
    (void)state;
    /* The XOAUTH2 string is "user=" U "\x01auth=Bearer " T "\x01\x01": 20 + |U| + |T| bytes, and
     * "AUTH XOAUTH2 " (13) + base64 + CRLF (2) must be <= 512, so base64 <= 496 (a multiple of
     * 4), which holds up to 372 raw bytes. */
    const char *user = "u@x.y"; /* raw = 25 + t */
    static const struct step inline_steps[] = {
        S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2, {"AUTH XOAUTH2 *", "235 2.7.0 OK\r\n", ACT_NONE},
    };
    static const struct step cont_steps[] = {
        S_GREET,
        S_EHLO1,
        S_STARTTLS,
        S_EHLO2,
        {"AUTH XOAUTH2", "334 \r\n", ACT_NONE},
        {"*", "235 2.7.0 OK\r\n", ACT_NONE},
    };
    for (int pass = 0; pass < 2; pass++) {
        size_t t = pass == 0 ? 372 - 25 : 373 - 25; /* 372 raw -> 511-byte line; 373 -> 515 */
        char token[400];
        memset(token, 'k', t);
        token[t] = '\0';
        struct fixture *f =
            pass == 0 ? fx_new(inline_steps, N(inline_steps), good_cert, good_key, good_cert)
                      : fx_new(cont_steps, N(cont_steps), good_cert, good_key, good_cert);
        struct result res = {0};
        auth_prologue(f);
        client_session_auth_xoauth2(f->c, user, token, result_cb, &res);
        run_until(f->base, &res.done, 10);
        assert_int_equal(res.code, 235);
        char *got = srv_received(f->srv);
        const char *auth = got + strlen(open_bytes);
        if (pass == 0)
            assert_int_equal(strcspn(auth, "\n") + 1, 511);
        else
            assert_int_equal(strncmp(auth, "AUTH XOAUTH2\r\n", 14), 0);
        free(got);
        assert_server_ok(f->srv);
        fx_free(f);
    }
}

static void test_auth_json_error_challenge(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET,
        S_EHLO1,
        S_STARTTLS,
        S_EHLO2,
        {"AUTH XOAUTH2 *",
         "334 eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xl"
         "LmNvbS8ifQ==\r\n",
         ACT_NONE},
        {"", "535 5.7.8 Username and Password not accepted\r\n", ACT_NONE},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};

    auth_prologue(f);
    client_session_auth_xoauth2(f->c, "user@example.com", "expired-token", result_cb, &res);
    run_until(f->base, &res.done, 10);
    assert_int_equal(res.code, 535);
    assert_string_equal(res.enhanced, "5.7.8");
    assert_true(client_session_usable(f->c));
    char *got = srv_received(f->srv);
    size_t n = strlen(got);
    assert_true(n >= 4);
    assert_string_equal(got + n - 4, "\r\n\r\n"); /* the AUTH line, then an empty line */
    free(got);
    assert_server_ok(f->srv);
    fx_free(f);
}

/* ---- OAUTHBEARER (RFC 7628) ---- */

/* The raw OAUTHBEARER string, built here independently of sasl.c. */
static char *oauthbearer_raw(const char *user, uint16_t port, const char *token, size_t *len)
{
    size_t n = strlen(user) + strlen(token) + 128;
    char *raw = malloc(n);
    int w = snprintf(raw, n, "n,a=%s,\001host=127.0.0.1\001port=%u\001auth=Bearer %s\001\001", user,
                     (unsigned)port, token);
    assert_true(w > 0 && (size_t)w < n);
    *len = (size_t)w;
    return raw;
}

static char *expected_oauthbearer(const char *user, uint16_t port, const char *token)
{
    size_t n;
    char *raw = oauthbearer_raw(user, port, token, &n);
    char *b64 = malloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)raw, (int)n);
    free(raw);
    return b64;
}

/* Decode what the server received and compare it byte for byte with the RFC 7628 string. */
static void decode_and_check_oauthbearer(const char *b64, const char *user, uint16_t port,
                                         const char *token)
{
    size_t n = strlen(b64);
    unsigned char *raw = malloc(n);
    int len = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)n);
    assert_true(len > 0);
    while (len > 0 && n > 0 && b64[n - 1] == '=') {
        len--;
        n--;
    }
    size_t wn;
    char *want = oauthbearer_raw(user, port, token, &wn);
    assert_int_equal((size_t)len, wn);
    assert_memory_equal(raw, want, wn);
    free(want);
    free(raw);
}

static void test_oauthbearer_inline(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET,
        S_EHLO1,
        S_STARTTLS,
        S_EHLO2,
        {"AUTH OAUTHBEARER *", "235 2.7.0 Authentication successful\r\n", ACT_NONE},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    const char *user = "scanners@contoso.edu", *token = "eyJ0eXAi.short-token_123";

    auth_prologue(f);
    res.in_api = 1;
    client_session_auth(f->c, CLIENT_AUTH_OAUTHBEARER, user, token, result_cb, &res);
    res.in_api = 0;
    run_until(f->base, &res.done, 10);
    assert_int_equal(res.code, 235);

    char *b64 = expected_oauthbearer(user, f->srv->port, token);
    char want[2048];
    snprintf(want, sizeof(want), "%sAUTH OAUTHBEARER %s\r\n", open_bytes, b64);
    char *got = srv_received(f->srv);
    assert_string_equal(got, want);
    char *resp = got + strlen(open_bytes) + strlen("AUTH OAUTHBEARER ");
    resp[strlen(resp) - 2] = '\0';
    decode_and_check_oauthbearer(resp, user, f->srv->port, token);
    free(got);
    free(b64);
    assert_server_ok(f->srv);
    fx_free(f);
}

static void test_oauthbearer_continuation(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET,
        S_EHLO1,
        S_STARTTLS,
        S_EHLO2,
        {"AUTH OAUTHBEARER", "334 \r\n", ACT_NONE},
        {"*", "235 2.7.0 Authentication successful\r\n", ACT_NONE},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    const char *user = "scanners@contoso.edu";
    char token[2049];
    for (size_t i = 0; i < sizeof(token) - 1; i++)
        token[i] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._"[i % 65];
    token[sizeof(token) - 1] = '\0';

    auth_prologue(f);
    client_session_auth(f->c, CLIENT_AUTH_OAUTHBEARER, user, token, result_cb, &res);
    run_until(f->base, &res.done, 10);
    assert_int_equal(res.code, 235);

    char *b64 = expected_oauthbearer(user, f->srv->port, token);
    size_t wl = strlen(open_bytes) + strlen("AUTH OAUTHBEARER\r\n") + strlen(b64) + 3;
    char *want = malloc(wl);
    snprintf(want, wl, "%sAUTH OAUTHBEARER\r\n%s\r\n", open_bytes, b64);
    char *got = srv_received(f->srv);
    assert_string_equal(got, want);
    char *resp = got + strlen(open_bytes) + strlen("AUTH OAUTHBEARER\r\n");
    resp[strlen(resp) - 2] = '\0';
    decode_and_check_oauthbearer(resp, user, f->srv->port, token);
    free(got);
    free(want);
    free(b64);
    assert_server_ok(f->srv);
    fx_free(f);
}

/* "AUTH OAUTHBEARER " (17) + base64 + CRLF must be <= 512: base64 <= 492, raw <= 369 bytes. */
static void test_oauthbearer_boundary_512(void **state)
{
    (void)state;
    const char *user = "u@x.y";
    static const struct step inline_steps[] = {
        S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2, {"AUTH OAUTHBEARER *", "235 2.7.0 OK\r\n", ACT_NONE},
    };
    static const struct step cont_steps[] = {
        S_GREET,
        S_EHLO1,
        S_STARTTLS,
        S_EHLO2,
        {"AUTH OAUTHBEARER", "334 \r\n", ACT_NONE},
        {"*", "235 2.7.0 OK\r\n", ACT_NONE},
    };
    for (int pass = 0; pass < 2; pass++) {
        struct fixture *f =
            pass == 0 ? fx_new(inline_steps, N(inline_steps), good_cert, good_key, good_cert)
                      : fx_new(cont_steps, N(cont_steps), good_cert, good_key, good_cert);
        size_t fixed;
        free(oauthbearer_raw(user, f->srv->port, "", &fixed));
        size_t t = (pass == 0 ? 369 : 370) - fixed;
        char token[400];
        memset(token, 'k', t);
        token[t] = '\0';
        struct result res = {0};
        auth_prologue(f);
        client_session_auth(f->c, CLIENT_AUTH_OAUTHBEARER, user, token, result_cb, &res);
        run_until(f->base, &res.done, 10);
        assert_int_equal(res.code, 235);
        char *got = srv_received(f->srv);
        const char *auth = got + strlen(open_bytes);
        if (pass == 0)
            assert_int_equal(strcspn(auth, "\n") + 1, 511);
        else
            assert_int_equal(strncmp(auth, "AUTH OAUTHBEARER\r\n", 18), 0);
        free(got);
        assert_server_ok(f->srv);
        fx_free(f);
    }
}

#define S_OAB_ERROR                                                                                \
    "334 eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NvcGUiOiJodHRwczovL291dGxvb2sub2ZmaWNlLmNvbS9TTVRQ" \
    "LlNlbmQifQ==\r\n"

/* RFC 7628 3.2.3: the error challenge (base64 JSON) is answered with a single ^A, and the final
 * failure is reported; the session stays usable. Inline and after a continuation. */
static void test_oauthbearer_error_challenge(void **state)
{
    (void)state;
    static const struct step inline_steps[] = {
        S_GREET,
        S_EHLO1,
        S_STARTTLS,
        S_EHLO2,
        {"AUTH OAUTHBEARER *", S_OAB_ERROR, ACT_NONE},
        {"AQ==", "535 5.7.8 Authentication failed\r\n", ACT_NONE},
        {"NOOP", "250 2.0.0 OK\r\n", ACT_NONE},
    };
    static const struct step cont_steps[] = {
        S_GREET,
        S_EHLO1,
        S_STARTTLS,
        S_EHLO2,
        {"AUTH OAUTHBEARER", "334 \r\n", ACT_NONE},
        {"*", S_OAB_ERROR, ACT_NONE},
        {"AQ==", "535 5.7.8 Authentication failed\r\n", ACT_NONE},
        {"NOOP", "250 2.0.0 OK\r\n", ACT_NONE},
    };
    char long_tok[1201];
    memset(long_tok, 'T', sizeof(long_tok) - 1);
    long_tok[sizeof(long_tok) - 1] = '\0';
    for (int pass = 0; pass < 2; pass++) {
        struct fixture *f =
            pass == 0 ? fx_new(inline_steps, N(inline_steps), good_cert, good_key, good_cert)
                      : fx_new(cont_steps, N(cont_steps), good_cert, good_key, good_cert);
        struct result res = {0};
        auth_prologue(f);
        client_session_auth(f->c, CLIENT_AUTH_OAUTHBEARER, "user@example.com",
                            pass == 0 ? "expired-token" : long_tok, result_cb, &res);
        run_until(f->base, &res.done, 10);
        assert_int_equal(res.code, 535);
        assert_string_equal(res.enhanced, "5.7.8");
        assert_true(client_session_usable(f->c));
        fx_command(f, "NOOP", &res);
        assert_int_equal(res.code, 250);
        char *got = srv_received(f->srv);
        size_t n = strlen(got);
        assert_true(n >= 14);
        assert_string_equal(got + n - 14, "\r\nAQ==\r\nNOOP\r\n"); /* exactly "AQ==" */
        free(got);
        assert_server_ok(f->srv);
        fx_free(f);
    }
}

/* The OAUTHBEARER payload never reaches the debug log either. */
static void test_oauthbearer_never_logged(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET,
        S_EHLO1,
        S_STARTTLS,
        S_EHLO2,
        {"AUTH OAUTHBEARER *", S_OAB_ERROR, ACT_NONE},
        {"AQ==", "535 5.7.8 Authentication failed\r\n", ACT_NONE},
        {"AUTH OAUTHBEARER", "334 \r\n", ACT_NONE},
        {"*", "235 2.7.0 Authentication successful\r\n", ACT_NONE},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    const char *user = "scanners@contoso.edu";
    char short_tok[] = "SHORTSECRET-0123456789";
    char long_tok[1601];
    memset(long_tok, 'L', sizeof(long_tok) - 1);
    memcpy(long_tok, "LONGSECRET", 10);
    long_tok[sizeof(long_tok) - 1] = '\0';
    char logpath[PATH_MAX];
    snprintf(logpath, sizeof(logpath), "%s/log", tmpdir);

    enum log_level saved = log_get_level();
    log_set_level(LOGL_DEBUG);
    fflush(stderr);
    int saved_fd = dup(STDERR_FILENO);
    FILE *lf = fopen(logpath, "w+");
    assert_non_null(lf);
    dup2(fileno(lf), STDERR_FILENO);

    auth_prologue(f);
    client_session_auth(f->c, CLIENT_AUTH_OAUTHBEARER, user, short_tok, result_cb, &res);
    run_until(f->base, &res.done, 10);
    int code1 = res.code;
    memset(&res, 0, sizeof(res));
    client_session_auth(f->c, CLIENT_AUTH_OAUTHBEARER, user, long_tok, result_cb, &res);
    run_until(f->base, &res.done, 10);

    dup2(saved_fd, STDERR_FILENO);
    close(saved_fd);
    log_set_level(saved);
    assert_int_equal(code1, 535);
    assert_int_equal(res.code, 235);

    static char logbuf[65536];
    rewind(lf);
    size_t n = fread(logbuf, 1, sizeof(logbuf) - 1, lf);
    logbuf[n] = '\0';
    fclose(lf);
    unlink(logpath);
    char *b64s = expected_oauthbearer(user, f->srv->port, short_tok);
    char *b64l = expected_oauthbearer(user, f->srv->port, long_tok);
    assert_non_null(strstr(logbuf, "line=\"AUTH OAUTHBEARER <redacted>\""));
    assert_non_null(strstr(logbuf, "line=\"<redacted>\""));
    assert_non_null(strstr(logbuf, "5.7.8 Authentication failed"));
    assert_null(strstr(logbuf, "SECRET"));
    char slice[17];
    for (size_t off = 40; off + 16 <= strlen(b64s); off += 8) {
        memcpy(slice, b64s + off, 16);
        slice[16] = '\0';
        assert_null(strstr(logbuf, slice));
    }
    for (size_t off = 40; off + 16 <= strlen(b64l); off += 64) {
        memcpy(slice, b64l + off, 16);
        slice[16] = '\0';
        assert_null(strstr(logbuf, slice));
    }
    free(b64s);
    free(b64l);
    assert_server_ok(f->srv);
    fx_free(f);
}

/* ---- DATA with a 5 MB body and backpressure ---- */

struct writer {
    struct fixture *f;
    const char *body;
    size_t len, off;
    size_t high, chunk;
    int drains;
    size_t max_pending;
};

static void writer_pump(struct writer *w)
{
    while (w->off < w->len && client_session_pending(w->f->c) <= w->high) {
        size_t n = w->len - w->off < w->chunk ? w->len - w->off : w->chunk;
        client_session_write(w->f->c, w->body + w->off, n);
        w->off += n;
        size_t p = client_session_pending(w->f->c);
        if (p > w->max_pending)
            w->max_pending = p;
    }
}

static void writer_drain(void *arg)
{
    struct writer *w = arg;
    w->drains++;
    writer_pump(w);
}

static char *make_body(size_t want, size_t *len)
{
    char *b = malloc(want + 128);
    size_t o = 0;
    for (unsigned i = 0; o < want; i++) {
        /* 8-bit bytes too: the body is opaque to the session. */
        int c = 0x80 + (int)(i % 64);
        o += (size_t)sprintf(b + o, "line %07u the quick brown fox jumps over the lazy dog %c\r\n",
                             i, c);
    }
    *len = o;
    return b;
}

static void test_data_5mb_backpressure(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET,
        S_EHLO1,
        S_STARTTLS,
        S_EHLO2,
        {"MAIL FROM:<scanners@contoso.edu>", "250 2.1.0 Sender OK\r\n", ACT_NONE},
        {"RCPT TO:<someone@example.com>", "250 2.1.5 Recipient OK\r\n", ACT_NONE},
        {"DATA", "354 Start mail input; end with <CRLF>.<CRLF>\r\n", ACT_DATA},
        {".", "250 2.0.0 OK <queued-as-123>\r\n", ACT_NONE},
        S_QUIT,
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    f->srv->pause_ms = 300;

    auth_prologue(f);
    fx_command(f, "MAIL FROM:<scanners@contoso.edu>", &res);
    assert_int_equal(res.code, 250);
    fx_command(f, "RCPT TO:<someone@example.com>", &res);
    assert_int_equal(res.code, 250);
    fx_command(f, "DATA", &res);
    assert_int_equal(res.code, 354);

    struct writer w = {0};
    w.f = f;
    w.body = make_body(5 * 1024 * 1024, &w.len);
    w.high = 256 * 1024;
    w.chunk = 64 * 1024;
    client_session_set_drain_cb(f->c, 64 * 1024, writer_drain, &w);
    writer_pump(&w);
    assert_true(w.off < w.len); /* it had to stop: the server is not reading */
    struct timeval t0, now;
    gettimeofday(&t0, NULL);
    while (w.off < w.len) {
        event_base_loop(f->base, EVLOOP_ONCE);
        gettimeofday(&now, NULL);
        if (now.tv_sec - t0.tv_sec > 30)
            fail_msg("body not written after 30 s (%zu of %zu)", w.off, w.len);
    }
    assert_int_equal(w.off, w.len);
    assert_true(w.drains >= 2);
    /* Bounded memory: never much more than the high mark plus one chunk queued. */
    assert_true(w.max_pending <= w.high + w.chunk);

    memset(&res, 0, sizeof(res));
    client_session_data_end(f->c, result_cb, &res);
    run_until(f->base, &res.done, 30);
    assert_int_equal(res.code, 250);
    assert_string_equal(res.enhanced, "2.0.0");

    assert_int_equal(evbuffer_get_length(f->srv->body), w.len);
    assert_memory_equal(evbuffer_pullup(f->srv->body, -1), w.body, w.len);
    free((void *)w.body);

    client_session_quit(f->c);
    f->c = NULL;
    run_until(f->base, &f->srv->closed, 10);
    char *got = srv_received(f->srv);
    assert_non_null(strstr(got, "DATA\r\n.\r\nQUIT\r\n")); /* "." as recorded by the server */
    free(got);
    assert_server_ok(f->srv);
    fx_free(f);
}

/* Debug logs show commands and replies but never the AUTH payload. */
static void test_auth_never_logged(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET,
        S_EHLO1,
        S_STARTTLS,
        S_EHLO2,
        {"AUTH XOAUTH2 *", "535 5.7.3 Authentication unsuccessful\r\n", ACT_NONE},
        {"AUTH XOAUTH2", "334 \r\n", ACT_NONE},
        {"*", "235 2.7.0 Authentication successful\r\n", ACT_NONE},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    const char *user = "scanners@contoso.edu";
    char short_tok[] = "SHORTSECRET-0123456789";
    char long_tok[1601];
    memset(long_tok, 'L', sizeof(long_tok) - 1);
    memcpy(long_tok, "LONGSECRET", 10);
    long_tok[sizeof(long_tok) - 1] = '\0';
    char logpath[PATH_MAX];
    snprintf(logpath, sizeof(logpath), "%s/log", tmpdir);

    enum log_level saved = log_get_level();
    log_set_level(LOGL_DEBUG);
    fflush(stderr);
    int saved_fd = dup(STDERR_FILENO);
    FILE *lf = fopen(logpath, "w+");
    assert_non_null(lf);
    dup2(fileno(lf), STDERR_FILENO);

    auth_prologue(f);
    client_session_auth_xoauth2(f->c, user, short_tok, result_cb, &res);
    run_until(f->base, &res.done, 10);
    int code1 = res.code;
    memset(&res, 0, sizeof(res));
    client_session_auth_xoauth2(f->c, user, long_tok, result_cb, &res);
    run_until(f->base, &res.done, 10);

    dup2(saved_fd, STDERR_FILENO);
    close(saved_fd);
    log_set_level(saved);
    assert_int_equal(code1, 535);
    assert_int_equal(res.code, 235);

    static char logbuf[65536];
    rewind(lf);
    size_t n = fread(logbuf, 1, sizeof(logbuf) - 1, lf);
    logbuf[n] = '\0';
    fclose(lf);
    unlink(logpath);
    char *b64s = expected_xoauth2(user, short_tok), *b64l = expected_xoauth2(user, long_tok);
    assert_non_null(strstr(logbuf, "line=\"AUTH XOAUTH2 <redacted>\""));
    assert_non_null(strstr(logbuf, "line=\"<redacted>\""));
    assert_non_null(strstr(logbuf, "5.7.3 Authentication unsuccessful"));
    assert_null(strstr(logbuf, "SECRET"));
    /* No stretch of either base64 string either (compare a 16-byte slice past the user part). */
    char slice[17];
    for (size_t off = 40; off + 16 <= strlen(b64s); off += 8) {
        memcpy(slice, b64s + off, 16);
        slice[16] = '\0';
        assert_null(strstr(logbuf, slice));
    }
    for (size_t off = 40; off + 16 <= strlen(b64l); off += 64) {
        memcpy(slice, b64l + off, 16);
        slice[16] = '\0';
        assert_null(strstr(logbuf, slice));
    }
    free(b64s);
    free(b64l);
    assert_server_ok(f->srv);
    fx_free(f);
}

/* The server goes away mid-body: a writer paused on backpressure is woken (pending is 0), and
 * data_end reports the loss from the loop. */
static void test_connection_lost_during_body(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2, {"DATA", "354 go ahead\r\n", ACT_CLOSE},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    struct writer w = {0};
    size_t len;
    char *body = make_body(4 * 1024 * 1024, &len);

    auth_prologue(f);
    fx_command(f, "DATA", &res);
    assert_int_equal(res.code, 354);
    client_session_set_drain_cb(f->c, 1024, writer_drain, &w);
    w.f = f;
    w.body = body;
    w.len = len;
    w.high = 256 * 1024;
    w.chunk = 64 * 1024;
    writer_pump(&w);
    run_until(f->base, &f->srv->closed, 5);
    /* Keep writing as the drain callback asks, until the loss is noticed. */
    struct timeval t0, now;
    gettimeofday(&t0, NULL);
    while (client_session_usable(f->c)) {
        event_base_loop(f->base, EVLOOP_ONCE);
        gettimeofday(&now, NULL);
        if (now.tv_sec - t0.tv_sec > 10)
            fail_msg("loss not noticed");
    }
    assert_true(w.drains >= 1);
    assert_int_equal(client_session_pending(f->c), 0);
    memset(&res, 0, sizeof(res));
    res.in_api = 1;
    client_session_data_end(f->c, result_cb, &res);
    res.in_api = 0;
    run_until(f->base, &res.done, 5);
    assert_int_equal(res.code, 0);
    assert_non_null(strstr(res.err, "not usable"));
    free(body);
    fx_free(f);
}

/* The upstream stops reading the body: after reply_timeout without progress the session fails
 * (a writer paused on backpressure is woken) instead of holding the device forever. */
static void test_body_stalled_upstream_times_out(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2, {"DATA", "354 go ahead\r\n", ACT_DATA},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    struct writer w = {0};
    struct timeval t0, now;

    f->srv->pause_ms = 900000; /* the server reads nothing more for the rest of the test */
    f->cfg.reply_timeout = 1;
    auth_prologue(f);
    fx_command(f, "DATA", &res);
    assert_int_equal(res.code, 354);
    w.f = f;
    w.body = make_body(16 * 1024 * 1024, &w.len);
    w.high = 256 * 1024;
    w.chunk = 64 * 1024;
    client_session_set_drain_cb(f->c, 64 * 1024, writer_drain, &w);
    writer_pump(&w);
    /* a tick keeps the loop turning so the bound below is checked even when nothing happens */
    struct timeval tick_tv = {0, 20000};
    struct event *t = event_new(f->base, -1, EV_PERSIST, tick, NULL);
    event_add(t, &tick_tv);
    gettimeofday(&t0, NULL);
    double el = 0;
    while (client_session_usable(f->c) && el < 15) {
        event_base_loop(f->base, EVLOOP_ONCE);
        gettimeofday(&now, NULL);
        el = (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_usec - t0.tv_usec) / 1e6;
    }
    event_free(t);
    if (client_session_usable(f->c))
        fail_msg("a stalled upstream was not noticed in 15 s (%zu of %zu written)", w.off, w.len);
    assert_true(el >= 0.9 && el < 5.0);
    assert_true(evbuffer_get_length(f->srv->body) < w.len); /* it really stalled */
    memset(&res, 0, sizeof(res));
    res.in_api = 1;
    client_session_data_end(f->c, result_cb, &res);
    res.in_api = 0;
    run_until(f->base, &res.done, 5);
    assert_int_equal(res.code, 0);
    assert_non_null(strstr(res.err, "the upstream took nothing for 1s"));
    free((void *)w.body);
    fx_free(f);
}

/* ---- failures ---- */

static void test_greeting_421(void **state)
{
    (void)state;
    static const struct step steps[] = {
        {NULL, "421 4.3.2 Service not available, closing channel\r\n", ACT_CLOSE},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};

    fx_open(f, &res);
    assert_int_equal(res.code, 421);
    assert_string_equal(res.enhanced, "4.3.2");
    assert_string_equal(res.err, "");
    assert_false(client_session_usable(f->c));

    /* A request on the dead session is answered from the loop, not from the call. */
    fx_command(f, "NOOP", &res);
    assert_int_equal(res.code, 0);
    assert_non_null(strstr(res.err, "not usable"));
    fx_free(f);
}

static void test_connection_refused(void **state)
{
    (void)state;
    struct fixture *f = fx_new(NULL, 0, NULL, NULL, good_cert);
    struct result res = {0};
    struct sockaddr_in sin;
    socklen_t slen = sizeof(sin);

    /* A port that was just free: bind, learn it, close. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    getsockname(fd, (struct sockaddr *)&sin, &slen);
    close(fd);
    f->cfg.port = ntohs(sin.sin_port);

    fx_open(f, &res);
    assert_int_equal(res.code, 0);
    assert_non_null(strstr(res.err, "cannot connect to 127.0.0.1:"));
    assert_non_null(strstr(res.err, "refused"));
    assert_false(client_session_usable(f->c));
    fx_free(f);
}

static void test_not_ip_without_resolver(void **state)
{
    (void)state;
    struct fixture *f = fx_new(NULL, 0, NULL, NULL, good_cert);
    struct result res = {0};
    f->cfg.host = "smtp.example.invalid";
    f->cfg.port = 25;
    fx_open(f, &res);
    assert_non_null(strstr(res.err, "no resolver"));
    fx_free(f);
}

static void test_server_closes_mid_command(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2, {"MAIL FROM:<a@b.c>", NULL, ACT_CLOSE},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};

    auth_prologue(f);
    fx_command(f, "MAIL FROM:<a@b.c>", &res);
    assert_int_equal(res.code, 0);
    assert_non_null(strstr(res.err, "upstream closed the connection"));
    assert_false(client_session_usable(f->c));
    assert_int_equal(client_session_pending(f->c), 0);
    fx_free(f);
}

static void test_reply_timeout(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2, {"MAIL FROM:<a@b.c>", NULL, ACT_HANG},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    struct timeval t0, t1;

    f->cfg.reply_timeout = 1;
    auth_prologue(f);
    gettimeofday(&t0, NULL);
    fx_command(f, "MAIL FROM:<a@b.c>", &res);
    gettimeofday(&t1, NULL);
    double el = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_usec - t0.tv_usec) / 1e6;
    assert_int_equal(res.code, 0);
    assert_non_null(strstr(res.err, "timeout"));
    assert_true(el >= 0.9 && el < 3.0);
    assert_false(client_session_usable(f->c));
    fx_free(f);
}

/* The final '.' waits [upstream] timeout like every other reply, not RFC 5321's 10 minutes: a
 * device waiting on it gives up and resends long before. */
static void test_final_dot_reply_timeout(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET,
        S_EHLO1,
        S_STARTTLS,
        S_EHLO2,
        {"DATA", "354 go ahead\r\n", ACT_DATA},
        {".", NULL, ACT_HANG},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    struct timeval t0, t1;

    f->cfg.reply_timeout = 1;
    auth_prologue(f);
    fx_command(f, "DATA", &res);
    assert_int_equal(res.code, 354);
    client_session_write(f->c, "Subject: t\r\n\r\nhi\r\n", 19);
    memset(&res, 0, sizeof(res));
    gettimeofday(&t0, NULL);
    client_session_data_end(f->c, result_cb, &res);
    run_until(f->base, &res.done, 10);
    gettimeofday(&t1, NULL);
    double el = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_usec - t0.tv_usec) / 1e6;
    assert_int_equal(res.done, 1);
    assert_int_equal(res.code, 0);
    assert_non_null(strstr(res.err, "timeout"));
    assert_true(el >= 0.9 && el < 3.0);
    fx_free(f);
}

static void test_greeting_timeout(void **state)
{
    (void)state;
    static const struct step steps[] = {{NULL, NULL, ACT_HANG}};
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    f->cfg.connect_timeout = 1;
    fx_open(f, &res);
    assert_non_null(strstr(res.err, "timeout connecting"));
    fx_free(f);
}

static void test_protocol_violation(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2, {"NOOP", "250-first\r\n550 second\r\n", ACT_NONE},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    auth_prologue(f);
    fx_command(f, "NOOP", &res);
    assert_int_equal(res.code, 0);
    assert_non_null(strstr(res.err, "protocol violation"));
    assert_false(client_session_usable(f->c));
    fx_free(f);
}

static void test_8bit_reply_text(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET,
        S_EHLO1,
        S_STARTTLS,
        S_EHLO2,
        {"NOOP", "250 2.0.0 OK caf\xc3\xa9 \xff\x01\r\n", ACT_NONE},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    auth_prologue(f);
    fx_command(f, "NOOP", &res);
    assert_int_equal(res.code, 250);
    assert_string_equal(res.text, "2.0.0 OK caf\xc3\xa9 \xff\x01");
    fx_free(f);
}

/* QUIT that is never answered: the session closes and frees itself after 5 s. */
static void test_quit_unanswered(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2, {"QUIT", NULL, ACT_HANG}};
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct timeval t0, t1;

    auth_prologue(f);
    gettimeofday(&t0, NULL);
    client_session_quit(f->c);
    f->c = NULL;
    run_until(f->base, &f->srv->closed, 10);
    gettimeofday(&t1, NULL);
    assert_true(f->srv->closed);
    assert_true(t1.tv_sec - t0.tv_sec >= 4 && t1.tv_sec - t0.tv_sec <= 7);
    assert_server_ok(f->srv);
    fx_free(f);
}

/* ---- freeing from inside callbacks (ASan watches) ---- */

static void test_free_inside_callbacks(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2, {"MAIL FROM:<a@b.c>", NULL, ACT_CLOSE}};
    /* 1. the successful open's callback frees the session */
    {
        struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
        struct result res = {0};
        res.free_me = &f->c;
        fx_open(f, &res);
        assert_int_equal(res.code, 250);
        assert_null(f->c);
        run_until(f->base, &f->srv->closed, 5);
        fx_free(f);
    }
    /* 2. a lost connection's callback frees it */
    {
        struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
        struct result res = {0};
        auth_prologue(f);
        res.free_me = &f->c;
        client_session_command(f->c, "MAIL FROM:<a@b.c>", result_cb, &res);
        run_until(f->base, &res.done, 10);
        assert_non_null(strstr(res.err, "closed"));
        assert_null(f->c);
        fx_free(f);
    }
    /* 3. an at-once failure (the session is dead) reported from the loop frees it */
    {
        struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
        struct result res = {0};
        f->cfg.port = 1; /* nothing listens on 127.0.0.1:1 */
        fx_open(f, &res);
        memset(&res, 0, sizeof(res));
        res.free_me = &f->c;
        res.in_api = 1;
        client_session_command(f->c, "NOOP", result_cb, &res);
        res.in_api = 0;
        assert_int_equal(res.done, 0);
        run_until(f->base, &res.done, 5);
        assert_null(f->c);
        fx_free(f);
    }
    /* 4. freed inside the callback of a refused open, then a 421 greeting */
    {
        static const struct step s421[] = {{NULL, "421 busy\r\n", ACT_NONE}};
        struct fixture *f = fx_new(s421, N(s421), good_cert, good_key, good_cert);
        struct result res = {0};
        res.free_me = &f->c;
        fx_open(f, &res);
        assert_int_equal(res.code, 421);
        assert_null(f->c);
        fx_free(f);
    }
}

struct drain_free {
    struct client_session **c;
    int called;
};

static void drain_frees(void *arg)
{
    struct drain_free *d = arg;
    d->called = 1;
    client_session_free(*d->c);
    *d->c = NULL;
}

static void test_free_inside_drain_callback(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2, {"DATA", "354 go ahead\r\n", ACT_DATA},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    struct drain_free d = {&f->c, 0};
    size_t len;
    char *body = make_body(1024 * 1024, &len);

    auth_prologue(f);
    fx_command(f, "DATA", &res);
    assert_int_equal(res.code, 354);
    client_session_set_drain_cb(f->c, 1024, drain_frees, &d);
    client_session_write(f->c, body, len);
    assert_true(client_session_pending(f->c) > 1024);
    assert_int_equal(d.called, 0);
    run_until(f->base, &d.called, 10);
    assert_int_equal(d.called, 1);
    assert_null(f->c);
    free(body);
    fx_free(f);
}

/* bytes sent in clear right after "220 Ready to start TLS" must not be taken for post-TLS
 * replies (CVE-2011-0411): here an injected EHLO reply that would advertise AUTH PLAIN. */
static void test_starttls_injection_discarded(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET,
        S_EHLO1,
        {"STARTTLS", "220 2.0.0 Ready to start TLS\r\n250-injected.example\r\n250 AUTH PLAIN\r\n",
         ACT_STARTTLS},
        {"EHLO proxy.test", "250-upstream.test\r\n250 AUTH XOAUTH2\r\n", ACT_NONE},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};

    fx_open(f, &res);
    assert_string_equal(res.err, "");
    assert_int_equal(res.code, 250);
    assert_string_equal(res.text, "upstream.test");
    assert_int_equal(client_session_caps(f->c)->auth, SMTP_AUTH_XOAUTH2);
    char *got = srv_received(f->srv);
    assert_string_equal(got, open_bytes);
    free(got);
    assert_server_ok(f->srv);
    fx_free(f);
}

static void test_misuse_reported_from_loop(void **state)
{
    (void)state;
    static const struct step steps[] = {S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2};
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};

    /* Before open: not usable. */
    f->c = client_session_new(f->base, NULL, &f->cfg);
    fx_command(f, "NOOP", &res);
    assert_non_null(strstr(res.err, "not usable"));
    client_session_free(f->c);
    f->c = NULL;

    auth_prologue(f);
    /* A line with CRLF inside and an over-long line are refused without closing. */
    fx_command(f, "NOOP\r\nRSET", &res);
    assert_non_null(strstr(res.err, "invalid command line"));
    char longline[600];
    memset(longline, 'x', sizeof(longline) - 1);
    longline[sizeof(longline) - 1] = '\0';
    fx_command(f, longline, &res);
    assert_non_null(strstr(res.err, "invalid command line"));
    /* A token with a forbidden byte is never sent. */
    memset(&res, 0, sizeof(res));
    client_session_auth_xoauth2(f->c, "u@x.y", "bad\001token", result_cb, &res);
    assert_int_equal(res.done, 0);
    run_until(f->base, &res.done, 5);
    assert_non_null(strstr(res.err, "XOAUTH2"));
    /* data_end outside DATA */
    memset(&res, 0, sizeof(res));
    client_session_data_end(f->c, result_cb, &res);
    run_until(f->base, &res.done, 5);
    assert_non_null(strstr(res.err, "without a 354"));
    assert_true(client_session_usable(f->c));
    char *got = srv_received(f->srv);
    assert_string_equal(got, open_bytes);
    free(got);
    fx_free(f);
}

static int group_setup(void **state)
{
    (void)state;
    if (getenv("SOP_TEST_DEBUG"))
        log_set_level(LOGL_DEBUG);
    else
        log_set_level(LOGL_ERROR);
    if (!mkdtemp(tmpdir))
        return -1;
    if (cert_fixture_make(tmpdir, "good", "localhost", "DNS:localhost,IP:127.0.0.1", good_cert,
                          sizeof(good_cert), good_key, sizeof(good_key)) ||
        cert_fixture_make(tmpdir, "other", "other.example", "DNS:other.example", other_cert,
                          sizeof(other_cert), other_key, sizeof(other_key)) ||
        cert_fixture_make(tmpdir, "untrusted", "untrusted localhost", "DNS:localhost,IP:127.0.0.1",
                          untrusted_cert, sizeof(untrusted_cert), untrusted_key,
                          sizeof(untrusted_key)))
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    const char *names[] = {"good.pem",      "good.key",      "other.pem", "other.key",
                           "untrusted.pem", "untrusted.key", "hosts",     "hosts2"};
    char p[PATH_MAX];
    for (size_t i = 0; i < N(names); i++) {
        snprintf(p, sizeof(p), "%s/%s", tmpdir, names[i]);
        unlink(p);
    }
    rmdir(tmpdir);
    return 0;
}

/* ---- issue 11: the upstream kinds ---- */

/* The log (stderr) of what runs between log_capture_start and log_capture_end, at debug. */
static int cap_saved_fd = -1;
static FILE *cap_file;
static enum log_level cap_level;
static char cap_path[PATH_MAX];

static void log_capture_start(void)
{
    snprintf(cap_path, sizeof(cap_path), "%s/caplog", tmpdir);
    cap_level = log_get_level();
    log_set_level(LOGL_DEBUG);
    fflush(stderr);
    cap_saved_fd = dup(STDERR_FILENO);
    cap_file = fopen(cap_path, "w+");
    assert_non_null(cap_file);
    dup2(fileno(cap_file), STDERR_FILENO);
}

static char *log_capture_end(void)
{
    static char buf[65536];
    fflush(stderr);
    dup2(cap_saved_fd, STDERR_FILENO);
    close(cap_saved_fd);
    log_set_level(cap_level);
    rewind(cap_file);
    size_t n = fread(buf, 1, sizeof(buf) - 1, cap_file);
    buf[n] = '\0';
    fclose(cap_file);
    unlink(cap_path);
    return buf;
}

static char *b64_of(const void *data, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    assert_non_null(out);
    EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

/* AUTH PLAIN: NUL user NUL password in one base64 on the AUTH line; never in the log. */
static void test_auth_plain(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET,
        S_EHLO1,
        S_STARTTLS,
        S_EHLO2,
        {"AUTH PLAIN *", "235 2.7.0 Authentication successful\r\n", ACT_NONE},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    const char *user = "relay-user", *pw = "Pa55-W0rd secret";

    auth_prologue(f);
    log_capture_start();
    client_session_auth(f->c, CLIENT_AUTH_PLAIN, user, pw, result_cb, &res);
    run_until(f->base, &res.done, 10);
    char *log = log_capture_end();
    assert_int_equal(res.code, 235);
    char raw[64];
    size_t rl = (size_t)snprintf(raw, sizeof(raw), "%c%s%c%s", 0, user, 0, pw);
    char *b64 = b64_of(raw, rl), want[512];
    snprintf(want, sizeof(want), "%sAUTH PLAIN %s\r\n", open_bytes, b64);
    char *got = srv_received(f->srv);
    assert_string_equal(got, want);
    free(got);
    assert_non_null(strstr(log, "line=\"AUTH PLAIN <redacted>\""));
    assert_null(strstr(log, b64));
    assert_null(strstr(log, "Pa55"));
    free(b64);
    assert_string_equal(client_auth_mech_name(CLIENT_AUTH_PLAIN), "PLAIN");
    assert_server_ok(f->srv);
    fx_free(f);
}

/* AUTH LOGIN: the user name after the first 334, the password after the second, whatever the
 * prompts say; a 535 is reported as it came. */
static void test_auth_login(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET,
        S_EHLO1,
        S_STARTTLS,
        S_EHLO2,
        {"AUTH LOGIN", "334 VXNlcm5hbWU6\r\n", ACT_NONE},
        {"*", "334 UGFzc3dvcmQ6\r\n", ACT_NONE},
        {"*", "535 5.7.3 Authentication unsuccessful\r\n", ACT_NONE},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    const char *user = "contoso.app.tenant", *pw = "Wrong~Secret";

    auth_prologue(f);
    log_capture_start();
    client_session_auth(f->c, CLIENT_AUTH_LOGIN, user, pw, result_cb, &res);
    run_until(f->base, &res.done, 10);
    char *log = log_capture_end();
    assert_int_equal(res.code, 535);
    assert_string_equal(res.enhanced, "5.7.3");
    char *bu = b64_of(user, strlen(user)), *bp = b64_of(pw, strlen(pw)), want[512];
    snprintf(want, sizeof(want), "%sAUTH LOGIN\r\n%s\r\n%s\r\n", open_bytes, bu, bp);
    char *got = srv_received(f->srv);
    assert_string_equal(got, want);
    free(got);
    assert_null(strstr(log, bp));
    assert_null(strstr(log, "Wrong~Secret"));
    free(bu);
    free(bp);
    assert_true(client_session_usable(f->c));
    assert_server_ok(f->srv);
    fx_free(f);
}

/* Opportunistic: no STARTTLS offered, so the session is ready in plain text (logged), and it
 * still refuses to send credentials there. */
static void test_opportunistic_plain(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET,
        {"EHLO proxy.test", "250-mx.test\r\n250-SIZE 1000\r\n250 AUTH PLAIN\r\n", ACT_NONE},
        {"MAIL FROM:<a@b.test>", "250 2.1.0 OK\r\n", ACT_NONE},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    f->cfg.tls = CLIENT_TLS_OPPORTUNISTIC;
    log_capture_start();
    fx_open(f, &res);
    char *log = log_capture_end();
    assert_int_equal(res.code, 250);
    assert_false(client_session_tls_active(f->c));
    assert_non_null(strstr(log, "event=upstream_connected session=t1 host=127.0.0.1"));
    assert_non_null(strstr(log, "tls=none reason=\"no STARTTLS offered\""));
    memset(&res, 0, sizeof(res));
    client_session_auth(f->c, CLIENT_AUTH_PLAIN, "u", "p", result_cb, &res);
    run_until(f->base, &res.done, 10);
    assert_non_null(strstr(res.err, "without TLS"));
    fx_command(f, "MAIL FROM:<a@b.test>", &res);
    assert_int_equal(res.code, 250);
    char *got = srv_received(f->srv);
    assert_string_equal(got, "EHLO proxy.test\r\nMAIL FROM:<a@b.test>\r\n");
    free(got);
    assert_server_ok(f->srv);
    fx_free(f);
}

/* Opportunistic with STARTTLS offered: TLS as usual (verified). */
static void test_opportunistic_tls(void **state)
{
    (void)state;
    static const struct step steps[] = {S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2};
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    f->cfg.tls = CLIENT_TLS_OPPORTUNISTIC;
    fx_open(f, &res);
    assert_int_equal(res.code, 250);
    assert_true(client_session_tls_active(f->c));
    assert_true(f->srv->handshake_done);
    assert_server_ok(f->srv);
    fx_free(f);
}

/* A name with an IPv6 address where nothing listens and an IPv4 one where the server does:
 * the first is tried first (RFC 8305: IPv6 first), refused, logged by address, and the mail
 * goes over the second. */
static void test_connect_every_address(void **state)
{
    (void)state;
    static const struct step steps[] = {S_GREET, S_EHLO1, S_STARTTLS, S_EHLO2};
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    char hosts[PATH_MAX];
    snprintf(hosts, sizeof(hosts), "%s/hosts2", tmpdir);
    FILE *h = fopen(hosts, "w");
    assert_non_null(h);
    fputs("127.0.0.1 localhost\n::1 localhost\n", h);
    fclose(h);
    struct evdns_base *dns = evdns_base_new(f->base, 0);
    assert_non_null(dns);
    assert_int_equal(evdns_base_load_hosts(dns, hosts), 0);
    /* is the server's port free on ::1? (it listens on 127.0.0.1 only) */
    int s6 = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(f->srv->port)};
    a6.sin6_addr = in6addr_loopback;
    int v6_ok = s6 >= 0 && bind(s6, (struct sockaddr *)&a6, sizeof(a6)) == 0;
    if (s6 >= 0)
        close(s6);

    f->cfg.host = "localhost";
    log_capture_start();
    f->c = client_session_new(f->base, dns, &f->cfg);
    assert_non_null(f->c);
    client_session_open(f->c, result_cb, &res);
    run_until(f->base, &res.done, 10);
    char *log = log_capture_end();
    assert_string_equal(res.err, "");
    assert_int_equal(res.code, 250);
    assert_non_null(strstr(log, "event=upstream_resolved session=t1 host=localhost "
                                "addresses=[::1],127.0.0.1"));
    if (v6_ok)
        assert_non_null(strstr(log, "event=upstream_connect_failed session=t1 host=localhost "
                                    "port="));
    assert_non_null(strstr(log, "address=[::1]"));
    assert_non_null(strstr(log, "event=upstream_tcp_connected session=t1 host=localhost"));
    assert_non_null(strstr(log, "address=127.0.0.1"));
    assert_server_ok(f->srv);
    client_session_free(f->c);
    f->c = NULL;
    evdns_base_free(dns, 0);
    fx_free(f);
}

/* Every address refused: one failure naming how many were tried and the last reason. */
static void test_connect_all_fail(void **state)
{
    (void)state;
    struct fixture *f = fx_new(NULL, 0, good_cert, good_key, good_cert);
    struct result res = {0};
    char hosts[PATH_MAX];
    snprintf(hosts, sizeof(hosts), "%s/hosts3", tmpdir);
    FILE *h = fopen(hosts, "w");
    assert_non_null(h);
    fputs("127.0.0.1 nowhere.test\n127.0.0.2 nowhere.test\n", h);
    fclose(h);
    struct evdns_base *dns = evdns_base_new(f->base, 0);
    assert_non_null(dns);
    assert_int_equal(evdns_base_load_hosts(dns, hosts), 0);
    /* a port nobody listens on */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(a);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &al), 0);
    close(s);
    f->cfg.host = "nowhere.test";
    f->cfg.port = ntohs(a.sin_port);
    f->c = client_session_new(f->base, dns, &f->cfg);
    client_session_open(f->c, result_cb, &res);
    run_until(f->base, &res.done, 10);
    assert_int_equal(res.code, 0);
    assert_non_null(strstr(res.err, "cannot connect to nowhere.test:"));
    assert_non_null(strstr(res.err, "all 2 addresses failed (last: 127.0.0.2: "));
    client_session_free(f->c);
    f->c = NULL;
    evdns_base_free(dns, 0);
    fx_free(f);
}

/* Opportunistic, STARTTLS offered but refused: EHLO again (RFC 3207 4) and go on in plain text. */
static void test_opportunistic_starttls_refused(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET,
        S_EHLO1,
        {"STARTTLS", "454 4.7.0 TLS not available due to temporary reason\r\n", ACT_NONE},
        {"EHLO proxy.test", "250-mx.test\r\n250 SIZE 1000\r\n", ACT_NONE},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    f->cfg.tls = CLIENT_TLS_OPPORTUNISTIC;
    log_capture_start();
    fx_open(f, &res);
    char *log = log_capture_end();
    assert_int_equal(res.code, 250);
    assert_false(client_session_tls_active(f->c));
    assert_true(client_session_usable(f->c));
    assert_non_null(strstr(log, "event=upstream_starttls_refused session=t1 host=127.0.0.1 "
                                "reply=\"454 4.7.0 TLS not available"));
    assert_non_null(strstr(log, "tls=none reason=\"STARTTLS refused\""));
    char *got = srv_received(f->srv);
    assert_string_equal(got, "EHLO proxy.test\r\nSTARTTLS\r\nEHLO proxy.test\r\n");
    free(got);
    assert_false(f->srv->handshake_done);
    assert_server_ok(f->srv);
    fx_free(f);
}

/* The same refusal without opportunistic: the session fails with the upstream's reply. */
static void test_starttls_refused_fails(void **state)
{
    (void)state;
    static const struct step steps[] = {
        S_GREET,
        S_EHLO1,
        {"STARTTLS", "454 4.7.0 TLS not available due to temporary reason\r\n", ACT_NONE},
    };
    struct fixture *f = fx_new(steps, N(steps), good_cert, good_key, good_cert);
    struct result res = {0};
    fx_open(f, &res);
    assert_int_equal(res.code, 454);
    assert_false(client_session_usable(f->c));
    assert_server_ok(f->srv);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_caps_and_quit),
        cmocka_unit_test(test_open_by_name_sends_sni),
        cmocka_unit_test(test_no_starttls_refused),
        cmocka_unit_test(test_wrong_name_refused),
        cmocka_unit_test(test_wrong_dns_name_refused),
        cmocka_unit_test(test_untrusted_refused),
        cmocka_unit_test(test_verify_result_checked_without_verify_peer),
        cmocka_unit_test(test_auth_short_token_inline),
        cmocka_unit_test(test_auth_long_token_continuation),
        cmocka_unit_test(test_auth_boundary_512),
        cmocka_unit_test(test_auth_json_error_challenge),
        cmocka_unit_test(test_oauthbearer_inline),
        cmocka_unit_test(test_oauthbearer_continuation),
        cmocka_unit_test(test_oauthbearer_boundary_512),
        cmocka_unit_test(test_oauthbearer_error_challenge),
        cmocka_unit_test(test_oauthbearer_never_logged),
        cmocka_unit_test(test_data_5mb_backpressure),
        cmocka_unit_test(test_auth_never_logged),
        cmocka_unit_test(test_connection_lost_during_body),
        cmocka_unit_test(test_body_stalled_upstream_times_out),
        cmocka_unit_test(test_greeting_421),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_not_ip_without_resolver),
        cmocka_unit_test(test_server_closes_mid_command),
        cmocka_unit_test(test_reply_timeout),
        cmocka_unit_test(test_final_dot_reply_timeout),
        cmocka_unit_test(test_greeting_timeout),
        cmocka_unit_test(test_protocol_violation),
        cmocka_unit_test(test_8bit_reply_text),
        cmocka_unit_test(test_quit_unanswered),
        cmocka_unit_test(test_free_inside_callbacks),
        cmocka_unit_test(test_free_inside_drain_callback),
        cmocka_unit_test(test_starttls_injection_discarded),
        cmocka_unit_test(test_misuse_reported_from_loop),
        cmocka_unit_test(test_auth_plain),
        cmocka_unit_test(test_auth_login),
        cmocka_unit_test(test_opportunistic_plain),
        cmocka_unit_test(test_opportunistic_tls),
        cmocka_unit_test(test_connect_every_address),
        cmocka_unit_test(test_connect_all_fail),
        cmocka_unit_test(test_opportunistic_starttls_refused),
        cmocka_unit_test(test_starttls_refused_fails),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
