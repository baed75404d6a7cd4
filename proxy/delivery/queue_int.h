/* What the queue's files share (queue.c: entries and accounts; queue_run.c: attempts and their
 * results; queue_bounce.c: DSNs; queue_ctl.c: the control socket's verbs). Not for other
 * modules. */
#ifndef SOP_QUEUE_INT_H
#define SOP_QUEUE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/delivery/queue.h"
#include "proxy/delivery/queue_backoff.h"
#include "store/spool_envelope.h"

struct event;
struct queue_attempt;

/* One queued message: its envelope (the body stays on disk). */
struct queue_msg {
    struct spool_envelope env;
    struct queue_acct *acct;
    struct queue_msg *prev, *next; /* in the account's list: created, then id */
    int sending;                   /* the account's attempt is on this message */
    uint64_t seq;                  /* arrival order: listing ties of created like the runs */
    int budget_held; /* waiting for the account's daily recipient budget (counted once) */
};

/* The messages of one account name, and its run: one attempt at a time, one timer. */
struct queue_acct {
    struct queue *q;
    char *name;
    struct queue_acct *next;
    struct queue_msg *head, *tail;
    size_t n;
    struct event *timer;       /* the run's next due time */
    int64_t wake_at;           /* when it fires (wall s) */
    struct queue_attempt *att; /* the attempt in flight, NULL if none */
    int64_t stopped_until;     /* a connection failure stopped the run until then (wall s) */
};

struct queue {
    const struct delivery_ctx *ctx; /* the loop, counters, pools (borrowed) */
    struct server_gen *gen;         /* the current configuration (borrowed; queue_reconfigured) */
    int stopping;                   /* queue_stopping: no new attempt starts */
    struct spool *spool;
    struct queue_acct *accts;
    size_t n, held, sending;
    uint64_t seq;
    unsigned long delivered, bounced, deferred;
    int running; /* queue_recover ran: timers may start attempts */
};

/* queue.c */
struct queue_acct *queue_acct_get(struct queue *q, const char *name); /* NULL: no memory */
struct queue_msg *queue_find(const struct queue *q, const char *id);
/* Unlink m from its account and free it (counts adjusted). Not while an attempt is on it. */
void queue_msg_drop(struct queue *q, struct queue_msg *m);
/* Run the account from the event loop as soon as possible (never from inside the caller). */
void queue_acct_kick(struct queue_acct *a);
/* Arm the account's timer for wall time when (already past: at once). */
void queue_acct_wake_at(struct queue_acct *a, int64_t when);
int64_t queue_now(void);
/* The account's lifetime and schedule from the current config. */
void queue_backoff_params(const struct queue *q, struct queue_backoff *p);

/* queue_run.c */
/* The account's timer: expire, then start the first due message. */
void queue_run_acct(struct queue_acct *a);
/* Cancel the attempt in flight (its message stays queued). Accepts a->att NULL. */
void queue_attempt_cancel(struct queue_acct *a);

/* queue_bounce.c */
/* The start of a message's body (its header block, for the DSN): *buf malloc'd, NULL when it
 * cannot be read (the DSN then goes out without it). */
void queue_read_headers(struct queue *q, const struct spool_envelope *env, char **buf, size_t *len);

#endif
