/* test_half.c: float32 <-> F16 / BF16, against nearest-even references. */
#define _GNU_SOURCE
#include "ckpt_testutil.h"

Test(half, f16_decodes_every_pattern_exactly)
{
    uint32_t h;
    for (h = 0; h < 65536; h++) {
        double ref = f16_value((uint16_t)h);
        float got = spruce_f16_to_f32((uint16_t)h);
        if (isnan(ref))
            cr_assert(isnan(got), "f16 %04x should decode to NaN", h);
        else
            cr_assert(fbits(got) == fbits((float)ref), "f16 %04x: got %a, expected %a", h,
                      (double)got, ref);
    }
}

Test(half, f16_encode_matches_nearest_even_reference)
{
    uint64_t s = 12345;
    uint32_t h, i;
    /* every value, and every midpoint between neighbours (exact ties) and one ulp either side */
    for (h = 0; h < 0x7c00; h++) {
        float v = (float)f16_value((uint16_t)h);
        cr_assert_eq(spruce_f32_to_f16(v), h);
        cr_assert_eq(spruce_f32_to_f16(-v), h ? (h | 0x8000) : 0);
        if (h < 0x7bff) {
            float mid = (float)((f16_value((uint16_t)h) + f16_value((uint16_t)(h + 1))) / 2);
            float probes[3] = {mid, nextafterf(mid, 0), nextafterf(mid, INFINITY)};
            for (i = 0; i < 3; i++) {
                cr_assert_eq(spruce_f32_to_f16(probes[i]), f16_ref(probes[i]), "f32 %a", (double)probes[i]);
                cr_assert_eq(spruce_f32_to_f16(-probes[i]), f16_ref(-probes[i]), "f32 %a", -(double)probes[i]);
            }
        }
    }
    for (i = 0; i < 300000; i++) {
        float x = bitsf((uint32_t)lcg(&s));
        if (isnan(x))
            continue;
        cr_assert_eq(spruce_f32_to_f16(x), f16_ref(x), "f32 %a (%08x)", (double)x, fbits(x));
    }
    /* the overflow boundary: 65504 is the largest, 65520 ties to Inf */
    cr_assert_eq(spruce_f32_to_f16(65504.0f), 0x7bff);
    cr_assert_eq(spruce_f32_to_f16(nextafterf(65520.0f, 0)), 0x7bff);
    cr_assert_eq(spruce_f32_to_f16(65520.0f), 0x7c00);
    cr_assert_eq(spruce_f32_to_f16(-1e9f), 0xfc00);
    /* 2^-25 is a tie between 0 and the smallest subnormal: even, so +0 */
    cr_assert_eq(spruce_f32_to_f16(ldexpf(1, -25)), 0);
    cr_assert_eq(spruce_f32_to_f16(nextafterf(ldexpf(1, -25), 1)), 1);
}

Test(half, bf16_encode_matches_nearest_even_reference)
{
    uint64_t s = 99;
    uint32_t i;
    for (i = 0; i < 300000; i++) {
        float x = bitsf((uint32_t)lcg(&s));
        if (isnan(x))
            continue;
        cr_assert_eq(spruce_f32_to_bf16(x), bf16_ref(x), "f32 %a (%08x)", (double)x, fbits(x));
        /* exact ties: low half 0x8000 */
        x = bitsf((fbits(x) & 0xffff0000u) | 0x8000u);
        if (!isnan(x))
            cr_assert_eq(spruce_f32_to_bf16(x), bf16_ref(x), "tie %08x", fbits(x));
    }
    for (i = 0; i < 65536; i++) { /* every bf16 survives the round trip (but -0 -> +0) */
        float v = spruce_bf16_to_f32((uint16_t)i);
        if (isnan(v))
            continue;
        cr_assert_eq(spruce_f32_to_bf16(v), i == 0x8000 ? 0 : i);
    }
    cr_assert_eq(spruce_f32_to_bf16(bitsf(0x7f7fffffu)), 0x7f80); /* FLT_MAX rounds up to Inf */
}

Test(half, zeros_are_positive_and_nan_inf_survive)
{
    cr_assert_eq(spruce_f32_to_f16(-0.0f), 0x0000);
    cr_assert_eq(spruce_f32_to_bf16(-0.0f), 0x0000);
    cr_assert_eq(spruce_f32_to_f16(-1e-30f), 0x0000); /* underflow to zero: +0 too */
    cr_assert_eq(spruce_f32_to_bf16(-1e-45f), 0x0000);
    cr_assert_eq(spruce_f32_to_bf16(bitsf(0x80000001u)), 0x0000);
    cr_assert_eq(spruce_f32_to_f16(INFINITY), 0x7c00);
    cr_assert_eq(spruce_f32_to_f16(-INFINITY), 0xfc00);
    cr_assert_eq(spruce_f32_to_bf16(INFINITY), 0x7f80);
    cr_assert_eq(spruce_f32_to_bf16(-INFINITY), 0xff80);
    /* a NaN whose payload is only in the low bits must stay a NaN */
    cr_assert((spruce_f32_to_f16(bitsf(0x7f800001u)) & 0x7fff) > 0x7c00);
    cr_assert((spruce_f32_to_bf16(bitsf(0x7f800001u)) & 0x7fff) > 0x7f80);
    cr_assert((spruce_f32_to_bf16(bitsf(0xffc00000u)) & 0x8000));
    cr_assert(isnan(spruce_f16_to_f32(0x7e00)));
    cr_assert(isnan(spruce_bf16_to_f32(0x7fc1)));
}

Test(half, array_versions_agree_with_scalars)
{
    float in[1000], back[1000];
    uint16_t h[1000];
    uint64_t s = 5;
    int i;
    for (i = 0; i < 1000; i++)
        in[i] = (float)((int64_t)(lcg(&s) % 20001) - 10000) / 997.0f;
    spruce_f32_to_f16_n(in, h, 1000);
    spruce_f16_to_f32_n(h, back, 1000);
    for (i = 0; i < 1000; i++) {
        cr_assert_eq(h[i], spruce_f32_to_f16(in[i]));
        cr_assert_float_eq(back[i], in[i], fabsf(in[i]) * 1e-3f + 1e-7f);
    }
    spruce_f32_to_bf16_n(in, h, 1000);
    spruce_bf16_to_f32_n(h, back, 1000);
    for (i = 0; i < 1000; i++) {
        cr_assert_eq(h[i], spruce_f32_to_bf16(in[i]));
        cr_assert_float_eq(back[i], in[i], fabsf(in[i]) * 4e-3f + 1e-7f);
    }
}

/* The array conversions vectorize: every bit pattern class (NaN payloads,
 * -0, ties, infinities, subnormals, random bits), at every length remainder,
 * against the scalar reference of the definition. */
Test(half, bf16_array_matches_the_reference_on_every_pattern)
{
    enum { N = 1031 };
    static const uint32_t special[] = {0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u,
                                       0x7f800001u, 0xffc00000u, 0x7fc00001u, 0x00000001u,
                                       0x80000001u, 0x3f808000u, 0x3f818000u, 0x7f7fffffu,
                                       0x007fffffu, 0x80008000u};
    float in[N], back[N];
    uint16_t h[N];
    uint64_t s = 11;
    int i, len;
    for (i = 0; i < N; i++)
        in[i] = bitsf(i < (int)(sizeof special / sizeof *special) ? special[i]
                                                                   : (uint32_t)lcg(&s));
    for (len = N - 9; len <= N; len++) {
        spruce_f32_to_bf16_n(in, h, (size_t)len);
        for (i = 0; i < len; i++) {
            if (isnan(in[i]))
                cr_assert((h[i] & 0x7fff) > 0x7f80 && (h[i] & 0x8000) == (fbits(in[i]) >> 16 & 0x8000),
                          "NaN %08x became %04x", fbits(in[i]), h[i]);
            else
                cr_assert_eq(h[i], bf16_ref(in[i]), "%08x: %04x, expected %04x", fbits(in[i]),
                             h[i], bf16_ref(in[i]));
        }
        spruce_bf16_to_f32_n(h, back, (size_t)len);
        for (i = 0; i < len; i++)
            cr_assert_eq(fbits(back[i]), (uint32_t)h[i] << 16);
    }
}

