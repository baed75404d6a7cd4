/* The signing key of the assertion grants (certificate, Google service account): kept as PKCS#8
 * PEM in memory that is wiped on free, which is the form libjwt takes. */
#include "oauth/grant.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/pem.h>

#include "common/secret.h"

int grant_key_set(struct grant_key *gk, EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_secmem());
    char *data = NULL;
    long n;
    int rc = -1;
    if (!b || !PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL))
        goto out;
    n = BIO_get_mem_data(b, &data);
    if (n <= 0 || !data)
        goto out;
    grant_key_clear(gk);
    gk->pem = calloc(1, (size_t)n + 1);
    if (!gk->pem)
        goto out;
    memcpy(gk->pem, data, (size_t)n);
    gk->len = (size_t)n;
    rc = 0;
out:
    BIO_free(b); /* secure memory: cleared on free */
    return rc;
}

char *grant_key_sign(const struct grant_key *gk, jwt_t *jwt)
{
    char *out = NULL;
    if (jwt && gk->pem &&
        jwt_set_alg(jwt, JWT_ALG_RS256, (const unsigned char *)gk->pem, (int)gk->len) == 0)
        out = jwt_encode_str(jwt);
    jwt_free(jwt); /* wipes its copy of the key */
    return out;
}

void grant_key_clear(struct grant_key *gk)
{
    secret_free(gk->pem);
    gk->pem = NULL;
    gk->len = 0;
}
