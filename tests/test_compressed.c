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

/* The 2:4 encoding from its definition, element by element: each group of
 * four keeps its non-zeros, then its first zeros, two in all; a kept zero is
 * stored as all-zero bytes (+0.0). */
static void ref24(const uint8_t *d, int es, int fl, int64_t rows, int64_t cols, uint8_t *v,
                  uint8_t *bm)
{
    int64_t r, c, k, n = 0, bpr = (cols + 7) / 8;
    memset(bm, 0, (size_t)(rows * bpr));
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c += 4) {
            int nz[4], kept = 0, pass;
            for (k = 0; k < 4; k++) {
                const uint8_t *e = d + (size_t)((r * cols + c + k) * es);
                int b;
                nz[k] = 0;
                for (b = 0; b < es; b++) /* a float's sign bit alone is a zero */
                    nz[k] |= (e[b] & (fl && b == es - 1 ? 0x7f : 0xff)) != 0;
            }
            for (pass = 1; pass >= 0; pass--) /* the non-zeros, then zeros */
                for (k = 0; k < 4 && kept < 2; k++)
                    if (nz[k] == pass && !(bm[r * bpr + (c + k) / 8] >> ((c + k) % 8) & 1)) {
                        bm[r * bpr + (c + k) / 8] |= (uint8_t)(1u << ((c + k) % 8));
                        kept++;
                    }
            for (k = 0; k < 4; k++) /* the kept, in column order */
                if (bm[r * bpr + (c + k) / 8] >> ((c + k) % 8) & 1) {
                    if (nz[k])
                        memcpy(v + n * es, d + (size_t)((r * cols + c + k) * es), (size_t)es);
                    else
                        memset(v + n * es, 0, (size_t)es);
                    n++;
                }
        }
}

/* Every element size the encoder has a path for (1, 2, 4 bytes; floats and
 * integers), every group of at most two non-zeros at both halves of a
 * bitmask byte and at a row's last half byte (cols % 8 == 4), the zeros
 * including the sign-only patterns (-0.0 of a float; -128 of int8 is not
 * zero), against the definition; then a group of three in a later row. */
Test(compressed, sparse24_every_group_and_element_size_against_the_definition)
{
    enum { ROWS = 5, COLS = 44 };
    static const int sizes[][2] = {{1, 0}, {2, 1}, {2, 0}, {4, 1}, {4, 0}};
    uint8_t d[ROWS * COLS * 4], v[ROWS * COLS * 2], bm[ROWS * 6], rv[ROWS * COLS * 2], rbm[ROWS * 6];
    unsigned i;
    for (i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        const int es = sizes[i][0], fl = sizes[i][1];
        int64_t g, k, b;
        for (g = 0; g < ROWS * COLS / 4; g++) {
            /* the 11 masks of at most two non-zeros in turn, then at random */
            static const unsigned valid[11] = {0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 12};
            const unsigned m = valid[g < 11 ? g : (int64_t)(next() % 11)];
            for (k = 0; k < 4; k++) {
                uint8_t *e = d + (size_t)((g * 4 + k) * es);
                for (b = 0; b < es; b++)
                    e[b] = m >> k & 1 ? (uint8_t)(next() | 1) : 0; /* never all-zero */
                if (!(m >> k & 1) && fl && next() % 3 == 0) /* -0.0 */
                    e[es - 1] = 0x80;
            }
        }
        if (!fl) { /* -128 (int8) / 0x8000.. among the non-zeros */
            memset(d, 0, (size_t)es * 4);
            d[es - 1] = 0x80;
        }
        ref24(d, es, fl, ROWS, COLS, rv, rbm);
        cr_assert_eq(spruce_ct_24_encode(d, es, fl, ROWS, COLS, v, bm, "t"), 0, "es %d float %d: %s",
                     es, fl, spruce_errdetail());
        cr_assert(!memcmp(bm, rbm, sizeof bm), "es %d float %d: the bitmask differs", es, fl);
        cr_assert(!memcmp(v, rv, (size_t)(ROWS * COLS / 2 * es)), "es %d float %d: the values differ",
                  es, fl);
        /* three non-zeros in row 3, columns 8..11 */
        for (k = 0; k < 4; k++)
            for (b = 0; b < es; b++)
                d[(3 * COLS + 8 + k) * es + b] = (uint8_t)(k < 3 ? 0x11 : 0);
        cr_assert_eq(spruce_ct_24_encode(d, es, fl, ROWS, COLS, v, bm, "f: tensor t"), SPRUCE_EPATTERN);
        cr_assert(strstr(spruce_errdetail(), "row 3, columns 8..11: 3 non-zeros"), "%s",
                  spruce_errdetail());
    }
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
    /* the message names the first such weight, past a good row */
    {
        int8_t big[8] = {7, -8, 0, 1, 0, 3, -9, 9};
        float s[2] = {1.0f, 2.0f}, w2[8];
        cr_assert_eq(spruce_ct_dequantize(big, s, NULL, 4, 2, 4, 4, w2, "t"), SPRUCE_EFORMAT);
        cr_assert(strstr(spruce_errdetail(), "row 1, column 2 is -9"), "%s", spruce_errdetail());
    }
}

Test(compressed, weights_off_the_grid_are_refused)
{
    float w[4] = {0.5f, 0.25f, 0.3f, 0.0f}, s[1] = {0.25f}, z[1] = {128.0f};
    int8_t q[4];
    spruce_qgrid g = {8, 1, 1, 4, 4, s, z, SPRUCE_QSCALE_F32};
    cr_assert_eq(spruce_ct_quantize(w, &g, q, NULL, "t"), SPRUCE_EINVAL);
    cr_assert(strstr(spruce_errdetail(), "column 2"), "%s", spruce_errdetail());
    w[2] = 0.75f;
    cr_assert_eq(spruce_ct_quantize(w, &g, q, NULL, "t"), 0);
    cr_assert(q[0] == 2 && q[1] == 1 && q[2] == 3 && q[3] == 0);
}

/* The level of every weight, from the nearest integer of w / scale (ties to
 * even) plus the zero, clamped: the grid's ends and beyond them (far beyond:
 * 2^22 steps and more, where float32 holds only integers), and the halves
 * between levels, which are off the grid, as is what is not finite. */
Test(compressed, levels_at_and_beyond_the_ends_of_the_grid)
{
    static const struct {
        float w;
        int q; /* the level, or 1000: off the grid */
    } cases[] = {
        {127.0f, 127},       {-128.0f, -128},      {-127.0f, -127},    {126.0f, 126},
        {0.5f, 1000},        {1.5f, 1000},         {-2.5f, 1000},      {128.0f, 1000},
        {-129.0f, 1000},     {4194304.0f, 1000},   {-4194304.0f, 1000}, {8388609.0f, 1000},
        {-1.0e30f, 1000},    {3.0e38f, 1000},      {1.0f, 1},          {-1.0f, -1},
        {NAN, 1000},         {INFINITY, 1000},     {-INFINITY, 1000},  {0.0f, 0},
    };
    float s[1] = {1.0f}, z[1] = {128.0f};
    spruce_qgrid g = {8, 1, 1, 1, 1, s, z, SPRUCE_QSCALE_F32};
    unsigned i;
    for (i = 0; i < sizeof cases / sizeof *cases; i++) {
        int8_t q[1];
        float w[1] = {cases[i].w};
        int rc = spruce_ct_quantize(w, &g, q, NULL, "t");
        if (cases[i].q == 1000) {
            cr_assert_eq(rc, SPRUCE_EINVAL, "%g: on the grid as %d", (double)w[0], q[0]);
        } else {
            cr_assert_eq(rc, 0, "%g: %s", (double)w[0], spruce_errdetail());
            cr_assert_eq(q[0], cases[i].q, "%g: level %d, expected %d", (double)w[0], q[0],
                         cases[i].q);
        }
    }
}

/* ---- checkpoints on disk: decoded on open ---------------------------------- */

#include "ckpt_testutil.h"
#include "spruce_ckpt.h"

typedef struct {
    const char *name, *dtype, *shape;
    const void *data;
    size_t n;
} part_t;

/* A checkpoint directory: config.json with qc (a quantization_config object,
 * NULL: none) and model.safetensors of parts (written here from the layout's
 * definition, not by spruce). */
static char *write_ckpt(const char *qc, const part_t *p, int np)
{
    char *dir = mktmp(), *cfg = path2(dir, "config.json"), *st = path2(dir, "model.safetensors");
    char hdr[8192] = "{", cj[4096];
    uint8_t data[65536];
    size_t off = 0;
    int i;
    for (i = 0; i < np; i++) {
        snprintf(hdr + strlen(hdr), sizeof hdr - strlen(hdr),
                 "%s\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}", i ? "," : "",
                 p[i].name, p[i].dtype, p[i].shape, off, off + p[i].n);
        memcpy(data + off, p[i].data, p[i].n);
        off += p[i].n;
    }
    strcat(hdr, "}");
    write_st(st, hdr, data, off);
    snprintf(cj, sizeof cj, "{\"model_type\": \"llama\"%s%s}", qc ? ", \"quantization_config\": " : "",
             qc ? qc : "");
    write_bytes(cfg, cj, strlen(cj));
    free(cfg);
    free(st);
    return dir;
}

static const float norm_w[4] = {1, 2, 3, 4};

#define QC_SPARSE(fmt) "{\"quant_method\": \"compressed-tensors\", \"format\": \"dense\", " \
    "\"sparsity_config\": {\"format\": \"" fmt "\", \"sparsity_structure\": \"2:4\"}}"

Test(compressed_ckpt, sparse24_bf16_decodes_to_the_dense_weight)
{
    /* W (2, 8) = rows [0 a 0 b | c 0 0 d], [e f 0 0 | 0 0 0 0] in BF16 */
    float dense[16] = {0, 1.5f, 0, -2, 3, 0, 0, 0.25f, -1, 4, 0, 0, 0, 0, 0, 0};
    uint16_t vals[8], want[16];
    uint8_t bm[2] = {0x0a | 0x90, 0x03 | 0x30}; /* row 1's second group: the first two zeros */
    int64_t shape[2] = {2, 8};
    float kept[8] = {1.5f, -2, 3, 0.25f, -1, 4, 0, 0};
    spruce_ckpt *c;
    const spruce_tensor *t;
    spruce_f32_to_bf16_n(kept, vals, 8);
    spruce_f32_to_bf16_n(dense, want, 16);
    {
        part_t p[] = {{"m.shape", "I64", "[2,1]", shape, 16},
                      {"m.compressed", "BF16", "[2,4]", vals, 16},
                      {"m.bitmask", "U8", "[2,1]", bm, 2},
                      {"n.weight", "F32", "[4]", norm_w, 16}};
        char *dir = write_ckpt(QC_SPARSE("sparse-24-bitmask"), p, 4);
        cr_assert_eq(spruce_ckpt_open(dir, &c), 0, "%s", spruce_errdetail());
        t = spruce_ckpt_find(c, "m.weight");
        cr_assert(t && t->dtype == SPRUCE_DTYPE_BF16 && t->ndim == 2 && t->shape[0] == 2 &&
                  t->shape[1] == 8);
        cr_assert(!memcmp(t->data, want, sizeof want), "decoded weight differs");
        cr_assert_null(spruce_ckpt_find(c, "m.bitmask"));
        cr_assert_not_null(spruce_ckpt_find(c, "n.weight"));
        cr_assert_eq(spruce_ckpt_count(c), 2);
        spruce_ckpt_close(c);
        rmrf(dir);
        free(dir);
    }
}

Test(compressed_ckpt, bitmask_count_disagreeing_names_file_and_tensor)
{
    float vals[3] = {1, 2, 3};
    uint8_t bm[1] = {0x0f}; /* four bits, three values */
    int64_t shape[2] = {1, 8}, ro[1] = {0};
    part_t p[] = {{"m.shape", "I64", "[2]", shape, 16}, {"m.compressed", "F32", "[3]", vals, 12},
                  {"m.bitmask", "U8", "[1,1]", bm, 1}, {"m.row_offsets", "I64", "[1]", ro, 8}};
    char *dir = write_ckpt(QC_SPARSE("sparse-bitmask"), p, 4);
    spruce_ckpt *c = NULL;
    cr_assert_eq(spruce_ckpt_open(dir, &c), SPRUCE_EFORMAT);
    cr_assert(strstr(spruce_errdetail(), "model.safetensors") && strstr(spruce_errdetail(), "m.bitmask") &&
              strstr(spruce_errdetail(), "4 values"), "%s", spruce_errdetail());
    rmrf(dir);
    free(dir);
}

#define QC_INT(fmt, bits, strategy, gs, sym) "{\"quant_method\": \"compressed-tensors\", \"format\": \"" \
    fmt "\", \"config_groups\": {\"group_0\": {\"targets\": [\"Linear\"], \"weights\": {\"num_bits\": " \
    #bits ", \"type\": \"int\", \"symmetric\": " sym ", \"strategy\": \"" strategy "\", " \
    "\"group_size\": " #gs ", \"dynamic\": false}, \"input_activations\": null}}}"

Test(compressed_ckpt, int8_channel_and_int4_packed_group_dequantize)
{
    int8_t q[8] = {-128, -1, 0, 1, 127, 5, -5, 0};
    float s[2] = {0.5f, 0.25f}, back[8];
    int64_t shape[2] = {2, 4};
    /* 4 bits, group 2, asymmetric: levels 0..15 stored as q + 8 in words of 8 */
    int8_t q4[8] = {-8, 7, 0, 1, 2, -3, 4, 5};
    int32_t packed[2] = {0, 0}, zpk[2] = {0, 0};
    int8_t zp[4] = {1, -1, 0, 2}; /* (2 rows, 2 groups) */
    float s4[4] = {1, 2, 0.5f, 4};
    int i;
    spruce_ckpt *c;
    const spruce_tensor *t;
    for (i = 0; i < 4; i++) {
        packed[0] |= (int32_t)((uint32_t)(q4[i] + 8) << (4 * i));
        packed[1] |= (int32_t)((uint32_t)(q4[4 + i] + 8) << (4 * i));
    }
    for (i = 0; i < 2; i++) /* zero points packed along rows: word (0, g) holds rows 0, 1 */
        zpk[i] = (int32_t)((uint32_t)(zp[i] + 8) | ((uint32_t)(zp[2 + i] + 8) << 4));
    {
        part_t p[] = {{"m.weight", "I8", "[2,4]", q, 8}, {"m.weight_scale", "F32", "[2,1]", s, 8},
                      {"n.weight", "F32", "[4]", norm_w, 16}};
        char *dir = write_ckpt(QC_INT("int-quantized", 8, "channel", null, "true"), p, 3);
        cr_assert_eq(spruce_ckpt_open(dir, &c), 0, "%s", spruce_errdetail());
        t = spruce_ckpt_find(c, "m.weight");
        cr_assert(t && t->dtype == SPRUCE_DTYPE_F32);
        spruce_tensor_read_f32(t, back);
        for (i = 0; i < 8; i++)
            cr_assert(back[i] == q[i] * s[i / 4], "element %d: %g", i, (double)back[i]);
        cr_assert_not_null(spruce_ckpt_find(c, "n.weight"));
        cr_assert_null(spruce_ckpt_find(c, "m.weight_scale"));
        spruce_ckpt_close(c);
        rmrf(dir);
        free(dir);
    }
    {
        part_t p[] = {{"m.weight_packed", "I32", "[2,1]", packed, 8},
                      {"m.weight_shape", "I64", "[2]", shape, 16},
                      {"m.weight_scale", "F32", "[2,2]", s4, 16},
                      {"m.weight_zero_point", "I32", "[1,2]", zpk, 8}};
        char *dir = write_ckpt(QC_INT("pack-quantized", 4, "group", 2, "false"), p, 4);
        cr_assert_eq(spruce_ckpt_open(dir, &c), 0, "%s", spruce_errdetail());
        t = spruce_ckpt_find(c, "m.weight");
        cr_assert(t);
        spruce_tensor_read_f32(t, back);
        for (i = 0; i < 8; i++) {
            int r = i / 4, g = (i % 4) / 2;
            cr_assert(back[i] == (float)(q4[i] - zp[r * 2 + g]) * s4[r * 2 + g], "element %d: %g",
                      i, (double)back[i]);
        }
        spruce_ckpt_close(c);
        rmrf(dir);
        free(dir);
    }
}

Test(compressed_ckpt, zero_or_nan_scale_and_unsupported_schemes_are_refused)
{
    int8_t q[4] = {1, 2, 3, 4};
    float s0[1] = {0.0f}, sn[1] = {NAN};
    spruce_ckpt *c = NULL;
    const char *bad[] = {
        "{\"quant_method\": \"compressed-tensors\", \"format\": \"float-quantized\"}",
        "{\"quant_method\": \"compressed-tensors\", \"format\": \"marlin-24\"}",
        "{\"quant_method\": \"compressed-tensors\", \"format\": \"int-quantized\", \"config_groups\": "
        "{\"g\": {\"weights\": {\"num_bits\": 8, \"type\": \"float\", \"strategy\": \"channel\"}}}}",
        "{\"quant_method\": \"compressed-tensors\", \"format\": \"int-quantized\", \"config_groups\": "
        "{\"g\": {\"weights\": {\"num_bits\": 8, \"type\": \"int\", \"strategy\": \"channel\"}, "
        "\"input_activations\": {\"num_bits\": 8}}}}",
        "{\"quant_method\": \"compressed-tensors\", \"format\": \"int-quantized\", \"config_groups\": "
        "{\"g\": {\"weights\": {\"num_bits\": 8, \"type\": \"int\", \"strategy\": \"channel\", "
        "\"dynamic\": true}}}}",
        "{\"quant_method\": \"gptq\"}",
    };
    const char *names[] = {"float-quantized", "marlin-24", "fp8", "activation", "dynamic", "gptq"};
    unsigned i;
    for (i = 0; i < 2; i++) {
        part_t p[] = {{"m.weight", "I8", "[1,4]", q, 4},
                      {"m.weight_scale", "F32", "[1,1]", i ? sn : s0, 4}};
        char *dir = write_ckpt(QC_INT("int-quantized", 8, "channel", null, "true"), p, 2);
        cr_assert_eq(spruce_ckpt_open(dir, &c), SPRUCE_EFORMAT);
        cr_assert(strstr(spruce_errdetail(), "weight_scale") && strstr(spruce_errdetail(), "m"),
                  "%s", spruce_errdetail());
        rmrf(dir);
        free(dir);
    }
    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        part_t p[] = {{"n.weight", "F32", "[4]", norm_w, 16}};
        char *dir = write_ckpt(bad[i], p, 1);
        cr_assert_eq(spruce_ckpt_open(dir, &c), SPRUCE_EUNSUPPORTED, "case %u", i);
        cr_assert(strstr(spruce_errdetail(), names[i]) && strstr(spruce_errdetail(), "config.json"),
                  "case %u: %s", i, spruce_errdetail());
        rmrf(dir);
        free(dir);
    }
}

/* ---- the writer: dense -> compressed -> dense -------------------------------- */

/* Prune every *_proj.weight of a synth model (2:4 or 50%), write it dense and
 * compressed, and compare what the two read back as. */
static void writer_roundtrip(spruce_dtype dt, int sparse, int quant)
{
    spruce_synth_config cfg = small_cfg(dt);
    char *base = mktmp(), *in = path2(base, "in"), *dn = path2(base, "dense"), *cn = path2(base, "ct");
    spruce_ckpt *ck, *cd, *cc, *raw;
    spruce_ckpt_writer *wd, *wc;
    spruce_compress_opts co = {sparse, sparse == 2 ? "2:4" : "unstructured"};
    int i, nproj = 0;
    char *st;
    cr_assert_eq(spruce_synth_write(in, &cfg, 0), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_open(in, &ck), 0);
    cr_assert_eq(spruce_ckpt_writer_begin(ck, dn, 0, &wd), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_begin_compressed(ck, cn, 0, &co, &wc), 0, "%s", spruce_errdetail());
    for (i = 0; i < spruce_ckpt_count(ck); i++) {
        const spruce_tensor *t = spruce_ckpt_tensor_at(ck, i);
        int64_t n = spruce_tensor_numel(t), k;
        float *w;
        spruce_qgrid g;
        if (!strstr(t->name, "_proj.weight"))
            continue;
        w = malloc((size_t)n * 4);
        spruce_tensor_read_f32(t, w);
        for (k = 0; k < n; k += 4) /* 2:4 by position: also 50% unstructured */
            w[k + 1] = w[k + 3] = (k / 4) % 2 ? 0.0f : -0.0f;
        if (quant) {
            rtn_grid(w, &g, 8, 1, t->shape[0], t->shape[1], t->shape[1] % 16 ? t->shape[1] : 16);
            onto_grid(w, &g);
        }
        cr_assert_eq(spruce_ckpt_writer_set_f32(wd, t->name, w), 0);
        cr_assert_eq(spruce_ckpt_writer_set_quantized(wc, t->name, w, quant ? &g : NULL), 0, "%s",
                     spruce_errdetail());
        if (quant)
            free(g.scale), free(g.zero);
        free(w);
        nproj++;
    }
    cr_assert_eq(spruce_ckpt_writer_commit(wd), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_commit(wc), 0, "%s", spruce_errdetail());
    cr_assert_eq(nproj, 7);
    cr_assert_eq(spruce_ckpt_open(dn, &cd), 0);
    cr_assert_eq(spruce_ckpt_open(cn, &cc), 0, "%s", spruce_errdetail());
    /* every tensor the same bytes (quantized: the same values in float32) */
    cr_assert_eq(spruce_ckpt_count(cc), spruce_ckpt_count(cd));
    for (i = 0; i < spruce_ckpt_count(cd); i++) {
        const spruce_tensor *a = spruce_ckpt_tensor_at(cd, i), *b = spruce_ckpt_find(cc, a->name);
        cr_assert(b, "%s missing", a->name);
        cr_assert(a->ndim == b->ndim && a->shape[0] == b->shape[0]);
        if (!quant || dt == SPRUCE_DTYPE_F32) {
            cr_assert_eq(a->nbytes, b->nbytes, "%s", a->name);
            cr_assert(!memcmp(a->data, b->data, a->nbytes), "%s differs", a->name);
        }
    }
    /* the raw file, read from the layout's definition */
    st = path2(cn, "model.safetensors");
    cr_assert_eq(spruce_ckpt_open_file(st, &raw), 0);
    {
        const spruce_tensor *w = spruce_ckpt_find(cd, "model.layers.0.mlp.up_proj.weight");
        const spruce_tensor *bm = spruce_ckpt_find(raw, "model.layers.0.mlp.up_proj.bitmask");
        const spruce_tensor *sh = spruce_ckpt_find(raw, "model.layers.0.mlp.up_proj.shape");
        const spruce_tensor *cv = spruce_ckpt_find(raw, "model.layers.0.mlp.up_proj.compressed");
        int64_t r, c, dims[2];
        cr_assert_null(spruce_ckpt_find(raw, "model.layers.0.mlp.up_proj.weight"));
        cr_assert(bm && sh && cv);
        cr_assert_str_eq(bm->dtype_name, "U8");
        cr_assert(bm->shape[0] == w->shape[0] && bm->shape[1] == (w->shape[1] + 7) / 8);
        cr_assert_str_eq(sh->dtype_name, "I64");
        memcpy(dims, sh->data, sizeof dims); /* safetensors does not align the data */
        cr_assert(dims[0] == w->shape[0] && dims[1] == w->shape[1]);
        cr_assert_str_eq(cv->dtype_name, quant ? "I8" : w->dtype_name);
        if (sparse == 2)
            cr_assert(cv->ndim == 2 && cv->shape[1] == w->shape[1] / 2);
        else
            cr_assert(spruce_ckpt_find(raw, "model.layers.0.mlp.up_proj.row_offsets"));
        if (quant)
            cr_assert(spruce_ckpt_find(raw, "model.layers.0.mlp.up_proj.weight_scale"));
        float *v = malloc((size_t)spruce_tensor_numel(w) * 4);
        spruce_tensor_read_f32(w, v);
        for (r = 0; r < w->shape[0]; r++)
            for (c = 0; c < w->shape[1]; c++) {
                int bit = bit_of(bm->data, w->shape[1], r, c), nz = v[r * w->shape[1] + c] != 0.0f;
                /* sparse-bitmask: a bit for each non-zero; 2:4: at least those, two per four */
                cr_assert(sparse == 1 ? bit == nz : bit >= nz, "bit (%lld, %lld)", (long long)r,
                          (long long)c);
                if (sparse == 2 && c % 4 == 3)
                    cr_assert_eq(bit_of(bm->data, w->shape[1], r, c - 3) +
                                 bit_of(bm->data, w->shape[1], r, c - 2) +
                                 bit_of(bm->data, w->shape[1], r, c - 1) + bit, 2);
            }
        free(v);
    }
    spruce_ckpt_close(raw);
    spruce_ckpt_close(cc);
    spruce_ckpt_close(cd);
    spruce_ckpt_close(ck);
    rmrf(base);
    free(st), free(base), free(in), free(dn), free(cn);
}

Test(compressed_ckpt, writer_sparse_roundtrips_bit_exact)
{
    writer_roundtrip(SPRUCE_DTYPE_F32, 2, 0);
    writer_roundtrip(SPRUCE_DTYPE_F16, 2, 0);
    writer_roundtrip(SPRUCE_DTYPE_BF16, 2, 0);
    writer_roundtrip(SPRUCE_DTYPE_F32, 1, 0);
    writer_roundtrip(SPRUCE_DTYPE_BF16, 1, 0);
}

Test(compressed_ckpt, writer_sparse_quantized_exact_to_the_grid)
{
    writer_roundtrip(SPRUCE_DTYPE_F32, 2, 1);
    writer_roundtrip(SPRUCE_DTYPE_F32, 1, 1);
}

/* ---- the writer in pieces, and the tensors it copies ------------------------ */

#include <sys/syscall.h>

/* copy_file_range as the file system gives it; with cfr_errno set, failing
 * as file systems without it do once cfr_budget bytes have been copied. */
static int cfr_errno;
static uint64_t cfr_budget;
static long cfr_calls;

ssize_t copy_file_range(int in, loff_t *in_off, int out, loff_t *out_off, size_t n,
                        unsigned int flags)
{
    ssize_t k;
    cfr_calls++;
    if (cfr_errno && !cfr_budget) {
        errno = cfr_errno;
        return -1;
    }
    if (cfr_errno && n > cfr_budget)
        n = (size_t)cfr_budget;
    k = syscall(SYS_copy_file_range, in, in_off, out, out_off, n, flags);
    if (cfr_errno && k > 0)
        cfr_budget -= (uint64_t)k;
    return k;
}

/* A weight of more than one piece of the compressed writer (4 MiB of stored
 * elements), its rows not a whole number of pieces, in every stored size. */
enum { PR = 2600, PC = 2048 };
#define UP "model.layers.0.mlp.up_proj.weight"

/* A checkpoint of an embedding and a norm (left as they are) and UP, in dt. */
static char *pieces_ckpt(const char *dt)
{
    const int es = strcmp(dt, "F32") ? 2 : 4;
    const size_t ne = 16 * PC, nu = (size_t)PR * PC, nn = PC, n = (ne + nu + nn) * (size_t)es;
    char *dir = mktmp(), *st = path2(dir, "model.safetensors"), *cfg = path2(dir, "config.json");
    char hdr[1024];
    uint8_t *data = malloc(n);
    size_t i;
    for (i = 0; i < n / (size_t)es; i++) {
        float f = uniform();
        uint16_t h = spruce_f32_to_bf16(f);
        memcpy(data + i * (size_t)es, es == 4 ? (void *)&f : (void *)&h, (size_t)es);
    }
    snprintf(hdr, sizeof hdr, "{\"model.embed_tokens.weight\":{\"dtype\":\"%s\",\"shape\":[16,%d],"
             "\"data_offsets\":[0,%zu]},\"" UP "\":{\"dtype\":\"%s\",\"shape\":[%d,%d],"
             "\"data_offsets\":[%zu,%zu]},\"model.norm.weight\":{\"dtype\":\"%s\",\"shape\":[%d],"
             "\"data_offsets\":[%zu,%zu]}}", dt, PC, ne * es, dt, PR, PC, ne * es, (ne + nu) * es,
             dt, PC, (ne + nu) * es, n);
    write_st(st, hdr, data, n);
    write_bytes(cfg, "{\"model_type\": \"llama\"}", 23);
    free(data), free(st), free(cfg);
    return dir;
}

/* UP's new values: 2:4 (0, 1 or 2 of every four kept, some zeros -0.0),
 * exact in dt, on an 8-bit symmetric grid when g is not NULL. */
static float *pieces_weight(int es, spruce_qgrid *g)
{
    float *w = malloc((size_t)PR * PC * 4);
    int64_t i;
    nm24_f32(w, PR, PC);
    for (i = 0; i < (int64_t)PR * PC; i++) {
        if (w[i] == 0.0f && next() % 2)
            w[i] = -0.0f;
        if (es == 2)
            w[i] = spruce_bf16_to_f32(spruce_f32_to_bf16(w[i]));
    }
    if (g)
        rtn_grid(w, g, 8, 1, PR, PC, PC), onto_grid(w, g);
    return w;
}

/* Write in's UP as w (on g) compressed into out: the return code. */
static int pieces_write(const char *in, const char *out, int sparse, const float *w,
                        const spruce_qgrid *g)
{
    spruce_ckpt *ck;
    spruce_ckpt_writer *wc;
    spruce_compress_opts co = {sparse, sparse == 2 ? "2:4" : "unstructured"};
    int rc;
    cr_assert_eq(spruce_ckpt_open(in, &ck), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_begin_compressed(ck, out, 0, &co, &wc), 0, "%s",
                 spruce_errdetail());
    if ((rc = spruce_ckpt_writer_set_quantized(wc, UP, w, g)))
        spruce_ckpt_writer_abort(wc);
    else
        rc = spruce_ckpt_writer_commit(wc);
    spruce_ckpt_close(ck);
    return rc;
}

/* Every layout the writer streams reads back as the values set (zeros +0.0),
 * and the tensors left alone as their bytes. */
static void pieces_roundtrip(const char *dt, int sparse, int quant)
{
    const int es = strcmp(dt, "F32") ? 2 : 4;
    char *in = pieces_ckpt(dt), *base = mktmp(), *out = path2(base, "ct");
    spruce_qgrid g;
    float *w = pieces_weight(es, quant ? &g : NULL), *back = malloc((size_t)PR * PC * 4);
    spruce_ckpt *ci, *cc;
    const char *keep[] = {"model.embed_tokens.weight", "model.norm.weight"};
    int64_t i;
    cr_assert_eq(pieces_write(in, out, sparse, w, quant ? &g : NULL), 0, "%s %d %d: %s", dt, sparse,
                 quant, spruce_errdetail());
    cr_assert_eq(spruce_ckpt_open(out, &cc), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_open(in, &ci), 0);
    cr_assert_eq(spruce_tensor_read_f32(spruce_ckpt_find(cc, UP), back), 0, "%s", spruce_errdetail());
    for (i = 0; i < (int64_t)PR * PC; i++)
        cr_assert_eq(fbits(back[i]), fbits(w[i] == 0.0f ? 0.0f : w[i]),
                     "%s sparse %d quant %d: element %lld: %a, set %a", dt, sparse, quant,
                     (long long)i, (double)back[i], (double)w[i]);
    for (i = 0; i < 2; i++) {
        const spruce_tensor *a = spruce_ckpt_find(ci, keep[i]), *b = spruce_ckpt_find(cc, keep[i]);
        cr_assert(b && a->nbytes == b->nbytes && !memcmp(a->data, b->data, a->nbytes), "%s", keep[i]);
    }
    spruce_ckpt_close(ci), spruce_ckpt_close(cc);
    if (quant)
        free(g.scale), free(g.zero);
    rmrf(in), rmrf(base);
    free(in), free(base), free(out), free(w), free(back);
}

Test(compressed_ckpt, writer_pieces_roundtrip_in_every_layout)
{
    pieces_roundtrip("BF16", 2, 0); /* sparse-24-bitmask */
    pieces_roundtrip("F32", 2, 0);
    pieces_roundtrip("BF16", 1, 0); /* sparse-bitmask */
    pieces_roundtrip("BF16", 0, 0); /* dense values */
    pieces_roundtrip("F32", 2, 1);  /* sparse-24-bitmask of int8 */
    pieces_roundtrip("F32", 1, 1);  /* sparse-bitmask of int8 */
    pieces_roundtrip("F32", 0, 1);  /* int-quantized */
}

/* A bad value in the last piece: the error names the file, the tensor and
 * the element (or row) in the whole tensor, and nothing is published. */
Test(compressed_ckpt, writer_pieces_name_a_bad_value_in_a_later_piece)
{
    char *in = pieces_ckpt("BF16"), *base = mktmp(), *out = path2(base, "ct");
    float *w = pieces_weight(2, NULL);
    int64_t k;
    w[(int64_t)(PR - 1) * PC + 5] = NAN;
    cr_assert_eq(pieces_write(in, out, 2, w, NULL), SPRUCE_ENAN);
    cr_assert(strstr(spruce_errdetail(), "model.safetensors") && strstr(spruce_errdetail(), UP) &&
              strstr(spruce_errdetail(), "element 5322757 "), "%s", spruce_errdetail());
    cr_assert(!exists(out));
    w[(int64_t)(PR - 1) * PC + 5] = 0.0f;
    for (k = 0; k < 4; k++) /* three non-zeros in row 2590, columns 8..11 */
        w[2590 * PC + 8 + k] = k < 3 ? 1.0f : 0.0f;
    cr_assert_eq(pieces_write(in, out, 2, w, NULL), SPRUCE_EPATTERN);
    cr_assert(strstr(spruce_errdetail(), UP) && strstr(spruce_errdetail(), "row 2590, columns 8..11"),
              "%s", spruce_errdetail());
    cr_assert(!exists(out));
    rmrf(in), rmrf(base);
    free(in), free(base), free(out), free(w);
}

/* The same for levels: a NaN in the last piece is named as such (not as a
 * weight off the grid), a weight off the grid by its row and column. */
Test(compressed_ckpt, writer_pieces_name_a_bad_level_in_a_later_piece)
{
    char *in = pieces_ckpt("F32"), *base = mktmp(), *out = path2(base, "ct");
    spruce_qgrid g;
    float *w = pieces_weight(4, &g);
    const int64_t at = (int64_t)(PR - 1) * PC + 5;
    const float keep = w[at];
    w[at] = NAN;
    cr_assert_eq(pieces_write(in, out, 2, w, &g), SPRUCE_ENAN);
    cr_assert(strstr(spruce_errdetail(), UP) && strstr(spruce_errdetail(), "element 5322757 "),
              "%s", spruce_errdetail());
    cr_assert(!exists(out));
    w[at] = keep + 0.3f * g.scale[PR - 1];
    cr_assert_eq(pieces_write(in, out, 2, w, &g), SPRUCE_EINVAL);
    cr_assert(strstr(spruce_errdetail(), UP) && strstr(spruce_errdetail(), "row 2599, column 5:"),
              "%s", spruce_errdetail());
    cr_assert(!exists(out));
    free(g.scale), free(g.zero);
    rmrf(in), rmrf(base);
    free(in), free(base), free(out), free(w);
}

/* Where copy_file_range fails (EXDEV across file systems, ENOSYS, EINVAL,
 * EOPNOTSUPP), at once or after a first part, the writers copy through a
 * buffer instead: the same bytes, dense and compressed. */
Test(compressed_ckpt, copies_fall_back_when_copy_file_range_fails)
{
    static const int errs[] = {EXDEV, ENOSYS, EINVAL, EOPNOTSUPP};
    static const uint64_t budgets[] = {0, 4099};
    char *in = pieces_ckpt("BF16"), *base = mktmp(), *rc_ = path2(base, "ref-ct"),
         *rd = path2(base, "ref-dense"), *st = path2(in, "model.safetensors");
    float *w = pieces_weight(2, NULL);
    spruce_ckpt *ck;
    spruce_ckpt_writer *wd;
    unsigned i, j;
    cr_assert_eq(spruce_ckpt_open(in, &ck), 0);
    for (i = 0; i <= 4; i++) /* 0: the references, copied by the kernel */
        for (j = 0; j < (i ? 2u : 1u); j++) {
            char name[64], *oc, *od, *a, *b;
            long before = cfr_calls;
            cfr_errno = i ? errs[i - 1] : 0, cfr_budget = budgets[j];
            snprintf(name, sizeof name, "ct-%u-%u", i, j);
            oc = i ? path2(base, name) : strdup(rc_);
            snprintf(name, sizeof name, "dense-%u-%u", i, j);
            od = i ? path2(base, name) : strdup(rd);
            cr_assert_eq(pieces_write(in, oc, 2, w, NULL), 0, "%s", spruce_errdetail());
            cr_assert_gt(cfr_calls, before, "compressed: copy_file_range was not called");
            before = cfr_calls;
            cr_assert_eq(spruce_ckpt_writer_begin(ck, od, 0, &wd), 0, "%s", spruce_errdetail());
            cr_assert_eq(spruce_ckpt_writer_commit(wd), 0, "%s", spruce_errdetail());
            cr_assert_gt(cfr_calls, before, "dense: copy_file_range was not called");
            a = path2(rc_, "model.safetensors"), b = path2(oc, "model.safetensors");
            cr_assert(files_equal(a, b), "compressed, errno %d after %llu bytes", cfr_errno,
                      (unsigned long long)budgets[j]);
            free(a), free(b);
            a = path2(od, "model.safetensors");
            cr_assert(files_equal(st, a), "dense, errno %d after %llu bytes", cfr_errno,
                      (unsigned long long)budgets[j]);
            free(a), free(oc), free(od);
        }
    spruce_ckpt_close(ck);
    rmrf(in), rmrf(base);
    free(in), free(base), free(rc_), free(rd), free(st), free(w);
}

/* ---- spruce prune --save-format compressed, then eval ---------------------- */

static char *run_out(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    static char buf[65536];
    size_t n;
    cr_assert_not_null(p);
    n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = '\0';
    cr_assert_eq(pclose(p), 0, "%s failed:\n%s", cmd, buf);
    return strdup(buf);
}

/* The spruce program, with $SPRUCE_FIXTURES/stories260k in fx (n bytes); NULL
 * after skipping the test when either is missing. */
static const char *need_stories(char *fx, size_t n)
{
    const char *bin = getenv("SPRUCE_BIN"), *root = getenv("SPRUCE_FIXTURES");
    if (!bin || access(bin, X_OK) || !root) {
        cr_skip_test("SPRUCE_BIN or SPRUCE_FIXTURES not set (run through 'make check')");
        return NULL;
    }
    snprintf(fx, n, "%s/stories260k", root);
    if (access(fx, R_OK)) {
        cr_skip_test("stories260k fixture not found under SPRUCE_FIXTURES");
        return NULL;
    }
    return bin;
}

Test(compressed_cli, prune_compressed_then_eval_matches_dense, .timeout = 600)
{
    char fx[1024], cmd[8192], *base, *pd, *pc;
    const char *bin = need_stories(fx, sizeof fx);
    const char *p1, *p2;
    if (!bin)
        return;
    base = mktmp();
    snprintf(cmd, sizeof cmd, "cd %s && %s prune %s -o d --calib %s/calib.u16 --pattern 2:4 "
             "--seqlen 128 --nsamples 8 --threads 2 2>/dev/null && %s prune %s -o c --calib "
             "%s/calib.u16 --pattern 2:4 --seqlen 128 --nsamples 8 --threads 2 --save-format "
             "compressed 2>/dev/null && %s eval d --data %s/eval.u16 --seqlen 128 --threads 2 "
             "2>/dev/null | tail -1", base, bin, fx, fx, bin, fx, fx, bin, fx);
    pd = run_out(cmd);
    snprintf(cmd, sizeof cmd, "cd %s && %s eval c --data %s/eval.u16 --seqlen 128 --threads 2 "
             "2>/dev/null | tail -1", base, bin, fx);
    pc = run_out(cmd);
    p1 = strstr(pd, "perplexity"), p2 = strstr(pc, "perplexity");
    cr_assert(p1 && p2, "%s / %s", pd, pc);
    cr_assert_str_eq(p1, p2, "dense save %s, compressed save %s", p1, p2);
    /* and it is smaller */
    snprintf(cmd, sizeof cmd, "cd %s && test $(stat -c %%s c/model.safetensors) -lt "
             "$(stat -c %%s d/model.safetensors) && echo smaller", base);
    free(run_out(cmd));
    snprintf(cmd, sizeof cmd, "cd %s && grep -c sparse-24-bitmask c/config.json", base);
    free(run_out(cmd));
    rmrf(base);
    free(base), free(pd), free(pc);
}

/* Every layout spruce writes, read back by tests/ref/read_compressed.py: a
 * numpy reader written from the compressed-tensors definition (bitmask bit
 * order, row offsets, pack_to_int32's word order and offset, zero points
 * packed along the rows, w = (q - zp) scale in the scale's dtype), which must
 * decode every compressed layer to the dense checkpoint of the same run bit
 * for bit, and find every other tensor stored as is. */
#include "python_testutil.h"

/* Prune `model` with each option set twice (dense, compressed) and have the
 * reader compare the two; `layout` is the layout it must report. */
static void reader_agrees(const char *base, const char *bin, const char *py, const char *src,
                          const char *model, const char *calib, const char *const (*opts)[2],
                          size_t n)
{
    char cmd[8192], want[128], *out;
    size_t k;
    for (k = 0; k < n; k++) {
        snprintf(cmd, sizeof cmd, "cd %s && rm -rf c d && %s prune %s -o d --calib %s "
                 "--seqlen 64 --nsamples 4 --threads 2 %s 2>&1 >/dev/null && %s prune %s -o c "
                 "--calib %s --seqlen 64 --nsamples 4 --threads 2 %s --save-format "
                 "compressed 2>&1 >/dev/null && %s %s/tests/ref/read_compressed.py c d",
                 base, bin, model, calib, opts[k][1], bin, model, calib, opts[k][1], py, src);
        out = run_out(cmd);
        cr_assert(strstr(out, "differing 0"), "%s %s:\n%s", model, opts[k][1], out);
        snprintf(want, sizeof want, "layout %s\n", opts[k][0]);
        cr_assert(strstr(out, want), "%s %s: expected %s in:\n%s", model, opts[k][1], want, out);
        free(out);
    }
}

Test(compressed_cli, numpy_reader_decodes_every_layout, .timeout = 900)
{
    static const char *const f32[][2] = {
        {"sparse-24-bitmask/F32", "--pattern 2:4"},
        {"sparse-bitmask/F32", "--sparsity 0.5"},
        {"sparse-24-bitmask/I8", "--pattern 2:4 --wbits 8 --sym"},
        {"sparse-bitmask/I8", "--sparsity 0.5 --wbits 8"},
        {"sparse-bitmask/I8", "--sparsity 0.6 --wbits 4 --groupsize 32 --sym --exclude down_proj"},
        {"int-quantized/8", "--sparsity 0 --wbits 8"},
        {"pack-quantized/4", "--sparsity 0 --wbits 4 --groupsize 32 --exclude down_proj"},
        {"pack-quantized/4", "--sparsity 0 --wbits 4 --groupsize 4 --sym"},
        {"pack-quantized/2", "--sparsity 0 --wbits 2 --groupsize 4"},
    };
    /* bf16 and f16 weights: the scales are stored (and so rounded) in that type */
    static const char *const b16[][2] = {
        {"sparse-24-bitmask/%s", "--pattern 2:4"},
        {"sparse-24-bitmask/I8", "--pattern 2:4 --wbits 8 --sym"},
        {"sparse-bitmask/I8", "--sparsity 0.5 --wbits 8"},
        {"int-quantized/8", "--sparsity 0 --wbits 8 --groupsize 64"},
        {"pack-quantized/4", "--sparsity 0 --wbits 4 --groupsize 32"},
    };
    static const char *const dts[][2] = {{"bf16", "BF16"}, {"f16", "F16"}};
    const char *bin = getenv("SPRUCE_BIN"), *root = getenv("SPRUCE_FIXTURES");
    const char *src = getenv("SPRUCE_SRCDIR"), *py;
    char fx[1024], calib[1100], cmd[4096], name[64], *base;
    size_t d;
    if (!bin || access(bin, X_OK) || !root || !src)
        cr_skip_test("SPRUCE_BIN, SPRUCE_SRCDIR or SPRUCE_FIXTURES not set (run through 'make check')");
    snprintf(fx, sizeof fx, "%s/stories260k", root);
    if (access(fx, R_OK))
        cr_skip_test("stories260k fixture not found under SPRUCE_FIXTURES");
    if (!(py = find_python_with("numpy")))
        cr_skip_test("no python3 with numpy (Debian python3-numpy): the independent reader is skipped");
    base = mktmp();
    snprintf(calib, sizeof calib, "%s/calib.u16", fx);
    reader_agrees(base, bin, py, src, fx, calib, f32, sizeof f32 / sizeof f32[0]);
    for (d = 0; d < 2; d++) {
        const char *opts[5][2];
        size_t k;
        snprintf(name, sizeof name, "sparse-24-bitmask/%s", dts[d][1]);
        for (k = 0; k < 5; k++)
            opts[k][0] = k ? b16[k][0] : name, opts[k][1] = b16[k][1];
        snprintf(cmd, sizeof cmd, "cd %s && rm -rf m && %s synth m --dtype %s --hidden 128 "
                 "--intermediate 256 --vocab 256 --layers 2 --calib m.u16 >/dev/null 2>&1",
                 base, bin, dts[d][0]);
        cr_assert_eq(system(cmd), 0, "%s", cmd);
        reader_agrees(base, bin, py, src, "m", "m.u16", (const char *const (*)[2])opts, 5);
    }
    rmrf(base);
    free(base);
}

/* ---- the header room ------------------------------------------------------- */

/* Each shard's header is written last, into room reserved at begin: the room
 * must hold it whatever the names (here ones JSON must escape: a quote, a
 * backslash, a control character) and the layout, and the file must stay
 * valid safetensors (the length a multiple of 8, the JSON padded with spaces
 * only). */
static void escaped_names_roundtrip(int sparse, int bits, int sym, int64_t gs)
{
    enum { R = 8, C = 16 };
    static const char *jname[2] = {"a\\\"b\\\\c\\u0001d.weight", "model.layers.0.\\u001f.weight"};
    static const char *name[2] = {"a\"b\\c\001d.weight", "model.layers.0.\037.weight"};
    float w[2][R * C], n4[16];
    part_t p[3];
    spruce_ckpt *ck, *cc;
    spruce_ckpt_writer *wc;
    spruce_compress_opts co = {sparse, sparse == 2 ? "2:4" : "unstructured"};
    spruce_qgrid g[2];
    char *dir, *out, *st;
    uint8_t *file;
    uint64_t hl;
    size_t fsz, k;
    int i, j;
    for (i = 0; i < 2; i++) {
        for (j = 0; j < R * C; j++)
            w[i][j] = j % 4 == 1 || j % 4 == 3 ? 0.0f : uniform(); /* 2:4, and 50% */
        if (bits)
            rtn_grid(w[i], &g[i], bits, sym, R, C, gs), onto_grid(w[i], &g[i]);
        p[i] = (part_t){jname[i], "F32", "[8,16]", w[i], sizeof w[i]};
    }
    for (j = 0; j < 16; j++)
        n4[j] = (float)j;
    p[2] = (part_t){"x\\\\y", "F32", "[1,2,2,4]", n4, sizeof n4};
    dir = write_ckpt(NULL, p, 3);
    out = mktmp();
    cr_assert_eq(spruce_ckpt_open(dir, &ck), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_begin_compressed(ck, out, 0, &co, &wc), 0, "%s", spruce_errdetail());
    for (i = 0; i < 2; i++)
        cr_assert_eq(spruce_ckpt_writer_set_quantized(wc, name[i], w[i], bits ? &g[i] : NULL), 0,
                     "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_commit(wc), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_open(out, &cc), 0, "%s", spruce_errdetail());
    for (i = 0; i < 2; i++) {
        const spruce_tensor *t = spruce_ckpt_find(cc, name[i]);
        float v[R * C];
        cr_assert(t, "tensor %d not read back", i);
        cr_assert_eq(spruce_tensor_read_f32(t, v), 0);
        for (j = 0; j < R * C; j++)
            cr_assert(v[j] == w[i][j], "sparse %d bits %d: tensor %d element %d: %g, wrote %g",
                      sparse, bits, i, j, (double)v[j], (double)w[i][j]);
    }
    cr_assert(spruce_ckpt_find(cc, "x\\y"));
    cr_assert(!memcmp(spruce_ckpt_find(cc, "x\\y")->data, n4, sizeof n4));
    st = path2(out, "model.safetensors");
    file = read_bytes(st, &fsz);
    for (hl = 0, k = 0; k < 8; k++)
        hl |= (uint64_t)file[k] << (8 * k);
    cr_assert(hl % 8 == 0 && 8 + hl <= fsz, "header length %llu", (unsigned long long)hl);
    for (k = 8 + hl; k > 8 && file[k - 1] == ' '; k--)
        ;
    cr_assert(k > 9 && file[8] == '{' && file[k - 1] == '}', "the header is JSON, then spaces");
    free(file);
    spruce_ckpt_close(cc);
    spruce_ckpt_close(ck);
    if (bits)
        for (i = 0; i < 2; i++)
            free(g[i].scale), free(g[i].zero);
    rmrf(dir);
    rmrf(out);
    free(dir), free(out), free(st);
}

Test(compressed_ckpt, header_room_holds_escaped_names_in_every_layout)
{
    escaped_names_roundtrip(1, 0, 0, 0);  /* sparse-bitmask */
    escaped_names_roundtrip(2, 0, 0, 0);  /* sparse-24-bitmask */
    escaped_names_roundtrip(1, 8, 0, 16); /* sparse-bitmask of int8 with zero points */
    escaped_names_roundtrip(2, 8, 1, 16); /* sparse-24-bitmask of int8 */
    escaped_names_roundtrip(0, 4, 0, 8);  /* pack-quantized, packed zero points */
    escaped_names_roundtrip(0, 8, 0, 16); /* int-quantized */
}

/* A compressed checkpoint from the pruner (2:4 with 8-bit values) decoded by
 * `spruce run` gives the same greedy ids as the same weights saved dense (the
 * dequantized values in float32). */
Test(compressed_cli, run_greedy_ids_match_the_dense_save, .timeout = 600)
{
    char fx[1024], cmd[8192], *base, *pd, *pc;
    const char *bin = need_stories(fx, sizeof fx);
    if (!bin)
        return;
    base = mktmp();
    snprintf(cmd, sizeof cmd, "cd %s && %s prune %s -o d --calib %s/calib.u16 --pattern 2:4 "
             "--wbits 8 --sym --seqlen 128 --nsamples 8 --threads 2 >/dev/null 2>&1 && %s prune "
             "%s -o c --calib %s/calib.u16 --pattern 2:4 --wbits 8 --sym --seqlen 128 --nsamples 8 "
             "--threads 2 --save-format compressed >/dev/null 2>&1 && grep -c int-quantized "
             "c/config.json", base, bin, fx, fx, bin, fx, fx);
    free(run_out(cmd));
    snprintf(cmd, sizeof cmd, "cd %s && %s run d --prompt-ids '1 400' --steps 40 --sparse off "
             "--threads 2 2>/dev/null | head -1", base, bin);
    pd = run_out(cmd);
    snprintf(cmd, sizeof cmd, "cd %s && %s run c --prompt-ids '1 400' --steps 40 --sparse off "
             "--threads 2 2>/dev/null | head -1", base, bin);
    pc = run_out(cmd);
    cr_assert(strlen(pd) > 40, "%s", pd);
    cr_assert_str_eq(pd, pc, "dense save: %s; compressed: %s", pd, pc);
    free(pd), free(pc);
    /* the compressed one runs on its int8 levels, in fewer bytes */
    snprintf(cmd, sizeof cmd, "cd %s && %s run d --prompt-ids '1 400' --steps 4 --threads 2 "
             "--json 2>/dev/null", base, bin);
    pd = run_out(cmd);
    snprintf(cmd, sizeof cmd, "cd %s && %s run c --prompt-ids '1 400' --steps 4 --threads 2 "
             "--json 2>/dev/null", base, bin);
    pc = run_out(cmd);
    cr_assert(strstr(pd, "\"dtype\": \"f32\"") && strstr(pc, "\"dtype\": \"int8\""), "%s / %s",
              pd, pc);
    cr_assert(strstr(pd, "\"weight_bytes\": ") && strstr(pc, "\"weight_bytes\": "));
    {
        double bd = strtod(strstr(pd, "\"weight_bytes\": ") + 16, NULL);
        double bc = strtod(strstr(pc, "\"weight_bytes\": ") + 16, NULL);
        cr_assert(bc > 0 && bc < 0.8 * bd, "weights: compressed %g bytes, dense %g", bc, bd);
    }
    free(pd), free(pc);
    /* bench --model decodes in the checkpoint's own type too */
    snprintf(cmd, sizeof cmd, "cd %s && %s bench --model c --batch 1 --threads 2 2>/dev/null",
             base, bin);
    pc = run_out(cmd);
    cr_assert(strstr(pc, "auto int8") && strstr(pc, "dense f32"), "%s", pc);
    free(pc);
    /* eval on the levels: the dense save's perplexity */
    snprintf(cmd, sizeof cmd, "cd %s && %s eval d --data %s/eval.u16 --seqlen 128 --threads 2 "
             "--json 2>/dev/null", base, bin, fx);
    pd = run_out(cmd);
    snprintf(cmd, sizeof cmd, "cd %s && %s eval c --data %s/eval.u16 --seqlen 128 --threads 2 "
             "--dtype own --json 2>/dev/null", base, bin, fx);
    pc = run_out(cmd);
    cr_assert(strstr(pd, "\"perplexity\": ") && strstr(pc, "\"perplexity\": ") &&
                  strstr(pc, "\"dtype\": \"own\""), "%s / %s", pd, pc);
    {
        double a = strtod(strstr(pd, "\"perplexity\": ") + 14, NULL);
        double b = strtod(strstr(pc, "\"perplexity\": ") + 14, NULL);
        cr_assert(a > 1 && fabs(a - b) <= 1e-4 * a, "perplexity: dense save %.6f, on the levels "
                  "%.6f", a, b);
    }
    rmrf(base);
    free(base), free(pd), free(pc);
}

/* ---- opened lazily ---------------------------------------------------------- */

/* A checkpoint written in a layout, opened lazily: the same table as the
 * eager open (names, dtypes, shapes, sizes), the modules with no bytes until
 * read, then the same floats whole and by ranges; a quantized module's
 * levels, scales and zero points give back exactly the decoded floats. */
static void lazy_matches_eager(int sparse, int bits, int sym, int64_t gs)
{
    enum { R = 8, C = 64 };
    const char *wname = "model.layers.0.mlp.up_proj.weight";
    float w[R * C], e[R * C], v[R * C];
    part_t p[2];
    spruce_ckpt *ck, *ce, *cl;
    spruce_ckpt_writer *wc;
    spruce_compress_opts co = {sparse, sparse == 2 ? "2:4" : "unstructured"};
    spruce_ckpt_qscheme qs;
    spruce_qgrid g;
    char *dir, *out;
    int i, j, nq = 0;
    for (j = 0; j < R * C; j++)
        w[j] = j % 4 == 1 || j % 4 == 2 ? 0.0f : uniform();
    if (bits)
        rtn_grid(w, &g, bits, sym, R, C, gs), onto_grid(w, &g);
    p[0] = (part_t){wname, "F32", "[8,64]", w, sizeof w};
    p[1] = (part_t){"n.weight", "F32", "[4]", norm_w, 16};
    dir = write_ckpt(NULL, p, 2);
    out = mktmp();
    cr_assert_eq(spruce_ckpt_open(dir, &ck), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_begin_compressed(ck, out, 0, &co, &wc), 0, "%s",
                 spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_set_quantized(wc, wname, w, bits ? &g : NULL), 0, "%s",
                 spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_commit(wc), 0, "%s", spruce_errdetail());
    spruce_ckpt_close(ck);
    cr_assert_eq(spruce_ckpt_open(out, &ce), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_open_lazy(out, &cl), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_count(cl), spruce_ckpt_count(ce));
    for (i = 0; i < spruce_ckpt_count(ce); i++) {
        const spruce_tensor *te = spruce_ckpt_tensor_at(ce, i), *tl = spruce_ckpt_tensor_at(cl, i);
        int module = !strcmp(te->name, wname);
        cr_assert_str_eq(tl->name, te->name);
        cr_assert(tl->dtype == te->dtype && tl->ndim == te->ndim && tl->nbytes == te->nbytes &&
                      !memcmp(tl->shape, te->shape, sizeof te->shape),
                  "sparse %d bits %d: %s: dtype, shape or size differ", sparse, bits, te->name);
        cr_assert_eq(!tl->data, module, "%s: bytes %s", te->name, module ? "held" : "missing");
        cr_assert_eq(spruce_ckpt_quantized(te, NULL), 0, "the eager open keeps no levels");
        if (!module)
            continue;
        cr_assert_eq(spruce_tensor_read_f32(te, e), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_tensor_read_f32(tl, v), 0, "%s", spruce_errdetail());
        cr_assert(!memcmp(e, v, sizeof e), "sparse %d bits %d: lazily read values differ", sparse,
                  bits);
        for (j = 0; j < R * C; j++)
            cr_assert(e[j] == w[j], "sparse %d bits %d: element %d: %g, wrote %g", sparse, bits, j,
                      (double)e[j], (double)w[j]);
        /* rows 3..5, then the tail: decoded once, kept until its end is released */
        memset(v, 0xff, sizeof v);
        cr_assert_eq(spruce_tensor_read_f32_range(tl, 3 * C, 3 * C, v), 0, "%s", spruce_errdetail());
        cr_assert(!memcmp(v, e + 3 * C, 3 * C * sizeof *v), "a range read differs");
        spruce_ckpt_release_range(cl, tl, 0, 4 * C * 4);
        cr_assert_eq(spruce_tensor_read_f32_range(tl, R * C - 5, 5, v), 0, "%s", spruce_errdetail());
        cr_assert(!memcmp(v, e + R * C - 5, 5 * sizeof *v), "the tail read differs");
        spruce_ckpt_release(cl, tl);
        cr_assert_eq(spruce_ckpt_quantized(tl, &qs), bits > 0);
        if (bits) {
            int8_t *q, *zp;
            float *sc;
            int64_t ng = C / gs;
            cr_assert(qs.bits == bits && qs.sym == sym && qs.sparse == sparse &&
                          qs.groupsize == (gs == C ? 0 : gs),
                      "scheme %d bits sym %d sparse %d group %d", qs.bits, qs.sym, qs.sparse,
                      qs.groupsize);
            cr_assert_eq(spruce_ckpt_read_levels(tl, &q, &sc, &zp), 0, "%s", spruce_errdetail());
            cr_assert_eq(!zp, sym);
            for (j = 0; j < R * C; j++) {
                int64_t k = (j / C) * ng + (j % C) / gs;
                float x = (float)(q[j] - (zp ? zp[k] : 0)) * sc[k];
                cr_assert(x == e[j], "bits %d element %d: level %d gives %g, decoded %g", bits, j,
                          q[j], (double)x, (double)e[j]);
                cr_assert(q[j] >= -(1 << (bits - 1)) && q[j] < (1 << (bits - 1)));
            }
            free(q), free(sc), free(zp);
            nq++;
        } else {
            int8_t *q = NULL, *zp = NULL;
            float *sc = NULL;
            cr_assert_eq(spruce_ckpt_read_levels(tl, &q, &sc, &zp), SPRUCE_EINVAL);
            cr_assert(!q && !sc && !zp);
        }
    }
    cr_assert_eq(nq, bits > 0);
    /* the parts are not in the table, as with the eager open */
    cr_assert_null(spruce_ckpt_find(cl, "model.layers.0.mlp.up_proj.weight_scale"));
    cr_assert_null(spruce_ckpt_find(cl, "model.layers.0.mlp.up_proj.bitmask"));
    spruce_ckpt_close(cl);
    spruce_ckpt_close(ce);
    if (bits)
        free(g.scale), free(g.zero);
    rmrf(dir);
    rmrf(out);
    free(dir), free(out);
}

Test(compressed_ckpt, lazy_open_reads_what_the_eager_open_decodes)
{
    lazy_matches_eager(1, 0, 0, 0);   /* sparse-bitmask */
    lazy_matches_eager(2, 0, 0, 0);   /* sparse-24-bitmask */
    lazy_matches_eager(0, 8, 1, 64);  /* int-quantized, per row */
    lazy_matches_eager(0, 8, 0, 16);  /* int-quantized in groups, zero points */
    lazy_matches_eager(0, 4, 1, 32);  /* pack-quantized */
    lazy_matches_eager(0, 4, 0, 16);  /* pack-quantized, packed zero points */
    lazy_matches_eager(2, 8, 1, 64);  /* sparse-24-bitmask of int8 */
    lazy_matches_eager(1, 8, 0, 32);  /* sparse-bitmask of int8 with zero points */
}

/* What the lazy open checks at once (headers, the grid) and what it finds
 * only when the values are read (a bitmask marking more values than stored),
 * each naming the file and the tensor. */
Test(compressed_ckpt, lazy_open_reports_bad_values_when_read)
{
    float vals[3] = {1, 2, 3}, out[8];
    uint8_t bm[1] = {0x0f}; /* four bits, three values */
    int64_t shape[2] = {1, 8}, ro[1] = {0};
    int8_t q[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float s0[2] = {0.5f, 0.0f};
    spruce_ckpt *c = NULL;
    {
        part_t p[] = {{"m.shape", "I64", "[2]", shape, 16}, {"m.compressed", "F32", "[3]", vals, 12},
                      {"m.bitmask", "U8", "[1,1]", bm, 1}, {"m.row_offsets", "I64", "[1]", ro, 8}};
        char *dir = write_ckpt(QC_SPARSE("sparse-bitmask"), p, 4);
        const spruce_tensor *t;
        cr_assert_eq(spruce_ckpt_open_lazy(dir, &c), 0, "%s", spruce_errdetail());
        t = spruce_ckpt_find(c, "m.weight");
        cr_assert(t && !t->data && t->shape[0] == 1 && t->shape[1] == 8);
        cr_assert_eq(spruce_tensor_read_f32(t, out), SPRUCE_EFORMAT);
        cr_assert(strstr(spruce_errdetail(), "model.safetensors") &&
                      strstr(spruce_errdetail(), "m.bitmask") && strstr(spruce_errdetail(), "4 values"),
                  "%s", spruce_errdetail());
        spruce_ckpt_close(c);
        rmrf(dir);
        free(dir);
    }
    {
        part_t p[] = {{"m.weight", "I8", "[2,4]", q, 8}, {"m.weight_scale", "F32", "[2,1]", s0, 8}};
        char *dir = write_ckpt(QC_INT("int-quantized", 8, "channel", null, "true"), p, 2);
        c = NULL;
        cr_assert_eq(spruce_ckpt_open_lazy(dir, &c), SPRUCE_EFORMAT);
        cr_assert_null(c);
        cr_assert(strstr(spruce_errdetail(), "model.safetensors: m: weight_scale") && strstr(spruce_errdetail(), "row 1"),
                  "%s", spruce_errdetail());
        rmrf(dir);
        free(dir);
    }
}

/* 2:4 with an asymmetric grid cannot be stored compressed: refused before any
 * block is pruned (exit 2, nothing written). */
Test(compressed_cli, asymmetric_2_4_is_refused_before_pruning)
{
    char fx[1024], cmd[8192], *base, *out;
    const char *bin = need_stories(fx, sizeof fx);
    if (!bin)
        return;
    base = mktmp();
    snprintf(cmd, sizeof cmd, "cd %s && %s prune %s -o c --method magnitude --pattern 2:4 "
             "--wbits 4 --save-format compressed 2>&1; echo \"exit $?\"; ls", base, bin, fx);
    out = run_out(cmd);
    cr_assert(strstr(out, "use --sym") && strstr(out, "exit 2"), "%s", out);
    cr_assert_null(strstr(out, "block 1/"), "pruning started: %s", out);
    cr_assert_null(strstr(out, "\nc\n"), "an output was left: %s", out);
    rmrf(base);
    free(base), free(out);
}

/* A --groupsize that does not divide a layer's columns (stories260k's MLP is
 * 172 wide) is refused before any block is pruned, naming the layer. */
Test(compressed_cli, groupsize_not_dividing_is_refused_before_pruning)
{
    char fx[1024], cmd[8192], *base, *out;
    const char *bin = need_stories(fx, sizeof fx);
    if (!bin)
        return;
    base = mktmp();
    snprintf(cmd, sizeof cmd, "cd %s && %s prune %s -o q --calib %s/calib.u16 --pattern 2:4 "
             "--wbits 4 --groupsize 32 --sym --seqlen 128 --nsamples 8 2>&1; echo \"exit $?\"; ls",
             base, bin, fx, fx);
    out = run_out(cmd);
    cr_assert(strstr(out, "mlp.down_proj (172 columns)") && strstr(out, "divisor"), "%s", out);
    cr_assert_null(strstr(out, "exit 0"), "%s", out);
    cr_assert_null(strstr(out, "block 1/"), "pruning started: %s", out);
    cr_assert_null(strstr(out, "\nq\n"), "an output was left: %s", out);
    rmrf(base);
    free(base), free(out);
}
