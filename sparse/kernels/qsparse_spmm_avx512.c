/* qsparse_spmm_avx512.c: Y = A X for a bitmask or N:M matrix of bf16, int8 or
 * int4 values with AVX-512, batch > 1.  X is (cols, batch), Y (rows, batch),
 * row-major.  Each kept weight is dequantized once per 16 columns of Y
 * (spruce__qvalue), broadcast, and meets the contiguous row of X it selects:
 *   Y[i, b .. b+16) += w_ik X[k, b .. b+16)
 * (a column block with A->add set adds to Y). */
#include <immintrin.h>

#include "qsparse_internal.h"

void qsparse_spmm_avx512(const struct spruce_qsparse *A, const float *X, int batch, float *Y,
                         int r0, int r1)
{
    int i, b0, w;
    for (i = r0; i < r1; i++) {
        const uint64_t *bits = A->bits + (int64_t)i * A->wpr;
        float *y = Y + (int64_t)i * batch;
        for (b0 = 0; b0 < batch; b0 += 16) {
            const __mmask16 bm = batch - b0 >= 16 ? 0xffff : (__mmask16)((1u << (batch - b0)) - 1);
            __m512 acc = A->add ? _mm512_maskz_loadu_ps(bm, y + b0) : _mm512_setzero_ps();
            int64_t p = A->rowptr[i];
            for (w = 0; w < A->wpr; w++) {
                uint64_t b = bits[w];
                while (b) {
                    const int k = 64 * w + __builtin_ctzll(b);
                    const __m512 wt = _mm512_set1_ps(spruce__qvalue(A, p++, i, k));
                    acc = _mm512_fmadd_ps(
                        wt, _mm512_maskz_loadu_ps(bm, X + (int64_t)k * batch + b0), acc);
                    b &= b - 1;
                }
            }
            _mm512_mask_storeu_ps(y + b0, bm, acc);
        }
    }
}
