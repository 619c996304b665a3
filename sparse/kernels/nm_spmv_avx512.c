/* nm_spmv_avx512.c: y = A x for an N:M matrix with AVX-512.
 * Same layout and expand-loads as bitmask_spmv_avx512.c, but every group of M
 * columns stores exactly N values, so when M divides 16 each 16 columns hold
 * exactly 16 N / M values: the offsets are constants and no bit is counted
 * (only a short last group at the end of a row is counted).  For 2:4 a word
 * of 64 columns holds 32 values:
 *   acc_q += expand(m_q, v + 8 q) * x[k + 16 q ..),  q = 0..3;  v += 32.
 * The row loops are bitmask_spmv_avx512.h. */
#include "bitmask_spmv_avx512.h"

void nm_spmv_avx512(const struct spruce_sparse *A, const float *x, int batch, float *y, int r0,
                    int r1)
{
    if (16 % A->m != 0) {
        bitmask_spmv_avx512(A, x, batch, y, r0, r1);
        return;
    }
    spmv_rows_avx512(A, x, y, r0, r1, 0, 16 / A->m * A->n);
}
