/* Source-address matching: IPv4 and IPv6 addresses and CIDR blocks. */
#ifndef SOP_CIDR_H
#define SOP_CIDR_H

#include <stddef.h>
#include <sys/socket.h>

struct cidr {
    int family;             /* AF_INET or AF_INET6 */
    unsigned char addr[16]; /* network address, host bits zero (4 bytes used for AF_INET) */
    unsigned prefix;        /* 0..32 or 0..128 */
};

/* "10.20.3.15", "10.20.4.0/24", "2001:db8::/32", "::1". Surrounding blanks are ignored.
 * Host bits set under the prefix are an error that names the network meant.
 * 0 ok; -1 and a message in err. */
int cidr_parse(const char *text, struct cidr *out, char *err, size_t errlen);
/* 1 if sa (AF_INET or AF_INET6; IPv4-mapped IPv6 ::ffff:a.b.c.d counts as IPv4) is inside c. */
int cidr_match(const struct cidr *c, const struct sockaddr *sa);
/* "10.20.4.0/24" into buf (at least 50 bytes). */
const char *cidr_str(const struct cidr *c, char *buf, size_t len);

#endif
