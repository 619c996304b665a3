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
#include <zlib.h>

#include "h5util.h"

typedef struct {
    char *name;
    spruce_mask_meta meta;
} entry;

struct spruce_maskreader {
    hid_t file;
    hid_t booltype;
    int fd;            /* the same file, for checking object headers before HDF5 reads them */
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

/* A root attribute's name, noted while its object header is checked. */
static int note_root_attr(const char *key, void *data)
{
    spruce_maskreader *r = data;
    spruce_mask_attr *a;
    if (!grow((void **)&r->attrs, &r->capattrs, r->nattrs + 1, sizeof *r->attrs))
        return -1;
    a = &r->attrs[r->nattrs];
    memset(a, 0, sizeof *a);
    a->type = SPRUCE_MASK_ATTR_OTHER;
    if (!(a->key = spruce__h5_dupstr(key)))
        return -1;
    r->nattrs++;
    return 0;
}

/* The value of root attribute a, once the whole header has been checked.
 * Strings and numbers are read; anything else, and variable-length strings
 * (never read: see h5util.c), are listed as OTHER with the reason. */
static int read_root_attr(spruce_maskreader *r, spruce_mask_attr *a)
{
    const char *key = a->key, *why = "";
    hid_t attr, t = -1;
    char sbuf[4096];
    H5T_class_t cls = H5T_NO_CLASS;
    int got = -1;
    sbuf[0] = '\0';
    attr = H5Aopen(r->file, key, H5P_DEFAULT);
    if (attr >= 0 && (t = H5Aget_type(attr)) >= 0)
        cls = H5Tget_class(t);
    if (t >= 0)
        H5Tclose(t);
    if (attr >= 0)
        H5Aclose(attr);
    if (cls == H5T_STRING && (got = spruce__h5_get_string(r->file, key, sbuf, sizeof sbuf,
                                                          &why)) == 1) {
        a->type = SPRUCE_MASK_ATTR_STRING;
    } else if (cls == H5T_INTEGER &&
               (got = spruce__h5_get_number(r->file, key, &a->d, &a->i, &why)) == 1) {
        a->type = SPRUCE_MASK_ATTR_INT;
        snprintf(sbuf, sizeof sbuf, "%lld", (long long)a->i);
    } else if (cls == H5T_FLOAT &&
               (got = spruce__h5_get_number(r->file, key, &a->d, NULL, &why)) == 1) {
        a->type = SPRUCE_MASK_ATTR_DOUBLE;
        a->i = isfinite(a->d) && fabs(a->d) < 9e18 ? (int64_t)a->d : 0;
        snprintf(sbuf, sizeof sbuf, "%.15g", a->d); /* shortest that reads back */
        if (strtod(sbuf, NULL) != a->d)
            snprintf(sbuf, sizeof sbuf, "%.17g", a->d);
    }
    if (a->type == SPRUCE_MASK_ATTR_OTHER)
        snprintf(sbuf, sizeof sbuf, "(not read: %s)",
                 got < 0 && *why ? why : "is not a scalar string or number");
    H5Eclear2(H5E_DEFAULT);
    return (a->s = spruce__h5_dupstr(sbuf)) ? 0 : -1;
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

/* The storage mask files use: contiguous (exactly numel bytes), or chunked
 * in rank-2 chunks of at most 64 MiB and no larger than the dataset, with no
 * filters but shuffle, deflate and Fletcher-32. */
static int check_storage(spruce_maskreader *r, const char *name, hid_t dset,
                         const hsize_t dims[2])
{
    hsize_t numel = dims[0] * dims[1];
    hid_t dcpl = H5Dget_create_plist(dset);
    int rc = 0, nf, k, deflate = 0;
    hsize_t chunk[2];
    const char *why = NULL;
    if (dcpl < 0)
        return spruce__seterr(SPRUCE_EFORMAT, "%s: dataset %s: cannot read its storage "
                              "properties: %s", r->path, name, spruce__h5_msg());
    switch (H5Pget_layout(dcpl)) {
    case H5D_CONTIGUOUS:
        if (H5Dget_storage_size(dset) != numel)
            why = "its contiguous storage is not one byte per element";
        break;
    case H5D_CHUNKED:
        /* HDF5 1.10 copies a whole chunk out of what a chunk decompresses to,
         * however short: chunks larger than the dataset (never written) are
         * refused. */
        if (H5Pget_chunk(dcpl, 2, chunk) != 2 || chunk[0] == 0 || chunk[1] == 0 ||
            chunk[0] > (64u << 20) / chunk[1])
            why = "chunks are not rank 2 or larger than 64 MiB";
        else if (chunk[0] > dims[0] || chunk[1] > dims[1])
            why = "its chunks are larger than the dataset (not what the writer writes)";
        break;
    default:
        why = "its storage layout is not contiguous or chunked";
    }
    nf = why ? 0 : H5Pget_nfilters(dcpl);
    if (nf < 0 || nf > 8)
        why = "its filter pipeline is damaged";
    for (k = 0; !why && k < nf; k++) {
        unsigned flags;
        size_t nv = 0;
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)k, &flags, &nv, NULL, 0, NULL, NULL);
        if (id != H5Z_FILTER_DEFLATE && id != H5Z_FILTER_SHUFFLE && id != H5Z_FILTER_FLETCHER32)
            why = "it uses a filter other than shuffle, deflate and Fletcher-32";
        deflate |= id == H5Z_FILTER_DEFLATE;
    }
    /* HDF5 1.10 copies a whole chunk out of a stored chunk that no filter
     * expands, however short the chunk index says it is */
    if (!why && H5Pget_layout(dcpl) == H5D_CHUNKED && !deflate)
        why = "its chunks are not deflated (mask files store their chunks deflated)";
    if (why)
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: dataset %s: %s", r->path, name, why);
    H5Pclose(dcpl);
    return rc;
}

/* A dataset attribute that must be absent or a number / a string. */
static int dset_number(spruce_maskreader *r, hid_t obj, const char *name, const char *key,
                       double *d)
{
    const char *why;
    int got = spruce__h5_get_number(obj, key, d, NULL, &why);
    if (got < 0)
        return spruce__seterr(SPRUCE_EFORMAT, "%s: dataset %s: attribute %s %s, expected a "
                              "real number", r->path, name, key, why);
    return got;
}

static int dset_string(spruce_maskreader *r, hid_t obj, const char *name, const char *key,
                       char *buf, size_t cap)
{
    const char *why;
    int got = spruce__h5_get_string(obj, key, buf, cap, &why);
    if (got < 0)
        return spruce__seterr(SPRUCE_EFORMAT, "%s: dataset %s: attribute %s %s, expected a "
                              "fixed-length string of at most %zu bytes", r->path, name, key,
                              why, cap - 1);
    return got;
}

/* One root link: datasets are validated and recorded, other objects skipped.
 * The object header is checked (spruce__h5_check_header) before HDF5 opens it. */
static herr_t link_cb(hid_t loc, const char *name, const H5L_info_t *linfo, void *data)
{
    spruce_maskreader *r = data;
    hid_t obj = -1, t = -1, space = -1;
    hsize_t dims[2];
    int ndims;
    entry *e;
    herr_t ret = -1;
    double d;
    H5O_info_t oi;
    hsize_t stored;
    char attr[256];
    const char *why;
    if (linfo->type != H5L_TYPE_HARD)
        return 0; /* soft and external links are not part of the schema */
    /* The object's header is checked at the link's address before HDF5
     * decodes any of it (a group has no datatype message, so passes). */
    if (spruce__h5_check_header(r->fd, linfo->u.address, 1, NULL, NULL, attr, sizeof attr,
                                &why) < 0) {
        r->rc = spruce__seterr(SPRUCE_EFORMAT, "%s: object %s%s%s: %s", r->path, name,
                               *attr ? ": attribute " : "", attr, why);
        return -1;
    }
    if (H5Oget_info_by_name2(loc, name, &oi, H5O_INFO_BASIC, H5P_DEFAULT) < 0 ||
        oi.addr != linfo->u.address) {
        r->rc = spruce__seterr(SPRUCE_EFORMAT, "%s: object %s: cannot read its header: %s",
                               r->path, name, spruce__h5_msg());
        return -1;
    }
    if (oi.type != H5O_TYPE_DATASET)
        return 0; /* groups and named types are not part of the schema */
    obj = H5Oopen(loc, name, H5P_DEFAULT);
    if (obj < 0) {
        r->rc = spruce__seterr(SPRUCE_EFORMAT, "%s: dataset %s: cannot open: %s", r->path, name,
                               spruce__h5_msg());
        return -1;
    }
    t = H5Dget_type(obj);
    space = H5Dget_space(obj);
    if (t < 0 || space < 0) {
        r->rc = spruce__seterr(SPRUCE_EFORMAT, "%s: dataset %s: cannot read its header: %s",
                               r->path, name, spruce__h5_msg());
        goto done;
    }
    if (!is_bool(t)) {
        r->rc = spruce__seterr(SPRUCE_EFORMAT,
                               "%s: dataset %s: element type is %s of %zu byte(s), expected the "
                               "boolean enum (FALSE=0, TRUE=1, one byte)",
                               r->path, name, type_name(t), H5Tget_size(t));
        goto done;
    }
    ndims = H5Sget_simple_extent_ndims(space);
    if (ndims != 2) {
        r->rc = spruce__seterr(SPRUCE_EFORMAT, "%s: dataset %s: rank %d, expected 2 (rows, cols)",
                               r->path, name, ndims);
        goto done;
    }
    H5Sget_simple_extent_dims(space, dims, NULL);
    if (dims[0] == 0 || dims[1] == 0 || dims[0] > (hsize_t)INT64_MAX / dims[1] ||
        dims[0] * dims[1] > (hsize_t)SIZE_MAX) {
        r->rc = spruce__seterr(SPRUCE_EFORMAT, "%s: dataset %s: shape (%llu, %llu) is empty or "
                               "too large", r->path, name, (unsigned long long)dims[0],
                               (unsigned long long)dims[1]);
        goto done;
    }
    if ((r->rc = check_storage(r, name, obj, dims)) < 0)
        goto done;
    /* Deflate compresses at most about 1032:1, so a shape far larger than the
     * bytes stored is a damaged dataspace, not a mask (and would have the
     * caller allocate for nothing). */
    stored = H5Dget_storage_size(obj);
    if (dims[0] * dims[1] > (hsize_t)2048 * stored + ((hsize_t)1 << 20)) {
        r->rc = spruce__seterr(SPRUCE_EFORMAT, "%s: dataset %s: shape (%llu, %llu) is larger "
                               "than the %llu bytes stored could hold (damaged dataspace?)",
                               r->path, name, (unsigned long long)dims[0],
                               (unsigned long long)dims[1], (unsigned long long)stored);
        goto done;
    }
    if (!grow((void **)&r->masks, &r->capmasks, r->nmasks + 1, sizeof *r->masks)) {
        r->rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", r->path);
        goto done;
    }
    e = &r->masks[r->nmasks];
    memset(e, 0, sizeof *e);
    e->meta.rows = (int64_t)dims[0];
    e->meta.cols = (int64_t)dims[1];
    e->meta.sparsity = NAN;
    if ((r->rc = dset_number(r, obj, name, "sparsity", &d)) < 0)
        goto done;
    if (r->rc == 1)
        e->meta.sparsity = d;
    if ((r->rc = dset_number(r, obj, name, "loss", &d)) < 0)
        goto done;
    if (r->rc == 1) {
        e->meta.loss = d;
        e->meta.has_loss = 1;
    }
    if ((r->rc = dset_string(r, obj, name, "pattern", e->meta.pattern,
                             sizeof e->meta.pattern)) < 0 ||
        (r->rc = dset_string(r, obj, name, "method", e->meta.method, sizeof e->meta.method)) < 0)
        goto done;
    r->rc = 0;
    H5Eclear2(H5E_DEFAULT);
    e->name = spruce__h5_dupstr(name);
    if (!e->name) {
        r->rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", r->path);
        goto done;
    }
    r->nmasks++;
    ret = 0;
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
        H5Fclose(r->file); /* the strong close degree closes whatever is still open in it */
    if (r->fd >= 0)
        close(r->fd);
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
    H5O_info_t oi;
    hid_t fapl = -1;
    uint64_t root = 0;
    char attr[256];
    const char *why = "";
    int rc = 0, i;

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
    r->fd = -1;
    r->path = spruce__h5_dupstr(path);
    if (!r->path) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        rc = spruce__seterr(SPRUCE_EIO, "%s: %s", path, strerror(errno));
        goto done;
    }
    if (spruce__h5_check_superblock(r->fd, &root, &why) < 0) {
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: %s", path, why);
        goto done;
    }
    /* The root group's header (its attributes, links and continuation chunks)
     * is checked before HDF5 opens the file and decodes it. */
    if (spruce__h5_check_header(r->fd, root, 0, note_root_attr, r, attr, sizeof attr, &why) < 0) {
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: root group%s%s: %s", path,
                            *attr ? ": attribute " : "", attr, why);
        goto done;
    }
    fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
        rc = spruce__seterr(SPRUCE_EHDF5, "%s: file access properties: %s", path,
                            spruce__h5_msg());
        goto done;
    }
    r->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
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
    /* The root attributes, read one by one (HDF5's own iteration over
     * attributes crashes on some damaged messages), from the header checked
     * above: the file's root must be that header. */
    if (H5Oget_info2(r->file, &oi, H5O_INFO_BASIC) < 0 || oi.addr != root) {
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: cannot read the root group's header: %s", path,
                            spruce__h5_msg());
        goto done;
    }
    for (i = 0; i < r->nattrs; i++)
        if (read_root_attr(r, &r->attrs[i]) < 0) {
            rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", path);
            goto done;
        }
    fmt = spruce_maskreader_attr(r, "format");
    if (fmt && fmt->type == SPRUCE_MASK_ATTR_OTHER) {
        rc = spruce__seterr(SPRUCE_EFORMAT,
                            "%s: root attribute format: %s; expected the fixed-length string \"%s\""
                            "%s", path, fmt->s, SPRUCE_MASKS_FORMAT,
                            strstr(fmt->s, "variable-length")
                                ? " (a mask file with variable-length strings: rewrite it with "
                                  "fixed-length ones, see doc/mask-files.md)"
                                : "");
        goto done;
    }
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
    if (fapl >= 0)
        H5Pclose(fapl);
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

/* HDF5 1.10 checks that a deflated chunk inflates without error, not that it
 * inflates to a whole chunk: from a valid but shorter stream it would copy
 * past the inflated bytes.  So before HDF5 reads a chunked mask, every stored
 * chunk is read and inflated here (zlib), and must give exactly one chunk's
 * bytes (plus the checksum of a Fletcher-32 filter that precedes deflate in
 * the pipeline; one after it is stripped first).  Shuffle does not change a
 * size.  HDF5 then reads the same bytes, checking the checksums. */
static int check_chunks(const spruce_maskreader *r, const char *name, hid_t dset)
{
    hid_t dcpl = H5Dget_create_plist(dset), space = -1;
    hsize_t chunk[2], nchunks = 0, k, off[2];
    size_t cbytes, want, before = 0, after = 0, nbuf = 0;
    int nf, i, seen_deflate = 0, rc = 0;
    uint8_t *stored = NULL, *plain = NULL;
    const char *why = NULL;
    if (dcpl < 0)
        return spruce__seterr(SPRUCE_EFORMAT, "%s: dataset %s: cannot read its storage "
                              "properties: %s", r->path, name, spruce__h5_msg());
    if (H5Pget_layout(dcpl) != H5D_CHUNKED)
        goto done;
    if (H5Pget_chunk(dcpl, 2, chunk) != 2 || (nf = H5Pget_nfilters(dcpl)) < 0) {
        why = "its chunk shape or filter pipeline cannot be read";
        goto done;
    }
    for (i = 0; i < nf && !why; i++) {
        unsigned flags;
        size_t nv = 1;
        unsigned cd[1] = {1};
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &nv, cd, 0, NULL, NULL);
        if (id == H5Z_FILTER_DEFLATE && seen_deflate++)
            why = "its pipeline deflates twice (mask files deflate once)";
        else if (id == H5Z_FILTER_FLETCHER32)
            *(seen_deflate ? &after : &before) += 4;
        else if (id == H5Z_FILTER_SHUFFLE && nv >= 1 && cd[0] != 1)
            why = "its shuffle filter is not for one-byte elements";
    }
    if (!why && !seen_deflate) /* refused when the file was opened */
        goto done;
    cbytes = (size_t)chunk[0] * (size_t)chunk[1];
    want = cbytes + before;
    space = H5Dget_space(dset);
    if (!why && (space < 0 || H5Dget_num_chunks(dset, space, &nchunks) < 0))
        why = "its chunk index cannot be read";
    if (!why && !(plain = malloc(want + 1)))
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: dataset %s: out of memory for a chunk of %zu "
                            "bytes", r->path, name, want);
    for (k = 0; !why && !rc && k < nchunks; k++) {
        unsigned fmask = 0;
        haddr_t addr = HADDR_UNDEF;
        hsize_t size = 0;
        uLongf got = (uLongf)want + 1;
        if (H5Dget_chunk_info(dset, space, k, off, &fmask, &addr, &size) < 0 ||
            addr == HADDR_UNDEF) {
            why = "a chunk's record cannot be read";
            break;
        }
        /* the chunk index was checked when the file was opened: size is
         * within the file and within what a chunk can be stored as */
        if (size > nbuf) {
            uint8_t *p = realloc(stored, (size_t)size);
            if (!p) {
                rc = spruce__seterr(SPRUCE_ENOMEM, "%s: dataset %s: out of memory for a stored "
                                    "chunk of %llu bytes", r->path, name,
                                    (unsigned long long)size);
                break;
            }
            stored = p, nbuf = (size_t)size;
        }
        if (pread(r->fd, stored, (size_t)size, (off_t)addr) != (ssize_t)size) {
            why = "a chunk lies beyond the end of the file";
            break;
        }
        if (size <= after ||
            uncompress(plain, &got, stored, (uLong)(size - after)) != Z_OK || got != want) {
            rc = spruce__seterr(SPRUCE_EFORMAT, "%s: dataset %s: the chunk at row %llu, column "
                                "%llu does not inflate to one chunk of %zu bytes (damaged)",
                                r->path, name, (unsigned long long)off[0],
                                (unsigned long long)off[1], want);
        }
    }
done:
    if (why)
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: dataset %s: %s", r->path, name, why);
    if (space >= 0)
        H5Sclose(space);
    H5Pclose(dcpl);
    free(stored);
    free(plain);
    return rc;
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
    if (dset >= 0 && (rc = check_chunks(r, name, dset)) < 0)
        goto done;
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
