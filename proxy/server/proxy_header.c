/* The PROXY protocol header, v1 and v2 (haproxy's doc/proxy-protocol.txt). Every check looks
 * only at bytes at fixed places before it, in order, so a prefix of a header gives the whole's
 * answer or 0, never another one. */
#include "proxy/server/proxy_header.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static const unsigned char v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                         0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static int fail(const char **err, const char *why)
{
    *err = why;
    return -1;
}

static void set_in4(struct sockaddr_storage *ss, const unsigned char *addr, unsigned port)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    memcpy(&sin.sin_addr, addr, 4);
    sin.sin_port = htons((unsigned short)port);
    memset(ss, 0, sizeof(*ss));
    memcpy(ss, &sin, sizeof(sin));
}

static void set_in6(struct sockaddr_storage *ss, const unsigned char *addr, unsigned port)
{
    struct sockaddr_in6 sin6;
    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    memcpy(&sin6.sin6_addr, addr, 16);
    sin6.sin6_port = htons((unsigned short)port);
    memset(ss, 0, sizeof(*ss));
    memcpy(ss, &sin6, sizeof(sin6));
}

/* ---- v1: "PROXY TCP4 192.0.2.1 192.0.2.2 56324 2525\r\n" ---- */

/* The next space-separated word of line[*pos..end) into w (at most wlen-1 bytes). 0 ok. */
static int v1_word(const char *line, size_t end, size_t *pos, char *w, size_t wlen)
{
    size_t start = *pos, n;
    while (*pos < end && line[*pos] != ' ')
        (*pos)++;
    n = *pos - start;
    if (n == 0 || n >= wlen)
        return -1;
    memcpy(w, line + start, n);
    w[n] = '\0';
    return 0;
}

/* Decimal 0..65535 without a leading zero. 0 ok. */
static int v1_port(const char *w, unsigned *out)
{
    unsigned v = 0;
    size_t n = strlen(w);
    if (n < 1 || n > 5 || (w[0] == '0' && n > 1))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (w[i] < '0' || w[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(w[i] - '0');
    }
    if (v > 65535)
        return -1;
    *out = v;
    return 0;
}

static int parse_v1(const unsigned char *buf, size_t len, struct proxy_header *out,
                    const char **err)
{
    static const char magic[] = "PROXY ";
    size_t m = len < 6 ? len : 6;
    if (memcmp(buf, magic, m) != 0)
        return fail(err, "not a PROXY protocol header");
    size_t scan = len < PROXY_HEADER_V1_MAX ? len : PROXY_HEADER_V1_MAX;
    const unsigned char *lf = memchr(buf, '\n', scan);
    if (!lf)
        return len >= PROXY_HEADER_V1_MAX ? fail(err, "v1 header too long (no CRLF in 107 bytes)")
                                          : 0;
    size_t eol = (size_t)(lf - buf); /* index of the LF */
    if (eol < 7 || buf[eol - 1] != '\r')
        return fail(err, "v1 header does not end in CRLF");
    const char *line = (const char *)buf;
    size_t end = eol - 1, pos = 6;
    char proto[8], a[2][48], p[2][8];
    if (v1_word(line, end, &pos, proto, sizeof(proto)) != 0)
        return fail(err, "v1 header: bad protocol");
    memset(out, 0, sizeof(*out));
    out->version = 1;
    out->len = eol + 1;
    if (strcmp(proto, "UNKNOWN") == 0)
        return 1; /* the rest of the line is to be ignored */
    int fam = strcmp(proto, "TCP4") == 0 ? AF_INET : strcmp(proto, "TCP6") == 0 ? AF_INET6 : 0;
    if (!fam)
        return fail(err, "v1 header: protocol is not TCP4, TCP6 or UNKNOWN");
    for (int i = 0; i < 4; i++) {
        if (pos >= end || line[pos] != ' ')
            return fail(err, "v1 header: expected four fields after the protocol");
        pos++;
        char *w = i < 2 ? a[i] : p[i - 2];
        size_t wl = i < 2 ? sizeof(a[i]) : sizeof(p[i - 2]);
        if (v1_word(line, end, &pos, w, wl) != 0)
            return fail(err, "v1 header: empty or overlong field");
    }
    if (pos != end)
        return fail(err, "v1 header: extra data after the ports");
    unsigned char sa[16], da[16];
    unsigned sp, dp;
    if (inet_pton(fam, a[0], sa) != 1 || inet_pton(fam, a[1], da) != 1)
        return fail(err,
                    fam == AF_INET ? "v1 header: bad IPv4 address" : "v1 header: bad IPv6 address");
    if (v1_port(p[0], &sp) != 0 || v1_port(p[1], &dp) != 0)
        return fail(err, "v1 header: bad port");
    out->has_addr = 1;
    if (fam == AF_INET) {
        set_in4(&out->src, sa, sp);
        set_in4(&out->dst, da, dp);
    } else {
        set_in6(&out->src, sa, sp);
        set_in6(&out->dst, da, dp);
    }
    return 1;
}

/* ---- v2: 12-byte signature, ver/cmd, family/protocol, length, addresses, TLVs ---- */

static int parse_v2(const unsigned char *buf, size_t len, struct proxy_header *out,
                    const char **err)
{
    size_t m = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
    if (memcmp(buf, v2_sig, m) != 0)
        return fail(err, "not a PROXY protocol header (bad v2 signature)");
    if (len < 13)
        return 0;
    unsigned ver = buf[12] >> 4, cmd = buf[12] & 0x0F;
    if (ver != 2)
        return fail(err, "v2 header: unsupported version");
    if (cmd > 1)
        return fail(err, "v2 header: unknown command");
    if (len < 14)
        return 0;
    unsigned fam = buf[13] >> 4, proto = buf[13] & 0x0F;
    if (fam > 3 || proto > 2)
        return fail(err, "v2 header: unknown address family or protocol");
    if (len < 16)
        return 0;
    size_t body = ((size_t)buf[14] << 8) | buf[15];
    if (body > PROXY_HEADER_V2_BODY_MAX)
        return fail(err, "v2 header too long");
    size_t need = 0; /* the address block */
    int use = 0;
    if (cmd == 1 && proto == 1 && fam == 1) {
        need = 12;
        use = AF_INET;
    } else if (cmd == 1 && proto == 1 && fam == 2) {
        need = 36;
        use = AF_INET6;
    } else if (cmd == 1 && fam != 0) {
        return fail(err, "v2 header: only TCP over IPv4 or IPv6 is supported");
    }
    if (body < need)
        return fail(err, "v2 header: address block too short");
    if (len < 16 + body)
        return 0;
    /* TLVs after the address block (LOCAL and UNSPEC: the whole body is skipped) */
    if (use) {
        size_t pos = 16 + need, end = 16 + body;
        while (pos < end) {
            if (end - pos < 3)
                return fail(err, "v2 header: truncated TLV");
            size_t tl = ((size_t)buf[pos + 1] << 8) | buf[pos + 2];
            if (tl > end - pos - 3)
                return fail(err, "v2 header: TLV longer than the header");
            pos += 3 + tl;
        }
    }
    memset(out, 0, sizeof(*out));
    out->version = 2;
    out->len = 16 + body;
    out->local = cmd == 0;
    if (use == AF_INET) {
        const unsigned char *b = buf + 16;
        set_in4(&out->src, b, ((unsigned)b[8] << 8) | b[9]);
        set_in4(&out->dst, b + 4, ((unsigned)b[10] << 8) | b[11]);
        out->has_addr = 1;
    } else if (use == AF_INET6) {
        const unsigned char *b = buf + 16;
        set_in6(&out->src, b, ((unsigned)b[32] << 8) | b[33]);
        set_in6(&out->dst, b + 16, ((unsigned)b[34] << 8) | b[35]);
        out->has_addr = 1;
    }
    return 1;
}

int proxy_header_parse(const unsigned char *buf, size_t len, struct proxy_header *out,
                       const char **err)
{
    *err = NULL;
    if (len == 0)
        return 0;
    if (buf[0] == 'P')
        return parse_v1(buf, len, out, err);
    if (buf[0] == 0x0D)
        return parse_v2(buf, len, out, err);
    return fail(err, "not a PROXY protocol header");
}
