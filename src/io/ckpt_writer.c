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
#include <signal.h>
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
    int prepared;  /* every file synced and closed */
    int published; /* tmp renamed to outdir; old (if any) holds the replaced one */
    char *old;
    spruce__ctw *ct;  /* compressed-tensors mode: shards rebuilt at prepare */
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

int spruce__copy_range(int in, uint64_t in_off, int out, uint64_t out_off, uint64_t n,
                       const char *src, const char *dst)
{
    uint64_t done = 0;
    char *b = NULL;
    int rc = 0;
    /* the kernel copies (and may share extents); whatever it refuses (EXDEV,
     * ENOSYS, EINVAL, EOPNOTSUPP ...) is copied through a buffer instead */
    while (done < n) {
        loff_t i = (loff_t)(in_off + done), o = (loff_t)(out_off + done);
        ssize_t k = copy_file_range(in, &i, out, &o, n - done, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        done += (uint64_t)k;
    }
    if (done < n && !(b = malloc(1 << 20)))
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory copying", src);
    while (done < n) {
        size_t want = n - done < (1u << 20) ? (size_t)(n - done) : (1u << 20);
        ssize_t k = pread(in, b, want, (off_t)(in_off + done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            rc = spruce__seterr(SPRUCE_EIO, "%s: read failed at byte %llu of %llu: %s", src,
                                (unsigned long long)(in_off + done),
                                (unsigned long long)(in_off + n),
                                k < 0 ? strerror(errno) : "the file ended");
            break;
        }
        if ((rc = spruce__pwrite_all(out, b, (size_t)k, out_off + done, dst)))
            break;
        done += (uint64_t)k;
    }
    free(b);
    return rc;
}

/* A shard is copied in pieces of at most this many bytes, the cancel flag
 * checked between them. */
#define COPY_PIECE ((size_t)64 << 20)

int spruce__copy_file(const char *src, const char *dst)
{
    int in = -1, out = -1, rc = 0;
    struct stat st;
    uint64_t done = 0;

    if ((in = open(src, O_RDONLY | O_CLOEXEC)) < 0 || fstat(in, &st) < 0) {
        rc = spruce__seterr(SPRUCE_EIO, "%s: cannot read: %s", src, strerror(errno));
        goto done;
    }
    if ((out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0) {
        rc = spruce__seterr(spruce__errno_code(errno), "%s: cannot create: %s", dst, strerror(errno));
        goto done;
    }
    while (done < (uint64_t)st.st_size) {
        uint64_t piece = (uint64_t)st.st_size - done < COPY_PIECE ? (uint64_t)st.st_size - done
                                                                  : COPY_PIECE;
        if (spruce__cancelled()) {
            rc = spruce__seterr(SPRUCE_ECANCELED, "%s: stopped while copying it", src);
            goto done;
        }
        if ((rc = spruce__copy_range(in, done, out, done, piece, src, dst)))
            goto done;
        done += piece;
    }
    if (fsync(out) < 0)
        rc = spruce__seterr(SPRUCE_EIO, "%s: fsync failed: %s", dst, strerror(errno));
done:
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
    if (protect_dir && (rc = spruce_output_check(outdir, 1, "the output directory", protect_dir,
                                                 "the input checkpoint")))
        goto done;
    if (stat(outdir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            rc = spruce__seterr(SPRUCE_EEXIST, "%s: output exists and is not a directory", outdir);
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

/* The directory holding path (malloc'ed; "." for a bare name). */
static char *parent_of(const char *path)
{
    char *p = strip_slashes(path), *slash;
    if (!p)
        return NULL;
    slash = strrchr(p, '/');
    if (!slash)
        strcpy(p, ".");
    else if (slash == p)
        p[1] = '\0';
    else
        *slash = '\0';
    return p;
}

static void fsync_parent(const char *path)
{
    char *parent = parent_of(path);
    if (parent)
        fsync_path(parent, 1); /* best effort: the rename is done */
    free(parent);
}

int spruce__outdir_publish(const char *tmp, const char *outdir_in, int force, char **old)
{
    char *outdir = strip_slashes(outdir_in);
    struct stat st;
    int rc = 0;

    *old = NULL;
    if (!outdir)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", outdir_in);
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
            /* Swap the two in one step where the file system can: OUT is never
             * absent, and the old checkpoint is then at tmp's name. */
            if (renameat2(AT_FDCWD, tmp, AT_FDCWD, outdir, RENAME_EXCHANGE) == 0) {
                if (!(*old = strdup(tmp)))
                    rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", outdir);
                goto done;
            }
            if (!(*old = malloc(strlen(outdir) + 32))) {
                rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", outdir);
                goto done;
            }
            sprintf(*old, "%s.old-%ld", outdir, (long)getpid());
            if (rename(outdir, *old) < 0) {
                rc = spruce__seterr(SPRUCE_EIO, "%s: cannot move the old output aside: %s", outdir,
                                    strerror(errno));
                free(*old);
                *old = NULL;
                goto done;
            }
        }
    }
    if (rename(tmp, outdir) < 0) {
        rc = spruce__seterr(SPRUCE_EIO, "%s: cannot rename %s into place: %s", outdir, tmp,
                            strerror(errno));
        if (*old)
            rename(*old, outdir); /* put the old output back */
        free(*old);
        *old = NULL;
        goto done;
    }
done:
    free(outdir);
    return rc;
}

void spruce__outdir_unpublish(const char *tmp, const char *outdir_in, const char *old)
{
    char *outdir = strip_slashes(outdir_in);
    if (!outdir)
        return;
    if (old && !strcmp(old, tmp)) { /* exchanged: exchange back */
        renameat2(AT_FDCWD, tmp, AT_FDCWD, outdir, RENAME_EXCHANGE);
    } else if (rename(outdir, tmp) == 0 && old) {
        rename(old, outdir);
    }
    rmtree(tmp);
    fsync_parent(outdir);
    free(outdir);
}

void spruce__outdir_finish(const char *outdir, const char *old)
{
    if (old)
        rmtree(old);
    fsync_parent(outdir);
}

int spruce__outdir_commit(const char *tmp, const char *outdir, int force)
{
    char *old = NULL;
    int rc;
    if ((rc = fsync_path(tmp, 1)))
        return rc;
    if ((rc = spruce__outdir_publish(tmp, outdir, force, &old)))
        return rc;
    spruce__outdir_finish(outdir, old);
    free(old);
    return 0;
}

/* ---- output paths that would destroy an input ---------------------------- */

/* out against one input path (a file, or the directory itself). */
static int check_one(const char *out, int out_is_dir, const char *out_what, const char *in,
                     const char *in_what, const char *shown)
{
    struct stat so, si;
    char *parent = NULL;
    int out_exists, rc = 0;

    if (stat(in, &si) < 0)
        return 0; /* nothing there to destroy */
    out_exists = stat(out, &so) == 0;
    if (out_exists && so.st_dev == si.st_dev && so.st_ino == si.st_ino) {
        rc = spruce__seterr(SPRUCE_EINVAL, "%s: %s would overwrite %s %s; choose another path",
                            out, out_what, in_what, shown);
        goto done;
    }
    if (S_ISDIR(si.st_mode) && (parent = parent_of(out)) &&
        is_self_or_ancestor(parent, si.st_dev, si.st_ino)) {
        rc = spruce__seterr(SPRUCE_EINVAL, "%s: %s lies inside %s %s; choose another path", out,
                            out_what, in_what, shown);
        goto done;
    }
    if (out_is_dir && out_exists && S_ISDIR(so.st_mode) &&
        is_self_or_ancestor(in, so.st_dev, so.st_ino)) {
        rc = spruce__seterr(SPRUCE_EINVAL,
                            "%s: %s contains %s %s, which replacing it would delete; choose another path",
                            out, out_what, in_what, shown);
        goto done;
    }
done:
    free(parent);
    return rc;
}

int spruce_output_check(const char *out, int out_is_dir, const char *out_what, const char *in,
                        const char *in_what)
{
    struct stat si;
    DIR *d;
    struct dirent *e;
    int rc;

    if (!out || !*out || !in || !*in)
        return 0;
    if ((rc = check_one(out, out_is_dir, out_what, in, in_what, in)))
        return rc;
    if (stat(in, &si) < 0 || !S_ISDIR(si.st_mode) || !(d = opendir(in)))
        return 0;
    /* The files of an input directory may be symlinks to elsewhere (the
     * Hugging Face cache): their targets are inputs too. */
    while (!rc && (e = readdir(d))) {
        char *p;
        struct stat sl;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (!(p = spruce__path_join(in, e->d_name))) {
            rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", in);
            break;
        }
        if (lstat(p, &sl) == 0 && S_ISLNK(sl.st_mode))
            rc = check_one(out, out_is_dir, out_what, p, in_what, p);
        free(p);
    }
    closedir(d);
    return rc;
}

/* ---- temporaries left by processes that were killed ---------------------- */

/* name is "<base>.tmp-<pid>" or "<base>.old-<pid>": that pid, else 0. */
static long temp_pid(const char *name, const char *base, int *is_old)
{
    size_t n = strlen(base);
    const char *p;
    char *end;
    long pid;
    if (strncmp(name, base, n))
        return 0;
    p = name + n;
    if (!strncmp(p, ".tmp-", 5))
        *is_old = 0;
    else if (!strncmp(p, ".old-", 5))
        *is_old = 1;
    else
        return 0;
    p += 5;
    if (*p < '1' || *p > '9')
        return 0;
    errno = 0;
    pid = strtol(p, &end, 10);
    return *end || errno || pid <= 0 ? 0 : pid;
}

static int pid_alive(long pid)
{
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

int spruce_output_clean_stale(const char *path_in,
                              void (*note)(void *ctx, const char *path, const char *what),
                              void *ctx)
{
    char *path = strip_slashes(path_in), *dir = NULL, *base, *slash;
    DIR *d = NULL;
    struct dirent *e;
    struct stat st;
    int count = 0, is_old;

    if (!path || !(dir = parent_of(path)))
        goto done;
    slash = strrchr(path, '/');
    base = slash ? slash + 1 : path;
    if (!*base || !(d = opendir(dir)))
        goto done;
    while ((e = readdir(d))) {
        long pid = temp_pid(e->d_name, base, &is_old);
        char *full;
        if (!pid || pid == (long)getpid() || pid_alive(pid))
            continue;
        if (!(full = spruce__path_join(dir, e->d_name)))
            break;
        if (lstat(full, &st) == 0) {
            /* An old checkpoint moved aside when OUT itself is gone: the run
             * died between its two renames; the old one is put back. */
            if (is_old && S_ISDIR(st.st_mode) && stat(path, &st) < 0 && errno == ENOENT &&
                rename(full, path) == 0) {
                if (note)
                    note(ctx, full, "restored as");
            } else if (S_ISDIR(st.st_mode) ? rmtree(full) == 0 : unlink(full) == 0) {
                if (note)
                    note(ctx, full, "removed");
            }
            count++;
        }
        free(full);
    }
done:
    if (d)
        closedir(d);
    free(dir);
    free(path);
    return count;
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
static int copy_others(const spruce_ckpt *in, const char *tmp, int rebuilt)
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
        if (rebuilt && (!strcmp(e->d_name, "config.json") ||
                        !strcmp(e->d_name, "model.safetensors.index.json")))
            continue; /* written at prepare */
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
    spruce__ctw_free(w->ct);
    if (w->published)
        spruce__outdir_unpublish(w->tmp, w->outdir, w->old);
    else if (w->tmp)
        spruce__outdir_abort(w->tmp);
    free(w->old);
    free(w->tmp);
    free(w->outdir);
    free(w);
}

/* A dense checkpoint from a compressed-tensors one (sparse < 0: plain). */
static const spruce_compress_opts plain_dense = {-1, NULL};

static int writer_begin(const spruce_ckpt *in, const char *outdir, int force,
                        const spruce_compress_opts *co, spruce_ckpt_writer **out)
{
    spruce_ckpt_writer *w = NULL;
    int rc = 0, i;

    if (!in || !outdir || !out)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_ckpt_writer_begin: NULL argument");
    *out = NULL;
    if (spruce__ckpt_decoded(in) && !co) /* decoded tensors are not in its shards: rebuild */
        co = &plain_dense;
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
    if ((rc = copy_others(in, w->tmp, co != NULL)))
        goto done;
    if (co) {
        rc = spruce__ctw_new(in, w->tmp, co, &w->ct);
        goto done;
    }
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

int spruce_ckpt_writer_begin(const spruce_ckpt *in, const char *outdir, int force,
                             spruce_ckpt_writer **out)
{
    return writer_begin(in, outdir, force, NULL, out);
}

int spruce_ckpt_writer_begin_compressed(const spruce_ckpt *in, const char *outdir, int force,
                                        const spruce_compress_opts *o, spruce_ckpt_writer **out)
{
    spruce_compress_opts none = {0, NULL};
    return writer_begin(in, outdir, force, o ? o : &none, out);
}

/* A compressed writer's tensor: encoded and appended to its shard. */
static int set_compressed(spruce_ckpt_writer *w, const char *name, const float *data,
                          const spruce_qgrid *grid)
{
    const spruce_tensor *t;
    int rc;
    if (!name || !(t = spruce_ckpt_find(w->in, name)))
        return spruce__seterr(SPRUCE_ENOTFOUND, "%s: tensor '%s': not in the input checkpoint",
                              spruce_ckpt_dir(w->in), name ? name : "(null)");
    if (t->dtype == SPRUCE_DTYPE_OTHER)
        return spruce__seterr(SPRUCE_EDTYPE, "%s: tensor '%s': expected dtype F32, F16 or BF16 to "
                              "write floats, found %s", spruce_ckpt_file_of(w->in, t), name,
                              t->dtype_name);
    if ((rc = spruce__ctw_set(w->ct, t, (int)(t - spruce_ckpt_tensor_at(w->in, 0)), data, grid)))
        w->failed = 1;
    return rc;
}

int spruce_ckpt_writer_set_quantized(spruce_ckpt_writer *w, const char *name, const float *data,
                                     const spruce_qgrid *grid)
{
    if (!w)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_ckpt_writer: NULL argument");
    if (w->ct)
        return set_compressed(w, name, data, grid);
    return spruce_ckpt_writer_set_f32(w, name, data);
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

    if (w && w->ct)
        return set_compressed(w, name, data, NULL);
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
    if (w && w->ct)
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "tensor '%s': raw bytes cannot be written to a "
                              "compressed checkpoint", name ? name : "(null)");
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

int spruce_ckpt_writer_prepare(spruce_ckpt_writer *w)
{
    struct stat st;
    int i, rc = 0;
    if (!w)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_ckpt_writer_prepare: NULL writer");
    if (w->prepared)
        return 0;
    if (w->failed)
        return spruce__seterr(SPRUCE_EIO, "%s: an earlier write failed; nothing was written", w->outdir);
    if (w->ct) {
        if ((rc = spruce__ctw_finish(w->ct))) {
            w->failed = 1;
            return rc;
        }
        spruce__ctw_free(w->ct);
        w->ct = NULL;
    }
    for (i = 0; i < w->nsh; i++) {
        if (w->fd[i] < 0)
            continue; /* a compressed writer wrote its shards whole */
        if (fsync(w->fd[i]) < 0)
            return spruce__seterr(SPRUCE_EIO, "%s: fsync failed: %s", w->opath[i], strerror(errno));
        rc = close(w->fd[i]);
        w->fd[i] = -1;
        if (rc < 0)
            return spruce__seterr(SPRUCE_EIO, "%s: close failed: %s", w->opath[i], strerror(errno));
    }
    if ((rc = fsync_path(w->tmp, 1)))
        return rc;
    /* the final name can still be taken */
    if (stat(w->outdir, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return spruce__seterr(SPRUCE_EEXIST, "%s: output exists and is not a directory", w->outdir);
        if (!w->force && !dir_is_empty(w->outdir))
            return spruce__seterr(SPRUCE_EEXIST,
                                  "%s: output directory appeared while writing and is not empty",
                                  w->outdir);
    }
    w->prepared = 1;
    return 0;
}

int spruce_ckpt_writer_publish(spruce_ckpt_writer *w)
{
    int rc;
    if (!w)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_ckpt_writer_publish: NULL writer");
    if (w->published)
        return 0;
    if ((rc = spruce_ckpt_writer_prepare(w)))
        return rc;
    if ((rc = spruce__outdir_publish(w->tmp, w->outdir, w->force, &w->old)))
        return rc;
    w->published = 1;
    return 0;
}

void spruce_ckpt_writer_finish(spruce_ckpt_writer *w)
{
    if (!w)
        return;
    if (w->published) {
        spruce__outdir_finish(w->outdir, w->old);
        w->published = 0;
        free(w->tmp); /* renamed (or, exchanged, removed as old): nothing left to remove */
        w->tmp = NULL;
    }
    spruce_ckpt_writer_abort(w);
}

int spruce_ckpt_writer_commit(spruce_ckpt_writer *w)
{
    int rc;
    if (!w)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_ckpt_writer_commit: NULL writer");
    if ((rc = spruce_ckpt_writer_publish(w))) {
        spruce_ckpt_writer_abort(w);
        return rc;
    }
    spruce_ckpt_writer_finish(w);
    return 0;
}
