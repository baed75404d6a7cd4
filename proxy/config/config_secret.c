/* Values that are files on this host or credentials: PEM files we must be able to read, private
 * keys and the client secret file that nobody else may read, and the devices' password hashes.
 * Messages never quote a secret. */
#include "proxy/config/config_int.h"

#include <ctype.h>
#include <stddef.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <crypt.h>
#include <openssl/crypto.h>

#include "common/secret.h"
#include "store/token_store.h"

#define CONFIG_HASH_HINT                                                                           \
    "use yescrypt ($y$), gost-yescrypt ($gy$), scrypt ($7$), sha512crypt ($6$), sha256crypt "      \
    "($5$) or bcrypt ($2b$), e.g. the output of: mkpasswd -m yescrypt"

/* A regular file this process can read. 0 ok. */
static int config_secret_readable(struct config_ctx *c, const struct config_key *k,
                                  const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0 || access(path, R_OK) != 0) {
        config_err(c, c->lineno, "%s: %s: %s", k->name, path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        config_err(c, c->lineno, "%s: %s: not a regular file", k->name, path);
        return -1;
    }
    return 0;
}

void config_secret_set_file(struct config_ctx *c, struct config_section *s,
                            const struct config_key *k, const char *value)
{
    if (config_secret_readable(c, k, value) == 0)
        config_value_store(c, s, k, value);
}

/* A private key: readable by us, by nobody else. */
void config_secret_set_key_file(struct config_ctx *c, struct config_section *s,
                                const struct config_key *k, const char *value)
{
    char err[512];
    if (config_secret_readable(c, k, value) != 0)
        return;
    if (secret_check_file(value, err, sizeof(err)) != 0) {
        config_err(c, c->lineno, "%s: %s", k->name, err);
        return;
    }
    config_value_store(c, s, k, value);
}

void config_secret_set_secret_file(struct config_ctx *c, struct config_section *s,
                                   const struct config_key *k, const char *value)
{
    char err[512];
    struct cfg_account *a = &c->cfg->accounts[s->index];
    char *secret = NULL;
    /* secret_read_file's messages never contain the file's content. */
    if (secret_read_file(value, &secret, err, sizeof(err)) != 0) {
        config_err(c, c->lineno, "%s: %s", k->name, err);
        return;
    }
    secret_free(a->client_secret);
    a->client_secret = secret;
    config_value_store(c, s, k, value);
}

/* upstream_password_file, in [upstream] or an account: the password goes into the cfg_upstream
 * that holds the path (the key's field is that struct's password_file). One line: a CR or LF
 * inside is a file holding something else. */
void config_secret_set_password_file(struct config_ctx *c, struct config_section *s,
                                     const struct config_key *k, const char *value)
{
    char err[512];
    char *pw = NULL;
    if (secret_read_file(value, &pw, err, sizeof(err)) != 0) {
        config_err(c, c->lineno, "%s: %s", k->name, err);
        return;
    }
    if (strpbrk(pw, "\r\n")) {
        secret_free(pw);
        config_err(c, c->lineno, "%s: %s: holds more than one line; put the password alone in it",
                   k->name, value);
        return;
    }
    char *field = config_value_field(c, s, k->offset);
    struct cfg_upstream *u =
        (struct cfg_upstream *)(void *)(field - offsetof(struct cfg_upstream, password_file));
    secret_free(u->password);
    u->password = pw;
    config_value_store(c, s, k, value);
}

/* The token store's key: exactly 32 bytes that nobody else can read. Read here to check it (then
 * wiped); the store reads it again when the daemon starts. */
void config_secret_set_store_key(struct config_ctx *c, struct config_section *s,
                                 const struct config_key *k, const char *value)
{
    char err[1024];
    unsigned char key[TOKEN_STORE_KEY_LEN];
    if (token_store_key_read(value, key, err, sizeof(err)) != 0) {
        config_err(c, c->lineno, "%s: %s", k->name, err);
        return;
    }
    OPENSSL_cleanse(key, sizeof(key));
    config_value_store(c, s, k, value);
}

/* A complete hash of a kind we accept: crypt_checksalt() only looks at the setting, so the hash
 * part is checked here too (a bare salt would make every login fail). */
static int config_secret_hash_ok(const char *hash)
{
    static const struct {
        const char *prefix;
        size_t tail; /* characters after the last '$' */
    } kinds[] = {{"$y$", 43}, {"$gy$", 43}, {"$7$", 43}, {"$6$", 86}, {"$5$", 43}, {"$2b$", 53}};
    const char *tail = strrchr(hash, '$');
    int salt = crypt_checksalt(hash);
    /* libxcrypt rates sha256crypt "legacy"; it is still accepted for devices whose hashes were
     * made elsewhere, as the documentation says (yescrypt is the recommendation). */
    if (!tail || (salt != CRYPT_SALT_OK &&
                  !(salt == CRYPT_SALT_METHOD_LEGACY && strncmp(hash, "$5$", 3) == 0)))
        return 0;
    tail++;
    for (const char *p = tail; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '/')
            return 0;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        size_t plen = strlen(kinds[i].prefix);
        if (strncmp(hash, kinds[i].prefix, plen) == 0)
            return tail > hash + plen && strlen(tail) == kinds[i].tail;
    }
    return 0;
}

void config_secret_set_password_hash(struct config_ctx *c, struct config_section *s,
                                     const struct config_key *k, const char *value)
{
    /* The hash itself is not echoed: it is password-equivalent for offline guessing. */
    if (!config_secret_hash_ok(value)) {
        config_err(c, c->lineno, "%s: not a complete crypt(3) hash of a supported kind; %s",
                   k->name, CONFIG_HASH_HINT);
        return;
    }
    config_value_store(c, s, k, value);
}
