/* Blocking on purpose: a command does one exchange and exits. Each send and receive gets what
 * is left of one deadline. */
#include "proxy/admin/control_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "common/secret.h"
#include "proxy/admin/control_proto.h"

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Set fd's send and receive timeouts to what is left until deadline; -1 when nothing is. */
static int time_left(int fd, long long deadline)
{
    long long left = deadline - now_ms();
    if (left <= 0)
        return -1;
    struct timeval tv = {.tv_sec = (time_t)(left / 1000),
                         .tv_usec = (suseconds_t)((left % 1000) * 1000)};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)
        return -1;
    return 0;
}

static int send_all(int fd, const char *p, size_t len, long long deadline)
{
    while (len > 0) {
        if (time_left(fd, deadline) != 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The whole reply, NUL-terminated, into *out (secret_free). 0 ok; -1 with err. */
static int read_all(int fd, long long deadline, char **out, size_t *outlen, char *err,
                    size_t errlen)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (;;) {
        if (len + 1 == cap) {
            if (cap >= CONTROL_REPLY_MAX) {
                snprintf(err, errlen, "the daemon's reply is longer than %d bytes",
                         CONTROL_REPLY_MAX);
                goto fail;
            }
            char *nb = malloc(cap * 2); /* not realloc: the old copy may hold a token */
            if (!nb) {
                snprintf(err, errlen, "out of memory");
                goto fail;
            }
            memcpy(nb, buf, len);
            OPENSSL_cleanse(buf, cap);
            free(buf);
            buf = nb;
            cap *= 2;
        }
        if (time_left(fd, deadline) != 0) {
            snprintf(err, errlen, "timed out waiting for the daemon's reply");
            goto fail;
        }
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == ECONNRESET && len > 0)
            break; /* the daemon closed with our bytes unread (busy): what it said stands */
        if (n < 0) {
            snprintf(err, errlen, "%s",
                     errno == EAGAIN || errno == EWOULDBLOCK
                         ? "timed out waiting for the daemon's reply"
                         : strerror(errno));
            goto fail;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    return 0;
fail:
    OPENSSL_cleanse(buf, cap);
    free(buf);
    return -1;
}

enum control_client_result control_client_call(const char *path, const char *request,
                                               const char *payload, int timeout_ms, char **buf,
                                               const char **body, char *err, size_t errlen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    long long deadline = now_ms() + timeout_ms;
    enum control_client_result ret = CONTROL_CLIENT_FAILED;
    char *req = NULL, *reply = NULL;
    size_t reqlen, replylen = 0;
    *buf = NULL;
    *body = NULL;
    if (strlen(path) >= sizeof(sun.sun_path)) {
        snprintf(err, errlen, "control socket %s: path too long", path);
        return CONTROL_CLIENT_FAILED;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "control socket: %s", strerror(errno));
        return CONTROL_CLIENT_FAILED;
    }
    if (time_left(fd, deadline) != 0 ||
        connect(fd, (const struct sockaddr *)&sun, sizeof(sun)) != 0) {
        int e = errno;
        if (e == ENOENT || e == ECONNREFUSED || e == ENOTDIR) {
            ret = CONTROL_CLIENT_NO_DAEMON;
        } else {
            snprintf(err, errlen, "control socket %s: %s", path, strerror(e));
        }
        goto out;
    }
    reqlen = strlen(request) + 1 + (payload ? strlen(payload) + 1 : 0);
    req = malloc(reqlen + 1);
    if (!req) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    snprintf(req, reqlen + 1, "%s\n%s%s", request, payload ? payload : "", payload ? "\n" : "");
    /* EPIPE/ECONNRESET: the daemon answered (busy) and closed before reading us; read it */
    if (send_all(fd, req, reqlen, deadline) != 0 && errno != EPIPE && errno != ECONNRESET) {
        snprintf(err, errlen, "control socket %s: cannot send the request: %s", path,
                 strerror(errno));
        goto out;
    }
    if (read_all(fd, deadline, &reply, &replylen, err, errlen) != 0)
        goto out;
    const char *msg = NULL;
    switch (control_reply_parse(reply, replylen, &msg, body)) {
    case 1:
        *buf = reply;
        reply = NULL;
        ret = CONTROL_CLIENT_OK;
        break;
    case 0:
        snprintf(err, errlen, "%s", msg);
        break;
    default:
        snprintf(err, errlen, "the daemon's reply is malformed");
        break;
    }
out:
    if (req) {
        OPENSSL_cleanse(req, reqlen + 1);
        free(req);
    }
    if (reply) {
        OPENSSL_cleanse(reply, replylen);
        free(reply);
    }
    close(fd);
    return ret;
}
