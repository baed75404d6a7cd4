#include "common/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/log.h"

struct worker_job {
    struct worker_job *next; /* in the queue */
    worker_run_fn run;
    worker_done_fn done;
    worker_drop_fn drop;
    void *arg;
};

struct worker {
    char name[32];
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct worker_job *head, *tail; /* waiting jobs, under lock */
    int stopping;                   /* under lock */
    pthread_t *threads;
    unsigned nthreads;
    int pipe_rd, pipe_wr; /* finished jobs, as pointers, back to the loop */
    struct event *done_ev;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        while (!w->head && !w->stopping)
            pthread_cond_wait(&w->wake, &w->lock);
        if (w->stopping) {
            pthread_mutex_unlock(&w->lock);
            return NULL;
        }
        struct worker_job *j = w->head;
        w->head = j->next;
        if (!w->head)
            w->tail = NULL;
        pthread_mutex_unlock(&w->lock);

        j->run(j->arg);
        /* The pipe orders the handoff already; the lock makes that ordering one any race
         * checker (helgrind, TSan) can see, for next to nothing. */
        pthread_mutex_lock(&w->lock);
        pthread_mutex_unlock(&w->lock);
        /* A pointer-sized write to a pipe is atomic (PIPE_BUF); the loop reads it back. */
        ssize_t n;
        do
            n = write(w->pipe_wr, &j, sizeof(j));
        while (n < 0 && errno == EINTR);
        if (n != (ssize_t)sizeof(j)) /* cannot happen with a blocking pipe; never lose a job */
            abort();
    }
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    (void)what;
    struct worker_job *jobs[64];
    ssize_t n = read(fd, jobs, sizeof(jobs));
    if (n <= 0)
        return;
    pthread_mutex_lock(&w->lock); /* pairs with the worker's unlock after it finished a job */
    pthread_mutex_unlock(&w->lock);
    for (size_t i = 0; i < (size_t)n / sizeof(jobs[0]); i++) {
        struct worker_job *j = jobs[i];
        j->done(j->arg);
        free(j);
    }
}

struct worker *worker_new(struct event_base *base, unsigned threads, const char *name)
{
    struct worker *w = calloc(1, sizeof(*w));
    int fds[2] = {-1, -1};
    if (!w)
        return NULL;
    snprintf(w->name, sizeof(w->name), "%s", name);
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    w->pipe_rd = w->pipe_wr = -1;
    if (pipe(fds) != 0)
        goto fail;
    w->pipe_rd = fds[0];
    w->pipe_wr = fds[1];
    if (fcntl(fds[0], F_SETFD, FD_CLOEXEC) != 0 || fcntl(fds[1], F_SETFD, FD_CLOEXEC) != 0)
        goto fail;
    /* The loop side never blocks; the threads' side does (a full pipe just makes them wait). */
    if (fcntl(w->pipe_rd, F_SETFL, O_NONBLOCK) != 0)
        goto fail;
    w->done_ev = event_new(base, w->pipe_rd, EV_READ | EV_PERSIST, on_done, w);
    if (!w->done_ev || event_add(w->done_ev, NULL) != 0)
        goto fail;
    if (threads == 0)
        threads = 1;
    w->threads = calloc(threads, sizeof(*w->threads));
    if (!w->threads)
        goto fail;
    for (unsigned i = 0; i < threads; i++) {
        if (pthread_create(&w->threads[i], NULL, worker_main, w) != 0)
            goto fail;
        w->nthreads++;
    }
    return w;
fail:
    log_error("event=worker_failed worker=%s reason=\"%s\"", w->name, strerror(errno));
    worker_free(w);
    return NULL;
}

void worker_free(struct worker *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = 1;
    pthread_cond_broadcast(&w->wake);
    pthread_mutex_unlock(&w->lock);
    for (unsigned i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    free(w->threads);
    /* jobs still queued, and jobs finished but not yet read back: dropped */
    for (struct worker_job *j = w->head, *next; j; j = next) {
        next = j->next;
        j->drop(j->arg);
        free(j);
    }
    if (w->pipe_rd >= 0) {
        struct worker_job *j;
        while (read(w->pipe_rd, &j, sizeof(j)) == (ssize_t)sizeof(j)) {
            j->drop(j->arg);
            free(j);
        }
    }
    if (w->done_ev)
        event_free(w->done_ev);
    if (w->pipe_rd >= 0)
        close(w->pipe_rd);
    if (w->pipe_wr >= 0)
        close(w->pipe_wr);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

int worker_submit(struct worker *w, worker_run_fn run, worker_done_fn done, worker_drop_fn drop,
                  void *arg)
{
    struct worker_job *j = calloc(1, sizeof(*j));
    if (!j)
        return -1;
    j->run = run;
    j->done = done;
    j->drop = drop;
    j->arg = arg;
    pthread_mutex_lock(&w->lock);
    if (w->tail)
        w->tail->next = j;
    else
        w->head = j;
    w->tail = j;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    return 0;
}
