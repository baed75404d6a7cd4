/* Pure parsing of a device authorization endpoint's answer (RFC 8628 3.2; Entra's devicecode,
 * Google's device/code). No I/O, no logging, no clock: bytes in, a checked struct out. The
 * device code flow (oauth/device_code.c) is its one user; the unit tests and the fuzz target
 * drive it directly. */
#ifndef SOP_DEVICE_CODE_PARSE_H
#define SOP_DEVICE_CODE_PARSE_H

#include <stddef.h>
#include <stdint.h>

#define DEVICE_CODE_MAX_BYTES 4096     /* device_code: visible ASCII */
#define DEVICE_CODE_USER_CODE_MAX 64   /* user_code: printable ASCII, blanks allowed */
#define DEVICE_CODE_URI_MAX 512        /* verification_uri: visible ASCII */
#define DEVICE_CODE_MESSAGE_MAX 1024   /* message, cleaned: bytes of UTF-8 */
#define DEVICE_CODE_DEFAULT_INTERVAL 5 /* RFC 8628 3.2 */
#define DEVICE_CODE_MAX_INTERVAL 60    /* what we accept from the server */
#define DEVICE_CODE_MAX_EXPIRES 3600   /* a longer life is cut to this */

/* What the device authorization endpoint said, checked. Strings are malloc'd;
 * device_code_auth_clear frees them. */
struct device_code_auth {
    char *device_code;      /* a credential: wiped when freed (secret_free) */
    char *user_code;        /* 1..64 bytes of 0x20..0x7e */
    char *verification_uri; /* https://, or http:// to loopback; 1..512 bytes of 0x21..0x7e */
    char *message;          /* the server's sentence for a terminal, cleaned; NULL if none */
    int64_t expires_in;     /* seconds, 1..DEVICE_CODE_MAX_EXPIRES */
    int64_t interval;       /* seconds, 1..DEVICE_CODE_MAX_INTERVAL (absent: 5, 0: 1) */
};

/* Parse the answer body (len bytes, need not be NUL-terminated) into *out.
 * 0: *out filled as documented above (verification_uri taken from Google's verification_url
 *    when verification_uri is absent; expires_in over an hour cut to one; message with C0
 *    controls and DEL made one blank, C1 controls, bidi overrides and invalid UTF-8 dropped,
 *    cut at a character boundary, NULL when nothing is left).
 * -1: *out zeroed, the reason in err (never any of the body's bytes: it holds a device code).
 * An error answer ({"error":...}) is not this function's business: it fails here (no
 * device_code); the caller reads it with token_response_parse first. */
int device_code_auth_parse(const char *body, size_t len, struct device_code_auth *out, char *err,
                           size_t errlen);

/* Free what a holds (the device code wiped first) and zero it. Accepts NULL. */
void device_code_auth_clear(struct device_code_auth *a);

#endif
