/* AUTH PLAIN and LOGIN from devices (RFC 4954, RFC 4616, the LOGIN prompts copiers expect).
 * Passwords are checked against the device table and wiped as soon as they have been. */
#include "proxy/server_session_int.h"

#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/secret.h"
#include "proxy/device.h"
#include "proxy/sasl.h"
#include "proxy/server.h"

static int auth_allowed_here(struct server_session *s)
{
    return s->tls || device_address_known(s->srv->devices, (struct sockaddr *)&s->peer);
}

static void auth_check(struct server_session *s, const char *user, const char *pass)
{
    const char *why = NULL;
    const struct cfg_device *d =
        device_authenticate(s->srv->devices, (struct sockaddr *)&s->peer, user, pass, &why);
    char u[200];
    log_safe(u, sizeof(u), user, strlen(user));
    ss_enter_state(s, SS_HELO);
    if (!d) {
        log_warn("event=auth_failed session=%s ip=%s user=%s reason=\"%s\"", s->id, s->ip, u,
                 why ? why : "refused");
        ss_reply_error(s, "535 5.7.8 Authentication credentials invalid");
        return;
    }
    s->auth_device = d;
    log_info("event=auth_ok session=%s ip=%s device=%s user=%s", s->id, s->ip, d->name, u);
    ss_reply(s, "235 2.7.0 Authentication successful");
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
    if (!device_has_logins(s->srv->devices)) {
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
