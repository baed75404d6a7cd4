/* Pure, resumable SMTP reply parser (upstream side) and EHLO capabilities. See smtp_reply.h.
 *
 * The line being read sits in a fixed buffer; finished lines of the current reply are copied,
 * without their "ddd-" prefix, into one growing text buffer bounded by SMTP_REPLY_MAX_LINES *
 * SMTP_REPLY_LINE_MAX. Offsets, not pointers, are kept while reading because that buffer moves
 * when it grows; struct smtp_reply gets pointers only once the reply is complete. */
#include "proxy/smtp/smtp_reply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct smtp_reply_parser {
    char cur[SMTP_REPLY_LINE_MAX]; /* the line being read, a trailing CR included */
    size_t cur_len;
    int cur_nul;
    char *text; /* texts of the finished lines, each NUL-terminated */
    size_t text_len, text_cap;
    size_t offs[SMTP_REPLY_MAX_LINES];
    size_t nlines;
    int code;
    char enhanced[16];
    int done;        /* a reply was returned: start afresh at the next call */
    const char *err; /* set once the stream is broken; sticky */
};

static const char smtp_reply_err_long[] = "reply line too long";
static const char smtp_reply_err_nul[] = "NUL byte in reply";
static const char smtp_reply_err_syntax[] = "malformed reply line";
static const char smtp_reply_err_code[] = "reply code out of range";
static const char smtp_reply_err_mixed[] = "reply codes differ between lines";
static const char smtp_reply_err_lines[] = "too many reply lines";
static const char smtp_reply_err_nomem[] = "out of memory";

struct smtp_reply_parser *smtp_reply_new(void)
{
    return calloc(1, sizeof(struct smtp_reply_parser));
}

void smtp_reply_free(struct smtp_reply_parser *p)
{
    if (!p)
        return;
    free(p->text);
    free(p);
}

static void smtp_reply_clear(struct smtp_reply_parser *p)
{
    p->cur_len = 0;
    p->cur_nul = 0;
    p->text_len = 0;
    p->nlines = 0;
    p->code = 0;
    p->enhanced[0] = '\0';
    p->done = 0;
}

void smtp_reply_reset(struct smtp_reply_parser *p)
{
    smtp_reply_clear(p);
    p->err = NULL;
}

static int smtp_reply_is_digit(int c)
{
    return c >= '0' && c <= '9';
}

/* "x.y.z" (RFC 3463: class 1 digit, subject and detail 1-3 digits) followed by a space or the
 * end. Returns its length, 0 if absent. */
static size_t smtp_reply_enhanced_len(const char *s)
{
    size_t i = 1, part;
    if (!smtp_reply_is_digit((unsigned char)s[0]))
        return 0;
    for (part = 0; part < 2; part++) {
        size_t n = 0;
        if (s[i++] != '.')
            return 0;
        while (n < 4 && smtp_reply_is_digit((unsigned char)s[i + n]))
            n++;
        if (n == 0 || n > 3)
            return 0;
        i += n;
    }
    return (s[i] == ' ' || s[i] == '\0') ? i : 0;
}

static void smtp_reply_enhanced(struct smtp_reply_parser *p, const char *text)
{
    size_t n = smtp_reply_enhanced_len(text);
    /* A 250 reply that starts "5.1.1" is not an enhanced code: the classes must agree. */
    if (n == 0 || text[0] != '0' + p->code / 100)
        return;
    memcpy(p->enhanced, text, n);
    p->enhanced[n] = '\0';
}

static int smtp_reply_append(struct smtp_reply_parser *p, const char *text, size_t len)
{
    if (p->text_len + len + 1 > p->text_cap) {
        size_t cap = p->text_cap ? p->text_cap : 1024;
        char *t;
        while (cap < p->text_len + len + 1)
            cap *= 2;
        t = realloc(p->text, cap);
        if (!t)
            return -1;
        p->text = t;
        p->text_cap = cap;
    }
    p->offs[p->nlines++] = p->text_len;
    memcpy(p->text + p->text_len, text, len);
    p->text_len += len;
    p->text[p->text_len++] = '\0';
    return 0;
}

/* Check the line in cur and add it. Returns 1 when it was the last line, 0 if more follow,
 * -1 with p->err set. */
static int smtp_reply_line(struct smtp_reply_parser *p)
{
    const char *l = p->cur;
    size_t len = p->cur_len;
    int code, last;

    if (len > 0 && l[len - 1] == '\r')
        len--;
    if (p->cur_nul) {
        p->err = smtp_reply_err_nul;
        return -1;
    }
    if (len < 3 || !smtp_reply_is_digit((unsigned char)l[0]) ||
        !smtp_reply_is_digit((unsigned char)l[1]) || !smtp_reply_is_digit((unsigned char)l[2]) ||
        (len > 3 && l[3] != ' ' && l[3] != '-')) {
        p->err = smtp_reply_err_syntax;
        return -1;
    }
    code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
    if (code < 200 || code > 599) {
        p->err = smtp_reply_err_code;
        return -1;
    }
    if (p->nlines > 0 && code != p->code) {
        p->err = smtp_reply_err_mixed;
        return -1;
    }
    if (p->nlines == SMTP_REPLY_MAX_LINES) {
        p->err = smtp_reply_err_lines;
        return -1;
    }
    last = len == 3 || l[3] == ' ';
    if (smtp_reply_append(p, len > 3 ? l + 4 : "", len > 3 ? len - 4 : 0) != 0) {
        p->err = smtp_reply_err_nomem;
        return -1;
    }
    if (p->nlines == 1) {
        p->code = code;
        smtp_reply_enhanced(p, p->text);
    }
    p->cur_len = 0;
    return last;
}

static void smtp_reply_fill(struct smtp_reply_parser *p, struct smtp_reply *out)
{
    size_t i;
    out->code = p->code;
    memcpy(out->enhanced, p->enhanced, sizeof(out->enhanced));
    out->nlines = p->nlines;
    for (i = 0; i < p->nlines; i++)
        out->lines[i] = p->text + p->offs[i];
}

int smtp_reply_next(struct smtp_reply_parser *p, const char *data, size_t len, size_t *consumed,
                    struct smtp_reply *out, const char **err)
{
    size_t i;
    int r;

    *consumed = 0;
    if (p->err) {
        *err = p->err;
        return -1;
    }
    if (p->done)
        smtp_reply_clear(p);
    for (i = 0; i < len; i++) {
        char c = data[i];
        if (c != '\n') {
            if (c == '\0')
                p->cur_nul = 1;
            /* The limit counts a 2-byte CRLF; a stored CR may be part of it. */
            if (p->cur_len == SMTP_REPLY_LINE_MAX - 1) {
                p->err = smtp_reply_err_long;
                goto fail;
            }
            p->cur[p->cur_len++] = c;
            continue;
        }
        r = smtp_reply_line(p);
        if (r < 0)
            goto fail;
        if (r == 1) {
            *consumed = i + 1;
            p->done = 1;
            smtp_reply_fill(p, out);
            return 1;
        }
    }
    *consumed = len;
    return 0;
fail:
    *consumed = i + 1;
    *err = p->err;
    return -1;
}

/* Case-insensitive ASCII word comparison; word is upper case, s is len bytes. */
static int smtp_reply_word_is(const char *s, size_t len, const char *word)
{
    size_t i;
    for (i = 0; i < len; i++) {
        int c = (unsigned char)s[i];
        if (c >= 'a' && c <= 'z')
            c -= 'a' - 'A';
        if (word[i] == '\0' || c != word[i])
            return 0;
    }
    return word[len] == '\0';
}

/* The mechanisms after "AUTH " or "AUTH=", separated by spaces. */
static unsigned smtp_reply_mechs(const char *s)
{
    unsigned bits = 0;
    while (*s) {
        size_t n = strcspn(s, " ");
        if (smtp_reply_word_is(s, n, "PLAIN"))
            bits |= SMTP_AUTH_PLAIN;
        else if (smtp_reply_word_is(s, n, "LOGIN"))
            bits |= SMTP_AUTH_LOGIN;
        else if (smtp_reply_word_is(s, n, "XOAUTH2"))
            bits |= SMTP_AUTH_XOAUTH2;
        else if (smtp_reply_word_is(s, n, "OAUTHBEARER"))
            bits |= SMTP_AUTH_OAUTHBEARER;
        s += n;
        s += strspn(s, " ");
    }
    return bits;
}

/* "SIZE" or "SIZE 157286400". A malformed or overflowing number means no known limit. */
static void smtp_reply_size(const char *s, struct smtp_caps *caps)
{
    unsigned long long v = 0;
    caps->has_size = 1;
    caps->size = 0;
    s += strspn(s, " ");
    if (!smtp_reply_is_digit((unsigned char)*s))
        return;
    for (; smtp_reply_is_digit((unsigned char)*s); s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (~0ULL - d) / 10)
            return;
        v = v * 10 + d;
    }
    if (*s == '\0' || *s == ' ')
        caps->size = v;
}

static void smtp_reply_cap_line(const char *l, struct smtp_caps *caps)
{
    size_t n = strcspn(l, " =");
    const char *rest = l + n;

    if (*rest == '=' && !smtp_reply_word_is(l, n, "AUTH"))
        return; /* only AUTH has the old "AUTH=" form */
    if (*rest)
        rest++;
    if (smtp_reply_word_is(l, n, "AUTH"))
        caps->auth |= smtp_reply_mechs(rest);
    else if (smtp_reply_word_is(l, n, "SIZE"))
        smtp_reply_size(rest, caps);
    else if (smtp_reply_word_is(l, n, "STARTTLS"))
        caps->starttls = 1;
    else if (smtp_reply_word_is(l, n, "PIPELINING"))
        caps->pipelining = 1;
    else if (smtp_reply_word_is(l, n, "8BITMIME"))
        caps->eightbitmime = 1;
    else if (smtp_reply_word_is(l, n, "SMTPUTF8"))
        caps->smtputf8 = 1;
    else if (smtp_reply_word_is(l, n, "ENHANCEDSTATUSCODES"))
        caps->enhancedstatuscodes = 1;
    else if (smtp_reply_word_is(l, n, "DSN"))
        caps->dsn = 1;
    else if (smtp_reply_word_is(l, n, "CHUNKING"))
        caps->chunking = 1;
}

void smtp_reply_caps(const struct smtp_reply *ehlo, struct smtp_caps *caps)
{
    size_t i;
    memset(caps, 0, sizeof(*caps));
    for (i = 1; i < ehlo->nlines; i++)
        smtp_reply_cap_line(ehlo->lines[i], caps);
}

const char *smtp_reply_text(const struct smtp_reply *rep, char *out, size_t outlen)
{
    size_t o = 0;
    if (outlen == 0)
        return out;
    out[0] = '\0';
    for (size_t i = 0; i < rep->nlines && o + 8 < outlen; i++) {
        int w = snprintf(out + o, outlen - o, "%s%03d%c", i ? "\r\n" : "", rep->code,
                         i + 1 == rep->nlines ? ' ' : '-');
        if (w < 0 || (size_t)w >= outlen - o)
            break;
        o += (size_t)w;
        for (const char *p = rep->lines[i]; *p && o + 3 < outlen; p++)
            out[o++] = (*p >= 0x20 && *p != 0x7f) ? *p : '?';
        out[o] = '\0';
    }
    if (o == 0)
        snprintf(out, outlen, "%03d ", rep->code);
    return out;
}

const char *smtp_reply_auth_names(unsigned auth, char *buf, size_t len)
{
    static const struct {
        unsigned bit;
        const char *name;
    } mechs[] = {{SMTP_AUTH_PLAIN, "PLAIN"},
                 {SMTP_AUTH_LOGIN, "LOGIN"},
                 {SMTP_AUTH_XOAUTH2, "XOAUTH2"},
                 {SMTP_AUTH_OAUTHBEARER, "OAUTHBEARER"}};
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof(mechs) / sizeof(mechs[0]); i++) {
        if (!(auth & mechs[i].bit))
            continue;
        int w = snprintf(buf + o, len - o, "%s%s", o ? " " : "", mechs[i].name);
        if (w < 0 || (size_t)w >= len - o) {
            buf[o] = '\0'; /* whole names only */
            break;
        }
        o += (size_t)w;
    }
    if (o == 0)
        snprintf(buf, len, "none");
    return buf;
}
