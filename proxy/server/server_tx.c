/* The mail transaction on the device side: MAIL, RCPT, DATA (the body streamed to the backend
 * with backpressure) and RSET. Each verb goes to the device's backend (backend.h), whatever the
 * delivery mode behind it, and the device hears the reply it gives. */
#include "proxy/server/server_session_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/bufferevent.h>

#include "common/log.h"
#include "proxy/config/config.h"
#include "proxy/runtime/device.h"
#include "proxy/runtime/device_stats.h"
#include "proxy/delivery/backend.h"
#include "proxy/server/server.h"
#include "proxy/runtime/server_gen.h"
#include "proxy/smtp/smtp_data.h"

static int has_8bit(const char *p)
{
    for (; *p; p++)
        if ((unsigned char)*p >= 0x80)
            return 1;
    return 0;
}

static void on_mail_reply(void *arg, const char *upstream_reply)
{
    struct server_session *s = arg;
    if (upstream_reply[0] == '2')
        ss_enter_state(s, SS_MAIL);
    ss_reply(s, "%s", upstream_reply);
    ss_set_busy(s, 0);
}

void server_tx_mail(struct server_session *s, const struct smtp_cmd *cmd)
{
    const struct config *cfg = s->gen->cfg;
    const struct cfg_device *d = s->auth_device;
    if (!d)
        d = device_by_address(s->gen->devices, (struct sockaddr *)&s->peer);
    if (!d) {
        if (device_has_logins(s->gen->devices)) {
            ss_reply_error(s, "530 5.7.0 Authentication required");
        } else {
            if (s->proxy_local) /* the balancer's health check: no device was meant */
                log_debug("event=refused session=%s ip=%s reason=\"no device\" proxy_local=1",
                          s->id, s->ip);
            else
                log_warn("event=refused session=%s ip=%s reason=\"unknown device\"", s->id, s->ip);
            ss_reply_error(s, "550 5.7.1 Client host [%s] is not a configured device", s->ip);
        }
        return;
    }
    /* a device that starts a transaction is one that still sends (`devices`) */
    device_stats_seen(device_stats_keeper_stats(s->srv->devstats), d->name, (int64_t)time(NULL));
    struct txn_mail_opts o = {0};
    for (size_t i = 0; i < cmd->nparams; i++) {
        const struct smtp_param *p = &cmd->params[i];
        if (strcmp(p->key, "SIZE") == 0 && p->value) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(p->value, &end, 10);
            if (*end || errno || p->value[0] < '0' || p->value[0] > '9') {
                ss_reply_error(s, "501 5.5.4 Bad SIZE parameter");
                return;
            }
            if (v > cfg->max_message_size) {
                ss_reply_error(s, "552 5.3.4 Message size exceeds fixed maximum message size");
                return;
            }
            o.size = v;
        } else if (strcmp(p->key, "BODY") == 0 && p->value) {
            if (strcasecmp(p->value, "8BITMIME") == 0)
                o.body_8bit = 1;
            else if (strcasecmp(p->value, "7BIT") != 0) {
                ss_reply_error(s, "501 5.5.4 Unsupported BODY type");
                return;
            }
        } else if (strcmp(p->key, "SMTPUTF8") == 0 && !p->value) {
            o.smtputf8 = 1;
        } else if (strcmp(p->key, "AUTH") == 0) {
            /* RFC 4954 5: the submitter's identity; we authenticate as the account instead */
        } else {
            ss_reply_error(s, "555 5.5.4 Unsupported MAIL parameter %s", p->key);
            return;
        }
    }
    if (!o.smtputf8 && has_8bit(cmd->path)) {
        ss_reply_error(s, "553 5.6.7 Non-ASCII address needs SMTPUTF8");
        return;
    }
    /* The backend belongs to one device (its account, its name in the log): a session that AUTHs
     * as another device after a first message gets a backend of its own. */
    if (s->backend_device != d) {
        backend_free(s->backend);
        s->backend =
            backend_new(&s->srv->dctx, s->gen, d, (struct sockaddr *)&s->peer, s->srv->dns, s->id);
        s->backend_device = s->backend ? d : NULL;
        if (!s->backend) {
            ss_reply(s, "451 4.3.0 Out of memory");
            return;
        }
    }
    ss_set_busy(s, 1);
    s->backend->ops->mail(s->backend, cmd->path, &o, on_mail_reply, s);
}

static void on_rcpt_reply(void *arg, const char *upstream_reply)
{
    struct server_session *s = arg;
    if (upstream_reply[0] == '2') {
        s->rcpts++;
        ss_enter_state(s, SS_RCPT);
    } else if (!s->backend->ops->in_transaction(s->backend)) {
        ss_reset_transaction(s); /* the upstream is gone: the transaction with it */
    }
    ss_reply(s, "%s", upstream_reply);
    ss_set_busy(s, 0);
}

void server_tx_rcpt(struct server_session *s, const struct smtp_cmd *cmd)
{
    if (s->rcpts >= s->gen->cfg->max_recipients) {
        ss_reply(s, "452 4.5.3 Too many recipients");
        return;
    }
    if (cmd->path[0] == '\0') {
        ss_reply_error(s, "501 5.1.3 Empty recipient");
        return;
    }
    if (cmd->nparams > 0) {
        ss_reply_error(s, "555 5.5.4 Unsupported RCPT parameter %s", cmd->params[0].key);
        return;
    }
    if (has_8bit(cmd->path)) {
        ss_reply_error(s, "553 5.6.7 Non-ASCII address needs SMTPUTF8");
        return;
    }
    ss_set_busy(s, 1);
    s->backend->ops->rcpt(s->backend, cmd->path, on_rcpt_reply, s);
}

static void on_drain(void *arg)
{
    struct server_session *s = arg;
    if (!s->paused)
        return;
    s->paused = 0;
    ss_set_busy(s, s->busy);
}

static void on_data_reply(void *arg, const char *upstream_reply)
{
    struct server_session *s = arg;
    if (strncmp(upstream_reply, "354", 3) == 0) {
        smtp_data_dec_reset(s->dec);
        s->backend->ops->set_drain_cb(s->backend, SS_BODY_LOW_MARK, on_drain, s);
        ss_enter_state(s, SS_DATA);
        ss_reply(s, "354 End data with <CR><LF>.<CR><LF>");
    } else {
        if (!s->backend->ops->in_transaction(s->backend))
            ss_reset_transaction(s);
        ss_reply(s, "%s", upstream_reply);
    }
    ss_set_busy(s, 0);
}

void server_tx_data(struct server_session *s, const struct smtp_cmd *cmd)
{
    (void)cmd;
    if (s->state == SS_MAIL) {
        ss_reply_error(s, "554 5.5.1 No valid recipients");
        return;
    }
    ss_set_busy(s, 1);
    s->backend->ops->data(s->backend, on_data_reply, s);
}

static void on_data_end(void *arg, const char *upstream_reply)
{
    struct server_session *s = arg;
    /* The device hears the upstream's own verdict: a 5xx shows as a failure on its screen, a
     * 4xx as try-later. */
    s->messages++;
    ss_reply(s, "%s", upstream_reply);
    ss_reset_transaction(s);
    ss_set_busy(s, 0);
}

void server_tx_data_line(void *arg, const char *line, size_t len)
{
    struct server_session *s = arg;
    s->backend->ops->data_line(s->backend, line, len);
}

void server_tx_data_finished(struct server_session *s, int rc, const char *err)
{
    if (rc < 0) {
        s->backend->ops->data_abort(s->backend, err);
        ss_reply(s, "%s", err);
        ss_reset_transaction(s);
        return;
    }
    ss_set_busy(s, 1);
    s->backend->ops->data_end(s->backend, on_data_end, s);
}

static void on_rset(void *arg, const char *upstream_reply)
{
    struct server_session *s = arg;
    (void)upstream_reply;
    ss_reset_transaction(s);
    ss_reply(s, "250 2.0.0 OK");
    ss_set_busy(s, 0);
}

void server_tx_rset(struct server_session *s, const struct smtp_cmd *cmd)
{
    (void)cmd;
    if (s->backend && (s->state == SS_MAIL || s->state == SS_RCPT)) {
        ss_set_busy(s, 1);
        s->backend->ops->rset(s->backend, on_rset, s);
        return;
    }
    ss_reset_transaction(s);
    ss_reply(s, "250 2.0.0 OK");
}
