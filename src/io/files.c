/* files.c: opening a user's input file, refusing what is not a regular file. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spruce_error.h"
#include "spruce_files.h"

/* 0 for a regular file, else the refusal naming path and what it is. */
static int refuse_kind(const char *path, mode_t m)
{
    const char *what;
    if (S_ISREG(m))
        return 0;
    if (S_ISDIR(m))
        return spruce__seterr(SPRUCE_EISDIR, "%s: is a directory, expected a file", path);
    what = S_ISFIFO(m)  ? "a FIFO (named pipe)"
           : S_ISSOCK(m) ? "a socket"
           : S_ISCHR(m)  ? "a character device"
           : S_ISBLK(m)  ? "a block device"
                         : "not a regular file";
    return spruce__seterr(SPRUCE_ENOTREG, "%s: is %s, expected a regular file", path, what);
}

int spruce__check_regular(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return spruce__seterr(spruce__errno_code(errno), "%s: cannot open: %s", path,
                              strerror(errno));
    return refuse_kind(path, st.st_mode);
}

int spruce__open_regular(const char *path, int *fd)
{
    struct stat st;
    int f, flags, rc;
    *fd = -1;
    f = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (f < 0)
        return spruce__seterr(spruce__errno_code(errno), "%s: cannot open: %s", path,
                              strerror(errno));
    if (fstat(f, &st) < 0) {
        rc = spruce__seterr(spruce__errno_code(errno), "%s: cannot stat: %s", path, strerror(errno));
        close(f);
        return rc;
    }
    if ((rc = refuse_kind(path, st.st_mode))) {
        close(f);
        return rc;
    }
    if ((flags = fcntl(f, F_GETFL)) < 0 || fcntl(f, F_SETFL, flags & ~O_NONBLOCK) < 0) {
        rc = spruce__seterr(SPRUCE_EIO, "%s: fcntl: %s", path, strerror(errno));
        close(f);
        return rc;
    }
    *fd = f;
    return 0;
}

int spruce__fopen_regular(const char *path, FILE **fp)
{
    int fd, rc;
    *fp = NULL;
    if ((rc = spruce__open_regular(path, &fd)))
        return rc;
    if (!(*fp = fdopen(fd, "rb"))) {
        rc = spruce__seterr(spruce__errno_code(errno), "%s: cannot open: %s", path, strerror(errno));
        close(fd);
    }
    return rc;
}
