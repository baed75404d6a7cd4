/* DATA transparency (RFC 5321 4.5.2): decoder and line encoder. See smtp_data.h.
 *
 * The decoder holds one line of at most 998 bytes (RFC 5321 4.5.3.1.6 minus CRLF); a longer
 * line is counted, not stored. A CR is not judged until the next byte is known, because a CRLF
 * may be split between two feeds: that pending CR is the only state carried between bytes. */
#include "proxy/smtp/smtp_data.h"

#include <stdlib.h>
#include <string.h>

/* Wire content of a line, stuffing dot included, terminator excluded. */
#define SMTP_DATA_LINE_MAX (SMTP_TEXT_LINE_MAX - 2)

enum smtp_data_term {
    SMTP_DATA_CRLF,
    SMTP_DATA_LF, /* bare LF */
    SMTP_DATA_CR, /* lone CR: not followed by LF */
};

struct smtp_data_dec {
    enum bare_lf_policy policy;
    uint64_t max_size;
    smtp_data_line_cb cb;
    void *arg;
    char line[SMTP_DATA_LINE_MAX];
    size_t len;
    int too_long;                  /* the current line passed SMTP_DATA_LINE_MAX */
    int cr_pending;                /* the last byte was a CR whose follower is not known yet */
    int result;                    /* 0 while reading, 1 or -1 once the end of data was seen */
    int lines;                     /* lines ended so far in this message */
    int lf_message;                /* the first line ended in a bare LF: an LF-only client */
    enum smtp_data_term prev_term; /* how the previous line ended (CRLF before the first) */
    uint64_t size;                 /* decoded bytes, 2 per line for its CRLF */
    const char *err;               /* first reason to refuse the message, NULL while fine */
};

static const char smtp_data_err_size[] = "552 5.3.4 Message size exceeds fixed limit";
static const char smtp_data_err_long[] = "554 5.6.0 Message refused: line longer than 1000 octets";
static const char smtp_data_err_lf[] =
    "554 5.6.0 Message refused: bare LF in message (bare_lf = reject)";
static const char smtp_data_err_nul[] = "554 5.6.0 Message refused: NUL byte in message";
static const char smtp_data_err_cr[] =
    "554 5.6.0 Message refused: bare CR in message (bare_lf = reject)";

struct smtp_data_dec *smtp_data_dec_new(enum bare_lf_policy policy, uint64_t max_size,
                                        smtp_data_line_cb cb, void *arg)
{
    struct smtp_data_dec *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->policy = policy;
    d->max_size = max_size;
    d->cb = cb;
    d->arg = arg;
    smtp_data_dec_reset(d);
    return d;
}

void smtp_data_dec_free(struct smtp_data_dec *d)
{
    free(d);
}

int smtp_data_dec_failed(const struct smtp_data_dec *d)
{
    return d->err != NULL;
}

uint64_t smtp_data_dec_size(const struct smtp_data_dec *d)
{
    return d->size;
}

void smtp_data_dec_reset(struct smtp_data_dec *d)
{
    d->len = 0;
    d->too_long = 0;
    d->cr_pending = 0;
    d->result = 0;
    d->lines = 0;
    d->lf_message = 0;
    d->prev_term = SMTP_DATA_CRLF; /* the DATA command's own CRLF */
    d->size = 0;
    d->err = NULL;
}

/* The first error wins: it is the one the client is told about. */
static void smtp_data_fail(struct smtp_data_dec *d, const char *err)
{
    if (!d->err)
        d->err = err;
}

static void smtp_data_add(struct smtp_data_dec *d, char c)
{
    /* A NUL is not text (RFC 5322 2.1, RFC 5321 2.4): readers cut a line or a header at it, so
     * one message would mean different things to different readers. Refused, whatever the
     * policy; found here, at once, so the caller can abort upstream early. */
    if (c == '\0')
        smtp_data_fail(d, smtp_data_err_nul);
    if (d->too_long)
        return;
    if (d->len == SMTP_DATA_LINE_MAX) {
        /* Known now, not at the end of the line: the caller may abort upstream early. */
        d->too_long = 1;
        smtp_data_fail(d, smtp_data_err_long);
        return;
    }
    d->line[d->len++] = c;
}

/* A line other than the end marker: unstuff, account, hand over. */
static void smtp_data_deliver(struct smtp_data_dec *d)
{
    const char *line = d->line;
    size_t len = d->len;

    if (d->too_long)
        return;
    /* Only lines the client itself sees as lines were dot-stuffed by it: after CRLF, and after
     * a bare LF from an LF-only client. A dot after a lone CR, or after a bare LF inside a CRLF
     * client's message, is the client's own content and is kept. */
    int stuffed = d->prev_term == SMTP_DATA_CRLF || (d->prev_term == SMTP_DATA_LF && d->lf_message);
    if (stuffed && len > 0 && line[0] == '.') {
        line++;
        len--;
    }
    d->size += (uint64_t)len + 2;
    if (d->max_size && d->size > d->max_size)
        smtp_data_fail(d, smtp_data_err_size);
    if (!d->err && d->cb)
        d->cb(d->arg, line, len);
}

/* Is a "." line with this terminator the end of data? This is where the proxy and the client
 * must agree, or a body line could end the message early and the rest run as commands (SMTP
 * smuggling, CVE-2023-51766). The first line of a message tells how the client ends lines:
 * - a CRLF client: only CRLF "." CRLF ends it, as Postfix's normalize mode does; a bare-LF dot
 *   inside its body is content (a CRLF client does not stuff lines it does not see as lines);
 * - an LF-only client (old devices): a "." line after LF or CRLF, ended by LF or CRLF, ends it;
 *   such a client stuffs its LF-ended lines, so its body cannot hold an unstuffed dot line.
 * A lone CR never takes part in an end marker. The policy does not change the end: reject mode
 * refuses the message but still finds its end the same way. */
static int smtp_data_is_end(const struct smtp_data_dec *d, enum smtp_data_term term)
{
    if (d->too_long || d->len != 1 || d->line[0] != '.')
        return 0;
    if (term == SMTP_DATA_CR || d->prev_term == SMTP_DATA_CR)
        return 0;
    if (d->lf_message)
        return 1;
    return term == SMTP_DATA_CRLF && d->prev_term == SMTP_DATA_CRLF;
}

/* A line ended. Returns 0 to go on, 1 or -1 at the end of data. */
static int smtp_data_end_line(struct smtp_data_dec *d, enum smtp_data_term term)
{
    if (d->lines++ == 0)
        d->lf_message = term == SMTP_DATA_LF;
    int end = smtp_data_is_end(d, term);

    if (term != SMTP_DATA_CRLF && d->policy == BARE_LF_REJECT)
        smtp_data_fail(d, term == SMTP_DATA_LF ? smtp_data_err_lf : smtp_data_err_cr);
    if (!end)
        smtp_data_deliver(d); /* judges stuffing by how the line began: before prev_term moves */
    d->prev_term = term;
    d->len = 0;
    d->too_long = 0;
    if (end)
        d->result = d->err ? -1 : 1;
    return d->result;
}

int smtp_data_dec_feed(struct smtp_data_dec *d, const char *data, size_t len, size_t *consumed,
                       const char **err)
{
    size_t i = 0;
    int r = d->result;

    while (r == 0 && i < len) {
        char c = data[i];
        if (d->cr_pending) {
            d->cr_pending = 0;
            if (c == '\n')
                i++;
            r = smtp_data_end_line(d, c == '\n' ? SMTP_DATA_CRLF : SMTP_DATA_CR);
            continue; /* after a lone CR, c starts the next line */
        }
        i++;
        if (c == '\r')
            d->cr_pending = 1;
        else if (c == '\n')
            r = smtp_data_end_line(d, SMTP_DATA_LF);
        else
            smtp_data_add(d, c);
    }
    *consumed = i;
    if (r < 0)
        *err = d->err;
    return r;
}

size_t smtp_data_encode_line(char *out, const char *line, size_t len)
{
    size_t n = 0;
    if (len > 0 && line[0] == '.')
        out[n++] = '.';
    if (len > 0)
        memcpy(out + n, line, len);
    n += len;
    out[n++] = '\r';
    out[n++] = '\n';
    return n;
}
