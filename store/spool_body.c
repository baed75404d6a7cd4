/* Reading a committed body back. The length and the trailer are checked when the file is opened
 * (cheap, catches truncation and a body of another message); the SHA-256 is checked as the bytes
 * stream out, so that the caller learns at the end, before it sends the final ".", whether what
 * it sent was the message that was committed. */
#include "store/spool_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

struct spool_body {
    int fd;
    uint64_t size; /* body bytes in all */
    uint64_t left; /* body bytes not yet read */
    EVP_MD_CTX *md;
    char want[SPOOL_SHA256_HEX + 1];
    char path[PATH_MAX + 32];
};

int spool_body_fd(const struct spool_body *b)
{
    return b->fd;
}

void spool_body_free(struct spool_body *b)
{
    if (!b)
        return;
    if (b->fd >= 0)
        close(b->fd);
    EVP_MD_CTX_free(b->md);
    free(b);
}

/* pread(2) exactly n bytes at off. 0 ok, -1 (errno set; EIO for a short file). */
static int spool_pread_all(int fd, void *buf, size_t n, off_t off)
{
    unsigned char *p = buf;
    while (n) {
        ssize_t r = pread(fd, p, n, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                errno = EIO;
            return -1;
        }
        p += r;
        n -= (size_t)r;
        off += r;
    }
    return 0;
}

/* A reader of the first size bytes of the file at path, whose SHA-256 must be sha_hex. min_len:
 * the file's length must be exactly this (a committed body: size + trailer), or, with
 * at_least, at least this (a body still being written). */
static struct spool_body *spool_body_new(const char *path, uint64_t size, const char *sha_hex,
                                         uint64_t min_len, int at_least, char *err, size_t errlen)
{
    struct spool_body *b;
    struct stat st;

    b = calloc(1, sizeof(*b));
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    b->fd = -1;
    if (snprintf(b->path, sizeof(b->path), "%s", path) >= (int)sizeof(b->path)) {
        snprintf(err, errlen, "path too long");
        goto fail;
    }
    b->fd = open(b->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (b->fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", b->path, strerror(errno));
        goto fail;
    }
    if (fstat(b->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", b->path);
        goto fail;
    }
    if (at_least ? (uint64_t)st.st_size < min_len : (uint64_t)st.st_size != min_len) {
        snprintf(err, errlen, "%s: %lld bytes, expected %s%llu (truncated or torn)", b->path,
                 (long long)st.st_size, at_least ? "at least " : "", (unsigned long long)min_len);
        goto fail;
    }
    b->md = EVP_MD_CTX_new();
    if (!b->md || EVP_DigestInit_ex(b->md, EVP_sha256(), NULL) != 1) {
        snprintf(err, errlen, "cannot start SHA-256");
        goto fail;
    }
    b->size = size;
    b->left = size;
    snprintf(b->want, sizeof(b->want), "%s", sha_hex);
    return b;
fail:
    spool_body_free(b);
    return NULL;
}

struct spool_body *spool_body_open(struct spool *s, const struct spool_envelope *env, char *err,
                                   size_t errlen)
{
    char path[PATH_MAX + 32], want[SPOOL_TRAILER_LEN + 1], got[SPOOL_TRAILER_LEN];
    struct spool_body *b;

    if (!env || !spool_body_path(s, env->queue_id, path, sizeof(path)) ||
        env->size > (uint64_t)INT64_MAX - SPOOL_TRAILER_LEN) {
        snprintf(err, errlen, "not a valid envelope");
        return NULL;
    }
    b = spool_body_new(path, env->size, env->body_sha256, env->size + SPOOL_TRAILER_LEN, 0, err,
                       errlen);
    if (!b)
        return NULL;
    spool_trailer(want, env->queue_id, env->size);
    if (spool_pread_all(b->fd, got, SPOOL_TRAILER_LEN, (off_t)env->size) != 0) {
        snprintf(err, errlen, "cannot read %s: %s", b->path, strerror(errno));
        goto fail;
    }
    if (memcmp(want, got, SPOOL_TRAILER_LEN) != 0) {
        snprintf(err, errlen, "%s: no valid end marker (garbled or another message's body)",
                 b->path);
        goto fail;
    }
    return b;
fail:
    spool_body_free(b);
    return NULL;
}

struct spool_body *spool_body_open_partial(const char *path, uint64_t size, const char *sha_hex,
                                           char *err, size_t errlen)
{
    return spool_body_new(path, size, sha_hex, size, 1, err, errlen);
}

uint64_t spool_body_size(const struct spool_body *b)
{
    return b->size;
}

int spool_digest_hex(EVP_MD_CTX *md, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char bin[EVP_MAX_MD_SIZE];
    unsigned int binlen = 0, i;

    if (EVP_DigestFinal_ex(md, bin, &binlen) != 1 || binlen != 32)
        return -1;
    for (i = 0; i < binlen; i++) {
        hex[2 * i] = digits[bin[i] >> 4];
        hex[2 * i + 1] = digits[bin[i] & 15];
    }
    hex[2 * binlen] = '\0';
    return 0;
}

ssize_t spool_body_read(struct spool_body *b, void *buf, size_t cap, char *err, size_t errlen)
{
    char hex[SPOOL_SHA256_HEX + 1];
    size_t want;
    ssize_t r;

    if (b->left == 0) {
        if (!b->md) /* already finished */
            return 0;
        if (spool_digest_hex(b->md, hex) != 0) {
            snprintf(err, errlen, "SHA-256 failed");
            return -1;
        }
        EVP_MD_CTX_free(b->md);
        b->md = NULL;
        if (memcmp(hex, b->want, SPOOL_SHA256_HEX) != 0) {
            snprintf(err, errlen, "%s: checksum mismatch (garbled)", b->path);
            b->left = UINT64_MAX; /* stays an error */
            return -2;
        }
        return 0;
    }
    if (b->left == UINT64_MAX || !b->md) {
        snprintf(err, errlen, "%s: checksum mismatch (garbled)", b->path);
        return -2;
    }
    if (cap == 0) {
        snprintf(err, errlen, "no room to read into");
        return -1;
    }
    want = cap;
    if ((uint64_t)want > b->left)
        want = (size_t)b->left;
    if (want > (size_t)SSIZE_MAX)
        want = (size_t)SSIZE_MAX;
    do
        r = read(b->fd, buf, want);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        snprintf(err, errlen, "cannot read %s: %s", b->path, strerror(errno));
        return -1;
    }
    if (r == 0) {
        snprintf(err, errlen, "%s: shorter than its envelope says", b->path);
        return -2;
    }
    if (EVP_DigestUpdate(b->md, buf, (size_t)r) != 1) {
        snprintf(err, errlen, "SHA-256 failed");
        return -1;
    }
    b->left -= (uint64_t)r;
    return r;
}
