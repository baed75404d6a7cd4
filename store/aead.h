/* AES-256-GCM envelope (OpenSSL EVP):
 *   version (1 byte, AEAD_VERSION) | nonce (12 random bytes) | ciphertext | tag (16 bytes)
 * The associated data is the version byte followed by a caller-given context string (the
 * account name), so a sealed blob opens only under the same key and the same context. */
#ifndef SOP_AEAD_H
#define SOP_AEAD_H

#include <stddef.h>

#define AEAD_KEY_LEN 32
#define AEAD_VERSION 1
#define AEAD_NONCE_LEN 12
#define AEAD_TAG_LEN 16
#define AEAD_OVERHEAD (1 + AEAD_NONCE_LEN + AEAD_TAG_LEN)

/* Seal ptlen bytes of pt into out (room for ptlen + AEAD_OVERHEAD bytes), bound to context.
 * 0 ok and *outlen set; -1 on failure (out wiped). */
int aead_seal(const unsigned char key[AEAD_KEY_LEN], const char *context, const unsigned char *pt,
              size_t ptlen, unsigned char *out, size_t outcap, size_t *outlen);
/* Open what aead_seal made into out (room for inlen - AEAD_OVERHEAD bytes). 0 ok and *outlen
 * set; -1 on a wrong key or context, any changed bit, truncation, an unknown version: then out
 * is wiped (never half-used) and why (log-safe, no secret) says which of those it could tell. */
int aead_open(const unsigned char key[AEAD_KEY_LEN], const char *context, const unsigned char *in,
              size_t inlen, unsigned char *out, size_t outcap, size_t *outlen, const char **why);

#endif
