/* The one place that knows which delivery mode is behind a device session. */
#include "proxy/delivery/backend.h"

#include "proxy/config/config.h"
#include "proxy/delivery/backend_direct.h"
#include "proxy/delivery/backend_store.h"

struct backend *backend_new(const struct delivery_ctx *ctx, struct server_gen *gen,
                            const struct cfg_account *acct, const char *device, const char *log_id)
{
    if (acct->delivery == DELIVERY_DIRECT)
        return backend_direct_new(ctx, gen, acct, device, log_id);
    return backend_store_new(ctx, gen, acct, device, log_id); /* spool, direct-then-spool */
}
