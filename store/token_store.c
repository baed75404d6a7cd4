/* One sealed file per account. The plaintext record inside the envelope (binary, big-endian):
 *   record version (1) | expires_at (8) | lifetime (8) | len (4) access token |
 *   len (4) refresh token | "END"
 * Binary rather than JSON so that every copy of a token is ours to wipe. The envelope's tag
 * already proves the record whole; the end marker is the storage rule's belt and braces. */
#include "store/token_store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "common/durable_file.h"
#include "common/log.h"
#include "common/secret.h"

#define TOKEN_STORE_RECORD_VERSION 1
#define TOKEN_STORE_MAX_TOKEN (32 * 1024)
#define TOKEN_STORE_MAX_PLAIN                                                                      \
    (1 + 8 + 8 + 4 + TOKEN_STORE_MAX_TOKEN + 4 + TOKEN_STORE_MAX_TOKEN + 3)
#define TOKEN_STORE_MAX_FILE (TOKEN_STORE_MAX_PLAIN + AEAD_OVERHEAD)
#define TOKEN_STORE_NAME_MAX 128
#define TOKEN_STORE_END "END"

struct token_store {
    unsigned char key[TOKEN_STORE_KEY_LEN];
    char dir[PATH_MAX]; /* STATE_DIR/tokens */
};

void token_record_clear(struct token_record *rec)
{
    if (!rec)
        return;
    secret_free(rec->access_token);
    secret_free(rec->refresh_token);
    memset(rec, 0, sizeof(*rec));
}

/* Account names become file names: the config's name rule, and no leading dot. */
static int token_store_name_ok(const char *a)
{
    size_t n = 0;
    if (!a || a[0] == '.')
        return 0;
    for (; a[n]; n++)
        if (!((a[n] >= 'a' && a[n] <= 'z') || (a[n] >= 'A' && a[n] <= 'Z') ||
              (a[n] >= '0' && a[n] <= '9') || a[n] == '.' || a[n] == '_' || a[n] == '-'))
            return 0;
    return n > 0 && n <= TOKEN_STORE_NAME_MAX;
}

const char *token_store_path(const struct token_store *s, const char *account, char *buf,
                             size_t len)
{
    int n;
    if (!s || !token_store_name_ok(account))
        return NULL;
    n = snprintf(buf, len, "%s/%s.tok", s->dir, account);
    return n > 0 && (size_t)n < len ? buf : NULL;
}

int token_store_key_read(const char *path, unsigned char key[TOKEN_STORE_KEY_LEN], char *err,
                         size_t errlen)
{
    unsigned char buf[TOKEN_STORE_KEY_LEN + 1];
    size_t len = 0;
    long long size = 0;
    int ret = -1;
    if (secret_read_raw(path, buf, sizeof(buf), &len, &size, err, errlen) != 0)
        goto out;
    if (len != TOKEN_STORE_KEY_LEN || size != TOKEN_STORE_KEY_LEN) {
        snprintf(err, errlen,
                 "%s: must be exactly %d random bytes (it has %lld); make one with: "
                 "head -c 32 /dev/urandom > %s",
                 path, TOKEN_STORE_KEY_LEN, size, path);
        goto out;
    }
    memcpy(key, buf, TOKEN_STORE_KEY_LEN);
    ret = 0;
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    return ret;
}

struct token_store *token_store_new(const char *state_dir, const char *key_file, char *err,
                                    size_t errlen)
{
    struct token_store *s;
    struct stat st;
    int n;

    if (!state_dir || !key_file) {
        snprintf(err, errlen, "token store: no state_dir or key_file");
        return NULL;
    }
    s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (token_store_key_read(key_file, s->key, err, errlen) != 0)
        goto fail;
    n = snprintf(s->dir, sizeof(s->dir), "%s/tokens", state_dir);
    if (n < 0 || (size_t)n >= sizeof(s->dir)) {
        snprintf(err, errlen, "state_dir is too long");
        goto fail;
    }
    if (durable_mkdir(state_dir, err, errlen) < 0 || durable_mkdir(s->dir, err, errlen) < 0)
        goto fail;
    if (stat(s->dir, &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)))
        log_warn("event=token_store_dir_open dir=%s mode=%04o hint=\"chmod 700 %s\"", s->dir,
                 (unsigned)(st.st_mode & 07777), s->dir);
    return s;
fail:
    token_store_free(s);
    return NULL;
}

void token_store_free(struct token_store *s)
{
    if (!s)
        return;
    OPENSSL_cleanse(s, sizeof(*s));
    free(s);
}

/* ---- the record ---- */

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)(v & 0xff);
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)(v & 0xff);
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Encode rec into buf (TOKEN_STORE_MAX_PLAIN bytes). The length, or 0 if a token is too long. */
static size_t token_store_encode(const struct token_record *rec, unsigned char *buf)
{
    size_t at = strlen(rec->access_token ? rec->access_token : "");
    size_t rt = strlen(rec->refresh_token ? rec->refresh_token : "");
    size_t o = 0;
    if (at > TOKEN_STORE_MAX_TOKEN || rt > TOKEN_STORE_MAX_TOKEN)
        return 0;
    buf[o++] = TOKEN_STORE_RECORD_VERSION;
    put_u64(buf + o, (uint64_t)rec->expires_at);
    o += 8;
    put_u64(buf + o, (uint64_t)rec->lifetime);
    o += 8;
    put_u32(buf + o, (uint32_t)at);
    o += 4;
    if (at)
        memcpy(buf + o, rec->access_token, at);
    o += at;
    put_u32(buf + o, (uint32_t)rt);
    o += 4;
    if (rt)
        memcpy(buf + o, rec->refresh_token, rt);
    o += rt;
    memcpy(buf + o, TOKEN_STORE_END, 3);
    return o + 3;
}

/* One length-prefixed string at *o; NULL for an empty one. 0 ok, -1 malformed or no memory. */
static int token_store_decode_str(const unsigned char *buf, size_t len, size_t *o, char **out)
{
    uint32_t n;
    *out = NULL;
    if (len - *o < 4)
        return -1;
    n = get_u32(buf + *o);
    *o += 4;
    if (n > TOKEN_STORE_MAX_TOKEN || len - *o < n || memchr(buf + *o, '\0', n))
        return -1;
    if (n) {
        *out = malloc((size_t)n + 1);
        if (!*out)
            return -1;
        memcpy(*out, buf + *o, n);
        (*out)[n] = '\0';
    }
    *o += n;
    return 0;
}

static int token_store_decode(const unsigned char *buf, size_t len, struct token_record *rec)
{
    size_t o = 0;
    memset(rec, 0, sizeof(*rec));
    if (len < 1 + 8 + 8 || buf[0] != TOKEN_STORE_RECORD_VERSION)
        return -1;
    o = 1;
    rec->expires_at = (int64_t)get_u64(buf + o);
    o += 8;
    rec->lifetime = (int64_t)get_u64(buf + o);
    o += 8;
    if (token_store_decode_str(buf, len, &o, &rec->access_token) != 0 ||
        token_store_decode_str(buf, len, &o, &rec->refresh_token) != 0 || len - o != 3 ||
        memcmp(buf + o, TOKEN_STORE_END, 3) != 0) {
        token_record_clear(rec);
        return -1;
    }
    return 0;
}

/* ---- load ---- */

static void token_store_unreadable(const char *account, const char *path, const char *reason)
{
    log_warn("event=token_store_unreadable account=%s file=%s reason=\"%s\" "
             "effect=\"ignored; a fresh token will be fetched\"",
             account, path, reason);
}

int token_store_load(struct token_store *s, const char *account, int64_t now,
                     struct token_record *rec)
{
    char path[PATH_MAX + 160];
    unsigned char *file = NULL, *plain = NULL;
    size_t flen = 0, fcap = 0, plen = 0;
    const char *why = NULL;
    struct stat st;
    int fd = -1, ret = 0;

    memset(rec, 0, sizeof(*rec));
    if (!token_store_path(s, account, path, sizeof(path)))
        return 0;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno != ENOENT)
            token_store_unreadable(account, path, strerror(errno));
        return 0;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        token_store_unreadable(account, path, "not a regular file");
        goto out;
    }
    if (st.st_size > TOKEN_STORE_MAX_FILE) {
        token_store_unreadable(account, path, "too large");
        goto out;
    }
    fcap = (size_t)st.st_size + 1;
    file = malloc(fcap);
    plain = malloc(TOKEN_STORE_MAX_PLAIN);
    if (!file || !plain) {
        token_store_unreadable(account, path, "out of memory");
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, file + flen, fcap - flen);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            token_store_unreadable(account, path, strerror(errno));
            goto out;
        }
        if (r == 0 || (flen += (size_t)r) > (size_t)st.st_size)
            break;
    }
    if (flen != (size_t)st.st_size) {
        token_store_unreadable(account, path, "changed while being read");
        goto out;
    }
    if (aead_open(s->key, account, file, flen, plain, TOKEN_STORE_MAX_PLAIN, &plen, &why) != 0) {
        token_store_unreadable(account, path, why);
        goto out;
    }
    if (token_store_decode(plain, plen, rec) != 0) {
        token_store_unreadable(account, path, "malformed record");
        goto out;
    }
    if (rec->access_token && rec->expires_at <= now) {
        log_debug("event=token_store_expired account=%s", account);
        secret_free(rec->access_token);
        rec->access_token = NULL;
    }
    if (!rec->access_token && !rec->refresh_token)
        token_record_clear(rec);
    else
        ret = 1;
out:
    if (file) {
        OPENSSL_cleanse(file, fcap);
        free(file);
    }
    if (plain) {
        OPENSSL_cleanse(plain, TOKEN_STORE_MAX_PLAIN);
        free(plain);
    }
    close(fd);
    return ret;
}

/* ---- save ---- */

int token_store_save(struct token_store *s, const char *account, const struct token_record *rec,
                     char *err, size_t errlen)
{
    char path[PATH_MAX + 160], tmp[PATH_MAX + 200];
    unsigned char *plain = NULL, *sealed = NULL;
    unsigned char rnd[6];
    size_t plen, slen = 0;
    int ret = -1;

    if (!token_store_path(s, account, path, sizeof(path))) {
        snprintf(err, errlen, "account name %s cannot be a file name", account ? account : "");
        return -1;
    }
    plain = malloc(TOKEN_STORE_MAX_PLAIN);
    sealed = malloc(TOKEN_STORE_MAX_FILE);
    if (!plain || !sealed) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    plen = token_store_encode(rec, plain);
    if (plen == 0) {
        snprintf(err, errlen, "token longer than %d bytes", TOKEN_STORE_MAX_TOKEN);
        goto out;
    }
    if (aead_seal(s->key, account, plain, plen, sealed, TOKEN_STORE_MAX_FILE, &slen) != 0) {
        snprintf(err, errlen, "cannot encrypt the record");
        goto out;
    }
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        snprintf(err, errlen, "no randomness for the temp file name");
        goto out;
    }
    snprintf(tmp, sizeof(tmp), "%s/.%s.tok.%ld.%02x%02x%02x%02x%02x%02x.tmp", s->dir, account,
             (long)getpid(), rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
    ret = durable_replace(tmp, path, s->dir, sealed, slen, 1, NULL, err, errlen);
out:
    if (plain) {
        OPENSSL_cleanse(plain, TOKEN_STORE_MAX_PLAIN);
        free(plain);
    }
    if (sealed) {
        OPENSSL_cleanse(sealed, TOKEN_STORE_MAX_FILE);
        free(sealed);
    }
    return ret;
}
