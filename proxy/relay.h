/* delivery = direct: one device session's path upstream, the message transaction relayed
 * command by command through the transaction engine (txn.h) on a connection leased from the
 * account's pool, so the device hears the upstream's real verdict. The body is streamed with
 * backpressure, never held whole in memory. */
#ifndef SOP_RELAY_H
#define SOP_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/txn.h"

struct server;
struct server_gen;
struct cfg_account;
struct relay;

/* reply: a complete SMTP reply for the device without the final CRLF (lines of a multi-line reply
 * joined by CRLF), valid only during the call. */
typedef void (*relay_reply_cb)(void *arg, const char *reply);

/* gen: the generation acct belongs to; the caller keeps it alive as long as the relay. */
struct relay *relay_new(struct server *srv, struct server_gen *gen, const struct cfg_account *acct,
                        const char *device, const char *log_id);
/* Ends the upstream session (QUIT if idle, dropped if in the middle of a message). Accepts NULL. */
void relay_free(struct relay *r);
/* Each verb runs once at a time: the next starts only after cb of the previous ran. */
void relay_mail(struct relay *r, const char *from, const struct txn_mail_opts *o, relay_reply_cb cb,
                void *arg);
void relay_rcpt(struct relay *r, const char *to, relay_reply_cb cb, void *arg);
/* Sends DATA upstream; cb gets the 354 (then stream the body) or the refusal. */
void relay_data(struct relay *r, relay_reply_cb cb, void *arg);
/* One decoded body line (no terminator, unstuffed). Sender rewriting happens here. */
void relay_data_line(struct relay *r, const char *line, size_t len);
/* Hand the lines collected so far to the upstream connection (call after each chunk read from
 * the device; relay_data_end flushes too). */
void relay_data_flush(struct relay *r);
/* Bytes queued towards the upstream; the caller pauses its device above a mark. */
size_t relay_data_pending(const struct relay *r);
/* cb runs when the queue has drained below low_mark after being above it. */
void relay_set_drain_cb(struct relay *r, size_t low_mark, void (*cb)(void *arg), void *arg);
/* The body is complete: send the end marker, cb gets the upstream's final verdict. */
void relay_data_end(struct relay *r, relay_reply_cb cb, void *arg);
/* The proxy refused the body (size, bare LF, long line): drop the upstream connection so nothing
 * partial is ever delivered. reason is the reply the device gets (for the log). */
void relay_data_abort(struct relay *r, const char *reason);
/* 1 while the upstream holds the transaction MAIL opened (0 once it ended or was lost). */
int relay_in_transaction(const struct relay *r);
/* Reset the upstream transaction (if any). */
void relay_rset(struct relay *r, relay_reply_cb cb, void *arg);

#endif
