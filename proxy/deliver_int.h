/* The seam between deliver.c and the connection pool: what a delivery needs from a leased
 * connection. deliver_start (deliver_pool.c) passes upstream_pool.h's functions; unit tests pass
 * their own around a client_session they opened, so deliver.c links without the pool. */
#ifndef SOP_DELIVER_INT_H
#define SOP_DELIVER_INT_H

#include "proxy/deliver.h"

struct client_session;

struct deliver_conn_ops {
    struct client_session *(*session)(struct upstream_conn *c);
    const char *(*host)(const struct upstream_conn *c);
    void (*release)(struct upstream_conn *c, int reusable);
};

/* deliver_start with the connection's functions in ops (which must outlive the delivery). */
struct deliver *deliver_start_ops(const struct deliver_conn_ops *ops, struct upstream_conn *c,
                                  const struct cfg_account *acct, const struct spool_envelope *env,
                                  struct spool_body *body, struct metrics *m, const char *log_id,
                                  deliver_cb cb, void *arg);

#endif
