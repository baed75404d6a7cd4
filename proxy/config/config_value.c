/* One value at a time: the setters of the key tables parse a value, say what would be valid
 * when it is not, and store it in the section's object. Nothing here looks at other keys. */
#include "proxy/config/config_int.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The enum fields are stored through an int by the choice setter. */
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum log_level is not int-sized");
_Static_assert(sizeof(enum bare_lf_policy) == sizeof(int), "enum bare_lf_policy is not int-sized");
_Static_assert(sizeof(enum sender_rewrite) == sizeof(int), "enum sender_rewrite is not int-sized");
_Static_assert(sizeof(enum upstream_auth) == sizeof(int), "enum upstream_auth is not int-sized");
_Static_assert(sizeof(enum upstream_auth_policy) == sizeof(int), "enum upstream_auth_policy");
_Static_assert(sizeof(enum upstream_tls) == sizeof(int), "enum upstream_tls is not int-sized");
_Static_assert(sizeof(enum ms_cloud) == sizeof(int), "enum ms_cloud is not int-sized");

/* ---- storing ---- */

void *config_value_field(struct config_ctx *c, struct config_section *s, size_t offset)
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

void config_value_store(struct config_ctx *c, struct config_section *s, const struct config_key *k,
                        const char *value)
{
    char **field = config_value_field(c, s, k->offset);
    free(*field);
    *field = config_strdup(c, value);
}

/* ---- numbers ---- */

/* A unit suffix: any of suffixes (the first is how bounds are written) multiplies by mult. The
 * last unit of a list has mult 1; "" there means a bare number. */
struct config_value_unit {
    const char *suffixes;
    uint64_t mult;
};

struct config_value_number {
    const char *noun;                      /* "invalid NOUN '...'" */
    const char *expect;                    /* what is valid, written before the range */
    const struct config_value_unit *units; /* largest first, ending with mult 1 */
};

static const struct config_value_unit config_value_plain_units[] = {{"", 1}};
static const struct config_value_unit config_value_size_units[] = {
    {"Gg", CONFIG_GIB}, {"Mm", CONFIG_MIB}, {"Kk", CONFIG_KIB}, {"", 1}};
static const struct config_value_unit config_value_duration_units[] = {
    {"d", 86400}, {"h", 3600}, {"m", 60}, {"s", 1}};

static const struct config_value_number config_value_integer = {"number", "an integer ",
                                                                config_value_plain_units};
static const struct config_value_number config_value_port = {"port", "an integer ",
                                                             config_value_plain_units};
static const struct config_value_number config_value_size = {
    "size", "a number with an optional K, M or G suffix (1K = 1024), ", config_value_size_units};
static const struct config_value_number config_value_duration = {
    "duration", "seconds, or a number with an s, m, h or d suffix, ", config_value_duration_units};

/* Decimal digits only: no sign, no blanks, no overflow. */
static int config_value_parse_u64(const char *s, const char **end, uint64_t *out)
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

/* v in the largest unit that divides it: "35M", "5m", "30s", "1000". */
static const char *config_value_fmt(const struct config_value_unit *u, uint64_t v, char *buf,
                                    size_t len)
{
    for (;; u++) {
        if (u->mult == 1 || (v >= u->mult && v % u->mult == 0)) {
            snprintf(buf, len, "%" PRIu64 "%.1s", v / u->mult, u->suffixes);
            return buf;
        }
    }
}

/* A number with one of kind's unit suffixes, in k->min..k->max. 0 ok; -1 reported. */
static int config_value_number(struct config_ctx *c, const struct config_key *k, const char *value,
                               const struct config_value_number *kind, uint64_t *out)
{
    const struct config_value_unit *u = kind->units;
    char lo[32], hi[32];
    const char *end;
    uint64_t v;
    int ok = config_value_parse_u64(value, &end, &v) == 0;
    if (ok) {
        /* Bare numbers use the last unit (mult 1); a suffix must end the value. */
        while (u->mult != 1 && !(*end && strchr(u->suffixes, *end)))
            u++;
        if (*end && (!strchr(u->suffixes, *end) || end[1]))
            ok = 0;
    }
    config_value_fmt(kind->units, k->min, lo, sizeof(lo));
    config_value_fmt(kind->units, k->max, hi, sizeof(hi));
    if (!ok) {
        config_err(c, c->lineno, "%s: invalid %s '%s'; expected %s%s..%s", k->name, kind->noun,
                   value, kind->expect, lo, hi);
        return -1;
    }
    if (v > UINT64_MAX / u->mult || v * u->mult < k->min || v * u->mult > k->max) {
        config_err(c, c->lineno, "%s: %s is out of range; valid: %s..%s", k->name, value, lo, hi);
        return -1;
    }
    *out = v * u->mult;
    return 0;
}

void config_value_set_uint(struct config_ctx *c, struct config_section *s,
                           const struct config_key *k, const char *value)
{
    uint64_t v;
    if (config_value_number(c, k, value, &config_value_integer, &v) == 0)
        *(unsigned *)config_value_field(c, s, k->offset) = (unsigned)v;
}

/* The tables give ports k->min = 1 and k->max = 65535. */
void config_value_set_port(struct config_ctx *c, struct config_section *s,
                           const struct config_key *k, const char *value)
{
    uint64_t v;
    if (config_value_number(c, k, value, &config_value_port, &v) == 0)
        *(uint16_t *)config_value_field(c, s, k->offset) = (uint16_t)v;
}

/* "35M": a number with an optional K, M or G suffix, binary multiples. */
void config_value_set_size(struct config_ctx *c, struct config_section *s,
                           const struct config_key *k, const char *value)
{
    uint64_t v;
    if (config_value_number(c, k, value, &config_value_size, &v) == 0)
        *(uint64_t *)config_value_field(c, s, k->offset) = v;
}

/* "30", "30s", "5m", "1h", "365d" -> seconds. */
void config_value_set_duration(struct config_ctx *c, struct config_section *s,
                               const struct config_key *k, const char *value)
{
    uint64_t v;
    if (config_value_number(c, k, value, &config_value_duration, &v) == 0)
        *(unsigned *)config_value_field(c, s, k->offset) = (unsigned)v;
}

/* ---- choices ---- */

const char *config_value_choices(const struct config_choice *ch, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (; ch->name; ch++)
        if (!config_join(buf, len, &off, ch->name))
            break;
    return buf;
}

static const struct config_choice *
config_value_find_choice(struct config_ctx *c, const struct config_key *k, const char *value)
{
    char list[256];
    for (const struct config_choice *ch = k->choices; ch->name; ch++)
        if (strcmp(ch->name, value) == 0)
            return ch;
    config_err(c, c->lineno, "%s: invalid value '%s'; valid: %s", k->name, value,
               config_value_choices(k->choices, list, sizeof(list)));
    return NULL;
}

/* One of a fixed list, stored as its int (enum) value. */
void config_value_set_choice(struct config_ctx *c, struct config_section *s,
                             const struct config_key *k, const char *value)
{
    const struct config_choice *ch = config_value_find_choice(c, k, value);
    if (ch)
        memcpy(config_value_field(c, s, k->offset), &ch->value, sizeof(int));
}

/* One of a fixed list, stored as the string. */
void config_value_set_choice_str(struct config_ctx *c, struct config_section *s,
                                 const struct config_key *k, const char *value)
{
    if (config_value_find_choice(c, k, value))
        config_value_store(c, s, k, value);
}

/* ---- text ---- */

/* Printable ASCII; spaces allowed only if spaces is set. */
static int config_value_is_plain(const char *s, int spaces)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch < 0x20 || ch >= 0x7f || (ch == ' ' && !spaces))
            return 0;
    }
    return 1;
}

/* Printable, no blanks: identifiers such as client_id and username. */
void config_value_set_word(struct config_ctx *c, struct config_section *s,
                           const struct config_key *k, const char *value)
{
    if (!config_value_is_plain(value, 0)) {
        config_err(c, c->lineno, "%s: only printable characters without blanks are allowed",
                   k->name);
        return;
    }
    config_value_store(c, s, k, value);
}

/* Printable text, blanks allowed: scope. */
void config_value_set_text(struct config_ctx *c, struct config_section *s,
                           const struct config_key *k, const char *value)
{
    if (!config_value_is_plain(value, 1)) {
        config_err(c, c->lineno, "%s: only printable characters are allowed", k->name);
        return;
    }
    config_value_store(c, s, k, value);
}

void config_value_set_abs_path(struct config_ctx *c, struct config_section *s,
                               const struct config_key *k, const char *value)
{
    if (value[0] != '/' || !config_value_is_plain(value, 1)) {
        config_err(c, c->lineno, "%s: '%s' is not an absolute path; expected /like/this", k->name,
                   value);
        return;
    }
    config_value_store(c, s, k, value);
}

/* ---- names and addresses ---- */

/* A DNS name: labels of letters, digits and '-', not starting or ending with '-'. */
static int config_value_is_dns_name(const char *s)
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

static int config_value_is_ip(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* 127.0.0.0/8, ::1 or localhost. */
static int config_value_is_loopback_host(const char *host)
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

void config_value_set_dns_name(struct config_ctx *c, struct config_section *s,
                               const struct config_key *k, const char *value)
{
    if (!config_value_is_dns_name(value)) {
        config_err(c, c->lineno,
                   "%s: invalid name '%s'; expected %s (letters, digits, '-' and '.')", k->name,
                   value, k->what);
        return;
    }
    config_value_store(c, s, k, value);
}

/* A DNS name or an IP literal; "[v6]" loses its brackets. */
void config_value_set_host(struct config_ctx *c, struct config_section *s,
                           const struct config_key *k, const char *value)
{
    char buf[INET6_ADDRSTRLEN + 2];
    size_t len = strlen(value);
    if (len > 2 && len < sizeof(buf) && value[0] == '[' && value[len - 1] == ']') {
        unsigned char a[16];
        memcpy(buf, value + 1, len - 2);
        buf[len - 2] = '\0';
        if (inet_pton(AF_INET6, buf, a) == 1) {
            config_value_store(c, s, k, buf);
            return;
        }
    } else if (config_value_is_dns_name(value) || config_value_is_ip(value)) {
        config_value_store(c, s, k, value);
        return;
    }
    config_err(c, c->lineno, "%s: invalid host '%s'; expected a DNS name or an IP address", k->name,
               value);
}

void config_value_set_mailbox(struct config_ctx *c, struct config_section *s,
                              const struct config_key *k, const char *value)
{
    /* RFC 5321 dot-string local part: atext and dots. */
    static const char atext[] = "!#$%&'*+-/=?^_`{|}~.";
    const char *at = strrchr(value, '@');
    int ok = at && at != value && config_value_is_dns_name(at + 1);
    for (const char *p = value; ok && p < at; p++)
        if (!isalnum((unsigned char)*p) && !strchr(atext, *p))
            ok = 0;
    if (!ok) {
        config_err(c, c->lineno, "%s: '%s' is not a mailbox address; expected local@domain",
                   k->name, value);
        return;
    }
    config_value_store(c, s, k, value);
}

/* https://HOST[:PORT][/PATH], or http:// to a loopback host only (a local IdP in tests). 0 ok;
 * -2 http:// elsewhere; -1 not such a URL. Public (config.h): discovered URLs pass it too. */
int config_value_check_url(const char *url)
{
    char host[256];
    const char *p, *auth_end, *port = NULL;
    size_t hostlen;
    int insecure = 0;

    if (!config_value_is_plain(url, 0))
        return -1;
    if (strncasecmp(url, "https://", 8) == 0) {
        p = url + 8;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        p = url + 7;
        insecure = 1;
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
        if (!config_value_is_dns_name(host) && !config_value_is_ip(host))
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
    if (insecure && !config_value_is_loopback_host(host))
        return -2;
    return 0;
}

void config_value_set_url(struct config_ctx *c, struct config_section *s,
                          const struct config_key *k, const char *value)
{
    int r = config_value_check_url(value);
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
    config_value_store(c, s, k, value);
}

/* http://HOST:PORT with an optional trailing '/': an HTTP forward proxy (https:// targets go
 * through it with CONNECT). No user:password: the config file is world-readable. */
void config_value_set_proxy_url(struct config_ctx *c, struct config_section *s,
                                const struct config_key *k, const char *value)
{
    char host[256];
    const char *p = value + 7, *end, *colon = NULL;
    size_t len = strlen(value), hostlen;
    int ok = 0;

    if (len > 7 && strncasecmp(value, "http://", 7) == 0 && config_value_is_plain(value, 0)) {
        if (strchr(p, '@')) {
            config_err(c, c->lineno,
                       "%s: a user name or password in the proxy URL is not supported (the config "
                       "file is world-readable); use a proxy that admits this host by address",
                       k->name);
            return;
        }
        end = value + len;
        if (end > p && end[-1] == '/')
            end--;
        if (*p == '[') {
            const char *close = memchr(p, ']', (size_t)(end - p));
            unsigned char a[16];
            if (close && close[1] == ':' && (size_t)(close - p - 1) < sizeof(host)) {
                hostlen = (size_t)(close - p - 1);
                memcpy(host, p + 1, hostlen);
                host[hostlen] = '\0';
                ok = inet_pton(AF_INET6, host, a) == 1;
                colon = close + 1;
            }
        } else {
            colon = memchr(p, ':', (size_t)(end - p));
            hostlen = colon ? (size_t)(colon - p) : 0;
            if (colon && hostlen > 0 && hostlen < sizeof(host)) {
                memcpy(host, p, hostlen);
                host[hostlen] = '\0';
                ok = config_value_is_dns_name(host) || config_value_is_ip(host);
            }
        }
        if (ok) {
            unsigned v = 0;
            const char *q = colon + 1;
            ok = q < end && end - q <= 5;
            for (; ok && q < end; q++) {
                ok = *q >= '0' && *q <= '9';
                v = v * 10 + (unsigned)(*q - '0');
            }
            ok = ok && v >= 1 && v <= 65535;
        }
    }
    if (!ok) {
        config_err(c, c->lineno, "%s: '%s' is not a proxy URL; expected http://HOST:PORT", k->name,
                   value);
        return;
    }
    config_value_store(c, s, k, value);
}

/* [device] account = NAME: kept with the section until every account is known. */
void config_value_set_account_ref(struct config_ctx *c, struct config_section *s,
                                  const struct config_key *k, const char *value)
{
    (void)k;
    free(s->account_ref);
    s->account_ref = config_strdup(c, value);
}

/* ---- lists: listen addresses, device addresses ---- */

/* "0.0.0.0:2525", "[::1]:2525", "*:2525". 0 ok; -1 with the reason. */
static int config_value_parse_endpoint(const char *v, char **host, char **port, const char **why)
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
    if (config_value_parse_u64(ps, &end, &pv) != 0 || *end || pv < 1 || pv > 65535) {
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

static void config_value_add_endpoint(struct config_ctx *c, const struct config_key *k,
                                      const char *value, struct cfg_endpoint **list, size_t *n)
{
    const char *why = NULL;
    struct cfg_endpoint ep = {.line = c->lineno}, *grown;
    char addr[128];
    size_t alen = strcspn(value, " \t");
    const char *opt = value + alen;
    opt += strspn(opt, " \t");
    if (*opt) {
        /* "ADDR proxy_protocol": the one flag a listener takes */
        size_t olen = strcspn(opt, " \t");
        if (olen != strlen("proxy_protocol") || strncmp(opt, "proxy_protocol", olen) != 0 ||
            opt[olen + strspn(opt + olen, " \t")]) {
            config_err(c, c->lineno,
                       "%s: unknown option after the address in '%s'; the only one is "
                       "proxy_protocol",
                       k->name, value);
            return;
        }
        ep.proxy_protocol = 1;
    }
    if (alen >= sizeof(addr)) {
        config_err(c, c->lineno,
                   "%s: invalid address '%.40s...' (too long); expected IPv4:port, [IPv6]:port "
                   "or *:port",
                   k->name, value);
        return;
    }
    memcpy(addr, value, alen);
    addr[alen] = '\0';
    if (config_value_parse_endpoint(addr, &ep.host, &ep.port, &why) != 0) {
        config_err(c, c->lineno,
                   "%s: invalid address '%s' (%s); expected IPv4:port, [IPv6]:port or *:port",
                   k->name, addr, why);
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

void config_value_set_listen(struct config_ctx *c, struct config_section *s,
                             const struct config_key *k, const char *value)
{
    (void)s;
    config_value_add_endpoint(c, k, value, &c->cfg->listen, &c->cfg->nlisten);
}

void config_value_set_listen_tls(struct config_ctx *c, struct config_section *s,
                                 const struct config_key *k, const char *value)
{
    (void)s;
    config_value_add_endpoint(c, k, value, &c->cfg->listen_tls, &c->cfg->nlisten_tls);
}

/* One address, not a list (metrics_listen). */
void config_value_set_endpoint(struct config_ctx *c, struct config_section *s,
                               const struct config_key *k, const char *value)
{
    const char *why = NULL;
    struct cfg_endpoint *ep = config_value_field(c, s, k->offset), n = {.line = c->lineno};
    if (config_value_parse_endpoint(value, &n.host, &n.port, &why) != 0) {
        config_err(c, c->lineno, "%s: invalid address '%s' (%s); expected %s", k->name, value, why,
                   k->what);
        return;
    }
    free(ep->host);
    free(ep->port);
    *ep = n;
}

/* "10.20.3.15, 10.20.4.0/24" appended to *list: every entry is checked and reported on its
 * own. */
static void config_value_add_cidrs(struct config_ctx *c, const struct config_key *k,
                                   const char *value, struct cidr **list, size_t *n)
{
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
                grown = realloc(*list, (*n + 1) * sizeof(**list));
                if (!grown) {
                    c->oom = 1;
                    return;
                }
                *list = grown;
                (*list)[(*n)++] = cidr;
            }
        }
        if (p[len] != ',')
            break;
        p += len + 1;
    }
}

void config_value_set_addresses(struct config_ctx *c, struct config_section *s,
                                const struct config_key *k, const char *value)
{
    struct cfg_device *d = &c->cfg->devices[s->index];
    config_value_add_cidrs(c, k, value, &d->addrs, &d->naddrs);
}

/* [proxy] trusted_proxies: the balancers allowed to send a PROXY protocol header (named in
 * config_keys.c's table, which declares it too). */
CONFIG_SETTER(config_value_set_trusted_proxies);
void config_value_set_trusted_proxies(struct config_ctx *c, struct config_section *s,
                                      const struct config_key *k, const char *value)
{
    (void)s;
    config_value_add_cidrs(c, k, value, &c->cfg->trusted_proxies, &c->cfg->ntrusted_proxies);
}

/* "@upenn.edu, @.upenn.edu, alice@partner.org, *" (rcpt_policy.h): the first bad entry is
 * reported with what would be valid. */
void config_value_set_recipients(struct config_ctx *c, struct config_section *s,
                                 const struct config_key *k, const char *value)
{
    struct rcpt_policy *field = config_value_field(c, s, k->offset), n;
    char err[512];
    int rc = rcpt_policy_parse(value, &n, err, sizeof(err));
    if (rc == -2) {
        c->oom = 1;
        return;
    }
    if (rc < 0) {
        config_err(c, c->lineno, "%s: %s", k->name, err);
        return;
    }
    rcpt_policy_clear(field);
    *field = n;
}
