/* maskfile_write.c: writing pruning masks to HDF5 (the schema is in spruce_masks.h).
 *
 * A temporary file beside the final path ("<path>.tmp-<pid>", so that a
 * later run can tell a dead process's leftovers), one chunked, deflated
 * boolean dataset per tensor, renamed into place on commit.  The commit has
 * two phases (prepare: flush, close, fsync; publish: the rename) so that a
 * caller can publish the masks together with a checkpoint. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "h5util.h"

#ifndef DEFLATE_LEVEL
#define DEFLATE_LEVEL 4 /* 4: 4x faster than 6 on masks, 8% larger; 9 is pathological */
#endif
#define CHUNK_BYTES (1 << 20) /* about 1 MiB of mask per chunk */

struct spruce_maskfile {
    hid_t file;
    hid_t booltype;
    char *path;
    char *tmp;
    int prepared; /* flushed, closed and synced: only the rename is left */
};

static void writer_free(spruce_maskfile *f, int remove_tmp)
{
    if (!f)
        return;
    if (f->booltype >= 0)
        H5Tclose(f->booltype);
    if (f->file >= 0)
        H5Fclose(f->file);
    if (remove_tmp && f->tmp)
        unlink(f->tmp);
    free(f->path);
    free(f->tmp);
    free(f);
}

int spruce_maskfile_create(const char *path, spruce_maskfile **out)
{
    spruce_maskfile *f = NULL;
    hid_t fcpl = -1;
    int fd = -1, rc = 0, tries;
    size_t n;
    int64_t version = SPRUCE_MASKS_FORMAT_VERSION;

    if (!path || !*path || !out)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_maskfile_create: no path");
    *out = NULL;
    spruce__h5_quiet();
    f = calloc(1, sizeof *f);
    if (!f)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", path);
    f->file = f->booltype = -1;
    n = strlen(path);
    f->path = spruce__h5_dupstr(path);
    f->tmp = malloc(n + 32);
    if (!f->path || !f->tmp) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    {
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            rc = spruce__seterr(SPRUCE_EEXIST, "%s: is a directory; the masks need a file name", path);
            goto done;
        }
    }
    /* The temporary name is a sibling that no reader mistakes for the finished
     * file: "<path>.tmp-<pid>", created exclusively with the usual permissions
     * (0666 less the umask).  One with our pid can only be a dead process's
     * (pids are reused) or our own earlier one: it is replaced. */
    snprintf(f->tmp, n + 32, "%s.tmp-%ld", path, (long)getpid());
    for (tries = 0; tries < 2; tries++) {
        fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST || unlink(f->tmp) < 0)
            break;
    }
    if (fd < 0) {
        rc = spruce__seterr(spruce__errno_code(errno), "%s: cannot create a temporary file beside it: %s", path,
                            strerror(errno));
        free(f->tmp);
        f->tmp = NULL;
        goto done;
    }
    close(fd);
    /* Record link creation order so that readers list masks in model order,
     * and keep the links in the root's header however many masks there are
     * (readers check them there; they refuse dense link storage). */
    fcpl = H5Pcreate(H5P_FILE_CREATE);
    if (fcpl < 0 ||
        H5Pset_link_creation_order(fcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED) < 0 ||
        H5Pset_link_phase_change(fcpl, 65535, 65534) < 0) {
        rc = spruce__seterr(SPRUCE_EHDF5, "%s: file creation properties: %s", path, spruce__h5_msg());
        goto done;
    }
    f->file = H5Fcreate(f->tmp, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    if (f->file < 0) {
        rc = spruce__seterr(SPRUCE_EHDF5, "%s: cannot create HDF5 file: %s", f->tmp, spruce__h5_msg());
        goto done;
    }
    f->booltype = spruce__h5_bool_type();
    if (f->booltype < 0 || !spruce__h5_put_string(f->file, "format", SPRUCE_MASKS_FORMAT) ||
        !spruce__h5_put_attr(f->file, "format_version", H5T_NATIVE_INT64, &version)) {
        rc = spruce__seterr(SPRUCE_EHDF5, "%s: cannot write the format attributes: %s", f->tmp,
                            spruce__h5_msg());
        goto done;
    }
done:
    if (fcpl >= 0)
        H5Pclose(fcpl);
    if (rc < 0)
        writer_free(f, 1);
    else
        *out = f;
    return rc;
}

const char *spruce_maskfile_temp_path(const spruce_maskfile *f) { return f ? f->tmp : NULL; }

static int check_key(spruce_maskfile *f, const char *key)
{
    if (!f || f->file < 0)
        return spruce__seterr(SPRUCE_EINVAL, "mask file: not open for writing");
    if (!key || !*key)
        return spruce__seterr(SPRUCE_EINVAL, "%s: empty attribute name", f->path);
    if (!strcmp(key, "format") || !strcmp(key, "format_version"))
        return spruce__seterr(SPRUCE_EINVAL, "%s: attribute '%s' is reserved", f->path, key);
    spruce__h5_quiet();
    return 0;
}

int spruce_maskfile_set_attr_string(spruce_maskfile *f, const char *key, const char *value)
{
    int rc = check_key(f, key);
    if (rc < 0)
        return rc;
    if (!spruce__h5_put_string(f->file, key, value ? value : ""))
        return spruce__seterr(SPRUCE_EHDF5, "%s: attribute %s: %s", f->path, key, spruce__h5_msg());
    return 0;
}

int spruce_maskfile_set_attr_double(spruce_maskfile *f, const char *key, double value)
{
    int rc = check_key(f, key);
    if (rc < 0)
        return rc;
    if (!spruce__h5_put_attr(f->file, key, H5T_NATIVE_DOUBLE, &value))
        return spruce__seterr(SPRUCE_EHDF5, "%s: attribute %s: %s", f->path, key, spruce__h5_msg());
    return 0;
}

int spruce_maskfile_set_attr_int(spruce_maskfile *f, const char *key, int64_t value)
{
    int rc = check_key(f, key);
    if (rc < 0)
        return rc;
    if (!spruce__h5_put_attr(f->file, key, H5T_NATIVE_INT64, &value))
        return spruce__seterr(SPRUCE_EHDF5, "%s: attribute %s: %s", f->path, key, spruce__h5_msg());
    return 0;
}

int spruce_maskfile_write(spruce_maskfile *f, const char *name, int64_t rows, int64_t cols,
                          const uint8_t *keep, const spruce_mask_info *info)
{
    hid_t space = -1, dcpl = -1, dset = -1, mspace = -1;
    hsize_t dims[2], chunk[2], start[2], count[2];
    uint8_t *buf = NULL;
    int64_t r0, kept = 0, nr;
    size_t i, n;
    double sparsity;
    const char *pattern, *method;
    int rc = 0;
    htri_t ex;

    if (!f || f->file < 0)
        return spruce__seterr(SPRUCE_EINVAL, "mask file: not open for writing");
    if (spruce__h5_bad_name(name))
        return spruce__seterr(SPRUCE_EINVAL, "%s: invalid mask name '%s' (empty or contains '/')",
                              f->path, name ? name : "(null)");
    if (rows <= 0 || cols <= 0 || rows > INT64_MAX / cols || !keep)
        return spruce__seterr(SPRUCE_EINVAL, "%s: mask %s: invalid shape (%lld, %lld)", f->path,
                              name, (long long)rows, (long long)cols);
    spruce__h5_quiet();
    ex = H5Lexists(f->file, name, H5P_DEFAULT);
    if (ex > 0)
        return spruce__seterr(SPRUCE_EEXIST, "%s: mask %s written twice", f->path, name);
    if (ex < 0)
        return spruce__seterr(SPRUCE_EHDF5, "%s: mask %s: %s", f->path, name, spruce__h5_msg());

    dims[0] = (hsize_t)rows;
    dims[1] = (hsize_t)cols;
    chunk[1] = dims[1] < 16384 ? dims[1] : 16384;
    chunk[0] = CHUNK_BYTES / chunk[1];
    if (chunk[0] < 1)
        chunk[0] = 1;
    if (chunk[0] > dims[0])
        chunk[0] = dims[0];
    space = H5Screate_simple(2, dims, NULL);
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (space < 0 || dcpl < 0 || H5Pset_chunk(dcpl, 2, chunk) < 0 || H5Pset_shuffle(dcpl) < 0 ||
        H5Pset_deflate(dcpl, DEFLATE_LEVEL) < 0) {
        rc = spruce__seterr(SPRUCE_EHDF5, "%s: mask %s: dataset properties: %s", f->path, name,
                            spruce__h5_msg());
        goto done;
    }
    dset = H5Dcreate2(f->file, name, f->booltype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (dset < 0) {
        rc = spruce__seterr(SPRUCE_EHDF5, "%s: mask %s: cannot create dataset: %s", f->path, name,
                            spruce__h5_sys_msg());
        goto done;
    }
    /* Write slabs of whole chunk rows, normalising any non-zero byte to 1. */
    n = (size_t)chunk[0] * (size_t)cols;
    buf = malloc(n);
    if (!buf) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: mask %s: out of memory", f->path, name);
        goto done;
    }
    for (r0 = 0; r0 < rows; r0 += nr) {
        const uint8_t *src = keep + (size_t)r0 * (size_t)cols;
        nr = rows - r0 < (int64_t)chunk[0] ? rows - r0 : (int64_t)chunk[0];
        n = (size_t)nr * (size_t)cols;
        for (i = 0; i < n; i++) {
            buf[i] = src[i] != 0;
            kept += buf[i];
        }
        start[0] = (hsize_t)r0;
        start[1] = 0;
        count[0] = (hsize_t)nr;
        count[1] = dims[1];
        mspace = H5Screate_simple(2, count, NULL);
        if (mspace < 0 ||
            H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
            H5Dwrite(dset, f->booltype, mspace, space, H5P_DEFAULT, buf) < 0) {
            rc = spruce__seterr(SPRUCE_EIO, "%s: mask %s: write failed: %s", f->path, name,
                                spruce__h5_sys_msg());
            goto done;
        }
        H5Sclose(mspace);
        mspace = -1;
    }
    sparsity = 1.0 - (double)kept / ((double)rows * (double)cols);
    if (info && info->sparsity >= 0)
        sparsity = info->sparsity;
    pattern = info && info->pattern ? info->pattern : "unstructured";
    method = info && info->method ? info->method : "";
    if (!spruce__h5_put_attr(dset, "sparsity", H5T_NATIVE_DOUBLE, &sparsity) ||
        !spruce__h5_put_string(dset, "pattern", pattern) || !spruce__h5_put_string(dset, "method", method) ||
        (info && info->has_loss && !spruce__h5_put_attr(dset, "loss", H5T_NATIVE_DOUBLE, &info->loss))) {
        rc = spruce__seterr(SPRUCE_EHDF5, "%s: mask %s: attributes: %s", f->path, name,
                            spruce__h5_sys_msg());
        goto done;
    }
done:
    free(buf);
    if (mspace >= 0)
        H5Sclose(mspace);
    if (dset >= 0)
        H5Dclose(dset);
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (space >= 0)
        H5Sclose(space);
    return rc;
}

/* fsync a path (file or directory); 0 or errno. */
static int sync_path(const char *p, int dir)
{
    int fd = open(p, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
    int e = 0;
    if (fd < 0)
        return errno;
    if (fsync(fd) < 0 && errno != EINVAL)
        e = errno;
    close(fd);
    return e;
}

int spruce_maskfile_prepare(spruce_maskfile *f)
{
    struct stat st;
    int e;
    if (!f)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_maskfile_prepare: no file");
    if (f->prepared)
        return 0;
    if (f->file < 0)
        return spruce__seterr(SPRUCE_EINVAL, "%s: not open for writing", f->path);
    spruce__h5_quiet();
    if (f->booltype >= 0)
        H5Tclose(f->booltype);
    f->booltype = -1;
    /* Flush first: a full disk is reported here with the file still whole.
     * The close writes nothing more then, but is checked all the same. */
    if (H5Fflush(f->file, H5F_SCOPE_LOCAL) < 0) {
        const char *why = spruce__h5_sys_msg();
        H5Fclose(f->file);
        f->file = -1;
        spruce__h5_msg(); /* clear the stack */
        return spruce__seterr(SPRUCE_EIO, "%s: writing the masks failed: %s", f->path, why);
    }
    if (H5Fclose(f->file) < 0) {
        f->file = -1;
        return spruce__seterr(SPRUCE_EIO, "%s: closing the mask file failed: %s", f->path,
                              spruce__h5_sys_msg());
    }
    f->file = -1;
    if ((e = sync_path(f->tmp, 0)) != 0)
        return spruce__seterr(SPRUCE_EIO, "%s: fsync of %s failed: %s", f->path, f->tmp, strerror(e));
    if (stat(f->path, &st) == 0 && S_ISDIR(st.st_mode))
        return spruce__seterr(SPRUCE_EEXIST, "%s: is a directory; the masks need a file name", f->path);
    f->prepared = 1;
    return 0;
}

int spruce_maskfile_publish(spruce_maskfile *f)
{
    char *dir, *slash;
    int rc;
    if (!f)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_maskfile_publish: no file");
    if (!f->tmp)
        return 0; /* already published */
    if ((rc = spruce_maskfile_prepare(f)) < 0)
        return rc;
    if (rename(f->tmp, f->path) < 0)
        return spruce__seterr(SPRUCE_EIO, "%s: cannot rename %s into place: %s", f->path, f->tmp,
                              strerror(errno));
    free(f->tmp);
    f->tmp = NULL; /* now the final file: never removed */
    dir = spruce__h5_dupstr(f->path);
    if (dir) {
        slash = strrchr(dir, '/');
        if (slash == dir)
            slash[1] = '\0';
        else if (slash)
            *slash = '\0';
        sync_path(slash ? dir : ".", 1); /* best effort */
    }
    free(dir);
    return 0;
}

int spruce_maskfile_commit(spruce_maskfile *f)
{
    int rc;
    if (!f)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_maskfile_commit: no file");
    rc = spruce_maskfile_publish(f);
    writer_free(f, 1);
    return rc;
}

void spruce_maskfile_abort(spruce_maskfile *f)
{
    if (!f)
        return;
    spruce__h5_quiet();
    writer_free(f, 1);
}
