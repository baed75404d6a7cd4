/* What a device session talks to for its mail transaction, whatever the delivery mode behind it:
 * a small table of operations, as oauth/ has for its grants. delivery = direct is backend_direct.c
 * (the upstream's replies, step by step); spool and direct-then-spool are backend_store.c (taken
 * here, decided at the end of DATA). The session never knows which one it holds; backend_new is the
 * one place that picks. */
#ifndef SOP_BACKEND_H
#define SOP_BACKEND_H

#include <stddef.h>
#include <sys/socket.h>

#include "proxy/delivery/txn.h"

struct delivery_ctx;
struct server_gen;
struct cfg_device;
struct evdns_base;
struct backend;

/* reply: a complete SMTP reply for the device without the final CRLF (lines of a multi-line
 * reply joined by CRLF), valid only during the call. It may run before the call that caused it
 * returns (the session goes on from the event loop). */
typedef void (*backend_reply_cb)(void *arg, const char *reply);

struct backend_ops {
    /* The transaction's verbs: one at a time, the next only after cb of the previous ran. */
    void (*mail)(struct backend *b, const char *from, const struct txn_mail_opts *o,
                 backend_reply_cb cb, void *arg);
    void (*rcpt)(struct backend *b, const char *to, backend_reply_cb cb, void *arg);
    /* cb gets a 354 (then the body) or the refusal */
    void (*data)(struct backend *b, backend_reply_cb cb, void *arg);
    /* One decoded body line (no terminator, unstuffed). */
    void (*data_line)(struct backend *b, const char *line, size_t len);
    /* After each chunk read from the device: hand over what was gathered; returns the bytes
     * still waiting to go, and the session stops reading its device above a mark. */
    size_t (*data_flush)(struct backend *b);
    /* cb runs when what waits falls to low_mark after having been above it. */
    void (*set_drain_cb)(struct backend *b, size_t low_mark, void (*cb)(void *arg), void *arg);
    /* The body is complete: cb gets the final verdict. */
    void (*data_end)(struct backend *b, backend_reply_cb cb, void *arg);
    /* The session refused the body (size, bare LF, long line): nothing of it is delivered;
     * reason is the reply the device gets (for the log). */
    void (*data_abort)(struct backend *b, const char *reason);
    /* Forget the transaction (RSET, or EHLO in the middle of one); cb gets the 250. */
    void (*rset)(struct backend *b, backend_reply_cb cb, void *arg);
    /* 1 while the transaction MAIL opened is still open behind it (a refused RCPT or DATA
     * leaves it open; a lost upstream connection ends it). */
    int (*in_transaction)(const struct backend *b);
    void (*free)(struct backend *b);
};

struct backend {
    const struct backend_ops *ops;
};

/* The backend of device's account's delivery mode, speaking for the device in the log (log_id:
 * session=), behind the device policy layer (backend_policy.h: recipients, FCrDNS, limits,
 * blocks) when one applies. ctx: what
 * delivery works with (borrowed). gen: the session's generation, which the caller keeps alive as
 * long as the backend; device belongs to it. peer: the device's address, dns: the resolver
 * (both for require_fcrdns). NULL: out of memory. */
struct backend *backend_new(const struct delivery_ctx *ctx, struct server_gen *gen,
                            const struct cfg_device *device, const struct sockaddr *peer,
                            struct evdns_base *dns, const char *log_id);

/* For the modes where the device waits for the upstream (direct): the account's daily recipient
 * budget has no room for n recipients: the 451 4.7.1 the device hears, written in buf, else
 * NULL. *held: set once the transaction was counted as held (counted once per transaction). */
struct cfg_account;
const char *backend_budget_refusal(const struct delivery_ctx *ctx, const struct cfg_account *acct,
                                   size_t n, int *held, char *buf, size_t len);

static inline void backend_free(struct backend *b)
{
    if (b)
        b->ops->free(b);
}

#endif
