/* qcsr_avx2.c: y = A x (batch 1) and Y = A X (batch > 1) with AVX2+FMA for
 * compressed-rows matrices of bf16, int8 and int4 values
 * (qsparse_internal.h).  Batch 1 takes 8 stored values at a time, loads
 * the x of their columns (scalar loads put in a vector; a masked hardware
 * gather for a row's last values) and sums in float32:
 *   bf16  y_i = sum w_p x[col_p]
 *   int8  y_i = s_i (sum q_p x[col_p] - z_i sum x[col_p])
 *   int4  y_i = sum over the groups g of the row's values (contiguous: the
 *         values are in column order) of s_ig (sum u_p x - z_ig sum x)
 * A row's last values take masked lanes.  Batch > 1 dequantizes each value
 * once and adds it times its row of X to Y's row, 8 columns at a time.
 * The same kernels serve AVX-512 hosts: 16-lane gathers are slow on some of
 * them (qsparse.c).  Internal. */
#include <immintrin.h>
#include <string.h>

#include "kernel_common.h"
#include "qsparse_internal.h"

static inline float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The columns of values p .. p + 8 as 32-bit lanes (the arrays are padded). */
static inline __m256i cols8(const struct spruce_qsparse *A, int64_t p)
{
    if (A->col16)
        return _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(A->col16 + p)));
    return _mm256_loadu_si256((const __m256i *)(A->col32 + p));
}

/* x at the columns of values p .. p + 8: scalar loads put together in a
 * vector (on Zen 3 twice as fast as a hardware gather, csr_spmv_avx2.c). */
static inline __m256 x8(const struct spruce_qsparse *A, const float *x, int64_t p)
{
    if (A->col16) {
        const uint16_t *c = A->col16 + p;
        return _mm256_set_m128(_mm_setr_ps(x[c[4]], x[c[5]], x[c[6]], x[c[7]]),
                               _mm_setr_ps(x[c[0]], x[c[1]], x[c[2]], x[c[3]]));
    } else {
        const uint32_t *c = A->col32 + p;
        return _mm256_set_m128(_mm_setr_ps(x[c[4]], x[c[5]], x[c[6]], x[c[7]]),
                               _mm_setr_ps(x[c[0]], x[c[1]], x[c[2]], x[c[3]]));
    }
}

/* Values p .. p + 8 as floats: bf16 values, int8 q, int4 u. */
static inline __m256 vals8(const struct spruce_qsparse *A, int64_t p)
{
    if (A->dtype == SPRUCE_DT_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(A->val + 2 * p))), 16));
    if (A->dtype == SPRUCE_DT_INT8)
        return _mm256_cvtepi32_ps(
            _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(A->val + p))));
    {
        uint64_t w;
        memcpy(&w, A->val + (p >> 1), sizeof w);
        w >>= 4 * (p & 1);
        return _mm256_cvtepi32_ps(
            _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)(uint32_t)w),
                                               _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
                             _mm256_set1_epi32(15)));
    }
}

/* Sums over values [p, e) of v x[col] (*sv) and of x[col] (*sx, when sx). */
static inline void span(const struct spruce_qsparse *A, const float *x, int64_t p, int64_t e,
                        float *sv, float *sx)
{
    __m256 av = _mm256_setzero_ps(), ax = _mm256_setzero_ps();
    for (; p + 8 <= e; p += 8) {
        const __m256 xv = x8(A, x, p);
        av = _mm256_fmadd_ps(vals8(A, p), xv, av);
        if (sx)
            ax = _mm256_add_ps(ax, xv);
    }
    if (p < e) { /* the last lanes: the others gather nothing and hold 0 */
        const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(e - p)),
                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        const __m256i idx = _mm256_and_si256(cols8(A, p), m);
        const __m256 xv = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), x, idx,
                                                   _mm256_castsi256_ps(m), 4);
        av = _mm256_fmadd_ps(_mm256_and_ps(vals8(A, p), _mm256_castsi256_ps(m)), xv, av);
        if (sx)
            ax = _mm256_add_ps(ax, xv);
    }
    *sv = hsum(av);
    if (sx)
        *sx = hsum(ax);
}

void qcsr_spmv_avx2(const struct spruce_qsparse *A, const float *X, int batch, float *Y, int r0,
                    int r1)
{
    int i;
    (void)batch;
    for (i = r0; i < r1; i++) {
        const int64_t p0 = A->rowptr[i], e = p0 + A->rowcnt[i];
        float sv = 0, sx = 0;
        if (A->dtype == SPRUCE_DT_BF16) {
            span(A, X, p0, e, &sv, NULL);
            Y[i] = sv;
        } else if (A->dtype == SPRUCE_DT_INT8) {
            span(A, X, p0, e, &sv, A->zero ? &sx : NULL);
            Y[i] = A->scale[i] * (sv - (float)spruce__qzero(A, i, 0) * sx);
        } else {
            float y = 0;
            int64_t p = p0;
            while (p < e) { /* one group of columns at a time */
                const int g = spruce__qcol(A, p) / A->groupsize;
                const int end = (g + 1) * A->groupsize;
                int64_t q = p + 1;
                while (q < e && spruce__qcol(A, q) < end)
                    q++;
                span(A, X, p, q, &sv, &sx);
                y += A->scale[(size_t)i * A->ngroups + g] *
                     (sv - (float)spruce__qzero(A, i, g) * sx);
                p = q;
            }
            Y[i] = y;
        }
    }
}

void qcsr_spmm_avx2(const struct spruce_qsparse *A, const float *X, int batch, float *Y, int r0,
                    int r1)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int i, j;
    for (i = r0; i < r1; i++) {
        float *y = Y + (int64_t)i * batch;
        int64_t p;
        for (j = 0; j < batch; j++)
            y[j] = 0.0f;
        for (p = A->rowptr[i]; p < A->rowptr[i] + A->rowcnt[i]; p++) {
            const int k = spruce__qcol(A, p);
            const float *xr = X + (int64_t)k * batch;
            const __m256 w = _mm256_set1_ps(spruce__qvalue(A, p, i, k));
            for (j = 0; j + 8 <= batch; j += 8)
                _mm256_storeu_ps(y + j, _mm256_fmadd_ps(w, _mm256_loadu_ps(xr + j),
                                                        _mm256_loadu_ps(y + j)));
            if (j < batch) {
                const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(batch - j), lane);
                _mm256_maskstore_ps(y + j, m,
                                    _mm256_fmadd_ps(w, _mm256_maskload_ps(xr + j, m),
                                                    _mm256_maskload_ps(y + j, m)));
            }
        }
    }
}
