/* libFuzzer target for proxy/smtp/dsn.c. The input is split at NUL bytes into the hostile fields
 * (addresses, diagnostic, remote MTA, account, device, queue id, sender, bounce_to, status) and
 * the original message; the first byte picks the action, reason and number of recipients. Any
 * DSN built must pass dsn_check (CRLF only, lines <= 998, 7-bit, balanced boundary, a complete
 * block per recipient); no bounce only for the null sender. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/smtp/dsn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_FIELDS 10

static int fuzz_random(void *ctx, unsigned char *buf, size_t n)
{
    unsigned *calls = ctx;
    size_t i;
    for (i = 0; i < n; i++)
        buf[i] = (unsigned char)(*calls * 31 + i);
    (*calls)++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy, *f[FUZZ_FIELDS], *p, *out = NULL, rcpt[DSN_ADDR_MAX + 1], err[256];
    struct dsn_rcpt r[3];
    struct dsn_input in;
    unsigned calls = 0, flags;
    size_t i, n = 0, outlen = 0, left;
    int rc;
    if (size < 1)
        return 0;
    flags = data[0];
    copy = malloc(size);
    if (!copy)
        return 0;
    memcpy(copy, data + 1, size - 1);
    copy[size - 1] = '\0';
    p = copy;
    left = size - 1;
    for (i = 0; i < FUZZ_FIELDS; i++) {
        size_t len = strnlen(p, left);
        f[i] = p;
        if (len < left) {
            p += len + 1;
            left -= len + 1;
        } else {
            p += len;
            left = 0;
        }
    }
    memset(&in, 0, sizeof(in));
    memset(r, 0, sizeof(r));
    for (i = 0; i < 3; i++) {
        r[i].address = f[0];
        r[i].original = (flags & 0x40) ? f[1] : NULL;
        r[i].action = (flags >> i) & 1 ? DSN_ACTION_DELAYED : DSN_ACTION_FAILED;
        r[i].status = (flags & 0x20) ? f[9] : NULL;
        r[i].diagnostic = (flags & 0x80) ? NULL : f[2];
        r[i].remote_mta = f[3];
    }
    in.reporting_mta = "relay.example.org";
    in.account = f[4];
    in.device = f[5];
    in.queue_id = f[6];
    in.mail_from = f[7];
    in.bounce_to = f[8];
    in.mailbox = f[4];
    in.arrival = 1799990000;
    in.now = 1800000000;
    in.reason = (flags & 0x10) ? DSN_REASON_EXPIRED : DSN_REASON_REFUSED;
    in.rcpts = r;
    in.nrcpts = 1 + ((flags >> 3) & 1) + ((flags >> 2) & 1);
    in.message = p;
    in.message_len = left;
    in.random = fuzz_random;
    in.random_ctx = &calls;
    rc = dsn_build(&in, &out, &outlen, rcpt, sizeof(rcpt), err, sizeof(err));
    if (rc == 0 && (f[7][0] || out))
        abort(); /* "no bounce" is only for the null sender */
    if (rc == 1) {
        if (!out || strlen(out) != outlen || !f[7][0])
            abort();
        if (dsn_check(out, outlen, &n, err, sizeof(err)) != 0 || n != in.nrcpts)
            abort();
    }
    if (rc != 1 && out)
        abort();
    free(out);
    free(copy);
    return 0;
}
