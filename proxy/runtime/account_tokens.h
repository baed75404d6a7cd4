/* One account's token source, built from its config: the grant (provider), the token cache in
 * front of it, and the token store behind it. The daemon and the command-line tools (token,
 * accounts, authorize) build it the same way, so they behave the same. */
#ifndef SOP_ACCOUNT_TOKENS_H
#define SOP_ACCOUNT_TOKENS_H

#include <stddef.h>

struct config;
struct cfg_account;
struct http;
struct token_cache;
struct token_store;

/* Every account with provider = oauth2 and issuer: read the issuer's discovery document (once;
 * blocks up to 10 s per account, so start-up only) and fill in its token_url, and its
 * device_authorization_url unless the config names one. Call after config_load, before
 * account_tokens_new. 0 ok (also: no issuer anywhere); -1 with err ("FILE line N: account A:
 * issuer URL: why"): that account cannot get tokens, do not start. */
int account_tokens_discover(struct config *cfg, char *err, size_t errlen);
/* store may be NULL (no key_file: nothing persisted). NULL with err ("FILE line N: account A:
 * why") when the account's grant cannot be set up. */
struct token_cache *account_tokens_new(const struct config *cfg, const struct cfg_account *a,
                                       struct http *http, struct token_store *store, char *err,
                                       size_t errlen);
/* "smtp-oauth-proxy --config FILE authorize ACCOUNT": what a person runs when the account's
 * refresh token is gone. */
void account_tokens_authorize_hint(const struct config *cfg, const struct cfg_account *a, char *buf,
                                   size_t len);

#endif
