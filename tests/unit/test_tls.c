/* TLS contexts: errors name the file and OpenSSL's reason, old TLS for old copiers really
 * negotiates (security level 0), the upstream side verifies names and IP SANs. Handshakes run in
 * memory over BIO pairs. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "proxy/runtime/tls.h"
#include "cert_fixture.h"

static char tmpdir[] = "/tmp/test_tls.XXXXXX";
static char good_cert[PATH_MAX], good_key[PATH_MAX];
static char other_cert[PATH_MAX], other_key[PATH_MAX];

/* Drive both ends until both finished or one failed. 1 = both handshakes done. */
static int handshake(SSL *client, SSL *server)
{
    BIO *cb = NULL, *sb = NULL;
    BIO_new_bio_pair(&cb, 0, &sb, 0);
    SSL_set_bio(client, cb, cb);
    SSL_set_bio(server, sb, sb);
    SSL_set_connect_state(client);
    SSL_set_accept_state(server);
    int cdone = 0, sdone = 0;
    for (int i = 0; i < 100 && !(cdone && sdone); i++) {
        if (!cdone) {
            int r = SSL_do_handshake(client);
            if (r == 1)
                cdone = 1;
            else if (SSL_get_error(client, r) != SSL_ERROR_WANT_READ)
                return 0;
        }
        if (!sdone) {
            int r = SSL_do_handshake(server);
            if (r == 1)
                sdone = 1;
            else if (SSL_get_error(server, r) != SSL_ERROR_WANT_READ)
                return 0;
        }
    }
    return cdone && sdone;
}

static void test_server_ctx_defaults(void **state)
{
    (void)state;
    char err[512];
    SSL_CTX *ctx = tls_server_ctx_new(good_cert, good_key, TLS1_2_VERSION, err, sizeof(err));
    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
    assert_true(SSL_CTX_get_security_level(ctx) >= 1);
    assert_true(SSL_CTX_get_options(ctx) & SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_free(ctx);
}

static void test_server_ctx_old_tls_negotiates_tls10(void **state)
{
    (void)state;
    char err[512];
    SSL_CTX *sctx = tls_server_ctx_new(good_cert, good_key, TLS1_VERSION, err, sizeof(err));
    assert_non_null(sctx);
    assert_int_equal(SSL_CTX_get_security_level(sctx), 0);
    assert_int_equal(SSL_CTX_get_min_proto_version(sctx), TLS1_VERSION);

    /* An old copier: TLS 1.0 only. */
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_security_level(cctx, 0);
    SSL_CTX_set_min_proto_version(cctx, TLS1_VERSION);
    SSL_CTX_set_max_proto_version(cctx, TLS1_VERSION);
    SSL *c = SSL_new(cctx), *s = SSL_new(sctx);
    assert_true(handshake(c, s));
    assert_int_equal(SSL_version(s), TLS1_VERSION);
    char desc[128];
    assert_ptr_equal(tls_describe(s, desc, sizeof(desc)), desc);
    assert_int_equal(strncmp(desc, "TLSv1 ", 6), 0);
    SSL_free(c);
    SSL_free(s);

    /* The default listener refuses the same client. */
    SSL_CTX *strict = tls_server_ctx_new(good_cert, good_key, TLS1_2_VERSION, err, sizeof(err));
    c = SSL_new(cctx);
    s = SSL_new(strict);
    assert_false(handshake(c, s));
    ERR_clear_error();
    SSL_free(c);
    SSL_free(s);
    SSL_CTX_free(strict);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
}

static void test_server_ctx_errors_name_the_file(void **state)
{
    (void)state;
    char err[512];
    assert_null(
        tls_server_ctx_new("/nonexistent/cert.pem", good_key, TLS1_2_VERSION, err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/cert.pem"));
    assert_null(
        tls_server_ctx_new(good_cert, "/nonexistent/key.pem", TLS1_2_VERSION, err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/key.pem"));
    /* A key that belongs to another certificate. */
    assert_null(tls_server_ctx_new(good_cert, other_key, TLS1_2_VERSION, err, sizeof(err)));
    assert_non_null(strstr(err, other_key));
    assert_non_null(strstr(err, "does not match"));
    assert_null(tls_server_ctx_new(good_cert, good_key, 0x0200, err, sizeof(err)));
    assert_non_null(strstr(err, "TLS version"));
}

static void test_client_ctx(void **state)
{
    (void)state;
    char err[512];
    assert_null(tls_client_ctx_new("/nonexistent/ca.pem", err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/ca.pem"));
    SSL_CTX *ctx = tls_client_ctx_new(good_cert, err, sizeof(err));
    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
    assert_int_equal(SSL_CTX_get_verify_mode(ctx) & SSL_VERIFY_PEER, SSL_VERIFY_PEER);
    SSL_CTX_free(ctx);
    ctx = tls_client_ctx_new(NULL, err, sizeof(err)); /* the system store */
    assert_non_null(ctx);
    SSL_CTX_free(ctx);
}

static void test_client_ssl_names(void **state)
{
    (void)state;
    char err[512];
    SSL_CTX *ctx = tls_client_ctx_new(good_cert, err, sizeof(err));
    assert_null(tls_client_ssl_new(ctx, ""));
    assert_null(tls_client_ssl_new(NULL, "localhost"));

    SSL *ssl = tls_client_ssl_new(ctx, "smtp.office365.com");
    assert_non_null(ssl);
    assert_string_equal(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name), "smtp.office365.com");
    assert_string_equal(X509_VERIFY_PARAM_get0_host(SSL_get0_param(ssl), 0), "smtp.office365.com");
    SSL_free(ssl);

    ssl = tls_client_ssl_new(ctx, "127.0.0.1");
    assert_non_null(ssl);
    assert_null(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)); /* no SNI for literals */
    char *ip = X509_VERIFY_PARAM_get1_ip_asc(SSL_get0_param(ssl));
    assert_string_equal(ip, "127.0.0.1");
    OPENSSL_free(ip);
    SSL_free(ssl);

    ssl = tls_client_ssl_new(ctx, "::1");
    assert_non_null(ssl);
    assert_null(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
    SSL_free(ssl);
    SSL_CTX_free(ctx);
}

static void test_client_verifies(void **state)
{
    (void)state;
    char err[512];
    SSL_CTX *cctx = tls_client_ctx_new(good_cert, err, sizeof(err));
    SSL_CTX *sctx = tls_server_ctx_new(good_cert, good_key, TLS1_2_VERSION, err, sizeof(err));
    SSL_CTX *octx = tls_server_ctx_new(other_cert, other_key, TLS1_2_VERSION, err, sizeof(err));

    SSL *c = tls_client_ssl_new(cctx, "localhost"), *s = SSL_new(sctx);
    assert_true(handshake(c, s));
    assert_int_equal(SSL_get_verify_result(c), X509_V_OK);
    assert_true(SSL_version(c) >= TLS1_2_VERSION);
    SSL_free(c);
    SSL_free(s);

    c = tls_client_ssl_new(cctx, "127.0.0.1");
    s = SSL_new(sctx);
    assert_true(handshake(c, s));
    SSL_free(c);
    SSL_free(s);

    /* Wrong name: the handshake itself fails. */
    c = tls_client_ssl_new(cctx, "mail.example.org");
    s = SSL_new(sctx);
    assert_false(handshake(c, s));
    assert_int_equal(SSL_get_verify_result(c), X509_V_ERR_HOSTNAME_MISMATCH);
    ERR_clear_error();
    SSL_free(c);
    SSL_free(s);

    /* Not in the trust store. */
    c = tls_client_ssl_new(cctx, "other.example");
    s = SSL_new(octx);
    assert_false(handshake(c, s));
    assert_int_not_equal(SSL_get_verify_result(c), X509_V_OK);
    ERR_clear_error();
    SSL_free(c);
    SSL_free(s);

    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
    SSL_CTX_free(octx);
}

static void test_describe(void **state)
{
    (void)state;
    char buf[64];
    assert_string_equal(tls_describe(NULL, buf, sizeof(buf)), "none");
}

static int group_setup(void **state)
{
    (void)state;
    if (!mkdtemp(tmpdir))
        return -1;
    if (cert_fixture_make(tmpdir, "good", "localhost", "DNS:localhost,IP:127.0.0.1", good_cert,
                          sizeof(good_cert), good_key, sizeof(good_key)) ||
        cert_fixture_make(tmpdir, "other", "other.example", "DNS:other.example", other_cert,
                          sizeof(other_cert), other_key, sizeof(other_key)))
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    unlink(good_cert);
    unlink(good_key);
    unlink(other_cert);
    unlink(other_key);
    rmdir(tmpdir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_ctx_defaults),
        cmocka_unit_test(test_server_ctx_old_tls_negotiates_tls10),
        cmocka_unit_test(test_server_ctx_errors_name_the_file),
        cmocka_unit_test(test_client_ctx),
        cmocka_unit_test(test_client_ssl_names),
        cmocka_unit_test(test_client_verifies),
        cmocka_unit_test(test_describe),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
