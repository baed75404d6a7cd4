/* The config file: libinih splits "key = value" lines and strips comments; everything else is
 * here. Each section has a table of keys {name, setter, field, default, min, max, choices}; the
 * setter validates and stores one value, defaults go through the same setters, and a last pass
 * checks what spans keys and sections (required keys, account references, TLS pairs). Every
 * problem is collected with its line, so --check shows them all at once. */
#include "proxy/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <crypt.h>
#include <ini.h>
#include <openssl/ssl.h>

#include "common/secret.h"

#define CONFIG_KEYS_MAX 16
#define CONFIG_MSG_MAX 1024
#define CONFIG_NAME_MAX 64 /* account and device names */

#define CONFIG_KIB UINT64_C(1024)
#define CONFIG_MIB (CONFIG_KIB * 1024)
#define CONFIG_GIB (CONFIG_MIB * 1024)

#define CONFIG_MS_TOKEN_URL_HEAD "https://login.microsoftonline.com/"
#define CONFIG_MS_TOKEN_URL_TAIL "/oauth2/v2.0/token"
#define CONFIG_MS_SCOPE "https://outlook.office365.com/.default"
#define CONFIG_HASH_HINT                                                                           \
    "use yescrypt ($y$), gost-yescrypt ($gy$), scrypt ($7$), sha512crypt ($6$), sha256crypt "      \
    "($5$) or bcrypt ($2b$), e.g. the output of: mkpasswd -m yescrypt"

/* The enum fields are stored through an int by the choice setter. */
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum log_level is not int-sized");
_Static_assert(sizeof(enum bare_lf_policy) == sizeof(int), "enum bare_lf_policy is not int-sized");
_Static_assert(sizeof(enum sender_rewrite) == sizeof(int), "enum sender_rewrite is not int-sized");

enum config_kind { CONFIG_PROXY, CONFIG_UPSTREAM, CONFIG_ACCOUNT, CONFIG_DEVICE };

#define KEY_REQUIRED 1u /* reported at the section header when missing */
#define KEY_REPEAT 2u   /* may appear more than once; each value adds to a list */
#define KEY_EMPTY_OK 4u /* "key =" means "not set" (the issue's ca_file =, token_url =) */

/* The current section: an index into config_ctx.sections, or one of these. */
#define CONFIG_NO_SECTION (-1)  /* before the first header */
#define CONFIG_BAD_SECTION (-2) /* a header already reported: its keys are skipped quietly */

struct config_ctx;
struct config_section;
struct config_key;

/* Validate value and store it in the section's object; report problems with config_err(). */
typedef void (*config_setter)(struct config_ctx *c, struct config_section *s,
                              const struct config_key *k, const char *value);

struct config_choice {
    const char *name;
    int value;
};

struct config_key {
    const char *name;
    config_setter set;
    size_t offset;   /* the field in the section's struct (struct config, cfg_account, ...) */
    const char *def; /* default, written as in the file; NULL: none, or computed later */
    uint64_t min, max;
    const struct config_choice *choices; /* NULL-terminated */
    unsigned flags;
    const char *what; /* what a valid value looks like, for messages */
};

struct config_section_def {
    const char *name;
    enum config_kind kind;
    int named; /* "[account NAME]" */
    const struct config_key *keys;
    size_t nkeys;
};

struct config_section {
    const struct config_section_def *def;
    size_t index;                  /* into cfg->accounts or cfg->devices */
    int line;                      /* 0: the section is not in the file (defaults only) */
    int key_line[CONFIG_KEYS_MAX]; /* where each key was first set; 0: not set */
    unsigned char key_empty[CONFIG_KEYS_MAX]; /* given as "key =": the default applies */
    char *account_ref; /* [device]: the account's name, resolved after parsing */
};

struct config_error {
    int line; /* 0: about the whole file */
    size_t seq;
    char *msg;
};

struct config_ctx {
    struct config *cfg;
    const char *path;
    FILE *fp;
    char *linebuf;
    size_t linecap;
    int lineno; /* the physical line inih's handler is looking at */
    struct config_section *sections;
    size_t nsections;
    long cur; /* index into sections, CONFIG_NO_SECTION or CONFIG_BAD_SECTION */
    struct config_error *errors;
    size_t nerrors;
    int oom;
};

/* ---- errors ---- */

static void config_err(struct config_ctx *c, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void config_err(struct config_ctx *c, int line, const char *fmt, ...)
{
    char msg[CONFIG_MSG_MAX];
    va_list ap;
    struct config_error *e;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    e = realloc(c->errors, (c->nerrors + 1) * sizeof(*e));
    if (!e) {
        c->oom = 1;
        return;
    }
    c->errors = e;
    e[c->nerrors].line = line;
    e[c->nerrors].seq = c->nerrors;
    e[c->nerrors].msg = strdup(msg);
    if (!e[c->nerrors].msg) {
        c->oom = 1;
        return;
    }
    c->nerrors++;
}

static int config_err_cmp(const void *a, const void *b)
{
    const struct config_error *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int config_has_error_at(const struct config_ctx *c, int line)
{
    for (size_t i = 0; i < c->nerrors; i++)
        if (c->errors[i].line == line)
            return 1;
    return 0;
}

/* All errors in line order, "FILE:LINE: message\n" each ("FILE: message" for the whole file). */
static char *config_err_text(struct config_ctx *c)
{
    size_t len = 1, off = 0;
    char *text;

    if (c->oom) {
        len = strlen(c->path) + 32;
        text = malloc(len);
        if (text)
            snprintf(text, len, "%s: out of memory\n", c->path);
        return text;
    }
    qsort(c->errors, c->nerrors, sizeof(*c->errors), config_err_cmp);
    for (size_t i = 0; i < c->nerrors; i++)
        len += strlen(c->path) + strlen(c->errors[i].msg) + 16;
    text = malloc(len);
    if (!text)
        return NULL;
    text[0] = '\0';
    for (size_t i = 0; i < c->nerrors; i++) {
        int n;
        if (c->errors[i].line > 0)
            n = snprintf(text + off, len - off, "%s:%d: %s\n", c->path, c->errors[i].line,
                         c->errors[i].msg);
        else
            n = snprintf(text + off, len - off, "%s: %s\n", c->path, c->errors[i].msg);
        if (n > 0)
            off += (size_t)n;
    }
    return text;
}

/* ---- small validators ---- */

static int config_is_loopback_host(const char *host);

static char *config_strdup(struct config_ctx *c, const char *s)
{
    char *d = strdup(s);
    if (!d)
        c->oom = 1;
    return d;
}

static void *config_field(struct config_ctx *c, struct config_section *s, size_t offset)
{
    char *obj;
    switch (s->def->kind) {
    case CONFIG_ACCOUNT:
        obj = (char *)&c->cfg->accounts[s->index];
        break;
    case CONFIG_DEVICE:
        obj = (char *)&c->cfg->devices[s->index];
        break;
    default:
        obj = (char *)c->cfg;
        break;
    }
    return obj + offset;
}

static void config_store_string(struct config_ctx *c, struct config_section *s,
                                const struct config_key *k, const char *value)
{
    char **field = config_field(c, s, k->offset);
    free(*field);
    *field = config_strdup(c, value);
}

/* Printable ASCII; spaces allowed only if spaces is set. */
static int config_is_plain(const char *s, int spaces)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch < 0x20 || ch >= 0x7f || (ch == ' ' && !spaces))
            return 0;
    }
    return 1;
}

/* A DNS name: labels of letters, digits and '-', not starting or ending with '-'. */
static int config_is_dns_name(const char *s)
{
    size_t len = strlen(s), label = 0;
    if (len == 0 || len > 253)
        return 0;
    for (size_t i = 0; i <= len; i++) {
        char ch = s[i];
        if (ch == '.' || ch == '\0') {
            if (label == 0 || label > 63 || s[i - 1] == '-')
                return 0;
            label = 0;
        } else if (isalnum((unsigned char)ch) || ch == '-') {
            if (label == 0 && ch == '-')
                return 0;
            label++;
        } else {
            return 0;
        }
    }
    return 1;
}

static int config_is_ip(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* Decimal digits only: no sign, no blanks, no overflow. */
static int config_parse_u64(const char *s, const char **end, uint64_t *out)
{
    uint64_t v = 0;
    const char *p = s;
    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *end = p;
    *out = v;
    return 0;
}

static const char *config_fmt_size(uint64_t v, char *buf, size_t len)
{
    if (v >= CONFIG_GIB && v % CONFIG_GIB == 0)
        snprintf(buf, len, "%" PRIu64 "G", v / CONFIG_GIB);
    else if (v >= CONFIG_MIB && v % CONFIG_MIB == 0)
        snprintf(buf, len, "%" PRIu64 "M", v / CONFIG_MIB);
    else if (v >= CONFIG_KIB && v % CONFIG_KIB == 0)
        snprintf(buf, len, "%" PRIu64 "K", v / CONFIG_KIB);
    else
        snprintf(buf, len, "%" PRIu64, v);
    return buf;
}

static const char *config_fmt_duration(uint64_t v, char *buf, size_t len)
{
    if (v >= 3600 && v % 3600 == 0)
        snprintf(buf, len, "%" PRIu64 "h", v / 3600);
    else if (v >= 60 && v % 60 == 0)
        snprintf(buf, len, "%" PRIu64 "m", v / 60);
    else
        snprintf(buf, len, "%" PRIu64 "s", v);
    return buf;
}

static const char *config_choices_str(const struct config_choice *ch, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (; ch->name; ch++) {
        int n = snprintf(buf + off, len - off, "%s%s", off ? ", " : "", ch->name);
        if (n < 0 || (size_t)n >= len - off)
            break;
        off += (size_t)n;
    }
    return buf;
}

/* ---- setters, one per kind of value ---- */

static void config_set_uint(struct config_ctx *c, struct config_section *s,
                            const struct config_key *k, const char *value)
{
    const char *end;
    uint64_t v;
    if (config_parse_u64(value, &end, &v) != 0 || *end) {
        config_err(c, c->lineno,
                   "%s: invalid number '%s'; expected an integer %" PRIu64 "..%" PRIu64, k->name,
                   value, k->min, k->max);
        return;
    }
    if (v < k->min || v > k->max) {
        config_err(c, c->lineno, "%s: %s is out of range; valid: %" PRIu64 "..%" PRIu64, k->name,
                   value, k->min, k->max);
        return;
    }
    *(unsigned *)config_field(c, s, k->offset) = (unsigned)v;
}

static void config_set_port(struct config_ctx *c, struct config_section *s,
                            const struct config_key *k, const char *value)
{
    const char *end;
    uint64_t v;
    if (config_parse_u64(value, &end, &v) != 0 || *end) {
        config_err(c, c->lineno, "%s: invalid port '%s'; expected an integer 1..65535", k->name,
                   value);
        return;
    }
    if (v < 1 || v > 65535) {
        config_err(c, c->lineno, "%s: %s is out of range; valid: 1..65535", k->name, value);
        return;
    }
    *(uint16_t *)config_field(c, s, k->offset) = (uint16_t)v;
}

/* "35M": a number with an optional K, M or G suffix, binary multiples. */
static void config_set_size(struct config_ctx *c, struct config_section *s,
                            const struct config_key *k, const char *value)
{
    char lo[32], hi[32];
    const char *end;
    uint64_t v, mult = 1;
    int ok = config_parse_u64(value, &end, &v) == 0;
    if (ok && *end) {
        switch (*end) {
        case 'k':
        case 'K':
            mult = CONFIG_KIB;
            break;
        case 'm':
        case 'M':
            mult = CONFIG_MIB;
            break;
        case 'g':
        case 'G':
            mult = CONFIG_GIB;
            break;
        default:
            ok = 0;
        }
        if (ok && end[1])
            ok = 0;
    }
    config_fmt_size(k->min, lo, sizeof(lo));
    config_fmt_size(k->max, hi, sizeof(hi));
    if (!ok) {
        config_err(c, c->lineno,
                   "%s: invalid size '%s'; expected a number with an optional K, M or G suffix "
                   "(1K = 1024), %s..%s",
                   k->name, value, lo, hi);
        return;
    }
    if (v > UINT64_MAX / mult || v * mult < k->min || v * mult > k->max) {
        config_err(c, c->lineno, "%s: %s is out of range; valid: %s..%s", k->name, value, lo, hi);
        return;
    }
    *(uint64_t *)config_field(c, s, k->offset) = v * mult;
}

/* "30", "30s", "5m", "1h" -> seconds. */
static void config_set_duration(struct config_ctx *c, struct config_section *s,
                                const struct config_key *k, const char *value)
{
    char lo[32], hi[32];
    const char *end;
    uint64_t v, mult = 1;
    int ok = config_parse_u64(value, &end, &v) == 0;
    if (ok && *end) {
        if (*end == 's')
            mult = 1;
        else if (*end == 'm')
            mult = 60;
        else if (*end == 'h')
            mult = 3600;
        else
            ok = 0;
        if (ok && end[1])
            ok = 0;
    }
    config_fmt_duration(k->min, lo, sizeof(lo));
    config_fmt_duration(k->max, hi, sizeof(hi));
    if (!ok) {
        config_err(c, c->lineno,
                   "%s: invalid duration '%s'; expected seconds, or a number with an s, m or h "
                   "suffix, %s..%s",
                   k->name, value, lo, hi);
        return;
    }
    if (v > UINT64_MAX / mult || v * mult < k->min || v * mult > k->max) {
        config_err(c, c->lineno, "%s: %s is out of range; valid: %s..%s", k->name, value, lo, hi);
        return;
    }
    *(unsigned *)config_field(c, s, k->offset) = (unsigned)(v * mult);
}

static const struct config_choice *config_find_choice(struct config_ctx *c,
                                                      const struct config_key *k, const char *value)
{
    char list[256];
    for (const struct config_choice *ch = k->choices; ch->name; ch++)
        if (strcmp(ch->name, value) == 0)
            return ch;
    config_err(c, c->lineno, "%s: invalid value '%s'; valid: %s", k->name, value,
               config_choices_str(k->choices, list, sizeof(list)));
    return NULL;
}

/* One of a fixed list, stored as its int (enum) value. */
static void config_set_choice(struct config_ctx *c, struct config_section *s,
                              const struct config_key *k, const char *value)
{
    const struct config_choice *ch = config_find_choice(c, k, value);
    if (ch)
        memcpy(config_field(c, s, k->offset), &ch->value, sizeof(int));
}

/* One of a fixed list, stored as the string. */
static void config_set_choice_str(struct config_ctx *c, struct config_section *s,
                                  const struct config_key *k, const char *value)
{
    if (config_find_choice(c, k, value))
        config_store_string(c, s, k, value);
}

/* Printable, no blanks: identifiers such as client_id and username. */
static void config_set_word(struct config_ctx *c, struct config_section *s,
                            const struct config_key *k, const char *value)
{
    if (!config_is_plain(value, 0)) {
        config_err(c, c->lineno, "%s: only printable characters without blanks are allowed",
                   k->name);
        return;
    }
    config_store_string(c, s, k, value);
}

/* Printable text, blanks allowed: scope. */
static void config_set_text(struct config_ctx *c, struct config_section *s,
                            const struct config_key *k, const char *value)
{
    if (!config_is_plain(value, 1)) {
        config_err(c, c->lineno, "%s: only printable characters are allowed", k->name);
        return;
    }
    config_store_string(c, s, k, value);
}

static void config_set_dns_name(struct config_ctx *c, struct config_section *s,
                                const struct config_key *k, const char *value)
{
    if (!config_is_dns_name(value)) {
        config_err(c, c->lineno,
                   "%s: invalid name '%s'; expected %s (letters, digits, '-' and '.')", k->name,
                   value, k->what);
        return;
    }
    config_store_string(c, s, k, value);
}

/* A DNS name or an IP literal; "[v6]" loses its brackets. */
static void config_set_host(struct config_ctx *c, struct config_section *s,
                            const struct config_key *k, const char *value)
{
    char buf[INET6_ADDRSTRLEN + 2];
    size_t len = strlen(value);
    if (len > 2 && len < sizeof(buf) && value[0] == '[' && value[len - 1] == ']') {
        unsigned char a[16];
        memcpy(buf, value + 1, len - 2);
        buf[len - 2] = '\0';
        if (inet_pton(AF_INET6, buf, a) == 1) {
            config_store_string(c, s, k, buf);
            return;
        }
    } else if (config_is_dns_name(value) || config_is_ip(value)) {
        config_store_string(c, s, k, value);
        return;
    }
    config_err(c, c->lineno, "%s: invalid host '%s'; expected a DNS name or an IP address", k->name,
               value);
}

static void config_set_abs_path(struct config_ctx *c, struct config_section *s,
                                const struct config_key *k, const char *value)
{
    if (value[0] != '/' || !config_is_plain(value, 1)) {
        config_err(c, c->lineno, "%s: '%s' is not an absolute path; expected /like/this", k->name,
                   value);
        return;
    }
    config_store_string(c, s, k, value);
}

/* A regular file this process can read. 0 ok. */
static int config_check_readable(struct config_ctx *c, const struct config_key *k, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0 || access(path, R_OK) != 0) {
        config_err(c, c->lineno, "%s: %s: %s", k->name, path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        config_err(c, c->lineno, "%s: %s: not a regular file", k->name, path);
        return -1;
    }
    return 0;
}

static void config_set_file(struct config_ctx *c, struct config_section *s,
                            const struct config_key *k, const char *value)
{
    if (config_check_readable(c, k, value) == 0)
        config_store_string(c, s, k, value);
}

/* A private key: readable by us, by nobody else. */
static void config_set_key_file(struct config_ctx *c, struct config_section *s,
                                const struct config_key *k, const char *value)
{
    char err[512];
    if (config_check_readable(c, k, value) != 0)
        return;
    if (secret_check_file(value, err, sizeof(err)) != 0) {
        config_err(c, c->lineno, "%s: %s", k->name, err);
        return;
    }
    config_store_string(c, s, k, value);
}

static void config_set_secret_file(struct config_ctx *c, struct config_section *s,
                                   const struct config_key *k, const char *value)
{
    char err[512];
    struct cfg_account *a = &c->cfg->accounts[s->index];
    char *secret = NULL;
    /* secret_read_file's messages never contain the file's content. */
    if (secret_read_file(value, &secret, err, sizeof(err)) != 0) {
        config_err(c, c->lineno, "%s: %s", k->name, err);
        return;
    }
    secret_free(a->client_secret);
    a->client_secret = secret;
    config_store_string(c, s, k, value);
}

static void config_set_mailbox(struct config_ctx *c, struct config_section *s,
                               const struct config_key *k, const char *value)
{
    /* RFC 5321 dot-string local part: atext and dots. */
    static const char atext[] = "!#$%&'*+-/=?^_`{|}~.";
    const char *at = strrchr(value, '@');
    int ok = at && at != value && config_is_dns_name(at + 1);
    for (const char *p = value; ok && p < at; p++)
        if (!isalnum((unsigned char)*p) && !strchr(atext, *p))
            ok = 0;
    if (!ok) {
        config_err(c, c->lineno, "%s: '%s' is not a mailbox address; expected local@domain",
                   k->name, value);
        return;
    }
    config_store_string(c, s, k, value);
}

/* https://HOST[:PORT][/PATH], or http:// to a loopback host only (a local IdP in tests). */
static int config_check_url(const char *url, int *insecure)
{
    char host[256];
    const char *p, *auth_end, *port = NULL;
    size_t hostlen;

    *insecure = 0;
    if (!config_is_plain(url, 0))
        return -1;
    if (strncasecmp(url, "https://", 8) == 0) {
        p = url + 8;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        p = url + 7;
        *insecure = 1;
    } else {
        return -1;
    }
    auth_end = p + strcspn(p, "/?#");
    /* No userinfo: "http://127.0.0.1@example.com/" must not pass as loopback. */
    if (memchr(p, '@', (size_t)(auth_end - p)))
        return -1;
    if (*p == '[') {
        const char *close = memchr(p, ']', (size_t)(auth_end - p));
        unsigned char a[16];
        if (!close)
            return -1;
        hostlen = (size_t)(close - p - 1);
        if (hostlen >= sizeof(host))
            return -1;
        memcpy(host, p + 1, hostlen);
        host[hostlen] = '\0';
        if (inet_pton(AF_INET6, host, a) != 1)
            return -1;
        if (close + 1 < auth_end) {
            if (close[1] != ':')
                return -1;
            port = close + 2;
        }
    } else {
        const char *colon = memchr(p, ':', (size_t)(auth_end - p));
        const char *hend = colon ? colon : auth_end;
        hostlen = (size_t)(hend - p);
        if (hostlen == 0 || hostlen >= sizeof(host))
            return -1;
        memcpy(host, p, hostlen);
        host[hostlen] = '\0';
        if (!config_is_dns_name(host) && !config_is_ip(host))
            return -1;
        if (colon)
            port = colon + 1;
    }
    if (port) {
        unsigned v = 0;
        if (port == auth_end)
            return -1;
        for (const char *q = port; q < auth_end; q++) {
            if (*q < '0' || *q > '9' || q - port >= 5)
                return -1;
            v = v * 10 + (unsigned)(*q - '0');
        }
        if (v < 1 || v > 65535)
            return -1;
    }
    if (*insecure && !config_is_loopback_host(host))
        return -2;
    return 0;
}

/* 127.0.0.0/8, ::1 or localhost. */
static int config_is_loopback_host(const char *host)
{
    unsigned char a[16];
    if (strcasecmp(host, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, host, a) == 1)
        return a[0] == 127;
    if (inet_pton(AF_INET6, host, a) == 1)
        return IN6_IS_ADDR_LOOPBACK((const struct in6_addr *)(const void *)a);
    return 0;
}

static void config_set_url(struct config_ctx *c, struct config_section *s,
                           const struct config_key *k, const char *value)
{
    int insecure, r = config_check_url(value, &insecure);
    if (r == -2) {
        config_err(c, c->lineno,
                   "%s: '%s' uses http:// to a host that is not loopback; use https:// "
                   "(http:// is allowed only for 127.0.0.0/8, [::1] and localhost)",
                   k->name, value);
        return;
    }
    if (r != 0) {
        config_err(c, c->lineno, "%s: '%s' is not a valid URL; expected https://HOST/PATH", k->name,
                   value);
        return;
    }
    config_store_string(c, s, k, value);
}

/* "0.0.0.0:2525", "[::1]:2525", "*:2525". 0 ok; -1 with the reason. */
static int config_parse_endpoint(const char *v, char **host, char **port, const char **why)
{
    char hbuf[INET6_ADDRSTRLEN + 1];
    const char *hs, *he, *ps;
    unsigned char a[16];
    size_t hlen;
    uint64_t pv;
    const char *end;

    if (v[0] == '[') {
        const char *close = strchr(v, ']');
        if (!close) {
            *why = "missing ']'";
            return -1;
        }
        hs = v + 1;
        he = close;
        if (close[1] != ':') {
            *why = "no port";
            return -1;
        }
        ps = close + 2;
    } else {
        const char *colon = strrchr(v, ':');
        if (!colon) {
            *why = "no port";
            return -1;
        }
        hs = v;
        he = colon;
        ps = colon + 1;
        if (memchr(hs, ':', (size_t)(he - hs))) {
            *why = "IPv6 addresses need brackets, as in [::1]:2525";
            return -1;
        }
    }
    hlen = (size_t)(he - hs);
    if (hlen == 0 || hlen >= sizeof(hbuf)) {
        *why = "no host";
        return -1;
    }
    memcpy(hbuf, hs, hlen);
    hbuf[hlen] = '\0';
    if (v[0] == '[' ? inet_pton(AF_INET6, hbuf, a) != 1
                    : strcmp(hbuf, "*") != 0 && inet_pton(AF_INET, hbuf, a) != 1) {
        *why = "the host must be an IP address or *";
        return -1;
    }
    if (config_parse_u64(ps, &end, &pv) != 0 || *end || pv < 1 || pv > 65535) {
        *why = "the port must be 1..65535";
        return -1;
    }
    *host = strdup(hbuf);
    *port = strdup(ps);
    if (!*host || !*port) {
        free(*host);
        free(*port);
        *why = "out of memory";
        return -1;
    }
    return 0;
}

static void config_add_endpoint(struct config_ctx *c, const struct config_key *k, const char *value,
                                struct cfg_endpoint **list, size_t *n)
{
    const char *why = NULL;
    struct cfg_endpoint ep = {.line = c->lineno}, *grown;
    if (config_parse_endpoint(value, &ep.host, &ep.port, &why) != 0) {
        config_err(c, c->lineno,
                   "%s: invalid address '%s' (%s); expected IPv4:port, [IPv6]:port or *:port",
                   k->name, value, why);
        return;
    }
    grown = realloc(*list, (*n + 1) * sizeof(**list));
    if (!grown) {
        free(ep.host);
        free(ep.port);
        c->oom = 1;
        return;
    }
    grown[*n] = ep;
    *list = grown;
    (*n)++;
}

static void config_set_listen(struct config_ctx *c, struct config_section *s,
                              const struct config_key *k, const char *value)
{
    (void)s;
    config_add_endpoint(c, k, value, &c->cfg->listen, &c->cfg->nlisten);
}

static void config_set_listen_tls(struct config_ctx *c, struct config_section *s,
                                  const struct config_key *k, const char *value)
{
    (void)s;
    config_add_endpoint(c, k, value, &c->cfg->listen_tls, &c->cfg->nlisten_tls);
}

/* "10.20.3.15, 10.20.4.0/24": every entry is checked and reported on its own. */
static void config_set_addresses(struct config_ctx *c, struct config_section *s,
                                 const struct config_key *k, const char *value)
{
    struct cfg_device *d = &c->cfg->devices[s->index];
    const char *p = value;
    for (;;) {
        size_t len = strcspn(p, ",");
        char item[128], err[256];
        struct cidr cidr, *grown;
        if (len >= sizeof(item)) {
            config_err(c, c->lineno,
                       "%s: entry '%.40s...' is too long; expected an IPv4 or "
                       "IPv6 address or CIDR block",
                       k->name, p);
        } else {
            memcpy(item, p, len);
            item[len] = '\0';
            if (cidr_parse(item, &cidr, err, sizeof(err)) != 0) {
                config_err(c, c->lineno, "%s: %s", k->name, err);
            } else {
                grown = realloc(d->addrs, (d->naddrs + 1) * sizeof(*d->addrs));
                if (!grown) {
                    c->oom = 1;
                    return;
                }
                d->addrs = grown;
                d->addrs[d->naddrs++] = cidr;
            }
        }
        if (p[len] != ',')
            break;
        p += len + 1;
    }
}

/* A complete hash of a kind we accept: crypt_checksalt() only looks at the setting, so the hash
 * part is checked here too (a bare salt would make every login fail). */
static int config_hash_ok(const char *hash)
{
    static const struct {
        const char *prefix;
        size_t tail; /* characters after the last '$' */
    } kinds[] = {{"$y$", 43}, {"$gy$", 43}, {"$7$", 43}, {"$6$", 86}, {"$5$", 43}, {"$2b$", 53}};
    const char *tail = strrchr(hash, '$');
    int salt = crypt_checksalt(hash);
    /* libxcrypt rates sha256crypt "legacy"; it is still accepted for devices whose hashes were
     * made elsewhere, as the documentation says (yescrypt is the recommendation). */
    if (!tail || (salt != CRYPT_SALT_OK &&
                  !(salt == CRYPT_SALT_METHOD_LEGACY && strncmp(hash, "$5$", 3) == 0)))
        return 0;
    tail++;
    for (const char *p = tail; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '/')
            return 0;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        size_t plen = strlen(kinds[i].prefix);
        if (strncmp(hash, kinds[i].prefix, plen) == 0)
            return tail > hash + plen && strlen(tail) == kinds[i].tail;
    }
    return 0;
}

static void config_set_password_hash(struct config_ctx *c, struct config_section *s,
                                     const struct config_key *k, const char *value)
{
    /* The hash itself is not echoed: it is password-equivalent for offline guessing. */
    if (!config_hash_ok(value)) {
        config_err(c, c->lineno, "%s: not a complete crypt(3) hash of a supported kind; %s",
                   k->name, CONFIG_HASH_HINT);
        return;
    }
    config_store_string(c, s, k, value);
}

static void config_set_account_ref(struct config_ctx *c, struct config_section *s,
                                   const struct config_key *k, const char *value)
{
    (void)k;
    free(s->account_ref);
    s->account_ref = config_strdup(c, value);
}

/* ---- the tables: the user interface ---- */

static const struct config_choice config_tls_versions[] = {{"1.0", TLS1_VERSION},
                                                           {"1.1", TLS1_1_VERSION},
                                                           {"1.2", TLS1_2_VERSION},
                                                           {"1.3", TLS1_3_VERSION},
                                                           {NULL, 0}};
static const struct config_choice config_log_levels[] = {{"error", LOGL_ERROR},
                                                         {"warn", LOGL_WARN},
                                                         {"info", LOGL_INFO},
                                                         {"debug", LOGL_DEBUG},
                                                         {NULL, 0}};
static const struct config_choice config_bare_lf[] = {
    {"normalize", BARE_LF_NORMALIZE}, {"reject", BARE_LF_REJECT}, {NULL, 0}};
static const struct config_choice config_providers[] = {{"microsoft", 0}, {"oauth2", 0}, {NULL, 0}};
static const struct config_choice config_grants[] = {{"client_credentials", 0}, {NULL, 0}};
static const struct config_choice config_rewrites[] = {{"off", SENDER_REWRITE_OFF},
                                                       {"envelope", SENDER_REWRITE_ENVELOPE},
                                                       {"header", SENDER_REWRITE_HEADER},
                                                       {NULL, 0}};

#define CF(f) offsetof(struct config, f)
#define AF(f) offsetof(struct cfg_account, f)
#define DF(f) offsetof(struct cfg_device, f)

static const struct config_key config_proxy_keys[] = {
    {"listen", config_set_listen, 0, NULL, 0, 0, NULL, KEY_REPEAT,
     "IPv4:port, [IPv6]:port or *:port"},
    {"listen_tls", config_set_listen_tls, 0, NULL, 0, 0, NULL, KEY_REPEAT,
     "IPv4:port, [IPv6]:port or *:port"},
    {"hostname", config_set_dns_name, CF(hostname), NULL, 0, 0, NULL, KEY_EMPTY_OK, "a DNS name"},
    {"tls_cert", config_set_file, CF(tls_cert), NULL, 0, 0, NULL, KEY_EMPTY_OK,
     "a readable PEM file"},
    {"tls_key", config_set_key_file, CF(tls_key), NULL, 0, 0, NULL, KEY_EMPTY_OK,
     "a PEM file of mode 0600"},
    {"tls_min_version", config_set_choice, CF(tls_min_version), "1.2", 0, 0, config_tls_versions, 0,
     NULL},
    {"max_message_size", config_set_size, CF(max_message_size), "35M", CONFIG_KIB, 2 * CONFIG_GIB,
     NULL, 0, NULL},
    {"max_recipients", config_set_uint, CF(max_recipients), "500", 1, 10000, NULL, 0, NULL},
    {"max_connections", config_set_uint, CF(max_connections), "1000", 1, 100000, NULL, 0, NULL},
    {"max_errors", config_set_uint, CF(max_errors), "10", 1, 1000, NULL, 0, NULL},
    {"command_timeout", config_set_duration, CF(command_timeout), "300s", 1, 3600, NULL, 0, NULL},
    {"data_timeout", config_set_duration, CF(data_timeout), "600s", 1, 3600, NULL, 0, NULL},
    {"log_level", config_set_choice, CF(log_level), "info", 0, 0, config_log_levels, 0, NULL},
    {"state_dir", config_set_abs_path, CF(state_dir), "/var/lib/smtp-oauth-proxy", 0, 0, NULL, 0,
     "an absolute path"},
    {"bare_lf", config_set_choice, CF(bare_lf), "normalize", 0, 0, config_bare_lf, 0, NULL},
};

static const struct config_key config_upstream_keys[] = {
    {"host", config_set_host, CF(upstream.host), "smtp.office365.com", 0, 0, NULL, 0,
     "a DNS name or an IP address"},
    {"port", config_set_port, CF(upstream.port), "587", 1, 65535, NULL, 0, NULL},
    {"ca_file", config_set_file, CF(upstream.ca_file), NULL, 0, 0, NULL, KEY_EMPTY_OK,
     "a readable PEM file"},
    {"connect_timeout", config_set_duration, CF(upstream_connect_timeout), "30s", 1, 3600, NULL, 0,
     NULL},
    {"timeout", config_set_duration, CF(upstream_timeout), "300s", 1, 3600, NULL, 0, NULL},
};

static const struct config_key config_account_keys[] = {
    {"provider", config_set_choice_str, AF(provider), NULL, 0, 0, config_providers, KEY_REQUIRED,
     NULL},
    {"grant", config_set_choice_str, AF(grant), "client_credentials", 0, 0, config_grants, 0, NULL},
    {"tenant", config_set_dns_name, AF(tenant), NULL, 0, 0, NULL, KEY_EMPTY_OK,
     "a tenant id or domain"},
    {"client_id", config_set_word, AF(client_id), NULL, 0, 0, NULL, KEY_REQUIRED,
     "the application (client) id"},
    {"client_secret_file", config_set_secret_file, AF(client_secret_file), NULL, 0, 0, NULL,
     KEY_REQUIRED, "a file of mode 0600"},
    {"mailbox", config_set_mailbox, AF(mailbox), NULL, 0, 0, NULL, KEY_REQUIRED, "local@domain"},
    {"sender_rewrite", config_set_choice, AF(sender_rewrite), "off", 0, 0, config_rewrites, 0,
     NULL},
    {"token_url", config_set_url, AF(token_url), NULL, 0, 0, NULL, KEY_EMPTY_OK, "an https:// URL"},
    {"scope", config_set_text, AF(scope), NULL, 0, 0, NULL, KEY_EMPTY_OK, "an OAuth2 scope"},
    {"upstream_host", config_set_host, AF(upstream.host), NULL, 0, 0, NULL, KEY_EMPTY_OK,
     "a DNS name or an IP address"},
    {"upstream_port", config_set_port, AF(upstream.port), NULL, 1, 65535, NULL, 0, NULL},
    {"upstream_ca_file", config_set_file, AF(upstream.ca_file), NULL, 0, 0, NULL, KEY_EMPTY_OK,
     "a readable PEM file"},
};

static const struct config_key config_device_keys[] = {
    {"address", config_set_addresses, 0, NULL, 0, 0, NULL, KEY_REPEAT,
     "IP addresses or CIDR blocks, comma-separated"},
    {"username", config_set_word, DF(username), NULL, 0, 0, NULL, KEY_EMPTY_OK, "a login name"},
    {"password_hash", config_set_password_hash, DF(password_hash), NULL, 0, 0, NULL, 0,
     "a crypt(3) hash"},
    {"account", config_set_account_ref, 0, NULL, 0, 0, NULL, KEY_REQUIRED,
     "the name of an [account NAME] section"},
};

#define CONFIG_NKEYS(a) (sizeof(a) / sizeof((a)[0]))
_Static_assert(CONFIG_NKEYS(config_proxy_keys) <= CONFIG_KEYS_MAX, "raise CONFIG_KEYS_MAX");
_Static_assert(CONFIG_NKEYS(config_account_keys) <= CONFIG_KEYS_MAX, "raise CONFIG_KEYS_MAX");

static const struct config_section_def config_sections[] = {
    {"proxy", CONFIG_PROXY, 0, config_proxy_keys, CONFIG_NKEYS(config_proxy_keys)},
    {"upstream", CONFIG_UPSTREAM, 0, config_upstream_keys, CONFIG_NKEYS(config_upstream_keys)},
    {"account", CONFIG_ACCOUNT, 1, config_account_keys, CONFIG_NKEYS(config_account_keys)},
    {"device", CONFIG_DEVICE, 1, config_device_keys, CONFIG_NKEYS(config_device_keys)},
};

#define CONFIG_VALID_SECTIONS "[proxy], [upstream], [account NAME], [device NAME]"

/* ---- sections ---- */

static const char *config_section_name(const struct config_ctx *c, const struct config_section *s,
                                       char *buf, size_t len)
{
    if (s->def->kind == CONFIG_ACCOUNT)
        snprintf(buf, len, "[account %s]", c->cfg->accounts[s->index].name);
    else if (s->def->kind == CONFIG_DEVICE)
        snprintf(buf, len, "[device %s]", c->cfg->devices[s->index].name);
    else
        snprintf(buf, len, "[%s]", s->def->name);
    return buf;
}

static struct config_section *config_find_section(struct config_ctx *c, enum config_kind kind,
                                                  const char *name)
{
    for (size_t i = 0; i < c->nsections; i++) {
        struct config_section *s = &c->sections[i];
        if (s->def->kind != kind)
            continue;
        if (kind == CONFIG_ACCOUNT && strcmp(c->cfg->accounts[s->index].name, name) != 0)
            continue;
        if (kind == CONFIG_DEVICE && strcmp(c->cfg->devices[s->index].name, name) != 0)
            continue;
        return s;
    }
    return NULL;
}

/* Append a section (and its account or device); -1 only when out of memory. */
static int config_add_section(struct config_ctx *c, const struct config_section_def *def,
                              const char *name, int line)
{
    struct config_section *ss = realloc(c->sections, (c->nsections + 1) * sizeof(*ss));
    if (!ss)
        goto oom;
    c->sections = ss;
    memset(&ss[c->nsections], 0, sizeof(*ss));
    ss[c->nsections].def = def;
    ss[c->nsections].line = line;
    if (def->kind == CONFIG_ACCOUNT) {
        struct cfg_account *a = realloc(c->cfg->accounts, (c->cfg->naccounts + 1) * sizeof(*a));
        if (!a)
            goto oom;
        c->cfg->accounts = a;
        memset(&a[c->cfg->naccounts], 0, sizeof(*a));
        a[c->cfg->naccounts].line = line;
        a[c->cfg->naccounts].name = strdup(name);
        if (!a[c->cfg->naccounts].name)
            goto oom;
        ss[c->nsections].index = c->cfg->naccounts++;
    } else if (def->kind == CONFIG_DEVICE) {
        struct cfg_device *d = realloc(c->cfg->devices, (c->cfg->ndevices + 1) * sizeof(*d));
        if (!d)
            goto oom;
        c->cfg->devices = d;
        memset(&d[c->cfg->ndevices], 0, sizeof(*d));
        d[c->cfg->ndevices].line = line;
        d[c->cfg->ndevices].name = strdup(name);
        if (!d[c->cfg->ndevices].name)
            goto oom;
        ss[c->nsections].index = c->cfg->ndevices++;
    }
    c->cur = (long)c->nsections++;
    return 0;
oom:
    c->oom = 1;
    c->cur = CONFIG_BAD_SECTION;
    return -1;
}

static int config_is_name(const char *s)
{
    size_t n = 0;
    for (; *s; s++, n++)
        if (!isalnum((unsigned char)*s) && !strchr("._-", *s))
            return 0;
    return n > 0 && n <= CONFIG_NAME_MAX;
}

/* A "[...]" line (leading blanks already gone). We track sections ourselves: inih's handler is
 * not told about headers, so it could not report empty sections or header lines. */
static void config_section_header(struct config_ctx *c, char *line)
{
    char *close = strchr(line, ']'), *p, *word, *name;
    const struct config_section_def *def = NULL;

    c->cur = CONFIG_BAD_SECTION;
    if (!close) {
        config_err(c, c->lineno, "missing ']' in section header; valid sections: %s",
                   CONFIG_VALID_SECTIONS);
        return;
    }
    for (p = close + 1; *p == ' ' || *p == '\t'; p++)
        ;
    if (*p && *p != ';' && *p != '#') {
        config_err(c, c->lineno, "unexpected text after section header: '%s'", p);
        return;
    }
    *close = '\0';
    word = line + 1;
    while (*word == ' ' || *word == '\t')
        word++;
    name = word + strcspn(word, " \t");
    if (*name) {
        *name++ = '\0';
        while (*name == ' ' || *name == '\t')
            name++;
        p = name + strlen(name);
        while (p > name && (p[-1] == ' ' || p[-1] == '\t'))
            *--p = '\0';
    }
    for (size_t i = 0; i < CONFIG_NKEYS(config_sections); i++)
        if (strcmp(word, config_sections[i].name) == 0)
            def = &config_sections[i];
    if (!def) {
        config_err(c, c->lineno, "unknown section [%s%s%s]; valid sections: %s", word,
                   *name ? " " : "", name, CONFIG_VALID_SECTIONS);
        return;
    }
    if (!def->named && *name) {
        config_err(c, c->lineno, "section [%s] takes no name; write [%s]", def->name, def->name);
        return;
    }
    if (def->named && !config_is_name(name)) {
        if (*name)
            config_err(c, c->lineno,
                       "invalid %s name '%s'; use 1..%d letters, digits, '.', '_' or '-'",
                       def->name, name, CONFIG_NAME_MAX);
        else
            config_err(c, c->lineno, "[%s] needs a name: [%s NAME]", def->name, def->name);
        return;
    }
    struct config_section *dup = config_find_section(c, def->kind, name);
    if (dup) {
        if (def->named)
            config_err(c, c->lineno, "duplicate section [%s %s] (first at line %d)", def->name,
                       name, dup->line);
        else
            config_err(c, c->lineno, "duplicate section [%s] (first at line %d)", def->name,
                       dup->line);
        return;
    }
    config_add_section(c, def, name, c->lineno);
}

/* What inih will call a syntax error: no '=' or ':' before an inline comment. */
static int config_line_has_separator(const char *line)
{
    for (const char *p = line; *p; p++) {
        if (*p == '=' || *p == ':')
            return 1;
        if (*p == ';' && p > line && isspace((unsigned char)p[-1]))
            return 0;
    }
    return 0;
}

/* The fgets-style reader inih calls once per line: we count physical lines (the handler runs
 * right after its line is read), refuse lines inih would silently split, drop leading blanks so
 * inih never takes an indented line for a continuation of the previous value, and handle
 * section headers. A line we dealt with reaches inih as an empty line. */
static char *config_reader(char *str, int num, void *stream)
{
    struct config_ctx *c = stream;
    ssize_t n;
    size_t len;
    char *line;

    errno = 0;
    n = getline(&c->linebuf, &c->linecap, c->fp);
    if (n < 0) {
        if (ferror(c->fp))
            config_err(c, c->lineno + 1, "read error: %s", strerror(errno ? errno : EIO));
        return NULL;
    }
    c->lineno++;
    line = c->linebuf;
    len = (size_t)n;
    if (len > 0 && line[len - 1] == '\n')
        line[--len] = '\0';
    if (len > 0 && line[len - 1] == '\r')
        line[--len] = '\0';
    if (c->lineno == 1 && len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
        line += 3;
        len -= 3;
    }
    /* inih's buffer holds the line, "\r\n" and the NUL. */
    if (strlen(line) != len) {
        config_err(c, c->lineno, "line contains a NUL byte");
        line = "";
    } else if (num < 4 || len > (size_t)num - 3) {
        config_err(c, c->lineno, "line too long (%zu characters); at most %d", len,
                   num < 4 ? 0 : num - 3);
        line = "";
    } else {
        while (*line == ' ' || *line == '\t')
            line++;
        if (*line == '[') {
            config_section_header(c, line);
            line = "";
        } else if (*line && *line != ';' && *line != '#' && !config_line_has_separator(line)) {
            config_err(c, c->lineno, "expected 'key = value', a [section] header or a ; comment");
            line = "";
        }
    }
    snprintf(str, (size_t)num, "%s\n", line);
    return str;
}

static void config_key_list(const struct config_section_def *def, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < def->nkeys; i++) {
        int n = snprintf(buf + off, len - off, "%s%s", i ? ", " : "", def->keys[i].name);
        if (n < 0 || (size_t)n >= len - off)
            break;
        off += (size_t)n;
    }
}

static int config_handler(void *user, const char *section, const char *name, const char *value)
{
    struct config_ctx *c = user;
    struct config_section *s;
    const struct config_key *k = NULL;
    size_t ki;
    char sname[128], list[512];

    (void)section; /* ours, from config_section_header */
    if (c->cur == CONFIG_BAD_SECTION)
        return 1;
    if (c->cur == CONFIG_NO_SECTION) {
        config_err(c, c->lineno, "key '%s' is outside any section; valid sections: %s", name,
                   CONFIG_VALID_SECTIONS);
        return 1;
    }
    s = &c->sections[c->cur];
    for (ki = 0; ki < s->def->nkeys; ki++) {
        if (strcmp(s->def->keys[ki].name, name) == 0) {
            k = &s->def->keys[ki];
            break;
        }
    }
    if (!k) {
        config_key_list(s->def, list, sizeof(list));
        config_err(c, c->lineno, "unknown key '%s' in %s; valid keys: %s", name,
                   config_section_name(c, s, sname, sizeof(sname)), list);
        return 1;
    }
    if (s->key_line[ki] && !(k->flags & KEY_REPEAT)) {
        config_err(c, c->lineno, "duplicate key '%s' (first set at line %d)", name,
                   s->key_line[ki]);
        return 1;
    }
    /* Marked as set even when invalid: one error per problem, not a "missing" one as well. */
    if (!s->key_line[ki])
        s->key_line[ki] = c->lineno;
    if (!*value) {
        if (!(k->flags & KEY_EMPTY_OK))
            config_err(c, c->lineno, "%s: empty value", name);
        else
            s->key_empty[ki] = 1;
        return 1;
    }
    k->set(c, s, k, value);
    return 1;
}

/* ---- after parsing: defaults, then what spans keys and sections ---- */

static int config_key_set(const struct config_section *s, const char *name)
{
    for (size_t i = 0; i < s->def->nkeys; i++)
        if (strcmp(s->def->keys[i].name, name) == 0)
            return s->key_empty[i] ? 0 : s->key_line[i];
    return 0;
}

static void config_apply_defaults(struct config_ctx *c, struct config_section *s)
{
    for (size_t i = 0; i < s->def->nkeys; i++) {
        const struct config_key *k = &s->def->keys[i];
        if ((s->key_line[i] && !s->key_empty[i]) || !k->def)
            continue;
        c->lineno = s->line;
        k->set(c, s, k, k->def);
    }
}

static void config_missing_keys(struct config_ctx *c, struct config_section *s)
{
    char sname[128], list[256];
    for (size_t i = 0; i < s->def->nkeys; i++) {
        const struct config_key *k = &s->def->keys[i];
        if (!(k->flags & KEY_REQUIRED) || s->key_line[i])
            continue;
        config_section_name(c, s, sname, sizeof(sname));
        if (k->choices)
            config_err(c, s->line, "%s: missing required key '%s'; valid: %s", sname, k->name,
                       config_choices_str(k->choices, list, sizeof(list)));
        else
            config_err(c, s->line, "%s: missing required key '%s' (%s)", sname, k->name, k->what);
    }
}

static void config_check_proxy(struct config_ctx *c, const struct config_section *s)
{
    struct config *cfg = c->cfg;
    int cert = config_key_set(s, "tls_cert"), key = config_key_set(s, "tls_key");

    if (cfg->nlisten + cfg->nlisten_tls == 0) {
        if (s->line)
            config_err(c, s->line,
                       "[proxy]: at least one listen or listen_tls is required, e.g. "
                       "listen = 0.0.0.0:2525");
        else
            config_err(c, 0,
                       "no [proxy] section; it needs at least one listen or listen_tls, e.g. "
                       "listen = 0.0.0.0:2525");
    }
    if (cert && !key)
        config_err(c, cert, "tls_cert is set but tls_key is not; set both");
    if (key && !cert)
        config_err(c, key, "tls_key is set but tls_cert is not; set both");
    if (cfg->nlisten_tls && !cert && !key)
        config_err(c, cfg->listen_tls[0].line, "listen_tls needs tls_cert and tls_key in [proxy]");
    /* The same address twice would fail at bind() with a less helpful message. */
    for (size_t i = 0; i < cfg->nlisten + cfg->nlisten_tls; i++) {
        const struct cfg_endpoint *a =
            i < cfg->nlisten ? &cfg->listen[i] : &cfg->listen_tls[i - cfg->nlisten];
        for (size_t j = 0; j < i; j++) {
            const struct cfg_endpoint *b =
                j < cfg->nlisten ? &cfg->listen[j] : &cfg->listen_tls[j - cfg->nlisten];
            if (strcmp(a->host, b->host) == 0 && strcmp(a->port, b->port) == 0) {
                config_err(c, a->line, "%s:%s is already listened on (line %d)", a->host, a->port,
                           b->line);
                break;
            }
        }
    }
    if (!cfg->hostname) {
        char host[256] = "localhost";
        if (gethostname(host, sizeof(host)) != 0 || !host[0])
            snprintf(host, sizeof(host), "localhost");
        host[sizeof(host) - 1] = '\0';
        cfg->hostname = config_strdup(c, host);
    }
}

static void config_check_account(struct config_ctx *c, const struct config_section *s)
{
    struct cfg_account *a = &c->cfg->accounts[s->index];
    const struct cfg_upstream *up = &c->cfg->upstream;

    if (a->provider && strcmp(a->provider, "microsoft") == 0) {
        if (!a->token_url && !config_key_set(s, "tenant")) {
            config_err(c, s->line,
                       "[account %s]: missing required key 'tenant' (the tenant id or domain; "
                       "required with provider = microsoft unless token_url is set)",
                       a->name);
        } else if (!a->token_url && a->tenant) {
            size_t len = sizeof(CONFIG_MS_TOKEN_URL_HEAD) + strlen(a->tenant) +
                         sizeof(CONFIG_MS_TOKEN_URL_TAIL);
            a->token_url = malloc(len);
            if (a->token_url)
                snprintf(a->token_url, len, "%s%s%s", CONFIG_MS_TOKEN_URL_HEAD, a->tenant,
                         CONFIG_MS_TOKEN_URL_TAIL);
            else
                c->oom = 1;
        }
        if (!a->scope)
            a->scope = config_strdup(c, CONFIG_MS_SCOPE);
    } else if (a->provider && strcmp(a->provider, "oauth2") == 0) {
        if (!config_key_set(s, "token_url"))
            config_err(c, s->line,
                       "[account %s]: missing required key 'token_url' (required with "
                       "provider = oauth2)",
                       a->name);
    }
    if (!a->upstream.host && up->host)
        a->upstream.host = config_strdup(c, up->host);
    if (!a->upstream.port)
        a->upstream.port = up->port;
    if (!a->upstream.ca_file && up->ca_file)
        a->upstream.ca_file = config_strdup(c, up->ca_file);
}

static void config_check_device(struct config_ctx *c, struct config_section *s)
{
    struct config *cfg = c->cfg;
    struct cfg_device *d = &cfg->devices[s->index];
    int user_line = config_key_set(s, "username"), hash_line = config_key_set(s, "password_hash");
    int addr_line = config_key_set(s, "address"), acct_line = config_key_set(s, "account");

    if (!addr_line && !user_line)
        config_err(c, s->line, "[device %s]: needs address, username, or both", d->name);
    if (user_line && !hash_line)
        config_err(c, s->line,
                   "[device %s]: missing required key 'password_hash' (required with "
                   "username; make one with: mkpasswd -m yescrypt)",
                   d->name);
    if (hash_line && !user_line)
        config_err(c, hash_line,
                   "password_hash is set but username is not; add username or remove "
                   "password_hash");
    if (d->username) {
        for (size_t i = 0; i < s->index; i++) {
            if (cfg->devices[i].username && strcmp(cfg->devices[i].username, d->username) == 0) {
                config_err(c, user_line, "username '%s' is already used by [device %s] (line %d)",
                           d->username, cfg->devices[i].name, cfg->devices[i].line);
                break;
            }
        }
    }
    if (acct_line && s->account_ref) {
        d->account = config_account(cfg, s->account_ref);
        if (!d->account) {
            char list[512];
            size_t off = 0;
            list[0] = '\0';
            for (size_t i = 0; i < cfg->naccounts; i++) {
                int n = snprintf(list + off, sizeof(list) - off, "%s%s", i ? ", " : "",
                                 cfg->accounts[i].name);
                if (n < 0 || (size_t)n >= sizeof(list) - off)
                    break;
                off += (size_t)n;
            }
            config_err(c, acct_line, "account: no [account %s] section; defined accounts: %s",
                       s->account_ref, cfg->naccounts ? list : "none");
        }
    }
}

static void config_finish(struct config_ctx *c)
{
    /* [proxy] and [upstream] may be absent: their defaults still apply. */
    for (size_t i = 0; i < 2; i++)
        if (!config_find_section(c, config_sections[i].kind, NULL))
            config_add_section(c, &config_sections[i], NULL, 0);
    if (c->oom)
        return;
    /* [upstream] first: accounts inherit from it. */
    for (size_t i = 0; i < c->nsections; i++)
        if (c->sections[i].def->kind == CONFIG_UPSTREAM)
            config_apply_defaults(c, &c->sections[i]);
    for (size_t i = 0; i < c->nsections; i++)
        if (c->sections[i].def->kind != CONFIG_UPSTREAM)
            config_apply_defaults(c, &c->sections[i]);
    for (size_t i = 0; i < c->nsections; i++) {
        struct config_section *s = &c->sections[i];
        config_missing_keys(c, s);
        if (s->def->kind == CONFIG_PROXY)
            config_check_proxy(c, s);
        else if (s->def->kind == CONFIG_ACCOUNT)
            config_check_account(c, s);
        else if (s->def->kind == CONFIG_DEVICE)
            config_check_device(c, s);
    }
    if (c->cfg->ndevices == 0)
        config_err(c, 0, "no [device NAME] section: no client could ever relay");
}

/* ---- public ---- */

struct cfg_account *config_account(const struct config *cfg, const char *name)
{
    if (!cfg || !name)
        return NULL;
    for (size_t i = 0; i < cfg->naccounts; i++)
        if (strcmp(cfg->accounts[i].name, name) == 0)
            return &cfg->accounts[i];
    return NULL;
}

struct config *config_load(const char *path, char **errors)
{
    struct config_ctx c;
    struct config *ret = NULL;
    int r;

    if (errors)
        *errors = NULL;
    memset(&c, 0, sizeof(c));
    c.path = path;
    c.cur = CONFIG_NO_SECTION;
    c.cfg = calloc(1, sizeof(*c.cfg));
    if (!c.cfg || !(c.cfg->path = strdup(path))) {
        c.oom = 1;
        goto out;
    }
    c.fp = fopen(path, "re");
    if (!c.fp) {
        config_err(&c, 0, "cannot open: %s", strerror(errno));
        goto out;
    }
    r = ini_parse_stream(config_reader, &c, config_handler, &c);
    if (r == -2)
        c.oom = 1;
    else if (r > 0 && !config_has_error_at(&c, r))
        config_err(&c, r,
                   "syntax error; expected 'key = value', a [section] header or a ; "
                   "comment");
    if (!c.oom)
        config_finish(&c);
out:
    if (c.fp)
        fclose(c.fp);
    free(c.linebuf);
    for (size_t i = 0; i < c.nsections; i++)
        free(c.sections[i].account_ref);
    free(c.sections);
    if (c.oom || c.nerrors) {
        if (errors)
            *errors = config_err_text(&c);
        config_free(c.cfg);
    } else {
        ret = c.cfg;
    }
    for (size_t i = 0; i < c.nerrors; i++)
        free(c.errors[i].msg);
    free(c.errors);
    return ret;
}

static void config_free_upstream(struct cfg_upstream *u)
{
    free(u->host);
    free(u->ca_file);
}

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->nlisten; i++) {
        free(cfg->listen[i].host);
        free(cfg->listen[i].port);
    }
    free(cfg->listen);
    for (size_t i = 0; i < cfg->nlisten_tls; i++) {
        free(cfg->listen_tls[i].host);
        free(cfg->listen_tls[i].port);
    }
    free(cfg->listen_tls);
    free(cfg->hostname);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->state_dir);
    config_free_upstream(&cfg->upstream);
    for (size_t i = 0; i < cfg->naccounts; i++) {
        struct cfg_account *a = &cfg->accounts[i];
        free(a->name);
        free(a->provider);
        free(a->grant);
        free(a->tenant);
        free(a->client_id);
        free(a->client_secret_file);
        secret_free(a->client_secret);
        free(a->mailbox);
        free(a->token_url);
        free(a->scope);
        config_free_upstream(&a->upstream);
    }
    free(cfg->accounts);
    for (size_t i = 0; i < cfg->ndevices; i++) {
        struct cfg_device *d = &cfg->devices[i];
        free(d->name);
        free(d->addrs);
        free(d->username);
        free(d->password_hash);
    }
    free(cfg->devices);
    free(cfg->path);
    free(cfg);
}
