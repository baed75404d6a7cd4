/* `devices [--json]`: which devices still send. Each configured device with its last session,
 * messages in the last 24 hours and 30 days, its last result and whether it has been silent for
 * stale_after (the annual access review). From the running daemon (live) or, without one, from
 * STATE_DIR/devices.state as the daemon last wrote it. Both give the same JSON document. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "common/secret.h"
#include "proxy/cli_int.h"
#include "proxy/config.h"
#include "proxy/control_client.h"
#include "proxy/device_stats.h"

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

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) && v->valuestring ? v->valuestring : NULL;
}

static int64_t num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

#define NCOLS 8
#define CELL 160

static void row_cells(const cJSON *o, char cells[NCOLS][CELL])
{
    char t[32];
    const char *name = str(o, "name"), *acct = str(o, "account"), *res = str(o, "last_result");
    int64_t seen = num(o, "last_seen");
    snprintf(cells[0], CELL, "%s", name ? name : "?");
    snprintf(cells[1], CELL, "%s", acct && *acct ? acct : "-");
    snprintf(cells[2], CELL, "%s", str(o, "match") ? str(o, "match") : "?");
    snprintf(cells[3], CELL, "%s", seen ? cli_time(seen, t, sizeof(t)) : "never");
    snprintf(cells[4], CELL, "%lld", (long long)num(o, "msgs_24h"));
    snprintf(cells[5], CELL, "%lld", (long long)num(o, "msgs_30d"));
    if (res)
        snprintf(cells[6], CELL, "%s %s", res, cli_time(num(o, "last_result_at"), t, sizeof(t)));
    else
        snprintf(cells[6], CELL, "-");
    snprintf(cells[7], CELL, "%s",
             cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "stale")) ? "yes" : "no");
}

static void print_table(const struct config *cfg, const cJSON *doc)
{
    static const char *const head[NCOLS] = {"DEVICE",   "ACCOUNT",  "MATCH",       "LAST-SEEN",
                                            "MSGS-24H", "MSGS-30D", "LAST-RESULT", "STALE"};
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(doc, "devices");
    const char *source = str(doc, "source");
    size_t w[NCOLS];
    char cells[NCOLS][CELL];
    const cJSON *o;

    if (source && strcmp(source, "daemon") == 0)
        printf("source: the running daemon (%s)\n", cfg->control_socket);
    else if (source && strcmp(source, "file") == 0)
        printf("source: %s/%s (no daemon running; as of its last write)\n", cfg->state_dir,
               DEVICE_STATS_FILE);
    else
        printf("source: the configuration (no daemon running, no history in %s yet)\n",
               cfg->state_dir);
    for (size_t i = 0; i < NCOLS; i++)
        w[i] = strlen(head[i]);
    cJSON_ArrayForEach(o, list)
    {
        row_cells(o, cells);
        for (size_t i = 0; i < NCOLS; i++)
            if (strlen(cells[i]) > w[i])
                w[i] = strlen(cells[i]);
    }
    for (size_t i = 0; i < NCOLS; i++)
        printf("%-*s%s", (int)w[i], head[i], i + 1 < NCOLS ? "  " : "\n");
    cJSON_ArrayForEach(o, list)
    {
        row_cells(o, cells);
        for (size_t i = 0; i + 1 < NCOLS; i++)
            printf("%-*s  ", (int)w[i], cells[i]);
        printf("%s\n", cells[NCOLS - 1]);
    }
    /* the reply the device last heard: what to look at when it was not "delivered" */
    cJSON_ArrayForEach(o, list)
    {
        const char *name = str(o, "name"), *rep = str(o, "last_reply");
        if (rep && *rep)
            printf("%s: last reply: %s\n", name ? name : "?", rep);
    }
    printf("stale: silent for stale_after = %llds (since the last session, or, never seen, "
           "since the proxy began to watch for it)\n",
           (long long)num(doc, "stale_after"));
}

int cli_devices(struct config *cfg, int argc, char **argv)
{
    char err[1024];
    char *buf = NULL;
    const char *body = NULL;
    int json = 0;
    cJSON *doc = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else {
            fprintf(stderr, "usage: smtp-oauth-proxy [--config FILE] devices [--json]\n");
            return 2;
        }
    }
    switch (control_client_call(cfg->control_socket, "devices", NULL, CLI_DAEMON_TIMEOUT_MS, &buf,
                                &body, err, sizeof(err))) {
    case CONTROL_CLIENT_OK:
        doc = cJSON_Parse(body);
        secret_free(buf);
        if (!cJSON_IsObject(doc)) {
            cJSON_Delete(doc);
            fprintf(stderr, "smtp-oauth-proxy: the daemon's answer is not a JSON document\n");
            return 1;
        }
        break;
    case CONTROL_CLIENT_FAILED:
        fprintf(stderr, "smtp-oauth-proxy: %s\n", err);
        return 1;
    case CONTROL_CLIENT_NO_DAEMON:
        doc = from_file(cfg, err, sizeof(err));
        if (!doc) {
            fprintf(stderr, "smtp-oauth-proxy: %s\n", err);
            return 1;
        }
        break;
    }
    if (json) {
        char *text = cJSON_Print(doc);
        if (text)
            printf("%s\n", text);
        cJSON_free(text);
    } else {
        print_table(cfg, doc);
    }
    cJSON_Delete(doc);
    return fflush(stdout) == 0 ? 0 : 1;
}
