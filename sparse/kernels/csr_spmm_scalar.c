/* csr_spmm_scalar.c: Y = A X for compressed rows, the reference version.
 * A is (rows, cols) in CSR, X is (cols, batch), Y is (rows, batch), row-major:
 *   Y[i, :] = sum over p in row i of val[p] * X[idx[p], :]. */
#include "sparse_internal.h"

void csr_spmm_scalar(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0,
                     int r1)
{
    int i, j;
    for (i = r0; i < r1; i++) {
        float *y = Y + (int64_t)i * batch;
        int64_t p;
        for (j = 0; j < batch; j++)
            y[j] = 0.0f;
        for (p = A->rowptr[i]; p < A->rowptr[i + 1]; p++) {
            int64_t k = A->idx_bits == 16 ? A->idx16[p] : A->idx32[p];
            const float *xr = X + k * batch;
            float w = A->val[p];
            for (j = 0; j < batch; j++)
                y[j] += w * xr[j];
        }
    }
}
