/* compressed.c: the tensor codecs of compressed-tensors checkpoints.
 *
 * Follows vllm-project/compressed-tensors 0.14: sparse_bitmask.py
 * (bitmask_compress, pack_bitmasks: numpy packbits bitorder "little"),
 * sparse_24_bitmask.py (sparse24_bitmask_compress), naive_quantized.py and
 * pack_quantized.py (pack_to_int32 / unpack_from_int32 with
 * pack_factor = 32 // num_bits and the offset 2^(num_bits-1)).  The layouts
 * are in spruce_compressed.h. */
#include <math.h>
#include <string.h>

#include "ckpt_internal.h"
#include "spruce_compressed.h"

size_t spruce_ct_bitmask_bytes(int64_t rows, int64_t cols)
{
    return (size_t)rows * (size_t)((cols + 7) / 8);
}

/* Element i of p (es bytes) is not zero; floats ignore the sign bit. */
static inline __attribute__((always_inline)) int nonzero(const uint8_t *p, int es, int is_float)
{
    if (es == 4) {
        uint32_t u;
        memcpy(&u, p, 4);
        return (u & (is_float ? 0x7fffffffu : 0xffffffffu)) != 0;
    }
    if (es == 2) {
        uint16_t u;
        memcpy(&u, p, 2);
        return (u & (is_float ? 0x7fffu : 0xffffu)) != 0;
    }
    if (es == 1)
        return (p[0] & (is_float ? 0x7f : 0xff)) != 0;
    {
    uint8_t acc = is_float ? (uint8_t)(p[es - 1] & 0x7f) : p[es - 1];
    int b;
    for (b = 0; b + 1 < es; b++)
        acc |= p[b];
    return acc != 0;
    }
}

static inline __attribute__((always_inline)) int64_t
count_es(const uint8_t *p, int es, int is_float, int64_t numel)
{
    int64_t i, n = 0;
    for (i = 0; i < numel; i++)
        n += nonzero(p + (size_t)i * es, es, is_float);
    return n;
}

int64_t spruce_ct_bitmask_count(const void *dense, int es, int is_float, int64_t rows, int64_t cols)
{
    if (es == 4)
        return count_es(dense, 4, is_float, rows * cols);
    if (es == 2)
        return count_es(dense, 2, is_float, rows * cols);
    return count_es(dense, es, is_float, rows * cols);
}

/* values <- the non-zeros in row-major order; bit c%8 of byte c/8 per row.
 * Eight columns at a time: their mask first, then a copy per set bit. */
static inline __attribute__((always_inline)) void
bitmask_encode_es(const void *dense, int es, int is_float, int64_t rows, int64_t cols,
                  void *values, uint8_t *bitmask, int64_t *row_offsets)
{
    const uint8_t *p = dense;
    uint8_t *v = values;
    size_t bpr = (size_t)((cols + 7) / 8);
    int64_t r, c, n = 0;
    for (r = 0; r < rows; r++) {
        row_offsets[r] = n;
        for (c = 0; c < cols; c += 8) {
            const uint8_t *g = p + (size_t)(r * cols + c) * es;
            const int w = cols - c < 8 ? (int)(cols - c) : 8;
            unsigned m = 0;
            int k;
            for (k = 0; k < w; k++)
                m |= (unsigned)nonzero(g + (size_t)k * es, es, is_float) << k;
            bitmask[r * bpr + (size_t)c / 8] = (uint8_t)m;
            while (m) {
                k = __builtin_ctz(m);
                memcpy(v + (size_t)n * es, g + (size_t)k * es, (size_t)es);
                n++;
                m &= m - 1;
            }
        }
    }
}

void spruce_ct_bitmask_encode(const void *dense, int es, int is_float, int64_t rows, int64_t cols,
                              void *values, uint8_t *bitmask, int64_t *row_offsets)
{
    /* the element size as a constant, so that the loop compiles to word tests */
    if (es == 4)
        bitmask_encode_es(dense, 4, is_float, rows, cols, values, bitmask, row_offsets);
    else if (es == 2)
        bitmask_encode_es(dense, 2, is_float, rows, cols, values, bitmask, row_offsets);
    else
        bitmask_encode_es(dense, es, is_float, rows, cols, values, bitmask, row_offsets);
}

/* Each group of four keeps its non-zeros, then its first zeros, two in all:
 * for each 4-bit mask of non-zeros (at most two set), the kept positions. */
static const struct {
    uint8_t bits, a, b; /* the kept 4-bit mask and its two positions, ascending */
} keep24[16] = {
    {0x3, 0, 1}, {0x3, 0, 1}, {0x3, 0, 1}, {0x3, 0, 1}, /* 0000 0001 0010 0011 */
    {0x5, 0, 2}, {0x5, 0, 2}, {0x6, 1, 2}, {0, 0, 0},   /* 0100 0101 0110 0111 */
    {0x9, 0, 3}, {0x9, 0, 3}, {0xa, 1, 3}, {0, 0, 0},   /* 1000 1001 1010 1011 */
    {0xc, 2, 3}, {0, 0, 0},   {0, 0, 0},   {0, 0, 0},   /* 1100 1101 1110 1111 */
};

static inline __attribute__((always_inline)) void
copy_or_zero(uint8_t *dst, const uint8_t *src, int es, int nz)
{
    if (nz)
        memcpy(dst, src, (size_t)es);
    else
        memset(dst, 0, (size_t)es); /* +0.0 */
}

/* One row of the 2:4 encoding: 0, or 1 + the first column of a group of
 * more than two non-zeros. */
static inline __attribute__((always_inline)) int64_t
encode24_row(const uint8_t *row, int es, int is_float, int64_t cols, uint8_t *v, uint8_t *bm)
{
    int64_t c;
    memset(bm, 0, (size_t)((cols + 7) / 8));
    for (c = 0; c < cols; c += 4) {
        const uint8_t *g = row + (size_t)c * es;
        const unsigned m = (unsigned)nonzero(g, es, is_float) |
                           (unsigned)nonzero(g + es, es, is_float) << 1 |
                           (unsigned)nonzero(g + 2 * es, es, is_float) << 2 |
                           (unsigned)nonzero(g + 3 * es, es, is_float) << 3;
        if (!keep24[m].bits)
            return 1 + c;
        bm[c / 8] |= (uint8_t)(keep24[m].bits << (c % 8));
        copy_or_zero(v, g + (size_t)keep24[m].a * es, es, m >> keep24[m].a & 1);
        copy_or_zero(v + es, g + (size_t)keep24[m].b * es, es, m >> keep24[m].b & 1);
        v += 2 * (size_t)es;
    }
    return 0;
}

/* The same for elements of 16 or 8 bits, a group of four as one word: the
 * lanes' non-zero bits found together (SWAR), the two kept lanes shifted
 * out and masked to +0 where they are zeros.  Little-endian lanes: lane k is
 * element k. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SPRUCE_SWAR24 1
/* Bit k: lane k of x (lanes of w bits, top bit h) is not zero; floats
 * ignore the sign bit. */
static inline uint64_t lanes_nonzero(uint64_t x, uint64_t low, uint64_t top, int is_float)
{
    const uint64_t t = is_float ? x & low : x;
    return (((t & low) + low) | t) & top; /* a lane's top bit: any of its bits */
}

static inline __attribute__((always_inline)) int64_t
encode24_row_16(const uint8_t *row, int is_float, int64_t cols, uint8_t *v, uint8_t *bm)
{
    int64_t c;
    for (c = 0; c < cols; c += 4) {
        uint64_t g, nz, x;
        uint32_t out;
        unsigned m;
        memcpy(&g, row + 2 * c, 8);
        nz = lanes_nonzero(g, 0x7fff7fff7fff7fffull, 0x8000800080008000ull, is_float) >> 15;
        m = (unsigned)((nz * 0x0000200040008001ull) >> 45 & 0xf); /* bits 0, 16, 32, 48 */
        if (!keep24[m].bits)
            return 1 + c;
        x = g & nz * 0xffff; /* the zeros' lanes cleared: +0 */
        out = (uint32_t)(x >> (16 * keep24[m].a) & 0xffff) |
              (uint32_t)(x >> (16 * keep24[m].b) & 0xffff) << 16;
        memcpy(v + c, &out, 4); /* two values of 2 bytes a group */
        if (c % 8)
            bm[c / 8] |= (uint8_t)(keep24[m].bits << 4);
        else
            bm[c / 8] = keep24[m].bits;
    }
    return 0;
}

static inline __attribute__((always_inline)) int64_t
encode24_row_8(const uint8_t *row, int is_float, int64_t cols, uint8_t *v, uint8_t *bm)
{
    int64_t c;
    for (c = 0; c < cols; c += 4) {
        uint32_t g, x;
        uint16_t out;
        uint64_t nz;
        unsigned m;
        memcpy(&g, row + c, 4);
        nz = lanes_nonzero(g, 0x7f7f7f7full, 0x80808080ull, is_float) >> 7;
        m = (unsigned)((nz * 0x00204081ull) >> 21 & 0xf); /* bits 0, 8, 16, 24 */
        if (!keep24[m].bits)
            return 1 + c;
        x = g & (uint32_t)(nz * 0xff);
        out = (uint16_t)((x >> (8 * keep24[m].a) & 0xff) | (x >> (8 * keep24[m].b) & 0xff) << 8);
        memcpy(v + c / 2, &out, 2); /* two values of 1 byte a group */
        if (c % 8)
            bm[c / 8] |= (uint8_t)(keep24[m].bits << 4);
        else
            bm[c / 8] = keep24[m].bits;
    }
    return 0;
}
#endif

int64_t spruce__ct_24_row(const void *row, int es, int is_float, int64_t cols, void *values,
                          uint8_t *bitmask)
{
#ifdef SPRUCE_SWAR24
    if (es == 2)
        return is_float ? encode24_row_16(row, 1, cols, values, bitmask)
                        : encode24_row_16(row, 0, cols, values, bitmask);
    if (es == 1)
        return is_float ? encode24_row_8(row, 1, cols, values, bitmask)
                        : encode24_row_8(row, 0, cols, values, bitmask);
#endif
    /* the element size as a constant: the copies compile to moves, not calls */
    if (es == 4)
        return encode24_row(row, 4, is_float, cols, values, bitmask);
    if (es == 2)
        return encode24_row(row, 2, is_float, cols, values, bitmask);
    if (es == 1)
        return encode24_row(row, 1, is_float, cols, values, bitmask);
    return encode24_row(row, es, is_float, cols, values, bitmask);
}

int spruce__ct_24_error(const void *row, int es, int is_float, int64_t r, int64_t cols,
                        const char *what)
{
    const uint8_t *p = row;
    int64_t c, k;
    for (c = 0; c + 3 < cols; c += 4) {
        int nz = 0;
        for (k = 0; k < 4; k++)
            nz += nonzero(p + (size_t)(c + k) * es, es, is_float);
        if (nz > 2)
            return spruce__seterr(SPRUCE_EPATTERN, "%s: row %lld, columns %lld..%lld: %d "
                                  "non-zeros in a group of 4, expected at most 2 (2:4)", what,
                                  (long long)r, (long long)c, (long long)c + 3, nz);
    }
    return 0;
}

/* Rows in parallel: row r's values start at r cols / 2, its bits at r bpr. */
int spruce_ct_24_encode(const void *dense, int es, int is_float, int64_t rows, int64_t cols,
                        void *values, uint8_t *bitmask, const char *what)
{
    const uint8_t *p = dense;
    uint8_t *v = values;
    const size_t bpr = (size_t)((cols + 7) / 8);
    int64_t r, first_bad = rows;
    if (cols % 4)
        return spruce__seterr(SPRUCE_ESHAPE, "%s: sparse-24-bitmask needs columns divisible by 4, "
                              "found %lld", what, (long long)cols);
#pragma omp parallel for schedule(static) reduction(min:first_bad)
    for (r = 0; r < rows; r++)
        if (spruce__ct_24_row(p + (size_t)(r * cols) * es, es, is_float, cols,
                              v + (size_t)(r * (cols / 2)) * es, bitmask + (size_t)r * bpr) &&
            r < first_bad)
            first_bad = r;
    if (first_bad < rows)
        return spruce__ct_24_error(p + (size_t)(first_bad * cols) * es, es, is_float, first_bad,
                                   cols, what);
    return 0;
}

/* The set bits of n bytes. */
static int64_t popcount_bytes(const uint8_t *b, size_t n)
{
    int64_t c = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        c += __builtin_popcountll(w);
    }
    for (; i < n; i++)
        c += __builtin_popcount(b[i]);
    return c;
}

/* The values of one row into d (its cols elements of es bytes, zeroed), in
 * the order of the row's set bits: one branch a set bit, not a column (es a
 * constant where inlined). */
static inline __attribute__((always_inline)) const uint8_t *
decode_row(const uint8_t *bits, size_t bpr, const uint8_t *v, uint8_t *d, const int es)
{
    size_t i;
    for (i = 0; i < bpr; i++) {
        unsigned m = bits[i];
        for (; m; m &= m - 1, v += es)
            memcpy(d + (8 * i + (size_t)__builtin_ctz(m)) * (size_t)es, v, (size_t)es);
    }
    return v;
}

int spruce_ct_bitmask_decode(const void *values, int64_t nvalues, const uint8_t *bitmask, int es,
                             int64_t rows, int64_t cols, void *dense, const char *what)
{
    const uint8_t *v = values;
    uint8_t *d = dense;
    size_t bpr = (size_t)((cols + 7) / 8);
    uint8_t tail = cols % 8 ? (uint8_t)(0xffu << (cols % 8)) : 0;
    int64_t r, set = 0;
    for (r = 0; r < rows; r++) {
        if (tail && (bitmask[r * bpr + bpr - 1] & tail))
            return spruce__seterr(SPRUCE_EFORMAT, "%s: bitmask row %lld has bits set beyond the "
                                  "%lld columns", what, (long long)r, (long long)cols);
        set += popcount_bytes(bitmask + r * bpr, bpr);
    }
    if (set != nvalues)
        return spruce__seterr(SPRUCE_EFORMAT, "%s: the bitmask marks %lld values, the compressed "
                              "values hold %lld", what, (long long)set, (long long)nvalues);
    memset(d, 0, (size_t)rows * (size_t)cols * (size_t)es);
    for (r = 0; r < rows; r++) {
        const uint8_t *bits = bitmask + r * bpr;
        uint8_t *row = d + (size_t)(r * cols) * (size_t)es;
        switch (es) {
        case 1: v = decode_row(bits, bpr, v, row, 1); break;
        case 2: v = decode_row(bits, bpr, v, row, 2); break;
        case 4: v = decode_row(bits, bpr, v, row, 4); break;
        default: v = decode_row(bits, bpr, v, row, es);
        }
    }
    return 0;
}

/* ---- quantization --------------------------------------------------------- */

/* q_u = clamp(round(w / scale) + zero, 0, 2^b - 1); q = q_u - 2^(b-1). */
/* The level of x on the grid (inverse scale inv, zero z, levels 0..maxq); a
 * zero weight is the zero point.  For a weight on the grid x * inv is an
 * integer to within a few ulps, so the product rounds to the level the
 * division would; a weight off the grid fails the check wherever it
 * rounds. */
/* rintf(v) wherever the result is clamped the same: |v| < 2^22 puts v + C
 * in [2^23, 2^24), whose spacing is 1, so the sum rounds v to the nearest
 * integer, ties to even (C is even), and the difference is exact; larger |v|
 * land beyond every level either way.  (-0.0 comes back +0.0; plus z it is
 * the same.)  Unlike rintf it vectorizes without SSE4.1, and gives the same
 * level for every float v (checked exhaustively). */
static inline float rint_level(float v)
{
    const float C = 12582912.0f; /* 1.5 * 2^23 */
    return (v + C) - C;
}

static inline float level_of(float x, float inv, float z, float maxq)
{
    float l = x == 0.0f ? z : rint_level(x * inv) + z;
    l = l >= 0.0f ? l : 0.0f; /* a NaN too: every level converts to an int (NaN is off the grid) */
    return l <= maxq ? l : maxq;
}

/* Row r of spruce_ct_quantize into qr (the row's cols levels): 0, or (with
 * what) the error of its first bad group or column; without what, 1 at the
 * first. */
int spruce__ct_quantize_row(const float *w, const spruce_qgrid *g, int64_t r, int8_t *qr,
                            int8_t *zp, int64_t *zeros, const char *what)
{
    int64_t nz = 0;
    const int off = 1 << (g->bits - 1), maxq = (1 << g->bits) - 1;
    const int64_t ng = g->cols / g->groupsize;
    int64_t j, c;
    for (j = 0; j < ng; j++) { /* a group: its grid checked once, its columns in one pass */
        const int64_t k = r * ng + j, c0 = j * g->groupsize, c1 = c0 + g->groupsize;
        const float s = g->scale[k], z = g->zero[k], *x = w + r * g->cols, inv = 1.0f / s;
        const float fmaxq = (float)maxq;
        int off_grid = 0;
        if (!(s > 0.0f) || !isfinite(s) || z != rintf(z) || z < 0 || z > maxq)
            return !what ? 1 : spruce__seterr(SPRUCE_EINVAL, "%s: row %lld, group %lld: expected "
                                              "a finite positive scale and an integer zero in "
                                              "[0, %d], found %g and %g", what, (long long)r,
                                              (long long)j, maxq, (double)s, (double)z);
#pragma omp simd reduction(|:off_grid) reduction(+:nz)
        for (c = c0; c < c1; c++) { /* a weight that is not finite is off every grid */
            const float l = level_of(x[c], inv, z, fmaxq);
            off_grid |= !(fabsf(s * (l - z) - x[c]) <= 0.01f * s);
            nz += x[c] == 0.0f;
            qr[c] = (int8_t)((int)l - off);
        }
        if (off_grid && !what)
            return 1;
        for (c = c0; off_grid && c < c1; c++) /* only to name the first */
            if (!(fabsf(s * (level_of(x[c], inv, z, fmaxq) - z) - x[c]) <= 0.01f * s))
                return spruce__seterr(SPRUCE_EINVAL, "%s: row %lld, column %lld: %g is not on "
                                      "the grid (scale %g, zero %g)", what, (long long)r,
                                      (long long)c, (double)x[c], (double)s, (double)z);
        if (zp)
            zp[k] = (int8_t)((int)z - off);
    }
    if (zeros)
        *zeros = nz;
    return 0;
}

int spruce_ct_quantize(const float *w, const spruce_qgrid *g, int8_t *q, int8_t *zp,
                       const char *what)
{
    int64_t r, first_bad;
    if (!g || g->bits < 2 || g->bits > 8 || g->groupsize <= 0 || g->cols % g->groupsize)
        return spruce__seterr(SPRUCE_EINVAL, "%s: expected a grid of 2 to 8 bits whose group "
                              "divides the columns", what);
    first_bad = g->rows;
#pragma omp parallel for schedule(static) reduction(min:first_bad)
    for (r = 0; r < g->rows; r++) /* rows in parallel; the first bad one named after */
        if (spruce__ct_quantize_row(w, g, r, q + r * g->cols, zp, NULL, NULL) && r < first_bad)
            first_bad = r;
    return first_bad < g->rows ? spruce__ct_quantize_row(w, g, first_bad, q + first_bad * g->cols,
                                                         zp, NULL, what ? what : "")
                               : 0;
}

/* w = (q - zp) * scale. */
int spruce_ct_dequantize(const int8_t *q, const float *scale, const int8_t *zp, int bits,
                         int64_t rows, int64_t cols, int64_t groupsize, float *w, const char *what)
{
    int64_t ng = cols / groupsize, r, c;
    int lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
    for (r = 0; r < rows; r++)
        for (c = 0; c < ng; c++) {
            float s = scale[r * ng + c];
            if (!(s > 0.0f) || !isfinite(s))
                return spruce__seterr(SPRUCE_EFORMAT, "%s: weight_scale at row %lld, group %lld "
                                      "is %g, expected finite and positive", what, (long long)r,
                                      (long long)c, (double)s);
            if (zp && (zp[r * ng + c] < lo || zp[r * ng + c] > hi))
                return spruce__seterr(SPRUCE_EFORMAT, "%s: weight_zero_point at row %lld, group "
                                      "%lld is %d, outside [%d, %d] of %d bits", what,
                                      (long long)r, (long long)c, zp[r * ng + c], lo, hi, bits);
        }
    for (r = 0; r < rows; r++) {
        const int8_t *qr = q + r * cols;
        int bad = 0;
        for (c = 0; c < cols; c++) /* no branch a weight: the row checked as a whole */
            bad |= qr[c] < lo || qr[c] > hi;
        if (bad)
            for (c = 0; c < cols; c++)
                if (qr[c] < lo || qr[c] > hi)
                    return spruce__seterr(SPRUCE_EFORMAT, "%s: weight at row %lld, column %lld "
                                          "is %d, outside [%d, %d] of %d bits", what,
                                          (long long)r, (long long)c, qr[c], lo, hi, bits);
        for (c = 0; c < cols; c += groupsize) { /* a group's scale and zero point at a time */
            const int64_t k = r * ng + c / groupsize;
            const int64_t e = c + groupsize < cols ? c + groupsize : cols;
            const float sc = scale[k];
            const int z = zp ? zp[k] : 0;
            int64_t j;
            for (j = c; j < e; j++)
                w[r * cols + j] = (float)(qr[j] - z) * sc;
        }
    }
    return 0;
}

/* ---- packing into int32 ----------------------------------------------------- */

int64_t spruce_ct_packed_cols(int64_t cols, int bits)
{
    int64_t pf = 32 / bits;
    return (cols + pf - 1) / pf;
}

/* Element (r, c) of q along the packed dimension k (c for dim 1, r for dim 0)
 * is word k / pf of its column or row, bits (k % pf) * b upward, stored as
 * q + 2^(b-1); pf = 32 / b.  Dim 1: words (rows, ceil(cols / pf)); dim 0:
 * words (ceil(rows / pf), cols). */
static int64_t word_of(int64_t r, int64_t c, int64_t cols, int64_t pf, int64_t pc, int dim)
{
    return dim ? r * pc + c / pf : (r / pf) * cols + c;
}

static void pack_dim(const int8_t *q, int64_t rows, int64_t cols, int bits, int dim, int32_t *out)
{
    int64_t pf = 32 / bits, pc = spruce_ct_packed_cols(cols, bits), r, c;
    int64_t nw = dim ? rows * pc : spruce_ct_packed_cols(rows, bits) * cols;
    int off = 1 << (bits - 1);
    memset(out, 0, (size_t)nw * sizeof *out);
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c++) {
            uint32_t u = (uint32_t)(q[r * cols + c] + off);
            uint32_t *wd = (uint32_t *)&out[word_of(r, c, cols, pf, pc, dim)];
            *wd |= u << (((dim ? c : r) % pf) * bits);
        }
}

static void unpack_dim(const int32_t *packed, int64_t rows, int64_t cols, int bits, int dim,
                       int8_t *q)
{
    int64_t pf = 32 / bits, pc = spruce_ct_packed_cols(cols, bits), r, c;
    uint32_t mask = (1u << bits) - 1;
    int off = 1 << (bits - 1);
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c++) {
            uint32_t wd;
            /* the file may not align it */
            memcpy(&wd, packed + word_of(r, c, cols, pf, pc, dim), sizeof wd);
            q[r * cols + c] = (int8_t)((int)(wd >> (((dim ? c : r) % pf) * bits) & mask) - off);
        }
}

void spruce_ct_pack(const int8_t *q, int64_t rows, int64_t cols, int bits, int32_t *out)
{
    pack_dim(q, rows, cols, bits, 1, out);
}

void spruce_ct_unpack(const int32_t *packed, int64_t rows, int64_t cols, int bits, int8_t *q)
{
    unpack_dim(packed, rows, cols, bits, 1, q);
}

void spruce_ct_pack_dim0(const int8_t *q, int64_t rows, int64_t cols, int bits, int32_t *out)
{
    pack_dim(q, rows, cols, bits, 0, out);
}

void spruce_ct_unpack_dim0(const int32_t *packed, int64_t rows, int64_t cols, int bits, int8_t *q)
{
    unpack_dim(packed, rows, cols, bits, 0, q);
}
