/* Client credentials with a certificate (RFC 7523 client authentication, Entra's "certificate
 * credentials"): every token request carries a fresh RS256 JWT signed with the account's key,
 * whose header names the certificate (x5t#S256, x5t) the admin uploaded to the app registration.
 * The certificate and key are checked once at start-up: they must belong together, the key must
 * be RSA, and the certificate must be valid now (a warning 30 days before it expires).
 * Neither the key nor an assertion is ever logged; key buffers are wiped. */
#include "oauth/grant.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "common/log.h"
#include "common/secret.h"
#include "oauth/http.h"
#include "oauth/provider.h"

#define GRANT_CA_LIFETIME 600 /* seconds: Entra takes at most 10 minutes */
#define GRANT_CA_WARN_DAYS 30
#define GRANT_CA_MIN_BITS 2048
#define GRANT_CA_ASSERTION_TYPE "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

struct grant_ca {
    struct grant_endpoint ep;
    struct grant_key key;
    char x5t_s256[48]; /* base64url SHA-256 of the certificate's DER */
    char x5t[32];      /* base64url SHA-1 (older Entra) */
};

/* base64url without padding (RFC 7515 2). */
static void grant_ca_b64url(char *out, size_t outlen, const unsigned char *in, size_t len)
{
    unsigned char tmp[128];
    int n;
    if (len > 64 || outlen < 4 * ((len + 2) / 3) + 1) {
        out[0] = '\0';
        return;
    }
    n = EVP_EncodeBlock(tmp, in, (int)len);
    while (n > 0 && tmp[n - 1] == '=')
        n--;
    for (int i = 0; i < n; i++)
        out[i] = tmp[i] == '+' ? '-' : tmp[i] == '/' ? '_' : (char)tmp[i];
    out[n] = '\0';
}

/* Never prompt for a passphrase on the terminal: an encrypted key is an error. */
static int grant_ca_no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    *(int *)u = 1;
    return -1;
}

static X509 *grant_ca_load_cert(const char *who, const char *path, char *err, size_t errlen)
{
    BIO *b = BIO_new_file(path, "r");
    X509 *x = NULL;
    if (!b) {
        snprintf(err, errlen, "account %s: client_certificate %s: cannot be read", who, path);
        return NULL;
    }
    x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    if (!x)
        snprintf(err, errlen,
                 "account %s: client_certificate %s: no PEM certificate in it "
                 "(-----BEGIN CERTIFICATE-----)",
                 who, path);
    return x;
}

static EVP_PKEY *grant_ca_load_key(const char *who, const char *path, char *err, size_t errlen)
{
    char *pem = NULL, ferr[384];
    BIO *b = NULL;
    EVP_PKEY *k = NULL;
    int wanted_passphrase = 0;

    /* secret_read_file refuses a key others can read, and never quotes the content. */
    if (secret_read_file(path, &pem, ferr, sizeof(ferr)) != 0) {
        snprintf(err, errlen, "account %s: client_key %s", who, ferr);
        return NULL;
    }
    b = BIO_new_mem_buf(pem, (int)strlen(pem));
    if (b)
        k = PEM_read_bio_PrivateKey(b, NULL, grant_ca_no_passphrase, &wanted_passphrase);
    BIO_free(b);
    secret_free(pem);
    if (!k) {
        if (wanted_passphrase)
            snprintf(err, errlen,
                     "account %s: client_key %s is encrypted; store it without a passphrase "
                     "(openssl pkey -in KEY -out KEY.new) and chmod 600",
                     who, path);
        else
            snprintf(err, errlen,
                     "account %s: client_key %s: no PEM private key in it "
                     "(-----BEGIN PRIVATE KEY-----)",
                     who, path);
    }
    return k;
}

/* The certificate must be valid now; warn when it is about to expire. */
static int grant_ca_check_validity(const char *who, const char *path, X509 *x, char *err,
                                   size_t errlen)
{
    int days = 0, secs = 0;
    if (X509_cmp_current_time(X509_get0_notBefore(x)) >= 0) {
        snprintf(err, errlen,
                 "account %s: client_certificate %s is not valid yet (check the clock)", who, path);
        return -1;
    }
    if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
        snprintf(err, errlen,
                 "account %s: client_certificate %s has expired; make a new one and upload it "
                 "to the app registration (Certificates & secrets)",
                 who, path);
        return -1;
    }
    if (ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)) && days < GRANT_CA_WARN_DAYS)
        log_warn("event=certificate_expiring account=%s days_left=%d certificate=%s", who, days,
                 path);
    return 0;
}

static int grant_ca_load(struct grant_ca *g, const char *who, const struct oauth_client_cfg *cfg,
                         char *err, size_t errlen)
{
    X509 *x = NULL;
    EVP_PKEY *k = NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int rc = -1;

    if (!cfg->client_key || !*cfg->client_key) {
        snprintf(err, errlen, "account %s: client_certificate needs client_key", who);
        goto out;
    }
    x = grant_ca_load_cert(who, cfg->client_cert, err, errlen);
    if (!x)
        goto out;
    k = grant_ca_load_key(who, cfg->client_key, err, errlen);
    if (!k)
        goto out;
    if (!EVP_PKEY_is_a(k, "RSA")) {
        snprintf(err, errlen,
                 "account %s: client_key %s is not an RSA key (%s); RS256 assertions need RSA, "
                 "e.g. openssl req -x509 -newkey rsa:2048 ...",
                 who, cfg->client_key, EVP_PKEY_get0_type_name(k));
        goto out;
    }
    if (EVP_PKEY_get_bits(k) < GRANT_CA_MIN_BITS) {
        snprintf(err, errlen, "account %s: client_key %s has %d bits; at least %d are needed", who,
                 cfg->client_key, EVP_PKEY_get_bits(k), GRANT_CA_MIN_BITS);
        goto out;
    }
    if (X509_check_private_key(x, k) != 1) {
        snprintf(err, errlen,
                 "account %s: client_key %s does not match client_certificate %s (the "
                 "certificate holds another public key)",
                 who, cfg->client_key, cfg->client_cert);
        goto out;
    }
    if (grant_ca_check_validity(who, cfg->client_cert, x, err, errlen) != 0)
        goto out;
    if (!X509_digest(x, EVP_sha256(), md, &mdlen))
        goto oom;
    grant_ca_b64url(g->x5t_s256, sizeof(g->x5t_s256), md, mdlen);
    if (!X509_digest(x, EVP_sha1(), md, &mdlen))
        goto oom;
    grant_ca_b64url(g->x5t, sizeof(g->x5t), md, mdlen);
    if (!g->x5t_s256[0] || !g->x5t[0] || grant_key_set(&g->key, k) != 0)
        goto oom;
    {
        /* The SHA-1 thumbprint in hex is what the Entra portal shows next to the certificate. */
        char thumb[2 * 20 + 1];
        for (unsigned int i = 0; i < mdlen && i < 20; i++)
            snprintf(thumb + 2 * i, 3, "%02X", md[i]);
        log_info("event=certificate account=%s certificate=%s thumbprint=%s", who, cfg->client_cert,
                 thumb);
    }
    rc = 0;
    goto out;
oom:
    snprintf(err, errlen, "account %s: client_certificate %s: out of memory", who,
             cfg->client_cert);
out:
    EVP_PKEY_free(k);
    X509_free(x);
    return rc;
}

/* A fresh assertion: malloc'd, the caller wipes and frees it. NULL on failure. */
static char *grant_ca_assertion(const struct grant_ca *g)
{
    jwt_t *jwt = NULL;
    unsigned char rnd[16];
    char jti[2 * sizeof(rnd) + 1];
    long now = (long)time(NULL);

    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        return NULL;
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(jti + 2 * i, 3, "%02x", rnd[i]);
    if (jwt_new(&jwt) != 0)
        return NULL;
    if (jwt_add_header(jwt, "typ", "JWT") == 0 &&
        jwt_add_header(jwt, "x5t#S256", g->x5t_s256) == 0 &&
        jwt_add_header(jwt, "x5t", g->x5t) == 0 &&
        jwt_add_grant(jwt, "aud", g->ep.token_url) == 0 &&
        jwt_add_grant(jwt, "iss", g->ep.client_id) == 0 &&
        jwt_add_grant(jwt, "sub", g->ep.client_id) == 0 && jwt_add_grant(jwt, "jti", jti) == 0 &&
        jwt_add_grant_int(jwt, "nbf", now) == 0 && jwt_add_grant_int(jwt, "iat", now) == 0 &&
        jwt_add_grant_int(jwt, "exp", now + GRANT_CA_LIFETIME) == 0)
        return grant_key_sign(&g->key, jwt);
    jwt_free(jwt);
    return NULL;
}

static struct provider_req *grant_ca_request(struct provider *p, provider_done_cb cb, void *arg)
{
    struct grant_ca *g = p->ctx;
    struct provider_req *r = NULL;
    char *form = NULL, *assertion;

    if (!cb)
        return NULL;
    assertion = grant_ca_assertion(g);
    if (!assertion) {
        log_warn("event=token_failed account=%s temporary=1 error=\"cannot sign the assertion\"",
                 p->account);
        return NULL;
    }
    if (http_form_add(&form, "grant_type", "client_credentials") != 0 ||
        http_form_add(&form, "client_id", g->ep.client_id) != 0 ||
        http_form_add(&form, "client_assertion_type", GRANT_CA_ASSERTION_TYPE) != 0 ||
        http_form_add(&form, "client_assertion", assertion) != 0 ||
        (g->ep.scope && http_form_add(&form, "scope", g->ep.scope) != 0))
        goto out;
    r = grant_post(p, &g->ep, form, assertion, "certificate", cb, arg);
out:
    secret_free(form);
    secret_free(assertion);
    return r;
}

static void grant_ca_destroy(struct provider *p)
{
    struct grant_ca *g = p ? p->ctx : NULL;
    if (!g)
        return;
    grant_endpoint_clear(&g->ep);
    grant_key_clear(&g->key);
    free(g);
    p->ctx = NULL;
}

static const struct provider_ops grant_ca_ops = {
    .grant = "client_credentials",
    .request = grant_ca_request,
    .cancel = grant_post_cancel,
    .destroy = grant_ca_destroy,
};

struct provider *grant_client_assertion_new(const struct oauth_client_cfg *cfg, struct http *http,
                                            char *err, size_t errlen)
{
    struct provider *p = calloc(1, sizeof(*p));
    struct grant_ca *g = calloc(1, sizeof(*g));
    const char *who = cfg->account ? cfg->account : "?";

    if (!p || !g) {
        snprintf(err, errlen, "account %s: out of memory", who);
        free(g);
        free(p);
        return NULL;
    }
    p->ops = &grant_ca_ops;
    p->ctx = g;
    snprintf(p->account, sizeof(p->account), "%s", who);
    if (grant_endpoint_init(&g->ep, cfg, http, err, errlen) != 0 ||
        grant_ca_load(g, who, cfg, err, errlen) != 0) {
        provider_free(p);
        return NULL;
    }
    return p;
}
