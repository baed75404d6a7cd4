/* Helpers the fuzz targets share: buffers that abort when memory runs out, and the check that a
 * bounded output is a NUL-terminated prefix of the unbounded one. */
#ifndef SOP_FUZZ_UTIL_H
#define SOP_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* out (size len) must hold a NUL-terminated prefix of full. */
static inline void fuzz_prefix(const char *out, size_t len, const char *full)
{
    size_t n, fl = strlen(full);
    if (len == 0)
        return;
    n = strnlen(out, len);
    if (n == len || n != (fl < len - 1 ? fl : len - 1) || memcmp(out, full, n) != 0)
        abort();
}

/* len bytes of garbage (0x55), so a missing terminator shows. */
static inline char *fuzz_buf(size_t len)
{
    char *b = malloc(len ? len : 1);
    if (!b)
        abort();
    memset(b, 0x55, len ? len : 1);
    return b;
}

/* The n bytes at p as a C string (a NUL among them ends it early, as it would for the caller). */
static inline char *fuzz_str(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        abort();
    if (n)
        memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

#endif
