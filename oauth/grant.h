/* Constructors of the grant types behind provider_new(): one file per grant, private to oauth/. */
#ifndef SOP_GRANT_H
#define SOP_GRANT_H

#include <stddef.h>

struct http;
struct oauth_client_cfg;
struct provider;

/* grant_client_secret.c: client credentials with a client secret (Entra, generic OAuth 2). */
struct provider *grant_client_secret_new(const struct oauth_client_cfg *cfg, struct http *http,
                                         char *err, size_t errlen);

#endif
