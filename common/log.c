#include "common/log.h"

#include "common/log_fields.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <time.h>
#include <unistd.h>

static enum log_level current_level = LOGL_INFO;
static const char *const level_names[] = {"error", "warn", "info", "debug"};
/* syslog priorities of the levels above: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG */
static const char *const level_priorities[] = {"PRIORITY=3", "PRIORITY=4", "PRIORITY=6",
                                               "PRIORITY=7"};

static enum log_target target = LOG_TARGET_STDERR;
static int target_forced; /* log_set_target was called: detection leaves target alone */
static pthread_once_t target_once = PTHREAD_ONCE_INIT;
static log_journal_send_fn journal_send = sd_journal_sendv;

void log_set_level(enum log_level level)
{
    current_level = level;
}

enum log_level log_get_level(void)
{
    return current_level;
}

int log_level_parse(const char *name, enum log_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

/* systemd sets JOURNAL_STREAM=<device>:<inode> of the stream it connected to journald. The
 * variable is inherited by children whose stderr may be anything else (a tool run from a
 * service's shell), hence the comparison with what stderr is now. */
static int stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    if (!js || !*js)
        return 0;
    char *end;
    errno = 0;
    unsigned long long dev = strtoull(js, &end, 10);
    if (errno || end == js || *end != ':')
        return 0;
    const char *p = end + 1;
    unsigned long long ino = strtoull(p, &end, 10);
    if (errno || end == p || *end)
        return 0;
    struct stat st;
    if (fstat(STDERR_FILENO, &st) != 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

enum log_target log_detect_target(void)
{
    const char *t = getenv("SOP_LOG_TARGET");
    if (t && strcmp(t, "journal") == 0)
        return LOG_TARGET_JOURNAL;
    if (t && strcmp(t, "stderr") == 0)
        return LOG_TARGET_STDERR;
    return stderr_is_journal() ? LOG_TARGET_JOURNAL : LOG_TARGET_STDERR;
}

/* sd_journal_sendv returns success without sending when journald's socket does not exist
 * (a container, a chroot), so the lines would be lost: then stderr it is. */
static int journal_socket_present(void)
{
    struct stat st;
    return stat("/run/systemd/journal/socket", &st) == 0 && S_ISSOCK(st.st_mode);
}

/* Once per process, so every thread's first log call sees the same answer. */
static void detect_target(void)
{
    if (target_forced)
        return;
    target = log_detect_target();
    if (target == LOG_TARGET_JOURNAL && !journal_socket_present())
        target = LOG_TARGET_STDERR;
}

enum log_target log_get_target(void)
{
    (void)pthread_once(&target_once, detect_target);
    return target;
}

void log_set_target(enum log_target t)
{
    target_forced = 1;
    target = t;
}

void log_set_journal_sender(log_journal_send_fn fn)
{
    journal_send = fn ? fn : sd_journal_sendv;
}

/* Room before the message for "<time> <level> " or "MESSAGE=", so either is one contiguous
 * buffer without a copy of the message. */
#define LOG_PREFIX_ROOM 48
#define LOG_BODY_MAX 2048

/* One journal entry for body[0..len). body has LOG_PREFIX_ROOM writable bytes before it.
 * Returns 0 when the journal took it. Nothing allocated here: fields live on the stack. */
static int journal_emit(enum log_level level, char *body, size_t len)
{
    struct log_fields f;
    log_fields_parse(body, len, &f);
    static const char identifier[] = "SYSLOG_IDENTIFIER=smtp-oauth-proxy";
    const struct {
        const char *name;
        const char *value;
    } extra[] = {
        {"EVENT", f.event},     {"SESSION", f.session},   {"DEVICE", f.device},
        {"ACCOUNT", f.account}, {"QUEUE_ID", f.queue_id},
    };
    enum { NEXTRA = sizeof(extra) / sizeof(extra[0]) };
    char bufs[NEXTRA][LOG_FIELD_MAX + 16];
    struct iovec iov[3 + NEXTRA];
    int n = 0;
    memcpy(body - 8, "MESSAGE=", 8);
    iov[n++] = (struct iovec){.iov_base = body - 8, .iov_len = len + 8};
    iov[n].iov_base = (char *)level_priorities[level];
    iov[n++].iov_len = strlen(level_priorities[level]);
    iov[n].iov_base = (char *)identifier;
    iov[n++].iov_len = sizeof(identifier) - 1;
    for (size_t i = 0; i < NEXTRA; i++) {
        if (!extra[i].value[0])
            continue;
        int w = snprintf(bufs[i], sizeof(bufs[i]), "%s=%s", extra[i].name, extra[i].value);
        if (w <= 0 || (size_t)w >= sizeof(bufs[i]))
            continue;
        iov[n].iov_base = bufs[i];
        iov[n++].iov_len = (size_t)w;
    }
    return journal_send(iov, n) < 0 ? -1 : 0;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level > current_level)
        return;
    char line[LOG_PREFIX_ROOM + LOG_BODY_MAX];
    char *body = line + LOG_PREFIX_ROOM;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(body, LOG_BODY_MAX - 1, fmt, ap); /* leaves room for '\n' */
    va_end(ap);
    size_t len = w <= 0 ? 0 : (size_t)w < LOG_BODY_MAX - 1 ? (size_t)w : LOG_BODY_MAX - 2;

    if (log_get_target() == LOG_TARGET_JOURNAL && journal_emit(level, body, len) == 0)
        return;

    char prefix[LOG_PREFIX_ROOM];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(prefix, sizeof(prefix), "%Y-%m-%dT%H:%M:%S", &tm);
    w = snprintf(prefix + n, sizeof(prefix) - n, ".%03ldZ %s ", ts.tv_nsec / 1000000L,
                 level_names[level]);
    if (w > 0)
        n += (size_t)w < sizeof(prefix) - n ? (size_t)w : sizeof(prefix) - n - 1;
    memcpy(body - n, prefix, n);
    body[len++] = '\n';
    /* One write so concurrent writers (tests reading stderr) never see interleaved lines. */
    ssize_t r = write(STDERR_FILENO, body - n, n + len);
    (void)r;
}

const char *log_safe(char *dst, size_t dstlen, const char *src, size_t srclen)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (dstlen < 8) {
        if (dstlen)
            dst[0] = '\0';
        return dst;
    }
    dst[o++] = '"';
    for (size_t i = 0; i < srclen; i++) {
        unsigned char c = (unsigned char)src[i];
        int plain = c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
        size_t need = plain ? 1 : 4;
        if (o + need + 2 > dstlen - 3) { /* room for "..." + quote + NUL */
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        if (plain) {
            dst[o++] = (char)c;
        } else {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        }
    }
    dst[o++] = '"';
    dst[o] = '\0';
    return dst;
}
