/* Shared by the commands (proxy/cli*.c). */
#ifndef SOP_CLI_INT_H
#define SOP_CLI_INT_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct cfg_account;
struct event_base;
struct http;
struct token_store;
struct token_cache;

/* How long a command waits for the daemon's answer (which may wait for the IdP). */
#define CLI_DAEMON_TIMEOUT_MS 90000
/* How long a command without a daemon waits for the IdP. */
#define CLI_TOKEN_TIMEOUT_SECONDS 90

int cli_token(struct config *cfg, int argc, char **argv);
int cli_accounts(struct config *cfg, int argc, char **argv);
int cli_authorize(struct config *cfg, int argc, char **argv);
int cli_devices(struct config *cfg, int argc, char **argv);
int cli_test(struct config *cfg, int argc, char **argv);

/* The account named name, or NULL after telling stderr which names are valid. */
const struct cfg_account *cli_account(const struct config *cfg, const char *name);
/* t (seconds since the epoch) as "2026-11-22T19:30:00Z"; "-" for 0. Returns buf. */
const char *cli_time(int64_t t, char *buf, size_t len);

/* An account's token source without a daemon: the same provider, cache and store the daemon
 * would use (proxy/account_tokens.h), on an event loop of our own. */
struct cli_offline {
    struct event_base *base;
    struct http *http;
    struct token_store *store; /* NULL without key_file */
    struct token_cache *cache;
};
/* 0 ok; -1 with err. need_store: fail when there is no key_file. Accounts with an issuer are
 * discovered first (cfg gets their token_url), as the daemon does at start-up. */
int cli_offline_open(struct cli_offline *o, struct config *cfg, const struct cfg_account *a,
                     int need_store, char *err, size_t errlen);
/* One usable token: the stored one if still valid, else from the IdP (then persisted).
 * 0 and *token (secret_free) and *expires_at (wall clock seconds); -1 with err. */
int cli_offline_token(struct cli_offline *o, char **token, int64_t *expires_at, char *err,
                      size_t errlen);
void cli_offline_close(struct cli_offline *o);

#endif
