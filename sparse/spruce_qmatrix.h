/* spruce_qmatrix.h: dense matrices whose values are bf16, int8 or int4, for
 * weight-only products in float32 (float32 activations, float32 sums).
 *
 *   bf16  w = bf16 value
 *   int8  w = (q - z_i) s_i      per row i: scale s_i, zero point z_i (0 if none)
 *   int4  w = (u - z_ig) s_ig    per row i and group g of `groupsize` columns
 *                                (32..256, a multiple of 32; the last group of a
 *                                row may be shorter); u is stored unsigned in
 *                                0..15, z = 8 when there is no zero point
 *                                (the symmetric grid, as compressed-tensors
 *                                stores q + 8).  Two values per byte: column j
 *                                of a row in byte j / 2, bits 4 (j % 2) upward;
 *                                each row starts on a byte.
 * Scales must be finite and non-zero.  These are the dense baselines of the
 * value types; W is (rows, cols) row-major, x is (cols), y is (rows). */
#ifndef SPRUCE_QMATRIX_H
#define SPRUCE_QMATRIX_H

#include <stddef.h>
#include <stdint.h>

#include "spruce_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The runtime's value types (an int everywhere).  Not a typedef: the name
 * spruce_dtype is the checkpoint's (spruce_ckpt.h), and both headers may be
 * included together. */
enum spruce_value_type {
    SPRUCE_DT_F32 = 0,
    SPRUCE_DT_BF16 = 1,
    SPRUCE_DT_INT8 = 2,
    SPRUCE_DT_INT4 = 3
};

/* "f32", "bf16", "int8", "int4" ("?" otherwise); the dtype named s, or -1. */
const char *spruce_dtype_name(int dtype);
int spruce_dtype_parse(const char *s);

typedef struct {
    int dtype;       /* SPRUCE_DT_BF16, _INT8 or _INT4 */
    int rows, cols;
    int groupsize;   /* int4 only */
    int ngroups;     /* int4: ceil(cols / groupsize) per row; int8: 1 */
    size_t ld;       /* bytes per row of q */
    uint8_t *q;      /* (rows, ld) bytes: bf16 (uint16_t), int8 (int8_t), int4 (nibbles) */
    float *scale;    /* int8 (rows), int4 (rows, ngroups) */
    uint8_t *zero;   /* NULL (symmetric) or, like scale: int8 as int8_t, int4 as 0..15 */
} spruce_qmatrix;

/* Quantize W (rows, cols) to dtype: bf16 rounds to nearest even; int8 and
 * int4 take min-max grids per row (int8) or per group (int4), symmetric
 * (int8 in [-127, 127], int4 u in [1, 15]) or, with asym, with a zero point.
 * SPRUCE_EINVAL names a bad group size or dtype; a NaN or infinite weight is
 * refused (SPRUCE_ENAN) naming its row and column. */
int spruce_qmatrix_quantize(const float *W, int rows, int cols, int dtype, int groupsize,
                            int asym, spruce_qmatrix **out);
/* Check a matrix built by hand (from a checkpoint): group size, shapes, every
 * scale finite and non-zero, zero points in range.  0, or SPRUCE_ENAN (a NaN or infinite scale) /
 * SPRUCE_EINVAL (a zero scale, a bad group size or zero point), naming the row and group. */
int spruce_qmatrix_check(const spruce_qmatrix *A);
void spruce_qmatrix_free(spruce_qmatrix *A); /* NULL is a no-op */

/* W (rows, cols) float32: the dequantized weights. */
int spruce_qmatrix_dequantize(const spruce_qmatrix *A, float *W);
/* Weight w_ij, dequantized (the definition the kernels follow). */
float spruce_qmatrix_at(const spruce_qmatrix *A, int i, int j);
/* Bytes a product streams (values, scales, zero points). */
size_t spruce_qmatrix_bytes(const spruce_qmatrix *A);

/* y = W x with the scalar kernels (dense_spmv_<dtype>_scalar). */
int spruce_qmatrix_mul(const spruce_qmatrix *A, const float *x, float *y);

/* Y = W X with the kernels of the chosen instruction set (SPRUCE_ISA and
 * spruce_sparse_isa_set choose, as for the sparse products): X is (cols,
 * batch) and Y (rows, batch), row-major (X[j * batch + b]), float32 sums;
 * nthreads threads share the rows (0: omp_get_max_threads()).  Results agree
 * with the scalar kernels within a float32 summation bound (the order of the
 * sums differs; the bf16 dot-product variant adds 2^-15 sum |w x|: see
 * doc/runtime.md).  A must be valid (spruce_qmatrix_check, which this call
 * does not repeat: it would read every scale). */
int spruce_qmatrix_product(const spruce_qmatrix *A, const float *X, int batch, float *Y,
                           int nthreads);

/* The AVX512-BF16 variant of the bf16 kernel at batch 1 (vdpbf16ps, x split
 * into two bf16 parts): available when the build, CPU and OS have it, and then
 * used with AVX-512 unless SPRUCE_BF16DP=0.  _bf16dp: 1 when in use;
 * _bf16dp_set: use it or not (SPRUCE_EUNSUPPORTED when unavailable). */
int spruce_qmatrix_bf16dp_available(void);
int spruce_qmatrix_bf16dp(void);
int spruce_qmatrix_bf16dp_set(int on);

/* The kernel spruce_qmatrix_product uses for A at this batch: "scalar",
 * "avx2", "avx512" or "avx512-bf16dp". */
const char *spruce_qmatrix_kernel_name(const spruce_qmatrix *A, int batch);

#ifdef __cplusplus
}
#endif
#endif
