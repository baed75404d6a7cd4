/* Forward-confirmed reverse DNS of a device's source address (require_fcrdns,
 * docs/recipient-policy.md): the PTR name of the address must resolve (A or AAAA) back to that
 * address. Asynchronous on the loop with libevent's evdns; results are cached for their TTL in a
 * small table (FCRDNS_CACHE_MAX entries, the loop's thread only). */
#ifndef SOP_FCRDNS_H
#define SOP_FCRDNS_H

#include <sys/socket.h>

struct evdns_base;
struct event_base;
struct fcrdns_lookup;

#define FCRDNS_CACHE_MAX 1024
#define FCRDNS_TTL_MAX 86400u   /* seconds a result is kept at most, whatever its TTL */
#define FCRDNS_NEGATIVE_TTL 60u /* a failure without a TTL of its own (no PTR, no answer) */

/* ok: 1 confirmed; 0 not (no PTR, the name does not resolve back, an error, the wait_s bound). */
typedef void (*fcrdns_cb)(void *arg, int ok);

/* From the cache: 1 or 0 at once (*out NULL, cb never runs). Else -1 and *out the lookup in
 * flight: cb runs once, from the loop, within wait_s seconds (then 0, logged), unless
 * fcrdns_cancel comes first. A peer that is neither IPv4 nor IPv6: 0. */
int fcrdns_check(struct evdns_base *dns, struct event_base *base, const struct sockaddr *peer,
                 unsigned wait_s, const char *log_id, fcrdns_cb cb, void *arg,
                 struct fcrdns_lookup **out);
/* cb will not run; the lookup's memory goes when evdns is done with it. */
void fcrdns_cancel(struct fcrdns_lookup *l);

#endif
