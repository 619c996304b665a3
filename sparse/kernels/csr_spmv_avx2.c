/* csr_spmv_avx2.c: y = A x for compressed rows, built for AVX2 machines.
 * x[idx[p]] is a scattered read, and a hardware gather is slower than scalar
 * loads here, so this is the scalar loop with four independent sums (the FMA
 * latency would otherwise bound it):
 *   y[i] = sum over p in row i of val[p] * x[idx[p]]. */
#include <immintrin.h>

#include "sparse_internal.h"

/* Software prefetch distance, in values. */
#define PF 1024

#define ROW(IDX)                                                                 \
    do {                                                                         \
        for (; p + 4 <= e; p += 4) {                                             \
            _mm_prefetch((const char *)(val + p + PF), _MM_HINT_T0);             \
            _mm_prefetch((const char *)(IDX + p + PF), _MM_HINT_T0);             \
            s0 = _mm_fmadd_ss(_mm_load_ss(val + p), _mm_load_ss(x + IDX[p]), s0);         \
            s1 = _mm_fmadd_ss(_mm_load_ss(val + p + 1), _mm_load_ss(x + IDX[p + 1]), s1); \
            s2 = _mm_fmadd_ss(_mm_load_ss(val + p + 2), _mm_load_ss(x + IDX[p + 2]), s2); \
            s3 = _mm_fmadd_ss(_mm_load_ss(val + p + 3), _mm_load_ss(x + IDX[p + 3]), s3); \
        }                                                                        \
        for (; p < e; p++)                                                       \
            s0 = _mm_fmadd_ss(_mm_load_ss(val + p), _mm_load_ss(x + IDX[p]), s0);         \
    } while (0)

void csr_spmv_avx2(const struct spruce_sparse *A, const float *x, int batch, float *y, int r0,
                     int r1)
{
    const float *val = A->val;
    int i;
    (void)batch;
    for (i = r0; i < r1; i++) {
        int64_t p = A->rowptr[i], e = A->rowptr[i + 1];
        __m128 s0 = _mm_setzero_ps(), s1 = _mm_setzero_ps();
        __m128 s2 = _mm_setzero_ps(), s3 = _mm_setzero_ps();
        if (A->idx_bits == 16)
            ROW(A->idx16);
        else
            ROW(A->idx32);
        y[i] = _mm_cvtss_f32(_mm_add_ss(_mm_add_ss(s0, s1), _mm_add_ss(s2, s3)));
    }
}
