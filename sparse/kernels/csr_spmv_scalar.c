/* csr_spmv_scalar.c: y = A x for compressed rows, the reference version.
 * A is (rows, cols) in CSR, x is (cols), y is (rows):
 *   y[i] = sum over p in [rowptr[i], rowptr[i+1]) of val[p] * x[idx[p]]. */
#include "sparse_internal.h"

void csr_spmv_scalar(const struct spruce_sparse *A, const float *x, int batch, float *y, int r0,
                     int r1)
{
    int i;
    (void)batch;
    for (i = r0; i < r1; i++) {
        int64_t p, e = A->rowptr[i + 1];
        float s = 0.0f;
        if (A->idx_bits == 16)
            for (p = A->rowptr[i]; p < e; p++)
                s += A->val[p] * x[A->idx16[p]];
        else
            for (p = A->rowptr[i]; p < e; p++)
                s += A->val[p] * x[A->idx32[p]];
        y[i] = s;
    }
}
