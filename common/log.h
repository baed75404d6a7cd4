/* One line per event, key=value. Never pass a secret, token, password or AUTH payload here. */
#ifndef SOP_LOG_H
#define SOP_LOG_H

#include <stddef.h>

enum log_level { LOGL_ERROR = 0, LOGL_WARN, LOGL_INFO, LOGL_DEBUG };

/* Messages above this level are dropped. Default LOGL_INFO. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* "error" | "warn" | "info" | "debug" -> level; 0 ok, -1 unknown. */
int log_level_parse(const char *name, enum log_level *out);
/* Writes "<time> <level> <formatted>\n" to stderr in one write(2). */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Render untrusted bytes as one log value: printable ASCII kept, '"' '\\' and anything else
 * escaped as \xNN, wrapped in double quotes, cut to fit dstlen (marked with "..."). Returns dst. */
const char *log_safe(char *dst, size_t dstlen, const char *src, size_t srclen);

#define log_error(...) log_msg(LOGL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOGL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOGL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOGL_DEBUG, __VA_ARGS__)

#endif
