/* ckpt_writer.c: write a checkpoint in the layout of another one, atomically.
 *
 * begin():  OUT.tmp-<pid>/ is created beside OUT; every other regular file of
 *           the input directory is copied (config.json, tokenizer files, the
 *           index), and every shard is copied whole, so each output shard has
 *           the input's exact header bytes (names, dtypes, shapes, order,
 *           __metadata__) and data.
 * set_*():  the replaced tensor's bytes are converted and pwrite()n in place,
 *           in chunks: nothing but one chunk is held in memory, so a pipeline
 *           can replace tensors one block at a time.
 * commit(): fsync every file and the directory, then rename OUT.tmp-<pid> to
 *           OUT (an existing OUT, allowed only with force, is moved aside and
 *           removed once the new one is in place).
 * abort():  remove OUT.tmp-<pid>. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_internal.h"

#define CHUNK 65536 /* elements converted per pwrite */

struct spruce_ckpt_writer {
    const spruce_ckpt *in;
    char *outdir, *tmp;
    int force;
    int nsh;
    int *fd;       /* output shard files, open for pwrite */
    char **opath;  /* their paths inside tmp */
    int failed;    /* a write failed: commit refuses */
    union {
        float f[CHUNK];
        uint16_t h[CHUNK];
    } buf;
};

int spruce__pwrite_all(int fd, const void *buf, size_t n, uint64_t off, const char *path)
{
    const char *p = buf;
    while (n) {
        ssize_t w = pwrite(fd, p, n > (1u << 30) ? (1u << 30) : n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return spruce__seterr(SPRUCE_EIO, "%s: write failed at byte %llu: %s", path,
                                  (unsigned long long)off, w < 0 ? strerror(errno) : "no progress");
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

int spruce__copy_file(const char *src, const char *dst)
{
    int in = -1, out = -1, rc = 0;
    struct stat st;
    off_t done = 0;
    char *b = NULL;

    if ((in = open(src, O_RDONLY | O_CLOEXEC)) < 0 || fstat(in, &st) < 0) {
        rc = spruce__seterr(SPRUCE_EIO, "%s: cannot read: %s", src, strerror(errno));
        goto done;
    }
    if ((out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0) {
        rc = spruce__seterr(spruce__errno_code(errno), "%s: cannot create: %s", dst, strerror(errno));
        goto done;
    }
    /* the kernel copies (and may share extents); fall back to read/write */
    while (done < st.st_size) {
        ssize_t n = copy_file_range(in, NULL, out, NULL, (size_t)(st.st_size - done), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += n;
    }
    if (done < st.st_size) {
        if (!(b = malloc(1 << 20))) {
            rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory copying", src);
            goto done;
        }
        for (;;) {
            ssize_t n = pread(in, b, 1 << 20, done);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                rc = spruce__seterr(SPRUCE_EIO, "%s: read failed: %s", src, strerror(errno));
                goto done;
            }
            if (n == 0)
                break;
            if ((rc = spruce__pwrite_all(out, b, (size_t)n, (uint64_t)done, dst)))
                goto done;
            done += n;
        }
    }
    if (fsync(out) < 0) {
        rc = spruce__seterr(SPRUCE_EIO, "%s: fsync failed: %s", dst, strerror(errno));
        goto done;
    }
done:
    free(b);
    if (in >= 0)
        close(in);
    if (out >= 0 && close(out) < 0 && !rc)
        rc = spruce__seterr(SPRUCE_EIO, "%s: close failed: %s", dst, strerror(errno));
    return rc;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return flag == FTW_DP || flag == FTW_D ? rmdir(path) : unlink(path);
}

static int rmtree(const char *path)
{
    return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void spruce__outdir_abort(const char *tmp)
{
    if (tmp)
        rmtree(tmp);
}

static int dir_is_empty(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    int empty = 1;
    if (!d)
        return 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            empty = 0;
            break;
        }
    closedir(d);
    return empty;
}

/* Is the directory with (dev, ino) dir itself or one of its ancestors? */
static int is_self_or_ancestor(const char *dir, dev_t dev, ino_t ino)
{
    char *p = realpath(dir, NULL), *slash;
    struct stat st;
    int found = 0;
    if (!p)
        return 0;
    for (;;) {
        if (stat(p, &st) == 0 && st.st_dev == dev && st.st_ino == ino) {
            found = 1;
            break;
        }
        slash = strrchr(p, '/');
        if (!slash || slash == p) {
            if (stat("/", &st) == 0 && st.st_dev == dev && st.st_ino == ino)
                found = 1;
            break;
        }
        *slash = '\0';
    }
    free(p);
    return found;
}

static char *strip_slashes(const char *s)
{
    char *p = strdup(s);
    size_t n;
    if (!p)
        return NULL;
    n = strlen(p);
    while (n > 1 && p[n - 1] == '/')
        p[--n] = '\0';
    return p;
}

int spruce__outdir_begin(const char *outdir_in, int force, const char *protect_dir, char **tmp)
{
    struct stat st;
    char *outdir = NULL;
    int rc = 0;

    *tmp = NULL;
    if (!outdir_in || !*outdir_in)
        return spruce__seterr(SPRUCE_EINVAL, "output directory: empty name");
    if (!(outdir = strip_slashes(outdir_in)))
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", outdir_in);
    if (stat(outdir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            rc = spruce__seterr(SPRUCE_EEXIST, "%s: output exists and is not a directory", outdir);
            goto done;
        }
        if (protect_dir && is_self_or_ancestor(protect_dir, st.st_dev, st.st_ino)) {
            rc = spruce__seterr(SPRUCE_EINVAL,
                                "%s: the output directory is (or contains) the input checkpoint %s; choose another",
                                outdir, protect_dir);
            goto done;
        }
        if (!force && !dir_is_empty(outdir)) {
            rc = spruce__seterr(SPRUCE_EEXIST,
                                "%s: output directory exists and is not empty (use --force to replace it)",
                                outdir);
            goto done;
        }
    } else if (errno != ENOENT) {
        rc = spruce__seterr(SPRUCE_EIO, "%s: %s", outdir, strerror(errno));
        goto done;
    }
    if (!(*tmp = malloc(strlen(outdir) + 32))) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", outdir);
        goto done;
    }
    sprintf(*tmp, "%s.tmp-%ld", outdir, (long)getpid());
    if (mkdir(*tmp, 0777) < 0) {
        rc = spruce__seterr(spruce__errno_code(errno),
                            "%s: cannot create the temporary output directory: %s", *tmp, strerror(errno));
        free(*tmp);
        *tmp = NULL;
        goto done;
    }
done:
    free(outdir);
    return rc;
}

static int fsync_path(const char *path, int dir)
{
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC), rc = 0;
    if (fd < 0)
        return spruce__seterr(SPRUCE_EIO, "%s: cannot open to sync: %s", path, strerror(errno));
    if (fsync(fd) < 0 && errno != EINVAL)
        rc = spruce__seterr(SPRUCE_EIO, "%s: fsync failed: %s", path, strerror(errno));
    close(fd);
    return rc;
}

int spruce__outdir_commit(const char *tmp, const char *outdir_in, int force)
{
    char *outdir = strip_slashes(outdir_in), *old = NULL, *parent = NULL, *slash;
    struct stat st;
    int rc = 0;

    if (!outdir)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", outdir_in);
    if ((rc = fsync_path(tmp, 1)))
        goto done;
    if (stat(outdir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            rc = spruce__seterr(SPRUCE_EEXIST, "%s: output exists and is not a directory", outdir);
            goto done;
        }
        if (dir_is_empty(outdir)) {
            rmdir(outdir);
        } else if (!force) {
            rc = spruce__seterr(SPRUCE_EEXIST,
                                "%s: output directory appeared while writing and is not empty", outdir);
            goto done;
        } else {
            if (!(old = malloc(strlen(outdir) + 32))) {
                rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", outdir);
                goto done;
            }
            sprintf(old, "%s.old-%ld", outdir, (long)getpid());
            if (rename(outdir, old) < 0) {
                rc = spruce__seterr(SPRUCE_EIO, "%s: cannot move the old output aside: %s", outdir,
                                    strerror(errno));
                free(old);
                old = NULL;
                goto done;
            }
        }
    }
    if (rename(tmp, outdir) < 0) {
        rc = spruce__seterr(SPRUCE_EIO, "%s: cannot rename %s into place: %s", outdir, tmp,
                            strerror(errno));
        if (old)
            rename(old, outdir); /* put the old output back */
        free(old);
        old = NULL;
        goto done;
    }
    if (old)
        rmtree(old);
    parent = strdup(outdir);
    if (parent) {
        slash = strrchr(parent, '/');
        if (!slash)
            strcpy(parent, ".");
        else if (slash == parent)
            parent[1] = '\0';
        else
            *slash = '\0';
        fsync_path(parent, 1); /* best effort: the rename is done */
    }
done:
    free(old);
    free(parent);
    free(outdir);
    return rc;
}

static int is_shard_name(const spruce_ckpt *c, const char *name)
{
    int i, n = spruce_ckpt_nshards(c);
    const char *sn, *sp;
    const uint8_t *m;
    size_t sz, len = strlen(name);
    for (i = 0; i < n; i++)
        if (!spruce__ckpt_shard(c, i, &sn, &sp, &m, &sz) && !strcmp(sn, name))
            return 1;
    return len > 12 && !strcmp(name + len - 12, ".safetensors");
}

/* Copy every regular file of the input directory except the safetensors files. */
static int copy_others(const spruce_ckpt *in, const char *tmp)
{
    const char *dir = spruce_ckpt_dir(in);
    DIR *d = opendir(dir);
    struct dirent *e;
    int rc = 0;
    if (!d)
        return spruce__seterr(SPRUCE_EIO, "%s: cannot list: %s", dir, strerror(errno));
    while ((e = readdir(d))) {
        char *src, *dst;
        struct stat st;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || is_shard_name(in, e->d_name))
            continue;
        src = spruce__path_join(dir, e->d_name);
        dst = spruce__path_join(tmp, e->d_name);
        if (!src || !dst)
            rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", dir);
        else if (stat(src, &st) == 0 && S_ISREG(st.st_mode)) /* follows symlinks (HF cache) */
            rc = spruce__copy_file(src, dst);
        free(src);
        free(dst);
        if (rc)
            break;
    }
    closedir(d);
    return rc;
}

void spruce_ckpt_writer_abort(spruce_ckpt_writer *w)
{
    int i;
    if (!w)
        return;
    for (i = 0; i < w->nsh; i++) {
        if (w->fd && w->fd[i] >= 0)
            close(w->fd[i]);
        if (w->opath)
            free(w->opath[i]);
    }
    free(w->fd);
    free(w->opath);
    if (w->tmp)
        spruce__outdir_abort(w->tmp);
    free(w->tmp);
    free(w->outdir);
    free(w);
}

int spruce_ckpt_writer_begin(const spruce_ckpt *in, const char *outdir, int force,
                             spruce_ckpt_writer **out)
{
    spruce_ckpt_writer *w = NULL;
    int rc = 0, i;

    if (!in || !outdir || !out)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_ckpt_writer_begin: NULL argument");
    *out = NULL;
    if (!(w = calloc(1, sizeof *w)) || !(w->outdir = strdup(outdir))) {
        free(w);
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", outdir);
    }
    w->in = in;
    w->force = force;
    w->nsh = spruce_ckpt_nshards(in);
    w->fd = malloc((size_t)w->nsh * sizeof *w->fd);
    w->opath = calloc((size_t)w->nsh, sizeof *w->opath);
    if (!w->fd || !w->opath) {
        w->nsh = 0;
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", outdir);
        goto done;
    }
    for (i = 0; i < w->nsh; i++)
        w->fd[i] = -1;
    if ((rc = spruce__outdir_begin(outdir, force, spruce_ckpt_dir(in), &w->tmp)))
        goto done;
    if ((rc = copy_others(in, w->tmp)))
        goto done;
    for (i = 0; i < w->nsh; i++) {
        const char *name, *path;
        const uint8_t *map;
        size_t size;
        spruce__ckpt_shard(in, i, &name, &path, &map, &size);
        if (!(w->opath[i] = spruce__path_join(w->tmp, name))) {
            rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", outdir);
            goto done;
        }
        if ((rc = spruce__copy_file(path, w->opath[i])))
            goto done;
        if ((w->fd[i] = open(w->opath[i], O_RDWR | O_CLOEXEC)) < 0) {
            rc = spruce__seterr(spruce__errno_code(errno), "%s: cannot open: %s", w->opath[i], strerror(errno));
            goto done;
        }
    }
done:
    if (rc) {
        spruce_ckpt_writer_abort(w);
        return rc;
    }
    *out = w;
    return 0;
}

/* The tensor and its byte offset in its output shard. */
static int locate(spruce_ckpt_writer *w, const char *name, const spruce_tensor **t, uint64_t *off)
{
    const char *sn, *sp;
    const uint8_t *map;
    size_t size;
    if (!w || !name)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_ckpt_writer: NULL argument");
    if (!(*t = spruce_ckpt_find(w->in, name)))
        return spruce__seterr(SPRUCE_ENOTFOUND, "%s: tensor '%s': not in the input checkpoint",
                              spruce_ckpt_dir(w->in), name);
    spruce__ckpt_shard(w->in, (*t)->shard, &sn, &sp, &map, &size);
    *off = (uint64_t)((const uint8_t *)(*t)->data - map);
    return 0;
}

int spruce_ckpt_writer_set_f32(spruce_ckpt_writer *w, const char *name, const float *data)
{
    const spruce_tensor *t;
    uint64_t off;
    size_t numel, i, j, n;
    int rc;

    if ((rc = locate(w, name, &t, &off)))
        return rc;
    if (t->dtype == SPRUCE_DTYPE_OTHER)
        return spruce__seterr(SPRUCE_EDTYPE, "%s: tensor '%s': expected dtype F32, F16 or BF16 to write floats, found %s",
                              spruce_ckpt_file_of(w->in, t), name, t->dtype_name);
    numel = (size_t)spruce_tensor_numel(t);
    if (numel && !data)
        return spruce__seterr(SPRUCE_EINVAL, "tensor '%s': NULL data", name);
    for (i = 0; i < numel; i += n) {
        n = numel - i < CHUNK ? numel - i : CHUNK;
        for (j = 0; j < n; j++)
            if (!isfinite(data[i + j])) {
                w->failed = 1;
                return spruce__seterr(SPRUCE_ENAN, "%s: tensor '%s': element %zu of the replacement is %g",
                                      spruce_ckpt_file_of(w->in, t), name, i + j, (double)data[i + j]);
            }
        if (t->dtype == SPRUCE_DTYPE_F32) {
            for (j = 0; j < n; j++) /* -0.0 -> +0.0: zeros are real zeros */
                w->buf.f[j] = data[i + j] == 0.0f ? 0.0f : data[i + j];
            rc = spruce__pwrite_all(w->fd[t->shard], w->buf.f, 4 * n, off + 4 * i, w->opath[t->shard]);
        } else {
            if (t->dtype == SPRUCE_DTYPE_F16)
                spruce_f32_to_f16_n(data + i, w->buf.h, n);
            else
                spruce_f32_to_bf16_n(data + i, w->buf.h, n);
            rc = spruce__pwrite_all(w->fd[t->shard], w->buf.h, 2 * n, off + 2 * i, w->opath[t->shard]);
        }
        if (rc) {
            w->failed = 1;
            return rc;
        }
    }
    return 0;
}

int spruce_ckpt_writer_set_raw(spruce_ckpt_writer *w, const char *name, const void *bytes,
                               size_t nbytes)
{
    const spruce_tensor *t;
    uint64_t off;
    int rc;
    if ((rc = locate(w, name, &t, &off)))
        return rc;
    if (nbytes != t->nbytes)
        return spruce__seterr(SPRUCE_ESHAPE, "%s: tensor '%s': expected %zu bytes, found %zu",
                              spruce_ckpt_file_of(w->in, t), name, t->nbytes, nbytes);
    if (nbytes && !bytes)
        return spruce__seterr(SPRUCE_EINVAL, "tensor '%s': NULL data", name);
    if ((rc = spruce__pwrite_all(w->fd[t->shard], bytes, nbytes, off, w->opath[t->shard])))
        w->failed = 1;
    return rc;
}

int spruce_ckpt_writer_commit(spruce_ckpt_writer *w)
{
    int i, rc = 0;
    if (!w)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_ckpt_writer_commit: NULL writer");
    if (w->failed) {
        rc = spruce__seterr(SPRUCE_EIO, "%s: an earlier write failed; nothing was written", w->outdir);
        goto done;
    }
    for (i = 0; i < w->nsh; i++) {
        if (fsync(w->fd[i]) < 0) {
            rc = spruce__seterr(SPRUCE_EIO, "%s: fsync failed: %s", w->opath[i], strerror(errno));
            goto done;
        }
        if (close(w->fd[i]) < 0) {
            w->fd[i] = -1;
            rc = spruce__seterr(SPRUCE_EIO, "%s: close failed: %s", w->opath[i], strerror(errno));
            goto done;
        }
        w->fd[i] = -1;
    }
    if ((rc = spruce__outdir_commit(w->tmp, w->outdir, w->force)))
        goto done;
    free(w->tmp); /* renamed: nothing left to remove */
    w->tmp = NULL;
done:
    spruce_ckpt_writer_abort(w);
    return rc;
}
