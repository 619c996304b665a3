/* bitmask_spmm_scalar.c: Y = A X for a bitmask (or N:M) matrix, the reference.
 * X is (cols, batch), Y is (rows, batch), row-major:
 *   Y[i, :] = sum over kept (i, k) of w_ik * X[k, :]
 * (a column block with A->add set adds that sum to Y[i, :]). */
#include "sparse_internal.h"

void bitmask_spmm_scalar(const struct spruce_sparse *A, const float *X, int batch, float *Y,
                         int r0, int r1)
{
    int i, j, w;
    for (i = r0; i < r1; i++) {
        const uint64_t *bits = A->bits + (int64_t)i * A->wpr;
        const float *v = A->val + A->rowptr[i];
        float *y = Y + (int64_t)i * batch;
        for (j = 0; !A->add && j < batch; j++)
            y[j] = 0.0f;
        for (w = 0; w < A->wpr; w++) {
            uint64_t b = bits[w];
            while (b) {
                const float *xr = X + (int64_t)(64 * w + __builtin_ctzll(b)) * batch;
                float wt = *v++;
                for (j = 0; j < batch; j++)
                    y[j] += wt * xr[j];
                b &= b - 1;
            }
        }
    }
}
