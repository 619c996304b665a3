/* dense_spmv_int8_avx2.c: y = W x for int8 weights with AVX2+FMA.
 * W is (rows, cols) int8 with a scale s_i and zero point z_i per row:
 *   y_i = s_i sum_j (q_ij - z_i) x_j,
 * sixteen columns at a time in two sums per row, widened and the zero point
 * (when the grid has one) subtracted exactly as integers (int8x8), multiplied
 * in float32; four rows share every load of x; the last cols % 8 columns of
 * a row are summed one by one. */
#include "qdense_avx2.h"

/* Eight int8 at q as float32 (exact): the symmetric grid's, no zero point. */
SPRUCE__INLINE __m256 int8x8_sym(const int8_t *q)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q)));
}

/* Rows i .. i + R of y; zp: the rows have zero points (else none is
 * subtracted).  Sixteen columns a step, in two sums per row, so that the
 * fused multiply-adds of a row do not wait on each other. */
SPRUCE__INLINE void rows_zp(const spruce_qmatrix *A, const float *x, float *y, int i, const int R,
                            const int zp)
{
    const int n = A->cols, n16 = n & ~15, n8 = n & ~7;
    const int8_t *q[SPRUCE__QROWS];
    __m256i z[SPRUCE__QROWS];
    __m256 acc[SPRUCE__QROWS], acc2[SPRUCE__QROWS];
    int r, j;
    SPRUCE__EACH_ROW
    for (r = 0; r < R; r++) {
        q[r] = (const int8_t *)(A->q + (size_t)(i + r) * A->ld);
        z[r] = _mm256_set1_epi32(zp ? spruce__zero(A, i + r, 0) : 0);
        acc[r] = _mm256_setzero_ps();
        acc2[r] = _mm256_setzero_ps();
    }
    for (j = 0; j < n16; j += 16) {
        const __m256 x0 = _mm256_loadu_ps(x + j), x1 = _mm256_loadu_ps(x + j + 8);
        SPRUCE__EACH_ROW
        for (r = 0; r < R; r++) {
            acc[r] = _mm256_fmadd_ps(zp ? int8x8(q[r] + j, z[r]) : int8x8_sym(q[r] + j), x0,
                                     acc[r]);
            acc2[r] = _mm256_fmadd_ps(zp ? int8x8(q[r] + j + 8, z[r]) : int8x8_sym(q[r] + j + 8),
                                      x1, acc2[r]);
        }
    }
    for (; j < n8; j += 8) {
        const __m256 xv = _mm256_loadu_ps(x + j);
        SPRUCE__EACH_ROW
        for (r = 0; r < R; r++)
            acc[r] = _mm256_fmadd_ps(zp ? int8x8(q[r] + j, z[r]) : int8x8_sym(q[r] + j), xv,
                                     acc[r]);
    }
    SPRUCE__EACH_ROW
    for (r = 0; r < R; r++) {
        const float zr = zp ? (float)spruce__zero(A, i + r, 0) : 0.0f;
        float s = hsum8(_mm256_add_ps(acc[r], acc2[r]));
        for (j = n8; j < n; j++)
            s += ((float)q[r][j] - zr) * x[j];
        y[i + r] = A->scale[i + r] * s;
    }
}

SPRUCE__INLINE void rows_sym(const spruce_qmatrix *A, const float *x, float *y, int i, const int R)
{
    rows_zp(A, x, y, i, R, 0);
}

SPRUCE__INLINE void rows_asym(const spruce_qmatrix *A, const float *x, float *y, int i,
                              const int R)
{
    rows_zp(A, x, y, i, R, 1);
}

void dense_spmv_int8_avx2(const spruce_qmatrix *A, const float *x, int batch, float *y, int r0,
                          int r1)
{
    (void)batch;
    if (A->zero)
        SPRUCE__QROW_BLOCKS(rows_asym, r0, r1, A, x, y);
    else
        SPRUCE__QROW_BLOCKS(rows_sym, r0, r1, A, x, y);
}
