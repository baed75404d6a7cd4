/* common/sockaddr_text: the one place an address becomes text. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/un.h>

#include <cmocka.h>

#include "common/sockaddr_text.h"

static struct sockaddr_storage sa_of(const char *ip, unsigned short port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
    }
    return ss;
}

/* The text of ip as sockaddr_text writes it with flags ("(null)" when it refuses). */
static const char *text(const char *ip, unsigned flags, char *buf, size_t len)
{
    struct sockaddr_storage ss = sa_of(ip, 2525);
    const char *r = sockaddr_text((const struct sockaddr *)&ss, flags, buf, len);
    return r ? r : "(null)";
}

static void test_ipv4_and_ipv6(void **state)
{
    char buf[SOCKADDR_TEXT_MAX];
    (void)state;
    /* the address only, never the port */
    assert_string_equal(text("192.0.2.7", 0, buf, sizeof(buf)), "192.0.2.7");
    assert_string_equal(text("192.0.2.7", SOCKADDR_TEXT_UNMAP, buf, sizeof(buf)), "192.0.2.7");
    assert_string_equal(text("2001:db8::1", 0, buf, sizeof(buf)), "2001:db8::1");
    assert_string_equal(text("2001:db8::1", SOCKADDR_TEXT_UNMAP, buf, sizeof(buf)), "2001:db8::1");
    assert_string_equal(text("::1", 0, buf, sizeof(buf)), "::1");
    /* eight full groups fit SOCKADDR_TEXT_MAX */
    assert_string_equal(text("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 0, buf, sizeof(buf)),
                        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe");
    assert_string_equal(text("::ffff:255.255.255.255", 0, buf, sizeof(buf)),
                        "::ffff:255.255.255.255");
}

static void test_ipv4_mapped(void **state)
{
    char buf[SOCKADDR_TEXT_MAX];
    (void)state;
    /* as the kernel gives it on a dual-stack socket, unless the caller asks for IPv4 */
    assert_string_equal(text("::ffff:198.51.100.9", 0, buf, sizeof(buf)), "::ffff:198.51.100.9");
    assert_string_equal(text("::ffff:198.51.100.9", SOCKADDR_TEXT_UNMAP, buf, sizeof(buf)),
                        "198.51.100.9");
    /* only ::ffff:0:0/96 is mapped: a NAT64 address stays IPv6 */
    assert_string_equal(text("64:ff9b::c000:207", SOCKADDR_TEXT_UNMAP, buf, sizeof(buf)),
                        "64:ff9b::c000:207");
}

static void test_refused_leaves_buffer(void **state)
{
    char buf[SOCKADDR_TEXT_MAX];
    (void)state;
    /* another family */
    struct sockaddr_un un;
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    strcpy(buf, "before");
    assert_null(sockaddr_text((const struct sockaddr *)&un, 0, buf, sizeof(buf)));
    assert_string_equal(buf, "before");
    assert_null(sockaddr_text(NULL, SOCKADDR_TEXT_UNMAP, buf, sizeof(buf)));
    assert_string_equal(buf, "before");
    /* too small for the text and its NUL: nothing written, not a truncated address */
    char small[9] = "untouch";
    struct sockaddr_storage ss = sa_of("192.0.2.77", 25);
    assert_null(sockaddr_text((const struct sockaddr *)&ss, 0, small, sizeof(small)));
    assert_string_equal(small, "untouch");
    char exact[11]; /* "192.0.2.77" and its NUL */
    assert_non_null(sockaddr_text((const struct sockaddr *)&ss, 0, exact, sizeof(exact)));
    assert_string_equal(exact, "192.0.2.77");
    assert_null(sockaddr_text((const struct sockaddr *)&ss, 0, buf, 0));
}

static void test_bytes(void **state)
{
    char buf[SOCKADDR_TEXT_MAX];
    const unsigned char v4[4] = {203, 0, 113, 5};
    unsigned char v6[16] = {0x20, 0x01, 0x0d, 0xb8};
    (void)state;
    assert_ptr_equal(sockaddr_text_bytes(AF_INET, v4, buf, sizeof(buf)), buf);
    assert_string_equal(buf, "203.0.113.5");
    assert_ptr_equal(sockaddr_text_bytes(AF_INET6, v6, buf, sizeof(buf)), buf);
    assert_string_equal(buf, "2001:db8::");
    strcpy(buf, "before");
    assert_null(sockaddr_text_bytes(AF_UNIX, v6, buf, sizeof(buf)));
    assert_null(sockaddr_text_bytes(0, v6, buf, sizeof(buf)));
    assert_string_equal(buf, "before");
    assert_null(sockaddr_text_bytes(AF_INET6, v6, buf, 10));
    assert_string_equal(buf, "before");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4_and_ipv6),
        cmocka_unit_test(test_ipv4_mapped),
        cmocka_unit_test(test_refused_leaves_buffer),
        cmocka_unit_test(test_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
