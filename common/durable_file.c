/* The write-temp / fsync / rename / fsync-directory discipline, in one place. */
#include "common/durable_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int durable_write_all(int fd, const void *p, size_t n)
{
    const unsigned char *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

int durable_fsync(int fd)
{
    while (fsync(fd) != 0)
        if (errno != EINTR)
            return -1;
    return 0;
}

int durable_mkdir(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (mkdir(path, 0700) == 0)
        return 1;
    if (errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s: not a directory", path);
        return -1;
    }
    return 0;
}

int durable_fsync_dir(const char *dir, char *err, size_t errlen)
{
    int ret = 0, fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || durable_fsync(fd) != 0) {
        snprintf(err, errlen, "cannot fsync %s: %s", dir, strerror(errno));
        ret = -1;
    }
    if (fd >= 0)
        close(fd);
    return ret;
}

int durable_replace(const char *tmp, const char *final, const char *dir, const void *data,
                    size_t len, int do_fsync, int *renamed, char *err, size_t errlen)
{
    int fd;
    if (renamed)
        *renamed = 0;
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    if (durable_write_all(fd, data, len) != 0 || (do_fsync && durable_fsync(fd) != 0)) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    /* close() can report a deferred write error (NFS): the file is not known written. */
    if (close(fd) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, final) != 0) {
        snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, final, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (renamed)
        *renamed = 1;
    /* The rename is durable only once the directory is. */
    return do_fsync ? durable_fsync_dir(dir, err, errlen) : 0;
}
