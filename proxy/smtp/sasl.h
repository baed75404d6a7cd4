/* SASL encoders and decoders: XOAUTH2, OAUTHBEARER (RFC 7628), PLAIN (RFC 4616), base64 via
 * OpenSSL. Everything returned that may hold a secret is freed with secret_free(). */
#ifndef SOP_SASL_H
#define SOP_SASL_H

#include <stddef.h>

/* Strict RFC 4648 base64 (no whitespace, correct padding). "" and "=" decode to empty.
 * Returns the decoded length and *out (NUL-terminated, free with secret_free), or -1. */
long sasl_b64_decode(const char *in, size_t inlen, char **out);
/* NUL-terminated base64 of in, free with secret_free; NULL on allocation failure. */
char *sasl_b64_encode(const char *in, size_t inlen);

/* base64("user=" user "\x01auth=Bearer " token "\x01\x01"). NULL if user or token is empty or
 * holds a byte outside 0x21..0x7e (a token with 0x01 in it must never be sent). */
char *sasl_xoauth2_encode(const char *user, const char *token);
/* base64("n,a=" user "," "\x01host=" host "\x01port=" port "\x01auth=Bearer " token "\x01\x01");
 * host NULL or port 0 leaves that field out. ',' and '=' in user are escaped as =2C and =3D. */
char *sasl_oauthbearer_encode(const char *user, const char *host, unsigned port, const char *token);
/* Server side of XOAUTH2 (for tests and stand-ins): 0 and *user, *token (secret_free), or -1. */
int sasl_xoauth2_decode(const char *b64, size_t len, char **user, char **token);

/* AUTH PLAIN response: base64(authzid NUL authcid NUL passwd). authzid must be empty or equal
 * authcid; authcid and passwd non-empty, no NUL inside. 0 and *user, *pass, or -1. */
int sasl_plain_decode(const char *b64, size_t len, char **user, char **pass);
/* AUTH LOGIN step: base64 of one field (user name or password), non-empty. 0 and *out, or -1. */
int sasl_login_decode(const char *b64, size_t len, char **out);

#endif
