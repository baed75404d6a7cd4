/* libFuzzer target for common/state_file.c: a small state file (device blocks, device limits) as
 * any bytes. Refused or accepted, every line handed out is whole (no LF, no NUL inside), numbered
 * 2, 3, ... in order; an accepted file hands out every line after the magic one; a refusal names
 * FILE:LINE. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/state_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PATH "/state/x.state"
#define MAGIC "smtp-oauth-proxy test 1"

struct seen {
    size_t lines, next;
};

static const char *on_line(void *arg, char *line, size_t lineno)
{
    struct seen *s = arg;
    if (lineno != s->next || strchr(line, '\n'))
        abort();
    s->next++;
    s->lines++;
    /* a line the module refuses, as a module would: the walk stops there */
    return strncmp(line, "bad", 3) == 0 ? "a bad line" : NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    struct seen s = {0, 2};
    char *buf = malloc(size + 1);
    if (!buf)
        abort();
    memcpy(buf, data, size);
    buf[size] = '\0';
    size_t nl = 0;
    for (size_t i = 0; i < size; i++)
        nl += data[i] == '\n';
    int r =
        state_file_parse(PATH, buf, size, MAGIC, "not a test file", on_line, &s, err, sizeof(err));
    if (r == 0) {
        /* whole: every line but the magic one was handed out */
        if (memchr(data, '\0', size) || size == 0 || data[size - 1] != '\n' || s.lines + 1 != nl ||
            memcmp(data, MAGIC "\n", sizeof(MAGIC)) != 0)
            abort();
    } else if (r != -1 || strncmp(err, PATH ":", sizeof(PATH)) != 0) {
        abort();
    }
    free(buf);
    return 0;
}
