/* libFuzzer target for proxy/smtp/sasl.c. The input is tried as base64 by every decoder, its base64
 * encoding is fed to the decoders too (to reach what lies behind the base64 check), and the
 * first byte picks a split point that cuts it into a user and a token for the encoders, whose
 * output must decode back to the same fields. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/secret.h"
#include "proxy/smtp/sasl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_decoders(const char *b64, size_t len)
{
    char *a = NULL, *b = NULL;
    long n = sasl_b64_decode(b64, len, &a);
    if (n >= 0) {
        /* Strict: whatever decodes re-encodes to the same text, except "=", and except
         * non-zero pad bits, which are tolerated. */
        char *e = sasl_b64_encode(a, (size_t)n);
        if (!e || (len != 1 && strlen(e) != len))
            abort();
        free(e);
        free(a);
    }
    a = b = NULL;
    if (sasl_plain_decode(b64, len, &a, &b) == 0) {
        if (!*a || !*b)
            abort();
        secret_free(a);
        secret_free(b);
    }
    a = b = NULL;
    if (sasl_xoauth2_decode(b64, len, &a, &b) == 0) {
        if (!*a || !*b || strchr(b, '\001') || strchr(a, '\001'))
            abort();
        secret_free(a);
        secret_free(b);
    }
    a = NULL;
    if (sasl_login_decode(b64, len, &a) == 0) {
        if (!*a)
            abort();
        secret_free(a);
    }
}

static void fuzz_encoders(const char *user, const char *token)
{
    char *e = sasl_xoauth2_encode(user, token);
    char *u = NULL, *t = NULL;
    if (e) {
        if (sasl_xoauth2_decode(e, strlen(e), &u, &t) != 0 || strcmp(u, user) != 0 ||
            strcmp(t, token) != 0)
            abort();
        secret_free(u);
        secret_free(t);
        secret_free(e);
    }
    e = sasl_oauthbearer_encode(user, token, (unsigned)strlen(user), token);
    secret_free(e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy, *enc;
    size_t split;
    if (size < 1)
        return 0;
    fuzz_decoders((const char *)data + 1, size - 1);
    enc = sasl_b64_encode((const char *)data + 1, size - 1);
    if (!enc)
        abort();
    fuzz_decoders(enc, strlen(enc));
    {
        char *back = NULL;
        long n = sasl_b64_decode(enc, strlen(enc), &back);
        if (n != (long)(size - 1) || memcmp(back, data + 1, size - 1) != 0)
            abort();
        free(back);
    }
    free(enc);
    /* Two NUL-terminated strings cut at the split point. */
    copy = malloc(size + 1);
    if (!copy)
        abort();
    memcpy(copy, data + 1, size - 1);
    copy[size - 1] = '\0';
    copy[size] = '\0';
    split = (size_t)data[0] * (size - 1) / 255;
    memmove(copy + split + 1, copy + split, size - 1 - split);
    copy[split] = '\0';
    copy[size] = '\0';
    fuzz_encoders(copy, copy + split + 1);
    free(copy);
    return 0;
}
