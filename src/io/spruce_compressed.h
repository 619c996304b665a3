/* spruce_compressed.h: the tensor codecs of compressed-tensors checkpoints.
 *
 * Follows vllm-project/compressed-tensors 0.14 (the last version with sparse
 * compressors): compressors/sparse_compressors/sparse_bitmask.py,
 * sparse_24_bitmask.py, quantized_compressors/naive_quantized.py (format
 * "int-quantized") and pack_quantized.py (pack_to_int32, unpack_from_int32).
 *
 * W is (rows, cols) row-major throughout.
 *
 * Bitmask (both sparse formats): U8 (rows, ceil(cols / 8)), numpy
 *   packbits(axis=-1, bitorder="little"): column c of row r is bit (c % 8) of
 *   byte r * ceil(cols / 8) + c / 8; 1 = the value is stored.
 * sparse-bitmask:   M.compressed the stored values, 1-D in row-major order
 *   (every element that is not zero; -0.0 counts as zero), M.bitmask,
 *   M.row_offsets I64 (rows) = index in compressed of each row's first value,
 *   M.shape I64 (2) or (2, 1) = (rows, cols).
 * sparse-24-bitmask: M.compressed (rows, cols / 2): exactly two values of
 *   every four consecutive columns, M.bitmask, M.shape I64 (2, 1).
 * Quantized (compressed-tensors' signed convention): q in [-2^(b-1), 2^(b-1) - 1]
 *   (int8), zero point zp likewise, value = (q - zp) * scale with one (scale,
 *   zp) per row and group of g columns.  spruce's grid (spruce_qgrid.h) is
 *   unsigned: q_u = q + 2^(b-1), zero = zp + 2^(b-1).
 * int-quantized:  M.weight I8 (rows, cols), M.weight_scale (rows, cols / g),
 *   M.weight_zero_point I8 (rows, cols / g) only when asymmetric.
 * pack-quantized: M.weight_packed I32 (rows, ceil(cols / (32 / b))): element c
 *   of a row is bits [(c % (32/b)) b, ... + b) of word c / (32/b), stored as
 *   q + 2^(b-1); M.weight_shape I64 (2); M.weight_scale; asymmetric zero points
 *   packed the same way along rows: I32 (ceil(rows / (32/b)), cols / g).
 *
 * Every function returns 0 or a negative SPRUCE_E* code with a message naming
 * `what` (the file and tensor, given by the caller). */
#ifndef SPRUCE_COMPRESSED_H
#define SPRUCE_COMPRESSED_H

#include <stddef.h>
#include <stdint.h>

#include "spruce_error.h"
#include "spruce_qgrid.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes of a bitmask: rows * ceil(cols / 8). */
size_t spruce_ct_bitmask_bytes(int64_t rows, int64_t cols);

/* Elements of es bytes (1, 2 or 4); float elements (is_float) are zero when
 * every bit but the sign is clear, integers when every bit is. */

/* Count the stored values of a sparse-bitmask encoding of dense. */
int64_t spruce_ct_bitmask_count(const void *dense, int es, int is_float, int64_t rows, int64_t cols);
/* sparse-bitmask: values (count elements), bitmask, row_offsets (rows). */
void spruce_ct_bitmask_encode(const void *dense, int es, int is_float, int64_t rows, int64_t cols,
                              void *values, uint8_t *bitmask, int64_t *row_offsets);
/* sparse-24-bitmask: values (rows * cols / 2), bitmask.  Each group of four
 * stores its non-zeros and then its first zeros up to two; a group with more
 * than two non-zeros is SPRUCE_EPATTERN naming row and column; cols % 4 != 0
 * is SPRUCE_ESHAPE. */
int spruce_ct_24_encode(const void *dense, int es, int is_float, int64_t rows, int64_t cols,
                        void *values, uint8_t *bitmask, const char *what);
/* Both formats: dense = zeros with values scattered at the bitmask's set
 * bits in row-major order.  nvalues must equal the number of set bits (else
 * SPRUCE_EFORMAT with both counts); bits beyond cols must be clear. */
int spruce_ct_bitmask_decode(const void *values, int64_t nvalues, const uint8_t *bitmask, int es,
                             int64_t rows, int64_t cols, void *dense, const char *what);

/* w (rows, cols) on grid g to signed levels q (rows, cols) and, when zp is
 * not NULL, signed zero points (rows, cols / groupsize).  Zeros (pruned) are
 * the level of 0: q = zp.  A weight off the grid by more than a hundredth of
 * its step, or a scale that is not finite and positive, is an error. */
int spruce_ct_quantize(const float *w, const spruce_qgrid *g, int8_t *q, int8_t *zp,
                       const char *what);
/* w = (q - zp) * scale, zp NULL for symmetric; scale and zp (rows, cols / gs).
 * A scale that is 0, negative or not finite is SPRUCE_EFORMAT naming its row
 * and group; q or zp outside [-2^(bits-1), 2^(bits-1) - 1] likewise. */
int spruce_ct_dequantize(const int8_t *q, const float *scale, const int8_t *zp, int bits,
                         int64_t rows, int64_t cols, int64_t groupsize, float *w, const char *what);

/* Words of a packed row: ceil(cols / (32 / bits)). */
int64_t spruce_ct_packed_cols(int64_t cols, int bits);
/* pack_to_int32 along rows (packed_dim 1): out (rows, packed_cols). */
void spruce_ct_pack(const int8_t *q, int64_t rows, int64_t cols, int bits, int32_t *out);
void spruce_ct_unpack(const int32_t *packed, int64_t rows, int64_t cols, int bits, int8_t *q);
/* packed_dim 0 (asymmetric zero points): out (ceil(rows / (32/b)), cols). */
void spruce_ct_pack_dim0(const int8_t *q, int64_t rows, int64_t cols, int bits, int32_t *out);
void spruce_ct_unpack_dim0(const int32_t *packed, int64_t rows, int64_t cols, int bits, int8_t *q);

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_COMPRESSED_H */
