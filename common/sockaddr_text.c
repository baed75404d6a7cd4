/* The one place an address becomes text (sockaddr_text.h). */
#include "common/sockaddr_text.h"

#include <arpa/inet.h>
#include <string.h>

const char *sockaddr_text_bytes(int family, const void *addr, char *buf, size_t len)
{
    char tmp[SOCKADDR_TEXT_MAX];
    if (family != AF_INET && family != AF_INET6)
        return NULL;
    if (!inet_ntop(family, addr, tmp, sizeof(tmp)))
        return NULL;
    size_t n = strlen(tmp);
    if (n >= len)
        return NULL;
    memcpy(buf, tmp, n + 1);
    return buf;
}

const char *sockaddr_text(const struct sockaddr *sa, unsigned flags, char *buf, size_t len)
{
    if (!sa)
        return NULL;
    if (sa->sa_family == AF_INET)
        return sockaddr_text_bytes(
            AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, buf, len);
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        if ((flags & SOCKADDR_TEXT_UNMAP) && IN6_IS_ADDR_V4MAPPED(a6))
            return sockaddr_text_bytes(AF_INET, a6->s6_addr + 12, buf, len);
        return sockaddr_text_bytes(AF_INET6, a6, buf, len);
    }
    return NULL;
}
