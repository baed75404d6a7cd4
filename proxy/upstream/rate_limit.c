/* Sliding-window message rate and a connection count per account (see rate_limit.h). */
#include "proxy/upstream/rate_limit.h"

#include <stdlib.h>

struct rate_limit {
    unsigned per_minute, max_conns, conns;
    unsigned head, count; /* ring of the last count (<= per_minute) start times, oldest at head */
    int64_t last;         /* the latest start time, so a clock stepping back cannot reorder */
    int64_t times[];
};

struct rate_limit *rate_limit_new(unsigned per_minute, unsigned max_conns)
{
    struct rate_limit *r;
    if (per_minute > RATE_LIMIT_MAX_PER_MINUTE)
        return NULL;
    r = calloc(1, sizeof(*r) + (size_t)per_minute * sizeof(r->times[0]));
    if (!r)
        return NULL;
    r->per_minute = per_minute;
    r->max_conns = max_conns;
    r->last = INT64_MIN;
    return r;
}

struct rate_limit *rate_limit_resized(const struct rate_limit *old, unsigned per_minute)
{
    struct rate_limit *r = rate_limit_new(per_minute, old ? old->max_conns : 0);
    if (!r || !old)
        return r;
    r->conns = old->conns;
    r->last = old->last;
    unsigned keep = old->count < per_minute ? old->count : per_minute;
    for (unsigned i = 0; i < keep; i++) /* the newest keep send times, oldest first */
        r->times[i] = old->times[(old->head + old->count - keep + i) % old->per_minute];
    r->count = keep;
    return r;
}

void rate_limit_free(struct rate_limit *r)
{
    free(r);
}

int64_t rate_limit_msg_when(const struct rate_limit *r, int64_t now_ms)
{
    int64_t at;
    if (r->per_minute == 0 || r->count < r->per_minute)
        return now_ms;
    at = r->times[r->head] + RATE_LIMIT_WINDOW_MS;
    return at > now_ms ? at : now_ms;
}

int64_t rate_limit_msg_when_nth(const struct rate_limit *r, int64_t now_ms, unsigned n)
{
    if (r->per_minute == 0)
        return now_ms;
    /* Whole windows first: the message n + 1 goes one window after message n + 1 - per_minute. */
    int64_t extra = (int64_t)(n / r->per_minute) * RATE_LIMIT_WINDOW_MS;
    unsigned k = n % r->per_minute, free_slots = r->per_minute - r->count;
    int64_t at;
    if (k < free_slots)
        at = extra ? now_ms + extra : now_ms;
    else
        at = r->times[(r->head + (k - free_slots)) % r->per_minute] + RATE_LIMIT_WINDOW_MS + extra;
    return at > now_ms ? at : now_ms;
}

int rate_limit_msg_take(struct rate_limit *r, int64_t now_ms, int64_t *retry_ms)
{
    int64_t when = rate_limit_msg_when(r, now_ms), t;
    if (when > now_ms) {
        if (retry_ms)
            *retry_ms = when;
        return 0;
    }
    if (r->per_minute == 0)
        return 1;
    t = now_ms > r->last ? now_ms : r->last;
    r->last = t;
    if (r->count < r->per_minute) {
        r->times[(r->head + r->count) % r->per_minute] = t;
        r->count++;
    } else {
        r->times[r->head] = t; /* the oldest leaves the window, the newest takes its place */
        r->head = (r->head + 1) % r->per_minute;
    }
    return 1;
}

int rate_limit_conn_take(struct rate_limit *r)
{
    if (r->max_conns && r->conns >= r->max_conns)
        return 0;
    r->conns++;
    return 1;
}

void rate_limit_conn_put(struct rate_limit *r)
{
    if (r->conns > 0)
        r->conns--;
}

unsigned rate_limit_conns(const struct rate_limit *r)
{
    return r->conns;
}
