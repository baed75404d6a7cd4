/* delivery = direct: one device session's path upstream, the message transaction relayed
 * command by command through the transaction engine (txn.h) on a connection leased from the
 * account's pool, so the device hears the upstream's real verdict. The body is streamed with
 * backpressure, never held whole in memory. */
#ifndef SOP_BACKEND_DIRECT_H
#define SOP_BACKEND_DIRECT_H

#include "proxy/delivery/backend.h"

/* The backend (backend.h) of delivery = direct. */
struct backend *backend_direct_new(const struct delivery_ctx *ctx, struct server_gen *gen,
                                   const struct cfg_account *acct, const char *device,
                                   const char *log_id);

#endif
