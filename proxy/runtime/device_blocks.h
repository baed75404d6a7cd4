/* Devices cut off by an admin (`devices block NAME --reason TEXT`) or automatically
 * (block_after_refusals): docs/device-limits.md. A blocked device hears 550 5.7.1 and the
 * reason at MAIL until `devices unblock NAME`. The list is kept in STATE_DIR/device_blocks.state
 * (written through common/durable_file.h, mode 0600) on every change, and read at start-up, so
 * a block survives restarts and reloads. It is by device name and independent of the config: a
 * block on a name the config no longer has stays until it is lifted.
 *
 * File: a first line DEVICE_BLOCKS_MAGIC, then one line per device:
 *     NAME SP SINCE SP BY SP REASON LF
 * NAME a config name ([A-Za-z0-9._-], at most DEVICE_BLOCK_NAME_MAX), SINCE seconds since the
 * epoch, BY "admin" or "auto", REASON printable ASCII (spaces allowed), at most
 * DEVICE_BLOCK_REASON_MAX. Anything else makes the file bad: it is then not used at all. */
#ifndef SOP_DEVICE_BLOCKS_H
#define SOP_DEVICE_BLOCKS_H

#include <stddef.h>
#include <stdint.h>

struct config;

#define DEVICE_BLOCKS_FILE "device_blocks.state"
#define DEVICE_BLOCKS_MAGIC "smtp-oauth-proxy device blocks 1"
#define DEVICE_BLOCK_NAME_MAX 64
#define DEVICE_BLOCK_REASON_MAX 200
#define DEVICE_BLOCKS_MAX 10000 /* entries in the file and in memory */

struct device_block {
    char name[DEVICE_BLOCK_NAME_MAX + 1];
    int64_t since;
    char by[8]; /* "admin", "auto" */
    char reason[DEVICE_BLOCK_REASON_MAX + 1];
};

struct device_blocks;

/* An empty list kept at path (NULL: in memory only). NULL: out of memory. */
struct device_blocks *device_blocks_new(const char *path);
void device_blocks_free(struct device_blocks *b);
/* Read the file: 1 loaded; 0 no file; -1 unreadable or bad (err says why and where; the list is
 * unchanged). */
int device_blocks_load(struct device_blocks *b, char *err, size_t errlen);
/* Block name (a valid device name), replacing an earlier block of it; reason is sanitised
 * (device_block_sanitize). Written to the file before it takes effect: 0 ok; -1 with err
 * (nothing changed). */
int device_blocks_set(struct device_blocks *b, const char *name, const char *by, const char *reason,
                      int64_t now, char *err, size_t errlen);
/* Lift the block on name: 1 lifted; 0 it was not blocked; -1 with err (the file could not be
 * written: still blocked). */
int device_blocks_clear(struct device_blocks *b, const char *name, char *err, size_t errlen);
/* The block on name, or NULL (b NULL: NULL). Valid until the next set/clear/load. */
const struct device_block *device_blocks_get(const struct device_blocks *b, const char *name);
size_t device_blocks_count(const struct device_blocks *b);

/* A reason as it is kept and shown: printable ASCII, anything else (control bytes, tabs, UTF-8)
 * as '?', leading and trailing spaces dropped, cut at DEVICE_BLOCK_REASON_MAX. Returns dst. */
char *device_block_sanitize(char *dst, size_t dstlen, const char *src);
/* 1 when name could be a device name: [A-Za-z0-9._-], 1..DEVICE_BLOCK_NAME_MAX. */
int device_block_name_ok(const char *name);
/* Add to the `devices` document (device_stats_json) each device's block: "blocked" (true or
 * false) and, when blocked, "blocked_since", "blocked_by", "blocked_reason"; and "blocked_other":
 * blocked names the config does not have. b NULL: every device unblocked. 0 ok; -1 out of
 * memory. */
struct cJSON;
int device_blocks_json(const struct device_blocks *b, struct cJSON *doc);
/* path = STATE_DIR/device_blocks.state; 0 ok, -1 too long. */
int device_blocks_path(const struct config *cfg, char *path, size_t len);

#endif
