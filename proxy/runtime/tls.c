/* TLS contexts for both sides of the relay. The device side may be loosened for old copiers
 * (TLS 1.0/1.1 at security level 0) only when the admin asks; the upstream side never is. */
#include "proxy/runtime/tls.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

/* OpenSSL's reason for the most recent error, and clear the queue so a later failure does not
 * report a stale reason. */
static const char *tls_last_error(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (e == 0) {
        snprintf(buf, len, "unknown error");
    } else {
        const char *reason = ERR_reason_error_string(e);
        if (reason)
            snprintf(buf, len, "%s", reason);
        else
            ERR_error_string_n(e, buf, len);
    }
    ERR_clear_error();
    return buf;
}

static int tls_is_ip_literal(const char *host)
{
    unsigned char addr[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
}

static const char *tls_version_name(int v)
{
    switch (v) {
    case TLS1_VERSION:
        return "TLSv1";
    case TLS1_1_VERSION:
        return "TLSv1.1";
    case TLS1_2_VERSION:
        return "TLSv1.2";
    case TLS1_3_VERSION:
        return "TLSv1.3";
    default:
        return "?";
    }
}

static int tls_use_cert(SSL_CTX *ctx, const char *cert_file, const char *key_file, char *err,
                        size_t errlen);

SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, int min_version, char *err,
                            size_t errlen)
{
    char reason[256];
    SSL_CTX *ctx = NULL;

    if (min_version < TLS1_VERSION || min_version > TLS1_3_VERSION) {
        snprintf(err, errlen, "invalid minimum TLS version 0x%x", (unsigned)min_version);
        goto fail;
    }
    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "SSL_CTX_new: %s", tls_last_error(reason, sizeof(reason)));
        goto fail;
    }
    /* OpenSSL 3 refuses TLS 1.0/1.1 above security level 0 whatever the protocol range says;
     * old copiers need both, and only this listener gets it. */
    if (min_version < TLS1_2_VERSION)
        SSL_CTX_set_security_level(ctx, 0);
    if (!SSL_CTX_set_min_proto_version(ctx, min_version)) {
        snprintf(err, errlen, "cannot set minimum TLS version %s: %s",
                 tls_version_name(min_version), tls_last_error(reason, sizeof(reason)));
        goto fail;
    }
    /* Renegotiation initiated by a peer is a CPU-exhaustion vector and no copier needs it. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (tls_use_cert(ctx, cert_file, key_file, err, errlen) != 0)
        goto fail;
    return ctx;

fail:
    SSL_CTX_free(ctx);
    return NULL;
}

/* The certificate and key into ctx, the key checked against it. 0 ok; -1 with err. */
static int tls_use_cert(SSL_CTX *ctx, const char *cert_file, const char *key_file, char *err,
                        size_t errlen)
{
    char reason[256];
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        snprintf(err, errlen, "%s: cannot load certificate chain: %s", cert_file,
                 tls_last_error(reason, sizeof(reason)));
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        /* OpenSSL already compares the key with the loaded certificate here; say so plainly,
         * it is the admin's most likely mistake. */
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
            snprintf(err, errlen, "%s: private key does not match certificate %s", key_file,
                     cert_file);
        else
            snprintf(err, errlen, "%s: cannot load private key: %s", key_file,
                     tls_last_error(reason, sizeof(reason)));
        ERR_clear_error();
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "%s: private key does not match certificate %s: %s", key_file,
                 cert_file, tls_last_error(reason, sizeof(reason)));
        return -1;
    }
    return 0;
}

SSL_CTX *tls_client_ctx_new_cert(const char *ca_file, const char *cert_file, const char *key_file,
                                 char *err, size_t errlen)
{
    SSL_CTX *ctx = tls_client_ctx_new(ca_file, err, errlen);
    if (ctx && cert_file && *cert_file &&
        tls_use_cert(ctx, cert_file, key_file ? key_file : "", err, errlen) != 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

SSL_CTX *tls_client_ctx_new(const char *ca_file, char *err, size_t errlen)
{
    char reason[256];
    SSL_CTX *ctx;

    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "SSL_CTX_new: %s", tls_last_error(reason, sizeof(reason)));
        return NULL;
    }
    /* Exchange Online refuses anything older, and so do we towards any upstream. */
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
        snprintf(err, errlen, "cannot set minimum TLS version: %s",
                 tls_last_error(reason, sizeof(reason)));
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    /* The handshake itself fails on a bad chain or name, so no byte is ever sent to an
     * unverified server. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (ca_file && *ca_file) {
        if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
            snprintf(err, errlen, "%s: cannot load CA certificates: %s", ca_file,
                     tls_last_error(reason, sizeof(reason)));
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        snprintf(err, errlen, "cannot load the system trust store: %s",
                 tls_last_error(reason, sizeof(reason)));
        goto fail;
    }
    return ctx;

fail:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL *tls_client_ssl_new(SSL_CTX *ctx, const char *host)
{
    SSL *ssl;

    if (!ctx || !host || !*host)
        return NULL;
    ssl = SSL_new(ctx);
    if (!ssl)
        return NULL;
    if (tls_is_ip_literal(host)) {
        /* SNI must not carry an IP literal (RFC 6066 3); check the certificate's IP SAN. */
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1)
            goto fail;
    } else {
        if (SSL_set_tlsext_host_name(ssl, host) != 1)
            goto fail;
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (SSL_set1_host(ssl, host) != 1)
            goto fail;
    }
    return ssl;

fail:
    SSL_free(ssl);
    return NULL;
}

const char *tls_describe(SSL *ssl, char *buf, size_t len)
{
    if (!buf || len == 0)
        return "";
    if (!ssl) {
        snprintf(buf, len, "none");
        return buf;
    }
    const SSL_CIPHER *cipher = SSL_get_current_cipher(ssl);
    snprintf(buf, len, "%s %s", SSL_get_version(ssl),
             cipher ? SSL_CIPHER_get_name(cipher) : "(none)");
    return buf;
}
