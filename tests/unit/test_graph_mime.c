/* proxy/graph/graph_mime.c: the recipients and From: of the submitted copy, whole or draft +
 * attachments, the attachments' exact bytes, the spool file's bounds, refusals. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <glib.h>
#include <openssl/evp.h>

#include "proxy/graph/graph_mime.h"

static const char *const RCPTS[] = {"a@x.org", "c@x.org", "e@x.org"};

static struct graph_mime *open_mem(const char *msg, const char *const *rcpts, size_t n,
                                   const char *from, size_t request_max)
{
    struct graph_mime_opts o = {rcpts, n, from, request_max};
    char err[256] = "";
    struct graph_mime *m = graph_mime_open_mem(msg, strlen(msg), &o, err, sizeof(err));
    if (!m)
        fail_msg("open: %s", err);
    return m;
}

/* The submitted copy, decoded from its base64 (NUL-terminated; *len without it). */
static char *body_of(struct graph_mime *m, size_t *len)
{
    uint64_t n = graph_mime_body_b64_size(m);
    char *b64 = malloc(n + 1), err[256];
    unsigned char *out = malloc(n / 4 * 3 + 4);
    size_t got = 0, pad = 0;
    ssize_t r;
    assert_non_null(b64);
    assert_non_null(out);
    graph_mime_body_rewind(m);
    /* odd read sizes: the reader keeps what it made and did not hand out */
    while ((r = graph_mime_body_read(m, b64 + got, got % 7 + 1 + got % 5000, err, sizeof(err))) > 0)
        got += (size_t)r;
    assert_int_equal(r, 0);
    assert_int_equal(got, n);
    assert_true(n % 4 == 0);
    for (size_t i = 0; i < n; i++)
        assert_true(b64[i] != '\n' && b64[i] != '\r');
    if (n >= 1 && b64[n - 1] == '=')
        pad++;
    if (n >= 2 && b64[n - 2] == '=')
        pad++;
    assert_int_equal(EVP_DecodeBlock(out, (unsigned char *)b64, (int)n), (int)(n / 4 * 3));
    free(b64);
    *len = n / 4 * 3 - pad;
    out[*len] = '\0';
    return (char *)out;
}

static char *text_of(struct graph_mime *m)
{
    size_t len;
    return body_of(m, &len);
}

static void test_to_cc_filtered_bcc_replaced(void **state)
{
    (void)state;
    struct graph_mime *m = open_mem("From: dev@printer\r\n"
                                    "To: A <a@x.org>, Stranger <s@evil.com>\r\n"
                                    "Cc: C@X.ORG, d@x.org\r\n"
                                    "Bcc: old@x.org\r\n"
                                    "Subject: hi\r\n"
                                    "\r\n"
                                    "body\r\n",
                                    RCPTS, 3, NULL, 0);
    unsigned dropped, bcc;
    char *t = text_of(m);
    assert_null(graph_mime_refusal(m));
    assert_int_equal(graph_mime_natt(m), 0);
    assert_non_null(strstr(t, "\r\nTo: A <a@x.org>\r\n"));
    assert_non_null(strstr(t, "\r\nCc: C@X.ORG\r\n")); /* case-insensitive, kept as written */
    assert_non_null(strstr(t, "\r\nBcc: e@x.org\r\n"));
    assert_null(strstr(t, "evil.com"));
    assert_null(strstr(t, "d@x.org"));
    assert_null(strstr(t, "old@x.org"));
    assert_non_null(strstr(t, "From: dev@printer\r\n"));
    assert_non_null(strstr(t, "Subject: hi\r\n"));
    assert_non_null(strstr(t, "\r\n\r\nbody\r\n"));
    graph_mime_rcpt_stats(m, &dropped, &bcc);
    assert_int_equal(dropped, 2);
    assert_int_equal(bcc, 1);
    free(t);
    graph_mime_free(m);
}

static void test_groups(void **state)
{
    (void)state;
    static const char *const r[] = {"a@x.org", "B@x.org"};
    struct graph_mime *m = open_mem("From: dev@printer\r\n"
                                    "To: Team: a@x.org, z@x.org;, undisclosed-recipients:;\r\n"
                                    "Cc: Others: q@x.org, w@x.org;\r\n"
                                    "\r\n"
                                    "x\r\n",
                                    r, 2, NULL, 0);
    unsigned dropped, bcc;
    char *t = text_of(m);
    assert_non_null(strstr(t, "To: Team: a@x.org;, undisclosed-recipients: ;\r\n"));
    assert_null(strstr(t, "Cc:")); /* the group lost every member: the header goes */
    assert_null(strstr(t, "z@x.org"));
    assert_null(strstr(t, "q@x.org"));
    assert_non_null(strstr(t, "Bcc: B@x.org\r\n"));
    graph_mime_rcpt_stats(m, &dropped, &bcc);
    assert_int_equal(dropped, 3);
    assert_int_equal(bcc, 1);
    free(t);
    graph_mime_free(m);
}

static void test_repeated_to_and_envelope(void **state)
{
    (void)state;
    static const char *const r[] = {"a@x.org", "A@X.org", "c@x.org", "c@x.org"};
    struct graph_mime *m =
        open_mem("To: a@x.org\r\nSubject: s\r\nTo: b@x.org, c@x.org\r\n\r\nx\r\n", r, 4, NULL, 0);
    unsigned dropped, bcc;
    char *t = text_of(m);
    /* two To: fields become one, with the envelope's addresses only; nothing in Bcc */
    assert_non_null(strstr(t, "To: a@x.org, c@x.org\r\n"));
    assert_null(strstr(t, "b@x.org"));
    assert_null(strstr(t, "Bcc:"));
    assert_null(strstr(strstr(t, "To:") + 3, "To:"));
    graph_mime_rcpt_stats(m, &dropped, &bcc);
    assert_int_equal(dropped, 1);
    assert_int_equal(bcc, 0);
    free(t);
    graph_mime_free(m);
}

static void test_encoded_words_and_odd_syntax(void **state)
{
    (void)state;
    static const char *const r[] = {"j@x.org"};
    struct graph_mime *m =
        open_mem("To: =?utf-8?q?J=C3=B6rg?= <J@x.org>, \"a, b\" <x@evil.com>,\r\n"
                 " <<garbage>>, nobody@\r\n"
                 "Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n\r\nx\r\n",
                 r, 1, NULL, 0);
    char *t = text_of(m);
    assert_non_null(strstr(t, "<J@x.org>"));
    assert_null(strstr(t, "evil.com"));
    assert_null(strstr(t, "garbage"));
    assert_null(strstr(t, "nobody"));
    assert_null(strstr(t, "Bcc:"));
    assert_non_null(strstr(t, "Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n")); /* untouched */
    free(t);
    graph_mime_free(m);
}

static void test_no_to_all_in_bcc(void **state)
{
    (void)state;
    struct graph_mime *m = open_mem("Subject: s\r\n\r\nx\r\n", RCPTS, 3, NULL, 0);
    char *t = text_of(m);
    assert_non_null(strstr(t, "Bcc: a@x.org, c@x.org, e@x.org\r\n"));
    free(t);
    graph_mime_free(m);
}

static void test_not_mime_and_empty(void **state)
{
    (void)state;
    struct graph_mime *m = open_mem("just some text\r\nand more\r\n", RCPTS, 1, NULL, 0);
    char *t = text_of(m);
    assert_string_equal(t, "Bcc: a@x.org\r\n\r\njust some text\r\nand more\r\n");
    free(t);
    graph_mime_free(m);
    m = open_mem("", RCPTS, 1, NULL, 0);
    t = text_of(m);
    assert_non_null(strstr(t, "Bcc: a@x.org\r\n"));
    free(t);
    graph_mime_free(m);
}

static void test_no_recipient(void **state)
{
    (void)state;
    static const char *const bad[] = {"a@x.org\r\nX-Evil: 1"};
    struct graph_mime_opts o = {RCPTS, 0, NULL, 0};
    char err[128] = "";
    assert_null(graph_mime_open_mem("To: a@x.org\r\n\r\nx\r\n", 18, &o, err, sizeof(err)));
    assert_string_equal(err, "no recipient");
    o.rcpts = bad;
    o.nrcpts = 1;
    assert_null(graph_mime_open_mem("To: a@x.org\r\n\r\nx\r\n", 18, &o, err, sizeof(err)));
    assert_non_null(strstr(err, "unusable envelope recipient"));
}

static void test_from_rewrite(void **state)
{
    (void)state;
    struct graph_mime *m =
        open_mem("Subject: s\r\nFrom: Dev <dev@printer>\r\nTo: a@x.org\r\n\r\nx\r\n", RCPTS, 1,
                 "relay@x.org", 0);
    char *t = text_of(m);
    assert_non_null(strstr(t, "\r\nFrom: <relay@x.org>\r\nReply-To: Dev <dev@printer>\r\n"));
    assert_null(strstr(t, "From: Dev"));
    free(t);
    graph_mime_free(m);

    /* a Reply-To of its own is kept, the From: value dropped */
    m = open_mem("From: Dev <dev@printer>\r\nReply-To: owner@x.org\r\nTo: a@x.org\r\n\r\nx\r\n",
                 RCPTS, 1, "relay@x.org", 0);
    t = text_of(m);
    assert_non_null(strstr(t, "From: <relay@x.org>\r\n"));
    assert_non_null(strstr(t, "Reply-To: owner@x.org\r\n"));
    assert_null(strstr(t, "dev@printer"));
    free(t);
    graph_mime_free(m);

    /* two From: one From:, one Reply-To: with both; an empty one adds nothing */
    m = open_mem("From: one@dev\r\nTo: a@x.org\r\nFrom:  \r\nFrom: two@dev\r\n\r\nx\r\n", RCPTS, 1,
                 "relay@x.org", 0);
    t = text_of(m);
    assert_non_null(strstr(t, "From: <relay@x.org>\r\nReply-To: one@dev\r\n , two@dev\r\n"));
    assert_null(strstr(strstr(t, "From:") + 5, "From:"));
    free(t);
    graph_mime_free(m);

    /* a From: line that Reply-To:'s longer name would push past 998: folded after the name */
    {
        char msg[1200], want[1200];
        char *local = malloc(986);
        memset(local, 'l', 985);
        local[985] = '\0';
        snprintf(msg, sizeof(msg), "From: %s@b.c\r\nTo: a@x.org\r\n\r\nx\r\n", local);
        snprintf(want, sizeof(want), "From: <relay@x.org>\r\nReply-To:\r\n %s@b.c\r\nTo:", local);
        m = open_mem(msg, RCPTS, 1, "relay@x.org", 0);
        t = text_of(m);
        assert_non_null(strstr(t, want));
        free(t);
        graph_mime_free(m);
        free(local);
    }

    /* no From: at all: the mailbox's first, no Reply-To: (docs/header-rewrite.md) */
    m = open_mem("To: a@x.org\r\n\r\nx\r\n", RCPTS, 1, "relay@x.org", 0);
    t = text_of(m);
    assert_int_equal(strncmp(t, "From: <relay@x.org>\r\n", 21), 0);
    assert_null(strstr(t + 5, "From:"));
    assert_null(strstr(t, "Reply-To:"));
    free(t);
    graph_mime_free(m);
    /* nor any header line */
    m = open_mem("just text\r\n", RCPTS, 1, "relay@x.org", 0);
    t = text_of(m);
    assert_int_equal(strncmp(t, "From: <relay@x.org>\r\n", 21), 0);
    assert_non_null(strstr(t, "\r\n\r\njust text\r\n"));
    free(t);
    graph_mime_free(m);

    /* white space before the colon (RFC 5322 4.5): "From :" is the From:, written "From:" (so
     * first: GMime cannot put a field elsewhere) */
    m = open_mem("Subject : s\r\nFrom : Dev <dev@printer>\r\nTo: a@x.org\r\n\r\nx\r\n", RCPTS, 1,
                 "relay@x.org", 0);
    t = text_of(m);
    assert_int_equal(
        strncmp(t, "From: <relay@x.org>\r\nReply-To: Dev <dev@printer>\r\nSubject : s\r\n", 63), 0);
    assert_null(strstr(t, "From :"));
    assert_null(strstr(t + 5, "From:"));
    assert_non_null(strstr(t, "Subject"));
    assert_non_null(strstr(t, "\r\n\r\nx\r\n"));
    free(t);
    graph_mime_free(m);
}

/* A deterministic pseudo-random attachment. */
static unsigned char *make_bytes(size_t n, uint32_t seed)
{
    unsigned char *b = malloc(n);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        b[i] = (unsigned char)(seed >> 16);
    }
    return b;
}

static void sha256(const void *p, size_t n, unsigned char out[32])
{
    unsigned int len = 32;
    assert_int_equal(EVP_Digest(p, n, out, &len, EVP_sha256(), NULL), 1);
}

/* base64 in 76-character lines, CRLF */
static void put_b64(FILE *f, const unsigned char *b, size_t n)
{
    unsigned char line[80];
    for (size_t i = 0; i < n; i += 57) {
        int k = EVP_EncodeBlock(line, b + i, (int)(n - i < 57 ? n - i : 57));
        fwrite(line, 1, (size_t)k, f);
        fputs("\r\n", f);
    }
}

static void put_head(FILE *f)
{
    fputs("From: scanner@printer\r\nTo: a@x.org\r\nSubject: scan\r\nMIME-Version: 1.0\r\n"
          "Content-Type: multipart/mixed; boundary=\"BOUNDARY\"\r\n\r\n"
          "This is a multi-part message in MIME format.\r\n"
          "--BOUNDARY\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nYour scan.\r\n",
          f);
}

static void put_att(FILE *f, const char *name, const char *type, const unsigned char *b, size_t n)
{
    fprintf(f,
            "--BOUNDARY\r\nContent-Type: %s; name=\"%s\"\r\n"
            "Content-Disposition: attachment; filename=\"%s\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n",
            type, name, name);
    put_b64(f, b, n);
}

/* Read attachment i whole in chunks of 320 KiB, re-reading each chunk once (a retry); sha256. */
static void att_sha(struct graph_mime *m, size_t i, unsigned char out[32])
{
    const struct graph_mime_att *a = graph_mime_att(m, i);
    size_t chunk = 320 * 1024;
    unsigned char *all = malloc(a->size + 1), *again = malloc(chunk);
    uint64_t off = 0;
    char err[256];
    assert_non_null(all);
    assert_non_null(again);
    while (off < a->size) {
        size_t want = a->size - off < chunk ? (size_t)(a->size - off) : chunk, got = 0;
        while (got < want) {
            ssize_t r =
                graph_mime_att_read(m, i, off + got, all + off + got, want - got, err, sizeof(err));
            if (r <= 0)
                fail_msg("att_read: %zd %s", r, err);
            got += (size_t)r;
        }
        /* the same chunk again: the same bytes */
        for (size_t g = 0; g < want;) {
            ssize_t r = graph_mime_att_read(m, i, off + g, again + g, want - g, err, sizeof(err));
            assert_true(r > 0);
            g += (size_t)r;
        }
        assert_memory_equal(again, all + off, want);
        off += want;
    }
    assert_int_equal(graph_mime_att_read(m, i, a->size, again, chunk, err, sizeof(err)), 0);
    sha256(all, a->size, out);
    free(all);
    free(again);
}

/* A spool-like body file: the message, then a trailer that is not part of it. */
static FILE *spool_file(void)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    return f;
}

/* The message is written: add the trailer; the message's length. */
static uint64_t seal(FILE *f)
{
    long len;
    assert_int_equal(fflush(f), 0);
    len = ftell(f);
    fputs("\r\n--BOUNDARY\r\nContent-Type: text/plain; name=trailer.txt\r\n\r\nSPOOLTRAILER\r\n"
          "To: evil@evil.com\r\n",
          f);
    assert_int_equal(fflush(f), 0);
    return (uint64_t)len;
}

static struct graph_mime *open_file(FILE *f, uint64_t len, const char *const *rcpts, size_t n,
                                    size_t max)
{
    struct graph_mime_opts o = {rcpts, n, NULL, max};
    char err[256] = "";
    struct graph_mime *m = graph_mime_open_fd(fileno(f), len, &o, err, sizeof(err));
    if (!m)
        fail_msg("open_fd: %s", err);
    return m;
}

static long peak_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* First (ru_maxrss is the process's peak): a 30 MB message of three 7.4 MB scans (base64), written
 * to the file piecewise, then prepared and read; the peak RSS is printed, not asserted. */
static void test_peak_rss_30mb(void **state)
{
    (void)state;
    FILE *f = spool_file();
    unsigned char *piece = make_bytes(57 * 1024, 7), line[80];
    long before, after;
    struct graph_mime *m;
    char err[256], buf[64 * 1024];
    uint64_t total = 0, len;
    ssize_t r;
    put_head(f);
    for (int a = 0; a < 3; a++) {
        fprintf(f,
                "--BOUNDARY\r\nContent-Type: application/pdf; name=\"scan%d.pdf\"\r\n"
                "Content-Disposition: attachment; filename=\"scan%d.pdf\"\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\n",
                a, a);
        for (size_t done = 0; done < 7400u * 1024; done += 57) {
            int k = EVP_EncodeBlock(line, piece + done % (57 * 1024), 57);
            fwrite(line, 1, (size_t)k, f);
            fputs("\r\n", f);
        }
    }
    fputs("--BOUNDARY--\r\n", f);
    free(piece);
    len = seal(f);
    before = peak_rss_kb();
    m = open_file(f, len, RCPTS, 1, 0);
    assert_int_equal(graph_mime_natt(m), 3);
    for (size_t i = 0; i < 3; i++) {
        uint64_t off = 0;
        while ((r = graph_mime_att_read(m, i, off, buf, sizeof(buf), err, sizeof(err))) > 0)
            off += (uint64_t)r;
        assert_int_equal(r, 0);
        assert_int_equal(off, graph_mime_att(m, i)->size);
        total += off;
    }
    graph_mime_body_rewind(m);
    while ((r = graph_mime_body_read(m, buf, sizeof(buf), err, sizeof(err))) > 0)
        ;
    assert_int_equal(r, 0);
    after = peak_rss_kb();
    printf("graph_mime: 30 MB message (%llu bytes), 3 attachments, %llu bytes decoded: "
           "peak RSS %ld KiB before, %ld KiB after preparing and reading it all (+%ld KiB)\n",
           (unsigned long long)len, (unsigned long long)total, before, after, after - before);
    graph_mime_free(m);
    fclose(f);
}

static void test_small_message_one_request(void **state)
{
    (void)state;
    const char *msg = "From: dev@printer\r\nTo: a@x.org\r\nSubject: s\r\n\r\nhello\r\n";
    struct graph_mime *m = open_mem(msg, RCPTS, 1, NULL, 0);
    size_t len;
    char *t = body_of(m, &len);
    assert_null(graph_mime_refusal(m));
    assert_int_equal(graph_mime_natt(m), 0);
    assert_null(graph_mime_att(m, 0));
    assert_string_equal(t, msg); /* nothing to change: the same bytes */
    assert_int_equal(graph_mime_body_b64_size(m), (strlen(msg) + 2) / 3 * 4);
    free(t);
    /* rewind: the same again */
    t = body_of(m, &len);
    assert_string_equal(t, msg);
    free(t);
    graph_mime_free(m);
}

static void test_12mb_two_attachments(void **state)
{
    (void)state;
    size_t n1 = 5 * 1024 * 1024 + 17, n2 = 4 * 1024 * 1024 - 3;
    unsigned char *b1 = make_bytes(n1, 1), *b2 = make_bytes(n2, 2), h[32], got[32];
    FILE *f = spool_file();
    struct graph_mime *m;
    const struct graph_mime_att *a;
    char *t;
    size_t len;
    put_head(f);
    put_att(f, "small.pdf", "application/pdf", b2, n2);
    put_att(f, "big.tif", "image/tiff", b1, n1);
    fputs("--BOUNDARY--\r\n", f);
    m = open_file(f, seal(f), RCPTS, 1, 0);
    assert_null(graph_mime_refusal(m));
    assert_int_equal(graph_mime_natt(m), 2);
    a = graph_mime_att(m, 0); /* the largest first */
    assert_string_equal(a->name, "big.tif");
    assert_string_equal(a->content_type, "image/tiff");
    assert_null(a->content_id);
    assert_int_equal(a->is_inline, 0);
    assert_int_equal(a->size, n1);
    a = graph_mime_att(m, 1);
    assert_string_equal(a->name, "small.pdf");
    assert_string_equal(a->content_type, "application/pdf");
    assert_int_equal(a->size, n2);
    att_sha(m, 0, got);
    sha256(b1, n1, h);
    assert_memory_equal(got, h, 32);
    att_sha(m, 1, got);
    sha256(b2, n2, h);
    assert_memory_equal(got, h, 32);
    /* out of order: the second, then the first's middle again */
    {
        unsigned char x[1000];
        char err[128];
        assert_int_equal(graph_mime_att_read(m, 0, 1234567, x, sizeof(x), err, sizeof(err)),
                         (ssize_t)sizeof(x));
        assert_memory_equal(x, b1 + 1234567, sizeof(x));
        assert_int_equal(graph_mime_att_read(m, 1, 5, x, sizeof(x), err, sizeof(err)),
                         (ssize_t)sizeof(x));
        assert_memory_equal(x, b2 + 5, sizeof(x));
        assert_int_equal(graph_mime_att_read(m, 0, n1 - 10, x, sizeof(x), err, sizeof(err)), 10);
        assert_memory_equal(x, b1 + n1 - 10, 10);
        assert_int_equal(graph_mime_att_read(m, 2, 0, x, sizeof(x), err, sizeof(err)), -1);
    }
    /* the draft: the text, without the attachments, within one request */
    assert_true(graph_mime_body_b64_size(m) <= GRAPH_MIME_REQUEST_MAX);
    t = body_of(m, &len);
    assert_non_null(strstr(t, "Your scan.\r\n"));
    assert_non_null(strstr(t, "Content-Type: multipart/mixed"));
    assert_null(strstr(t, "big.tif"));
    assert_null(strstr(t, "small.pdf"));
    assert_null(strstr(t, "SPOOLTRAILER"));
    assert_true(len < 4096);
    free(t);
    graph_mime_free(m);
    fclose(f);
    free(b1);
    free(b2);
}

/* request_max small: attachments go, the largest first, only as many as needed. */
static void test_small_request_max_splits(void **state)
{
    (void)state;
    unsigned char *b[3] = {make_bytes(3000, 3), make_bytes(1500, 4), make_bytes(600, 5)};
    FILE *f = spool_file();
    struct graph_mime *m;
    unsigned char h[32], got[32];
    uint64_t len, whole, rest, rest2;
    put_head(f);
    put_att(f, "c.bin", "application/octet-stream", b[2], 600);
    put_att(f, "a.bin", "application/octet-stream", b[0], 3000);
    fputs("--BOUNDARY\r\nContent-Type: image/png\r\nContent-ID: <img1@x>\r\n"
          "Content-Disposition: inline\r\nContent-Transfer-Encoding: base64\r\n\r\n",
          f);
    put_b64(f, b[1], 1500);
    fputs("--BOUNDARY--\r\n", f);
    len = seal(f);

    m = open_file(f, len, RCPTS, 1, 0); /* 4 MB: all in one */
    assert_int_equal(graph_mime_natt(m), 0);
    whole = graph_mime_body_b64_size(m);
    graph_mime_free(m);

    /* a byte less than the whole: a.bin (the largest) goes, only it */
    m = open_file(f, len, RCPTS, 1, (size_t)whole - 1);
    assert_null(graph_mime_refusal(m));
    assert_int_equal(graph_mime_natt(m), 1);
    assert_string_equal(graph_mime_att(m, 0)->name, "a.bin");
    rest = graph_mime_body_b64_size(m);
    assert_true(rest <= whole - 1);
    graph_mime_free(m);

    /* a byte less than that: the inline image goes too, with its Content-ID */
    m = open_file(f, len, RCPTS, 1, (size_t)rest - 1);
    assert_null(graph_mime_refusal(m));
    assert_int_equal(graph_mime_natt(m), 2);
    assert_string_equal(graph_mime_att(m, 1)->name, "attachment-2");
    assert_string_equal(graph_mime_att(m, 1)->content_type, "image/png");
    assert_string_equal(graph_mime_att(m, 1)->content_id, "img1@x");
    assert_int_equal(graph_mime_att(m, 1)->is_inline, 1);
    assert_int_equal(graph_mime_att(m, 1)->size, 1500);
    rest2 = graph_mime_body_b64_size(m);
    assert_true(rest2 <= rest - 1);
    att_sha(m, 1, got);
    sha256(b[1], 1500, h);
    assert_memory_equal(got, h, 32);
    graph_mime_free(m);

    /* then c.bin; then nothing is left to take out: refused */
    m = open_file(f, len, RCPTS, 1, (size_t)rest2 - 1);
    assert_null(graph_mime_refusal(m));
    assert_int_equal(graph_mime_natt(m), 3);
    assert_string_equal(graph_mime_att(m, 2)->name, "c.bin");
    rest = graph_mime_body_b64_size(m);
    graph_mime_free(m);
    m = open_file(f, len, RCPTS, 1, (size_t)rest - 1);
    assert_non_null(graph_mime_refusal(m));
    assert_int_equal(graph_mime_natt(m), 0);
    graph_mime_free(m);
    fclose(f);
    for (int i = 0; i < 3; i++)
        free(b[i]);
}

static void test_text_that_never_fits(void **state)
{
    (void)state;
    char *msg = malloc(20000), err[128];
    char buf[16];
    struct graph_mime *m;
    strcpy(msg, "To: a@x.org\r\nSubject: long\r\n\r\n");
    for (int i = 0; i < 200; i++)
        strcat(msg, "0123456789012345678901234567890123456789012345678901234567890123456789\r\n");
    m = open_mem(msg, RCPTS, 1, NULL, 4096);
    assert_non_null(graph_mime_refusal(m));
    assert_string_equal(graph_mime_refusal(m),
                        "552 5.3.4 Message too large for Microsoft Graph: its text without "
                        "attachments passes 4096 bytes");
    assert_int_equal(graph_mime_natt(m), 0);
    assert_int_equal(graph_mime_body_b64_size(m), 0);
    assert_int_equal(graph_mime_body_read(m, buf, sizeof(buf), err, sizeof(err)), -1);
    graph_mime_free(m);
    free(msg);
}

static int open_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 1024; fd++)
        if (fcntl(fd, F_GETFD) != -1)
            n++;
    return n;
}

/* [0, len) of the file only: the trailer after it is not read. */
static void test_fd_bounds(void **state)
{
    (void)state;
    FILE *f = spool_file();
    const char *msg = "From: dev@printer\r\nTo: a@x.org\r\n\r\nhello\r\n";
    struct graph_mime *m;
    char *t;
    uint64_t len;
    size_t blen;
    int fds;
    fputs(msg, f);
    len = seal(f);
    fds = open_fds();
    assert_int_equal(lseek(fileno(f), 7, SEEK_SET), 7);
    m = open_file(f, len, RCPTS, 1, 0);
    assert_int_equal(lseek(fileno(f), 0, SEEK_CUR), 7); /* the caller's offset stays */
    t = body_of(m, &blen);
    assert_string_equal(t, msg);
    assert_null(strstr(t, "SPOOLTRAILER"));
    free(t);
    assert_int_equal(open_fds(), fds + 1); /* its own, until freed */
    graph_mime_free(m);
    assert_int_equal(open_fds(), fds);
    fclose(f);
    /* a file shorter than len: refused */
    {
        struct graph_mime_opts o = {RCPTS, 1, NULL, 0};
        char err[128] = "";
        f = spool_file();
        fputs(msg, f);
        fflush(f);
        assert_null(graph_mime_open_fd(fileno(f), 1000, &o, err, sizeof(err)));
        assert_non_null(strstr(err, "cannot read the message"));
        fclose(f);
    }
}

/* What GMime would hold is bounded: too many header fields or parts are refused, and a 10 MB
 * header section of tiny fields (1 GB in GMime's objects, unbounded) stays small. */
static void test_too_complex(void **state)
{
    (void)state;
    FILE *f = spool_file();
    struct graph_mime *m;
    long before;
    uint64_t len;
    for (size_t n = 0; n < 10u * 1024 * 1024; n += 5)
        fputs("a:b\r\n", f);
    fputs("To: a@x.org\r\n\r\nbody\r\n", f);
    len = seal(f);
    before = peak_rss_kb();
    m = open_file(f, len, RCPTS, 1, 0);
    assert_string_equal(graph_mime_refusal(m), "552 5.3.4 Message too complex for Microsoft "
                                               "Graph: more than 10000 header fields");
    assert_int_equal(graph_mime_natt(m), 0);
    assert_int_equal(graph_mime_body_b64_size(m), 0);
    printf("graph_mime: 10 MB of header fields: refused, peak RSS +%ld KiB\n",
           peak_rss_kb() - before);
#ifndef __SANITIZE_ADDRESS__ /* ASan's quarantine keeps what was freed */
    assert_true(peak_rss_kb() - before < 64 * 1024);
#endif
    graph_mime_free(m);
    fclose(f);

    f = spool_file();
    fputs("To: a@x.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n", f);
    for (int i = 0; i < 10001; i++)
        fputs("--b\r\n\r\n", f);
    m = open_file(f, seal(f), RCPTS, 1, 0);
    assert_string_equal(graph_mime_refusal(m), "552 5.3.4 Message too complex for Microsoft "
                                               "Graph: more than 10000 boundary lines");
    graph_mime_free(m);
    fclose(f);

    /* at the limits: fine (in memory too) */
    {
        GString *g =
            g_string_new("To: a@x.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n");
        for (int i = 0; i < 9999; i++)
            g_string_append(g, "--b\r\n\r\n");
        g_string_append(g, "--b--\r\n");
        m = open_mem(g->str, RCPTS, 1, NULL, 0);
        assert_null(graph_mime_refusal(m));
        graph_mime_free(m);
        g_string_free(g, TRUE);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peak_rss_30mb),
        cmocka_unit_test(test_to_cc_filtered_bcc_replaced),
        cmocka_unit_test(test_groups),
        cmocka_unit_test(test_repeated_to_and_envelope),
        cmocka_unit_test(test_encoded_words_and_odd_syntax),
        cmocka_unit_test(test_no_to_all_in_bcc),
        cmocka_unit_test(test_not_mime_and_empty),
        cmocka_unit_test(test_no_recipient),
        cmocka_unit_test(test_from_rewrite),
        cmocka_unit_test(test_small_message_one_request),
        cmocka_unit_test(test_12mb_two_attachments),
        cmocka_unit_test(test_small_request_max_splits),
        cmocka_unit_test(test_text_that_never_fits),
        cmocka_unit_test(test_fd_bounds),
        cmocka_unit_test(test_too_complex),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
