/* qsparse_kernels_avx512.c: the AVX-512 kernels of the bf16, int8 and int4
 * bitmask and N:M matrices (compiled with the AVX-512 flags). */
#include "qsparse_internal.h"

void spruce__qskernels_avx512(spruce__qskernel_table *t)
{
    t->k[SPRUCE_DT_BF16][0] = qsparse_spmv_bf16_avx512;
    t->k[SPRUCE_DT_INT8][0] = qsparse_spmv_int8_avx512;
    t->k[SPRUCE_DT_INT4][0] = qsparse_spmv_int4_avx512;
    t->k[SPRUCE_DT_BF16][1] = qsparse_spmm_avx512;
    t->k[SPRUCE_DT_INT8][1] = qsparse_spmm_avx512;
    t->k[SPRUCE_DT_INT4][1] = qsparse_spmm_avx512;
}
