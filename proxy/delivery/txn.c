/* The upstream transaction engine (see txn.h).
 *
 * Commands go one at a time (client_session has one request outstanding; RCPT pipelining would
 * save a round trip per extra recipient, and copiers send to one or two). Body lines are
 * rewritten (sender_rewrite = header), dot-stuffed and handed to the session in 64 KiB batches:
 * one write per line made one TLS record per line (about 13,000 per MB, measured in bench/),
 * costing the proxy and the upstream far more than the bytes do. */
#include "proxy/delivery/txn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/upstream/client_session.h"
#include "proxy/config/config.h"
#include "proxy/smtp/header_rewrite.h"
#include "proxy/runtime/metrics.h"
#include "proxy/smtp/smtp_data.h"
#include "proxy/smtp/smtp_reply.h"
#include "store/spool.h"

#define TXN_BATCH (64 * 1024)
#define TXN_CMD_MAX 510 /* RFC 5321 4.5.3.1.4, without CRLF */

enum txn_step { ST_IDLE, ST_LOCAL, ST_MAIL, ST_RCPT, ST_DATA, ST_BODY, ST_DATA_END, ST_RSET };

/* Where a recipient stands. */
enum rcpt_state {
    RCPT_OPEN,     /* sent, not yet answered */
    RCPT_ACCEPTED, /* 2xx to RCPT: the end of DATA decides */
    RCPT_DECIDED,  /* rcpts[i] holds the outcome */
};

struct rcpt_info {
    enum rcpt_state state;
    int code; /* of the deciding reply (0: the proxy's own words) */
    char enhanced[16];
};

/* The verdict that ended the transaction early, for recipients not sent (txn_rcpt_skip). */
struct verdict {
    int set;
    enum txn_status status;
    int code;
    char enhanced[16];
    char reply[TXN_REPLY_MAX];
};

struct txn {
    const struct txn_conn_ops *ops;
    struct upstream_conn *conn; /* NULL once released */
    struct client_session *cs;
    const struct cfg_account *acct;
    struct metrics *m;
    char log_id[64];

    enum txn_step step;     /* the step in flight (ST_IDLE: none) */
    enum txn_step local_of; /* ST_LOCAL: the step whose refusal is given */
    txn_cb cb;
    void *arg;
    char local_reply[TXN_REPLY_MAX]; /* ST_LOCAL: the refusal given after the round trip */

    char *mail_from; /* as sent */
    int in_tx;       /* MAIL accepted, transaction not ended */
    int broken;      /* the connection must not be reused */
    int conn_failure;
    char lost_why[256];
    struct verdict verdict;

    struct txn_rcpt_result *rcpts;
    struct rcpt_info *info;
    size_t nrcpts, cap, accepted;
    char data_reply[TXN_REPLY_MAX]; /* the end-of-DATA reply, when there was one */
    int data_code;
    char data_enhanced[16];

    struct header_rewrite *rewrite;
    char *batch;
    size_t batch_len;
    uint64_t size;
    int body_failed;
    void (*drain_cb)(void *arg);
    void *drain_arg;

    struct txn_result res;
};

static const char *step_str(enum txn_step s)
{
    static const char *const names[] = {"none", "local", "MAIL",        "RCPT",
                                        "DATA", "body",  "end of DATA", "RSET"};
    return names[s];
}

static enum txn_status class_status(int code)
{
    if (code / 100 == 2)
        return TXN_OK;
    if (code / 100 == 5)
        return TXN_PERM;
    return TXN_TEMP; /* 4xx, and anything out of place */
}

/* "550 5.1.1 text" from the first line, every byte outside printable ASCII a '?'. */
static void reply_first_line(const struct smtp_reply *rep, char *out, size_t len)
{
    char raw[TXN_REPLY_MAX];
    const char *text = rep->nlines ? rep->lines[0] : "";
    if (*text)
        snprintf(raw, sizeof(raw), "%03d %s", rep->code, text);
    else
        snprintf(raw, sizeof(raw), "%03d", rep->code);
    spool_error_sanitize(out, len, raw);
}

static void decide(struct txn *t, size_t i, enum txn_status st, int code, const char *enhanced,
                   const char *text)
{
    t->rcpts[i].status = st;
    spool_error_sanitize(t->rcpts[i].reply, sizeof(t->rcpts[i].reply), text);
    t->info[i].state = RCPT_DECIDED;
    t->info[i].code = code;
    snprintf(t->info[i].enhanced, sizeof(t->info[i].enhanced), "%s", enhanced ? enhanced : "");
}

/* A verdict for every recipient still in play (open, and accepted unless only_open), and for
 * those not sent yet (txn_rcpt_skip). */
static void decide_rest(struct txn *t, enum txn_status st, int code, const char *enhanced,
                        const char *text, int only_open)
{
    for (size_t i = 0; i < t->nrcpts; i++)
        if (t->info[i].state == RCPT_OPEN || (!only_open && t->info[i].state == RCPT_ACCEPTED))
            decide(t, i, st, code, enhanced, text);
    if (!only_open && !t->verdict.set) {
        t->verdict.set = 1;
        t->verdict.status = st;
        t->verdict.code = code;
        snprintf(t->verdict.enhanced, sizeof(t->verdict.enhanced), "%s", enhanced ? enhanced : "");
        spool_error_sanitize(t->verdict.reply, sizeof(t->verdict.reply), text);
    }
}

/* The step is over: tell the caller (who may free t: nothing of t is touched afterwards). */
static void step_done(struct txn *t, int code, const char *text, const struct smtp_reply *rep,
                      const char *err)
{
    txn_cb cb = t->cb;
    void *arg = t->arg;
    struct txn_reply r = {.code = code, .text = text, .rep = rep, .err = err};
    t->step = ST_IDLE;
    t->cb = NULL;
    t->arg = NULL;
    if (cb)
        cb(arg, &r);
}

/* Bookkeeping every upstream reply gets. */
static void saw_reply(struct txn *t, const struct smtp_reply *rep)
{
    if (t->ops->trace)
        t->ops->trace(t->conn, NULL, rep);
    if (rep->code == 421 || strcmp(rep->enhanced, "4.3.2") == 0)
        t->conn_failure = 1; /* the connection, not the message: the queue stops its run */
    if (rep->code == 421) {  /* the upstream is closing it */
        t->broken = 1;
        t->in_tx = 0;
    }
}

static void send_command(struct txn *t, enum txn_step step, const char *line,
                         client_reply_cb on_reply)
{
    t->step = step;
    if (t->ops->trace)
        t->ops->trace(t->conn, line, NULL);
    client_session_command(t->cs, line, on_reply, t);
}

/* No reply: the connection is gone (or the session refused the request). */
static void lost(struct txn *t, const char *err)
{
    char reply[TXN_REPLY_MAX];
    snprintf(t->lost_why, sizeof(t->lost_why), "%s", err ? err : "connection lost");
    snprintf(reply, sizeof(reply), "451 4.4.2 Upstream connection lost during %s, try again later",
             step_str(t->step));
    t->conn_failure = 1;
    t->broken = 1;
    t->in_tx = 0;
    decide_rest(t, TXN_TEMP, 0, NULL, reply, 0);
    step_done(t, 451, reply, NULL, t->lost_why);
}

/* The end of a step: no reply is a lost connection; else the text the device hears. */
static int reply_text(struct txn *t, const struct smtp_reply *rep, const char *err, char *text,
                      size_t len)
{
    if (!rep) {
        lost(t, err);
        return -1;
    }
    saw_reply(t, rep);
    smtp_reply_text(rep, text, len);
    return 0;
}

/* ---- refusals the proxy decides itself ---- */

/* A refusal of MAIL or DATA reaches the caller from the event loop, after a command that
 * changes nothing (RSET before MAIL, NOOP inside a transaction): its reply also tells whether
 * the connection is still good. */
static void on_local(void *arg, const struct smtp_reply *rep, const char *err)
{
    struct txn *t = arg;
    char reply[TXN_REPLY_MAX];
    (void)err;
    if (rep) {
        saw_reply(t, rep);
        if (rep->code / 100 != 2)
            t->broken = 1;
    } else {
        t->broken = 1;
        t->in_tx = 0;
    }
    snprintf(reply, sizeof(reply), "%s", t->local_reply);
    int code = atoi(reply);
    if (t->local_of != ST_IDLE)
        decide_rest(t, class_status(code), 0, NULL, reply, 0);
    step_done(t, code, reply, NULL, NULL);
}

static void refuse_locally(struct txn *t, enum txn_step of, const char *reply, txn_cb cb, void *arg)
{
    t->cb = cb;
    t->arg = arg;
    t->local_of = of;
    snprintf(t->local_reply, sizeof(t->local_reply), "%s", reply);
    send_command(t, ST_LOCAL, t->in_tx ? "NOOP" : "RSET", on_local);
}

/* ---- the envelope ---- */

struct txn *txn_new(const struct txn_conn_ops *ops, struct upstream_conn *c,
                    const struct cfg_account *acct, struct metrics *m, const char *log_id)
{
    struct txn *t = calloc(1, sizeof(*t));
    if (!t)
        goto oom;
    t->ops = ops;
    t->conn = c;
    t->cs = ops->session(c);
    t->acct = acct;
    t->m = m;
    snprintf(t->log_id, sizeof(t->log_id), "%s", log_id ? log_id : "-");
    t->batch = malloc(TXN_BATCH);
    if (!t->cs || !t->batch)
        goto oom;
    return t;
oom:
    if (t) {
        free(t->batch);
        free(t);
    }
    ops->release(c, 0);
    return NULL;
}

void txn_release(struct txn *t, int reusable)
{
    if (!t || !t->conn)
        return;
    reusable = reusable && !t->broken && !t->conn_failure && !t->in_tx && t->step == ST_IDLE &&
               client_session_usable(t->cs);
    client_session_set_drain_cb(t->cs, 0, NULL, NULL);
    t->ops->release(t->conn, reusable); /* a closed one calls none of our callbacks again */
    t->conn = NULL;
    t->cs = NULL;
    t->step = ST_IDLE;
    t->cb = NULL;
}

void txn_free(struct txn *t, int reusable)
{
    if (!t)
        return;
    txn_release(t, reusable);
    header_rewrite_free(t->rewrite);
    free(t->mail_from);
    free(t->rcpts);
    free(t->info);
    free(t->batch);
    free(t);
}

static void on_mail(void *arg, const struct smtp_reply *rep, const char *err)
{
    struct txn *t = arg;
    char text[TXN_TEXT_MAX], first[TXN_REPLY_MAX];
    if (reply_text(t, rep, err, text, sizeof(text)) != 0)
        return;
    metrics_upstream_reply(t->m, METRICS_CMD_MAIL, rep->code, rep->enhanced);
    if (rep->code / 100 == 2) {
        t->in_tx = 1;
    } else {
        reply_first_line(rep, first, sizeof(first));
        decide_rest(t, class_status(rep->code), rep->code, rep->enhanced, first, 0);
    }
    step_done(t, rep->code, text, rep, NULL);
}

void txn_mail(struct txn *t, const char *from, const struct txn_mail_opts *o, txn_cb cb, void *arg)
{
    const struct smtp_caps *caps = client_session_caps(t->cs);
    const char *refusal = NULL;
    char line[TXN_CMD_MAX + 128];
    int n;

    /* A null sender stays null: it marks a bounce, which must never bounce again. */
    int rewrite = t->acct->sender_rewrite != SENDER_REWRITE_OFF && from[0] != '\0';
    free(t->mail_from);
    t->mail_from = strdup(rewrite ? t->acct->mailbox : from);
    t->size = 0;
    t->body_failed = 0;
    if (!t->mail_from)
        refusal = "451 4.3.0 Out of memory";
    else if (o->smtputf8 && !caps->smtputf8)
        refusal = "555 5.6.7 SMTPUTF8 is not supported by the upstream server";
    else if (o->body_8bit && !caps->eightbitmime)
        refusal = "555 5.6.3 8BITMIME is not supported by the upstream server";
    else if (caps->has_size && caps->size && o->size > caps->size)
        refusal = "552 5.3.4 Message size exceeds the upstream server's limit";
    if (refusal) {
        refuse_locally(t, ST_MAIL, refusal, cb, arg);
        return;
    }
    n = snprintf(line, sizeof(line), "MAIL FROM:<%s>", t->mail_from);
    if (o->size && caps->has_size)
        n +=
            snprintf(line + n, sizeof(line) - (size_t)n, " SIZE=%llu", (unsigned long long)o->size);
    if (o->body_8bit)
        n += snprintf(line + n, sizeof(line) - (size_t)n, " BODY=8BITMIME");
    if (o->smtputf8)
        n += snprintf(line + n, sizeof(line) - (size_t)n, " SMTPUTF8");
    if (n < 0 || (size_t)n > TXN_CMD_MAX) {
        refuse_locally(t, ST_MAIL, "501 5.1.7 Sender address too long", cb, arg);
        return;
    }
    t->cb = cb;
    t->arg = arg;
    send_command(t, ST_MAIL, line, on_mail);
}

/* Room for one more recipient. 0 ok, -1 out of memory. */
static int rcpt_add(struct txn *t)
{
    if (t->nrcpts == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 4;
        struct txn_rcpt_result *r = realloc(t->rcpts, cap * sizeof(*r));
        if (!r)
            return -1;
        t->rcpts = r;
        struct rcpt_info *in = realloc(t->info, cap * sizeof(*in));
        if (!in)
            return -1;
        t->info = in;
        t->cap = cap;
    }
    memset(&t->rcpts[t->nrcpts], 0, sizeof(t->rcpts[0]));
    memset(&t->info[t->nrcpts], 0, sizeof(t->info[0]));
    t->nrcpts++;
    return 0;
}

static void on_rcpt(void *arg, const struct smtp_reply *rep, const char *err)
{
    struct txn *t = arg;
    char text[TXN_TEXT_MAX], first[TXN_REPLY_MAX];
    size_t i = t->nrcpts - 1;
    if (reply_text(t, rep, err, text, sizeof(text)) != 0)
        return;
    metrics_upstream_reply(t->m, METRICS_CMD_RCPT, rep->code, rep->enhanced);
    reply_first_line(rep, first, sizeof(first));
    if (rep->code / 100 == 2) {
        t->info[i].state = RCPT_ACCEPTED;
        t->accepted++;
    } else {
        decide(t, i, class_status(rep->code), rep->code, rep->enhanced, first);
    }
    if (rep->code == 421) /* the upstream is closing: nothing more goes */
        decide_rest(t, TXN_TEMP, rep->code, rep->enhanced, first, 0);
    step_done(t, rep->code, text, rep, NULL);
}

const char *txn_rcpt(struct txn *t, const char *to, txn_cb cb, void *arg)
{
    static const char too_long[] = "501 5.1.3 Recipient address too long";
    char line[TXN_CMD_MAX + 64];
    if (rcpt_add(t) != 0)
        return "451 4.3.0 Out of memory";
    int n = snprintf(line, sizeof(line), "RCPT TO:<%s>", to);
    if (n < 0 || (size_t)n > TXN_CMD_MAX) {
        decide(t, t->nrcpts - 1, TXN_PERM, 0, NULL, too_long);
        return too_long;
    }
    t->cb = cb;
    t->arg = arg;
    send_command(t, ST_RCPT, line, on_rcpt);
    return NULL;
}

void txn_rcpt_skip(struct txn *t)
{
    if (rcpt_add(t) != 0)
        return; /* txn_result counts it as attempted early, and temporary */
    if (t->verdict.set)
        decide(t, t->nrcpts - 1, t->verdict.status, t->verdict.code, t->verdict.enhanced,
               t->verdict.reply);
}

size_t txn_accepted(const struct txn *t)
{
    return t->accepted;
}

/* ---- DATA and the body ---- */

static void on_data(void *arg, const struct smtp_reply *rep, const char *err)
{
    struct txn *t = arg;
    char text[TXN_TEXT_MAX], first[TXN_REPLY_MAX];
    if (reply_text(t, rep, err, text, sizeof(text)) != 0)
        return;
    if (rep->code == 354) {
        t->size = 0;
        t->batch_len = 0;
        if (t->rewrite)
            header_rewrite_reset(t->rewrite);
    } else {
        reply_first_line(rep, first, sizeof(first));
        decide_rest(t, rep->code / 100 == 5 ? TXN_PERM : TXN_TEMP, rep->code, rep->enhanced, first,
                    0);
    }
    step_done(t, rep->code, text, rep, NULL);
}

static void emit_line(struct txn *t, const char *line, size_t len);

static void emit_rewritten(void *arg, const char *line, size_t len)
{
    emit_line(arg, line, len);
}

void txn_data(struct txn *t, txn_cb cb, void *arg)
{
    if (t->acct->sender_rewrite == SENDER_REWRITE_HEADER && !t->rewrite) {
        t->rewrite = header_rewrite_new(t->acct->mailbox, emit_rewritten, t);
        if (!t->rewrite) {
            refuse_locally(t, ST_DATA, "451 4.3.0 Out of memory", cb, arg);
            return;
        }
    }
    t->cb = cb;
    t->arg = arg;
    send_command(t, ST_DATA, "DATA", on_data);
}

void txn_body_flush(struct txn *t)
{
    if (t->batch_len && t->cs)
        client_session_write(t->cs, t->batch, t->batch_len);
    t->batch_len = 0;
}

static void emit_line(struct txn *t, const char *line, size_t len)
{
    if (len > SMTP_TEXT_LINE_MAX)
        len = SMTP_TEXT_LINE_MAX; /* the decoder never passes longer lines; belt and braces */
    if (t->batch_len + len + 3 > TXN_BATCH)
        txn_body_flush(t);
    t->batch_len += smtp_data_encode_line(t->batch + t->batch_len, line, len);
}

void txn_body_fail(struct txn *t, const char *reply)
{
    if (t->body_failed)
        return;
    t->body_failed = 1;
    t->broken = 1; /* the end marker is never sent: nothing partial may be delivered */
    t->in_tx = 0;
    decide_rest(t, reply[0] == '4' ? TXN_TEMP : TXN_PERM, 0, NULL, reply, 0);
}

int txn_body_failed(const struct txn *t)
{
    return t->body_failed;
}

void txn_body_line(struct txn *t, const char *line, size_t len)
{
    t->size += len + 2;
    if (t->body_failed || !t->cs)
        return;
    if (!t->rewrite)
        emit_line(t, line, len);
    else if (header_rewrite_line(t->rewrite, line, len) != 0)
        txn_body_fail(t, "552 5.3.4 Header section too large to rewrite the sender");
}

size_t txn_pending(const struct txn *t)
{
    if (!t->cs || !client_session_usable(t->cs))
        return 0;
    return client_session_pending(t->cs);
}

static void on_drain(void *arg)
{
    struct txn *t = arg;
    if (t->drain_cb)
        t->drain_cb(t->drain_arg);
}

void txn_set_drain_cb(struct txn *t, size_t low_mark, void (*cb)(void *arg), void *arg)
{
    t->drain_cb = cb;
    t->drain_arg = arg;
    if (t->cs)
        client_session_set_drain_cb(t->cs, low_mark, cb ? on_drain : NULL, cb ? t : NULL);
}

static void on_data_end(void *arg, const struct smtp_reply *rep, const char *err)
{
    struct txn *t = arg;
    char text[TXN_TEXT_MAX];
    /* no reply: the upstream may have taken it just before the connection went: the caller
     * treats it as not delivered, which is at-least-once */
    if (reply_text(t, rep, err, text, sizeof(text)) != 0)
        return;
    metrics_upstream_reply(t->m, METRICS_CMD_DATA, rep->code, rep->enhanced);
    reply_first_line(rep, t->data_reply, sizeof(t->data_reply));
    t->data_code = rep->code;
    snprintf(t->data_enhanced, sizeof(t->data_enhanced), "%s", rep->enhanced);
    t->in_tx = 0;
    decide_rest(t, class_status(rep->code), rep->code, rep->enhanced, t->data_reply, 0);
    step_done(t, rep->code, text, rep, NULL);
}

void txn_end(struct txn *t, txn_cb cb, void *arg)
{
    if (t->body_failed)
        return; /* txn_body_fail's contract: the caller ends it with txn_result */
    if (t->rewrite)
        header_rewrite_finish(t->rewrite);
    txn_body_flush(t);
    t->cb = cb;
    t->arg = arg;
    t->step = ST_DATA_END;
    if (t->ops->trace)
        t->ops->trace(t->conn, ".", NULL);
    /* a dead session answers from the loop with no reply: lost() */
    client_session_data_end(t->cs, on_data_end, t);
}

static void on_rset(void *arg, const struct smtp_reply *rep, const char *err)
{
    struct txn *t = arg;
    (void)err;
    t->in_tx = 0;
    if (rep) {
        saw_reply(t, rep);
        if (rep->code / 100 != 2)
            t->broken = 1;
    } else {
        t->broken = 1; /* nothing is lost: the next transaction leases another connection */
    }
    step_done(t, 250, "250 2.0.0 OK", NULL, NULL);
}

void txn_rset(struct txn *t, txn_cb cb, void *arg)
{
    t->cb = cb;
    t->arg = arg;
    send_command(t, ST_RSET, "RSET", on_rset);
}

/* ---- what it came to ---- */

int txn_open(const struct txn *t)
{
    return t->in_tx;
}

int txn_usable(const struct txn *t)
{
    return t->cs && !t->broken && client_session_usable(t->cs);
}

const char *txn_mail_from(const struct txn *t)
{
    return t->mail_from;
}

uint64_t txn_body_size(const struct txn *t)
{
    return t->size;
}

const char *txn_host(const struct txn *t)
{
    const char *h = t->conn && t->ops->host ? t->ops->host(t->conn) : NULL;
    return h ? h : "";
}

const struct txn_result *txn_result(struct txn *t)
{
    struct txn_result *res = &t->res;
    size_t i;

    memset(res, 0, sizeof(*res));
    /* anything still undecided (never the case on a clean path) is temporary */
    for (i = 0; i < t->nrcpts; i++)
        if (t->info[i].state != RCPT_DECIDED)
            decide(t, i, TXN_TEMP, 0, NULL, "451 4.3.0 Delivery attempt ended early");
    for (i = 0; i < t->nrcpts; i++) {
        res->delivered += t->rcpts[i].status == TXN_OK;
        res->deferred += t->rcpts[i].status == TXN_TEMP;
        res->refused += t->rcpts[i].status == TXN_PERM;
    }
    res->status = res->deferred     ? TXN_TEMP
                  : !res->delivered ? TXN_PERM
                  : res->refused    ? TXN_PARTIAL
                                    : TXN_OK;
    res->conn_failure = t->conn_failure;
    res->rcpts = t->rcpts;
    res->nrcpts = t->nrcpts;
    snprintf(res->lost_why, sizeof(res->lost_why), "%s", t->lost_why);
    if (res->delivered) {
        snprintf(res->reply, sizeof(res->reply), "%s", t->data_reply);
        res->code = t->data_code;
        snprintf(res->enhanced, sizeof(res->enhanced), "%s", t->data_enhanced);
    } else if (t->nrcpts) {
        /* the first refusal of the kind that decided: a temporary one if any */
        enum txn_status want = res->deferred ? TXN_TEMP : TXN_PERM;
        for (i = 0; i < t->nrcpts; i++)
            if (t->rcpts[i].status == want)
                break;
        snprintf(res->reply, sizeof(res->reply), "%s", t->rcpts[i].reply);
        res->code = t->info[i].code;
        snprintf(res->enhanced, sizeof(res->enhanced), "%s", t->info[i].enhanced);
    }
    return res;
}

const char *txn_status_name(enum txn_status st)
{
    switch (st) {
    case TXN_OK:
        return "delivered";
    case TXN_TEMP:
        return "deferred";
    case TXN_PERM:
        return "refused";
    default:
        return "partial";
    }
}
