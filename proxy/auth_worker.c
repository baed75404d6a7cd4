#include "proxy/auth_worker.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/log.h"
#include "common/secret.h"
#include "proxy/device.h"

struct auth_job {
    struct auth_worker *w;
    struct auth_job *next; /* in the queue */
    struct sockaddr_storage sa;
    char *user;
    char *pass;
    auth_done_cb cb;
    void *arg;
    int cancelled; /* set and read on the loop thread only */
    const struct cfg_device *result;
    const char *why;
};

struct auth_worker {
    const struct device_table *table;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct auth_job *head, *tail; /* waiting jobs, under lock */
    int stopping;                 /* under lock */
    pthread_t *threads;
    unsigned nthreads;
    int pipe_rd, pipe_wr; /* finished jobs, as pointers, back to the loop */
    struct event *done_ev;
};

static void job_free(struct auth_job *j)
{
    secret_free(j->user);
    secret_free(j->pass);
    free(j);
}

static void *worker_main(void *arg)
{
    struct auth_worker *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        while (!w->head && !w->stopping)
            pthread_cond_wait(&w->wake, &w->lock);
        if (w->stopping) {
            pthread_mutex_unlock(&w->lock);
            return NULL;
        }
        struct auth_job *j = w->head;
        w->head = j->next;
        if (!w->head)
            w->tail = NULL;
        pthread_mutex_unlock(&w->lock);

        const char *why = NULL;
        const struct cfg_device *d =
            device_authenticate(w->table, (struct sockaddr *)&j->sa, j->user, j->pass, &why);
        /* The pipe orders the handoff already; the lock makes that ordering one any race
         * checker (helgrind, TSan) can see, for next to nothing. */
        pthread_mutex_lock(&w->lock);
        j->result = d;
        j->why = why;
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
    struct auth_worker *w = arg;
    (void)what;
    struct auth_job *jobs[64];
    ssize_t n = read(fd, jobs, sizeof(jobs));
    if (n <= 0)
        return;
    pthread_mutex_lock(&w->lock); /* pairs with the worker's unlock after it finished a job */
    pthread_mutex_unlock(&w->lock);
    for (size_t i = 0; i < (size_t)n / sizeof(jobs[0]); i++) {
        struct auth_job *j = jobs[i];
        secret_free(j->pass); /* wiped before anything else runs */
        j->pass = NULL;
        if (!j->cancelled)
            j->cb(j->arg, j->result, j->why);
        job_free(j);
    }
}

struct auth_worker *auth_worker_new(struct event_base *base, const struct device_table *t,
                                    unsigned threads)
{
    struct auth_worker *w = calloc(1, sizeof(*w));
    int fds[2] = {-1, -1};
    if (!w)
        return NULL;
    w->table = t;
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
    w->threads = calloc(threads ? threads : 1, sizeof(*w->threads));
    if (!w->threads)
        goto fail;
    for (unsigned i = 0; i < (threads ? threads : 1); i++) {
        if (pthread_create(&w->threads[i], NULL, worker_main, w) != 0)
            goto fail;
        w->nthreads++;
    }
    return w;
fail:
    log_error("event=auth_worker_failed reason=\"%s\"", strerror(errno));
    auth_worker_free(w);
    return NULL;
}

void auth_worker_free(struct auth_worker *w)
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
    /* jobs still queued, and jobs finished but not yet read back: dropped, no callback */
    for (struct auth_job *j = w->head, *next; j; j = next) {
        next = j->next;
        job_free(j);
    }
    if (w->pipe_rd >= 0) {
        struct auth_job *j;
        while (read(w->pipe_rd, &j, sizeof(j)) == (ssize_t)sizeof(j))
            job_free(j);
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

struct auth_job *auth_worker_check(struct auth_worker *w, const struct sockaddr *sa,
                                   const char *user, const char *pass, auth_done_cb cb, void *arg)
{
    struct auth_job *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->w = w;
    j->user = secret_dup(user);
    j->pass = secret_dup(pass);
    j->cb = cb;
    j->arg = arg;
    size_t salen =
        sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    memcpy(&j->sa, sa, salen);
    if (!j->user || !j->pass) {
        job_free(j);
        return NULL;
    }
    pthread_mutex_lock(&w->lock);
    if (w->tail)
        w->tail->next = j;
    else
        w->head = j;
    w->tail = j;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    return j;
}

void auth_worker_cancel(struct auth_job *j)
{
    if (j)
        j->cancelled = 1;
}
