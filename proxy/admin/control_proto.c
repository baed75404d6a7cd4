/* Parsing for the control protocol; see control_proto.h. Both ends treat the other's bytes as
 * hostile: lengths are bounded and only printable ASCII gets through. */
#include "proxy/admin/control_proto.h"

#include <string.h>

static int printable(const char *s, size_t len, int space_ok)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch > 0x7e || (!space_ok && ch == ' '))
            return 0;
    }
    return 1;
}

int control_split(char *line, size_t len, const char **cmd, const char **arg)
{
    if (len > 0 && line[len - 1] == '\r')
        line[--len] = '\0';
    if (len == 0 || len > CONTROL_LINE_MAX || strlen(line) != len || !printable(line, len, 1))
        return -1;
    char *sp = strchr(line, ' ');
    *cmd = line;
    *arg = NULL;
    if (!sp)
        return 0;
    *sp = '\0';
    if (sp == line || sp[1] == '\0' || strchr(sp + 1, ' '))
        return -1;
    *arg = sp + 1;
    return 0;
}

int control_payload_ok(char *line, size_t len)
{
    if (len > 0 && line[len - 1] == '\r')
        line[--len] = '\0';
    if (len == 0 || len > CONTROL_PAYLOAD_MAX || strlen(line) != len)
        return -1;
    return printable(line, len, 0) ? 0 : -1;
}

int control_text_ok(char *line, size_t len)
{
    if (len > 0 && line[len - 1] == '\r')
        line[--len] = '\0';
    if (len > CONTROL_TEXT_MAX || strlen(line) != len)
        return -1;
    return printable(line, len, 1) ? 0 : -1;
}

int control_reply_parse(char *buf, size_t len, const char **msg, const char **body)
{
    char *nl = memchr(buf, '\n', len);
    if (!nl || strlen(buf) != len)
        return -1;
    *nl = '\0';
    if (nl > buf && nl[-1] == '\r')
        nl[-1] = '\0';
    if (strcmp(buf, "ok") == 0) {
        *body = nl + 1;
        return 1;
    }
    if (strncmp(buf, "error ", 6) == 0 && buf[6] != '\0') {
        *msg = buf + 6;
        return 0;
    }
    return -1;
}
