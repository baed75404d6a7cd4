/* One delivery attempt of a complete message through Microsoft Graph (an account with upstream =
 * graph): the stored body checked against its SHA-256, made ready by graph_mime.h (recipients
 * from the envelope, large attachments split off), sent by graph_client.h. The outcome is given
 * as the transaction engine's (txn.h), one verdict for every recipient (Graph takes a message
 * whole or not at all), so the backends and the queue runner treat both transports alike. */
#ifndef SOP_DELIVER_GRAPH_H
#define SOP_DELIVER_GRAPH_H

#include <stdint.h>

#include "proxy/delivery/deliver.h"

/* The largest message Graph takes for a mailbox (Exchange Online's default and maximum message
 * size, reached through upload sessions): beyond it the device hears 552 before DATA ends. */
#define DELIVER_GRAPH_SIZE_MAX (UINT64_C(150) * 1024 * 1024)
#define DELIVER_GRAPH_TOO_BIG "552 5.3.4 Message too big for Microsoft Graph (150 MB at most)"

struct event_base;
struct graph_pools;
struct server_gen;
struct deliver_graph;

/* As deliver_start (deliver.h), for a graph account: env and body are borrowed until cb (or
 * deliver_graph_cancel); cb runs once, from the loop, also when the message cannot be read or
 * prepared (then with the verdict that decides it). NULL only when out of memory (cb never
 * runs). */
struct deliver_graph *deliver_graph_start(struct event_base *base, struct graph_pools *pools,
                                          struct server_gen *gen, const struct cfg_account *acct,
                                          const struct spool_envelope *env, struct spool_body *body,
                                          const char *log_id, deliver_cb cb, void *arg);
/* Stop: cb does not run (a message Graph may already have taken counts as not delivered, the
 * at-least-once case). Accepts NULL. */
void deliver_graph_cancel(struct deliver_graph *d);

/* The host of acct's graph_url, for Remote-MTA in bounces and log lines. */
const char *deliver_graph_host(const struct cfg_account *acct, char *buf, size_t len);

#endif
