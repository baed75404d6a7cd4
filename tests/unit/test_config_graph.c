/* upstream = graph: what an account resolves to (graph_url, scope, in-flight cap, no pacing per
 * minute) and the exact message for each mistake (SMTP keys, a provider other than Microsoft,
 * a scope for the other resource, more than 4 requests in flight). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "config_fixture.h"

#define GRAPH_ACCOUNT MIN_ACCOUNT "upstream = graph\n"

static void test_graph_defaults(void **state)
{
    (void)state;
    struct config *cfg = expect_ok(MIN_PROXY GRAPH_ACCOUNT MIN_DEVICE);
    const struct cfg_account *a = &cfg->accounts[0];
    assert_int_equal(a->kind, UPSTREAM_KIND_GRAPH);
    assert_string_equal(a->graph_url, "https://graph.microsoft.com");
    assert_string_equal(a->scope, "https://graph.microsoft.com/.default");
    assert_int_equal(a->max_upstream_connections, 4);
    assert_int_equal(a->rate_limit, 0);
    config_free(cfg);

    /* The smtp default is unchanged: Exchange's scope, 30 a minute, 3 connections. */
    cfg = expect_ok(MIN_PROXY MIN_ACCOUNT MIN_DEVICE);
    a = &cfg->accounts[0];
    assert_int_equal(a->kind, UPSTREAM_KIND_SMTP);
    assert_null(a->graph_url);
    assert_string_equal(a->scope, "https://outlook.office365.com/.default");
    assert_int_equal(a->max_upstream_connections, 3);
    assert_int_equal(a->rate_limit, 30);
    config_free(cfg);
}

static void test_graph_clouds_and_url(void **state)
{
    (void)state;
    struct config *cfg = expect_ok(MIN_PROXY GRAPH_ACCOUNT "cloud = usgovdod\n" MIN_DEVICE);
    assert_string_equal(cfg->accounts[0].graph_url, "https://dod-graph.microsoft.us");
    assert_string_equal(cfg->accounts[0].scope, "https://dod-graph.microsoft.us/.default");
    config_free(cfg);
    cfg = expect_ok(MIN_PROXY GRAPH_ACCOUNT "cloud = china\n" MIN_DEVICE);
    assert_string_equal(cfg->accounts[0].graph_url, "https://microsoftgraph.chinacloudapi.cn");
    config_free(cfg);
    /* A stand-in on loopback; the trailing slash goes. */
    cfg = expect_ok(MIN_PROXY GRAPH_ACCOUNT
                    "graph_url = http://127.0.0.1:8080/\n"
                    "rate_limit = 100\nmax_upstream_connections = 2\n" MIN_DEVICE);
    assert_string_equal(cfg->accounts[0].graph_url, "http://127.0.0.1:8080");
    assert_int_equal(cfg->accounts[0].rate_limit, 100);
    assert_int_equal(cfg->accounts[0].max_upstream_connections, 2);
    config_free(cfg);
    /* Delegated: the user's Mail.Send and Mail.ReadWrite, and a refresh token. */
    write_file("store.key", "0123456789abcdef0123456789abcdef", 0600);
    cfg = expect_ok(MIN_PROXY "key_file = @DIR@/store.key\n[account a]\nprovider = "
                              "microsoft\ntenant = contoso.onmicrosoft.com\n"
                              "client_id = cid\ngrant = refresh_token\nmailbox = scan@contoso.edu\n"
                              "upstream = graph\n" MIN_DEVICE);
    assert_string_equal(cfg->accounts[0].scope,
                        "https://graph.microsoft.com/Mail.Send "
                        "https://graph.microsoft.com/Mail.ReadWrite offline_access");
    config_free(cfg);
    char path[256];
    snprintf(path, sizeof(path), "%s/store.key", test_dir);
    unlink(path);
}

static void test_graph_mistakes(void **state)
{
    (void)state;
    expect_errors(MIN_PROXY GRAPH_ACCOUNT
                  "upstream_host = smtp.example.org\nupstream_port = 25\n" MIN_DEVICE,
                  "@DIR@/c.conf:10: [account a]: upstream_host is only used with upstream = smtp; "
                  "Graph (upstream = graph, line 9) is reached at graph_url with the account's "
                  "token\n"
                  "@DIR@/c.conf:11: [account a]: upstream_port is only used with upstream = smtp; "
                  "Graph (upstream = graph, line 9) is reached at graph_url with the account's "
                  "token\n");
    expect_errors(
        MIN_PROXY GRAPH_ACCOUNT "scope = https://outlook.office365.com/.default\n" MIN_DEVICE,
        "@DIR@/c.conf:10: [account a]: scope 'https://outlook.office365.com/.default' asks "
        "for an Exchange Online token, which Microsoft Graph refuses (401 "
        "InvalidAuthenticationToken); use https://graph.microsoft.com/.default, or remove "
        "scope\n");
    expect_errors(MIN_PROXY MIN_ACCOUNT "scope = https://graph.microsoft.com/.default\n" MIN_DEVICE,
                  "@DIR@/c.conf:9: [account a]: scope 'https://graph.microsoft.com/.default' asks "
                  "for a Microsoft Graph token, which Exchange Online refuses for SMTP AUTH (535 "
                  "5.7.3); use https://outlook.office365.com/.default, or set upstream = graph\n");
    expect_errors(
        MIN_PROXY GRAPH_ACCOUNT "max_upstream_connections = 8\n" MIN_DEVICE,
        "@DIR@/c.conf:10: [account a]: max_upstream_connections = 8; with upstream = graph "
        "it is the requests in flight for the mailbox, 1 to 4 (Graph allows 4 at once "
        "per mailbox and answers 429 beyond)\n");
    expect_errors(MIN_PROXY MIN_ACCOUNT "graph_url = https://graph.microsoft.com\n" MIN_DEVICE,
                  "@DIR@/c.conf:9: [account a]: graph_url is only used with upstream = graph; "
                  "remove it (or set upstream = graph)\n");
    expect_errors(MIN_PROXY GRAPH_ACCOUNT "graph_url = http://graph.example.org\n" MIN_DEVICE,
                  "@DIR@/c.conf:10: graph_url: 'http://graph.example.org' uses http:// to a host "
                  "that is not loopback; use https:// (http:// is allowed only for 127.0.0.0/8, "
                  "[::1] and localhost)\n");
    expect_errors(MIN_PROXY "[account g]\nprovider = google\nclient_id = cid\n"
                            "service_account_key = @DIR@/key.pem\nmailbox = scan@contoso.edu\n"
                            "upstream = graph\n"
                            "[device d]\naddress = 10.0.0.1\naccount = g\n",
                  "@DIR@/c.conf:8: [account g]: upstream = graph needs provider = microsoft "
                  "(Microsoft Graph takes Entra ID tokens), not google\n");
    expect_errors(MIN_PROXY MIN_ACCOUNT "upstream = http\n" MIN_DEVICE,
                  "@DIR@/c.conf:9: upstream: invalid value 'http'; valid: smtp, graph\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_graph_defaults),
        cmocka_unit_test(test_graph_clouds_and_url),
        cmocka_unit_test(test_graph_mistakes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
