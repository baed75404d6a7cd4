/* Files that survive a crash whole or not at all (architecture.md, "Storage"; OpenSMTPD's
 * queue_fs.c, Postfix's mail_stream.c): write a temp file opened O_EXCL mode 0600, fsync it,
 * rename it over the final name, fsync the final name's directory. Every file the proxy keeps
 * (token store, spool, device history) is written through here. */
#ifndef SOP_DURABLE_FILE_H
#define SOP_DURABLE_FILE_H

#include <stddef.h>

/* write(2) all of p, retrying EINTR. 0 ok, -1 (errno set). */
int durable_write_all(int fd, const void *p, size_t n);
/* fsync(2) fd, retrying EINTR. 0 ok, -1 (errno set). */
int durable_fsync(int fd);
/* A directory the proxy keeps files in: created mode 0700 if missing. 1 created, 0 it was there
 * (a symlink to a directory counts: systemd's DynamicUser= makes STATE_DIR one), -1 with err
 * (cannot create it, or it is not a directory). */
int durable_mkdir(const char *path, char *err, size_t errlen);
/* fsync a directory, so that a rename or unlink in it is durable. 0 ok, -1 with err. */
int durable_fsync_dir(const char *dir, char *err, size_t errlen);
/* Put len bytes of data at final atomically: create tmp (it must not exist; same filesystem as
 * final), write, fsync, rename to final, fsync dir (final's directory). do_fsync 0 skips the
 * fsyncs (measurements only). 0 ok. -1 with err (no content in it): tmp is gone; final is the
 * old file unless the rename happened and only the directory fsync failed, then *renamed (if
 * not NULL) is 1 and the caller decides whether a file not known durable may stay. */
int durable_replace(const char *tmp, const char *final, const char *dir, const void *data,
                    size_t len, int do_fsync, int *renamed, char *err, size_t errlen);

#endif
