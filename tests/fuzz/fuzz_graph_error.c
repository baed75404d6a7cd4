/* libFuzzer target for proxy/graph/graph_explain.c: Graph's error answers (any status, any body:
 * all the peer's bytes) parsed, mapped and explained. Input: bytes 0-1 the HTTP status (0..999),
 * byte 2 the step (mod 6), byte 3 flags (0x01 a NULL mailbox, 0x02 a mailbox with quotes and
 * control bytes, 0x04 a Retry-After of byte 2 * 1000 ms, 0x08 also graph_explain_no_answer with
 * the body as curl's message), then the body.
 *
 * Whatever the input: the reply is "DDD D.D.D text", printable ASCII without double quotes or
 * backslashes, inside its buffer, its class agreeing with the outcome (2 GRAPH_OK only for 2xx, 4
 * GRAPH_TEMP, 5 GRAPH_PERM); the explanation printable and inside its buffer; the code only
 * [A-Za-z0-9_.-]; no JWT ("eyJ") anywhere; the parsed error's fields as promised. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/graph/graph_explain.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_text(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    if (n == cap)
        abort(); /* not terminated inside its buffer */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e || s[i] == '"' || s[i] == '\\')
            abort();
    if (strstr(s, "eyJ"))
        abort();
}

static void fuzz_code(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    if (n == cap)
        abort();
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            abort();
    }
}

static void fuzz_reply(const struct graph_outcome *o)
{
    const char *r = o->reply;
    fuzz_text(r, sizeof(o->reply));
    fuzz_text(o->explain, sizeof(o->explain));
    fuzz_code(o->code, sizeof(o->code));
    if (strlen(r) < 10 || r[0] < '2' || r[0] > '5' || r[1] < '0' || r[1] > '9' || r[2] < '0' ||
        r[2] > '9' || r[3] != ' ' || r[4] != r[0] || r[5] != '.')
        abort();
    if ((o->status == GRAPH_OK) != (r[0] == '2') || (o->status == GRAPH_TEMP) != (r[0] == '4') ||
        (o->status == GRAPH_PERM) != (r[0] == '5'))
        abort();
    if (o->retry_after_ms < 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    long status = (long)((data[0] << 8 | data[1]) % 1000);
    enum graph_step step = (enum graph_step)(data[2] % 6);
    int flags = data[3];
    const char *mailbox = "scanners@contoso.edu";
    if (flags & 1)
        mailbox = NULL;
    else if (flags & 2)
        mailbox = "a\"b\\c\r\nd\x01\xff eyJhbGciOi@contoso.edu";
    int64_t retry = (flags & 4) ? (int64_t)data[2] * 1000 : -1;
    const char *body = (const char *)data + 4;
    size_t len = size - 4;

    /* the body need not be NUL-terminated: a copy without one, so ASan sees an overread */
    char *copy = fuzz_buf(len);
    if (len)
        memcpy(copy, body, len);

    struct graph_error e;
    int found = graph_error_parse(copy, len, &e);
    fuzz_code(e.code, sizeof(e.code));
    fuzz_code(e.inner_code, sizeof(e.inner_code));
    fuzz_text(e.message, sizeof(e.message));
    fuzz_text(e.request_id, sizeof(e.request_id));
    if (!found && (e.code[0] || e.message[0] || e.inner_code[0] || e.request_id[0]))
        abort();

    struct graph_outcome o;
    memset(&o, 0x55, sizeof(o));
    graph_explain_answer(status, copy, len, step, mailbox, retry, &o);
    fuzz_reply(&o);
    if (o.http_status != status || strcmp(o.code, e.code) != 0)
        abort();
    if ((status >= 200 && status < 300) != (o.status == GRAPH_OK))
        abort();

    if (flags & 8) {
        char *err = fuzz_str(data + 4, len);
        memset(&o, 0x55, sizeof(o));
        graph_explain_no_answer(err, flags & 16, &o);
        fuzz_reply(&o);
        if (o.status != GRAPH_TEMP || !o.conn_failure || o.http_status != 0)
            abort();
        free(err);
    }
    free(copy);
    return 0;
}
