/* The bounce (proxy/smtp/dsn.h): validate the input, write the three parts, draw a boundary that
 * occurs in none of them, assemble. */
#include "proxy/smtp/dsn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "proxy/smtp/dsn_int.h"
#include "proxy/smtp/exchange_explain.h"

#define DSN_BOUNDARY_TRIES 8
#define DSN_HOST_MAX 253

int dsn_random_openssl(void *ctx, unsigned char *buf, size_t n)
{
    (void)ctx;
    return n <= 1024 && RAND_bytes(buf, (int)n) == 1 ? 0 : -1;
}

static void dsn_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
}

/* RFC 5322 3.3 date in UTC; fixed English names (strftime's follow the locale). */
static int dsn_date(int64_t t, char *buf, size_t len)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char mons[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    time_t tt = (time_t)t;
    if (t < 0 || t > INT64_C(253402300799) || !gmtime_r(&tt, &tm))
        return -1; /* before 1970 or after 9999: not a date this proxy produces */
    snprintf(buf, len, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
             mons[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return 0;
}

static int dsn_valid_host(const char *h)
{
    size_t n = h ? strlen(h) : 0, i;
    if (n == 0 || n > DSN_HOST_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

/* Where the bounce goes: an address the DSN can name in To: and the caller in RCPT TO:<>
 * without SMTPUTF8. Quoted local parts with spaces are refused too: rare, and not worth a
 * parser here. */
static int dsn_valid_rcpt(const char *a)
{
    size_t n = strlen(a), i;
    if (n == 0 || n > DSN_ADDR_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a[i];
        if (c <= 0x20 || c >= 0x7f || c == '<' || c == '>' || c == ',' || c == '"' || c == '\\')
            return 0;
    }
    return 1;
}

/* "x.y.z": class 4 or 5 (2 is not a failure), subject and detail 1-3 digits (RFC 3463). */
static int dsn_valid_status(const char *s, enum dsn_action action)
{
    size_t i = 2, part, digits;
    if (!s || (s[0] != '4' && s[0] != '5') || s[1] != '.')
        return 0;
    if (action == DSN_ACTION_DELAYED && s[0] != '4')
        return 0;
    for (part = 0; part < 2; part++) {
        for (digits = 0; s[i] >= '0' && s[i] <= '9'; i++)
            digits++;
        if (digits < 1 || digits > 3 || s[i] != (part == 0 ? '.' : '\0'))
            return 0;
        if (part == 0)
            i++;
    }
    return 1;
}

static const char *dsn_status(const struct dsn_input *in, const struct dsn_rcpt *r)
{
    if (r->status)
        return r->status;
    if (r->action == DSN_ACTION_DELAYED)
        return "4.0.0";
    return in->reason == DSN_REASON_EXPIRED ? "4.4.7" : "5.0.0";
}

static int dsn_validate(const struct dsn_input *in, char *err, size_t errlen)
{
    size_t i;
    if (!dsn_valid_host(in->reporting_mta)) {
        dsn_err(err, errlen, "dsn: reporting MTA is not a host name");
        return -1;
    }
    if (in->reason != DSN_REASON_REFUSED && in->reason != DSN_REASON_EXPIRED) {
        dsn_err(err, errlen, "dsn: unknown reason");
        return -1;
    }
    if (!in->rcpts || in->nrcpts < 1 || in->nrcpts > DSN_MAX_RCPTS) {
        dsn_err(err, errlen, "dsn: 1 to 1000 recipients");
        return -1;
    }
    if (!in->random) {
        dsn_err(err, errlen, "dsn: no random source");
        return -1;
    }
    for (i = 0; i < in->nrcpts; i++) {
        const struct dsn_rcpt *r = &in->rcpts[i];
        if (!r->address || (r->action != DSN_ACTION_FAILED && r->action != DSN_ACTION_DELAYED) ||
            !dsn_valid_status(dsn_status(in, r), r->action)) {
            dsn_err(err, errlen, "dsn: a recipient without address, action or valid status");
            return -1;
        }
    }
    return 0;
}

static void dsn_hex(const unsigned char *b, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    size_t i;
    for (i = 0; i < n; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[2 * n] = '\0';
}

/* The upstream's reply, as code and enhanced code for exchange_explain: "550 5.7.60 text". */
static const struct exchange_explanation *dsn_explain(const char *diag)
{
    char enhanced[16] = "";
    int code;
    size_t i = 0, n;
    if (!diag)
        return NULL;
    while (diag[i] == ' ')
        i++;
    if (!(diag[i] >= '2' && diag[i] <= '5' && diag[i + 1] >= '0' && diag[i + 1] <= '9' &&
          diag[i + 2] >= '0' && diag[i + 2] <= '9'))
        return NULL;
    code = (diag[i] - '0') * 100 + (diag[i + 1] - '0') * 10 + (diag[i + 2] - '0');
    i += 3;
    while (diag[i] == ' ' || diag[i] == '-')
        i++;
    for (n = 0; n + 1 < sizeof(enhanced) && ((diag[i] >= '0' && diag[i] <= '9') || diag[i] == '.');
         n++, i++)
        enhanced[n] = diag[i];
    enhanced[n] = '\0';
    return exchange_explain(code, enhanced, diag);
}

static void dsn_text_part(struct dsn_buf *b, const struct dsn_input *in, const char *arrival)
{
    size_t i;
    dsn_buf_str(b, "Content-Description: Notification\r\n"
                   "Content-Type: text/plain; charset=us-ascii\r\n\r\n");
    dsn_buf_str(b, "This is the mail delivery system at ");
    dsn_buf_str(b, in->reporting_mta);
    dsn_buf_str(b, ".\r\n\r\n");
    if (in->reason == DSN_REASON_EXPIRED)
        dsn_buf_str(b, "Your message could not be delivered within the time a message is kept\r\n"
                       "in the queue (max_queue_lifetime), and has been given up for the\r\n"
                       "recipients marked as failed below.\r\n\r\n");
    else
        dsn_buf_str(b, "Your message could not be delivered to one or more recipients: the\r\n"
                       "mail server refused it permanently, and it will not be retried for\r\n"
                       "the recipients marked as failed below.\r\n\r\n");
    dsn_buf_field(b, "Queue ID: ", in->queue_id, 64, "    ");
    if (in->account)
        dsn_buf_field(b, "Account: ", in->account, 128, "    ");
    if (in->device && in->device[0])
        dsn_buf_field(b, "Device: ", in->device, 128, "    ");
    dsn_buf_str(b, "Arrived: ");
    dsn_buf_str(b, arrival);
    dsn_buf_str(b, "\r\n");
    for (i = 0; i < in->nrcpts && !b->failed; i++) {
        const struct dsn_rcpt *r = &in->rcpts[i];
        const struct exchange_explanation *e = dsn_explain(r->diagnostic);
        struct dsn_buf line = {0};
        dsn_buf_str(&line, "<");
        dsn_buf_safe(&line, r->address, DSN_ADDR_MAX);
        dsn_buf_str(&line, r->action == DSN_ACTION_FAILED
                               ? ">: failed, status "
                               : ">: delayed, still being retried, status ");
        dsn_buf_str(&line, dsn_status(in, r));
        dsn_buf_str(b, "\r\n");
        dsn_buf_field(b, "", line.failed ? "" : line.p, 2 * DSN_ADDR_MAX, "    ");
        b->failed |= line.failed;
        dsn_buf_free(&line);
        if (r->diagnostic) {
            dsn_buf_safe(&line, r->remote_mta ? r->remote_mta : "the mail server", DSN_HOST_MAX);
            dsn_buf_str(&line, " said: ");
            dsn_buf_safe(&line, r->diagnostic, DSN_DIAG_MAX);
            dsn_buf_field(b, "    ", line.failed ? "" : line.p, 2 * DSN_DIAG_MAX, "    ");
            b->failed |= line.failed;
            dsn_buf_free(&line);
        }
        if (e) {
            char ex[1024];
            exchange_explain_format(e, in->mailbox ? in->mailbox : "the account's mailbox",
                                    "the app's client id", ex, sizeof(ex));
            dsn_buf_field(b, "    What it means: ", ex, sizeof(ex), "    ");
        }
    }
    dsn_buf_str(b, "\r\nThe headers of your message are attached. Its body is not returned:\r\n"
                   "you have it, and a bounce should neither spread its content nor be large.\r\n");
}

static void dsn_status_part(struct dsn_buf *b, const struct dsn_input *in, const char *arrival)
{
    size_t i;
    dsn_buf_str(b, "Content-Description: Delivery report\r\n"
                   "Content-Type: message/delivery-status\r\n\r\n");
    dsn_buf_str(b, "Reporting-MTA: dns; ");
    dsn_buf_str(b, in->reporting_mta);
    dsn_buf_str(b, "\r\n");
    dsn_buf_field(b, "X-Queue-ID", in->queue_id, 64, " ");
    dsn_buf_str(b, "Arrival-Date: ");
    dsn_buf_str(b, arrival);
    dsn_buf_str(b, "\r\n");
    for (i = 0; i < in->nrcpts && !b->failed; i++) {
        const struct dsn_rcpt *r = &in->rcpts[i];
        struct dsn_buf v = {0};
        dsn_buf_str(b, "\r\n");
        dsn_buf_str(&v, "rfc822; ");
        dsn_buf_safe(&v, r->address, DSN_ADDR_MAX);
        dsn_buf_field(b, "Final-Recipient", v.failed ? "" : v.p, 2 * DSN_ADDR_MAX, " ");
        dsn_buf_free(&v);
        if (r->original) {
            dsn_buf_str(&v, "rfc822; ");
            dsn_buf_safe(&v, r->original, DSN_ADDR_MAX);
            dsn_buf_field(b, "Original-Recipient", v.failed ? "" : v.p, 2 * DSN_ADDR_MAX, " ");
            dsn_buf_free(&v);
        }
        dsn_buf_str(b,
                    r->action == DSN_ACTION_FAILED ? "Action: failed\r\n" : "Action: delayed\r\n");
        dsn_buf_str(b, "Status: ");
        dsn_buf_str(b, dsn_status(in, r));
        dsn_buf_str(b, "\r\n");
        if (r->remote_mta) {
            dsn_buf_str(&v, "dns; ");
            dsn_buf_safe(&v, r->remote_mta, DSN_HOST_MAX);
            dsn_buf_field(b, "Remote-MTA", v.failed ? "" : v.p, 2 * DSN_HOST_MAX, " ");
            dsn_buf_free(&v);
        }
        if (r->diagnostic) {
            dsn_buf_str(&v, "smtp; ");
            dsn_buf_safe(&v, r->diagnostic, DSN_DIAG_MAX);
            dsn_buf_field(b, "Diagnostic-Code", v.failed ? "" : v.p, 2 * DSN_DIAG_MAX, " ");
            dsn_buf_free(&v);
        }
        b->failed |= v.failed;
    }
}

static int dsn_parts_contain(struct dsn_buf parts[3], const char *boundary)
{
    size_t i, n = strlen(boundary);
    for (i = 0; i < 3; i++) {
        const char *p = parts[i].p;
        size_t left = parts[i].len;
        while (p && left >= n) {
            const char *hit = memchr(p, boundary[0], left - n + 1);
            if (!hit)
                break;
            if (memcmp(hit, boundary, n) == 0)
                return 1;
            left -= (size_t)(hit - p) + 1;
            p = hit + 1;
        }
    }
    return 0;
}

static void dsn_assemble(struct dsn_buf *o, const struct dsn_input *in, const char *to,
                         const char *date, const char *msgid, const char *boundary,
                         struct dsn_buf parts[3])
{
    int failed = 0;
    size_t i;
    for (i = 0; i < in->nrcpts; i++)
        failed |= in->rcpts[i].action == DSN_ACTION_FAILED;
    dsn_buf_str(o, "From: Mail Delivery System <MAILER-DAEMON@");
    dsn_buf_str(o, in->reporting_mta);
    dsn_buf_str(o, ">\r\nTo: <");
    dsn_buf_str(o, to);
    dsn_buf_str(o, failed ? ">\r\nSubject: Undelivered Mail Returned to Sender\r\n"
                          : ">\r\nSubject: Delayed Mail (still being retried)\r\n");
    dsn_buf_str(o, "Date: ");
    dsn_buf_str(o, date);
    dsn_buf_str(o, "\r\nMessage-ID: ");
    dsn_buf_str(o, msgid);
    dsn_buf_str(o, "\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
                   "Content-Type: multipart/report; report-type=delivery-status;\r\n"
                   "\tboundary=\"");
    dsn_buf_str(o, boundary);
    dsn_buf_str(o, "\"\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n");
    for (i = 0; i < 3; i++) {
        dsn_buf_str(o, "--");
        dsn_buf_str(o, boundary);
        dsn_buf_str(o, "\r\n");
        dsn_buf_add(o, parts[i].p, parts[i].len);
    }
    dsn_buf_str(o, "--");
    dsn_buf_str(o, boundary);
    dsn_buf_str(o, "--\r\n");
}

int dsn_build(const struct dsn_input *in, char **out, size_t *outlen, char *rcpt_out,
              size_t rcpt_len, char *err, size_t errlen)
{
    struct dsn_buf parts[3] = {{0}}, o = {0};
    char date[64], arrival[64], msgid[DSN_HOST_MAX + 64], boundary[64], hex[33];
    unsigned char rnd[16];
    const char *to;
    struct tm tm;
    time_t tt;
    int tries, i, rc = -1;
    *out = NULL;
    *outlen = 0;
    if (!in->mail_from || !in->mail_from[0])
        return 0; /* the null sender: never bounced (RFC 5321 4.5.5) */
    if (dsn_validate(in, err, errlen) < 0)
        return -1;
    to = in->bounce_to && in->bounce_to[0] ? in->bounce_to : in->mail_from;
    if (!dsn_valid_rcpt(to)) {
        dsn_err(err, errlen, "dsn: the bounce recipient is not a plain ASCII address");
        return -1;
    }
    if (!rcpt_out || rcpt_len <= strlen(to)) {
        dsn_err(err, errlen, "dsn: no room for the bounce recipient");
        return -1;
    }
    if (dsn_date(in->now, date, sizeof(date)) < 0 ||
        dsn_date(in->arrival, arrival, sizeof(arrival)) < 0) {
        dsn_err(err, errlen, "dsn: time out of range");
        return -1;
    }
    if (in->random(in->random_ctx, rnd, 8) < 0) {
        dsn_err(err, errlen, "dsn: random source failed");
        return -1;
    }
    tt = (time_t)in->now;
    gmtime_r(&tt, &tm);
    dsn_hex(rnd, 8, hex);
    snprintf(msgid, sizeof(msgid), "<%04d%02d%02d%02d%02d%02d.%s@%s>", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, hex, in->reporting_mta);

    dsn_text_part(&parts[0], in, arrival);
    dsn_status_part(&parts[1], in, arrival);
    dsn_buf_str(&parts[2], "Content-Description: Undelivered Message Headers\r\n"
                           "Content-Type: text/rfc822-headers\r\n\r\n");
    dsn_buf_headers(&parts[2], in->message, in->message_len);
    if (parts[0].failed || parts[1].failed || parts[2].failed) {
        dsn_err(err, errlen, "dsn: out of memory");
        goto done;
    }
    /* 128 random bits will not be in a part by chance; a part can still hold them on purpose
     * (original headers copied from an earlier bounce), so check and draw again. */
    for (tries = 0; tries < DSN_BOUNDARY_TRIES; tries++) {
        if (in->random(in->random_ctx, rnd, sizeof(rnd)) < 0) {
            dsn_err(err, errlen, "dsn: random source failed");
            goto done;
        }
        dsn_hex(rnd, sizeof(rnd), hex);
        snprintf(boundary, sizeof(boundary), "=_sop-dsn_%s", hex);
        if (!dsn_parts_contain(parts, boundary))
            break;
    }
    if (tries == DSN_BOUNDARY_TRIES) {
        dsn_err(err, errlen, "dsn: no boundary that is in none of the parts");
        goto done;
    }
    dsn_assemble(&o, in, to, date, msgid, boundary, parts);
    if (o.failed) {
        dsn_err(err, errlen, "dsn: out of memory");
        goto done;
    }
    memcpy(rcpt_out, to, strlen(to) + 1);
    *out = o.p;
    *outlen = o.len;
    o.p = NULL;
    rc = 1;
done:
    for (i = 0; i < 3; i++)
        dsn_buf_free(&parts[i]);
    dsn_buf_free(&o);
    return rc;
}
