/* dense_spmv_bf16_avx512.c: y = W x for bf16 weights with AVX-512.
 * W is (rows, cols) bf16 row-major, x (cols), y (rows):
 *   y_i = sum_j float(w_ij) x_j,
 * sixteen columns at a time: a bf16 is the top half of its float32, so
 * widening to 32 bits and shifting left by 16 gives w exactly.  Eight rows
 * share every load of x, and each row asks for the line at the same column
 * of the row 8 below, into L2, a line at a time (the hardware prefetchers
 * stay within a 4 KB page, which a row of 2048 columns fills), as
 * dense_spmv_bf16_avx2.c does; the last columns of a row are masked loads. */
#include <immintrin.h>

#include "kernel_common.h"
#include "qdense.h"

#define BF16_ROWS 8

SPRUCE__INLINE __m512 bf16x16(const uint16_t *w, __mmask16 m)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(m == 0xffff ? _mm256_loadu_si256((const __m256i *)w)
                                          : _mm256_maskz_loadu_epi16(m, w)),
        16));
}

/* Rows i .. i + R of y (R = 1 .. 8, a constant). */
SPRUCE__INLINE void rows(const spruce_qmatrix *A, const float *x, float *y, int i, const int R)
{
    const int n = A->cols, n16 = n & ~15;
    const uint16_t *w[BF16_ROWS];
    __m512 acc[BF16_ROWS];
    int r, j;
#pragma GCC unroll 8
    for (r = 0; r < R; r++) {
        w[r] = (const uint16_t *)(A->q + (size_t)(i + r) * A->ld);
        acc[r] = _mm512_setzero_ps();
    }
    for (j = 0; j < n16; j += 16) {
        const __m512 xv = _mm512_loadu_ps(x + j);
        if (!(j & 31)) {
#pragma GCC unroll 8
            for (r = 0; r < R; r++)
                _mm_prefetch((const char *)(w[r] + j) + (size_t)BF16_ROWS * A->ld, _MM_HINT_T1);
        }
#pragma GCC unroll 8
        for (r = 0; r < R; r++)
            acc[r] = _mm512_fmadd_ps(bf16x16(w[r] + j, 0xffff), xv, acc[r]);
    }
    if (j < n) {
        const __mmask16 m = (__mmask16)((1u << (n - j)) - 1);
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + j);
#pragma GCC unroll 8
        for (r = 0; r < R; r++)
            acc[r] = _mm512_fmadd_ps(bf16x16(w[r] + j, m), xv, acc[r]);
    }
#pragma GCC unroll 8
    for (r = 0; r < R; r++)
        y[i + r] = _mm512_reduce_add_ps(acc[r]);
}

void dense_spmv_bf16_avx512(const spruce_qmatrix *A, const float *x, int batch, float *y, int r0,
                            int r1)
{
    int i = r0;
    (void)batch;
    for (; i + 8 <= r1; i += 8)
        rows(A, x, y, i, 8);
    for (; i + 4 <= r1; i += 4)
        rows(A, x, y, i, 4);
    for (; i < r1; i++)
        rows(A, x, y, i, 1);
}
