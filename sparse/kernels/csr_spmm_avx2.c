/* csr_spmm_avx2.c: Y = A X for compressed rows with AVX2+FMA, 32 columns of
 * Y at a time: csr_spmm.h in the words of spmm_avx2.h. */
#include "spmm_avx2.h"

#define CSR_SPMM csr_spmm_avx2
#include "csr_spmm.h"
