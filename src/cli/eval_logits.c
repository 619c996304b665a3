/* eval_logits.c: `spruce eval --logits OUT` (eval_logits.h). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eval_logits.h"
#include "spruce_error.h"

int eval_logits_write(void *ctx, size_t w, int t0, const float *rows, int nrows, int vocab)
{
    eval_logits *o = ctx;
    const uint16_t one = 1;
    size_t n = (size_t)nrows * (size_t)vocab, i;
    (void)w;
    (void)t0;
    if (*(const uint8_t *)&one) {   /* a little-endian host writes the floats as they are */
        if (fwrite(rows, sizeof(float), n, o->f) != n)
            return spruce__seterr(SPRUCE_EIO, "file %s: cannot write", o->tmp);
        return 0;
    }
    for (i = 0; i < n; i++) {
        uint32_t u;
        uint8_t b[4];
        memcpy(&u, rows + i, 4);
        b[0] = (uint8_t)u; b[1] = (uint8_t)(u >> 8); b[2] = (uint8_t)(u >> 16);
        b[3] = (uint8_t)(u >> 24);
        if (fwrite(b, 1, 4, o->f) != 4)
            return spruce__seterr(SPRUCE_EIO, "file %s: cannot write", o->tmp);
    }
    return 0;
}

int eval_logits_open(eval_logits *o, const char *path)
{
    int fd;
    o->path = path;
    o->f = NULL;
    if (!(o->tmp = malloc(strlen(path) + 16)))
        return spruce__seterr(SPRUCE_ENOMEM, "file %s", path);
    sprintf(o->tmp, "%s.tmp.XXXXXX", path);
    fd = mkstemp(o->tmp);
    if (fd >= 0) {   /* mkstemp's 0600, widened to what the umask allows */
        mode_t um = umask(0);
        umask(um);
        (void)fchmod(fd, 0666 & ~um);
    }
    if (fd < 0 || !(o->f = fdopen(fd, "wb"))) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
            unlink(o->tmp);
        }
        free(o->tmp);
        o->tmp = NULL;
        return spruce__seterr(SPRUCE_EIO, "file %s: cannot create a temporary file beside it: "
                              "%s", path, strerror(e));
    }
    return 0;
}

int eval_logits_close(eval_logits *o, int ok)
{
    int rc = 0;
    if (!o->tmp)
        return 0;
    if (fflush(o->f) != 0 || fsync(fileno(o->f)) != 0)
        rc = spruce__seterr(SPRUCE_EIO, "file %s: cannot write: %s", o->tmp, strerror(errno));
    if (fclose(o->f) != 0 && !rc)
        rc = spruce__seterr(SPRUCE_EIO, "file %s: cannot write: %s", o->tmp, strerror(errno));
    if (ok && !rc && rename(o->tmp, o->path) != 0)
        rc = spruce__seterr(SPRUCE_EIO, "file %s: cannot rename %s to it: %s", o->path, o->tmp,
                            strerror(errno));
    if (!ok || rc)
        unlink(o->tmp);
    free(o->tmp);
    o->tmp = NULL;
    return rc;
}
