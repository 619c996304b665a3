/* nm_spmv_avx512.c: y = A x for an N:M matrix with AVX-512.
 * Same layout and expand-loads as bitmask_spmv_avx512.c, but every group of M
 * columns stores exactly N values, so when M divides 16 each 16 columns hold
 * exactly 16 N / M values: the offsets are constants and no bit is counted
 * (only a short last group at the end of a row is counted).  For 2:4 a word
 * of 64 columns holds 32 values:
 *   acc_q += expand(m_q, v + 8 q) * x[k + 16 q ..),  q = 0..3;  v += 32. */
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

/* Two rows at once, for long rows (as in bitmask_spmv_avx512.c): each 16
 * values of x are loaded once for both rows.  c16 values per 16 columns. */
static void two_rows(const struct spruce_sparse *A, const float *x, float *y, int i, int c16)
{
    const int full = A->cols / 64, rem = A->cols % 64;
    const uint64_t *bits0 = A->bits + (int64_t)i * A->wpr, *bits1 = bits0 + A->wpr;
    const uint16_t *m0 = (const uint16_t *)bits0, *m1 = (const uint16_t *)bits1;
    const float *v0 = A->val + A->rowptr[i], *v1 = A->val + A->rowptr[i + 1];
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
    int w, c;
    for (w = 0; w < full; w++) {
        const float *xp = x + 64 * w;
        const __m512 x0 = _mm512_loadu_ps(xp), x1 = _mm512_loadu_ps(xp + 16);
        const __m512 x2 = _mm512_loadu_ps(xp + 32), x3 = _mm512_loadu_ps(xp + 48);
        _mm_prefetch((const char *)(v0 + PF), _MM_HINT_T0);
        _mm_prefetch((const char *)(v0 + PF + 16), _MM_HINT_T0);
        _mm_prefetch((const char *)(v1 + PF), _MM_HINT_T0);
        _mm_prefetch((const char *)(v1 + PF + 16), _MM_HINT_T0);
        a0 = _mm512_fmadd_ps(_mm512_maskz_expandloadu_ps(mask16(m0 + 4 * w), v0), x0, a0);
        b0 = _mm512_fmadd_ps(_mm512_maskz_expandloadu_ps(mask16(m1 + 4 * w), v1), x0, b0);
        a1 = _mm512_fmadd_ps(_mm512_maskz_expandloadu_ps(mask16(m0 + 4 * w + 1), v0 + c16), x1, a1);
        b1 = _mm512_fmadd_ps(_mm512_maskz_expandloadu_ps(mask16(m1 + 4 * w + 1), v1 + c16), x1, b1);
        a0 = _mm512_fmadd_ps(_mm512_maskz_expandloadu_ps(mask16(m0 + 4 * w + 2), v0 + 2 * c16), x2,
                             a0);
        b0 = _mm512_fmadd_ps(_mm512_maskz_expandloadu_ps(mask16(m1 + 4 * w + 2), v1 + 2 * c16), x2,
                             b0);
        a1 = _mm512_fmadd_ps(_mm512_maskz_expandloadu_ps(mask16(m0 + 4 * w + 3), v0 + 3 * c16), x3,
                             a1);
        b1 = _mm512_fmadd_ps(_mm512_maskz_expandloadu_ps(mask16(m1 + 4 * w + 3), v1 + 3 * c16), x3,
                             b1);
        v0 += 4 * c16;
        v1 += 4 * c16;
    }
    for (c = 0; 16 * c < rem; c++) {
        const int left = rem - 16 * c;
        const __mmask16 xm = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
        const __mmask16 p = (__mmask16)(bits0[full] >> (16 * c));
        const __mmask16 q = (__mmask16)(bits1[full] >> (16 * c));
        const __m512 xv = _mm512_maskz_loadu_ps(xm, x + 64 * full + 16 * c);
        a0 = _mm512_fmadd_ps(_mm512_maskz_expandloadu_ps(p, v0), xv, a0);
        b0 = _mm512_fmadd_ps(_mm512_maskz_expandloadu_ps(q, v1), xv, b0);
        v0 += __builtin_popcount(p);
        v1 += __builtin_popcount(q);
    }
    y[i] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    y[i + 1] = _mm512_reduce_add_ps(_mm512_add_ps(b0, b1));
}

void nm_spmv_avx512(const struct spruce_sparse *A, const float *x, int batch, float *y, int r0,
                    int r1)
{
    const int full = A->cols / 64, rem = A->cols % 64;
    int i, w, c, c16;
    if (16 % A->m != 0) {
        bitmask_spmv_avx512(A, x, batch, y, r0, r1);
        return;
    }
    c16 = 16 / A->m * A->n;
    if (A->cols > 8192)
        for (; r0 + 2 <= r1; r0 += 2)
            two_rows(A, x, y, r0, c16);
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
            const float *xp = x + 64 * w;
            _mm_prefetch((const char *)(v + PF), _MM_HINT_T0);
            _mm_prefetch((const char *)(v + PF + 16), _MM_HINT_T0);
            _mm_prefetch((const char *)(bits + w + 64), _MM_HINT_T0);
            a0 = _mm512_fmadd_ps(_mm512_maskz_expandloadu_ps(mask16(m16 + 4 * w), v),
                                 _mm512_loadu_ps(xp), a0);
            a1 = _mm512_fmadd_ps(_mm512_maskz_expandloadu_ps(mask16(m16 + 4 * w + 1), v + c16),
                                 _mm512_loadu_ps(xp + 16), a1);
            a2 = _mm512_fmadd_ps(
                _mm512_maskz_expandloadu_ps(mask16(m16 + 4 * w + 2), v + 2 * c16),
                _mm512_loadu_ps(xp + 32), a2);
            a3 = _mm512_fmadd_ps(
                _mm512_maskz_expandloadu_ps(mask16(m16 + 4 * w + 3), v + 3 * c16),
                _mm512_loadu_ps(xp + 48), a3);
            v += 4 * c16;
        }
        if (rem) {
            const uint64_t b = bits[full];
            const float *xp = x + 64 * full;
            for (c = 0; 16 * c < rem; c++) {
                const int left = rem - 16 * c;
                const __mmask16 xm = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
                const __mmask16 m = (__mmask16)(b >> (16 * c));
                a0 = _mm512_fmadd_ps(_mm512_maskz_expandloadu_ps(m, v),
                                     _mm512_maskz_loadu_ps(xm, xp + 16 * c), a0);
                v += __builtin_popcount(m);
            }
        }
        y[i] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
}
