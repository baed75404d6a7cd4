#include "common/secret.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

/* Secret memory. Each block is whole pages from posix_memalign (page-aligned, a multiple of the
 * page size, so no other allocation shares its pages and madvise/mlock cover exactly it), with a
 * header in front of what the caller gets. posix_memalign rather than mmap: free() takes it back
 * and LeakSanitizer still sees a secret that was never freed. Live blocks are in one list, so
 * secret_free can tell a block from a string malloc'd elsewhere without reading before it. */
struct secret_block {
    struct secret_block *next, *prev;
    size_t size; /* the whole block, header included */
    int locked;  /* mlock succeeded */
};

/* The header's room: a multiple of 64 keeps what follows aligned for any type. */
#define SECRET_HDR ((sizeof(struct secret_block) + 63) / 64 * 64)

static pthread_mutex_t secret_mu = PTHREAD_MUTEX_INITIALIZER;
static struct secret_block secret_live = {&secret_live, &secret_live, 0, 0};
static void (*secret_release_hook)(const void *mem, size_t size);

void secret_set_release_hook(void (*fn)(const void *mem, size_t size))
{
    secret_release_hook = fn;
}

static size_t secret_page(void)
{
    long pg = sysconf(_SC_PAGESIZE);
    return pg > 0 ? (size_t)pg : 4096;
}

void *secret_alloc(size_t n)
{
    size_t pg = secret_page();
    if (n > SIZE_MAX - SECRET_HDR - pg)
        return NULL;
    size_t size = (SECRET_HDR + n + pg - 1) / pg * pg;
    void *mem = NULL;
    if (posix_memalign(&mem, pg, size) != 0)
        return NULL;
    memset(mem, 0, size);
    /* Best effort: a kernel without MADV_DONTDUMP, or mlock over RLIMIT_MEMLOCK, still gives
     * the memory; the process is non-dumpable anyway (main.c), this is the second line. */
    (void)madvise(mem, size, MADV_DONTDUMP);
    struct secret_block *b = mem;
    b->size = size;
    b->locked = mlock(mem, size) == 0;
    pthread_mutex_lock(&secret_mu);
    b->next = secret_live.next;
    b->prev = &secret_live;
    secret_live.next->prev = b;
    secret_live.next = b;
    pthread_mutex_unlock(&secret_mu);
    return (char *)mem + SECRET_HDR;
}

/* The live block whose memory starts at p - SECRET_HDR, taken off the list when unlink; NULL
 * when p is not one (nothing before p is read). */
static struct secret_block *secret_find(const void *p, int unlink)
{
    struct secret_block *found = NULL;
    pthread_mutex_lock(&secret_mu);
    for (struct secret_block *b = secret_live.next; b != &secret_live; b = b->next) {
        if ((const char *)b + SECRET_HDR == (const char *)p) {
            found = b;
            if (unlink) {
                b->prev->next = b->next;
                b->next->prev = b->prev;
            }
            break;
        }
    }
    pthread_mutex_unlock(&secret_mu);
    return found;
}

static void secret_release(struct secret_block *b)
{
    size_t size = b->size;
    int locked = b->locked;
    OPENSSL_cleanse(b, size);
    if (secret_release_hook)
        secret_release_hook(b, size);
    if (locked)
        (void)munlock(b, size);
    /* the pages go back to malloc, which may hand them to anything: dumpable again */
    (void)madvise(b, size, MADV_DODUMP);
    free(b);
}

void secret_free_mem(void *p)
{
    if (!p)
        return;
    struct secret_block *b = secret_find(p, 1);
    if (b)
        secret_release(b);
    else
        free(p); /* not ours: nothing is known of its size to wipe */
}

int secret_is_guarded(const void *p)
{
    return p && secret_find(p, 0) != NULL;
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
    buf = secret_alloc((size_t)st.st_size + 1);
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
    secret_free_mem(buf);
    close(fd);
    return ret;
}

char *secret_dup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s);
    char *d = secret_alloc(n + 1);
    if (d)
        memcpy(d, s, n + 1);
    return d;
}

void secret_free(char *s)
{
    if (!s)
        return;
    struct secret_block *b = secret_find(s, 1);
    if (b) {
        secret_release(b);
        return;
    }
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
