/* Parsing a refresh-token file; see cli_rtfile.h. Every copy of the token is wiped. */
#include "proxy/admin/cli_rtfile.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/secret.h"
#include "proxy/admin/control_proto.h"

/* cJSON keeps its own copies of the strings: wipe them before they are freed. */
static void wipe_json(cJSON *j)
{
    for (; j; j = j->next) {
        if (cJSON_IsString(j) && j->valuestring)
            memset(j->valuestring, 0, strlen(j->valuestring));
        wipe_json(j->child);
    }
}

static int token_ok(const char *t, size_t len, char *err, size_t errlen)
{
    if (len == 0) {
        snprintf(err, errlen, "no refresh token in it");
        return -1;
    }
    if (len > CONTROL_PAYLOAD_MAX) {
        snprintf(err, errlen, "the refresh token is longer than %d bytes", CONTROL_PAYLOAD_MAX);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c <= 0x20 || c > 0x7e) {
            snprintf(err, errlen,
                     "not one refresh token: %s at byte %zu (expected a bare token "
                     "or JSON with a \"refresh_token\" field)",
                     isspace(c) ? "white space" : "a non-printable character", i + 1);
            return -1;
        }
    }
    return 0;
}

int cli_refresh_token_parse(const char *text, char **out, char *err, size_t errlen)
{
    const char *s = text, *e;
    while (*s && isspace((unsigned char)*s))
        s++;
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        e--;
    if (e == s) {
        snprintf(err, errlen, "empty");
        return -1;
    }
    if (*s != '{') {
        if (token_ok(s, (size_t)(e - s), err, errlen) != 0)
            return -1;
        char *copy = secret_dup(s);
        if (!copy) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        copy[e - s] = '\0';
        *out = copy;
        return 0;
    }
    int ret = -1;
    cJSON *j = cJSON_ParseWithLength(s, (size_t)(e - s));
    const cJSON *rt = cJSON_GetObjectItemCaseSensitive(j, "refresh_token");
    if (!j) {
        snprintf(err, errlen, "starts with '{' but is not valid JSON");
    } else if (!cJSON_IsString(rt) || !rt->valuestring) {
        snprintf(err, errlen, "JSON without a \"refresh_token\" string");
    } else if (token_ok(rt->valuestring, strlen(rt->valuestring), err, errlen) == 0) {
        *out = secret_dup(rt->valuestring);
        if (*out)
            ret = 0;
        else
            snprintf(err, errlen, "out of memory");
    }
    wipe_json(j);
    cJSON_Delete(j);
    return ret;
}

int cli_refresh_token_read(const char *path, char **out, char *err, size_t errlen)
{
    char *text = NULL, why[512];
    if (secret_read_file(path, &text, err, errlen) != 0)
        return -1;
    int ret = cli_refresh_token_parse(text, out, why, sizeof(why));
    if (ret != 0)
        snprintf(err, errlen, "%s: %s", path, why);
    secret_free(text);
    return ret;
}
