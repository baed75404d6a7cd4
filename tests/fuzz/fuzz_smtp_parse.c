/* libFuzzer target for proxy/smtp/smtp_parse.c. The first byte picks the mode and a split point;
 * the rest is fed whole and then in two pieces, and both runs must produce exactly the same
 * commands (a resumable parser must not care where reads end). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/smtp/smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* FNV-1a over everything a caller could observe. */
static void fuzz_hash(uint64_t *h, const void *p, size_t n)
{
    const unsigned char *b = p;
    size_t i;
    for (i = 0; i < n; i++) {
        *h ^= b[i];
        *h *= 1099511628211ULL;
    }
}

static void fuzz_hash_str(uint64_t *h, const char *s)
{
    if (!s)
        abort();
    fuzz_hash(h, s, strlen(s) + 1);
}

static void fuzz_check_cmd(uint64_t *h, const struct smtp_cmd *cmd)
{
    size_t i;
    if (cmd->nparams > SMTP_MAX_PARAMS)
        abort();
    fuzz_hash(h, &cmd->verb, sizeof(cmd->verb));
    fuzz_hash_str(h, cmd->verb_text);
    fuzz_hash_str(h, cmd->arg);
    fuzz_hash_str(h, cmd->path);
    if (strlen(cmd->path) > SMTP_PATH_MAX)
        abort();
    for (i = 0; i < cmd->nparams; i++) {
        fuzz_hash_str(h, cmd->params[i].key);
        if (cmd->params[i].value)
            fuzz_hash_str(h, cmd->params[i].value);
    }
}

static uint64_t fuzz_run(const char *in, size_t len, size_t split, int line_mode)
{
    struct smtp_parser *p = smtp_parse_new();
    uint64_t h = 14695981039346656037ULL;
    size_t pos = 0;
    if (!p)
        abort();
    if (line_mode)
        smtp_parse_set_mode(p, SMTP_PARSE_LINE);
    while (pos < len) {
        size_t end = pos < split ? split : len;
        size_t consumed = 0;
        struct smtp_cmd cmd;
        const char *err = NULL;
        int r = smtp_parse_next(p, in + pos, end - pos, &consumed, &cmd, &err);
        if (consumed > end - pos || (r == 0 && consumed != end - pos))
            abort();
        if (r != 0 && (consumed == 0 || in[pos + consumed - 1] != '\n'))
            abort();
        if (r != 0)
            fuzz_hash(&h, &r, sizeof(r));
        if (r == 1)
            fuzz_check_cmd(&h, &cmd);
        else if (r == -1)
            fuzz_hash_str(&h, err);
        pos += consumed;
    }
    smtp_parse_free(p);
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in;
    size_t len, split;
    int line_mode;
    if (size < 1)
        return 0;
    line_mode = data[0] & 1;
    in = (const char *)data + 1;
    len = size - 1;
    split = len ? (size_t)(data[0] >> 1) * len / 127 : 0;
    if (fuzz_run(in, len, len, line_mode) != fuzz_run(in, len, split, line_mode))
        abort();
    return 0;
}
