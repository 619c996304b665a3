/* dense_spmv_int8_avx2.c: y = W x for int8 weights with AVX2+FMA.
 * W is (rows, cols) int8 with a scale s_i and zero point z_i per row:
 *   y_i = s_i sum_j (q_ij - z_i) x_j,
 * eight columns at a time, widened and the zero point subtracted exactly as
 * integers (int8x8), multiplied in float32; four rows share every load of x;
 * the last cols % 8 columns of a row are summed one by one. */
#include "qdense_avx2.h"

/* Rows i .. i + R of y. */
SPRUCE__INLINE void rows(const spruce_qmatrix *A, const float *x, float *y, int i, const int R)
{
    const int n = A->cols, n8 = n & ~7;
    const int8_t *q[SPRUCE__QROWS];
    __m256i z[SPRUCE__QROWS];
    __m256 acc[SPRUCE__QROWS];
    int r, j;
    for (r = 0; r < R; r++) {
        q[r] = (const int8_t *)(A->q + (size_t)(i + r) * A->ld);
        z[r] = _mm256_set1_epi32(spruce__zero(A, i + r, 0));
        acc[r] = _mm256_setzero_ps();
    }
    for (j = 0; j < n8; j += 8) {
        const __m256 xv = _mm256_loadu_ps(x + j);
        for (r = 0; r < R; r++)
            acc[r] = _mm256_fmadd_ps(int8x8(q[r] + j, z[r]), xv, acc[r]);
    }
    for (r = 0; r < R; r++) {
        const float zr = (float)spruce__zero(A, i + r, 0);
        float s = hsum8(acc[r]);
        for (j = n8; j < n; j++)
            s += ((float)q[r][j] - zr) * x[j];
        y[i + r] = A->scale[i + r] * s;
    }
}

void dense_spmv_int8_avx2(const spruce_qmatrix *A, const float *x, int batch, float *y, int r0,
                          int r1)
{
    (void)batch;
    SPRUCE__QROW_BLOCKS(rows, r0, r1, A, x, y);
}
