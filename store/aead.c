/* AES-256-GCM with a version byte, a random 96-bit nonce per seal and a 128-bit tag. A key seals
 * at most a few files per account per hour, far below GCM's random-nonce limit (2^32 seals). */
#include "store/aead.h"

#include <limits.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

/* Feed the associated data: the version byte, then the context. */
static int aead_aad(EVP_CIPHER_CTX *ctx, unsigned char version, const char *context)
{
    int n;
    size_t clen = context ? strlen(context) : 0;
    if (EVP_CipherUpdate(ctx, NULL, &n, &version, 1) != 1)
        return -1;
    if (clen > INT_MAX)
        return -1;
    if (clen && EVP_CipherUpdate(ctx, NULL, &n, (const unsigned char *)context, (int)clen) != 1)
        return -1;
    return 0;
}

int aead_seal(const unsigned char key[AEAD_KEY_LEN], const char *context, const unsigned char *pt,
              size_t ptlen, unsigned char *out, size_t outcap, size_t *outlen)
{
    int ret = -1, n = 0, fin = 0;
    unsigned char *nonce, *ct;
    EVP_CIPHER_CTX *ctx = NULL;

    if (!key || !out || (!pt && ptlen) || ptlen > INT_MAX - AEAD_OVERHEAD ||
        outcap < ptlen + AEAD_OVERHEAD)
        return -1;
    nonce = out + 1;
    ct = nonce + AEAD_NONCE_LEN;
    out[0] = AEAD_VERSION;
    if (RAND_bytes(nonce, AEAD_NONCE_LEN) != 1)
        goto out;
    ctx = EVP_CIPHER_CTX_new();
    if (!ctx || EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, AEAD_NONCE_LEN, NULL) != 1 ||
        EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce) != 1)
        goto out;
    if (aead_aad(ctx, AEAD_VERSION, context) != 0)
        goto out;
    if (ptlen && EVP_EncryptUpdate(ctx, ct, &n, pt, (int)ptlen) != 1)
        goto out;
    if (EVP_EncryptFinal_ex(ctx, ct + n, &fin) != 1 || (size_t)n + (size_t)fin != ptlen)
        goto out;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, AEAD_TAG_LEN, ct + ptlen) != 1)
        goto out;
    *outlen = ptlen + AEAD_OVERHEAD;
    ret = 0;
out:
    if (ret != 0)
        OPENSSL_cleanse(out, outcap < ptlen + AEAD_OVERHEAD ? outcap : ptlen + AEAD_OVERHEAD);
    EVP_CIPHER_CTX_free(ctx);
    return ret;
}

int aead_open(const unsigned char key[AEAD_KEY_LEN], const char *context, const unsigned char *in,
              size_t inlen, unsigned char *out, size_t outcap, size_t *outlen, const char **why)
{
    int ret = -1, n = 0, fin = 0;
    size_t ctlen;
    const unsigned char *nonce, *ct, *tag;
    unsigned char tagbuf[AEAD_TAG_LEN];
    const char *reason = "cannot decrypt";
    EVP_CIPHER_CTX *ctx = NULL;

    if (!key || !in || inlen < AEAD_OVERHEAD) {
        reason = "too short (torn or truncated)";
        goto done;
    }
    if (in[0] != AEAD_VERSION) {
        reason = "unknown format version";
        goto done;
    }
    ctlen = inlen - AEAD_OVERHEAD;
    if (!out && ctlen) {
        reason = "no room";
        goto done;
    }
    if (ctlen > outcap || ctlen > INT_MAX) {
        reason = "too large";
        goto done;
    }
    nonce = in + 1;
    ct = nonce + AEAD_NONCE_LEN;
    tag = ct + ctlen;
    memcpy(tagbuf, tag, AEAD_TAG_LEN); /* EVP wants a non-const pointer */
    ctx = EVP_CIPHER_CTX_new();
    if (!ctx || EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, AEAD_NONCE_LEN, NULL) != 1 ||
        EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) != 1)
        goto done;
    if (aead_aad(ctx, AEAD_VERSION, context) != 0)
        goto done;
    if (ctlen && EVP_DecryptUpdate(ctx, out, &n, ct, (int)ctlen) != 1)
        goto done;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, AEAD_TAG_LEN, tagbuf) != 1)
        goto done;
    /* Final checks the tag: until it succeeds nothing in out may be used. */
    if (EVP_DecryptFinal_ex(ctx, out ? out + n : tagbuf, &fin) != 1) {
        reason = "authentication failed (torn, tampered, wrong key or another account's file)";
        goto done;
    }
    if ((size_t)n + (size_t)fin != ctlen)
        goto done;
    *outlen = ctlen;
    ret = 0;
done:
    if (ret != 0 && out && outcap)
        OPENSSL_cleanse(out, outcap);
    if (ret != 0 && why)
        *why = reason;
    EVP_CIPHER_CTX_free(ctx);
    return ret;
}
