/* Writing one message into the spool: the body streams into tmp/ID.body as DATA arrives (hashed
 * on the way), and the commit makes it durable in an order that a crash at any point leaves
 * either nothing committed (tmp/ files, an orphan body: removed at the next scan) or the whole
 * message:
 *   1. body: trailer appended, fsync, rename tmp/ID.body -> queue/ID.body, fsync queue/
 *   2. envelope: written to tmp/ID.env (O_EXCL, 0600), fsync, rename -> queue/ID.env, fsync queue/
 * The second directory fsync is the commit point. */
#include "store/spool_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/durable_file.h"

#define SPOOL_ID_TRIES 8

struct spool_writer {
    struct spool *s;
    char id[SPOOL_ID_LEN + 1];
    char tmp_body[PATH_MAX + 32];
    int fd;
    uint64_t size;
    EVP_MD_CTX *md;
    int failed;
};

const char *spool_writer_id(const struct spool_writer *w)
{
    return w ? w->id : "";
}

/* 1 if a committed file of id already exists (a 64-bit collision: pick another id). */
static int spool_id_taken(const struct spool *s, const char *id)
{
    char p[PATH_MAX + 32];
    struct stat st;
    return (spool_path(p, sizeof(p), s->queue, id, ".env") && lstat(p, &st) == 0) ||
           (spool_path(p, sizeof(p), s->queue, id, ".body") && lstat(p, &st) == 0);
}

struct spool_writer *spool_writer_new(struct spool *s, char *err, size_t errlen)
{
    struct spool_writer *w = calloc(1, sizeof(*w));
    int tries;
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->s = s;
    w->fd = -1;
    w->md = EVP_MD_CTX_new();
    if (!w->md || EVP_DigestInit_ex(w->md, EVP_sha256(), NULL) != 1) {
        snprintf(err, errlen, "cannot start SHA-256");
        goto fail;
    }
    for (tries = 0; tries < SPOOL_ID_TRIES && w->fd < 0; tries++) {
        if (spool_new_id(w->id) != 0) {
            snprintf(err, errlen, "no randomness for a queue id");
            goto fail;
        }
        if (spool_id_taken(s, w->id) ||
            !spool_path(w->tmp_body, sizeof(w->tmp_body), s->tmp, w->id, ".body"))
            continue;
        w->fd = open(w->tmp_body, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (w->fd < 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create %s: %s", w->tmp_body, strerror(errno));
            goto fail;
        }
    }
    if (w->fd < 0) {
        snprintf(err, errlen, "no free queue id after %d tries", SPOOL_ID_TRIES);
        goto fail;
    }
    return w;
fail:
    EVP_MD_CTX_free(w->md);
    free(w);
    return NULL;
}

int spool_writer_write(struct spool_writer *w, const void *buf, size_t len, char *err,
                       size_t errlen)
{
    if (w->failed) {
        snprintf(err, errlen, "queue_id=%s: an earlier write failed", w->id);
        return -1;
    }
    if (len == 0)
        return 0;
    if (spool_write_all(w->fd, buf, len) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", w->tmp_body, strerror(errno));
        w->failed = 1;
        return -1;
    }
    if (EVP_DigestUpdate(w->md, buf, len) != 1) {
        snprintf(err, errlen, "SHA-256 failed");
        w->failed = 1;
        return -1;
    }
    w->size += len;
    return 0;
}

void spool_writer_abort(struct spool_writer *w)
{
    if (!w)
        return;
    if (w->fd >= 0) {
        close(w->fd);
        unlink(w->tmp_body);
    }
    EVP_MD_CTX_free(w->md);
    free(w);
}

/* The bytes so far are in the file (write(2), no user-space buffer); their hash comes from a
 * copy of the running digest, so the writer can go on to commit. */
struct spool_body *spool_writer_reader(struct spool_writer *w, char *err, size_t errlen)
{
    char sha[SPOOL_SHA256_HEX + 1];
    EVP_MD_CTX *md;
    int ok;

    if (w->failed || w->fd < 0) {
        snprintf(err, errlen, "queue_id=%s: an earlier write failed", w->id);
        return NULL;
    }
    md = EVP_MD_CTX_new();
    ok = md && EVP_MD_CTX_copy_ex(md, w->md) == 1 && spool_digest_hex(md, sha) == 0;
    EVP_MD_CTX_free(md);
    if (!ok) {
        snprintf(err, errlen, "SHA-256 failed");
        return NULL;
    }
    return spool_body_open_partial(w->tmp_body, w->size, sha, err, errlen);
}

/* Step 1: the body, finished and renamed into queue/. 0 ok, -1 with err. */
static int spool_writer_body(struct spool_writer *w, char *sha_hex, char *err, size_t errlen)
{
    char trailer[SPOOL_TRAILER_LEN + 1], final[PATH_MAX + 32];
    int fd = w->fd;

    if (spool_digest_hex(w->md, sha_hex) != 0) {
        snprintf(err, errlen, "SHA-256 failed");
        return -1;
    }
    spool_trailer(trailer, w->id, w->size);
    if (spool_write_all(fd, trailer, SPOOL_TRAILER_LEN) != 0 || spool_fsync_fd(w->s, fd) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", w->tmp_body, strerror(errno));
        return -1;
    }
    w->fd = -1;
    if (close(fd) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", w->tmp_body, strerror(errno));
        unlink(w->tmp_body);
        return -1;
    }
    if (!spool_path(final, sizeof(final), w->s->queue, w->id, ".body") ||
        rename(w->tmp_body, final) != 0) {
        snprintf(err, errlen, "cannot rename %s into the queue: %s", w->tmp_body, strerror(errno));
        unlink(w->tmp_body);
        return -1;
    }
    if (spool_fsync_dir(w->s, w->s->queue, err, errlen) != 0) {
        unlink(final);
        return -1;
    }
    return 0;
}

/* Step 2: the envelope. 0 ok, -1 with err (nothing of it left behind). */
static int spool_writer_envelope(struct spool_writer *w, const struct spool_envelope *env,
                                 char *err, size_t errlen)
{
    char tmp[PATH_MAX + 32], final[PATH_MAX + 32];
    unsigned char *rec = NULL;
    size_t reclen = 0;
    const char *why = NULL;
    int ret = -1, renamed = 0;

    if (spool_envelope_format(env, &rec, &reclen, &why) != 0) {
        snprintf(err, errlen, "queue_id=%s: %s", w->id, why);
        return -1;
    }
    if (!spool_path(tmp, sizeof(tmp), w->s->tmp, w->id, ".env") ||
        !spool_path(final, sizeof(final), w->s->queue, w->id, ".env")) {
        snprintf(err, errlen, "path too long");
        goto out;
    }
    ret = durable_replace(tmp, final, w->s->queue, rec, reclen, w->s->do_fsync, &renamed, err,
                          errlen);
out:
    if (ret != 0 && renamed)
        unlink(final); /* not known durable: the device hears 4xx, so it must not be sent */
    free(rec);
    return ret;
}

int spool_writer_commit(struct spool_writer *w, struct spool_envelope *env, char *err,
                        size_t errlen)
{
    struct spool_envelope e;
    char sha[SPOOL_SHA256_HEX + 1], body[PATH_MAX + 32];
    int ret = -1;

    unsigned char *rec = NULL;
    size_t reclen = 0;
    const char *why = NULL;

    if (w->failed) {
        snprintf(err, errlen, "queue_id=%s: an earlier write failed", w->id);
        goto out;
    }
    /* A bad envelope is refused before anything reaches queue/. */
    e = *env;
    memcpy(e.queue_id, w->id, sizeof(e.queue_id));
    memset(e.body_sha256, '0', SPOOL_SHA256_HEX);
    e.body_sha256[SPOOL_SHA256_HEX] = '\0';
    e.size = w->size;
    if (spool_envelope_format(&e, &rec, &reclen, &why) != 0) {
        snprintf(err, errlen, "queue_id=%s: %s", w->id, why);
        goto out;
    }
    free(rec);
    if (spool_writer_body(w, sha, err, errlen) != 0)
        goto out;
    memcpy(e.body_sha256, sha, sizeof(e.body_sha256));
    if (spool_writer_envelope(w, &e, err, errlen) != 0) {
        if (spool_path(body, sizeof(body), w->s->queue, w->id, ".body"))
            unlink(body);
        goto out;
    }
    memcpy(env->queue_id, e.queue_id, sizeof(env->queue_id));
    memcpy(env->body_sha256, e.body_sha256, sizeof(env->body_sha256));
    env->size = e.size;
    ret = 0;
out:
    spool_writer_abort(w);
    return ret;
}
