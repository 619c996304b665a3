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

hid_t spruce__h5_vlen_string_type(void)
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
    hid_t t = spruce__h5_vlen_string_type();
    int ok;
    if (t < 0)
        return 0;
    ok = spruce__h5_put_attr(obj, key, t, &value);
    H5Tclose(t);
    return ok;
}

/* Read a scalar string attribute (variable or fixed length) into buf.
 * Returns 1 when read, 0 when absent, -1 when present but not a string. */
int spruce__h5_get_string(hid_t obj, const char *key, char *buf, size_t cap)
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
int spruce__h5_get_double(hid_t obj, const char *key, double *out)
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

