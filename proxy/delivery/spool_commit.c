#include "proxy/delivery/spool_commit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/worker.h"
#include "proxy/delivery/queue.h"
#include "store/spool.h"

struct spool_committer {
    struct queue *q;
    struct worker *threads; /* NULL: commit on the loop */
};

struct spool_commit {
    struct spool_committer *c;
    struct spool_writer *w; /* until run */
    struct spool_envelope env;
    int ran, rc;
    char err[512];
    spool_commit_cb cb; /* NULL once detached */
    void *arg;
};

struct spool_committer *spool_committer_new(struct event_base *base, struct queue *q,
                                            unsigned threads)
{
    struct spool_committer *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->q = q;
    if (threads) {
        c->threads = worker_new(base, threads, "spool-commit");
        if (!c->threads) {
            free(c);
            return NULL;
        }
    }
    return c;
}

void spool_committer_free(struct spool_committer *c)
{
    if (!c)
        return;
    worker_free(c->threads);
    free(c);
}

static void commit_free(void *arg)
{
    struct spool_commit *k = arg;
    if (!k->ran)
        spool_writer_abort(k->w);
    spool_envelope_clear(&k->env);
    free(k);
}

/* On a thread: the blocking part. Touches only k and the spool's read-only paths. */
static void commit_run(void *arg)
{
    struct spool_commit *k = arg;
    k->rc = spool_writer_commit(k->w, &k->env, k->err, sizeof(k->err));
    k->w = NULL;
    k->ran = 1;
}

static void commit_done(void *arg)
{
    struct spool_commit *k = arg;
    if (k->rc == 0 && queue_submit(k->c->q, &k->env) != 0)
        log_error("event=queue_submit_failed queue_id=%s reason=out-of-memory "
                  "effect=\"delivered after the next restart\"",
                  k->env.queue_id);
    if (k->cb)
        k->cb(k->arg, k->rc == 0 ? k->env.queue_id : NULL, k->err);
    commit_free(k);
}

int spool_commit_start(struct spool_committer *c, struct spool_writer *w,
                       const struct spool_envelope *env, spool_commit_cb cb, void *arg,
                       struct spool_commit **handle)
{
    struct spool_commit *k = calloc(1, sizeof(*k));
    *handle = NULL;
    if (!k || spool_envelope_copy(&k->env, env) != 0) {
        free(k);
        spool_writer_abort(w);
        return -1;
    }
    k->c = c;
    k->w = w;
    k->cb = cb;
    k->arg = arg;
    if (!c->threads) {
        commit_run(k);
        commit_done(k);
        return 0;
    }
    if (worker_submit(c->threads, commit_run, commit_done, commit_free, k) != 0) {
        commit_free(k); /* aborts w */
        return -1;
    }
    *handle = k;
    return 0;
}

void spool_commit_detach(struct spool_commit *k)
{
    if (k)
        k->cb = NULL;
}
