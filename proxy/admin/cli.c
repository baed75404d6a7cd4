/* The command table and what the commands share. */
#include "proxy/admin/cli.h"

#include <string.h>
#include <time.h>

#include "proxy/admin/cli_int.h"
#include "proxy/config/config.h"

static const struct {
    const char *name;
    int (*run)(struct config *cfg, int argc, char **argv);
    const char *usage;
} commands[] = {
    {"token", cli_token, "token ACCOUNT            print a valid access token (for msmtp, curl)"},
    {"accounts", cli_accounts,
     "accounts [--json]        each account's grant, token expiry, last refresh"},
    {"authorize", cli_authorize,
     "authorize ACCOUNT [--refresh-token FILE]\n"
     "                           get (device code flow) or import a refresh token"},
    {"devices", cli_devices,
     "devices [--json]         each device's last session, messages in 24 h / 30 d, last result,\n"
     "                           whether it has been silent for stale_after, and its block\n"
     "  devices block NAME [--reason TEXT] | devices unblock NAME\n"
     "                           cut a device off (550 5.7.1 at MAIL, survives a restart), or let "
     "it send"},
    {"test", cli_test,
     "test ACCOUNT [--to ADDR] [--from ADDR]\n"
     "                           token, claims, AUTH (and a test message): each refusal "
     "explained"},
    {"queue", cli_queue,
     "queue [--json]           the running daemon's queue: id, account, sender, recipients,\n"
     "                           size, age, attempts, state, last error\n"
     "  queue flush [ID]         retry now (one message, or every one not held)\n"
     "  queue hold ID | queue release ID\n"
     "                           keep a message from delivery (survives a restart), or let it go\n"
     "  queue delete ID          remove a message without delivering or bouncing it"},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

int cli_is_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return 1;
    return 0;
}

int cli_run(struct config *cfg, const char *name, int argc, char **argv)
{
    int ret = 2;
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            ret = commands[i].run(cfg, argc, argv);
    config_free(cfg);
    return ret;
}

void cli_usage(FILE *f)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %s\n", commands[i].usage);
}

const struct cfg_account *cli_account(const struct config *cfg, const char *name)
{
    const struct cfg_account *a = config_account(cfg, name);
    if (a)
        return a;
    fprintf(stderr, "smtp-oauth-proxy: no account \"%s\" in %s (accounts:", name, cfg->path);
    for (size_t i = 0; i < cfg->naccounts; i++)
        fprintf(stderr, "%s %s", i ? "," : "", cfg->accounts[i].name);
    fprintf(stderr, "%s)\n", cfg->naccounts ? "" : " none");
    return NULL;
}

const char *cli_time(int64_t t, char *buf, size_t len)
{
    struct tm tm;
    time_t tt = (time_t)t;
    if (t <= 0 || !gmtime_r(&tt, &tm) || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "-");
    return buf;
}
