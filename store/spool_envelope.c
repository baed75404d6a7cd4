/* The envelope record (format in store/spool_envelope.h). Text so that an operator can read a
 * queued message's envelope with less(1); length-prefixed so that no value needs escaping and
 * the parser never searches for a delimiter inside peer-controlled bytes; a fixed field order so
 * that "missing", "repeated" and "unknown" are one check; a SHA-256 end line so that a record
 * cut anywhere or with any byte changed is refused whole. */
#include "store/spool_envelope.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#define SPOOL_MAGIC "sop-spool 1\n"
#define SPOOL_LEN_DIGITS 7 /* no field is longer than 9,999,999 bytes */
#define SPOOL_NUM_DIGITS 19

int spool_id_valid(const char *s)
{
    size_t i;
    if (!s)
        return 0;
    for (i = 0; i < SPOOL_ID_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return s[SPOOL_ID_LEN] == '\0';
}

char *spool_error_sanitize(char *dst, size_t dstlen, const char *src)
{
    size_t i, n = 0;
    if (!dstlen)
        return dst;
    for (i = 0; src && src[i] && n + 1 < dstlen && n < SPOOL_ERROR_MAX; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    dst[n] = '\0';
    return dst;
}

static void spool_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;
    for (i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* SHA-256 of buf as 64 hex digits. 0 ok, -1 if OpenSSL fails. */
static int spool_sha256_hex(const unsigned char *buf, size_t len, char out[SPOOL_SHA256_HEX + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(buf, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return -1;
    spool_hex(md, 32, out);
    return 0;
}

/* Bytes a string value may hold: no control bytes (so no CR, LF, NUL), anything else. */
static int spool_text_ok(const unsigned char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] == 0x7f)
            return 0;
    return 1;
}

static int spool_hex_ok(const unsigned char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
    return 1;
}

/* ---- parse ---- */

struct spool_rd {
    const unsigned char *p;
    size_t len, o;
};

/* One "NAME SP LEN ':' VALUE LF" with LEN <= max. 0 ok (*val, *vlen), -1 malformed. */
static int spool_rd_field(struct spool_rd *r, const char *name, size_t max,
                          const unsigned char **val, size_t *vlen)
{
    size_t nl = strlen(name), n = 0, digits = 0;
    if (r->len - r->o < nl + 1 || memcmp(r->p + r->o, name, nl) != 0 || r->p[r->o + nl] != ' ')
        return -1;
    r->o += nl + 1;
    while (r->o < r->len && r->p[r->o] >= '0' && r->p[r->o] <= '9') {
        if (++digits > SPOOL_LEN_DIGITS || (digits == 2 && n == 0))
            return -1;
        n = n * 10 + (size_t)(r->p[r->o] - '0');
        r->o++;
    }
    if (digits == 0 || r->o >= r->len || r->p[r->o] != ':' || n > max)
        return -1;
    r->o++;
    if (r->len - r->o < n + 1 || r->p[r->o + n] != '\n')
        return -1;
    *val = r->p + r->o;
    *vlen = n;
    r->o += n + 1;
    return 0;
}

static int spool_rd_str(struct spool_rd *r, const char *name, size_t min, size_t max, char **out)
{
    const unsigned char *v;
    size_t n;
    if (spool_rd_field(r, name, max, &v, &n) != 0 || n < min || !spool_text_ok(v, n))
        return -1;
    *out = malloc(n + 1);
    if (!*out)
        return -1;
    memcpy(*out, v, n);
    (*out)[n] = '\0';
    return 0;
}

static int spool_rd_u64(struct spool_rd *r, const char *name, uint64_t max, uint64_t *out)
{
    const unsigned char *v;
    size_t n, i;
    uint64_t x = 0;
    if (spool_rd_field(r, name, SPOOL_NUM_DIGITS, &v, &n) != 0 || n == 0 || (n > 1 && v[0] == '0'))
        return -1;
    for (i = 0; i < n; i++) {
        uint64_t d;
        if (v[i] < '0' || v[i] > '9')
            return -1;
        d = (uint64_t)(v[i] - '0');
        /* d > max first, so that max - d cannot wrap (max is 1 for the 0|1 flags) */
        if (d > max || x > (max - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    *out = x;
    return 0;
}

static int spool_rd_hex(struct spool_rd *r, const char *name, size_t n, char *out)
{
    const unsigned char *v;
    size_t vn;
    if (spool_rd_field(r, name, n, &v, &vn) != 0 || vn != n || !spool_hex_ok(v, n))
        return -1;
    memcpy(out, v, n);
    out[n] = '\0';
    return 0;
}

static int spool_rd_next_is(const struct spool_rd *r, const char *name)
{
    size_t nl = strlen(name);
    return r->len - r->o > nl && memcmp(r->p + r->o, name, nl) == 0 && r->p[r->o + nl] == ' ';
}

static int spool_parse_body(struct spool_rd *r, struct spool_envelope *env, const char **err)
{
    uint64_t u;
    size_t cap = 0;
    if (spool_rd_hex(r, "id", SPOOL_ID_LEN, env->queue_id) != 0) {
        *err = "bad id";
        return -1;
    }
    if (spool_rd_str(r, "account", 1, SPOOL_NAME_MAX, &env->account) != 0 ||
        spool_rd_str(r, "device", 0, SPOOL_NAME_MAX, &env->device) != 0) {
        *err = "bad account or device";
        return -1;
    }
    if (spool_rd_str(r, "from", 0, SPOOL_ADDR_MAX, &env->mail_from) != 0) {
        *err = "bad sender";
        return -1;
    }
    while (spool_rd_next_is(r, "rcpt")) {
        if (env->nrcpts == SPOOL_MAX_RCPTS) {
            *err = "too many recipients";
            return -1;
        }
        if (env->nrcpts == cap) {
            size_t ncap = cap ? cap * 2 : 4;
            char **nr = realloc(env->rcpts, ncap * sizeof(*nr));
            if (!nr) {
                *err = "out of memory";
                return -1;
            }
            env->rcpts = nr;
            cap = ncap;
        }
        if (spool_rd_str(r, "rcpt", 1, SPOOL_ADDR_MAX, &env->rcpts[env->nrcpts]) != 0) {
            *err = "bad recipient";
            return -1;
        }
        env->nrcpts++;
    }
    if (env->nrcpts == 0) {
        *err = "no recipient";
        return -1;
    }
    if (spool_rd_u64(r, "smtputf8", 1, &u) != 0) {
        *err = "bad smtputf8";
        return -1;
    }
    env->smtputf8 = (int)u;
    if (spool_rd_u64(r, "8bitmime", 1, &u) != 0) {
        *err = "bad 8bitmime";
        return -1;
    }
    env->eightbit = (int)u;
    if (spool_rd_u64(r, "created", INT64_MAX, &u) != 0) {
        *err = "bad created";
        return -1;
    }
    env->created = (int64_t)u;
    if (spool_rd_u64(r, "size", INT64_MAX, &env->size) != 0 ||
        spool_rd_hex(r, "body_sha256", SPOOL_SHA256_HEX, env->body_sha256) != 0) {
        *err = "bad size or body_sha256";
        return -1;
    }
    if (spool_rd_u64(r, "attempts", UINT32_MAX, &u) != 0) {
        *err = "bad attempts";
        return -1;
    }
    env->attempts = (uint32_t)u;
    if (spool_rd_u64(r, "next_attempt", INT64_MAX, &u) != 0) {
        *err = "bad next_attempt";
        return -1;
    }
    env->next_attempt = (int64_t)u;
    if (spool_rd_str(r, "last_error", 0, SPOOL_ERROR_MAX, &env->last_error) != 0) {
        *err = "bad last_error";
        return -1;
    }
    if (spool_rd_u64(r, "held", 1, &u) != 0) {
        *err = "bad held";
        return -1;
    }
    env->held = (int)u;
    return 0;
}

int spool_envelope_parse(const unsigned char *buf, size_t len, struct spool_envelope *env,
                         const char **err)
{
    struct spool_rd r = {buf, len, 0};
    char want[SPOOL_SHA256_HEX + 1], got[SPOOL_SHA256_HEX + 1];
    size_t body_end;
    const char *why = "malformed";

    memset(env, 0, sizeof(*env));
    if (!buf || len > SPOOL_ENVELOPE_MAX) {
        why = "too large";
        goto fail;
    }
    if (len < sizeof(SPOOL_MAGIC) - 1 || memcmp(buf, SPOOL_MAGIC, sizeof(SPOOL_MAGIC) - 1) != 0) {
        why = (len >= 10 && memcmp(buf, "sop-spool ", 10) == 0) ? "unknown version"
                                                                : "not a spool envelope";
        goto fail;
    }
    r.o = sizeof(SPOOL_MAGIC) - 1;
    if (spool_parse_body(&r, env, &why) != 0)
        goto fail;
    body_end = r.o;
    if (spool_rd_hex(&r, "end", SPOOL_SHA256_HEX, got) != 0) {
        why = "no end marker (torn or truncated)";
        goto fail;
    }
    if (r.o != len) {
        why = "bytes after the end marker";
        goto fail;
    }
    if (spool_sha256_hex(buf, body_end, want) != 0) {
        why = "cannot hash";
        goto fail;
    }
    if (memcmp(want, got, SPOOL_SHA256_HEX) != 0) {
        why = "checksum mismatch (garbled)";
        goto fail;
    }
    return 0;
fail:
    spool_envelope_clear(env);
    if (err)
        *err = why;
    return -1;
}

/* ---- format ---- */

struct spool_wr {
    unsigned char *p;
    size_t len, cap;
    int failed;
};

static void spool_wr_raw(struct spool_wr *w, const void *data, size_t n)
{
    if (w->failed)
        return;
    if (w->cap - w->len < n) {
        size_t ncap = w->cap ? w->cap : 1024;
        unsigned char *np;
        while (ncap - w->len < n)
            ncap *= 2;
        np = realloc(w->p, ncap);
        if (!np) {
            w->failed = 1;
            return;
        }
        w->p = np;
        w->cap = ncap;
    }
    memcpy(w->p + w->len, data, n);
    w->len += n;
}

static void spool_wr_field(struct spool_wr *w, const char *name, const char *val, size_t n)
{
    char head[64];
    int hl = snprintf(head, sizeof(head), "%s %zu:", name, n);
    if (hl < 0 || (size_t)hl >= sizeof(head)) {
        w->failed = 1;
        return;
    }
    spool_wr_raw(w, head, (size_t)hl);
    spool_wr_raw(w, val, n);
    spool_wr_raw(w, "\n", 1);
}

static void spool_wr_u64(struct spool_wr *w, const char *name, uint64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
    spool_wr_field(w, name, num, (size_t)n);
}

/* A string field's value is usable: present, within [min, max], no control bytes. */
static int spool_str_ok(const char *s, size_t min, size_t max)
{
    size_t n;
    if (!s)
        return min == 0;
    n = strlen(s);
    return n >= min && n <= max && spool_text_ok((const unsigned char *)s, n);
}

static const char *spool_envelope_check(const struct spool_envelope *env)
{
    size_t i;
    if (!spool_id_valid(env->queue_id))
        return "bad queue id";
    if (!spool_str_ok(env->account, 1, SPOOL_NAME_MAX) ||
        !spool_str_ok(env->device, 0, SPOOL_NAME_MAX))
        return "bad account or device name";
    if (!spool_str_ok(env->mail_from, 0, SPOOL_ADDR_MAX))
        return "bad sender";
    if (env->nrcpts < 1 || env->nrcpts > SPOOL_MAX_RCPTS || !env->rcpts)
        return "recipient count out of range";
    for (i = 0; i < env->nrcpts; i++)
        if (!spool_str_ok(env->rcpts[i], 1, SPOOL_ADDR_MAX))
            return "bad recipient";
    if (env->created < 0 || env->next_attempt < 0 || env->size > INT64_MAX)
        return "negative time or size";
    if (strlen(env->body_sha256) != SPOOL_SHA256_HEX ||
        !spool_hex_ok((const unsigned char *)env->body_sha256, SPOOL_SHA256_HEX))
        return "bad body_sha256";
    if (!spool_str_ok(env->last_error, 0, SPOOL_ERROR_MAX))
        return "bad last_error";
    return NULL;
}

int spool_envelope_format(const struct spool_envelope *env, unsigned char **out, size_t *outlen,
                          const char **err)
{
    struct spool_wr w = {NULL, 0, 0, 0};
    char sum[SPOOL_SHA256_HEX + 1];
    const char *why = spool_envelope_check(env);
    size_t i;

    if (why) {
        if (err)
            *err = why;
        return -1;
    }
    spool_wr_raw(&w, SPOOL_MAGIC, sizeof(SPOOL_MAGIC) - 1);
    spool_wr_field(&w, "id", env->queue_id, SPOOL_ID_LEN);
    spool_wr_field(&w, "account", env->account, strlen(env->account));
    spool_wr_field(&w, "device", env->device ? env->device : "",
                   env->device ? strlen(env->device) : 0);
    spool_wr_field(&w, "from", env->mail_from ? env->mail_from : "",
                   env->mail_from ? strlen(env->mail_from) : 0);
    for (i = 0; i < env->nrcpts; i++)
        spool_wr_field(&w, "rcpt", env->rcpts[i], strlen(env->rcpts[i]));
    spool_wr_u64(&w, "smtputf8", env->smtputf8 ? 1 : 0);
    spool_wr_u64(&w, "8bitmime", env->eightbit ? 1 : 0);
    spool_wr_u64(&w, "created", (uint64_t)env->created);
    spool_wr_u64(&w, "size", env->size);
    spool_wr_field(&w, "body_sha256", env->body_sha256, SPOOL_SHA256_HEX);
    spool_wr_u64(&w, "attempts", env->attempts);
    spool_wr_u64(&w, "next_attempt", (uint64_t)env->next_attempt);
    spool_wr_field(&w, "last_error", env->last_error ? env->last_error : "",
                   env->last_error ? strlen(env->last_error) : 0);
    spool_wr_u64(&w, "held", env->held ? 1 : 0);
    if (w.failed || spool_sha256_hex(w.p, w.len, sum) != 0) {
        free(w.p);
        if (err)
            *err = "out of memory";
        return -1;
    }
    spool_wr_field(&w, "end", sum, SPOOL_SHA256_HEX);
    if (w.failed) {
        free(w.p);
        if (err)
            *err = "out of memory";
        return -1;
    }
    *out = w.p;
    *outlen = w.len;
    return 0;
}

/* ---- ownership ---- */

void spool_envelope_clear(struct spool_envelope *env)
{
    size_t i;
    if (!env)
        return;
    free(env->account);
    free(env->device);
    free(env->mail_from);
    for (i = 0; i < env->nrcpts; i++)
        free(env->rcpts[i]);
    free(env->rcpts);
    free(env->last_error);
    memset(env, 0, sizeof(*env));
}

static int spool_dup(char **dst, const char *src)
{
    *dst = NULL;
    if (!src)
        return 0;
    *dst = strdup(src);
    return *dst ? 0 : -1;
}

int spool_envelope_copy(struct spool_envelope *dst, const struct spool_envelope *src)
{
    size_t i;
    *dst = *src;
    dst->account = dst->device = dst->mail_from = dst->last_error = NULL;
    dst->rcpts = NULL;
    dst->nrcpts = 0;
    if (spool_dup(&dst->account, src->account) != 0 || spool_dup(&dst->device, src->device) != 0 ||
        spool_dup(&dst->mail_from, src->mail_from) != 0 ||
        spool_dup(&dst->last_error, src->last_error) != 0)
        goto fail;
    if (src->nrcpts) {
        dst->rcpts = calloc(src->nrcpts, sizeof(*dst->rcpts));
        if (!dst->rcpts)
            goto fail;
        for (i = 0; i < src->nrcpts; i++) {
            if (spool_dup(&dst->rcpts[i], src->rcpts[i]) != 0)
                goto fail;
            dst->nrcpts = i + 1;
        }
    }
    return 0;
fail:
    dst->nrcpts = src->nrcpts; /* calloc'd slots not yet filled are NULL: free(NULL) is fine */
    if (!dst->rcpts)
        dst->nrcpts = 0;
    spool_envelope_clear(dst);
    return -1;
}
