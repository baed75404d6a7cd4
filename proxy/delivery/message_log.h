/* The end of a device's message, recorded once in the three places that must agree: the
 * event=message log line, the metrics counters and the `devices` history. Every delivery mode
 * (backend_direct.c for direct, backend_store.c for spool and direct-then-spool) ends its messages
 * here. */
#ifndef SOP_MESSAGE_LOG_H
#define SOP_MESSAGE_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "proxy/runtime/metrics.h"

struct delivery_ctx;
struct cfg_account;
struct smtp_reply;

struct message_end {
    const char *log_id; /* session= */
    const char *device;
    const struct cfg_account *acct;
    const char *from; /* the envelope sender (NULL: none yet) */
    size_t rcpts;
    uint64_t size;
    enum metrics_result result;
    const char *reply;            /* what the device heard (first line is logged) */
    const struct smtp_reply *rep; /* the upstream reply it came from, for explain= (or NULL) */
    const struct timespec *t_start;
    const char *delivery; /* " delivery=..." when not NULL */
    const char *queue_id; /* " queue_id=..." when not NULL */
    /* recipients the upstream accepted (delivered), counted against the account's daily
     * recipient budget (account_budget.h): a message queued after some were delivered has some */
    size_t accepted;
};

/* "delivered", "refused", "deferred", "queued". */
const char *message_result_name(enum metrics_result r);
void message_log_end(const struct delivery_ctx *ctx, const struct message_end *e);
/* A queued message of device refused for good by the queue runner, when no device waits to
 * hear it (code, enhanced, reply: the upstream's verdict on the whole message): counts towards
 * the device's block_after_refusals as a refusal heard at once does (docs/device-limits.md). */
void message_log_refused_later(const struct delivery_ctx *ctx, const char *device, int code,
                               const char *enhanced, const char *reply);
/* n recipients of acct were accepted by the upstream: counted in its daily budget. Every
 * delivery (message_log_end's accepted, the queue runner's deliveries, whatever the transport)
 * is counted here and nowhere else. */
void message_log_accepted(const struct delivery_ctx *ctx, const struct cfg_account *acct, size_t n);

/* Milliseconds since t0 (CLOCK_MONOTONIC), for duration_ms= in log lines. */
struct timespec;
double message_log_elapsed_ms(const struct timespec *t0);

#endif
