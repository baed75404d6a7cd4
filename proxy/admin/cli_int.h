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
int cli_queue(struct config *cfg, int argc, char **argv);

/* The account named name, or NULL after telling stderr which names are valid. */
const struct cfg_account *cli_account(const struct config *cfg, const char *name);
/* t (seconds since the epoch) as "2026-11-22T19:30:00Z"; "-" for 0. Returns buf. */
const char *cli_time(int64_t t, char *buf, size_t len);

/* An account's token source without a daemon: the same provider, cache and store the daemon
 * would use (proxy/runtime/account_tokens.h), on an event loop of our own. */
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

/* cli_test_graph.c: `test ACCOUNT --to ADDR` for upstream = graph: msg (len bytes) sent through
 * Graph with o's token cache, every request and answer printed. 0 accepted; -1 not (said why). */
int cli_test_graph(const struct config *cfg, const struct cfg_account *a, struct cli_offline *o,
                   const char *msg, size_t len, const char *to);

/* cli_report.c: a report command (accounts, devices): the daemon's JSON document for the
 * request named like the command, or, with no daemon, offline(); printed whole with --json, else
 * as an aligned table of the document's list_key array. */
#define CLI_REPORT_MAX_COLS 9
#define CLI_CELL 160
struct cJSON;
struct cli_report {
    const char *name;     /* the command, and the control request */
    const char *list_key; /* the array of rows in the document */
    size_t ncols;         /* at most CLI_REPORT_MAX_COLS */
    const char *const *head;
    void (*row)(const struct cJSON *o, char cells[][CLI_CELL]);
    /* The document without a daemon; NULL with err. */
    struct cJSON *(*offline)(const struct config *cfg, char *err, size_t errlen);
    /* Before the table (where the figures come from) and after it (may be NULL). */
    void (*before)(const struct config *cfg, const struct cJSON *doc);
    void (*after)(const struct config *cfg, const struct cJSON *doc);
};
int cli_report_run(const struct cli_report *r, struct config *cfg, int argc, char **argv);
/* A string or number member of o; NULL or 0 when absent or of another type. */
const char *cli_json_str(const struct cJSON *o, const char *key);
int64_t cli_json_num(const struct cJSON *o, const char *key);

#endif
