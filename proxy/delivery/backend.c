/* The one place that knows which delivery mode is behind a device session, and whether the
 * device's recipient policy stands in front of it. */
#include "proxy/delivery/backend.h"

#include "proxy/config/config.h"
#include "proxy/config/rcpt_policy.h"
#include "proxy/delivery/backend_direct.h"
#include "proxy/delivery/backend_policy.h"
#include "proxy/delivery/backend_store.h"
#include "proxy/delivery/delivery_ctx.h"
#include "proxy/runtime/server_gen.h"

struct backend *backend_new(const struct delivery_ctx *ctx, struct server_gen *gen,
                            const struct cfg_device *device, const struct sockaddr *peer,
                            struct evdns_base *dns, const char *log_id)
{
    const struct cfg_account *acct = device->account;
    struct backend *b;
    if (acct->delivery == DELIVERY_DIRECT)
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
