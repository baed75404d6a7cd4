/* The bounce (proxy/smtp/dsn.h): exact bytes for a fixed input, the recipient it goes to, no bounce
 * for the null sender, and hostile input that must stay inside its field or part. Every message
 * built is read back with dsn_check and with the small MIME reader below. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/smtp/dsn.h"

#define NOW INT64_C(1800000000)     /* Fri, 15 Jan 2027 08:00:00 +0000 */
#define ARRIVAL INT64_C(1799990000) /* 2 h 46 min 40 s earlier */

/* Deterministic "randomness": call n fills bytes n*16 + i, so every draw differs. */
static int counter_random(void *ctx, unsigned char *buf, size_t n)
{
    unsigned *calls = ctx;
    size_t i;
    for (i = 0; i < n; i++)
        buf[i] = (unsigned char)(*calls * 16 + i);
    (*calls)++;
    return 0;
}

static int const_random(void *ctx, unsigned char *buf, size_t n)
{
    (void)ctx;
    memset(buf, 7, n);
    return 0;
}

static int failing_random(void *ctx, unsigned char *buf, size_t n)
{
    (void)ctx;
    (void)buf;
    (void)n;
    return -1;
}

static const char orig_headers[] = "Received: from copier1 (copier1 [192.0.2.10])\r\n"
                                   "\tby relay.example.org; Fri, 15 Jan 2027 05:13:20 +0000\r\n"
                                   "From: scan@example.org\r\n"
                                   "To: boss@example.com\r\n"
                                   "Subject: Scan 0042\r\n"
                                   "\r\n"
                                   "the body, never returned\r\n";

static void base_input(struct dsn_input *in, struct dsn_rcpt *r, unsigned *calls)
{
    memset(in, 0, sizeof(*in));
    memset(r, 0, sizeof(*r));
    *calls = 0;
    r->address = "boss@example.com";
    r->action = DSN_ACTION_FAILED;
    r->status = "5.7.60";
    r->diagnostic = "550 5.7.60 SMTP; Client does not have permissions to send as this sender";
    r->remote_mta = "smtp.office365.com";
    in->reporting_mta = "relay.example.org";
    in->queue_id = "0123456789abcdef";
    in->account = "scanners";
    in->device = "copier1";
    in->mailbox = "scanner@example.org";
    in->mail_from = "scan@example.org";
    in->arrival = ARRIVAL;
    in->now = NOW;
    in->reason = DSN_REASON_REFUSED;
    in->rcpts = r;
    in->nrcpts = 1;
    in->message = orig_headers;
    in->message_len = sizeof(orig_headers) - 1;
    in->random = counter_random;
    in->random_ctx = calls;
}

/* A small MIME reader, separate from dsn_check: CRLF only, lines <= 998, 7-bit, the header
 * block ends before the first delimiter, delimiters balanced. Returns the number of parts. */
static int mime_parts(const char *m, size_t len, const char *boundary)
{
    char delim[160], close[160];
    size_t pos = 0;
    int parts = 0, closed = 0, in_body = 0;
    snprintf(delim, sizeof(delim), "--%s", boundary);
    snprintf(close, sizeof(close), "--%s--", boundary);
    while (pos < len) {
        const char *crlf = strstr(m + pos, "\r\n");
        size_t n;
        assert_non_null(crlf);
        n = (size_t)(crlf - (m + pos));
        assert_true(n <= 998);
        assert_null(memchr(m + pos, '\n', n));
        assert_null(memchr(m + pos, '\r', n));
        for (size_t i = 0; i < n; i++)
            assert_true((unsigned char)m[pos + i] < 0x80);
        if (n == 0)
            in_body = 1;
        if (n == strlen(close) && memcmp(m + pos, close, n) == 0) {
            assert_true(in_body);
            assert_false(closed);
            closed = 1;
        } else if (n == strlen(delim) && memcmp(m + pos, delim, n) == 0) {
            assert_true(in_body);
            assert_false(closed);
            parts++;
        } else if (closed) {
            fail_msg("text after the close delimiter");
        }
        pos += n + 2;
    }
    assert_true(closed);
    return parts;
}

static char *build_ok(const struct dsn_input *in, size_t *len, char *rcpt, size_t want_rcpts)
{
    char *out = NULL, err[256] = "", boundary[128];
    const char *b, *q;
    size_t n = 0;
    assert_int_equal(dsn_build(in, &out, len, rcpt, DSN_ADDR_MAX + 1, err, sizeof(err)), 1);
    assert_non_null(out);
    assert_int_equal(strlen(out), *len);
    if (dsn_check(out, *len, &n, err, sizeof(err)) != 0)
        fail_msg("dsn_check: %s", err);
    assert_int_equal(n, want_rcpts);
    b = strstr(out, "boundary=\"");
    assert_non_null(b);
    b += strlen("boundary=\"");
    q = strchr(b, '"');
    assert_non_null(q);
    assert_true((size_t)(q - b) < sizeof(boundary));
    memcpy(boundary, b, (size_t)(q - b));
    boundary[q - b] = '\0';
    assert_int_equal(mime_parts(out, *len, boundary), 3);
    if (getenv("DSN_DUMP"))
        fwrite(out, 1, *len, stdout);
    return out;
}

/* Count non-overlapping occurrences. */
static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    const char *p = hay;
    while ((p = strstr(p, needle)) != NULL) {
        n++;
        p += strlen(needle);
    }
    return n;
}

/* One failed recipient, fixed now and randomness: the exact bytes. */
static const char golden[] =
    "From: Mail Delivery System <MAILER-DAEMON@relay.example.org>\r\n"
    "To: <scan@example.org>\r\n"
    "Subject: Undelivered Mail Returned to Sender\r\n"
    "Date: Fri, 15 Jan 2027 08:00:00 +0000\r\n"
    "Message-ID: <20270115080000.0001020304050607@relay.example.org>\r\n"
    "Auto-Submitted: auto-replied\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/report; report-type=delivery-status;\r\n"
    "\tboundary=\"=_sop-dsn_101112131415161718191a1b1c1d1e1f\"\r\n"
    "\r\n"
    "This is a MIME-encapsulated message.\r\n"
    "\r\n"
    "--=_sop-dsn_101112131415161718191a1b1c1d1e1f\r\n"
    "Content-Description: Notification\r\n"
    "Content-Type: text/plain; charset=us-ascii\r\n"
    "\r\n"
    "This is the mail delivery system at relay.example.org.\r\n"
    "\r\n"
    "Your message could not be delivered to one or more recipients: the\r\n"
    "mail server refused it permanently, and it will not be retried for\r\n"
    "the recipients marked as failed below.\r\n"
    "\r\n"
    "Queue ID: 0123456789abcdef\r\n"
    "Account: scanners\r\n"
    "Device: copier1\r\n"
    "Arrived: Fri, 15 Jan 2027 05:13:20 +0000\r\n"
    "\r\n"
    "<boss@example.com>: failed, status 5.7.60\r\n"
    "    smtp.office365.com said: 550 5.7.60 SMTP; Client does not have permissions\r\n"
    "    to send as this sender\r\n"
    "    What it means: the mailbox scanner@example.org may not send as this sender\r\n"
    "    address (SendAs); fix: set sender_rewrite = envelope (or header) in the\r\n"
    "    account so the proxy sends as scanner@example.org, or let the mailbox send\r\n"
    "    as the device's address: Add-RecipientPermission -Identity <device's\r\n"
    "    sender address> -Trustee scanner@example.org -AccessRights SendAs\r\n"
    "\r\n"
    "The headers of your message are attached. Its body is not returned:\r\n"
    "you have it, and a bounce should neither spread its content nor be large.\r\n"
    "--=_sop-dsn_101112131415161718191a1b1c1d1e1f\r\n"
    "Content-Description: Delivery report\r\n"
    "Content-Type: message/delivery-status\r\n"
    "\r\n"
    "Reporting-MTA: dns; relay.example.org\r\n"
    "X-Queue-ID: 0123456789abcdef\r\n"
    "Arrival-Date: Fri, 15 Jan 2027 05:13:20 +0000\r\n"
    "\r\n"
    "Final-Recipient: rfc822; boss@example.com\r\n"
    "Action: failed\r\n"
    "Status: 5.7.60\r\n"
    "Remote-MTA: dns; smtp.office365.com\r\n"
    "Diagnostic-Code: smtp; 550 5.7.60 SMTP; Client does not have permissions to\r\n"
    " send as this sender\r\n"
    "--=_sop-dsn_101112131415161718191a1b1c1d1e1f\r\n"
    "Content-Description: Undelivered Message Headers\r\n"
    "Content-Type: text/rfc822-headers\r\n"
    "\r\n"
    "Received: from copier1 (copier1 [192.0.2.10])\r\n"
    "\tby relay.example.org; Fri, 15 Jan 2027 05:13:20 +0000\r\n"
    "From: scan@example.org\r\n"
    "To: boss@example.com\r\n"
    "Subject: Scan 0042\r\n"
    "--=_sop-dsn_101112131415161718191a1b1c1d1e1f--\r\n";

static void test_golden_one_failed(void **state)
{
    struct dsn_input in;
    struct dsn_rcpt r;
    unsigned calls;
    char rcpt[DSN_ADDR_MAX + 1];
    size_t len;
    char *out;
    (void)state;
    base_input(&in, &r, &calls);
    out = build_ok(&in, &len, rcpt, 1);
    assert_string_equal(rcpt, "scan@example.org");
    assert_string_equal(out, golden);
    assert_null(strstr(out, "the body, never returned"));
    free(out);
}

static void test_two_recipients_failed_and_delayed(void **state)
{
    struct dsn_input in;
    struct dsn_rcpt r[2];
    unsigned calls;
    char rcpt[DSN_ADDR_MAX + 1];
    size_t len;
    char *out;
    (void)state;
    base_input(&in, &r[0], &calls);
    memset(&r[1], 0, sizeof(r[1]));
    r[1].address = "ops@example.com";
    r[1].original = "OPS@example.com";
    r[1].action = DSN_ACTION_DELAYED;
    r[1].status = "4.4.1";
    r[1].diagnostic = "451 4.4.1 Temporary server error";
    in.nrcpts = 2;
    out = build_ok(&in, &len, rcpt, 2);
    assert_non_null(strstr(out, "\r\n\r\nFinal-Recipient: rfc822; boss@example.com\r\n"
                                "Action: failed\r\nStatus: 5.7.60\r\n"
                                "Remote-MTA: dns; smtp.office365.com\r\n"));
    assert_non_null(strstr(out, "\r\n\r\nFinal-Recipient: rfc822; ops@example.com\r\n"
                                "Original-Recipient: rfc822; OPS@example.com\r\n"
                                "Action: delayed\r\nStatus: 4.4.1\r\n"
                                "Diagnostic-Code: smtp; 451 4.4.1 Temporary server error\r\n"));
    assert_non_null(strstr(out, "<ops@example.com>: delayed, still being retried, status 4.4.1"));
    assert_non_null(strstr(out, "Subject: Undelivered Mail Returned to Sender\r\n"));
    free(out);

    /* only delayed recipients: not called undelivered */
    r[0].action = DSN_ACTION_DELAYED;
    r[0].status = NULL;
    calls = 0;
    out = build_ok(&in, &len, rcpt, 2);
    assert_non_null(strstr(out, "Subject: Delayed Mail (still being retried)\r\n"));
    assert_non_null(strstr(out, "Action: delayed\r\nStatus: 4.0.0\r\n"));
    free(out);
}

static void test_expired_is_447(void **state)
{
    struct dsn_input in;
    struct dsn_rcpt r;
    unsigned calls;
    char rcpt[DSN_ADDR_MAX + 1];
    size_t len;
    char *out;
    (void)state;
    base_input(&in, &r, &calls);
    in.reason = DSN_REASON_EXPIRED;
    r.status = NULL;
    r.diagnostic = "421 4.3.2 Service not available, closing transmission channel";
    out = build_ok(&in, &len, rcpt, 1);
    assert_non_null(strstr(out, "Action: failed\r\nStatus: 4.4.7\r\n"));
    assert_non_null(strstr(out, "max_queue_lifetime"));
    assert_non_null(strstr(out, "Arrival-Date: Fri, 15 Jan 2027 05:13:20 +0000\r\n"));
    free(out);
}

static void test_bounce_to_and_sender(void **state)
{
    struct dsn_input in;
    struct dsn_rcpt r;
    unsigned calls;
    char rcpt[DSN_ADDR_MAX + 1], err[256];
    size_t len;
    char *out;
    (void)state;
    base_input(&in, &r, &calls);
    in.bounce_to = "postmaster@example.org";
    out = build_ok(&in, &len, rcpt, 1);
    assert_string_equal(rcpt, "postmaster@example.org");
    assert_non_null(strstr(out, "\r\nTo: <postmaster@example.org>\r\n"));
    free(out);
    in.bounce_to = "";
    calls = 0;
    out = build_ok(&in, &len, rcpt, 1);
    assert_string_equal(rcpt, "scan@example.org");
    assert_non_null(strstr(out, "\r\nTo: <scan@example.org>\r\n"));
    free(out);
    /* a sender that cannot be named in To: or RCPT TO without SMTPUTF8: refused, not mangled */
    in.mail_from = "sc\xc3\xa4n@example.org";
    out = (char *)1;
    assert_int_equal(dsn_build(&in, &out, &len, rcpt, sizeof(rcpt), err, sizeof(err)), -1);
    assert_null(out);
    assert_non_null(strstr(err, "not a plain ASCII address"));
    in.mail_from = "a@b>\r\nBcc: victim@example.com";
    assert_int_equal(dsn_build(&in, &out, &len, rcpt, sizeof(rcpt), err, sizeof(err)), -1);
}

static void test_null_sender_never_bounced(void **state)
{
    struct dsn_input in;
    struct dsn_rcpt r;
    unsigned calls;
    char rcpt[DSN_ADDR_MAX + 1] = "", err[256] = "";
    size_t len = 7;
    char *out = (char *)1;
    (void)state;
    base_input(&in, &r, &calls);
    in.mail_from = "";
    in.bounce_to = "postmaster@example.org"; /* not even to bounce_to */
    assert_int_equal(dsn_build(&in, &out, &len, rcpt, sizeof(rcpt), err, sizeof(err)), 0);
    assert_null(out);
    assert_int_equal(len, 0);
    assert_int_equal(calls, 0);
    in.mail_from = NULL;
    assert_int_equal(dsn_build(&in, &out, &len, rcpt, sizeof(rcpt), err, sizeof(err)), 0);
}

static void test_invalid_input_refused(void **state)
{
    struct dsn_input in;
    struct dsn_rcpt r;
    unsigned calls;
    char rcpt[DSN_ADDR_MAX + 1], err[256];
    size_t len;
    char *out;
    (void)state;
    base_input(&in, &r, &calls);
    r.status = "2.0.0";
    assert_int_equal(dsn_build(&in, &out, &len, rcpt, sizeof(rcpt), err, sizeof(err)), -1);
    r.status = "5.7.60\r\nX: y";
    assert_int_equal(dsn_build(&in, &out, &len, rcpt, sizeof(rcpt), err, sizeof(err)), -1);
    r.status = "5.1234.1";
    assert_int_equal(dsn_build(&in, &out, &len, rcpt, sizeof(rcpt), err, sizeof(err)), -1);
    r.status = "5.7.1";
    r.action = DSN_ACTION_DELAYED;
    assert_int_equal(dsn_build(&in, &out, &len, rcpt, sizeof(rcpt), err, sizeof(err)), -1);
    r.action = DSN_ACTION_FAILED;
    in.reporting_mta = "relay.example.org\r\nX-Evil: 1";
    assert_int_equal(dsn_build(&in, &out, &len, rcpt, sizeof(rcpt), err, sizeof(err)), -1);
    in.reporting_mta = "relay.example.org";
    in.nrcpts = 0;
    assert_int_equal(dsn_build(&in, &out, &len, rcpt, sizeof(rcpt), err, sizeof(err)), -1);
    in.nrcpts = 1;
    in.random = failing_random;
    assert_int_equal(dsn_build(&in, &out, &len, rcpt, sizeof(rcpt), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "random"));
    in.random = counter_random;
    assert_int_equal(dsn_build(&in, &out, &len, rcpt, 4, err, sizeof(err)), -1);
    assert_null(out);
}

static void test_hostile_crlf_stays_in_its_field(void **state)
{
    struct dsn_input in;
    struct dsn_rcpt r;
    unsigned calls;
    char rcpt[DSN_ADDR_MAX + 1];
    size_t len;
    char *out;
    (void)state;
    base_input(&in, &r, &calls);
    r.address = "boss@example.com\r\nAction: delivered\r\n\r\nX-Injected: 1";
    r.original = "o\nFinal-Recipient: rfc822; evil@example.com";
    r.diagnostic = "550 5.7.60 denied\r\n\r\n--=_sop-dsn_fake--\r\nContent-Type: text/html\0tail";
    r.remote_mta = "mx\r\nReporting-MTA: dns; evil";
    in.account = "scan\rners";
    in.device = "copier\n1";
    in.queue_id = "0123\r\nBcc: x@y";
    out = build_ok(&in, &len, rcpt, 1);
    assert_null(strstr(out, "\r\nAction: delivered"));
    assert_null(strstr(out, "\r\nX-Injected"));
    assert_null(strstr(out, "\r\nFinal-Recipient: rfc822; evil"));
    assert_null(strstr(out, "\r\nContent-Type: text/html"));
    assert_null(strstr(out, "\r\nBcc:"));
    assert_int_equal(count(out, "\r\nReporting-MTA: "), 1);
    assert_int_equal(count(out, "\r\nFinal-Recipient: "), 1);
    assert_non_null(strstr(out, "Final-Recipient: rfc822; boss@example.com??Action: delivered"));
    free(out);
}

static void test_boundary_in_original_headers_is_redrawn(void **state)
{
    struct dsn_input in;
    struct dsn_rcpt r;
    unsigned calls;
    char rcpt[DSN_ADDR_MAX + 1], hdr[512], err[256];
    size_t len;
    char *out;
    (void)state;
    base_input(&in, &r, &calls);
    /* call 0 is the Message-ID; call 1 would give this boundary, call 2 the one after it */
    snprintf(hdr, sizeof(hdr),
             "Subject: hi\r\n--=_sop-dsn_101112131415161718191a1b1c1d1e1f\r\n"
             "X-B: --=_sop-dsn_202122232425262728292a2b2c2d2e2f--\r\n\r\nbody\r\n");
    in.message = hdr;
    in.message_len = strlen(hdr);
    out = build_ok(&in, &len, rcpt, 1);
    assert_int_equal(calls, 4); /* two boundaries refused, the third used */
    assert_non_null(strstr(out, "boundary=\"=_sop-dsn_303132333435363738393a3b3c3d3e3f\""));
    free(out);

    /* a random source that always gives the same bytes cannot get past such headers */
    in.random = const_random;
    snprintf(hdr, sizeof(hdr), "X: --=_sop-dsn_07070707070707070707070707070707\r\n\r\n");
    in.message_len = strlen(hdr);
    out = (char *)1;
    assert_int_equal(dsn_build(&in, &out, &len, rcpt, sizeof(rcpt), err, sizeof(err)), -1);
    assert_null(out);
    assert_non_null(strstr(err, "boundary"));
}

static void test_eight_bit_and_nul_replaced(void **state)
{
    struct dsn_input in;
    struct dsn_rcpt r;
    unsigned calls;
    char rcpt[DSN_ADDR_MAX + 1];
    static const char hdr[] = "Subject: Gr\xc3\xbc\xc3\x9f\x65\r\nX-Nul: a\0b\r\nX-Bare-CR: a\rb\n"
                              "X-LF-only: yes\n\nbody \xff\r\n";
    size_t len;
    char *out;
    (void)state;
    base_input(&in, &r, &calls);
    r.address = "b\xc3\xb6ss@example.com";
    r.diagnostic = "550 5.1.1 \x80\xfe unknown \x1b[31m";
    in.message = hdr;
    in.message_len = sizeof(hdr) - 1;
    out = build_ok(&in, &len, rcpt, 1);
    assert_non_null(strstr(out, "\r\nSubject: Gr????e\r\nX-Nul: a?b\r\nX-Bare-CR: a?b\r\n"
                                "X-LF-only: yes\r\n--"));
    assert_non_null(strstr(out, "Final-Recipient: rfc822; b??ss@example.com\r\n"));
    assert_non_null(strstr(out, "Diagnostic-Code: smtp; 550 5.1.1 ?? unknown ?[31m\r\n"));
    assert_null(strstr(out, "body ?"));
    free(out);
}

static void test_huge_header_block_cut(void **state)
{
    struct dsn_input in;
    struct dsn_rcpt r;
    unsigned calls;
    char rcpt[DSN_ADDR_MAX + 1], diag[5000];
    size_t len, i, mlen = 1024 * 1024;
    char *msg = malloc(mlen), *out, *part;
    (void)state;
    assert_non_null(msg);
    for (i = 0; i < mlen; i++)
        msg[i] = (char)('a' + i % 26);
    /* 1 MB: one 3000-byte line, then 100-byte lines, no end of the header block at all */
    memcpy(msg, "X-Long: ", 8);
    msg[3000] = '\n';
    for (i = 3100; i < mlen; i += 100) {
        msg[i] = '\r';
        msg[i + 1] = '\n';
    }
    base_input(&in, &r, &calls);
    for (i = 0; i + 1 < sizeof(diag); i++)
        diag[i] = i % 7 == 6 ? ' ' : 'x';
    diag[sizeof(diag) - 1] = '\0';
    r.diagnostic = diag;
    in.message = msg;
    in.message_len = mlen;
    out = build_ok(&in, &len, rcpt, 1);
    part = strstr(out, "Content-Type: text/rfc822-headers\r\n\r\n");
    assert_non_null(part);
    assert_true(strlen(part) < DSN_HEADERS_MAX + 4096);
    assert_true(strlen(part) > DSN_HEADERS_MAX - 4096);
    assert_true(len < DSN_HEADERS_MAX + 3 * DSN_DIAG_MAX + 8192);
    /* the diagnostic is bounded and marked as cut */
    assert_non_null(strstr(out, "...\r\n"));
    free(out);
    free(msg);
}

static void test_exchange_code_explained(void **state)
{
    struct dsn_input in;
    struct dsn_rcpt r;
    unsigned calls;
    char rcpt[DSN_ADDR_MAX + 1];
    size_t len;
    char *out;
    (void)state;
    base_input(&in, &r, &calls);
    out = build_ok(&in, &len, rcpt, 1);
    assert_non_null(strstr(out, "What it means: "));
    free(out);
    r.diagnostic = "550 5.1.1 no such user here";
    r.status = "5.1.1";
    calls = 0;
    out = build_ok(&in, &len, rcpt, 1);
    assert_non_null(strstr(out, "smtp.office365.com said: 550 5.1.1 no such user here\r\n"));
    free(out);
}

static void test_many_recipients(void **state)
{
    struct dsn_input in;
    struct dsn_rcpt *r = calloc(DSN_MAX_RCPTS, sizeof(*r));
    unsigned calls;
    char rcpt[DSN_ADDR_MAX + 1];
    size_t len, i;
    char *out;
    (void)state;
    assert_non_null(r);
    base_input(&in, r, &calls);
    for (i = 0; i < DSN_MAX_RCPTS; i++)
        r[i] = r[0];
    in.rcpts = r;
    in.nrcpts = DSN_MAX_RCPTS;
    out = build_ok(&in, &len, rcpt, DSN_MAX_RCPTS);
    free(out);
    in.nrcpts = DSN_MAX_RCPTS + 1;
    assert_int_equal(dsn_build(&in, &out, &len, rcpt, sizeof(rcpt), NULL, 0), -1);
    free(r);
}

static void test_check_rejects_broken_messages(void **state)
{
    struct dsn_input in;
    struct dsn_rcpt r;
    unsigned calls;
    char rcpt[DSN_ADDR_MAX + 1], err[256];
    size_t len;
    char *out, *p;
    (void)state;
    base_input(&in, &r, &calls);
    out = build_ok(&in, &len, rcpt, 1);
    p = strstr(out, "Final-Recipient");
    p[5] = '\n';
    assert_int_equal(dsn_check(out, len, NULL, err, sizeof(err)), -1);
    p[5] = '-';
    p = strstr(out, "Status: 5");
    p[0] = 'X';
    assert_int_equal(dsn_check(out, len, NULL, err, sizeof(err)), -1);
    p[0] = 'S';
    assert_int_equal(dsn_check(out, len - 2, NULL, err, sizeof(err)), -1);
    p = strstr(out, "Subject: Scan");
    p[0] = '-';
    p[1] = '-';
    assert_int_equal(dsn_check(out, len, NULL, err, sizeof(err)), 0);
    p = strstr(out, "X-Queue-ID: ");
    memcpy(p, "--=_sop-dsn_", 12);
    assert_int_equal(dsn_check(out, len, NULL, err, sizeof(err)), 0);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_one_failed),
        cmocka_unit_test(test_two_recipients_failed_and_delayed),
        cmocka_unit_test(test_expired_is_447),
        cmocka_unit_test(test_bounce_to_and_sender),
        cmocka_unit_test(test_null_sender_never_bounced),
        cmocka_unit_test(test_invalid_input_refused),
        cmocka_unit_test(test_hostile_crlf_stays_in_its_field),
        cmocka_unit_test(test_boundary_in_original_headers_is_redrawn),
        cmocka_unit_test(test_eight_bit_and_nul_replaced),
        cmocka_unit_test(test_huge_header_block_cut),
        cmocka_unit_test(test_exchange_code_explained),
        cmocka_unit_test(test_many_recipients),
        cmocka_unit_test(test_check_rejects_broken_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
