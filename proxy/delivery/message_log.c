#include "proxy/delivery/message_log.h"

#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "proxy/config/config.h"
#include "proxy/runtime/device_blocks.h"
#include "proxy/runtime/device_limits.h"
#include "proxy/runtime/account_budget.h"
#include "proxy/runtime/device_stats.h"
#include "proxy/smtp/exchange_explain.h"
#include "proxy/delivery/delivery_ctx.h"
#include "proxy/smtp/smtp_reply.h"
#include "proxy/smtp/spam_reply.h"

const char *message_result_name(enum metrics_result r)
{
    static const char *const names[] = {"delivered", "refused", "deferred", "queued"};
    return (unsigned)r < sizeof(names) / sizeof(names[0]) ? names[r] : "refused";
}

double message_log_elapsed_ms(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* block_after_refusals (docs/device-limits.md): a message of device the upstream refused as
 * spam (spam: what spam_reply says of the reply) counts; the refusal that reaches the device's
 * number blocks it. reply: as the device heard it (or would have); its first line is used. */
static void count_spam_refusal(const struct delivery_ctx *ctx, const char *device, int spam,
                               const char *reply)
{
    char up[300];
    if (!spam || !ctx->limits || !ctx->blocks)
        return;
    unsigned n = device_limits_spam_refusal(ctx->limits, device);
    if (n == 0)
        return;
    size_t first = strcspn(reply, "\r\n");
    char reason[DEVICE_BLOCK_REASON_MAX + 1], err[512];
    /* made printable ASCII and cut when it is set */
    snprintf(reason, sizeof(reason), "automatic: %u spam refusals, last: %.*s", n, (int)first,
             reply);
    log_safe(up, sizeof(up), reply, first);
    if (device_blocks_set(ctx->blocks, device, "auto", reason, (int64_t)time(NULL), err,
                          sizeof(err)) != 0) {
        log_error("event=device_block_failed device=%s by=auto refusals=%u reason=\"%s\"", device,
                  n, err);
        return;
    }
    log_warn("event=device_blocked device=%s by=auto refusals=%u last=%s", device, n, up);
}

void message_log_refused_later(const struct delivery_ctx *ctx, const char *device, int code,
                               const char *enhanced, const char *reply)
{
    if (device && *device && reply)
        count_spam_refusal(ctx, device, spam_reply_match(code, enhanced, reply), reply);
}

void message_log_end(const struct delivery_ctx *ctx, const struct message_end *e)
{
    char from[300], up[300], explain[900], extra[96] = "";
    const char *result = message_result_name(e->result);
    const struct smtp_reply *rep = e->rep;
    size_t o = 0;

    log_safe(from, sizeof(from), e->from ? e->from : "", e->from ? strlen(e->from) : 0);
    /* only the first line of a multi-line reply */
    log_safe(up, sizeof(up), e->reply, strcspn(e->reply, "\r\n"));
    if (e->delivery)
        o += (size_t)snprintf(extra, sizeof(extra), " delivery=%s", e->delivery);
    if (e->queue_id && o < sizeof(extra))
        snprintf(extra + o, sizeof(extra) - o, " queue_id=%s", e->queue_id);
    log_info("event=message session=%s device=%s account=%s from=%s rcpts=%zu size=%llu "
             "result=%s upstream=%s duration_ms=%.0f%s%s",
             e->log_id, e->device, e->acct->name, from, e->rcpts, (unsigned long long)e->size,
             result, up, message_log_elapsed_ms(e->t_start), extra,
             exchange_explain_kv(rep ? rep->code : 0, rep ? rep->enhanced : NULL, e->reply,
                                 e->acct->mailbox, e->acct->client_id, explain, sizeof(explain)));
    metrics_message(ctx->metrics, e->acct, e->result, e->result == METRICS_DELIVERED ? e->size : 0);
    device_stats_message(device_stats_keeper_stats(ctx->devstats), e->device, result, e->reply,
                         (int64_t)time(NULL));
    if (e->result == METRICS_REFUSED)
        count_spam_refusal(ctx, e->device,
                           rep ? spam_reply_match(rep->code, rep->enhanced, e->reply)
                               : spam_reply_line_match(e->reply),
                           e->reply);
    message_log_accepted(ctx, e->acct, e->accepted);
}

void message_log_accepted(const struct delivery_ctx *ctx, const struct cfg_account *acct, size_t n)
{
    if (n)
        account_budget_add(ctx->budget, acct->name, n, (int64_t)time(NULL));
}
