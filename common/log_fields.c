#include "common/log_fields.h"

#include <string.h>

/* Bounded writer into one field: overflow marks the value unusable instead of cutting it, so a
 * journal filter never matches a prefix of the real value. */
struct out {
    char *dst;
    size_t n;
    int overflow;
};

static void put_byte(struct out *o, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    int plain = c >= 0x20 && c < 0x7f && c != '\\';
    size_t need = plain ? 1 : 4;
    if (o->overflow || o->n + need >= LOG_FIELD_MAX) {
        o->overflow = 1;
        return;
    }
    if (plain) {
        o->dst[o->n++] = (char)c;
    } else {
        o->dst[o->n++] = '\\';
        o->dst[o->n++] = 'x';
        o->dst[o->n++] = hex[c >> 4];
        o->dst[o->n++] = hex[c & 15];
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int is_key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

/* The member for key k[0..klen) and its bit in *bit, or NULL for a key the journal does not get. */
static char *slot(struct log_fields *f, const char *k, size_t klen, unsigned *bit)
{
    static const struct {
        const char *name;
        size_t off;
    } keys[] = {
        {"event", offsetof(struct log_fields, event)},
        {"session", offsetof(struct log_fields, session)},
        {"device", offsetof(struct log_fields, device)},
        {"account", offsetof(struct log_fields, account)},
        {"queue_id", offsetof(struct log_fields, queue_id)},
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (strlen(keys[i].name) == klen && memcmp(keys[i].name, k, klen) == 0) {
            *bit = 1u << i;
            return (char *)f + keys[i].off;
        }
    }
    return NULL;
}

/* Reads the value starting at msg[*pos] into o (o may be NULL: skip it). Returns 0 when the
 * value is complete, -1 when the message ends inside a quote. */
static int read_value(const char *msg, size_t len, size_t *pos, struct out *o)
{
    size_t i = *pos;
    if (i < len && msg[i] == '"') {
        for (i++; i < len && msg[i] != '"'; i++) {
            unsigned char c = (unsigned char)msg[i];
            if (c == '\\' && i + 3 < len && msg[i + 1] == 'x' && hexval(msg[i + 2]) >= 0 &&
                hexval(msg[i + 3]) >= 0) {
                c = (unsigned char)(hexval(msg[i + 2]) * 16 + hexval(msg[i + 3]));
                i += 3;
            }
            if (o)
                put_byte(o, c);
        }
        if (i >= len) {
            *pos = i;
            return -1;
        }
        i++; /* the closing quote; anything glued to it up to the next space is ignored */
        while (i < len && msg[i] != ' ')
            i++;
        *pos = i;
        return 0;
    }
    for (; i < len && msg[i] != ' '; i++) {
        if (o)
            put_byte(o, (unsigned char)msg[i]);
    }
    *pos = i;
    return 0;
}

void log_fields_parse(const char *msg, size_t len, struct log_fields *out)
{
    memset(out, 0, sizeof(*out));
    size_t i = 0;
    unsigned seen = 0; /* keys met already, kept or not: the first occurrence decides */
    while (i < len) {
        while (i < len && msg[i] == ' ')
            i++;
        size_t k = i;
        while (i < len && is_key_char(msg[i]))
            i++;
        if (i == k || i >= len || msg[i] != '=') {
            /* not key=value: skip the token (a stray quote opens no value) */
            while (i < len && msg[i] != ' ')
                i++;
            continue;
        }
        unsigned bit = 0;
        char *dst = slot(out, msg + k, i - k, &bit);
        i++; /* '=' */
        if (dst && !(seen & bit)) {
            seen |= bit;
            char tmp[LOG_FIELD_MAX];
            struct out o = {tmp, 0, 0};
            if (read_value(msg, len, &i, &o) == 0 && !o.overflow && o.n > 0) {
                memcpy(dst, tmp, o.n);
                dst[o.n] = '\0';
            }
        } else {
            (void)read_value(msg, len, &i, NULL);
        }
    }
}
