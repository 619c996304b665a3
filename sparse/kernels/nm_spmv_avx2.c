/* nm_spmv_avx2.c: y = A x for an N:M matrix with AVX2+FMA.
 * The table-driven expand of bitmask_spmv_avx2.c, but when M divides 8 every
 * 8 columns hold exactly 8 N / M values, so the offsets are constants and no
 * bit is counted (only a short last group of a row is).  For 2:4:
 *   acc += (permute(load(v), perm[m]) & keep[m]) * x[k .. k+8);  v += 4.
 * The row loop is bitmask_spmv_avx2.h. */
#include "bitmask_spmv_avx2.h"

void nm_spmv_avx2(const struct spruce_sparse *A, const float *x, int batch, float *y, int r0,
                  int r1)
{
    if (8 % A->m != 0) {
        bitmask_spmv_avx2(A, x, batch, y, r0, r1);
        return;
    }
    spmv_rows_avx2(A, x, y, r0, r1, 0, 8 / A->m * A->n);
}
