/* libFuzzer target for oauth/entra_explain.c: the identity provider's refusal (error and
 * error_description, the IdP's bytes) turned into the hint that event=token_failed carries.
 * Input: byte 0 the hint buffer's size (0..63, then up to 1014 in steps of 5; 255: 4096); then the
 * error up to the first NUL, the description after it. The first 8 bytes after byte 0 are also
 * looked up as a raw AADSTS number.
 *
 * Outputs go into heap buffers of exactly their size (ASan sees a byte too far), must be
 * NUL-terminated inside them, printable ASCII without double quotes (the hint ends up in
 * key="value" log lines), and a prefix of the same output made with a large buffer. A hint is
 * given exactly when the description names a code the table knows; otherwise the buffer is left
 * as the caller set it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oauth/entra_explain.h"
#include "oauth/token_response.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_BIG 4096

static void fuzz_text(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e || *s == '"')
            abort();
}

/* e formatted whole, checked, and again into len bytes. */
static void fuzz_format(const struct entra_explanation *e, size_t len)
{
    char *full = fuzz_buf(FUZZ_BIG), *out = fuzz_buf(len);
    if (entra_explain_format(e, full, FUZZ_BIG) != full || strlen(full) >= FUZZ_BIG - 1)
        abort();
    fuzz_text(full);
    if (entra_explain_format(e, out, len) != out)
        abort();
    fuzz_prefix(out, len, full);
    free(full);
    free(out);
}

static void fuzz_hint(const char *error, const char *description, size_t len)
{
    const struct entra_explanation *e = entra_explain(token_response_aadsts(description));
    char *full = fuzz_buf(FUZZ_BIG), *out = fuzz_buf(len);
    full[0] = '\0'; /* as grant_post.c does */
    entra_explain_hint(NULL, error, description, full, FUZZ_BIG);
    fuzz_text(full);
    if (!e) {
        if (full[0])
            abort();
    } else {
        char *want = fuzz_buf(FUZZ_BIG);
        entra_explain_format(e, want, FUZZ_BIG);
        if (strcmp(full, want) != 0)
            abort();
        free(want);
    }
    if (len) {
        out[0] = '\0';
        entra_explain_hint(NULL, error, description, out, len);
        fuzz_prefix(out, len, full);
    } else {
        entra_explain_hint(NULL, error, description, out, 0);
    }
    free(full);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct entra_explanation *t, *e;
    const uint8_t *nul;
    char *error, *description;
    size_t len, n, nt;
    long raw = 0;
    if (size < 1)
        return 0;
    len = data[0] < 64 ? data[0] : data[0] == 255 ? 4096 : 64 + (size_t)(data[0] - 64) * 5;
    data++;
    size--;
    memcpy(&raw, data, size < sizeof(raw) ? size : sizeof(raw));

    /* any number: NULL or the entry for exactly that code */
    e = entra_explain(raw);
    if (e && e->aadsts != raw)
        abort();
    if (e)
        fuzz_format(e, len);

    nul = memchr(data, '\0', size);
    n = nul ? (size_t)(nul - data) : size;
    error = fuzz_str(data, n);
    description = nul ? fuzz_str(nul + 1, size - n - 1) : NULL;
    fuzz_hint(error, description, len);
    free(error);
    free(description);

    /* the table: every entry found by its own code, and formatted within bounds */
    t = entra_explain_table(&nt);
    for (size_t i = 0; i < nt; i++) {
        if (entra_explain(t[i].aadsts) != &t[i])
            abort();
        fuzz_format(&t[i], len);
    }
    return 0;
}
