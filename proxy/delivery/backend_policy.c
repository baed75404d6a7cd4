/* The recipient check as a backend layer rather than a test in the session's RCPT verb: the
 * session stays ignorant of policy (it only relays the reply it is given, as for any backend),
 * every delivery mode gets the same check from one place, and a device whose list is "*" pays
 * nothing because backend_new does not build the layer at all. */
#include "proxy/delivery/backend_policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "proxy/config/config.h"
#include "proxy/config/rcpt_policy.h"

struct policy_backend {
    struct backend base; /* first: the device session holds &base */
    struct backend *inner;
    const struct cfg_device *device;
    char log_id[32];
};

static struct backend *pb_inner(struct backend *b)
{
    return ((struct policy_backend *)b)->inner;
}

static void pb_mail(struct backend *b, const char *from, const struct txn_mail_opts *o,
                    backend_reply_cb cb, void *arg)
{
    struct backend *in = pb_inner(b);
    in->ops->mail(in, from, o, cb, arg);
}

static void pb_rcpt(struct backend *b, const char *to, backend_reply_cb cb, void *arg)
{
    struct policy_backend *pb = (struct policy_backend *)b;
    const struct rcpt_policy *allow = pb->device->allow_recipients;
    if (allow && !rcpt_policy_match(allow, to)) {
        /* The path and the list are bounded (RCPT line, config entries); the reply is cut at a
         * size every device takes rather than trusted to fit. */
        char reply[512];
        snprintf(reply, sizeof(reply), "550 5.7.1 <%.256s>: device %s may send only to %.200s", to,
                 pb->device->name, allow->display);
        log_info("event=rcpt_refused session=%s device=%s rcpt=<%.256s> reason=allow_recipients",
                 pb->log_id, pb->device->name, to);
        cb(arg, reply);
        return;
    }
    pb->inner->ops->rcpt(pb->inner, to, cb, arg);
}

static void pb_data(struct backend *b, backend_reply_cb cb, void *arg)
{
    struct backend *in = pb_inner(b);
    in->ops->data(in, cb, arg);
}

static void pb_data_line(struct backend *b, const char *line, size_t len)
{
    struct backend *in = pb_inner(b);
    in->ops->data_line(in, line, len);
}

static size_t pb_data_flush(struct backend *b)
{
    struct backend *in = pb_inner(b);
    return in->ops->data_flush(in);
}

static void pb_set_drain_cb(struct backend *b, size_t low_mark, void (*cb)(void *arg), void *arg)
{
    struct backend *in = pb_inner(b);
    in->ops->set_drain_cb(in, low_mark, cb, arg);
}

static void pb_data_end(struct backend *b, backend_reply_cb cb, void *arg)
{
    struct backend *in = pb_inner(b);
    in->ops->data_end(in, cb, arg);
}

static void pb_data_abort(struct backend *b, const char *reason)
{
    struct backend *in = pb_inner(b);
    in->ops->data_abort(in, reason);
}

static void pb_rset(struct backend *b, backend_reply_cb cb, void *arg)
{
    struct backend *in = pb_inner(b);
    in->ops->rset(in, cb, arg);
}

static int pb_in_transaction(const struct backend *b)
{
    const struct backend *in = ((const struct policy_backend *)b)->inner;
    return in->ops->in_transaction(in);
}

static void pb_free(struct backend *b)
{
    struct policy_backend *pb = (struct policy_backend *)b;
    backend_free(pb->inner);
    free(pb);
}

static const struct backend_ops policy_ops = {
    .mail = pb_mail,
    .rcpt = pb_rcpt,
    .data = pb_data,
    .data_line = pb_data_line,
    .data_flush = pb_data_flush,
    .set_drain_cb = pb_set_drain_cb,
    .data_end = pb_data_end,
    .data_abort = pb_data_abort,
    .rset = pb_rset,
    .in_transaction = pb_in_transaction,
    .free = pb_free,
};

struct backend *backend_policy_new(struct backend *inner, const struct cfg_device *device,
                                   const char *log_id)
{
    if (!inner)
        return NULL;
    struct policy_backend *pb = calloc(1, sizeof(*pb));
    if (!pb) {
        backend_free(inner);
        return NULL;
    }
    pb->base.ops = &policy_ops;
    pb->inner = inner;
    pb->device = device;
    snprintf(pb->log_id, sizeof(pb->log_id), "%s", log_id);
    return &pb->base;
}
