/* What `accounts` and `devices` share: the running daemon's JSON document or, without a daemon,
 * the same document built offline; printed whole (--json) or as an aligned table. */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/secret.h"
#include "proxy/admin/cli_int.h"
#include "proxy/config/config.h"
#include "proxy/admin/control_client.h"

const char *cli_json_str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) && v->valuestring ? v->valuestring : NULL;
}

int64_t cli_json_num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

static void cli_report_table(const struct cli_report *r, const struct config *cfg, const cJSON *doc)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(doc, r->list_key);
    size_t w[CLI_REPORT_MAX_COLS];
    char cells[CLI_REPORT_MAX_COLS][CLI_CELL];
    const cJSON *o;

    r->before(cfg, doc);
    for (size_t i = 0; i < r->ncols; i++)
        w[i] = strlen(r->head[i]);
    cJSON_ArrayForEach(o, list)
    {
        r->row(o, cells);
        for (size_t i = 0; i < r->ncols; i++)
            if (strlen(cells[i]) > w[i])
                w[i] = strlen(cells[i]);
    }
    for (size_t i = 0; i + 1 < r->ncols; i++)
        printf("%-*s  ", (int)w[i], r->head[i]);
    printf("%s\n", r->head[r->ncols - 1]); /* no trailing blanks */
    cJSON_ArrayForEach(o, list)
    {
        r->row(o, cells);
        for (size_t i = 0; i + 1 < r->ncols; i++)
            printf("%-*s  ", (int)w[i], cells[i]);
        printf("%s\n", cells[r->ncols - 1]);
    }
    if (r->after)
        r->after(cfg, doc);
}

int cli_report_run(const struct cli_report *r, struct config *cfg, int argc, char **argv)
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
            fprintf(stderr, "usage: smtp-oauth-proxy [--config FILE] %s [--json]\n", r->name);
            return 2;
        }
    }
    switch (control_client_call(cfg->control_socket, r->name, NULL, CLI_DAEMON_TIMEOUT_MS, &buf,
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
        doc = r->offline(cfg, err, sizeof(err));
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
        cli_report_table(r, cfg, doc);
    }
    cJSON_Delete(doc);
    return fflush(stdout) == 0 ? 0 : 1;
}
