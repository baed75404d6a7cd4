/* Password checks on common/worker.h's threads. */
#include "proxy/runtime/auth_worker.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "common/secret.h"
#include "common/worker.h"
#include "proxy/runtime/device.h"

struct auth_job {
    const struct device_table *table;
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
    struct worker *threads;
};

static void job_free(void *arg)
{
    struct auth_job *j = arg;
    secret_free(j->user);
    secret_free(j->pass);
    free(j);
}

static void job_run(void *arg)
{
    struct auth_job *j = arg;
    j->result = device_authenticate(j->table, (struct sockaddr *)&j->sa, j->user, j->pass, &j->why);
}

static void job_done(void *arg)
{
    struct auth_job *j = arg;
    secret_free(j->pass); /* wiped before anything else runs */
    j->pass = NULL;
    if (!j->cancelled)
        j->cb(j->arg, j->result, j->why);
    job_free(j);
}

struct auth_worker *auth_worker_new(struct event_base *base, const struct device_table *t,
                                    unsigned threads)
{
    struct auth_worker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->table = t;
    w->threads = worker_new(base, threads, "auth");
    if (!w->threads) {
        free(w);
        return NULL;
    }
    return w;
}

void auth_worker_free(struct auth_worker *w)
{
    if (!w)
        return;
    worker_free(w->threads); /* jobs not answered yet: dropped, no callback */
    free(w);
}

struct auth_job *auth_worker_check(struct auth_worker *w, const struct sockaddr *sa,
                                   const char *user, const char *pass, auth_done_cb cb, void *arg)
{
    struct auth_job *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->table = w->table;
    j->user = secret_dup(user);
    j->pass = secret_dup(pass);
    j->cb = cb;
    j->arg = arg;
    size_t salen =
        sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    memcpy(&j->sa, sa, salen);
    if (!j->user || !j->pass || worker_submit(w->threads, job_run, job_done, job_free, j) != 0) {
        job_free(j);
        return NULL;
    }
    return j;
}

void auth_worker_cancel(struct auth_job *j)
{
    if (j)
        j->cancelled = 1;
}
