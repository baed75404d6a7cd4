/* Google service account with domain-wide delegation (RFC 7523 JWT bearer grant): every token
 * request carries a fresh RS256 JWT signed with the service account's key, naming the mailbox
 * the token acts for (sub). The JSON key file Google hands out is read once at start-up and
 * checked; the key is kept as PEM in wiped memory for libjwt. Neither the key nor an assertion
 * is ever logged, and Google's refusals are turned into what a Workspace admin should do. */
#include "oauth/grant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/log.h"
#include "common/secret.h"
#include "oauth/http.h"
#include "oauth/provider.h"

#define GRANT_GOOGLE_TOKEN_URL "https://oauth2.googleapis.com/token"
#define GRANT_GOOGLE_SCOPE "https://mail.google.com/"
#define GRANT_GOOGLE_LIFETIME 3600 /* seconds: Google takes at most one hour */
#define GRANT_GOOGLE_MIN_BITS 2048
#define GRANT_GOOGLE_GRANT_TYPE "urn:ietf:params:oauth:grant-type:jwt-bearer"
#define GRANT_GOOGLE_FIELD_MAX 256 /* client_email, private_key_id, client_id, token_uri */

struct grant_google {
    struct grant_endpoint ep;
    struct grant_key key;
    char *client_email; /* iss */
    char *key_id;       /* kid: private_key_id */
    char *client_id;    /* the numeric id the Admin console wants; NULL if the file has none */
    char *mailbox;      /* sub */
};

/* Never prompt for a passphrase on the terminal: an encrypted key is an error. */
static int grant_google_no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* cJSON_Delete frees without wiping: the key's copies in the tree are cleared first. */
static void grant_google_json_wipe(cJSON *j)
{
    for (cJSON *c = j; c; c = c->next) {
        if (c->valuestring)
            OPENSSL_cleanse(c->valuestring, strlen(c->valuestring));
        if (c->child)
            grant_google_json_wipe(c->child);
    }
}

/* A short printable string field (no quotes or backslashes: it goes into logs and the JWT).
 * NULL if absent, empty or odd; *bad set if present but odd. */
static const char *grant_google_field(const cJSON *j, const char *name, int *bad)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    size_t n;
    if (!v)
        return NULL;
    if (!cJSON_IsString(v) || !v->valuestring || !*v->valuestring) {
        *bad = 1;
        return NULL;
    }
    n = strlen(v->valuestring);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v->valuestring[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '"' || ch == '\\') {
            *bad = 1;
            return NULL;
        }
    }
    if (n > GRANT_GOOGLE_FIELD_MAX) {
        *bad = 1;
        return NULL;
    }
    return v->valuestring;
}

/* The private key of the JSON: RSA, at least 2048 bits, no passphrase. Messages never quote it. */
static int grant_google_load_key(struct grant_google *g, const char *who, const char *path,
                                 const char *pem, char *err, size_t errlen)
{
    BIO *b = BIO_new_mem_buf(pem, (int)strlen(pem));
    EVP_PKEY *k = NULL;
    int rc = -1;

    if (b)
        k = PEM_read_bio_PrivateKey(b, NULL, grant_google_no_passphrase, NULL);
    BIO_free(b);
    if (!k) {
        snprintf(err, errlen,
                 "account %s: service_account_key %s: \"private_key\" is not a PEM private key "
                 "without a passphrase; download a new JSON key",
                 who, path);
        goto out;
    }
    if (!EVP_PKEY_is_a(k, "RSA") || EVP_PKEY_get_bits(k) < GRANT_GOOGLE_MIN_BITS) {
        snprintf(err, errlen,
                 "account %s: service_account_key %s: \"private_key\" is not an RSA key of at "
                 "least %d bits (RS256 needs one)",
                 who, path, GRANT_GOOGLE_MIN_BITS);
        goto out;
    }
    if (grant_key_set(&g->key, k) != 0) {
        snprintf(err, errlen, "account %s: service_account_key %s: out of memory", who, path);
        goto out;
    }
    rc = 0;
out:
    EVP_PKEY_free(k);
    return rc;
}

/* Read and check the key file; the token URL into *token_uri (malloc'd) when the file names one. */
static int grant_google_load(struct grant_google *g, const char *who, const char *path,
                             char **token_uri, char *err, size_t errlen)
{
    char *text = NULL, ferr[384];
    cJSON *j = NULL;
    const cJSON *type, *pk;
    const char *email, *kid, *cid, *uri, *missing = NULL;
    int bad = 0, rc = -1;

    /* secret_read_file refuses a file others can read, and never quotes the content. */
    if (secret_read_file(path, &text, ferr, sizeof(ferr)) != 0) {
        snprintf(err, errlen, "account %s: service_account_key %s", who, ferr);
        return -1;
    }
    j = cJSON_Parse(text);
    if (!cJSON_IsObject(j)) {
        snprintf(err, errlen,
                 "account %s: service_account_key %s is not a JSON object (the service "
                 "account's key as Google Cloud console downloads it: Keys > Add key > JSON)",
                 who, path);
        goto out;
    }
    type = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "service_account") != 0) {
        /* The value is not quoted: whatever it is, it came from a file of secrets. */
        snprintf(err, errlen,
                 "account %s: service_account_key %s: \"type\" is not \"service_account\" (a "
                 "service account's JSON key is needed, not an OAuth client or user credential)",
                 who, path);
        goto out;
    }
    email = grant_google_field(j, "client_email", &bad);
    kid = grant_google_field(j, "private_key_id", &bad);
    cid = grant_google_field(j, "client_id", &bad);
    uri = grant_google_field(j, "token_uri", &bad);
    pk = cJSON_GetObjectItemCaseSensitive(j, "private_key");
    if (!email)
        missing = "client_email";
    else if (!kid)
        missing = "private_key_id";
    else if (!cJSON_IsString(pk) || !pk->valuestring || !*pk->valuestring)
        missing = "private_key";
    else if (bad)
        missing = "client_id or token_uri";
    if (missing) {
        snprintf(err, errlen,
                 "account %s: service_account_key %s: \"%s\" is missing or not a short printable "
                 "string",
                 who, path, missing);
        goto out;
    }
    if (!strchr(email, '@')) {
        snprintf(err, errlen,
                 "account %s: service_account_key %s: \"client_email\" is not an email address",
                 who, path);
        goto out;
    }
    if (grant_google_load_key(g, who, path, pk->valuestring, err, errlen) != 0)
        goto out;
    g->client_email = strdup(email);
    g->key_id = strdup(kid);
    g->client_id = cid ? strdup(cid) : NULL;
    *token_uri = uri ? strdup(uri) : NULL;
    if (!g->client_email || !g->key_id || (cid && !g->client_id) || (uri && !*token_uri)) {
        snprintf(err, errlen, "account %s: service_account_key %s: out of memory", who, path);
        goto out;
    }
    rc = 0;
out:
    grant_google_json_wipe(j);
    cJSON_Delete(j);
    secret_free(text);
    return rc;
}

/* Google's refusals, in words a Workspace admin can act on (log-safe: no key, no assertion). */
static void grant_google_explain(const struct provider *p, const char *error,
                                 const char *description, char *buf, size_t len)
{
    const struct grant_google *g = p->ctx;
    const char *d = description ? description : "";

    if (strcmp(error, "unauthorized_client") == 0) {
        snprintf(buf, len,
                 "domain-wide delegation is not granted: in the Admin console (Security > "
                 "Access and data control > API controls > Manage Domain Wide Delegation) add "
                 "client ID %s with scope %s",
                 g->client_id ? g->client_id : "(the service account's Unique ID)",
                 g->ep.scope ? g->ep.scope : GRANT_GOOGLE_SCOPE);
    } else if (strcmp(error, "invalid_grant") == 0) {
        if (strstr(d, "Invalid email or User ID"))
            snprintf(buf, len,
                     "mailbox %s is not a user of the Workspace domain (or is suspended): check "
                     "mailbox =",
                     g->mailbox);
        else if (strstr(d, "Invalid JWT Signature"))
            snprintf(buf, len,
                     "Google does not know key %s of %s (deleted or disabled?): make a new JSON "
                     "key and point service_account_key at it",
                     g->key_id, g->client_email);
        else if (strstr(d, "timeframe") || strstr(d, "iat and exp"))
            snprintf(buf, len, "the assertion's times were refused: check this host's clock");
        else if (strstr(d, "account not found"))
            snprintf(buf, len, "service account %s does not exist (deleted?)", g->client_email);
    }
}

/* A fresh assertion: malloc'd, the caller wipes and frees it. NULL on failure. */
static char *grant_google_assertion(const struct grant_google *g)
{
    jwt_t *jwt = NULL;
    long now = (long)time(NULL);

    if (jwt_new(&jwt) != 0)
        return NULL;
    if (jwt_add_header(jwt, "typ", "JWT") == 0 && jwt_add_header(jwt, "kid", g->key_id) == 0 &&
        jwt_add_grant(jwt, "iss", g->client_email) == 0 &&
        jwt_add_grant(jwt, "scope", g->ep.scope ? g->ep.scope : GRANT_GOOGLE_SCOPE) == 0 &&
        jwt_add_grant(jwt, "aud", g->ep.token_url) == 0 &&
        jwt_add_grant(jwt, "sub", g->mailbox) == 0 && jwt_add_grant_int(jwt, "iat", now) == 0 &&
        jwt_add_grant_int(jwt, "exp", now + GRANT_GOOGLE_LIFETIME) == 0)
        return grant_key_sign(&g->key, jwt);
    jwt_free(jwt);
    return NULL;
}

static struct provider_req *grant_google_request(struct provider *p, provider_done_cb cb, void *arg)
{
    struct grant_google *g = p->ctx;
    struct provider_req *r = NULL;
    char *form = NULL, *assertion;

    if (!cb)
        return NULL;
    assertion = grant_google_assertion(g);
    if (!assertion) {
        log_warn("event=token_failed account=%s temporary=1 error=\"cannot sign the assertion\"",
                 p->account);
        return NULL;
    }
    if (http_form_add(&form, "grant_type", GRANT_GOOGLE_GRANT_TYPE) != 0 ||
        http_form_add(&form, "assertion", assertion) != 0)
        goto out;
    r = grant_post(p, &g->ep, form, assertion, "service_account_key", cb, arg);
out:
    secret_free(form);
    secret_free(assertion);
    return r;
}

static void grant_google_destroy(struct provider *p)
{
    struct grant_google *g = p ? p->ctx : NULL;
    if (!g)
        return;
    grant_endpoint_clear(&g->ep);
    grant_key_clear(&g->key);
    free(g->client_email);
    free(g->key_id);
    free(g->client_id);
    free(g->mailbox);
    free(g);
    p->ctx = NULL;
}

static const struct provider_ops grant_google_ops = {
    .grant = "service_account",
    .request = grant_google_request,
    .cancel = grant_post_cancel,
    .destroy = grant_google_destroy,
};

struct provider *grant_google_new(const struct oauth_client_cfg *cfg, struct http *http, char *err,
                                  size_t errlen)
{
    struct provider *p = calloc(1, sizeof(*p));
    struct grant_google *g = calloc(1, sizeof(*g));
    const char *who = cfg->account ? cfg->account : "?";
    const char *path = cfg->service_account_key;
    char *token_uri = NULL;
    const char *url;

    if (!p || !g) {
        snprintf(err, errlen, "account %s: out of memory", who);
        free(g);
        free(p);
        return NULL;
    }
    p->ops = &grant_google_ops;
    p->ctx = g;
    snprintf(p->account, sizeof(p->account), "%s", who);
    if (!cfg->provider || strcmp(cfg->provider, "google") != 0) {
        snprintf(err, errlen, "account %s: grant = service_account needs provider = google", who);
        goto fail;
    }
    if (!path || !*path) {
        snprintf(err, errlen, "account %s: service_account_key is required", who);
        goto fail;
    }
    if (!cfg->mailbox || !*cfg->mailbox) {
        snprintf(err, errlen,
                 "account %s: mailbox is required (the user the service account acts for)", who);
        goto fail;
    }
    g->mailbox = strdup(cfg->mailbox);
    if (!g->mailbox) {
        snprintf(err, errlen, "account %s: out of memory", who);
        goto fail;
    }
    if (grant_google_load(g, who, path, &token_uri, err, errlen) != 0)
        goto fail;
    /* token_url in the config wins (tests, proxies); then the key file's; then Google's. */
    url = cfg->token_url && *cfg->token_url ? cfg->token_url
          : token_uri                       ? token_uri
                                            : GRANT_GOOGLE_TOKEN_URL;
    if (grant_endpoint_init_url(&g->ep, cfg, url, http, err, errlen) != 0)
        goto fail;
    if (!g->ep.scope) {
        g->ep.scope = strdup(GRANT_GOOGLE_SCOPE);
        if (!g->ep.scope) {
            snprintf(err, errlen, "account %s: out of memory", who);
            goto fail;
        }
    }
    g->ep.explain = grant_google_explain;
    free(token_uri);
    log_info("event=service_account account=%s client_email=%s key_id=%s client_id=%s sub=%s "
             "token_url=%s",
             who, g->client_email, g->key_id, g->client_id ? g->client_id : "-", g->mailbox,
             g->ep.token_url);
    return p;
fail:
    free(token_uri);
    provider_free(p);
    return NULL;
}
