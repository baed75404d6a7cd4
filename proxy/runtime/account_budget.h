/* Each account's daily recipient budget (docs/account-budget.md): Exchange Online accepts 10,000
 * recipients a day per mailbox and locks the mailbox beyond. Counted here: every recipient the
 * upstream accepted, per account, in a rolling 24 hours of one-minute buckets; a message whose
 * recipients would pass the account's hold mark (daily_recipient_limit less a fixed 5 % reserve
 * for what else sends as the mailbox, Outlook included) is held. Kept across restarts in
 * STATE_DIR/account-budget.state (account_budget_file.c).
 *
 * Times are wall-clock seconds passed in by the caller, so tests drive the clock. Touched only
 * from the event loop thread. */
#ifndef SOP_ACCOUNT_BUDGET_H
#define SOP_ACCOUNT_BUDGET_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct event_base;

/* The window and its buckets: a recipient counted in minute m counts until the end of minute
 * m + 1440, so never less than 24 hours. */
#define ACCOUNT_BUDGET_WINDOW 86400
#define ACCOUNT_BUDGET_BUCKET 60
#define ACCOUNT_BUDGET_NBUCKETS (ACCOUNT_BUDGET_WINDOW / ACCOUNT_BUDGET_BUCKET + 1)
/* The reserve below the limit, in percent: held from limit - limit * 5 / 100 on (9,500 of
 * Exchange's 10,000). */
#define ACCOUNT_BUDGET_RESERVE_PERCENT 5
/* Accounts counted at most (the config names them; a state file naming more is not ours). */
#define ACCOUNT_BUDGET_MAX_ACCOUNTS 4096
/* A minute's count is capped here (and a file's line beyond it is refused). */
#define ACCOUNT_BUDGET_COUNT_MAX 1000000000u
/* The state file's name under state_dir, and how often the daemon writes it while dirty. */
#define ACCOUNT_BUDGET_FILE "account-budget.state"
#define ACCOUNT_BUDGET_FLUSH_SECONDS 5

struct account_budget;

/* NULL: out of memory. */
struct account_budget *account_budget_new(void);
void account_budget_free(struct account_budget *b);

/* The count from which messages are held: limit less the reserve (0: no limit). */
uint64_t account_budget_mark(unsigned limit);
/* n recipients of account were accepted at now. Every verb accepts b == NULL (no budget kept). */
void account_budget_add(struct account_budget *b, const char *account, size_t n, int64_t now);
/* Recipients of account accepted in the 24 hours up to now. */
uint64_t account_budget_used(const struct account_budget *b, const char *account, int64_t now);
/* May a message with n recipients of account (limit: its daily_recipient_limit, 0 none) start
 * now? 1 yes. 0 held: used + n would pass the mark; *room_at (if not NULL) is when enough of the
 * counted recipients will have aged out (a message larger than the mark waits for an empty
 * window). The first hold after a yes logs event=account_budget_hold, the first yes after a
 * hold event=account_budget_resume. */
int account_budget_admit(struct account_budget *b, const char *account, unsigned limit, size_t n,
                         int64_t now, int64_t *room_at);
/* A message of account was held (counted once per message by the caller). */
void account_budget_count_held(struct account_budget *b, const char *account);
/* Messages of account held since start. */
unsigned long account_budget_held(const struct account_budget *b, const char *account);
/* 1 if a count changed since the last account_budget_mark_clean(). */
int account_budget_dirty(const struct account_budget *b);
void account_budget_mark_clean(struct account_budget *b);

/* The `accounts` fields of account: "recipients_24h" (its used figure at now), "recipient_limit"
 * (limit, 0: none) and "budget_held" (messages held since start). 0 ok; -1 out of memory. */
struct cJSON;
int account_budget_json(struct cJSON *o, const struct account_budget *b, const char *account,
                        unsigned limit, int64_t now);

/* ---- account_budget_file.c ---- */

/* Write the counts of the window up to now to path atomically (common/durable_file.h: 0600,
 * fsync, rename, fsync the directory). 0 ok; -1 with err. */
int account_budget_save(const struct account_budget *b, const char *path, int64_t now, char *err,
                        size_t errlen);
/* Load the counts kept in path (those older than the window are dropped). 1 loaded; 0 no file;
 * -1 unreadable, torn or garbled (err says why; b is unchanged: a bad file is never half-used). */
int account_budget_load(struct account_budget *b, const char *path, int64_t now, char *err,
                        size_t errlen);
/* The file's content for the window up to now (malloc'd, *len bytes); NULL: out of memory. */
char *account_budget_text(const struct account_budget *b, int64_t now, size_t *len);
/* The same from len bytes of a file's content (any bytes). 0 parsed (b has the counts); -1 with
 * err, b unchanged. */
int account_budget_parse(struct account_budget *b, const char *data, size_t len, int64_t now,
                         char *err, size_t errlen);
/* path = STATE_DIR/account-budget.state; 0 ok, -1 too long. */
int account_budget_path(const struct config *cfg, char *path, size_t len);

/* The daemon's copy: loads the file at start-up (a bad one is logged, set aside as .bad and
 * ignored: start-up goes on), writes it every ACCOUNT_BUDGET_FLUSH_SECONDS while dirty and once
 * more when freed. NULL: out of memory. */
struct account_budget_keeper;
struct account_budget_keeper *account_budget_keeper_new(struct event_base *base,
                                                        const struct config *cfg);
void account_budget_keeper_free(struct account_budget_keeper *k);
/* The live budget (NULL for a NULL keeper). */
struct account_budget *account_budget_keeper_budget(struct account_budget_keeper *k);
/* After a reload: later writes go to cfg's state_dir. */
void account_budget_keeper_retain(struct account_budget_keeper *k, const struct config *cfg);

#endif
