/* qsparse_spmv_int4_avx2.c: y = A x for a bitmask or N:M matrix of int4
 * values with AVX2+FMA (the loops and their maths: qsparse_spmv_avx2.h). */
#include "qsparse_spmv_avx2.h"

void qsparse_spmv_int4_avx2(const struct spruce_qsparse *A, const float *x, int batch, float *y,
                        int r0, int r1)
{
    (void)batch;
    qspmv_avx2(A, x, y, r0, r1, SPRUCE_DT_INT4);
}
