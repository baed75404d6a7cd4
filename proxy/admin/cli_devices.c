/* `devices [--json]`: which devices still send. Each configured device with its last session,
 * messages in the last 24 hours and 30 days, its last result and whether it has been silent for
 * stale_after (the annual access review). From the running daemon (live) or, without one, from
 * STATE_DIR/devices.state as the daemon last wrote it. Both give the same JSON document. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "proxy/admin/cli_int.h"
#include "proxy/config/config.h"
#include "proxy/runtime/device_stats.h"

/* No daemon: the history the daemon last wrote. */
static cJSON *from_file(const struct config *cfg, char *err, size_t errlen)
{
    char path[4096], lerr[1024];
    int64_t now = (int64_t)time(NULL);
    if (device_stats_path(cfg, path, sizeof(path)) != 0) {
        snprintf(err, errlen, "state_dir is too long");
        return NULL;
    }
    struct device_stats *ds = device_stats_new(cfg, now);
    if (!ds) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    int r = device_stats_load(ds, path, lerr, sizeof(lerr));
    if (r < 0)
        fprintf(stderr, "smtp-oauth-proxy: %s (ignored: the daemon sets it aside at start-up)\n",
                lerr);
    cJSON *doc = device_stats_json(ds, cfg, r > 0 ? "file" : "none", now);
    device_stats_free(ds);
    if (!doc)
        snprintf(err, errlen, "out of memory");
    return doc;
}

#define NCOLS 8

static void row_cells(const cJSON *o, char cells[][CLI_CELL])
{
    char t[32];
    const char *name = cli_json_str(o, "name"), *acct = cli_json_str(o, "account");
    const char *res = cli_json_str(o, "last_result"), *match = cli_json_str(o, "match");
    int64_t seen = cli_json_num(o, "last_seen");
    snprintf(cells[0], CLI_CELL, "%s", name ? name : "?");
    snprintf(cells[1], CLI_CELL, "%s", acct && *acct ? acct : "-");
    snprintf(cells[2], CLI_CELL, "%s", match ? match : "?");
    snprintf(cells[3], CLI_CELL, "%s", seen ? cli_time(seen, t, sizeof(t)) : "never");
    snprintf(cells[4], CLI_CELL, "%lld", (long long)cli_json_num(o, "msgs_24h"));
    snprintf(cells[5], CLI_CELL, "%lld", (long long)cli_json_num(o, "msgs_30d"));
    if (res)
        snprintf(cells[6], CLI_CELL, "%s %s", res,
                 cli_time(cli_json_num(o, "last_result_at"), t, sizeof(t)));
    else
        snprintf(cells[6], CLI_CELL, "-");
    snprintf(cells[7], CLI_CELL, "%s",
             cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "stale")) ? "yes" : "no");
}

static void before_table(const struct config *cfg, const cJSON *doc)
{
    const char *source = cli_json_str(doc, "source");
    if (source && strcmp(source, "daemon") == 0)
        printf("source: the running daemon (%s)\n", cfg->control_socket);
    else if (source && strcmp(source, "file") == 0)
        printf("source: %s/%s (no daemon running; as of its last write)\n", cfg->state_dir,
               DEVICE_STATS_FILE);
    else
        printf("source: the configuration (no daemon running, no history in %s yet)\n",
               cfg->state_dir);
}

static void after_table(const struct config *cfg, const cJSON *doc)
{
    const cJSON *o;
    (void)cfg;
    /* the reply the device last heard: what to look at when it was not "delivered" */
    cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(doc, "devices"))
    {
        const char *name = cli_json_str(o, "name"), *rep = cli_json_str(o, "last_reply");
        if (rep && *rep)
            printf("%s: last reply: %s\n", name ? name : "?", rep);
    }
    printf("stale: silent for stale_after = %llds (since the last session, or, never seen, "
           "since the proxy began to watch for it)\n",
           (long long)cli_json_num(doc, "stale_after"));
}

static const char *const head[NCOLS] = {"DEVICE",   "ACCOUNT",  "MATCH",       "LAST-SEEN",
                                        "MSGS-24H", "MSGS-30D", "LAST-RESULT", "STALE"};

static const struct cli_report devices_report = {
    .name = "devices",
    .list_key = "devices",
    .ncols = NCOLS,
    .head = head,
    .row = row_cells,
    .offline = from_file,
    .before = before_table,
    .after = after_table,
};

int cli_devices(struct config *cfg, int argc, char **argv)
{
    return cli_report_run(&devices_report, cfg, argc, argv);
}
