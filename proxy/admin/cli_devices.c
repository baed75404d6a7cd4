/* `devices [--json]`: which devices still send. Each configured device with its last session,
 * messages in the last 24 hours and 30 days, its last result, whether it has been silent for
 * stale_after (the annual access review) and whether it is blocked (when, by whom, why). From the
 * running daemon (live) or, without one, from STATE_DIR/devices.state and device_blocks.state as
 * the daemon last wrote them. Both give the same JSON document.
 * `devices block NAME [--reason TEXT]`, `devices unblock NAME`: through the running daemon
 * (docs/device-limits.md), which keeps the block list. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "common/secret.h"
#include "proxy/admin/cli_int.h"
#include "proxy/admin/control_client.h"
#include "proxy/config/config.h"
#include "proxy/runtime/device_blocks.h"
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
    struct device_blocks *b = NULL;
    if (device_blocks_path(cfg, path, sizeof(path)) == 0 && (b = device_blocks_new(path)) &&
        device_blocks_load(b, lerr, sizeof(lerr)) < 0)
        fprintf(stderr, "smtp-oauth-proxy: %s (ignored: the daemon sets it aside at start-up)\n",
                lerr);
    if (doc && device_blocks_json(b, doc) != 0) {
        cJSON_Delete(doc);
        doc = NULL;
    }
    device_blocks_free(b);
    if (!doc)
        snprintf(err, errlen, "out of memory");
    return doc;
}

#define NCOLS 9

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
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "blocked")))
        snprintf(cells[8], CLI_CELL, "yes (%s)", cli_json_str(o, "blocked_by"));
    else
        snprintf(cells[8], CLI_CELL, "no");
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
    /* who is blocked, since when and why (devices unblock NAME lifts it) */
    cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(doc, "devices"))
    {
        char t[32];
        const char *name = cli_json_str(o, "name"), *why = cli_json_str(o, "blocked_reason");
        const char *by = cli_json_str(o, "blocked_by");
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "blocked")))
            printf("%s: blocked since %s by %s: %s\n", name ? name : "?",
                   cli_time(cli_json_num(o, "blocked_since"), t, sizeof(t)), by ? by : "?",
                   why ? why : "");
    }
    cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(doc, "blocked_other"))
    {
        if (cJSON_IsString(o))
            printf("%s: blocked, but no such device in the config (devices unblock %s)\n",
                   o->valuestring, o->valuestring);
    }
    printf("stale: silent for stale_after = %llds (since the last session, or, never seen, "
           "since the proxy began to watch for it)\n",
           (long long)cli_json_num(doc, "stale_after"));
}

static const char *const head[NCOLS] = {"DEVICE",   "ACCOUNT",     "MATCH", "LAST-SEEN", "MSGS-24H",
                                        "MSGS-30D", "LAST-RESULT", "STALE", "BLOCKED"};

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

static int usage(void)
{
    fprintf(stderr, "usage: smtp-oauth-proxy [--config FILE] devices [--json]\n"
                    "       smtp-oauth-proxy [--config FILE] devices block NAME [--reason TEXT]\n"
                    "       smtp-oauth-proxy [--config FILE] devices unblock NAME\n");
    return 2;
}

/* block NAME [--reason TEXT] | unblock NAME */
static int block_verb(struct config *cfg, int block, int argc, char **argv)
{
    char request[128], err[1024], reason[DEVICE_BLOCK_REASON_MAX + 1];
    char *buf = NULL;
    const char *body = NULL;
    if (argc < 2 || (block && argc != 2 && argc != 4) || (!block && argc != 2) ||
        (argc == 4 && strcmp(argv[2], "--reason") != 0))
        return usage();
    const char *name = argv[1];
    int known = 0;
    for (size_t i = 0; i < cfg->ndevices; i++)
        known |= strcmp(cfg->devices[i].name, name) == 0;
    /* unblock may lift a block on a name the config no longer has */
    if (!device_block_name_ok(name) || (block && !known)) {
        fprintf(stderr, "smtp-oauth-proxy: no device \"%.64s\" in %s (devices:", name, cfg->path);
        for (size_t i = 0; i < cfg->ndevices; i++)
            fprintf(stderr, "%s %s", i ? "," : "", cfg->devices[i].name);
        fprintf(stderr, "%s)\n", cfg->ndevices ? "" : " none");
        return 2;
    }
    device_block_sanitize(reason, sizeof(reason), argc == 4 ? argv[3] : "");
    if (!reason[0])
        snprintf(reason, sizeof(reason), "blocked by an administrator");
    snprintf(request, sizeof(request), "device-%s %s", block ? "block" : "unblock", name);
    switch (control_client_call(cfg->control_socket, request, block ? reason : NULL,
                                CLI_DAEMON_TIMEOUT_MS, &buf, &body, err, sizeof(err))) {
    case CONTROL_CLIENT_OK:
        printf("%s", body);
        secret_free(buf);
        return fflush(stdout) == 0 ? 0 : 1;
    case CONTROL_CLIENT_FAILED:
        fprintf(stderr, "smtp-oauth-proxy: %s\n", err);
        return 1;
    case CONTROL_CLIENT_NO_DAEMON:
        break;
    }
    fprintf(stderr,
            "smtp-oauth-proxy: the daemon is not running (control socket %s): devices %s acts on "
            "the running daemon, which keeps the block list\n",
            cfg->control_socket, block ? "block" : "unblock");
    return 1;
}

int cli_devices(struct config *cfg, int argc, char **argv)
{
    if (argc > 0 && strcmp(argv[0], "block") == 0)
        return block_verb(cfg, 1, argc, argv);
    if (argc > 0 && strcmp(argv[0], "unblock") == 0)
        return block_verb(cfg, 0, argc, argv);
    if (argc > 0 && argv[0][0] != '-')
        return usage();
    return cli_report_run(&devices_report, cfg, argc, argv);
}
