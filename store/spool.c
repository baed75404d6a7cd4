/* The spool's directories, lock and the verbs on committed messages (load, update, remove).
 * Writing a new message is store/spool_writer.c, recovery store/spool_scan.c, reading a body
 * store/spool_body.c. */
#include "store/spool_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "common/durable_file.h"
#include "common/log.h"

const char *spool_path(char *buf, size_t len, const char *dir, const char *id, const char *ext)
{
    int n = snprintf(buf, len, "%s/%s%s", dir, id, ext);
    return n > 0 && (size_t)n < len ? buf : NULL;
}

const char *spool_env_path(const struct spool *s, const char *queue_id, char *buf, size_t len)
{
    return s && spool_id_valid(queue_id) ? spool_path(buf, len, s->queue, queue_id, ".env") : NULL;
}

const char *spool_body_path(const struct spool *s, const char *queue_id, char *buf, size_t len)
{
    return s && spool_id_valid(queue_id) ? spool_path(buf, len, s->queue, queue_id, ".body") : NULL;
}

int spool_fsync_fd(const struct spool *s, int fd)
{
    return s->do_fsync ? durable_fsync(fd) : 0;
}

int spool_fsync_dir(const struct spool *s, const char *dir, char *err, size_t errlen)
{
    return s->do_fsync ? durable_fsync_dir(dir, err, errlen) : 0;
}

int spool_write_all(int fd, const void *p, size_t n)
{
    return durable_write_all(fd, p, n);
}

int spool_new_id(char out[SPOOL_ID_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char rnd[SPOOL_ID_LEN / 2];
    size_t i;
    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        return -1;
    for (i = 0; i < sizeof(rnd); i++) {
        out[2 * i] = digits[rnd[i] >> 4];
        out[2 * i + 1] = digits[rnd[i] & 15];
    }
    out[SPOOL_ID_LEN] = '\0';
    return 0;
}

void spool_trailer(char out[SPOOL_TRAILER_LEN + 1], const char *id, uint64_t size)
{
    snprintf(out, SPOOL_TRAILER_LEN + 1, "SOP-END %.16s %016llx\n", id, (unsigned long long)size);
}

int spool_read_envelope(const char *path, struct spool_envelope *env, char *err, size_t errlen)
{
    unsigned char *buf = NULL;
    size_t len = 0;
    struct stat st;
    const char *why = NULL;
    int fd, ret = -1;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        goto out;
    }
    if (st.st_size > (off_t)SPOOL_ENVELOPE_MAX) {
        snprintf(err, errlen, "%s: too large for an envelope", path);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, buf + len, (size_t)st.st_size + 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0 || (len += (size_t)r) > (size_t)st.st_size)
            break;
    }
    if (len != (size_t)st.st_size) {
        snprintf(err, errlen, "%s: changed while being read", path);
        goto out;
    }
    if (spool_envelope_parse(buf, len, env, &why) != 0) {
        snprintf(err, errlen, "%s: %s", path, why);
        goto out;
    }
    ret = 1;
out:
    free(buf);
    close(fd);
    return ret;
}

/* ---- open, lock ---- */

/* mkdir 0700 if missing; warn if one of the spool's own directories is open to others. */
static int spool_mkdir(const char *path, int warn, char *err, size_t errlen)
{
    struct stat st;
    if (durable_mkdir(path, err, errlen) < 0)
        return -1;
    if (warn && stat(path, &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)))
        log_warn("event=spool_dir_open dir=%s mode=%04o hint=\"chmod 700 %s\"", path,
                 (unsigned)(st.st_mode & 07777), path);
    return 0;
}

static int spool_sub(char *dst, size_t len, const char *a, const char *b)
{
    int n = snprintf(dst, len, "%s/%s", a, b);
    return n > 0 && (size_t)n < len - SPOOL_ID_LEN - 16 ? 0 : -1;
}

struct spool *spool_new(const char *state_dir, int do_fsync, char *err, size_t errlen)
{
    char lock[PATH_MAX + 8];
    struct spool *s;

    if (!state_dir || !*state_dir) {
        snprintf(err, errlen, "spool: no state_dir");
        return NULL;
    }
    s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->lock_fd = -1;
    s->do_fsync = do_fsync ? 1 : 0;
    if (spool_sub(s->root, sizeof(s->root), state_dir, "spool") != 0 ||
        spool_sub(s->tmp, sizeof(s->tmp), s->root, "tmp") != 0 ||
        spool_sub(s->queue, sizeof(s->queue), s->root, "queue") != 0 ||
        spool_sub(s->corrupt, sizeof(s->corrupt), s->root, "corrupt") != 0) {
        snprintf(err, errlen, "state_dir is too long");
        goto fail;
    }
    if (spool_mkdir(state_dir, 0, err, errlen) != 0 || spool_mkdir(s->root, 1, err, errlen) != 0 ||
        spool_mkdir(s->tmp, 1, err, errlen) != 0 || spool_mkdir(s->queue, 1, err, errlen) != 0 ||
        spool_mkdir(s->corrupt, 1, err, errlen) != 0)
        goto fail;
    snprintf(lock, sizeof(lock), "%s/.lock", s->root);
    s->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (s->lock_fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", lock, strerror(errno));
        goto fail;
    }
    /* Two daemons on one spool would deliver every message twice and race on removal. */
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen, "%s is in use by another process (%s)", s->root,
                 errno == EWOULDBLOCK ? "locked" : strerror(errno));
        goto fail;
    }
    if (spool_fsync_dir(s, state_dir, err, errlen) != 0 ||
        spool_fsync_dir(s, s->root, err, errlen) != 0)
        goto fail;
    return s;
fail:
    spool_free(s);
    return NULL;
}

void spool_free(struct spool *s)
{
    if (!s)
        return;
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    free(s);
}

/* ---- committed messages ---- */

int spool_load_envelope(struct spool *s, const char *queue_id, struct spool_envelope *env,
                        char *err, size_t errlen)
{
    char path[PATH_MAX + 32];
    int r;
    memset(env, 0, sizeof(*env));
    if (!spool_env_path(s, queue_id, path, sizeof(path))) {
        snprintf(err, errlen, "not a queue id");
        return -1;
    }
    r = spool_read_envelope(path, env, err, errlen);
    if (r == 1 && strcmp(env->queue_id, queue_id) != 0) {
        snprintf(err, errlen, "%s: holds queue id %s", path, env->queue_id);
        spool_envelope_clear(env);
        return -1;
    }
    return r;
}

int spool_update_state(struct spool *s, const struct spool_envelope *env, char *err, size_t errlen)
{
    char path[PATH_MAX + 32], tmp[PATH_MAX + 64], tag[SPOOL_ID_LEN + 1];
    char safe_error[SPOOL_ERROR_MAX + 1];
    struct spool_envelope upd;
    unsigned char *rec = NULL;
    size_t reclen = 0;
    const char *why = NULL;
    struct stat st;
    int ret = -1;

    if (!env || !spool_env_path(s, env->queue_id, path, sizeof(path))) {
        snprintf(err, errlen, "not a queue id");
        return -1;
    }
    upd = *env;
    upd.last_error = spool_error_sanitize(safe_error, sizeof(safe_error), env->last_error);
    if (spool_envelope_format(&upd, &rec, &reclen, &why) != 0) {
        snprintf(err, errlen, "queue_id=%s: %s", env->queue_id, why);
        return -1;
    }
    /* The event loop is the only writer: a message removed after delivery stays removed. */
    if (lstat(path, &st) != 0) {
        snprintf(err, errlen, "queue_id=%s: not in the queue", env->queue_id);
        goto out;
    }
    if (spool_new_id(tag) != 0 || snprintf(tmp, sizeof(tmp), "%s/%s.env.%s", s->tmp, env->queue_id,
                                           tag) >= (int)sizeof(tmp)) {
        snprintf(err, errlen, "cannot name a temp file");
        goto out;
    }
    ret = durable_replace(tmp, path, s->queue, rec, reclen, s->do_fsync, NULL, err, errlen);
out:
    free(rec);
    return ret;
}

int spool_remove(struct spool *s, const char *queue_id, char *err, size_t errlen)
{
    char envp[PATH_MAX + 32], bodyp[PATH_MAX + 32];
    if (!spool_env_path(s, queue_id, envp, sizeof(envp)) ||
        !spool_body_path(s, queue_id, bodyp, sizeof(bodyp))) {
        snprintf(err, errlen, "not a queue id");
        return -1;
    }
    if (unlink(envp) != 0 && errno != ENOENT) {
        snprintf(err, errlen, "cannot remove %s: %s", envp, strerror(errno));
        return -1;
    }
    /* The envelope's removal is durable before the body goes: after a crash here the scan finds
     * an orphan body (removed), never an envelope without its body (quarantined). */
    if (spool_fsync_dir(s, s->queue, err, errlen) != 0)
        return -1;
    if (unlink(bodyp) != 0 && errno != ENOENT) {
        snprintf(err, errlen, "cannot remove %s: %s", bodyp, strerror(errno));
        return -1;
    }
    return 0;
}
