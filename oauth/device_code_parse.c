/* Pure parsing of the device authorization answer: see device_code_parse.h. Moved out of
 * device_code.c unchanged, so that it can be tested and fuzzed without an event loop. */
#include "oauth/device_code_parse.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>

#include "common/secret.h"
#include "oauth/http.h"

void device_code_auth_clear(struct device_code_auth *a)
{
    if (!a)
        return;
    secret_free(a->device_code);
    free(a->user_code);
    free(a->verification_uri);
    free(a->message);
    memset(a, 0, sizeof(*a));
}

/* Bytes in lo..0x7e only, 1..max of them. */
static int dc_ascii_ok(const char *s, size_t max, unsigned char lo)
{
    size_t n = 0;
    if (!s)
        return 0;
    for (; *s; s++, n++) {
        unsigned char c = (unsigned char)*s;
        if (c < lo || c > 0x7e || n >= max)
            return 0;
    }
    return n > 0;
}

/* Length of the valid UTF-8 sequence at s and its code point; 0 if invalid. */
static size_t dc_utf8(const unsigned char *s, uint32_t *cp)
{
    size_t len;
    uint32_t v, min;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2;
        v = s[0] & 0x1fu;
        min = 0x80;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3;
        v = s[0] & 0x0fu;
        min = 0x800;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4;
        v = s[0] & 0x07u;
        min = 0x10000;
    } else {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3fu);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

/* The server's sentence for a terminal: C0 controls and DEL become one space; C1 controls (an
 * 8-bit CSI starts an escape sequence too), bidi overrides and invalid UTF-8 are dropped; cut at
 * a character boundary after DEVICE_CODE_MESSAGE_MAX bytes. NULL if nothing is left, or no memory.
 */
static char *dc_clean_text(const char *src)
{
    const unsigned char *s = (const unsigned char *)src;
    char *out = malloc(DEVICE_CODE_MESSAGE_MAX + 1);
    size_t o = 0;
    if (!out)
        return NULL;
    while (*s) {
        uint32_t cp = 0;
        size_t len = 1;
        if (*s < 0x20 || *s == 0x7f) {
            if (o > 0 && out[o - 1] != ' ' && o < DEVICE_CODE_MESSAGE_MAX)
                out[o++] = ' ';
            s++;
            continue;
        }
        if (*s >= 0x80) {
            len = dc_utf8(s, &cp);
            if (len == 0 || cp <= 0x9f || (cp >= 0x202a && cp <= 0x202e) ||
                (cp >= 0x2066 && cp <= 0x2069)) {
                s += len ? len : 1;
                continue;
            }
        }
        if (o + len > DEVICE_CODE_MESSAGE_MAX)
            break;
        memcpy(out + o, s, len);
        o += len;
        s += len;
    }
    while (o > 0 && out[o - 1] == ' ')
        o--;
    out[o] = '\0';
    if (o == 0) {
        free(out);
        return NULL;
    }
    return out;
}

/* A number of seconds: a JSON number or a string of digits (Entra's v1 endpoints send strings).
 * 0 ok, 1 absent, -1 not a number in 0..1e9. */
static int dc_json_seconds(const cJSON *root, const char *name, int64_t *out)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, name);
    double d;
    if (!j || cJSON_IsNull(j))
        return 1;
    if (cJSON_IsNumber(j)) {
        d = j->valuedouble;
    } else if (cJSON_IsString(j) && j->valuestring[0] && strlen(j->valuestring) <= 10) {
        d = 0;
        for (const char *q = j->valuestring; *q; q++) {
            if (*q < '0' || *q > '9')
                return -1;
            d = d * 10 + (*q - '0');
        }
    } else {
        return -1;
    }
    if (!(d >= 0 && d <= 1e9))
        return -1;
    *out = (int64_t)d;
    return 0;
}

static const char *dc_json_string(const cJSON *root, const char *name)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, name);
    return cJSON_IsString(j) ? j->valuestring : NULL;
}

/* The device authorization answer (RFC 8628 3.2), checked. Nothing from the body goes into err.
 * 0 ok, -1 with err. */
int device_code_auth_parse(const char *body, size_t len, struct device_code_auth *a, char *err,
                           size_t errlen)
{
    int ret = -1;
    cJSON *root = cJSON_ParseWithLength(body, len);
    const char *device_code, *user_code, *uri, *message;
    int rc;

    memset(a, 0, sizeof(*a));
    if (!cJSON_IsObject(root)) {
        snprintf(err, errlen, "the answer is not a JSON object");
        goto out;
    }
    device_code = dc_json_string(root, "device_code");
    user_code = dc_json_string(root, "user_code");
    uri = dc_json_string(root, "verification_uri");
    if (!uri) /* Google's name for it */
        uri = dc_json_string(root, "verification_url");
    message = dc_json_string(root, "message");
    if (!dc_ascii_ok(device_code, DEVICE_CODE_MAX_BYTES, 0x21)) {
        snprintf(err, errlen, "device_code is missing, longer than %d bytes or not visible ASCII",
                 DEVICE_CODE_MAX_BYTES);
        goto out;
    }
    if (!dc_ascii_ok(user_code, DEVICE_CODE_USER_CODE_MAX, 0x20)) {
        snprintf(err, errlen,
                 "user_code is missing, longer than %d characters, or has control or non-ASCII "
                 "characters",
                 DEVICE_CODE_USER_CODE_MAX);
        goto out;
    }
    if (!dc_ascii_ok(uri, DEVICE_CODE_URI_MAX, 0x21)) {
        snprintf(err, errlen,
                 "verification_uri is missing, longer than %d characters, or has blanks, control "
                 "or non-ASCII characters",
                 DEVICE_CODE_URI_MAX);
        goto out;
    }
    /* A person opens it and signs in there: nothing but https (http only to loopback: tests). */
    if (strncmp(uri, "https://", 8) != 0 &&
        !(strncmp(uri, "http://", 7) == 0 && http_url_is_loopback(uri))) {
        snprintf(err, errlen, "verification_uri is not an https:// URL");
        goto out;
    }
    rc = dc_json_seconds(root, "expires_in", &a->expires_in);
    if (rc != 0 || a->expires_in < 1) {
        snprintf(err, errlen, "expires_in is missing or not a number of seconds of at least 1");
        goto out;
    }
    if (a->expires_in > DEVICE_CODE_MAX_EXPIRES)
        a->expires_in = DEVICE_CODE_MAX_EXPIRES;
    rc = dc_json_seconds(root, "interval", &a->interval);
    if (rc == 1)
        a->interval = DEVICE_CODE_DEFAULT_INTERVAL;
    else if (rc != 0 || a->interval > DEVICE_CODE_MAX_INTERVAL) {
        snprintf(err, errlen, "interval is not a number of seconds between 0 and %d",
                 DEVICE_CODE_MAX_INTERVAL);
        goto out;
    }
    if (a->interval < 1)
        a->interval = 1;
    a->device_code = secret_dup(device_code);
    a->user_code = strdup(user_code);
    a->verification_uri = strdup(uri);
    a->message = message ? dc_clean_text(message) : NULL;
    if (!a->device_code || !a->user_code || !a->verification_uri) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    ret = 0;
out:
    if (root) {
        /* cJSON_Delete does not wipe, and the tree holds the device code. */
        cJSON *dcj = cJSON_GetObjectItemCaseSensitive(root, "device_code");
        if (cJSON_IsString(dcj))
            OPENSSL_cleanse(dcj->valuestring, strlen(dcj->valuestring));
        cJSON_Delete(root);
    }
    if (ret != 0)
        device_code_auth_clear(a);
    return ret;
}
