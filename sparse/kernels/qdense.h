/* qdense.h: the dense value-type kernels' declarations and the dequantization
 * of one weight, the definition every kernel follows.  Internal. */
#ifndef SPRUCE_QDENSE_H
#define SPRUCE_QDENSE_H

#include <math.h>

#include "spruce_half.h"
#include "spruce_qmatrix.h"

/* Rows [r0, r1) of y = W x. */
void dense_spmv_bf16_scalar(const spruce_qmatrix *A, const float *x, float *y, int r0, int r1);
void dense_spmv_int8_scalar(const spruce_qmatrix *A, const float *x, float *y, int r0, int r1);
void dense_spmv_int4_scalar(const spruce_qmatrix *A, const float *x, float *y, int r0, int r1);

/* A dense value-type kernel: rows [r0, r1) of Y = W X, X (cols, batch) and
 * Y (rows, batch) row-major, float32 sums. */
typedef void (*spruce__qkernel)(const spruce_qmatrix *A, const float *X, int batch, float *Y,
                                int r0, int r1);

/* The kernels of one instruction set: [dtype][0: batch 1, 1: batch > 1]
 * (the f32 row is unused: dense float32 runs on OpenBLAS). */
typedef struct {
    spruce__qkernel k[4][2];
} spruce__qdense_table;

/* Fill t for an instruction set; bf16dp: use the AVX512-BF16 dot products
 * for bf16 at batch 1 (only when the CPU has them). */
void spruce__qdense_scalar(spruce__qdense_table *t);
void spruce__qdense_avx2(spruce__qdense_table *t);
void spruce__qdense_avx512(spruce__qdense_table *t, int bf16dp);

/* Kernels, one per (operation, value type, instruction set).  dense_spmm_q
 * covers every value type: it dequantizes panels of rows, then multiplies. */
void dense_spmm_bf16_scalar(const spruce_qmatrix *A, const float *X, int batch, float *Y, int r0, int r1);
void dense_spmm_int8_scalar(const spruce_qmatrix *A, const float *X, int batch, float *Y, int r0, int r1);
void dense_spmm_int4_scalar(const spruce_qmatrix *A, const float *X, int batch, float *Y, int r0, int r1);
void dense_spmv_bf16_avx2(const spruce_qmatrix *A, const float *X, int batch, float *Y, int r0, int r1);
void dense_spmv_int8_avx2(const spruce_qmatrix *A, const float *X, int batch, float *Y, int r0, int r1);
void dense_spmv_int4_avx2(const spruce_qmatrix *A, const float *X, int batch, float *Y, int r0, int r1);
void dense_spmm_q_avx2(const spruce_qmatrix *A, const float *X, int batch, float *Y, int r0, int r1);
void dense_spmv_bf16_avx512(const spruce_qmatrix *A, const float *X, int batch, float *Y, int r0, int r1);
void dense_spmv_int8_avx512(const spruce_qmatrix *A, const float *X, int batch, float *Y, int r0, int r1);
void dense_spmv_int4_avx512(const spruce_qmatrix *A, const float *X, int batch, float *Y, int r0, int r1);
void dense_spmm_q_avx512(const spruce_qmatrix *A, const float *X, int batch, float *Y, int r0, int r1);
void dense_spmv_bf16_avx512bf16(const spruce_qmatrix *A, const float *X, int batch, float *Y, int r0, int r1);

/* Rows per block of the vector kernels: 4 rows share every load of x. */
#define SPRUCE__QROWS 4
/* Put before each loop over the rows of a block: unrolled, the rows' sums
 * stay in registers (GCC at -O2 keeps a small array indexed by the loop
 * counter in memory, a store and a reload around every multiply-add).  The
 * count is SPRUCE__QROWS, written out because a pragma takes no macro. */
#define SPRUCE__EACH_ROW _Pragma("GCC unroll 4")
/* The row loop of every vector kernel: blocks of SPRUCE__QROWS rows of
 * [r0, r1), then the rows left one by one; fn(..., i, R) computes rows
 * i .. i + R (R a constant at each call, so fn's loops over R unroll). */
#define SPRUCE__QROW_BLOCKS(fn, r0, r1, ...)                                               \
    do {                                                                                   \
        int i_ = (r0);                                                                     \
        for (; i_ + SPRUCE__QROWS <= (r1); i_ += SPRUCE__QROWS)                            \
            fn(__VA_ARGS__, i_, SPRUCE__QROWS);                                            \
        for (; i_ < (r1); i_++)                                                            \
            fn(__VA_ARGS__, i_, 1);                                                        \
    } while (0)

/* Columns per panel the batch kernels dequantize at a time (4 rows x 256
 * floats = 4 KB, in L1 while every column of X meets it). */
#define SPRUCE__QPANEL 256

/* Nibble j of a row of int4 values (0..15). */
static inline int spruce__nibble(const uint8_t *row, int j)
{
    return (row[j >> 1] >> (4 * (j & 1))) & 15;
}

/* The zero point of row i (int8) or of row i, group g (int4). */
static inline int spruce__zero(const spruce_qmatrix *A, int i, int g)
{
    if (A->dtype == SPRUCE_DT_INT8)
        return A->zero ? (int)(int8_t)A->zero[i] : 0;
    return A->zero ? A->zero[(size_t)i * A->ngroups + g] : 8;
}
#endif
