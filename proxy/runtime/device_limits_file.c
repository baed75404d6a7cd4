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
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/state_file.h"
#include "proxy/config/config.h"

#define FILE_MAX ((size_t)64 * 1024 * 1024)
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
    size_t len = 0;
    char *bytes = render(l, &len);
    return state_file_write_rendered(path, bytes, len, err, errlen);
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

/* The lines read so far. */
struct load {
    const struct device_limits *l;
    struct entry *ents;
    size_t n, cap;
};

static const char *load_line(void *arg, char *line, size_t lineno)
{
    struct load *ld = arg;
    (void)lineno;
    if (ld->n == ld->cap) {
        size_t nc = ld->cap ? ld->cap * 2 : 64;
        struct entry *ne = realloc(ld->ents, nc * sizeof(*ne));
        if (!ne)
            return "out of memory";
        ld->ents = ne;
        ld->cap = nc;
    }
    const char *why = parse_line(ld->l, line, &ld->ents[ld->n]);
    if (why)
        return why;
    ld->n++;
    return NULL;
}

int device_limits_load(struct device_limits *l, const char *path, char *err, size_t errlen)
{
    struct load ld = {.l = l};
    int r = state_file_load(path, FILE_MAX, DEVICE_LIMITS_MAGIC, "not a device limits file",
                            load_line, &ld, err, errlen);
    if (r <= 0) {
        free(ld.ents);
        return r;
    }
    /* all good: into the windows, what is still in them */
    int64_t now = device_limits_now(l);
    for (size_t i = 0; i < ld.n; i++) {
        struct entry *e = &ld.ents[i];
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
    free(ld.ents);
    return 1;
}
