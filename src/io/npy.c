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

/* The text after 'key': in the dict, spaces skipped; NULL if absent. */
static const char *dict_value(const char *hdr, const char *key)
{
    char pat[32];
    const char *p;
    snprintf(pat, sizeof pat, "'%s'", key);
    p = strstr(hdr, pat);
    if (!p) {
        snprintf(pat, sizeof pat, "\"%s\"", key);
        p = strstr(hdr, pat);
    }
    if (!p)
        return NULL;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    if (*p != ':')
        return NULL;
    p++;
    while (*p == ' ')
        p++;
    return p;
}

int spruce__npy_parse_header(const char *path, const char *hdr, int64_t *rows, int64_t *cols)
{
    const char *d = dict_value(hdr, "descr"), *f = dict_value(hdr, "fortran_order"),
               *s = dict_value(hdr, "shape");
    long long r, c;
    int len = 0;
    if (!d || !f || !s)
        return spruce__seterr(SPRUCE_EFORMAT, "%s: .npy header lacks '%s'", path,
                              !d ? "descr" : !f ? "fortran_order" : "shape");
    if (strncmp(d, "'<f4'", 5) && strncmp(d, "\"<f4\"", 5)) {
        char found[16] = {0};
        sscanf(d, "%15[^,}]", found);
        return spruce__seterr(SPRUCE_EDTYPE, "%s: expected dtype '<f4' (float32), found %s", path,
                              found);
    }
    if (strncmp(f, "False", 5))
        return spruce__seterr(SPRUCE_EFORMAT,
                              "%s: expected fortran_order False (C order), found %.5s", path, f);
    if (sscanf(s, "(%lld ,%lld )%n", &r, &c, &len) != 2 || len == 0) {
        if (sscanf(s, "(%lld , %lld )%n", &r, &c, &len) != 2 || len == 0)
            return spruce__seterr(SPRUCE_ESHAPE, "%s: expected a 2-D shape (rows, cols), found %.40s",
                                  path, s);
    }
    if (r <= 0 || c <= 0 || r > (1LL << 31) - 1 || c > (1LL << 31) - 1)
        return spruce__seterr(SPRUCE_ESHAPE, "%s: expected a non-empty 2-D shape, found (%lld, %lld)",
                              path, r, c);
    *rows = r;
    *cols = c;
    return 0;
}

int spruce__npy_read(const char *path, float **data, int64_t *rows, int64_t *cols)
{
    FILE *fp = NULL;
    unsigned char pre[12];
    char *hdr = NULL;
    float *buf = NULL;
    size_t hlen, pre_len;
    long long fsize, need;
    int64_t r = 0, c = 0;
    int rc = 0;

    if (!path || !data || !rows || !cols)
        return spruce__seterr(SPRUCE_EINVAL, "npy_read: NULL argument");
    *data = NULL;
    fp = fopen(path, "rb");
    if (!fp)
        return spruce__seterr(SPRUCE_EIO, "%s: cannot open: %s", path, strerror(errno));
    if (fread(pre, 1, 10, fp) != 10 || memcmp(pre, "\x93NUMPY", 6)) {
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: not a .npy file (bad magic)", path);
        goto done;
    }
    if (pre[6] == 1) {
        hlen = pre[8] | (size_t)pre[9] << 8;
        pre_len = 10;
    } else if (pre[6] == 2 || pre[6] == 3) {
        if (fread(pre + 10, 1, 2, fp) != 2) {
            rc = spruce__seterr(SPRUCE_EFORMAT, "%s: truncated .npy header", path);
            goto done;
        }
        hlen = pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
        pre_len = 12;
    } else {
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: unsupported .npy version %d.%d", path, pre[6],
                            pre[7]);
        goto done;
    }
    if (hlen == 0 || hlen > (1u << 20) || !(hdr = malloc(hlen + 1))) {
        rc = spruce__seterr(hlen && hlen <= (1u << 20) ? SPRUCE_ENOMEM : SPRUCE_EFORMAT,
                            "%s: .npy header of %zu bytes", path, hlen);
        goto done;
    }
    if (fread(hdr, 1, hlen, fp) != hlen) {
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: truncated .npy header (%zu bytes expected)", path,
                            hlen);
        goto done;
    }
    hdr[hlen] = '\0';
    if ((rc = spruce__npy_parse_header(path, hdr, &r, &c)))
        goto done;
    if (fseek(fp, 0, SEEK_END) || (fsize = ftell(fp)) < 0) {
        rc = spruce__seterr(SPRUCE_EIO, "%s: cannot find the file size", path);
        goto done;
    }
    need = (long long)(pre_len + hlen) + (long long)r * c * 4;
    if (fsize != need) {
        rc = spruce__seterr(SPRUCE_EFORMAT,
                            "%s: shape (%lld, %lld) float32 needs %lld bytes, the file has %lld",
                            path, (long long)r, (long long)c, need, fsize);
        goto done;
    }
    if (fseek(fp, (long)(pre_len + hlen), SEEK_SET)) {
        rc = spruce__seterr(SPRUCE_EIO, "%s: seek failed", path);
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
    free(hdr);
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
        rc = spruce__seterr(SPRUCE_EIO, "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    if (fwrite(pre, 1, 10, fp) != 10 || fwrite(hdr, 1, hl, fp) != hl ||
        fwrite(data, sizeof *data, (size_t)rows * (size_t)cols, fp) != (size_t)rows * (size_t)cols) {
        rc = spruce__seterr(SPRUCE_EIO, "%s: write failed: %s", tmp, strerror(errno));
        goto done;
    }
    if (fclose(fp)) {
        fp = NULL;
        rc = spruce__seterr(SPRUCE_EIO, "%s: write failed: %s", tmp, strerror(errno));
        goto done;
    }
    fp = NULL;
    if (rename(tmp, path))
        rc = spruce__seterr(SPRUCE_EIO, "%s: cannot rename from %s: %s", path, tmp, strerror(errno));
done:
    if (fp)
        fclose(fp);
    if (rc)
        remove(tmp);
    free(tmp);
    return rc;
}
