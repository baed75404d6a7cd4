/* The one place that knows which delivery mode is behind a device session. */
#include "proxy/backend.h"

#include "proxy/config.h"
#include "proxy/relay.h"
#include "proxy/relay_store.h"

struct backend *backend_new(const struct delivery_ctx *ctx, struct server_gen *gen,
                            const struct cfg_account *acct, const char *device, const char *log_id)
{
    if (acct->delivery == DELIVERY_DIRECT)
        return relay_new(ctx, gen, acct, device, log_id);
    return relay_store_new(ctx, gen, acct, device, log_id); /* spool, direct-then-spool */
}
