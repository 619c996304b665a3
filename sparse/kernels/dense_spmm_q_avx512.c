/* dense_spmm_q_avx512.c: Y = W X for bf16, int8 and int4 weights with
 * AVX-512, batch > 1.  W is (rows, cols), X (cols, batch), Y (rows, batch),
 * row-major:
 *   Y_ib = sum_j w_ij X_jb,  w_ij as spruce_qmatrix_at defines it.
 * Blocks of four rows; for each panel of SPRUCE__QPANEL columns the rows'
 * weights are dequantized once into a float32 buffer (4 KB, in L1), then every
 * 16 columns of X meet them: each weight is broadcast and multiplied into a row
 * of X (k-major, as XNNPACK's kernels do).  Partial sums of a panel go to Y and
 * are read back by the next. */
#include <immintrin.h>

#include "kernel_common.h"
#include "qdense.h"

#define P SPRUCE__QPANEL

/* buf[0 .. 32 ceil(n / 32)): row i's weights at columns j0 .. j0 + n. */
SPRUCE__INLINE void dequant(const spruce_qmatrix *A, int i, int j0, int n, float *buf)
{
    const uint8_t *row = A->q + (size_t)i * A->ld;
    int k;
    if (A->dtype == SPRUCE_DT_BF16) {
        const uint16_t *w = (const uint16_t *)row + j0;
        for (k = 0; k < n; k += 16) {
            const __mmask16 m = n - k >= 16 ? 0xffff : (__mmask16)((1u << (n - k)) - 1);
            _mm512_storeu_ps(buf + k, _mm512_castsi512_ps(_mm512_slli_epi32(
                                          _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, w + k)),
                                          16)));
        }
    } else if (A->dtype == SPRUCE_DT_INT8) {
        const int8_t *q = (const int8_t *)row + j0;
        const __m512i z = _mm512_set1_epi32(spruce__zero(A, i, 0));
        const __m512 s = _mm512_set1_ps(A->scale[i]);
        for (k = 0; k < n; k += 16) {
            const __mmask16 m = n - k >= 16 ? 0xffff : (__mmask16)((1u << (n - k)) - 1);
            const __m512i v = _mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, q + k)), z);
            _mm512_storeu_ps(buf + k, _mm512_mul_ps(_mm512_cvtepi32_ps(v), s));
        }
    } else { /* int4: j0 and every 32 columns lie in one group */
        const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
        for (k = 0; k < n; k += 32) {
            const int g = (j0 + k) / A->groupsize;
            const __mmask16 mb = n - k >= 32 ? 0xffff : (__mmask16)((1u << ((n - k + 1) / 2)) - 1);
            const __m512i z = _mm512_set1_epi32(spruce__zero(A, i, g));
            const __m512 s = _mm512_set1_ps(A->scale[(size_t)i * A->ngroups + g]);
            const __m512i v = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mb, row + (j0 + k) / 2));
            const __m512 we = _mm512_mul_ps(
                _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(v, _mm512_set1_epi32(15)), z)), s);
            const __m512 wo = _mm512_mul_ps(
                _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(v, 4), z)), s);
            _mm512_storeu_ps(buf + k, _mm512_permutex2var_ps(we, lo, wo));
            _mm512_storeu_ps(buf + k + 16, _mm512_permutex2var_ps(we, hi, wo));
        }
    }
}

/* Rows i .. i + R of Y. */
SPRUCE__INLINE void rows(const spruce_qmatrix *A, const float *X, int batch, float *Y, int i,
                         const int R)
{
    float buf[SPRUCE__QROWS][P + 32] __attribute__((aligned(64)));
    int r, j0, p, j;
    for (j0 = 0; j0 < A->cols; j0 += P) {
        const int n = A->cols - j0 < P ? A->cols - j0 : P;
        SPRUCE__EACH_ROW
        for (r = 0; r < R; r++)
            dequant(A, i + r, j0, n, buf[r]);
        for (p = 0; p < batch; p += 16) {
            const __mmask16 m = batch - p >= 16 ? 0xffff : (__mmask16)((1u << (batch - p)) - 1);
            const float *x = X + (size_t)j0 * batch + p;
            __m512 a[SPRUCE__QROWS], b[SPRUCE__QROWS];
            SPRUCE__EACH_ROW
            for (r = 0; r < R; r++) {
                a[r] = j0 ? _mm512_maskz_loadu_ps(m, Y + (size_t)(i + r) * batch + p)
                          : _mm512_setzero_ps();
                b[r] = _mm512_setzero_ps();
            }
            for (j = 0; j + 2 <= n; j += 2) {
                const __m512 x0 = _mm512_maskz_loadu_ps(m, x + (size_t)j * batch);
                const __m512 x1 = _mm512_maskz_loadu_ps(m, x + (size_t)(j + 1) * batch);
                SPRUCE__EACH_ROW
                for (r = 0; r < R; r++) {
                    a[r] = _mm512_fmadd_ps(_mm512_set1_ps(buf[r][j]), x0, a[r]);
                    b[r] = _mm512_fmadd_ps(_mm512_set1_ps(buf[r][j + 1]), x1, b[r]);
                }
            }
            if (j < n) {
                const __m512 x0 = _mm512_maskz_loadu_ps(m, x + (size_t)j * batch);
                SPRUCE__EACH_ROW
                for (r = 0; r < R; r++)
                    a[r] = _mm512_fmadd_ps(_mm512_set1_ps(buf[r][j]), x0, a[r]);
            }
            SPRUCE__EACH_ROW
            for (r = 0; r < R; r++)
                _mm512_mask_storeu_ps(Y + (size_t)(i + r) * batch + p, m,
                                      _mm512_add_ps(a[r], b[r]));
        }
    }
}

void dense_spmm_q_avx512(const spruce_qmatrix *A, const float *X, int batch, float *Y, int r0,
                         int r1)
{
    SPRUCE__QROW_BLOCKS(rows, r0, r1, A, X, batch, Y);
}
