/* What an admin does to the queue (the control socket's `queue` commands): list, flush, hold,
 * release, delete. A change that must survive a restart (held, deleted) is on disk before it
 * takes effect here. */
#include "proxy/delivery/queue_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/log.h"
#include "store/spool.h"

/* Recipients listed per message; "nrcpts" has the whole count (a message may have 1000). */
#define QUEUE_LIST_RCPTS 20

static int by_age(const void *pa, const void *pb)
{
    const struct queue_msg *a = *(const struct queue_msg *const *)pa;
    const struct queue_msg *b = *(const struct queue_msg *const *)pb;
    if (a->env.created != b->env.created)
        return a->env.created < b->env.created ? -1 : 1;
    /* arrival order within a second, as the runs go (after a restart: spool_scan's order) */
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static cJSON *msg_json(const struct queue_msg *m, int64_t now)
{
    const struct spool_envelope *e = &m->env;
    cJSON *o = cJSON_CreateObject();
    cJSON *rc = o ? cJSON_AddArrayToObject(o, "rcpts") : NULL;
    if (!rc)
        goto fail;
    for (size_t i = 0; i < e->nrcpts && i < QUEUE_LIST_RCPTS; i++) {
        cJSON *s = cJSON_CreateString(e->rcpts[i]);
        if (!s || !cJSON_AddItemToArray(rc, s)) {
            cJSON_Delete(s);
            goto fail;
        }
    }
    if (!cJSON_AddStringToObject(o, "id", e->queue_id) ||
        !cJSON_AddStringToObject(o, "account", e->account) ||
        !cJSON_AddStringToObject(o, "device", e->device ? e->device : "") ||
        !cJSON_AddStringToObject(o, "from", e->mail_from) ||
        !cJSON_AddNumberToObject(o, "nrcpts", (double)e->nrcpts) ||
        !cJSON_AddNumberToObject(o, "size", (double)e->size) ||
        !cJSON_AddNumberToObject(o, "created", (double)e->created) ||
        !cJSON_AddNumberToObject(o, "age", (double)(now > e->created ? now - e->created : 0)) ||
        !cJSON_AddNumberToObject(o, "attempts", (double)e->attempts) ||
        !cJSON_AddNumberToObject(o, "next_attempt", (double)e->next_attempt) ||
        !cJSON_AddStringToObject(o, "last_error", e->last_error ? e->last_error : "") ||
        !cJSON_AddStringToObject(o, "state",
                                 m->sending       ? "sending"
                                 : e->held        ? "held"
                                 : m->budget_held ? "budget"
                                                  : "queued"))
        goto fail;
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

cJSON *queue_list_json(const struct queue *q)
{
    const struct queue_msg **v = NULL;
    size_t n = 0;
    int64_t now = queue_now();
    cJSON *list = cJSON_CreateArray();
    if (!list)
        return NULL;
    if (q->n && !(v = malloc(q->n * sizeof(*v))))
        goto fail;
    for (const struct queue_acct *a = q->accts; a; a = a->next)
        for (const struct queue_msg *m = a->head; m && n < q->n; m = m->next)
            v[n++] = m;
    if (n)
        qsort(v, n, sizeof(*v), by_age);
    for (size_t i = 0; i < n; i++) {
        cJSON *o = msg_json(v[i], now);
        if (!o || !cJSON_AddItemToArray(list, o)) {
            cJSON_Delete(o);
            goto fail;
        }
    }
    free(v);
    return list;
fail:
    free(v);
    cJSON_Delete(list);
    return NULL;
}

static struct queue_msg *find_or_err(struct queue *q, const char *id, char *err, size_t errlen)
{
    struct queue_msg *m = NULL;
    if (!id || !spool_id_valid(id))
        snprintf(err, errlen, "not a queue id (16 lower-case hex digits)");
    else if (!(m = queue_find(q, id)))
        snprintf(err, errlen, "no message %s in the queue", id);
    return m;
}

/* Due now (in memory only: the record's next_attempt is a lower bound a restart may wait for,
 * which is safe), and the account's run starts again. */
static void flush_one(struct queue_msg *m)
{
    m->env.next_attempt = 0;
    m->acct->stopped_until = 0;
    queue_acct_kick(m->acct);
}

int queue_flush(struct queue *q, const char *id, char *err, size_t errlen)
{
    size_t n = 0;
    if (id) {
        struct queue_msg *m = find_or_err(q, id, err, errlen);
        if (!m)
            return -1;
        if (m->env.held) {
            snprintf(err, errlen, "message %s is held: queue release it first", id);
            return -1;
        }
        flush_one(m);
        log_info("event=queue_flushed queue_id=%s account=%s", id, m->acct->name);
        return 0;
    }
    for (struct queue_acct *a = q->accts; a; a = a->next)
        for (struct queue_msg *m = a->head; m; m = m->next)
            if (!m->env.held) {
                flush_one(m);
                n++;
            }
    log_info("event=queue_flushed messages=%zu", n);
    return 0;
}

/* Write m's envelope with held = held, then change it here. */
static int set_held(struct queue *q, struct queue_msg *m, int held, char *err, size_t errlen)
{
    struct spool_envelope env;
    char serr[512];
    if (spool_envelope_copy(&env, &m->env) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    env.held = held;
    if (!held)
        env.next_attempt = 0; /* released: due now */
    int r = spool_update_state(q->spool, &env, serr, sizeof(serr));
    if (r != 0) {
        snprintf(err, errlen, "message %s: %s", m->env.queue_id, serr);
        spool_envelope_clear(&env);
        return -1;
    }
    m->env.held = held;
    m->env.next_attempt = env.next_attempt;
    spool_envelope_clear(&env);
    if (held)
        q->held++;
    else
        q->held--;
    return 0;
}

int queue_hold(struct queue *q, const char *id, char *err, size_t errlen)
{
    struct queue_msg *m = find_or_err(q, id, err, errlen);
    if (!m)
        return -1;
    if (!m->env.held && set_held(q, m, 1, err, errlen) != 0)
        return -1;
    /* an attempt in flight goes on: what the upstream took cannot be taken back */
    log_info("event=queue_held queue_id=%s account=%s sending=%d", id, m->acct->name, m->sending);
    return 0;
}

int queue_release(struct queue *q, const char *id, char *err, size_t errlen)
{
    struct queue_msg *m = find_or_err(q, id, err, errlen);
    if (!m)
        return -1;
    if (m->env.held && set_held(q, m, 0, err, errlen) != 0)
        return -1;
    log_info("event=queue_released queue_id=%s account=%s", id, m->acct->name);
    m->acct->stopped_until = 0;
    queue_acct_kick(m->acct);
    return 0;
}

int queue_delete(struct queue *q, const char *id, char *err, size_t errlen)
{
    char serr[512];
    struct queue_msg *m = find_or_err(q, id, err, errlen);
    if (!m)
        return -1;
    struct queue_acct *a = m->acct;
    if (m->sending)
        queue_attempt_cancel(a);
    if (spool_remove(q->spool, id, serr, sizeof(serr)) != 0) {
        snprintf(err, errlen, "message %s: %s", id, serr);
        queue_acct_kick(a); /* the cancelled attempt's account runs on */
        return -1;
    }
    log_info("event=queue_deleted queue_id=%s account=%s attempts=%u rcpts=%zu", id, a->name,
             m->env.attempts, m->env.nrcpts);
    queue_msg_drop(q, m);
    queue_acct_kick(a);
    return 0;
}
