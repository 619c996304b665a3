/* csr_spmv.h: the row loop of y = A x for compressed rows, written once for
 * every instruction set:
 *   y[i] = sum over p in row i of val[p] * x[idx[p]].
 * A kernel file defines row_sum(val, idx, p, e, x, kind), the sum of
 * val[q] * x[idx[q]] for q in [p, e) with column indices of kind 16 or 32
 * (kernel_common.h), and CSR_SPMV, the name of its kernel; then it includes
 * this file, which defines that kernel.  Internal to the kernels. */
#include "sparse_internal.h"

void CSR_SPMV(const struct spruce_sparse *A, const float *x, int batch, float *y, int r0, int r1)
{
    int i;
    (void)batch;
    for (i = r0; i < r1; i++) {
        const int64_t p = A->rowptr[i], e = A->rowptr[i + 1];
        y[i] = A->idx_bits == 16 ? row_sum(A->val, A->idx16, p, e, x, 16)
                                 : row_sum(A->val, A->idx32, p, e, x, 32);
    }
}
