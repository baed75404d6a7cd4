/* SASL encoders and decoders: XOAUTH2, OAUTHBEARER, PLAIN, LOGIN. See sasl.h.
 *
 * Every buffer that held a credential is wiped with OPENSSL_cleanse over its full length before
 * it is freed: decoded PLAIN responses contain NULs, so secret_free (which wipes up to the first
 * NUL) is only used for strings that cannot hold one. */
#include "proxy/smtp/sasl.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "common/secret.h"

/* Far above any SASL exchange (AUTH lines are at most 12288 bytes), far below INT_MAX, which
 * is what EVP_EncodeBlock/EVP_DecodeBlock can take. */
#define SASL_B64_MAX (16u * 1024 * 1024)

static const char sasl_b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Wipe and free a buffer of known length (it may contain NULs). */
static void sasl_wipe_free(char *buf, size_t len)
{
    if (!buf)
        return;
    OPENSSL_cleanse(buf, len);
    free(buf);
}

static int sasl_b64_char(char c)
{
    return c != '\0' && strchr(sasl_b64_alphabet, c) != NULL;
}

/* RFC 4648 section 4 without whitespace: groups of 4, '=' only as 1 or 2 final pad bytes.
 * EVP_DecodeBlock itself skips leading/trailing blanks and would take more, hence this check.
 * Returns the number of pad bytes, or -1. */
static int sasl_b64_check(const char *in, size_t inlen)
{
    size_t i, pad = 0;
    if (inlen % 4 != 0 || inlen > SASL_B64_MAX)
        return -1;
    if (inlen > 0 && in[inlen - 1] == '=')
        pad = (inlen > 1 && in[inlen - 2] == '=') ? 2 : 1;
    for (i = 0; i < inlen - pad; i++)
        if (!sasl_b64_char(in[i]))
            return -1;
    return (int)pad;
}

long sasl_b64_decode(const char *in, size_t inlen, char **out)
{
    long ret = -1;
    char *buf = NULL;
    size_t cap = 0;
    int pad, n;

    /* RFC 4954: a lone "=" is an empty initial response. */
    if (inlen == 1 && in[0] == '=')
        inlen = 0;
    pad = sasl_b64_check(in, inlen);
    if (pad < 0)
        goto out;
    cap = inlen / 4 * 3 + 1;
    buf = malloc(cap);
    if (!buf)
        goto out;
    n = 0;
    if (inlen > 0) {
        n = EVP_DecodeBlock((unsigned char *)buf, (const unsigned char *)in, (int)inlen);
        /* EVP_DecodeBlock returns the padded length: 3 per group, pad bytes included. */
        if (n < 0 || (size_t)n != inlen / 4 * 3)
            goto out;
        n -= pad;
    }
    buf[n] = '\0';
    *out = buf;
    buf = NULL;
    ret = n;
out:
    sasl_wipe_free(buf, cap);
    return ret;
}

char *sasl_b64_encode(const char *in, size_t inlen)
{
    char *out;
    if (inlen > SASL_B64_MAX)
        return NULL;
    out = malloc((inlen + 2) / 3 * 4 + 1);
    if (!out)
        return NULL;
    /* EVP_EncodeBlock writes the NUL terminator itself, also for inlen 0. */
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)in, (int)inlen);
    return out;
}

/* Non-empty and every byte in 0x21..0x7e: what may go into an XOAUTH2 field or a token. */
static int sasl_printable(const char *s)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++)
        if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e)
            return 0;
    return 1;
}

/* Format into a temporary buffer, base64 it, wipe the temporary. NULL on failure. */
static char *sasl_encode_fmt(size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static char *sasl_encode_fmt(size_t cap, const char *fmt, ...)
{
    char *plain = malloc(cap);
    char *out = NULL;
    va_list ap;
    int n;

    if (!plain)
        return NULL;
    va_start(ap, fmt);
    n = vsnprintf(plain, cap, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < cap)
        out = sasl_b64_encode(plain, (size_t)n);
    sasl_wipe_free(plain, cap);
    return out;
}

char *sasl_xoauth2_encode(const char *user, const char *token)
{
    if (!sasl_printable(user) || !sasl_printable(token))
        return NULL;
    return sasl_encode_fmt(strlen(user) + strlen(token) + 32, "user=%s\001auth=Bearer %s\001\001",
                           user, token);
}

/* RFC 5801 saslname: ',' and '=' escaped. NULL on failure. */
static char *sasl_gs2_escape(const char *user)
{
    size_t i, n = 0;
    char *out = malloc(strlen(user) * 3 + 1);
    if (!out)
        return NULL;
    for (i = 0; user[i]; i++) {
        if (user[i] == ',' || user[i] == '=') {
            memcpy(out + n, user[i] == ',' ? "=2C" : "=3D", 3);
            n += 3;
        } else {
            out[n++] = user[i];
        }
    }
    out[n] = '\0';
    return out;
}

char *sasl_oauthbearer_encode(const char *user, const char *host, unsigned port, const char *token)
{
    char *euser = NULL, *out = NULL;
    char hostpart[300] = "", portpart[24] = "";

    if (!sasl_printable(user) || !sasl_printable(token))
        goto out;
    if (host && *host) {
        int n = snprintf(hostpart, sizeof(hostpart), "\001host=%s", host);
        if (!sasl_printable(host) || n < 0 || (size_t)n >= sizeof(hostpart))
            goto out;
    }
    if (port)
        snprintf(portpart, sizeof(portpart), "\001port=%u", port);
    euser = sasl_gs2_escape(user);
    if (!euser)
        goto out;
    out =
        sasl_encode_fmt(strlen(euser) + strlen(hostpart) + strlen(portpart) + strlen(token) + 32,
                        "n,a=%s,%s%s\001auth=Bearer %s\001\001", euser, hostpart, portpart, token);
out:
    secret_free(euser);
    return out;
}

int sasl_xoauth2_decode(const char *b64, size_t len, char **user, char **token)
{
    static const char auth[] = "\001auth=Bearer ";
    char *buf = NULL, *u, *t, *end, *uout = NULL, *tout = NULL;
    long n;
    int ret = -1;

    n = sasl_b64_decode(b64, len, &buf);
    if (n < 0)
        goto out;
    /* "user=" U ^A "auth=Bearer " T ^A ^A, and no NUL anywhere. */
    if ((size_t)n != strlen(buf) || strncmp(buf, "user=", 5) != 0)
        goto out;
    u = buf + 5;
    t = strchr(u, '\001');
    if (!t || t == u || strncmp(t, auth, sizeof(auth) - 1) != 0)
        goto out;
    *t = '\0';
    t += sizeof(auth) - 1;
    end = strchr(t, '\001');
    if (!end || end == t || strcmp(end, "\001\001") != 0)
        goto out;
    *end = '\0';
    if (!sasl_printable(t))
        goto out;
    uout = secret_dup(u);
    tout = secret_dup(t);
    if (!uout || !tout)
        goto out;
    *user = uout;
    *token = tout;
    uout = tout = NULL;
    ret = 0;
out:
    secret_free(uout);
    secret_free(tout);
    if (buf)
        sasl_wipe_free(buf, (size_t)n + 1);
    return ret;
}

int sasl_plain_decode(const char *b64, size_t len, char **user, char **pass)
{
    char *buf = NULL, *authz, *authc, *pw, *u = NULL, *p = NULL;
    size_t zlen, clen, plen;
    long n;
    int ret = -1;

    n = sasl_b64_decode(b64, len, &buf);
    if (n < 0)
        goto out;
    authz = buf;
    zlen = strlen(authz);
    if (zlen >= (size_t)n)
        goto out;
    authc = authz + zlen + 1;
    clen = strlen(authc);
    if (zlen + 1 + clen >= (size_t)n)
        goto out;
    pw = authc + clen + 1;
    plen = strlen(pw);
    /* Exactly two NULs: the password runs to the end. */
    if (zlen + 1 + clen + 1 + plen != (size_t)n || clen == 0 || plen == 0)
        goto out;
    if (zlen > 0 && strcmp(authz, authc) != 0)
        goto out;
    u = secret_dup(authc);
    p = secret_dup(pw);
    if (!u || !p)
        goto out;
    *user = u;
    *pass = p;
    u = p = NULL;
    ret = 0;
out:
    secret_free(u);
    secret_free(p);
    if (buf)
        sasl_wipe_free(buf, (size_t)n + 1);
    return ret;
}

int sasl_login_decode(const char *b64, size_t len, char **out)
{
    char *buf = NULL;
    long n = sasl_b64_decode(b64, len, &buf);

    if (n < 0)
        return -1;
    if (n == 0 || (size_t)n != strlen(buf)) {
        sasl_wipe_free(buf, (size_t)n + 1);
        return -1;
    }
    *out = buf;
    return 0;
}
