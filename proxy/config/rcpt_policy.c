#include "proxy/config/rcpt_policy.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RCPT_POLICY_WHAT                                                                           \
    "expected @domain, @.domain (its subdomains), local@domain or * (anyone), comma-separated"

/* A DNS name: labels of letters, digits and '-' (not at either end), 1..63 each, 253 in all. */
static int rcpt_policy_is_dns_name(const char *s, size_t len)
{
    size_t label = 0;
    if (len == 0 || len > 253)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '.') {
            if (label == 0 || s[i - 1] == '-')
                return 0;
            label = 0;
        } else if (isalnum(ch) || ch == '-') {
            if (ch == '-' && label == 0)
                return 0;
            if (++label > 63)
                return 0;
        } else {
            return 0;
        }
    }
    return label > 0 && s[len - 1] != '-';
}

/* An RFC 5321 dot-string local part: atext and dots, 1..64. */
static int rcpt_policy_is_local(const char *s, size_t len)
{
    static const char atext[] = "!#$%&'*+-/=?^_`{|}~.";
    if (len == 0 || len > 64 || s[0] == '.' || s[len - 1] == '.')
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr(atext, s[i]))
            return 0;
    return 1;
}

static char *rcpt_policy_lower_dup(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++)
        out[i] = (char)tolower((unsigned char)s[i]);
    out[len] = '\0';
    return out;
}

void rcpt_policy_clear(struct rcpt_policy *p)
{
    for (size_t i = 0; i < p->nrules; i++)
        free(p->rules[i].text);
    free(p->rules);
    free(p->display);
    memset(p, 0, sizeof(*p));
}

/* One trimmed entry into r. 0 ok; -1 bad (err set); -2 out of memory. */
static int rcpt_policy_entry(const char *e, size_t len, struct rcpt_rule *r, char *err,
                             size_t errlen)
{
    const char *at = memchr(e, '@', len);
    memset(r, 0, sizeof(*r));
    if (len == 1 && e[0] == '*') {
        r->kind = RCPT_RULE_ANY;
        return 0;
    }
    if (at && memchr(at + 1, '@', len - (size_t)(at - e) - 1))
        at = NULL; /* two '@': reported below */
    if (!at) {
        snprintf(err, errlen, "'%.*s' is not a recipient rule; %s", (int)len, e, RCPT_POLICY_WHAT);
        return -1;
    }
    const char *dom = at + 1;
    size_t domlen = len - (size_t)(dom - e);
    if (at == e) {
        r->kind = RCPT_RULE_DOMAIN;
        if (domlen > 0 && dom[0] == '.') {
            r->kind = RCPT_RULE_SUBDOMAINS;
            dom++;
            domlen--;
        }
    } else {
        r->kind = RCPT_RULE_ADDRESS;
        if (!rcpt_policy_is_local(e, (size_t)(at - e))) {
            snprintf(err, errlen, "'%.*s': '%.*s' is not a valid local part; %s", (int)len, e,
                     (int)(at - e), e, RCPT_POLICY_WHAT);
            return -1;
        }
    }
    if (!rcpt_policy_is_dns_name(dom, domlen)) {
        snprintf(err, errlen, "'%.*s': '%.*s' is not a domain name; %s", (int)len, e, (int)domlen,
                 dom, RCPT_POLICY_WHAT);
        return -1;
    }
    if (r->kind == RCPT_RULE_ADDRESS)
        r->text = rcpt_policy_lower_dup(e, len);
    else
        r->text = rcpt_policy_lower_dup(dom, domlen);
    return r->text ? 0 : -2;
}

int rcpt_policy_parse(const char *text, struct rcpt_policy *p, char *err, size_t errlen)
{
    size_t cap = 0, dlen = 0;
    const char *s = text;
    memset(p, 0, sizeof(*p));
    /* entries joined by ", ": at most one more character per separating comma */
    p->display = calloc(2, strlen(text) + 1);
    if (!p->display)
        return -2;
    for (;;) {
        size_t len = strcspn(s, ",");
        const char *e = s, *next = s + len;
        while (len > 0 && isspace((unsigned char)e[0])) {
            e++;
            len--;
        }
        while (len > 0 && isspace((unsigned char)e[len - 1]))
            len--;
        if (len == 0) {
            snprintf(err, errlen, "empty entry; %s", RCPT_POLICY_WHAT);
            goto bad;
        }
        if (len > RCPT_POLICY_MAX_ENTRY) {
            snprintf(err, errlen, "entry '%.40s...' is too long (at most %d characters)", e,
                     RCPT_POLICY_MAX_ENTRY);
            goto bad;
        }
        if (p->nrules >= RCPT_POLICY_MAX_RULES) {
            snprintf(err, errlen, "more than %d entries", RCPT_POLICY_MAX_RULES);
            goto bad;
        }
        if (p->nrules == cap) {
            size_t ncap = cap ? cap * 2 : 4;
            struct rcpt_rule *grown = realloc(p->rules, ncap * sizeof(*grown));
            if (!grown)
                goto oom;
            p->rules = grown;
            cap = ncap;
        }
        int rc = rcpt_policy_entry(e, len, &p->rules[p->nrules], err, errlen);
        if (rc == -2)
            goto oom;
        if (rc < 0)
            goto bad;
        if (p->rules[p->nrules].kind == RCPT_RULE_ANY)
            p->any = 1;
        p->nrules++;
        if (dlen) {
            memcpy(p->display + dlen, ", ", 2);
            dlen += 2;
        }
        memcpy(p->display + dlen, e, len);
        dlen += len;
        p->display[dlen] = '\0';
        if (*next != ',')
            break;
        s = next + 1;
    }
    return 0;
bad:
    rcpt_policy_clear(p);
    return -1;
oom:
    rcpt_policy_clear(p);
    return -2;
}

int rcpt_policy_is_any(const struct rcpt_policy *p)
{
    return p->any;
}

int rcpt_policy_match(const struct rcpt_policy *p, const char *addr)
{
    if (p->any)
        return 1;
    const char *at = strrchr(addr, '@');
    if (!at || at == addr)
        return 0;
    const char *dom = at + 1;
    size_t domlen = strlen(dom), local = (size_t)(at - addr);
    if (domlen > 0 && dom[domlen - 1] == '.')
        domlen--;
    if (domlen == 0 || domlen > 253 || dom[0] == '[')
        return 0;
    for (size_t i = 0; i < p->nrules; i++) {
        const struct rcpt_rule *r = &p->rules[i];
        size_t tlen = strlen(r->text);
        switch (r->kind) {
        case RCPT_RULE_ANY:
            return 1;
        case RCPT_RULE_DOMAIN:
            if (tlen == domlen && strncasecmp(dom, r->text, domlen) == 0)
                return 1;
            break;
        case RCPT_RULE_SUBDOMAINS:
            /* "x.example.org" for "example.org": longer, a dot just before the suffix */
            if (domlen > tlen + 1 && dom[domlen - tlen - 1] == '.' &&
                strncasecmp(dom + domlen - tlen, r->text, tlen) == 0)
                return 1;
            break;
        case RCPT_RULE_ADDRESS:
            if (tlen == local + 1 + domlen && strncasecmp(addr, r->text, tlen) == 0)
                return 1;
            break;
        }
    }
    return 0;
}
