/* Pure, resumable SMTP reply parser (upstream side), strict about multi-line replies. */
#ifndef SOP_SMTP_REPLY_H
#define SOP_SMTP_REPLY_H

#include <stddef.h>

#define SMTP_REPLY_LINE_MAX 2048 /* generous: RFC 5321 says 512, some servers send more */
#define SMTP_REPLY_MAX_LINES 128

/* Valid until the next smtp_reply_next() call on the same parser. */
struct smtp_reply {
    int code;          /* 200..599 */
    char enhanced[16]; /* "2.0.0" when the first line carries one whose class matches, else "" */
    size_t nlines;
    char *lines[SMTP_REPLY_MAX_LINES]; /* text after "250-" / "250 " of each line, NUL-terminated */
};

struct smtp_reply_parser;

struct smtp_reply_parser *smtp_reply_new(void);
void smtp_reply_free(struct smtp_reply_parser *p);
void smtp_reply_reset(struct smtp_reply_parser *p);
/* Same contract as smtp_parse_next: 1 = a whole reply in *out (bytes after it not consumed),
 * 0 = need more (all consumed), -1 = protocol violation (bad code, codes differ between lines,
 * line too long, too many lines, NUL), *err says which. After -1 the connection is unusable. */
int smtp_reply_next(struct smtp_reply_parser *p, const char *data, size_t len, size_t *consumed,
                    struct smtp_reply *out, const char **err);

/* Capabilities from an EHLO reply (lines after the first). */
enum smtp_auth_mech {
    SMTP_AUTH_PLAIN = 1 << 0,
    SMTP_AUTH_LOGIN = 1 << 1,
    SMTP_AUTH_XOAUTH2 = 1 << 2,
    SMTP_AUTH_OAUTHBEARER = 1 << 3,
};
struct smtp_caps {
    int starttls, pipelining, eightbitmime, smtputf8, enhancedstatuscodes, dsn, chunking;
    int has_size;
    unsigned long long size; /* SIZE limit, 0 = none given */
    unsigned auth;           /* enum smtp_auth_mech bits, from both "AUTH x" and "AUTH=x" lines */
};
void smtp_reply_caps(const struct smtp_reply *ehlo, struct smtp_caps *caps);
/* The SASL mechanisms in auth (enum smtp_auth_mech bits), space-separated, "none" if none:
 * for log lines and `test`. Returns buf. */
const char *smtp_reply_auth_names(unsigned auth, char *buf, size_t len);
/* The reply as text for a device or a log line: "250-a\r\n250 b", control characters replaced
 * by '?', cut to outlen. Returns out. */
const char *smtp_reply_text(const struct smtp_reply *rep, char *out, size_t outlen);

#endif
