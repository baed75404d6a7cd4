/* An address as text for log lines and replies: the one place that calls inet_ntop(3). Each
 * caller picks what it shows for an address it cannot format (the buffer is left as it was). */
#ifndef SOP_SOCKADDR_TEXT_H
#define SOP_SOCKADDR_TEXT_H

#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

/* Room for any address this writes, with its NUL. */
#define SOCKADDR_TEXT_MAX INET6_ADDRSTRLEN

/* Flags for sockaddr_text. */
#define SOCKADDR_TEXT_UNMAP 1u /* an IPv4-mapped IPv6 address (::ffff:a.b.c.d) as a.b.c.d */

/* The address of family AF_INET (4 bytes at addr) or AF_INET6 (16 bytes) as text in buf.
 * Returns buf, or NULL with buf untouched if the family is neither or the text does not fit. */
const char *sockaddr_text_bytes(int family, const void *addr, char *buf, size_t len);

/* The address (not the port) of sa, AF_INET or AF_INET6 (the whole sockaddr_in/_in6 readable),
 * as text in buf. flags: SOCKADDR_TEXT_UNMAP or 0. Returns buf, or NULL with buf untouched (sa
 * NULL, another family, or the text does not fit). */
const char *sockaddr_text(const struct sockaddr *sa, unsigned flags, char *buf, size_t len);

#endif
