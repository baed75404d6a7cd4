/* The commands: `smtp-oauth-proxy [--config FILE] COMMAND ARGS...` (token, accounts,
 * authorize). They ask the running daemon over the control socket first and work on the token
 * store themselves when no daemon runs. */
#ifndef SOP_CLI_H
#define SOP_CLI_H

#include <stdio.h>

struct config;

/* 1 if name is a command. */
int cli_is_command(const char *name);
/* Run command name with its arguments (argv[0] is the first one after the name). Takes cfg.
 * The exit code: 0 ok, 1 failed, 2 bad usage. */
int cli_run(struct config *cfg, const char *name, int argc, char **argv);
/* The commands' lines for usage(). */
void cli_usage(FILE *f);

#endif
