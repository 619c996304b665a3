/* dense_spmv_int4_avx512.c: y = W x for int4 weights with AVX-512.
 * W is (rows, cols), two values per byte (column j in byte j / 2, bits
 * 4 (j % 2) upward), a scale s_ig and zero point z_ig per group g:
 *   y_i = sum_g s_ig sum_{j in g} (u_ij - z_ig) x_j.
 * Thirty-two columns at a time: 16 bytes widen to 32-bit lanes, whose low
 * nibbles are the even columns and high nibbles the odd ones; x is split the
 * same way by two permutes, shared by the four rows of a block.  A group is a
 * multiple of 32 columns, so each 32 lie in one group; the last columns of a
 * row are masked loads (x beyond the row is zero, so the spare nibble of an
 * odd-length row counts nothing).  Each row asks for the line at the same
 * column of the row 4 below, into L2, a line at a time (the hardware
 * prefetchers stay within a 4 KB page, and a row of 4096 columns is half
 * of one). */
#include <immintrin.h>

#include "kernel_common.h"
#include "qdense.h"

/* Rows i .. i + R of y. */
SPRUCE__INLINE void rows(const spruce_qmatrix *A, const float *x, float *y, int i, const int R)
{
    const int n = A->cols, G = A->groupsize;
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                                           30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512i lo4 = _mm512_set1_epi32(15);
    const uint8_t *q[SPRUCE__QROWS];
    __m512 acc[SPRUCE__QROWS];
    int r, g, j;
    SPRUCE__EACH_ROW
    for (r = 0; r < R; r++) {
        q[r] = A->q + (size_t)(i + r) * A->ld;
        acc[r] = _mm512_setzero_ps();
    }
    for (g = 0; g < A->ngroups; g++) {
        const int j1 = (g + 1) * G < n ? (g + 1) * G : n;
        __m512 te[SPRUCE__QROWS], to[SPRUCE__QROWS];
        __m512i z[SPRUCE__QROWS];
        SPRUCE__EACH_ROW
        for (r = 0; r < R; r++) {
            te[r] = to[r] = _mm512_setzero_ps();
            z[r] = _mm512_set1_epi32(spruce__zero(A, i + r, g));
        }
        for (j = g * G; j < j1; j += 32) {
            const int left = n - j;
            const __mmask16 m0 = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
            const __mmask16 m1 = left >= 32 ? 0xffff
                                 : left > 16 ? (__mmask16)((1u << (left - 16)) - 1) : 0;
            const __mmask16 mb = left >= 32 ? 0xffff : (__mmask16)((1u << ((left + 1) / 2)) - 1);
            const __m512 x0 = _mm512_maskz_loadu_ps(m0, x + j);
            const __m512 x1 = _mm512_maskz_loadu_ps(m1, x + j + 16);
            const __m512 xe = _mm512_permutex2var_ps(x0, even, x1);
            const __m512 xo = _mm512_permutex2var_ps(x0, odd, x1);
            if (!(j & 127)) { /* a line of the next block's rows, into L2 */
                SPRUCE__EACH_ROW
                for (r = 0; r < R; r++)
                    _mm_prefetch((const char *)(q[r] + (size_t)SPRUCE__QROWS * A->ld + j / 2),
                                 _MM_HINT_T1);
            }
            SPRUCE__EACH_ROW
            for (r = 0; r < R; r++) {
                const __m512i v = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mb, q[r] + j / 2));
                const __m512i ue = _mm512_sub_epi32(_mm512_and_si512(v, lo4), z[r]);
                const __m512i uo = _mm512_sub_epi32(_mm512_srli_epi32(v, 4), z[r]);
                te[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ue), xe, te[r]);
                to[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(uo), xo, to[r]);
            }
        }
        SPRUCE__EACH_ROW
        for (r = 0; r < R; r++)
            acc[r] = _mm512_fmadd_ps(_mm512_add_ps(te[r], to[r]),
                                     _mm512_set1_ps(A->scale[(size_t)(i + r) * A->ngroups + g]),
                                     acc[r]);
    }
    SPRUCE__EACH_ROW
    for (r = 0; r < R; r++)
        y[i + r] = _mm512_reduce_add_ps(acc[r]);
}

void dense_spmv_int4_avx512(const spruce_qmatrix *A, const float *x, int batch, float *y, int r0,
                            int r1)
{
    (void)batch;
    SPRUCE__QROW_BLOCKS(rows, r0, r1, A, x, y);
}
