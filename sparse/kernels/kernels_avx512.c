/* kernels_avx512.c: the AVX-512 kernel table (compiled with the AVX-512 flags). */
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
