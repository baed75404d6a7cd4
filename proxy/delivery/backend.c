/* The one place that knows which delivery mode is behind a device session, and whether the
 * device's recipient policy stands in front of it. */
#include "proxy/delivery/backend.h"

#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "proxy/config/config.h"
#include "proxy/config/rcpt_policy.h"
#include "proxy/delivery/backend_direct.h"
#include "proxy/delivery/backend_policy.h"
#include "proxy/delivery/backend_store.h"
#include "proxy/delivery/delivery_ctx.h"
#include "proxy/runtime/account_budget.h"
#include "proxy/runtime/server_gen.h"

const char *backend_budget_refusal(const struct delivery_ctx *ctx, const struct cfg_account *acct,
                                   size_t n, int *held, char *buf, size_t len)
{
    int64_t now = (int64_t)time(NULL);
    unsigned limit = acct->daily_recipient_limit;
    if (account_budget_admit(ctx->budget, acct->name, limit, n, now, NULL))
        return NULL;
    if (!*held) {
        *held = 1;
        account_budget_count_held(ctx->budget, acct->name);
    }
    snprintf(buf, len,
             "451 4.7.1 The daily recipient budget of account %s is used (%llu of %u in 24 "
             "hours), try again later",
             acct->name, (unsigned long long)account_budget_used(ctx->budget, acct->name, now),
             limit);
    return buf;
}

struct backend *backend_new(const struct delivery_ctx *ctx, struct server_gen *gen,
                            const struct cfg_device *device, const struct sockaddr *peer,
                            struct evdns_base *dns, const char *log_id)
{
    const struct cfg_account *acct = device->account;
    struct backend *b;
    /* Graph needs the whole message: its accounts land the body on disk first in every mode
     * (in direct, the device still hears Graph's verdict). */
    if (acct->delivery == DELIVERY_DIRECT && acct->kind == UPSTREAM_KIND_SMTP)
        b = backend_direct_new(ctx, gen, acct, device->name, log_id);
    else
        b = backend_store_new(ctx, gen, acct, device->name, log_id); /* spool, direct-then-spool */
    /* "*" (the default), no FCrDNS, no limits and no block list: no layer, nothing to check.
     * With a block list (the daemon always keeps one) every device gets the layer: an admin may
     * block any device at any time. */
    if (b && ((device->allow_recipients && !rcpt_policy_is_any(device->allow_recipients)) ||
              device->require_fcrdns != FCRDNS_NO || ctx->blocks || device->max_messages_per_hour ||
              device->max_recipients_per_day))
        b = backend_policy_new(b, device, &gen->cfg->allow_recipients, peer, dns, ctx, log_id);
    return b;
}
