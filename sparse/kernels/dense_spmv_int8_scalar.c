/* dense_spmv_int8_scalar.c: Y = W X for int8 weights with a per-row scale s_i
 * and zero point z_i, the reference.  W is (rows, cols), X (cols, batch),
 * Y (rows, batch):
 *   Y_ib = s_i sum_j (q_ij - z_i) X_jb. */
#include "qdense.h"

/* Row i against column b of X, whose entries are `stride` floats apart. */
static float row_dot(const spruce_qmatrix *A, int i, const float *x, int stride)
{
    const int8_t *q = (const int8_t *)(A->q + (size_t)i * A->ld);
    const float z = (float)spruce__zero(A, i, 0);
    float s = 0.0f;
    int j;
    for (j = 0; j < A->cols; j++)
        s += ((float)q[j] - z) * x[(size_t)j * stride];
    return A->scale[i] * s;
}

void dense_spmm_int8_scalar(const spruce_qmatrix *A, const float *X, int batch, float *Y, int r0,
                            int r1)
{
    int i, b;
    for (i = r0; i < r1; i++)
        for (b = 0; b < batch; b++)
            Y[(size_t)i * batch + b] = row_dot(A, i, X + b, batch);
}

void dense_spmv_int8_scalar(const spruce_qmatrix *A, const float *x, float *y, int r0, int r1)
{
    dense_spmm_int8_scalar(A, x, 1, y, r0, r1);
}
