/* Per-device sending limits (docs/device-limits.md): max_messages_per_hour and
 * max_recipients_per_day as rolling windows, and the spam refusals that block_after_refusals
 * counts in a rolling 24 hours. Counted per device name, so the windows survive a reload (a
 * device that keeps its name keeps its counts); the limits themselves come from the config of
 * the latest device_limits_configure. The daemon writes the counts to STATE_DIR at shutdown and
 * reads them at start-up (device_limits_file.c), so a restart keeps them too.
 *
 * A window is DEVICE_LIMITS_BUCKETS buckets of its length / DEVICE_LIMITS_BUCKETS seconds
 * each (a minute for the hour, a quarter of an hour for the day): a count leaves the window
 * between (BUCKETS - 1) and BUCKETS bucket lengths after it happened. Memory per device is
 * fixed, whatever a device sends.
 *
 * The clock is injected (NULL: time(2)), so tests drive it. Touched only from the event loop. */
#ifndef SOP_DEVICE_LIMITS_H
#define SOP_DEVICE_LIMITS_H

#include <stddef.h>
#include <stdint.h>

struct config;

#define DEVICE_LIMITS_BUCKETS 60u
#define DEVICE_LIMITS_HOUR 3600
#define DEVICE_LIMITS_DAY 86400

/* Wall-clock seconds. */
typedef int64_t (*device_limits_clock)(void *arg);

enum device_limit_kind {
    DEVICE_LIMIT_MESSAGES,   /* max_messages_per_hour */
    DEVICE_LIMIT_RECIPIENTS, /* max_recipients_per_day */
};

struct device_limits;

/* No devices until device_limits_configure. NULL: out of memory. */
struct device_limits *device_limits_new(device_limits_clock clock, void *clock_arg);
void device_limits_free(struct device_limits *l);
/* Take the devices and limits of cfg (copied: cfg need not outlive this): the windows of
 * devices that keep their name carry over, new ones start empty, removed ones are dropped.
 * 0 ok; -1 out of memory (nothing changed). */
int device_limits_configure(struct device_limits *l, const struct config *cfg);

/* One more message (kind MESSAGES) or recipient (RECIPIENTS) for device: 0 taken (counted);
 * 1 refused, the window already holds the limit (*max: the limit); 0 also for an unknown device
 * or one without that limit (l NULL: 0). */
int device_limits_take(struct device_limits *l, const char *device, enum device_limit_kind kind,
                       unsigned *max);
/* Give back one taken a moment ago (the upstream refused what the device asked for). */
void device_limits_give_back(struct device_limits *l, const char *device,
                             enum device_limit_kind kind);
/* The count in the window now (0: unknown device). */
unsigned device_limits_count(struct device_limits *l, const char *device,
                             enum device_limit_kind kind);

/* A message of device refused by the upstream as spam: counted in a rolling 24 hours. Returns
 * the count when it reached the device's block_after_refusals (the count then starts again),
 * else 0 (also without block_after_refusals). */
unsigned device_limits_spam_refusal(struct device_limits *l, const char *device);

/* ---- device_limits_file.c: the counts across a restart ---- */

/* The file's name under state_dir, and its first line. */
#define DEVICE_LIMITS_FILE "device_limits.state"
#define DEVICE_LIMITS_MAGIC "smtp-oauth-proxy device limits 1"

/* Write the counts still in their windows to path atomically (temp file 0600, fsync, rename,
 * fsync of the directory). 0 ok; -1 with err. */
int device_limits_save(const struct device_limits *l, const char *path, char *err, size_t errlen);
/* Add the counts kept in path to the devices l has (configure first; other names are
 * dropped, as are counts outside their window now). 1 loaded; 0 no file; -1 unreadable or bad
 * (err says why and where; nothing changed). */
int device_limits_load(struct device_limits *l, const char *path, char *err, size_t errlen);
/* path = STATE_DIR/device_limits.state; 0 ok, -1 too long. */
int device_limits_path(const struct config *cfg, char *path, size_t len);

/* "max_messages_per_hour", "max_recipients_per_day": the key, as the reason and the log say. */
const char *device_limit_name(enum device_limit_kind kind);

#endif
