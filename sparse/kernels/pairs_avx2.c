/* pairs_avx2.c: Y = A X for the pair layout (pairs_internal.h) with AVX2+FMA.
 *
 * Batch 1: four pairs (eight rows) share every load of x.  Per block of 8
 * columns and pair:
 *   idx = broadcast(meta of two blocks) >> (0, 2, .., 14) (or 16 .. 30)
 *   acc += widen(8 values) * vpermilps(x[8b .. 8b + 8), idx)
 * with widen: float32 as is; bf16 bits << 16; int8 q - z as float; int4
 * nibble 4k of a 32-bit word, stored as u ^ 8 and sign-extended (u - 8),
 * minus z - 8 as float (nothing is subtracted without zero points).  Row 2p
 * is the sum of lanes 0, 1, 4, 5 of acc, row 2p + 1 of lanes 2, 3, 6, 7;
 * int8 times the row's scale; int4 sums a group of columns at a time, times
 * each row's scale of that group.  The last block of a row narrower than 8 columns reads x with
 * a masked load, so nothing past cols is read.
 * Batch > 1: each slot's value times row j of X, the batch's columns in
 * vectors (spmm_avx2.h). */
#include <immintrin.h>
#include <string.h>

#include "kernel_common.h"
#include "pairs_internal.h"
#include "spmm_avx2.h"

/* The 8 values of block b of pair p as float32, before any scale; zp: the
 * matrix has zero points, z the lanes' (int8: z; int4: z - 8, since a nibble
 * is stored as u ^ 8, whose sign extension is u - 8). */
SPRUCE__INLINE __m256 widen(const struct spruce__pairs *P, size_t blk, const int dtype,
                            const int zp, __m256i z)
{
    const uint8_t *v = P->val;
    if (dtype == SPRUCE_DT_F32)
        return _mm256_loadu_ps((const float *)v + 8 * blk);
    if (dtype == SPRUCE_DT_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(v + 16 * blk))), 16));
    if (dtype == SPRUCE_DT_INT8) {
        const __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(v + 8 * blk)));
        return _mm256_cvtepi32_ps(zp ? _mm256_sub_epi32(q, z) : q);
    }
    {
        int32_t w;
        memcpy(&w, v + 4 * blk, 4);
        const __m256i q = _mm256_srai_epi32(
            _mm256_sllv_epi32(_mm256_set1_epi32(w), _mm256_setr_epi32(28, 24, 20, 16, 12, 8, 4, 0)),
            28);
        return _mm256_cvtepi32_ps(zp ? _mm256_sub_epi32(q, z) : q);
    }
}

/* Lanes of row 2p (a) and 2p + 1 (b) as (a, a, b, b, a, a, b, b). */
SPRUCE__INLINE __m256i lanes_i(int a, int b)
{
    return _mm256_setr_epi32(a, a, b, b, a, a, b, b);
}

SPRUCE__INLINE __m256 lanes_f(float a, float b)
{
    return _mm256_setr_ps(a, a, b, b, a, a, b, b);
}


/* Pairs a kernel takes at once (sharing each load of x). */
#define PAIRS_R 4

/* Blocks [b0, b1) of pairs p .. p + R (R = 1 .. PAIRS_R), added into acc[r];
 * part: block b1 - 1 is the row's last one and narrower than 8 columns.
 * The hardware prefetchers follow a stream within a 4 KB page only, and a
 * pair's values may be no longer than that (int8, 4096 columns): each pair
 * also asks for the line at the same block of the pair PAIRS_R below (the
 * next call's), into L2, a line of values (and of positions) at a time. */
SPRUCE__INLINE void span(const struct spruce__pairs *P, const float *x, int p, const int R,
                         int b0, int b1, int part, const int dtype, const int zp,
                         const __m256i *z, __m256 *acc)
{
    const __m256i sh0 = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    const __m256i sh1 = _mm256_setr_epi32(16, 18, 20, 22, 24, 26, 28, 30);
    const int nb = P->nb;
    const uint16_t *meta = P->meta + (size_t)p * nb;
    const size_t blk = (size_t)p * nb, ahead = (size_t)PAIRS_R * nb;
    const int vb = dtype == SPRUCE_DT_F32 ? 32 : dtype == SPRUCE_DT_BF16 ? 16
                 : dtype == SPRUCE_DT_INT8 ? 8 : 4; /* bytes of a block's values */
    __m256 a[PAIRS_R]; /* one sum a pair: a second spilled registers at four pairs */
    int r, b = b0;
    const int full = part ? b1 - 1 : b1;
#pragma GCC unroll 4
    for (r = 0; r < R; r++)
        a[r] = _mm256_setzero_ps();
    for (; b + 2 <= full; b += 2) {
        const __m256 x0 = _mm256_loadu_ps(x + 8 * b), x1 = _mm256_loadu_ps(x + 8 * b + 8);
        if (!(b & (spruce__pairs_line_blocks(dtype) - 1))) {
#pragma GCC unroll 4
            for (r = 0; r < R; r++)
                _mm_prefetch((const char *)(P->val + vb * (blk + ahead + (size_t)r * nb + b)),
                             _MM_HINT_T1);
        }
        if (!(b & 31)) {
#pragma GCC unroll 4
            for (r = 0; r < R; r++)
                _mm_prefetch((const char *)(meta + ahead + (size_t)r * nb + b), _MM_HINT_T1);
        }
#pragma GCC unroll 4
        for (r = 0; r < R; r++) {
            int32_t mw;
            memcpy(&mw, meta + (size_t)r * nb + b, 4);
            const __m256i m = _mm256_set1_epi32(mw);
            const size_t at = blk + (size_t)r * nb + b;
            a[r] = _mm256_fmadd_ps(widen(P, at, dtype, zp, z[r]),
                                   _mm256_permutevar_ps(x0, _mm256_srlv_epi32(m, sh0)), a[r]);
            a[r] = _mm256_fmadd_ps(widen(P, at + 1, dtype, zp, z[r]),
                                   _mm256_permutevar_ps(x1, _mm256_srlv_epi32(m, sh1)), a[r]);
        }
    }
    for (; b < b1; b++) {
        __m256 xv;
        if (b == full) { /* the last, narrower block */
            const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(P->cols - 8 * b),
                                                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            xv = _mm256_maskload_ps(x + 8 * b, keep);
        } else {
            xv = _mm256_loadu_ps(x + 8 * b);
        }
#pragma GCC unroll 4
        for (r = 0; r < R; r++) {
            const __m256i m = _mm256_set1_epi32(meta[(size_t)r * nb + b]);
            a[r] = _mm256_fmadd_ps(widen(P, blk + (size_t)r * nb + b, dtype, zp, z[r]),
                                   _mm256_permutevar_ps(xv, _mm256_srlv_epi32(m, sh0)), a[r]);
        }
    }
#pragma GCC unroll 4
    for (r = 0; r < R; r++)
        acc[r] = a[r];
}

/* The two rows' sums of acc: row 2p in lane 0, row 2p + 1 in lane 1. */
SPRUCE__INLINE void put2(const struct spruce__pairs *P, float *y, int p, __m256 acc)
{
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    h = _mm_hadd_ps(h, h); /* (a0 + a1, b0 + b1, ..) */
    y[2 * p] = _mm_cvtss_f32(h);
    if (2 * p + 1 < P->rows)
        y[2 * p + 1] = _mm_cvtss_f32(_mm_shuffle_ps(h, h, 1));
}

SPRUCE__INLINE void pairs_rows(const struct spruce__pairs *P, const float *x, float *y, int p,
                               const int R, const int dtype, const int zp)
{
    const int part = P->cols % 8 != 0;
    __m256i z[PAIRS_R];
    __m256 acc[PAIRS_R], sum[PAIRS_R];
    int r, g;
    if (dtype != SPRUCE_DT_INT4) {
#pragma GCC unroll 4
        for (r = 0; r < R; r++)
            z[r] = zp ? lanes_i(spruce__pairs_kzero(P, 2 * (p + r), 0), spruce__pairs_kzero(P, 2 * (p + r) + 1, 0))
                      : _mm256_setzero_si256();
        span(P, x, p, R, 0, P->nb, part, dtype, zp, z, acc);
#pragma GCC unroll 4
        for (r = 0; r < R; r++) {
            if (dtype == SPRUCE_DT_INT8)
                acc[r] = _mm256_mul_ps(acc[r], lanes_f(spruce__pairs_kscale(P, 2 * (p + r), 0),
                                                       spruce__pairs_kscale(P, 2 * (p + r) + 1, 0)));
            put2(P, y, p + r, acc[r]);
        }
        return;
    }
    {
        const int gb = P->groupsize / 8; /* blocks per group */
#pragma GCC unroll 4
        for (r = 0; r < R; r++)
            sum[r] = _mm256_setzero_ps();
        for (g = 0; g < P->ngroups; g++) {
            const int b0 = g * gb, b1 = b0 + gb < P->nb ? b0 + gb : P->nb;
#pragma GCC unroll 4
            for (r = 0; r < R; r++)
                z[r] = zp ? lanes_i(spruce__pairs_kzero(P, 2 * (p + r), g), spruce__pairs_kzero(P, 2 * (p + r) + 1, g))
                          : _mm256_setzero_si256();
            span(P, x, p, R, b0, b1, part && b1 == P->nb, dtype, zp, z, acc);
#pragma GCC unroll 4
            for (r = 0; r < R; r++)
                sum[r] = _mm256_fmadd_ps(acc[r], lanes_f(spruce__pairs_kscale(P, 2 * (p + r), g),
                                                         spruce__pairs_kscale(P, 2 * (p + r) + 1, g)),
                                         sum[r]);
        }
#pragma GCC unroll 4
        for (r = 0; r < R; r++)
            put2(P, y, p + r, sum[r]);
    }
}

SPRUCE__INLINE void spmv_zp(const struct spruce__pairs *P, const float *x, float *y, int p0,
                            int p1, const int dtype, const int zp)
{
    int p = p0;
    for (; p + PAIRS_R <= p1; p += PAIRS_R)
        pairs_rows(P, x, y, p, PAIRS_R, dtype, zp);
    for (; p < p1; p++)
        pairs_rows(P, x, y, p, 1, dtype, zp);
}

/* Without zero points nothing is subtracted (a constant, so no instruction). */
SPRUCE__INLINE void spmv(const struct spruce__pairs *P, const float *x, float *y, int p0, int p1,
                         const int dtype)
{
    if (P->zero)
        spmv_zp(P, x, y, p0, p1, dtype, 1);
    else
        spmv_zp(P, x, y, p0, p1, dtype, 0);
}

void pairs_spmv_f32_avx2(const struct spruce__pairs *P, const float *X, int batch, float *Y, int p0,
                         int p1)
{
    (void)batch;
    spmv(P, X, Y, p0, p1, SPRUCE_DT_F32);
}

void pairs_spmv_bf16_avx2(const struct spruce__pairs *P, const float *X, int batch, float *Y,
                          int p0, int p1)
{
    (void)batch;
    spmv(P, X, Y, p0, p1, SPRUCE_DT_BF16);
}

void pairs_spmv_int8_avx2(const struct spruce__pairs *P, const float *X, int batch, float *Y,
                          int p0, int p1)
{
    (void)batch;
    spmv(P, X, Y, p0, p1, SPRUCE_DT_INT8);
}

void pairs_spmv_int4_avx2(const struct spruce__pairs *P, const float *X, int batch, float *Y,
                          int p0, int p1)
{
    (void)batch;
    spmv(P, X, Y, p0, p1, SPRUCE_DT_INT4);
}

/* Batch > 1: a window of a pair's blocks at a time is decoded into each
 * row's list of values (dequantized, scales included) and columns, then each
 * value is broadcast against the contiguous row of X it selects, 32 columns
 * of the batch at a time (spmm_avx2.h, as for compressed rows and bitmask). */
#define PAIRS_WIN 128 /* blocks: 1024 columns */

SPRUCE__INLINE void spmm_pairs(const struct spruce__pairs *P, const float *X, int batch, float *Y,
                               int p0, int p1, const int dtype)
{
    const int nb = P->nb;
    float v[2][4 * PAIRS_WIN];
    int32_t col[2][4 * PAIRS_WIN];
    int j0, p, w0, b, l;
    for (j0 = 0; j0 < batch; j0 += 32) {
        const int n = batch - j0 < 32 ? batch - j0 : 32, nv = (n + 7) / 8, full = n % 8 == 0;
        const __m256i tail = lanes8(full ? 8 : n % 8);
        for (p = p0; p < p1; p++) {
            const int i0 = 2 * p, two = i0 + 1 < P->rows;
            __m256 acc[2][4];
            __m256i z = _mm256_setzero_si256();
            __m256 s = _mm256_set1_ps(1.0f);
            int r, q;
            for (r = 0; r < 2; r++)
                for (q = 0; q < 4; q++)
                    acc[r][q] = _mm256_setzero_ps();
            if (dtype == SPRUCE_DT_INT8) {
                z = lanes_i(spruce__pairs_kzero(P, i0, 0), spruce__pairs_kzero(P, i0 + 1, 0));
                s = lanes_f(spruce__pairs_kscale(P, i0, 0), spruce__pairs_kscale(P, i0 + 1, 0));
            }
            for (w0 = 0; w0 < nb; w0 += PAIRS_WIN) {
                const int w1 = w0 + PAIRS_WIN < nb ? w0 + PAIRS_WIN : nb;
                int cnt[2] = {0, 0};
                for (b = w0; b < w1; b++) {
                    const unsigned m = P->meta[(size_t)p * nb + b];
                    float t[8];
                    if (dtype == SPRUCE_DT_INT4 && 8 * b % P->groupsize == 0) {
                        const int g = 8 * b / P->groupsize;
                        z = lanes_i(spruce__pairs_kzero(P, i0, g), spruce__pairs_kzero(P, i0 + 1, g));
                        s = lanes_f(spruce__pairs_kscale(P, i0, g), spruce__pairs_kscale(P, i0 + 1, g));
                    }
                    const __m256 wv = dtype == SPRUCE_DT_F32 || dtype == SPRUCE_DT_BF16
                                          ? widen(P, (size_t)p * nb + b, dtype, 0, z)
                                          : _mm256_mul_ps(widen(P, (size_t)p * nb + b, dtype, 1,
                                                                z), s);
                    if (8 * b + 8 <= P->cols) { /* every column real: rows' lanes in order */
                        const __m256i order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
                        const __m256i jv = _mm256_add_epi32(
                            _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4),
                            _mm256_add_epi32(_mm256_set1_epi32(8 * b),
                                             _mm256_and_si256(_mm256_srlv_epi32(
                                                 _mm256_set1_epi32((int)m),
                                                 _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)),
                                                 _mm256_set1_epi32(3))));
                        const __m256 wo = _mm256_permutevar8x32_ps(wv, order);
                        const __m256i jo = _mm256_permutevar8x32_epi32(jv, order);
                        _mm_storeu_ps(v[0] + cnt[0], _mm256_castps256_ps128(wo));
                        _mm_storeu_ps(v[1] + cnt[1], _mm256_extractf128_ps(wo, 1));
                        _mm_storeu_si128((__m128i *)(col[0] + cnt[0]), _mm256_castsi256_si128(jo));
                        _mm_storeu_si128((__m128i *)(col[1] + cnt[1]),
                                         _mm256_extracti128_si256(jo, 1));
                        cnt[0] += 4;
                        cnt[1] += 4;
                        continue;
                    }
                    _mm256_storeu_ps(t, wv);
#pragma GCC unroll 8
                    for (l = 0; l < 8; l++) {
                        const int j = 8 * b + 4 * (l >> 2) + (int)(m >> (2 * l) & 3);
                        const int rr = l >> 1 & 1;
                        if (j < P->cols) { /* (the last block may be narrower) */
                            v[rr][cnt[rr]] = t[l];
                            col[rr][cnt[rr]++] = j;
                        }
                    }
                }
                spmm_acc256_nv(v[0], col[0], cnt[0], X + j0, batch, tail, full, acc[0], nv, 0);
                if (two)
                    spmm_acc256_nv(v[1], col[1], cnt[1], X + j0, batch, tail, full, acc[1], nv, 0);
            }
            store8(Y + (size_t)i0 * batch + j0, acc[0], nv, tail, full);
            if (two)
                store8(Y + (size_t)(i0 + 1) * batch + j0, acc[1], nv, tail, full);
        }
    }
}

void pairs_spmm_avx2(const struct spruce__pairs *P, const float *X, int batch, float *Y, int p0,
                     int p1)
{
    switch (P->dtype) {
    case SPRUCE_DT_F32:
        spmm_pairs(P, X, batch, Y, p0, p1, SPRUCE_DT_F32);
        break;
    case SPRUCE_DT_BF16:
        spmm_pairs(P, X, batch, Y, p0, p1, SPRUCE_DT_BF16);
        break;
    case SPRUCE_DT_INT8:
        spmm_pairs(P, X, batch, Y, p0, p1, SPRUCE_DT_INT8);
        break;
    default:
        spmm_pairs(P, X, batch, Y, p0, p1, SPRUCE_DT_INT4);
    }
}
