/* STATE_DIR/devices.state: the device history across restarts (and across the year an access
 * review looks back on). One JSON document, then a trailer line "end sha256=HEX" over the
 * document's bytes: a file cut short or changed by hand is recognised and ignored whole, never
 * half-used. Written through common/state_file (common/durable_file: a temp file O_EXCL 0600,
 * fsync, rename, fsync the directory). */
#include "proxy/runtime/device_stats_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "common/state_file.h"
#include "proxy/config/config.h"

#define DS_FORMAT "smtp-oauth-proxy devices.state"
#define DS_VERSION 1
#define DS_TRAILER "\nend sha256="
#define DS_HEXLEN 64
/* ~2.5 KB per device at most; a file past this is not ours */
#define DS_FILE_MAX (16u * 1024 * 1024)
/* integers a double holds exactly */
#define DS_NUM_MAX 9007199254740991.0

int device_stats_path(const struct config *cfg, char *path, size_t len)
{
    int n = snprintf(path, len, "%s/%s", cfg->state_dir, DEVICE_STATS_FILE);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

static int sha256_hex(const char *data, size_t len, char hex[DS_HEXLEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen * 2 != DS_HEXLEN)
        return -1;
    for (unsigned i = 0; i < mdlen; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[DS_HEXLEN] = '\0';
    return 0;
}

/* ---- save ---- */

static cJSON *buckets_json(const struct ds_bucket *b, size_t nb)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < nb; i++) {
        if (!b[i].count)
            continue;
        cJSON *pair = cJSON_CreateArray();
        if (!pair || !cJSON_AddItemToArray(a, pair) ||
            !cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)b[i].key)) ||
            !cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)b[i].count))) {
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

static cJSON *entry_json(const struct ds_entry *e)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *h = buckets_json(e->hours, DS_HOURS), *d = buckets_json(e->days, DS_DAYS);
    if (!o || !h || !d || !cJSON_AddStringToObject(o, "name", e->name) ||
        !cJSON_AddNumberToObject(o, "tracked_since", (double)e->tracked_since) ||
        !cJSON_AddNumberToObject(o, "last_seen", (double)e->last_seen) ||
        !cJSON_AddStringToObject(o, "last_result", device_result_str(e->last_result)) ||
        !cJSON_AddNumberToObject(o, "last_result_at", (double)e->last_result_at) ||
        !cJSON_AddStringToObject(o, "last_reply", e->last_reply)) {
        cJSON_Delete(o);
        cJSON_Delete(h);
        cJSON_Delete(d);
        return NULL;
    }
    cJSON_AddItemToObject(o, "hours", h);
    cJSON_AddItemToObject(o, "days", d);
    return o;
}

/* The file's bytes (malloc'd), or NULL: out of memory. */
static char *render(const struct device_stats *ds, size_t *len)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON *list = doc ? cJSON_CreateArray() : NULL;
    char *text = NULL, *out = NULL;
    char hex[DS_HEXLEN + 1];
    if (!list || !cJSON_AddStringToObject(doc, "format", DS_FORMAT) ||
        !cJSON_AddNumberToObject(doc, "version", DS_VERSION)) {
        cJSON_Delete(list);
        goto out;
    }
    cJSON_AddItemToObject(doc, "devices", list);
    for (size_t i = 0; i < ds->n; i++) {
        cJSON *o = entry_json(&ds->e[i]);
        if (!o || !cJSON_AddItemToArray(list, o)) {
            cJSON_Delete(o);
            goto out;
        }
    }
    text = cJSON_Print(doc);
    if (!text || sha256_hex(text, strlen(text), hex) != 0)
        goto out;
    size_t tl = strlen(text);
    size_t total = tl + strlen(DS_TRAILER) + DS_HEXLEN + 1;
    out = malloc(total + 1);
    if (out) {
        snprintf(out, total + 1, "%s%s%s\n", text, DS_TRAILER, hex);
        *len = total;
    }
out:
    cJSON_free(text);
    cJSON_Delete(doc);
    return out;
}

int device_stats_save(const struct device_stats *ds, const char *path, char *err, size_t errlen)
{
    size_t len = 0;
    char *bytes = render(ds, &len);
    return state_file_write_rendered(path, bytes, len, err, errlen);
}

/* ---- load ---- */

/* The whole file, NUL-terminated. 1 read; 0 no file; -1 with err. */
static int read_file(const char *path, char **out, size_t *outlen, char *err, size_t errlen)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)DS_FILE_MAX) {
        snprintf(err, errlen, "%s: not a regular file of at most %u bytes", path, DS_FILE_MAX);
        close(fd);
        return -1;
    }
    size_t cap = (size_t)st.st_size, len = 0;
    char *buf = malloc(cap + 1);
    while (buf && len < cap) {
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (!buf || len != cap) {
        snprintf(err, errlen, "%s: %s", path, buf ? "short read" : "out of memory");
        free(buf);
        return -1;
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    return 1;
}

static int num_ok(const cJSON *v, double *out)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > DS_NUM_MAX ||
        v->valuedouble != (double)(int64_t)v->valuedouble)
        return 0;
    *out = v->valuedouble;
    return 1;
}

static int field_num(const cJSON *o, const char *key, int64_t *out)
{
    double d;
    if (!num_ok(cJSON_GetObjectItemCaseSensitive(o, key), &d))
        return 0;
    *out = (int64_t)d;
    return 1;
}

static int buckets_parse(const cJSON *a, struct ds_bucket *b, size_t nb)
{
    const cJSON *pair;
    memset(b, 0, nb * sizeof(*b));
    if (!cJSON_IsArray(a) || (size_t)cJSON_GetArraySize(a) > nb)
        return 0;
    cJSON_ArrayForEach(pair, a)
    {
        double k, c;
        if (!cJSON_IsArray(pair) || cJSON_GetArraySize(pair) != 2 ||
            !num_ok(cJSON_GetArrayItem(pair, 0), &k) || !num_ok(cJSON_GetArrayItem(pair, 1), &c))
            return 0;
        struct ds_bucket *x = &b[(uint64_t)k % nb];
        if (x->count && x->key >= (int64_t)k)
            continue; /* two periods for one slot: the newer one is the one that counts */
        x->key = (int64_t)k;
        x->count = (uint64_t)c;
    }
    return 1;
}

static int reply_ok(const char *s)
{
    size_t n = strlen(s);
    if (n > DEVICE_STATS_REPLY_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f || s[i] == '"')
            return 0;
    return 1;
}

/* One device of the file into *e (name not set). 0 ok; -1 garbled. */
static int entry_parse(const cJSON *o, struct ds_entry *e)
{
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(o, "last_result");
    const cJSON *rep = cJSON_GetObjectItemCaseSensitive(o, "last_reply");
    if (!field_num(o, "tracked_since", &e->tracked_since) ||
        !field_num(o, "last_seen", &e->last_seen) ||
        !field_num(o, "last_result_at", &e->last_result_at) || !cJSON_IsString(res) ||
        !cJSON_IsString(rep) || !reply_ok(rep->valuestring) ||
        !buckets_parse(cJSON_GetObjectItemCaseSensitive(o, "hours"), e->hours, DS_HOURS) ||
        !buckets_parse(cJSON_GetObjectItemCaseSensitive(o, "days"), e->days, DS_DAYS))
        return -1;
    e->last_result = ds_result_parse(res->valuestring);
    if (e->last_result == DEVICE_RESULT_NONE && strcmp(res->valuestring, "none") != 0)
        return -1;
    memcpy(e->last_reply, rep->valuestring, strlen(rep->valuestring) + 1);
    return 0;
}

/* The document (text[0..len)) checked and parsed into a copy of ds's entries. */
static int parse(struct device_stats *ds, const char *text, size_t len, struct ds_entry *copy,
                 int *changed, char *why, size_t whylen)
{
    const cJSON *list, *o;
    size_t dropped = 0, infile = 0;
    cJSON *doc = cJSON_ParseWithLength(text, len);
    int ret = -1;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(doc, "format");
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(doc, "version");
    if (!cJSON_IsObject(doc) || !cJSON_IsString(fmt) || strcmp(fmt->valuestring, DS_FORMAT) != 0) {
        snprintf(why, whylen, "not a devices.state document");
        goto out;
    }
    if (!cJSON_IsNumber(ver) || ver->valuedouble != DS_VERSION) {
        snprintf(why, whylen, "version %g is not %d", cJSON_IsNumber(ver) ? ver->valuedouble : 0.0,
                 DS_VERSION);
        goto out;
    }
    list = cJSON_GetObjectItemCaseSensitive(doc, "devices");
    if (!cJSON_IsArray(list)) {
        snprintf(why, whylen, "no devices list");
        goto out;
    }
    cJSON_ArrayForEach(o, list)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
        if (!cJSON_IsString(name)) {
            snprintf(why, whylen, "a device without a name");
            goto out;
        }
        struct ds_entry tmp;
        memset(&tmp, 0, sizeof(tmp));
        if (entry_parse(o, &tmp) != 0) {
            snprintf(why, whylen, "device entry garbled");
            goto out;
        }
        /* devices the config no longer names are dropped */
        int kept = 0;
        for (size_t i = 0; i < ds->n; i++) {
            if (strcmp(ds->e[i].name, name->valuestring) == 0) {
                tmp.name = ds->e[i].name;
                copy[i] = tmp;
                kept = 1;
            }
        }
        if (!kept)
            dropped++;
        else
            infile++;
    }
    /* the file changes: a device dropped, or one the file does not know yet */
    *changed = dropped > 0 || infile != ds->n;
    ret = 0;
out:
    cJSON_Delete(doc);
    return ret;
}

int device_stats_load(struct device_stats *ds, const char *path, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0;
    char why[128] = "";
    char hex[DS_HEXLEN + 1];
    int changed = 0;
    int r = read_file(path, &buf, &len, err, errlen);
    if (r <= 0)
        return r;
    struct ds_entry *copy = malloc((ds->n ? ds->n : 1) * sizeof(*copy));
    int ret = -1;
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    memcpy(copy, ds->e, ds->n * sizeof(*copy));
    /* the trailer must end the file: a file cut anywhere fails here */
    size_t tl = strlen(DS_TRAILER);
    if (len < tl + DS_HEXLEN + 1 || buf[len - 1] != '\n' ||
        memcmp(buf + len - 1 - DS_HEXLEN - tl, DS_TRAILER, tl) != 0) {
        snprintf(why, sizeof(why), "no end marker (a torn write?)");
    } else {
        size_t doclen = len - 1 - DS_HEXLEN - tl;
        if (sha256_hex(buf, doclen, hex) != 0 || memcmp(hex, buf + doclen + tl, DS_HEXLEN) != 0)
            snprintf(why, sizeof(why), "checksum mismatch");
        else if (parse(ds, buf, doclen, copy, &changed, why, sizeof(why)) == 0)
            ret = 0;
    }
    if (ret == 0) {
        memcpy(ds->e, copy, ds->n * sizeof(*copy));
        if (changed)
            ds->dirty = 1;
        ret = 1;
    } else {
        snprintf(err, errlen, "%s: %s", path, why);
    }
out:
    free(copy);
    free(buf);
    return ret;
}
