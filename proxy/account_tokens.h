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
