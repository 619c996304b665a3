/* csr_spmm_avx512.c: Y = A X for compressed rows with AVX-512.
 * A is (rows, cols) in CSR, X is (cols, batch), Y is (rows, batch), row-major.
 * Row i, columns j0 .. j0 + 64 of Y at a time (up to four vectors):
 *   Y[i, j0 ..] = sum over p in row i of val[p] * X[idx[p], j0 ..]
 * (spmm_avx512.h: one broadcast weight against a contiguous row of X). */
#include "sparse_internal.h"
#include "spmm_avx512.h"

/* Blocked by columns: for each window of SPRUCE__WIN columns, every row of a
 * block of SPRUCE__RB rows adds its weights in that window to its row of Y, so
 * the window of X is reused from the L1 cache by all the rows of the block
 * instead of coming from L2.  The block is kept small because each of its rows
 * is a separate stream of values (11008x4096 at 2:4, batch 16, 2 threads:
 * 14-15 ms with blocks of 16 rows, 18-19 ms with a whole range of ~340 rows
 * per window, 24 ms without windows):
 *   Y[i, j0 ..] += sum over p in row i, window w of val[p] * X[idx[p], j0 ..] */
static void blocked(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0,
                    int r1)
{
    int i, j0, q, w, rb;
    for (j0 = 0; j0 < batch; j0 += 64) {
        const int nb = batch - j0 < 64 ? batch - j0 : 64, nv = (nb + 15) / 16;
        const __mmask16 tail = nb % 16 ? (__mmask16)((1u << (nb % 16)) - 1) : 0xffff;
        for (rb = r0; rb < r1; rb += SPRUCE__RB)
            for (w = 0; w < A->nwin; w++)
                for (i = rb; i < (rb + SPRUCE__RB < r1 ? rb + SPRUCE__RB : r1); i++) {
                    const uint32_t *wo = A->woff + (int64_t)i * (A->nwin + 1);
                    const int64_t p0 = A->rowptr[i] + wo[w], cnt = wo[w + 1] - wo[w];
                    float *y = Y + (int64_t)i * batch + j0;
                    __m512 acc[4];
                    if (w > 0 && cnt == 0)
                        continue;
                    for (q = 0; q < 4; q++)
                        acc[q] =
                            w == 0 || q >= nv
                                ? _mm512_setzero_ps()
                                : _mm512_maskz_loadu_ps(q == nv - 1 ? tail : 0xffff, y + 16 * q);
                    if (A->idx_bits == 16 && batch == 16) /* the common case, unrolled for it */
                        spmm_acc512(A->val + p0, A->idx16 + p0, cnt, X, 16, 0xffff, acc, 1, 16);
                    else if (A->idx_bits == 16)
                        spmm_acc512_nv(A->val + p0, A->idx16 + p0, cnt, X + j0, batch, tail, acc,
                                       nv, 16);
                    else
                        spmm_acc512_nv(A->val + p0, A->idx32 + p0, cnt, X + j0, batch, tail, acc,
                                       nv, 32);
                    for (q = 0; q < nv; q++)
                        _mm512_mask_storeu_ps(y + 16 * q, q == nv - 1 ? tail : 0xffff, acc[q]);
                }
    }
}

void csr_spmm_avx512(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0,
                     int r1)
{
    int i, j0, q;
    if (A->woff && A->nwin > 1 && batch >= 8) {
        blocked(A, X, batch, Y, r0, r1);
        return;
    }
    for (j0 = 0; j0 < batch; j0 += 64) {
        const int nb = batch - j0 < 64 ? batch - j0 : 64, nv = (nb + 15) / 16;
        const __mmask16 tail = nb % 16 ? (__mmask16)((1u << (nb % 16)) - 1) : 0xffff;
        for (i = r0; i < r1; i++) {
            const int64_t p0 = A->rowptr[i], cnt = A->rowptr[i + 1] - p0;
            float *y = Y + (int64_t)i * batch + j0;
            __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                             _mm512_setzero_ps()};
            if (A->idx_bits == 16)
                spmm_acc512_nv(A->val + p0, A->idx16 + p0, cnt, X + j0, batch, tail, acc, nv, 16);
            else
                spmm_acc512_nv(A->val + p0, A->idx32 + p0, cnt, X + j0, batch, tail, acc, nv, 32);
            for (q = 0; q < nv; q++)
                _mm512_mask_storeu_ps(y + 16 * q, q == nv - 1 ? tail : 0xffff, acc[q]);
        }
    }
}
