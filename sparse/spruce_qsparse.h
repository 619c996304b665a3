/* spruce_qsparse.h: bitmask and N:M matrices whose kept values are bf16, int8
 * or int4, for weight-only products in float32 (float32 activations, float32
 * sums).
 *
 * The layouts are those of spruce_sparse.h with other values:
 *   BITMASK  one bit per weight (row-major, 64 columns per word) and the kept
 *            values of each row packed in column order.
 *   NM       the same bits and values, with exactly min(N, group width) slots
 *            per group of M columns (a group keeping fewer is topped up with
 *            its lowest pruned positions, holding the value that dequantizes
 *            to 0), so the kernels know every offset without counting bits.
 * and the values and their dequantization are those of spruce_qmatrix.h:
 *   bf16  w = bf16 value                            (2 bytes per kept value)
 *   int8  w = (q - z_i) s_i, per row i              (1 byte)
 *   int4  w = (u - z_ig) s_ig, g = j / groupsize    (half a byte, two per byte
 *         in the order of spruce_qmatrix.h: value p of a row in byte p / 2,
 *         bits 4 (p % 2) upward; each row starts on a byte)
 * The int4 groups run over the DENSE column index j, as a checkpoint's
 * scales do, whatever is pruned; the scales and zero points are kept for every
 * group.  Bytes per weight at 50% (bitmask) or 2:4: bf16 1.125, int8 0.625,
 * int4 0.375 (plus the scales).
 *
 * Y = A X with X (cols, batch) and Y (rows, batch) row-major, as for
 * spruce_sparse_mul.  Kernels: scalar (the oracle), AVX2+FMA and AVX-512
 * (expand instructions driven by the bitmask, no gathers), chosen as
 * spruce_sparse_isa() says (SPRUCE_ISA forces one).  Work is split over
 * OpenMP threads by rows, balanced by the stored values; matrices wider than
 * 8192 columns are stored as column blocks, so that a block's part of x stays
 * in the L1 cache.  No product allocates. */
#ifndef SPRUCE_QSPARSE_H
#define SPRUCE_QSPARSE_H

#include <stddef.h>
#include <stdint.h>

#include "spruce_error.h"
#include "spruce_qmatrix.h"
#include "spruce_sparse.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct spruce_qsparse spruce_qsparse;

/* Pack the quantized matrix Q (checked with spruce_qmatrix_check) keeping the
 * weights where mask (rows, cols) != 0; without mask, where the weight
 * dequantizes to a non-zero (bf16: not +-0; int8 and int4: q != z).
 * opts->format is SPRUCE_FMT_BITMASK or SPRUCE_FMT_NM (opts->n, opts->m as for
 * spruce_sparse_pack; SPRUCE_EPATTERN names the first row and group that keeps
 * more than n; opts->layout SPRUCE_LAYOUT_PAIRS for 2:4 and 1:4).  Q is copied and not needed afterwards. */
int spruce_qsparse_pack(const spruce_qmatrix *Q, const uint8_t *mask, const spruce_pack_opts *opts,
                        spruce_qsparse **out);

/* Quantize W (rows, cols) float32 as spruce_qmatrix_quantize does (dtype,
 * groupsize, asym), with the pruned weights (mask == 0, or W == 0 without a
 * mask) set to zero first, and pack the kept ones. */
int spruce_qsparse_quantize(const float *W, const uint8_t *mask, int rows, int cols, int dtype,
                            int groupsize, int asym, const spruce_pack_opts *opts,
                            spruce_qsparse **out);
void spruce_qsparse_free(spruce_qsparse *A); /* NULL is a no-op */

/* W (rows, cols) float32: the dequantized weights, zeros where nothing is kept. */
int spruce_qsparse_dequantize(const spruce_qsparse *A, float *W);

int spruce_qsparse_format(const spruce_qsparse *A);
int spruce_qsparse_dtype(const spruce_qsparse *A);
int spruce_qsparse_rows(const spruce_qsparse *A);
int spruce_qsparse_cols(const spruce_qsparse *A);
int64_t spruce_qsparse_nnz(const spruce_qsparse *A);  /* stored values (N:M: slots) */
size_t spruce_qsparse_bytes(const spruce_qsparse *A); /* bytes a product streams */
int spruce_qsparse_layout(const spruce_qsparse *A);   /* SPRUCE_LAYOUT_* */

/* Y = A X, X (cols, batch), Y (rows, batch) row-major, batch >= 1.  Runs on the
 * threads A was packed for; allocates nothing and only reads A. */
int spruce_qsparse_mul(const spruce_qsparse *A, const float *X, int batch, float *Y);
/* The same with the kernels of instruction set isa, whatever spruce_sparse_isa()
 * says (SPRUCE_EUNSUPPORTED if this build, CPU or OS lacks it): for tests and
 * benchmarks that compare instruction sets in one process. */
int spruce_qsparse_mul_isa(const spruce_qsparse *A, int isa, const float *X, int batch, float *Y);

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_QSPARSE_H */
