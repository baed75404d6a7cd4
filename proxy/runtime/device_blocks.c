/* The block list and its file; see device_blocks.h. A change is written (temp file, fsync,
 * rename, fsync of the directory) before it takes effect in memory: what `devices block` said
 * was done survives a crash straight after. Changes are rare admin acts or an automatic block,
 * a small file each, so the write runs on the loop. */
#include "proxy/runtime/device_blocks.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/state_file.h"
#include "proxy/config/config.h"

/* the longest line: name, since, by, reason, 3 spaces and LF */
#define LINE_MAX_LEN (DEVICE_BLOCK_NAME_MAX + 20 + 8 + DEVICE_BLOCK_REASON_MAX + 4)
#define FILE_MAX ((size_t)DEVICE_BLOCKS_MAX * LINE_MAX_LEN + sizeof(DEVICE_BLOCKS_MAGIC) + 1)

struct device_blocks {
    char *path; /* NULL: not persisted */
    struct device_block *e;
    size_t n;
};

struct device_blocks *device_blocks_new(const char *path)
{
    struct device_blocks *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    if (path && !(b->path = strdup(path))) {
        free(b);
        return NULL;
    }
    return b;
}

void device_blocks_free(struct device_blocks *b)
{
    if (!b)
        return;
    free(b->e);
    free(b->path);
    free(b);
}

int device_block_name_ok(const char *name)
{
    size_t n = 0;
    if (!name)
        return 0;
    for (; name[n]; n++) {
        char c = name[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return n > 0 && n <= DEVICE_BLOCK_NAME_MAX;
}

char *device_block_sanitize(char *dst, size_t dstlen, const char *src)
{
    size_t o = 0;
    if (dstlen == 0)
        return dst;
    if (!src)
        src = "";
    while (*src == ' ')
        src++;
    for (; *src && o + 1 < dstlen && o < DEVICE_BLOCK_REASON_MAX; src++) {
        unsigned char c = (unsigned char)*src;
        dst[o++] = c >= 0x20 && c <= 0x7e ? (char)c : '?';
    }
    while (o > 0 && dst[o - 1] == ' ')
        o--;
    dst[o] = '\0';
    return dst;
}

int device_blocks_path(const struct config *cfg, char *path, size_t len)
{
    int n = snprintf(path, len, "%s/%s", cfg->state_dir, DEVICE_BLOCKS_FILE);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

const struct device_block *device_blocks_get(const struct device_blocks *b, const char *name)
{
    if (!b || !name)
        return NULL;
    for (size_t i = 0; i < b->n; i++)
        if (strcmp(b->e[i].name, name) == 0)
            return &b->e[i];
    return NULL;
}

size_t device_blocks_count(const struct device_blocks *b)
{
    return b ? b->n : 0;
}

/* ---- the file ---- */

static char *render(const struct device_block *e, size_t n, size_t *len)
{
    size_t cap = sizeof(DEVICE_BLOCKS_MAGIC) + 1 + n * LINE_MAX_LEN + 1, o = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    o += (size_t)snprintf(out, cap, "%s\n", DEVICE_BLOCKS_MAGIC);
    for (size_t i = 0; i < n && o < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s %" PRId64 " %s %s\n", e[i].name, e[i].since,
                              e[i].by, e[i].reason);
    *len = o < cap ? o : cap - 1;
    return out;
}

static int save(const struct device_blocks *b, const struct device_block *e, size_t n, char *err,
                size_t errlen)
{
    size_t len = 0;
    if (!b->path)
        return 0;
    char *bytes = render(e, n, &len);
    return state_file_write_rendered(b->path, bytes, len, err, errlen);
}

/* One line (NUL-terminated, without its LF) into e; 0 ok, -1 with why. */
static int parse_line(char *line, struct device_block *e, const char **why)
{
    char *sp1 = strchr(line, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    char *sp3 = sp2 ? strchr(sp2 + 1, ' ') : NULL;
    if (!sp3) {
        *why = "expected NAME SINCE BY REASON";
        return -1;
    }
    *sp1 = *sp2 = *sp3 = '\0';
    if (!device_block_name_ok(line)) {
        *why = "not a device name";
        return -1;
    }
    char *end;
    errno = 0;
    long long since = strtoll(sp1 + 1, &end, 10);
    if (errno || end == sp1 + 1 || *end || since <= 0) {
        *why = "SINCE is not a time";
        return -1;
    }
    if (strcmp(sp2 + 1, "admin") != 0 && strcmp(sp2 + 1, "auto") != 0) {
        *why = "BY is neither admin nor auto";
        return -1;
    }
    const char *reason = sp3 + 1;
    size_t rl = strlen(reason);
    char clean[DEVICE_BLOCK_REASON_MAX + 1];
    if (rl > DEVICE_BLOCK_REASON_MAX ||
        strcmp(device_block_sanitize(clean, sizeof(clean), reason), reason) != 0) {
        *why = "REASON is not printable ASCII of at most 200 bytes";
        return -1;
    }
    memset(e, 0, sizeof(*e));
    memcpy(e->name, line, strlen(line));
    e->since = (int64_t)since;
    snprintf(e->by, sizeof(e->by), "%s", sp2 + 1);
    memcpy(e->reason, reason, rl);
    return 0;
}

/* The entries read so far. */
struct load {
    struct device_block *e;
    size_t n;
};

static const char *load_line(void *arg, char *line, size_t lineno)
{
    struct load *ld = arg;
    const char *why = NULL;
    (void)lineno;
    if (ld->n == DEVICE_BLOCKS_MAX)
        return "too many entries";
    struct device_block *ne = realloc(ld->e, (ld->n + 1) * sizeof(*ld->e));
    if (!ne)
        return "out of memory";
    ld->e = ne;
    if (parse_line(line, &ld->e[ld->n], &why) != 0)
        return why;
    if (device_blocks_get(&(struct device_blocks){.e = ld->e, .n = ld->n}, ld->e[ld->n].name))
        return "a device listed twice";
    ld->n++;
    return NULL;
}

int device_blocks_load(struct device_blocks *b, char *err, size_t errlen)
{
    struct load ld = {0};
    if (!b->path)
        return 0;
    int r = state_file_load(b->path, FILE_MAX, DEVICE_BLOCKS_MAGIC, "not a device block file",
                            load_line, &ld, err, errlen);
    if (r <= 0) {
        free(ld.e);
        return r;
    }
    free(b->e);
    b->e = ld.e;
    b->n = ld.n;
    return 1;
}

int device_blocks_set(struct device_blocks *b, const char *name, const char *by, const char *reason,
                      int64_t now, char *err, size_t errlen)
{
    if (!device_block_name_ok(name)) {
        snprintf(err, errlen, "not a device name");
        return -1;
    }
    const struct device_block *old = device_blocks_get(b, name);
    size_t idx = old ? (size_t)(old - b->e) : b->n;
    if (!old && b->n == DEVICE_BLOCKS_MAX) {
        snprintf(err, errlen, "too many blocked devices (at most %d)", DEVICE_BLOCKS_MAX);
        return -1;
    }
    struct device_block *e = malloc((b->n + 1) * sizeof(*e));
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (b->n)
        memcpy(e, b->e, b->n * sizeof(*e));
    struct device_block *nb = &e[idx];
    memset(nb, 0, sizeof(*nb));
    snprintf(nb->name, sizeof(nb->name), "%s", name);
    nb->since = now;
    snprintf(nb->by, sizeof(nb->by), "%s", by && strcmp(by, "auto") == 0 ? "auto" : "admin");
    device_block_sanitize(nb->reason, sizeof(nb->reason), reason);
    if (!nb->reason[0])
        snprintf(nb->reason, sizeof(nb->reason), "blocked by an administrator");
    size_t n = old ? b->n : b->n + 1;
    if (save(b, e, n, err, errlen) != 0) {
        free(e);
        return -1;
    }
    free(b->e);
    b->e = e;
    b->n = n;
    return 0;
}

int device_blocks_clear(struct device_blocks *b, const char *name, char *err, size_t errlen)
{
    const struct device_block *old = device_blocks_get(b, name);
    if (!old)
        return 0;
    size_t idx = (size_t)(old - b->e);
    struct device_block *e = malloc((b->n ? b->n : 1) * sizeof(*e));
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(e, b->e, idx * sizeof(*e));
    memcpy(e + idx, b->e + idx + 1, (b->n - idx - 1) * sizeof(*e));
    if (save(b, e, b->n - 1, err, errlen) != 0) {
        free(e);
        return -1;
    }
    free(b->e);
    b->e = e;
    b->n--;
    return 1;
}

int device_blocks_json(const struct device_blocks *b, struct cJSON *doc)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(doc, "devices");
    cJSON *o;
    size_t known = 0;
    cJSON_ArrayForEach(o, list)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
        const struct device_block *bl =
            cJSON_IsString(name) ? device_blocks_get(b, name->valuestring) : NULL;
        if (!cJSON_AddBoolToObject(o, "blocked", bl != NULL))
            return -1;
        if (!bl)
            continue;
        known++;
        if (!cJSON_AddNumberToObject(o, "blocked_since", (double)bl->since) ||
            !cJSON_AddStringToObject(o, "blocked_by", bl->by) ||
            !cJSON_AddStringToObject(o, "blocked_reason", bl->reason))
            return -1;
    }
    cJSON *other = cJSON_AddArrayToObject(doc, "blocked_other");
    if (!other)
        return -1;
    for (size_t i = 0; b && known < b->n && i < b->n; i++) {
        int found = 0;
        cJSON_ArrayForEach(o, list)
        {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
            if (cJSON_IsString(name) && strcmp(name->valuestring, b->e[i].name) == 0)
                found = 1;
        }
        cJSON *n = found ? NULL : cJSON_CreateString(b->e[i].name);
        if (!found && (!n || !cJSON_AddItemToArray(other, n))) {
            cJSON_Delete(n);
            return -1;
        }
    }
    return 0;
}
