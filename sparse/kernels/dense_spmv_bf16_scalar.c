/* dense_spmv_bf16_scalar.c: y = W x for bf16 weights, the reference.
 * W is (rows, cols) bf16 row-major, x is (cols), y is (rows), float32 sums:
 *   y_i = sum_j float(w_ij) x_j. */
#include "qdense.h"

void dense_spmv_bf16_scalar(const spruce_qmatrix *A, const float *x, float *y, int r0, int r1)
{
    int i, j;
    for (i = r0; i < r1; i++) {
        const uint16_t *w = (const uint16_t *)(A->q + (size_t)i * A->ld);
        float s = 0.0f;
        for (j = 0; j < A->cols; j++)
            s += spruce_bf16_to_f32(w[j]) * x[j];
        y[i] = s;
    }
}
