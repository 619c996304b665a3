/* spmm_avx2.h: the inner loop shared by the AVX2 products with batch > 1.
 * For a list of cnt weights v[p] at columns idx[p] of one row of W:
 *   acc[0 .. NV) += v[p] * X[idx[p], j0 .. j0 + 8 NV),  X (cols, batch) row-major,
 * one broadcast weight against a contiguous row of X, two weights in flight.
 * The last vector is loaded with the lane mask tail.  Internal to the kernels. */
#ifndef SPRUCE_SPMM_AVX2_H
#define SPRUCE_SPMM_AVX2_H

#include <immintrin.h>
#include <stdint.h>

#include "kernel_common.h"

SPRUCE__INLINE __m256 ld8(const float *x, int q, const int NV, __m256i tail, int full)
{
    if (q == NV - 1 && !full)
        return _mm256_maskload_ps(x, tail);
    return _mm256_loadu_ps(x);
}

SPRUCE__INLINE void spmm_acc256(const float *v, const void *idx, int64_t cnt, const float *Xj,
                                int64_t batch, __m256i tail, int full, __m256 *acc, const int NV,
                                const int kind)
{
    __m256 a[2][4];
    int64_t p = 0;
    int u, q;
#pragma GCC unroll 2
    for (u = 0; u < 2; u++)
#pragma GCC unroll 4
        for (q = 0; q < NV; q++)
            a[u][q] = _mm256_setzero_ps();
    for (; p + 2 <= cnt; p += 2) {
#pragma GCC unroll 2
        for (u = 0; u < 2; u++) {
            const __m256 wv = _mm256_set1_ps(v[p + u]);
            const float *xr = Xj + spmm_idx(idx, p + u, kind) * batch;
#pragma GCC unroll 4
            for (q = 0; q < NV; q++)
                a[u][q] = _mm256_fmadd_ps(wv, ld8(xr + 8 * q, q, NV, tail, full), a[u][q]);
        }
    }
    for (; p < cnt; p++) {
        const __m256 wv = _mm256_set1_ps(v[p]);
        const float *xr = Xj + spmm_idx(idx, p, kind) * batch;
#pragma GCC unroll 4
        for (q = 0; q < NV; q++)
            a[0][q] = _mm256_fmadd_ps(wv, ld8(xr + 8 * q, q, NV, tail, full), a[0][q]);
    }
#pragma GCC unroll 4
    for (q = 0; q < NV; q++)
        acc[q] = _mm256_add_ps(acc[q], _mm256_add_ps(a[0][q], a[1][q]));
}

SPRUCE__INLINE void spmm_acc256_nv(const float *v, const void *idx, int64_t cnt, const float *Xj,
                                   int64_t batch, __m256i tail, int full, __m256 *acc, int nv,
                                   const int kind)
{
    switch (nv) {
    case 1: spmm_acc256(v, idx, cnt, Xj, batch, tail, full, acc, 1, kind); break;
    case 2: spmm_acc256(v, idx, cnt, Xj, batch, tail, full, acc, 2, kind); break;
    case 3: spmm_acc256(v, idx, cnt, Xj, batch, tail, full, acc, 3, kind); break;
    default: spmm_acc256(v, idx, cnt, Xj, batch, tail, full, acc, 4, kind); break;
    }
}

/* Lane mask with the first n (1..8) lanes set. */
SPRUCE__INLINE __m256i lanes8(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* acc[q] += y[8 q .. 8 q + 8) for the first nv vectors (the last through tail):
 * a column block that adds its product to Y (A->add). */
SPRUCE__INLINE void add8(const float *y, __m256 *acc, int nv, __m256i tail, int full)
{
    int q;
    for (q = 0; q < nv; q++)
        acc[q] = _mm256_add_ps(ld8(y + 8 * q, q, nv, tail, full), acc[q]);
}

/* Store the first NV vectors of acc at y (the last one through tail). */
SPRUCE__INLINE void store8(float *y, const __m256 *acc, int nv, __m256i tail, int full)
{
    int q;
    for (q = 0; q < nv; q++) {
        if (q == nv - 1 && !full)
            _mm256_maskstore_ps(y + 8 * q, tail, acc[q]);
        else
            _mm256_storeu_ps(y + 8 * q, acc[q]);
    }
}

/* The words the products written once for every instruction set use
 * (csr_spmm.h): vectors of SPMM_LANES floats, the lanes of the last vector of
 * a pass, and the operations on the (up to four) vectors of a row of Y. */
#define SPMM_LANES 8
typedef __m256 spmm_vec;
typedef struct {
    __m256i m; /* the lanes of the last vector, when not full */
    int full;
} spmm_tail;

/* The tail of a pass over nb (1 .. 4 SPMM_LANES) columns of Y. */
SPRUCE__INLINE spmm_tail spmm_tail_for(int nb)
{
    spmm_tail t;
    t.full = nb % 8 == 0;
    t.m = lanes8(t.full ? 8 : nb % 8);
    return t;
}

SPRUCE__INLINE spmm_vec spmm_zero(void) { return _mm256_setzero_ps(); }

/* Vector q of nv at y. */
SPRUCE__INLINE spmm_vec spmm_load(const float *y, int q, int nv, spmm_tail t)
{
    return ld8(y + 8 * q, q, nv, t.m, t.full);
}

SPRUCE__INLINE void spmm_store(float *y, const spmm_vec *acc, int nv, spmm_tail t)
{
    store8(y, acc, nv, t.m, t.full);
}

/* acc[0 .. nv) += the cnt weights v at columns idx against X[., j0 ..). */
SPRUCE__INLINE void spmm_row(const float *v, const void *idx, int64_t cnt, const float *X,
                             int batch, int j0, spmm_tail t, spmm_vec *acc, int nv, const int kind)
{
    spmm_acc256_nv(v, idx, cnt, X + j0, batch, t.m, t.full, acc, nv, kind);
}

#endif
