/* config_load: a full config read right, defaults, and the exact message for each kind of
 * mistake. Files live in a mkdtemp directory; "@DIR@" in texts below stands for that directory. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/ssl.h>

#include "proxy/config/config.h"

#include "config_fixture.h"

static void test_full_valid(void **state)
{
    char buf[64];
    (void)state;
    struct config *cfg = expect_ok("; a full config, every key\n"
                                   "[proxy]\n"
                                   "listen = 0.0.0.0:2525          ; plain\n"
                                   "listen = [::1]:2526\n"
                                   "listen_tls = *:4650\n"
                                   "hostname = relay.example.edu\n"
                                   "tls_cert = @DIR@/cert.pem\n"
                                   "tls_key = @DIR@/key.pem\n"
                                   "tls_min_version = 1.0\n"
                                   "max_message_size = 20M\n"
                                   "max_recipients = 100\n"
                                   "max_connections = 50\n"
                                   "max_errors = 3\n"
                                   "command_timeout = 5m\n"
                                   "data_timeout = 1h\n"
                                   "log_level = debug\n"
                                   "state_dir = /srv/sop\n"
                                   "bare_lf = reject\n"
                                   "\n"
                                   "[upstream]\n"
                                   "host = smtp.example.net\n"
                                   "port = 2587\n"
                                   "ca_file = @DIR@/ca.pem\n"
                                   "connect_timeout = 10\n"
                                   "timeout = 90s\n"
                                   "\n"
                                   "[device copier-3f]\n"
                                   "address = 10.20.3.15, 10.20.4.0/24\n"
                                   "address = 2001:db8::/48\n"
                                   "username = copier3f\n"
                                   "password_hash = " HASH_YESCRYPT "\n"
                                   "account = scanners     ; defined below\n"
                                   "\n"
                                   "[device lab]\n"
                                   "username = lab\n"
                                   "password_hash = " HASH_SHA512 "\n"
                                   "account = generic\n"
                                   "\n"
                                   "[account scanners]\n"
                                   "provider = microsoft\n"
                                   "grant = client_credentials\n"
                                   "tenant = contoso.onmicrosoft.com\n"
                                   "client_id = 11111111-2222-3333-4444-555555555555\n"
                                   "client_secret_file = @DIR@/a.secret\n"
                                   "mailbox = scanners@contoso.edu\n"
                                   "sender_rewrite = envelope\n"
                                   "token_url =\n"
                                   "scope =\n"
                                   "\n"
                                   "[account generic]\n"
                                   "provider = oauth2\n"
                                   "client_id = gen\n"
                                   "client_secret_file = @DIR@/b.secret\n"
                                   "mailbox = gen@example.org\n"
                                   "sender_rewrite = header\n"
                                   "token_url = http://127.0.0.1:8080/token?x=1\n"
                                   "scope = a b\n"
                                   "upstream_host = [::1]\n"
                                   "upstream_port = 1025\n"
                                   "upstream_ca_file = @DIR@/ca.pem\n");

    assert_int_equal(cfg->nlisten, 2);
    assert_string_equal(cfg->listen[0].host, "0.0.0.0");
    assert_string_equal(cfg->listen[0].port, "2525");
    assert_int_equal(cfg->listen[0].line, 3);
    assert_string_equal(cfg->listen[1].host, "::1");
    assert_string_equal(cfg->listen[1].port, "2526");
    assert_int_equal(cfg->nlisten_tls, 1);
    assert_string_equal(cfg->listen_tls[0].host, "*");
    assert_string_equal(cfg->listen_tls[0].port, "4650");
    assert_string_equal(cfg->hostname, "relay.example.edu");
    assert_non_null(strstr(cfg->tls_cert, "/cert.pem"));
    assert_non_null(strstr(cfg->tls_key, "/key.pem"));
    assert_int_equal(cfg->tls_min_version, TLS1_VERSION);
    assert_int_equal(cfg->max_message_size, 20u * 1024 * 1024);
    assert_int_equal(cfg->max_recipients, 100);
    assert_int_equal(cfg->max_connections, 50);
    assert_int_equal(cfg->max_errors, 3);
    assert_int_equal(cfg->command_timeout, 300);
    assert_int_equal(cfg->data_timeout, 3600);
    assert_int_equal(cfg->log_level, LOGL_DEBUG);
    assert_string_equal(cfg->state_dir, "/srv/sop");
    assert_int_equal(cfg->bare_lf, BARE_LF_REJECT);

    assert_string_equal(cfg->upstream.host, "smtp.example.net");
    assert_int_equal(cfg->upstream.port, 2587);
    assert_non_null(strstr(cfg->upstream.ca_file, "/ca.pem"));
    assert_int_equal(cfg->upstream_connect_timeout, 10);
    assert_int_equal(cfg->upstream_timeout, 90);

    assert_int_equal(cfg->naccounts, 2);
    struct cfg_account *a = config_account(cfg, "scanners");
    assert_ptr_equal(a, &cfg->accounts[0]);
    assert_string_equal(a->name, "scanners");
    assert_string_equal(a->provider, "microsoft");
    assert_string_equal(a->grant, "client_credentials");
    assert_string_equal(a->tenant, "contoso.onmicrosoft.com");
    assert_string_equal(a->client_id, "11111111-2222-3333-4444-555555555555");
    assert_non_null(strstr(a->client_secret_file, "/a.secret"));
    assert_string_equal(a->client_secret, "s3cr3t-value");
    assert_string_equal(a->mailbox, "scanners@contoso.edu");
    assert_int_equal(a->sender_rewrite, SENDER_REWRITE_ENVELOPE);
    assert_string_equal(
        a->token_url,
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token");
    assert_string_equal(a->scope, "https://outlook.office365.com/.default");
    assert_string_equal(a->upstream.host, "smtp.example.net");
    assert_int_equal(a->upstream.port, 2587);
    assert_non_null(strstr(a->upstream.ca_file, "/ca.pem"));
    assert_int_equal(a->line, 39);

    struct cfg_account *g = config_account(cfg, "generic");
    assert_ptr_equal(g, &cfg->accounts[1]);
    assert_string_equal(g->provider, "oauth2");
    assert_string_equal(g->grant, "client_credentials");
    assert_null(g->tenant);
    assert_string_equal(g->client_secret, "other-secret");
    assert_int_equal(g->sender_rewrite, SENDER_REWRITE_HEADER);
    assert_string_equal(g->token_url, "http://127.0.0.1:8080/token?x=1");
    assert_string_equal(g->scope, "a b");
    assert_string_equal(g->upstream.host, "::1");
    assert_int_equal(g->upstream.port, 1025);
    assert_non_null(strstr(g->upstream.ca_file, "/ca.pem"));
    assert_null(config_account(cfg, "nope"));

    assert_int_equal(cfg->ndevices, 2);
    struct cfg_device *d = &cfg->devices[0];
    assert_string_equal(d->name, "copier-3f");
    assert_int_equal(d->line, 27);
    assert_int_equal(d->naddrs, 3);
    assert_string_equal(cidr_str(&d->addrs[0], buf, sizeof(buf)), "10.20.3.15/32");
    assert_string_equal(cidr_str(&d->addrs[1], buf, sizeof(buf)), "10.20.4.0/24");
    assert_string_equal(cidr_str(&d->addrs[2], buf, sizeof(buf)), "2001:db8::/48");
    assert_string_equal(d->username, "copier3f");
    assert_string_equal(d->password_hash, HASH_YESCRYPT);
    assert_ptr_equal(d->account, a);
    d = &cfg->devices[1];
    assert_string_equal(d->name, "lab");
    assert_int_equal(d->naddrs, 0);
    assert_null(d->addrs);
    assert_string_equal(d->username, "lab");
    assert_string_equal(d->password_hash, HASH_SHA512);
    assert_ptr_equal(d->account, g);
    config_free(cfg);
}

/* Syslog's name for the level, which many admins type. */
static void test_log_level_warning(void **state)
{
    (void)state;
    struct config *cfg = expect_ok(MIN_PROXY "log_level = warning\n" MIN_ACCOUNT MIN_DEVICE);
    assert_int_equal(cfg->log_level, LOGL_WARN);
    config_free(cfg);
}

static void test_defaults(void **state)
{
    char host[256] = "";
    (void)state;
    struct config *cfg = expect_ok(MIN_PROXY MIN_ACCOUNT MIN_DEVICE);
    gethostname(host, sizeof(host));
    assert_string_equal(cfg->hostname, host);
    assert_null(cfg->tls_cert);
    assert_null(cfg->tls_key);
    assert_int_equal(cfg->nlisten_tls, 0);
    assert_int_equal(cfg->tls_min_version, TLS1_2_VERSION);
    assert_int_equal(cfg->max_message_size, 35u * 1024 * 1024);
    assert_int_equal(cfg->max_recipients, 500);
    assert_int_equal(cfg->max_connections, 1000);
    assert_int_equal(cfg->max_errors, 10);
    assert_int_equal(cfg->max_connections_per_ip, 20);
    assert_int_equal(cfg->auth_fail_limit, 5);
    assert_int_equal(cfg->auth_block_time, 900);
    assert_int_equal(cfg->command_timeout, 300);
    assert_int_equal(cfg->data_timeout, 600);
    assert_int_equal(cfg->log_level, LOGL_INFO);
    assert_string_equal(cfg->state_dir, "/var/lib/smtp-oauth-proxy");
    assert_int_equal(cfg->bare_lf, BARE_LF_NORMALIZE);
    assert_int_equal(cfg->stale_after, 365u * 86400u);
    assert_string_equal(cfg->upstream.host, "smtp.office365.com");
    assert_int_equal(cfg->upstream.port, 587);
    assert_null(cfg->upstream.ca_file);
    assert_int_equal(cfg->upstream_connect_timeout, 30);
    assert_int_equal(cfg->upstream_timeout, 300);
    struct cfg_account *a = &cfg->accounts[0];
    assert_string_equal(a->grant, "client_credentials");
    assert_int_equal(a->sender_rewrite, SENDER_REWRITE_OFF);
    assert_string_equal(
        a->token_url,
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token");
    assert_string_equal(a->scope, "https://outlook.office365.com/.default");
    assert_string_equal(a->upstream.host, "smtp.office365.com");
    assert_int_equal(a->upstream.port, 587);
    assert_null(a->upstream.ca_file);
    assert_null(cfg->devices[0].username);
    assert_null(cfg->devices[0].password_hash);
    config_free(cfg);

    /* oauth2: no default scope; an explicit token_url for microsoft replaces the tenant's. */
    cfg = expect_ok(MIN_PROXY MIN_DEVICE "[account a]\nprovider = oauth2\nclient_id = c\n"
                                         "client_secret_file = @DIR@/a.secret\nmailbox = m@x.org\n"
                                         "token_url = https://idp.example.org/token\n"
                                         "[account ms]\nprovider = microsoft\nclient_id = c\n"
                                         "client_secret_file = @DIR@/a.secret\nmailbox = m@x.org\n"
                                         "token_url = https://localhost/t\n");
    assert_null(cfg->accounts[0].scope);
    assert_string_equal(cfg->accounts[0].token_url, "https://idp.example.org/token");
    assert_null(cfg->accounts[1].tenant);
    assert_string_equal(cfg->accounts[1].token_url, "https://localhost/t");
    assert_string_equal(cfg->accounts[1].scope, "https://outlook.office365.com/.default");
    config_free(cfg);
}

static void test_lexical(void **state)
{
    (void)state;
    /* BOM, CRLF, indented lines (never continuations), comments, "key: value", blank lines. */
    struct config *cfg = expect_ok("\xEF\xBB\xBF# comment\r\n"
                                   "[proxy]\r\n"
                                   "  listen = 127.0.0.1:25 ; inline\r\n"
                                   "\tmax_recipients: 7\r\n"
                                   "\r\n"
                                   "[ upstream ]\r\n"
                                   "    port = 25\r\n" MIN_ACCOUNT MIN_DEVICE);
    assert_int_equal(cfg->nlisten, 1);
    assert_string_equal(cfg->listen[0].port, "25");
    assert_int_equal(cfg->max_recipients, 7);
    assert_int_equal(cfg->upstream.port, 25);
    config_free(cfg);
}

static void test_unknown_key(void **state)
{
    (void)state;
    expect_errors(MIN_PROXY "max_size = 10M\n" MIN_ACCOUNT MIN_DEVICE "colour = blue\n",
                  "@DIR@/c.conf:3: unknown key 'max_size' in [proxy]; valid keys: listen, "
                  "listen_tls, trusted_proxies, hostname, tls_cert, tls_key, tls_min_version, "
                  "max_message_size, "
                  "max_recipients, max_connections, max_errors, max_connections_per_ip, "
                  "auth_fail_limit, auth_block_time, command_timeout, data_timeout, "
                  "log_level, state_dir, key_file, bare_lf, control_socket, metrics_listen, "
                  "stale_after, max_queue_lifetime, spool_commit_threads, direct_attempt_timeout, "
                  "http_proxy, allow_recipients, dns_server, max_messages_per_hour, "
                  "max_recipients_per_day, block_after_refusals\n"
                  "@DIR@/c.conf:13: unknown key 'colour' in [device d]; valid keys: address, "
                  "username, password_hash, account, allow_recipients, require_fcrdns, "
                  "max_messages_per_hour, max_recipients_per_day, block_after_refusals\n");
}

static void test_unknown_section(void **state)
{
    (void)state;
    /* Keys under an unknown section are not reported again one by one. */
    expect_errors(MIN_PROXY "[devices d]\naddress = 10.0.0.1\n[account]\nx = 1\n[proxy x]\n"
                            "[device bad name]\n[device a/b]\n" MIN_ACCOUNT MIN_DEVICE,
                  "@DIR@/c.conf:3: unknown section [devices d]; valid sections: [proxy], "
                  "[upstream], [account NAME], [device NAME]\n"
                  "@DIR@/c.conf:5: [account] needs a name: [account NAME]\n"
                  "@DIR@/c.conf:7: section [proxy] takes no name; write [proxy]\n"
                  "@DIR@/c.conf:8: invalid device name 'bad name'; use 1..64 letters, digits, '.', "
                  "'_' or '-'\n"
                  "@DIR@/c.conf:9: invalid device name 'a/b'; use 1..64 letters, digits, '.', '_' "
                  "or '-'\n");
}

static void test_bad_listen(void **state)
{
    (void)state;
    expect_errors(
        "[proxy]\n"
        "listen = 0.0.0.0\n"
        "listen = ::1:25\n"
        "listen = 0.0.0.0:0\n"
        "listen = 0.0.0.0:65536\n"
        "listen = relay.example.edu:25\n"
        "listen = [::1:25\n"
        "listen = [::1]25\n"
        "listen = [10.0.0.1]:25\n"
        "listen = 1.2.3.4:25x\n"
        "listen_tls = :25\n" MIN_ACCOUNT MIN_DEVICE,
        "@DIR@/c.conf:1: [proxy]: at least one listen or listen_tls is required, e.g. "
        "listen = 0.0.0.0:2525\n"
        "@DIR@/c.conf:2: listen: invalid address '0.0.0.0' (no port); expected "
        "IPv4:port, [IPv6]:port or *:port\n"
        "@DIR@/c.conf:3: listen: invalid address '::1:25' (IPv6 addresses need brackets, "
        "as in [::1]:2525); expected IPv4:port, [IPv6]:port or *:port\n"
        "@DIR@/c.conf:4: listen: invalid address '0.0.0.0:0' (the port must be "
        "1..65535); expected IPv4:port, [IPv6]:port or *:port\n"
        "@DIR@/c.conf:5: listen: invalid address '0.0.0.0:65536' (the port must be "
        "1..65535); expected IPv4:port, [IPv6]:port or *:port\n"
        "@DIR@/c.conf:6: listen: invalid address 'relay.example.edu:25' (the host must be "
        "an IP address or *); expected IPv4:port, [IPv6]:port or *:port\n"
        "@DIR@/c.conf:7: listen: invalid address '[::1:25' (missing ']'); expected "
        "IPv4:port, [IPv6]:port or *:port\n"
        "@DIR@/c.conf:8: listen: invalid address '[::1]25' (no port); expected "
        "IPv4:port, [IPv6]:port or *:port\n"
        "@DIR@/c.conf:9: listen: invalid address '[10.0.0.1]:25' (the host must be an IP "
        "address or *); expected IPv4:port, [IPv6]:port or *:port\n"
        "@DIR@/c.conf:10: listen: invalid address '1.2.3.4:25x' (the port must be "
        "1..65535); expected IPv4:port, [IPv6]:port or *:port\n"
        "@DIR@/c.conf:11: listen_tls: invalid address ':25' (no host); expected "
        "IPv4:port, [IPv6]:port or *:port\n");
    expect_errors(
        "[proxy]\nlisten = 127.0.0.1:25\nlisten_tls = 127.0.0.1:25\n" MIN_ACCOUNT MIN_DEVICE,
        "@DIR@/c.conf:3: listen_tls needs tls_cert and tls_key in [proxy]\n"
        "@DIR@/c.conf:3: 127.0.0.1:25 is already listened on (line 2)\n");
}

/* listen ... proxy_protocol and trusted_proxies (PROXY protocol behind a load balancer). */
static void test_proxy_protocol(void **state)
{
    (void)state;
    struct config *cfg = expect_ok("[proxy]\nlisten = 127.0.0.1:2525 proxy_protocol\n"
                                   "listen = 127.0.0.1:2526\n"
                                   "trusted_proxies = 10.0.0.5, 192.168.0.0/24\n"
                                   "trusted_proxies = ::1\n" MIN_ACCOUNT MIN_DEVICE);
    assert_int_equal(cfg->nlisten, 2);
    assert_string_equal(cfg->listen[0].host, "127.0.0.1");
    assert_string_equal(cfg->listen[0].port, "2525");
    assert_int_equal(cfg->listen[0].proxy_protocol, 1);
    assert_int_equal(cfg->listen[1].proxy_protocol, 0);
    assert_int_equal(cfg->ntrusted_proxies, 3);
    assert_int_equal(cfg->trusted_proxies[1].prefix, 24);
    assert_int_equal(cfg->trusted_proxies[2].family, AF_INET6);
    config_free(cfg);
    cfg = expect_ok(MIN_PROXY MIN_ACCOUNT MIN_DEVICE);
    assert_int_equal(cfg->ntrusted_proxies, 0);
    assert_int_equal(cfg->listen[0].proxy_protocol, 0);
    config_free(cfg);
    expect_errors("[proxy]\nlisten = 127.0.0.1:2525\nlisten = 127.0.0.1:2526   proxy_protocol\n"
                  "listen = 127.0.0.1:2527 proxy\n"
                  "listen = 127.0.0.1:2528 proxy_protocol extra\n"
                  "listen = relay:25 proxy_protocol\n"
                  "trusted_proxies = 10.0.0.1/8, 10.0.0.300\n" MIN_ACCOUNT MIN_DEVICE,
                  "@DIR@/c.conf:3: 127.0.0.1:2526 proxy_protocol needs trusted_proxies in [proxy] "
                  "(the load balancers' addresses)\n"
                  "@DIR@/c.conf:4: listen: unknown option after the address in "
                  "'127.0.0.1:2527 proxy'; the only one is proxy_protocol\n"
                  "@DIR@/c.conf:5: listen: unknown option after the address in "
                  "'127.0.0.1:2528 proxy_protocol extra'; the only one is proxy_protocol\n"
                  "@DIR@/c.conf:6: listen: invalid address 'relay:25' (the host must be an IP "
                  "address or *); expected IPv4:port, [IPv6]:port or *:port\n"
                  "@DIR@/c.conf:7: trusted_proxies: '10.0.0.1/8' has host bits set; did you mean "
                  "10.0.0.0/8?\n"
                  "@DIR@/c.conf:7: trusted_proxies: invalid address '10.0.0.300'; expected an "
                  "IPv4 or IPv6 address or CIDR block such as 10.20.4.0/24 or 2001:db8::/32\n");
    expect_errors("[proxy]\nlisten = 127.0.0.1:2525\nlisten_tls = 127.0.0.1:4650 proxy_protocol\n"
                  "tls_cert = @DIR@/cert.pem\ntls_key = @DIR@/key.pem\n" MIN_ACCOUNT MIN_DEVICE,
                  "@DIR@/c.conf:3: 127.0.0.1:4650 proxy_protocol needs trusted_proxies in [proxy] "
                  "(the load balancers' addresses)\n");
}

/* metrics_listen: one address, off when absent or empty. */
static void test_metrics_listen(void **state)
{
    (void)state;
    struct config *cfg = expect_ok(MIN_PROXY MIN_ACCOUNT MIN_DEVICE);
    assert_null(cfg->metrics_listen.host);
    config_free(cfg);
    cfg = expect_ok(MIN_PROXY "metrics_listen =\n" MIN_ACCOUNT MIN_DEVICE);
    assert_null(cfg->metrics_listen.host);
    config_free(cfg);
    cfg = expect_ok(MIN_PROXY "metrics_listen = [::1]:9925\n" MIN_ACCOUNT MIN_DEVICE);
    assert_string_equal(cfg->metrics_listen.host, "::1");
    assert_string_equal(cfg->metrics_listen.port, "9925");
    assert_int_equal(cfg->metrics_listen.line, 3);
    config_free(cfg);
    expect_errors(MIN_PROXY "metrics_listen = localhost:9925\n" MIN_ACCOUNT MIN_DEVICE,
                  "@DIR@/c.conf:3: metrics_listen: invalid address 'localhost:9925' (the host "
                  "must be an IP address or *); expected IPv4:port or [IPv6]:port (loopback or "
                  "a management network)\n");
}

static void test_bad_cidr(void **state)
{
    (void)state;
    expect_errors(MIN_PROXY MIN_ACCOUNT "[device d]\naccount = a\n"
                                        "address = 10.20.4.5/24, 10.0.0.1,, 2001:db8::1/64\n"
                                        "address = printer.example.edu\n"
                                        "address = 10.0.0.0/33\n",
                  "@DIR@/c.conf:11: address: '10.20.4.5/24' has host bits set; did you mean "
                  "10.20.4.0/24?\n"
                  "@DIR@/c.conf:11: address: empty address; expected an IPv4 or IPv6 address or "
                  "CIDR block\n"
                  "@DIR@/c.conf:11: address: '2001:db8::1/64' has host bits set; did you mean "
                  "2001:db8::/64?\n"
                  "@DIR@/c.conf:12: address: invalid address 'printer.example.edu'; expected an "
                  "IPv4 or IPv6 address or CIDR block such as 10.20.4.0/24 or 2001:db8::/32\n"
                  "@DIR@/c.conf:13: address: invalid prefix length '/33' in '10.0.0.0/33'; valid: "
                  "/0../32 for IPv4\n");
}

static void test_secret_files(void **state)
{
    char *errs;
    (void)state;
    /* The secret never appears in a message. */
    expect_errors(
        MIN_PROXY MIN_DEVICE "[account a]\nprovider = microsoft\ntenant = t\n"
                             "client_id = c\nclient_secret_file = @DIR@/open.secret\n"
                             "mailbox = m@x.org\n",
        "@DIR@/c.conf:10: client_secret_file: @DIR@/open.secret: mode 0640 is readable or "
        "writable by group/others; run: chmod 600 @DIR@/open.secret\n");
    expect_errors(MIN_PROXY MIN_DEVICE "[account a]\nprovider = microsoft\ntenant = t\n"
                                       "client_id = c\nclient_secret_file = @DIR@/missing.secret\n"
                                       "mailbox = m@x.org\n",
                  "@DIR@/c.conf:10: client_secret_file: @DIR@/missing.secret: No such file or "
                  "directory\n");
    assert_null(load(MIN_PROXY MIN_DEVICE "[account a]\nprovider = microsoft\ntenant = t\n"
                                          "client_id = c\nclient_secret_file = @DIR@/open.secret\n"
                                          "mailbox = m@x.org\n",
                     &errs));
    assert_null(strstr(errs, "leaked"));
    free(errs);
}

static void test_tls_files(void **state)
{
    (void)state;
    expect_errors(
        "[proxy]\nlisten = 127.0.0.1:25\ntls_cert = @DIR@/cert.pem\n" MIN_ACCOUNT MIN_DEVICE,
        "@DIR@/c.conf:3: tls_cert is set but tls_key is not; set both\n");
    expect_errors(
        "[proxy]\nlisten = 127.0.0.1:25\ntls_cert = @DIR@/nope.pem\n"
        "tls_key = @DIR@/openkey.pem\n" MIN_ACCOUNT MIN_DEVICE,
        "@DIR@/c.conf:3: tls_cert: @DIR@/nope.pem: No such file or directory\n"
        "@DIR@/c.conf:4: tls_key: @DIR@/openkey.pem: mode 0644 is readable or writable by "
        "group/others; run: chmod 600 @DIR@/openkey.pem\n");
    expect_errors(
        "[proxy]\nlisten = 127.0.0.1:25\ntls_cert = @DIR@\n"
        "tls_key = @DIR@/key.pem\n[upstream]\nca_file = @DIR@/none.pem\n" MIN_ACCOUNT MIN_DEVICE,
        "@DIR@/c.conf:3: tls_cert: @DIR@: not a regular file\n"
        "@DIR@/c.conf:6: ca_file: @DIR@/none.pem: No such file or directory\n");
}

static void test_account_reference(void **state)
{
    (void)state;
    expect_errors(
        MIN_PROXY "[device d]\naddress = 10.0.0.1\naccount = scanners\n" MIN_ACCOUNT
                  "[account b]\nprovider = oauth2\nclient_id = c\n"
                  "client_secret_file = @DIR@/b.secret\nmailbox = b@x.org\n"
                  "token_url = https://idp/t\n",
        "@DIR@/c.conf:5: account: no [account scanners] section; defined accounts: a, b\n");
    expect_errors(
        MIN_PROXY "[device d]\naddress = 10.0.0.1\naccount = scanners\n",
        "@DIR@/c.conf:5: account: no [account scanners] section; defined accounts: none\n");
}

static void test_bad_hash(void **state)
{
    (void)state;
    expect_errors(MIN_PROXY MIN_ACCOUNT
                  "[device d]\naccount = a\nusername = u\n"
                  "password_hash = $1$abc$0123456789012345678901\n"
                  "[device e]\naccount = a\nusername = v\n"
                  "password_hash = $y$j9T$Mn9kUlTWyccgQle3yqbGA1\n"
                  "[device f]\naccount = a\nusername = w\npassword_hash = secret\n"
                  "[device g]\naccount = a\nusername = x\n"
                  "password_hash = " HASH_SHA512 "x\n",
                  "@DIR@/c.conf:12: password_hash: not a complete crypt(3) hash of a supported "
                  "kind; use yescrypt ($y$), gost-yescrypt ($gy$), scrypt ($7$), sha512crypt "
                  "($6$), sha256crypt ($5$) or bcrypt ($2b$), e.g. the output of: mkpasswd -m "
                  "yescrypt\n"
                  "@DIR@/c.conf:16: password_hash: not a complete crypt(3) hash of a supported "
                  "kind; use yescrypt ($y$), gost-yescrypt ($gy$), scrypt ($7$), sha512crypt "
                  "($6$), sha256crypt ($5$) or bcrypt ($2b$), e.g. the output of: mkpasswd -m "
                  "yescrypt\n"
                  "@DIR@/c.conf:20: password_hash: not a complete crypt(3) hash of a supported "
                  "kind; use yescrypt ($y$), gost-yescrypt ($gy$), scrypt ($7$), sha512crypt "
                  "($6$), sha256crypt ($5$) or bcrypt ($2b$), e.g. the output of: mkpasswd -m "
                  "yescrypt\n"
                  "@DIR@/c.conf:24: password_hash: not a complete crypt(3) hash of a supported "
                  "kind; use yescrypt ($y$), gost-yescrypt ($gy$), scrypt ($7$), sha512crypt "
                  "($6$), sha256crypt ($5$) or bcrypt ($2b$), e.g. the output of: mkpasswd -m "
                  "yescrypt\n");
    /* Every supported kind is accepted (made with mkpasswd -m ...). */
    struct config *cfg = expect_ok(
        MIN_PROXY MIN_ACCOUNT
        "[device a]\naccount = a\nusername = a\npassword_hash = "
        "$5$Jk4RMjtu4eXD0b9Q$EIuscqjPsz3uSd2qXUGWevWCliNbqLBNBHlstgM6CcA\n"
        "[device b]\naccount = a\nusername = b\npassword_hash = "
        "$2b$05$bm0yv4ZggFRT6elxjDC6YeU6rUA3euDHLy1LspMuJclKlZu0GtHii\n"
        "[device c]\naccount = a\nusername = c\npassword_hash = "
        "$7$CU..../....C8KjYMRgGW36Ot/fBNvt70$OW5fneEZblrHlHSJ9mPaOe/351GMYfWNGajdcqMJSU7\n"
        "[device d]\naccount = a\nusername = d\npassword_hash = "
        "$gy$j9T$x5YCa9BFsDZ.gFfaTB56v.$wLoApeODoXPeHYAkxr3gSyRCKEvcE53Hup4vUAJ5qfA\n");
    assert_int_equal(cfg->ndevices, 4);
    config_free(cfg);
}

static void test_missing_required(void **state)
{
    (void)state;
    expect_errors(MIN_PROXY "[account a]\ntenant = t\n"
                            "[account b]\nprovider = oauth2\nclient_id = c\n"
                            "client_secret_file = @DIR@/b.secret\nmailbox = b@x.org\n"
                            "[account c]\nprovider = microsoft\nclient_id = c\n"
                            "client_secret_file = @DIR@/b.secret\nmailbox = b@x.org\n"
                            "[device d]\naddress = 10.0.0.1\n"
                            "[device e]\naccount = a\n"
                            "[device f]\naccount = a\nusername = f\n"
                            "[device g]\naccount = a\naddress = 10.0.0.2\n"
                            "password_hash = " HASH_YESCRYPT "\n",
                  "@DIR@/c.conf:3: [account a]: missing required key 'mailbox' (local@domain)\n"
                  "@DIR@/c.conf:3: [account a]: missing required key 'provider'; valid: microsoft, "
                  "google, oauth2 (upstream_auth = auto sends an OAuth token; an upstream that "
                  "takes a password or nothing needs no provider: upstream_auth = plain, login or "
                  "none)\n"
                  "@DIR@/c.conf:3: [account a]: missing required key 'client_id' (the application "
                  "(client) id)\n"
                  "@DIR@/c.conf:3: [account a]: missing required key 'client_secret_file' (a file "
                  "of mode 0600), or 'client_certificate' and 'client_key' (PEM files, the key of "
                  "mode 0600)\n"
                  "@DIR@/c.conf:5: [account b]: missing required key 'token_url' or 'issuer' "
                  "(one is required with provider = oauth2)\n"
                  "@DIR@/c.conf:10: [account c]: missing required key 'tenant' (the tenant id or "
                  "domain; required with provider = microsoft unless token_url is set)\n"
                  "@DIR@/c.conf:15: [device d]: missing required key 'account' (the name of an "
                  "[account NAME] section)\n"
                  "@DIR@/c.conf:17: [device e]: needs address, username, or both\n"
                  "@DIR@/c.conf:19: [device f]: missing required key 'password_hash' (required "
                  "with username; make one with: mkpasswd -m yescrypt)\n"
                  "@DIR@/c.conf:25: password_hash is set but username is not; add username or "
                  "remove password_hash\n");
}

static void test_bad_size_duration(void **state)
{
    (void)state;
    expect_errors(
        "[proxy]\nlisten = 127.0.0.1:25\n"
        "max_message_size = 35MB\n"
        "command_timeout = 5x\n"
        "data_timeout = -1\n"
        "max_recipients = lots\n"
        "[upstream]\nconnect_timeout = 1.5s\ntimeout = \n" MIN_ACCOUNT MIN_DEVICE,
        "@DIR@/c.conf:3: max_message_size: invalid size '35MB'; expected a number with an "
        "optional K, M or G suffix (1K = 1024), 1K..2G\n"
        "@DIR@/c.conf:4: command_timeout: invalid duration '5x'; expected seconds, or a "
        "number with an s, m, h or d suffix, 1s..1h\n"
        "@DIR@/c.conf:5: data_timeout: invalid duration '-1'; expected seconds, or a "
        "number with an s, m, h or d suffix, 1s..1h\n"
        "@DIR@/c.conf:6: max_recipients: invalid number 'lots'; expected an integer "
        "1..10000\n"
        "@DIR@/c.conf:8: connect_timeout: invalid duration '1.5s'; expected seconds, or a "
        "number with an s, m, h or d suffix, 1s..1h\n"
        "@DIR@/c.conf:9: timeout: empty value\n");
    /* days, for the annual access review; bounds written in the largest unit */
    struct config *cfg =
        expect_ok("[proxy]\nlisten = 127.0.0.1:25\nstale_after = 90d\n" MIN_ACCOUNT MIN_DEVICE);
    assert_int_equal(cfg->stale_after, 90u * 86400u);
    config_free(cfg);
    expect_errors("[proxy]\nlisten = 127.0.0.1:25\nstale_after = 3651d\n" MIN_ACCOUNT MIN_DEVICE,
                  "@DIR@/c.conf:3: stale_after: 3651d is out of range; valid: 1s..3650d\n");
}

static void test_throttle_keys(void **state)
{
    (void)state;
    struct config *cfg = expect_ok("[proxy]\nlisten = 127.0.0.1:25\n"
                                   "max_connections_per_ip = 7\n"
                                   "auth_fail_limit = 9\n"
                                   "auth_block_time = 2m\n" MIN_ACCOUNT MIN_DEVICE);
    assert_int_equal(cfg->max_connections_per_ip, 7);
    assert_int_equal(cfg->auth_fail_limit, 9);
    assert_int_equal(cfg->auth_block_time, 120);
    config_free(cfg);
    expect_errors("[proxy]\nlisten = 127.0.0.1:25\n"
                  "max_connections_per_ip = 0\n"
                  "auth_fail_limit = 1001\n"
                  "auth_block_time = 2d\n" MIN_ACCOUNT MIN_DEVICE,
                  "@DIR@/c.conf:3: max_connections_per_ip: 0 is out of range; valid: 1..100000\n"
                  "@DIR@/c.conf:4: auth_fail_limit: 1001 is out of range; valid: 1..1000\n"
                  "@DIR@/c.conf:5: auth_block_time: 2d is out of range; valid: 1s..1d\n");
}

static void test_out_of_range(void **state)
{
    (void)state;
    expect_errors("[proxy]\nlisten = 127.0.0.1:25\n"
                  "max_message_size = 3G\n"
                  "max_message_size = 1\n"
                  "max_recipients = 0\n"
                  "max_connections = 100001\n"
                  "max_errors = 99999999999999999999999\n"
                  "command_timeout = 2h\n"
                  "data_timeout = 0\n"
                  "tls_min_version = 1.4\n"
                  "log_level = verbose\n"
                  "bare_lf = keep\n"
                  "state_dir = var/lib\n"
                  "[upstream]\nport = 0\n" MIN_ACCOUNT "sender_rewrite = yes\ngrant = password\n"
                  "upstream_port = 70000\n" MIN_DEVICE,
                  "@DIR@/c.conf:3: max_message_size: 3G is out of range; valid: 1K..2G\n"
                  "@DIR@/c.conf:4: duplicate key 'max_message_size' (first set at line 3)\n"
                  "@DIR@/c.conf:5: max_recipients: 0 is out of range; valid: 1..10000\n"
                  "@DIR@/c.conf:6: max_connections: 100001 is out of range; valid: 1..100000\n"
                  "@DIR@/c.conf:7: max_errors: invalid number '99999999999999999999999'; expected "
                  "an integer 1..1000\n"
                  "@DIR@/c.conf:8: command_timeout: 2h is out of range; valid: 1s..1h\n"
                  "@DIR@/c.conf:9: data_timeout: 0 is out of range; valid: 1s..1h\n"
                  "@DIR@/c.conf:10: tls_min_version: invalid value '1.4'; valid: 1.0, 1.1, 1.2, "
                  "1.3\n"
                  "@DIR@/c.conf:11: log_level: invalid value 'verbose'; valid: error, warn, "
                  "warning, info, debug\n"
                  "@DIR@/c.conf:12: bare_lf: invalid value 'keep'; valid: normalize, reject\n"
                  "@DIR@/c.conf:13: state_dir: 'var/lib' is not an absolute path; expected "
                  "/like/this\n"
                  "@DIR@/c.conf:15: port: 0 is out of range; valid: 1..65535\n"
                  "@DIR@/c.conf:22: sender_rewrite: invalid value 'yes'; valid: off, envelope, "
                  "header\n"
                  "@DIR@/c.conf:23: grant: invalid value 'password'; valid: client_credentials, "
                  "refresh_token, service_account\n"
                  "@DIR@/c.conf:24: upstream_port: 70000 is out of range; valid: 1..65535\n");
    expect_errors(
        "[proxy]\nlisten = 127.0.0.1:25\nmax_message_size = 1023\n" MIN_ACCOUNT MIN_DEVICE,
        "@DIR@/c.conf:3: max_message_size: 1023 is out of range; valid: 1K..2G\n");
    /* The edges themselves are fine. */
    struct config *cfg =
        expect_ok("[proxy]\nlisten = 127.0.0.1:25\nmax_message_size = 2G\nmax_recipients = 1\n"
                  "command_timeout = 3600\ndata_timeout = 1s\n" MIN_ACCOUNT MIN_DEVICE);
    assert_int_equal(cfg->max_message_size, 2ull * 1024 * 1024 * 1024);
    assert_int_equal(cfg->command_timeout, 3600);
    assert_int_equal(cfg->data_timeout, 1);
    config_free(cfg);
}

static void test_line_too_long(void **state)
{
    char text[1024];
    (void)state;
    /* 197 characters fit (inih's 200-byte buffer holds "\r\n" and the NUL); 198 do not. */
    char fits[198], over[199];
    memset(fits, 'x', sizeof(fits) - 1);
    fits[sizeof(fits) - 1] = '\0';
    memcpy(fits, "; ", 2);
    memset(over, 'x', sizeof(over) - 1);
    over[sizeof(over) - 1] = '\0';
    memcpy(over, "scope = ", 8);
    snprintf(text, sizeof(text), MIN_PROXY "%s\n" MIN_ACCOUNT "%s\nmailbox = x\n" MIN_DEVICE, fits,
             over);
    expect_errors(text, "@DIR@/c.conf:10: line too long (198 characters); at most 197\n"
                        "@DIR@/c.conf:11: duplicate key 'mailbox' (first set at line 9)\n");
}

static void test_many_errors(void **state)
{
    (void)state;
    /* Errors from parsing and from the checks after it, all reported, in line order. */
    expect_errors("listen = 1.2.3.4:25\n"
                  "[proxy]\n"
                  "max_errors 5\n"
                  "listen = 127.0.0.1:25 x\n"
                  "[upstream\n"
                  "[upstream] extra\n"
                  "[upstream]\n"
                  "host = bad_host!\n"
                  "[upstream]\n"
                  "[account a]\nprovider = yahoo\ntenant = contoso.onmicrosoft.com\n"
                  "client_id = has space\nclient_secret_file = @DIR@/a.secret\nmailbox = nobody\n"
                  "token_url = http://idp.example.org/token\n"
                  "[account a]\n"
                  "[device d]\naddress = 10.0.0.1\naccount = a\nusername = u\n"
                  "password_hash = " HASH_YESCRYPT "\n"
                  "[device d]\n"
                  "[device e]\nusername = u\npassword_hash = " HASH_SHA512 "\naccount = a\n",
                  "@DIR@/c.conf:1: key 'listen' is outside any section; valid sections: [proxy], "
                  "[upstream], [account NAME], [device NAME]\n"
                  "@DIR@/c.conf:2: [proxy]: at least one listen or listen_tls is required, e.g. "
                  "listen = 0.0.0.0:2525\n"
                  "@DIR@/c.conf:3: expected 'key = value', a [section] header or a ; comment\n"
                  "@DIR@/c.conf:4: listen: unknown option after the address in '127.0.0.1:25 x'; "
                  "the only one is proxy_protocol\n"
                  "@DIR@/c.conf:5: missing ']' in section header; valid sections: [proxy], "
                  "[upstream], [account NAME], [device NAME]\n"
                  "@DIR@/c.conf:6: unexpected text after section header: 'extra'\n"
                  "@DIR@/c.conf:8: host: invalid host 'bad_host!'; expected a DNS name or an IP "
                  "address\n"
                  "@DIR@/c.conf:9: duplicate section [upstream] (first at line 7)\n"
                  "@DIR@/c.conf:11: provider: invalid value 'yahoo'; valid: microsoft, google, "
                  "oauth2\n"
                  "@DIR@/c.conf:13: client_id: only printable characters without blanks are "
                  "allowed\n"
                  "@DIR@/c.conf:15: mailbox: 'nobody' is not a mailbox address; expected "
                  "local@domain\n"
                  "@DIR@/c.conf:16: token_url: 'http://idp.example.org/token' uses http:// to a "
                  "host that is not loopback; use https:// (http:// is allowed only for "
                  "127.0.0.0/8, [::1] and localhost)\n"
                  "@DIR@/c.conf:17: duplicate section [account a] (first at line 10)\n"
                  "@DIR@/c.conf:23: duplicate section [device d] (first at line 18)\n"
                  "@DIR@/c.conf:25: username 'u' is already used by [device d] (line 18)\n");
}

static void test_token_urls(void **state)
{
    (void)state;
    static const char *ok[] = {"https://login.example.org/t", "http://127.0.0.1/t",
                               "http://127.9.9.9:8080",       "http://[::1]:8080/t?x=y",
                               "http://LOCALHOST:1/t",        "https://[2001:db8::1]/t"};
    static const char *bad[] = {
        "ftp://x/t",         "https://",       "https:///t",    "https://a:0/t",
        "https://a:99999/t", "https://[::1/t", "https://x y/t", "http://127.0.0.1@evil.example/t"};
    char text[2048], want[512];
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        snprintf(text, sizeof(text),
                 MIN_PROXY MIN_DEVICE "[account a]\nprovider = oauth2\nclient_id = c\n"
                                      "client_secret_file = @DIR@/a.secret\nmailbox = m@x.org\n"
                                      "token_url = %s\n",
                 ok[i]);
        struct config *cfg = expect_ok(text);
        assert_string_equal(cfg->accounts[0].token_url, ok[i]);
        config_free(cfg);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text),
                 MIN_PROXY MIN_DEVICE "[account a]\nprovider = oauth2\nclient_id = c\n"
                                      "client_secret_file = @DIR@/a.secret\nmailbox = m@x.org\n"
                                      "token_url = %s\n",
                 bad[i]);
        snprintf(
            want, sizeof(want),
            "@DIR@/c.conf:11: token_url: '%s' is not a valid URL; expected https://HOST/PATH\n",
            bad[i]);
        expect_errors(text, want);
    }
    expect_errors(MIN_PROXY MIN_DEVICE "[account a]\nprovider = oauth2\nclient_id = c\n"
                                       "client_secret_file = @DIR@/a.secret\nmailbox = m@x.org\n"
                                       "token_url = http://10.0.0.1/t\n",
                  "@DIR@/c.conf:11: token_url: 'http://10.0.0.1/t' uses http:// to a host that is "
                  "not loopback; use https:// (http:// is allowed only for 127.0.0.0/8, [::1] "
                  "and localhost)\n");
}

static void test_whole_file(void **state)
{
    char *errs;
    (void)state;
    expect_errors("", "@DIR@/c.conf: no [proxy] section; it needs at least one listen or "
                      "listen_tls, e.g. listen = 0.0.0.0:2525\n"
                      "@DIR@/c.conf: no [device NAME] section: no client could ever relay\n");
    assert_null(config_load("/nonexistent/sop.conf", &errs));
    assert_string_equal(errs, "/nonexistent/sop.conf: cannot open: No such file or directory\n");
    free(errs);
    /* NULL is fine for config_free. */
    config_free(NULL);
}

/* A shipped example, with its /etc paths pointed at the test directory (NULL: not there). */
static char *example_text(const char *name)
{
    char path[512], *text, *p;
    size_t len, cap = 1 << 16;
    FILE *f;
    /* __FILE__ is .../tests/unit/test_config.c: the examples are two folders up. */
    snprintf(path, sizeof(path), "%s", __FILE__);
    p = strstr(path, "tests/unit/test_config.c");
    assert_non_null(p);
    snprintf(p, sizeof(path) - (size_t)(p - path), "examples/%s", name);
    f = fopen(path, "r");
    if (!f)
        return NULL;
    text = calloc(1, cap);
    assert_non_null(text);
    len = fread(text, 1, cap - 1, f);
    fclose(f);
    assert_true(len > 0 && len < cap - 1);
    char *out = calloc(1, cap * 2), *o = out;
    assert_non_null(out);
    for (p = text; *p;) {
        if (strncmp(p, "/etc/smtp-oauth-proxy", 21) == 0) {
            memcpy(o, "@DIR@", 5);
            o += 5;
            p += 21;
        } else {
            *o++ = *p++;
        }
    }
    free(text);
    return out;
}

static void test_example_file(void **state)
{
    char path[512];
    (void)state;
    char *out = example_text("m365-client-secret.conf");
    if (!out) {
        skip();
        return;
    }
    /* Keep the name "scanners.secret" but in our directory. */
    write_file("scanners.secret", "example-secret\n", 0600);
    struct config *cfg = expect_ok(out);
    assert_int_equal(cfg->naccounts, 1);
    assert_int_equal(cfg->ndevices, 3);
    assert_string_equal(cfg->accounts[0].client_secret, "example-secret");
    assert_ptr_equal(cfg->devices[2].account, &cfg->accounts[0]);
    config_free(cfg);
    free(out);
    snprintf(path, sizeof(path), "%s/scanners.secret", test_dir);
    unlink(path);
}

/* The delegated example: grant = refresh_token resolves its scope, device code URL and control
 * socket, and needs the store key it names. */
static void test_delegated_example(void **state)
{
    char path[512];
    (void)state;
    char *out = example_text("m365-delegated.conf");
    if (!out) {
        skip();
        return;
    }
    write_file("store.key", "0123456789abcdef0123456789abcdef", 0600);
    struct config *cfg = expect_ok(out);
    const struct cfg_account *a = &cfg->accounts[0];
    assert_string_equal(a->grant, "refresh_token");
    assert_null(a->client_secret);
    assert_string_equal(a->scope, "https://outlook.office.com/SMTP.Send offline_access");
    assert_string_equal(
        a->token_url,
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token");
    assert_string_equal(
        a->device_authorization_url,
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode");
    assert_string_equal(cfg->control_socket, "/var/lib/smtp-oauth-proxy/control.sock");
    config_free(cfg);
    free(out);
    snprintf(path, sizeof(path), "%s/store.key", test_dir);
    unlink(path);
}

/* Each grant takes its own credentials; every wrong combination says what to do. */
static void test_grant_credentials(void **state)
{
    (void)state;
    write_file("a.secret", "s3cret\n", 0600);
    write_file("sa.json", "{}", 0600);
    expect_errors(MIN_PROXY MIN_DEVICE "[account a]\nprovider = microsoft\ntenant = t.example\n"
                                       "client_id = c\nmailbox = m@x.org\ngrant = refresh_token\n",
                  "@DIR@/c.conf:6: [account a]: grant = refresh_token keeps its refresh token in "
                  "the token store: set key_file in [proxy] (make one with: head -c 32 "
                  "/dev/urandom > FILE; chmod 600 FILE)\n");
    expect_errors(MIN_PROXY MIN_DEVICE "[account a]\nprovider = microsoft\ntenant = t.example\n"
                                       "client_id = c\nmailbox = m@x.org\n"
                                       "grant = service_account\n",
                  "@DIR@/c.conf:6: [account a]: missing required key 'service_account_key' (the "
                  "service account's JSON key file, mode 0600)\n"
                  "@DIR@/c.conf:11: [account a]: grant = service_account is google's; valid with "
                  "provider = microsoft: client_credentials, refresh_token\n");
    expect_errors(MIN_PROXY MIN_DEVICE "[account a]\nprovider = google\nmailbox = m@x.org\n"
                                       "grant = client_credentials\n"
                                       "client_secret_file = @DIR@/a.secret\n",
                  "@DIR@/c.conf:6: [account a]: missing required key 'client_id' (the application "
                  "(client) id)\n"
                  "@DIR@/c.conf:9: [account a]: provider = google has no client_credentials "
                  "grant; valid: service_account (domain-wide delegation), refresh_token\n");
    expect_errors(MIN_PROXY MIN_DEVICE "[account a]\nprovider = google\nmailbox = m@x.org\n"
                                       "service_account_key = @DIR@/sa.json\n"
                                       "client_secret_file = @DIR@/a.secret\n",
                  "@DIR@/c.conf:10: [account a]: grant = service_account signs with "
                  "service_account_key; remove client_secret_file, client_certificate and "
                  "client_key\n");
    expect_errors(MIN_PROXY MIN_DEVICE "[account a]\nprovider = oauth2\nclient_id = c\n"
                                       "mailbox = m@x.org\nclient_secret_file = @DIR@/a.secret\n"
                                       "token_url = https://idp.example/t\n"
                                       "issuer = https://idp.example\n",
                  "@DIR@/c.conf:12: [account a]: token_url (line 11) and issuer are both set; use "
                  "one (issuer discovers the token endpoint)\n");
}

/* upstream_auth: [upstream] sets the default (auto when absent), an account may override it. */
static void test_upstream_auth(void **state)
{
    (void)state;
    struct config *cfg = expect_ok(MIN_PROXY MIN_ACCOUNT MIN_DEVICE);
    assert_int_equal(cfg->upstream.auth, UPSTREAM_AUTH_AUTO);
    assert_int_equal(cfg->accounts[0].upstream.auth, UPSTREAM_AUTH_AUTO);
    config_free(cfg);

    cfg =
        expect_ok(MIN_PROXY "[upstream]\nupstream_auth = oauthbearer\n" MIN_ACCOUNT
                            "upstream_auth = xoauth2\n"
                            "[account b]\nprovider = microsoft\ntenant = contoso.onmicrosoft.com\n"
                            "client_id = cid\nclient_secret_file = @DIR@/b.secret\n"
                            "mailbox = b@contoso.edu\n"
                            "[account c]\nprovider = microsoft\ntenant = contoso.onmicrosoft.com\n"
                            "client_id = cid\nclient_secret_file = @DIR@/b.secret\n"
                            "mailbox = c@contoso.edu\nupstream_auth = auto\n"
                            "[account e]\nprovider = microsoft\ntenant = contoso.onmicrosoft.com\n"
                            "client_id = cid\nclient_secret_file = @DIR@/b.secret\n"
                            "mailbox = e@contoso.edu\nupstream_auth =\n" MIN_DEVICE);
    assert_int_equal(cfg->upstream.auth, UPSTREAM_AUTH_OAUTHBEARER);
    assert_int_equal(cfg->naccounts, 4);
    assert_int_equal(cfg->accounts[0].upstream.auth, UPSTREAM_AUTH_XOAUTH2);
    assert_int_equal(cfg->accounts[1].upstream.auth, UPSTREAM_AUTH_OAUTHBEARER); /* inherited */
    assert_int_equal(cfg->accounts[2].upstream.auth, UPSTREAM_AUTH_AUTO);
    assert_int_equal(cfg->accounts[3].upstream.auth, UPSTREAM_AUTH_OAUTHBEARER); /* "=": unset */
    config_free(cfg);

    cfg = expect_ok(MIN_PROXY "[upstream]\nupstream_auth = xoauth2\n" MIN_ACCOUNT MIN_DEVICE);
    assert_int_equal(cfg->accounts[0].upstream.auth, UPSTREAM_AUTH_XOAUTH2);
    config_free(cfg);

    expect_errors(MIN_PROXY "[upstream]\nupstream_auth = cram-md5\n" MIN_ACCOUNT
                            "upstream_auth = XOAUTH2\n" MIN_DEVICE,
                  "@DIR@/c.conf:4: upstream_auth: invalid value 'cram-md5'; valid: xoauth2, "
                  "oauthbearer, auto, plain, login, none\n"
                  "@DIR@/c.conf:11: upstream_auth: invalid value 'XOAUTH2'; valid: xoauth2, "
                  "oauthbearer, auto, plain, login, none\n");
    expect_errors(MIN_PROXY "[upstream]\nupstream_auth =\n" MIN_ACCOUNT MIN_DEVICE,
                  "@DIR@/c.conf:4: upstream_auth: empty value\n");
}

/* Issue #4: what the device's 250 means, pacing and bounces. */
static void test_delivery_keys(void **state)
{
    (void)state;
    struct config *cfg = expect_ok(MIN_PROXY MIN_ACCOUNT MIN_DEVICE);
    assert_int_equal(cfg->accounts[0].delivery, DELIVERY_DIRECT_THEN_SPOOL);
    assert_int_equal(cfg->accounts[0].rate_limit, 30); /* microsoft: Exchange's limit */
    assert_int_equal(cfg->accounts[0].max_upstream_connections, 3);
    assert_null(cfg->accounts[0].bounce_to);
    assert_int_equal(cfg->upstream_idle_timeout, 30);
    assert_int_equal(cfg->max_queue_lifetime, 5 * 86400);
    assert_int_equal(cfg->spool_commit_threads, 4);
    assert_int_equal(cfg->direct_attempt_timeout, 50);
    config_free(cfg);

    cfg = expect_ok(MIN_PROXY "max_queue_lifetime = 2h\n[upstream]\nidle_timeout = 0s\n" MIN_ACCOUNT
                              "delivery = spool\nrate_limit = 0\nmax_upstream_connections = 0\n"
                              "bounce_to = postmaster@contoso.edu\n"
                              "[account g]\nprovider = oauth2\ntoken_url = https://idp.test/t\n"
                              "client_id = cid\nclient_secret_file = @DIR@/b.secret\n"
                              "mailbox = g@contoso.edu\ndelivery = direct\n" MIN_DEVICE);
    assert_int_equal(cfg->max_queue_lifetime, 7200);
    assert_int_equal(cfg->upstream_idle_timeout, 0);
    assert_int_equal(cfg->accounts[0].delivery, DELIVERY_SPOOL);
    assert_int_equal(cfg->accounts[0].rate_limit, 0); /* explicit: no limit */
    assert_int_equal(cfg->accounts[0].max_upstream_connections, 0);
    assert_string_equal(cfg->accounts[0].bounce_to, "postmaster@contoso.edu");
    assert_int_equal(cfg->accounts[1].delivery, DELIVERY_DIRECT);
    assert_int_equal(cfg->accounts[1].rate_limit, 0); /* not microsoft: none by default */
    config_free(cfg);

    expect_errors(MIN_PROXY MIN_ACCOUNT
                  "delivery = queue\nrate_limit = -1\n"
                  "bounce_to = nobody\nmax_upstream_connections = 5000\n" MIN_DEVICE,
                  "@DIR@/c.conf:9: delivery: invalid value 'queue'; valid: direct-then-spool, "
                  "direct, spool\n"
                  "@DIR@/c.conf:10: rate_limit: invalid number '-1'; expected an integer "
                  "0..100000\n"
                  "@DIR@/c.conf:11: bounce_to: 'nobody' is not a mailbox address; expected "
                  "local@domain\n"
                  "@DIR@/c.conf:12: max_upstream_connections: 5000 is out of range; valid: "
                  "0..1000\n");
}

/* Issue 11: the upstream kinds. A password upstream (Azure Communication Services, a smarthost)
 * and direct send need no provider; [upstream] gives defaults; the combinations that would send
 * a secret in clear, or that cannot work, are refused with what to change. */
#define ACS_ACCOUNT                                                                                \
    "[account acs]\nupstream_host = smtp.azurecomm.net\nupstream_auth = login\n"                   \
    "upstream_username = contoso.11111111.22222222\nupstream_password_file = @DIR@/pw.secret\n"    \
    "mailbox = donotreply@contoso.edu\n"
#define DIRECT_ACCOUNT                                                                             \
    "[account mx]\nupstream_host = contoso-com.mail.protection.outlook.com\nupstream_port = 25\n"  \
    "upstream_auth = none\nupstream_tls = opportunistic\nmailbox = scanner@contoso.edu\n"

static void test_upstream_kinds(void **state)
{
    (void)state;
    write_file("pw.secret", "Acs-Secret~Value.1\n", 0600);
    write_file("pw2.secret", "line one\nline two\n", 0600);
    write_file("openpw.secret", "Open-Secret\n", 0644);

    /* the defaults: STARTTLS, authentication required, no password, no client certificate */
    struct config *cfg = expect_ok(MIN_PROXY MIN_ACCOUNT MIN_DEVICE);
    const struct cfg_account *a = &cfg->accounts[0];
    assert_int_equal(cfg->upstream.policy, UPSTREAM_POLICY_REQUIRED);
    assert_int_equal(cfg->upstream.tls, UPSTREAM_TLS_STARTTLS);
    assert_int_equal(a->upstream.policy, UPSTREAM_POLICY_REQUIRED);
    assert_int_equal(a->upstream.tls, UPSTREAM_TLS_STARTTLS);
    assert_null(a->upstream.username);
    assert_null(a->upstream.password);
    assert_null(a->upstream.client_certificate);
    assert_true(config_upstream_needs_token(&a->upstream));
    assert_false(config_upstream_needs_password(&a->upstream));
    config_free(cfg);

    /* Azure Communication Services (LOGIN) and direct send (none): no provider, no client_id */
    cfg = expect_ok(MIN_PROXY ACS_ACCOUNT DIRECT_ACCOUNT "[device d]\naddress = 10.0.0.1\n"
                                                         "account = acs\n");
    a = &cfg->accounts[0];
    assert_string_equal(a->provider, "none");
    assert_string_equal(a->grant, "none");
    assert_null(a->client_id);
    assert_null(a->token_url);
    assert_null(a->scope);
    assert_int_equal(a->upstream.auth, UPSTREAM_AUTH_LOGIN);
    assert_string_equal(a->upstream.host, "smtp.azurecomm.net");
    assert_int_equal(a->upstream.port, 587);
    assert_string_equal(a->upstream.username, "contoso.11111111.22222222");
    assert_string_equal(a->upstream.password, "Acs-Secret~Value.1");
    assert_int_equal(a->rate_limit, 0);
    assert_false(config_upstream_needs_token(&a->upstream));
    assert_true(config_upstream_needs_password(&a->upstream));
    a = &cfg->accounts[1];
    assert_string_equal(a->provider, "none");
    assert_int_equal(a->upstream.auth, UPSTREAM_AUTH_NONE);
    assert_int_equal(a->upstream.tls, UPSTREAM_TLS_OPPORTUNISTIC);
    assert_int_equal(a->upstream.policy, UPSTREAM_POLICY_DISABLED); /* none: nothing to send */
    assert_int_equal(a->upstream.port, 25);
    assert_false(config_upstream_needs_token(&a->upstream));
    assert_false(config_upstream_needs_password(&a->upstream));
    config_free(cfg);

    /* [upstream] gives defaults (credentials and certificates as pairs); accounts override */
    cfg = expect_ok(MIN_PROXY "[upstream]\nhost = relay.contoso.edu\nport = 465\n"
                              "upstream_auth = plain\nupstream_auth_policy = enabled\n"
                              "upstream_tls = implicit\nupstream_username = relay-user\n"
                              "upstream_password_file = @DIR@/pw.secret\n"
                              "upstream_client_certificate = @DIR@/cert.pem\n"
                              "upstream_client_key = @DIR@/key.pem\n"
                              "[account a]\nmailbox = a@contoso.edu\n"
                              "[account b]\nmailbox = b@contoso.edu\nupstream_username = other\n"
                              "upstream_password_file = @DIR@/b.secret\nupstream_tls = starttls\n"
                              "upstream_auth_policy = required\n"
                              "[account c]\nmailbox = c@contoso.edu\nupstream_auth = none\n"
                              "upstream_client_certificate =\nupstream_client_key =\n" MIN_DEVICE);
    a = &cfg->accounts[0];
    assert_string_equal(a->upstream.host, "relay.contoso.edu");
    assert_int_equal(a->upstream.port, 465);
    assert_int_equal(a->upstream.auth, UPSTREAM_AUTH_PLAIN);
    assert_int_equal(a->upstream.policy, UPSTREAM_POLICY_ENABLED);
    assert_int_equal(a->upstream.tls, UPSTREAM_TLS_IMPLICIT);
    assert_string_equal(a->upstream.username, "relay-user");
    assert_string_equal(a->upstream.password, "Acs-Secret~Value.1");
    assert_non_null(strstr(a->upstream.client_certificate, "/cert.pem"));
    assert_non_null(strstr(a->upstream.client_key, "/key.pem"));
    a = &cfg->accounts[1];
    assert_string_equal(a->upstream.username, "other");
    assert_string_equal(a->upstream.password, "other-secret");
    assert_int_equal(a->upstream.tls, UPSTREAM_TLS_STARTTLS);
    assert_int_equal(a->upstream.policy, UPSTREAM_POLICY_REQUIRED);
    a = &cfg->accounts[2];
    assert_int_equal(a->upstream.auth, UPSTREAM_AUTH_NONE);
    assert_int_equal(a->upstream.policy, UPSTREAM_POLICY_DISABLED);
    /* "key =" means not set: the [upstream] pair still applies */
    assert_non_null(a->upstream.client_certificate);
    config_free(cfg);

    /* What is missing, or cannot work together */
    expect_errors(MIN_PROXY "[account p]\nupstream_auth = plain\nmailbox = p@contoso.edu\n"
                            "upstream_host = smtp.contoso.edu\n"
                            "[account q]\nupstream_username = q\nmailbox = q@contoso.edu\n"
                            "upstream_auth = login\n"
                            "[account r]\nupstream_password_file = @DIR@/openpw.secret\n"
                            "upstream_username = r\nupstream_auth = plain\nmailbox = r@x.edu\n"
                            "[account s]\nupstream_password_file = @DIR@/pw2.secret\n"
                            "upstream_username = s\nupstream_auth = plain\nmailbox = s@x.edu\n"
                            "[device d]\naddress = 10.0.0.1\naccount = p\n",
                  "@DIR@/c.conf:4: [account p]: upstream_auth = plain needs upstream_username and "
                  "upstream_password_file (a file of mode 0600 holding the password), in the "
                  "account or in [upstream]\n"
                  "@DIR@/c.conf:8: upstream_username is set but upstream_password_file is not; "
                  "set both\n"
                  "@DIR@/c.conf:12: upstream_password_file: @DIR@/openpw.secret: mode 0644 is "
                  "readable or writable by group/others; run: chmod 600 @DIR@/openpw.secret\n"
                  "@DIR@/c.conf:17: upstream_password_file: @DIR@/pw2.secret: holds more than one "
                  "line; put the password alone in it\n");
    /* nothing secret in clear; none means none; a password key where no password goes */
    expect_errors(MIN_PROXY "[account o]\nupstream_auth = plain\nupstream_username = o\n"
                            "upstream_password_file = @DIR@/pw.secret\nmailbox = o@x.edu\n"
                            "upstream_tls = opportunistic\nupstream_host = mx.x.edu\n"
                            "[account t]\nprovider = microsoft\ntenant = x.edu\nclient_id = c\n"
                            "client_secret_file = @DIR@/a.secret\nmailbox = t@x.edu\n"
                            "upstream_tls = opportunistic\n"
                            "[account n]\nupstream_auth = none\nupstream_auth_policy = required\n"
                            "mailbox = n@x.edu\nupstream_host = mx.x.edu\n"
                            "[account u]\nprovider = microsoft\ntenant = x.edu\nclient_id = c\n"
                            "client_secret_file = @DIR@/a.secret\nmailbox = u@x.edu\n"
                            "upstream_username = u\nupstream_password_file = @DIR@/pw.secret\n"
                            "[device d]\naddress = 10.0.0.1\naccount = o\n",
                  "@DIR@/c.conf:8: [account o]: upstream_tls = opportunistic sends in plain text "
                  "when the upstream offers no STARTTLS, and upstream_auth = plain would send the "
                  "password in it; use upstream_tls = starttls or implicit, or upstream_auth = "
                  "none\n"
                  "@DIR@/c.conf:16: [account t]: upstream_tls = opportunistic sends in plain text "
                  "when the upstream offers no STARTTLS, and upstream_auth = auto would send an "
                  "OAuth token in it; use upstream_tls = starttls or implicit, or upstream_auth = "
                  "none\n"
                  "@DIR@/c.conf:19: [account n]: upstream_auth_policy = required, but "
                  "upstream_auth = none never authenticates; remove upstream_auth_policy\n"
                  "@DIR@/c.conf:28: [account u]: upstream_username and upstream_password_file are "
                  "only used with upstream_auth = plain or login, not auto\n");
    /* what a token-free account does not take, and what a token account needs */
    expect_errors(MIN_PROXY "[account v]\nupstream_auth = login\nupstream_username = v\n"
                            "upstream_password_file = @DIR@/pw.secret\nmailbox = v@x.edu\n"
                            "client_id = cid\ntenant = x.edu\n"
                            "[account w]\nupstream_auth = none\nmailbox = w@x.edu\n"
                            "[account x]\nupstream_auth = xoauth2\nmailbox = x@x.edu\n"
                            "[account y]\nupstream_auth = auto\nupstream_auth_policy = disabled\n"
                            "mailbox = y@x.edu\nupstream_host = mx.x.edu\nscope = s\n"
                            "[device d]\naddress = 10.0.0.1\naccount = v\n",
                  "@DIR@/c.conf:8: [account v]: client_id is only used to get OAuth tokens, and "
                  "upstream_auth = login sends a password, not a token; remove it (or set "
                  "provider)\n"
                  "@DIR@/c.conf:9: [account v]: tenant is only used to get OAuth tokens, and "
                  "upstream_auth = login sends a password, not a token; remove it (or set "
                  "provider)\n"
                  "@DIR@/c.conf:11: [account w]: upstream_auth = none to smtp.office365.com:587, "
                  "which refuses unauthenticated mail (530 5.7.57); for direct send set "
                  "upstream_host to the tenant's MX endpoint "
                  "(contoso-com.mail.protection.outlook.com) and upstream_port = 25\n"
                  "@DIR@/c.conf:13: [account x]: missing required key 'provider'; valid: "
                  "microsoft, google, oauth2 (upstream_auth = xoauth2 sends an OAuth token; an "
                  "upstream that takes a password or nothing needs no provider: upstream_auth = "
                  "plain, login or none)\n"
                  "@DIR@/c.conf:13: [account x]: missing required key 'client_id' (the "
                  "application (client) id)\n"
                  "@DIR@/c.conf:13: [account x]: missing required key 'client_secret_file' (a file "
                  "of mode 0600), or 'client_certificate' and 'client_key' (PEM files, the key of "
                  "mode 0600)\n"
                  "@DIR@/c.conf:21: [account y]: scope is only used to get OAuth tokens, and "
                  "upstream_auth_policy = disabled sends no credentials; remove it (or set "
                  "provider)\n");
    /* values */
    expect_errors(MIN_PROXY "http_proxy = https://proxy.x.edu:3128\n[upstream]\n"
                            "upstream_tls = ssl\nupstream_auth_policy = maybe\n"
                            "upstream_client_certificate = @DIR@/cert.pem\n" MIN_ACCOUNT
                            "cloud = germany\nhttp_proxy = http://user:pw@proxy.x.edu:8080\n"
                            "upstream_client_key = @DIR@/openkey.pem\n"
                            "[account g]\nprovider = google\nmailbox = g@x.edu\n"
                            "service_account_key = @DIR@/key.pem\ncloud = usgov\n"
                            "http_proxy = http://proxy.x.edu\n" MIN_DEVICE,
                  "@DIR@/c.conf:3: http_proxy: 'https://proxy.x.edu:3128' is not a proxy URL; "
                  "expected http://HOST:PORT\n"
                  "@DIR@/c.conf:5: upstream_tls: invalid value 'ssl'; valid: starttls, implicit, "
                  "opportunistic\n"
                  "@DIR@/c.conf:6: upstream_auth_policy: invalid value 'maybe'; valid: required, "
                  "enabled, disabled\n"
                  "@DIR@/c.conf:7: upstream_client_certificate is set but upstream_client_key is "
                  "not; set both\n"
                  "@DIR@/c.conf:14: cloud: invalid value 'germany'; valid: global, usgov, "
                  "usgovdod, china\n"
                  "@DIR@/c.conf:15: http_proxy: a user name or password in the proxy URL is not "
                  "supported (the config file is world-readable); use a proxy that admits this "
                  "host by address\n"
                  "@DIR@/c.conf:16: upstream_client_key: @DIR@/openkey.pem: mode 0644 is readable "
                  "or writable by group/others; run: chmod 600 @DIR@/openkey.pem\n"
                  "@DIR@/c.conf:16: upstream_client_key is set but upstream_client_certificate is "
                  "not; set both\n" /* a pair is never half an account's, half [upstream]'s */
                  "@DIR@/c.conf:21: [account g]: cloud is only used with provider = microsoft (it "
                  "picks Entra ID's and Exchange Online's endpoints)\n"
                  "@DIR@/c.conf:22: http_proxy: 'http://proxy.x.edu' is not a proxy URL; expected "
                  "http://HOST:PORT\n");
}

/* cloud = NAME: one line for a national cloud's endpoints; explicit keys still win, [upstream]
 * host included; the Graph host is kept for a later issue. */
static void test_clouds(void **state)
{
    char path[512];
    (void)state;
    struct config *cfg = expect_ok(MIN_PROXY MIN_ACCOUNT MIN_DEVICE);
    const struct cfg_account *a = &cfg->accounts[0];
    assert_int_equal(a->cloud, MS_CLOUD_GLOBAL);
    assert_string_equal(a->upstream.host, "smtp.office365.com");
    assert_string_equal(a->token_url, "https://login.microsoftonline.com/contoso.onmicrosoft.com"
                                      "/oauth2/v2.0/token");
    assert_string_equal(a->scope, "https://outlook.office365.com/.default");
    assert_string_equal(a->graph_host, "graph.microsoft.com");
    config_free(cfg);

    write_file("store.key", "0123456789abcdef0123456789abcdef", 0600);
    cfg = expect_ok(
        MIN_PROXY "key_file = @DIR@/store.key\n" MIN_ACCOUNT "cloud = usgov\n"
                  "[account dod]\nprovider = microsoft\ntenant = contoso.onmicrosoft.us\n"
                  "client_id = cid\nclient_secret_file = @DIR@/b.secret\n"
                  "mailbox = dod@contoso.mil\ncloud = usgovdod\n"
                  "[account cn]\nprovider = microsoft\ntenant = contoso.partner.onmschina.cn\n"
                  "client_id = cid\nmailbox = cn@contoso.cn\ncloud = china\ngrant = refresh_token\n"
                  "[account own]\nprovider = microsoft\ntenant = t.example\nclient_id = cid\n"
                  "client_secret_file = @DIR@/b.secret\nmailbox = own@contoso.us\ncloud = usgov\n"
                  "token_url = https://idp.example/t\nupstream_host = smtp.example.us\n"
                  "scope = https://outlook-dod.office365.us/.default\n" MIN_DEVICE);
    a = &cfg->accounts[0];
    assert_int_equal(a->cloud, MS_CLOUD_USGOV);
    assert_string_equal(a->token_url, "https://login.microsoftonline.us/contoso.onmicrosoft.com"
                                      "/oauth2/v2.0/token");
    assert_string_equal(a->device_authorization_url,
                        "https://login.microsoftonline.us/contoso.onmicrosoft.com/oauth2/v2.0/"
                        "devicecode");
    assert_string_equal(a->scope, "https://outlook.office365.us/.default");
    assert_string_equal(a->upstream.host, "smtp.office365.us");
    assert_int_equal(a->upstream.port, 587);
    assert_string_equal(a->graph_host, "graph.microsoft.us");
    a = &cfg->accounts[1];
    assert_string_equal(
        a->token_url, "https://login.microsoftonline.us/contoso.onmicrosoft.us/oauth2/v2.0/token");
    assert_string_equal(a->upstream.host, "smtp.office365.us");
    assert_string_equal(a->graph_host, "dod-graph.microsoft.us");
    a = &cfg->accounts[2];
    assert_string_equal(a->token_url, "https://login.partner.microsoftonline.cn/"
                                      "contoso.partner.onmschina.cn/oauth2/v2.0/token");
    assert_string_equal(a->scope, "https://partner.outlook.cn/SMTP.Send offline_access");
    assert_string_equal(a->upstream.host, "smtp.partner.outlook.cn");
    assert_string_equal(a->graph_host, "microsoftgraph.chinacloudapi.cn");
    a = &cfg->accounts[3]; /* explicit token_url, upstream_host and scope win */
    assert_string_equal(a->token_url, "https://idp.example/t");
    assert_string_equal(a->upstream.host, "smtp.example.us");
    assert_string_equal(a->scope, "https://outlook-dod.office365.us/.default");
    assert_string_equal(a->graph_host, "graph.microsoft.us");
    config_free(cfg);

    /* [upstream] host, when the file sets it, wins over the cloud's */
    cfg = expect_ok(MIN_PROXY "[upstream]\nhost = relay.contoso.us\n" MIN_ACCOUNT
                              "cloud = usgov\n" MIN_DEVICE);
    assert_string_equal(cfg->accounts[0].upstream.host, "relay.contoso.us");
    assert_string_equal(cfg->accounts[0].scope, "https://outlook.office365.us/.default");
    config_free(cfg);
    snprintf(path, sizeof(path), "%s/store.key", test_dir);
    unlink(path);
}

/* http_proxy: [proxy]'s applies to every account unless the account names its own. */
static void test_http_proxy(void **state)
{
    (void)state;
    struct config *cfg = expect_ok(MIN_PROXY MIN_ACCOUNT MIN_DEVICE);
    assert_null(cfg->http_proxy);
    assert_null(cfg->accounts[0].http_proxy);
    config_free(cfg);
    cfg = expect_ok(MIN_PROXY "http_proxy = http://proxy.contoso.edu:3128\n" MIN_ACCOUNT
                              "[account b]\nprovider = microsoft\ntenant = x.edu\nclient_id = c\n"
                              "client_secret_file = @DIR@/b.secret\nmailbox = b@x.edu\n"
                              "http_proxy = http://[::1]:8080/\n"
                              "[account c]\nprovider = microsoft\ntenant = x.edu\nclient_id = c\n"
                              "client_secret_file = @DIR@/b.secret\nmailbox = c@x.edu\n"
                              "http_proxy =\n" MIN_DEVICE);
    assert_string_equal(cfg->http_proxy, "http://proxy.contoso.edu:3128");
    assert_string_equal(cfg->accounts[0].http_proxy, "http://proxy.contoso.edu:3128");
    assert_string_equal(cfg->accounts[1].http_proxy, "http://[::1]:8080/");
    assert_string_equal(cfg->accounts[2].http_proxy, "http://proxy.contoso.edu:3128");
    config_free(cfg);
    expect_errors(MIN_PROXY "http_proxy = http://127.0.0.1:99999\n" MIN_ACCOUNT MIN_DEVICE,
                  "@DIR@/c.conf:3: http_proxy: 'http://127.0.0.1:99999' is not a proxy URL; "
                  "expected http://HOST:PORT\n");
}

/* The examples for issue 11's upstreams load as they are, and resolve as their comments say. */
static void test_kind_examples(void **state)
{
    static const char *const files[][2] = {{"acs.password", "0600"},
                                           {"hve.secret", "0600"},
                                           {"scanners.secret", "0600"},
                                           {"relay.contoso.com.pem", "0644"},
                                           {"relay.contoso.com.key", "0600"}};
    char path[512];
    (void)state;
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        write_file(files[i][0], "example-value\n", strcmp(files[i][1], "0600") == 0 ? 0600 : 0644);

    char *text = example_text("m365-direct-send.conf");
    assert_non_null(text);
    struct config *cfg = expect_ok(text);
    const struct cfg_account *a = &cfg->accounts[0];
    assert_string_equal(a->provider, "none");
    assert_string_equal(a->upstream.host, "contoso-com.mail.protection.outlook.com");
    assert_int_equal(a->upstream.port, 25);
    assert_int_equal(a->upstream.auth, UPSTREAM_AUTH_NONE);
    assert_int_equal(a->upstream.tls, UPSTREAM_TLS_STARTTLS);
    assert_int_equal(a->sender_rewrite, SENDER_REWRITE_ENVELOPE);
    config_free(cfg);
    free(text);

    text = example_text("m365-connector-relay.conf");
    assert_non_null(text);
    cfg = expect_ok(text);
    a = &cfg->accounts[0];
    assert_int_equal(a->upstream.auth, UPSTREAM_AUTH_NONE);
    assert_non_null(strstr(a->upstream.client_certificate, "/relay.contoso.com.pem"));
    assert_non_null(strstr(a->upstream.client_key, "/relay.contoso.com.key"));
    config_free(cfg);
    free(text);

    text = example_text("azure-communication-services.conf");
    assert_non_null(text);
    cfg = expect_ok(text);
    a = &cfg->accounts[0];
    assert_string_equal(a->provider, "none");
    assert_string_equal(a->upstream.host, "smtp.azurecomm.net");
    assert_int_equal(a->upstream.auth, UPSTREAM_AUTH_LOGIN);
    assert_string_equal(a->upstream.password, "example-value");
    assert_int_equal(a->rate_limit, 30);
    assert_int_equal(a->daily_recipient_limit, 0); /* no provider: none by default */
    config_free(cfg);
    free(text);

    text = example_text("m365-high-volume-email.conf");
    assert_non_null(text);
    cfg = expect_ok(text);
    a = &cfg->accounts[0];
    assert_string_equal(a->upstream.host, "smtp.hve.mx.microsoft");
    assert_int_equal(a->upstream.auth, UPSTREAM_AUTH_XOAUTH2);
    assert_string_equal(a->scope, "https://outlook.office365.com/.default");
    assert_int_equal(a->rate_limit, 0);
    assert_int_equal(a->daily_recipient_limit, 0); /* not a mailbox's 10,000 a day */
    config_free(cfg);
    free(text);

    text = example_text("m365-national-cloud.conf");
    assert_non_null(text);
    cfg = expect_ok(text);
    a = &cfg->accounts[0];
    assert_int_equal(a->cloud, MS_CLOUD_USGOV);
    assert_string_equal(a->upstream.host, "smtp.office365.us");
    assert_string_equal(
        a->token_url, "https://login.microsoftonline.us/contoso.onmicrosoft.us/oauth2/v2.0/token");
    config_free(cfg);
    free(text);

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", test_dir, files[i][0]);
        unlink(path);
    }
}

#define RP_WHAT                                                                                    \
    "expected @domain, @.domain (its subdomains), local@domain or * (anyone), comma-separated"

/* Penn's two lines: [proxy] allows the campus, a registered device anyone. */
static void test_allow_recipients(void **state)
{
    (void)state;
    struct config *cfg = expect_ok(MIN_PROXY MIN_ACCOUNT MIN_DEVICE);
    assert_true(rcpt_policy_is_any(&cfg->allow_recipients));
    assert_string_equal(cfg->allow_recipients.display, "*");
    assert_ptr_equal(cfg->devices[0].allow_recipients, &cfg->allow_recipients);
    config_free(cfg);

    cfg = expect_ok(MIN_PROXY "allow_recipients = @upenn.edu, @.upenn.edu\n" MIN_ACCOUNT MIN_DEVICE
                              "[device reg]\naddress = 10.0.0.2\naccount = a\n"
                              "allow_recipients = *\n");
    assert_string_equal(cfg->allow_recipients.display, "@upenn.edu, @.upenn.edu");
    assert_ptr_equal(cfg->devices[0].allow_recipients, &cfg->allow_recipients);
    assert_false(rcpt_policy_match(cfg->devices[0].allow_recipients, "x@gmail.com"));
    assert_true(rcpt_policy_match(cfg->devices[0].allow_recipients, "x@isc.upenn.edu"));
    assert_ptr_equal(cfg->devices[1].allow_recipients, &cfg->devices[1].allow_own);
    assert_true(rcpt_policy_match(cfg->devices[1].allow_recipients, "x@gmail.com"));
    config_free(cfg);

    expect_errors(MIN_PROXY "allow_recipients = upenn.edu\n" MIN_ACCOUNT MIN_DEVICE
                            "allow_recipients = @gmail..com, x\n"
                            "[device e]\naddress = 10.0.0.2\naccount = a\n"
                            "allow_recipients = @a.org,,@b.org\n",
                  "@DIR@/c.conf:3: allow_recipients: 'upenn.edu' is not a recipient rule; " RP_WHAT
                  "\n"
                  "@DIR@/c.conf:13: allow_recipients: '@gmail..com': 'gmail..com' is not a domain "
                  "name; " RP_WHAT "\n"
                  "@DIR@/c.conf:17: allow_recipients: empty entry; " RP_WHAT "\n");
}

/* max_messages_per_hour, max_recipients_per_day, block_after_refusals (docs/device-limits.md):
 * none by default; [proxy]'s apply to devices without their own; 0 in a device turns [proxy]'s
 * off for it. */
static void test_device_limit_keys(void **state)
{
    (void)state;
    struct config *cfg = expect_ok(MIN_PROXY MIN_ACCOUNT MIN_DEVICE);
    assert_int_equal(cfg->max_messages_per_hour, 0);
    assert_int_equal(cfg->devices[0].max_messages_per_hour, 0);
    assert_int_equal(cfg->devices[0].max_recipients_per_day, 0);
    assert_int_equal(cfg->devices[0].block_after_refusals, 0);
    config_free(cfg);

    cfg = expect_ok(MIN_PROXY "max_messages_per_hour = 100\nmax_recipients_per_day = 2000\n"
                              "block_after_refusals = 3\n" MIN_ACCOUNT MIN_DEVICE
                              "[device e]\naddress = 10.0.0.2\naccount = a\n"
                              "max_messages_per_hour = 5\nmax_recipients_per_day = 0\n"
                              "block_after_refusals = 1\n");
    assert_int_equal(cfg->devices[0].max_messages_per_hour, 100);
    assert_int_equal(cfg->devices[0].max_recipients_per_day, 2000);
    assert_int_equal(cfg->devices[0].block_after_refusals, 3);
    assert_int_equal(cfg->devices[1].max_messages_per_hour, 5);
    assert_int_equal(cfg->devices[1].max_recipients_per_day, 0);
    assert_int_equal(cfg->devices[1].block_after_refusals, 1);
    config_free(cfg);

    expect_errors(MIN_PROXY "max_messages_per_hour = many\n" MIN_ACCOUNT MIN_DEVICE
                            "max_recipients_per_day = 10000001\n"
                            "block_after_refusals = -1\n",
                  "@DIR@/c.conf:3: max_messages_per_hour: invalid number 'many'; expected an "
                  "integer 0..1000000\n"
                  "@DIR@/c.conf:13: max_recipients_per_day: 10000001 is out of range; valid: "
                  "0..10000000\n"
                  "@DIR@/c.conf:14: block_after_refusals: invalid number '-1'; expected an "
                  "integer 0..1000\n");
}

/* require_fcrdns per device (yes = external) and [proxy] dns_server. */
static void test_fcrdns_keys(void **state)
{
    (void)state;
    struct config *cfg = expect_ok(MIN_PROXY MIN_ACCOUNT MIN_DEVICE);
    assert_int_equal(cfg->devices[0].require_fcrdns, FCRDNS_NO);
    assert_null(cfg->dns_server.host);
    config_free(cfg);

    cfg = expect_ok(MIN_PROXY "dns_server = 127.0.0.1:5353\n" MIN_ACCOUNT MIN_DEVICE
                              "require_fcrdns = session\n"
                              "[device e]\naddress = 10.0.0.2\naccount = a\nrequire_fcrdns = yes\n"
                              "[device f]\naddress = 10.0.0.3\naccount = a\n"
                              "require_fcrdns = external\n");
    assert_string_equal(cfg->dns_server.host, "127.0.0.1");
    assert_string_equal(cfg->dns_server.port, "5353");
    assert_int_equal(cfg->devices[0].require_fcrdns, FCRDNS_SESSION);
    assert_int_equal(cfg->devices[1].require_fcrdns, FCRDNS_EXTERNAL);
    assert_int_equal(cfg->devices[2].require_fcrdns, FCRDNS_EXTERNAL);
    config_free(cfg);

    expect_errors(MIN_PROXY "dns_server = 127.0.0.1\n" MIN_ACCOUNT MIN_DEVICE
                            "require_fcrdns = always\n",
                  "@DIR@/c.conf:3: dns_server: invalid address '127.0.0.1' (no port); "
                  "expected IPv4:port or [IPv6]:port (default: /etc/resolv.conf's name servers)\n"
                  "@DIR@/c.conf:13: require_fcrdns: invalid value 'always'; valid: no, external, "
                  "yes, session\n");
}

/* Issue 13: the daily recipient budget per account (docs/account-budget.md). */
static void test_daily_recipient_limit(void **state)
{
    (void)state;
    struct config *cfg = expect_ok(MIN_PROXY MIN_ACCOUNT MIN_DEVICE);
    assert_int_equal(cfg->accounts[0].daily_recipient_limit, 10000); /* Exchange's per mailbox */
    config_free(cfg);

    cfg = expect_ok(MIN_PROXY MIN_ACCOUNT
                    "daily_recipient_limit = 0\n"
                    "[account g]\nprovider = oauth2\ntoken_url = https://idp.test/t\n"
                    "client_id = cid\nclient_secret_file = @DIR@/b.secret\n"
                    "mailbox = g@contoso.edu\n"
                    "[account h]\nprovider = oauth2\ntoken_url = https://idp.test/t\n"
                    "client_id = cid\nclient_secret_file = @DIR@/b.secret\n"
                    "mailbox = h@contoso.edu\ndaily_recipient_limit = 5\n"
                    "[account mx]\nupstream_host = mx.contoso.edu\nupstream_port = 25\n"
                    "upstream_auth = none\nupstream_tls = opportunistic\n"
                    "mailbox = mx@contoso.edu\n"
                    "[account mx2]\nupstream_host = mx.contoso.edu\nupstream_port = 25\n"
                    "upstream_auth = none\nupstream_tls = opportunistic\n"
                    "mailbox = mx2@contoso.edu\ndaily_recipient_limit = 2000\n" MIN_DEVICE);
    assert_int_equal(cfg->accounts[0].daily_recipient_limit, 0);    /* explicit: none */
    assert_int_equal(cfg->accounts[1].daily_recipient_limit, 0);    /* not microsoft: none */
    assert_int_equal(cfg->accounts[2].daily_recipient_limit, 5);    /* explicit */
    assert_int_equal(cfg->accounts[3].daily_recipient_limit, 0);    /* no provider: none */
    assert_int_equal(cfg->accounts[4].daily_recipient_limit, 2000); /* direct send, explicit */
    config_free(cfg);

    expect_errors(MIN_PROXY MIN_ACCOUNT "daily_recipient_limit = -5\n" MIN_DEVICE,
                  "@DIR@/c.conf:9: daily_recipient_limit: invalid number '-5'; expected an "
                  "integer 0..10000000\n");
    expect_errors(MIN_PROXY MIN_ACCOUNT "daily_recipient_limit = 20000000\n" MIN_DEVICE,
                  "@DIR@/c.conf:9: daily_recipient_limit: 20000000 is out of range; valid: "
                  "0..10000000\n");
    expect_errors(MIN_PROXY MIN_ACCOUNT "daily_recipient_limit = lots\n" MIN_DEVICE,
                  "@DIR@/c.conf:9: daily_recipient_limit: invalid number 'lots'; expected an "
                  "integer 0..10000000\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_valid),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_log_level_warning),
        cmocka_unit_test(test_lexical),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_throttle_keys),
        cmocka_unit_test(test_unknown_section),
        cmocka_unit_test(test_bad_listen),
        cmocka_unit_test(test_proxy_protocol),
        cmocka_unit_test(test_bad_cidr),
        cmocka_unit_test(test_secret_files),
        cmocka_unit_test(test_tls_files),
        cmocka_unit_test(test_account_reference),
        cmocka_unit_test(test_bad_hash),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_bad_size_duration),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_line_too_long),
        cmocka_unit_test(test_many_errors),
        cmocka_unit_test(test_token_urls),
        cmocka_unit_test(test_whole_file),
        cmocka_unit_test(test_example_file),
        cmocka_unit_test(test_delegated_example),
        cmocka_unit_test(test_grant_credentials),
        cmocka_unit_test(test_upstream_auth),
        cmocka_unit_test(test_metrics_listen),
        cmocka_unit_test(test_delivery_keys),
        cmocka_unit_test(test_upstream_kinds),
        cmocka_unit_test(test_clouds),
        cmocka_unit_test(test_http_proxy),
        cmocka_unit_test(test_kind_examples),
        cmocka_unit_test(test_allow_recipients),
        cmocka_unit_test(test_fcrdns_keys),
        cmocka_unit_test(test_device_limit_keys),
        /* issue 13 */
        cmocka_unit_test(test_daily_recipient_limit),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
