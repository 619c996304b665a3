/* qsparse_spmv_avx512.h: the row loops of y = A x with AVX-512 for bitmask
 * and N:M matrices of bf16, int8 and int4 values (qsparse_internal.h), shared
 * by one file per value type.  A is (rows, cols), x (cols), y (rows).
 * For each 16-column slice with bits m of a row, the next 16 stored values
 * are widened to 32-bit lanes (bf16 as float bits; int8 and int4 minus their
 * zero point) and a register expand driven by m puts the first popcount(m) of
 * them in the lanes whose bit is set (zeros elsewhere: no gather):
 *   acc += float(expand(m, widen(v + p))) * x[k .. k+16),  p += popcount(m)
 * (N:M with M dividing 16: p += 16 N / M, no bit counted).  Then
 *   bf16  y_i = sum acc
 *   int8  y_i = s_i sum acc
 *   int4  y_i = sum_g s_ig (sum acc over the slices of group g)
 * The values carry SPRUCE__QPAD bytes of padding, so 16 values (and one
 * byte more for int4) may be loaded at any stored one.  Internal. */
#ifndef SPRUCE_QSPARSE_SPMV_AVX512_H
#define SPRUCE_QSPARSE_SPMV_AVX512_H

#include <immintrin.h>
#include <string.h>

#include "kernel_common.h"
#include "qsparse_internal.h"

/* Software prefetch distance, in bytes of values. */
#define QSPMV_PF 512

/* 16 stored values from value p on as 32-bit lanes (see above).  aligned (a
 * constant), for N:M: int4 p is even (no half-byte shift); int8 slices hold at
 * most 8 values, and only 8 bytes are loaded (on Zen 4 the 16-byte loads at a
 * stride of 8 made 2:4 int8 1.4x slower than 50% bitmask int8). */
SPRUCE__INLINE __m512i widen16(const uint8_t *val, int64_t p, const int dtype, const int aligned,
                               __m512i z)
{
    if (dtype == SPRUCE_DT_BF16)
        return _mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(val + 2 * p))), 16);
    if (dtype == SPRUCE_DT_INT8 && aligned) /* at most 8 values per slice (N:M) */
        return _mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(val + p))),
                                z);
    if (dtype == SPRUCE_DT_INT8)
        return _mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(val + p))),
                                z);
    {
        const uint8_t *b = val + (p >> 1);
        const __m128i lo4 = _mm_set1_epi8(15);
        uint64_t w;
        __m128i q;
        memcpy(&w, b, sizeof w);
        if (!aligned) /* nibbles p .. p + 16 start half-way into byte b */
            w = (w >> (4 * (p & 1))) | (((uint64_t)b[8] << 60) & (0 - (uint64_t)(p & 1)));
        q = _mm_cvtsi64_si128((long long)w);
        q = _mm_unpacklo_epi8(_mm_and_si128(q, lo4), _mm_and_si128(_mm_srli_epi16(q, 4), lo4));
        return _mm512_sub_epi32(_mm512_cvtepu8_epi32(q), z);
    }
}

/* The kept weights of a slice with bits m, in their lanes, as floats
 * (before the int8 / int4 scale). */
SPRUCE__INLINE __m512 qslice16(__mmask16 m, const uint8_t *val, int64_t p, const int dtype,
                               const int aligned, __m512i z)
{
    const __m512i e = _mm512_maskz_expand_epi32(m, widen16(val, p, dtype, aligned, z));
    return dtype == SPRUCE_DT_BF16 ? _mm512_castsi512_ps(e) : _mm512_cvtepi32_ps(e);
}

SPRUCE__INLINE unsigned bits16(const uint16_t *m16, int s)
{
    uint16_t m;
    memcpy(&m, m16 + s, sizeof m);
    return m;
}

SPRUCE__INLINE int64_t value_byte(int64_t p, const int dtype)
{
    return dtype == SPRUCE_DT_BF16 ? 2 * p : dtype == SPRUCE_DT_INT8 ? p : p >> 1;
}

/* Sum over the slices of columns [k, c1) of a row (k a multiple of 16; c1 the
 * row's end or a multiple of 16), its values from *pp on, which moves past them.
 * counted (a constant): p moves by the bits; else by c16 per full slice. */
SPRUCE__INLINE __m512 qspan16(const uint16_t *m16, const float *x, const uint8_t *val,
                              int64_t *pp, int k, int c1, const int dtype, const int counted,
                              const int aligned, int c16, __m512i z)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    int64_t p = *pp;
    for (; k + 64 <= c1; k += 64) {
        const unsigned q0 = bits16(m16, k / 16), q1 = bits16(m16, k / 16 + 1);
        const unsigned q2 = bits16(m16, k / 16 + 2), q3 = bits16(m16, k / 16 + 3);
        const int o1 = counted ? __builtin_popcount(q0) : c16;
        const int o2 = o1 + (counted ? __builtin_popcount(q1) : c16);
        const int o3 = o2 + (counted ? __builtin_popcount(q2) : c16);
        const int o4 = o3 + (counted ? __builtin_popcount(q3) : c16);
        _mm_prefetch((const char *)(val + value_byte(p, dtype) + QSPMV_PF), _MM_HINT_T0);
        a0 = _mm512_fmadd_ps(qslice16(_cvtu32_mask16(q0), val, p, dtype, aligned, z),
                             _mm512_loadu_ps(x + k), a0);
        a1 = _mm512_fmadd_ps(qslice16(_cvtu32_mask16(q1), val, p + o1, dtype, aligned, z),
                             _mm512_loadu_ps(x + k + 16), a1);
        a2 = _mm512_fmadd_ps(qslice16(_cvtu32_mask16(q2), val, p + o2, dtype, aligned, z),
                             _mm512_loadu_ps(x + k + 32), a2);
        a3 = _mm512_fmadd_ps(qslice16(_cvtu32_mask16(q3), val, p + o3, dtype, aligned, z),
                             _mm512_loadu_ps(x + k + 48), a3);
        p += o4;
    }
    for (; k + 16 <= c1; k += 16) {
        const unsigned q = bits16(m16, k / 16);
        a0 = _mm512_fmadd_ps(qslice16(_cvtu32_mask16(q), val, p, dtype, aligned, z),
                             _mm512_loadu_ps(x + k), a0);
        p += counted ? __builtin_popcount(q) : c16;
    }
    if (k < c1) { /* the row's last, partial slice: its bits are counted */
        const __mmask16 xm = (__mmask16)((1u << (c1 - k)) - 1);
        const unsigned q = bits16(m16, k / 16) & xm;
        a1 = _mm512_fmadd_ps(qslice16(_cvtu32_mask16(q), val, p, dtype, 0, z),
                             _mm512_maskz_loadu_ps(xm, x + k), a1);
        p += __builtin_popcount(q);
    }
    *pp = p;
    return _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
}

/* Rows [r0, r1) of y = A x (y += A x for a column block with A->add set). */
SPRUCE__INLINE void qspmv_rows_avx512(const struct spruce_qsparse *A, const float *x, float *y,
                                      int r0, int r1, const int dtype, const int counted,
                                      const int aligned, int c16)
{
    int i, g;
    for (i = r0; i < r1; i++) {
        const uint16_t *m16 = (const uint16_t *)(A->bits + (int64_t)i * A->wpr);
        int64_t p = A->rowptr[i];
        float s;
        if (dtype == SPRUCE_DT_INT4) {
            const float *sc = A->scale + (size_t)i * A->ngroups;
            __m512 acc = _mm512_setzero_ps();
            for (g = 0; g < A->ngroups; g++) {
                const int k = g * A->groupsize;
                const int c1 = k + A->groupsize < A->cols ? k + A->groupsize : A->cols;
                const __m512i z = _mm512_set1_epi32(spruce__qzero(A, i, g));
                acc = _mm512_fmadd_ps(qspan16(m16, x, A->val, &p, k, c1, dtype, counted, aligned,
                                              c16, z),
                                      _mm512_set1_ps(sc[g]), acc);
            }
            s = _mm512_reduce_add_ps(acc);
        } else {
            const __m512i z = _mm512_set1_epi32(dtype == SPRUCE_DT_INT8 ? spruce__qzero(A, i, 0) : 0);
            s = _mm512_reduce_add_ps(
                qspan16(m16, x, A->val, &p, 0, A->cols, dtype, counted, aligned, c16, z));
            if (dtype == SPRUCE_DT_INT8)
                s *= A->scale[i];
        }
        spruce__put(y, i, s, A->add);
    }
}

/* The kernel of one value type: N:M with M dividing 16 moves by constants,
 * everything else counts bits. */
SPRUCE__INLINE void qspmv_avx512(const struct spruce_qsparse *A, const float *x, float *y, int r0,
                                 int r1, const int dtype)
{
    if (A->format == SPRUCE_FMT_NM && 16 % A->m == 0) {
        const int c16 = 16 / A->m * A->n;
        if (dtype == SPRUCE_DT_INT4 ? c16 % 2 == 0 : dtype == SPRUCE_DT_INT8 && c16 <= 8)
            qspmv_rows_avx512(A, x, y, r0, r1, dtype, 0, 1, c16);
        else
            qspmv_rows_avx512(A, x, y, r0, r1, dtype, 0, 0, c16);
    } else {
        qspmv_rows_avx512(A, x, y, r0, r1, dtype, 1, 0, 0);
    }
}

#endif
