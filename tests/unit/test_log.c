#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"

/* What the injected sender received: every field of every call. */
#define MAX_FIELDS 16
static int sent_calls;
static int sent_n;
static char sent[MAX_FIELDS][4096];
static size_t sent_len[MAX_FIELDS];
static int sender_result;

static int capture(const struct iovec *iov, int n)
{
    sent_calls++;
    sent_n = n;
    for (int i = 0; i < n && i < MAX_FIELDS; i++) {
        assert_true(iov[i].iov_len < sizeof(sent[i]));
        memcpy(sent[i], iov[i].iov_base, iov[i].iov_len);
        sent[i][iov[i].iov_len] = '\0';
        sent_len[i] = iov[i].iov_len;
    }
    return sender_result;
}

/* stderr goes to a temp file for the test, so what the stderr path wrote can be read back. */
static int saved_stderr = -1;
static FILE *errfile;

static int setup(void **state)
{
    (void)state;
    sent_calls = 0;
    sent_n = 0;
    sender_result = 0;
    log_set_journal_sender(capture);
    log_set_target(LOG_TARGET_JOURNAL);
    log_set_level(LOGL_INFO);
    errfile = tmpfile();
    assert_non_null(errfile);
    saved_stderr = dup(STDERR_FILENO);
    assert_true(saved_stderr >= 0);
    assert_true(dup2(fileno(errfile), STDERR_FILENO) >= 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    fclose(errfile);
    log_set_journal_sender(NULL);
    log_set_target(LOG_TARGET_STDERR);
    unsetenv("JOURNAL_STREAM");
    unsetenv("SOP_LOG_TARGET");
    return 0;
}

static const char *stderr_text(void)
{
    static char buf[8192];
    fflush(errfile);
    size_t n = (size_t)pread(fileno(errfile), buf, sizeof(buf) - 1, 0);
    buf[n < sizeof(buf) ? n : 0] = '\0';
    return buf;
}

static void test_journal_entry_fields(void **state)
{
    (void)state;
    char safe[64];
    log_info("event=message session=3f9c device=%s account=scanners queue_id=Q1 rcpts=2",
             log_safe(safe, sizeof(safe), "copier \"3\"", 10));
    assert_int_equal(sent_calls, 1);
    assert_int_equal(sent_n, 8);
    assert_string_equal(sent[0], "MESSAGE=event=message session=3f9c device=\"copier \\x223\\x22\" "
                                 "account=scanners queue_id=Q1 rcpts=2");
    assert_string_equal(sent[1], "PRIORITY=6");
    assert_string_equal(sent[2], "SYSLOG_IDENTIFIER=smtp-oauth-proxy");
    assert_string_equal(sent[3], "EVENT=message");
    assert_string_equal(sent[4], "SESSION=3f9c");
    assert_string_equal(sent[5], "DEVICE=copier \"3\"");
    assert_string_equal(sent[6], "ACCOUNT=scanners");
    assert_string_equal(sent[7], "QUEUE_ID=Q1");
    assert_string_equal(stderr_text(), ""); /* the journal took it: nothing on stderr */
}

static void test_only_present_fields(void **state)
{
    (void)state;
    log_warn("event=token_failed account=scanners reason=\"AADSTS700016 x\"");
    assert_int_equal(sent_calls, 1);
    assert_int_equal(sent_n, 5);
    assert_string_equal(sent[1], "PRIORITY=4");
    assert_string_equal(sent[3], "EVENT=token_failed");
    assert_string_equal(sent[4], "ACCOUNT=scanners");
    /* no event at all: MESSAGE, PRIORITY and SYSLOG_IDENTIFIER only */
    log_error("no key value here");
    assert_int_equal(sent_calls, 2);
    assert_int_equal(sent_n, 3);
    assert_string_equal(sent[0], "MESSAGE=no key value here");
    assert_string_equal(sent[1], "PRIORITY=3");
}

static void test_priorities_and_level_filter(void **state)
{
    (void)state;
    log_debug("event=dropped");
    assert_int_equal(sent_calls, 0);
    log_set_level(LOGL_DEBUG);
    log_debug("event=kept");
    assert_int_equal(sent_calls, 1);
    assert_string_equal(sent[1], "PRIORITY=7");
    log_set_level(LOGL_ERROR);
    log_warn("event=dropped");
    log_error("event=kept");
    assert_int_equal(sent_calls, 2);
    assert_string_equal(sent[1], "PRIORITY=3");
}

static void test_long_message_is_one_bounded_entry(void **state)
{
    (void)state;
    char big[5000];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    log_info("event=big session=s1 text=%s", big);
    assert_int_equal(sent_calls, 1);
    assert_int_equal(sent_len[0], strlen("MESSAGE=") + 2046);
    assert_string_equal(sent[3], "EVENT=big");
    assert_string_equal(sent[4], "SESSION=s1");
}

static void test_sender_failure_falls_back_to_stderr(void **state)
{
    (void)state;
    sender_result = -111; /* -ECONNREFUSED: journald gone */
    log_warn("event=token_failed account=scanners");
    assert_int_equal(sent_calls, 1);
    const char *t = stderr_text();
    /* "<time> warn <message>\n", the stderr format, with the prefix the journal path reused */
    assert_int_equal(strlen(t), 25 + strlen("warn event=token_failed account=scanners\n"));
    assert_int_equal(t[10], 'T');
    assert_int_equal(t[23], 'Z');
    assert_string_equal(t + 25, "warn event=token_failed account=scanners\n");
}

static void test_stderr_target_unchanged(void **state)
{
    (void)state;
    log_set_target(LOG_TARGET_STDERR);
    assert_int_equal(log_get_target(), LOG_TARGET_STDERR);
    log_info("event=ready listeners=%d", 1);
    log_error("event=stopped");
    assert_int_equal(sent_calls, 0);
    const char *t = stderr_text();
    const char *nl = strchr(t, '\n');
    assert_non_null(nl);
    assert_int_equal(nl - t, 25 + (long)strlen("info event=ready listeners=1"));
    assert_memory_equal(t + 25, "info event=ready listeners=1\n", 29);
    assert_string_equal(nl + 1 + 25, "error event=stopped\n");
}

static void set_journal_stream(unsigned long long dev, unsigned long long ino)
{
    char v[64];
    snprintf(v, sizeof(v), "%llu:%llu", dev, ino);
    assert_int_equal(setenv("JOURNAL_STREAM", v, 1), 0);
}

static void test_detect_target(void **state)
{
    (void)state;
    struct stat st;
    assert_int_equal(fstat(STDERR_FILENO, &st), 0);
    unsetenv("SOP_LOG_TARGET");
    unsetenv("JOURNAL_STREAM");
    assert_int_equal(log_detect_target(), LOG_TARGET_STDERR);
    /* systemd connected this very stderr to journald */
    set_journal_stream((unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    assert_int_equal(log_detect_target(), LOG_TARGET_JOURNAL);
    /* inherited from a service, but stderr is something else now */
    set_journal_stream((unsigned long long)st.st_dev, (unsigned long long)st.st_ino + 1);
    assert_int_equal(log_detect_target(), LOG_TARGET_STDERR);
    static const char *const junk[] = {"", "12", ":", "a:b", "1:2x", "1:", ":2", "-1:-1"};
    for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
        setenv("JOURNAL_STREAM", junk[i], 1);
        assert_int_equal(log_detect_target(), LOG_TARGET_STDERR);
    }
    /* the override wins both ways */
    set_journal_stream((unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    setenv("SOP_LOG_TARGET", "stderr", 1);
    assert_int_equal(log_detect_target(), LOG_TARGET_STDERR);
    unsetenv("JOURNAL_STREAM");
    setenv("SOP_LOG_TARGET", "journal", 1);
    assert_int_equal(log_detect_target(), LOG_TARGET_JOURNAL);
    setenv("SOP_LOG_TARGET", "bogus", 1); /* unknown: detect as if unset */
    assert_int_equal(log_detect_target(), LOG_TARGET_STDERR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_journal_entry_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_only_present_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_priorities_and_level_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_message_is_one_bounded_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sender_failure_falls_back_to_stderr, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stderr_target_unchanged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_detect_target, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
