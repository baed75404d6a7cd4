/* Bounces: the DSN (proxy/smtp/dsn.h) for a given-up message, committed to the spool as a message
 * of the same account from the null sender and queued like any other, so it survives a restart and
 * is never bounced itself. */
#include "proxy/delivery/queue_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "proxy/config/config.h"
#include "proxy/delivery/deliver.h"
#include "proxy/runtime/server_gen.h"
#include "store/spool.h"

/* "550 5.7.60 text" -> "5.7.60" (RFC 3463 x.y.z, class 4 or 5); NULL if the reply has none. */
static const char *enhanced_code(const char *reply, char *buf, size_t len)
{
    size_t i = 2, n;
    if (strlen(reply) < 9 || (reply[3] != ' ' && reply[3] != '-'))
        return NULL;
    const char *s = reply + 4;
    if ((s[0] != '4' && s[0] != '5') || s[1] != '.')
        return NULL;
    for (int part = 0; part < 2; part++) {
        for (n = 0; s[i] >= '0' && s[i] <= '9'; i++)
            n++;
        if (n < 1 || n > 3 || (part == 0 && s[i] != '.') ||
            (part == 1 && s[i] != ' ' && s[i] != '\0'))
            return NULL;
        if (part == 0)
            i++;
    }
    if (i >= len)
        return NULL;
    memcpy(buf, s, i);
    buf[i] = '\0';
    return buf;
}

void queue_read_head(struct spool_body *b, char **buf, size_t *len)
{
    char err[512];
    /* dsn_build quotes at most DSN_HEADERS_MAX bytes of whole header lines */
    size_t cap = DSN_HEADERS_MAX + 2, used = 0;
    *buf = NULL;
    *len = 0;
    char *p = b ? malloc(cap) : NULL;
    if (!p) {
        spool_body_free(b);
        return;
    }
    while (used < cap) {
        /* only the start is read: the body's hash is not checked here, nothing is sent on */
        ssize_t r = spool_body_read(b, p + used, cap - used, err, sizeof(err));
        if (r <= 0)
            break;
        used += (size_t)r;
    }
    spool_body_free(b);
    *buf = p;
    *len = used;
}

void queue_read_headers(struct queue *q, const struct spool_envelope *env, char **buf, size_t *len)
{
    char err[512];
    queue_read_head(spool_body_open(q->spool, env, err, sizeof(err)), buf, len);
}

/* Commit the DSN text to the spool from <> to rcpt, for account; then queue it. */
static int spool_dsn(struct queue *q, const struct spool_envelope *orig, const char *text,
                     size_t len, const char *rcpt, char *id_out, char *err, size_t errlen)
{
    char *rcpts[1] = {(char *)rcpt};
    struct spool_envelope env = {
        .account = orig->account,
        .device = "",
        .mail_from = "",
        .rcpts = rcpts,
        .nrcpts = 1,
        .created = queue_now(),
    };
    struct spool_writer *w = spool_writer_new(q->spool, err, errlen);
    if (!w)
        return -1;
    if (spool_writer_write(w, text, len, err, errlen) != 0) {
        spool_writer_abort(w);
        return -1;
    }
    if (spool_writer_commit(w, &env, err, errlen) != 0)
        return -1;
    memcpy(id_out, env.queue_id, sizeof(env.queue_id));
    /* out of memory: it is in the spool, the next start delivers it */
    queue_submit(q, &env);
    return 0;
}

int queue_bounce(struct queue *q, const struct cfg_account *acct, const struct spool_envelope *env,
                 enum dsn_reason reason, const struct txn_result *res, const char *remote_mta,
                 const char *message, size_t message_len, char *err, size_t errlen)
{
    const struct config *cfg = q->gen->cfg;
    struct dsn_rcpt *rr = NULL;
    char(*codes)[16] = NULL;
    char rcpt[DSN_ADDR_MAX + 1], id[SPOOL_ID_LEN + 1], safe[DSN_ADDR_MAX + 16];
    char *text = NULL;
    size_t n = 0, tlen = 0;
    int ret = -1;

    if (!env->mail_from[0])
        return 0; /* a bounce or notification itself: never bounced (RFC 5321 4.5.5) */
    if (!res && reason != DSN_REASON_EXPIRED) {
        snprintf(err, errlen, "queue_bounce: no result to bounce from");
        return -1;
    }
    if (res && res->nrcpts != env->nrcpts) {
        snprintf(err, errlen, "queue_bounce: the result does not match the envelope");
        return -1;
    }
    rr = calloc(env->nrcpts, sizeof(*rr));
    codes = calloc(env->nrcpts, sizeof(*codes));
    if (!rr || !codes) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < env->nrcpts; i++) {
        if (res && res->rcpts[i].status != TXN_PERM)
            continue;
        rr[n].address = env->rcpts[i];
        rr[n].action = DSN_ACTION_FAILED;
        if (res) {
            rr[n].diagnostic = res->rcpts[i].reply[0] ? res->rcpts[i].reply : NULL;
            rr[n].status = enhanced_code(res->rcpts[i].reply, codes[n], sizeof(codes[n]));
        } else {
            /* expired: the last temporary failure is why; the status is 4.4.7 */
            rr[n].diagnostic = env->last_error && env->last_error[0] ? env->last_error : NULL;
        }
        rr[n].remote_mta = remote_mta;
        n++;
    }
    if (n == 0) {
        ret = 0; /* nobody refused permanently */
        goto out;
    }
    struct dsn_input in = {
        .reporting_mta = cfg->hostname,
        .queue_id = env->queue_id,
        .account = env->account,
        .device = env->device,
        .mailbox = acct ? acct->mailbox : NULL,
        .mail_from = env->mail_from,
        .bounce_to = acct ? acct->bounce_to : NULL,
        .arrival = env->created,
        .now = queue_now(),
        .reason = reason,
        .rcpts = rr,
        .nrcpts = n,
        .message = message,
        .message_len = message ? message_len : 0,
        .random = dsn_random_openssl,
    };
    int r = dsn_build(&in, &text, &tlen, rcpt, sizeof(rcpt), err, errlen);
    if (r <= 0) {
        ret = r;
        goto out;
    }
    if (spool_dsn(q, env, text, tlen, rcpt, id, err, errlen) != 0)
        goto out;
    q->bounced++;
    log_info("event=queue_bounced queue_id=%s account=%s attempts=%u rcpts=%zu reason=%s "
             "dsn_queue_id=%s to=%s",
             env->queue_id, env->account, env->attempts, n,
             reason == DSN_REASON_EXPIRED ? "expired" : "refused", id,
             log_safe(safe, sizeof(safe), rcpt, strlen(rcpt)));
    ret = 1;
out:
    free(text);
    free(codes);
    free(rr);
    return ret;
}
