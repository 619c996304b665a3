/* dense_spmv_bf16_avx512.c: y = W x for bf16 weights with AVX-512.
 * W is (rows, cols) bf16 row-major, x (cols), y (rows):
 *   y_i = sum_j float(w_ij) x_j,
 * sixteen columns at a time: a bf16 is the top half of its float32, so
 * widening to 32 bits and shifting left by 16 gives w exactly.  Four rows
 * share every load of x; the last columns of a row are masked loads. */
#include <immintrin.h>

#include "kernel_common.h"
#include "qdense.h"

SPRUCE__INLINE __m512 bf16x16(const uint16_t *w, __mmask16 m)
{
    return _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, w)), 16));
}

/* Rows i .. i + R of y. */
SPRUCE__INLINE void rows(const spruce_qmatrix *A, const float *x, float *y, int i, const int R)
{
    const int n = A->cols;
    const uint16_t *w[SPRUCE__QROWS];
    __m512 acc[SPRUCE__QROWS];
    int r, j;
    SPRUCE__EACH_ROW
    for (r = 0; r < R; r++) {
        w[r] = (const uint16_t *)(A->q + (size_t)(i + r) * A->ld);
        acc[r] = _mm512_setzero_ps();
    }
    for (j = 0; j < n; j += 16) {
        const __mmask16 m = n - j >= 16 ? 0xffff : (__mmask16)((1u << (n - j)) - 1);
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + j);
        SPRUCE__EACH_ROW
        for (r = 0; r < R; r++)
            acc[r] = _mm512_fmadd_ps(bf16x16(w[r] + j, m), xv, acc[r]);
    }
    SPRUCE__EACH_ROW
    for (r = 0; r < R; r++)
        y[i + r] = _mm512_reduce_add_ps(acc[r]);
}

void dense_spmv_bf16_avx512(const spruce_qmatrix *A, const float *x, int batch, float *y, int r0,
                            int r1)
{
    (void)batch;
    SPRUCE__QROW_BLOCKS(rows, r0, r1, A, x, y);
}
