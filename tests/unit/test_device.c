/* Device matching by address, by login, or both; crypt hashes made with mkpasswd. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/runtime/device.h"

/* mkpasswd -m yescrypt copier-pw */
#define HASH_COPIER "$y$j9T$OhhI1Xf3T8K5XTJfmEJmM.$HXC1bBYRo8SrXcE/2ypDcJjLldisbPD8T/qrHCPw.59"
/* mkpasswd -m sha512crypt lab-pw */
#define HASH_LAB                                                                                   \
    "$6$N/DMSwtbuAnzl6Uc$qR7Cmo8qH2pD.s91odescEdVS2rWNhvk0BJePK8gv5fcBsxDoPV5ObqmpI5Ma.TInW2x9655" \
    "yDRmBY6VDEpZb1"

static struct cfg_account test_account = {.name = "scanners"};
static struct cidr addrs_printer[1], addrs_printer6[1], addrs_copier[2], addrs_late[1];
static struct cfg_device test_devices[5];
static struct config test_cfg;

static void parse_into(struct cidr *c, const char *text)
{
    char err[256];
    assert_int_equal(cidr_parse(text, c, err, sizeof(err)), 0);
}

static int setup(void **state)
{
    (void)state;
    parse_into(&addrs_printer[0], "10.0.0.0/24");
    parse_into(&addrs_printer6[0], "2001:db8:1::/48");
    parse_into(&addrs_copier[0], "10.0.1.0/24");
    parse_into(&addrs_copier[1], "2001:db8:2::7");
    parse_into(&addrs_late[0], "10.0.0.5");
    /* In file order: address only, address only (v6), both, login only, address only. */
    test_devices[0] = (struct cfg_device){
        .name = "printer", .addrs = addrs_printer, .naddrs = 1, .account = &test_account};
    test_devices[1] = (struct cfg_device){
        .name = "printer6", .addrs = addrs_printer6, .naddrs = 1, .account = &test_account};
    test_devices[2] = (struct cfg_device){.name = "copier",
                                          .addrs = addrs_copier,
                                          .naddrs = 2,
                                          .username = "copier",
                                          .password_hash = HASH_COPIER,
                                          .account = &test_account};
    test_devices[3] = (struct cfg_device){
        .name = "lab", .username = "lab", .password_hash = HASH_LAB, .account = &test_account};
    test_devices[4] = (struct cfg_device){
        .name = "late", .addrs = addrs_late, .naddrs = 1, .account = &test_account};
    test_cfg.devices = test_devices;
    test_cfg.ndevices = 5;
    return 0;
}

static struct sockaddr_storage sa(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
    }
    return ss;
}

static const char *by_address(const struct device_table *t, const char *ip)
{
    struct sockaddr_storage ss = sa(ip);
    const struct cfg_device *d = device_by_address(t, (struct sockaddr *)&ss);
    return d ? d->name : NULL;
}

/* The device's name, or "why" when refused. */
static const char *login(const struct device_table *t, const char *ip, const char *user,
                         const char *pass)
{
    struct sockaddr_storage ss = sa(ip);
    const char *why = NULL;
    const struct cfg_device *d = device_authenticate(t, (struct sockaddr *)&ss, user, pass, &why);
    if (d) {
        assert_null(why);
        return d->name;
    }
    assert_non_null(why);
    return why;
}

static void test_address_only(void **state)
{
    (void)state;
    struct device_table *t = device_table_new(&test_cfg);
    assert_non_null(t);
    assert_string_equal(by_address(t, "10.0.0.7"), "printer");
    assert_string_equal(by_address(t, "10.0.0.0"), "printer");
    assert_string_equal(by_address(t, "10.0.0.255"), "printer");
    /* File order: printer's block comes first and also covers late's address. */
    assert_string_equal(by_address(t, "10.0.0.5"), "printer");
    /* A dual-stack listener's view of an IPv4 client. */
    assert_string_equal(by_address(t, "::ffff:10.0.0.7"), "printer");
    assert_string_equal(by_address(t, "2001:db8:1:ffff::1"), "printer6");
    assert_null(by_address(t, "2001:db8:3::1"));
    /* copier has a username: its address alone is not enough. */
    assert_null(by_address(t, "10.0.1.5"));
    assert_null(by_address(t, "2001:db8:2::7"));
    assert_null(by_address(t, "10.0.2.1"));
    assert_null(by_address(t, "192.168.1.1"));
    device_table_free(t);
}

static void test_known_and_may_match(void **state)
{
    struct sockaddr_storage a = sa("10.0.1.5"), b = sa("192.168.1.1"), c = sa("::ffff:10.0.1.5");
    (void)state;
    struct device_table *t = device_table_new(&test_cfg);
    assert_true(device_address_known(t, (struct sockaddr *)&a));
    assert_true(device_address_known(t, (struct sockaddr *)&c));
    assert_false(device_address_known(t, (struct sockaddr *)&b));
    assert_true(device_may_match(t, (struct sockaddr *)&a));
    /* lab logs in from anywhere, so nobody can be refused on sight. */
    assert_true(device_may_match(t, (struct sockaddr *)&b));
    assert_true(device_has_logins(t));
    device_table_free(t);

    /* Without lab: an unknown address can never match anything. */
    struct cfg_device devs[2] = {test_devices[0], test_devices[2]};
    struct config cfg = {.devices = devs, .ndevices = 2};
    t = device_table_new(&cfg);
    assert_false(device_may_match(t, (struct sockaddr *)&b));
    assert_true(device_may_match(t, (struct sockaddr *)&a));
    assert_true(device_has_logins(t));
    device_table_free(t);

    /* Address-only devices: no AUTH offered. */
    cfg.ndevices = 1;
    t = device_table_new(&cfg);
    assert_false(device_has_logins(t));
    assert_string_equal(login(t, "10.0.0.1", "copier", "copier-pw"), "unknown user");
    device_table_free(t);
    device_table_free(NULL);
}

static void test_login_only(void **state)
{
    (void)state;
    struct device_table *t = device_table_new(&test_cfg);
    /* sha512crypt, from any address, v4 or v6. */
    assert_string_equal(login(t, "192.168.1.1", "lab", "lab-pw"), "lab");
    assert_string_equal(login(t, "2001:db8:9::1", "lab", "lab-pw"), "lab");
    assert_string_equal(login(t, "192.168.1.1", "lab", "lab-pw "), "wrong password");
    assert_string_equal(login(t, "192.168.1.1", "lab", "LAB-PW"), "wrong password");
    assert_string_equal(login(t, "192.168.1.1", "lab", ""), "wrong password");
    /* The hash itself is not the password. */
    assert_string_equal(login(t, "192.168.1.1", "lab", HASH_LAB), "wrong password");
    device_table_free(t);
}

static void test_both_must_match(void **state)
{
    (void)state;
    struct device_table *t = device_table_new(&test_cfg);
    /* yescrypt, from one of its addresses. */
    assert_string_equal(login(t, "10.0.1.9", "copier", "copier-pw"), "copier");
    assert_string_equal(login(t, "::ffff:10.0.1.9", "copier", "copier-pw"), "copier");
    assert_string_equal(login(t, "2001:db8:2::7", "copier", "copier-pw"), "copier");
    assert_string_equal(login(t, "10.0.0.9", "copier", "copier-pw"),
                        "address not allowed for this user");
    assert_string_equal(login(t, "2001:db8:2::8", "copier", "copier-pw"),
                        "address not allowed for this user");
    assert_string_equal(login(t, "10.0.1.9", "copier", "lab-pw"), "wrong password");
    /* Another device's password does not log in as this one. */
    assert_string_equal(login(t, "10.0.1.9", "lab", "copier-pw"), "wrong password");
    device_table_free(t);
}

static void test_unknown_user(void **state)
{
    const char *why = NULL;
    struct sockaddr_storage ss = sa("10.0.1.9");
    (void)state;
    struct device_table *t = device_table_new(&test_cfg);
    assert_string_equal(login(t, "10.0.1.9", "nobody", "copier-pw"), "unknown user");
    /* Names are exact: case matters, no prefix matching. */
    assert_string_equal(login(t, "10.0.1.9", "Copier", "copier-pw"), "unknown user");
    assert_string_equal(login(t, "10.0.1.9", "copie", "copier-pw"), "unknown user");
    assert_string_equal(login(t, "10.0.1.9", "", ""), "unknown user");
    /* Address-only devices have no login. */
    assert_string_equal(login(t, "10.0.0.7", "printer", ""), "unknown user");
    assert_null(device_authenticate(t, (struct sockaddr *)&ss, NULL, "x", &why));
    assert_non_null(why);
    assert_null(device_authenticate(t, (struct sockaddr *)&ss, "copier", NULL, &why));
    assert_non_null(why);
    device_table_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_address_only), cmocka_unit_test(test_known_and_may_match),
        cmocka_unit_test(test_login_only),   cmocka_unit_test(test_both_must_match),
        cmocka_unit_test(test_unknown_user),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
