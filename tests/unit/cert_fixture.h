/* Throwaway certificates for TLS unit tests: an EC P-256 key and a self-signed certificate with
 * the subject alternative names a test needs, written as PEM files. Header-only so that every
 * test executable that needs it can include it. */
#ifndef SOP_TEST_CERT_FIXTURE_H
#define SOP_TEST_CERT_FIXTURE_H

#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

static int cert_fixture_add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!ext)
        return -1;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* Writes dir/name.pem (certificate) and dir/name.key. san e.g. "DNS:localhost,IP:127.0.0.1".
 * 0 on success; paths (PATH_MAX-sized buffers) are filled in. */
static int cert_fixture_make(const char *dir, const char *name, const char *cn, const char *san,
                             char *cert_path, size_t cert_len, char *key_path, size_t key_len)
{
    static long serial = 1;
    int rc = -1;
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    FILE *f = NULL;

    if (!pkey || !x)
        goto out;
    snprintf(cert_path, cert_len, "%s/%s.pem", dir, name);
    snprintf(key_path, key_len, "%s/%s.key", dir, name);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, pkey);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, n);
    if (cert_fixture_add_ext(x, NID_basic_constraints, "critical,CA:TRUE") ||
        cert_fixture_add_ext(x, NID_subject_key_identifier, "hash") ||
        cert_fixture_add_ext(x, NID_subject_alt_name, san))
        goto out;
    if (!X509_sign(x, pkey, EVP_sha256()))
        goto out;
    f = fopen(cert_path, "w");
    if (!f || !PEM_write_X509(f, x))
        goto out;
    fclose(f);
    f = fopen(key_path, "w");
    if (!f || !PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL))
        goto out;
    rc = 0;
out:
    if (f)
        fclose(f);
    X509_free(x);
    EVP_PKEY_free(pkey);
    return rc;
}

#endif
