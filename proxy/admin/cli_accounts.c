/* `accounts [--json]`: every account's grant, token expiry, last refresh and whether a person
 * must re-authorize. From the running daemon (its live caches) or, without one, from what the
 * token store holds. Both give the same JSON shape; the table is drawn from it. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "proxy/runtime/account_budget.h"
#include "proxy/runtime/account_tokens.h"
#include "proxy/admin/cli_int.h"
#include "proxy/config/config.h"
#include "store/token_store.h"

/* What the store says about each account (no daemon). */
static cJSON *from_store(const struct config *cfg, char *err, size_t errlen)
{
    struct token_store *st = NULL;
    struct account_budget *budget = NULL;
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
    /* the budget as the daemon left it (read only: a bad file is the daemon's to set aside) */
    char path[4096], berr[512];
    budget = account_budget_new();
    if (budget &&
        (account_budget_path(cfg, path, sizeof(path)) != 0 ||
         account_budget_load(budget, path, (int64_t)time(NULL), berr, sizeof(berr)) < 0)) {
        account_budget_free(budget);
        budget = NULL;
    }
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
        if (budget)
            account_budget_json(o, budget, a->name, a->daily_recipient_limit, (int64_t)time(NULL));
    }
    account_budget_free(budget);
    token_store_free(st);
    return doc;
oom:
    account_budget_free(budget);
    token_store_free(st);
    cJSON_Delete(doc);
    snprintf(err, errlen, "out of memory");
    return NULL;
}

#define NCOLS 6

static void row_cells(const cJSON *o, char cells[][CLI_CELL])
{
    char t[32];
    const char *res = cli_json_str(o, "last_result"), *name = cli_json_str(o, "name");
    const char *grant = cli_json_str(o, "grant"), *mailbox = cli_json_str(o, "mailbox");
    snprintf(cells[0], CLI_CELL, "%s", name ? name : "?");
    snprintf(cells[1], CLI_CELL, "%s", grant ? grant : "?");
    snprintf(cells[2], CLI_CELL, "%s", mailbox && *mailbox ? mailbox : "-");
    snprintf(cells[3], CLI_CELL, "%s", cli_time(cli_json_num(o, "token_expires"), t, sizeof(t)));
    if (res)
        snprintf(cells[4], CLI_CELL, "%s %s", res,
                 cli_time(cli_json_num(o, "last_attempt"), t, sizeof(t)));
    else
        snprintf(cells[4], CLI_CELL, "-");
    snprintf(cells[5], CLI_CELL, "%s",
             cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "reauthorize")) ? "yes" : "no");
}

static void before_table(const struct config *cfg, const cJSON *doc)
{
    const char *source = cli_json_str(doc, "source");
    if (source && strcmp(source, "daemon") == 0)
        printf("source: the running daemon (%s)\n", cfg->control_socket);
    else if (source && strcmp(source, "store") == 0)
        printf("source: the token store (no daemon running; last refresh unknown)\n");
    else
        printf("source: the configuration (no daemon running; no key_file: nothing stored)\n");
}

static void after_table(const struct config *cfg, const cJSON *doc)
{
    const cJSON *o;
    cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(doc, "accounts"))
    {
        const char *name = cli_json_str(o, "name"), *e = cli_json_str(o, "last_error");
        const struct cfg_account *a = name ? config_account(cfg, name) : NULL;
        if (e)
            printf("%s: last error: %s\n", name ? name : "?", e);
        if (cJSON_GetObjectItemCaseSensitive(o, "recipients_24h")) {
            int64_t lim = cli_json_num(o, "recipient_limit");
            char of[48];
            if (lim)
                snprintf(of, sizeof(of), "%lld", (long long)lim);
            else
                snprintf(of, sizeof(of), "no limit");
            printf("%s: recipients last 24h: %lld of %s\n", name ? name : "?",
                   (long long)cli_json_num(o, "recipients_24h"), of);
        }
        if (a && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "reauthorize"))) {
            char hint[1024];
            account_tokens_authorize_hint(cfg, a, hint, sizeof(hint));
            printf("%s: a person must authorize it again: %s\n", a->name, hint);
        }
    }
}

static const char *const head[NCOLS] = {"ACCOUNT",       "GRANT",        "MAILBOX",
                                        "TOKEN-EXPIRES", "LAST-REFRESH", "REAUTHORIZE"};

static const struct cli_report accounts_report = {
    .name = "accounts",
    .list_key = "accounts",
    .ncols = NCOLS,
    .head = head,
    .row = row_cells,
    .offline = from_store,
    .before = before_table,
    .after = after_table,
};

int cli_accounts(struct config *cfg, int argc, char **argv)
{
    return cli_report_run(&accounts_report, cfg, argc, argv);
}
