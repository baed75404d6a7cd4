/* `token ACCOUNT`: a valid access token on stdout, for programs that speak XOAUTH2 themselves.
 * The daemon's cache first (one refresher per account); without a daemon, the store. */
#include <stdio.h>
#include <string.h>

#include "common/secret.h"
#include "proxy/admin/cli_int.h"
#include "proxy/config/config.h"
#include "proxy/admin/control_client.h"

int cli_token(struct config *cfg, int argc, char **argv)
{
    char err[1024], req[512];
    char *buf = NULL, *token = NULL;
    const char *body = NULL;
    int64_t expires_at = 0;
    if (argc != 1 || argv[0][0] == '-') {
        fprintf(stderr, "usage: smtp-oauth-proxy [--config FILE] token ACCOUNT\n");
        return 2;
    }
    const struct cfg_account *a = cli_account(cfg, argv[0]);
    if (!a)
        return 1;
    snprintf(req, sizeof(req), "token %s", a->name);
    switch (control_client_call(cfg->control_socket, req, NULL, CLI_DAEMON_TIMEOUT_MS, &buf, &body,
                                err, sizeof(err))) {
    case CONTROL_CLIENT_OK: {
        size_t n = strcspn(body, "\r\n");
        int ok = n > 0 && fwrite(body, 1, n, stdout) == n && fputc('\n', stdout) != EOF &&
                 fflush(stdout) == 0;
        secret_free(buf);
        if (!ok) {
            fprintf(stderr, "smtp-oauth-proxy: %s\n",
                    n ? "cannot write the token to stdout" : "the daemon sent no token");
            return 1;
        }
        return 0;
    }
    case CONTROL_CLIENT_FAILED:
        fprintf(stderr, "smtp-oauth-proxy: %s\n", err);
        return 1;
    case CONTROL_CLIENT_NO_DAEMON:
        break;
    }

    struct cli_offline o;
    if (cli_offline_open(&o, cfg, a, 0, err, sizeof(err)) != 0) {
        fprintf(stderr, "smtp-oauth-proxy: %s\n", err);
        return 1;
    }
    int ret = 1;
    if (cli_offline_token(&o, &token, &expires_at, err, sizeof(err)) != 0) {
        fprintf(stderr, "smtp-oauth-proxy: no token for account %s: %s\n", a->name, err);
    } else if (printf("%s\n", token) < 0 || fflush(stdout) != 0) {
        fprintf(stderr, "smtp-oauth-proxy: cannot write the token to stdout\n");
    } else {
        ret = 0;
    }
    secret_free(token);
    cli_offline_close(&o);
    return ret;
}
