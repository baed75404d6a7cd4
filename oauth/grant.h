/* Constructors of the grant types behind provider_new(): one file per grant, private to oauth/.
 * grant_post.c holds what they share. */
#ifndef SOP_GRANT_H
#define SOP_GRANT_H

#include <stddef.h>

#include <jwt.h>
#include <openssl/evp.h>

#include "oauth/provider.h"

struct http;

/* grant_client_secret.c: client credentials with a client secret (Entra, generic OAuth 2). */
struct provider *grant_client_secret_new(const struct oauth_client_cfg *cfg, struct http *http,
                                         char *err, size_t errlen);
/* grant_client_assertion.c: client credentials with a certificate: a signed RS256 assertion. */
struct provider *grant_client_assertion_new(const struct oauth_client_cfg *cfg, struct http *http,
                                            char *err, size_t errlen);
/* grant_google.c: a Google service account acting for cfg->mailbox (domain-wide delegation). */
struct provider *grant_google_new(const struct oauth_client_cfg *cfg, struct http *http, char *err,
                                  size_t errlen);

/* grant_refresh.c: a delegated mailbox's refresh token (rotated tokens are handed on). */
struct provider *grant_refresh_new(const struct oauth_client_cfg *cfg, struct http *http, char *err,
                                   size_t errlen);

/* What an admin should do about an IdP's refusal (error, description: the IdP's, may be NULL):
 * a short plain-text hint in buf, or buf left empty. p is the provider that asked. */
typedef void (*grant_explain_fn)(const struct provider *p, const char *error,
                                 const char *description, char *buf, size_t len);

/* grant_key.c: the RSA key an assertion grant signs with, as PKCS#8 PEM in wiped memory. */
struct grant_key {
    char *pem;
    size_t len;
};
/* Keep k (a copy). 0 ok; -1 OpenSSL or memory failure. */
int grant_key_set(struct grant_key *gk, EVP_PKEY *k);
/* Sign jwt (headers and claims set) with RS256: the encoded token (secret_free it) or NULL.
 * Frees jwt either way. */
char *grant_key_sign(const struct grant_key *gk, jwt_t *jwt);
void grant_key_clear(struct grant_key *gk);

/* grant_post.c: where an account's tokens come from, checked and copied from its config. */
struct grant_endpoint {
    struct http *http;
    char *token_url;
    char *client_id; /* NULL for grants without one (google's service account) */
    char *scope;     /* NULL: not sent; "microsoft" defaults to Exchange Online's .default */
    char *ca_file;
    grant_explain_fn explain; /* NULL: refusals are logged as the IdP put them */
};

/* Check provider, token_url (https://, or http:// to loopback) and client_id, and copy them.
 * 0, or -1 with a message naming the account in err. */
int grant_endpoint_init(struct grant_endpoint *ep, const struct oauth_client_cfg *cfg,
                        struct http *http, char *err, size_t errlen);
/* For grants without a client_id (google's service account): token_url is the one the grant
 * chose, checked like grant_endpoint_init's; scope and ca_file from cfg. 0, or -1 with err. */
int grant_endpoint_init_url(struct grant_endpoint *ep, const struct oauth_client_cfg *cfg,
                            const char *token_url, struct http *http, char *err, size_t errlen);
void grant_endpoint_clear(struct grant_endpoint *ep);
/* POST form to the token endpoint and call cb with the token or a log-safe error (never with
 * credential in it, whatever the IdP echoes); kind names the credential in the log line
 * ("secret", "certificate"), p->ops->grant the grant. NULL if it could not start (then cb is
 * never called). */
struct provider_req *grant_post(struct provider *p, const struct grant_endpoint *ep,
                                const char *form, const char *credential, const char *kind,
                                provider_done_cb cb, void *arg);
/* provider_ops.cancel of every grant built on grant_post. */
void grant_post_cancel(struct provider_req *r);

#endif
