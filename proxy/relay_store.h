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
#ifndef SOP_RELAY_STORE_H
#define SOP_RELAY_STORE_H

#include <stddef.h>

#include "proxy/relay.h"

struct server;
struct server_gen;
struct cfg_account;
struct relay_store;

/* gen: the session's generation (kept alive by the caller as long as the relay_store). */
struct relay_store *relay_store_new(struct server *srv, struct server_gen *gen,
                                    const struct cfg_account *acct, const char *device,
                                    const char *log_id);
/* An attempt in flight is cancelled; an uncommitted body is removed. Accepts NULL. */
void relay_store_free(struct relay_store *r);

/* The transaction's verbs; each returns the reply for the device (static or owned by r, valid
 * until the next call). */
const char *relay_store_mail(struct relay_store *r, const char *from,
                             const struct txn_mail_opts *o);
const char *relay_store_rcpt(struct relay_store *r, const char *to);
/* Opens the spool file: "354 ..." or a 451 when the spool cannot take the message. */
const char *relay_store_data(struct relay_store *r);
/* One decoded body line (no terminator, unstuffed). */
void relay_store_data_line(struct relay_store *r, const char *line, size_t len);
/* The body is complete: cb (from the event loop or before this returns) gets the final reply. */
void relay_store_data_end(struct relay_store *r, relay_reply_cb cb, void *arg);
/* The device side refused the body (size, bare LF, long line): drop it; reason for the log. */
void relay_store_data_abort(struct relay_store *r, const char *reason);
/* Forget the transaction (RSET, EHLO). */
void relay_store_rset(struct relay_store *r);

#endif
