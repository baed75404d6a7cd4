/* libFuzzer target for proxy/server/proxy_header.c. The first byte picks a split point; the rest
 * is parsed whole and then as its prefix up to the split: the prefix must say "more" or give
 * exactly the whole's answer (the listener parses what it has peeked so far, then again with
 * more). A header found never claims more bytes than it was given, nor more than the limits. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "proxy/server/proxy_header.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check(const struct proxy_header *h, size_t len)
{
    if (h->len == 0 || h->len > len || h->len > PROXY_HEADER_MAX)
        abort();
    if (h->version == 1 && h->len > PROXY_HEADER_V1_MAX)
        abort();
    if (h->version != 1 && h->version != 2)
        abort();
    if (h->has_addr && ((h->src.ss_family != AF_INET && h->src.ss_family != AF_INET6) ||
                        h->src.ss_family != h->dst.ss_family))
        abort();
    if (h->local && (h->version != 2 || h->has_addr)) /* LOCAL: v2 only, never an address */
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proxy_header whole, part;
    const char *ew = NULL, *ep = NULL;
    const unsigned char *in;
    size_t len, split;
    if (size < 1)
        return 0;
    in = data + 1;
    len = size - 1;
    split = (size_t)data[0] * len / 255;
    int rw = proxy_header_parse(in, len, &whole, &ew);
    int rp = proxy_header_parse(in, split, &part, &ep);
    if (rw < -1 || rw > 1 || (rw < 0) != (ew != NULL))
        abort();
    if (rw == 1)
        fuzz_check(&whole, len);
    if (rp == 0) {
        if (ep)
            abort();
        return 0;
    }
    if (rp != rw)
        abort();
    if (rp < 0 && strcmp(ep, ew) != 0)
        abort();
    if (rp == 1) {
        fuzz_check(&part, split);
        if (part.len != whole.len || part.version != whole.version ||
            part.has_addr != whole.has_addr || part.local != whole.local ||
            memcmp(&part.src, &whole.src, sizeof(part.src)) ||
            memcmp(&part.dst, &whole.dst, sizeof(part.dst)))
            abort();
    }
    return 0;
}
