/* dense_spmm_q_avx2.c: Y = W X for bf16, int8 and int4 weights with
 * AVX2+FMA, batch > 1.  W is (rows, cols), X (cols, batch), Y (rows, batch),
 * row-major:
 *   Y_ib = sum_j w_ij X_jb,  w_ij as spruce_qmatrix_at defines it.
 * The layout of dense_spmm_q_avx512.c with 8 lanes: blocks of four rows, each
 * panel of SPRUCE__QPANEL columns dequantized once into a float32 buffer, each
 * weight broadcast against 8 columns of a row of X, two columns of W in flight. */
#include "qdense_avx2.h"

#define P SPRUCE__QPANEL

/* buf[0 .. n): row i's weights at columns j0 .. j0 + n. */
SPRUCE__INLINE void dequant(const spruce_qmatrix *A, int i, int j0, int n, float *buf)
{
    const uint8_t *row = A->q + (size_t)i * A->ld;
    int k = 0;
    if (A->dtype == SPRUCE_DT_BF16) {
        for (; k + 8 <= n; k += 8)
            _mm256_storeu_ps(buf + k, bf16x8((const uint16_t *)row + j0 + k));
    } else if (A->dtype == SPRUCE_DT_INT8) {
        const __m256i z = _mm256_set1_epi32(spruce__zero(A, i, 0));
        const __m256 s = _mm256_set1_ps(A->scale[i]);
        for (; k + 8 <= n; k += 8)
            _mm256_storeu_ps(buf + k, _mm256_mul_ps(int8x8((const int8_t *)row + j0 + k, z), s));
    } else { /* int4: j0 and every 16 columns lie in one group */
        for (; k + 16 <= n; k += 16) {
            const int g = (j0 + k) / A->groupsize;
            const __m256 s = _mm256_set1_ps(A->scale[(size_t)i * A->ngroups + g]);
            __m256 we, wo, lo, hi;
            int4x16(row + (j0 + k) / 2, _mm256_set1_epi32(spruce__zero(A, i, g)), &we, &wo);
            we = _mm256_mul_ps(we, s);
            wo = _mm256_mul_ps(wo, s);
            lo = _mm256_unpacklo_ps(we, wo); /* columns 0-3 | 8-11 */
            hi = _mm256_unpackhi_ps(we, wo); /* columns 4-7 | 12-15 */
            _mm256_storeu_ps(buf + k, _mm256_permute2f128_ps(lo, hi, 0x20));
            _mm256_storeu_ps(buf + k + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
        }
    }
    for (; k < n; k++)
        buf[k] = spruce_qmatrix_at(A, i, j0 + k);
}

SPRUCE__INLINE __m256 load8(const float *p, int full, __m256i m)
{
    return full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m);
}

/* Rows i .. i + R of Y. */
SPRUCE__INLINE void rows(const spruce_qmatrix *A, const float *X, int batch, float *Y, int i,
                         const int R)
{
    float buf[SPRUCE__QROWS][P] __attribute__((aligned(32)));
    int r, j0, p, j;
    for (j0 = 0; j0 < A->cols; j0 += P) {
        const int n = A->cols - j0 < P ? A->cols - j0 : P;
        SPRUCE__EACH_ROW
        for (r = 0; r < R; r++)
            dequant(A, i + r, j0, n, buf[r]);
        for (p = 0; p < batch; p += 8) {
            const int full = batch - p >= 8;
            const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(batch - p),
                                                 _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            const float *x = X + (size_t)j0 * batch + p;
            __m256 a[SPRUCE__QROWS], b[SPRUCE__QROWS];
            SPRUCE__EACH_ROW
            for (r = 0; r < R; r++) {
                a[r] = j0 ? load8(Y + (size_t)(i + r) * batch + p, full, m) : _mm256_setzero_ps();
                b[r] = _mm256_setzero_ps();
            }
            for (j = 0; j + 2 <= n; j += 2) {
                const __m256 x0 = load8(x + (size_t)j * batch, full, m);
                const __m256 x1 = load8(x + (size_t)(j + 1) * batch, full, m);
                SPRUCE__EACH_ROW
                for (r = 0; r < R; r++) {
                    a[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(&buf[r][j]), x0, a[r]);
                    b[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(&buf[r][j + 1]), x1, b[r]);
                }
            }
            if (j < n) {
                const __m256 x0 = load8(x + (size_t)j * batch, full, m);
                SPRUCE__EACH_ROW
                for (r = 0; r < R; r++)
                    a[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(&buf[r][j]), x0, a[r]);
            }
            SPRUCE__EACH_ROW
            for (r = 0; r < R; r++) {
                float *y = Y + (size_t)(i + r) * batch + p;
                if (full)
                    _mm256_storeu_ps(y, _mm256_add_ps(a[r], b[r]));
                else
                    _mm256_maskstore_ps(y, m, _mm256_add_ps(a[r], b[r]));
            }
        }
    }
}

void dense_spmm_q_avx2(const spruce_qmatrix *A, const float *X, int batch, float *Y, int r0,
                       int r1)
{
    SPRUCE__QROW_BLOCKS(rows, r0, r1, A, X, batch, Y);
}
