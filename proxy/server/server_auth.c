/* AUTH PLAIN and LOGIN from devices (RFC 4954, RFC 4616, the LOGIN prompts copiers expect).
 * Passwords are checked against the device table and wiped as soon as they have been. */
#include "proxy/server/server_session_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>

#include "common/log.h"
#include "common/secret.h"
#include "proxy/runtime/auth_throttle.h"
#include "proxy/runtime/auth_worker.h"
#include "proxy/runtime/device.h"
#include "proxy/runtime/device_stats.h"
#include "proxy/runtime/metrics.h"
#include "proxy/smtp/sasl.h"
#include "proxy/server/server.h"
#include "proxy/server/server_int.h"
#include "proxy/runtime/server_gen.h"

static int auth_allowed_here(struct server_session *s)
{
    return s->tls || device_address_known(s->gen->devices, (struct sockaddr *)&s->peer);
}

/* ---- password guessing: per-source delays and blocks (auth_throttle.h) ---- */

#define BLOCKED_REPLY "421 4.7.0 Too many failed logins from your address, try again later"

/* A failure's reply waiting out its delay. It names its session by id, not by pointer: the
 * session may end meanwhile (the server frees what is left at shutdown). */
struct auth_delay {
    struct server *srv;
    struct auth_delay *next, *prev;
    struct event *ev;
    char session[17];
    int blocked; /* this failure started a block: 421 and close instead of 535 */
};

struct auth_throttle *server_auth_throttle(struct server *srv)
{
    const struct config *cfg = srv->gen->cfg; /* the current generation: a reload applies */
    struct auth_throttle_limits lim = {.fail_limit = cfg->auth_fail_limit,
                                       .window_ms = 600000,
                                       .block_ms = (int64_t)cfg->auth_block_time * 1000,
                                       .delay_first_ms = 500,
                                       .delay_max_ms = 8000};
    auth_throttle_set_limits(srv->throttle, &lim);
    return srv->throttle;
}

/* IPv4 and IPv4-mapped IPv6 alike, as 16 bytes; 0 ok, -1 neither family. */
static int addr16(const struct sockaddr *sa, unsigned char out[16])
{
    memset(out, 0, 16);
    if (sa->sa_family == AF_INET) {
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
        return 0;
    }
    return -1;
}

unsigned server_sessions_from(const struct server *srv, const struct sockaddr *sa)
{
    unsigned char want[16], have[16];
    unsigned n = 0;
    if (addr16(sa, want) != 0)
        return 0;
    for (const struct server_session *ss = srv->sessions; ss; ss = ss->next)
        if (addr16((const struct sockaddr *)&ss->peer, have) == 0 && memcmp(want, have, 16) == 0)
            n++;
    return n;
}

static void delay_unlink_free(struct auth_delay *ad)
{
    if (ad->prev)
        ad->prev->next = ad->next;
    else
        ad->srv->auth_delays = ad->next;
    if (ad->next)
        ad->next->prev = ad->prev;
    event_free(ad->ev);
    free(ad);
}

void server_auth_delays_free(struct server *srv)
{
    while (srv->auth_delays)
        delay_unlink_free(srv->auth_delays);
}

static void reply_failed(struct server_session *s, int blocked)
{
    if (blocked) {
        metrics_connection_refused(s->srv->metrics, METRICS_REFUSED_AUTH_BLOCKED);
        ss_reply(s, BLOCKED_REPLY);
        ss_close_after_flush(s);
    } else {
        ss_reply_error(s, "535 5.7.8 Authentication credentials invalid");
    }
    ss_set_busy(s, 0);
}

static void on_delay_over(evutil_socket_t fd, short what, void *arg)
{
    struct auth_delay *ad = arg;
    (void)fd;
    (void)what;
    struct server_session *s = ad->srv->sessions;
    while (s && strcmp(s->id, ad->session) != 0)
        s = s->next;
    int blocked = ad->blocked;
    delay_unlink_free(ad);
    if (s) /* else the device hung up meanwhile */
        reply_failed(s, blocked);
}

/* The failure's reply after delay_ms; the session stays busy (reads nothing) meanwhile. */
static void reply_failed_later(struct server_session *s, unsigned delay_ms, int blocked)
{
    struct auth_delay *ad = delay_ms ? calloc(1, sizeof(*ad)) : NULL;
    if (ad)
        ad->ev = evtimer_new(s->srv->base, on_delay_over, ad);
    if (!ad || !ad->ev) {
        free(ad);
        reply_failed(s, blocked);
        return;
    }
    ad->srv = s->srv;
    ad->blocked = blocked;
    snprintf(ad->session, sizeof(ad->session), "%s", s->id);
    ad->next = s->srv->auth_delays;
    if (ad->next)
        ad->next->prev = ad;
    s->srv->auth_delays = ad;
    struct timeval tv = {.tv_sec = delay_ms / 1000, .tv_usec = (delay_ms % 1000) * 1000};
    evtimer_add(ad->ev, &tv);
}

/* A blocked source hears 421 and is closed: 1. Else 0. */
static int refused_blocked(struct server_session *s)
{
    struct auth_throttle_key k;
    int64_t left = 0;
    if (auth_throttle_key_of((struct sockaddr *)&s->peer, &k) != 0 ||
        !auth_throttle_blocked(server_auth_throttle(s->srv), &k, &left))
        return 0;
    log_warn("event=refused session=%s ip=%s reason=\"auth_blocked\" remaining_s=%lld", s->id,
             s->ip, (long long)((left + 999) / 1000));
    metrics_connection_refused(s->srv->metrics, METRICS_REFUSED_AUTH_BLOCKED);
    ss_enter_state(s, SS_HELO);
    ss_reply(s, BLOCKED_REPLY);
    ss_close_after_flush(s);
    return 1;
}

static void on_auth_checked(void *arg, const struct cfg_device *d, const char *why)
{
    struct server_session *s = arg;
    s->auth_job = NULL;
    if (!d) {
        struct auth_throttle_key k;
        int blocked_now = 0;
        unsigned delay = 0;
        if (auth_throttle_key_of((struct sockaddr *)&s->peer, &k) == 0)
            delay = auth_throttle_failed(server_auth_throttle(s->srv), &k, &blocked_now);
        log_warn("event=auth_failed session=%s ip=%s user=%s reason=\"%s\" delay_ms=%u", s->id,
                 s->ip, s->auth_user, why ? why : "refused", delay);
        metrics_auth_failed(s->srv->metrics, s->auth_user_device);
        if (blocked_now) {
            char src[64];
            log_warn("event=auth_blocked ip=%s source=%s failures=%u block_s=%u", s->ip,
                     auth_throttle_key_str(&k, src, sizeof(src)), s->srv->gen->cfg->auth_fail_limit,
                     s->srv->gen->cfg->auth_block_time);
        }
        reply_failed_later(s, delay, blocked_now);
        return;
    }
    s->auth_device = d;
    device_stats_seen(device_stats_keeper_stats(s->srv->devstats), d->name, (int64_t)time(NULL));
    log_info("event=auth_ok session=%s ip=%s device=%s user=%s", s->id, s->ip, d->name,
             s->auth_user);
    ss_reply(s, "235 2.7.0 Authentication successful");
    ss_set_busy(s, 0);
}

/* The password is checked by the auth worker's threads (a yescrypt check costs ~20 ms of CPU):
 * the session waits like it waits for the upstream, the loop serves everyone else meanwhile. */
static void auth_check(struct server_session *s, const char *user, const char *pass)
{
    if (refused_blocked(s))
        return;
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
    if (refused_blocked(s))
        return;
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
