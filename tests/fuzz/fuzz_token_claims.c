/* libFuzzer target for proxy/admin/token_claims.c, which reads a JWT's payload without verifying
 * it. The first byte holds flags; the rest is used twice: as the token string itself (cut at its
 * first NUL), and as the payload of a token built around it (header "." base64url(rest) "."
 * signature), so that cJSON sees the fuzzer's bytes. The result is NULL or a JSON object; a
 * built token decodes to exactly what cJSON makes of the bytes, unless the flags spoil its shape
 * (empty header, a fourth part, padding, a payload too long), which must give NULL. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "proxy/admin/token_claims.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CLAIMS_MAX 16384 /* TOKEN_CLAIMS_MAX: base64url characters of the payload */

#define FUZZ_EMPTY_HEADER 0x01
#define FUZZ_FOURTH_PART 0x02
#define FUZZ_PADDING 0x04
#define FUZZ_EMPTY_SIGNATURE 0x08

static const char fuzz_b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* base64url without padding into out (room for 4 * (n + 2) / 3 + 1); its length. */
static size_t fuzz_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0, i;
    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = fuzz_b64url[v >> 18 & 63];
        out[o++] = fuzz_b64url[v >> 12 & 63];
        out[o++] = fuzz_b64url[v >> 6 & 63];
        out[o++] = fuzz_b64url[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = fuzz_b64url[v >> 18 & 63];
        out[o++] = fuzz_b64url[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = fuzz_b64url[v >> 18 & 63];
        out[o++] = fuzz_b64url[v >> 12 & 63];
        out[o++] = fuzz_b64url[v >> 6 & 63];
    }
    out[o] = '\0';
    return o;
}

/* NULL or an object; its text (NULL for NULL), to free. */
static char *fuzz_check(const cJSON *j)
{
    char *s;
    if (!j)
        return NULL;
    if (!cJSON_IsObject(j))
        abort();
    s = cJSON_PrintUnformatted(j);
    if (!s)
        abort();
    return s;
}

static void fuzz_built(const uint8_t *payload, size_t n, unsigned flags)
{
    static const char header[] = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ";
    static const char sig[] = "c2lnbmF0dXJlLW5vdC1jaGVja2Vk";
    size_t cap = sizeof(header) + 4 * (n + 2) / 3 + sizeof(sig) + 8, o = 0, enc;
    char *tok = malloc(cap);
    cJSON *got, *want = NULL;
    char *got_s, *want_s;
    int spoilt = 0;
    if (!tok)
        abort();
    if (!(flags & FUZZ_EMPTY_HEADER)) {
        memcpy(tok, header, sizeof(header) - 1);
        o = sizeof(header) - 1;
    } else {
        spoilt = 1;
    }
    tok[o++] = '.';
    enc = fuzz_encode(payload, n, tok + o);
    o += enc;
    if ((flags & FUZZ_PADDING) && enc % 4) {
        tok[o++] = '=';
        spoilt = 1;
    }
    tok[o++] = '.';
    if (!(flags & FUZZ_EMPTY_SIGNATURE)) {
        memcpy(tok + o, sig, sizeof(sig) - 1);
        o += sizeof(sig) - 1;
    }
    if (flags & FUZZ_FOURTH_PART) {
        tok[o++] = '.';
        spoilt = 1;
    }
    tok[o] = '\0';
    if (enc == 0 || enc > FUZZ_CLAIMS_MAX)
        spoilt = 1;
    got = token_claims_decode(tok);
    got_s = fuzz_check(got);
    if (!spoilt) {
        want = cJSON_ParseWithLength((const char *)payload, n);
        if (want && !cJSON_IsObject(want)) {
            cJSON_Delete(want);
            want = NULL;
        }
    }
    /* Same bytes, same parser: the same tree (compared as text: cJSON_Compare is quadratic and
     * trips over duplicate keys). */
    want_s = fuzz_check(want);
    if (!want_s != !got_s || (want_s && strcmp(want_s, got_s) != 0))
        abort();
    free(want_s);
    free(got_s);
    cJSON_Delete(want);
    cJSON_Delete(got);
    free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *tok;
    if (size < 1)
        return 0;
    /* The raw bytes as the token: a C string, so cut at the first NUL. */
    tok = malloc(size);
    if (!tok)
        abort();
    memcpy(tok, data + 1, size - 1);
    tok[size - 1] = '\0';
    {
        cJSON *j = token_claims_decode(tok);
        free(fuzz_check(j));
        cJSON_Delete(j);
    }
    free(tok);
    fuzz_built(data + 1, size - 1, data[0]);
    if (token_claims_decode(NULL) != NULL)
        abort();
    return 0;
}
