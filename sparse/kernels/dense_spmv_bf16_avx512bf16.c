/* dense_spmv_bf16_avx512bf16.c: y = W x for bf16 weights with the AVX512-BF16
 * dot products (vdpbf16ps), on CPUs that have them (chosen at run time).
 * W is (rows, cols) bf16 row-major, x (cols), y (rows):
 *   y_i = sum_j float(w_ij) x_j.
 * vdpbf16ps multiplies bf16 by bf16, so x is split into three bf16 parts,
 * x = xh + xm + xl + e: xh is x truncated to bf16, xm the rest truncated to
 * bf16 (both exact, |x - xh - xm| < 2^-14 |x|), xl what is left rounded to
 * bf16, so |e| <= 2^-23 |x|: the 24 bits of a float32.  Each product of two
 * bf16 is exact in float32, so y_i is a float32 sum of the products of the
 * weights with x to within 2^-23 |x| (inputs below 2^-126 count as zero: the
 * instruction flushes denormals).  Thirty-two columns at a time, the split
 * shared by four rows; the last columns of a row are masked loads. */
#include <immintrin.h>

#include "kernel_common.h"
#include "qdense.h"

/* Rows i .. i + R of y. */
SPRUCE__INLINE void rows(const spruce_qmatrix *A, const float *x, float *y, int i, const int R)
{
    const int n = A->cols;
    const __m512i top = _mm512_set1_epi32((int)0xffff0000u);
    const uint16_t *w[SPRUCE__QROWS];
    __m512 ah[SPRUCE__QROWS], am[SPRUCE__QROWS], al[SPRUCE__QROWS];
    int r, j;
    SPRUCE__EACH_ROW
    for (r = 0; r < R; r++) {
        w[r] = (const uint16_t *)(A->q + (size_t)(i + r) * A->ld);
        ah[r] = am[r] = al[r] = _mm512_setzero_ps();
    }
    for (j = 0; j < n; j += 32) {
        const int left = n - j;
        const __mmask16 m0 = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
        const __mmask16 m1 = left >= 32 ? 0xffff
                             : left > 16 ? (__mmask16)((1u << (left - 16)) - 1) : 0;
        const __mmask32 mw = left >= 32 ? 0xffffffffu : (__mmask32)((1u << left) - 1);
        const __m512 x0 = _mm512_maskz_loadu_ps(m0, x + j);
        const __m512 x1 = _mm512_maskz_loadu_ps(m1, x + j + 16);
        const __m512 h0 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x0), top));
        const __m512 h1 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x1), top));
        const __m512 r0 = _mm512_sub_ps(x0, h0), r1 = _mm512_sub_ps(x1, h1); /* exact */
        const __m512 t0 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(r0), top));
        const __m512 t1 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(r1), top));
        const __m512bh xh = _mm512_cvtne2ps_pbh(h1, h0); /* exact: already bf16 */
        const __m512bh xm = _mm512_cvtne2ps_pbh(t1, t0); /* exact too */
        const __m512bh xl = _mm512_cvtne2ps_pbh(_mm512_sub_ps(r1, t1), _mm512_sub_ps(r0, t0));
        SPRUCE__EACH_ROW
        for (r = 0; r < R; r++) /* the next block's line, into L2 (4 KB pages) */
            _mm_prefetch((const char *)(w[r] + j) + (size_t)SPRUCE__QROWS * A->ld, _MM_HINT_T1);
        SPRUCE__EACH_ROW
        for (r = 0; r < R; r++) {
            const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(mw, w[r] + j);
            ah[r] = _mm512_dpbf16_ps(ah[r], wv, xh);
            am[r] = _mm512_dpbf16_ps(am[r], wv, xm);
            al[r] = _mm512_dpbf16_ps(al[r], wv, xl);
        }
    }
    SPRUCE__EACH_ROW
    for (r = 0; r < R; r++)
        y[i + r] = _mm512_reduce_add_ps(_mm512_add_ps(ah[r], _mm512_add_ps(am[r], al[r])));
}

void dense_spmv_bf16_avx512bf16(const spruce_qmatrix *A, const float *x, int batch, float *y,
                                int r0, int r1)
{
    (void)batch;
    SPRUCE__QROW_BLOCKS(rows, r0, r1, A, x, y);
}
