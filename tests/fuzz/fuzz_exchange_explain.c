/* libFuzzer target for proxy/smtp/exchange_explain.c: Exchange's refusals (code, enhanced code,
 * text: all the upstream's bytes) looked up and explained. Input: byte 0 the output buffer's size
 * (0..63, then up to 1014 in steps of 5; 255: 4096); bytes 1-2 the code (0..999); byte 3: bits 0-4
 * the phases for exchange_phase_names, 0x20 a 1199-byte mailbox, 0x40 a client_id with a quote, a
 * backslash, a tab and the placeholders' names, 0x80 with bits 0-3 makes mailbox, client_id,
 * enhanced, text NULL; then the enhanced code up to the first \n, the text after it.
 *
 * Every output goes into a heap buffer of exactly its size (ASan sees a byte too far) and must be
 * NUL-terminated inside it and a prefix of the same output made with a large buffer; printable
 * ASCII without double quotes when the ids are (as the configuration has them). The lookup must
 * give the first table entry that matches (the most specific), computed here again; the log form
 * must be printable, " explain=\"...\"" with no other quote, or "", and with ordinary ids exactly
 * the formatted line, whole in the 900 bytes the header promises. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/smtp/exchange_explain.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_BIG 8192

static int fuzz_lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

/* needle (lower case) in the first 4096 bytes of hay, ignoring case: the header's contract */
static int fuzz_contains(const char *hay, const char *needle)
{
    size_t hl = strnlen(hay, 4096), nl = strlen(needle);
    for (size_t i = 0; i + nl <= hl; i++) {
        size_t k = 0;
        while (k < nl && fuzz_lower((unsigned char)hay[i + k]) == needle[k])
            k++;
        if (k == nl)
            return 1;
    }
    return 0;
}

static void fuzz_printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            abort();
}

static const struct exchange_explanation *fuzz_lookup(int code, const char *enhanced,
                                                      const char *text)
{
    size_t n;
    const struct exchange_explanation *t = exchange_explain_table(&n);
    if (!enhanced || !*enhanced)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (t[i].code == code && strcmp(t[i].enhanced, enhanced) == 0 &&
            (!t[i].fragment || (text && fuzz_contains(text, t[i].fragment))))
            return &t[i];
    return NULL;
}

/* plain_ids: mailbox and client_id (or NULL) hold printable text without quotes or braces, as
 * the configuration has them; the output is then all printable and free of double quotes. */
static void fuzz_entry(const struct exchange_explanation *e, const char *mailbox,
                       const char *client_id, int plain_ids, size_t len)
{
    char *full = fuzz_buf(FUZZ_BIG), *out = fuzz_buf(len);
    exchange_explain_format(e, mailbox, client_id, full, FUZZ_BIG);
    if (strlen(full) >= FUZZ_BIG - 1 || !strstr(full, "; fix: "))
        abort();
    if (plain_ids) {
        fuzz_printable(full);
        if (strchr(full, '"'))
            abort(); /* the texts stay free of double quotes: they end up in key="value" */
        if ((mailbox && strstr(full, "{mailbox}")) || (client_id && strstr(full, "{client_id}")))
            abort(); /* a placeholder left although its value was given */
    }
    exchange_explain_format(e, mailbox, client_id, out, len);
    fuzz_prefix(out, len, full);

    exchange_explain_fix(e, mailbox, client_id, full, FUZZ_BIG);
    if (plain_ids)
        fuzz_printable(full);
    exchange_explain_fix(e, mailbox, client_id, out, len);
    fuzz_prefix(out, len, full);
    free(full);
    free(out);
}

static void fuzz_kv(int code, const char *enhanced, const char *text, const char *mailbox,
                    const char *client_id, const struct exchange_explanation *e, int short_ids,
                    size_t len)
{
    char *full = fuzz_buf(FUZZ_BIG), *out = fuzz_buf(len), *line = fuzz_buf(FUZZ_BIG);
    exchange_explain_kv(code, enhanced, text, mailbox, client_id, full, FUZZ_BIG);
    fuzz_printable(full);
    if (!e || code == 0) {
        if (full[0])
            abort();
    } else {
        size_t fl = strlen(full);
        if (fl < 11 || memcmp(full, " explain=\"", 10) != 0 || full[fl - 1] != '"' ||
            strchr(full + 10, '"') != full + fl - 1)
            abort();
        /* with ordinary ids it is the formatted line itself, whole within 900 bytes */
        exchange_explain_format(e, mailbox, client_id, line, FUZZ_BIG);
        if (short_ids &&
            (fl - 11 != strlen(line) || memcmp(full + 10, line, fl - 11) != 0 || fl >= 900))
            abort();
    }
    exchange_explain_kv(code, enhanced, text, mailbox, client_id, out, len);
    fuzz_prefix(out, len, full);
    free(full);
    free(out);
    free(line);
}

static void fuzz_phases(unsigned phases, size_t len)
{
    static const char *const names[] = {"connect", "AUTH", "MAIL", "RCPT", "DATA"};
    char want[64] = "", *full = fuzz_buf(FUZZ_BIG), *out = fuzz_buf(len);
    for (size_t i = 0; i < 5; i++)
        if (phases & (1u << i)) {
            if (want[0])
                strcat(want, "/");
            strcat(want, names[i]);
        }
    exchange_phase_names(phases, full, FUZZ_BIG);
    if (strcmp(full, want) != 0)
        abort();
    exchange_phase_names(phases, out, len);
    fuzz_prefix(out, len, full);
    free(full);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char long_mailbox[1200], long_client_id[1200];
    const char *mailbox = "scanners@contoso.edu",
               *client_id = "00001111-aaaa-2222-bbbb-3333cccc4444";
    const struct exchange_explanation *e, *want;
    const uint8_t *nl;
    char *enhanced, *text;
    size_t len, n;
    int code, flags;
    if (size < 4)
        return 0;
    len = data[0] < 64 ? data[0] : data[0] == 255 ? 4096 : 64 + (size_t)(data[0] - 64) * 5;
    code = (data[1] << 8 | data[2]) % 1000;
    flags = data[3];
    data += 4;
    size -= 4;
    nl = memchr(data, '\n', size);
    n = nl ? (size_t)(nl - data) : size;
    enhanced = fuzz_str(data, n);
    text = fuzz_str(nl ? nl + 1 : data + size, nl ? size - n - 1 : 0);

    if (flags & 0x20) {
        memset(long_mailbox, 'm', sizeof(long_mailbox) - 1);
        mailbox = long_mailbox;
    }
    if (flags & 0x40) { /* a client_id with what log_safe escapes and the placeholders' names */
        memset(long_client_id, 'c', sizeof(long_client_id) - 1);
        memcpy(long_client_id, "\"{mailbox}\\{client_id}\t", 23);
        client_id = long_client_id;
    }
    if ((flags & 0x80) && (flags & 1))
        mailbox = NULL;
    if ((flags & 0x80) && (flags & 2))
        client_id = NULL;
    const char *enh = (flags & 0x80) && (flags & 4) ? NULL : enhanced;
    const char *txt = (flags & 0x80) && (flags & 8) ? NULL : text;

    e = exchange_explain(code, enh, txt);
    want = fuzz_lookup(code, enh, txt);
    if (e != want)
        abort();
    if (e)
        fuzz_entry(e, mailbox, client_id, !(flags & 0x40), len);
    fuzz_kv(code, enh, txt, mailbox, client_id, e, !(flags & 0x60), len);
    fuzz_phases((unsigned)flags & 0x1f, len);

    /* the table itself: each entry found by its own code (unless a more specific one wins) */
    size_t nt;
    const struct exchange_explanation *t = exchange_explain_table(&nt);
    for (size_t i = 0; i < nt; i++) {
        const struct exchange_explanation *f =
            exchange_explain(t[i].code, t[i].enhanced, t[i].fragment ? t[i].fragment : "");
        if (!f || f > &t[i] || f->code != t[i].code)
            abort();
    }
    free(enhanced);
    free(text);
    return 0;
}
