/* Which device is this client? By source address, by AUTH login, or both. The proxy is never an
 * open relay: a client that matches no device relays nothing. */
#ifndef SOP_DEVICE_H
#define SOP_DEVICE_H

#include <sys/socket.h>

#include "proxy/config/config.h"

struct device_table;

/* Borrows cfg, which must outlive the table. */
struct device_table *device_table_new(const struct config *cfg);
void device_table_free(struct device_table *t);
/* The device a client at sa is without AUTH: the first device (file order) whose address list
 * matches and that has no username. NULL if none. */
const struct cfg_device *device_by_address(const struct device_table *t, const struct sockaddr *sa);
/* 1 if some device lists this address: the protected network, where AUTH without TLS is allowed. */
int device_address_known(const struct device_table *t, const struct sockaddr *sa);
/* 1 if any device could ever match a client at sa: an address match, or a device with a username
 * and no address list. 0: refuse the client at once. */
int device_may_match(const struct device_table *t, const struct sockaddr *sa);
/* 1 if some device logs in with a username (then AUTH is offered). */
int device_has_logins(const struct device_table *t);
/* Check a login: the device with this username, whose address list (if any) holds sa and whose
 * password_hash matches pass (crypt_r, constant-time compare). NULL on failure with *why set for
 * the log ("unknown user", "address not allowed for this user", "wrong password"). An unknown
 * user costs the same hash computation as a known one. */
const struct cfg_device *device_authenticate(const struct device_table *t,
                                             const struct sockaddr *sa, const char *user,
                                             const char *pass, const char **why);

#endif
