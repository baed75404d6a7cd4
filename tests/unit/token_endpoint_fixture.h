/* For tests of the grants: a token endpoint played by an in-process evhttp server on 127.0.0.1,
 * the loop run until a flag is set, and stderr (the log) captured so that a test can prove what
 * was, and was not, logged. Header-only, like cert_fixture.h. Include after <cmocka.h>. */
#ifndef SOP_TEST_TOKEN_ENDPOINT_FIXTURE_H
#define SOP_TEST_TOKEN_ENDPOINT_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/http.h>

static void token_endpoint_flag_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(int *)arg = 1;
}

/* Run the loop until *done (if done) or ms have passed. */
static void run_until(struct event_base *base, const int *done, int ms)
{
    int expired = 0;
    struct event *t = evtimer_new(base, token_endpoint_flag_cb, &expired);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    assert_non_null(t);
    evtimer_add(t, &tv);
    while (!(done && *done) && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(t);
}

/* An evhttp server on 127.0.0.1, a free port, every request to cb; the token URL (with path)
 * in url. */
static struct evhttp *token_endpoint_new(struct event_base *base,
                                         void (*cb)(struct evhttp_request *, void *), void *arg,
                                         const char *path, char *url, size_t urllen)
{
    struct evhttp *http = evhttp_new(base);
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    assert_non_null(http);
    evhttp_set_gencb(http, cb, arg);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(http, "127.0.0.1", 0);
    assert_non_null(bs);
    assert_int_equal(getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sin, &sl), 0);
    snprintf(url, urllen, "http://127.0.0.1:%d%s", ntohs(sin.sin_port), path);
    return http;
}

struct log_capture {
    FILE *log;
    int saved_stderr;
};

/* From now on stderr goes to a temporary file. */
static void log_capture_start(struct log_capture *lc)
{
    lc->log = tmpfile();
    assert_non_null(lc->log);
    fflush(stderr);
    lc->saved_stderr = dup(STDERR_FILENO);
    assert_true(lc->saved_stderr >= 0);
    assert_true(dup2(fileno(lc->log), STDERR_FILENO) >= 0);
}

/* Everything logged since log_capture_start (malloc'd). */
static char *log_capture_text(struct log_capture *lc)
{
    long n;
    char *s;
    fflush(lc->log);
    n = ftell(lc->log);
    assert_true(n >= 0);
    s = calloc(1, (size_t)n + 1);
    assert_non_null(s);
    rewind(lc->log);
    assert_int_equal(fread(s, 1, (size_t)n, lc->log), (size_t)n);
    fseek(lc->log, 0, SEEK_END);
    return s;
}

/* stderr back (cmocka reports failures there), what was captured shown on it and returned. */
static char *log_capture_stop(struct log_capture *lc)
{
    char *captured = log_capture_text(lc);
    fflush(stderr);
    dup2(lc->saved_stderr, STDERR_FILENO);
    close(lc->saved_stderr);
    fputs(captured, stderr);
    fclose(lc->log);
    return captured;
}

#endif
