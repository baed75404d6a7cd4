/* The device side of delivery = spool and delivery = direct-then-spool: the proxy takes the
 * transaction itself (MAIL and RCPT answered at once, after the checks the device session made),
 * writes the body into the spool as it arrives, and at the end of DATA either commits it (spool:
 * 250 once it is fsynced) or first tries the upstream while the device waits (direct-then-spool):
 *   - delivered: the device hears the upstream's 250, nothing stays on disk;
 *   - refused for good (5xx, every recipient): the device hears the refusal, so it shows on the
 *     copier's screen; nothing is queued or bounced;
 *   - a temporary failure (connect, TLS, token, 4xx) for some recipients: those are committed to
 *     the spool (the attempt counts as the first) and the device hears 250 "queued as ID";
 *   - recipients refused for good while others were delivered or queued: bounced (queue_bounce).
 * A message of an account whose queue already holds messages, or that the account's rate limit
 * would keep waiting, goes straight into the queue: order per account, and no device waits on
 * pacing. Nothing is answered 250 before the upstream accepted it or the commit is durable. */
#ifndef SOP_BACKEND_STORE_H
#define SOP_BACKEND_STORE_H

#include <stddef.h>

#include "proxy/delivery/backend.h"

/* The backend (backend.h) of delivery = spool and direct-then-spool. Freeing it cancels an
 * attempt in flight and removes an uncommitted body. */
struct backend *backend_store_new(const struct delivery_ctx *ctx, struct server_gen *gen,
                                  const struct cfg_account *acct, const char *device,
                                  const char *log_id);

#endif
