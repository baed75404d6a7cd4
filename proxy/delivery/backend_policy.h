/* Who may send where (docs/recipient-policy.md) and how much (docs/device-limits.md): a layer in
 * front of a device's backend that refuses at RCPT a recipient outside the device's
 * allow_recipients or over its max_recipients_per_day, at MAIL a blocked device or one over its
 * max_messages_per_hour, and forwards everything else unchanged. */
#ifndef SOP_BACKEND_POLICY_H
#define SOP_BACKEND_POLICY_H

#include "proxy/delivery/backend.h"

#include <sys/socket.h>

struct cfg_device;
struct rcpt_policy;
struct evdns_base;
struct event_base;
struct delivery_ctx;

/* How long a MAIL waits for the device's FCrDNS check at most (then it counts as failed). */
#define BACKEND_POLICY_FCRDNS_WAIT_S 10u

/* Wraps inner (owned from here on: freed with the layer, or at once when this fails). device and
 * proxy_allow ([proxy] allow_recipients: what is not "external"): borrowed, from the generation
 * the session keeps alive as long as the backend. peer: the device's address (copied). dns,
 * ctx->base: for require_fcrdns; ctx->blocks, ctx->limits: the block list and the per-device
 * limits (docs/device-limits.md), ctx->metrics counts their refusals. NULL: out of memory. */
struct backend *backend_policy_new(struct backend *inner, const struct cfg_device *device,
                                   const struct rcpt_policy *proxy_allow,
                                   const struct sockaddr *peer, struct evdns_base *dns,
                                   const struct delivery_ctx *ctx, const char *log_id);

#endif
