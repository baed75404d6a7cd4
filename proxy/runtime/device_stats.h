/* Which devices still send? Per configured device (by name): when it was last seen, its last
 * result and how many messages it sent in the last 24 hours and 30 days. Bounded in size (24
 * hourly and 30 daily buckets per device, a cut reply text), kept across restarts in
 * STATE_DIR/devices.state (device_stats_file.c), shown by `smtp-oauth-proxy devices`.
 *
 * Times are wall-clock seconds passed in by the caller, so tests can drive the clock. */
#ifndef SOP_DEVICE_STATS_H
#define SOP_DEVICE_STATS_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct event_base;
struct cJSON;

/* The reply text kept with the last result: the upstream's first line, log-safe, cut. */
#define DEVICE_STATS_REPLY_MAX 200
/* The state file's name under state_dir. */
#define DEVICE_STATS_FILE "devices.state"
/* How often the daemon writes the file while something changed. */
#define DEVICE_STATS_FLUSH_SECONDS 60

enum device_result {
    DEVICE_RESULT_NONE = 0, /* no message yet */
    DEVICE_RESULT_DELIVERED,
    DEVICE_RESULT_REFUSED,
    DEVICE_RESULT_DEFERRED,
    DEVICE_RESULT_QUEUED, /* 250 for a message committed to the spool */
};

struct device_stats;

/* What one device looks like now. */
struct device_stats_row {
    int64_t tracked_since; /* when the proxy started to keep this device's history */
    int64_t last_seen;     /* 0: never */
    uint64_t msgs_24h, msgs_30d;
    enum device_result last_result;
    int64_t last_result_at;
    char last_reply[DEVICE_STATS_REPLY_MAX + 1]; /* "" without a result */
};

/* One entry per cfg->devices[i] (by name), each tracked since now. NULL: out of memory. */
struct device_stats *device_stats_new(const struct config *cfg, int64_t now);
void device_stats_free(struct device_stats *ds);
/* Keep the history of the devices cfg still names, drop the others, add new ones (tracked since
 * now). For a reloaded config. 0 ok; -1 out of memory (then nothing changed). */
int device_stats_retain(struct device_stats *ds, const struct config *cfg, int64_t now);
/* A session was identified as device name (by its address, or by AUTH). Unknown names are
 * ignored; ds NULL is a no-op (as for device_stats_message). */
void device_stats_seen(struct device_stats *ds, const char *name, int64_t now);
/* Device name's message ended with result ("delivered", "refused", "deferred", "queued") and the
 * reply the device heard (any bytes: made log-safe and cut here). Also counts as seen. */
void device_stats_message(struct device_stats *ds, const char *name, const char *result,
                          const char *reply, int64_t now);
/* The figures of device name at now; 0 ok, -1 no such device. */
int device_stats_get(const struct device_stats *ds, const char *name, int64_t now,
                     struct device_stats_row *row);
/* 1 if something changed since the last device_stats_mark_clean(). */
int device_stats_dirty(const struct device_stats *ds);
void device_stats_mark_clean(struct device_stats *ds);
const char *device_result_str(enum device_result r);

/* ---- device_stats_file.c ---- */

/* Write ds to path atomically (temp file O_EXCL 0600, fsync, rename, fsync the directory,
 * which is created 0700 if missing). 0 ok; -1 with err. */
int device_stats_save(const struct device_stats *ds, const char *path, char *err, size_t errlen);
/* Load the history kept in path into ds, for the devices ds has (others are dropped).
 * 1 loaded; 0 no file; -1 unreadable, torn or garbled (err says why; ds is unchanged: a bad
 * file is never half-used). */
int device_stats_load(struct device_stats *ds, const char *path, char *err, size_t errlen);
/* path = STATE_DIR/devices.state; 0 ok, -1 too long. */
int device_stats_path(const struct config *cfg, char *path, size_t len);

/* ---- device_stats_json.c ---- */

/* The `devices` document, one object per cfg->devices[i] in file order:
 * {"source": source, "now": T, "stale_after": S, "devices": [{"name", "account", "match",
 *  "last_seen", "tracked_since", "msgs_24h", "msgs_30d", "last_result", "last_reply",
 *  "last_result_at", "stale"}]}. A device is stale when it has been silent for stale_after:
 * now - last_seen >= stale_after, or, never seen, now - tracked_since >= stale_after. */
struct cJSON *device_stats_json(const struct device_stats *ds, const struct config *cfg,
                                const char *source, int64_t now);

/* ---- device_stats_keeper.c: the daemon's copy ---- */

struct device_stats_keeper;
/* Load STATE_DIR/devices.state (a bad file is reported and set aside), then write it every
 * DEVICE_STATS_FLUSH_SECONDS while dirty. Copies what it needs from cfg (device names, the
 * file's path): cfg may be freed after. NULL: out of memory. */
struct device_stats_keeper *device_stats_keeper_new(struct event_base *base,
                                                    const struct config *cfg);
/* Write the file a last time (if dirty) and free. Accepts NULL. */
void device_stats_keeper_free(struct device_stats_keeper *k);
/* The live stats (NULL-safe: NULL for a NULL keeper). */
struct device_stats *device_stats_keeper_stats(struct device_stats_keeper *k);
/* After a config reload: keep the devices cfg still names; later writes go to its state_dir. */
void device_stats_keeper_retain(struct device_stats_keeper *k, const struct config *cfg);

#endif
