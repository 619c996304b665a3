/* qcsr_spmm_scalar.c: Y = A X for a compressed-rows matrix of bf16, int8 or
 * int4 values, the reference (the oracle of the vector kernels).  X is
 * (cols, batch), Y is (rows, batch), row-major:
 *   Y[i, :] = sum over stored p of row i of w_p X[col_p, :],  w_p = spruce__qvalue */
#include "qsparse_internal.h"

void qcsr_spmm_scalar(const struct spruce_qsparse *A, const float *X, int batch, float *Y, int r0,
                      int r1)
{
    int i, j;
    for (i = r0; i < r1; i++) {
        float *y = Y + (int64_t)i * batch;
        int64_t p;
        for (j = 0; j < batch; j++)
            y[j] = 0.0f;
        for (p = A->rowptr[i]; p < A->rowptr[i] + A->rowcnt[i]; p++) {
            const int k = spruce__qcol(A, p);
            const float *xr = X + (int64_t)k * batch;
            const float wt = spruce__qvalue(A, p, i, k);
            for (j = 0; j < batch; j++)
                y[j] += wt * xr[j];
        }
    }
}
