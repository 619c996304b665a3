/* dense_spmv_bf16_avx2.c: y = W x for bf16 weights with AVX2+FMA.
 * W is (rows, cols) bf16 row-major, x (cols), y (rows):
 *   y_i = sum_j float(w_ij) x_j,
 * sixteen columns a step in two sums per row (so that a row's multiply-adds
 * do not wait on each other), widened exactly (bf16x8); four rows share every
 * load of x; the last cols % 16 columns take one step of eight, then one by
 * one. */
#include "qdense_avx2.h"

/* Rows i .. i + R of y. */
SPRUCE__INLINE void rows(const spruce_qmatrix *A, const float *x, float *y, int i, const int R)
{
    const int n = A->cols, n16 = n & ~15, n8 = n & ~7;
    const uint16_t *w[SPRUCE__QROWS];
    __m256 acc[SPRUCE__QROWS], acc2[SPRUCE__QROWS];
    int r, j;
    SPRUCE__EACH_ROW
    for (r = 0; r < R; r++) {
        w[r] = (const uint16_t *)(A->q + (size_t)(i + r) * A->ld);
        acc[r] = acc2[r] = _mm256_setzero_ps();
    }
    for (j = 0; j < n16; j += 16) {
        const __m256 x0 = _mm256_loadu_ps(x + j), x1 = _mm256_loadu_ps(x + j + 8);
        SPRUCE__EACH_ROW
        for (r = 0; r < R; r++) {
            acc[r] = _mm256_fmadd_ps(bf16x8(w[r] + j), x0, acc[r]);
            acc2[r] = _mm256_fmadd_ps(bf16x8(w[r] + j + 8), x1, acc2[r]);
        }
    }
    for (; j < n8; j += 8) {
        const __m256 xv = _mm256_loadu_ps(x + j);
        SPRUCE__EACH_ROW
        for (r = 0; r < R; r++)
            acc[r] = _mm256_fmadd_ps(bf16x8(w[r] + j), xv, acc[r]);
    }
    SPRUCE__EACH_ROW
    for (r = 0; r < R; r++) {
        float s = hsum8(_mm256_add_ps(acc[r], acc2[r]));
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
