/* test_compressed.c: the compressed-tensors codecs (spruce_compressed.h).
 *
 * Round trips dense -> compressed -> dense are bit-exact for the sparse
 * layouts in F32, F16, BF16 and I8, and exact to the grid for the quantized
 * ones (grids made here by round-to-nearest: the codec needs only the struct).
 * The layouts are also checked against readers written in this file from the
 * definition (numpy packbits bitorder "little"; pack_to_int32's docstring
 * example), not from the codec, and every malformed input is a clear error. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spruce_compressed.h"
#include "spruce_half.h"

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static float uniform(void) { return (float)((next() >> 11) * (1.0 / 9007199254740992.0)) * 2 - 1; }

/* A (rows, cols) matrix, zero where a fraction p is pruned (some as -0.0). */
static void sparse_f32(float *w, int64_t n, double p)
{
    int64_t i;
    for (i = 0; i < n; i++) {
        double u = (double)(next() >> 11) / 9007199254740992.0;
        w[i] = u < p ? (next() & 1 ? -0.0f : 0.0f) : uniform();
    }
}

/* 2:4: zero two (or three, or four) of every four. */
static void nm24_f32(float *w, int64_t rows, int64_t cols)
{
    int64_t i, k;
    for (i = 0; i < rows * cols; i += 4) {
        int keep = (int)(next() % 3); /* 0, 1 or 2 kept */
        for (k = 0; k < 4; k++)
            w[i + k] = 0.0f;
        for (k = 0; k < keep; k++)
            w[i + (int64_t)(next() % 4)] = uniform() + 2.0f;
    }
}

static void to_dtype(const float *w, int64_t n, int es, void *out)
{
    if (es == 4)
        memcpy(out, w, (size_t)n * 4);
    else if (es == 2)
        spruce_f32_to_bf16_n(w, out, (size_t)n);
}

static int bit_of(const uint8_t *bm, int64_t cols, int64_t r, int64_t c)
{
    /* numpy.packbits(axis=-1, bitorder="little"): element c is bit c % 8 of byte c // 8 */
    int64_t bpr = (cols + 7) / 8;
    return (bm[r * bpr + c / 8] >> (c % 8)) & 1;
}

static int is_zero_bits(const uint8_t *p, int es, int fl)
{
    int b;
    for (b = 0; b < es; b++)
        if (p[b] & (fl && b == es - 1 ? 0x7f : 0xff))
            return 0;
    return 1;
}

/* Bitmask round trip for one element size, checked by an independent reader. */
static void bitmask_roundtrip(int es, int fl, int f16, int64_t rows, int64_t cols)
{
    int64_t n = rows * cols, nnz, i, r, c, k = 0;
    float *w = malloc((size_t)n * 4);
    uint8_t *d = malloc((size_t)n * (size_t)es), *back = malloc((size_t)n * (size_t)es);
    uint8_t *vals, *bm = malloc(spruce_ct_bitmask_bytes(rows, cols));
    int64_t *ro = malloc((size_t)rows * 8);
    sparse_f32(w, n, 0.5);
    if (es == 2 && f16)
        spruce_f32_to_f16_n(w, (uint16_t *)d, (size_t)n);
    else if (es == 1)
        for (i = 0; i < n; i++)
            d[i] = (uint8_t)(int8_t)(w[i] * 100);
    else
        to_dtype(w, n, es, d);
    nnz = spruce_ct_bitmask_count(d, es, fl, rows, cols);
    vals = malloc((size_t)(nnz ? nnz : 1) * (size_t)es);
    spruce_ct_bitmask_encode(d, es, fl, rows, cols, vals, bm, ro);
    /* the definition: bit set exactly for non-zeros, values in row-major order */
    for (r = 0; r < rows; r++) {
        cr_assert_eq(ro[r], k, "row_offsets[%lld] = %lld, expected %lld", (long long)r,
                     (long long)ro[r], (long long)k);
        for (c = 0; c < cols; c++) {
            const uint8_t *e = d + (size_t)(r * cols + c) * es;
            int nz = !is_zero_bits(e, es, fl);
            cr_assert_eq(bit_of(bm, cols, r, c), nz, "bit of (%lld, %lld)", (long long)r, (long long)c);
            if (nz) {
                cr_assert(!memcmp(vals + (size_t)k * es, e, (size_t)es));
                k++;
            }
        }
    }
    cr_assert_eq(k, nnz);
    cr_assert_eq(spruce_ct_bitmask_decode(vals, nnz, bm, es, rows, cols, back, "t"), 0, "%s",
                 spruce_errdetail());
    for (i = 0; i < n; i++) {
        const uint8_t *e = d + (size_t)i * es;
        if (is_zero_bits(e, es, fl)) /* -0.0 comes back as +0.0 */
            cr_assert(is_zero_bits(back + (size_t)i * es, es, 0), "element %lld not +0", (long long)i);
        else
            cr_assert(!memcmp(back + (size_t)i * es, e, (size_t)es), "element %lld", (long long)i);
    }
    free(w), free(d), free(back), free(vals), free(bm), free(ro);
}

Test(compressed, bitmask_roundtrip_every_dtype_bit_exact)
{
    bitmask_roundtrip(4, 1, 0, 13, 37); /* F32, a column count not a multiple of 8 */
    bitmask_roundtrip(2, 1, 1, 16, 64); /* F16 */
    bitmask_roundtrip(2, 1, 0, 7, 9);   /* BF16 */
    bitmask_roundtrip(1, 0, 0, 5, 24);  /* I8 (sparse + quantized) */
}

Test(compressed, bitmask_bit_order_is_numpy_little)
{
    /* row [1, 0, 0, 2, 0, 0, 0, 0, 3] -> bytes 0b00001001, 0b00000001 */
    float w[9] = {1, 0, 0, 2, 0, 0, 0, 0, 3}, v[3], back[9];
    uint8_t bm[2];
    int64_t ro[1];
    spruce_ct_bitmask_encode(w, 4, 1, 1, 9, v, bm, ro);
    cr_assert_eq(bm[0], 0x09);
    cr_assert_eq(bm[1], 0x01);
    cr_assert(v[0] == 1 && v[1] == 2 && v[2] == 3);
    cr_assert_eq(spruce_ct_bitmask_decode(v, 3, bm, 4, 1, 9, back, "t"), 0);
    cr_assert(!memcmp(back, w, sizeof w));
}

Test(compressed, sparse24_roundtrip_and_layout)
{
    int64_t rows = 6, cols = 16, n = rows * cols, r, g, k;
    float w[96], v[48], back[96];
    uint8_t bm[12];
    nm24_f32(w, rows, cols);
    cr_assert_eq(spruce_ct_24_encode(w, 4, 1, rows, cols, v, bm, "t"), 0, "%s", spruce_errdetail());
    /* two bits per group of four, the non-zeros among them */
    for (r = 0; r < rows; r++)
        for (g = 0; g < cols; g += 4) {
            int set = 0;
            for (k = 0; k < 4; k++) {
                set += bit_of(bm, cols, r, g + k);
                if (w[r * cols + g + k] != 0.0f)
                    cr_assert(bit_of(bm, cols, r, g + k));
            }
            cr_assert_eq(set, 2, "row %lld group %lld has %d bits", (long long)r, (long long)g, set);
        }
    cr_assert_eq(spruce_ct_bitmask_decode(v, n / 2, bm, 4, rows, cols, back, "t"), 0);
    cr_assert(!memcmp(back, w, sizeof w));
}

Test(compressed, sparse24_refuses_three_nonzeros_and_bad_width)
{
    float w[8] = {1, 2, 3, 0, 0, 0, 0, 0}, v[4];
    uint8_t bm[1];
    cr_assert_eq(spruce_ct_24_encode(w, 4, 1, 1, 8, v, bm, "f: tensor t"), SPRUCE_EPATTERN);
    cr_assert(strstr(spruce_errdetail(), "f: tensor t") && strstr(spruce_errdetail(), "row 0"));
    cr_assert_eq(spruce_ct_24_encode(w, 4, 1, 1, 6, v, bm, "t"), SPRUCE_ESHAPE);
}

Test(compressed, bitmask_count_disagreeing_with_values_is_an_error)
{
    float v[4] = {1, 2, 3, 4}, back[8];
    uint8_t bm[1] = {0x0f}, bad[1] = {0x01 | 0x80};
    cr_assert_eq(spruce_ct_bitmask_decode(v, 3, bm, 4, 1, 8, back, "m.safetensors: tensor x.bitmask"),
                 SPRUCE_EFORMAT);
    cr_assert(strstr(spruce_errdetail(), "x.bitmask") && strstr(spruce_errdetail(), "4 values") &&
              strstr(spruce_errdetail(), "hold 3"), "%s", spruce_errdetail());
    /* a bit beyond the columns (cols 7, bit 7 set) */
    cr_assert_eq(spruce_ct_bitmask_decode(v, 2, bad, 4, 1, 7, back, "t"), SPRUCE_EFORMAT);
    cr_assert(strstr(spruce_errdetail(), "beyond"));
}

/* A round-to-nearest grid on w (rows, cols), groups of gs: spruce's convention. */
static void rtn_grid(const float *w, spruce_qgrid *g, int bits, int sym, int64_t rows,
                     int64_t cols, int64_t gs)
{
    int64_t ng = cols / gs, r, j, c;
    int maxq = (1 << bits) - 1;
    g->bits = bits, g->sym = sym, g->rows = rows, g->cols = cols, g->groupsize = gs;
    g->scale = malloc((size_t)(rows * ng) * 4);
    g->zero = malloc((size_t)(rows * ng) * 4);
    for (r = 0; r < rows; r++)
        for (j = 0; j < ng; j++) {
            float lo = 0, hi = 0;
            for (c = j * gs; c < (j + 1) * gs; c++) {
                lo = fminf(lo, w[r * cols + c]);
                hi = fmaxf(hi, w[r * cols + c]);
            }
            if (sym) {
                hi = fmaxf(-lo, hi), lo = -hi;
            }
            if (hi == lo)
                hi = lo + 1;
            g->scale[r * ng + j] = (hi - lo) / maxq;
            g->zero[r * ng + j] = sym ? (float)((maxq + 1) / 2) : rintf(-lo / g->scale[r * ng + j]);
        }
}

/* Round w onto g in place (pruned zeros stay +0.0). */
static void onto_grid(float *w, const spruce_qgrid *g)
{
    int64_t ng = g->cols / g->groupsize, i;
    int maxq = (1 << g->bits) - 1;
    for (i = 0; i < g->rows * g->cols; i++) {
        int64_t k = (i / g->cols) * ng + (i % g->cols) / g->groupsize;
        float s = g->scale[k], z = g->zero[k], q;
        if (w[i] == 0.0f) {
            w[i] = 0.0f;
            continue;
        }
        q = fminf(fmaxf(rintf(w[i] / s) + z, 0), (float)maxq);
        w[i] = s * (q - z);
    }
}

static void quant_roundtrip(int bits, int sym, int64_t rows, int64_t cols, int64_t gs, int pack)
{
    int64_t n = rows * cols, ng = cols / gs, i;
    float *w = malloc((size_t)n * 4), *back = malloc((size_t)n * 4);
    int8_t *q = malloc((size_t)n), *q2 = malloc((size_t)n), *zp = malloc((size_t)(rows * ng));
    int8_t *zp2 = malloc((size_t)(rows * ng));
    spruce_qgrid g;
    sparse_f32(w, n, 0.5);
    rtn_grid(w, &g, bits, sym, rows, cols, gs);
    onto_grid(w, &g);
    cr_assert_eq(spruce_ct_quantize(w, &g, q, sym ? NULL : zp, "t"), 0, "%s", spruce_errdetail());
    if (pack) {
        int32_t *p = malloc((size_t)(rows * spruce_ct_packed_cols(cols, bits)) * 4);
        int32_t *pz = malloc((size_t)(spruce_ct_packed_cols(rows, bits) * ng) * 4);
        spruce_ct_pack(q, rows, cols, bits, p);
        spruce_ct_unpack(p, rows, cols, bits, q2);
        cr_assert(!memcmp(q, q2, (size_t)n));
        if (!sym) {
            spruce_ct_pack_dim0(zp, rows, ng, bits, pz);
            spruce_ct_unpack_dim0(pz, rows, ng, bits, zp2);
            cr_assert(!memcmp(zp, zp2, (size_t)(rows * ng)));
        }
        free(p), free(pz);
    }
    cr_assert_eq(spruce_ct_dequantize(q, g.scale, sym ? NULL : zp, bits, rows, cols, gs, back, "t"),
                 0, "%s", spruce_errdetail());
    for (i = 0; i < n; i++) {
        int lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
        cr_assert(q[i] >= lo && q[i] <= hi);
        cr_assert(back[i] == w[i], "bits %d sym %d: element %lld: %a, expected %a", bits, sym,
                  (long long)i, (double)back[i], (double)w[i]);
        if (sym && w[i] == 0.0f)
            cr_assert_eq(q[i], 0, "a pruned weight of a symmetric grid is level 0");
    }
    free(w), free(back), free(q), free(q2), free(zp), free(zp2), free(g.scale), free(g.zero);
}

Test(compressed, quantized_roundtrip_exact_to_the_grid)
{
    int bits;
    for (bits = 2; bits <= 8; bits++) {
        quant_roundtrip(bits, 1, 9, 64, 64, 32 % bits == 0); /* channel */
        quant_roundtrip(bits, 0, 9, 64, 16, 32 % bits == 0); /* group 16, asymmetric */
    }
    quant_roundtrip(4, 1, 5, 37, 37, 1); /* a row that does not fill its last word */
}

Test(compressed, pack_order_matches_the_definition)
{
    /* pack_to_int32's docstring: 8 bits, [1, 2] -> [129, 130, 0, 0] -> 33409 */
    int8_t q8[2] = {1, 2}, q4[9] = {-8, 7, 0, 1, 2, 3, 4, 5, 6};
    int32_t p[2];
    spruce_ct_pack(q8, 1, 2, 8, p);
    cr_assert_eq(p[0], 33409);
    /* 4 bits: element j at bits 4j of word j / 8, stored as q + 8 */
    spruce_ct_pack(q4, 1, 9, 4, p);
    cr_assert_eq((uint32_t)p[0], 0xDCBA98F0u, "%08x", (uint32_t)p[0]); /* nibbles 0,F,8,9,A,B,C,D */
    cr_assert_eq(p[1], 14);
}

Test(compressed, zero_or_nan_scale_is_an_error)
{
    int8_t q[4] = {1, 2, 3, 4};
    float s0[1] = {0.0f}, sn[1] = {NAN}, w[4];
    cr_assert_eq(spruce_ct_dequantize(q, s0, NULL, 8, 1, 4, 4, w, "f: tensor m.weight_scale"),
                 SPRUCE_EFORMAT);
    cr_assert(strstr(spruce_errdetail(), "m.weight_scale") && strstr(spruce_errdetail(), "row 0"));
    cr_assert_eq(spruce_ct_dequantize(q, sn, NULL, 8, 1, 4, 4, w, "t"), SPRUCE_EFORMAT);
    /* a level outside 4 bits */
    {
        int8_t big[4] = {9, 0, 0, 0};
        float s[1] = {1.0f};
        cr_assert_eq(spruce_ct_dequantize(big, s, NULL, 4, 1, 4, 4, w, "t"), SPRUCE_EFORMAT);
    }
}

Test(compressed, weights_off_the_grid_are_refused)
{
    float w[4] = {0.5f, 0.25f, 0.3f, 0.0f}, s[1] = {0.25f}, z[1] = {128.0f};
    int8_t q[4];
    spruce_qgrid g = {8, 1, 1, 4, 4, s, z};
    cr_assert_eq(spruce_ct_quantize(w, &g, q, NULL, "t"), SPRUCE_EINVAL);
    cr_assert(strstr(spruce_errdetail(), "column 2"), "%s", spruce_errdetail());
    w[2] = 0.75f;
    cr_assert_eq(spruce_ct_quantize(w, &g, q, NULL, "t"), 0);
    cr_assert(q[0] == 2 && q[1] == 1 && q[2] == 3 && q[3] == 0);
}
