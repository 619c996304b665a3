/* pairs_internal.h: the pair layout of 2:4 matrices (and 1:4), every value
 * type (float32, bf16, int8, int4), shared by pack.c, qsparse.c, pairs.c and
 * the kernels.  Not installed.
 *
 * Rows go in pairs (2p, 2p + 1); a row of cols columns is nb = ceil(cols / 8)
 * blocks of 8 columns, each two groups of 4.  Block b of pair p holds 8 values
 * (two slots per group and row) in lanes
 *   lane = 4 g + 2 r + s     g: group in the block (columns 8b + 4g ..),
 *                            r: row in the pair, s: slot (0, 1),
 * and a 16-bit word, meta[p nb + b], whose bits 2 lane, 2 lane + 1 are the
 * slot's position in its group (0..3).  A vector of 8 columns of x in the
 * block's order has group g in its half g, so
 *   x gathered = vpermilps(x[8b .. 8b + 8), meta >> (0, 2, .., 14))
 * (the in-lane permute reads the two low bits of each index): one permute per
 * 8 values, no table, no gather, and the 8 products of a block belong to two
 * rows (row 2p: lanes 0, 1, 4, 5; row 2p + 1: lanes 2, 3, 6, 7).
 * A slot a group does not fill (1:4, a last group narrower than 2) holds the
 * code that dequantizes to 0, at position 0.  The last pair of an odd number
 * of rows has a second row of zeros, never stored; columns past cols in the
 * last block are zeros too, and the kernels read x only up to cols.
 * Values: float32, bf16 (2 bytes), int8 (1 byte) in lane order; int4 the 8
 * nibbles of a 32-bit little-endian word, lane k in bits 4k .. 4k + 3, each
 * the code u XOR 8 (whose sign extension is u - 8: the symmetric grid's
 * value with no subtraction).  The
 * scales and zero points are spruce_qmatrix.h's (int8 per row, int4 per row
 * and group of groupsize dense columns, a multiple of 8). */
#ifndef SPRUCE_PAIRS_INTERNAL_H
#define SPRUCE_PAIRS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "spruce_qmatrix.h"

/* Bytes of count values of a value type (SPRUCE_DT_*): int4 two to a byte,
 * an odd count rounded up.  Shared by the packers and the planner. */
static inline size_t spruce__value_bytes(int dtype, int64_t count)
{
    return dtype == SPRUCE_DT_F32    ? 4 * (size_t)count
           : dtype == SPRUCE_DT_BF16 ? 2 * (size_t)count
           : dtype == SPRUCE_DT_INT8 ? (size_t)count
                                     : ((size_t)count + 1) / 2;
}

/* Bytes past the end of the values and words past the end of meta, so that
 * a kernel may load two blocks' worth at the last block. */
#define SPRUCE__PAIRS_PAD 64

struct spruce__pairs {
    int dtype;              /* SPRUCE_DT_F32, _BF16, _INT8, _INT4 */
    int rows, cols, n;      /* n: slots kept per group (1 or 2) */
    int nb, npairs;         /* ceil(cols / 8), ceil(rows / 2) */
    int groupsize, ngroups; /* int4: columns per scale, ceil(cols / groupsize); else 0, 1 */
    int nthreads, nsplit;
    int *split;             /* (nsplit + 1) pair boundaries */
    uint8_t *val;           /* npairs nb 8 values + SPRUCE__PAIRS_PAD bytes */
    uint16_t *meta;         /* npairs nb + SPRUCE__PAIRS_PAD words */
    float *scale;           /* int8 (rows), int4 (rows, ngroups); NULL otherwise */
    uint8_t *zero;          /* NULL or like scale: int8 as int8_t, int4 0..15 */
};

/* A pair layout of that shape, its values the zero code (float32, bf16: 0;
 * scale and zero point copied from Q for int8 and int4, whose zero codes are
 * per row: see spruce__pairs_put), meta 0.  SPRUCE_EUNSUPPORTED for an int4
 * group size that is not a multiple of 8. */
int spruce__pairs_new(int dtype, int rows, int cols, int n, const spruce_qmatrix *Q, int nthreads,
                      struct spruce__pairs **out);
void spruce__pairs_free(struct spruce__pairs *P);
/* Store code c (float32: its bits; bf16: its bits; int8: the byte; int4: the
 * nibble) in slot s of the group of row i holding column j, at position j % 4. */
void spruce__pairs_put(struct spruce__pairs *P, int i, int j, int s, uint32_t c);
/* Store every row of a matrix of P's shape, rows in parallel (each pair by
 * one thread: its rows share the words of positions): the slots of each group
 * of 4 are those spruce__nm_slots keeps (weights where mask != 0, or W != 0
 * without a mask, topped up with the lowest pruned positions), the codes
 * code(ctx, i, j, kept) gives (kept 0: the code that dequantizes to 0 at
 * (i, j)); a slot no position fills holds code(ctx, i, group start, 0). */
typedef uint32_t (*spruce__pairs_code)(const void *ctx, int i, int j, int kept);
void spruce__pairs_fill(struct spruce__pairs *P, const float *W, const uint8_t *mask,
                        spruce__pairs_code code, const void *ctx);
/* After every row is stored: the pair ranges of the threads. */
int spruce__pairs_finish(struct spruce__pairs *P);

/* The value in lane l of block b of pair p, dequantized (row 2p + (l >> 1 & 1)):
 * the definition every kernel follows. */
float spruce__pairs_value(const struct spruce__pairs *P, int p, int b, int l);
/* W (rows, cols) += the dequantized weights. */
void spruce__pairs_unpack(const struct spruce__pairs *P, float *W);
size_t spruce__pairs_bytes(const struct spruce__pairs *P); /* what a product streams */
size_t spruce__pairs_value_bytes(const struct spruce__pairs *P); /* of those, the values */
int64_t spruce__pairs_slots(const struct spruce__pairs *P); /* slots of the real rows */

/* Y = A X (X (cols, batch), Y (rows, batch) row-major) with the kernels of isa. */
int spruce__pairs_mul(const struct spruce__pairs *P, int isa, const float *X, int batch, float *Y);

/* For the kernels: what a kernel's widening subtracts in row i, group g
 * (int8 z, int4 z - 8, since a nibble is stored as u ^ 8; 0 without zero
 * points, and in the second row of a last odd pair); the scale of row i,
 * group g (0 in that second row); how many blocks of 8 columns hold a line
 * of 64 bytes of values of a type. */
static inline int spruce__pairs_kzero(const struct spruce__pairs *P, int i, int g)
{
    if (i >= P->rows || !P->zero)
        return 0;
    if (P->dtype == SPRUCE_DT_INT8)
        return (int)(int8_t)P->zero[i];
    return (int)P->zero[(size_t)i * P->ngroups + g] - 8;
}

static inline float spruce__pairs_kscale(const struct spruce__pairs *P, int i, int g)
{
    return i < P->rows ? P->scale[(size_t)i * P->ngroups + g] : 0.0f;
}

static inline int spruce__pairs_line_blocks(int dtype)
{
    return dtype == SPRUCE_DT_F32    ? 2
           : dtype == SPRUCE_DT_BF16 ? 4
           : dtype == SPRUCE_DT_INT8 ? 8
                                     : 16;
}

/* Pairs [p0, p1) of Y = A X. */
typedef void (*spruce__pkernel)(const struct spruce__pairs *P, const float *X, int batch, float *Y,
                                int p0, int p1);
void pairs_spmm_scalar(const struct spruce__pairs *P, const float *X, int batch, float *Y, int p0,
                       int p1);
/* AVX2+FMA: batch 1 per value type, batch > 1 for all. */
void pairs_spmv_f32_avx2(const struct spruce__pairs *P, const float *X, int batch, float *Y, int p0, int p1);
void pairs_spmv_bf16_avx2(const struct spruce__pairs *P, const float *X, int batch, float *Y, int p0, int p1);
void pairs_spmv_int8_avx2(const struct spruce__pairs *P, const float *X, int batch, float *Y, int p0, int p1);
void pairs_spmv_int4_avx2(const struct spruce__pairs *P, const float *X, int batch, float *Y, int p0, int p1);
void pairs_spmm_avx2(const struct spruce__pairs *P, const float *X, int batch, float *Y, int p0, int p1);
/* AVX-512: batch 1 per value type (batch > 1 runs the AVX2 kernel). */
void pairs_spmv_f32_avx512(const struct spruce__pairs *P, const float *X, int batch, float *Y, int p0, int p1);
void pairs_spmv_bf16_avx512(const struct spruce__pairs *P, const float *X, int batch, float *Y, int p0, int p1);
void pairs_spmv_int8_avx512(const struct spruce__pairs *P, const float *X, int batch, float *Y, int p0, int p1);
void pairs_spmv_int4_avx512(const struct spruce__pairs *P, const float *X, int batch, float *Y, int p0, int p1);

#endif
