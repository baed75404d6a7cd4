/* libFuzzer target for oauth/token_response.c, the parser of a token endpoint's JSON answer.
 * The first byte picks the HTTP status the answer came with; the rest is the body, exactly
 * sized, so any read past it is caught. A token is visible ASCII, Bearer, with a sane expiry; an
 * error is cleaned for a log line; an unusable answer leaves nothing allocated and says why. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oauth/token_response.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const long fuzz_statuses[16] = {200, 400, 401, 429, 500, 503, 0,  201,
                                       299, 300, 199, 302, 404, 502, -1, 600};

static void fuzz_check_visible(const char *s, size_t max)
{
    size_t n;
    if (!s || !*s)
        abort();
    n = strlen(s);
    if (n > max)
        abort();
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            abort();
}

static void fuzz_check_desc(const char *s)
{
    size_t n = strlen(s);
    if (n > 300)
        abort();
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct token_response r;
    char err[256];
    long status;
    int rc;
    if (size < 1)
        return 0;
    status = fuzz_statuses[data[0] & 15];
    memset(err, 'x', sizeof(err));
    rc = token_response_parse((const char *)data + 1, size - 1, status, &r, err, sizeof(err));
    if (memchr(err, '\0', sizeof(err)) == NULL)
        abort();
    if (rc == 1) {
        if (status < 200 || status > 299 || r.error || r.error_description || r.aadsts)
            abort();
        fuzz_check_visible(r.access_token, size);
        if (r.refresh_token)
            fuzz_check_visible(r.refresh_token, size);
        if (!r.token_type || strcmp(r.token_type, "Bearer") != 0)
            abort();
        if (r.expires_in < 1 || r.expires_in > 365L * 24 * 3600)
            abort();
    } else if (rc == 0) {
        if (r.access_token || r.refresh_token || r.token_type)
            abort();
        fuzz_check_visible(r.error, 64);
        if (r.error_description)
            fuzz_check_desc(r.error_description);
        if (r.aadsts < 0 || r.aadsts >= 1000000000L)
            abort();
    } else if (rc == -1) {
        static const struct token_response zero;
        if (!err[0] || memcmp(&r, &zero, sizeof(r)) != 0)
            abort();
    } else {
        abort();
    }
    token_response_clear(&r);
    token_response_clear(&r); /* clear zeroes what it freed: twice is harmless */
    /* The AADSTS reader on the body as a C string. */
    {
        char *s = malloc(size);
        long v;
        if (!s)
            abort();
        memcpy(s, data + 1, size - 1);
        s[size - 1] = '\0';
        v = token_response_aadsts(s);
        if (v < 0 || v >= 1000000000L || token_response_aadsts(NULL) != 0)
            abort();
        free(s);
    }
    return 0;
}
