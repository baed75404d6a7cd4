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
/* Where lines go. Decided at the first log call: SOP_LOG_TARGET=journal or =stderr forces one;
 * otherwise the journal when stderr is the stream systemd named in $JOURNAL_STREAM (the
 * service's stderr is connected to journald), stderr in every other case. The journal also
 * needs journald's socket to exist; without it, stderr. */
enum log_target { LOG_TARGET_STDERR = 0, LOG_TARGET_JOURNAL };
enum log_target log_get_target(void);
void log_set_target(enum log_target target);
/* The choice from the environment and stderr alone, computed afresh (tests). */
enum log_target log_detect_target(void);
/* stderr: "<time> <level> <formatted>\n" in one write(2). journal: one entry per call with
 * MESSAGE=<formatted>, PRIORITY, SYSLOG_IDENTIFIER=smtp-oauth-proxy and EVENT, SESSION, DEVICE,
 * ACCOUNT, QUEUE_ID from the message's keys (log_fields.h); if the journal refuses it, the
 * line goes to stderr instead. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Render untrusted bytes as one log value: printable ASCII kept, '"' '\\' and anything else
 * escaped as \xNN, wrapped in double quotes, cut to fit dstlen (marked with "..."). Returns dst. */
const char *log_safe(char *dst, size_t dstlen, const char *src, size_t srclen);

/* Tests: replace sd_journal_sendv (same contract: fields "NAME=value", <0 on failure); NULL
 * restores it. */
struct iovec;
typedef int (*log_journal_send_fn)(const struct iovec *iov, int n);
void log_set_journal_sender(log_journal_send_fn fn);

#define log_error(...) log_msg(LOGL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOGL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOGL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOGL_DEBUG, __VA_ARGS__)

#endif
