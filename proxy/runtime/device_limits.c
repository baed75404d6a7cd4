/* Rolling windows per device name; see device_limits.h. Like Postfix's anvil (which counts a
 * client's message delivery requests at MAIL), a message counts when its MAIL is let through
 * and a recipient when its RCPT is: what the device asked for, not what was delivered. */
#include "proxy/runtime/device_limits_int.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy/config/config.h"

const int64_t device_limits_window_len[3] = {DEVICE_LIMITS_HOUR, DEVICE_LIMITS_DAY,
                                             DEVICE_LIMITS_DAY};

int64_t device_limits_now(const struct device_limits *l)
{
    return l->clock ? l->clock(l->clock_arg) : (int64_t)time(NULL);
}

int64_t device_limits_slot(int64_t now, int64_t len)
{
    int64_t width = len / DEVICE_LIMITS_BUCKETS;
    return now >= 0 ? now / width : 0;
}

unsigned device_limits_window_sum(const struct window *w, int64_t now, int64_t len)
{
    int64_t cur = device_limits_slot(now, len);
    unsigned long long sum = 0;
    for (size_t i = 0; i < DEVICE_LIMITS_BUCKETS; i++)
        if (w->count[i] && w->slot[i] <= cur && w->slot[i] > cur - (int64_t)DEVICE_LIMITS_BUCKETS)
            sum += w->count[i];
    return sum > 0xffffffffu ? 0xffffffffu : (unsigned)sum;
}

static void window_add(struct window *w, int64_t now, int64_t len)
{
    int64_t cur = device_limits_slot(now, len);
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
    int64_t cur = device_limits_slot(now, len);
    for (int64_t s = cur; s > cur - (int64_t)DEVICE_LIMITS_BUCKETS && s >= 0; s--) {
        size_t i = (size_t)(s % (int64_t)DEVICE_LIMITS_BUCKETS);
        if (w->slot[i] == s && w->count[i]) {
            w->count[i]--;
            return;
        }
    }
}

struct dl_device *device_limits_find(const struct device_limits *l, const char *name)
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
        const struct dl_device *old = device_limits_find(l, c->name);
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
    struct dl_device *d = device_limits_find(l, device);
    if (!d || (unsigned)kind > DEVICE_LIMIT_RECIPIENTS || d->max[kind] == 0)
        return 0;
    int64_t now = device_limits_now(l);
    if (device_limits_window_sum(&d->win[kind], now, device_limits_window_len[kind]) >=
        d->max[kind]) {
        if (max)
            *max = d->max[kind];
        return 1;
    }
    window_add(&d->win[kind], now, device_limits_window_len[kind]);
    return 0;
}

void device_limits_give_back(struct device_limits *l, const char *device,
                             enum device_limit_kind kind)
{
    struct dl_device *d = device_limits_find(l, device);
    if (d && (unsigned)kind <= DEVICE_LIMIT_RECIPIENTS && d->max[kind])
        window_sub(&d->win[kind], device_limits_now(l), device_limits_window_len[kind]);
}

unsigned device_limits_count(struct device_limits *l, const char *device,
                             enum device_limit_kind kind)
{
    struct dl_device *d = device_limits_find(l, device);
    if (!d || (unsigned)kind > DEVICE_LIMIT_RECIPIENTS)
        return 0;
    return device_limits_window_sum(&d->win[kind], device_limits_now(l),
                                    device_limits_window_len[kind]);
}

unsigned device_limits_spam_refusal(struct device_limits *l, const char *device)
{
    struct dl_device *d = device_limits_find(l, device);
    if (!d || d->block_after == 0)
        return 0;
    int64_t now = device_limits_now(l);
    window_add(&d->win[DL_SPAM], now, DEVICE_LIMITS_DAY);
    unsigned n = device_limits_window_sum(&d->win[DL_SPAM], now, DEVICE_LIMITS_DAY);
    if (n < d->block_after)
        return 0;
    memset(&d->win[DL_SPAM], 0,
           sizeof(d->win[DL_SPAM])); /* blocked now; an unblock starts again from zero */
    return n;
}

const char *device_limit_name(enum device_limit_kind kind)
{
    return kind == DEVICE_LIMIT_MESSAGES ? "max_messages_per_hour" : "max_recipients_per_day";
}
