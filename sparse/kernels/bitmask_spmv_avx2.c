/* bitmask_spmv_avx2.c: y = A x for a bitmask matrix with AVX2+FMA.
 * AVX2 has no expand-load, so each 8-column slice m of a row's bitmask picks a
 * permutation from a 256-entry table: lane j of the permuted vector takes the
 * value of rank (bits of m below j) among the next packed values, lanes whose
 * bit is clear (the sign bit of their entry) are zeroed by a blend, and one
 * FMA meets x[k .. k+8):
 *   acc += blend(permute(load(v), perm[m]), 0, perm[m] < 0) * x[k .. k+8);
 *   v += popcount(m).
 * The packed values carry SPRUCE__PAD floats of padding, so the load of 8
 * values never leaves the array.  The row loop is bitmask_spmv_avx2.h. */
#include "bitmask_spmv_avx2.h"

int32_t spruce__lut_perm[256][8] __attribute__((aligned(32)));

void spruce__avx2_lut_init(void)
{
    int m, j;
    for (m = 0; m < 256; m++) {
        int r = 0;
        for (j = 0; j < 8; j++) {
            spruce__lut_perm[m][j] = (m >> j) & 1 ? r : INT32_MIN;
            r += (m >> j) & 1;
        }
    }
}

void bitmask_spmv_avx2(const struct spruce_sparse *A, const float *x, int batch, float *y, int r0,
                       int r1)
{
    (void)batch;
    spmv_rows_avx2(A, x, y, r0, r1, 1, 0);
}
