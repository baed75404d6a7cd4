/* The envelope of one spooled message, and its on-disk record. Pure: bytes in, struct out; no I/O.
 *
 * The record is line-oriented text, every field length-prefixed, in a fixed order (format
 * version 1; docs/spool.md has the same description):
 *
 *   sop-spool 1\n
 *   id 16:0123456789abcdef\n          queue id: 16 lower-case hex digits, also the file name
 *   account 9:scanners1\n             1..SPOOL_NAME_MAX bytes
 *   device 7:copier1\n                0..SPOOL_NAME_MAX bytes
 *   from 0:\n                         MAIL FROM address without <>; empty: the null sender
 *   rcpt 13:a@example.org\n           1..SPOOL_MAX_RCPTS lines, in RCPT order
 *   smtputf8 1:0\n                    MAIL FROM had SMTPUTF8 (0|1)
 *   8bitmime 1:1\n                    MAIL FROM had BODY=8BITMIME (0|1)
 *   created 10:1800000000\n           wall clock, seconds since the epoch
 *   size 4:1234\n                     body bytes (the body file's trailer excluded)
 *   body_sha256 64:<hex>\n            SHA-256 of those body bytes
 *   attempts 1:0\n                    delivery attempts so far
 *   next_attempt 1:0\n                wall clock, seconds; 0: as soon as possible
 *   last_error 0:\n                   0..SPOOL_ERROR_MAX bytes, printable ASCII only (log-safe)
 *   held 1:0\n                        0|1: not delivered until released
 *   end 64:<hex>\n                    SHA-256 of every byte before this line: the end marker
 *
 * A field is "NAME SP LEN ':' VALUE LF", LEN in decimal without leading zeros, VALUE exactly LEN
 * bytes. Numbers are decimal digits without sign or leading zeros. String values never contain
 * NUL, CR, LF or other control bytes (0x00-0x1f, 0x7f); addresses may be UTF-8. Anything else —
 * another version, a field out of order, missing, repeated or oversized, bytes after the end
 * line, a checksum that does not match — makes the whole record invalid: a torn, truncated or
 * garbled record is never half-used. */
#ifndef SOP_SPOOL_ENVELOPE_H
#define SOP_SPOOL_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#define SPOOL_ENVELOPE_VERSION 1
#define SPOOL_ID_LEN 16      /* hex digits */
#define SPOOL_NAME_MAX 128   /* account and device names */
#define SPOOL_ADDR_MAX 512   /* RFC 5321 allows 256 octets per path; room for UTF-8 */
#define SPOOL_MAX_RCPTS 1000 /* Postfix's smtpd_recipient_limit default */
#define SPOOL_ERROR_MAX 512  /* last_error */
/* No valid record is longer than this (every field at its maximum); a longer file is refused
 * before it is read. */
#define SPOOL_ENVELOPE_MAX (8192 + (size_t)SPOOL_MAX_RCPTS * (SPOOL_ADDR_MAX + 16))
#define SPOOL_SHA256_HEX 64

struct spool_envelope {
    char queue_id[SPOOL_ID_LEN + 1];
    char *account;   /* never NULL in a valid envelope */
    char *device;    /* "" allowed */
    char *mail_from; /* "" is the null sender <> (never bounced) */
    char **rcpts;
    size_t nrcpts; /* 1..SPOOL_MAX_RCPTS */
    int smtputf8;  /* 0|1 */
    int eightbit;  /* 0|1: BODY=8BITMIME */
    int64_t created;
    uint64_t size;
    char body_sha256[SPOOL_SHA256_HEX + 1];
    uint32_t attempts;
    int64_t next_attempt;
    char *last_error; /* NULL or "" for none */
    int held;         /* 0|1 */
};

/* Parse a whole record. 0 ok (env filled; spool_envelope_clear it); -1 invalid, *err says why
 * (a static string, no record content in it) and env is left zeroed. */
int spool_envelope_parse(const unsigned char *buf, size_t len, struct spool_envelope *env,
                         const char **err);
/* Encode env into a new malloc'd record (*out, *outlen). 0 ok; -1 if a field is out of bounds
 * (*err says which, static string). */
int spool_envelope_format(const struct spool_envelope *env, unsigned char **out, size_t *outlen,
                          const char **err);
/* Deep copy (for callers keeping an envelope beyond a scan's list). 0 ok, -1 out of memory. */
int spool_envelope_copy(struct spool_envelope *dst, const struct spool_envelope *src);
/* Free what spool_envelope_parse or _copy allocated and zero env. Accepts NULL. */
void spool_envelope_clear(struct spool_envelope *env);
/* 1 if s is a queue id (SPOOL_ID_LEN lower-case hex digits), else 0. */
int spool_id_valid(const char *s);
/* Copy src into dst (dstlen bytes) as a valid last_error: printable ASCII kept, every other byte
 * a '?', cut to SPOOL_ERROR_MAX. Returns dst. */
char *spool_error_sanitize(char *dst, size_t dstlen, const char *src);

#endif
