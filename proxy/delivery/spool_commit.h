/* Committing a message to the spool off the event loop. A commit is four fsyncs (body, queue/,
 * envelope, queue/: store/spool.h), about 6 ms on ext4 here; on the loop, every other session
 * would stall for each commit, and 32 devices in delivery = spool would share one disk wait at a
 * time (bench/README.md has the figures). On a few threads (common/worker.h) the loop goes on and
 * concurrent fsyncs share the file system's journal commits. With threads = 0 the commit runs on
 * the loop (for comparison). A committed message is handed to the queue (queue_submit) on the
 * loop, whether or not anyone still waits for it. */
#ifndef SOP_SPOOL_COMMIT_H
#define SOP_SPOOL_COMMIT_H

#include <stddef.h>

#include "store/spool_envelope.h"

struct event_base;
struct queue;
struct spool_writer;
struct spool_committer;
struct spool_commit;

/* queue_id: the committed message's id, or NULL and err says why (nothing was committed). */
typedef void (*spool_commit_cb)(void *arg, const char *queue_id, const char *err);

/* q must outlive the committer. NULL when the threads cannot be made (logged). */
struct spool_committer *spool_committer_new(struct event_base *base, struct queue *q,
                                            unsigned threads);
/* Joins the threads. A commit not yet run is abandoned (its tmp file is removed at the next
 * start); one that ran but was not reported is found by the next start's spool_scan. Accepts
 * NULL. */
void spool_committer_free(struct spool_committer *c);
/* Commit w (taken, freed either way) with env (copied), submit it to the queue, then cb. 0: cb
 * will run from the loop (with threads = 0 it has run before this returns, and *handle is NULL);
 * *handle detaches the waiter. -1 out of memory: w was aborted, cb never runs. */
int spool_commit_start(struct spool_committer *c, struct spool_writer *w,
                       const struct spool_envelope *env, spool_commit_cb cb, void *arg,
                       struct spool_commit **handle);
/* The waiter is gone: cb will not run (the commit still completes and is queued). Accepts
 * NULL. */
void spool_commit_detach(struct spool_commit *k);

#endif
