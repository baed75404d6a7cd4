/* Inside device_stats*.c only: the per-device record and its buckets. */
#ifndef SOP_DEVICE_STATS_INT_H
#define SOP_DEVICE_STATS_INT_H

#include "proxy/runtime/device_stats.h"

#define DS_HOURS 24
#define DS_DAYS 30

/* Messages in one hour or one UTC day: key is now / 3600 (or / 86400); a bucket whose key is
 * not the current one holds an older period and is reused when its slot comes round again. */
struct ds_bucket {
    int64_t key;
    uint64_t count;
};

struct ds_entry {
    char *name;
    int64_t tracked_since;
    int64_t last_seen;
    enum device_result last_result;
    int64_t last_result_at;
    char last_reply[DEVICE_STATS_REPLY_MAX + 1];
    struct ds_bucket hours[DS_HOURS];
    struct ds_bucket days[DS_DAYS];
};

struct device_stats {
    struct ds_entry *e; /* one per configured device, config order */
    size_t n;
    int dirty;
};

struct ds_entry *ds_find(const struct device_stats *ds, const char *name);
/* "delivered" -> DEVICE_RESULT_DELIVERED ...; NONE for anything else. */
enum device_result ds_result_parse(const char *s);
/* text (any bytes) as kept: first line, printable ASCII, cut to DEVICE_STATS_REPLY_MAX. */
void ds_reply_clean(char *dst, const char *src);

#endif
