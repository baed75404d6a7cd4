/* Rolling windows per device name; see device_limits.h. Like Postfix's anvil (which counts a
 * client's message delivery requests at MAIL), a message counts when its MAIL is let through
 * and a recipient when its RCPT is: what the device asked for, not what was delivered. */
#include "proxy/runtime/device_limits.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy/config/config.h"

struct window {
    int64_t slot[DEVICE_LIMITS_BUCKETS]; /* which bucket (time / width) each one counts */
    unsigned count[DEVICE_LIMITS_BUCKETS];
};

struct dl_device {
    char *name;
    unsigned max[2]; /* by enum device_limit_kind; 0: none */
    unsigned block_after;
    struct window win[2]; /* messages (an hour), recipients (a day) */
    struct window spam;   /* a day */
};

struct device_limits {
    device_limits_clock clock;
    void *clock_arg;
    struct dl_device *dev;
    size_t ndev;
};

static const int64_t window_len[2] = {DEVICE_LIMITS_HOUR, DEVICE_LIMITS_DAY};

static int64_t now_of(const struct device_limits *l)
{
    return l->clock ? l->clock(l->clock_arg) : (int64_t)time(NULL);
}

static int64_t slot_of(int64_t now, int64_t len)
{
    int64_t width = len / DEVICE_LIMITS_BUCKETS;
    return now >= 0 ? now / width : 0;
}

static unsigned window_sum(const struct window *w, int64_t now, int64_t len)
{
    int64_t cur = slot_of(now, len);
    unsigned long long sum = 0;
    for (size_t i = 0; i < DEVICE_LIMITS_BUCKETS; i++)
        if (w->count[i] && w->slot[i] <= cur && w->slot[i] > cur - (int64_t)DEVICE_LIMITS_BUCKETS)
            sum += w->count[i];
    return sum > 0xffffffffu ? 0xffffffffu : (unsigned)sum;
}

static void window_add(struct window *w, int64_t now, int64_t len)
{
    int64_t cur = slot_of(now, len);
    size_t i = (size_t)(cur % (int64_t)DEVICE_LIMITS_BUCKETS);
    if (w->slot[i] != cur) {
        w->slot[i] = cur;
        w->count[i] = 0;
    }
    if (w->count[i] < 0xffffffffu)
        w->count[i]++;
}

/* One off the newest bucket that still counts. */
static void window_sub(struct window *w, int64_t now, int64_t len)
{
    int64_t cur = slot_of(now, len);
    for (int64_t s = cur; s > cur - (int64_t)DEVICE_LIMITS_BUCKETS && s >= 0; s--) {
        size_t i = (size_t)(s % (int64_t)DEVICE_LIMITS_BUCKETS);
        if (w->slot[i] == s && w->count[i]) {
            w->count[i]--;
            return;
        }
    }
}

static struct dl_device *find(const struct device_limits *l, const char *name)
{
    if (!l || !name)
        return NULL;
    for (size_t i = 0; i < l->ndev; i++)
        if (strcmp(l->dev[i].name, name) == 0)
            return &l->dev[i];
    return NULL;
}

struct device_limits *device_limits_new(device_limits_clock clock, void *clock_arg)
{
    struct device_limits *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->clock = clock;
    l->clock_arg = clock_arg;
    return l;
}

static void free_devices(struct dl_device *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(d[i].name);
    free(d);
}

void device_limits_free(struct device_limits *l)
{
    if (!l)
        return;
    free_devices(l->dev, l->ndev);
    free(l);
}

int device_limits_configure(struct device_limits *l, const struct config *cfg)
{
    struct dl_device *nd = calloc(cfg->ndevices ? cfg->ndevices : 1, sizeof(*nd));
    if (!nd)
        return -1;
    for (size_t i = 0; i < cfg->ndevices; i++) {
        const struct cfg_device *c = &cfg->devices[i];
        const struct dl_device *old = find(l, c->name);
        if (old)
            nd[i] = *old; /* the windows; name and limits below */
        if (!(nd[i].name = strdup(c->name))) {
            free_devices(nd, i + 1);
            return -1;
        }
        nd[i].max[DEVICE_LIMIT_MESSAGES] = c->max_messages_per_hour;
        nd[i].max[DEVICE_LIMIT_RECIPIENTS] = c->max_recipients_per_day;
        nd[i].block_after = c->block_after_refusals;
    }
    free_devices(l->dev, l->ndev);
    l->dev = nd;
    l->ndev = cfg->ndevices;
    return 0;
}

int device_limits_take(struct device_limits *l, const char *device, enum device_limit_kind kind,
                       unsigned *max)
{
    struct dl_device *d = find(l, device);
    if (!d || (unsigned)kind > DEVICE_LIMIT_RECIPIENTS || d->max[kind] == 0)
        return 0;
    int64_t now = now_of(l);
    if (window_sum(&d->win[kind], now, window_len[kind]) >= d->max[kind]) {
        if (max)
            *max = d->max[kind];
        return 1;
    }
    window_add(&d->win[kind], now, window_len[kind]);
    return 0;
}

void device_limits_give_back(struct device_limits *l, const char *device,
                             enum device_limit_kind kind)
{
    struct dl_device *d = find(l, device);
    if (d && (unsigned)kind <= DEVICE_LIMIT_RECIPIENTS && d->max[kind])
        window_sub(&d->win[kind], now_of(l), window_len[kind]);
}

unsigned device_limits_count(struct device_limits *l, const char *device,
                             enum device_limit_kind kind)
{
    struct dl_device *d = find(l, device);
    if (!d || (unsigned)kind > DEVICE_LIMIT_RECIPIENTS)
        return 0;
    return window_sum(&d->win[kind], now_of(l), window_len[kind]);
}

unsigned device_limits_spam_refusal(struct device_limits *l, const char *device)
{
    struct dl_device *d = find(l, device);
    if (!d || d->block_after == 0)
        return 0;
    int64_t now = now_of(l);
    window_add(&d->spam, now, DEVICE_LIMITS_DAY);
    unsigned n = window_sum(&d->spam, now, DEVICE_LIMITS_DAY);
    if (n < d->block_after)
        return 0;
    memset(&d->spam, 0, sizeof(d->spam)); /* blocked now; an unblock starts again from zero */
    return n;
}

const char *device_limit_name(enum device_limit_kind kind)
{
    return kind == DEVICE_LIMIT_MESSAGES ? "max_messages_per_hour" : "max_recipients_per_day";
}
