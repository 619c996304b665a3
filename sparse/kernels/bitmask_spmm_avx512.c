/* bitmask_spmm_avx512.c: Y = A X for a bitmask (or N:M) matrix with AVX-512.
 * X is (cols, batch), Y is (rows, batch), row-major.  A row's bitmask is
 * decoded a window of 1024 columns at a time into a small list of column
 * numbers, each 16-bit slice m turned into the columns of its set bits by one
 * compress: cols[n .. n + popcount(m)) = compress(m, k + {0, 1, .., 15}); then
 * the weights of the window meet the rows of X they select exactly as for
 * compressed rows (spmm_avx512.h).  The list lives on the stack.  A column
 * block with A->add set adds its product to Y. */
#include "sparse_internal.h"
#include "spmm_avx512.h"

#define WINDOW_WORDS 16 /* 1024 columns */

/* Columns of the set bits of words [w0, w1) of a row, as a list (see above). */
static inline int decode(const uint64_t *bits, int w0, int w1, int32_t *cols)
{
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    int n = 0, w, q;
    for (w = w0; w < w1; w++) {
        const uint64_t b = bits[w];
        __m512i k = _mm512_add_epi32(iota, _mm512_set1_epi32(64 * w));
        for (q = 0; q < 4; q++) {
            const __mmask16 m = (__mmask16)(b >> (16 * q));
            _mm512_storeu_si512(cols + n, _mm512_maskz_compress_epi32(m, k));
            n += __builtin_popcount(m);
            k = _mm512_add_epi32(k, _mm512_set1_epi32(16));
        }
    }
    return n;
}

/* Blocked as the compressed-row product is (csr_spmm.h): a window of
 * SPRUCE__WIN columns of X stays in the L1 cache while each row of a block of
 * SPRUCE__RB rows adds its weights in that window to its row of Y (from the
 * first window on for a column block with A->add set); columns j0 .. j0 + 64
 * of Y at a time. */
static void blocked(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0,
                    int r1)
{
    enum { WW = SPRUCE__WIN / 64 };
    int32_t cols[SPRUCE__WIN + 16];
    const float *vp[SPRUCE__RB];
    int rb, i, w0, j0, q;
    for (j0 = 0; j0 < batch; j0 += 64) {
        const int nb = batch - j0 < 64 ? batch - j0 : 64, nv = (nb + 15) / 16;
        const __mmask16 tail = nb % 16 ? (__mmask16)((1u << (nb % 16)) - 1) : 0xffff;
        for (rb = r0; rb < r1; rb += SPRUCE__RB) {
            const int nr = r1 - rb < SPRUCE__RB ? r1 - rb : SPRUCE__RB;
            for (i = 0; i < nr; i++)
                vp[i] = A->val + A->rowptr[rb + i];
            for (w0 = 0; w0 < A->wpr; w0 += WW) {
                const int w1 = w0 + WW < A->wpr ? w0 + WW : A->wpr;
                for (i = 0; i < nr; i++) {
                    const int n = decode(A->bits + (int64_t)(rb + i) * A->wpr, w0, w1, cols);
                    float *y = Y + (int64_t)(rb + i) * batch + j0;
                    __m512 acc[4];
                    for (q = 0; q < 4; q++)
                        acc[q] = (w0 == 0 && !A->add) || q >= nv
                                     ? _mm512_setzero_ps()
                                     : _mm512_maskz_loadu_ps(q == nv - 1 ? tail : 0xffff,
                                                             y + 16 * q);
                    if (batch == 16) /* the common case, unrolled for it */
                        spmm_acc512(vp[i], cols, n, X, 16, 0xffff, acc, 1, 0);
                    else
                        spmm_acc512_nv(vp[i], cols, n, X + j0, batch, tail, acc, nv, 0);
                    for (q = 0; q < nv; q++)
                        _mm512_mask_storeu_ps(y + 16 * q, q == nv - 1 ? tail : 0xffff, acc[q]);
                    vp[i] += n;
                }
            }
        }
    }
}

void bitmask_spmm_avx512(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0,
                         int r1)
{
    int32_t cols[64 * WINDOW_WORDS + 16];
    int i, j0, q, w0;
    if (batch >= 8 && A->wpr > SPRUCE__WIN / 64) {
        blocked(A, X, batch, Y, r0, r1);
        return;
    }
    for (j0 = 0; j0 < batch; j0 += 64) {
        const int nb = batch - j0 < 64 ? batch - j0 : 64, nv = (nb + 15) / 16;
        const __mmask16 tail = nb % 16 ? (__mmask16)((1u << (nb % 16)) - 1) : 0xffff;
        for (i = r0; i < r1; i++) {
            const uint64_t *bits = A->bits + (int64_t)i * A->wpr;
            const float *v = A->val + A->rowptr[i];
            float *y = Y + (int64_t)i * batch + j0;
            __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                             _mm512_setzero_ps()};
            for (w0 = 0; w0 < A->wpr; w0 += WINDOW_WORDS) {
                const int w1 = w0 + WINDOW_WORDS < A->wpr ? w0 + WINDOW_WORDS : A->wpr;
                const int n = decode(bits, w0, w1, cols);
                spmm_acc512_nv(v, cols, n, X + j0, batch, tail, acc, nv, 0);
                v += n;
            }
            for (q = 0; A->add && q < nv; q++)
                acc[q] = _mm512_add_ps(
                    _mm512_maskz_loadu_ps(q == nv - 1 ? tail : 0xffff, y + 16 * q), acc[q]);
            for (q = 0; q < nv; q++)
                _mm512_mask_storeu_ps(y + 16 * q, q == nv - 1 ? tail : 0xffff, acc[q]);
        }
    }
}
