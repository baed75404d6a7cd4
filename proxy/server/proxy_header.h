/* The PROXY protocol header (haproxy's proxy-protocol.txt, v1 text and v2 binary) that a load
 * balancer sends before the client's first byte, naming the client's address. Pure: bytes in,
 * struct out, no I/O, nothing kept between calls (the caller peeks at what has arrived and
 * calls again with more). */
#ifndef SOP_PROXY_HEADER_H
#define SOP_PROXY_HEADER_H

#include <stddef.h>
#include <sys/socket.h>

/* v1: "PROXY TCP4 ..." is at most 107 bytes with its CRLF. */
#define PROXY_HEADER_V1_MAX 107
/* v2: the 16 fixed bytes and at most this many more (address block and TLVs); a longer header
 * is refused (the spec allows 65535; nothing a balancer sends for TCP comes near). */
#define PROXY_HEADER_V2_BODY_MAX 2048
/* Longest header accepted: what a caller needs to buffer. */
#define PROXY_HEADER_MAX (16 + PROXY_HEADER_V2_BODY_MAX)

struct proxy_header {
    int version; /* 1 or 2 */
    /* 1: src/dst hold the client's and the balancer's addresses (AF_INET or AF_INET6, ports
     * set). 0: v1 UNKNOWN or v2 LOCAL (a health check, or a protocol not carried): the
     * connection's own addresses apply. */
    int has_addr;
    /* 1: a v2 LOCAL command: the balancer opened the connection itself (haproxy's health checks,
     * with send-proxy-v2 or check-send-proxy), nothing is relayed; has_addr is then 0. 0 for
     * everything else, v1 UNKNOWN and v2 PROXY over UNSPEC included. */
    int local;
    struct sockaddr_storage src, dst;
    size_t len; /* bytes the header takes, TLVs included: what to consume */
};

/* Parse the header at the start of buf (len bytes received so far). 1: complete, *out filled;
 * 0: a valid beginning, more bytes needed; -1: not a valid header, *err says why (static). A
 * result other than 0 never changes when more bytes are appended. */
int proxy_header_parse(const unsigned char *buf, size_t len, struct proxy_header *out,
                       const char **err);

#endif
