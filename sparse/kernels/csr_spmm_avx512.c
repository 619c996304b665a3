/* csr_spmm_avx512.c: Y = A X for compressed rows with AVX-512, 64 columns of
 * Y at a time: csr_spmm.h in the words of spmm_avx512.h. */
#include "spmm_avx512.h"

#define CSR_SPMM csr_spmm_avx512
#include "csr_spmm.h"
