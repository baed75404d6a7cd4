/* Client credentials with a certificate: the assertion the provider posts to an in-process evhttp
 * token endpoint is taken apart and verified here with OpenSSL against the certificate's public
 * key (header, every claim, a fresh jti each time). Bad certificates and keys are refused at
 * provider_new() and by the config loader. The log (stderr) is captured to prove neither the key
 * nor an assertion reaches it. */
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>
#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "oauth/http.h"
#include "oauth/provider.h"
#include "proxy/config/config.h"
#include "token_endpoint_fixture.h"

#define CLIENT_ID "11111111-2222-3333-4444-555555555555"
#define TOKEN "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL291dGxvb2sifQ.c2ln"
#define DAY 86400L

enum idp_mode { IDP_OK, IDP_REFUSE_ECHO };

struct idp {
    struct evhttp *http;
    enum idp_mode mode;
    int hits, fields;
    char grant_type[64], client_id[64], assertion_type[128], scope[128], extra[64];
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
    s->grant_type[0] = s->client_id[0] = s->assertion_type[0] = s->scope[0] = s->extra[0] = '\0';
    s->assertion[0] = '\0';
    assert_int_equal(evhttp_parse_query_str(body, &q), 0);
    for (struct evkeyval *kv = q.tqh_first; kv; kv = kv->next.tqe_next) {
        s->fields++;
        if (strcmp(kv->key, "grant_type") == 0)
            snprintf(s->grant_type, sizeof(s->grant_type), "%s", kv->value);
        else if (strcmp(kv->key, "client_id") == 0)
            snprintf(s->client_id, sizeof(s->client_id), "%s", kv->value);
        else if (strcmp(kv->key, "client_assertion_type") == 0)
            snprintf(s->assertion_type, sizeof(s->assertion_type), "%s", kv->value);
        else if (strcmp(kv->key, "client_assertion") == 0)
            snprintf(s->assertion, sizeof(s->assertion), "%s", kv->value);
        else if (strcmp(kv->key, "scope") == 0)
            snprintf(s->scope, sizeof(s->scope), "%s", kv->value);
        else
            snprintf(s->extra, sizeof(s->extra), "%s", kv->key);
    }
    evhttp_clear_headers(&q);
    struct evbuffer *out = evbuffer_new();
    assert_non_null(out);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json; charset=utf-8");
    if (s->mode == IDP_OK) {
        evbuffer_add_printf(out,
                            "{\"token_type\":\"Bearer\",\"expires_in\":3599,"
                            "\"ext_expires_in\":3599,\"access_token\":\"%s\"}",
                            TOKEN);
        evhttp_send_reply(req, 200, "OK", out);
    } else {
        /* Entra's answer to a bad signature, from a careless IdP that quotes the assertion */
        evbuffer_add_printf(out,
                            "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS700027: "
                            "Client assertion failed signature validation. %s\","
                            "\"error_codes\":[700027]}",
                            s->assertion);
        evhttp_send_reply(req, 401, "Unauthorized", out);
    }
    evbuffer_free(out);
}

/* ---- certificates ---- */

static char test_dir[] = "/tmp/test_grant_ca.XXXXXX";

static EVP_PKEY *rsa_cache[2];

/* Two RSA keys, handed out in turn, are enough for every test (2048-bit generation is slow under
 * ASan); the caller frees its reference. */
static EVP_PKEY *rsa_key(void)
{
    static int next;
    if (!rsa_cache[next % 2])
        rsa_cache[next % 2] = EVP_RSA_gen(2048);
    EVP_PKEY *k = rsa_cache[next++ % 2];
    assert_non_null(k);
    EVP_PKEY_up_ref(k);
    return k;
}

/* A self-signed certificate for cert_key valid from now+from to now+to seconds, written to
 * DIR/name.pem; the key (key_key, usually the same) to DIR/name.key with key_mode. */
static void make_pair(const char *name, EVP_PKEY *cert_key, EVP_PKEY *key_key, long from, long to,
                      mode_t key_mode, char *cert_path, char *key_path)
{
    X509 *x = X509_new();
    FILE *f;
    assert_non_null(x);
    sprintf(cert_path, "%s/%s.pem", test_dir, name);
    sprintf(key_path, "%s/%s.key", test_dir, name);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_gmtime_adj(X509_getm_notBefore(x), from);
    X509_gmtime_adj(X509_getm_notAfter(x), to);
    X509_set_pubkey(x, cert_key);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"smtp-oauth-proxy", -1,
                               -1, 0);
    X509_set_issuer_name(x, n);
    assert_true(X509_sign(x, cert_key, EVP_sha256()) > 0);
    f = fopen(cert_path, "w");
    assert_non_null(f);
    assert_true(PEM_write_X509(f, x));
    fclose(f);
    unlink(key_path);
    f = fopen(key_path, "w");
    assert_non_null(f);
    assert_true(PEM_write_PrivateKey(f, key_key, NULL, NULL, 0, NULL, NULL));
    fclose(f);
    assert_int_equal(chmod(key_path, key_mode), 0);
    X509_free(x);
}

struct fixture {
    struct event_base *base;
    struct idp idp;
    struct http *h;
    struct provider *p;
    char url[128];
    char cert[256], key[256];
    struct log_capture lc;
    char assertions[2][8192]; /* every assertion seen, for the log check */
};

static char *log_text(struct fixture *f)
{
    return log_capture_text(&f->lc);
}

static void assert_log_has(struct fixture *f, const char *needle)
{
    char *s = log_text(f);
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
    f->idp.http = token_endpoint_new(f->base, idp_handler, &f->idp, "/contoso/oauth2/v2.0/token",
                                     f->url, sizeof(f->url));
    f->h = http_new(f->base);
    assert_non_null(f->h);
    EVP_PKEY *k = rsa_key();
    make_pair("good", k, k, -3600, 365 * DAY, 0600, f->cert, f->key);
    EVP_PKEY_free(k);
    log_capture_start(&f->lc);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char *captured = log_capture_stop(&f->lc);
    /* neither the key nor an assertion (nor its signature) is ever logged */
    assert_null(strstr(captured, "PRIVATE KEY"));
    assert_null(strstr(captured, "client_assertion="));
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

static struct provider *try_provider(struct fixture *f, const char *cert, const char *key,
                                     char *err, size_t errlen)
{
    struct oauth_client_cfg cfg = {
        .account = "scanners",
        .provider = "microsoft",
        .grant = "client_credentials",
        .token_url = f->url,
        .client_id = CLIENT_ID,
        .client_cert = cert,
        .client_key = key,
    };
    err[0] = '\0';
    return provider_new(&cfg, f->h, err, errlen);
}

static struct provider *make_provider(struct fixture *f)
{
    char err[512];
    struct provider *p = try_provider(f, f->cert, f->key, err, sizeof(err));
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
    /* EVP_DecodeBlock counts the padding as zero bytes */
    for (size_t i = len; i % 4; i++)
        dec--;
    return (size_t)dec;
}

static void b64url(const unsigned char *in, size_t len, char *out)
{
    unsigned char tmp[128];
    int n = EVP_EncodeBlock(tmp, in, (int)len);
    while (n > 0 && tmp[n - 1] == '=')
        n--;
    for (int i = 0; i < n; i++)
        out[i] = tmp[i] == '+' ? '-' : tmp[i] == '/' ? '_' : (char)tmp[i];
    out[n] = '\0';
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

/* Verify jwt against the certificate; check header and claims; the jti into jti. */
static void verify_assertion(struct fixture *f, const char *jwt, char *jti, size_t jtilen)
{
    const char *d1 = strchr(jwt, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    unsigned char sig[1024], md[EVP_MAX_MD_SIZE];
    unsigned int mdlen;
    char want[64];
    long now = (long)time(NULL);
    FILE *cf;
    X509 *x;

    assert_non_null(d2);
    assert_null(strchr(d2 + 1, '.'));
    cf = fopen(f->cert, "r");
    assert_non_null(cf);
    x = PEM_read_X509(cf, NULL, NULL, NULL);
    fclose(cf);
    assert_non_null(x);

    /* the signature: RSASSA-PKCS1-v1_5 with SHA-256 over "header.payload" */
    size_t siglen = b64url_decode(d2 + 1, strlen(d2 + 1), sig, sizeof(sig));
    assert_int_equal(siglen, 256);
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    assert_int_equal(EVP_DigestVerifyInit(mctx, &pctx, EVP_sha256(), NULL, X509_get0_pubkey(x)), 1);
    assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING), 1);
    assert_int_equal(
        EVP_DigestVerify(mctx, sig, siglen, (const unsigned char *)jwt, (size_t)(d2 - jwt)), 1);
    EVP_MD_CTX_free(mctx);

    cJSON *h = json_part(jwt, (size_t)(d1 - jwt));
    assert_string_equal(jstr(h, "alg"), "RS256");
    assert_string_equal(jstr(h, "typ"), "JWT");
    assert_int_equal(X509_digest(x, EVP_sha256(), md, &mdlen), 1);
    b64url(md, mdlen, want);
    assert_string_equal(jstr(h, "x5t#S256"), want);
    assert_int_equal(X509_digest(x, EVP_sha1(), md, &mdlen), 1);
    b64url(md, mdlen, want);
    assert_string_equal(jstr(h, "x5t"), want);
    cJSON_Delete(h);
    X509_free(x);

    cJSON *c = json_part(d1 + 1, (size_t)(d2 - d1 - 1));
    assert_string_equal(jstr(c, "aud"), f->url);
    assert_string_equal(jstr(c, "iss"), CLIENT_ID);
    assert_string_equal(jstr(c, "sub"), CLIENT_ID);
    const char *j = jstr(c, "jti");
    assert_int_equal(strlen(j), 32);
    assert_int_equal(strspn(j, "0123456789abcdef"), 32);
    snprintf(jti, jtilen, "%s", j);
    long nbf = jnum(c, "nbf"), iat = jnum(c, "iat"), exp = jnum(c, "exp");
    assert_int_equal(nbf, iat);
    assert_true(iat <= now && iat >= now - 10);
    assert_int_equal(exp - nbf, 600);
    assert_int_equal(cJSON_GetArraySize(c), 7); /* nothing else */
    cJSON_Delete(c);
}

/* ---- tests ---- */

static void test_assertion_signed_and_fresh(void **state)
{
    struct fixture *f = *state;
    struct result r;
    char jti1[64], jti2[64];
    f->p = make_provider(f);
    request(f, &r, 0);
    assert_true(r.ok);
    assert_string_equal(r.token, TOKEN);
    assert_int_equal(f->idp.fields, 5);
    assert_string_equal(f->idp.grant_type, "client_credentials");
    assert_string_equal(f->idp.client_id, CLIENT_ID);
    assert_string_equal(f->idp.assertion_type,
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
    assert_string_equal(f->idp.scope, "https://outlook.office365.com/.default");
    assert_string_equal(f->idp.extra, "");
    verify_assertion(f, f->idp.assertion, jti1, sizeof(jti1));

    request(f, &r, 1);
    assert_true(r.ok);
    verify_assertion(f, f->idp.assertion, jti2, sizeof(jti2));
    assert_string_not_equal(jti1, jti2);
    assert_string_not_equal(f->assertions[0], f->assertions[1]);
    assert_log_has(f, "event=certificate account=scanners certificate=");
    assert_log_has(f, "thumbprint=");
    assert_log_has(f, "event=token_request account=scanners grant=client_credentials "
                      "credential=certificate url=http://127.0.0.1:");
    assert_log_has(f, "event=token_ok account=scanners status=200 expires_in=3599");
}

static void test_refused_assertion(void **state)
{
    struct fixture *f = *state;
    struct result r;
    f->idp.mode = IDP_REFUSE_ECHO;
    f->p = make_provider(f);
    request(f, &r, 0);
    assert_false(r.ok);
    assert_int_equal(r.temporary, 0);
    assert_int_equal(strncmp(r.err, "error=invalid_client aadsts=700027 hint=\"the certificate",
                             strlen("error=invalid_client aadsts=700027 hint=\"the certificate")),
                     0);
    assert_non_null(strstr(r.err, "\" description=\"AADSTS700027"));
    assert_non_null(strstr(r.err, "[redacted]"));
    assert_null(strstr(r.err, f->assertions[0]));
    /* not even the start of it (the IdP's description is cut short) */
    char head[32];
    memcpy(head, f->assertions[0], sizeof(head) - 1);
    head[sizeof(head) - 1] = '\0';
    assert_null(strstr(r.err, head));
    char *logged = log_text(f);
    assert_null(strstr(logged, head));
    free(logged);
    assert_log_has(f, "event=token_failed account=scanners temporary=0 status=401");
    assert_log_has(f, "error=invalid_client aadsts=700027");
}

static void expect_refused(struct fixture *f, const char *cert, const char *key, const char *want)
{
    char err[512];
    struct provider *p = try_provider(f, cert, key, err, sizeof(err));
    if (p)
        fail_msg("provider_new accepted %s / %s", cert, key);
    if (!strstr(err, want))
        fail_msg("error \"%s\" lacks \"%s\"", err, want);
    assert_null(strstr(err, "PRIVATE KEY-----\n"));
}

static void test_key_not_matching(void **state)
{
    struct fixture *f = *state;
    char cert[256], key[256], want[600];
    EVP_PKEY *a = rsa_key(), *b = rsa_key();
    make_pair("mismatch", a, b, -3600, 365 * DAY, 0600, cert, key);
    snprintf(want, sizeof(want),
             "account scanners: client_key %s does not match "
             "client_certificate %s",
             key, cert);
    expect_refused(f, cert, key, want);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
}

static void test_validity(void **state)
{
    struct fixture *f = *state;
    char cert[256], key[256];
    EVP_PKEY *k = rsa_key();
    make_pair("expired", k, k, -400 * DAY, -DAY, 0600, cert, key);
    expect_refused(f, cert, key, "expired.pem has expired");
    make_pair("future", k, k, DAY, 400 * DAY, 0600, cert, key);
    expect_refused(f, cert, key, "future.pem is not valid yet");
    /* ten days left: works, with a warning */
    make_pair("soon", k, k, -DAY, 10 * DAY - 3600, 0600, cert, key);
    snprintf(f->cert, sizeof(f->cert), "%s", cert);
    snprintf(f->key, sizeof(f->key), "%s", key);
    f->p = make_provider(f);
    assert_log_has(f, "event=certificate_expiring account=scanners days_left=9 certificate=");
    EVP_PKEY_free(k);
}

static void test_bad_keys(void **state)
{
    struct fixture *f = *state;
    char cert[256], key[256];
    EVP_PKEY *k = rsa_key();
    make_pair("open", k, k, -3600, DAY, 0640, cert, key);
    expect_refused(f, cert, key, "mode 0640 is readable or writable by group/others");
    expect_refused(f, cert, "/nonexistent/key.pem", "No such file");
    expect_refused(f, cert, NULL, "client_certificate needs client_key");
    expect_refused(f, key, key, "no PEM certificate");
    make_pair("swapped", k, k, -3600, DAY, 0600, cert, key);
    expect_refused(f, key, cert, "no PEM certificate");
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    make_pair("ec", ec, ec, -3600, DAY, 0600, cert, key);
    expect_refused(f, cert, key, "is not an RSA key");
    EVP_PKEY_free(ec);
    EVP_PKEY_free(k);
}

/* ---- the config keys ---- */

static void write_text(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static struct config *load_account(const char *account_lines, char **errs, char *path)
{
    char text[2048];
    snprintf(text, sizeof(text),
             "[proxy]\nlisten = 127.0.0.1:2525\n"
             "[account a]\nprovider = microsoft\ntenant = contoso.test\nclient_id = c\n"
             "%smailbox = scan@contoso.test\n"
             "[device d]\naddress = 10.0.0.1\naccount = a\n",
             account_lines);
    sprintf(path, "%s/c.conf", test_dir);
    write_text(path, text);
    *errs = NULL;
    return config_load(path, errs);
}

static void expect_config_error(const char *lines, const char *want)
{
    char *errs, path[300];
    struct config *cfg = load_account(lines, &errs, path);
    if (cfg)
        fail_msg("config accepted:\n%s", lines);
    if (!errs || !strstr(errs, want))
        fail_msg("errors \"%s\" lack \"%s\"", errs ? errs : "", want);
    free(errs);
}

static void test_config_keys(void **state)
{
    struct fixture *f = *state;
    char lines[1024], want[1024], cert[256], key[256], secret[256], path[300];
    char *errs;
    EVP_PKEY *k = rsa_key();

    (void)f;
    make_pair("cfg", k, k, -3600, DAY, 0600, cert, key);
    sprintf(secret, "%s/a.secret", test_dir);
    write_text(secret, "s3cret\n");
    assert_int_equal(chmod(secret, 0600), 0);

    snprintf(lines, sizeof(lines), "client_certificate = %s\nclient_key = %s\n", cert, key);
    struct config *cfg = load_account(lines, &errs, path);
    if (!cfg)
        fail_msg("config_load: %s", errs);
    assert_string_equal(cfg->accounts[0].client_certificate, cert);
    assert_string_equal(cfg->accounts[0].client_key, key);
    assert_null(cfg->accounts[0].client_secret_file);
    assert_null(cfg->accounts[0].client_secret);
    config_free(cfg);

    /* the key must not be readable by others: file:line and the fix */
    assert_int_equal(chmod(key, 0640), 0);
    snprintf(want, sizeof(want), "%s/c.conf:8: client_key: %s: mode 0640 is readable", test_dir,
             key);
    expect_config_error(lines, want);
    assert_int_equal(chmod(key, 0600), 0);

    snprintf(lines, sizeof(lines), "client_certificate = %s\n", cert);
    snprintf(want, sizeof(want),
             "%s/c.conf:7: client_certificate is set but client_key is not; set both", test_dir);
    expect_config_error(lines, want);

    snprintf(lines, sizeof(lines), "client_key = %s\n", key);
    snprintf(want, sizeof(want),
             "%s/c.conf:7: client_key is set but client_certificate is not; set both", test_dir);
    expect_config_error(lines, want);

    snprintf(lines, sizeof(lines),
             "client_secret_file = %s\nclient_certificate = %s\nclient_key = %s\n", secret, cert,
             key);
    snprintf(want, sizeof(want),
             "%s/c.conf:8: [account a]: client_secret_file (line 7) and a certificate are both "
             "set; use one of the two",
             test_dir);
    expect_config_error(lines, want);

    snprintf(want, sizeof(want),
             "%s/c.conf:3: [account a]: missing required key 'client_secret_file' (a file of "
             "mode 0600), or 'client_certificate' and 'client_key'",
             test_dir);
    expect_config_error("", want);
    EVP_PKEY_free(k);
}

/* The shipped example loads, with its /etc paths pointed at the test directory. */
static void test_example_file(void **state)
{
    char path[512], cert[256], key[256], *text, *out, *o, *p, *errs = NULL;
    size_t len, cap = 1 << 16;
    FILE *fp;
    EVP_PKEY *k = rsa_key();
    (void)state;
    make_pair("cert", k, k, -3600, DAY, 0600, cert, key);
    EVP_PKEY_free(k);
    snprintf(path, sizeof(path), "%s/key.pem", test_dir);
    assert_int_equal(rename(key, path), 0);
    snprintf(path, sizeof(path), "%s", __FILE__);
    p = strstr(path, "tests/unit/");
    assert_non_null(p);
    snprintf(p, sizeof(path) - (size_t)(p - path), "examples/m365-certificate.conf");
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
    snprintf(path, sizeof(path), "%s/example.conf", test_dir);
    write_text(path, out);
    struct config *cfg = config_load(path, &errs);
    if (!cfg)
        fail_msg("example: %s", errs);
    assert_int_equal(cfg->naccounts, 1);
    assert_non_null(strstr(cfg->accounts[0].client_certificate, "/cert.pem"));
    assert_non_null(strstr(cfg->accounts[0].client_key, "/key.pem"));
    assert_null(cfg->accounts[0].client_secret_file);
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
    EVP_PKEY_free(rsa_cache[0]);
    EVP_PKEY_free(rsa_cache[1]);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", test_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_assertion_signed_and_fresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_assertion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_not_matching, setup, teardown),
        cmocka_unit_test_setup_teardown(test_validity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_keys, setup, teardown),
        cmocka_unit_test(test_example_file),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
