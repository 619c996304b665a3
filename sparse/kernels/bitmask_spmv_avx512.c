/* bitmask_spmv_avx512.c: y = A x for a bitmask matrix with AVX-512.
 * A is (rows, cols): bits (rows, wpr) words, kept values packed per row; x is
 * (cols), y is (rows).  For every 16 columns the 16-bit slice m of the row's
 * bitmask drives an expand-load: the next popcount(m) packed values land in
 * the lanes whose bit is set (zeros elsewhere) and meet x[k .. k+16) in one
 * FMA, so no gather is needed:
 *   acc += expand(m, v) * x[k .. k+16);  v += popcount(m). */
#include <immintrin.h>

#include <string.h>

#include "sparse_internal.h"

/* Software prefetch distance, in values: the load of a chunk's values waits on
 * its bitmask and a count, so the hardware cannot run far ahead by itself. */
#define PF 1024

/* 16 bits of a row's bitmask (little-endian words), as a mask register. */
static inline __mmask16 mask16(const uint16_t *p)
{
    uint16_t m;
    memcpy(&m, p, sizeof m);
    return _cvtu32_mask16(m);
}

static inline __m512 expand(__mmask16 m, const float *v)
{
    return _mm512_maskz_expandloadu_ps(m, v);
}

void bitmask_spmv_avx512(const struct spruce_sparse *A, const float *x, int batch, float *y,
                         int r0, int r1)
{
    const int full = A->cols / 64, rem = A->cols % 64;
    int i, w, c;
    (void)batch;
    for (i = r0; i < r1; i++) {
        const uint64_t *bits = A->bits + (int64_t)i * A->wpr;
        /* the same bits as 16-bit masks: loaded straight into mask registers
         * (a load, where moving them from a general register would compete
         * with the expands for the same execution port) */
        const uint16_t *m16 = (const uint16_t *)bits;
        const float *v = A->val + A->rowptr[i];
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        for (w = 0; w < full; w++) {
            const uint64_t b = bits[w];
            const float *xp = x + 64 * w;
            _mm_prefetch((const char *)(v + PF), _MM_HINT_T0);
            _mm_prefetch((const char *)(v + PF + 16), _MM_HINT_T0);
            _mm_prefetch((const char *)(bits + w + 64), _MM_HINT_T0);
            const int c0 = __builtin_popcountll(b & 0xffffull);
            const int c1 = __builtin_popcountll(b & 0xffffffffull);
            const int c2 = __builtin_popcountll(b & 0xffffffffffffull);
            a0 = _mm512_fmadd_ps(expand(mask16(m16 + 4 * w), v), _mm512_loadu_ps(xp), a0);
            a1 = _mm512_fmadd_ps(expand(mask16(m16 + 4 * w + 1), v + c0),
                                 _mm512_loadu_ps(xp + 16), a1);
            a2 = _mm512_fmadd_ps(expand(mask16(m16 + 4 * w + 2), v + c1),
                                 _mm512_loadu_ps(xp + 32), a2);
            a3 = _mm512_fmadd_ps(expand(mask16(m16 + 4 * w + 3), v + c2),
                                 _mm512_loadu_ps(xp + 48), a3);
            v += __builtin_popcountll(b);
        }
        if (rem) {
            const uint64_t b = bits[full];
            const float *xp = x + 64 * full;
            for (c = 0; 16 * c < rem; c++) {
                const int left = rem - 16 * c;
                const __mmask16 xm = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
                const __mmask16 m = (__mmask16)(b >> (16 * c));
                a0 = _mm512_fmadd_ps(expand(m, v), _mm512_maskz_loadu_ps(xm, xp + 16 * c), a0);
                v += __builtin_popcount(m);
            }
        }
        y[i] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
}
