/* qsparse_kernels_avx2.c: the AVX2+FMA kernels of the bf16, int8 and int4
 * bitmask and N:M matrices (compiled with the AVX2+FMA flags). */
#include "qsparse_internal.h"

void spruce__qskernels_avx2(spruce__qskernel_table *t)
{
    t->k[SPRUCE_DT_BF16][0] = qsparse_spmv_bf16_avx2;
    t->k[SPRUCE_DT_INT8][0] = qsparse_spmv_int8_avx2;
    t->k[SPRUCE_DT_INT4][0] = qsparse_spmv_int4_avx2;
    t->k[SPRUCE_DT_BF16][1] = qsparse_spmm_avx2;
    t->k[SPRUCE_DT_INT8][1] = qsparse_spmm_avx2;
    t->k[SPRUCE_DT_INT4][1] = qsparse_spmm_avx2;
}
