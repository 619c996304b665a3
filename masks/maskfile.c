/* maskfile.c: pruning masks in HDF5 files (the schema is in spruce_masks.h).
 *
 * Writer: a temporary file beside the final path, one chunked, deflated
 * boolean dataset per tensor, renamed into place on commit.  Reader: checks
 * that the file is HDF5, that it says format = "spruce-masks", and that every
 * root dataset is a rank-2 boolean; reads masks as bytes of 0/1. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>

#include "spruce_masks.h"

#ifndef DEFLATE_LEVEL
#define DEFLATE_LEVEL 4 /* 4: 4x faster than 6 on masks, 8% larger; 9 is pathological */
#endif
#define CHUNK_BYTES (1 << 20) /* about 1 MiB of mask per chunk */

/* ---- shared helpers ------------------------------------------------------- */

/* HDF5 prints its error stack to stderr by default; a library must not print.
 * The setting is per thread in thread-safe builds, so every entry point calls
 * this. */
static void quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *data)
{
    char *buf = data;
    (void)n;
    if (buf[0] == '\0' && e->desc && e->desc[0])
        snprintf(buf, 256, "%s", e->desc);
    return 0;
}

/* The innermost message on HDF5's error stack ("" when empty), then clear it. */
static const char *h5msg(void)
{
    static _Thread_local char buf[256];
    buf[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, buf);
    H5Eclear2(H5E_DEFAULT);
    return buf;
}

/* The element type: h5py's numpy bool, an enum over int8 {FALSE = 0, TRUE = 1}. */
static hid_t bool_type(void)
{
    hid_t t = H5Tenum_create(H5T_NATIVE_INT8);
    int8_t v;
    if (t < 0)
        return t;
    v = 0;
    if (H5Tenum_insert(t, "FALSE", &v) < 0)
        goto fail;
    v = 1;
    if (H5Tenum_insert(t, "TRUE", &v) < 0)
        goto fail;
    return t;
fail:
    H5Tclose(t);
    return -1;
}

static hid_t vlen_string_type(void)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0)
        return t;
    if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

/* Write a scalar attribute on obj, replacing one of the same name. */
static int put_attr(hid_t obj, const char *key, hid_t type, const void *value)
{
    hid_t space = -1, attr = -1;
    int ok = 0;
    htri_t ex = H5Aexists(obj, key);
    if (ex > 0 && H5Adelete(obj, key) < 0)
        return 0;
    if (ex < 0)
        return 0;
    space = H5Screate(H5S_SCALAR);
    if (space < 0)
        goto done;
    attr = H5Acreate2(obj, key, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attr < 0)
        goto done;
    ok = H5Awrite(attr, type, value) >= 0;
done:
    if (attr >= 0)
        H5Aclose(attr);
    if (space >= 0)
        H5Sclose(space);
    return ok;
}

static int put_string(hid_t obj, const char *key, const char *value)
{
    hid_t t = vlen_string_type();
    int ok;
    if (t < 0)
        return 0;
    ok = put_attr(obj, key, t, &value);
    H5Tclose(t);
    return ok;
}

/* Read a scalar string attribute (variable or fixed length) into buf.
 * Returns 1 when read, 0 when absent, -1 when present but not a string. */
static int get_string(hid_t obj, const char *key, char *buf, size_t cap)
{
    hid_t attr = -1, ftype = -1, mtype = -1, space = -1;
    int rc = -1;
    htri_t ex = H5Aexists(obj, key);
    buf[0] = '\0';
    if (ex == 0)
        return 0;
    if (ex < 0)
        return -1;
    attr = H5Aopen(obj, key, H5P_DEFAULT);
    if (attr < 0)
        goto done;
    ftype = H5Aget_type(attr);
    space = H5Aget_space(attr);
    if (ftype < 0 || space < 0 || H5Tget_class(ftype) != H5T_STRING ||
        H5Sget_simple_extent_npoints(space) != 1)
        goto done;
    if (H5Tis_variable_str(ftype) > 0) {
        char *p = NULL;
        mtype = H5Tcopy(ftype); /* same character set: HDF5 does not convert between them */
        if (mtype < 0 || H5Aread(attr, mtype, &p) < 0)
            goto done;
        snprintf(buf, cap, "%s", p ? p : "");
        H5free_memory(p);
    } else {
        size_t n = H5Tget_size(ftype);
        char *tmp = malloc(n + 1);
        if (!tmp)
            goto done;
        mtype = H5Tcopy(ftype);
        if (mtype < 0 || H5Tset_size(mtype, n + 1) < 0 ||
            H5Tset_strpad(mtype, H5T_STR_NULLTERM) < 0 || H5Aread(attr, mtype, tmp) < 0) {
            free(tmp);
            goto done;
        }
        tmp[n] = '\0';
        snprintf(buf, cap, "%s", tmp);
        free(tmp);
    }
    rc = 1;
done:
    if (mtype >= 0)
        H5Tclose(mtype);
    if (ftype >= 0)
        H5Tclose(ftype);
    if (space >= 0)
        H5Sclose(space);
    if (attr >= 0)
        H5Aclose(attr);
    return rc;
}

/* Read a scalar numeric attribute as double.  1 read, 0 absent, -1 not numeric. */
static int get_double(hid_t obj, const char *key, double *out)
{
    hid_t attr = -1, ftype = -1, space = -1;
    int rc = -1;
    htri_t ex = H5Aexists(obj, key);
    if (ex == 0)
        return 0;
    if (ex < 0)
        return -1;
    attr = H5Aopen(obj, key, H5P_DEFAULT);
    if (attr < 0)
        goto done;
    ftype = H5Aget_type(attr);
    space = H5Aget_space(attr);
    if (ftype < 0 || space < 0 || H5Sget_simple_extent_npoints(space) != 1 ||
        (H5Tget_class(ftype) != H5T_FLOAT && H5Tget_class(ftype) != H5T_INTEGER))
        goto done;
    if (H5Aread(attr, H5T_NATIVE_DOUBLE, out) < 0)
        goto done;
    rc = 1;
done:
    if (ftype >= 0)
        H5Tclose(ftype);
    if (space >= 0)
        H5Sclose(space);
    if (attr >= 0)
        H5Aclose(attr);
    return rc;
}

static char *dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* A dataset name must be a single HDF5 link name at the root. */
static int bad_name(const char *name)
{
    return !name || !*name || strchr(name, '/') || !strcmp(name, ".");
}

/* ---- writer --------------------------------------------------------------- */

struct spruce_maskfile {
    hid_t file;
    hid_t booltype;
    char *path;
    char *tmp;
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
    quiet();
    f = calloc(1, sizeof *f);
    if (!f)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", path);
    f->file = f->booltype = -1;
    n = strlen(path);
    f->path = dupstr(path);
    f->tmp = malloc(n + 16);
    if (!f->path || !f->tmp) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    /* The temporary name is a sibling that no reader mistakes for the finished
     * file: "<path>.tmp-XXXXXX", created exclusively with the usual permissions
     * (0666 less the umask, unlike mkstemp's 0600). */
    for (tries = 0; tries < 100; tries++) {
        static const char set[] = "abcdefghijklmnopqrstuvwxyz0123456789";
        unsigned long x = (unsigned long)getpid() * 2654435761u ^ (unsigned long)time(NULL) ^
                          ((unsigned long)(uintptr_t)f >> 4) ^ (unsigned long)tries * 40503u;
        size_t k;
        snprintf(f->tmp, n + 16, "%s.tmp-", path);
        for (k = 0; k < 6; k++, x /= 36)
            f->tmp[n + 5 + k] = set[x % 36];
        f->tmp[n + 11] = '\0';
        fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST)
            break;
    }
    if (fd < 0) {
        rc = spruce__seterr(SPRUCE_EIO, "%s: cannot create a temporary file beside it: %s", path,
                            strerror(errno));
        free(f->tmp);
        f->tmp = NULL;
        goto done;
    }
    close(fd);
    /* Record link creation order so that readers list masks in model order. */
    fcpl = H5Pcreate(H5P_FILE_CREATE);
    if (fcpl < 0 ||
        H5Pset_link_creation_order(fcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED) < 0) {
        rc = spruce__seterr(SPRUCE_EHDF5, "%s: file creation properties: %s", path, h5msg());
        goto done;
    }
    f->file = H5Fcreate(f->tmp, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    if (f->file < 0) {
        rc = spruce__seterr(SPRUCE_EHDF5, "%s: cannot create HDF5 file: %s", f->tmp, h5msg());
        goto done;
    }
    f->booltype = bool_type();
    if (f->booltype < 0 || !put_string(f->file, "format", SPRUCE_MASKS_FORMAT) ||
        !put_attr(f->file, "format_version", H5T_NATIVE_INT64, &version)) {
        rc = spruce__seterr(SPRUCE_EHDF5, "%s: cannot write the format attributes: %s", f->tmp,
                            h5msg());
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
    quiet();
    return 0;
}

int spruce_maskfile_set_attr_string(spruce_maskfile *f, const char *key, const char *value)
{
    int rc = check_key(f, key);
    if (rc < 0)
        return rc;
    if (!put_string(f->file, key, value ? value : ""))
        return spruce__seterr(SPRUCE_EHDF5, "%s: attribute %s: %s", f->path, key, h5msg());
    return 0;
}

int spruce_maskfile_set_attr_double(spruce_maskfile *f, const char *key, double value)
{
    int rc = check_key(f, key);
    if (rc < 0)
        return rc;
    if (!put_attr(f->file, key, H5T_NATIVE_DOUBLE, &value))
        return spruce__seterr(SPRUCE_EHDF5, "%s: attribute %s: %s", f->path, key, h5msg());
    return 0;
}

int spruce_maskfile_set_attr_int(spruce_maskfile *f, const char *key, int64_t value)
{
    int rc = check_key(f, key);
    if (rc < 0)
        return rc;
    if (!put_attr(f->file, key, H5T_NATIVE_INT64, &value))
        return spruce__seterr(SPRUCE_EHDF5, "%s: attribute %s: %s", f->path, key, h5msg());
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
    if (bad_name(name))
        return spruce__seterr(SPRUCE_EINVAL, "%s: invalid mask name '%s' (empty or contains '/')",
                              f->path, name ? name : "(null)");
    if (rows <= 0 || cols <= 0 || rows > INT64_MAX / cols || !keep)
        return spruce__seterr(SPRUCE_EINVAL, "%s: mask %s: invalid shape (%lld, %lld)", f->path,
                              name, (long long)rows, (long long)cols);
    quiet();
    ex = H5Lexists(f->file, name, H5P_DEFAULT);
    if (ex > 0)
        return spruce__seterr(SPRUCE_EEXIST, "%s: mask %s written twice", f->path, name);
    if (ex < 0)
        return spruce__seterr(SPRUCE_EHDF5, "%s: mask %s: %s", f->path, name, h5msg());

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
                            h5msg());
        goto done;
    }
    dset = H5Dcreate2(f->file, name, f->booltype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (dset < 0) {
        rc = spruce__seterr(SPRUCE_EHDF5, "%s: mask %s: cannot create dataset: %s", f->path, name,
                            h5msg());
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
            rc = spruce__seterr(SPRUCE_EHDF5, "%s: mask %s: write failed: %s", f->path, name,
                                h5msg());
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
    if (!put_attr(dset, "sparsity", H5T_NATIVE_DOUBLE, &sparsity) ||
        !put_string(dset, "pattern", pattern) || !put_string(dset, "method", method) ||
        (info && info->has_loss && !put_attr(dset, "loss", H5T_NATIVE_DOUBLE, &info->loss))) {
        rc = spruce__seterr(SPRUCE_EHDF5, "%s: mask %s: attributes: %s", f->path, name, h5msg());
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

int spruce_maskfile_commit(spruce_maskfile *f)
{
    int rc = 0, e;
    char *dir = NULL, *slash;
    if (!f)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_maskfile_commit: no file");
    quiet();
    if (f->booltype >= 0)
        H5Tclose(f->booltype);
    f->booltype = -1;
    if (f->file >= 0 && H5Fclose(f->file) < 0) {
        f->file = -1;
        rc = spruce__seterr(SPRUCE_EHDF5, "%s: closing %s failed: %s", f->path, f->tmp, h5msg());
        goto done;
    }
    f->file = -1;
    if ((e = sync_path(f->tmp, 0)) != 0) {
        rc = spruce__seterr(SPRUCE_EIO, "%s: fsync failed: %s", f->tmp, strerror(e));
        goto done;
    }
    if (rename(f->tmp, f->path) < 0) {
        rc = spruce__seterr(SPRUCE_EIO, "%s: cannot rename %s into place: %s", f->path, f->tmp,
                            strerror(errno));
        goto done;
    }
    free(f->tmp);
    f->tmp = NULL; /* now the final file: never removed below */
    dir = dupstr(f->path);
    if (dir) {
        slash = strrchr(dir, '/');
        if (slash == dir)
            slash[1] = '\0';
        else if (slash)
            *slash = '\0';
        sync_path(slash ? dir : ".", 1); /* best effort */
    }
done:
    free(dir);
    writer_free(f, rc < 0);
    return rc;
}

void spruce_maskfile_abort(spruce_maskfile *f)
{
    if (!f)
        return;
    quiet();
    writer_free(f, 1);
}

/* ---- reader --------------------------------------------------------------- */

typedef struct {
    char *name;
    spruce_mask_meta meta;
} entry;

struct spruce_maskreader {
    hid_t file;
    hid_t booltype;
    char *path;
    entry *masks;
    int nmasks, capmasks;
    spruce_mask_attr *attrs;
    int nattrs, capattrs;
    int rc;            /* first failure inside an iteration callback */
};

static int grow(void **p, int *cap, int need, size_t elem)
{
    void *q;
    int c;
    if (need <= *cap)
        return 1;
    c = *cap ? *cap * 2 : 16;
    while (c < need)
        c *= 2;
    q = realloc(*p, (size_t)c * elem);
    if (!q)
        return 0;
    *p = q;
    *cap = c;
    return 1;
}

/* One root attribute into r->attrs. */
static herr_t attr_cb(hid_t loc, const char *key, const H5A_info_t *ainfo, void *data)
{
    spruce_maskreader *r = data;
    spruce_mask_attr *a;
    hid_t attr = -1, t = -1, space = -1;
    char sbuf[4096];
    H5T_class_t cls;
    (void)ainfo;
    if (!grow((void **)&r->attrs, &r->capattrs, r->nattrs + 1, sizeof *r->attrs)) {
        r->rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", r->path);
        return -1;
    }
    a = &r->attrs[r->nattrs];
    memset(a, 0, sizeof *a);
    a->type = SPRUCE_MASK_ATTR_OTHER;
    sbuf[0] = '\0';
    attr = H5Aopen(loc, key, H5P_DEFAULT);
    if (attr >= 0) {
        t = H5Aget_type(attr);
        space = H5Aget_space(attr);
    }
    cls = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
    if (space >= 0 && H5Sget_simple_extent_npoints(space) == 1) {
        if (cls == H5T_STRING && get_string(loc, key, sbuf, sizeof sbuf) == 1) {
            a->type = SPRUCE_MASK_ATTR_STRING;
        } else if (cls == H5T_INTEGER && H5Aread(attr, H5T_NATIVE_INT64, &a->i) >= 0) {
            a->type = SPRUCE_MASK_ATTR_INT;
            a->d = (double)a->i;
            snprintf(sbuf, sizeof sbuf, "%lld", (long long)a->i);
        } else if (cls == H5T_FLOAT && H5Aread(attr, H5T_NATIVE_DOUBLE, &a->d) >= 0) {
            a->type = SPRUCE_MASK_ATTR_DOUBLE;
            a->i = isfinite(a->d) && fabs(a->d) < 9e18 ? (int64_t)a->d : 0;
            snprintf(sbuf, sizeof sbuf, "%.15g", a->d); /* shortest that reads back */
            if (strtod(sbuf, NULL) != a->d)
                snprintf(sbuf, sizeof sbuf, "%.17g", a->d);
        }
    }
    if (a->type == SPRUCE_MASK_ATTR_OTHER)
        snprintf(sbuf, sizeof sbuf, "(not a scalar string or number)");
    if (space >= 0)
        H5Sclose(space);
    if (t >= 0)
        H5Tclose(t);
    if (attr >= 0)
        H5Aclose(attr);
    H5Eclear2(H5E_DEFAULT);
    a->key = dupstr(key);
    a->s = dupstr(sbuf);
    if (!a->key || !a->s) {
        free((char *)a->key);
        free((char *)a->s);
        r->rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", r->path);
        return -1;
    }
    r->nattrs++;
    return 0;
}

/* Is t the boolean enum {FALSE = 0, TRUE = 1} over a one-byte integer? */
static int is_bool(hid_t t)
{
    int8_t v;
    if (H5Tget_class(t) != H5T_ENUM || H5Tget_size(t) != 1 || H5Tget_nmembers(t) != 2)
        return 0;
    if (H5Tenum_valueof(t, "FALSE", &v) < 0 || v != 0)
        return 0;
    if (H5Tenum_valueof(t, "TRUE", &v) < 0 || v != 1)
        return 0;
    return 1;
}

static const char *type_name(hid_t t)
{
    switch (H5Tget_class(t)) {
    case H5T_INTEGER: return "integer";
    case H5T_FLOAT: return "float";
    case H5T_STRING: return "string";
    case H5T_ENUM: return "enum (not FALSE=0/TRUE=1 over one byte)";
    case H5T_COMPOUND: return "compound";
    case H5T_ARRAY: return "array";
    default: return "other";
    }
}

/* One root link: datasets are validated and recorded, other objects skipped. */
static herr_t link_cb(hid_t loc, const char *name, const H5L_info_t *linfo, void *data)
{
    spruce_maskreader *r = data;
    hid_t obj = -1, t = -1, space = -1;
    hsize_t dims[2];
    int ndims;
    entry *e;
    herr_t ret = 0;
    double d;
    (void)linfo;
    obj = H5Oopen(loc, name, H5P_DEFAULT);
    if (obj < 0) {
        r->rc = spruce__seterr(SPRUCE_EFORMAT, "%s: dataset %s: cannot open: %s", r->path, name,
                               h5msg());
        return -1;
    }
    if (H5Iget_type(obj) != H5I_DATASET)
        goto done; /* groups and named types are not part of the schema */
    t = H5Dget_type(obj);
    space = H5Dget_space(obj);
    if (t < 0 || space < 0) {
        r->rc = spruce__seterr(SPRUCE_EFORMAT, "%s: dataset %s: cannot read its header: %s",
                               r->path, name, h5msg());
        ret = -1;
        goto done;
    }
    if (!is_bool(t)) {
        r->rc = spruce__seterr(SPRUCE_EFORMAT,
                               "%s: dataset %s: element type is %s of %zu byte(s), expected the "
                               "boolean enum (FALSE=0, TRUE=1, one byte)",
                               r->path, name, type_name(t), H5Tget_size(t));
        ret = -1;
        goto done;
    }
    ndims = H5Sget_simple_extent_ndims(space);
    if (ndims != 2) {
        r->rc = spruce__seterr(SPRUCE_EFORMAT, "%s: dataset %s: rank %d, expected 2 (rows, cols)",
                               r->path, name, ndims);
        ret = -1;
        goto done;
    }
    H5Sget_simple_extent_dims(space, dims, NULL);
    if (dims[0] == 0 || dims[1] == 0 || dims[0] > (hsize_t)INT64_MAX / dims[1]) {
        r->rc = spruce__seterr(SPRUCE_EFORMAT, "%s: dataset %s: shape (%llu, %llu) is empty or "
                               "too large", r->path, name, (unsigned long long)dims[0],
                               (unsigned long long)dims[1]);
        ret = -1;
        goto done;
    }
    if (!grow((void **)&r->masks, &r->capmasks, r->nmasks + 1, sizeof *r->masks)) {
        r->rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", r->path);
        ret = -1;
        goto done;
    }
    e = &r->masks[r->nmasks];
    memset(e, 0, sizeof *e);
    e->meta.rows = (int64_t)dims[0];
    e->meta.cols = (int64_t)dims[1];
    e->meta.sparsity = NAN;
    if (get_double(obj, "sparsity", &d) == 1)
        e->meta.sparsity = d;
    if (get_double(obj, "loss", &d) == 1) {
        e->meta.loss = d;
        e->meta.has_loss = 1;
    }
    get_string(obj, "pattern", e->meta.pattern, sizeof e->meta.pattern);
    get_string(obj, "method", e->meta.method, sizeof e->meta.method);
    H5Eclear2(H5E_DEFAULT);
    e->name = dupstr(name);
    if (!e->name) {
        r->rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", r->path);
        ret = -1;
        goto done;
    }
    r->nmasks++;
done:
    if (space >= 0)
        H5Sclose(space);
    if (t >= 0)
        H5Tclose(t);
    H5Oclose(obj);
    return ret;
}

void spruce_maskreader_close(spruce_maskreader *r)
{
    int i;
    if (!r)
        return;
    quiet();
    for (i = 0; i < r->nmasks; i++)
        free(r->masks[i].name);
    for (i = 0; i < r->nattrs; i++) {
        free((char *)r->attrs[i].key);
        free((char *)r->attrs[i].s);
    }
    free(r->masks);
    free(r->attrs);
    if (r->booltype >= 0)
        H5Tclose(r->booltype);
    if (r->file >= 0)
        H5Fclose(r->file);
    free(r->path);
    free(r);
}

int spruce_maskreader_open(const char *path, spruce_maskreader **out)
{
    spruce_maskreader *r = NULL;
    struct stat sb;
    htri_t is;
    hsize_t idx = 0;
    const spruce_mask_attr *fmt, *ver;
    int rc = 0;

    if (!path || !*path || !out)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_maskreader_open: no path");
    *out = NULL;
    quiet();
    if (stat(path, &sb) < 0)
        return spruce__seterr(errno == ENOENT ? SPRUCE_ENOTFOUND : SPRUCE_EIO, "%s: %s", path,
                              strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return spruce__seterr(SPRUCE_EFORMAT, "%s: not a regular file", path);
    if (access(path, R_OK) < 0)
        return spruce__seterr(SPRUCE_EIO, "%s: %s", path, strerror(errno));
    is = H5Fis_hdf5(path);
    if (is <= 0) {
        h5msg();
        return spruce__seterr(SPRUCE_EFORMAT, "%s: not an HDF5 file (no HDF5 signature)", path);
    }
    r = calloc(1, sizeof *r);
    if (!r)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", path);
    r->file = r->booltype = -1;
    r->path = dupstr(path);
    if (!r->path) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    r->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (r->file < 0) {
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: cannot open as HDF5 (truncated or damaged?): %s",
                            path, h5msg());
        goto done;
    }
    r->booltype = bool_type();
    if (r->booltype < 0) {
        rc = spruce__seterr(SPRUCE_EHDF5, "%s: %s", path, h5msg());
        goto done;
    }
    if (H5Aiterate2(r->file, H5_INDEX_NAME, H5_ITER_NATIVE, &idx, attr_cb, r) < 0) {
        rc = r->rc ? r->rc
                   : spruce__seterr(SPRUCE_EFORMAT, "%s: cannot read the root attributes: %s",
                                    path, h5msg());
        goto done;
    }
    fmt = spruce_maskreader_attr(r, "format");
    if (!fmt || fmt->type != SPRUCE_MASK_ATTR_STRING || strcmp(fmt->s, SPRUCE_MASKS_FORMAT)) {
        rc = spruce__seterr(SPRUCE_EFORMAT,
                            "%s: an HDF5 file but not a spruce mask file (root attribute format "
                            "is %s%s%s, expected \"%s\")",
                            path, fmt ? "\"" : "", fmt ? fmt->s : "absent", fmt ? "\"" : "",
                            SPRUCE_MASKS_FORMAT);
        goto done;
    }
    ver = spruce_maskreader_attr(r, "format_version");
    if (!ver || ver->type != SPRUCE_MASK_ATTR_INT) {
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: root attribute format_version missing or not an "
                            "integer", path);
        goto done;
    }
    if (ver->i != SPRUCE_MASKS_FORMAT_VERSION) {
        rc = spruce__seterr(SPRUCE_EUNSUPPORTED,
                            "%s: format_version %lld, this spruce reads version %d", path,
                            (long long)ver->i, SPRUCE_MASKS_FORMAT_VERSION);
        goto done;
    }
    /* Model order when the writer tracked creation order, else name order. */
    idx = 0;
    if (H5Literate(r->file, H5_INDEX_CRT_ORDER, H5_ITER_INC, &idx, link_cb, r) < 0) {
        if (r->rc == 0 && r->nmasks == 0) {
            h5msg();
            idx = 0;
            if (H5Literate(r->file, H5_INDEX_NAME, H5_ITER_INC, &idx, link_cb, r) >= 0)
                goto listed;
        }
        rc = r->rc ? r->rc
                   : spruce__seterr(SPRUCE_EFORMAT, "%s: cannot list the datasets: %s", path,
                                    h5msg());
        goto done;
    }
listed:
    ;
done:
    if (rc < 0)
        spruce_maskreader_close(r);
    else
        *out = r;
    return rc;
}

const char *spruce_maskreader_path(const spruce_maskreader *r) { return r ? r->path : NULL; }
int spruce_maskreader_count(const spruce_maskreader *r) { return r ? r->nmasks : 0; }

const char *spruce_maskreader_name_at(const spruce_maskreader *r, int i)
{
    return r && i >= 0 && i < r->nmasks ? r->masks[i].name : NULL;
}

int spruce_maskreader_find(const spruce_maskreader *r, const char *name)
{
    int i;
    if (!r || !name)
        return -1;
    for (i = 0; i < r->nmasks; i++)
        if (!strcmp(r->masks[i].name, name))
            return i;
    return -1;
}

int spruce_maskreader_meta(const spruce_maskreader *r, const char *name, spruce_mask_meta *meta)
{
    int i = spruce_maskreader_find(r, name);
    if (!r || !meta)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_maskreader_meta: no reader or output");
    if (i < 0)
        return spruce__seterr(SPRUCE_ENOTFOUND, "%s: no mask named %s", r->path,
                              name ? name : "(null)");
    *meta = r->masks[i].meta;
    return 0;
}

int spruce_maskreader_read(const spruce_maskreader *r, const char *name, uint8_t *keep,
                           spruce_mask_meta *meta)
{
    int i = spruce_maskreader_find(r, name), rc = 0;
    hid_t dset = -1;
    size_t k, n;
    if (!r || !keep)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_maskreader_read: no reader or buffer");
    if (i < 0)
        return spruce__seterr(SPRUCE_ENOTFOUND, "%s: no mask named %s", r->path,
                              name ? name : "(null)");
    quiet();
    n = (size_t)r->masks[i].meta.rows * (size_t)r->masks[i].meta.cols;
    dset = H5Dopen2(r->file, name, H5P_DEFAULT);
    if (dset < 0 || H5Dread(dset, r->booltype, H5S_ALL, H5S_ALL, H5P_DEFAULT, keep) < 0) {
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: dataset %s: read failed (truncated or damaged?): %s",
                            r->path, name, h5msg());
        goto done;
    }
    for (k = 0; k < n; k++)
        if (keep[k] > 1) {
            rc = spruce__seterr(SPRUCE_EFORMAT,
                                "%s: dataset %s: element %zu (row %lld, col %lld) is %d, "
                                "expected FALSE (0) or TRUE (1)",
                                r->path, name, k, (long long)(k / (size_t)r->masks[i].meta.cols),
                                (long long)(k % (size_t)r->masks[i].meta.cols), (int8_t)keep[k]);
            goto done;
        }
    if (meta)
        *meta = r->masks[i].meta;
done:
    if (dset >= 0)
        H5Dclose(dset);
    return rc;
}

int spruce_maskreader_nattrs(const spruce_maskreader *r) { return r ? r->nattrs : 0; }

const spruce_mask_attr *spruce_maskreader_attr_at(const spruce_maskreader *r, int i)
{
    return r && i >= 0 && i < r->nattrs ? &r->attrs[i] : NULL;
}

const spruce_mask_attr *spruce_maskreader_attr(const spruce_maskreader *r, const char *key)
{
    int i;
    if (!r || !key)
        return NULL;
    for (i = 0; i < r->nattrs; i++)
        if (!strcmp(r->attrs[i].key, key))
            return &r->attrs[i];
    return NULL;
}
