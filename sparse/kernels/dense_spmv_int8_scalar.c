/* dense_spmv_int8_scalar.c: y = W x for int8 weights with a per-row scale s_i
 * and zero point z_i, the reference.  W is (rows, cols), x (cols), y (rows):
 *   y_i = s_i sum_j (q_ij - z_i) x_j. */
#include "qdense.h"

void dense_spmv_int8_scalar(const spruce_qmatrix *A, const float *x, float *y, int r0, int r1)
{
    int i, j;
    for (i = r0; i < r1; i++) {
        const int8_t *q = (const int8_t *)(A->q + (size_t)i * A->ld);
        const float z = (float)spruce__zero(A, i, 0);
        float s = 0.0f;
        for (j = 0; j < A->cols; j++)
            s += ((float)q[j] - z) * x[j];
        y[i] = A->scale[i] * s;
    }
}
