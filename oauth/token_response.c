/* Pure parsing of a token endpoint's JSON answer. No I/O, no logging: the caller decides what
 * to say. Nothing from the body is ever copied into err (it may hold a token). */
#include "oauth/token_response.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>

#include "common/secret.h"

#define TOKEN_RESPONSE_MAX (1024 * 1024)
#define TOKEN_RESPONSE_DESC_MAX 300
#define TOKEN_RESPONSE_ERROR_MAX 64
#define TOKEN_RESPONSE_DEFAULT_EXPIRES 3600L
/* A year: anything longer is a broken IdP, and the arithmetic in the cache stays far from
 * overflow. */
#define TOKEN_RESPONSE_EXPIRES_MAX (365L * 24 * 3600)

/* cJSON_Delete does not wipe: scrub every string first, the tree holds the tokens. */
static void token_response_json_wipe(cJSON *j)
{
    for (; j; j = j->next) {
        if (j->valuestring)
            OPENSSL_cleanse(j->valuestring, strlen(j->valuestring));
        if (j->child)
            token_response_json_wipe(j->child);
    }
}

/* A token goes on an SMTP line inside XOAUTH2 (0x01 separators) and in an HTTP header: only
 * visible ASCII is allowed. */
static int token_response_token_ok(const char *s)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x21 || c > 0x7e)
            return 0;
    }
    return 1;
}

/* error: visible ASCII only (anything else becomes '?'), cut short. */
static char *token_response_clean_error(const char *s)
{
    size_t n = strlen(s);
    if (n > TOKEN_RESPONSE_ERROR_MAX)
        n = TOKEN_RESPONSE_ERROR_MAX;
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = (c >= 0x21 && c <= 0x7e) ? (char)c : '?';
    }
    out[n] = '\0';
    return out;
}

/* error_description: control characters (Entra puts "\r\n" before its Trace ID) become one
 * space, other bytes kept; cut to TOKEN_RESPONSE_DESC_MAX with "..." when longer. */
static char *token_response_clean_desc(const char *s)
{
    char *out = malloc(TOKEN_RESPONSE_DESC_MAX + 1);
    size_t o = 0;
    int cut = 0;
    if (!out)
        return NULL;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char ch = (char)c;
        if (c < 0x20 || c == 0x7f) {
            if (o == 0 || out[o - 1] == ' ')
                continue;
            ch = ' ';
        }
        if (o == TOKEN_RESPONSE_DESC_MAX) {
            cut = 1;
            break;
        }
        out[o++] = ch;
    }
    if (cut)
        memcpy(out + TOKEN_RESPONSE_DESC_MAX - 3, "...", 3);
    while (!cut && o > 0 && out[o - 1] == ' ')
        o--;
    out[o] = '\0';
    return out;
}

long token_response_aadsts(const char *s)
{
    const char *p = s ? strstr(s, "AADSTS") : NULL;
    long v = 0;
    if (!p)
        return 0;
    for (p += 6; *p >= '0' && *p <= '9' && v < 100000000L; p++)
        v = v * 10 + (*p - '0');
    return v;
}

/* expires_in: a JSON number or a string of digits (Entra has sent "3599"). 0 ok, -1 bad. */
static int token_response_expires(const cJSON *j, long *out)
{
    double d;
    if (!j) {
        *out = TOKEN_RESPONSE_DEFAULT_EXPIRES;
        return 0;
    }
    if (cJSON_IsNumber(j)) {
        d = j->valuedouble;
    } else if (cJSON_IsString(j) && j->valuestring[0]) {
        char *end = NULL;
        const char *s = j->valuestring;
        for (const char *q = s; *q; q++)
            if (*q < '0' || *q > '9')
                return -1;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || *end)
            return -1;
        d = (double)v;
    } else {
        return -1;
    }
    if (!(d >= 1 && d <= (double)TOKEN_RESPONSE_EXPIRES_MAX))
        return -1;
    *out = (long)d;
    return 0;
}

int token_response_parse(const char *body, size_t len, long http_status, struct token_response *out,
                         char *err, size_t errlen)
{
    int ret = -1;
    cJSON *root = NULL;
    struct token_response r;
    memset(&r, 0, sizeof(r));
    if (out)
        memset(out, 0, sizeof(*out));
    if (err && errlen)
        err[0] = '\0';
    if (!out || !err || !body) {
        if (err && errlen)
            snprintf(err, errlen, "no answer to parse");
        return -1;
    }
    if (len > TOKEN_RESPONSE_MAX) {
        snprintf(err, errlen, "HTTP %ld: answer larger than %d bytes", http_status,
                 TOKEN_RESPONSE_MAX);
        goto out;
    }
    root = cJSON_ParseWithLength(body, len);
    if (!root) {
        snprintf(err, errlen, "HTTP %ld: answer is not JSON", http_status);
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        snprintf(err, errlen, "HTTP %ld: answer is not a JSON object", http_status);
        goto out;
    }

    const cJSON *error = cJSON_GetObjectItemCaseSensitive(root, "error");
    if (error) {
        if (!cJSON_IsString(error) || !error->valuestring[0]) {
            snprintf(err, errlen, "HTTP %ld: \"error\" is not a non-empty string", http_status);
            goto out;
        }
        const cJSON *desc = cJSON_GetObjectItemCaseSensitive(root, "error_description");
        const cJSON *codes = cJSON_GetObjectItemCaseSensitive(root, "error_codes");
        r.error = token_response_clean_error(error->valuestring);
        if (!r.error)
            goto oom;
        if (cJSON_IsString(desc)) {
            r.error_description = token_response_clean_desc(desc->valuestring);
            if (!r.error_description)
                goto oom;
        }
        if (cJSON_IsArray(codes) && cJSON_IsNumber(codes->child) && codes->child->valuedouble > 0 &&
            codes->child->valuedouble < 1e9)
            r.aadsts = (long)codes->child->valuedouble;
        else if (cJSON_IsString(desc))
            r.aadsts = token_response_aadsts(desc->valuestring);
        ret = 0;
        goto out;
    }

    if (http_status < 200 || http_status > 299) {
        snprintf(err, errlen, "HTTP %ld: answer has no \"error\"", http_status);
        goto out;
    }
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(root, "access_token");
    const cJSON *tt = cJSON_GetObjectItemCaseSensitive(root, "token_type");
    const cJSON *rt = cJSON_GetObjectItemCaseSensitive(root, "refresh_token");
    if (!at) {
        snprintf(err, errlen, "HTTP %ld: answer has no access_token", http_status);
        goto out;
    }
    if (!cJSON_IsString(at) || !token_response_token_ok(at->valuestring)) {
        /* Never say what the bytes were: they are (part of) a token. */
        snprintf(err, errlen, "access_token is empty or has bytes outside 0x21-0x7e");
        goto out;
    }
    if (tt && (!cJSON_IsString(tt) || strcasecmp(tt->valuestring, "Bearer") != 0)) {
        snprintf(err, errlen, "token_type is not Bearer");
        goto out;
    }
    if (rt && !cJSON_IsNull(rt) &&
        (!cJSON_IsString(rt) || !token_response_token_ok(rt->valuestring))) {
        snprintf(err, errlen, "refresh_token is empty or has bytes outside 0x21-0x7e");
        goto out;
    }
    if (token_response_expires(cJSON_GetObjectItemCaseSensitive(root, "expires_in"),
                               &r.expires_in) != 0) {
        snprintf(err, errlen, "expires_in is not a number of seconds between 1 and %ld",
                 TOKEN_RESPONSE_EXPIRES_MAX);
        goto out;
    }
    r.access_token = secret_dup(at->valuestring);
    r.token_type = strdup("Bearer");
    if (cJSON_IsString(rt))
        r.refresh_token = secret_dup(rt->valuestring);
    if (!r.access_token || !r.token_type || (cJSON_IsString(rt) && !r.refresh_token))
        goto oom;
    ret = 1;
    goto out;
oom:
    snprintf(err, errlen, "out of memory");
    ret = -1;
out:
    if (root) {
        token_response_json_wipe(root);
        cJSON_Delete(root);
    }
    if (ret >= 0)
        *out = r;
    else
        token_response_clear(&r);
    return ret;
}

void token_response_clear(struct token_response *r)
{
    if (!r)
        return;
    secret_free(r->access_token);
    secret_free(r->refresh_token);
    free(r->token_type);
    free(r->error);
    free(r->error_description);
    memset(r, 0, sizeof(*r));
}
