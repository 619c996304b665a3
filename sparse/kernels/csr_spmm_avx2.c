/* csr_spmm_avx2.c: Y = A X for compressed rows with AVX2+FMA.
 * A is (rows, cols) in CSR, X is (cols, batch), Y is (rows, batch), row-major.
 * Row i, columns j0 .. j0 + 32 of Y at a time (up to four vectors):
 *   Y[i, j0 ..] = sum over p in row i of val[p] * X[idx[p], j0 ..]. */
#include "sparse_internal.h"
#include "spmm_avx2.h"

/* Blocked by columns as in csr_spmm_avx512.c: for each window of SPRUCE__WIN
 * columns, every row of a block of SPRUCE__RB rows adds its weights in that
 * window to its row of Y, so the window of X stays in the L1 cache. */
static void blocked(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0,
                    int r1)
{
    int i, j0, q, w, rb;
    for (j0 = 0; j0 < batch; j0 += 32) {
        const int nb = batch - j0 < 32 ? batch - j0 : 32, nv = (nb + 7) / 8, full = nb % 8 == 0;
        const __m256i tail = lanes8(full ? 8 : nb % 8);
        for (rb = r0; rb < r1; rb += SPRUCE__RB)
            for (w = 0; w < A->nwin; w++)
                for (i = rb; i < (rb + SPRUCE__RB < r1 ? rb + SPRUCE__RB : r1); i++) {
                    const uint32_t *wo = A->woff + (int64_t)i * (A->nwin + 1);
                    const int64_t p0 = A->rowptr[i] + wo[w], cnt = wo[w + 1] - wo[w];
                    float *y = Y + (int64_t)i * batch + j0;
                    __m256 acc[4];
                    if (w > 0 && cnt == 0)
                        continue;
                    for (q = 0; q < 4; q++)
                        acc[q] = w == 0 || q >= nv ? _mm256_setzero_ps()
                                                   : ld8(y + 8 * q, q, nv, tail, full);
                    if (A->idx_bits == 16)
                        spmm_acc256_nv(A->val + p0, A->idx16 + p0, cnt, X + j0, batch, tail, full,
                                       acc, nv, 16);
                    else
                        spmm_acc256_nv(A->val + p0, A->idx32 + p0, cnt, X + j0, batch, tail, full,
                                       acc, nv, 32);
                    store8(y, acc, nv, tail, full);
                }
    }
}

void csr_spmm_avx2(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0,
                   int r1)
{
    int i, j0;
    if (A->woff && A->nwin > 1 && batch >= 8) {
        blocked(A, X, batch, Y, r0, r1);
        return;
    }
    for (j0 = 0; j0 < batch; j0 += 32) {
        const int nb = batch - j0 < 32 ? batch - j0 : 32, nv = (nb + 7) / 8, full = nb % 8 == 0;
        const __m256i tail = lanes8(full ? 8 : nb % 8);
        for (i = r0; i < r1; i++) {
            const int64_t p0 = A->rowptr[i], cnt = A->rowptr[i + 1] - p0;
            __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                             _mm256_setzero_ps()};
            if (A->idx_bits == 16)
                spmm_acc256_nv(A->val + p0, A->idx16 + p0, cnt, X + j0, batch, tail, full, acc,
                               nv, 16);
            else
                spmm_acc256_nv(A->val + p0, A->idx32 + p0, cnt, X + j0, batch, tail, full, acc,
                               nv, 32);
            store8(Y + (int64_t)i * batch + j0, acc, nv, tail, full);
        }
    }
}
