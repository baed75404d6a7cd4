/* What must survive a restart about an account's tokens: one file per account,
 * STATE_DIR/tokens/ACCOUNT.tok, sealed with AES-256-GCM (store/aead.h) under the key from
 * key_file, bound to the account name. Written to a temp file (O_EXCL, 0600), fsynced, renamed,
 * directory fsynced. A torn, tampered, wrong-key or another account's file is reported in the
 * log (event=token_store_unreadable) and ignored, never half-used. No token or key is logged. */
#ifndef SOP_TOKEN_STORE_H
#define SOP_TOKEN_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "store/aead.h"

#define TOKEN_STORE_KEY_LEN AEAD_KEY_LEN

struct token_store;

struct token_record {
    char *access_token;  /* NULL: none; token_record_clear wipes and frees */
    int64_t expires_at;  /* the access token's expiry, wall clock, seconds since the epoch */
    int64_t lifetime;    /* seconds, as issued (expires_in) */
    char *refresh_token; /* NULL: none (room for the refresh_token grant) */
};

/* Read a store key: a regular file of exactly 32 bytes (e.g. head -c 32 /dev/urandom), not
 * readable or writable by group/others. 0 ok; -1 with err (never the key). */
int token_store_key_read(const char *path, unsigned char key[TOKEN_STORE_KEY_LEN], char *err,
                         size_t errlen);
/* Open the store: reads key_file, creates STATE_DIR (if missing) and STATE_DIR/tokens mode 0700.
 * NULL with err on failure. */
struct token_store *token_store_new(const char *state_dir, const char *key_file, char *err,
                                    size_t errlen);
/* Wipes the key. Accepts NULL. */
void token_store_free(struct token_store *s);
/* The stored record of account. An access token expired at now (wall clock, seconds) is dropped.
 * 1 found (rec filled; token_record_clear it); 0 nothing usable: no file, an expired token only,
 * or an unreadable file (reported in the log, ignored). */
int token_store_load(struct token_store *s, const char *account, int64_t now,
                     struct token_record *rec);
/* Replace account's record atomically and durably. 0 ok; -1 with err (no secret in it). */
int token_store_save(struct token_store *s, const char *account, const struct token_record *rec,
                     char *err, size_t errlen);
/* The file of account (for messages and tests); NULL if the name cannot be a file name. */
const char *token_store_path(const struct token_store *s, const char *account, char *buf,
                             size_t len);
void token_record_clear(struct token_record *rec);

#endif
