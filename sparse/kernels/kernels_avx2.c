/* kernels_avx2.c: the AVX2+FMA kernel table (compiled with the AVX2 flags). */
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
