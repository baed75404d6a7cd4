#include "proxy/runtime/device.h"

#include <stdlib.h>
#include <string.h>

#include <crypt.h>
#include <openssl/crypto.h>

/* Hashed for an unknown user when no device has a login (then no AUTH is offered anyway). A real
 * yescrypt hash of a random password that nobody knows. */
#define DEVICE_DUMMY_HASH                                                                          \
    "$y$j9T$yAV5Kg8jzJFIZA0GBQ5CB.$qc73EXKR0slZv.NZcMgoVYdSQNxSuQBon8gWdUosha5"

struct device_table {
    const struct config *cfg;
    /* The setting an unknown user's password is hashed against: the first login device's own
     * hash, so the method and cost (and so the time taken) are those of a real check. */
    const char *dummy;
};

struct device_table *device_table_new(const struct config *cfg)
{
    struct device_table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->cfg = cfg;
    t->dummy = DEVICE_DUMMY_HASH;
    for (size_t i = 0; i < cfg->ndevices; i++) {
        if (cfg->devices[i].username && cfg->devices[i].password_hash) {
            t->dummy = cfg->devices[i].password_hash;
            break;
        }
    }
    return t;
}

void device_table_free(struct device_table *t)
{
    free(t);
}

static int device_address_matches(const struct cfg_device *d, const struct sockaddr *sa)
{
    for (size_t i = 0; i < d->naddrs; i++)
        if (cidr_match(&d->addrs[i], sa))
            return 1;
    return 0;
}

const struct cfg_device *device_by_address(const struct device_table *t, const struct sockaddr *sa)
{
    if (!t || !sa)
        return NULL;
    for (size_t i = 0; i < t->cfg->ndevices; i++) {
        const struct cfg_device *d = &t->cfg->devices[i];
        if (!d->username && device_address_matches(d, sa))
            return d;
    }
    return NULL;
}

int device_address_known(const struct device_table *t, const struct sockaddr *sa)
{
    if (!t || !sa)
        return 0;
    for (size_t i = 0; i < t->cfg->ndevices; i++)
        if (device_address_matches(&t->cfg->devices[i], sa))
            return 1;
    return 0;
}

int device_may_match(const struct device_table *t, const struct sockaddr *sa)
{
    if (!t || !sa)
        return 0;
    for (size_t i = 0; i < t->cfg->ndevices; i++) {
        const struct cfg_device *d = &t->cfg->devices[i];
        if ((d->username && d->naddrs == 0) || device_address_matches(d, sa))
            return 1;
    }
    return 0;
}

int device_has_logins(const struct device_table *t)
{
    if (!t)
        return 0;
    for (size_t i = 0; i < t->cfg->ndevices; i++)
        if (t->cfg->devices[i].username)
            return 1;
    return 0;
}

/* 1 if crypt_r(pass, hash) reproduces hash. Failure tokens ("*0") never match a stored hash,
 * since config_load accepts only complete hashes. */
static int device_check_password(const char *hash, const char *pass)
{
    struct crypt_data *data;
    const char *out;
    int ok = 0;

    /* struct crypt_data is about 32 KiB: too big for a daemon's stack. calloc: libxcrypt wants it
     * zeroed before first use. */
    data = calloc(1, sizeof(*data));
    if (!data)
        return 0;
    out = crypt_r(pass, hash, data);
    if (out && out[0] != '*') {
        size_t len = strlen(hash);
        ok = strlen(out) == len && CRYPTO_memcmp(out, hash, len) == 0;
    }
    /* The buffers hold the password and material derived from it. */
    OPENSSL_cleanse(data, sizeof(*data));
    free(data);
    return ok;
}

const struct cfg_device *device_authenticate(const struct device_table *t,
                                             const struct sockaddr *sa, const char *user,
                                             const char *pass, const char **why)
{
    const struct cfg_device *d = NULL;
    int pass_ok;

    *why = "unknown user";
    if (!t || !sa || !user || !pass)
        return NULL;
    for (size_t i = 0; i < t->cfg->ndevices; i++) {
        const struct cfg_device *cand = &t->cfg->devices[i];
        if (cand->username && cand->password_hash && strcmp(cand->username, user) == 0) {
            d = cand;
            break;
        }
    }
    if (!d) {
        /* Same work as for a known user, so response time does not reveal which users exist. */
        (void)device_check_password(t->dummy, pass);
        return NULL;
    }
    /* Hash even when the address is refused: the timing must not tell the two apart either. */
    pass_ok = device_check_password(d->password_hash, pass);
    if (d->naddrs && !device_address_matches(d, sa)) {
        *why = "address not allowed for this user";
        return NULL;
    }
    if (!pass_ok) {
        *why = "wrong password";
        return NULL;
    }
    *why = NULL;
    return d;
}
