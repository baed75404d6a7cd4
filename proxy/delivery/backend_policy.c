/* The recipient check as a backend layer rather than a test in the session's RCPT verb: the
 * session stays ignorant of policy (it only relays the reply it is given, as for any backend),
 * every delivery mode gets the same check from one place. The daemon keeps a block list, so
 * backend_new builds the layer for every device (a block may come at any time); without one
 * (tests, tools) a device whose list is "*", with no FCrDNS and no limits, gets no layer.
 * require_fcrdns: the session's first MAIL waits here (the session is busy) for fcrdns.c's
 * verdict, at most BACKEND_POLICY_FCRDNS_WAIT_S; the verdict then holds for the session.
 * Blocks and limits (docs/device-limits.md): a blocked device hears 550 5.7.1 and the reason at
 * MAIL (before any FCrDNS wait); a MAIL over max_messages_per_hour or a RCPT over
 * max_recipients_per_day hears 450 4.7.1. A message or recipient is counted when it is let
 * through and given back when the mode's backend refuses it, so only what the upstream (or the
 * spool) took counts. */
#include "proxy/delivery/backend_policy.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/sockaddr_text.h"
#include "proxy/config/config.h"
#include "proxy/config/rcpt_policy.h"
#include "proxy/delivery/delivery_ctx.h"
#include "proxy/delivery/fcrdns.h"
#include "proxy/runtime/device_blocks.h"
#include "proxy/runtime/device_limits.h"
#include "proxy/runtime/metrics.h"

enum fcrdns_state { FC_UNKNOWN, FC_PENDING, FC_PASS, FC_FAIL };

struct policy_backend {
    struct backend base; /* first: the device session holds &base */
    struct backend *inner;
    const struct cfg_device *device;
    const struct rcpt_policy *proxy_allow;
    char log_id[32];
    /* require_fcrdns */
    struct sockaddr_storage peer;
    char ip[INET6_ADDRSTRLEN];
    struct evdns_base *dns;
    struct event_base *evbase;
    enum fcrdns_state fc;
    struct fcrdns_lookup *lookup;
    /* the MAIL waiting for the check */
    char *mail_from;
    struct txn_mail_opts mail_opts;
    backend_reply_cb mail_cb;
    void *mail_arg;
    /* blocks and limits */
    const struct delivery_ctx *ctx;
    backend_reply_cb user_cb; /* the verb in flight whose count waits for its reply */
    void *user_arg;
    enum device_limit_kind taken;
};

static struct backend *pb_inner(struct backend *b)
{
    return ((struct policy_backend *)b)->inner;
}

/* The reply to a verb that took a count: given back unless the backend accepted it. */
static void pb_counted_done(void *arg, const char *reply)
{
    struct policy_backend *pb = arg;
    backend_reply_cb cb = pb->user_cb;
    void *cb_arg = pb->user_arg;
    pb->user_cb = NULL;
    if (reply[0] != '2')
        device_limits_give_back(pb->ctx->limits, pb->device->name, pb->taken);
    cb(cb_arg, reply); /* last: the session may free the backend from here */
}

/* 1 when the device's limit of kind is reached (the device has heard 450 4.7.1); else 0 and one
 * more is counted. rcpt: the recipient (RCPT) or NULL (MAIL). */
static int pb_over_limit(struct policy_backend *pb, enum device_limit_kind kind, const char *rcpt,
                         backend_reply_cb cb, void *arg)
{
    unsigned max = 0;
    if (device_limits_take(pb->ctx->limits, pb->device->name, kind, &max) == 0)
        return 0;
    const char *limit = device_limit_name(kind);
    char reply[512];
    if (rcpt)
        snprintf(reply, sizeof(reply),
                 "450 4.7.1 <%.256s>: device %s has reached its %s (%u), try again later", rcpt,
                 pb->device->name, limit, max);
    else
        snprintf(reply, sizeof(reply),
                 "450 4.7.1 Device %s has reached its %s (%u), try again later", pb->device->name,
                 limit, max);
    log_info("event=device_limit session=%s device=%s limit=%s max=%u", pb->log_id,
             pb->device->name, limit, max);
    metrics_device_limit(pb->ctx->metrics, pb->device->name,
                         kind == DEVICE_LIMIT_MESSAGES ? METRICS_LIMIT_MESSAGES
                                                       : METRICS_LIMIT_RECIPIENTS);
    cb(arg, reply);
    return 1;
}

/* 1 when the device is blocked (it has heard 550 5.7.1 and the reason). */
static int pb_blocked(struct policy_backend *pb, backend_reply_cb cb, void *arg)
{
    const struct device_block *bl = device_blocks_get(pb->ctx->blocks, pb->device->name);
    if (!bl)
        return 0;
    char reply[512];
    /* the reason was made printable ASCII and bounded when it was set */
    snprintf(reply, sizeof(reply), "550 5.7.1 Device %s is blocked: %s", pb->device->name,
             bl->reason);
    log_info("event=device_limit session=%s device=%s limit=blocked by=%s since=%lld", pb->log_id,
             pb->device->name, bl->by, (long long)bl->since);
    metrics_device_limit(pb->ctx->metrics, pb->device->name, METRICS_LIMIT_BLOCKED);
    cb(arg, reply);
    return 1;
}

static void pb_mail_go(struct policy_backend *pb, const char *from, const struct txn_mail_opts *o,
                       backend_reply_cb cb, void *arg)
{
    if (pb->fc == FC_FAIL && pb->device->require_fcrdns == FCRDNS_SESSION) {
        char reply[128];
        snprintf(reply, sizeof(reply), "550 5.7.25 Reverse DNS of [%s] does not match", pb->ip);
        log_info("event=mail_refused session=%s device=%s ip=%s reason=require_fcrdns", pb->log_id,
                 pb->device->name, pb->ip);
        cb(arg, reply);
        return;
    }
    if (pb_over_limit(pb, DEVICE_LIMIT_MESSAGES, NULL, cb, arg))
        return;
    pb->user_cb = cb;
    pb->user_arg = arg;
    pb->taken = DEVICE_LIMIT_MESSAGES;
    pb->inner->ops->mail(pb->inner, from, o, pb_counted_done, pb);
}

static void pb_on_fcrdns(void *arg, int ok)
{
    struct policy_backend *pb = arg;
    char *from = pb->mail_from;
    pb->lookup = NULL;
    pb->mail_from = NULL;
    pb->fc = ok ? FC_PASS : FC_FAIL;
    pb_mail_go(pb, from, &pb->mail_opts, pb->mail_cb, pb->mail_arg);
    free(from);
}

/* The first MAIL of a device that requires FCrDNS waits (the session is busy) for the check. */
static void pb_mail(struct backend *b, const char *from, const struct txn_mail_opts *o,
                    backend_reply_cb cb, void *arg)
{
    struct policy_backend *pb = (struct policy_backend *)b;
    if (pb_blocked(pb, cb, arg))
        return;
    if (pb->device->require_fcrdns != FCRDNS_NO && pb->fc == FC_UNKNOWN) {
        pb->mail_from = strdup(from);
        if (!pb->mail_from) {
            cb(arg, "451 4.3.0 Out of memory");
            return;
        }
        pb->mail_opts = *o;
        pb->mail_cb = cb;
        pb->mail_arg = arg;
        pb->fc = FC_PENDING;
        int r =
            fcrdns_check(pb->dns, pb->evbase, (const struct sockaddr *)&pb->peer,
                         BACKEND_POLICY_FCRDNS_WAIT_S, pb->log_id, pb_on_fcrdns, pb, &pb->lookup);
        if (r >= 0)
            pb_on_fcrdns(pb, r); /* from the cache */
        return;
    }
    pb_mail_go(pb, from, o, cb, arg);
}

static void pb_rcpt(struct backend *b, const char *to, backend_reply_cb cb, void *arg)
{
    struct policy_backend *pb = (struct policy_backend *)b;
    const struct rcpt_policy *allow = pb->device->allow_recipients;
    if (allow && !rcpt_policy_match(allow, to)) {
        /* The path and the list are bounded (RCPT line, config entries); the reply is cut at a
         * size every device takes rather than trusted to fit. */
        char reply[512];
        snprintf(reply, sizeof(reply), "550 5.7.1 <%.256s>: device %s may send only to %.200s", to,
                 pb->device->name, allow->display);
        log_info("event=rcpt_refused session=%s device=%s rcpt=<%.256s> reason=allow_recipients",
                 pb->log_id, pb->device->name, to);
        cb(arg, reply);
        return;
    }
    /* external: not matched by [proxy] allow_recipients */
    if (pb->device->require_fcrdns == FCRDNS_EXTERNAL && pb->fc == FC_FAIL &&
        !(pb->proxy_allow && rcpt_policy_match(pb->proxy_allow, to))) {
        char reply[128];
        snprintf(reply, sizeof(reply), "550 5.7.25 Reverse DNS of [%s] does not match", pb->ip);
        log_info("event=rcpt_refused session=%s device=%s rcpt=<%.256s> reason=require_fcrdns "
                 "ip=%s",
                 pb->log_id, pb->device->name, to, pb->ip);
        cb(arg, reply);
        return;
    }
    if (pb_over_limit(pb, DEVICE_LIMIT_RECIPIENTS, to, cb, arg))
        return;
    pb->user_cb = cb;
    pb->user_arg = arg;
    pb->taken = DEVICE_LIMIT_RECIPIENTS;
    pb->inner->ops->rcpt(pb->inner, to, pb_counted_done, pb);
}

static void pb_data(struct backend *b, backend_reply_cb cb, void *arg)
{
    struct backend *in = pb_inner(b);
    in->ops->data(in, cb, arg);
}

static void pb_data_line(struct backend *b, const char *line, size_t len)
{
    struct backend *in = pb_inner(b);
    in->ops->data_line(in, line, len);
}

static size_t pb_data_flush(struct backend *b)
{
    struct backend *in = pb_inner(b);
    return in->ops->data_flush(in);
}

static void pb_set_drain_cb(struct backend *b, size_t low_mark, void (*cb)(void *arg), void *arg)
{
    struct backend *in = pb_inner(b);
    in->ops->set_drain_cb(in, low_mark, cb, arg);
}

static void pb_data_end(struct backend *b, backend_reply_cb cb, void *arg)
{
    struct backend *in = pb_inner(b);
    in->ops->data_end(in, cb, arg);
}

static void pb_data_abort(struct backend *b, const char *reason)
{
    struct backend *in = pb_inner(b);
    in->ops->data_abort(in, reason);
}

static void pb_rset(struct backend *b, backend_reply_cb cb, void *arg)
{
    struct backend *in = pb_inner(b);
    in->ops->rset(in, cb, arg);
}

static int pb_in_transaction(const struct backend *b)
{
    const struct backend *in = ((const struct policy_backend *)b)->inner;
    return in->ops->in_transaction(in);
}

static void pb_free(struct backend *b)
{
    struct policy_backend *pb = (struct policy_backend *)b;
    fcrdns_cancel(pb->lookup);
    free(pb->mail_from);
    backend_free(pb->inner);
    free(pb);
}

static const struct backend_ops policy_ops = {
    .mail = pb_mail,
    .rcpt = pb_rcpt,
    .data = pb_data,
    .data_line = pb_data_line,
    .data_flush = pb_data_flush,
    .set_drain_cb = pb_set_drain_cb,
    .data_end = pb_data_end,
    .data_abort = pb_data_abort,
    .rset = pb_rset,
    .in_transaction = pb_in_transaction,
    .free = pb_free,
};

struct backend *backend_policy_new(struct backend *inner, const struct cfg_device *device,
                                   const struct rcpt_policy *proxy_allow,
                                   const struct sockaddr *peer, struct evdns_base *dns,
                                   const struct delivery_ctx *ctx, const char *log_id)
{
    if (!inner)
        return NULL;
    struct policy_backend *pb = calloc(1, sizeof(*pb));
    if (!pb) {
        backend_free(inner);
        return NULL;
    }
    pb->base.ops = &policy_ops;
    pb->inner = inner;
    pb->device = device;
    pb->proxy_allow = proxy_allow;
    pb->dns = dns;
    pb->evbase = ctx->base;
    pb->ctx = ctx;
    if (peer && peer->sa_family == AF_INET)
        memcpy(&pb->peer, peer, sizeof(struct sockaddr_in));
    else if (peer && peer->sa_family == AF_INET6)
        memcpy(&pb->peer, peer, sizeof(struct sockaddr_in6));
    /* an IPv4-mapped peer is shown as IPv4 */
    if (!sockaddr_text(peer, SOCKADDR_TEXT_UNMAP, pb->ip, sizeof(pb->ip)))
        snprintf(pb->ip, sizeof(pb->ip), "unknown");
    snprintf(pb->log_id, sizeof(pb->log_id), "%s", log_id);
    return &pb->base;
}
