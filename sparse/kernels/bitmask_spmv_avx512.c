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

/* Two rows at once, for long rows (x larger than the L1 cache can keep next
 * to the streamed weights): each 16 values of x are loaded once for both rows,
 * and two streams of values are in flight.  Matrices wider than
 * SPRUCE__BLOCK_COLS are packed as column blocks (pack.c), which does better;
 * this remains for the blocks and matrices that are still wider. */
static void two_rows(const struct spruce_sparse *A, const float *x, float *y, int i)
{
    const int full = A->cols / 64, rem = A->cols % 64;
    const uint64_t *bits0 = A->bits + (int64_t)i * A->wpr, *bits1 = bits0 + A->wpr;
    const uint16_t *m0 = (const uint16_t *)bits0, *m1 = (const uint16_t *)bits1;
    const float *v0 = A->val + A->rowptr[i], *v1 = A->val + A->rowptr[i + 1];
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
    int w, c;
    for (w = 0; w < full; w++) {
        const uint64_t p = bits0[w], q = bits1[w];
        const float *xp = x + 64 * w;
        const __m512 x0 = _mm512_loadu_ps(xp), x1 = _mm512_loadu_ps(xp + 16);
        const __m512 x2 = _mm512_loadu_ps(xp + 32), x3 = _mm512_loadu_ps(xp + 48);
        const int p0 = __builtin_popcountll(p & 0xffffull), p1 = __builtin_popcountll(p & 0xffffffffull);
        const int p2 = __builtin_popcountll(p & 0xffffffffffffull);
        const int q0 = __builtin_popcountll(q & 0xffffull), q1 = __builtin_popcountll(q & 0xffffffffull);
        const int q2 = __builtin_popcountll(q & 0xffffffffffffull);
        _mm_prefetch((const char *)(v0 + PF), _MM_HINT_T0);
        _mm_prefetch((const char *)(v0 + PF + 16), _MM_HINT_T0);
        _mm_prefetch((const char *)(v1 + PF), _MM_HINT_T0);
        _mm_prefetch((const char *)(v1 + PF + 16), _MM_HINT_T0);
        a0 = _mm512_fmadd_ps(expand(mask16(m0 + 4 * w), v0), x0, a0);
        b0 = _mm512_fmadd_ps(expand(mask16(m1 + 4 * w), v1), x0, b0);
        a1 = _mm512_fmadd_ps(expand(mask16(m0 + 4 * w + 1), v0 + p0), x1, a1);
        b1 = _mm512_fmadd_ps(expand(mask16(m1 + 4 * w + 1), v1 + q0), x1, b1);
        a0 = _mm512_fmadd_ps(expand(mask16(m0 + 4 * w + 2), v0 + p1), x2, a0);
        b0 = _mm512_fmadd_ps(expand(mask16(m1 + 4 * w + 2), v1 + q1), x2, b0);
        a1 = _mm512_fmadd_ps(expand(mask16(m0 + 4 * w + 3), v0 + p2), x3, a1);
        b1 = _mm512_fmadd_ps(expand(mask16(m1 + 4 * w + 3), v1 + q2), x3, b1);
        v0 += __builtin_popcountll(p);
        v1 += __builtin_popcountll(q);
    }
    for (c = 0; 16 * c < rem; c++) {
        const int left = rem - 16 * c;
        const __mmask16 xm = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
        const __mmask16 p = (__mmask16)(bits0[full] >> (16 * c)), q = (__mmask16)(bits1[full] >> (16 * c));
        const __m512 xv = _mm512_maskz_loadu_ps(xm, x + 64 * full + 16 * c);
        a0 = _mm512_fmadd_ps(expand(p, v0), xv, a0);
        b0 = _mm512_fmadd_ps(expand(q, v1), xv, b0);
        v0 += __builtin_popcount(p);
        v1 += __builtin_popcount(q);
    }
    y[i] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    y[i + 1] = _mm512_reduce_add_ps(_mm512_add_ps(b0, b1));
}

void bitmask_spmv_avx512(const struct spruce_sparse *A, const float *x, int batch, float *y,
                         int r0, int r1)
{
    const int full = A->cols / 64, rem = A->cols % 64;
    int i, w, c;
    (void)batch;
    if (A->cols > 8192)
        for (; r0 + 2 <= r1; r0 += 2)
            two_rows(A, x, y, r0);
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
