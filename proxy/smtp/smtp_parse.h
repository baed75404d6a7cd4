/* Pure, resumable SMTP command parser (device side). No I/O: bytes in, command out.
 * Model: Dovecot's smtp-command-parser. Test each case whole and byte by byte. */
#ifndef SOP_SMTP_PARSE_H
#define SOP_SMTP_PARSE_H

#include <stddef.h>

#define SMTP_CMD_LINE_MAX 512    /* RFC 5321 4.5.3.1.4, including CRLF */
#define SMTP_AUTH_LINE_MAX 12288 /* RFC 4954 section 4, AUTH line and responses */
#define SMTP_PATH_MAX 256        /* RFC 5321 4.5.3.1.3 */
#define SMTP_MAX_PARAMS 16

enum smtp_verb {
    SMTP_UNKNOWN = 0, /* a syntactically fine line with a verb we do not know */
    SMTP_EHLO,
    SMTP_HELO,
    SMTP_MAIL,
    SMTP_RCPT,
    SMTP_DATA,
    SMTP_BDAT,
    SMTP_RSET,
    SMTP_NOOP,
    SMTP_QUIT,
    SMTP_HELP,
    SMTP_VRFY,
    SMTP_EXPN,
    SMTP_STARTTLS,
    SMTP_AUTH,
    SMTP_LINE, /* line mode: a raw line (an AUTH response), in arg */
};

enum smtp_parse_mode {
    SMTP_PARSE_COMMAND, /* lines are commands, at most SMTP_CMD_LINE_MAX (AUTH: SMTP_AUTH_LINE_MAX)
                         */
    SMTP_PARSE_LINE,    /* lines are returned raw as SMTP_LINE, at most SMTP_AUTH_LINE_MAX */
};

struct smtp_param {
    char *key;   /* upper-cased, e.g. "SIZE" */
    char *value; /* NULL when the parameter has no '=' */
};

/* Points into the parser's own buffer: valid until the next smtp_parse_* call. */
struct smtp_cmd {
    enum smtp_verb verb;
    char *verb_text; /* the verb as sent (for logs and 500 replies of SMTP_UNKNOWN) */
    char *arg;       /* text after the verb and one space, "" if none (EHLO domain, AUTH
                        "MECH [initial-response]", VRFY/HELP/NOOP argument, BDAT args, SMTP_LINE) */
    char *path;      /* MAIL/RCPT: the address between < and >, "" for MAIL FROM:<> */
    struct smtp_param params[SMTP_MAX_PARAMS];
    size_t nparams;
};

struct smtp_parser;

struct smtp_parser *smtp_parse_new(void);
void smtp_parse_free(struct smtp_parser *p);
/* Drop any partial line (after STARTTLS, CVE-2011-0411 class) and return to command mode. */
void smtp_parse_reset(struct smtp_parser *p);
void smtp_parse_set_mode(struct smtp_parser *p, enum smtp_parse_mode mode);
/* Feed bytes. *consumed = bytes taken from data (always set).
 *  1: one line complete, *cmd filled; bytes after it are not consumed.
 *  0: need more; everything was consumed (kept in the parser).
 * -1: that line was bad and has been consumed; *err is a full reply for the client, e.g.
 *     "500 5.5.2 Line too long", "501 5.5.4 Syntax: MAIL FROM:<address>".
 * A line ends with CRLF or a bare LF. An over-long line is consumed up to its end, then -1. */
int smtp_parse_next(struct smtp_parser *p, const char *data, size_t len, size_t *consumed,
                    struct smtp_cmd *cmd, const char **err);
/* "EHLO" etc. for logs. */
const char *smtp_verb_str(enum smtp_verb v);

#endif
