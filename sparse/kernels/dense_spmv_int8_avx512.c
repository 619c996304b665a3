/* dense_spmv_int8_avx512.c: y = W x for int8 weights with AVX-512.
 * W is (rows, cols) int8 with a scale s_i and zero point z_i per row:
 *   y_i = s_i sum_j (q_ij - z_i) x_j,
 * sixteen columns at a time, widened to 32 bits, the zero point subtracted
 * exactly as an integer (only when there is one), converted and multiplied
 * in float32.  Eight rows share every load of x, and each row asks for the
 * line at the same column of the row 8 below, into L2, a line at a time (the
 * hardware prefetchers stay within a 4 KB page, and a row of 4096 int8 is
 * one), as dense_spmv_int8_avx2.c does; the last columns of a row are masked
 * loads.  (The VNNI integer dot products would need x quantized to int8, a
 * different product: not used.) */
#include <immintrin.h>

#include "kernel_common.h"
#include "qdense.h"

#define INT8_ROWS 8

/* Sixteen int8 at q (lanes of m) minus z as float32 (exact). */
SPRUCE__INLINE __m512 int8x16(const int8_t *q, __mmask16 m, __m512i z, const int zp)
{
    __m512i v = _mm512_cvtepi8_epi32(m == 0xffff ? _mm_loadu_si128((const __m128i *)q)
                                                 : _mm_maskz_loadu_epi8(m, q));
    if (zp)
        v = _mm512_sub_epi32(v, z);
    return _mm512_cvtepi32_ps(v);
}

/* Rows i .. i + R of y (R = 1 .. 8, a constant); zp: subtract the rows'
 * zero points. */
SPRUCE__INLINE void rows(const spruce_qmatrix *A, const float *x, float *y, const int zp, int i,
                         const int R)
{
    const int n = A->cols, n16 = n & ~15;
    const int8_t *q[INT8_ROWS];
    __m512i z[INT8_ROWS];
    __m512 acc[INT8_ROWS];
    int r, j;
#pragma GCC unroll 8
    for (r = 0; r < R; r++) {
        q[r] = (const int8_t *)(A->q + (size_t)(i + r) * A->ld);
        z[r] = _mm512_set1_epi32(zp ? spruce__zero(A, i + r, 0) : 0);
        acc[r] = _mm512_setzero_ps();
    }
    for (j = 0; j < n16; j += 16) {
        const __m512 xv = _mm512_loadu_ps(x + j);
        if (!(j & 63)) {
#pragma GCC unroll 8
            for (r = 0; r < R; r++)
                _mm_prefetch((const char *)(q[r] + (size_t)INT8_ROWS * A->ld + j), _MM_HINT_T1);
        }
#pragma GCC unroll 8
        for (r = 0; r < R; r++)
            acc[r] = _mm512_fmadd_ps(int8x16(q[r] + j, 0xffff, z[r], zp), xv, acc[r]);
    }
    if (j < n) {
        const __mmask16 m = (__mmask16)((1u << (n - j)) - 1);
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + j);
#pragma GCC unroll 8
        for (r = 0; r < R; r++)
            acc[r] = _mm512_fmadd_ps(_mm512_maskz_mov_ps(m, int8x16(q[r] + j, m, z[r], zp)), xv,
                                     acc[r]);
    }
#pragma GCC unroll 8
    for (r = 0; r < R; r++)
        y[i + r] = A->scale[i + r] * _mm512_reduce_add_ps(acc[r]);
}

/* Rows [r0, r1): blocks of 8, then of 4, then one by one. */
SPRUCE__INLINE void rows_all(const spruce_qmatrix *A, const float *x, float *y, int r0, int r1,
                             const int zp)
{
    int i = r0;
    for (; i + 8 <= r1; i += 8)
        rows(A, x, y, zp, i, 8);
    for (; i + 4 <= r1; i += 4)
        rows(A, x, y, zp, i, 4);
    for (; i < r1; i++)
        rows(A, x, y, zp, i, 1);
}

void dense_spmv_int8_avx512(const spruce_qmatrix *A, const float *x, int batch, float *y, int r0,
                            int r1)
{
    (void)batch;
    if (A->zero)
        rows_all(A, x, y, r0, r1, 1);
    else
        rows_all(A, x, y, r0, r1, 0);
}
