/* dense_spmv_bf16_scalar.c: Y = W X for bf16 weights, the reference.
 * W is (rows, cols) bf16 row-major, X (cols, batch), Y (rows, batch), float32
 * sums:
 *   Y_ib = sum_j float(w_ij) X_jb. */
#include "qdense.h"

/* Row i against column b of X, whose entries are `stride` floats apart. */
static float row_dot(const spruce_qmatrix *A, int i, const float *x, int stride)
{
    const uint16_t *w = (const uint16_t *)(A->q + (size_t)i * A->ld);
    float s = 0.0f;
    int j;
    for (j = 0; j < A->cols; j++)
        s += spruce_bf16_to_f32(w[j]) * x[(size_t)j * stride];
    return s;
}

void dense_spmm_bf16_scalar(const spruce_qmatrix *A, const float *X, int batch, float *Y, int r0,
                            int r1)
{
    int i, b;
    for (i = r0; i < r1; i++)
        for (b = 0; b < batch; b++)
            Y[(size_t)i * batch + b] = row_dot(A, i, X + b, batch);
}

void dense_spmv_bf16_scalar(const spruce_qmatrix *A, const float *x, float *y, int r0, int r1)
{
    dense_spmm_bf16_scalar(A, x, 1, y, r0, r1);
}
