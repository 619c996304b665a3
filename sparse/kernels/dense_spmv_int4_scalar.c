/* dense_spmv_int4_scalar.c: y = W x for int4 weights with a scale s_ig and
 * zero point z_ig per group g of G columns, the reference.  W is (rows, cols),
 * x (cols), y (rows):
 *   y_i = sum_g s_ig sum_{j in g} (u_ij - z_ig) x_j. */
#include "qdense.h"

void dense_spmv_int4_scalar(const spruce_qmatrix *A, const float *x, float *y, int r0, int r1)
{
    int i, g, j;
    for (i = r0; i < r1; i++) {
        const uint8_t *row = A->q + (size_t)i * A->ld;
        const float *sc = A->scale + (size_t)i * A->ngroups;
        float s = 0.0f;
        for (g = 0; g < A->ngroups; g++) {
            const int j0 = g * A->groupsize;
            const int j1 = j0 + A->groupsize < A->cols ? j0 + A->groupsize : A->cols;
            const float z = (float)spruce__zero(A, i, g);
            float t = 0.0f;
            for (j = j0; j < j1; j++)
                t += ((float)spruce__nibble(row, j) - z) * x[j];
            s += sc[g] * t;
        }
        y[i] = s;
    }
}
