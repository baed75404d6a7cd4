/* `accounts [--json]`: every account's grant, token expiry, last refresh and whether a person
 * must re-authorize. From the running daemon (its live caches) or, without one, from what the
 * token store holds. Both give the same JSON shape; the table is drawn from it. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "common/secret.h"
#include "proxy/account_tokens.h"
#include "proxy/cli_int.h"
#include "proxy/config.h"
#include "proxy/control_client.h"
#include "store/token_store.h"

/* What the store says about each account (no daemon). */
static cJSON *from_store(const struct config *cfg, char *err, size_t errlen)
{
    struct token_store *st = NULL;
    cJSON *doc = cJSON_CreateObject();
    cJSON *list = doc ? cJSON_AddArrayToObject(doc, "accounts") : NULL;
    if (!list)
        goto oom;
    if (cfg->key_file) {
        char serr[768];
        st = token_store_new(cfg->state_dir, cfg->key_file, serr, sizeof(serr));
        if (!st) {
            snprintf(err, errlen, "token store: %s", serr);
            cJSON_Delete(doc);
            return NULL;
        }
    }
    if (!cJSON_AddStringToObject(doc, "source", st ? "store" : "config"))
        goto oom;
    for (size_t i = 0; i < cfg->naccounts; i++) {
        const struct cfg_account *a = &cfg->accounts[i];
        struct token_record rec = {0};
        int found = st && token_store_load(st, a->name, (int64_t)time(NULL), &rec) == 1;
        int has_rt = found && rec.refresh_token != NULL;
        int64_t expires = found && rec.access_token ? rec.expires_at : 0;
        token_record_clear(&rec);
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(list, o)) {
            cJSON_Delete(o);
            goto oom;
        }
        cJSON_AddStringToObject(o, "name", a->name);
        cJSON_AddStringToObject(o, "provider", a->provider);
        cJSON_AddStringToObject(o, "grant", a->grant);
        cJSON_AddStringToObject(o, "mailbox", a->mailbox ? a->mailbox : "");
        if (expires)
            cJSON_AddNumberToObject(o, "token_expires", (double)expires);
        else
            cJSON_AddNullToObject(o, "token_expires");
        cJSON_AddNullToObject(o, "last_result");
        cJSON_AddNullToObject(o, "last_attempt");
        cJSON_AddNullToObject(o, "last_error");
        cJSON_AddBoolToObject(o, "refresh_token_stored", has_rt);
        cJSON_AddBoolToObject(o, "reauthorize",
                              st && strcmp(a->grant, "refresh_token") == 0 && !has_rt);
    }
    token_store_free(st);
    return doc;
oom:
    token_store_free(st);
    cJSON_Delete(doc);
    snprintf(err, errlen, "out of memory");
    return NULL;
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

#define NCOLS 6

static void row_cells(const cJSON *o, char cells[NCOLS][160])
{
    char t[32];
    const char *res = str(o, "last_result");
    snprintf(cells[0], 160, "%s", str(o, "name") ? str(o, "name") : "?");
    snprintf(cells[1], 160, "%s", str(o, "grant") ? str(o, "grant") : "?");
    snprintf(cells[2], 160, "%s",
             str(o, "mailbox") && *str(o, "mailbox") ? str(o, "mailbox") : "-");
    snprintf(cells[3], 160, "%s", cli_time(num(o, "token_expires"), t, sizeof(t)));
    if (res)
        snprintf(cells[4], 160, "%s %s", res, cli_time(num(o, "last_attempt"), t, sizeof(t)));
    else
        snprintf(cells[4], 160, "-");
    snprintf(cells[5], 160, "%s",
             cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "reauthorize")) ? "yes" : "no");
}

static void print_table(const struct config *cfg, const cJSON *doc)
{
    static const char *const head[NCOLS] = {"ACCOUNT",       "GRANT",        "MAILBOX",
                                            "TOKEN-EXPIRES", "LAST-REFRESH", "REAUTHORIZE"};
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(doc, "accounts");
    const char *source = str(doc, "source");
    size_t w[NCOLS];
    char cells[NCOLS][160];
    const cJSON *o;

    if (source && strcmp(source, "daemon") == 0)
        printf("source: the running daemon (%s)\n", cfg->control_socket);
    else if (source && strcmp(source, "store") == 0)
        printf("source: the token store (no daemon running; last refresh unknown)\n");
    else
        printf("source: the configuration (no daemon running; no key_file: nothing stored)\n");
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
    cJSON_ArrayForEach(o, list)
    {
        const char *name = str(o, "name"), *e = str(o, "last_error");
        const struct cfg_account *a = name ? config_account(cfg, name) : NULL;
        if (e)
            printf("%s: last error: %s\n", name ? name : "?", e);
        if (a && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "reauthorize"))) {
            char hint[1024];
            account_tokens_authorize_hint(cfg, a, hint, sizeof(hint));
            printf("%s: a person must authorize it again: %s\n", a->name, hint);
        }
    }
}

int cli_accounts(struct config *cfg, int argc, char **argv)
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
            fprintf(stderr, "usage: smtp-oauth-proxy [--config FILE] accounts [--json]\n");
            return 2;
        }
    }
    switch (control_client_call(cfg->control_socket, "accounts", NULL, CLI_DAEMON_TIMEOUT_MS, &buf,
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
        doc = from_store(cfg, err, sizeof(err));
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
