/* spmm_avx512.h: the inner loop shared by the AVX-512 products with batch > 1.
 * For a list of cnt weights v[p] at columns idx[p] of one row of W:
 *   acc[0 .. NV) += v[p] * X[idx[p], j0 .. j0 + 16 NV),  X (cols, batch) row-major.
 * Each weight is broadcast and meets a contiguous row of X; four weights are in
 * flight at once so that the FMA latency is hidden.  The last vector is masked
 * by tail (batch need not be a multiple of 16).  Internal to the kernels. */
#ifndef SPRUCE_SPMM_AVX512_H
#define SPRUCE_SPMM_AVX512_H

#include <immintrin.h>
#include <stdint.h>

#include "kernel_common.h"

SPRUCE__INLINE void spmm_acc512(const float *v, const void *idx, int64_t cnt, const float *Xj,
                                int64_t batch, __mmask16 tail, __m512 *acc, const int NV,
                                const int kind)
{
    /* independent sums: enough FMAs in flight to cover their latency */
    const int U = NV == 1 ? 8 : 4;
    __m512 a[8][4];
    int64_t p = 0;
    int u, q;
#pragma GCC unroll 8
    for (u = 0; u < U; u++)
#pragma GCC unroll 4
        for (q = 0; q < NV; q++)
            a[u][q] = _mm512_setzero_ps();
    for (; p + U <= cnt; p += U) {
#pragma GCC unroll 8
        for (u = 0; u < U; u++) {
            const __m512 wv = _mm512_set1_ps(v[p + u]);
            const float *xr = Xj + spmm_idx(idx, p + u, kind) * batch;
#pragma GCC unroll 4
            for (q = 0; q < NV; q++)
                a[u][q] = _mm512_fmadd_ps(
                    wv, _mm512_maskz_loadu_ps(q == NV - 1 ? tail : 0xffff, xr + 16 * q), a[u][q]);
        }
    }
    for (; p < cnt; p++) {
        const __m512 wv = _mm512_set1_ps(v[p]);
        const float *xr = Xj + spmm_idx(idx, p, kind) * batch;
#pragma GCC unroll 4
        for (q = 0; q < NV; q++)
            a[0][q] = _mm512_fmadd_ps(
                wv, _mm512_maskz_loadu_ps(q == NV - 1 ? tail : 0xffff, xr + 16 * q), a[0][q]);
    }
#pragma GCC unroll 4
    for (q = 0; q < NV; q++) {
#pragma GCC unroll 8
        for (u = 1; u < U; u++)
            a[0][q] = _mm512_add_ps(a[0][q], a[u][q]);
        acc[q] = _mm512_add_ps(acc[q], a[0][q]);
    }
}

/* Dispatch on the number of vectors (1..4) so each gets its own unrolled copy. */
SPRUCE__INLINE void spmm_acc512_nv(const float *v, const void *idx, int64_t cnt, const float *Xj,
                                   int64_t batch, __mmask16 tail, __m512 *acc, int nv,
                                   const int kind)
{
    switch (nv) {
    case 1: spmm_acc512(v, idx, cnt, Xj, batch, tail, acc, 1, kind); break;
    case 2: spmm_acc512(v, idx, cnt, Xj, batch, tail, acc, 2, kind); break;
    case 3: spmm_acc512(v, idx, cnt, Xj, batch, tail, acc, 3, kind); break;
    default: spmm_acc512(v, idx, cnt, Xj, batch, tail, acc, 4, kind); break;
    }
}

/* The words the products written once for every instruction set use
 * (csr_spmm.h): vectors of SPMM_LANES floats, the lanes of the last vector of
 * a pass, and the operations on the (up to four) vectors of a row of Y. */
#define SPMM_LANES 16
typedef __m512 spmm_vec;
typedef __mmask16 spmm_tail;

/* The tail of a pass over nb (1 .. 4 SPMM_LANES) columns of Y. */
SPRUCE__INLINE spmm_tail spmm_tail_for(int nb)
{
    return nb % 16 ? (__mmask16)((1u << (nb % 16)) - 1) : 0xffff;
}

SPRUCE__INLINE spmm_vec spmm_zero(void) { return _mm512_setzero_ps(); }

/* Vector q of nv at y. */
SPRUCE__INLINE spmm_vec spmm_load(const float *y, int q, int nv, spmm_tail t)
{
    return _mm512_maskz_loadu_ps(q == nv - 1 ? t : 0xffff, y + 16 * q);
}

SPRUCE__INLINE void spmm_store(float *y, const spmm_vec *acc, int nv, spmm_tail t)
{
    int q;
    for (q = 0; q < nv; q++)
        _mm512_mask_storeu_ps(y + 16 * q, q == nv - 1 ? t : 0xffff, acc[q]);
}

/* acc[0 .. nv) += the cnt weights v at columns idx against X[., j0 ..). */
SPRUCE__INLINE void spmm_row(const float *v, const void *idx, int64_t cnt, const float *X,
                             int batch, int j0, spmm_tail t, spmm_vec *acc, int nv, const int kind)
{
    if (kind == 16 && batch == 16) /* the common case, unrolled for it */
        spmm_acc512(v, idx, cnt, X, 16, 0xffff, acc, 1, 16);
    else
        spmm_acc512_nv(v, idx, cnt, X + j0, batch, t, acc, nv, kind);
}

#endif
