/* For tests of config_load: files in a mkdtemp directory ("@DIR@" in config texts stands for
 * it), a config loaded from text, and the exact errors expected. Header-only, like
 * token_endpoint_fixture.h; include after <cmocka.h>. */
#ifndef SOP_TEST_CONFIG_FIXTURE_H
#define SOP_TEST_CONFIG_FIXTURE_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proxy/config/config.h"

#define HASH_YESCRYPT "$y$j9T$Mn9kUlTWyccgQle3yqbGA1$mM9.Vqpz4CKClA05nLnkeHjaNaQgJRcXFA6/ePxapm0"
#define HASH_SHA512                                                                                \
    "$6$PlPQ5Wc6g8QCpMgK$iMXHCmdYwZsBIZaRyJBXlu1O015cqv.ohTh0eXrOTby/pzxgY.RkswlWAq2lNxLAOmTPaLEC" \
    "lhgChelZCMy7E."

static char test_dir[] = "/tmp/test_config.XXXXXX";

/* text with every "@DIR@" replaced by the test directory; the caller frees. */
static inline char *subst(const char *text)
{
    size_t dl = strlen(test_dir), n = 1;
    for (const char *p = text; *p; p++)
        n += strncmp(p, "@DIR@", 5) == 0 ? dl : 1;
    char *out = malloc(n), *o = out;
    assert_non_null(out);
    for (const char *p = text; *p;) {
        if (strncmp(p, "@DIR@", 5) == 0) {
            memcpy(o, test_dir, dl);
            o += dl;
            p += 5;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    return out;
}

static inline void write_file(const char *name, const char *content, mode_t mode)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", test_dir, name);
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(fchmod(fd, mode), 0);
    size_t len = strlen(content);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    close(fd);
}

/* Load text (after @DIR@ substitution) as @DIR@/c.conf. Returns the config or NULL with *errs set
 * to the error text with the directory written as @DIR@ again, so expectations stay readable. */
static inline struct config *load(const char *text, char **errs)
{
    char path[256], *body = subst(text), *raw = NULL;
    struct config *cfg;
    write_file("c.conf", body, 0644);
    free(body);
    snprintf(path, sizeof(path), "%s/c.conf", test_dir);
    cfg = config_load(path, &raw);
    *errs = NULL;
    if (raw) {
        size_t dl = strlen(test_dir);
        char *out = malloc(strlen(raw) + 1), *o = out;
        assert_non_null(out);
        for (const char *p = raw; *p;) {
            if (strncmp(p, test_dir, dl) == 0) {
                memcpy(o, "@DIR@", 5);
                o += 5;
                p += dl;
            } else {
                *o++ = *p++;
            }
        }
        *o = '\0';
        free(raw);
        *errs = out;
    }
    return cfg;
}

/* The config must fail with exactly these errors. */
static inline void expect_errors(const char *text, const char *want)
{
    char *errs;
    struct config *cfg = load(text, &errs);
    if (cfg || !errs || strcmp(errs, want) != 0)
        fprintf(stderr, "got:\n%s\nwant:\n%s\n", errs ? errs : "(none)", want);
    assert_null(cfg);
    assert_non_null(errs);
    assert_string_equal(errs, want);
    free(errs);
}

static inline struct config *expect_ok(const char *text)
{
    char *errs;
    struct config *cfg = load(text, &errs);
    if (!cfg)
        fprintf(stderr, "unexpected errors:\n%s\n", errs ? errs : "(none)");
    assert_non_null(cfg);
    assert_null(errs);
    return cfg;
}

/* The smallest valid config; tests append to or edit around it. */
#define MIN_PROXY "[proxy]\nlisten = 127.0.0.1:2525\n"
#define MIN_ACCOUNT                                                                                \
    "[account a]\nprovider = microsoft\ntenant = contoso.onmicrosoft.com\nclient_id = cid\n"       \
    "client_secret_file = @DIR@/a.secret\nmailbox = scan@contoso.edu\n"
#define MIN_DEVICE "[device d]\naddress = 10.0.0.1\naccount = a\n"

static inline int setup(void **state)
{
    (void)state;
    if (!mkdtemp(test_dir))
        return -1;
    write_file("a.secret", "s3cr3t-value\n", 0600);
    write_file("b.secret", "other-secret", 0600);
    write_file("open.secret", "leaked-secret\n", 0640);
    write_file("cert.pem", "-----BEGIN CERTIFICATE-----\n", 0644);
    write_file("key.pem", "-----BEGIN PRIVATE KEY-----\n", 0600);
    write_file("openkey.pem", "-----BEGIN PRIVATE KEY-----\n", 0644);
    write_file("ca.pem", "-----BEGIN CERTIFICATE-----\n", 0644);
    return 0;
}

static inline int teardown(void **state)
{
    const char *names[] = {"a.secret",  "b.secret",    "open.secret",  "cert.pem",
                           "key.pem",   "openkey.pem", "ca.pem",       "c.conf",
                           "pw.secret", "pw2.secret",  "openpw.secret"};
    char path[256];
    (void)state;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", test_dir, names[i]);
        unlink(path);
    }
    rmdir(test_dir);
    return 0;
}

#endif
