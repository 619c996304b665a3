/* maskfile_read.c: reading pruning masks from HDF5 (the schema is in spruce_masks.h).
 *
 * Checks that the file is HDF5, that it says format = "spruce-masks", and that
 * every root dataset is a rank-2 boolean; reads masks as bytes of 0/1. */
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

#include "h5util.h"

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
        if (cls == H5T_STRING && spruce__h5_get_string(loc, key, sbuf, sizeof sbuf) == 1) {
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
    a->key = spruce__h5_dupstr(key);
    a->s = spruce__h5_dupstr(sbuf);
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
                               spruce__h5_msg());
        return -1;
    }
    if (H5Iget_type(obj) != H5I_DATASET)
        goto done; /* groups and named types are not part of the schema */
    t = H5Dget_type(obj);
    space = H5Dget_space(obj);
    if (t < 0 || space < 0) {
        r->rc = spruce__seterr(SPRUCE_EFORMAT, "%s: dataset %s: cannot read its header: %s",
                               r->path, name, spruce__h5_msg());
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
    if (spruce__h5_get_double(obj, "sparsity", &d) == 1)
        e->meta.sparsity = d;
    if (spruce__h5_get_double(obj, "loss", &d) == 1) {
        e->meta.loss = d;
        e->meta.has_loss = 1;
    }
    spruce__h5_get_string(obj, "pattern", e->meta.pattern, sizeof e->meta.pattern);
    spruce__h5_get_string(obj, "method", e->meta.method, sizeof e->meta.method);
    H5Eclear2(H5E_DEFAULT);
    e->name = spruce__h5_dupstr(name);
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
    spruce__h5_quiet();
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
    spruce__h5_quiet();
    if (stat(path, &sb) < 0)
        return spruce__seterr(spruce__errno_code(errno), "%s: %s", path,
                              strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return spruce__seterr(SPRUCE_EFORMAT, "%s: not a regular file", path);
    if (access(path, R_OK) < 0)
        return spruce__seterr(spruce__errno_code(errno), "%s: %s", path, strerror(errno));
    is = H5Fis_hdf5(path);
    if (is <= 0) {
        spruce__h5_msg();
        return spruce__seterr(SPRUCE_EFORMAT, "%s: not an HDF5 file (no HDF5 signature)", path);
    }
    r = calloc(1, sizeof *r);
    if (!r)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", path);
    r->file = r->booltype = -1;
    r->path = spruce__h5_dupstr(path);
    if (!r->path) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    r->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (r->file < 0) {
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: cannot open as HDF5 (truncated or damaged?): %s",
                            path, spruce__h5_msg());
        goto done;
    }
    r->booltype = spruce__h5_bool_type();
    if (r->booltype < 0) {
        rc = spruce__seterr(SPRUCE_EHDF5, "%s: %s", path, spruce__h5_msg());
        goto done;
    }
    if (H5Aiterate2(r->file, H5_INDEX_NAME, H5_ITER_NATIVE, &idx, attr_cb, r) < 0) {
        rc = r->rc ? r->rc
                   : spruce__seterr(SPRUCE_EFORMAT, "%s: cannot read the root attributes: %s",
                                    path, spruce__h5_msg());
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
            spruce__h5_msg();
            idx = 0;
            if (H5Literate(r->file, H5_INDEX_NAME, H5_ITER_INC, &idx, link_cb, r) >= 0)
                goto listed;
        }
        rc = r->rc ? r->rc
                   : spruce__seterr(SPRUCE_EFORMAT, "%s: cannot list the datasets: %s", path,
                                    spruce__h5_msg());
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
    spruce__h5_quiet();
    n = (size_t)r->masks[i].meta.rows * (size_t)r->masks[i].meta.cols;
    dset = H5Dopen2(r->file, name, H5P_DEFAULT);
    if (dset < 0 || H5Dread(dset, r->booltype, H5S_ALL, H5S_ALL, H5P_DEFAULT, keep) < 0) {
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: dataset %s: read failed (truncated or damaged?): %s",
                            r->path, name, spruce__h5_msg());
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
