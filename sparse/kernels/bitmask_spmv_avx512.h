/* bitmask_spmv_avx512.h: the row loops of y = A x with AVX-512, shared by the
 * bitmask (bitmask_spmv_avx512.c) and N:M (nm_spmv_avx512.c) kernels, which
 * differ only in where the values of each 16-column slice start.
 * A is (rows, cols): bits (rows, wpr) words, kept values packed per row; x is
 * (cols), y is (rows).  For each 16-column slice m of a row's bitmask:
 *   acc += expand(m, v + off) * x[k .. k+16)
 * where off counts the bits of the word's earlier slices (bitmask), or is a
 * multiple of a constant c16 (N:M, every 16 columns holding exactly c16
 * values: no bit is counted).  The last, partial word of a row is counted in
 * both.  Internal to the kernels. */
#ifndef SPRUCE_BITMASK_SPMV_AVX512_H
#define SPRUCE_BITMASK_SPMV_AVX512_H

#include <immintrin.h>
#include <string.h>

#include "kernel_common.h"
#include "sparse_internal.h"

/* Software prefetch distance, in values: the load of a chunk's values waits on
 * its bitmask and a count, so the hardware cannot run far ahead by itself. */
#define SPMV_PF 1024

/* 16 bits of a row's bitmask (little-endian words), as a mask register. */
SPRUCE__INLINE __mmask16 mask16(const uint16_t *p)
{
    uint16_t m;
    memcpy(&m, p, sizeof m);
    return _cvtu32_mask16(m);
}

SPRUCE__INLINE __m512 expand(__mmask16 m, const float *v)
{
    return _mm512_maskz_expandloadu_ps(m, v);
}

/* Where the values of slices 1, 2, 3 of a word b start (off[0 .. 2]) and the
 * next word's (off[3]), counted from v: from the bits when counted (a
 * constant), else c16 apart. */
SPRUCE__INLINE void slice_offsets(uint64_t b, const int counted, int c16, int off[4])
{
    if (counted) {
        off[0] = __builtin_popcountll(b & 0xffffull);
        off[1] = __builtin_popcountll(b & 0xffffffffull);
        off[2] = __builtin_popcountll(b & 0xffffffffffffull);
        off[3] = __builtin_popcountll(b);
    } else {
        off[0] = c16;
        off[1] = 2 * c16;
        off[2] = 3 * c16;
        off[3] = 4 * c16;
    }
}

/* Two rows i, i + 1 at once, for long rows (x larger than the L1 cache can
 * keep next to the streamed weights): each 16 values of x are loaded once for
 * both rows, and two streams of values are in flight.  Matrices wider than
 * SPRUCE__BLOCK_COLS are packed as column blocks (pack.c), which does better;
 * this remains for the blocks and matrices that are still wider. */
SPRUCE__INLINE void spmv_two_rows_avx512(const struct spruce_sparse *A, const float *x, float *y,
                                         int i, const int counted, int c16)
{
    const int full = A->cols / 64, rem = A->cols % 64;
    const uint64_t *bits0 = A->bits + (int64_t)i * A->wpr, *bits1 = bits0 + A->wpr;
    const uint16_t *m0 = (const uint16_t *)bits0, *m1 = (const uint16_t *)bits1;
    const float *v0 = A->val + A->rowptr[i], *v1 = A->val + A->rowptr[i + 1];
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
    int w, c;
    for (w = 0; w < full; w++) {
        const float *xp = x + 64 * w;
        const __m512 x0 = _mm512_loadu_ps(xp), x1 = _mm512_loadu_ps(xp + 16);
        const __m512 x2 = _mm512_loadu_ps(xp + 32), x3 = _mm512_loadu_ps(xp + 48);
        int p[4], q[4];
        slice_offsets(bits0[w], counted, c16, p);
        slice_offsets(bits1[w], counted, c16, q);
        _mm_prefetch((const char *)(v0 + SPMV_PF), _MM_HINT_T0);
        _mm_prefetch((const char *)(v0 + SPMV_PF + 16), _MM_HINT_T0);
        _mm_prefetch((const char *)(v1 + SPMV_PF), _MM_HINT_T0);
        _mm_prefetch((const char *)(v1 + SPMV_PF + 16), _MM_HINT_T0);
        a0 = _mm512_fmadd_ps(expand(mask16(m0 + 4 * w), v0), x0, a0);
        b0 = _mm512_fmadd_ps(expand(mask16(m1 + 4 * w), v1), x0, b0);
        a1 = _mm512_fmadd_ps(expand(mask16(m0 + 4 * w + 1), v0 + p[0]), x1, a1);
        b1 = _mm512_fmadd_ps(expand(mask16(m1 + 4 * w + 1), v1 + q[0]), x1, b1);
        a0 = _mm512_fmadd_ps(expand(mask16(m0 + 4 * w + 2), v0 + p[1]), x2, a0);
        b0 = _mm512_fmadd_ps(expand(mask16(m1 + 4 * w + 2), v1 + q[1]), x2, b0);
        a1 = _mm512_fmadd_ps(expand(mask16(m0 + 4 * w + 3), v0 + p[2]), x3, a1);
        b1 = _mm512_fmadd_ps(expand(mask16(m1 + 4 * w + 3), v1 + q[2]), x3, b1);
        v0 += p[3];
        v1 += q[3];
    }
    for (c = 0; 16 * c < rem; c++) {
        const int left = rem - 16 * c;
        const __mmask16 xm = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
        const __mmask16 p = (__mmask16)(bits0[full] >> (16 * c));
        const __mmask16 q = (__mmask16)(bits1[full] >> (16 * c));
        const __m512 xv = _mm512_maskz_loadu_ps(xm, x + 64 * full + 16 * c);
        a0 = _mm512_fmadd_ps(expand(p, v0), xv, a0);
        b0 = _mm512_fmadd_ps(expand(q, v1), xv, b0);
        v0 += __builtin_popcount(p);
        v1 += __builtin_popcount(q);
    }
    spruce__put(y, i, _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)), A->add);
    spruce__put(y, i + 1, _mm512_reduce_add_ps(_mm512_add_ps(b0, b1)), A->add);
}

/* Rows [r0, r1) of y = A x (y += A x for a column block with A->add set).
 * counted (a constant): offsets from the bits; else c16 values per slice. */
SPRUCE__INLINE void spmv_rows_avx512(const struct spruce_sparse *A, const float *x, float *y,
                                     int r0, int r1, const int counted, int c16)
{
    const int full = A->cols / 64, rem = A->cols % 64;
    int i, w, c;
    if (A->cols > 8192)
        for (; r0 + 2 <= r1; r0 += 2)
            spmv_two_rows_avx512(A, x, y, r0, counted, c16);
    for (i = r0; i < r1; i++) {
        const uint64_t *bits = A->bits + (int64_t)i * A->wpr;
        /* the same bits as 16-bit masks: loaded straight into mask registers
         * (a load, where moving them from a general register would compete
         * with the expands for the same execution port) */
        const uint16_t *m16 = (const uint16_t *)bits;
        const float *v = A->val + A->rowptr[i];
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        for (w = 0; w < full; w++) {
            const float *xp = x + 64 * w;
            int off[4];
            _mm_prefetch((const char *)(v + SPMV_PF), _MM_HINT_T0);
            _mm_prefetch((const char *)(v + SPMV_PF + 16), _MM_HINT_T0);
            _mm_prefetch((const char *)(bits + w + 64), _MM_HINT_T0);
            slice_offsets(bits[w], counted, c16, off);
            a0 = _mm512_fmadd_ps(expand(mask16(m16 + 4 * w), v), _mm512_loadu_ps(xp), a0);
            a1 = _mm512_fmadd_ps(expand(mask16(m16 + 4 * w + 1), v + off[0]),
                                 _mm512_loadu_ps(xp + 16), a1);
            a2 = _mm512_fmadd_ps(expand(mask16(m16 + 4 * w + 2), v + off[1]),
                                 _mm512_loadu_ps(xp + 32), a2);
            a3 = _mm512_fmadd_ps(expand(mask16(m16 + 4 * w + 3), v + off[2]),
                                 _mm512_loadu_ps(xp + 48), a3);
            v += off[3];
        }
        if (rem) {
            const uint64_t b = bits[full];
            const float *xp = x + 64 * full;
            for (c = 0; 16 * c < rem; c++) {
                const int left = rem - 16 * c;
                const __mmask16 xm = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
                const __mmask16 m = (__mmask16)(b >> (16 * c));
                a0 = _mm512_fmadd_ps(expand(m, v), _mm512_maskz_loadu_ps(xm, xp + 16 * c), a0);
                v += __builtin_popcount(m);
            }
        }
        spruce__put(y, i,
                    _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1),
                                                       _mm512_add_ps(a2, a3))),
                    A->add);
    }
}

#endif
