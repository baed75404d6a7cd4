/* The structured fields of one log message ("event=NAME key=value ..."), for the journal. */
#ifndef SOP_LOG_FIELDS_H
#define SOP_LOG_FIELDS_H

#include <stddef.h>

/* Longest field value kept, NUL included; a longer value is left out rather than cut. */
#define LOG_FIELD_MAX 128

/* Each member holds the first value of its key in the message, "" when the key is absent,
 * empty, cut off by the end of the message (an unclosed quote), or longer than LOG_FIELD_MAX.
 * Quoted values (log_safe's form) are unquoted; a \xNN escape becomes its byte when that is
 * printable ASCII other than '\\'. Every other byte, raw or escaped, is written as \xNN, so a
 * value is always printable ASCII on one line and maps back to exactly one original. */
struct log_fields {
    char event[LOG_FIELD_MAX];
    char session[LOG_FIELD_MAX];
    char device[LOG_FIELD_MAX];
    char account[LOG_FIELD_MAX];
    char queue_id[LOG_FIELD_MAX];
};

/* Parses msg[0..len) (need not be NUL-terminated). Pure: no allocation, no global state. */
void log_fields_parse(const char *msg, size_t len, struct log_fields *out);

#endif
