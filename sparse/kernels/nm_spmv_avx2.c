/* nm_spmv_avx2.c: y = A x for an N:M matrix with AVX2+FMA.
 * The table-driven expand of bitmask_spmv_avx2.c, but when M divides 8 every
 * 8 columns hold exactly 8 N / M values, so the offsets are constants and no
 * bit is counted (only a short last group of a row is).  For 2:4:
 *   acc += (permute(load(v), perm[m]) & keep[m]) * x[k .. k+8);  v += 4. */
#include <immintrin.h>

#include "sparse_internal.h"

/* Software prefetch distance, in values: the load of a chunk's values waits on
 * its bitmask and a count, so the hardware cannot run far ahead by itself. */
#define PF 1024

extern int32_t spruce__lut_perm[256][8];
extern int32_t spruce__lut_keep[256][8];

static inline __m256 expand8(unsigned m, const float *v)
{
    const __m256 p = _mm256_permutevar8x32_ps(
        _mm256_loadu_ps(v), _mm256_load_si256((const __m256i *)spruce__lut_perm[m]));
    return _mm256_and_ps(p, _mm256_load_ps((const float *)spruce__lut_keep[m]));
}

void nm_spmv_avx2(const struct spruce_sparse *A, const float *x, int batch, float *y, int r0,
                  int r1)
{
    const int full = A->cols / 64, rem = A->cols % 64;
    int i, w, c, c8;
    if (8 % A->m != 0) {
        bitmask_spmv_avx2(A, x, batch, y, r0, r1);
        return;
    }
    c8 = 8 / A->m * A->n;
    for (i = r0; i < r1; i++) {
        const uint64_t *bits = A->bits + (int64_t)i * A->wpr;
        const float *v = A->val + A->rowptr[i];
        __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                       _mm256_setzero_ps()};
        for (w = 0; w < full; w++) {
            const uint64_t b = bits[w];
            const float *xp = x + 64 * w;
            _mm_prefetch((const char *)(v + PF), _MM_HINT_T0);
            _mm_prefetch((const char *)(v + PF + 16), _MM_HINT_T0);
            _mm_prefetch((const char *)(bits + w + 64), _MM_HINT_T0);
#pragma GCC unroll 8
            for (c = 0; c < 8; c++) {
                const unsigned m = (unsigned)(b >> (8 * c)) & 255u;
                a[c & 3] = _mm256_fmadd_ps(expand8(m, v + c * c8), _mm256_loadu_ps(xp + 8 * c),
                                           a[c & 3]);
            }
            v += 8 * c8;
        }
        if (rem) {
            const uint64_t b = bits[full];
            const float *xp = x + 64 * full;
            for (c = 0; 8 * c < rem; c++) {
                const int left = rem - 8 * c;
                const unsigned m = (unsigned)(b >> (8 * c)) & 255u;
                const __m256i xm = _mm256_cmpgt_epi32(_mm256_set1_epi32(left),
                                                      _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
                a[0] = _mm256_fmadd_ps(expand8(m, v), _mm256_maskload_ps(xp + 8 * c, xm), a[0]);
                v += __builtin_popcount(m);
            }
        }
        {
            __m256 s = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
            __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
            h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            h = _mm_add_ss(h, _mm_movehdup_ps(h));
            y[i] = _mm_cvtss_f32(h);
        }
    }
}
