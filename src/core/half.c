/* half.c: IEEE half (F16) and bfloat16 (BF16) <-> float32.
 *
 * float32 -> 16 bits rounds to nearest, ties to even; Inf stays Inf, NaN stays
 * a (quiet) NaN, finite values too large for F16 become Inf as IEEE rounding
 * says.  A result that is zero is always +0.0: pruned weights must never be
 * stored as -0.0 (some runtimes test zeros by bit pattern). */
#include <string.h>

#include "spruce_half.h"

static inline uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float spruce_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24, exact in float32 */
        float f = (float)mant * (1.0f / 16777216.0f);
        return u2f(f2u(f) | sign);
    }
    if (exp == 31)
        return u2f(sign | 0x7f800000u | (mant << 13));
    return u2f(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t spruce_f32_to_f16(float f)
{
    uint32_t x = f2u(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint16_t h;
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) { /* Inf or NaN */
        if (x == 0x7f800000u)
            return (uint16_t)(sign | 0x7c00);
        return (uint16_t)(sign | 0x7e00 | ((x >> 13) & 0x3ff));
    }
    if (x >= 0x477ff000u) /* >= 65520: rounds to Inf */
        return (uint16_t)(sign | 0x7c00);
    if (x < 0x38800000u) {
        /* below 2^-14: F16 subnormal.  Adding 0.5f puts the value's 2^-24 units
         * in the low mantissa bits, and the float addition rounds to nearest even. */
        h = (uint16_t)(f2u(u2f(x) + 0.5f) - 0x3f000000u);
    } else {
        /* normal: rebias the exponent (127 -> 15) and round the 13 dropped bits */
        uint32_t odd = (x >> 13) & 1;
        x += 0xc8000fffu + odd;
        h = (uint16_t)(x >> 13);
    }
    return h ? (uint16_t)(sign | h) : 0;
}

float spruce_bf16_to_f32(uint16_t h)
{
    return u2f((uint32_t)h << 16);
}

/* Branch-free, so that the array loops below vectorize: round to nearest
 * even; a NaN stays a (quiet) NaN whatever its payload; a zero result is +0. */
static inline uint16_t bf16_of(uint32_t x)
{
    const uint32_t r = (x + 0x7fffu + ((x >> 16) & 1)) >> 16;
    const uint32_t nan = (uint32_t)((x & 0x7fffffffu) > 0x7f800000u);
    const uint32_t v = nan ? ((x >> 16) | 0x0040u) : ((r & 0x7fffu) ? r : 0u);
    return (uint16_t)v;
}

uint16_t spruce_f32_to_bf16(float f)
{
    return bf16_of(f2u(f));
}

void spruce_f16_to_f32_n(const uint16_t *in, float *out, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        out[i] = spruce_f16_to_f32(in[i]);
}

void spruce_bf16_to_f32_n(const uint16_t *in, float *out, size_t n)
{
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++)
        out[i] = u2f((uint32_t)in[i] << 16);
}

void spruce_f32_to_f16_n(const float *in, uint16_t *out, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        out[i] = spruce_f32_to_f16(in[i]);
}

void spruce_f32_to_bf16_n(const float *in, uint16_t *out, size_t n)
{
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++)
        out[i] = bf16_of(f2u(in[i]));
}
