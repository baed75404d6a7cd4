/* libFuzzer target for the device authorization grant's parsers: oauth/device_code_parse.c (the
 * answer with the device code, RFC 8628 3.2) and, on the same bytes, token_response_parse as the
 * flow reads an error answer or a poll's answer. The first byte picks the HTTP status ('0' 200,
 * '1' 400, '2' 401, '3' 429, '4' 500, ...); the rest is the body, exactly sized.
 *
 * What is accepted is what a terminal may show and the poll loop may use: the codes and the URL
 * in their byte ranges and lengths, the URL https:// (or http:// to loopback), the times in
 * range, the message valid UTF-8 without C0/C1 controls or bidi overrides, and the strings the
 * very ones the JSON holds. What is refused leaves nothing allocated and says which field, never
 * quoting the body. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "oauth/device_code_parse.h"
#include "oauth/http.h"
#include "oauth/token_response.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const long fuzz_statuses[16] = {200, 400, 401, 429, 500, 503, 0,  201,
                                       299, 300, 199, 302, 404, 502, -1, 600};

static void fuzz_check_ascii(const char *s, size_t max, unsigned char lo)
{
    size_t n;
    if (!s)
        abort();
    n = strlen(s);
    if (n < 1 || n > max)
        abort();
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < lo || (unsigned char)s[i] > 0x7e)
            abort();
}

/* Valid UTF-8 with nothing a terminal would act on, no blank at the end. */
static void fuzz_check_message(const char *m)
{
    const unsigned char *s = (const unsigned char *)m;
    size_t n = strlen(m);
    if (n < 1 || n > DEVICE_CODE_MESSAGE_MAX || m[n - 1] == ' ')
        abort();
    while (*s) {
        uint32_t cp;
        size_t len, i;
        if (*s < 0x80) {
            if (*s < 0x20 || *s == 0x7f)
                abort();
            s++;
            continue;
        }
        if (*s >= 0xc2 && *s <= 0xdf) {
            len = 2;
            cp = *s & 0x1fu;
        } else if (*s >= 0xe0 && *s <= 0xef) {
            len = 3;
            cp = *s & 0x0fu;
        } else if (*s >= 0xf0 && *s <= 0xf4) {
            len = 4;
            cp = *s & 0x07u;
        } else {
            abort();
        }
        for (i = 1; i < len; i++) {
            if ((s[i] & 0xc0) != 0x80)
                abort();
            cp = cp << 6 | (s[i] & 0x3fu);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff) || cp <= 0x9f || (cp >= 0x202a && cp <= 0x202e) ||
            (cp >= 0x2066 && cp <= 0x2069))
            abort();
        s += len;
    }
}

static const char *fuzz_json_string(const cJSON *root, const char *name)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, name);
    return cJSON_IsString(j) ? j->valuestring : NULL;
}

static void fuzz_auth(const char *body, size_t len)
{
    static const char *const reasons[] = {
        "the answer is not a JSON object",
        "device_code is missing",
        "user_code is missing",
        "verification_uri is missing",
        "verification_uri is not an https:// URL",
        "expires_in is missing",
        "interval is not a number",
        "out of memory",
    };
    static const struct device_code_auth zero;
    struct device_code_auth a;
    char err[512];
    cJSON *root = cJSON_ParseWithLength(body, len);
    const char *dc = fuzz_json_string(root, "device_code");
    int rc;

    memset(&a, 0x5a, sizeof(a));
    memset(err, 'x', sizeof(err));
    rc = device_code_auth_parse(body, len, &a, err, sizeof(err));
    if (rc == 0) {
        const char *uri = fuzz_json_string(root, "verification_uri");
        const char *user = fuzz_json_string(root, "user_code");
        const char *msg = fuzz_json_string(root, "message");
        if (!uri)
            uri = fuzz_json_string(root, "verification_url");
        fuzz_check_ascii(a.device_code, DEVICE_CODE_MAX_BYTES, 0x21);
        fuzz_check_ascii(a.user_code, DEVICE_CODE_USER_CODE_MAX, 0x20);
        fuzz_check_ascii(a.verification_uri, DEVICE_CODE_URI_MAX, 0x21);
        if (strncmp(a.verification_uri, "https://", 8) != 0 &&
            !(strncmp(a.verification_uri, "http://", 7) == 0 &&
              http_url_is_loopback(a.verification_uri)))
            abort();
        /* The very strings the answer holds, copied whole. */
        if (!cJSON_IsObject(root) || !dc || strcmp(a.device_code, dc) != 0 || !uri ||
            strcmp(a.verification_uri, uri) != 0 || !user || strcmp(a.user_code, user) != 0)
            abort();
        if (a.expires_in < 1 || a.expires_in > DEVICE_CODE_MAX_EXPIRES || a.interval < 1 ||
            a.interval > DEVICE_CODE_MAX_INTERVAL)
            abort();
        if (a.message)
            fuzz_check_message(a.message);
        else if (msg && msg[0] > ' ' && msg[0] < 0x7f)
            abort(); /* a message that starts with a visible character keeps it */
    } else if (rc == -1) {
        size_t i;
        if (memcmp(&a, &zero, sizeof(a)) != 0 || !memchr(err, '\0', sizeof(err)))
            abort();
        for (i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
            if (strncmp(err, reasons[i], strlen(reasons[i])) == 0)
                break;
        if (i == sizeof(reasons) / sizeof(reasons[0]))
            abort();
        /* Never the device code, after the reason either. */
        if (dc && strlen(dc) >= 16 && strstr(err, dc))
            abort();
    } else {
        abort();
    }
    device_code_auth_clear(&a);
    if (memcmp(&a, &zero, sizeof(a)) != 0)
        abort();
    cJSON_Delete(root);
}

/* An error answer to the device authorization request, or a poll's answer: what the flow
 * compares (authorization_pending, slow_down, ...) is a non-empty visible ASCII word. */
static void fuzz_poll(const char *body, size_t len, long status)
{
    struct token_response tr;
    char err[256];
    int rc = token_response_parse(body, len, status, &tr, err, sizeof(err));
    if (rc == 0) {
        fuzz_check_ascii(tr.error, 64, 0x21);
        if (tr.access_token)
            abort();
    } else if (rc == 1) {
        fuzz_check_ascii(tr.access_token, len, 0x21);
        if (tr.error || status < 200 || status > 299)
            abort();
    } else if (rc != -1 || !err[0]) {
        abort();
    }
    token_response_clear(&tr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body;
    size_t len;
    if (size < 1)
        return 0;
    body = (const char *)data + 1;
    len = size - 1;
    fuzz_poll(body, len, fuzz_statuses[data[0] & 15]);
    fuzz_auth(body, len);
    device_code_auth_clear(NULL);
    return 0;
}
