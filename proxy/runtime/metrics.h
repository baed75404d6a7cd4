/* The counters behind metrics_listen: what the daemon did, by listener, account and device.
 * Plain integers touched only from the event loop thread, so no locks. Every label set is
 * bounded by the config (listeners, accounts, devices) or by a fixed cap (upstream reply codes),
 * so no peer can grow the registry. */
#ifndef SOP_METRICS_H
#define SOP_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct cfg_account;
struct evbuffer;
struct token_cache_stats;
struct metrics;

/* queued: the device heard 250 for a message committed to the spool (delivered later). */
enum metrics_result { METRICS_DELIVERED, METRICS_REFUSED, METRICS_DEFERRED, METRICS_QUEUED };

/* Upstream commands whose replies are counted. */
enum metrics_cmd { METRICS_CMD_AUTH, METRICS_CMD_MAIL, METRICS_CMD_RCPT, METRICS_CMD_DATA };

/* Borrows cfg (account and device names), which must outlive the registry. NULL: no memory. */
struct metrics *metrics_new(const struct config *cfg);
void metrics_free(struct metrics *m);
/* A reload: from now on borrow cfg; the counters of accounts and devices that keep their name
 * carry over, the others start at zero (and those of removed ones are gone). 0 ok; -1 out of
 * memory, nothing changed. */
int metrics_reconfigure(struct metrics *m, const struct config *cfg);

/* Every verb below accepts m == NULL and does nothing then. */

/* A listener (by its "127.0.0.1:2525" name), so it shows with zero sessions. */
void metrics_listener_add(struct metrics *m, const char *listener);
/* A session opened on listener: returns the slot to hand to metrics_session_closed (-1: none). */
int metrics_session_opened(struct metrics *m, const char *listener);
void metrics_session_closed(struct metrics *m, int slot);
/* A message's end, as the device heard it; bytes: body bytes the upstream accepted (0 unless
 * delivered). acct may belong to an earlier config (a session older than a reload): it counts
 * under its name. */
void metrics_message(struct metrics *m, const struct cfg_account *acct, enum metrics_result r,
                     uint64_t bytes);
/* An upstream connection of acct opened (reused 0), or a message sent over an open one
 * (reused 1). acct as for metrics_message. */
void metrics_upstream_conn(struct metrics *m, const struct cfg_account *acct, int reused);
/* An upstream reply: code 200..599, enhanced "5.7.3" or "" (what smtp_reply parsed). Codes that
 * are not small, well-formed x.y.z, and any beyond a fixed number of distinct series, count
 * as code="other". */
void metrics_upstream_reply(struct metrics *m, enum metrics_cmd cmd, int code,
                            const char *enhanced);
/* A Microsoft Graph request of acct answered with HTTP status (0: no answer); 429 and 503 also
 * count as throttled. */
void metrics_graph_request(struct metrics *m, const struct cfg_account *acct, long status);
/* The device whose username is user, for metrics_auth_failed (-1: no such device). */
int metrics_device_by_user(const struct metrics *m, const char *user);
/* A failed AUTH: device is metrics_device_by_user's answer (-1 counts as device="unknown"). */
void metrics_auth_failed(struct metrics *m, int device);

/* Why a device connection was refused at once (connections_refused_total's reason). */
enum metrics_refusal {
    METRICS_REFUSED_PER_IP,          /* max_connections_per_ip from its address */
    METRICS_REFUSED_AUTH_BLOCKED,    /* its address is blocked after failed logins */
    METRICS_REFUSED_MAX_CONNECTIONS, /* max_connections in all */
};
#define METRICS_NREFUSALS 3
void metrics_connection_refused(struct metrics *m, enum metrics_refusal why);

/* Why a device's MAIL or RCPT was refused by its limits (docs/device-limits.md):
 * device_limit_refusals_total's limit label. */
enum metrics_device_limit {
    METRICS_LIMIT_MESSAGES,   /* max_messages_per_hour, at MAIL */
    METRICS_LIMIT_RECIPIENTS, /* max_recipients_per_day, at RCPT */
    METRICS_LIMIT_BLOCKED,    /* blocked (devices block, or block_after_refusals), at MAIL */
};
#define METRICS_NDEVICE_LIMITS 3
/* device: a configured device's name (others are not counted). */
void metrics_device_limit(struct metrics *m, const char *device, enum metrics_device_limit why);

/* Token figures are read live from the caches: stats(arg, i, st) fills st for
 * cfg->accounts[i] and returns 0, or -1 when the account has no cache. */
typedef int (*metrics_token_stats_fn)(void *arg, size_t account, struct token_cache_stats *st);

/* Append the Prometheus text exposition (version 0.0.4) to out. now_wall: seconds since the
 * epoch, for the tokens' remaining lifetime. 0 ok; -1 out of memory. */
int metrics_render(const struct metrics *m, struct evbuffer *out, metrics_token_stats_fn stats,
                   void *arg, int64_t now_wall);
/* The queue's figures, as queue_stats (proxy/delivery/queue.h) fills them. */
struct queue_stats {
    size_t messages; /* in the queue, held included */
    size_t held;
    size_t sending;                             /* attempts in flight */
    int64_t oldest_created;                     /* wall clock seconds; 0: the queue is empty */
    unsigned long delivered, bounced, deferred; /* since start */
};
/* The queue's figures (read live), appended after metrics_render's: messages, held, the oldest
 * message's age, and delivered / deferred / bounced since start. st NULL: nothing (no queue).
 * 0 ok; -1 out of memory. */
int metrics_render_queue(struct evbuffer *out, const struct queue_stats *st, int64_t now_wall);
/* Each account's daily recipient budget, read live from b (account_budget.h): recipients the
 * upstream accepted in the last 24 hours, the limit (0: none) and the messages held for it. b
 * NULL: nothing. 0 ok; -1 out of memory. */
struct account_budget;
int metrics_render_budget(const struct metrics *m, struct evbuffer *out,
                          const struct account_budget *b, int64_t now_wall);
/* A label value escaped per the exposition format (\\, \", \n); truncated to fit dst. */
const char *metrics_escape(char *dst, size_t dstlen, const char *src);

#endif
