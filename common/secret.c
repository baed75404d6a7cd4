#include "common/secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define SECRET_MAX (64 * 1024)

static int check_stat(const char *path, const struct stat *st, char *err, size_t errlen)
{
    if (!S_ISREG(st->st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        return -1;
    }
    if (st->st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(err, errlen,
                 "%s: mode %04o is readable or writable by group/others; "
                 "run: chmod 600 %s",
                 path, (unsigned)(st->st_mode & 07777), path);
        return -1;
    }
    return 0;
}

int secret_check_file(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    return check_stat(path, &st, err, errlen);
}

/* Open a secret file and check what it is through the opened descriptor (no window between the
 * check and the read). The fd, or -1 with a message in err. */
static int open_checked(const char *path, struct stat *st, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, st) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (check_stat(path, st, err, errlen) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Read until EOF or cap bytes. 0 and *len, or -1 with a message in err. */
static int read_up_to(int fd, char *buf, size_t cap, size_t *len, const char *path, char *err,
                      size_t errlen)
{
    *len = 0;
    while (*len < cap) {
        ssize_t r = read(fd, buf + *len, cap - *len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            return -1;
        }
        if (r == 0)
            break;
        *len += (size_t)r;
    }
    return 0;
}

int secret_read_raw(const char *path, void *buf, size_t cap, size_t *len, long long *size,
                    char *err, size_t errlen)
{
    struct stat st;
    int fd = open_checked(path, &st, err, errlen);
    if (fd < 0)
        return -1;
    int ret = read_up_to(fd, buf, cap, len, path, err, errlen);
    *size = (long long)st.st_size;
    close(fd);
    return ret;
}

int secret_read_file(const char *path, char **out, char *err, size_t errlen)
{
    int ret = -1;
    char *buf = NULL;
    size_t len = 0;
    struct stat st;
    int fd = open_checked(path, &st, err, errlen);
    if (fd < 0)
        return -1;
    if (st.st_size > SECRET_MAX) {
        snprintf(err, errlen, "%s: larger than %d bytes", path, SECRET_MAX);
        goto out;
    }
    buf = calloc(1, (size_t)st.st_size + 1);
    if (!buf) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto out;
    }
    if (read_up_to(fd, buf, (size_t)st.st_size, &len, path, err, errlen) != 0)
        goto out;
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        buf[--len] = '\0';
    if (len == 0) {
        snprintf(err, errlen, "%s: file is empty", path);
        goto out;
    }
    if (strlen(buf) != len) {
        snprintf(err, errlen, "%s: contains a NUL byte", path);
        goto out;
    }
    *out = buf;
    buf = NULL;
    ret = 0;
out:
    if (buf) {
        OPENSSL_cleanse(buf, (size_t)st.st_size + 1);
        free(buf);
    }
    close(fd);
    return ret;
}

char *secret_dup(const char *s)
{
    return s ? strdup(s) : NULL;
}

void secret_free(char *s)
{
    if (!s)
        return;
    OPENSSL_cleanse(s, strlen(s));
    free(s);
}

#define SECRET_REDACT_RUN 16

void secret_redact(char *s, const char *secret)
{
    static const char mark[] = "[redacted]";
    size_t sl = secret ? strlen(secret) : 0;
    size_t min = sl < SECRET_REDACT_RUN ? sl : SECRET_REDACT_RUN;
    if (sl == 0)
        return;
    for (char *p = s; *p; p++) {
        size_t best = 0;
        for (const char *q = secret; *q; q++) {
            size_t n = 0;
            while (p[n] && q[n] && p[n] == q[n])
                n++;
            if (n > best)
                best = n;
        }
        if (best < min)
            continue;
        if (best >= sizeof(mark) - 1) {
            memcpy(p, mark, sizeof(mark) - 1);
            memmove(p + sizeof(mark) - 1, p + best, strlen(p + best) + 1);
            p += sizeof(mark) - 2;
        } else {
            /* A secret shorter than the mark: '*' in place keeps the length. */
            memset(p, '*', best);
            p += best - 1;
        }
    }
}
