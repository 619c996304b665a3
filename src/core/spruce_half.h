/* spruce_half.h: float32 <-> IEEE half (F16) and bfloat16 (BF16). */
#ifndef SPRUCE_HALF_H
#define SPRUCE_HALF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* float32 <-> F16 / BF16 scalars and arrays.  To 16 bits: round to nearest,
 * ties to even; NaN stays NaN, Inf stays Inf (F16 overflows to Inf); a zero
 * result is always +0.0, never -0.0. */
float spruce_f16_to_f32(uint16_t h);
float spruce_bf16_to_f32(uint16_t h);
uint16_t spruce_f32_to_f16(float f);
uint16_t spruce_f32_to_bf16(float f);
void spruce_f16_to_f32_n(const uint16_t *in, float *out, size_t n);
void spruce_bf16_to_f32_n(const uint16_t *in, float *out, size_t n);
void spruce_f32_to_f16_n(const float *in, uint16_t *out, size_t n);
void spruce_f32_to_bf16_n(const float *in, uint16_t *out, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_HALF_H */
