/* qsparse_spmm_avx2.c: Y = A X for a bitmask or N:M matrix of bf16, int8 or
 * int4 values with AVX2+FMA, batch > 1.  X is (cols, batch), Y (rows, batch),
 * row-major.  Each kept weight is dequantized once per 8 columns of Y
 * (spruce__qvalue), broadcast, and meets the contiguous row of X it selects:
 *   Y[i, b .. b+8) += w_ik X[k, b .. b+8)
 * (a column block with A->add set adds to Y). */
#include <immintrin.h>

#include "qsparse_internal.h"

void qsparse_spmm_avx2(const struct spruce_qsparse *A, const float *X, int batch, float *Y, int r0,
                       int r1)
{
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int i, b0, w;
    for (i = r0; i < r1; i++) {
        const uint64_t *bits = A->bits + (int64_t)i * A->wpr;
        float *y = Y + (int64_t)i * batch;
        for (b0 = 0; b0 < batch; b0 += 8) {
            const __m256i bm = _mm256_cmpgt_epi32(_mm256_set1_epi32(batch - b0), iota);
            __m256 acc = A->add ? _mm256_maskload_ps(y + b0, bm) : _mm256_setzero_ps();
            int64_t p = A->rowptr[i];
            for (w = 0; w < A->wpr; w++) {
                uint64_t b = bits[w];
                while (b) {
                    const int k = 64 * w + __builtin_ctzll(b);
                    const __m256 wt = _mm256_set1_ps(spruce__qvalue(A, p++, i, k));
                    acc = _mm256_fmadd_ps(
                        wt, _mm256_maskload_ps(X + (int64_t)k * batch + b0, bm), acc);
                    b &= b - 1;
                }
            }
            _mm256_maskstore_ps(y + b0, bm, acc);
        }
    }
}
