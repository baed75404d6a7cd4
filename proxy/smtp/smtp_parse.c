/* Pure, resumable SMTP command parser (device side). See smtp_parse.h for the contract.
 *
 * One line at a time is kept in a fixed buffer of SMTP_AUTH_LINE_MAX bytes, so a peer can never
 * make us hold more than that: an over-long line is counted, not stored, until its LF. The line
 * is tokenised in place (NULs written over separators), so struct smtp_cmd points into it. The
 * buffer is wiped before it is reused because it may have held an AUTH payload. */
#include "proxy/smtp/smtp_parse.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#define SMTP_PARSE_BUF SMTP_AUTH_LINE_MAX

_Static_assert(SMTP_PARSE_BUF >= 2 * SMTP_CMD_LINE_MAX, "room for a copy of a MAIL/RCPT line");

struct smtp_parser {
    enum smtp_parse_mode mode;
    char buf[SMTP_PARSE_BUF]; /* the line, then its NUL terminator */
    size_t len;               /* bytes stored in buf (a trailing CR included) */
    size_t wipe;              /* bytes of buf written beyond len (the MAIL/RCPT copy) */
    int done;                 /* a line was returned: wipe it at the next call */
    int too_long;             /* the current line overflowed: count, do not store */
    int has_nul;              /* the current line holds a NUL byte */
};

struct smtp_parse_verb_def {
    const char *name;
    enum smtp_verb verb;
};

static const struct smtp_parse_verb_def smtp_parse_verbs[] = {
    {"EHLO", SMTP_EHLO},         {"HELO", SMTP_HELO}, {"MAIL", SMTP_MAIL}, {"RCPT", SMTP_RCPT},
    {"DATA", SMTP_DATA},         {"BDAT", SMTP_BDAT}, {"RSET", SMTP_RSET}, {"NOOP", SMTP_NOOP},
    {"QUIT", SMTP_QUIT},         {"HELP", SMTP_HELP}, {"VRFY", SMTP_VRFY}, {"EXPN", SMTP_EXPN},
    {"STARTTLS", SMTP_STARTTLS}, {"AUTH", SMTP_AUTH},
};

#define SMTP_PARSE_NVERBS (sizeof(smtp_parse_verbs) / sizeof(smtp_parse_verbs[0]))

static const char smtp_parse_err_long[] = "500 5.5.2 Line too long";
static const char smtp_parse_err_nul[] = "500 5.5.2 Invalid character (NUL)";
static const char smtp_parse_err_ctl[] = "500 5.5.2 Invalid character in command";
static const char smtp_parse_err_empty[] = "500 5.5.2 Empty command";
static const char smtp_parse_err_verb[] = "500 5.5.2 Syntax error, command unrecognized";
static const char smtp_parse_err_noargs[] = "501 5.5.4 Syntax error: no parameters allowed";
static const char smtp_parse_err_ehlo[] = "501 5.5.4 Syntax: EHLO hostname";
static const char smtp_parse_err_helo[] = "501 5.5.4 Syntax: HELO hostname";
static const char smtp_parse_err_mail[] = "501 5.5.4 Syntax: MAIL FROM:<address>";
static const char smtp_parse_err_rcpt[] = "501 5.5.4 Syntax: RCPT TO:<address>";
static const char smtp_parse_err_sender[] = "501 5.1.7 Bad sender address syntax";
static const char smtp_parse_err_recipient[] = "501 5.1.3 Bad recipient address syntax";
static const char smtp_parse_err_pathlen[] = "501 5.1.3 Address too long";
static const char smtp_parse_err_param[] = "501 5.5.4 Syntax error in parameters";
static const char smtp_parse_err_nparams[] = "501 5.5.4 Too many parameters";
static const char smtp_parse_err_auth[] = "501 5.5.4 Syntax: AUTH mechanism [initial-response]";
static const char smtp_parse_err_bdat[] = "501 5.5.4 Syntax: BDAT size [LAST]";

struct smtp_parser *smtp_parse_new(void)
{
    struct smtp_parser *p = calloc(1, sizeof(*p));
    if (p)
        p->mode = SMTP_PARSE_COMMAND;
    return p;
}

/* Forget the line held so far; wipe it, since it may have been an AUTH payload. */
static void smtp_parse_clear_line(struct smtp_parser *p)
{
    /* len <= sizeof(buf) - 1, and finish() may have written a NUL at buf[len]. */
    OPENSSL_cleanse(p->buf, p->wipe > p->len + 1 ? p->wipe : p->len + 1);
    p->len = 0;
    p->wipe = 0;
    p->done = 0;
    p->too_long = 0;
    p->has_nul = 0;
}

void smtp_parse_free(struct smtp_parser *p)
{
    if (!p)
        return;
    smtp_parse_clear_line(p);
    free(p);
}

void smtp_parse_reset(struct smtp_parser *p)
{
    smtp_parse_clear_line(p);
    p->mode = SMTP_PARSE_COMMAND;
}

void smtp_parse_set_mode(struct smtp_parser *p, enum smtp_parse_mode mode)
{
    p->mode = mode;
}

const char *smtp_verb_str(enum smtp_verb v)
{
    size_t i;
    if (v == SMTP_LINE)
        return "LINE";
    for (i = 0; i < SMTP_PARSE_NVERBS; i++)
        if (smtp_parse_verbs[i].verb == v)
            return smtp_parse_verbs[i].name;
    return "UNKNOWN";
}

static int smtp_parse_upper(int c)
{
    return (c >= 'a' && c <= 'z') ? c - 'a' + 'A' : c;
}

/* Case-insensitive prefix test on ASCII (not locale dependent, unlike strncasecmp). */
static int smtp_parse_prefix(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++)
        if (smtp_parse_upper((unsigned char)*s) != *prefix)
            return 0;
    return 1;
}

static int smtp_parse_is_alnum(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int smtp_parse_is_ctl(int c)
{
    return c < 0x20 || c == 0x7f;
}

/* The longest line this one may be, terminator included. The verb is known from the first
 * bytes, so AUTH lines (which carry SASL responses) get the larger RFC 4954 limit. */
static size_t smtp_parse_limit(const struct smtp_parser *p)
{
    if (p->mode == SMTP_PARSE_LINE)
        return SMTP_AUTH_LINE_MAX;
    if (p->len >= 4 && smtp_parse_prefix(p->buf, "AUTH") && (p->len == 4 || p->buf[4] == ' '))
        return SMTP_AUTH_LINE_MAX;
    return SMTP_CMD_LINE_MAX;
}

/* Store one byte of the current line. The limit counts a 2-byte CRLF, and a CR stored here may
 * turn out to be that terminator, so up to limit - 1 bytes are kept and checked at the LF. */
static void smtp_parse_add(struct smtp_parser *p, char c)
{
    if (c == '\0')
        p->has_nul = 1;
    if (p->too_long)
        return;
    if (p->len + 1 > smtp_parse_limit(p) - 1) {
        p->too_long = 1;
        return;
    }
    p->buf[p->len++] = c;
}

static int smtp_parse_verb_lookup(const char *verb, enum smtp_verb *out)
{
    size_t i, j;
    for (i = 0; i < SMTP_PARSE_NVERBS; i++) {
        const char *name = smtp_parse_verbs[i].name;
        for (j = 0; name[j] && smtp_parse_upper((unsigned char)verb[j]) == name[j]; j++)
            ;
        if (name[j] == '\0' && verb[j] == '\0') {
            *out = smtp_parse_verbs[i].verb;
            return 1;
        }
    }
    return 0;
}

/* RFC 5322 specials and what else may not appear unquoted in a local part. */
static int smtp_parse_local_char(int c)
{
    if (c >= 0x80)
        return 1; /* UTF-8: whether SMTPUTF8 was negotiated is the caller's decision */
    if (smtp_parse_is_ctl(c) || c == ' ')
        return 0;
    return strchr("()<>@,;:\\\"[]", c) == NULL;
}

static int smtp_parse_domain_char(int c)
{
    return c >= 0x80 || smtp_parse_is_alnum(c) || c == '-' || c == '.' || c == '_';
}

/* Quoted local part: '"' ... '"' with backslash pairs; no controls, no '<' or '>'.
 * Returns the position after the closing quote, or NULL. */
static char *smtp_parse_quoted(char *s)
{
    s++; /* opening quote */
    for (;;) {
        int c = (unsigned char)*s;
        if (c == '"')
            return s + 1;
        if (c == '\\') {
            s++;
            c = (unsigned char)*s;
        }
        if (c == '\0' || (c < 0x80 && smtp_parse_is_ctl(c)) || c == '<' || c == '>')
            return NULL;
        s++;
    }
}

/* Domain or address literal "[...]". Returns the position after it, or NULL if empty/bad. */
static char *smtp_parse_domain(char *s)
{
    char *start = s;
    if (*s == '[') {
        for (s++; *s != ']'; s++) {
            int c = (unsigned char)*s;
            if (c == '\0' || smtp_parse_is_ctl(c) || c == ' ' || c >= 0x80 || c == '[' ||
                c == '\\' || c == '<' || c == '>')
                return NULL;
        }
        return s - start > 1 ? s + 1 : NULL;
    }
    while (smtp_parse_domain_char((unsigned char)*s))
        s++;
    return s > start ? s : NULL;
}

/* Source route "@a,@b:" (RFC 5321 4.1.2, to be accepted and ignored). Returns the position
 * after the ':', s itself when there is none, NULL when malformed. */
static char *smtp_parse_route(char *s)
{
    if (*s != '@')
        return s;
    for (;;) {
        s = smtp_parse_domain(s + 1);
        if (!s)
            return NULL;
        if (*s == ':')
            return s + 1;
        if (s[0] != ',' || s[1] != '@')
            return NULL;
        s++;
    }
}

/* Mailbox: local@domain, or a bare "postmaster" when allowed. Returns the end, or NULL. */
static char *smtp_parse_mailbox(char *s, int allow_postmaster)
{
    char *start = s;
    if (*s == '"') {
        s = smtp_parse_quoted(s);
        if (!s)
            return NULL;
    } else {
        while (smtp_parse_local_char((unsigned char)*s))
            s++;
    }
    if (s == start)
        return NULL;
    if (*s == '@')
        return smtp_parse_domain(s + 1);
    /* RFC 5321 4.5.1: "postmaster" without a domain must be accepted as a recipient. */
    if (allow_postmaster && s - start == 10 && smtp_parse_prefix(start, "POSTMASTER"))
        return s;
    return NULL;
}

/* One parameter "KEY[=VALUE]" (RFC 5321 esmtp-param), key upper-cased in place. */
static int smtp_parse_param(char *tok, struct smtp_param *out)
{
    char *s = tok;
    if (!smtp_parse_is_alnum((unsigned char)*s))
        return -1;
    for (; smtp_parse_is_alnum((unsigned char)*s) || *s == '-'; s++)
        *s = (char)smtp_parse_upper((unsigned char)*s);
    out->key = tok;
    out->value = NULL;
    if (*s == '\0')
        return 0;
    if (*s != '=')
        return -1;
    *s++ = '\0';
    out->value = s;
    if (*s == '\0')
        return -1;
    for (; *s; s++)
        if ((unsigned char)*s < 33 || (unsigned char)*s > 126 || *s == '=')
            return -1;
    return 0;
}

/* Space separated parameters after the path. */
static int smtp_parse_params(char *s, struct smtp_cmd *cmd, const char **err)
{
    while (*s) {
        char *tok;
        while (*s == ' ')
            s++;
        if (*s == '\0')
            break;
        tok = s;
        while (*s && *s != ' ')
            s++;
        if (*s)
            *s++ = '\0';
        if (cmd->nparams == SMTP_MAX_PARAMS) {
            *err = smtp_parse_err_nparams;
            return -1;
        }
        if (smtp_parse_param(tok, &cmd->params[cmd->nparams]) != 0) {
            *err = smtp_parse_err_param;
            return -1;
        }
        cmd->nparams++;
    }
    return 0;
}

/* MAIL FROM:<path> [params] / RCPT TO:<path> [params]. arg is a copy that may be cut up. */
static int smtp_parse_path_cmd(char *arg, struct smtp_cmd *cmd, const char **err)
{
    int is_mail = cmd->verb == SMTP_MAIL;
    const char *keyword = is_mail ? "FROM:" : "TO:";
    const char *bad_addr = is_mail ? smtp_parse_err_sender : smtp_parse_err_recipient;
    char *s, *mailbox, *end;

    *err = is_mail ? smtp_parse_err_mail : smtp_parse_err_rcpt;
    if (!smtp_parse_prefix(arg, keyword))
        return -1;
    s = arg + strlen(keyword);
    if (*s == ' ') /* "MAIL FROM: <a@b>" is common enough to tolerate */
        s++;
    if (*s != '<')
        return -1;
    s++;
    if (is_mail && *s == '>') {
        mailbox = s;
        end = s;
    } else {
        *err = bad_addr;
        mailbox = smtp_parse_route(s);
        if (!mailbox)
            return -1;
        end = smtp_parse_mailbox(mailbox, !is_mail);
        if (!end || *end != '>')
            return -1;
        if ((size_t)(end - mailbox) > SMTP_PATH_MAX) {
            *err = smtp_parse_err_pathlen;
            return -1;
        }
    }
    s = end + 1;
    *end = '\0';
    cmd->path = mailbox;
    if (*s != '\0' && *s != ' ') {
        *err = is_mail ? smtp_parse_err_mail : smtp_parse_err_rcpt;
        return -1;
    }
    return smtp_parse_params(s, cmd, err);
}

/* Checks that depend on the verb. scratch has room for a copy of cmd->arg. */
static int smtp_parse_args(struct smtp_cmd *cmd, char *scratch, const char **err)
{
    switch (cmd->verb) {
    case SMTP_EHLO:
    case SMTP_HELO:
        if (cmd->arg[0] == '\0' || cmd->arg[0] == ' ') {
            *err = cmd->verb == SMTP_EHLO ? smtp_parse_err_ehlo : smtp_parse_err_helo;
            return -1;
        }
        return 0;
    case SMTP_MAIL:
    case SMTP_RCPT:
        /* Path and parameters are cut out of a copy, so that arg stays whole for logs. */
        strcpy(scratch, cmd->arg);
        return smtp_parse_path_cmd(scratch, cmd, err);
    case SMTP_DATA:
    case SMTP_RSET:
    case SMTP_QUIT:
    case SMTP_STARTTLS:
        if (cmd->arg[0] != '\0') {
            *err = smtp_parse_err_noargs;
            return -1;
        }
        return 0;
    case SMTP_AUTH:
    case SMTP_BDAT:
        if (cmd->arg[0] == '\0' || cmd->arg[0] == ' ') {
            *err = cmd->verb == SMTP_AUTH ? smtp_parse_err_auth : smtp_parse_err_bdat;
            return -1;
        }
        return 0;
    default:
        return 0;
    }
}

/* A complete command line in p->buf, NUL-terminated, CR stripped, no NUL inside. */
static int smtp_parse_command(struct smtp_parser *p, size_t len, struct smtp_cmd *cmd,
                              const char **err)
{
    char *line = p->buf;
    size_t i;
    char *sp;

    /* Clients send "DATA " or "QUIT  "; trailing blanks carry nothing, so drop them. */
    while (len > 0 && line[len - 1] == ' ')
        line[--len] = '\0';
    if (len == 0) {
        *err = smtp_parse_err_empty;
        return -1;
    }
    /* A command is text: a control byte is an attack or garbage, and must not reach logs. */
    for (i = 0; i < len; i++) {
        if (smtp_parse_is_ctl((unsigned char)line[i])) {
            *err = smtp_parse_err_ctl;
            return -1;
        }
    }
    if (line[0] == ' ') {
        *err = smtp_parse_err_verb;
        return -1;
    }
    memset(cmd, 0, sizeof(*cmd));
    cmd->verb_text = line;
    sp = strchr(line, ' ');
    if (sp) {
        *sp = '\0';
        cmd->arg = sp + 1;
    } else {
        cmd->arg = line + len;
    }
    cmd->path = line + len; /* "" */
    if (!smtp_parse_verb_lookup(line, &cmd->verb)) {
        cmd->verb = SMTP_UNKNOWN;
        return 1;
    }
    /* Only AUTH lines are longer than SMTP_CMD_LINE_MAX, so a copy of any other fits. */
    if (cmd->verb == SMTP_MAIL || cmd->verb == SMTP_RCPT)
        p->wipe = 2 * (len + 1);
    if (smtp_parse_args(cmd, line + len + 1, err) != 0)
        return -1;
    return 1;
}

/* The LF was seen: decide what the line was. */
static int smtp_parse_finish(struct smtp_parser *p, struct smtp_cmd *cmd, const char **err)
{
    struct smtp_cmd tmp;
    size_t len = p->len;
    int r;

    if (len > 0 && p->buf[len - 1] == '\r')
        len--;
    if (p->too_long || len + 2 > smtp_parse_limit(p)) {
        *err = smtp_parse_err_long;
        return -1;
    }
    if (p->has_nul) {
        *err = smtp_parse_err_nul;
        return -1;
    }
    p->buf[len] = '\0';
    if (p->mode == SMTP_PARSE_LINE) {
        memset(&tmp, 0, sizeof(tmp));
        tmp.verb = SMTP_LINE;
        tmp.verb_text = p->buf + len;
        tmp.arg = p->buf;
        tmp.path = p->buf + len;
        *cmd = tmp;
        return 1;
    }
    r = smtp_parse_command(p, len, &tmp, err);
    if (r == 1)
        *cmd = tmp;
    return r;
}

int smtp_parse_next(struct smtp_parser *p, const char *data, size_t len, size_t *consumed,
                    struct smtp_cmd *cmd, const char **err)
{
    size_t i;
    int r;

    /* The previous call may have returned a line that the caller has now finished with. */
    if (p->done)
        smtp_parse_clear_line(p);
    for (i = 0; i < len; i++) {
        if (data[i] != '\n') {
            smtp_parse_add(p, data[i]);
            continue;
        }
        *consumed = i + 1;
        r = smtp_parse_finish(p, cmd, err);
        /* Keep the line (cmd points into it) until the next call, then wipe it. */
        p->done = 1;
        return r;
    }
    *consumed = len;
    return 0;
}
