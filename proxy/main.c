/* smtp-oauth-proxy: lets devices that speak plain SMTP or AUTH PLAIN/LOGIN send mail through
 * a submission server that wants OAuth2 (Exchange Online, Gmail), as a service account. */
#include <signal.h>
#include <stdint.h>
#include <time.h>
#include <sys/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <systemd/sd-daemon.h>

#include "common/log.h"
#include "proxy/admin/cli.h"
#include "proxy/config/config.h"
#include "proxy/admin/control.h"
#include "proxy/admin/metrics_http.h"
#include "proxy/delivery/queue.h"
#include "proxy/delivery/spool_commit.h"
#include "proxy/server/server.h"
#include "proxy/runtime/server_gen.h"

#define DEFAULT_CONFIG "/etc/smtp-oauth-proxy/smtp-oauth-proxy.conf"
#define SHUTDOWN_GRACE_SECONDS 30
/* STATUS= is sent when something in it changed: at most once a second */
#define STATUS_INTERVAL_SECONDS 1

static void usage(FILE *f)
{
    fprintf(f, "usage: smtp-oauth-proxy [--config FILE] [--check]\n"
               "       smtp-oauth-proxy [--config FILE] COMMAND ARGS...\n"
               "       smtp-oauth-proxy --version | --help\n"
               "\n"
               "  -c, --config FILE  configuration file (default " DEFAULT_CONFIG ")\n"
               "      --check        validate the configuration, print \"ok\" or every problem\n"
               "                     with file:line, and exit\n"
               "Without a command it runs the daemon. Commands (they ask the running daemon over\n"
               "its control socket, or use the token store when none runs):\n");
    cli_usage(f);
}

struct runtime {
    struct event_base *base;
    struct server *srv;
    struct control *control; /* the control socket (token, accounts, authorize) */
    struct event *grace;     /* bounds the graceful shutdown */
    struct event *watchdog;  /* WATCHDOG=1 from the loop itself; NULL without WatchdogSec= */
    struct event *status;    /* STATUS= for systemctl status */
    /* metrics_listen: /metrics and /healthz; NULL when off */
    struct metrics_http *metrics;
    unsigned status_open;
    unsigned long status_total;
    size_t status_queued, status_held;
    int signals;
};

/* Sent from the event loop: a loop that is stuck stops sending, and systemd restarts it. */
static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    sd_notify(0, "WATCHDOG=1");
}

/* STATUS= for systemctl status (first: "READY=1\n" or ""): sessions, and the queue's depth */
static void send_status(struct runtime *rt, const char *first)
{
    struct queue_stats qs;
    queue_stats(rt->srv->dctx.queue, &qs);
    rt->status_open = rt->srv->sessions_open;
    rt->status_total = rt->srv->sessions_total;
    rt->status_queued = qs.messages;
    rt->status_held = qs.held;
    sd_notifyf(0, "%sSTATUS=sessions=%u total=%lu queued=%zu held=%zu%s", first, rt->status_open,
               rt->status_total, rt->status_queued, rt->status_held,
               rt->srv->stopping ? " stopping" : "");
}

static void on_status(evutil_socket_t fd, short what, void *arg)
{
    struct runtime *rt = arg;
    (void)fd;
    (void)what;
    struct queue_stats qs;
    queue_stats(rt->srv->dctx.queue, &qs);
    if (rt->srv->sessions_open != rt->status_open || rt->srv->sessions_total != rt->status_total ||
        qs.messages != rt->status_queued || qs.held != rt->status_held)
        send_status(rt, "");
}

/* Persistent timers for the watchdog (half the period systemd asked for) and the status line.
 * 0 ok, -1 if libevent cannot make them. */
static int notify_setup(struct runtime *rt)
{
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        uint64_t half = usec / 2;
        struct timeval tv = {.tv_sec = (time_t)(half / 1000000),
                             .tv_usec = (suseconds_t)(half % 1000000)};
        rt->watchdog = event_new(rt->base, -1, EV_PERSIST, on_watchdog, rt);
        if (!rt->watchdog || event_add(rt->watchdog, &tv) != 0)
            return -1;
        log_info("event=watchdog interval_ms=%lu", (unsigned long)(half / 1000));
    }
    struct timeval st = {.tv_sec = STATUS_INTERVAL_SECONDS};
    rt->status = event_new(rt->base, -1, EV_PERSIST, on_status, rt);
    if (!rt->status || event_add(rt->status, &st) != 0)
        return -1;
    return 0;
}

static void on_grace_expired(evutil_socket_t fd, short what, void *arg)
{
    struct runtime *rt = arg;
    (void)fd;
    (void)what;
    log_warn("event=shutdown_forced sessions_open=%u", rt->srv->sessions_open);
    event_base_loopexit(rt->base, NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct runtime *rt = arg;
    (void)what;
    if (++rt->signals > 1) {
        log_warn("event=shutdown_now signal=%d", (int)sig);
        event_base_loopexit(rt->base, NULL);
        return;
    }
    /* Stop accepting; sessions in flight finish (bounded by the grace time). */
    log_info("event=stopping signal=%d sessions_open=%u", (int)sig, rt->srv->sessions_open);
    sd_notify(0, "STOPPING=1");
    server_drain(rt->srv);
    send_status(rt, "");
    if (rt->srv->sessions_open == 0) {
        event_base_loopexit(rt->base, NULL);
        return;
    }
    struct timeval grace = {.tv_sec = SHUTDOWN_GRACE_SECONDS};
    rt->grace = evtimer_new(rt->base, on_grace_expired, rt);
    if (!rt->grace || evtimer_add(rt->grace, &grace) != 0)
        event_base_loopexit(rt->base, NULL);
}

/* systemd's reload protocol: RELOADING=1 with the monotonic time, then READY=1 when done,
 * whether the new config was taken or refused (the old one still serves). */
static void on_reload(evutil_socket_t sig, short what, void *arg)
{
    struct runtime *rt = arg;
    struct timespec now;
    char *errors = NULL;
    (void)sig;
    (void)what;
    if (rt->srv->stopping) {
        log_info("event=reload_ignored reason=\"shutting down\"");
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
               (unsigned long long)now.tv_sec * 1000000ULL +
                   (unsigned long long)now.tv_nsec / 1000ULL);
    log_info("event=reloading config=%s sessions_open=%u", rt->srv->gen->cfg->path,
             rt->srv->sessions_open);
    /* the path string lives in the current config, which outlives the call */
    if (server_reload(rt->srv, rt->srv->gen->cfg->path, &errors) != 0) {
        char safe[1100];
        /* one line per problem; a config error names the file and line */
        for (char *line = errors, *end; line && *line; line = end) {
            end = line + strcspn(line, "\n");
            size_t n = (size_t)(end - line);
            if (*end)
                end++;
            if (n)
                log_error("event=reload_failed error=%s", log_safe(safe, sizeof(safe), line, n));
        }
        log_error("event=reload_refused effect=\"the running configuration stays\"");
    }
    free(errors);
    send_status(rt, "READY=1\n");
}

static int run(struct config *cfg, int check_only)
{
    int ret = 1;
    char err[1024], safe[1200];
    struct event *sigs[3] = {NULL, NULL, NULL};
    struct runtime rt = {0};
    rt.base = event_base_new();
    if (!rt.base) {
        fprintf(stderr, "smtp-oauth-proxy: cannot create the event loop\n");
        config_free(cfg);
        return 1;
    }
    /* A SIGHUP while starting (issuer discovery can take seconds) must not kill the daemon:
     * it is ignored until the loop handles it, from READY=1 on. */
    if (!check_only)
        signal(SIGHUP, SIG_IGN);
    /* server_new takes cfg; it also loads certificates and sets up each account's provider,
     * so --check finds those problems too. */
    rt.srv = server_new(rt.base, cfg, err, sizeof(err));
    if (!rt.srv) {
        fprintf(stderr, "%s\n", err);
        goto out;
    }
    if (check_only) {
        printf("ok\n");
        ret = 0;
        goto out;
    }
    if (server_listen(rt.srv, err, sizeof(err)) != 0) {
        log_error("event=listen_failed reason=%s", log_safe(safe, sizeof(safe), err, strlen(err)));
        goto out;
    }
    rt.metrics = metrics_http_start(rt.srv, err, sizeof(err));
    if (!rt.metrics && err[0]) {
        log_error("event=listen_failed reason=%s", log_safe(safe, sizeof(safe), err, strlen(err)));
        goto out;
    }
    /* Before READY=1: once systemd says we run, `token` must find us. */
    rt.control = control_new(rt.srv, err, sizeof(err));
    if (!rt.control) {
        log_error("event=control_failed reason=%s", log_safe(safe, sizeof(safe), err, strlen(err)));
        goto out;
    }
    int signums[3] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        sigs[i] =
            evsignal_new(rt.base, signums[i], signums[i] == SIGHUP ? on_reload : on_signal, &rt);
        if (!sigs[i] || event_add(sigs[i], NULL) != 0) {
            log_error("event=signal_setup_failed");
            goto out;
        }
    }
    if (notify_setup(&rt) != 0) {
        log_error("event=notify_setup_failed");
        goto out;
    }
    /* Not for --check: the spool's lock belongs to the running daemon (ExecReload checks the
     * new config while it runs). After the control socket, whose "another smtp-oauth-proxy is
     * running" says more than a locked spool; before the loop runs, so before any device
     * commits to it. */
    const char *nofsync = getenv("SOP_SPOOL_FSYNC");
    int do_fsync = !(nofsync && strcmp(nofsync, "0") == 0);
    if (!do_fsync)
        log_warn("event=spool_fsync_off reason=\"SOP_SPOOL_FSYNC=0 (for measurements only)\" "
                 "effect=\"a crash or power loss can lose messages the devices heard 250 for\"");
    rt.srv->dctx.queue = queue_new(&rt.srv->dctx, rt.srv->gen, rt.srv->gen->cfg->state_dir,
                                   do_fsync, err, sizeof(err));
    if (!rt.srv->dctx.queue) {
        log_error("event=spool_failed reason=%s", log_safe(safe, sizeof(safe), err, strlen(err)));
        goto out;
    }
    rt.srv->dctx.committer =
        spool_committer_new(rt.base, rt.srv->dctx.queue, rt.srv->gen->cfg->spool_commit_threads);
    if (!rt.srv->dctx.committer) {
        log_error("event=spool_failed reason=\"cannot start the spool commit threads\"");
        goto out;
    }
    /* every committed message is scheduled again (those due at once) */
    if (queue_recover(rt.srv->dctx.queue, err, sizeof(err)) != 0) {
        log_error("event=spool_failed reason=%s", log_safe(safe, sizeof(safe), err, strlen(err)));
        goto out;
    }
    log_info("event=ready listeners=%zu accounts=%zu devices=%zu", rt.srv->nlisteners,
             rt.srv->gen->cfg->naccounts, rt.srv->gen->cfg->ndevices);
    send_status(&rt, "READY=1\n");
    event_base_dispatch(rt.base);
    log_info("event=stopped sessions_total=%lu", rt.srv->sessions_total);
    ret = 0;
out:
    for (int i = 0; i < 3; i++)
        if (sigs[i])
            event_free(sigs[i]);
    if (rt.grace)
        event_free(rt.grace);
    /* Before the loop below, which runs while any event is added. */
    if (rt.watchdog)
        event_free(rt.watchdog);
    if (rt.status)
        event_free(rt.status);
    /* it reads the server */
    metrics_http_free(rt.metrics);
    control_free(rt.control); /* its connections may wait on the server's token caches */
    server_free(rt.srv);
    /* Upstream sessions that were sent QUIT own themselves until answered (at most a few
     * seconds): let them finish so nothing is left behind. */
    for (int i = 0; i < 1000 && event_base_get_num_events(rt.base, EVENT_BASE_COUNT_ADDED) > 0; i++)
        event_base_loop(rt.base, EVLOOP_ONCE);
    event_base_free(rt.base);
    return ret;
}

int main(int argc, char **argv)
{
    const char *config_path = DEFAULT_CONFIG;
    int check_only = 0, cmd = 0;
    for (int i = 1; i < argc && !cmd; i++) {
        if ((strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "-c") == 0) && i + 1 < argc) {
            config_path = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            config_path = argv[i] + 9;
        } else if (strcmp(argv[i], "--check") == 0) {
            check_only = 1;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("smtp-oauth-proxy 0.1.0\n");
            return 0;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] != '-' && cli_is_command(argv[i])) {
            cmd = i; /* what follows is the command's */
        } else {
            fprintf(stderr, "smtp-oauth-proxy: unknown %s '%s'\n",
                    argv[i][0] == '-' ? "argument" : "command", argv[i]);
            usage(stderr);
            return 2;
        }
    }

    if (cmd && check_only) {
        fprintf(stderr, "smtp-oauth-proxy: --check takes no command\n");
        usage(stderr);
        return 2;
    }
    /* Before anything reads a secret (config_load reads the client secret and password files;
     * the daemon and every command then hold tokens): a non-dumpable process leaves no core
     * file, whatever `ulimit -c` or the unit says, so a crash cannot put the client secret or a
     * token on disk. It also keeps other non-root users, even with our uid, from attaching with
     * ptrace or reading /proc/PID/mem and environ. Secret buffers are MADV_DONTDUMP too
     * (common/secret.c), for a core taken anyway (a kernel or admin that forces one). */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        fprintf(stderr, "smtp-oauth-proxy: warning: cannot mark the process non-dumpable\n");
    char *errors = NULL;
    struct config *cfg = config_load(config_path, &errors);
    if (!cfg) {
        fprintf(stderr, "%s", errors ? errors : "cannot load configuration\n");
        if (errors && errors[0] && errors[strlen(errors) - 1] != '\n')
            fputc('\n', stderr);
        free(errors);
        return 1;
    }
    free(errors);
    log_set_level(cfg->log_level);
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "smtp-oauth-proxy: curl_global_init failed\n");
        config_free(cfg);
        return 1;
    }
    int ret;
    if (cmd) {
        /* A command's stdout may be a token for another program: only warnings and errors
         * go to stderr, never the daemon's info lines. */
        log_set_level(cfg->log_level < LOGL_WARN ? cfg->log_level : LOGL_WARN);
        ret = cli_run(cfg, argv[cmd], argc - cmd - 1, argv + cmd + 1);
    } else {
        ret = run(cfg, check_only);
    }
    curl_global_cleanup();
    return ret;
}
