/* h5util.c: what the mask writer and reader share: HDF5 quietly, its error
 * stack as one message, the boolean and string types, attributes. */
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

/* HDF5 prints its error stack to stderr by default; a library must not print.
 * The setting is per thread in thread-safe builds, so every entry point calls
 * this. */
void spruce__h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

/* libhdf5 1.10 leaves a file whose H5Fclose failed (a full disk) half closed,
 * and its exit-time cleanup then crashes on it.  Every file the mask code
 * opens is closed explicitly, so that cleanup is not needed: ask HDF5 not to
 * install it.  This only takes effect before HDF5's first call in the
 * process, so it runs when the library is loaded. */
__attribute__((constructor)) static void no_atexit_cleanup(void) { H5dont_atexit(); }

static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *data)
{
    char *buf = data;
    (void)n;
    if (buf[0] == '\0' && e->desc && e->desc[0])
        snprintf(buf, 256, "%s", e->desc);
    return 0;
}

/* The innermost message on HDF5's error stack ("" when empty), then clear it. */
const char *spruce__h5_msg(void)
{
    static _Thread_local char buf[256];
    buf[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, buf);
    H5Eclear2(H5E_DEFAULT);
    return buf;
}

/* What the system said when HDF5's innermost error carries an errno ("No
 * space left on device"), else that error's description, without the
 * time, descriptor and buffer details HDF5 adds; then clear the stack. */
const char *spruce__h5_sys_msg(void)
{
    static _Thread_local char out[256];
    const char *m = spruce__h5_msg(), *p = strstr(m, "errno = ");
    size_t n;
    if (p) {
        int e = atoi(p + 8);
        if (e > 0) {
            snprintf(out, sizeof out, "%s", strerror(e));
            return out;
        }
    }
    /* "file write failed: time = ..., filename = ...": the words before the details */
    n = strcspn(m, ",\n");
    if ((p = strstr(m, ": time = ")) && (size_t)(p - m) < n)
        n = (size_t)(p - m);
    snprintf(out, sizeof out, "%.*s", (int)n, m);
    return out;
}

/* The element type: h5py's numpy bool, an enum over int8 {FALSE = 0, TRUE = 1}. */
hid_t spruce__h5_bool_type(void)
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

/* A fixed-length UTF-8 string type of n bytes, NUL-terminated.  Mask files
 * store strings fixed-length: HDF5 1.10 reads variable-length strings through
 * the global heap without checking the lengths it finds there, and a damaged
 * heap then overflows the reader's buffers. */
hid_t spruce__h5_fixed_string_type(size_t n)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0)
        return t;
    if (H5Tset_size(t, n) < 0 || H5Tset_strpad(t, H5T_STR_NULLTERM) < 0 ||
        H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

/* Write a scalar attribute on obj, replacing one of the same name. */
int spruce__h5_put_attr(hid_t obj, const char *key, hid_t type, const void *value)
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

int spruce__h5_put_string(hid_t obj, const char *key, const char *value)
{
    hid_t t = spruce__h5_fixed_string_type(strlen(value) + 1);
    int ok;
    if (t < 0)
        return 0;
    ok = spruce__h5_put_attr(obj, key, t, value);
    H5Tclose(t);
    return ok;
}

/* Open attribute key of obj and check that it holds one element: the
 * attribute, its type and its dataspace, or *why says what is wrong. */
static hid_t open_scalar(hid_t obj, const char *key, hid_t *type, const char **why)
{
    hid_t attr = H5Aopen(obj, key, H5P_DEFAULT), space = -1;
    hssize_t npoints;
    *type = -1;
    if (attr < 0) {
        *why = "cannot be opened (damaged attribute message)";
        return -1;
    }
    *type = H5Aget_type(attr);
    space = H5Aget_space(attr);
    if (*type < 0 || space < 0) {
        *why = "has an unreadable type or dataspace";
        goto fail;
    }
    npoints = H5Sget_simple_extent_npoints(space);
    H5Sclose(space);
    space = -1;
    if (npoints != 1) {
        *why = "is not a single value (scalar)";
        goto fail;
    }
    return attr;
fail:
    if (space >= 0)
        H5Sclose(space);
    if (*type >= 0)
        H5Tclose(*type);
    *type = -1;
    H5Aclose(attr);
    return -1;
}

/* Read a scalar fixed-length string attribute into buf (cap bytes, always
 * terminated).  Returns 1 when read, 0 when absent, -1 when it is present but
 * not what mask files hold, with *why saying what it is instead: not a
 * string, a variable-length string (never read: see above), a character set
 * other than ASCII and UTF-8, or longer than cap - 1 bytes. */
int spruce__h5_get_string(hid_t obj, const char *key, char *buf, size_t cap, const char **why)
{
    hid_t attr = -1, ftype = -1, mtype = -1;
    char *tmp = NULL;
    size_t n;
    int rc = -1;
    htri_t ex = H5Aexists(obj, key);
    H5T_cset_t cset;
    buf[0] = '\0';
    *why = "";
    if (ex == 0)
        return 0;
    if (ex < 0) {
        *why = "cannot be looked up (damaged attribute messages)";
        return -1;
    }
    attr = open_scalar(obj, key, &ftype, why);
    if (attr < 0)
        return -1;
    if (H5Tget_class(ftype) != H5T_STRING) {
        *why = "is not a string";
        goto done;
    }
    if (H5Tis_variable_str(ftype) != 0) {
        *why = "is a variable-length string";
        goto done;
    }
    cset = H5Tget_cset(ftype);
    if (cset != H5T_CSET_ASCII && cset != H5T_CSET_UTF8) {
        *why = "is a string in an unknown character set";
        goto done;
    }
    n = H5Tget_size(ftype);
    if (n == 0 || n > SPRUCE_H5_MAX_STRING) {
        *why = "is a string of an impossible size";
        goto done;
    }
    /* Read into a buffer of the size the type says, plus a terminator. */
    tmp = malloc(n + 1);
    mtype = spruce__h5_fixed_string_type(n + 1);
    if (!tmp || mtype < 0 || H5Tset_cset(mtype, cset) < 0 || H5Aread(attr, mtype, tmp) < 0) {
        *why = tmp ? "cannot be read" : "cannot be read: out of memory";
        goto done;
    }
    tmp[n] = '\0';
    if (strlen(tmp) >= cap) {
        *why = "is longer than this field can be";
        goto done;
    }
    memcpy(buf, tmp, strlen(tmp) + 1);
    rc = 1;
done:
    free(tmp);
    if (mtype >= 0)
        H5Tclose(mtype);
    H5Tclose(ftype);
    H5Aclose(attr);
    return rc;
}

/* Read a scalar numeric attribute (an integer or a float of at most 8
 * bytes) as double, or as int64 when i is not NULL and it is an integer.
 * 1 read, 0 absent, -1 present but not that (*why says what is wrong). */
int spruce__h5_get_number(hid_t obj, const char *key, double *d, int64_t *i, const char **why)
{
    hid_t attr = -1, ftype = -1;
    int rc = -1;
    size_t n;
    H5T_class_t cls;
    htri_t ex = H5Aexists(obj, key);
    *why = "";
    if (ex == 0)
        return 0;
    if (ex < 0) {
        *why = "cannot be looked up (damaged attribute messages)";
        return -1;
    }
    attr = open_scalar(obj, key, &ftype, why);
    if (attr < 0)
        return -1;
    cls = H5Tget_class(ftype);
    n = H5Tget_size(ftype);
    if ((cls != H5T_FLOAT && cls != H5T_INTEGER) || n == 0 || n > 8 ||
        (cls == H5T_FLOAT && n != 4 && n != 8)) {
        *why = i ? "is not an integer" : "is not a number";
        goto done;
    }
    if (i && cls != H5T_INTEGER) {
        *why = "is not an integer";
        goto done;
    }
    if (i ? H5Aread(attr, H5T_NATIVE_INT64, i) < 0 : H5Aread(attr, H5T_NATIVE_DOUBLE, d) < 0) {
        *why = "cannot be read";
        goto done;
    }
    if (i)
        *d = (double)*i;
    rc = 1;
done:
    H5Tclose(ftype);
    H5Aclose(attr);
    return rc;
}

char *spruce__h5_dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* A dataset name must be a single HDF5 link name at the root. */
int spruce__h5_bad_name(const char *name)
{
    return !name || !*name || strchr(name, '/') || !strcmp(name, ".");
}


/* ---- checking object headers before HDF5 decodes them ---------------------
 *
 * HDF5 1.10 decodes every attribute message of an object header whenever one
 * attribute is looked up, and a damaged message (a data size beyond the
 * message, a bad datatype version) then reads past its buffers or crashes in
 * its own clean-up.  So the reader first walks the object headers itself, in
 * the layout mask files use (superblock 0 or 1 at offset 0 with 8-byte
 * addresses and lengths, version 1 object headers and their continuation
 * chunks, attributes stored in the header), and checks that each attribute
 * message holds what it says before HDF5 sees it.  The layout is the HDF5
 * File Format Specification's, version 2 (sections III.A, IV.A.1.a, IV.A.2.b,
 * IV.A.2.d, IV.A.2.m, IV.A.2.q). */

#define MAX_CHUNKS 4096 /* a root header holds a link message per mask */
#define MAX_CHUNK_BYTES (1u << 20)

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    int k;
    for (k = n - 1; k >= 0; k--)
        v = v << 8 | p[k];
    return v;
}

static size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }

/* The superblock mask files have: at offset 0, version 0 or 1, 8-byte
 * addresses and lengths, no base address offset.  *root is the root group's
 * object header address, from the root's symbol table entry (III.A.1), so
 * that the root header is checked before HDF5 decodes it. */
int spruce__h5_check_superblock(int fd, uint64_t *root, const char **why)
{
    uint8_t sb[96];
    struct stat st;
    size_t base;
    static const uint8_t sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    if (pread(fd, sb, sizeof sb, 0) != (ssize_t)sizeof sb || memcmp(sb, sig, 8)) {
        *why = "no HDF5 signature at offset 0 (a user block is not the layout of mask files)";
        return -1;
    }
    if (sb[8] > 1) {
        *why = "superblock version is not 0 or 1 (not the layout mask files use)";
        return -1;
    }
    if (sb[13] != 8 || sb[14] != 8) {
        *why = "file addresses or lengths are not 8 bytes (not the layout mask files use)";
        return -1;
    }
    base = sb[8] == 0 ? 24 : 28; /* version 1 adds the indexed storage K and 2 reserved bytes */
    if (get_le(sb + base, 8) != 0) {
        *why = "the superblock's base address is not 0";
        return -1;
    }
    /* base address, free-space, end-of-file and driver addresses, then the
     * root entry: link name offset, object header address */
    *root = get_le(sb + base + 32 + 8, 8);
    /* HDF5 bounds every address by the end-of-file address the superblock
     * records, and fails (leaking what it had decoded) on one beyond it; the
     * checks here bound them by the file's size, so the two must agree. */
    if (fstat(fd, &st) < 0 || get_le(sb + base + 16, 8) != (uint64_t)st.st_size) {
        *why = "the superblock's end-of-file address is not the file's size (truncated, "
               "extended or damaged)";
        return -1;
    }
    if (*root > (uint64_t)st.st_size) {
        *why = "the root group's object header lies beyond the end of the file";
        return -1;
    }
    return 0;
}

/* A datatype message: its class, the size of one element as stored in an
 * attribute, or -1 when it is not a type mask file attributes have. */
static int check_dtype(const uint8_t *p, size_t n, size_t *esize, const char **why)
{
    unsigned cls, ver;
    uint64_t size;
    if (n < 8) {
        *why = "its datatype is cut short";
        return -1;
    }
    cls = p[0] & 0x0f;
    ver = p[0] >> 4;
    size = get_le(p + 4, 4);
    if (ver < 1 || ver > 3) {
        *why = "its datatype has an unknown version";
        return -1;
    }
    switch (cls) {
    case 0: /* fixed-point: offset, precision */
        if (n < 12 || (size != 1 && size != 2 && size != 4 && size != 8)) {
            *why = "its integer type is damaged";
            return -1;
        }
        break;
    case 1: /* floating-point: offset, precision, exponent and mantissa fields */
        if (n < 20 || (size != 4 && size != 8)) {
            *why = "its floating-point type is damaged";
            return -1;
        }
        break;
    case 3: /* string */
        if (size == 0 || size > SPRUCE_H5_MAX_STRING) {
            *why = "its string type has an impossible size";
            return -1;
        }
        break;
    case 9: /* variable-length (a string, in files spruce wrote before): a global heap id */
        if (n < 16) {
            *why = "its variable-length type is cut short";
            return -1;
        }
        size = 4 + 8 + 4;
        break;
    default:
        *why = "its type is not a number or a string";
        return -1;
    }
    *esize = (size_t)size;
    return 0;
}

/* A dataspace message: the number of elements, or -1. */
static int check_dspace(const uint8_t *p, size_t n, uint64_t *npoints, const char **why)
{
    unsigned ver, rank, flags, k;
    size_t hdr;
    uint64_t np = 1;
    if (n < 4) {
        *why = "its dataspace is cut short";
        return -1;
    }
    ver = p[0];
    rank = p[1];
    flags = p[2];
    if ((ver != 1 && ver != 2) || rank > 32) {
        *why = "its dataspace has an unknown version or rank";
        return -1;
    }
    hdr = ver == 1 ? 8 : 4;
    if (n < hdr + (size_t)rank * 8 * ((flags & 1) ? 2 : 1)) {
        *why = "its dataspace is cut short";
        return -1;
    }
    if (ver == 2 && p[3] == 2)
        np = 0; /* null dataspace */
    for (k = 0; k < rank; k++) {
        uint64_t d = get_le(p + hdr + 8 * k, 8);
        if (d && np > UINT64_MAX / d) {
            *why = "its dataspace is impossibly large";
            return -1;
        }
        np *= d;
    }
    *npoints = np;
    return 0;
}

/* The datatype message of a mask dataset (IV.A.2.d): an enumeration of two
 * members over a one-byte integer, names and values inside the message. */
static int check_mask_dtype(const uint8_t *p, size_t n, const char **why)
{
    unsigned ver, k, nmemb;
    size_t off = 20;
    static const char *const found[] = {
        "its element type is an integer, expected the boolean enum (FALSE=0, TRUE=1, one byte)",
        "its element type is a float, expected the boolean enum (FALSE=0, TRUE=1, one byte)",
        "its element type is not the boolean enum (FALSE=0, TRUE=1, one byte)"};
    unsigned cls = n ? p[0] & 0x0f : 15;
    *why = found[cls < 2 ? cls : 2];
    if (n < 20 || cls != 8 || get_le(p + 4, 4) != 1)
        return -1;
    *why = found[2];
    ver = p[0] >> 4;
    nmemb = (unsigned)get_le(p + 1, 2);
    if (ver < 1 || ver > 3 || nmemb != 2 || (p[8] & 0x0f) != 0 || get_le(p + 12, 4) != 1)
        return -1;
    for (k = 0; k < nmemb; k++) { /* names, NUL-terminated, padded to 8 before version 3 */
        const uint8_t *z = memchr(p + off, '\0', n - off);
        if (!z)
            return -1;
        off += (size_t)(z - (p + off)) + 1;
        if (ver < 3)
            off = pad8(off - 20) + 20;
        if (off > n)
            return -1;
    }
    return n - off >= nmemb ? 0 : -1;
}

/* One attribute message (IV.A.2.m), versions 1 to 3: name, datatype,
 * dataspace and data all inside the message, the name's length as stored. */
static int check_attr_msg(const uint8_t *p, size_t n, char *name, size_t cap, const char **why)
{
    unsigned ver;
    size_t nlen, dlen, slen, off, esize;
    uint64_t npoints;
    name[0] = '\0';
    if (n < 8) {
        *why = "an attribute message is cut short";
        return -1;
    }
    ver = p[0];
    nlen = (size_t)get_le(p + 2, 2);
    dlen = (size_t)get_le(p + 4, 2);
    slen = (size_t)get_le(p + 6, 2);
    if (ver < 1 || ver > 3) {
        *why = "an attribute message has an unknown version";
        return -1;
    }
    if (ver >= 2 && (p[1] & 3)) {
        *why = "an attribute has a shared datatype or dataspace (not in mask files)";
        return -1;
    }
    off = ver == 3 ? 9 : 8;
    if (nlen == 0 || off + nlen > n || p[off + nlen - 1] != '\0' ||
        strlen((const char *)p + off) + 1 != nlen) {
        *why = "an attribute name does not match its stored length";
        return -1;
    }
    snprintf(name, cap, "%s", (const char *)p + off);
    off += ver == 1 ? pad8(nlen) : nlen;
    if (off > n || dlen > n - off || check_dtype(p + off, dlen, &esize, why) < 0) {
        if (off > n || dlen > n - off)
            *why = "its datatype runs past the message";
        return -1;
    }
    off += ver == 1 ? pad8(dlen) : dlen;
    if (off > n || slen > n - off || check_dspace(p + off, slen, &npoints, why) < 0) {
        if (off > n || slen > n - off)
            *why = "its dataspace runs past the message";
        return -1;
    }
    off += ver == 1 ? pad8(slen) : slen;
    if (off > n || (npoints && esize > (n - off) / npoints)) {
        *why = "its data runs past the message";
        return -1;
    }
    return 0;
}

/* A link message (IV.A.2.g): flags, optional type, creation order and
 * character set, the name's length and the name, then the target (an
 * address, or a length and value for soft and external links), all inside
 * the message.  HDF5 1.10 frees memory it never set when it fails to decode
 * one, so a damaged length must not reach it. */
static int check_link_msg(const uint8_t *p, size_t n, const char **why)
{
    unsigned flags;
    size_t off = 2, lsize, nlen, type = 0;
    *why = "a link message is damaged";
    if (n < 2 || p[0] != 1)
        return -1;
    flags = p[1];
    if (flags & 0xe0)
        return -1;
    if (flags & 0x08) {
        if (off + 1 > n)
            return -1;
        type = p[off++];
        if (type != 0 && type != 1 && type != 64)
            return -1;
    }
    if (flags & 0x04)
        off += 8;
    if (flags & 0x10)
        off += 1;
    lsize = (size_t)1 << (flags & 3);
    if (off + lsize > n)
        return -1;
    nlen = (size_t)get_le(p + off, (int)lsize);
    off += lsize;
    if (nlen == 0 || nlen > n - off)
        return -1;
    off += nlen;
    if (type == 0)
        return n - off >= 8 ? 0 : -1;
    if (n - off < 2)
        return -1;
    return (size_t)get_le(p + off, 2) <= n - off - 2 ? 0 : -1;
}

/* The messages HDF5 decodes when it opens a dataset, in the versions the
 * writer produces: HDF5 1.10 keeps (and leaks) what it decoded before a later
 * message fails, so each is checked first. */

/* Fill value (IV.A.2.f, versions 1 to 3): the value's size inside the message. */
static int check_fill_msg(const uint8_t *p, size_t n, const char **why)
{
    *why = "its fill value message is damaged";
    if (n < 1)
        return -1;
    switch (p[0]) {
    case 1:
        return n >= 8 && get_le(p + 4, 4) <= n - 8 ? 0 : -1;
    case 2:
        if (n < 4)
            return -1;
        return !p[3] || (n >= 8 && get_le(p + 4, 4) <= n - 8) ? 0 : -1;
    case 3:
        if (n < 2)
            return -1;
        return !(p[1] & 0x20) || (n >= 6 && get_le(p + 2, 4) <= n - 6) ? 0 : -1;
    default:
        return -1;
    }
}

/* Filter pipeline (IV.A.2.l, versions 1 and 2): every filter's name and
 * client values inside the message. */
static int check_pline_msg(const uint8_t *p, size_t n, const char **why)
{
    unsigned ver, nf, k;
    size_t off;
    *why = "its filter pipeline message is damaged";
    if (n < 2)
        return -1;
    ver = p[0];
    nf = p[1];
    if ((ver != 1 && ver != 2) || nf > 32)
        return -1;
    off = ver == 1 ? 8 : 2;
    for (k = 0; k < nf; k++) {
        unsigned id;
        size_t nlen = 0, nv;
        if (off + 2 > n)
            return -1;
        id = (unsigned)get_le(p + off, 2);
        off += 2;
        if (ver == 1 || id >= 256) {
            if (off + 2 > n)
                return -1;
            nlen = (size_t)get_le(p + off, 2);
            off += 2;
        }
        if (off + 4 > n)
            return -1;
        nv = (size_t)get_le(p + off + 2, 2);
        off += 4;
        if (ver == 1)
            nlen = pad8(nlen);
        if (nlen > n - off)
            return -1;
        off += nlen;
        if (nv > (n - off) / 4)
            return -1;
        off += 4 * nv + (ver == 1 && (nv & 1) ? 4 : 0);
        if (off > n)
            return -1;
    }
    return 0;
}

/* Data layout (IV.A.2.i), version 3 as the writer produces: contiguous or
 * chunked storage inside the file, chunks of rank 2 (plus the element size)
 * with no zero dimension.  Compact storage is refused. */
static int check_layout_msg(const uint8_t *p, size_t n, uint64_t fsize, uint64_t *btree,
                            uint64_t cdim[2], const char **why)
{
    uint64_t a, len;
    unsigned k, rank;
    *why = "its data layout message is damaged";
    if (n < 2)
        return -1;
    if (p[0] != 3) {
        *why = "its data layout message is not version 3 (the layout mask files use)";
        return -1;
    }
    switch (p[1]) {
    case 0: /* compact: HDF5 1.10 copies the dataspace's size out of the message unchecked */
        *why = "its data is stored compact (not the layout mask files use)";
        return -1;
    case 1: /* contiguous */
        if (n < 18)
            return -1;
        a = get_le(p + 2, 8);
        len = get_le(p + 10, 8);
        if (a == UINT64_MAX)
            return 0;
        if (a > fsize || len > fsize - a) {
            *why = "its data lies beyond the end of the file";
            return -1;
        }
        return 0;
    case 2: /* chunked: rank + 1 dimensions, the last the element size */
        if (n < 11)
            return -1;
        rank = p[2];
        if (rank != 3 || n < 11 + 4 * (size_t)rank)
            return -1;
        a = get_le(p + 3, 8);
        *btree = a;
        cdim[0] = get_le(p + 11, 4);
        cdim[1] = get_le(p + 15, 4);
        if (a != UINT64_MAX && (a > fsize || fsize - a < 24)) {
            *why = "its chunk index lies beyond the end of the file";
            return -1;
        }
        /* one-byte elements, at most 64 MiB a chunk (HDF5 fails on a chunk
         * of 4 GiB or more and leaks what it decoded before) */
        for (k = 0, len = 1; k < rank; k++) {
            uint64_t d = get_le(p + 11 + 4 * k, 4);
            if (d == 0 || (k == rank - 1 && d != 1) || d > (64u << 20) / len) {
                *why = "its chunks are not of one-byte elements or larger than 64 MiB";
                return -1;
            }
            len *= d;
        }
        return 0;
    default:
        *why = "its storage layout is not contiguous or chunked";
        return -1;
    }
}

/* The message types a dataset's header may hold in a mask file: nil,
 * dataspace, datatype, fill value (old and new), layout, filter pipeline,
 * attribute, comment, modification time (old and new), continuation, object
 * reference count. */
static int dataset_msg(unsigned type)
{
    switch (type) {
    case 0x00: case 0x01: case 0x03: case 0x04: case 0x05: case 0x08: case 0x0b: case 0x0c:
    case 0x0d: case 0x0e: case 0x10: case 0x12: case 0x16:
        return 1;
    default:
        return 0;
    }
}

/* Link info (IV.A.2.c): no fractal heap and no indexes, i.e. the links are
 * link messages in the header, where they are checked.  HDF5 1.10 frees
 * memory it never set when a link message fails to decode, and would decode
 * dense links from a fractal heap the reader does not check. */
static int check_linfo_msg(const uint8_t *p, size_t n, const char **why)
{
    size_t o;
    *why = "its link info message is damaged";
    if (n < 2 || p[0] != 0 || (p[1] & ~3u))
        return -1;
    o = 2 + ((p[1] & 1) ? 8 : 0);
    if (n < o + 16 + ((p[1] & 2) ? 8 : 0))
        return -1;
    if (get_le(p + o, 8) != UINT64_MAX || get_le(p + o + 8, 8) != UINT64_MAX ||
        ((p[1] & 2) && get_le(p + o + 16, 8) != UINT64_MAX)) {
        *why = "its links are in dense storage or its link info is damaged (mask files keep "
               "their links in the root group's header)";
        return -1;
    }
    return 0;
}

/* Does [a, a + n) overlap the header prefix at addr or one of the chunks? */
static int overlaps(uint64_t a, uint64_t n, uint64_t addr, const uint64_t *caddr,
                    const uint64_t *clen, int nchunks)
{
    int k;
    if (a > UINT64_MAX - n)
        return 1;
    if (a < addr + 16 && addr < a + n)
        return 1;
    for (k = 0; k < nchunks; k++)
        if (a < caddr[k] + clen[k] && caddr[k] < a + n)
            return 1;
    return 0;
}

/* Walk the version 1 object header at addr (IV.A.1.a) and its continuation
 * chunks, checking every attribute message and dataspace message, and when
 * mask_dataset the datatype message (the boolean enum).  Calls each(name, data) for each
 * attribute (each may be NULL).  On failure *why says what is wrong and
 * attr names the attribute when known. */
int spruce__h5_check_header(int fd, uint64_t addr, int mask_dataset,
                            int (*each)(const char *, void *), void *data, char *attr,
                            size_t attrcap, const char **why)
{
    uint64_t npoints;
    struct stat sb;
    uint64_t *caddr = malloc(2 * MAX_CHUNKS * sizeof *caddr), *clen = caddr + MAX_CHUNKS;
    uint8_t hdr[16], *buf = NULL;
    int nchunks = 1, c, rc = -1, pline = 0, chunked = 0, layout = 0, dtype = 0, other = 0;
    int dspace = 0;
    uint64_t btree = UINT64_MAX, cdim[2] = {0, 0}, dims[2] = {0, 0};
    unsigned nfilters = 0;
    attr[0] = '\0';
    if (!caddr || fstat(fd, &sb) < 0) {
        *why = caddr ? "cannot be examined" : "out of memory";
        free(caddr);
        return -1;
    }
    if (addr > (uint64_t)sb.st_size || (uint64_t)sb.st_size - addr < 16 ||
        pread(fd, hdr, 16, (off_t)addr) != 16) {
        *why = "its object header lies beyond the end of the file";
        free(caddr);
        return -1;
    }
    if (hdr[0] != 1) {
        *why = memcmp(hdr, "OHDR", 4) ? "its object header is damaged"
                                      : "its object header is version 2 (mask files use version 1)";
        free(caddr);
        return -1;
    }
    caddr[0] = addr + 16;
    clen[0] = get_le(hdr + 8, 4);
    for (c = 0; c < nchunks; c++) {
        size_t off = 0, len = (size_t)clen[c];
        if (clen[c] > MAX_CHUNK_BYTES || caddr[c] > (uint64_t)sb.st_size ||
            clen[c] > (uint64_t)sb.st_size - caddr[c]) {
            *why = "its object header runs past the end of the file";
            goto done;
        }
        free(buf);
        buf = malloc(len ? len : 1);
        if (!buf || pread(fd, buf, len, (off_t)caddr[c]) != (ssize_t)len) {
            *why = buf ? "its object header cannot be read" : "out of memory";
            goto done;
        }
        while (len - off >= 8) {
            unsigned type = (unsigned)get_le(buf + off, 2), flags = buf[off + 4];
            size_t msize = (size_t)get_le(buf + off + 2, 2);
            const uint8_t *m = buf + off + 8;
            if (msize > len - off - 8) {
                *why = "an object header message runs past its chunk";
                goto done;
            }
            if (type == 0x10) { /* continuation: address and length of the next chunk */
                if (msize < 16 || nchunks == MAX_CHUNKS) {
                    *why = msize < 16 ? "a continuation message is cut short"
                                      : "its object header has too many chunks";
                    goto done;
                }
                caddr[nchunks] = get_le(m, 8);
                clen[nchunks] = get_le(m + 8, 8);
                /* HDF5's metadata cache fails (and leaks) on a chunk that
                 * overlaps the superblock, the header or another chunk. */
                if (clen[nchunks] < 8 || caddr[nchunks] < 96 ||
                    overlaps(caddr[nchunks], clen[nchunks], addr, caddr, clen, nchunks)) {
                    *why = "a continuation chunk overlaps the superblock or the header";
                    goto done;
                }
                nchunks++;
            } else if (type == 0x0c) {
                if (flags & 2) {
                    *why = "an attribute is stored as a shared message (not in mask files)";
                    goto done;
                }
                if (check_attr_msg(m, msize, attr, attrcap, why) < 0)
                    goto done;
                if (each && each(attr, data) < 0) {
                    *why = "out of memory";
                    goto done;
                }
                attr[0] = '\0';
            } else if (type == 0x03 && mask_dataset && (dtype = 1) &&
                       check_mask_dtype(m, msize, why) < 0) {
                goto done;
            } else if (type == 0x01 && check_dspace(m, msize, &npoints, why) < 0) {
                goto done;
            } else if (type == 0x01 && mask_dataset && dspace++) {
                *why = "its object header holds two dataspace messages";
                goto done;
            } else if (type == 0x01 && mask_dataset) {
                if (m[1] == 2) { /* rank 2: the dimensions follow the version's header */
                    dims[0] = get_le(m + (m[0] == 1 ? 8 : 4), 8);
                    dims[1] = get_le(m + (m[0] == 1 ? 16 : 12), 8);
                }
            } else if (type == 0x02 && check_linfo_msg(m, msize, why) < 0) {
                goto done;
            } else if (type == 0x06 && check_link_msg(m, msize, why) < 0) {
                goto done;
            } else if (type == 0x04 && (msize < 4 || get_le(m, 4) > msize - 4)) {
                *why = "its fill value message is damaged";
                goto done;
            } else if (type == 0x05 && check_fill_msg(m, msize, why) < 0) {
                goto done;
            } else if (type == 0x0b && pline++) {
                *why = "its object header holds two filter pipeline messages";
                goto done;
            } else if (type == 0x0b && ((nfilters = m[1]), check_pline_msg(m, msize, why) < 0)) {
                goto done;
            } else if (type == 0x08 && layout++) {
                *why = "its object header holds two data layout messages";
                goto done;
            } else if (type == 0x08 && ((chunked = msize >= 2 && m[1] == 2), 1) &&
                       check_layout_msg(m, msize, (uint64_t)sb.st_size, &btree, cdim, why) < 0) {
                goto done;
            } else if (type == 0x15) { /* attribute info: attributes in a fractal heap */
                *why = "its attributes are in dense storage (mask files keep them in the header)";
                goto done;
            } else if (!dataset_msg(type)) {
                /* HDF5 skips message types it does not know: a damaged type
                 * would silently drop, say, the filter pipeline, and 1.10 then
                 * copies a whole chunk's size out of a shorter stored chunk;
                 * others (external files) it leaks on when they are damaged.
                 * Refused below when this is a dataset (it has a layout). */
                other = 1;
            }
            off += 8 + msize;
        }
    }
    /* A header with a datatype is a dataset to HDF5 (groups have none). */
    if (mask_dataset && dtype && (other || !layout)) {
        *why = other ? "its object header holds a message of a type mask datasets do not have"
                     : "it has no data layout message";
        goto done;
    }
    if (mask_dataset && chunked && !pline) {
        /* HDF5 1.10 copies a whole chunk out of an unfiltered chunk however
         * short its index says it is */
        *why = "its chunks are not filtered (mask files store their chunks deflated)";
        goto done;
    }
    /* HDF5 allocates the size a chunk record claims before reading it: the
     * chunk index is checked against the file and the declared shape first. */
    if (mask_dataset && dtype && chunked && dims[0] && dims[1] &&
        (cdim[0] > dims[0] || cdim[1] > dims[1])) {
        *why = "its chunks are larger than the dataset (not what the writer writes)";
        goto done;
    }
    if (mask_dataset && dtype && chunked && dims[0] && dims[1] &&
        spruce__h5_check_chunk_index(fd, btree, dims[0], dims[1], cdim[0], cdim[1], nfilters,
                                     why) < 0)
        goto done;
    rc = 0;
done:
    free(buf);
    free(caddr);
    return rc;
}
