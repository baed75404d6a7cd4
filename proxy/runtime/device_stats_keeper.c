/* The daemon's device history: loaded at start-up, written every DEVICE_STATS_FLUSH_SECONDS
 * while something changed and once more at shutdown. A write is one small file and one fsync a
 * minute at most, so it runs on the loop. */
#include "proxy/runtime/device_stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <event2/event.h>

#include "common/log.h"
#include "common/state_file.h"
#include "proxy/config/config.h"

struct device_stats_keeper {
    struct device_stats *ds;
    struct event *timer;
    char path[4096];
    int failing; /* the last write failed: the next success is logged */
};

static void flush(struct device_stats_keeper *k)
{
    char err[1024];
    if (!device_stats_dirty(k->ds) || !k->path[0])
        return;
    if (device_stats_save(k->ds, k->path, err, sizeof(err)) != 0) {
        /* kept dirty: the next tick tries again */
        log_warn("event=device_state_write_failed path=%s reason=\"%s\"", k->path, err);
        k->failing = 1;
        return;
    }
    device_stats_mark_clean(k->ds);
    if (k->failing)
        log_info("event=device_state_written path=%s", k->path);
    k->failing = 0;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    flush(arg);
}

static void set_path(struct device_stats_keeper *k, const struct config *cfg)
{
    if (device_stats_path(cfg, k->path, sizeof(k->path)) != 0) {
        log_warn("event=device_state_off reason=\"state_dir too long\"");
        k->path[0] = '\0';
    }
}

struct device_stats_keeper *device_stats_keeper_new(struct event_base *base,
                                                    const struct config *cfg)
{
    char err[1024];
    struct device_stats_keeper *k = calloc(1, sizeof(*k));
    if (!k || !(k->ds = device_stats_new(cfg, (int64_t)time(NULL))))
        goto fail;
    set_path(k, cfg);
    if (k->path[0]) {
        int r = device_stats_load(k->ds, k->path, err, sizeof(err));
        if (r < 0) {
            /* never half-used: the history starts again; the bad file is set aside for a
             * person to look at, and the next write (soon: retain marks dirty) replaces it */
            char aside[sizeof(k->path) + 8];
            int moved = state_file_set_aside(k->path, aside, sizeof(aside));
            log_warn("event=device_state_ignored reason=\"%s\"%s%s", err, moved ? " moved_to=" : "",
                     moved ? aside : "");
            device_stats_retain(k->ds, cfg, (int64_t)time(NULL));
        } else if (r > 0) {
            log_info("event=device_state_loaded path=%s devices=%zu", k->path, cfg->ndevices);
        }
    }
    struct timeval tv = {.tv_sec = DEVICE_STATS_FLUSH_SECONDS};
    k->timer = event_new(base, -1, EV_PERSIST, on_tick, k);
    if (!k->timer || event_add(k->timer, &tv) != 0)
        goto fail;
    return k;
fail:
    device_stats_keeper_free(k);
    return NULL;
}

void device_stats_keeper_free(struct device_stats_keeper *k)
{
    if (!k)
        return;
    if (k->ds)
        flush(k);
    if (k->timer)
        event_free(k->timer);
    device_stats_free(k->ds);
    free(k);
}

struct device_stats *device_stats_keeper_stats(struct device_stats_keeper *k)
{
    return k ? k->ds : NULL;
}

void device_stats_keeper_retain(struct device_stats_keeper *k, const struct config *cfg)
{
    if (!k)
        return;
    if (device_stats_retain(k->ds, cfg, (int64_t)time(NULL)) != 0)
        log_warn("event=device_state_retain_failed reason=\"out of memory\"");
    set_path(k, cfg);
}
