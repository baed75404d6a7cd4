/* The bounce: an RFC 3464 delivery status notification (DSN) for a spooled message that failed
 * permanently or expired. Pure: bytes in, a message out; no I/O, no clock (the caller passes
 * now), no randomness except the injected source used for the MIME boundary and Message-ID.
 *
 * The message built is complete RFC 5322 text, CRLF line endings, 7-bit ASCII, every line at
 * most 998 octets (RFC 5322 2.1.1):
 *
 *   From: Mail Delivery System <MAILER-DAEMON@reporting_mta>
 *   To: <bounce_to, else the envelope sender>
 *   Subject: Undelivered Mail Returned to Sender   (only delayed recipients: Delayed Mail ...)
 *   Date, Message-ID, Auto-Submitted: auto-replied (RFC 3834: no auto-reply to it),
 *   MIME-Version: 1.0, Content-Type: multipart/report; report-type=delivery-status
 *     1. text/plain: what happened, per recipient the upstream's reply and, for Exchange
 *        Online codes, proxy/smtp/exchange_explain.h's meaning and fix; the queue id and account
 *     2. message/delivery-status: Reporting-MTA, X-Queue-ID, Arrival-Date, then per recipient
 *        Final-Recipient, Original-Recipient (if known), Action, Status, Remote-MTA,
 *        Diagnostic-Code
 *     3. text/rfc822-headers: the original message's header block only, at most
 *        DSN_HEADERS_MAX bytes. Never the body (Postfix's default too): the sender has the
 *        message, the body may hold what the bounce recipient (bounce_to) must not see, and a
 *        scan can be tens of MB.
 *
 * THE CALLER MUST SEND THE DSN WITH THE NULL SENDER (MAIL FROM:<>), to the address dsn_build
 * reports in *rcpt_out (RFC 3464 2, RFC 5321 4.5.5): a bounce that fails is then never bounced
 * again, so bounces cannot loop. The queue runner that will do so does not exist yet.
 *
 * Hostile input: addresses, diagnostic text and original headers come from devices or the
 * upstream. Every byte outside printable ASCII (and TAB in original headers) becomes '?', so
 * no CR, LF or NUL reaches the output except the line ends dsn_build writes itself; long
 * values are cut and folded; the boundary is checked against every part and drawn again if any
 * part contains it. Non-ASCII (SMTPUTF8) bounce recipients are refused: that needs RFC 6533's
 * message/global-delivery-status, not supported. */
#ifndef SOP_DSN_H
#define SOP_DSN_H

#include <stddef.h>
#include <stdint.h>

#define DSN_HEADERS_MAX 65536 /* bytes of the original header block included */
#define DSN_DIAG_MAX 1024     /* bytes of one recipient's diagnostic text */
#define DSN_ADDR_MAX 512      /* as the spool's SPOOL_ADDR_MAX */
#define DSN_MAX_RCPTS 1000    /* as the spool's SPOOL_MAX_RCPTS */
#define DSN_LINE_MAX 998      /* octets per line, CRLF excluded (RFC 5322 2.1.1) */

enum dsn_action {
    DSN_ACTION_FAILED = 1,  /* given up for this recipient */
    DSN_ACTION_DELAYED = 2, /* still being retried */
};

enum dsn_reason {
    DSN_REASON_REFUSED = 1, /* the upstream refused permanently (5xx) */
    DSN_REASON_EXPIRED = 2, /* queued longer than max_queue_lifetime: 4.4.7 */
};

struct dsn_rcpt {
    const char *address;  /* the RCPT TO address (without <>) */
    const char *original; /* NULL: unknown (Original-Recipient left out) */
    enum dsn_action action;
    const char *status;     /* "5.7.60"; NULL: 4.4.7 if expired, else 5.0.0 (failed), 4.0.0 */
    const char *diagnostic; /* the upstream's reply, e.g. "550 5.7.60 SMTP; Client does not have
                             * permissions..."; NULL: none. Written as "smtp; TEXT". */
    const char *remote_mta; /* the upstream's host name; NULL: none */
};

/* Fills buf with n random bytes: 0 ok, -1 failure. */
typedef int (*dsn_random_fn)(void *ctx, unsigned char *buf, size_t n);

struct dsn_input {
    const char *reporting_mta; /* this proxy's host name (letters, digits, '.', '-') */
    const char *queue_id;      /* the spool's queue id */
    const char *account;       /* the account the message was for; NULL: left out */
    const char *device;        /* the device that sent it; NULL or "": left out */
    const char *mailbox;       /* the account's upstream mailbox, named in Exchange fixes; NULL */
    const char *mail_from;     /* the envelope sender; "" (or NULL) is the null sender <> */
    const char *bounce_to;     /* NULL or "": bounce to mail_from */
    int64_t arrival;           /* when the message was queued, seconds since the epoch */
    int64_t now;               /* for Date: and the Message-ID */
    enum dsn_reason reason;
    const struct dsn_rcpt *rcpts;
    size_t nrcpts; /* 1..DSN_MAX_RCPTS */
    /* The original message (or its start): the header block is what precedes the first empty
     * line; only its first DSN_HEADERS_MAX bytes, whole lines, are used. NULL: none. */
    const char *message;
    size_t message_len;
    dsn_random_fn random; /* required */
    void *random_ctx;
};

/* Build the DSN. 1: *out (malloc'ed, NUL-terminated, *outlen bytes without the NUL) is the
 * message, to be sent from <> to the address copied to rcpt_out (rcpt_len bytes, at least
 * DSN_ADDR_MAX + 1). 0: no bounce is due: the envelope sender is null (the message is itself
 * a bounce or notification; never bounced, not even to bounce_to, RFC 5321 4.5.5); nothing
 * allocated. -1: err says why (invalid input, no memory, the random source failed). */
int dsn_build(const struct dsn_input *in, char **out, size_t *outlen, char *rcpt_out,
              size_t rcpt_len, char *err, size_t errlen);

/* The production random source: OpenSSL's RAND_bytes (ctx unused). */
int dsn_random_openssl(void *ctx, unsigned char *buf, size_t n);

/* Check what dsn_build promises about a message's form (for tests, fuzzing and as a last
 * guard before sending): only CRLF line ends, 7-bit printable text (and TAB), no line over
 * DSN_LINE_MAX, a multipart/report boundary whose delimiter lines are balanced (three parts,
 * then the close delimiter, nothing but CRLF after it), no boundary text inside a part, and a
 * Final-Recipient, Action and Status field per recipient block of the delivery-status part.
 * *nrcpts (may be NULL) gets the number of recipient blocks. 0 ok; -1 with err. */
int dsn_check(const char *msg, size_t len, size_t *nrcpts, char *err, size_t errlen);

#endif
