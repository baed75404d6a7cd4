/* Who may send where (docs/recipient-policy.md): a layer in front of a device's backend that
 * refuses at RCPT a recipient outside the device's allow_recipients, and forwards everything
 * else unchanged. */
#ifndef SOP_BACKEND_POLICY_H
#define SOP_BACKEND_POLICY_H

#include "proxy/delivery/backend.h"

struct cfg_device;

/* Wraps inner (owned from here on: freed with the layer, or at once when this fails). device:
 * borrowed, from the generation the session keeps alive as long as the backend. NULL: out of
 * memory. */
struct backend *backend_policy_new(struct backend *inner, const struct cfg_device *device,
                                   const char *log_id);

#endif
