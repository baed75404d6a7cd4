/* The insides of the device limits, shared by device_limits.c (counting) and
 * device_limits_file.c (the counts kept across a restart). Private to them. */
#ifndef SOP_DEVICE_LIMITS_INT_H
#define SOP_DEVICE_LIMITS_INT_H

#include "proxy/runtime/device_limits.h"

#define DL_SPAM 2 /* the window after the two enum device_limit_kind ones */
#define DL_NWINDOWS 3

struct window {
    int64_t slot[DEVICE_LIMITS_BUCKETS]; /* which bucket (time / width) each one counts */
    unsigned count[DEVICE_LIMITS_BUCKETS];
};

struct dl_device {
    char *name;
    unsigned max[2]; /* by enum device_limit_kind; 0: none */
    unsigned block_after;
    /* messages (an hour), recipients (a day), spam refusals (a day) */
    struct window win[DL_NWINDOWS];
};

struct device_limits {
    device_limits_clock clock;
    void *clock_arg;
    struct dl_device *dev;
    size_t ndev;
};

/* each window's length in seconds, by index into win[] */
extern const int64_t device_limits_window_len[DL_NWINDOWS];

int64_t device_limits_now(const struct device_limits *l);
/* the bucket now falls in for a window of len seconds */
int64_t device_limits_slot(int64_t now, int64_t len);
unsigned device_limits_window_sum(const struct window *w, int64_t now, int64_t len);
struct dl_device *device_limits_find(const struct device_limits *l, const char *name);

#endif
