/* bitmask_spmm_avx2.c: Y = A X for a bitmask (or N:M) matrix with AVX2+FMA.
 * X is (cols, batch), Y is (rows, batch), row-major.  A row's bitmask is decoded
 * a window of 1024 columns at a time into the list of its kept columns (one
 * trailing-zero count per kept weight), then each weight is broadcast against
 * the contiguous row of X it selects, as for compressed rows (spmm_avx2.h).
 * A column block with A->add set adds its product to Y. */
#include "sparse_internal.h"
#include "spmm_avx2.h"

#define WINDOW_WORDS 16 /* 1024 columns */

void bitmask_spmm_avx2(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0,
                       int r1)
{
    int32_t cols[64 * WINDOW_WORDS];
    int i, j0, w, w0;
    for (j0 = 0; j0 < batch; j0 += 32) {
        const int nb = batch - j0 < 32 ? batch - j0 : 32, nv = (nb + 7) / 8, full = nb % 8 == 0;
        const __m256i tail = lanes8(full ? 8 : nb % 8);
        for (i = r0; i < r1; i++) {
            const uint64_t *bits = A->bits + (int64_t)i * A->wpr;
            const float *v = A->val + A->rowptr[i];
            __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                             _mm256_setzero_ps()};
            for (w0 = 0; w0 < A->wpr; w0 += WINDOW_WORDS) {
                const int w1 = w0 + WINDOW_WORDS < A->wpr ? w0 + WINDOW_WORDS : A->wpr;
                int n = 0;
                for (w = w0; w < w1; w++) {
                    uint64_t b = bits[w];
                    while (b) {
                        cols[n++] = 64 * w + __builtin_ctzll(b);
                        b &= b - 1;
                    }
                }
                spmm_acc256_nv(v, cols, n, X + j0, batch, tail, full, acc, nv, 0);
                v += n;
            }
            if (A->add)
                add8(Y + (int64_t)i * batch + j0, acc, nv, tail, full);
            store8(Y + (int64_t)i * batch + j0, acc, nv, tail, full);
        }
    }
}
