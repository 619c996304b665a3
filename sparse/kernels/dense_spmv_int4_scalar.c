/* dense_spmv_int4_scalar.c: Y = W X for int4 weights with a scale s_ig and
 * zero point z_ig per group g of G columns, the reference.  W is (rows, cols),
 * X (cols, batch), Y (rows, batch):
 *   Y_ib = sum_g s_ig sum_{j in g} (u_ij - z_ig) X_jb. */
#include "qdense.h"

/* Row i against column b of X, whose entries are `stride` floats apart. */
static float row_dot(const spruce_qmatrix *A, int i, const float *x, int stride)
{
    const uint8_t *row = A->q + (size_t)i * A->ld;
    const float *sc = A->scale + (size_t)i * A->ngroups;
    float s = 0.0f;
    int g, j;
    for (g = 0; g < A->ngroups; g++) {
        const int j0 = g * A->groupsize;
        const int j1 = j0 + A->groupsize < A->cols ? j0 + A->groupsize : A->cols;
        const float z = (float)spruce__zero(A, i, g);
        float t = 0.0f;
        for (j = j0; j < j1; j++)
            t += ((float)spruce__nibble(row, j) - z) * x[(size_t)j * stride];
        s += sc[g] * t;
    }
    return s;
}

void dense_spmm_int4_scalar(const spruce_qmatrix *A, const float *X, int batch, float *Y, int r0,
                            int r1)
{
    int i, b;
    for (i = r0; i < r1; i++)
        for (b = 0; b < batch; b++)
            Y[(size_t)i * batch + b] = row_dot(A, i, X + b, batch);
}

void dense_spmv_int4_scalar(const spruce_qmatrix *A, const float *x, float *y, int r0, int r1)
{
    dense_spmm_int4_scalar(A, x, 1, y, r0, r1);
}
