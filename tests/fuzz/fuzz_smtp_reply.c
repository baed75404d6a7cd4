/* libFuzzer target for proxy/smtp/smtp_reply.c. The first byte picks a split point; the rest is fed
 * whole and then in two pieces, and both runs must see exactly the same replies. Capabilities
 * are parsed from every reply. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/smtp/smtp_reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_hash(uint64_t *h, const void *p, size_t n)
{
    const unsigned char *b = p;
    size_t i;
    for (i = 0; i < n; i++) {
        *h ^= b[i];
        *h *= 1099511628211ULL;
    }
}

static void fuzz_check_reply(uint64_t *h, const struct smtp_reply *rep)
{
    struct smtp_caps caps;
    size_t i;
    if (rep->code < 200 || rep->code > 599 || rep->nlines < 1 ||
        rep->nlines > SMTP_REPLY_MAX_LINES || strlen(rep->enhanced) >= sizeof(rep->enhanced))
        abort();
    if (rep->enhanced[0] && rep->enhanced[0] != '0' + rep->code / 100)
        abort();
    fuzz_hash(h, &rep->code, sizeof(rep->code));
    fuzz_hash(h, rep->enhanced, strlen(rep->enhanced) + 1);
    for (i = 0; i < rep->nlines; i++) {
        if (strlen(rep->lines[i]) > SMTP_REPLY_LINE_MAX)
            abort();
        fuzz_hash(h, rep->lines[i], strlen(rep->lines[i]) + 1);
    }
    smtp_reply_caps(rep, &caps);
    fuzz_hash(h, &caps, sizeof(caps));
}

static uint64_t fuzz_run(const char *in, size_t len, size_t split)
{
    struct smtp_reply_parser *p = smtp_reply_new();
    uint64_t h = 14695981039346656037ULL;
    size_t pos = 0;
    int r = 0;
    if (!p)
        abort();
    while (pos < len && r >= 0) {
        size_t end = pos < split ? split : len;
        size_t consumed = 0;
        struct smtp_reply rep;
        const char *err = NULL;
        r = smtp_reply_next(p, in + pos, end - pos, &consumed, &rep, &err);
        if (consumed > end - pos || (r == 0 && consumed != end - pos))
            abort();
        if (r != 0)
            fuzz_hash(&h, &r, sizeof(r));
        if (r == 1)
            fuzz_check_reply(&h, &rep);
        else if (r < 0)
            fuzz_hash(&h, err, strlen(err) + 1);
        pos += consumed;
    }
    smtp_reply_free(p);
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in;
    size_t len, split;
    if (size < 1)
        return 0;
    in = (const char *)data + 1;
    len = size - 1;
    split = (size_t)data[0] * len / 255;
    if (fuzz_run(in, len, len) != fuzz_run(in, len, split))
        abort();
    return 0;
}
