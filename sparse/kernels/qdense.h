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
