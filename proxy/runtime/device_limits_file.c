/* The device limits' counts across a restart (STATE_DIR/device_limits.state): written at
 * shutdown, read at start-up, so restarting the daemon does not hand a device a fresh hour or
 * day. A crash loses what was counted since the last write (the counts err on the device's
 * side then, never on the mail's).
 *
 * File: a first line DEVICE_LIMITS_MAGIC, then one line per bucket that still counts:
 *     NAME SP WINDOW SP SLOT SP COUNT LF
 * WINDOW "messages", "recipients" or "spam"; SLOT the bucket (seconds since the epoch / the
 * bucket's width); COUNT > 0. Anything else makes the file bad: it is then not used at all. */
#include "proxy/runtime/device_limits_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "common/durable_file.h"
#include "proxy/config/config.h"

#define FILE_MAX (64u * 1024 * 1024)
#define NAME_MAX_LEN 128

static const char *const window_names[DL_NWINDOWS] = {"messages", "recipients", "spam"};

int device_limits_path(const struct config *cfg, char *path, size_t len)
{
    int n = snprintf(path, len, "%s/%s", cfg->state_dir, DEVICE_LIMITS_FILE);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* 1 when bucket i of w still counts at now. */
static int live(const struct window *w, size_t i, int64_t cur)
{
    return w->count[i] && w->slot[i] <= cur && w->slot[i] > cur - (int64_t)DEVICE_LIMITS_BUCKETS;
}

static char *render(const struct device_limits *l, size_t *len)
{
    int64_t now = device_limits_now(l);
    size_t cap = sizeof(DEVICE_LIMITS_MAGIC) + 1, o = 0;
    for (size_t d = 0; d < l->ndev; d++)
        cap += (strlen(l->dev[d].name) + 48) * DL_NWINDOWS * DEVICE_LIMITS_BUCKETS;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    o += (size_t)snprintf(out, cap, "%s\n", DEVICE_LIMITS_MAGIC);
    for (size_t d = 0; d < l->ndev; d++) {
        const struct dl_device *dv = &l->dev[d];
        for (size_t k = 0; k < DL_NWINDOWS; k++) {
            int64_t cur = device_limits_slot(now, device_limits_window_len[k]);
            for (size_t i = 0; i < DEVICE_LIMITS_BUCKETS && o < cap; i++)
                if (live(&dv->win[k], i, cur))
                    o += (size_t)snprintf(out + o, cap - o, "%s %s %" PRId64 " %u\n", dv->name,
                                          window_names[k], dv->win[k].slot[i], dv->win[k].count[i]);
        }
    }
    *len = o < cap ? o : cap - 1;
    return out;
}

int device_limits_save(const struct device_limits *l, const char *path, char *err, size_t errlen)
{
    char dir[4096], tmp[4200];
    unsigned char rnd[6];
    size_t len = 0;
    const char *slash = strrchr(path, '/');
    size_t dn = slash ? (size_t)(slash - path) : 0;
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
    char *bytes = render(l, &len);
    if (!bytes) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int ret = durable_replace(tmp, path, dir, bytes, len, 1, NULL, err, errlen);
    free(bytes);
    return ret;
}

static int read_all(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf) {
            snprintf(err, errlen, "out of memory");
            close(fd);
            return -1;
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
        if (n == cap) {
            if (cap >= FILE_MAX) {
                snprintf(err, errlen, "%s: larger than %u bytes", path, FILE_MAX);
                break;
            }
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb)
                free(buf);
            buf = nb;
        }
    }
    free(buf);
    close(fd);
    return -1;
}

struct entry {
    struct dl_device *dev; /* NULL: a device l does not have (dropped) */
    size_t window;
    int64_t slot;
    unsigned count;
};

/* One line into e; NULL ok, else why not. */
static const char *parse_line(const struct device_limits *l, char *line, struct entry *e)
{
    char *f[4];
    size_t nf = 0;
    for (char *p = line; nf < 4; nf++) {
        f[nf] = p;
        char *sp = strchr(p, ' ');
        if (!sp)
            break;
        *sp = '\0';
        p = sp + 1;
    }
    if (nf != 3 || strchr(f[3], ' '))
        return "expected NAME WINDOW SLOT COUNT";
    size_t nl = strlen(f[0]);
    if (nl == 0 || nl > NAME_MAX_LEN ||
        strspn(f[0], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"
                     "OPQRSTUVWXYZ0123456789._-") != nl)
        return "not a device name";
    for (e->window = 0; e->window < DL_NWINDOWS; e->window++)
        if (strcmp(f[1], window_names[e->window]) == 0)
            break;
    if (e->window == DL_NWINDOWS)
        return "WINDOW is not messages, recipients or spam";
    char *end;
    errno = 0;
    long long slot = strtoll(f[2], &end, 10);
    if (errno || end == f[2] || *end || slot < 0)
        return "SLOT is not a number";
    errno = 0;
    unsigned long count = strtoul(f[3], &end, 10);
    if (errno || end == f[3] || *end || f[3][0] == '-' || count == 0 || count > 0xffffffffu)
        return "COUNT is not a positive number";
    e->slot = (int64_t)slot;
    e->count = (unsigned)count;
    e->dev = device_limits_find(l, f[0]);
    return NULL;
}

int device_limits_load(struct device_limits *l, const char *path, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0, lineno = 0, n = 0, cap = 0;
    struct entry *ents = NULL;
    const char *why = NULL;
    int r = read_all(path, &buf, &len, err, errlen);
    if (r <= 0)
        return r;
    if (strlen(buf) != len) {
        why = "a NUL byte";
        goto bad;
    }
    if (len == 0 || buf[len - 1] != '\n') {
        why = "torn (no final newline)";
        goto bad;
    }
    for (char *p = buf; *p;) {
        char *nl = strchr(p, '\n');
        *nl = '\0';
        lineno++;
        if (lineno == 1) {
            if (strcmp(p, DEVICE_LIMITS_MAGIC) != 0) {
                why = "not a device limits file";
                goto bad;
            }
        } else {
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 64;
                struct entry *ne = realloc(ents, nc * sizeof(*ne));
                if (!ne) {
                    why = "out of memory";
                    goto bad;
                }
                ents = ne;
                cap = nc;
            }
            if ((why = parse_line(l, p, &ents[n])) != NULL)
                goto bad;
            n++;
        }
        p = nl + 1;
    }
    /* all good: into the windows, what is still in them */
    int64_t now = device_limits_now(l);
    for (size_t i = 0; i < n; i++) {
        struct entry *e = &ents[i];
        int64_t cur = device_limits_slot(now, device_limits_window_len[e->window]);
        if (!e->dev || e->slot > cur || e->slot <= cur - (int64_t)DEVICE_LIMITS_BUCKETS)
            continue;
        struct window *w = &e->dev->win[e->window];
        size_t b = (size_t)(e->slot % (int64_t)DEVICE_LIMITS_BUCKETS);
        if (w->slot[b] != e->slot || w->count[b] == 0) {
            w->slot[b] = e->slot;
            w->count[b] = 0;
        }
        w->count[b] = w->count[b] > 0xffffffffu - e->count ? 0xffffffffu : w->count[b] + e->count;
    }
    free(ents);
    free(buf);
    return 1;
bad:
    snprintf(err, errlen, "%s:%zu: %s", path, lineno ? lineno : 1, why);
    free(ents);
    free(buf);
    return -1;
}
