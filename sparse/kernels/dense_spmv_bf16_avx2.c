/* dense_spmv_bf16_avx2.c: y = W x for bf16 weights with AVX2+FMA.
 * W is (rows, cols) bf16 row-major, x (cols), y (rows):
 *   y_i = sum_j float(w_ij) x_j,
 * eight columns at a time, widened exactly (bf16x8); four rows share every
 * load of x; the last cols % 8 columns of a row are summed one by one. */
#include "qdense_avx2.h"

/* Rows i .. i + R of y. */
SPRUCE__INLINE void rows(const spruce_qmatrix *A, const float *x, float *y, int i, const int R)
{
    const int n = A->cols, n8 = n & ~7;
    const uint16_t *w[SPRUCE__QROWS];
    __m256 acc[SPRUCE__QROWS];
    int r, j;
    for (r = 0; r < R; r++) {
        w[r] = (const uint16_t *)(A->q + (size_t)(i + r) * A->ld);
        acc[r] = _mm256_setzero_ps();
    }
    for (j = 0; j < n8; j += 8) {
        const __m256 xv = _mm256_loadu_ps(x + j);
        for (r = 0; r < R; r++)
            acc[r] = _mm256_fmadd_ps(bf16x8(w[r] + j), xv, acc[r]);
    }
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
    (void)batch;
    SPRUCE__QROW_BLOCKS(rows, r0, r1, A, x, y);
}
