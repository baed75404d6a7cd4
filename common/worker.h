/* A few threads for work that blocks (a password hash, an fsync), so the event loop never waits
 * for it. Jobs run in FIFO order on the threads; each finished job comes back to the loop
 * through a pipe and its done callback runs there, so nothing else needs locks. */
#ifndef SOP_WORKER_H
#define SOP_WORKER_H

struct event_base;
struct worker;

/* On a worker thread: the blocking part. Touches only what arg owns. */
typedef void (*worker_run_fn)(void *arg);
/* On the loop thread, after run: the result; frees arg when it is done with it. */
typedef void (*worker_done_fn)(void *arg);
/* On the loop thread, from worker_free, for a job whose done will never run (not run yet, or
 * run but not reported back): free arg. */
typedef void (*worker_drop_fn)(void *arg);

/* threads 0 counts as 1. NULL on failure (threads or pipe could not be made; logged). */
struct worker *worker_new(struct event_base *base, unsigned threads, const char *name);
/* Stops and joins the threads; each job not reported back yet gets drop. Accepts NULL. */
void worker_free(struct worker *w);
/* Queue a job. 0 queued (done or drop will run, later, never from inside this call); -1 out of
 * memory (nothing runs). */
int worker_submit(struct worker *w, worker_run_fn run, worker_done_fn done, worker_drop_fn drop,
                  void *arg);

#endif
