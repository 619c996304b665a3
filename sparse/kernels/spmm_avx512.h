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

#define SPRUCE__INLINE static inline __attribute__((always_inline))

/* kind: 16 -> uint16_t columns, 32 -> uint32_t columns, 0 -> int32_t columns */
SPRUCE__INLINE int64_t spmm_idx(const void *idx, int64_t p, const int kind)
{
    if (kind == 16)
        return ((const uint16_t *)idx)[p];
    if (kind == 32)
        return ((const uint32_t *)idx)[p];
    return ((const int32_t *)idx)[p];
}

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

#endif
