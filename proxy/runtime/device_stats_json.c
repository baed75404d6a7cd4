/* The `devices` document, the same from the daemon (live) and from the state file (offline):
 * the table of proxy/admin/cli_devices.c is drawn from it. */
#include "proxy/runtime/device_stats_int.h"

#include <string.h>

#include <cjson/cJSON.h>

#include "proxy/config/config.h"

static const char *match_kind(const struct cfg_device *d)
{
    if (d->username && d->naddrs)
        return "username+address";
    return d->username ? "username" : "address";
}

static int add_time(cJSON *o, const char *key, int64_t t)
{
    return t > 0 ? cJSON_AddNumberToObject(o, key, (double)t) != NULL
                 : cJSON_AddNullToObject(o, key) != NULL;
}

static cJSON *device_json(const struct device_stats *ds, const struct config *cfg,
                          const struct cfg_device *d, int64_t now)
{
    struct device_stats_row row;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    if (device_stats_get(ds, d->name, now, &row) != 0) {
        /* not tracked (a config newer than the history): never seen, tracked from now */
        memset(&row, 0, sizeof(row));
        row.tracked_since = now;
    }
    /* silent for stale_after: since the last session, or, never seen, since the proxy began
     * to watch for it; a device just added to the config is not stale on day one */
    int64_t quiet_since = row.last_seen ? row.last_seen : row.tracked_since;
    int stale = now - quiet_since >= (int64_t)cfg->stale_after;
    int ok =
        cJSON_AddStringToObject(o, "name", d->name) &&
        cJSON_AddStringToObject(o, "account", d->account ? d->account->name : "") &&
        cJSON_AddStringToObject(o, "match", match_kind(d)) &&
        (d->username ? cJSON_AddStringToObject(o, "username", d->username)
                     : cJSON_AddNullToObject(o, "username")) &&
        add_time(o, "last_seen", row.last_seen) &&
        add_time(o, "tracked_since", row.tracked_since) &&
        cJSON_AddNumberToObject(o, "msgs_24h", (double)row.msgs_24h) &&
        cJSON_AddNumberToObject(o, "msgs_30d", (double)row.msgs_30d) &&
        (row.last_result != DEVICE_RESULT_NONE
             ? cJSON_AddStringToObject(o, "last_result", device_result_str(row.last_result)) &&
                   cJSON_AddStringToObject(o, "last_reply", row.last_reply)
             : cJSON_AddNullToObject(o, "last_result") && cJSON_AddNullToObject(o, "last_reply")) &&
        add_time(o, "last_result_at", row.last_result_at) &&
        cJSON_AddBoolToObject(o, "stale", stale);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *device_stats_json(const struct device_stats *ds, const struct config *cfg,
                         const char *source, int64_t now)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON *list = doc ? cJSON_AddArrayToObject(doc, "devices") : NULL;
    if (!list || !cJSON_AddStringToObject(doc, "source", source) ||
        !cJSON_AddNumberToObject(doc, "now", (double)now) ||
        !cJSON_AddNumberToObject(doc, "stale_after", (double)cfg->stale_after))
        goto fail;
    for (size_t i = 0; i < cfg->ndevices; i++) {
        cJSON *o = device_json(ds, cfg, &cfg->devices[i], now);
        if (!o || !cJSON_AddItemToArray(list, o)) {
            cJSON_Delete(o);
            goto fail;
        }
    }
    return doc;
fail:
    cJSON_Delete(doc);
    return NULL;
}
