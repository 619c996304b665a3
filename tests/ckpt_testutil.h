/* ckpt_testutil.h: temporary directories, files and small checkpoints shared
 * by the checkpoint, half-float and synth tests. */
#ifndef SPRUCE_CKPT_TESTUTIL_H
#define SPRUCE_CKPT_TESTUTIL_H

#include <criterion/criterion.h>
#include <errno.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include <jansson.h>

#include "spruce_ckpt.h"

/* ---------------------------------------------------------------- helpers */

static inline int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)f;
    return flag == FTW_DP ? rmdir(p) : unlink(p);
}

static inline void rmrf(const char *p)
{
    nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static inline char *path2(const char *a, const char *b)
{
    char *p = malloc(strlen(a) + strlen(b) + 2);
    cr_assert_not_null(p);
    sprintf(p, "%s/%s", a, b);
    return p;
}

static inline char *mktmp(void)
{
    const char *base = getenv("TMPDIR");
    char *t = path2(base && *base ? base : "/tmp", "spruce-test-ckpt-XXXXXX");
    cr_assert_not_null(mkdtemp(t), "mkdtemp: %s", strerror(errno));
    return t;
}

static inline void write_bytes(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
}

static inline uint8_t *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    uint8_t *b;
    long len;
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    b = malloc((size_t)len + 1);
    cr_assert_eq(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

static inline int files_equal(const char *a, const char *b)
{
    size_t na, nb;
    uint8_t *x = read_bytes(a, &na), *y = read_bytes(b, &nb);
    int eq = na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return eq;
}

static inline int exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* Entries of dir whose name contains s. */
static inline int count_entries_with(const char *dir, const char *s)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    cr_assert_not_null(d);
    while ((e = readdir(d)))
        n += strstr(e->d_name, s) != NULL;
    closedir(d);
    return n;
}

/* A safetensors file from a JSON header and data bytes. */
static inline void write_st(const char *path, const char *json, const void *data, size_t ndata)
{
    size_t hl = strlen(json), pad = (8 - hl % 8) % 8, i;
    uint64_t n = hl + pad;
    uint8_t *b = malloc(8 + n + ndata);
    for (i = 0; i < 8; i++)
        b[i] = (uint8_t)(n >> (8 * i));
    memcpy(b + 8, json, hl);
    memset(b + 8 + hl, ' ', pad);
    if (ndata)
        memcpy(b + 8 + n, data, ndata);
    write_bytes(path, b, 8 + n + ndata);
    free(b);
}

static inline uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float bitsf(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 11;
}

static inline spruce_synth_config small_cfg(spruce_dtype dt)
{
    spruce_synth_config c;
    spruce_synth_defaults(&c);
    c.hidden = 32;
    c.intermediate = 48;
    c.layers = 1;
    c.heads = 4;
    c.kv_heads = 2;
    c.vocab = 64;
    c.max_position = 64;
    c.dtype = dt;
    c.seed = 7;
    return c;
}

static inline const char *corpus_dir(void)
{
    static char buf[4096];
    const char *src = getenv("SPRUCE_SRCDIR");
    if (!src || !*src)
        return NULL;
    snprintf(buf, sizeof buf, "%s/tests/data/safetensors", src);
    return exists(buf) ? buf : NULL;
}


/* ------------------------------------------------------- F16 / BF16 */

/* Reference: the exact value of an F16 pattern, in double. */
static inline double f16_value(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return h & 0x8000 ? -v : v;
}

/* Reference float32 -> F16 by search: nearest finite F16 (ties to even),
 * Inf past 65520, zero results +0.0. */
static inline uint16_t f16_ref(float x)
{
    double a = fabs((double)x), dlo, dhi;
    uint32_t lo = 0, hi = 0x7bff, best;
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    if (isnan(x))
        return 0x7e00;
    if (a >= 65520.0)
        return sign | 0x7c00;
    while (lo < hi) { /* largest h with value <= a */
        uint32_t mid = (lo + hi + 1) / 2;
        if (f16_value((uint16_t)mid) <= a)
            lo = mid;
        else
            hi = mid - 1;
    }
    dlo = a - f16_value((uint16_t)lo);
    dhi = (lo == 0x7bff ? 65536.0 : f16_value((uint16_t)(lo + 1))) - a;
    best = dlo < dhi ? lo : dhi < dlo ? lo + 1 : (lo & 1 ? lo + 1 : lo);
    return best ? (uint16_t)(sign | best) : 0;
}

static inline uint16_t bf16_ref(float x)
{
    uint32_t u = fbits(x), lo = u >> 16, hi = lo + 1;
    double a = (double)x, vlo = (double)bitsf(lo << 16), vhi, dlo, dhi;
    uint16_t r;
    if (isnan(x))
        return 0x7fc0;
    if (isinf(x))
        return (uint16_t)lo;
    vhi = (hi & 0x7fff) == 0x7f80 ? ((hi & 0x8000) ? -ldexp(1, 128) : ldexp(1, 128)) : (double)bitsf(hi << 16);
    dlo = fabs(a - vlo);
    dhi = fabs(vhi - a);
    r = (uint16_t)(dlo < dhi ? lo : dhi < dlo ? hi : (lo & 1 ? hi : lo));
    return (r & 0x7fff) ? r : 0;
}

#endif
