/* csr_spmv_avx2.c: y = A x for compressed rows, built for AVX2 machines.
 * x[idx[p]] is a scattered read, and a hardware gather is slower than scalar
 * loads here, so this is the scalar loop with four independent sums (the FMA
 * latency would otherwise bound it):
 *   y[i] = sum over p in row i of val[p] * x[idx[p]].
 * The row loop is csr_spmv.h. */
#include <immintrin.h>

#include "kernel_common.h"
#include "sparse_internal.h"

/* Software prefetch distance, in values. */
#define PF 1024

/* The sum of val[q] * x[idx[q]] for q in [p, e). */
SPRUCE__INLINE float row_sum(const float *val, const void *idx, int64_t p, int64_t e,
                             const float *x, const int kind)
{
    __m128 s0 = _mm_setzero_ps(), s1 = _mm_setzero_ps();
    __m128 s2 = _mm_setzero_ps(), s3 = _mm_setzero_ps();
    for (; p + 4 <= e; p += 4) {
        _mm_prefetch((const char *)(val + p + PF), _MM_HINT_T0);
        _mm_prefetch(spmm_idx_addr(idx, p + PF, kind), _MM_HINT_T0);
        s0 = _mm_fmadd_ss(_mm_load_ss(val + p), _mm_load_ss(x + spmm_idx(idx, p, kind)), s0);
        s1 = _mm_fmadd_ss(_mm_load_ss(val + p + 1), _mm_load_ss(x + spmm_idx(idx, p + 1, kind)),
                          s1);
        s2 = _mm_fmadd_ss(_mm_load_ss(val + p + 2), _mm_load_ss(x + spmm_idx(idx, p + 2, kind)),
                          s2);
        s3 = _mm_fmadd_ss(_mm_load_ss(val + p + 3), _mm_load_ss(x + spmm_idx(idx, p + 3, kind)),
                          s3);
    }
    for (; p < e; p++)
        s0 = _mm_fmadd_ss(_mm_load_ss(val + p), _mm_load_ss(x + spmm_idx(idx, p, kind)), s0);
    return _mm_cvtss_f32(_mm_add_ss(_mm_add_ss(s0, s1), _mm_add_ss(s2, s3)));
}

#define CSR_SPMV csr_spmv_avx2
#include "csr_spmv.h"
