/* Secrets that wipe themselves, and secret files that must not be readable by others. */
#ifndef SOP_SECRET_H
#define SOP_SECRET_H

#include <stddef.h>

/* Refuse a secret file that is not a regular file or is group/world readable or writable.
 * 0 ok; -1 with a message in err (never the file's content). */
int secret_check_file(const char *path, char *err, size_t errlen);
/* Read a whole secret file (at most 64 KiB), checked as above, trailing CR/LF stripped.
 * 0 and *out (NUL-terminated, free with secret_free) or -1 with a message in err. */
int secret_read_file(const char *path, char **out, char *err, size_t errlen);
/* A secret file's bytes as they are (binary keys), checked as above: at most cap bytes into
 * buf, *len read, *size the file's size (larger than cap when the file is: the caller judges).
 * 0 ok; -1 with a message in err. The caller wipes buf. */
int secret_read_raw(const char *path, void *buf, size_t cap, size_t *len, long long *size,
                    char *err, size_t errlen);
/* Memory for a secret, n bytes, zeroed: whole pages of its own (nothing else shares them), marked
 * MADV_DONTDUMP so that no core dump holds them, and locked in RAM (mlock) when RLIMIT_MEMLOCK
 * allows, so that they are not swapped out. NULL when out of memory. Free with secret_free_mem,
 * or with secret_free when it holds a string. Thread-safe. The long-lived secrets (client secret,
 * upstream password, refresh and access tokens) live in such memory: secret_dup and
 * secret_read_file allocate it. */
void *secret_alloc(size_t n);
/* Wipe every byte of a secret_alloc block (not only up to a NUL), undo the marks, free it.
 * Accepts NULL. */
void secret_free_mem(void *p);
/* 1 when p is the start of a live secret_alloc block, else 0. */
int secret_is_guarded(const void *p);
/* strdup into secret_alloc memory; the caller frees it with secret_free. */
char *secret_dup(const char *s);
/* Wipe the string's bytes, then free it. Accepts NULL. A secret_alloc block is wiped whole and
 * freed as secret_free_mem does; any other heap string (malloc'd elsewhere) up to its NUL. */
void secret_free(char *s);
/* For tests: called with a block's whole memory (header included) after it was wiped, just
 * before it is freed. NULL: none. */
void secret_set_release_hook(void (*fn)(const void *mem, size_t size));
/* A peer may echo what it was sent, whole or cut short: mask in s, in place, every run of at
 * least 16 characters (or the whole secret, if shorter) that also occurs in secret, so that no
 * piece of it leaves in a message. Runs of 10+ become "[redacted]", shorter ones '*'. secret may
 * be NULL or empty (nothing to do). */
void secret_redact(char *s, const char *secret);

#endif
