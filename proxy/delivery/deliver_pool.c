/* The engine's view of a connection leased from upstream_pool.h, and deliver_start on one. Kept
 * apart from deliver.c so that deliver.c's unit test links without the pool. */
#include "proxy/delivery/deliver.h"

#include "proxy/upstream/upstream_pool.h"

const struct txn_conn_ops deliver_pool_ops = {
    .session = upstream_conn_session,
    .host = upstream_conn_host,
    .release = upstream_conn_release,
};

struct deliver *deliver_start(struct upstream_conn *c, const struct cfg_account *acct,
                              const struct spool_envelope *env, struct spool_body *body,
                              struct metrics *m, const char *log_id, deliver_cb cb, void *arg)
{
    struct deliver_body src = deliver_body_spool(body);
    return deliver_start_ops(&deliver_pool_ops, c, acct, env, &src, m, log_id, cb, arg);
}
