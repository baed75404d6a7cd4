/* sender_rewrite = header: From: replaced, the original kept as Reply-To, body untouched. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/smtp/header_rewrite.h"

struct out {
    char buf[1 << 20];
    size_t len;
};

static void collect(void *arg, const char *line, size_t len)
{
    struct out *o = arg;
    assert_true(o->len + len + 1 < sizeof(o->buf));
    memcpy(o->buf + o->len, line, len);
    o->len += len;
    o->buf[o->len++] = '\n';
    o->buf[o->len] = '\0';
}

/* Feed a message given as '\n'-separated lines (the decoder's output shape). */
static int feed(struct header_rewrite *h, const char *msg)
{
    int rc = 0;
    const char *p = msg;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (header_rewrite_line(h, p, n) != 0)
            rc = -1;
        p += n + (nl ? 1 : 0);
    }
    header_rewrite_finish(h);
    return rc;
}

static void check(const char *in, const char *want)
{
    struct out *o = calloc(1, sizeof(*o));
    struct header_rewrite *h = header_rewrite_new("scanners@contoso.edu", collect, o);
    assert_non_null(h);
    assert_int_equal(feed(h, in), 0);
    assert_string_equal(o->buf, want);
    /* the same object serves the next message after a reset */
    header_rewrite_reset(h);
    o->len = 0;
    o->buf[0] = '\0';
    assert_int_equal(feed(h, in), 0);
    assert_string_equal(o->buf, want);
    header_rewrite_free(h);
    free(o);
}

static void test_from_becomes_mailbox_and_reply_to(void **state)
{
    (void)state;
    check("From: Copier 3F <copier@dept.edu>\nTo: a@b.edu\nSubject: scan\n\nbody\nFrom: not a "
          "header\n",
          "From: <scanners@contoso.edu>\nReply-To: Copier 3F <copier@dept.edu>\nTo: "
          "a@b.edu\nSubject: scan\n\nbody\nFrom: not a header\n");
}

static void test_folded_from_keeps_its_continuation(void **state)
{
    (void)state;
    check("Subject: x\nfrom: \"Long Name\"\n\t<copier@dept.edu>\nTo: a@b\n\nbody\n",
          "Subject: x\nFrom: <scanners@contoso.edu>\nReply-To: \"Long Name\"\n\t<copier@dept."
          "edu>\nTo: a@b\n\nbody\n");
}

static void test_existing_reply_to_is_kept(void **state)
{
    (void)state;
    check("Reply-To: person@dept.edu\nFrom: copier@dept.edu\n\nbody\n",
          "Reply-To: person@dept.edu\nFrom: <scanners@contoso.edu>\n\nbody\n");
}

static void test_no_from_header_gets_the_mailbox_first(void **state)
{
    (void)state;
    /* RFC 5322 requires a From:; Exchange sends as the mailbox: it goes first, no Reply-To:
     * (there is no original); the rest unchanged */
    check("To: a@b\nSubject: s\n\nline\nFrom: body\n",
          "From: <scanners@contoso.edu>\nTo: a@b\nSubject: s\n\nline\nFrom: body\n");
    /* with a Reply-To: of its own: kept */
    check("Reply-To: r@s\nSubject: s\n\nb\n",
          "From: <scanners@contoso.edu>\nReply-To: r@s\nSubject: s\n\nb\n");
    /* headers only, no body */
    check("Subject: s\n", "From: <scanners@contoso.edu>\nSubject: s\n");
    /* fields only named like From: are not one */
    check("From-Copier: 3F\nX-From: y\n\nb\n",
          "From: <scanners@contoso.edu>\nFrom-Copier: 3F\nX-From: y\n\nb\n");
    /* continuation lines with no field before them (invalid) stay first: the From: line goes
     * after them, so that they do not fold into it */
    check(" orphan\n\tmore\nTo: a@b\n\nb\n",
          " orphan\n\tmore\nFrom: <scanners@contoso.edu>\nTo: a@b\n\nb\n");
    check(" orphan\n\nb\n", " orphan\nFrom: <scanners@contoso.edu>\n\nb\n");
}

static void test_field_name_with_white_space_before_the_colon(void **state)
{
    (void)state;
    /* RFC 5322 4.5 (obs-optional, obs-from): "From : x" is a field, not the start of the body */
    check("From : Copier <copier@dept.edu>\nSubject: s\n\nb\n",
          "From: <scanners@contoso.edu>\nReply-To: Copier <copier@dept.edu>\nSubject: s\n\nb\n");
    check("from\t:c@d\n\t(x)\n\nb\n", "From: <scanners@contoso.edu>\nReply-To:c@d\n\t(x)\n\nb\n");
    /* any field so written stays in the header section, the From: after it is rewritten */
    check("Subject : s\nX-Copier \t : 3F\nFrom: c@d\n\nb\n",
          "Subject : s\nX-Copier \t : 3F\nFrom: <scanners@contoso.edu>\nReply-To: c@d\n\nb\n");
    /* two From:, one of each form: one From:, both values in the one Reply-To: */
    check("From: a@b\nFROM  : c@d\n\nb\n",
          "From: <scanners@contoso.edu>\nReply-To: a@b\n , c@d\n\nb\n");
    /* "Reply-To :" is the message's own Reply-To: */
    check("From : a@b\nReply-To : r@s\n\nb\n",
          "From: <scanners@contoso.edu>\nReply-To : r@s\n\nb\n");
    /* an empty one is still empty */
    check("From :  \nSubject: s\n\nb\n", "From: <scanners@contoso.edu>\nSubject: s\n\nb\n");
    /* white space inside a name, or no colon after it, is not a field: the body starts there */
    check("From: a@b\nBad Name: x\n", "From: <scanners@contoso.edu>\nReply-To: a@b\nBad Name: x\n");
    check("From: a@b\nFrom  x\n", "From: <scanners@contoso.edu>\nReply-To: a@b\nFrom  x\n");
    check("From: a@b\n: x\n", "From: <scanners@contoso.edu>\nReply-To: a@b\n: x\n");
}

static void test_headers_only_message_is_flushed_at_the_end(void **state)
{
    (void)state;
    check("From: c@d\nSubject: s\n", "From: <scanners@contoso.edu>\nReply-To: c@d\nSubject: s\n");
}

static void test_non_header_line_ends_the_header_section(void **state)
{
    (void)state;
    /* a copier that forgets the blank line: its body starts the body */
    check("From: c@d\nthis is the body\nFrom: x\n",
          "From: <scanners@contoso.edu>\nReply-To: c@d\nthis is the body\nFrom: x\n");
}

static void test_header_named_like_from_is_not_from(void **state)
{
    (void)state;
    check("From-Copier: 3F\nX-From: y\nFrom: a@b\n\nb\n",
          "From-Copier: 3F\nX-From: y\nFrom: <scanners@contoso.edu>\nReply-To: a@b\n\nb\n");
}

static void test_long_from_folds_reply_to(void **state)
{
    (void)state;
    /* a 998-byte From: line: "Reply-To:" + its value would be 1002 bytes, so it is folded */
    char in[1100], want[1200], value[994];
    memset(value, 'x', sizeof(value) - 1);
    value[0] = ' ';
    value[sizeof(value) - 1] = '\0';
    snprintf(in, sizeof(in), "From:%s\n\nb\n", value);
    assert_int_equal(strlen(in) - 4, 998);
    snprintf(want, sizeof(want), "From: <scanners@contoso.edu>\nReply-To:\n%s\n\nb\n", value);
    check(in, want);
}

static void test_oversized_header_section_is_refused(void **state)
{
    (void)state;
    struct out *o = calloc(1, sizeof(*o));
    struct header_rewrite *h = header_rewrite_new("m@x", collect, o);
    char line[900];
    memset(line, 'a', sizeof(line));
    memcpy(line, "X-Pad: ", 7);
    int rc = 0;
    for (int i = 0; i < 400 && rc == 0; i++)
        rc = header_rewrite_line(h, line, sizeof(line));
    assert_int_equal(rc, -1);
    assert_int_equal(header_rewrite_line(h, "", 0), -1); /* stays refused */
    header_rewrite_finish(h);
    assert_int_equal(o->len, 0); /* nothing partial was emitted */
    header_rewrite_reset(h);
    assert_int_equal(feed(h, "From: a@b\n\nx\n"), 0);
    assert_string_equal(o->buf, "From: <m@x>\nReply-To: a@b\n\nx\n");
    header_rewrite_free(h);
    free(o);
}

static void test_message_without_header_lines(void **state)
{
    (void)state;
    /* nothing held when the section ends: an empty message, a blank first line (flush once ran
     * pointer arithmetic on the still NULL buffer: undefined behaviour, found by
     * fuzz_header_rewrite) */
    struct out *o = calloc(1, sizeof(*o));
    struct header_rewrite *h = header_rewrite_new("m@x", collect, o);
    assert_non_null(h);
    header_rewrite_finish(h);
    /* an empty message has no From: either: it gets the mailbox's */
    assert_string_equal(o->buf, "From: <m@x>\n");
    header_rewrite_free(h);
    free(o);
    check("\nbody\n", "From: <scanners@contoso.edu>\n\nbody\n");
    check("not a header\nFrom: a@b\n", "From: <scanners@contoso.edu>\nnot a header\nFrom: a@b\n");
}

static void test_from_with_a_nul_is_replaced_not_copied(void **state)
{
    (void)state;
    /* The daemon's DATA decoder refuses a NUL (554 5.6.0) before this; here, on its own, the
     * rewriter still makes the mailbox the sender and carries no NUL into a header it writes
     * (it once copied the value byte for byte, NUL included). */
    static const char from[] = "From: a\0b@c", want[] = "From: <m@x>\n\nx\n";
    struct out *o = calloc(1, sizeof(*o));
    struct header_rewrite *h = header_rewrite_new("m@x", collect, o);
    assert_non_null(h);
    assert_int_equal(header_rewrite_line(h, from, sizeof(from) - 1), 0);
    assert_int_equal(header_rewrite_line(h, "", 0), 0);
    assert_int_equal(header_rewrite_line(h, "x", 1), 0);
    header_rewrite_finish(h);
    assert_int_equal(o->len, sizeof(want) - 1);
    assert_memory_equal(o->buf, want, sizeof(want) - 1);
    header_rewrite_free(h);
    free(o);
}

static void test_nul_from_and_a_good_from(void **state)
{
    (void)state;
    /* two From:, the first with a NUL: one From:, the good value alone in Reply-To: */
    static const char in[] = "From: a\0b@c\nFrom: d@e\n\nx\n";
    static const char want[] = "From: <m@x>\nReply-To: d@e\n\nx\n";
    struct out *o = calloc(1, sizeof(*o));
    struct header_rewrite *h = header_rewrite_new("m@x", collect, o);
    assert_non_null(h);
    const char *p = in, *end = in + sizeof(in) - 1;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        assert_int_equal(header_rewrite_line(h, p, (size_t)(nl - p)), 0);
        p = nl + 1;
    }
    header_rewrite_finish(h);
    assert_int_equal(o->len, sizeof(want) - 1);
    assert_memory_equal(o->buf, want, sizeof(want) - 1);
    header_rewrite_free(h);
    free(o);
}

static void test_empty_from_is_replaced_without_reply_to(void **state)
{
    (void)state;
    /* Exchange must still see the mailbox; an empty Reply-To: would be invalid, so none */
    check("From:\nSubject: s\n\nb\n", "From: <scanners@contoso.edu>\nSubject: s\n\nb\n");
    check("From:   \t\nSubject: s\n\nb\n", "From: <scanners@contoso.edu>\nSubject: s\n\nb\n");
    check("From: \n \nSubject: s\n\nb\n", "From: <scanners@contoso.edu>\nSubject: s\n\nb\n");
    /* a value only on its continuation line is not empty */
    check("From:\n a@b\n\nb\n", "From: <scanners@contoso.edu>\nReply-To:\n a@b\n\nb\n");
}

static void test_two_froms_become_one_and_one_reply_to(void **state)
{
    (void)state;
    /* RFC 5322 allows one From:; a reader may show either: exactly one is left, the mailbox, and
     * both values go into the one Reply-To:, in order */
    check("From: a@b\nTo: t@u\nFrom: Second <c@d>\nSubject: s\n\nbody\nFrom: body\n",
          "From: <scanners@contoso.edu>\nReply-To: a@b\n , Second <c@d>\nTo: t@u\nSubject: "
          "s\n\nbody\nFrom: body\n");
    /* folded ones keep their continuation lines; no space after the colon gets none added */
    check("FROM: a@b\n\t(x)\nfrom:c@d\n (y)\n\nb\n",
          "From: <scanners@contoso.edu>\nReply-To: a@b\n\t(x)\n ,c@d\n (y)\n\nb\n");
    /* an empty one among them adds nothing */
    check("From:\nFrom: c@d\nFrom: \n\nb\n", "From: <scanners@contoso.edu>\nReply-To: c@d\n\nb\n");
    check("From:\nFrom:\n\nb\n", "From: <scanners@contoso.edu>\n\nb\n");
    /* the message's own Reply-To: wins, the From: values are dropped */
    check("From: a@b\nReply-To: r@s\nFrom: c@d\n\nb\n",
          "From: <scanners@contoso.edu>\nReply-To: r@s\n\nb\n");
}

static void test_second_long_from_fits_its_line(void **state)
{
    (void)state;
    /* a 998-byte second From: line: " ," + its 993-byte value is 995 bytes */
    char in[2200], want[2400], value[994];
    memset(value, 'x', sizeof(value) - 1);
    value[0] = ' ';
    value[sizeof(value) - 1] = '\0';
    snprintf(in, sizeof(in), "From: a@b\nFrom:%s\n\nb\n", value);
    snprintf(want, sizeof(want), "From: <scanners@contoso.edu>\nReply-To: a@b\n ,%s\n\nb\n", value);
    check(in, want);
}

static void test_from_line_never_passes_998_bytes(void **state)
{
    (void)state;
    /* a mailbox longer than a line can hold: the From: line is cut to 998 bytes, not 999
     * (found by fuzz_header_rewrite) */
    char mailbox[1000];
    memset(mailbox, 'm', sizeof(mailbox) - 1);
    memcpy(mailbox + sizeof(mailbox) - 5, "@x.y", 5);
    struct out *o = calloc(1, sizeof(*o));
    struct header_rewrite *h = header_rewrite_new(mailbox, collect, o);
    assert_non_null(h);
    assert_int_equal(feed(h, "From: a@b\n\nx\n"), 0);
    const char *nl = strchr(o->buf, '\n');
    assert_non_null(nl);
    assert_int_equal(nl - o->buf, 998);
    assert_memory_equal(o->buf, "From: <mmm", 10);
    assert_string_equal(nl, "\nReply-To: a@b\n\nx\n");
    header_rewrite_free(h);
    free(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_from_becomes_mailbox_and_reply_to),
        cmocka_unit_test(test_folded_from_keeps_its_continuation),
        cmocka_unit_test(test_existing_reply_to_is_kept),
        cmocka_unit_test(test_no_from_header_gets_the_mailbox_first),
        cmocka_unit_test(test_field_name_with_white_space_before_the_colon),
        cmocka_unit_test(test_headers_only_message_is_flushed_at_the_end),
        cmocka_unit_test(test_non_header_line_ends_the_header_section),
        cmocka_unit_test(test_header_named_like_from_is_not_from),
        cmocka_unit_test(test_long_from_folds_reply_to),
        cmocka_unit_test(test_oversized_header_section_is_refused),
        cmocka_unit_test(test_message_without_header_lines),
        cmocka_unit_test(test_from_with_a_nul_is_replaced_not_copied),
        cmocka_unit_test(test_nul_from_and_a_good_from),
        cmocka_unit_test(test_empty_from_is_replaced_without_reply_to),
        cmocka_unit_test(test_two_froms_become_one_and_one_reply_to),
        cmocka_unit_test(test_second_long_from_fits_its_line),
        cmocka_unit_test(test_from_line_never_passes_998_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
