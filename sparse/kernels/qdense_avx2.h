/* qdense_avx2.h: what the AVX2 dense value-type kernels share: widening 8
 * weights of each type to float32, and a horizontal sum.  Internal. */
#ifndef SPRUCE_QDENSE_AVX2_H
#define SPRUCE_QDENSE_AVX2_H

#include <immintrin.h>

#include "kernel_common.h"
#include "qdense.h"

SPRUCE__INLINE float hsum8(__m256 v)
{
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* Eight bf16 at w as float32 (exact: a bf16 is the top half of its float). */
SPRUCE__INLINE __m256 bf16x8(const uint16_t *w)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)w)), 16));
}

/* Eight int8 at q minus z, as float32 (exact). */
SPRUCE__INLINE __m256 int8x8(const int8_t *q, __m256i z)
{
    return _mm256_cvtepi32_ps(
        _mm256_sub_epi32(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q)), z));
}

/* Sixteen nibbles at b (8 bytes) minus z, as float32: the even columns in
 * *e, the odd ones in *o (exact). */
SPRUCE__INLINE void int4x16(const uint8_t *b, __m256i z, __m256 *e, __m256 *o)
{
    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)b));
    *e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(v, _mm256_set1_epi32(15)), z));
    *o = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(v, 4), z));
}

#endif
