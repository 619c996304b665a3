/* bitmask_spmv_avx2.h: the row loop of y = A x with AVX2+FMA, shared by the
 * bitmask (bitmask_spmv_avx2.c) and N:M (nm_spmv_avx2.c) kernels, which
 * differ only in how far each 8-column slice of a row moves the values.
 * A is (rows, cols): bits (rows, wpr) words, kept values packed per row; x is
 * (cols), y is (rows).  For each 8-column slice m of a row's bitmask:
 *   acc += blend(permute(load(v), perm[m]), 0, perm[m] < 0) * x[k .. k+8)
 * where v moves on by popcount(m) (bitmask), or by a constant c8 (N:M, every
 * 8 columns holding exactly c8 values: no bit is counted).  The last, partial
 * word of a row is counted in both.  Internal to the kernels. */
#ifndef SPRUCE_BITMASK_SPMV_AVX2_H
#define SPRUCE_BITMASK_SPMV_AVX2_H

#include <immintrin.h>

#include "kernel_common.h"
#include "sparse_internal.h"

/* Software prefetch distance, in values: the load of a chunk's values waits on
 * its bitmask and a count, so the hardware cannot run far ahead by itself. */
#define SPMV_PF 1024

/* Lane j of permute(v, perm[m]) is the value of rank (bits of m below j)
 * (the permute reads the low 3 bits); the sign bit of perm[m][j] is set
 * where bit j of m is clear, and the blend zeroes those lanes
 * (bitmask_spmv_avx2.c).  One table of 8 KB, not two: x, the tables and the
 * stream of values share L1. */
extern int32_t spruce__lut_perm[256][8];

SPRUCE__INLINE __m256 expand8(unsigned m, const float *v)
{
    const __m256i t = _mm256_load_si256((const __m256i *)spruce__lut_perm[m]);
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(v), t),
                            _mm256_setzero_ps(), _mm256_castsi256_ps(t));
}

/* Rows [r0, r1) of y = A x (y += A x for a column block with A->add set).
 * counted (a constant): v moves by the bits of each slice; else by c8. */
SPRUCE__INLINE void spmv_rows_avx2(const struct spruce_sparse *A, const float *x, float *y, int r0,
                                   int r1, const int counted, int c8)
{
    const int full = A->cols / 64, rem = A->cols % 64;
    int i, w, c;
    for (i = r0; i < r1; i++) {
        const uint64_t *bits = A->bits + (int64_t)i * A->wpr;
        const float *v = A->val + A->rowptr[i];
        __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                       _mm256_setzero_ps()};
        for (w = 0; w < full; w++) {
            const uint64_t b = bits[w];
            const float *xp = x + 64 * w;
            _mm_prefetch((const char *)(v + SPMV_PF), _MM_HINT_T0);
            _mm_prefetch((const char *)(v + SPMV_PF + 16), _MM_HINT_T0);
            _mm_prefetch((const char *)(bits + w + 64), _MM_HINT_T0);
#pragma GCC unroll 8
            for (c = 0; c < 8; c++) {
                const unsigned m = (unsigned)(b >> (8 * c)) & 255u;
                a[c & 3] = _mm256_fmadd_ps(expand8(m, counted ? v : v + c * c8),
                                           _mm256_loadu_ps(xp + 8 * c), a[c & 3]);
                if (counted)
                    v += __builtin_popcount(m);
            }
            if (!counted)
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
            spruce__put(y, i, _mm_cvtss_f32(h), A->add);
        }
    }
}

#endif
