/* pairs_avx512.c: y = A x (batch 1) for the pair layout (pairs_internal.h)
 * with AVX-512.
 *
 * The AVX2 kernel's step, two blocks at once: blocks b and b + 1 of a pair
 * are 16 values in a row, their two words of positions one 32-bit word, and
 * x[8b .. 8b + 16) one vector whose 128-bit lanes are the four groups of 4
 * columns, so
 *   idx = broadcast(meta of blocks b, b + 1) >> (0, 2, .., 30)
 *   acc += widen(16 values) * vpermilps(x[8b .. 8b + 16), idx)
 * (the in-lane permute reads the two low bits of each index): half the
 * instructions of the AVX2 kernel a value, which is what the int8 and int4
 * kernels are bound by.  widen: float32 as is; bf16 bits << 16; int8 q - z as
 * float; int4 the 16 nibbles of two 32-bit words, lane k of a block in bits
 * 4k .. 4k + 3, stored as u ^ 8 and sign-extended (u - 8), minus z - 8 as
 * float.  Row 2p is the sum of lanes 0, 1, 4, 5 (mod 8) of acc, row 2p + 1 of
 * lanes 2, 3, 6, 7.  A block left over (an odd number of blocks, or a group
 * of int4 columns ending at an odd block) is the same step with the upper
 * 8 lanes masked off, and a last block narrower than 8 columns reads x with a
 * masked load, so nothing past cols is read.  Batch > 1 runs the AVX2
 * kernel (pairs.c). */
#include <immintrin.h>
#include <string.h>

#include "kernel_common.h"
#include "pairs_internal.h"

/* Pairs a kernel takes at once (sharing each load of x). */
#define PAIRS_R 4

/* Lanes of row 2p (a) and 2p + 1 (b) as (a, a, b, b, a, a, b, b) twice. */
SPRUCE__INLINE __m512i lanes_i(int a, int b)
{
    return _mm512_setr_epi32(a, a, b, b, a, a, b, b, a, a, b, b, a, a, b, b);
}

SPRUCE__INLINE __m512 lanes_f(float a, float b)
{
    return _mm512_setr_ps(a, a, b, b, a, a, b, b, a, a, b, b, a, a, b, b);
}

/* The 16 values of blocks blk, blk + 1 as float32, before any scale (zp,
 * z: pairs_avx2.c's widen).  Reads two blocks' bytes even for the last
 * block: the values are padded (SPRUCE__PAIRS_PAD). */
SPRUCE__INLINE __m512 widen(const struct spruce__pairs *P, size_t blk, const int dtype,
                            const int zp, __m512i z)
{
    const uint8_t *v = P->val;
    if (dtype == SPRUCE_DT_F32)
        return _mm512_loadu_ps((const float *)v + 8 * blk);
    if (dtype == SPRUCE_DT_BF16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(v + 16 * blk))), 16));
    if (dtype == SPRUCE_DT_INT8) {
        const __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(v + 8 * blk)));
        return _mm512_cvtepi32_ps(zp ? _mm512_sub_epi32(q, z) : q);
    }
    {
        /* word 0 in lanes 0..7, word 1 in lanes 8..15; nibble k of a word to
         * bits 28..31 of lane k, then sign-extended */
        const __m512i w = _mm512_permutexvar_epi32(
            _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
            _mm512_castsi128_si512(_mm_loadl_epi64((const __m128i *)(v + 4 * blk))));
        const __m512i q = _mm512_srai_epi32(
            _mm512_sllv_epi32(w, _mm512_setr_epi32(28, 24, 20, 16, 12, 8, 4, 0, 28, 24, 20, 16,
                                                   12, 8, 4, 0)),
            28);
        return _mm512_cvtepi32_ps(zp ? _mm512_sub_epi32(q, z) : q);
    }
}



/* Blocks [b0, b1) of pairs p .. p + R (R = 1 .. PAIRS_R) into acc[r]; part:
 * block b1 - 1 is the row's last one and narrower than 8 columns.  Each pair
 * also asks for the line at the same block of the pair PAIRS_R below (the
 * next call's), into L2, as the AVX2 kernel does (the hardware prefetchers
 * stay within a 4 KB page). */
SPRUCE__INLINE void span(const struct spruce__pairs *P, const float *x, int p, const int R,
                         int b0, int b1, int part, const int dtype, const int zp,
                         const __m512i *z, __m512 *acc)
{
    const __m512i sh = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                                         30);
    const int nb = P->nb;
    const uint16_t *meta = P->meta + (size_t)p * nb;
    const size_t blk = (size_t)p * nb, ahead = (size_t)PAIRS_R * nb;
    const int vb = dtype == SPRUCE_DT_F32 ? 32 : dtype == SPRUCE_DT_BF16 ? 16
                 : dtype == SPRUCE_DT_INT8 ? 8 : 4; /* bytes of a block's values */
    __m512 a[PAIRS_R];
    int r, b = b0;
    const int full = part ? b1 - 1 : b1;
#pragma GCC unroll 4
    for (r = 0; r < R; r++)
        a[r] = _mm512_setzero_ps();
    for (; b + 2 <= full; b += 2) {
        const __m512 xv = _mm512_loadu_ps(x + 8 * b);
        if (!(b & (spruce__pairs_line_blocks(dtype) - 1))) {
#pragma GCC unroll 4
            for (r = 0; r < R; r++)
                _mm_prefetch((const char *)(P->val + vb * (blk + ahead + (size_t)r * nb + b)),
                             _MM_HINT_T1);
        }
        if (!(b & 31)) {
#pragma GCC unroll 4
            for (r = 0; r < R; r++)
                _mm_prefetch((const char *)(meta + ahead + (size_t)r * nb + b), _MM_HINT_T1);
        }
#pragma GCC unroll 4
        for (r = 0; r < R; r++) {
            int32_t mw;
            memcpy(&mw, meta + (size_t)r * nb + b, 4);
            const __m512i idx = _mm512_srlv_epi32(_mm512_set1_epi32(mw), sh);
            a[r] = _mm512_fmadd_ps(widen(P, blk + (size_t)r * nb + b, dtype, zp, z[r]),
                                   _mm512_permutevar_ps(xv, idx), a[r]);
        }
    }
    for (; b < b1; b++) { /* one block: the lower 8 lanes */
        const int left = P->cols - 8 * b;
        const __mmask16 m = b == full && left < 8 ? (__mmask16)((1u << left) - 1) : 0xff;
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + 8 * b);
#pragma GCC unroll 4
        for (r = 0; r < R; r++) {
            const __m512i idx = _mm512_srlv_epi32(
                _mm512_set1_epi32(meta[(size_t)r * nb + b]), sh);
            a[r] = _mm512_mask3_fmadd_ps(widen(P, blk + (size_t)r * nb + b, dtype, zp, z[r]),
                                         _mm512_permutevar_ps(xv, idx), a[r], 0xff);
        }
    }
#pragma GCC unroll 4
    for (r = 0; r < R; r++)
        acc[r] = a[r];
}

/* The two rows' sums of acc: row 2p in lanes 0, 1, 4, 5 (mod 8), row 2p + 1
 * in lanes 2, 3, 6, 7. */
SPRUCE__INLINE void put2(const struct spruce__pairs *P, float *y, int p, __m512 acc)
{
    const __m256 s = _mm256_add_ps(_mm512_castps512_ps256(acc), _mm512_extractf32x8_ps(acc, 1));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_hadd_ps(h, h); /* (a0 + a1, b0 + b1, ..) */
    y[2 * p] = _mm_cvtss_f32(h);
    if (2 * p + 1 < P->rows)
        y[2 * p + 1] = _mm_cvtss_f32(_mm_shuffle_ps(h, h, 1));
}

SPRUCE__INLINE void pairs_rows(const struct spruce__pairs *P, const float *x, float *y, int p,
                               const int R, const int dtype, const int zp)
{
    const int part = P->cols % 8 != 0;
    __m512i z[PAIRS_R];
    __m512 acc[PAIRS_R], sum[PAIRS_R];
    int r, g;
    if (dtype != SPRUCE_DT_INT4) {
#pragma GCC unroll 4
        for (r = 0; r < R; r++)
            z[r] = zp ? lanes_i(spruce__pairs_kzero(P, 2 * (p + r), 0), spruce__pairs_kzero(P, 2 * (p + r) + 1, 0))
                      : _mm512_setzero_si512();
        span(P, x, p, R, 0, P->nb, part, dtype, zp, z, acc);
#pragma GCC unroll 4
        for (r = 0; r < R; r++) {
            if (dtype == SPRUCE_DT_INT8)
                acc[r] = _mm512_mul_ps(acc[r], lanes_f(spruce__pairs_kscale(P, 2 * (p + r), 0),
                                                       spruce__pairs_kscale(P, 2 * (p + r) + 1, 0)));
            put2(P, y, p + r, acc[r]);
        }
        return;
    }
    {
        const int gb = P->groupsize / 8; /* blocks per group */
#pragma GCC unroll 4
        for (r = 0; r < R; r++)
            sum[r] = _mm512_setzero_ps();
        for (g = 0; g < P->ngroups; g++) {
            const int b0 = g * gb, b1 = b0 + gb < P->nb ? b0 + gb : P->nb;
#pragma GCC unroll 4
            for (r = 0; r < R; r++)
                z[r] = zp ? lanes_i(spruce__pairs_kzero(P, 2 * (p + r), g), spruce__pairs_kzero(P, 2 * (p + r) + 1, g))
                          : _mm512_setzero_si512();
            span(P, x, p, R, b0, b1, part && b1 == P->nb, dtype, zp, z, acc);
#pragma GCC unroll 4
            for (r = 0; r < R; r++)
                sum[r] = _mm512_fmadd_ps(acc[r], lanes_f(spruce__pairs_kscale(P, 2 * (p + r), g),
                                                         spruce__pairs_kscale(P, 2 * (p + r) + 1, g)),
                                         sum[r]);
        }
#pragma GCC unroll 4
        for (r = 0; r < R; r++)
            put2(P, y, p + r, sum[r]);
    }
}

SPRUCE__INLINE void spmv_zp(const struct spruce__pairs *P, const float *x, float *y, int p0,
                            int p1, const int dtype, const int zp)
{
    int p = p0;
    for (; p + PAIRS_R <= p1; p += PAIRS_R)
        pairs_rows(P, x, y, p, PAIRS_R, dtype, zp);
    for (; p < p1; p++)
        pairs_rows(P, x, y, p, 1, dtype, zp);
}

/* Without zero points nothing is subtracted (a constant, so no instruction). */
SPRUCE__INLINE void spmv(const struct spruce__pairs *P, const float *x, float *y, int p0, int p1,
                         const int dtype)
{
    if (P->zero)
        spmv_zp(P, x, y, p0, p1, dtype, 1);
    else
        spmv_zp(P, x, y, p0, p1, dtype, 0);
}

void pairs_spmv_f32_avx512(const struct spruce__pairs *P, const float *X, int batch, float *Y,
                           int p0, int p1)
{
    (void)batch;
    spmv(P, X, Y, p0, p1, SPRUCE_DT_F32);
}

void pairs_spmv_bf16_avx512(const struct spruce__pairs *P, const float *X, int batch, float *Y,
                            int p0, int p1)
{
    (void)batch;
    spmv(P, X, Y, p0, p1, SPRUCE_DT_BF16);
}

void pairs_spmv_int8_avx512(const struct spruce__pairs *P, const float *X, int batch, float *Y,
                            int p0, int p1)
{
    (void)batch;
    spmv(P, X, Y, p0, p1, SPRUCE_DT_INT8);
}

void pairs_spmv_int4_avx512(const struct spruce__pairs *P, const float *X, int batch, float *Y,
                            int p0, int p1)
{
    (void)batch;
    spmv(P, X, Y, p0, p1, SPRUCE_DT_INT4);
}
