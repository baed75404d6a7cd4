/* One delivery attempt of a complete message: a whole envelope and a stored body, run through
 * the upstream transaction engine (txn.h) over a leased connection: MAIL, RCPT for each
 * recipient, DATA, the body read from its source in chunks with backpressure, the end marker.
 * Used by direct-then-spool while the device waits (reading the spool writer's file before the
 * commit), by the queue runner (reading a committed message) and by `test --to` (a message in
 * memory). The outcome is per recipient (txn.h). */
#ifndef SOP_DELIVER_H
#define SOP_DELIVER_H

#include <stddef.h>
#include <sys/types.h>

#include "proxy/delivery/txn.h"
#include "store/spool_envelope.h"

struct upstream_conn;
struct cfg_account;
struct metrics;
struct spool_body;
struct deliver;

/* Where the body comes from: its stored lines, each ending in CRLF, not dot-stuffed
 * (docs/spool.md). read: > 0 bytes read into buf; 0 the end (the body is whole); -1 with err, it
 * cannot be read now (try later); -2 with err, it is damaged (never whole again). */
struct deliver_body {
    ssize_t (*read)(void *src, void *buf, size_t cap, char *err, size_t errlen);
    uint64_t size; /* its length in bytes: SIZE= and size= in the log */
    void *src;
};

/* A spool reader (store/spool.h) as a body. */
struct deliver_body deliver_body_spool(struct spool_body *b);

/* Called once, from the event loop; res is valid only during the call. The connection has been
 * given back to its pool (reusable or not) before cb runs: the caller no longer owns it. */
typedef void (*deliver_cb)(void *arg, const struct txn_result *res);

/* Start delivering env's message, reading its body from body (positioned at the start; the
 * caller keeps ownership of env and of body's source and frees them after cb, or after
 * deliver_cancel). ops: the connection's (the pool's: deliver_start). acct: the account's
 * settings (sender_rewrite, mailbox). Takes the connection. m: the server's counters (NULL: not
 * counted). log_id: session= in log lines (the device's session, or the queue id for the queue
 * runner); queue_id= is env->queue_id when set. NULL only when out of memory (the connection is
 * then released as not reusable, cb never runs). */
struct deliver *deliver_start_ops(const struct txn_conn_ops *ops, struct upstream_conn *c,
                                  const struct cfg_account *acct, const struct spool_envelope *env,
                                  const struct deliver_body *body, struct metrics *m,
                                  const char *log_id, deliver_cb cb, void *arg);
/* What the engine needs of a connection leased from upstream_pool.h (deliver_pool.c): for every
 * user of the engine on the pool's connections. */
extern const struct txn_conn_ops deliver_pool_ops;
/* deliver_start_ops on a connection leased from upstream_pool.h, with a spool reader. */
struct deliver *deliver_start(struct upstream_conn *c, const struct cfg_account *acct,
                              const struct spool_envelope *env, struct spool_body *body,
                              struct metrics *m, const char *log_id, deliver_cb cb, void *arg);
/* Stop: the connection is closed (the message is not delivered, unless the upstream already
 * said 250: the caller treats a cancelled attempt as not delivered, which is at-least-once). cb
 * does not run. Accepts NULL. */
void deliver_cancel(struct deliver *d);

#endif
