/* csr_spmm.h: Y = A X for compressed rows, written once for every
 * instruction set.  A is (rows, cols) in CSR, X is (cols, batch), Y is
 * (rows, batch), row-major.  Row i, columns j0 .. j0 + 4 SPMM_LANES of Y at a
 * time (up to four vectors):
 *   Y[i, j0 ..] = sum over p in row i of val[p] * X[idx[p], j0 ..]
 * (one broadcast weight against a contiguous row of X).  A kernel file
 * includes its spmm_<isa>.h, whose words (spmm_vec, spmm_tail, spmm_row ...)
 * this code is written in, defines CSR_SPMM, the name of its kernel, and
 * includes this file, which defines that kernel.  Internal to the kernels. */
#include "sparse_internal.h"

/* Blocked by columns: for each window of SPRUCE__WIN columns, every row of a
 * block of SPRUCE__RB rows adds its weights in that window to its row of Y, so
 * the window of X is reused from the L1 cache by all the rows of the block
 * instead of coming from L2.  The block is kept small because each of its rows
 * is a separate stream of values (11008x4096 at 2:4, batch 16, 2 threads,
 * AVX-512: 14-15 ms with blocks of 16 rows, 18-19 ms with a whole range of
 * ~340 rows per window, 24 ms without windows):
 *   Y[i, j0 ..] += sum over p in row i, window w of val[p] * X[idx[p], j0 ..] */
static void blocked(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0,
                    int r1)
{
    int i, j0, q, w, rb;
    for (j0 = 0; j0 < batch; j0 += 4 * SPMM_LANES) {
        const int nb = batch - j0 < 4 * SPMM_LANES ? batch - j0 : 4 * SPMM_LANES;
        const int nv = (nb + SPMM_LANES - 1) / SPMM_LANES;
        const spmm_tail tail = spmm_tail_for(nb);
        for (rb = r0; rb < r1; rb += SPRUCE__RB)
            for (w = 0; w < A->nwin; w++)
                for (i = rb; i < (rb + SPRUCE__RB < r1 ? rb + SPRUCE__RB : r1); i++) {
                    const uint32_t *wo = A->woff + (int64_t)i * (A->nwin + 1);
                    const int64_t p0 = A->rowptr[i] + wo[w], cnt = wo[w + 1] - wo[w];
                    float *y = Y + (int64_t)i * batch + j0;
                    spmm_vec acc[4];
                    if (w > 0 && cnt == 0)
                        continue;
                    for (q = 0; q < 4; q++)
                        acc[q] = w == 0 || q >= nv ? spmm_zero() : spmm_load(y, q, nv, tail);
                    if (A->idx_bits == 16)
                        spmm_row(A->val + p0, A->idx16 + p0, cnt, X, batch, j0, tail, acc, nv,
                                 16);
                    else
                        spmm_row(A->val + p0, A->idx32 + p0, cnt, X, batch, j0, tail, acc, nv,
                                 32);
                    spmm_store(y, acc, nv, tail);
                }
    }
}

void CSR_SPMM(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0, int r1)
{
    int i, j0;
    if (A->woff && A->nwin > 1 && batch >= 8) {
        blocked(A, X, batch, Y, r0, r1);
        return;
    }
    for (j0 = 0; j0 < batch; j0 += 4 * SPMM_LANES) {
        const int nb = batch - j0 < 4 * SPMM_LANES ? batch - j0 : 4 * SPMM_LANES;
        const int nv = (nb + SPMM_LANES - 1) / SPMM_LANES;
        const spmm_tail tail = spmm_tail_for(nb);
        for (i = r0; i < r1; i++) {
            const int64_t p0 = A->rowptr[i], cnt = A->rowptr[i + 1] - p0;
            spmm_vec acc[4] = {spmm_zero(), spmm_zero(), spmm_zero(), spmm_zero()};
            if (A->idx_bits == 16)
                spmm_row(A->val + p0, A->idx16 + p0, cnt, X, batch, j0, tail, acc, nv, 16);
            else
                spmm_row(A->val + p0, A->idx32 + p0, cnt, X, batch, j0, tail, acc, nv, 32);
            spmm_store(Y + (int64_t)i * batch + j0, acc, nv, tail);
        }
    }
}
