/* bitmask_spmv_avx2.c: y = A x for a bitmask matrix with AVX2+FMA.
 * AVX2 has no expand-load, so each 8-column slice m of a row's bitmask picks a
 * permutation from a 256-entry table: lane j of the permuted vector takes the
 * value of rank (bits of m below j) among the next packed values, lanes whose
 * bit is clear are zeroed, and one FMA meets x[k .. k+8):
 *   acc += (permute(load(v), perm[m]) & keep[m]) * x[k .. k+8);  v += popcount(m).
 * The packed values carry SPRUCE__PAD floats of padding, so the load of 8
 * values never leaves the array. */
#include <immintrin.h>

#include "sparse_internal.h"

/* Software prefetch distance, in values: the load of a chunk's values waits on
 * its bitmask and a count, so the hardware cannot run far ahead by itself. */
#define PF 1024

int32_t spruce__lut_perm[256][8] __attribute__((aligned(32)));
int32_t spruce__lut_keep[256][8] __attribute__((aligned(32)));

void spruce__avx2_lut_init(void)
{
    int m, j;
    for (m = 0; m < 256; m++) {
        int r = 0;
        for (j = 0; j < 8; j++) {
            spruce__lut_perm[m][j] = (m >> j) & 1 ? r : 0;
            spruce__lut_keep[m][j] = (m >> j) & 1 ? -1 : 0;
            r += (m >> j) & 1;
        }
    }
}

static inline __m256 expand8(unsigned m, const float *v)
{
    const __m256 p = _mm256_permutevar8x32_ps(
        _mm256_loadu_ps(v), _mm256_load_si256((const __m256i *)spruce__lut_perm[m]));
    return _mm256_and_ps(p, _mm256_load_ps((const float *)spruce__lut_keep[m]));
}

void bitmask_spmv_avx2(const struct spruce_sparse *A, const float *x, int batch, float *y, int r0,
                       int r1)
{
    const int full = A->cols / 64, rem = A->cols % 64;
    int i, w, c;
    (void)batch;
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
                a[c & 3] = _mm256_fmadd_ps(expand8(m, v), _mm256_loadu_ps(xp + 8 * c), a[c & 3]);
                v += __builtin_popcount(m);
            }
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
