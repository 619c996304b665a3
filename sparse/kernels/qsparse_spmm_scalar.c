/* qsparse_spmm_scalar.c: Y = A X for a bitmask or N:M matrix of bf16, int8 or
 * int4 values, the reference (the oracle of the vector kernels).
 * X is (cols, batch), Y is (rows, batch), row-major:
 *   Y[i, :] = sum over kept (i, k) of w_ik X[k, :],  w_ik = spruce__qvalue
 * (a column block with A->add set adds that sum to Y[i, :]). */
#include "qsparse_internal.h"

void qsparse_spmm_scalar(const struct spruce_qsparse *A, const float *X, int batch, float *Y,
                         int r0, int r1)
{
    int i, j, w;
    for (i = r0; i < r1; i++) {
        const uint64_t *bits = A->bits + (int64_t)i * A->wpr;
        int64_t p = A->rowptr[i];
        float *y = Y + (int64_t)i * batch;
        for (j = 0; !A->add && j < batch; j++)
            y[j] = 0.0f;
        for (w = 0; w < A->wpr; w++) {
            uint64_t b = bits[w];
            while (b) {
                const int k = 64 * w + __builtin_ctzll(b);
                const float *xr = X + (int64_t)k * batch;
                const float wt = spruce__qvalue(A, p++, i, k);
                for (j = 0; j < batch; j++)
                    y[j] += wt * xr[j];
                b &= b - 1;
            }
        }
    }
}
