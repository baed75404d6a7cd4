/* `queue [--json]`, `queue flush [ID]`, `queue hold ID`, `queue release ID`, `queue delete ID`:
 * what the running daemon's spool holds, and what an admin does about it. Only the daemon may
 * touch the spool (it holds its lock and has every message in memory), so without a daemon these
 * commands say so rather than read or change the files behind its back. */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/secret.h"
#include "proxy/admin/cli_int.h"
#include "proxy/config/config.h"
#include "proxy/admin/control_client.h"
#include "store/spool_envelope.h"

#define NCOLS 9

static cJSON *no_daemon(const struct config *cfg, char *err, size_t errlen)
{
    snprintf(err, errlen,
             "the daemon is not running (control socket %s): queue commands act on the running "
             "daemon",
             cfg->control_socket);
    return NULL;
}

/* 3725 -> "1h02m" */
static void age_text(int64_t s, char *buf, size_t len)
{
    if (s < 0)
        s = 0;
    if (s < 60)
        snprintf(buf, len, "%llds", (long long)s);
    else if (s < 3600)
        snprintf(buf, len, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
    else if (s < 86400)
        snprintf(buf, len, "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
    else
        snprintf(buf, len, "%lldd%02lldh", (long long)(s / 86400), (long long)(s % 86400 / 3600));
}

static void size_text(int64_t n, char *buf, size_t len)
{
    if (n < 10 * 1024)
        snprintf(buf, len, "%lld", (long long)n);
    else if (n < 10 * 1024 * 1024)
        snprintf(buf, len, "%lldK", (long long)(n / 1024));
    else
        snprintf(buf, len, "%lldM", (long long)(n / (1024 * 1024)));
}

static void row_cells(const cJSON *o, char cells[][CLI_CELL])
{
    const char *id = cli_json_str(o, "id"), *acct = cli_json_str(o, "account");
    const char *from = cli_json_str(o, "from"), *state = cli_json_str(o, "state");
    const char *last = cli_json_str(o, "last_error");
    const cJSON *rcpts = cJSON_GetObjectItemCaseSensitive(o, "rcpts");
    const cJSON *first = cJSON_GetArrayItem(rcpts, 0);
    int64_t n = cli_json_num(o, "nrcpts");
    snprintf(cells[0], CLI_CELL, "%s", id ? id : "?");
    snprintf(cells[1], CLI_CELL, "%s", acct ? acct : "?");
    snprintf(cells[2], CLI_CELL, "<%s>", from ? from : "");
    if (cJSON_IsString(first) && n > 1)
        snprintf(cells[3], CLI_CELL, "%s (+%lld)", first->valuestring, (long long)(n - 1));
    else
        snprintf(cells[3], CLI_CELL, "%s", cJSON_IsString(first) ? first->valuestring : "-");
    size_text(cli_json_num(o, "size"), cells[4], CLI_CELL);
    age_text(cli_json_num(o, "age"), cells[5], CLI_CELL);
    snprintf(cells[6], CLI_CELL, "%lld", (long long)cli_json_num(o, "attempts"));
    snprintf(cells[7], CLI_CELL, "%s", state ? state : "?");
    snprintf(cells[8], CLI_CELL, "%s", last && *last ? last : "-");
}

static void before_table(const struct config *cfg, const cJSON *doc)
{
    (void)doc;
    printf("source: the running daemon (%s)\n", cfg->control_socket);
}

static void after_table(const struct config *cfg, const cJSON *doc)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(doc, "queue");
    int64_t total = cli_json_num(doc, "messages"), listed = cJSON_GetArraySize(list);
    (void)cfg;
    if (total == 0) {
        printf("the queue is empty\n");
        return;
    }
    printf("%lld message%s (%lld held, %lld sending)", (long long)total, total == 1 ? "" : "s",
           (long long)cli_json_num(doc, "held"), (long long)cli_json_num(doc, "sending"));
    if (listed < total)
        printf("; the oldest %lld listed", (long long)listed);
    printf("\n");
}

static const char *const head[NCOLS] = {"ID",  "ACCOUNT",  "SENDER", "RECIPIENTS", "SIZE",
                                        "AGE", "ATTEMPTS", "STATE",  "LAST-ERROR"};

static const struct cli_report queue_report = {
    .name = "queue",
    .list_key = "queue",
    .ncols = NCOLS,
    .head = head,
    .row = row_cells,
    .offline = no_daemon,
    .before = before_table,
    .after = after_table,
};

static int usage(void)
{
    fprintf(stderr, "usage: smtp-oauth-proxy [--config FILE] queue [--json]\n"
                    "       smtp-oauth-proxy [--config FILE] queue flush [ID]\n"
                    "       smtp-oauth-proxy [--config FILE] queue hold|release|delete ID\n");
    return 2;
}

int cli_queue(struct config *cfg, int argc, char **argv)
{
    static const char *const verbs[] = {"flush", "hold", "release", "delete"};
    char request[64], err[1024];
    char *buf = NULL;
    const char *body = NULL;
    size_t v;
    if (argc == 0 || argv[0][0] == '-')
        return cli_report_run(&queue_report, cfg, argc, argv);
    for (v = 0; v < sizeof(verbs) / sizeof(verbs[0]); v++)
        if (strcmp(argv[0], verbs[v]) == 0)
            break;
    if (v == sizeof(verbs) / sizeof(verbs[0]) || argc > 2 || (v > 0 && argc != 2))
        return usage();
    const char *id = argc == 2 ? argv[1] : NULL;
    if (id && !spool_id_valid(id)) {
        fprintf(stderr,
                "smtp-oauth-proxy: '%.64s' is not a queue id (16 lower-case hex digits, as "
                "`queue` lists them)\n",
                id);
        return 2;
    }
    snprintf(request, sizeof(request), "queue-%s%s%s", verbs[v], id ? " " : "", id ? id : "");
    switch (control_client_call(cfg->control_socket, request, NULL, CLI_DAEMON_TIMEOUT_MS, &buf,
                                &body, err, sizeof(err))) {
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
    no_daemon(cfg, err, sizeof(err));
    fprintf(stderr, "smtp-oauth-proxy: %s\n", err);
    return 1;
}
