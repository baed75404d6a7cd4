/* AUTH PLAIN and LOGIN from devices (RFC 4954, RFC 4616, the LOGIN prompts copiers expect).
 * Passwords are checked against the device table and wiped as soon as they have been. */
#include "proxy/server/server_session_int.h"

#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/log.h"
#include "common/secret.h"
#include "proxy/runtime/auth_worker.h"
#include "proxy/runtime/device.h"
#include "proxy/runtime/device_stats.h"
#include "proxy/runtime/metrics.h"
#include "proxy/smtp/sasl.h"
#include "proxy/server/server.h"
#include "proxy/runtime/server_gen.h"

static int auth_allowed_here(struct server_session *s)
{
    return s->tls || device_address_known(s->gen->devices, (struct sockaddr *)&s->peer);
}

static void on_auth_checked(void *arg, const struct cfg_device *d, const char *why)
{
    struct server_session *s = arg;
    s->auth_job = NULL;
    if (!d) {
        log_warn("event=auth_failed session=%s ip=%s user=%s reason=\"%s\"", s->id, s->ip,
                 s->auth_user, why ? why : "refused");
        metrics_auth_failed(s->srv->metrics, s->auth_user_device);
        ss_reply_error(s, "535 5.7.8 Authentication credentials invalid");
    } else {
        s->auth_device = d;
        device_stats_seen(device_stats_keeper_stats(s->srv->devstats), d->name,
                          (int64_t)time(NULL));
        log_info("event=auth_ok session=%s ip=%s device=%s user=%s", s->id, s->ip, d->name,
                 s->auth_user);
        ss_reply(s, "235 2.7.0 Authentication successful");
    }
    ss_set_busy(s, 0);
}

/* The password is checked by the auth worker's threads (a yescrypt check costs ~20 ms of CPU):
 * the session waits like it waits for the upstream, the loop serves everyone else meanwhile. */
static void auth_check(struct server_session *s, const char *user, const char *pass)
{
    log_safe(s->auth_user, sizeof(s->auth_user), user, strlen(user));
    s->auth_user_device = metrics_device_by_user(s->srv->metrics, user);
    ss_enter_state(s, SS_HELO);
    s->auth_job = auth_worker_check(s->gen->auth, (struct sockaddr *)&s->peer, user, pass,
                                    on_auth_checked, s);
    if (!s->auth_job) {
        ss_reply(s, "454 4.7.0 Temporary authentication failure");
        return;
    }
    ss_set_busy(s, 1);
}

static void auth_plain_response(struct server_session *s, const char *b64)
{
    char *user = NULL, *pass = NULL;
    if (sasl_plain_decode(b64, strlen(b64), &user, &pass) != 0) {
        ss_enter_state(s, SS_HELO);
        ss_reply_error(s, "501 5.5.2 Cannot decode AUTH PLAIN response");
        return;
    }
    auth_check(s, user, pass);
    secret_free(user);
    secret_free(pass);
}

void server_auth_command(struct server_session *s, const struct smtp_cmd *cmd)
{
    if (!device_has_logins(s->gen->devices)) {
        ss_reply_error(s, "503 5.5.1 AUTH not available: devices are identified by address");
        return;
    }
    if (s->auth_device) {
        ss_reply_error(s, "503 5.5.1 Already authenticated");
        return;
    }
    if (!auth_allowed_here(s)) {
        ss_reply_error(s, "538 5.7.11 Encryption required for requested authentication mechanism");
        return;
    }
    char mech[32];
    const char *ir = NULL;
    size_t ml = strcspn(cmd->arg, " ");
    if (ml == 0 || ml >= sizeof(mech)) {
        ss_reply_error(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
        return;
    }
    memcpy(mech, cmd->arg, ml);
    mech[ml] = '\0';
    if (cmd->arg[ml] == ' ')
        ir = cmd->arg + ml + 1;
    if (strcasecmp(mech, "PLAIN") == 0) {
        if (ir) {
            auth_plain_response(s, ir);
            return;
        }
        ss_enter_state(s, SS_AUTH_PLAIN);
        ss_reply(s, "334 ");
    } else if (strcasecmp(mech, "LOGIN") == 0) {
        if (ir) {
            if (sasl_login_decode(ir, strlen(ir), &s->login_user) != 0) {
                ss_reply_error(s, "501 5.5.2 Cannot decode AUTH LOGIN response");
                return;
            }
            ss_enter_state(s, SS_AUTH_PASS);
            ss_reply(s, "334 UGFzc3dvcmQ6"); /* "Password:" */
            return;
        }
        ss_enter_state(s, SS_AUTH_USER);
        ss_reply(s, "334 VXNlcm5hbWU6"); /* "Username:": some copiers accept no other prompt */
    } else {
        ss_reply_error(s, "504 5.5.4 Unrecognized authentication type");
    }
}

void server_auth_line(struct server_session *s, const struct smtp_cmd *cmd)
{
    if (strcmp(cmd->arg, "*") == 0) {
        secret_free(s->login_user);
        s->login_user = NULL;
        ss_enter_state(s, SS_HELO);
        ss_reply_error(s, "501 5.7.0 Authentication cancelled");
        return;
    }
    if (s->state == SS_AUTH_PLAIN) {
        auth_plain_response(s, cmd->arg);
        return;
    }
    char *field = NULL;
    if (sasl_login_decode(cmd->arg, strlen(cmd->arg), &field) != 0) {
        secret_free(s->login_user);
        s->login_user = NULL;
        ss_enter_state(s, SS_HELO);
        ss_reply_error(s, "501 5.5.2 Cannot decode AUTH LOGIN response");
        return;
    }
    if (s->state == SS_AUTH_USER) {
        s->login_user = field;
        ss_enter_state(s, SS_AUTH_PASS);
        ss_reply(s, "334 UGFzc3dvcmQ6");
        return;
    }
    auth_check(s, s->login_user, field);
    secret_free(field);
    secret_free(s->login_user);
    s->login_user = NULL;
}
