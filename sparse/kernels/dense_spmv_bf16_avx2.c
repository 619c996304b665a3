/* dense_spmv_bf16_avx2.c: y = W x for bf16 weights with AVX2+FMA.
 * W is (rows, cols) bf16 row-major, x (cols), y (rows):
 *   y_i = sum_j float(w_ij) x_j,
 * eight columns a step, widened exactly (bf16x8); eight rows share every
 * load of x; the last cols % 8 columns are summed one by one. */
#include "qdense_avx2.h"

/* Rows i .. i + R of y (R = 1 .. 8, a constant).  Eight columns a step, one
 * sum per row: eight rows keep the multiply-adds independent and more streams
 * of weights in flight.  Each row also asks for the line at the same column
 * of the row 8 below (the next block's), into L2, a line at a time: the
 * hardware prefetchers stop at 4 KB pages, which rows of 2048 columns fill
 * (as dense_spmv_int8_avx2.c). */
#define BF16_ROWS 8
SPRUCE__INLINE void rows(const spruce_qmatrix *A, const float *x, float *y, int i, const int R)
{
    const int n = A->cols, n8 = n & ~7;
    const uint16_t *w[BF16_ROWS];
    __m256 acc[BF16_ROWS];
    int r, j;
#pragma GCC unroll 8
    for (r = 0; r < R; r++) {
        w[r] = (const uint16_t *)(A->q + (size_t)(i + r) * A->ld);
        acc[r] = _mm256_setzero_ps();
    }
    for (j = 0; j < n8; j += 8) {
        const __m256 xv = _mm256_loadu_ps(x + j);
        if (!(j & 31)) {
#pragma GCC unroll 8
            for (r = 0; r < R; r++)
                _mm_prefetch((const char *)(w[r] + j) + (size_t)BF16_ROWS * A->ld, _MM_HINT_T1);
        }
#pragma GCC unroll 8
        for (r = 0; r < R; r++)
            acc[r] = _mm256_fmadd_ps(bf16x8(w[r] + j), xv, acc[r]);
    }
#pragma GCC unroll 8
    for (r = 0; r < R; r++) {
        float s = hsum8(acc[r]);
        for (j = n8; j < n; j++)
            s += spruce_bf16_to_f32(w[r][j]) * x[j];
        y[i + r] = s;
    }
}

void dense_spmv_bf16_avx2(const spruce_qmatrix *A, const float *x, int batch, float *y, int r0,
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
