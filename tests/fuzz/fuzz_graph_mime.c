/* libFuzzer target for proxy/graph/graph_mime.c: any bytes as a device's message, prepared for
 * Microsoft Graph as the graph upstream does it.
 *
 * The first byte: bits 0-2 pick request_max (4 MB, or 256 bytes to 64 KiB, so splits and
 * refusals are reachable with small inputs); bit 3 sender_rewrite = header; bit 4 the message
 * in a file with a spool-like trailer after it (graph_mime_open_fd), else in memory; bits 5-7
 * which of three envelope recipients (none picked: the first).
 *
 * Checked: it opens (only an unreadable file or no recipient may fail); a refusal is a 552 5.3.4
 * with nothing to send; otherwise the submitted copy's base64 has exactly the size announced,
 * fits request_max, has no line break, reads the same after a rewind, and, parsed again with
 * GMime, names in To/Cc/Bcc only envelope recipients, and every one of them; each attachment
 * reads exactly its size, and a read at any offset gives the bytes a read in order gave; the
 * trailer never shows. */
#define _GNU_SOURCE /* memmem */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <gmime/gmime.h>
#include <openssl/evp.h>

#include "proxy/graph/graph_mime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const ALL_RCPTS[] = {"a@x.org", "B@X.org", "c@y.example"};
static const size_t MAXES[] = {0, 256, 512, 1024, 2048, 4096, 16384, 65536};
#define TRAILER "SPOOLTRAILER\r\nTo: trailer@evil.example\r\n"

static char *fuzz_read_body(struct graph_mime *m, uint64_t n, size_t step)
{
    char *b = malloc(n + 1), err[256];
    size_t got = 0;
    ssize_t r;
    if (!b)
        abort();
    graph_mime_body_rewind(m);
    while ((r = graph_mime_body_read(m, b + got, step, err, sizeof(err))) > 0) {
        got += (size_t)r;
        if (got > n)
            abort();
        step = step * 3 % 5000 + 1;
    }
    if (r != 0 || got != n)
        abort();
    b[n] = '\0';
    return b;
}

static int fuzz_in_env(const char *addr, const char *const *rcpts, size_t n, unsigned char *seen)
{
    for (size_t i = 0; i < n; i++)
        if (addr && strcasecmp(addr, rcpts[i]) == 0) {
            seen[i] = 1;
            return 1;
        }
    return 0;
}

/* Every mailbox in l (groups included) must be an envelope recipient. */
static void fuzz_check_list(InternetAddressList *l, const char *const *rcpts, size_t n,
                            unsigned char *seen, int depth)
{
    int len = internet_address_list_length(l);
    for (int i = 0; i < len; i++) {
        InternetAddress *ia = internet_address_list_get_address(l, i);
        if (INTERNET_ADDRESS_IS_MAILBOX(ia)) {
            if (!fuzz_in_env(internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia)), rcpts,
                             n, seen))
                abort();
        } else if (INTERNET_ADDRESS_IS_GROUP(ia) && depth < 8) {
            fuzz_check_list(internet_address_group_get_members(INTERNET_ADDRESS_GROUP(ia)), rcpts,
                            n, seen, depth + 1);
        }
    }
}

static void fuzz_check_rcpts(const char *mime, size_t len, const char *const *rcpts, size_t n)
{
    GMimeStream *s = g_mime_stream_mem_new_with_buffer(mime, len);
    GMimeParser *p = g_mime_parser_new_with_stream(s);
    GMimeMessage *msg = g_mime_parser_construct_message(p, NULL);
    unsigned char seen[3] = {0, 0, 0};
    static const GMimeAddressType types[] = {GMIME_ADDRESS_TYPE_TO, GMIME_ADDRESS_TYPE_CC,
                                             GMIME_ADDRESS_TYPE_BCC};
    if (!msg)
        abort(); /* it always has a header section: at least the Bcc: or a To: */
    for (size_t t = 0; t < 3; t++)
        fuzz_check_list(g_mime_message_get_addresses(msg, types[t]), rcpts, n, seen, 0);
    for (size_t i = 0; i < n; i++)
        if (!seen[i])
            abort();
    g_object_unref(msg);
    g_object_unref(p);
    g_object_unref(s);
}

static void fuzz_check_att(struct graph_mime *m, size_t i, uint32_t seed)
{
    const struct graph_mime_att *a = graph_mime_att(m, i);
    unsigned char *all, chunk[700];
    char err[256];
    uint64_t off = 0;
    ssize_t r;
    if (!a || !a->name || !*a->name || !a->content_type || a->size > (1u << 24))
        abort();
    all = malloc(a->size + 1);
    if (!all)
        abort();
    while ((r = graph_mime_att_read(m, i, off, all + off, (size_t)(a->size - off) + 1, err,
                                    sizeof(err))) > 0)
        off += (uint64_t)r;
    if (r != 0 || off != a->size)
        abort();
    for (int k = 0; k < 3 && a->size > 0; k++) {
        uint64_t at = (seed = seed * 1103515245u + 12345u) % a->size;
        size_t want = (size_t)(a->size - at < sizeof(chunk) ? a->size - at : sizeof(chunk));
        r = graph_mime_att_read(m, i, at, chunk, sizeof(chunk), err, sizeof(err));
        if (r <= 0 || (size_t)r > want || memcmp(chunk, all + at, (size_t)r) != 0)
            abort();
    }
    free(all);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *rcpts[3];
    size_t nrcpts = 0;
    struct graph_mime_opts o;
    struct graph_mime *m;
    char err[256];
    FILE *f = NULL;
    if (size < 1)
        return 0;
    for (size_t i = 0; i < 3; i++)
        if (data[0] & (0x20u << i))
            rcpts[nrcpts++] = ALL_RCPTS[i];
    if (!nrcpts)
        rcpts[nrcpts++] = ALL_RCPTS[0];
    o.rcpts = rcpts;
    o.nrcpts = nrcpts;
    o.from_rewrite = (data[0] & 8) ? "relay@x.org" : NULL;
    o.request_max = MAXES[data[0] & 7];

    if (data[0] & 16) {
        f = tmpfile();
        if (!f || fwrite(data + 1, 1, size - 1, f) != size - 1 || fputs(TRAILER, f) < 0 ||
            fflush(f) != 0)
            abort();
        m = graph_mime_open_fd(fileno(f), size - 1, &o, err, sizeof(err));
    } else {
        m = graph_mime_open_mem(data + 1, size - 1, &o, err, sizeof(err));
    }
    if (!m)
        abort();

    if (graph_mime_refusal(m)) {
        if (strncmp(graph_mime_refusal(m), "552 5.3.4 ", 10) != 0 || graph_mime_natt(m) != 0 ||
            graph_mime_body_b64_size(m) != 0)
            abort();
    } else {
        uint64_t n = graph_mime_body_b64_size(m);
        size_t max = o.request_max ? o.request_max : GRAPH_MIME_REQUEST_MAX;
        char *b64, *again;
        unsigned char *mime;
        size_t len;
        if (n == 0 || n % 4 != 0 || n > max)
            abort();
        b64 = fuzz_read_body(m, n, 1 + data[0] % 13);
        again = fuzz_read_body(m, n, 4096);
        if (memcmp(b64, again, n) != 0 || memchr(b64, '\n', n) || memchr(b64, '\r', n))
            abort();
        mime = malloc(n / 4 * 3 + 1);
        if (!mime || EVP_DecodeBlock(mime, (unsigned char *)b64, (int)n) != (int)(n / 4 * 3))
            abort();
        len = n / 4 * 3 - (b64[n - 1] == '=') - (b64[n - 2] == '=');
        mime[len] = '\0';
        if (!memmem(data, size, "SPOOLTRAILER", 12) && memmem(mime, len, "SPOOLTRAILER", 12))
            abort();
        fuzz_check_rcpts((char *)mime, len, rcpts, nrcpts);
        for (size_t i = 0; i < graph_mime_natt(m); i++)
            fuzz_check_att(m, i, (uint32_t)size + (uint32_t)i);
        if (graph_mime_att(m, graph_mime_natt(m)))
            abort();
        free(mime);
        free(b64);
        free(again);
    }
    graph_mime_free(m);
    if (f)
        fclose(f);
    return 0;
}
