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
/* strdup that the caller frees with secret_free. */
char *secret_dup(const char *s);
/* Wipe the string's bytes, then free it. Accepts NULL. */
void secret_free(char *s);
/* A peer may echo what it was sent, whole or cut short: mask in s, in place, every run of at
 * least 16 characters (or the whole secret, if shorter) that also occurs in secret, so that no
 * piece of it leaves in a message. Runs of 10+ become "[redacted]", shorter ones '*'. secret may
 * be NULL or empty (nothing to do). */
void secret_redact(char *s, const char *secret);

#endif
