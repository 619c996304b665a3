/* kernels_avx2.c: the AVX2+FMA kernel tables (compiled with the AVX2 flags). */
#include "qdense.h"
#include "sparse_internal.h"

void spruce__avx2_lut_init(void);

void spruce__kernels_avx2(spruce__kernel_table *t)
{
    spruce__avx2_lut_init();
    t->k[SPRUCE_FMT_CSR][0] = csr_spmv_avx2;
    t->k[SPRUCE_FMT_CSR][1] = csr_spmm_avx2;
    t->k[SPRUCE_FMT_BITMASK][0] = bitmask_spmv_avx2;
    t->k[SPRUCE_FMT_BITMASK][1] = bitmask_spmm_avx2;
    t->k[SPRUCE_FMT_NM][0] = nm_spmv_avx2;
    t->k[SPRUCE_FMT_NM][1] = bitmask_spmm_avx2;
}

void spruce__qdense_avx2(spruce__qdense_table *t)
{
    t->k[SPRUCE_DT_BF16][0] = dense_spmv_bf16_avx2;
    t->k[SPRUCE_DT_INT8][0] = dense_spmv_int8_avx2;
    t->k[SPRUCE_DT_INT4][0] = dense_spmv_int4_avx2;
    t->k[SPRUCE_DT_BF16][1] = dense_spmm_q_avx2;
    t->k[SPRUCE_DT_INT8][1] = dense_spmm_q_avx2;
    t->k[SPRUCE_DT_INT4][1] = dense_spmm_q_avx2;
}
