/* What a reload decides without touching the network: which listeners stay, close or open
 * (server_listen_diff), which accounts keep their token cache (server_gen_account_same), and
 * the metrics registry carried over to the new config by name (metrics_reconfigure). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "proxy/config/config.h"
#include "proxy/runtime/metrics.h"
#include "proxy/runtime/server_gen.h"
#include "proxy/server/server_int.h"

static void test_listen_diff(void **state)
{
    (void)state;
    const struct listen_key old[] = {{"127.0.0.1", "2525", 0},
                                     {"*", "25", 0},
                                     {"*", "25", 0}, /* "*": v4 and v6 sockets */
                                     {"127.0.0.1", "465", 1}};
    const struct listen_key nw[] = {
        {"*", "25", 0},          /* kept (both of its sockets) */
        {"127.0.0.1", "465", 0}, /* same address, but STARTTLS instead of implicit TLS: new */
        {"127.0.0.1", "2526", 0}};
    int kept[4], added[3];
    server_listen_diff(old, 4, nw, 3, kept, added);
    assert_int_equal(kept[0], 0);
    assert_int_equal(kept[1], 1);
    assert_int_equal(kept[2], 1);
    assert_int_equal(kept[3], 0);
    assert_int_equal(added[0], 0);
    assert_int_equal(added[1], 1);
    assert_int_equal(added[2], 1);
}

static void test_listen_diff_unchanged_and_empty(void **state)
{
    (void)state;
    const struct listen_key k[] = {{"::1", "2525", 0}, {"127.0.0.1", "465", 1}};
    int kept[2] = {9, 9}, added[2] = {9, 9};
    server_listen_diff(k, 2, k, 2, kept, added);
    assert_true(kept[0] && kept[1]);
    assert_false(added[0] || added[1]);
    server_listen_diff(k, 2, NULL, 0, kept, added);
    assert_false(kept[0] || kept[1]);
    server_listen_diff(NULL, 0, k, 2, kept, added);
    assert_true(added[0] && added[1]);
}

static struct cfg_account account(void)
{
    struct cfg_account a = {
        .name = "scanners",
        .provider = "microsoft",
        .grant = "client_credentials",
        .tenant = "contoso",
        .client_id = "11111111-2222",
        .client_secret = "s3cret",
        .mailbox = "scanner@contoso.test",
        .token_url = "https://login.example/token",
        .scope = "https://outlook.office365.com/.default",
        .sender_rewrite = SENDER_REWRITE_OFF,
    };
    return a;
}

static void test_account_same(void **state)
{
    (void)state;
    struct cfg_account a = account(), b = account();
    assert_true(server_gen_account_same(&a, &b));
    /* not token-relevant: the session's business, not the cache's */
    b.sender_rewrite = SENDER_REWRITE_HEADER;
    b.upstream.port = 2587;
    b.line = 42;
    b.client_secret_file = "/elsewhere/secret"; /* the secret itself is what counts */
    assert_true(server_gen_account_same(&a, &b));
    char changed[] = "other";
    char **fields[] = {&b.name,    &b.provider,  &b.grant, &b.tenant, &b.client_id,
                       &b.mailbox, &b.token_url, &b.scope, &b.issuer, &b.client_key};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        b = account();
        *fields[i] = changed;
        assert_false(server_gen_account_same(&a, &b));
    }
    b = account();
    b.client_secret = "n3w-s3cret"; /* a rotated secret in the same file */
    assert_false(server_gen_account_same(&a, &b));
    b = account();
    b.scope = NULL;
    assert_false(server_gen_account_same(&a, &b));
}

static void test_account_same_discovered(void **state)
{
    (void)state;
    /* a's endpoints came from its issuer; b, just loaded, has not asked it yet */
    struct cfg_account a = account(), b = account();
    a.issuer = b.issuer = "https://idp.example";
    a.device_authorization_url = "https://idp.example/device";
    b.token_url = NULL;
    assert_true(server_gen_account_same(&a, &b));
    b.issuer = "https://other.example";
    assert_false(server_gen_account_same(&a, &b));
    /* without an issuer a missing token_url is a real difference */
    a.issuer = NULL;
    b = account();
    b.token_url = NULL;
    assert_false(server_gen_account_same(&a, &b));
}

static void test_metrics_carried_over(void **state)
{
    (void)state;
    struct cfg_account acc1[2] = {{.name = "scanners"}, {.name = "gone"}};
    struct cfg_device dev1[1] = {{.name = "copier", .username = "copier"}};
    struct config c1 = {.accounts = acc1, .naccounts = 2, .devices = dev1, .ndevices = 1};
    struct cfg_account acc2[2] = {{.name = "new"}, {.name = "scanners"}};
    struct cfg_device dev2[2] = {{.name = "lab"}, {.name = "copier", .username = "copier"}};
    struct config c2 = {.accounts = acc2, .naccounts = 2, .devices = dev2, .ndevices = 2};

    struct metrics *m = metrics_new(&c1);
    assert_non_null(m);
    metrics_message(m, &acc1[0], METRICS_DELIVERED, 100);
    metrics_message(m, &acc1[1], METRICS_REFUSED, 0);
    metrics_auth_failed(m, metrics_device_by_user(m, "copier"));
    metrics_auth_failed(m, -1);
    metrics_device_limit(m, "copier", METRICS_LIMIT_BLOCKED);
    assert_int_equal(metrics_reconfigure(m, &c2), 0);
    metrics_device_limit(m, "copier", METRICS_LIMIT_BLOCKED);
    /* a session older than the reload still counts under its account's name */
    metrics_message(m, &acc1[0], METRICS_DELIVERED, 50);
    metrics_message(m, &acc1[1], METRICS_DELIVERED, 7); /* removed: not counted */
    metrics_message(m, &acc2[0], METRICS_DEFERRED, 0);

    struct evbuffer *out = evbuffer_new();
    assert_int_equal(metrics_render(m, out, NULL, NULL, 0), 0);
    evbuffer_add(out, "", 1);
    const char *text = (const char *)evbuffer_pullup(out, -1);
    assert_non_null(strstr(text, "account=\"scanners\",result=\"delivered\"} 2\n"));
    assert_non_null(strstr(text, "account=\"new\",result=\"deferred\"} 1\n"));
    assert_null(strstr(text, "\"gone\""));
    assert_non_null(strstr(text, "device=\"copier\"} 1\n"));
    /* no username: nobody logs in as it */
    assert_null(strstr(text, "auth_failures_total{device=\"lab\""));
    /* device limit refusals carry over by name; a new device starts at zero */
    assert_non_null(strstr(text, "device_limit_refusals_total{device=\"copier\",limit=\"blocked\"} "
                                 "2\n"));
    assert_non_null(strstr(text, "device_limit_refusals_total{device=\"lab\",limit=\"blocked\"} "
                                 "0\n"));
    assert_non_null(strstr(text, "device=\"unknown\"} 1\n"));
    assert_non_null(strstr(text, "relayed_bytes_total{account=\"scanners\"} 150\n"));
    evbuffer_free(out);
    metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listen_diff),
        cmocka_unit_test(test_listen_diff_unchanged_and_empty),
        cmocka_unit_test(test_account_same),
        cmocka_unit_test(test_account_same_discovered),
        cmocka_unit_test(test_metrics_carried_over),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
