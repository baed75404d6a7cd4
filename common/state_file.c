/* The small state files' reader and writer (state_file.h). */
#include "common/state_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "common/durable_file.h"

/* the first read's buffer; it doubles up to max + 1 */
#define STATE_FILE_CHUNK ((size_t)64 * 1024)

int state_file_read(const char *path, size_t max, char **out, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    /* room for max + 1 bytes at most: reading one byte past max tells a file too large */
    size_t cap = max < STATE_FILE_CHUNK ? max + 1 : STATE_FILE_CHUNK, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf) {
            snprintf(err, errlen, "out of memory");
            break;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            break;
        }
        if (r == 0) {
            close(fd);
            buf[n] = '\0';
            *out = buf;
            *len = n;
            return 1;
        }
        n += (size_t)r;
        if (n > max) {
            snprintf(err, errlen, "%s: larger than %zu bytes", path, max);
            break;
        }
        if (n == cap) {
            size_t nc = cap > (max + 1) / 2 ? max + 1 : cap * 2;
            char *nb = realloc(buf, nc + 1);
            if (!nb)
                free(buf);
            buf = nb;
            cap = nc;
        }
    }
    free(buf);
    close(fd);
    return -1;
}

int state_file_parse(const char *path, char *buf, size_t len, const char *magic,
                     const char *not_magic, state_file_line_fn line_fn, void *arg, char *err,
                     size_t errlen)
{
    size_t lineno = 0;
    const char *why = NULL;
    if (strlen(buf) != len) {
        why = "a NUL byte";
        goto bad;
    }
    if (len == 0 || buf[len - 1] != '\n') {
        why = "torn (no final newline)";
        goto bad;
    }
    for (char *p = buf; *p;) {
        char *nl = strchr(p, '\n'); /* there is one: the file ends in LF */
        *nl = '\0';
        lineno++;
        if (lineno == 1) {
            if (strcmp(p, magic) != 0) {
                why = not_magic;
                goto bad;
            }
        } else if ((why = line_fn(arg, p, lineno)) != NULL) {
            goto bad;
        }
        p = nl + 1;
    }
    return 0;
bad:
    snprintf(err, errlen, "%s:%zu: %s", path, lineno ? lineno : 1, why);
    return -1;
}

int state_file_load(const char *path, size_t max, const char *magic, const char *not_magic,
                    state_file_line_fn line_fn, void *arg, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0;
    int r = state_file_read(path, max, &buf, &len, err, errlen);
    if (r <= 0)
        return r;
    r = state_file_parse(path, buf, len, magic, not_magic, line_fn, arg, err, errlen);
    free(buf);
    return r == 0 ? 1 : -1;
}

int state_file_write(const char *path, const void *data, size_t len, char *err, size_t errlen)
{
    char dir[4096], tmp[4200];
    unsigned char rnd[6];
    const char *slash = strrchr(path, '/');
    size_t dn = slash ? (size_t)(slash - path) : 0;
    if (dn == 0)
        dn = slash ? 1 : 0; /* a file in "/" */
    if (dn == 0 || dn >= sizeof(dir)) {
        snprintf(err, errlen, "%s: no usable directory", path);
        return -1;
    }
    memcpy(dir, path, dn);
    dir[dn] = '\0';
    if (durable_mkdir(dir, err, errlen) < 0)
        return -1;
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        snprintf(err, errlen, "no randomness for the temp file name");
        return -1;
    }
    int k = snprintf(tmp, sizeof(tmp), "%s.%ld.%02x%02x%02x%02x%02x%02x.tmp", path, (long)getpid(),
                     rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
    if (k < 0 || (size_t)k >= sizeof(tmp)) {
        snprintf(err, errlen, "%s: path too long", path);
        return -1;
    }
    /* renamed but the directory not fsynced: the file is whole either way (old or new), and the
     * next write tries again, so that counts as a failure to report, nothing more */
    return durable_replace(tmp, path, dir, data, len, 1, NULL, err, errlen);
}

int state_file_write_rendered(const char *path, char *bytes, size_t len, char *err, size_t errlen)
{
    if (!bytes) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int ret = state_file_write(path, bytes, len, err, errlen);
    free(bytes);
    return ret;
}

int state_file_set_aside(const char *path, char *aside, size_t asidelen)
{
    int n = snprintf(aside, asidelen, "%s.bad", path);
    if (n < 0 || (size_t)n >= asidelen)
        return 0;
    return rename(path, aside) == 0;
}
