/* What the spool's files share: the struct and the file discipline. Not for other modules. */
#ifndef SOP_SPOOL_INT_H
#define SOP_SPOOL_INT_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "store/spool.h"

struct spool {
    char root[PATH_MAX];    /* STATE_DIR/spool */
    char tmp[PATH_MAX];     /* .../tmp */
    char queue[PATH_MAX];   /* .../queue */
    char corrupt[PATH_MAX]; /* .../corrupt */
    int do_fsync;
    int lock_fd;
};

/* dir/ID.ext into buf. NULL if it does not fit. */
const char *spool_path(char *buf, size_t len, const char *dir, const char *id, const char *ext);
/* fsync a directory (no-op with fsync off). 0 ok, -1 with err. */
int spool_fsync_dir(const struct spool *s, const char *dir, char *err, size_t errlen);
/* fsync a file (no-op with fsync off). 0 ok, -1 (errno set). */
int spool_fsync_fd(const struct spool *s, int fd);
/* write(2) all of p, retrying EINTR. 0 ok, -1 (errno set). */
int spool_write_all(int fd, const void *p, size_t n);
/* A fresh queue id from RAND_bytes. 0 ok, -1 no randomness. */
int spool_new_id(char out[SPOOL_ID_LEN + 1]);
/* The trailer that ends the body file of id with size body bytes (SPOOL_TRAILER_LEN + NUL). */
void spool_trailer(char out[SPOOL_TRAILER_LEN + 1], const char *id, uint64_t size);
/* Read and parse the envelope file at path. 1 ok; 0 it does not exist; -1 with err. */
int spool_read_envelope(const char *path, struct spool_envelope *env, char *err, size_t errlen);

/* Finish md (SHA-256) into 64 hex digits + NUL. 0 ok, -1. */
int spool_digest_hex(EVP_MD_CTX *md, char *hex);
/* A reader of the first size bytes of the file at path (a body still being written: the file
 * may be longer, and has no trailer yet), checked against sha_hex (64 hex digits) at the end like
 * a committed body. NULL with err. */
struct spool_body *spool_body_open_partial(const char *path, uint64_t size, const char *sha_hex,
                                           char *err, size_t errlen);

#endif
