#include "proxy/config/cidr.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "common/sockaddr_text.h"

/* Longest text cidr_parse accepts: an IPv6 address with an embedded IPv4 tail and "/128". */
#define CIDR_TEXT_MAX (INET6_ADDRSTRLEN + 4)

static const unsigned char cidr_v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Zero every bit below the prefix; returns 1 if any of them was set. */
static int cidr_clear_host_bits(unsigned char *addr, size_t addrlen, unsigned prefix)
{
    int had = 0;
    for (size_t i = 0; i < addrlen; i++) {
        unsigned keep; /* network bits in this byte */
        if (prefix >= (i + 1) * 8)
            keep = 8;
        else if (prefix <= i * 8)
            keep = 0;
        else
            keep = prefix - (unsigned)(i * 8);
        unsigned char mask = (unsigned char)(keep == 0 ? 0 : (0xffu << (8 - keep)) & 0xffu);
        if (addr[i] & (unsigned char)~mask)
            had = 1;
        addr[i] &= mask;
    }
    return had;
}

/* 1 if the first prefix bits of a and b are equal. */
static int cidr_prefix_equal(const unsigned char *a, const unsigned char *b, unsigned prefix)
{
    unsigned full = prefix / 8, rest = prefix % 8;
    if (full && memcmp(a, b, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    unsigned char mask = (unsigned char)((0xffu << (8 - rest)) & 0xffu);
    return (a[full] & mask) == (b[full] & mask);
}

/* Prefix length: decimal digits only (no sign, no blanks), at most max. */
static int cidr_parse_prefix(const char *s, unsigned max, unsigned *out)
{
    unsigned v = 0;
    if (!*s || strlen(s) > 3)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (unsigned)(*s - '0');
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

int cidr_parse(const char *text, struct cidr *out, char *err, size_t errlen)
{
    char buf[CIDR_TEXT_MAX + 1];
    struct cidr c;
    const char *start = text, *end;
    size_t len;

    while (*start && isspace((unsigned char)*start))
        start++;
    end = start + strlen(start);
    while (end > start && isspace((unsigned char)end[-1]))
        end--;
    len = (size_t)(end - start);
    if (len == 0) {
        snprintf(err, errlen, "empty address; expected an IPv4 or IPv6 address or CIDR block");
        return -1;
    }
    if (len > CIDR_TEXT_MAX) {
        snprintf(err, errlen,
                 "invalid address '%.*s...'; expected an IPv4 or IPv6 address or CIDR block "
                 "such as 10.20.4.0/24 or 2001:db8::/32",
                 (int)CIDR_TEXT_MAX, start);
        return -1;
    }
    memcpy(buf, start, len);
    buf[len] = '\0';

    memset(&c, 0, sizeof(c));
    char *slash = strchr(buf, '/');
    if (slash)
        *slash = '\0';
    if (inet_pton(AF_INET, buf, c.addr) == 1) {
        c.family = AF_INET;
        c.prefix = 32;
    } else if (inet_pton(AF_INET6, buf, c.addr) == 1) {
        c.family = AF_INET6;
        c.prefix = 128;
    } else {
        if (slash)
            *slash = '/';
        snprintf(err, errlen,
                 "invalid address '%s'; expected an IPv4 or IPv6 address or CIDR block such as "
                 "10.20.4.0/24 or 2001:db8::/32",
                 buf);
        return -1;
    }
    if (slash) {
        unsigned max = c.family == AF_INET ? 32 : 128;
        if (cidr_parse_prefix(slash + 1, max, &c.prefix) != 0) {
            snprintf(err, errlen, "invalid prefix length '/%s' in '%s/%s'; valid: /0../%u for %s",
                     slash + 1, buf, slash + 1, max, c.family == AF_INET ? "IPv4" : "IPv6");
            return -1;
        }
    }
    if (cidr_clear_host_bits(c.addr, c.family == AF_INET ? 4 : 16, c.prefix)) {
        char net[64];
        if (slash)
            *slash = '/';
        snprintf(err, errlen, "'%s' has host bits set; did you mean %s?", buf,
                 cidr_str(&c, net, sizeof(net)));
        return -1;
    }
    *out = c;
    return 0;
}

int cidr_match(const struct cidr *c, const struct sockaddr *sa)
{
    unsigned char v4[4], v6[16];
    int have_v4 = 0;

    if (!c || !sa)
        return 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;
        memcpy(v4, &sin->sin_addr, 4);
        have_v4 = 1;
        /* A v6 block written as ::ffff:a.b.c.d/nn still covers a plain IPv4 client. */
        memcpy(v6, cidr_v4mapped_prefix, 12);
        memcpy(v6 + 12, v4, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;
        memcpy(v6, &sin6->sin6_addr, 16);
        /* A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d. */
        if (memcmp(v6, cidr_v4mapped_prefix, 12) == 0) {
            memcpy(v4, v6 + 12, 4);
            have_v4 = 1;
        }
    } else {
        return 0;
    }
    if (c->family == AF_INET)
        return have_v4 && cidr_prefix_equal(c->addr, v4, c->prefix);
    if (c->family == AF_INET6)
        return cidr_prefix_equal(c->addr, v6, c->prefix);
    return 0;
}

const char *cidr_str(const struct cidr *c, char *buf, size_t len)
{
    char addr[SOCKADDR_TEXT_MAX];
    if (!sockaddr_text_bytes(c->family, c->addr, addr, sizeof(addr)))
        snprintf(addr, sizeof(addr), "?");
    snprintf(buf, len, "%s/%u", addr, c->prefix);
    return buf;
}
