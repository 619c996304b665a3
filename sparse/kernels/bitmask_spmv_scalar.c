/* bitmask_spmv_scalar.c: y = A x for a bitmask (or N:M) matrix, the reference.
 * Bit j of word w of row i marks column 64 w + j; the kept values of row i are
 * val[rowptr[i] ...] in column order:  y[i] = sum of kept w_ik * x[k]
 * (y[i] += that sum for a column block with A->add set). */
#include "sparse_internal.h"

void bitmask_spmv_scalar(const struct spruce_sparse *A, const float *x, int batch, float *y,
                         int r0, int r1)
{
    int i, w;
    (void)batch;
    for (i = r0; i < r1; i++) {
        const uint64_t *bits = A->bits + (int64_t)i * A->wpr;
        const float *v = A->val + A->rowptr[i];
        float s = 0.0f;
        for (w = 0; w < A->wpr; w++) {
            uint64_t b = bits[w];
            while (b) {
                s += *v++ * x[64 * w + __builtin_ctzll(b)];
                b &= b - 1;
            }
        }
        spruce__put(y, i, s, A->add);
    }
}
