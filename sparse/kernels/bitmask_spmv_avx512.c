/* bitmask_spmv_avx512.c: y = A x for a bitmask matrix with AVX-512.
 * A is (rows, cols): bits (rows, wpr) words, kept values packed per row; x is
 * (cols), y is (rows).  For every 16 columns the 16-bit slice m of the row's
 * bitmask drives an expand-load: the next popcount(m) packed values land in
 * the lanes whose bit is set (zeros elsewhere) and meet x[k .. k+16) in one
 * FMA, so no gather is needed:
 *   acc += expand(m, v) * x[k .. k+16);  v += popcount(m).
 * The row loops are bitmask_spmv_avx512.h. */
#include "bitmask_spmv_avx512.h"

void bitmask_spmv_avx512(const struct spruce_sparse *A, const float *x, int batch, float *y,
                         int r0, int r1)
{
    (void)batch;
    spmv_rows_avx512(A, x, y, r0, r1, 1, 0);
}
