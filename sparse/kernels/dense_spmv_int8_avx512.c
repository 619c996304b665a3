/* dense_spmv_int8_avx512.c: y = W x for int8 weights with AVX-512.
 * W is (rows, cols) int8 with a scale s_i and zero point z_i per row:
 *   y_i = s_i sum_j (q_ij - z_i) x_j,
 * sixteen columns at a time, widened to 32 bits, the zero point subtracted
 * exactly as an integer (only when there is one), converted and multiplied
 * in float32.  Four rows share every load of x; the last columns of a row are
 * masked loads.  (The VNNI integer dot products would need x quantized to
 * int8, a different product: not used.) */
#include <immintrin.h>

#include "kernel_common.h"
#include "qdense.h"

/* Rows i .. i + R of y; zp: subtract the rows' zero points. */
SPRUCE__INLINE void rows(const spruce_qmatrix *A, const float *x, float *y, const int zp, int i,
                         const int R)
{
    const int n = A->cols;
    const int8_t *q[SPRUCE__QROWS];
    __m512i z[SPRUCE__QROWS];
    __m512 acc[SPRUCE__QROWS];
    int r, j;
    SPRUCE__EACH_ROW
    for (r = 0; r < R; r++) {
        q[r] = (const int8_t *)(A->q + (size_t)(i + r) * A->ld);
        z[r] = _mm512_set1_epi32(zp ? spruce__zero(A, i + r, 0) : 0);
        acc[r] = _mm512_setzero_ps();
    }
    for (j = 0; j < n; j += 16) {
        const __mmask16 m = n - j >= 16 ? 0xffff : (__mmask16)((1u << (n - j)) - 1);
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + j);
        SPRUCE__EACH_ROW
        for (r = 0; r < R; r++) {
            __m512i v = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, q[r] + j));
            if (zp)
                v = _mm512_sub_epi32(v, z[r]);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v), xv, acc[r]);
        }
    }
    SPRUCE__EACH_ROW
    for (r = 0; r < R; r++)
        y[i + r] = A->scale[i + r] * _mm512_reduce_add_ps(acc[r]);
}

void dense_spmv_int8_avx512(const spruce_qmatrix *A, const float *x, int batch, float *y, int r0,
                            int r1)
{
    (void)batch;
    if (A->zero)
        SPRUCE__QROW_BLOCKS(rows, r0, r1, A, x, y, 1);
    else
        SPRUCE__QROW_BLOCKS(rows, r0, r1, A, x, y, 0);
}
