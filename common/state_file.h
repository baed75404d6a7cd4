/* The daemon's small line files in STATE_DIR (the device block list, the device limits' counts)
 * and the write every state file shares. A line file is a first line, its magic, then one line
 * per entry, each ending in LF; anything wrong makes the whole file bad, never half-used: the
 * caller then sets it aside as PATH.bad for a person to look at (state_file_set_aside). Files
 * are written whole through common/durable_file (temp file, fsync, rename, fsync of the
 * directory). What a line says is the module's own: it parses each one in a callback. */
#ifndef SOP_STATE_FILE_H
#define SOP_STATE_FILE_H

#include <stddef.h>

/* The whole file at path, at most max bytes, NUL-terminated in *out (malloc'd; the caller frees
 * it) and its length in *len. A symlink is not followed. 1 read; 0 no such file; -1 with err
 * ("PATH: reason", "PATH: larger than MAX bytes" or "out of memory"). */
int state_file_read(const char *path, size_t max, char **out, size_t *len, char *err,
                    size_t errlen);

/* One line after the magic line, NUL-terminated without its LF (the callback may change its
 * bytes); lineno counts the magic line as 1. Returns NULL when the line is good, else why the
 * file is bad (a string that lives on: it goes into the error message). */
typedef const char *(*state_file_line_fn)(void *arg, char *line, size_t lineno);

/* Check and walk a file read by state_file_read (buf: len bytes and a NUL after them; its lines
 * are cut in place): no NUL byte ("a NUL byte"), a final LF ("torn (no final newline)"), the
 * first line exactly magic (else not_magic is why), then line_fn on every other line in order,
 * stopping at the first that is bad. 0 good; -1 with err "PATH:LINE: why" (LINE 1 for the checks
 * of the whole file). */
int state_file_parse(const char *path, char *buf, size_t len, const char *magic,
                     const char *not_magic, state_file_line_fn line_fn, void *arg, char *err,
                     size_t errlen);

/* state_file_read and state_file_parse in one: 1 loaded; 0 no such file; -1 with err. */
int state_file_load(const char *path, size_t max, const char *magic, const char *not_magic,
                    state_file_line_fn line_fn, void *arg, char *err, size_t errlen);

/* Put len bytes of data at path as the whole new file: its directory (the part before the last
 * '/', "/" for a file in the root) created mode 0700 when missing, then durable_replace through
 * a temp file PATH.PID.RANDOM.tmp. 0 written; -1 with err, the old file still there. */
int state_file_write(const char *path, const void *data, size_t len, char *err, size_t errlen);
/* state_file_write of what a module rendered: bytes malloc'd (freed here), or NULL when the
 * rendering ran out of memory (then -1 with "out of memory"). */
int state_file_write_rendered(const char *path, char *bytes, size_t len, char *err, size_t errlen);

/* Rename the bad file at path to PATH.bad, that name in aside. 1 moved; 0 not (no such file, or
 * the name does not fit aside). */
int state_file_set_aside(const char *path, char *aside, size_t asidelen);

#endif
