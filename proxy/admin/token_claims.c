/* base64url -> base64 with padding for OpenSSL's EVP_DecodeBlock, then cJSON. */
#include "proxy/admin/token_claims.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

/* Entra tokens are about 2 KB; anything far bigger is not worth decoding. */
#define TOKEN_CLAIMS_MAX 16384

cJSON *token_claims_decode(const char *token)
{
    const char *dot1 = token ? strchr(token, '.') : NULL;
    const char *p = dot1 ? dot1 + 1 : NULL;
    const char *dot2 = p ? strchr(p, '.') : NULL;
    if (!dot2 || dot1 == token || strchr(dot2 + 1, '.'))
        return NULL;
    size_t n = (size_t)(dot2 - p);
    if (n == 0 || n > TOKEN_CLAIMS_MAX || n % 4 == 1)
        return NULL;
    size_t padded = (n + 3) / 4 * 4;
    char *b64 = malloc(padded + 1);
    unsigned char *raw = malloc(padded / 4 * 3 + 1);
    cJSON *j = NULL;
    if (!b64 || !raw)
        goto out;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '-')
            c = '+';
        else if (c == '_')
            c = '/';
        else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            goto out; /* '+', '/', '=' and the rest are not base64url */
        b64[i] = c;
    }
    for (size_t i = n; i < padded; i++)
        b64[i] = '=';
    b64[padded] = '\0';
    int len = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)padded);
    if (len < 0)
        goto out;
    /* EVP_DecodeBlock counts the padding as zero bytes */
    size_t rawlen = (size_t)len - (padded - n);
    j = cJSON_ParseWithLength((const char *)raw, rawlen);
    if (j && !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        j = NULL;
    }
out:
    if (b64)
        OPENSSL_cleanse(b64, padded + 1); /* a piece of the token */
    free(b64);
    free(raw);
    return j;
}
