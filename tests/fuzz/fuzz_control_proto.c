/* libFuzzer target for proxy/admin/control_proto.c, fed as the two ends feed it. The daemon: the
 * first line (up to the first \n, as evbuffer_readln gives it: NUL-terminated, embedded NULs kept)
 * to control_split, the line after it to control_payload_ok (a secret: refresh-token) and to
 * control_text_ok (a text: device-block's reason). The command: the whole input, as a
 * reply read to the end of the stream, to control_reply_parse. Each gets a heap copy of exactly
 * len + 1 bytes, so ASan sees any read past the terminator. Every result is checked against the
 * contract in control_proto.h, computed here independently. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/admin/control_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *fuzz_copy(const uint8_t *p, size_t len)
{
    char *s = malloc(len + 1);
    if (!s)
        abort();
    if (len)
        memcpy(s, p, len);
    s[len] = '\0';
    return s;
}

static int fuzz_in(const char *p, const char *buf, size_t len)
{
    return p >= buf && p <= buf + len;
}

/* Printable ASCII, and no space when space_ok is 0. */
static int fuzz_printable(const char *s, size_t len, int space_ok)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e || (!space_ok && c == ' '))
            return 0;
    }
    return 1;
}

/* The length without one trailing \r. */
static size_t fuzz_strip_cr(const uint8_t *p, size_t len)
{
    return len > 0 && p[len - 1] == '\r' ? len - 1 : len;
}

static void fuzz_split(const uint8_t *p, size_t len)
{
    char *line = fuzz_copy(p, len);
    const char *cmd = NULL, *arg = NULL;
    size_t n = fuzz_strip_cr(p, len), spaces = 0, sp = 0;
    int want;
    for (size_t i = 0; i < n; i++)
        if (p[i] == ' ') {
            spaces++;
            sp = i;
        }
    /* refused: empty, too long, not printable, more than one argument, a space at either end */
    want = n > 0 && n <= CONTROL_LINE_MAX && fuzz_printable((const char *)p, n, 1) && spaces <= 1 &&
           (spaces == 0 || (sp > 0 && sp + 1 < n));
    int r = control_split(line, len, &cmd, &arg);
    if (r != 0 && r != -1)
        abort();
    if ((r == 0) != want)
        abort();
    if (r == 0) {
        size_t cl = strlen(cmd);
        if (cmd != line || cl == 0 || !fuzz_printable(cmd, cl, 0))
            abort();
        if (arg) {
            size_t al = strlen(arg);
            if (!fuzz_in(arg, line, len) || al == 0 || !fuzz_printable(arg, al, 0) ||
                arg != cmd + cl + 1 || cl + 1 + al != n || memcmp(arg, p + cl + 1, al) != 0)
                abort();
        } else if (cl != n) {
            abort();
        }
        if (memcmp(cmd, p, cl) != 0)
            abort();
    }
    free(line);
}

static void fuzz_payload(const uint8_t *p, size_t len)
{
    char *line = fuzz_copy(p, len);
    size_t n = fuzz_strip_cr(p, len);
    int want = n > 0 && n <= CONTROL_PAYLOAD_MAX && fuzz_printable((const char *)p, n, 0);
    int r = control_payload_ok(line, len);
    if ((r != 0 && r != -1) || (r == 0) != want)
        abort();
    /* the line is the payload: a trailing \r gone, nothing else changed */
    if (r == 0 && (strlen(line) != n || memcmp(line, p, n) != 0))
        abort();
    free(line);
}

/* device-block's reason: printable ASCII with spaces, empty allowed, at most CONTROL_TEXT_MAX */
static void fuzz_text(const uint8_t *p, size_t len)
{
    char *line = fuzz_copy(p, len);
    size_t n = fuzz_strip_cr(p, len);
    int want = n <= CONTROL_TEXT_MAX && fuzz_printable((const char *)p, n, 1);
    int r = control_text_ok(line, len);
    if ((r != 0 && r != -1) || (r == 0) != want)
        abort();
    if (r == 0 && (strlen(line) != n || memcmp(line, p, n) != 0))
        abort();
    free(line);
}

static void fuzz_reply(const uint8_t *p, size_t len)
{
    char *buf = fuzz_copy(p, len);
    const char *msg = NULL, *body = NULL;
    const uint8_t *nl = memchr(p, '\n', len);
    int want = -1;
    size_t first = 0;
    if (nl && !memchr(p, '\0', len)) {
        first = fuzz_strip_cr(p, (size_t)(nl - p));
        if (first == 2 && memcmp(p, "ok", 2) == 0)
            want = 1;
        else if (first > 6 && memcmp(p, "error ", 6) == 0)
            want = 0;
    }
    int r = control_reply_parse(buf, len, &msg, &body);
    if (r != want)
        abort();
    if (r == 1) {
        /* the body: every byte after the first \n, untouched */
        size_t off = (size_t)(nl - p) + 1;
        if (body != buf + off || strlen(body) != len - off || memcmp(body, p + off, len - off) != 0)
            abort();
    } else if (r == 0) {
        /* the message: the rest of the first line, without its \r\n */
        if (msg != buf + 6 || strlen(msg) != first - 6 || memcmp(msg, p + 6, first - 6) != 0 ||
            strchr(msg, '\n'))
            abort();
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t first = nl ? (size_t)(nl - data) : size;
    fuzz_split(data, first);
    if (nl) {
        const uint8_t *rest = nl + 1;
        size_t left = size - first - 1;
        const uint8_t *nl2 = memchr(rest, '\n', left);
        fuzz_payload(rest, nl2 ? (size_t)(nl2 - rest) : left);
        fuzz_text(rest, nl2 ? (size_t)(nl2 - rest) : left);
    }
    fuzz_reply(data, size);
    return 0;
}
