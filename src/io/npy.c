/* npy.c: reading and writing 2-D float32 .npy files.
 *
 * Layout (numpy format versions 1.0, 2.0, 3.0):
 *   "\x93NUMPY" major minor, header length (uint16 LE for 1.x, uint32 LE else),
 *   an ASCII dict {'descr': '<f4', 'fortran_order': False, 'shape': (R, C), }
 *   padded with spaces and '\n' so that the data starts at a multiple of 64. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "npy.h"
#include "spruce_error.h"
#include "spruce_files.h"

#define NPY_MAX_HEADER (1u << 20)

/* One "key: value" of the header dict: the key and the value's text span. */
typedef struct {
    const char *v;
    size_t vlen;
} npy_value;

static const char *skip_space(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* Print a value for a message: at most 40 characters, control bytes as '?'. */
static void value_text(const npy_value *x, char *out, size_t cap)
{
    size_t i, n = x->vlen < 40 ? x->vlen : 40;
    if (n >= cap)
        n = cap - 1;
    for (i = 0; i < n; i++)
        out[i] = x->v[i] >= 0x20 && x->v[i] < 0x7f ? x->v[i] : '?';
    if (n < x->vlen && n >= 3)
        memcpy(out + n - 3, "...", 3);
    out[n] = '\0';
}

/* Split the dict {'descr': V, 'fortran_order': V, 'shape': V} (in any order, a
 * trailing comma allowed, then only padding) into its three values; refuse
 * other keys and a key given twice, as numpy does. */
static int split_dict(const char *path, const char *hdr, size_t len, npy_value vals[3])
{
    static const char *const keys[3] = {"descr", "fortran_order", "shape"};
    const char *p = hdr, *end = hdr + len;
    int k;
    memset(vals, 0, 3 * sizeof *vals);
    p = skip_space(p, end);
    if (p == end || *p != '{')
        return spruce__seterr(SPRUCE_EFORMAT, "%s: expected the .npy header to be a dict '{...}'", path);
    p++;
    for (;;) {
        const char *key, *v;
        char q;
        size_t klen;
        int depth = 0;
        p = skip_space(p, end);
        if (p < end && *p == '}')
            break;
        if (p == end || (*p != '\'' && *p != '"'))
            return spruce__seterr(SPRUCE_EFORMAT, "%s: .npy header: expected a quoted key at byte %zu",
                                  path, (size_t)(p - hdr));
        q = *p++;
        key = p;
        while (p < end && *p != q)
            p++;
        if (p == end)
            return spruce__seterr(SPRUCE_EFORMAT, "%s: .npy header: unterminated key", path);
        klen = (size_t)(p - key);
        p = skip_space(p + 1, end);
        if (p == end || *p != ':')
            return spruce__seterr(SPRUCE_EFORMAT, "%s: .npy header: expected ':' after key '%.*s'", path,
                                  klen > 32 ? 32 : (int)klen, key);
        p = skip_space(p + 1, end);
        v = p;
        /* the value: a quoted string, a parenthesised tuple or a bare word */
        if (p < end && (*p == '\'' || *p == '"')) {
            q = *p++;
            while (p < end && *p != q)
                p++;
            if (p == end)
                return spruce__seterr(SPRUCE_EFORMAT, "%s: .npy header: unterminated string", path);
            p++;
        } else {
            while (p < end && (depth > 0 || (*p != ',' && *p != '}'))) {
                depth += *p == '(' ? 1 : *p == ')' ? -1 : 0;
                if (depth < 0)
                    break;
                p++;
            }
        }
        for (k = 0; k < 3; k++)
            if (strlen(keys[k]) == klen && !memcmp(keys[k], key, klen))
                break;
        if (k == 3)
            return spruce__seterr(SPRUCE_EFORMAT,
                                  "%s: .npy header: unexpected key '%.*s' (expected descr, fortran_order, shape)",
                                  path, klen > 32 ? 32 : (int)klen, key);
        if (vals[k].v)
            return spruce__seterr(SPRUCE_EFORMAT, "%s: .npy header: duplicate key '%s'", path, keys[k]);
        vals[k].v = v;
        vals[k].vlen = (size_t)(p - v);
        while (vals[k].vlen && strchr(" \t\r\n", v[vals[k].vlen - 1]))
            vals[k].vlen--;
        p = skip_space(p, end);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == '}')
            break;
        return spruce__seterr(SPRUCE_EFORMAT, "%s: .npy header: expected ',' or '}' after '%s'", path,
                              keys[k]);
    }
    p = skip_space(p + 1, end);
    while (p < end && *p == '\0') /* some writers pad with NUL */
        p++;
    if (p != end)
        return spruce__seterr(SPRUCE_EFORMAT, "%s: .npy header: unexpected text after the dict", path);
    for (k = 0; k < 3; k++)
        if (!vals[k].v)
            return spruce__seterr(SPRUCE_EFORMAT, "%s: .npy header lacks '%s'", path, keys[k]);
    return 0;
}

/* The dict's text: len bytes from hdr (need not be NUL-terminated). */
static int parse_header(const char *path, const char *hdr, size_t len, int64_t *rows, int64_t *cols)
{
    npy_value v[3];
    char found[48];
    long long r = 0, c = 0;
    const char *p, *end;
    int rc, n = 0;
    if ((rc = split_dict(path, hdr, len, v)))
        return rc;
    if (!(v[0].vlen == 5 && (!memcmp(v[0].v, "'<f4'", 5) || !memcmp(v[0].v, "\"<f4\"", 5)))) {
        value_text(&v[0], found, sizeof found);
        return spruce__seterr(SPRUCE_EDTYPE, "%s: expected dtype '<f4' (float32), found %s", path, found);
    }
    if (!(v[1].vlen == 5 && !memcmp(v[1].v, "False", 5))) {
        value_text(&v[1], found, sizeof found);
        return spruce__seterr(SPRUCE_EFORMAT, "%s: expected fortran_order False (C order), found %s", path,
                              found);
    }
    /* shape: "(R, C)" with optional spaces and a trailing comma */
    p = v[2].v;
    end = v[2].v + v[2].vlen;
    if (p < end && *p == '(') {
        long long d[3];
        for (p++, n = 0; n < 3;) {
            p = skip_space(p, end);
            if (p < end && *p == ')')
                break;
            if (p == end || *p < '0' || *p > '9')
                break;
            for (d[n] = 0; p < end && *p >= '0' && *p <= '9'; p++)
                d[n] = d[n] > (1LL << 40) ? d[n] : d[n] * 10 + (*p - '0');
            n++;
            p = skip_space(p, end);
            if (p < end && *p == ',')
                p++;
            else
                break;
        }
        p = skip_space(p, end);
        if (n == 2 && p + 1 == end && *p == ')') {
            r = d[0];
            c = d[1];
        } else
            n = -1;
    } else
        n = -1;
    if (n != 2) {
        value_text(&v[2], found, sizeof found);
        return spruce__seterr(SPRUCE_ESHAPE, "%s: expected a 2-D shape (rows, cols), found %s", path,
                              found);
    }
    if (r <= 0 || c <= 0 || r > (1LL << 31) - 1 || c > (1LL << 31) - 1)
        return spruce__seterr(SPRUCE_ESHAPE, "%s: expected a non-empty 2-D shape, found (%lld, %lld)",
                              path, r, c);
    *rows = r;
    *cols = c;
    return 0;
}

int spruce__npy_parse_header(const char *path, const char *hdr, int64_t *rows, int64_t *cols)
{
    return parse_header(path, hdr, strlen(hdr), rows, cols);
}

/* The preamble and header at the start of a file of fsize bytes (buf holds
 * the first len of them): the shape and where the data starts, the data's
 * size checked against the file's. */
int spruce__npy_parse_prefix(const char *path, const unsigned char *buf, size_t len,
                             unsigned long long fsize, int64_t *rows, int64_t *cols, size_t *data_off)
{
    size_t hlen, pre_len;
    int64_t r, c;
    unsigned long long need;
    int rc;
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6))
        return spruce__seterr(SPRUCE_EFORMAT, "%s: not a .npy file (bad magic)", path);
    if (buf[6] == 1) {
        hlen = buf[8] | (size_t)buf[9] << 8;
        pre_len = 10;
    } else if (buf[6] == 2 || buf[6] == 3) {
        if (len < 12)
            return spruce__seterr(SPRUCE_EFORMAT, "%s: truncated .npy header", path);
        hlen = buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
        pre_len = 12;
    } else
        return spruce__seterr(SPRUCE_EFORMAT, "%s: unsupported .npy version %d.%d", path, buf[6], buf[7]);
    if (hlen == 0 || hlen > NPY_MAX_HEADER)
        return spruce__seterr(SPRUCE_EFORMAT, "%s: .npy header of %zu bytes (expected 1 to %u)", path,
                              hlen, NPY_MAX_HEADER);
    if (len < pre_len + hlen)
        return spruce__seterr(SPRUCE_EFORMAT, "%s: truncated .npy header (%zu bytes expected)", path, hlen);
    if ((rc = parse_header(path, (const char *)buf + pre_len, hlen, &r, &c)))
        return rc;
    need = (unsigned long long)(pre_len + hlen) + (unsigned long long)r * (unsigned long long)c * 4;
    if (fsize != need)
        return spruce__seterr(SPRUCE_EFORMAT,
                              "%s: shape (%lld, %lld) float32 needs %llu bytes, the file has %llu", path,
                              (long long)r, (long long)c, need, fsize);
    *rows = r;
    *cols = c;
    *data_off = pre_len + hlen;
    return 0;
}

int spruce__npy_parse(const char *path, const unsigned char *buf, size_t len, float **data,
                      int64_t *rows, int64_t *cols)
{
    int64_t r, c;
    size_t off;
    int rc;
    *data = NULL;
    if ((rc = spruce__npy_parse_prefix(path, buf, len, len, &r, &c, &off)))
        return rc;
    if (!(*data = malloc((size_t)r * (size_t)c * sizeof **data)))
        return spruce__seterr(SPRUCE_ENOMEM, "%s: (%lld, %lld) float32", path, (long long)r,
                              (long long)c);
    memcpy(*data, buf + off, (size_t)r * (size_t)c * sizeof **data);
    *rows = r;
    *cols = c;
    return 0;
}

int spruce__npy_read(const char *path, float **data, int64_t *rows, int64_t *cols)
{
    FILE *fp = NULL;
    unsigned char *pre = NULL;
    float *buf = NULL;
    size_t got, off;
    long long fsize;
    int64_t r = 0, c = 0;
    int rc = 0;

    if (!path || !data || !rows || !cols)
        return spruce__seterr(SPRUCE_EINVAL, "npy_read: NULL argument");
    *data = NULL;
    if ((rc = spruce__fopen_regular(path, &fp)))
        return rc; /* a directory or a FIFO is refused before any read */
    if (fseek(fp, 0, SEEK_END) || (fsize = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET)) {
        rc = spruce__seterr(spruce__errno_code(errno), "%s: cannot find the file size: %s", path,
                            strerror(errno));
        goto done;
    }
    /* the preamble and header are at most 12 + NPY_MAX_HEADER bytes */
    got = (unsigned long long)fsize < 12 + NPY_MAX_HEADER ? (size_t)fsize : 12 + NPY_MAX_HEADER;
    if (!(pre = malloc(got ? got : 1))) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory reading the header", path);
        goto done;
    }
    if (fread(pre, 1, got, fp) != got) {
        rc = spruce__seterr(spruce__errno_code(errno), "%s: read error: %s", path, strerror(errno));
        goto done;
    }
    if ((rc = spruce__npy_parse_prefix(path, pre, got, (unsigned long long)fsize, &r, &c, &off)))
        goto done;
    if (fseek(fp, (long)off, SEEK_SET)) {
        rc = spruce__seterr(spruce__errno_code(errno), "%s: seek failed: %s", path, strerror(errno));
        goto done;
    }
    buf = malloc((size_t)r * (size_t)c * sizeof *buf);
    if (!buf) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: (%lld, %lld) float32", path, (long long)r,
                            (long long)c);
        goto done;
    }
    if (fread(buf, sizeof *buf, (size_t)r * (size_t)c, fp) != (size_t)r * (size_t)c) {
        rc = spruce__seterr(SPRUCE_EIO, "%s: short read", path);
        goto done;
    }
    *data = buf;
    *rows = r;
    *cols = c;
    buf = NULL;
done:
    if (fp)
        fclose(fp);
    free(pre);
    free(buf);
    return rc;
}

int spruce__npy_write(const char *path, const float *data, int64_t rows, int64_t cols)
{
    char hdr[128], *tmp = NULL;
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0};
    FILE *fp = NULL;
    size_t n, hl;
    int rc = 0;

    if (!path || !data || rows <= 0 || cols <= 0)
        return spruce__seterr(SPRUCE_EINVAL, "npy_write: bad arguments");
    n = (size_t)snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld), }",
                         (long long)rows, (long long)cols);
    hl = (n + 1 + 10 + 63) / 64 * 64 - 10; /* dict + padding + '\n', data 64-aligned */
    memset(hdr + n, ' ', hl - n - 1);
    hdr[hl - 1] = '\n';
    pre[8] = (unsigned char)(hl & 0xff);
    pre[9] = (unsigned char)(hl >> 8);
    tmp = malloc(strlen(path) + 32);
    if (!tmp)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: temporary name", path);
    sprintf(tmp, "%s.tmp.%ld", path, (long)getpid());
    fp = fopen(tmp, "wb");
    if (!fp) {
        rc = spruce__seterr(spruce__errno_code(errno), "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    if (fwrite(pre, 1, 10, fp) != 10 || fwrite(hdr, 1, hl, fp) != hl ||
        fwrite(data, sizeof *data, (size_t)rows * (size_t)cols, fp) != (size_t)rows * (size_t)cols) {
        rc = spruce__seterr(spruce__errno_code(errno), "%s: write failed: %s", tmp, strerror(errno));
        goto done;
    }
    if (fclose(fp)) {
        fp = NULL;
        rc = spruce__seterr(spruce__errno_code(errno), "%s: write failed: %s", tmp, strerror(errno));
        goto done;
    }
    fp = NULL;
    if (rename(tmp, path))
        rc = spruce__seterr(spruce__errno_code(errno), "%s: cannot rename from %s: %s", path, tmp, strerror(errno));
done:
    if (fp)
        fclose(fp);
    if (rc)
        remove(tmp);
    free(tmp);
    return rc;
}
