/* What Microsoft Graph's refusals mean and what an admin changes: Graph's error JSON
 * ({"error":{"code","message","innerError":{...}}}) parsed, bounded and sanitised, and the HTTP
 * status with Graph's code mapped to the SMTP reply the device hears, the outcome's class
 * (GRAPH_OK / TEMP / PERM) and an explanation for the log and `test`, as
 * proxy/smtp/exchange_explain.c does for Exchange's 535s. Pure: no I/O, no allocation that
 * outlives a call. */
#ifndef SOP_GRAPH_EXPLAIN_H
#define SOP_GRAPH_EXPLAIN_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/graph/graph_client.h"

/* Which request of a send answered: the draft path needs Mail.ReadWrite as well. */
enum graph_step {
    GRAPH_STEP_SENDMAIL = 0,   /* POST /users/{mailbox}/sendMail */
    GRAPH_STEP_DRAFT,          /* POST /users/{mailbox}/messages */
    GRAPH_STEP_UPLOAD_SESSION, /* POST .../attachments/createUploadSession */
    GRAPH_STEP_UPLOAD,         /* PUT uploadUrl */
    GRAPH_STEP_SEND,           /* POST .../messages/{id}/send */
    GRAPH_STEP_DELETE,         /* DELETE .../messages/{id} */
    GRAPH_STEP_ATTACH,         /* POST .../messages/{id}/attachments (under 3 MB) */
};

/* Only the first GRAPH_ERROR_BODY_MAX bytes of a body are parsed. */
#define GRAPH_ERROR_BODY_MAX (64u * 1024u)

/* Graph's error, every field printable ASCII without double quotes or backslashes, cut to its
 * size; "" when absent. code and inner_code keep only [A-Za-z0-9_.-]. */
struct graph_error {
    char code[64];
    char inner_code[64];
    char message[200];
    char request_id[64];
};

/* Parse body (any bytes, len of them; NUL not needed). 1 an error object was found; 0 not (e
 * all ""). */
int graph_error_parse(const char *body, size_t len, struct graph_error *e);

/* The outcome of an HTTP answer: o->status, conn_failure, http_status, code, reply, explain,
 * retry_after_ms are set (requests is left alone). status 2xx: GRAPH_OK. retry_after_ms: from
 * Retry-After (< 0: none). mailbox (may be NULL) fills the explanation's commands. */
void graph_explain_answer(long status, const char *body, size_t len, enum graph_step step,
                          const char *mailbox, int64_t retry_after_ms, struct graph_outcome *o);

/* The outcome when no answer came (err: curl's message, sanitised; timed_out: the request's
 * timeout passed): GRAPH_TEMP, conn_failure 1, "451 4.4.1 ...". */
void graph_explain_no_answer(const char *err, int timed_out, struct graph_outcome *o);

/* s made log- and reply-safe in place: bytes outside printable ASCII, double quotes and
 * backslashes become '_', and anything from a "eyJ" on (a JWT, which a token is) is cut. */
void graph_sanitize(char *s);

#endif
