/* Google service account (domain-wide delegation): the JWT the provider posts to an in-process
 * evhttp token endpoint is taken apart and verified here with OpenSSL against the key's public
 * half (header, every claim). Google's refusals come back explained; bad key files are refused at
 * provider_new() with the account and the file named. The log (stderr) is captured to prove that
 * neither the key nor an assertion nor a token reaches it, and no error message quotes the key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>
#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "oauth/http.h"
#include "oauth/provider.h"
#include "proxy/config/config.h"
#include "token_endpoint_fixture.h"

#define EMAIL "smtp-relay@contoso-mail.iam.gserviceaccount.com"
#define KEY_ID "5f1c0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b"
#define SA_CLIENT_ID "104857600123456789012"
#define MAILBOX "scanners@contoso.test"
#define SCOPE "https://mail.google.com/"
#define TOKEN "ya29.c.b0Aaekm1KqTestTokenNotARealOne_kNq8v3Jm2xYzWpQrStUvWxYz0123456789"

enum idp_mode { IDP_OK, IDP_UNAUTHORIZED, IDP_BAD_SUB, IDP_BAD_SIGNATURE, IDP_CLOCK, IDP_ECHO };

struct idp {
    struct evhttp *http;
    enum idp_mode mode;
    int hits, fields;
    char grant_type[128], extra[64];
    char assertion[8192];
};

static void idp_handler(struct evhttp_request *req, void *arg)
{
    struct idp *s = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    static char body[16384];
    struct evkeyvalq q;
    s->hits++;
    if (n >= sizeof(body))
        n = sizeof(body) - 1;
    evbuffer_copyout(in, body, n);
    body[n] = '\0';
    s->fields = 0;
    s->grant_type[0] = s->extra[0] = s->assertion[0] = '\0';
    assert_int_equal(evhttp_parse_query_str(body, &q), 0);
    for (struct evkeyval *kv = q.tqh_first; kv; kv = kv->next.tqe_next) {
        s->fields++;
        if (strcmp(kv->key, "grant_type") == 0)
            snprintf(s->grant_type, sizeof(s->grant_type), "%s", kv->value);
        else if (strcmp(kv->key, "assertion") == 0)
            snprintf(s->assertion, sizeof(s->assertion), "%s", kv->value);
        else
            snprintf(s->extra, sizeof(s->extra), "%s", kv->key);
    }
    evhttp_clear_headers(&q);
    struct evbuffer *out = evbuffer_new();
    assert_non_null(out);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json; charset=utf-8");
    switch (s->mode) {
    case IDP_OK:
        evbuffer_add_printf(out,
                            "{\"access_token\":\"%s\",\"expires_in\":3599,"
                            "\"token_type\":\"Bearer\"}",
                            TOKEN);
        evhttp_send_reply(req, 200, "OK", out);
        break;
    case IDP_UNAUTHORIZED: /* Google's words when delegation is missing */
        evbuffer_add_printf(out, "{\"error\":\"unauthorized_client\",\"error_description\":"
                                 "\"Client is unauthorized to retrieve access tokens using this "
                                 "method, or client not authorized for any of the scopes "
                                 "requested.\"}");
        evhttp_send_reply(req, 401, "Unauthorized", out);
        break;
    case IDP_BAD_SUB:
        evbuffer_add_printf(out, "{\"error\":\"invalid_grant\",\"error_description\":"
                                 "\"Invalid email or User ID\"}");
        evhttp_send_reply(req, 400, "Bad Request", out);
        break;
    case IDP_BAD_SIGNATURE:
        evbuffer_add_printf(out, "{\"error\":\"invalid_grant\",\"error_description\":"
                                 "\"Invalid JWT Signature.\"}");
        evhttp_send_reply(req, 400, "Bad Request", out);
        break;
    case IDP_CLOCK:
        evbuffer_add_printf(out, "{\"error\":\"invalid_grant\",\"error_description\":"
                                 "\"Invalid JWT: Token must be a short-lived token (60 minutes) "
                                 "and in a reasonable timeframe. Check your iat and exp values in "
                                 "the JWT claim.\"}");
        evhttp_send_reply(req, 400, "Bad Request", out);
        break;
    case IDP_ECHO: /* a careless IdP quoting what it got */
        evbuffer_add_printf(out,
                            "{\"error\":\"invalid_grant\",\"error_description\":"
                            "\"Bad assertion %s\"}",
                            s->assertion);
        evhttp_send_reply(req, 400, "Bad Request", out);
        break;
    }
    evbuffer_free(out);
}

/* ---- keys and key files ---- */

static char test_dir[] = "/tmp/test_grant_google.XXXXXX";
static EVP_PKEY *rsa_cached;

static EVP_PKEY *rsa_key(void)
{
    if (!rsa_cached)
        rsa_cached = EVP_RSA_gen(2048);
    assert_non_null(rsa_cached);
    return rsa_cached;
}

/* k as PKCS#8 PEM (malloc'd), as Google puts it in the JSON. */
static char *key_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL, *out;
    long n;
    assert_non_null(b);
    assert_true(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL));
    n = BIO_get_mem_data(b, &data);
    assert_true(n > 0);
    out = calloc(1, (size_t)n + 1);
    assert_non_null(out);
    memcpy(out, data, (size_t)n);
    BIO_free(b);
    return out;
}

static void write_text(const char *path, const char *text, mode_t mode)
{
    FILE *fp;
    unlink(path);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    assert_int_equal(chmod(path, mode), 0);
}

/* A key file like the one Google's console downloads; drop names a field to leave out,
 * token_uri NULL leaves it out too. */
static void make_key_file(const char *path, EVP_PKEY *k, const char *type, const char *drop,
                          const char *token_uri, mode_t mode)
{
    cJSON *j = cJSON_CreateObject();
    char *pem = key_pem(k), *text;
    const char *names[] = {"type",        "project_id",   "private_key_id",
                           "private_key", "client_email", "client_id",
                           "auth_uri",    "token_uri",    "auth_provider_x509_cert_url"};
    const char *values[] = {type,
                            "contoso-mail",
                            KEY_ID,
                            pem,
                            EMAIL,
                            SA_CLIENT_ID,
                            "https://accounts.google.com/o/oauth2/auth",
                            token_uri,
                            "https://www.googleapis.com/oauth2/v1/certs"};
    assert_non_null(j);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (values[i] && !(drop && strcmp(drop, names[i]) == 0))
            cJSON_AddStringToObject(j, names[i], values[i]);
    text = cJSON_Print(j);
    assert_non_null(text);
    write_text(path, text, mode);
    cJSON_free(text);
    cJSON_Delete(j);
    free(pem);
}

/* The base64 lines of the key (what a leak would look like), into lines; their count. */
static int key_lines(char lines[][80], int max)
{
    char *pem = key_pem(rsa_key()), *save = NULL;
    int n = 0;
    for (char *l = strtok_r(pem, "\n", &save); l && n < max; l = strtok_r(NULL, "\n", &save))
        if (strncmp(l, "-----", 5) != 0)
            snprintf(lines[n++], 80, "%s", l);
    free(pem);
    return n;
}

static void assert_no_key(const char *s)
{
    char lines[64][80];
    int n = key_lines(lines, 64);
    assert_null(strstr(s, "PRIVATE KEY"));
    for (int i = 0; i < n; i++)
        if (strlen(lines[i]) >= 16 && strstr(s, lines[i]))
            fail_msg("a line of the private key in \"%s\"", s);
}

/* ---- fixture ---- */

struct fixture {
    struct event_base *base;
    struct idp idp;
    struct http *h;
    struct provider *p;
    char url[128];
    char key[256];
    struct log_capture lc;
    char assertions[2][8192];
};

static void assert_log_has(struct fixture *f, const char *needle)
{
    char *s = log_capture_text(&f->lc);
    if (!strstr(s, needle))
        fail_msg("log lacks \"%s\":\n%s", needle, s);
    free(s);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->base = event_base_new();
    assert_non_null(f->base);
    f->idp.http =
        token_endpoint_new(f->base, idp_handler, &f->idp, "/google/token", f->url, sizeof(f->url));
    f->h = http_new(f->base);
    assert_non_null(f->h);
    snprintf(f->key, sizeof(f->key), "%s/sa.json", test_dir);
    make_key_file(f->key, rsa_key(), "service_account", NULL, "https://oauth2.googleapis.com/token",
                  0600);
    log_capture_start(&f->lc);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char *captured = log_capture_stop(&f->lc);
    assert_no_key(captured);
    assert_null(strstr(captured, "assertion="));
    for (int i = 0; i < 2; i++) {
        const char *sig = strrchr(f->assertions[i], '.');
        if (!f->assertions[i][0])
            continue;
        assert_null(strstr(captured, f->assertions[i]));
        assert_null(strstr(captured, sig + 1));
    }
    assert_null(strstr(captured, TOKEN));
    free(captured);
    provider_free(f->p);
    http_free(f->h);
    evhttp_free(f->idp.http);
    event_base_free(f->base);
    free(f);
    return 0;
}

static struct provider *try_provider(struct fixture *f, const char *key, const char *token_url,
                                     const char *mailbox, char *err, size_t errlen)
{
    struct oauth_client_cfg cfg = {
        .account = "gmail",
        .provider = "google",
        .grant = "service_account",
        .token_url = token_url,
        .scope = SCOPE,
        .mailbox = mailbox,
        .service_account_key = key,
    };
    (void)f;
    err[0] = '\0';
    return provider_new(&cfg, f->h, err, errlen);
}

static struct provider *make_provider(struct fixture *f)
{
    char err[512];
    struct provider *p = try_provider(f, f->key, f->url, MAILBOX, err, sizeof(err));
    if (!p)
        fail_msg("provider_new: %s", err);
    return p;
}

struct result {
    int calls, ok, temporary;
    char token[256];
    char err[1024];
};

static void result_cb(void *arg, const struct token_grant *g, const char *err, int temporary)
{
    struct result *r = arg;
    r->calls++;
    r->ok = g != NULL;
    r->temporary = temporary;
    if (g)
        snprintf(r->token, sizeof(r->token), "%s", g->access_token);
    else
        snprintf(r->err, sizeof(r->err), "%s", err);
}

static void request(struct fixture *f, struct result *r, int n)
{
    memset(r, 0, sizeof(*r));
    assert_non_null(f->p->ops->request(f->p, result_cb, r));
    run_until(f->base, &r->calls, 5000);
    assert_int_equal(r->calls, 1);
    snprintf(f->assertions[n], sizeof(f->assertions[n]), "%s", f->idp.assertion);
}

/* ---- JWT checks, with OpenSSL only ---- */

static size_t b64url_decode(const char *in, size_t len, unsigned char *out, size_t outlen)
{
    char buf[8192];
    size_t n = 0;
    int dec;
    assert_true(len + 4 < sizeof(buf));
    for (size_t i = 0; i < len; i++) {
        assert_true(in[i] != '=' && in[i] != '+' && in[i] != '/'); /* url-safe, no padding */
        buf[n++] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
    }
    while (n % 4)
        buf[n++] = '=';
    assert_true(n / 4 * 3 <= outlen);
    dec = EVP_DecodeBlock(out, (const unsigned char *)buf, (int)n);
    assert_true(dec >= 0);
    for (size_t i = len; i % 4; i++) /* EVP_DecodeBlock counts padding as zero bytes */
        dec--;
    return (size_t)dec;
}

static cJSON *json_part(const char *s, size_t len)
{
    unsigned char raw[4096];
    size_t n = b64url_decode(s, len, raw, sizeof(raw) - 1);
    raw[n] = '\0';
    cJSON *j = cJSON_Parse((const char *)raw);
    assert_non_null(j);
    return j;
}

static const char *jstr(const cJSON *j, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    if (!cJSON_IsString(v))
        fail_msg("no string \"%s\"", name);
    return v->valuestring;
}

static long jnum(const cJSON *j, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    if (!cJSON_IsNumber(v))
        fail_msg("no number \"%s\"", name);
    return (long)v->valuedouble;
}

/* Verify jwt's RS256 signature with the key's public half, then its header and every claim. */
static void verify_assertion(const char *jwt, const char *aud)
{
    const char *d1 = strchr(jwt, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    unsigned char sig[1024];
    long now = (long)time(NULL);
    unsigned char *der = NULL;
    const unsigned char *pp;
    EVP_PKEY *pub;
    int derlen;

    assert_non_null(d2);
    assert_null(strchr(d2 + 1, '.'));
    /* only the public half, as Google holds it */
    derlen = i2d_PUBKEY(rsa_key(), &der);
    assert_true(derlen > 0);
    pp = der;
    pub = d2i_PUBKEY(NULL, &pp, derlen);
    assert_non_null(pub);
    OPENSSL_free(der);

    size_t siglen = b64url_decode(d2 + 1, strlen(d2 + 1), sig, sizeof(sig));
    assert_int_equal(siglen, 256);
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    assert_int_equal(EVP_DigestVerifyInit(mctx, &pctx, EVP_sha256(), NULL, pub), 1);
    assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING), 1);
    assert_int_equal(
        EVP_DigestVerify(mctx, sig, siglen, (const unsigned char *)jwt, (size_t)(d2 - jwt)), 1);
    EVP_MD_CTX_free(mctx);
    EVP_PKEY_free(pub);

    cJSON *h = json_part(jwt, (size_t)(d1 - jwt));
    assert_string_equal(jstr(h, "alg"), "RS256");
    assert_string_equal(jstr(h, "typ"), "JWT");
    assert_string_equal(jstr(h, "kid"), KEY_ID);
    assert_int_equal(cJSON_GetArraySize(h), 3);
    cJSON_Delete(h);

    cJSON *c = json_part(d1 + 1, (size_t)(d2 - d1 - 1));
    assert_string_equal(jstr(c, "iss"), EMAIL);
    assert_string_equal(jstr(c, "scope"), SCOPE);
    assert_string_equal(jstr(c, "aud"), aud);
    assert_string_equal(jstr(c, "sub"), MAILBOX);
    long iat = jnum(c, "iat"), exp = jnum(c, "exp");
    assert_true(iat <= now && iat >= now - 10);
    assert_int_equal(exp - iat, 3600);
    assert_int_equal(cJSON_GetArraySize(c), 6); /* nothing else */
    cJSON_Delete(c);
}

/* ---- tests ---- */

static void test_assertion_signed(void **state)
{
    struct fixture *f = *state;
    struct result r;
    f->p = make_provider(f);
    request(f, &r, 0);
    assert_true(r.ok);
    assert_string_equal(r.token, TOKEN);
    assert_int_equal(f->idp.fields, 2);
    assert_string_equal(f->idp.grant_type, "urn:ietf:params:oauth:grant-type:jwt-bearer");
    assert_string_equal(f->idp.extra, "");
    verify_assertion(f->idp.assertion, f->url);

    /* a fresh one per request */
    request(f, &r, 1);
    assert_true(r.ok);
    assert_int_equal(f->idp.hits, 2);
    verify_assertion(f->idp.assertion, f->url);
    assert_log_has(f, "event=service_account account=gmail client_email=" EMAIL " key_id=" KEY_ID
                      " client_id=" SA_CLIENT_ID " sub=" MAILBOX);
    assert_log_has(f, "event=token_request account=gmail grant=service_account "
                      "credential=service_account_key url=http://127.0.0.1:");
    assert_log_has(f, "event=token_ok account=gmail status=200 expires_in=3599");
}

/* Without token_url the key file's token_uri is used, and without that Google's. */
static void test_token_url_choice(void **state)
{
    struct fixture *f = *state;
    struct result r;
    char err[512];
    make_key_file(f->key, rsa_key(), "service_account", NULL, f->url, 0600);
    f->p = try_provider(f, f->key, NULL, MAILBOX, err, sizeof(err));
    assert_non_null(f->p);
    request(f, &r, 0);
    assert_true(r.ok);
    verify_assertion(f->idp.assertion, f->url);

    make_key_file(f->key, rsa_key(), "service_account", NULL, NULL, 0600);
    struct provider *p = try_provider(f, f->key, NULL, MAILBOX, err, sizeof(err));
    assert_non_null(p);
    provider_free(p);
    assert_log_has(f, "sub=" MAILBOX " token_url=https://oauth2.googleapis.com/token");

    /* a plain-http token_uri elsewhere than loopback is refused */
    make_key_file(f->key, rsa_key(), "service_account", NULL, "http://oauth2.example.com/token",
                  0600);
    assert_null(try_provider(f, f->key, NULL, MAILBOX, err, sizeof(err)));
    assert_non_null(strstr(err, "account gmail: the token URL must be https://"));
}

static void expect_refusal(struct fixture *f, enum idp_mode mode, const char *want)
{
    struct result r;
    f->idp.mode = mode;
    f->p = make_provider(f);
    request(f, &r, 0);
    assert_false(r.ok);
    assert_int_equal(r.temporary, 0);
    if (!strstr(r.err, want))
        fail_msg("error \"%s\" lacks \"%s\"", r.err, want);
    assert_no_key(r.err);
    assert_null(strstr(r.err, f->assertions[0]));
    assert_log_has(f, "event=token_failed account=gmail temporary=0 status=");
    assert_log_has(f, want);
}

static void test_unauthorized_client(void **state)
{
    expect_refusal(*state, IDP_UNAUTHORIZED,
                   "error=unauthorized_client hint=\"domain-wide delegation is not granted: in "
                   "the Admin console (Security > Access and data control > API controls > "
                   "Manage Domain Wide Delegation) add client ID " SA_CLIENT_ID
                   " with scope https://mail.google.com/\" description=\"Client is unauthorized");
}

static void test_unknown_mailbox(void **state)
{
    expect_refusal(*state, IDP_BAD_SUB,
                   "error=invalid_grant hint=\"mailbox " MAILBOX
                   " is not a user of the Workspace domain (or is suspended): check mailbox =\" "
                   "description=\"Invalid email or User ID\"");
}

static void test_key_deleted(void **state)
{
    expect_refusal(*state, IDP_BAD_SIGNATURE,
                   "error=invalid_grant hint=\"Google does not know key " KEY_ID " of " EMAIL);
}

static void test_clock_skew(void **state)
{
    expect_refusal(*state, IDP_CLOCK,
                   "error=invalid_grant hint=\"the assertion's times were refused: check this "
                   "host's clock\" description=\"Invalid JWT: Token must be a short-lived");
}

/* Other refusals are logged as Google put them, without a hint. */
static void test_no_hint_for_others(void **state)
{
    struct fixture *f = *state;
    expect_refusal(f, IDP_ECHO, "error=invalid_grant description=");
    char *logged = log_capture_text(&f->lc);
    assert_null(strstr(logged, "hint="));
    free(logged);
}

static void test_echoed_assertion_redacted(void **state)
{
    struct fixture *f = *state;
    char head[32];
    expect_refusal(f, IDP_ECHO, "error=invalid_grant description=\"Bad assertion [redacted]");
    memcpy(head, f->assertions[0], sizeof(head) - 1);
    head[sizeof(head) - 1] = '\0';
    char *logged = log_capture_text(&f->lc);
    assert_null(strstr(logged, head));
    free(logged);
}

static void expect_refused(struct fixture *f, const char *key, const char *mailbox,
                           const char *want)
{
    char err[512];
    struct provider *p = try_provider(f, key, f->url, mailbox, err, sizeof(err));
    if (p)
        fail_msg("provider_new accepted %s", key ? key : "(none)");
    if (!strstr(err, want))
        fail_msg("error \"%s\" lacks \"%s\"", err, want);
    assert_no_key(err);
}

static void test_bad_key_files(void **state)
{
    struct fixture *f = *state;
    char path[300], want[600], *pem;

    snprintf(path, sizeof(path), "%s/bad.json", test_dir);
    make_key_file(path, rsa_key(), "service_account", NULL, NULL, 0644);
    snprintf(want, sizeof(want),
             "account gmail: service_account_key %s: mode 0644 is readable or writable by "
             "group/others; run: chmod 600",
             path);
    expect_refused(f, path, MAILBOX, want);
    expect_refused(f, "/nonexistent/sa.json", MAILBOX,
                   "account gmail: service_account_key /nonexistent/sa.json: No such file");
    expect_refused(f, NULL, MAILBOX, "account gmail: service_account_key is required");

    /* the key itself, not JSON: must not be quoted back */
    pem = key_pem(rsa_key());
    write_text(path, pem, 0600);
    free(pem);
    snprintf(want, sizeof(want), "account gmail: service_account_key %s is not a JSON object",
             path);
    expect_refused(f, path, MAILBOX, want);
    write_text(path, "{\"type\": \"service_account\", ", 0600);
    expect_refused(f, path, MAILBOX, want);

    make_key_file(path, rsa_key(), "authorized_user", NULL, NULL, 0600);
    expect_refused(f, path, MAILBOX, "\"type\" is not \"service_account\"");
    make_key_file(path, rsa_key(), NULL, NULL, NULL, 0600);
    expect_refused(f, path, MAILBOX, "\"type\" is not \"service_account\"");

    static const char *required[] = {"client_email", "private_key_id", "private_key"};
    for (size_t i = 0; i < 3; i++) {
        make_key_file(path, rsa_key(), "service_account", required[i], NULL, 0600);
        snprintf(want, sizeof(want),
                 "account gmail: service_account_key %s: \"%s\" is missing or not a short "
                 "printable string",
                 path, required[i]);
        expect_refused(f, path, MAILBOX, want);
    }

    /* a private_key that is not one: the message does not quote it */
    write_text(path,
               "{\"type\":\"service_account\",\"client_email\":\"" EMAIL "\","
               "\"private_key_id\":\"" KEY_ID "\",\"private_key\":\"-----BEGIN PRIVATE KEY-----"
               "\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDZ\\n-----END PRIVATE "
               "KEY-----\\n\"}",
               0600);
    snprintf(want, sizeof(want),
             "account gmail: service_account_key %s: \"private_key\" is not a PEM private key",
             path);
    expect_refused(f, path, MAILBOX, want);
    char err[512];
    assert_null(try_provider(f, path, f->url, MAILBOX, err, sizeof(err)));
    assert_null(strstr(err, "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDZ"));

    EVP_PKEY *ec = EVP_EC_gen("P-256");
    assert_non_null(ec);
    make_key_file(path, ec, "service_account", NULL, NULL, 0600);
    EVP_PKEY_free(ec);
    expect_refused(f, path, MAILBOX, "\"private_key\" is not an RSA key of at least 2048 bits");

    expect_refused(f, f->key, NULL,
                   "account gmail: mailbox is required (the user the service account acts for)");

    struct oauth_client_cfg cfg = {.account = "gmail",
                                   .provider = "microsoft",
                                   .grant = "service_account",
                                   .mailbox = MAILBOX,
                                   .service_account_key = f->key};
    assert_null(provider_new(&cfg, f->h, err, sizeof(err)));
    assert_string_equal(err, "account gmail: grant = service_account needs provider = google");
}

/* ---- the config ---- */

static struct config *load(const char *account_lines, char **errs)
{
    char text[2048], path[300];
    snprintf(text, sizeof(text),
             "[proxy]\nlisten = 127.0.0.1:2525\n"
             "[upstream]\nhost = smtp.gmail.com\n"
             "[account gmail]\nprovider = google\n%smailbox = " MAILBOX "\n"
             "[device d]\naddress = 10.0.0.1\naccount = gmail\n",
             account_lines);
    snprintf(path, sizeof(path), "%s/c.conf", test_dir);
    write_text(path, text, 0600);
    *errs = NULL;
    return config_load(path, errs);
}

static void test_config(void **state)
{
    struct fixture *f = *state;
    char lines[600], *errs;
    snprintf(lines, sizeof(lines), "service_account_key = %s\n", f->key);
    struct config *cfg = load(lines, &errs);
    if (!cfg)
        fail_msg("config_load: %s", errs);
    assert_string_equal(cfg->accounts[0].grant, "service_account");
    assert_string_equal(cfg->accounts[0].scope, SCOPE);
    assert_string_equal(cfg->accounts[0].service_account_key, f->key);
    assert_null(cfg->accounts[0].token_url); /* the key file's token_uri applies */
    config_free(cfg);

    assert_int_equal(chmod(f->key, 0640), 0);
    assert_null(load(lines, &errs));
    assert_non_null(errs);
    assert_non_null(strstr(errs, "service_account_key: "));
    assert_non_null(strstr(errs, "mode 0640 is readable"));
    free(errs);
    assert_int_equal(chmod(f->key, 0600), 0);
}

/* The shipped example loads, with its /etc paths pointed at the test directory, and its key file
 * (made here) gives a provider. */
static void test_example_file(void **state)
{
    struct fixture *f = *state;
    char path[512], *text, *out, *o, *p, *errs = NULL;
    size_t len, cap = 1 << 16;
    FILE *fp;
    snprintf(path, sizeof(path), "%s", __FILE__);
    p = strstr(path, "tests/unit/");
    assert_non_null(p);
    snprintf(p, sizeof(path) - (size_t)(p - path), "examples/google-service-account.conf");
    fp = fopen(path, "r");
    assert_non_null(fp);
    text = calloc(1, cap);
    out = calloc(1, cap * 2);
    assert_non_null(text);
    assert_non_null(out);
    len = fread(text, 1, cap - 1, fp);
    fclose(fp);
    assert_true(len > 0 && len < cap - 1);
    for (p = text, o = out; *p;) {
        if (strncmp(p, "/etc/smtp-oauth-proxy", 21) == 0) {
            o += sprintf(o, "%s", test_dir);
            p += 21;
        } else {
            *o++ = *p++;
        }
    }
    snprintf(path, sizeof(path), "%s/service-account.json", test_dir);
    make_key_file(path, rsa_key(), "service_account", NULL, NULL, 0600);
    snprintf(path, sizeof(path), "%s/example.conf", test_dir);
    write_text(path, out, 0600);
    struct config *cfg = config_load(path, &errs);
    if (!cfg)
        fail_msg("example: %s", errs);
    assert_int_equal(cfg->naccounts, 1);
    assert_string_equal(cfg->accounts[0].provider, "google");
    assert_string_equal(cfg->accounts[0].grant, "service_account");
    assert_non_null(strstr(cfg->accounts[0].service_account_key, "/service-account.json"));
    struct oauth_client_cfg oc = {
        .account = cfg->accounts[0].name,
        .provider = cfg->accounts[0].provider,
        .grant = cfg->accounts[0].grant,
        .token_url = cfg->accounts[0].token_url,
        .scope = cfg->accounts[0].scope,
        .mailbox = cfg->accounts[0].mailbox,
        .service_account_key = cfg->accounts[0].service_account_key,
    };
    f->p = provider_new(&oc, f->h, path, sizeof(path));
    if (!f->p)
        fail_msg("provider_new: %s", path);
    config_free(cfg);
    free(out);
    free(text);
}

static int group_setup(void **state)
{
    (void)state;
    return mkdtemp(test_dir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    char cmd[300];
    (void)state;
    EVP_PKEY_free(rsa_cached);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", test_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_assertion_signed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_url_choice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unauthorized_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_mailbox, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_deleted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clock_skew, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_hint_for_others, setup, teardown),
        cmocka_unit_test_setup_teardown(test_echoed_assertion_redacted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_key_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_example_file, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
