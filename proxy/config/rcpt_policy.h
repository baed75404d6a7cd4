/* Who a device may send to (issue 13, docs/recipient-policy.md): `allow_recipients = @upenn.edu,
 * @.upenn.edu, alice@partner.org, *`. Pure: parse the list, match an address. It lives beside
 * cidr.c because the config loader parses it (and reports its errors as FILE:LINE:) while the
 * delivery layer matches with it; config/ is the lowest folder both may use. */
#ifndef SOP_RCPT_POLICY_H
#define SOP_RCPT_POLICY_H

#include <stddef.h>

#define RCPT_POLICY_MAX_RULES 256 /* entries in one list */
#define RCPT_POLICY_MAX_ENTRY 320 /* characters of one entry (64 local + '@' + 255 domain) */

enum rcpt_rule_kind {
    RCPT_RULE_ANY,        /* "*": anyone */
    RCPT_RULE_DOMAIN,     /* "@example.org": that domain only */
    RCPT_RULE_SUBDOMAINS, /* "@.example.org": its subdomains, not the domain itself */
    RCPT_RULE_ADDRESS,    /* "alice@example.org": that one address */
};

struct rcpt_rule {
    enum rcpt_rule_kind kind;
    char *text; /* lower-cased: "example.org" (DOMAIN, SUBDOMAINS) or "alice@example.org" */
};

struct rcpt_policy {
    struct rcpt_rule *rules;
    size_t nrules;
    int any;       /* some rule is "*": everything matches */
    char *display; /* the list as written, entries joined by ", " (for the device's refusal) */
};

/* Parse "entry, entry, ..." into p (zeroed or cleared first). Entries are trimmed; matching is
 * case-insensitive, so they are stored lower-cased. 0 ok; -1 and a message in err naming the
 * first bad entry and what would be valid (p is then left cleared); -2 out of memory. */
int rcpt_policy_parse(const char *text, struct rcpt_policy *p, char *err, size_t errlen);
/* 1 if addr (a bare RCPT path "local@domain", no angle brackets) is allowed by p. The domain and
 * the local part are both compared case-insensitively; a trailing dot on the domain is ignored.
 * An address without '@' (postmaster) or with an address literal domain matches only "*". */
int rcpt_policy_match(const struct rcpt_policy *p, const char *addr);
/* 1 if the list is exactly "anyone" (the default): no check is needed. */
int rcpt_policy_is_any(const struct rcpt_policy *p);
void rcpt_policy_clear(struct rcpt_policy *p);

#endif
