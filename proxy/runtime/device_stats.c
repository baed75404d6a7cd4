/* The in-memory device history: no I/O, the clock passed in. */
#include "proxy/runtime/device_stats_int.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "proxy/config/config.h"

#define HOUR 3600
#define DAY 86400

struct ds_entry *ds_find(const struct device_stats *ds, const char *name)
{
    if (!ds || !name)
        return NULL;
    /* a handful to a few hundred devices, one lookup per message: a scan is enough */
    for (size_t i = 0; i < ds->n; i++)
        if (strcmp(ds->e[i].name, name) == 0)
            return &ds->e[i];
    return NULL;
}

static const char *const result_names[] = {"none", "delivered", "refused", "deferred", "queued"};

const char *device_result_str(enum device_result r)
{
    return (unsigned)r < sizeof(result_names) / sizeof(result_names[0]) ? result_names[r] : "none";
}

enum device_result ds_result_parse(const char *s)
{
    for (size_t i = 1; s && i < sizeof(result_names) / sizeof(result_names[0]); i++)
        if (strcmp(s, result_names[i]) == 0)
            return (enum device_result)i;
    return DEVICE_RESULT_NONE;
}

void ds_reply_clean(char *dst, const char *src)
{
    /* log_safe escapes and quotes; the quotes are dropped, the escapes kept (\x0d...) */
    char q[DEVICE_STATS_REPLY_MAX + 3];
    size_t n = strcspn(src, "\r\n");
    log_safe(q, sizeof(q), src, n);
    size_t len = strlen(q);
    if (len >= 2 && q[0] == '"' && q[len - 1] == '"') {
        memcpy(dst, q + 1, len - 2);
        dst[len - 2] = '\0';
    } else {
        memcpy(dst, q, len + 1);
    }
}

static void entry_init(struct ds_entry *e, char *name, int64_t now)
{
    memset(e, 0, sizeof(*e));
    e->name = name;
    e->tracked_since = now;
}

struct device_stats *device_stats_new(const struct config *cfg, int64_t now)
{
    struct device_stats *ds = calloc(1, sizeof(*ds));
    if (!ds || device_stats_retain(ds, cfg, now) != 0) {
        free(ds);
        return NULL;
    }
    ds->dirty = 0;
    return ds;
}

void device_stats_free(struct device_stats *ds)
{
    if (!ds)
        return;
    for (size_t i = 0; i < ds->n; i++)
        free(ds->e[i].name);
    free(ds->e);
    free(ds);
}

int device_stats_retain(struct device_stats *ds, const struct config *cfg, int64_t now)
{
    size_t n = cfg->ndevices;
    struct ds_entry *e = calloc(n ? n : 1, sizeof(*e));
    if (!e)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char *name = strdup(cfg->devices[i].name);
        if (!name) {
            for (size_t j = 0; j < i; j++)
                free(e[j].name);
            free(e);
            return -1;
        }
        const struct ds_entry *old = ds_find(ds, name);
        if (old) {
            e[i] = *old;
            e[i].name = name;
        } else {
            entry_init(&e[i], name, now);
        }
    }
    for (size_t i = 0; i < ds->n; i++)
        free(ds->e[i].name);
    free(ds->e);
    ds->e = e;
    ds->n = n;
    ds->dirty = 1;
    return 0;
}

static void bump(struct ds_bucket *b, size_t nb, int64_t key)
{
    struct ds_bucket *x = &b[(uint64_t)key % nb];
    if (x->key != key) {
        x->key = key;
        x->count = 0;
    }
    x->count++;
}

/* Messages in the buckets whose key is in (cur - nb, cur]. */
static uint64_t window(const struct ds_bucket *b, size_t nb, int64_t cur)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < nb; i++)
        if (b[i].count && b[i].key <= cur && b[i].key > cur - (int64_t)nb)
            sum += b[i].count;
    return sum;
}

void device_stats_seen(struct device_stats *ds, const char *name, int64_t now)
{
    struct ds_entry *e = ds_find(ds, name);
    if (!e)
        return;
    e->last_seen = now;
    ds->dirty = 1;
}

void device_stats_message(struct device_stats *ds, const char *name, const char *result,
                          const char *reply, int64_t now)
{
    struct ds_entry *e = ds_find(ds, name);
    if (!e)
        return;
    if (now < 0)
        now = 0;
    e->last_seen = now;
    e->last_result = ds_result_parse(result);
    e->last_result_at = now;
    ds_reply_clean(e->last_reply, reply ? reply : "");
    bump(e->hours, DS_HOURS, now / HOUR);
    bump(e->days, DS_DAYS, now / DAY);
    ds->dirty = 1;
}

int device_stats_get(const struct device_stats *ds, const char *name, int64_t now,
                     struct device_stats_row *row)
{
    const struct ds_entry *e = ds_find(ds, name);
    if (!e)
        return -1;
    if (now < 0)
        now = 0;
    memset(row, 0, sizeof(*row));
    row->tracked_since = e->tracked_since;
    row->last_seen = e->last_seen;
    /* the current hour so far and the 23 before it; the current UTC day and the 29 before */
    row->msgs_24h = window(e->hours, DS_HOURS, now / HOUR);
    row->msgs_30d = window(e->days, DS_DAYS, now / DAY);
    row->last_result = e->last_result;
    row->last_result_at = e->last_result_at;
    memcpy(row->last_reply, e->last_reply, sizeof(row->last_reply));
    return 0;
}

int device_stats_dirty(const struct device_stats *ds)
{
    return ds && ds->dirty;
}

void device_stats_mark_clean(struct device_stats *ds)
{
    if (ds)
        ds->dirty = 0;
}
