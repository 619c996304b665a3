/* kernels_avx512.c: the AVX-512 kernel tables (compiled with the AVX-512 flags). */
#include "config.h"

#include "qdense.h"
#include "sparse_internal.h"

void spruce__kernels_avx512(spruce__kernel_table *t)
{
    t->k[SPRUCE_FMT_CSR][0] = csr_spmv_avx512;
    t->k[SPRUCE_FMT_CSR][1] = csr_spmm_avx512;
    t->k[SPRUCE_FMT_BITMASK][0] = bitmask_spmv_avx512;
    t->k[SPRUCE_FMT_BITMASK][1] = bitmask_spmm_avx512;
    t->k[SPRUCE_FMT_NM][0] = nm_spmv_avx512;
    t->k[SPRUCE_FMT_NM][1] = bitmask_spmm_avx512;
}

void spruce__qdense_avx512(spruce__qdense_table *t, int bf16dp)
{
    t->k[SPRUCE_DT_BF16][0] = dense_spmv_bf16_avx512;
#ifdef SPRUCE_HAVE_AVX512BF16
    if (bf16dp)
        t->k[SPRUCE_DT_BF16][0] = dense_spmv_bf16_avx512bf16;
#else
    (void)bf16dp;
#endif
    t->k[SPRUCE_DT_INT8][0] = dense_spmv_int8_avx512;
    t->k[SPRUCE_DT_INT4][0] = dense_spmv_int4_avx512;
    t->k[SPRUCE_DT_BF16][1] = dense_spmm_q_avx512;
    t->k[SPRUCE_DT_INT8][1] = dense_spmm_q_avx512;
    t->k[SPRUCE_DT_INT4][1] = dense_spmm_q_avx512;
}
