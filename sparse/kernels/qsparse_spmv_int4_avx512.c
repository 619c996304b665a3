/* qsparse_spmv_int4_avx512.c: y = A x for a bitmask or N:M matrix of int4
 * values with AVX-512 (the loops and their maths: qsparse_spmv_avx512.h). */
#include "qsparse_spmv_avx512.h"

void qsparse_spmv_int4_avx512(const struct spruce_qsparse *A, const float *x, int batch, float *y,
                          int r0, int r1)
{
    (void)batch;
    qspmv_avx512(A, x, y, r0, r1, SPRUCE_DT_INT4);
}
