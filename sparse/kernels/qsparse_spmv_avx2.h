/* qsparse_spmv_avx2.h: the row loops of y = A x with AVX2+FMA for bitmask and
 * N:M matrices of bf16, int8 and int4 values (qsparse_internal.h), shared by
 * one file per value type.  A is (rows, cols), x (cols), y (rows).
 * AVX2 has no expand.  bf16 and int8 without zero points expand and widen an
 * 8-column slice with bits m in one byte shuffle of the next stored values
 * (in both halves of a vector), by a table indexed by m: lane j takes the
 * value of rank r = "bits of m below j" into its top bytes, lanes whose bit
 * is clear become 0:
 *   bf16  lane j = bits of v[p + r] << 16       (its float32, exactly)
 *   int8  lane j = q[p + r] 2^24, as int32      (converted exactly; the 2^24
 *         comes off with the row's scale: y_i = s_i 2^-24 sum acc, the same
 *         roundings as without it, as long as no |x_j| exceeds 2^96)
 * int8 with zero points and int4 take the next 8 stored values widened to
 * 32-bit lanes minus their zero point and permute them with the float32
 * kernels' table (bitmask_spmv_avx2.c, the same lane rule):
 *   acc += float(blend(permute(widen(v + p), perm[m]), 0, perm[m] < 0)) * x[k .. k+8),
 * and in both
 *   p += popcount(m)   (N:M with M dividing 8: p += 8 N / M)
 * then bf16 y_i = sum acc; int8 y_i = s_i sum acc; int4 y_i = sum_g s_ig
 * (sum acc over the slices of group g).  The shuffle kernels take four rows
 * at a time, sharing each load of x, and with N:M one load of values serves
 * two slices.  Internal. */
#ifndef SPRUCE_QSPARSE_SPMV_AVX2_H
#define SPRUCE_QSPARSE_SPMV_AVX2_H

#include <immintrin.h>
#include <string.h>

#include "bitmask_spmv_avx2.h"
#include "qsparse_internal.h"

#define QSPMV_PF 512

/* 8 stored values from value p on as 32-bit lanes. */
SPRUCE__INLINE __m256i widen8(const uint8_t *val, int64_t p, const int dtype, __m256i z)
{
    if (dtype == SPRUCE_DT_BF16)
        return _mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(val + 2 * p))), 16);
    if (dtype == SPRUCE_DT_INT8)
        return _mm256_sub_epi32(
            _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(val + p))), z);
    {
        uint64_t w;
        memcpy(&w, val + (p >> 1), sizeof w);
        w >>= 4 * (p & 1);
        return _mm256_sub_epi32(
            _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)(uint32_t)w),
                                               _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
                             _mm256_set1_epi32(15)),
            z);
    }
}

SPRUCE__INLINE __m256 qslice8(unsigned m, const uint8_t *val, int64_t p, const int dtype,
                              __m256i z)
{
    const __m256i t = _mm256_load_si256((const __m256i *)spruce__lut_perm[m]);
    const __m256i e = _mm256_castps_si256(_mm256_blendv_ps(
        _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(widen8(val, p, dtype, z), t)),
        _mm256_setzero_ps(), _mm256_castsi256_ps(t)));
    return dtype == SPRUCE_DT_BF16 ? _mm256_castsi256_ps(e) : _mm256_cvtepi32_ps(e);
}

/* The shuffles of bf16 (t = 0) and int8 (t = 1) slices, by the bits m. */
extern uint8_t spruce__lut_qshuf[2][256][32];

/* The 8 columns with bits m from value p on, bf16 or int8 without zero
 * points, in one shuffle by lut = spruce__lut_qshuf[dtype == int8] (int8
 * scaled by 2^24). */
SPRUCE__INLINE __m256 qshuf8(unsigned m, const uint8_t *val, int64_t p, const int dtype,
                             const uint8_t (*lut)[32])
{
    __m256i v;
    if (dtype == SPRUCE_DT_BF16) {
        v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(val + 2 * p)));
    } else { /* 8 bytes are enough */
        int64_t b;
        memcpy(&b, val + p, sizeof b);
        v = _mm256_set1_epi64x(b);
    }
    const __m256i e = _mm256_shuffle_epi8(v, _mm256_load_si256((const __m256i *)lut[m]));
    return dtype == SPRUCE_DT_BF16 ? _mm256_castsi256_ps(e) : _mm256_cvtepi32_ps(e);
}

/* The slice with bits m whose values start `off` bytes into v (16 bytes in
 * both halves): the table's indices moved by off (0x80 + off still zeroes). */
SPRUCE__INLINE __m256 qshuf8_at(unsigned m, __m256i v, __m256i off, const int dtype,
                                const uint8_t (*lut)[32])
{
    const __m256i e = _mm256_shuffle_epi8(
        v, _mm256_add_epi8(_mm256_load_si256((const __m256i *)lut[m]), off));
    return dtype == SPRUCE_DT_BF16 ? _mm256_castsi256_ps(e) : _mm256_cvtepi32_ps(e);
}

SPRUCE__INLINE float hsum8(__m256 s)
{
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* Sum over the slices of columns [k, c1) of a row (k a multiple of 32; c1 the
 * row's end or a multiple of 32), its values from *pp on, which moves past
 * them.  counted (a constant): p moves by the bits; else by c8 per slice. */
SPRUCE__INLINE __m256 qspan8(const uint8_t *m8, const float *x, const uint8_t *val, int64_t *pp,
                             int k, int c1, const int dtype, const int counted, int c8, __m256i z)
{
    __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
    int64_t p = *pp;
    int c;
    for (; k + 32 <= c1; k += 32) {
        _mm_prefetch((const char *)(val + (dtype == SPRUCE_DT_BF16 ? 2 * p
                                           : dtype == SPRUCE_DT_INT8 ? p : p >> 1) + QSPMV_PF),
                     _MM_HINT_T0);
#pragma GCC unroll 4
        for (c = 0; c < 4; c++) {
            const unsigned m = m8[k / 8 + c];
            a[c] = _mm256_fmadd_ps(qslice8(m, val, p, dtype, z), _mm256_loadu_ps(x + k + 8 * c),
                                   a[c]);
            p += counted ? __builtin_popcount(m) : c8;
        }
    }
    for (; k < c1; k += 8) { /* the row's last columns: bits counted */
        const int left = c1 - k;
        const unsigned m = m8[k / 8] & (left >= 8 ? 255u : (1u << left) - 1);
        const __m256i xm = _mm256_cmpgt_epi32(_mm256_set1_epi32(left),
                                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        a[0] = _mm256_fmadd_ps(qslice8(m, val, p, dtype, z), _mm256_maskload_ps(x + k, xm), a[0]);
        p += __builtin_popcount(m);
    }
    *pp = p;
    return _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
}

/* Rows i .. i + R (R = 1 .. 4, a constant) of y = A x (y += A x with A->add)
 * by shuffles, bf16 or int8 without zero points: the rows of a block share
 * every load of x, each row keeps two sums and reads its bits 32 columns at a
 * time.  paired (a constant; N:M whose two slices' values fit in 16 bytes,
 * vb c8 <= 8): one load of values serves two slices, the second shuffled with
 * its indices moved by vb c8.  No software prefetch: the four rows' streams
 * are sequential, and measured on 2:4 the hardware alone is faster. */
SPRUCE__INLINE void qshuf_rows(const struct spruce_qsparse *A, const float *x, float *y, int i,
                               const int R, const int dtype, const int counted, int c8,
                               const int paired)
{
    const int n = A->cols, vb = dtype == SPRUCE_DT_BF16 ? 2 : 1;
    const __m256i off = _mm256_set1_epi8((char)(vb * c8));
    __m256i v[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                    _mm256_setzero_si256()};
    const uint8_t (*lut)[32] = spruce__lut_qshuf[dtype == SPRUCE_DT_INT8];
    const uint8_t *m8[4];
    int64_t p[4];
    __m256 a[4][2];
    int r, c, k;
#pragma GCC unroll 4
    for (r = 0; r < R; r++) {
        m8[r] = (const uint8_t *)(A->bits + (int64_t)(i + r) * A->wpr);
        p[r] = A->rowptr[i + r];
        a[r][0] = a[r][1] = _mm256_setzero_ps();
    }
    for (k = 0; k + 32 <= n; k += 32) {
        uint32_t mw[4];
#pragma GCC unroll 4
        for (r = 0; r < R; r++)
            memcpy(&mw[r], m8[r] + k / 8, sizeof mw[r]);
#pragma GCC unroll 4
        for (c = 0; c < 4; c++) {
            const __m256 xv = _mm256_loadu_ps(x + k + 8 * c);
#pragma GCC unroll 4
            for (r = 0; r < R; r++) {
                const unsigned m = (mw[r] >> (8 * c)) & 255u;
                __m256 w;
                if (paired && !(c & 1)) {
                    v[r] = _mm256_broadcastsi128_si256(
                        _mm_loadu_si128((const __m128i *)(A->val + vb * p[r])));
                    w = qshuf8_at(m, v[r], _mm256_setzero_si256(), dtype, lut);
                } else if (paired) {
                    w = qshuf8_at(m, v[r], off, dtype, lut);
                } else {
                    w = qshuf8(m, A->val, p[r], dtype, lut);
                }
                a[r][c & 1] = _mm256_fmadd_ps(w, xv, a[r][c & 1]);
                p[r] += counted ? __builtin_popcount(m) : c8;
            }
        }
    }
#pragma GCC unroll 4
    for (r = 0; r < R; r++) {
        int j;
        float s;
        for (j = k; j < n; j += 8) { /* the row's last columns: bits counted */
            const int left = n - j;
            const unsigned m = m8[r][j / 8] & (left >= 8 ? 255u : (1u << left) - 1);
            const __m256i xm = _mm256_cmpgt_epi32(_mm256_set1_epi32(left),
                                                  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            a[r][0] = _mm256_fmadd_ps(qshuf8(m, A->val, p[r], dtype, lut),
                                      _mm256_maskload_ps(x + j, xm), a[r][0]);
            p[r] += __builtin_popcount(m);
        }
        s = hsum8(_mm256_add_ps(a[r][0], a[r][1]));
        if (dtype == SPRUCE_DT_INT8)
            s = s * 0x1p-24f * A->scale[i + r];
        spruce__put(y, i + r, s, A->add);
    }
}

/* Rows [r0, r1) of y = A x (y += A x for a column block with A->add set);
 * shuf (a constant): slices by qshuf8, rows in blocks of four. */
SPRUCE__INLINE void qspmv_rows_avx2(const struct spruce_qsparse *A, const float *x, float *y,
                                    int r0, int r1, const int dtype, const int shuf,
                                    const int counted, int c8)
{
    int i, g;
    if (shuf) {
        if (!counted && (dtype == SPRUCE_DT_BF16 ? 2 : 1) * c8 <= 8) {
            for (i = r0; i + 4 <= r1; i += 4)
                qshuf_rows(A, x, y, i, 4, dtype, 0, c8, 1);
            for (; i < r1; i++)
                qshuf_rows(A, x, y, i, 1, dtype, 0, c8, 1);
            return;
        }
        for (i = r0; i + 4 <= r1; i += 4)
            qshuf_rows(A, x, y, i, 4, dtype, counted, c8, 0);
        for (; i < r1; i++)
            qshuf_rows(A, x, y, i, 1, dtype, counted, c8, 0);
        return;
    }
    for (i = r0; i < r1; i++) {
        const uint8_t *m8 = (const uint8_t *)(A->bits + (int64_t)i * A->wpr);
        int64_t p = A->rowptr[i];
        float s;
        if (dtype == SPRUCE_DT_INT4) {
            const float *sc = A->scale + (size_t)i * A->ngroups;
            __m256 acc = _mm256_setzero_ps();
            for (g = 0; g < A->ngroups; g++) {
                const int k = g * A->groupsize;
                const int c1 = k + A->groupsize < A->cols ? k + A->groupsize : A->cols;
                const __m256i z = _mm256_set1_epi32(spruce__qzero(A, i, g));
                acc = _mm256_fmadd_ps(qspan8(m8, x, A->val, &p, k, c1, dtype, counted, c8, z),
                                      _mm256_set1_ps(sc[g]), acc);
            }
            s = hsum8(acc);
        } else {
            const __m256i z = _mm256_set1_epi32(dtype == SPRUCE_DT_INT8 ? spruce__qzero(A, i, 0) : 0);
            s = hsum8(qspan8(m8, x, A->val, &p, 0, A->cols, dtype, counted, c8, z));
            if (dtype == SPRUCE_DT_INT8)
                s *= A->scale[i];
        }
        spruce__put(y, i, s, A->add);
    }
}

SPRUCE__INLINE void qspmv_fmt_avx2(const struct spruce_qsparse *A, const float *x, float *y,
                                   int r0, int r1, const int dtype, const int shuf)
{
    if (A->format == SPRUCE_FMT_NM && 8 % A->m == 0)
        qspmv_rows_avx2(A, x, y, r0, r1, dtype, shuf, 0, 8 / A->m * A->n);
    else
        qspmv_rows_avx2(A, x, y, r0, r1, dtype, shuf, 1, 0);
}

SPRUCE__INLINE void qspmv_avx2(const struct spruce_qsparse *A, const float *x, float *y, int r0,
                               int r1, const int dtype)
{
    if (dtype == SPRUCE_DT_BF16 || (dtype == SPRUCE_DT_INT8 && !A->zero))
        qspmv_fmt_avx2(A, x, y, r0, r1, dtype, 1);
    else
        qspmv_fmt_avx2(A, x, y, r0, r1, dtype, 0);
}

#endif
