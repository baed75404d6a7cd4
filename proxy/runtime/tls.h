/* TLS contexts. Device side: the admin's certificate, TLS 1.2+ unless the admin allows old TLS
 * (then security level 0, only on the device-facing listeners). Upstream: always TLS 1.2+, chain
 * and host name (or IP SAN for an IP literal) verified. */
#ifndef SOP_TLS_H
#define SOP_TLS_H

#include <stddef.h>
#include <openssl/ssl.h>

/* min_version: TLS1_VERSION .. TLS1_3_VERSION. Checks that the key matches the certificate.
 * NULL with a message in err (naming the file) on failure. */
SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, int min_version, char *err,
                            size_t errlen);
/* ca_file NULL: the system trust store. */
SSL_CTX *tls_client_ctx_new(const char *ca_file, char *err, size_t errlen);
/* The same, presenting a client certificate (PEM chain) and its key in every handshake (an
 * upstream that trusts this certificate: Exchange Online's certificate-based connector). Checks
 * that the key matches the certificate. cert_file NULL: none (tls_client_ctx_new). */
SSL_CTX *tls_client_ctx_new_cert(const char *ca_file, const char *cert_file, const char *key_file,
                                 char *err, size_t errlen);
/* A client SSL for host: SNI (for DNS names), and verification of the name, or of the IP SAN
 * when host is an IP literal. NULL on failure. */
SSL *tls_client_ssl_new(SSL_CTX *ctx, const char *host);
/* "TLSv1.3 TLS_AES_256_GCM_SHA384" for logs. */
const char *tls_describe(SSL *ssl, char *buf, size_t len);

#endif
