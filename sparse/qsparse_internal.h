/* qsparse_internal.h: the packed layout of bf16, int8 and int4 bitmask and
 * N:M matrices (spruce_qsparse.h), shared by qsparse.c and the kernels.
 * Not installed. */
#ifndef SPRUCE_QSPARSE_INTERNAL_H
#define SPRUCE_QSPARSE_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "sparse_internal.h"
#include "spruce_half.h"
#include "spruce_qsparse.h"

/* The values array carries this many zero bytes past its end, so that a
 * kernel may load 16 values (and one byte more, for int4) at any stored one. */
#define SPRUCE__QPAD 64

struct spruce_qsparse {
    int format;      /* SPRUCE_FMT_BITMASK, _NM or _CSR */
    int dtype;       /* SPRUCE_DT_BF16, _INT8 or _INT4 */
    int rows, cols;
    int n, m;        /* NM only */
    int groupsize;   /* int4: columns per scale */
    int ngroups;     /* int4: ceil(cols / groupsize) per row; else 1 */
    int nthreads;
    int nsplit;      /* row ranges, balanced by the stored values */
    int *split;      /* (nsplit + 1) */
    int64_t nnz;     /* stored values */
    /* Value p of the matrix: bf16 ((uint16_t *)val)[p], int8 ((int8_t *)val)[p],
     * int4 nibble p (byte p / 2, bits 4 (p % 2)).  Row i's values start at
     * rowptr[i] (even for int4: a row starts on a byte). */
    int64_t *rowptr; /* (rows + 1) */
    uint8_t *val;
    int wpr;         /* words per row = ceil(cols / 64) */
    uint64_t *bits;  /* (rows, wpr): bit j of word w of row i is column 64 w + j (not CSR) */
    /* CSR: the column of stored value p, 16 bits when cols <= 65536 (col16)
     * else 32 (col32); rowcnt[i] the values of row i (rowptr[i + 1] -
     * rowptr[i] but for int4's byte padding).  Never in column blocks. */
    uint16_t *col16;
    uint32_t *col32;
    int64_t *rowcnt;
    float *scale;    /* int8 (rows), int4 (rows, ngroups) */
    uint8_t *zero;   /* NULL or like scale (int8 as int8_t, int4 0..15) */
    /* Column blocks, as in struct spruce_sparse: block b holds columns
     * [col0[b], col0[b] + blk[b]->cols), a matrix of its own (its widths are
     * multiples of 64, M and the group size); the whole then holds only the
     * rows' total counts (rowptr) and the split.  Every block but the first
     * adds its product into Y (add). */
    int nblk;
    int col0[SPRUCE__MAX_BLOCKS];
    struct spruce_qsparse *blk[SPRUCE__MAX_BLOCKS];
    int add;
    /* NM in SPRUCE_LAYOUT_PAIRS: the whole matrix is here (the arrays above
     * are NULL, there are no column blocks). */
    struct spruce__pairs *pairs;
};

/* Rows [r0, r1) of Y = A X (Y += A X with A->add), X (cols, batch), Y (rows, batch). */
typedef void (*spruce__qskernel)(const struct spruce_qsparse *A, const float *X, int batch,
                                float *Y, int r0, int r1);

/* Kernel tables: [dtype][0: batch 1, 1: batch > 1]; NULL falls back to scalar. */
typedef struct {
    spruce__qskernel k[4][2];
} spruce__qskernel_table;

void spruce__qskernels_avx2(spruce__qskernel_table *t);
void spruce__qskernels_avx512(spruce__qskernel_table *t);

/* The zero point of row i (int8) or of row i, group g (int4), as in qdense.h. */
static inline int spruce__qzero(const struct spruce_qsparse *A, int i, int g)
{
    if (A->dtype == SPRUCE_DT_INT8)
        return A->zero ? (int)(int8_t)A->zero[i] : 0;
    return A->zero ? A->zero[(size_t)i * A->ngroups + g] : 8;
}

/* Stored value p, dequantized, in row i at column j: the definition every
 * kernel follows (spruce_qmatrix_at's, for a packed value). */
static inline float spruce__qvalue(const struct spruce_qsparse *A, int64_t p, int i, int j)
{
    if (A->dtype == SPRUCE_DT_BF16)
        return spruce_bf16_to_f32(((const uint16_t *)A->val)[p]);
    if (A->dtype == SPRUCE_DT_INT8)
        return ((float)((const int8_t *)A->val)[p] - (float)spruce__qzero(A, i, 0)) * A->scale[i];
    {
        const int g = j / A->groupsize;
        const int u = (A->val[p >> 1] >> (4 * (p & 1))) & 15;
        return ((float)u - (float)spruce__qzero(A, i, g)) * A->scale[(size_t)i * A->ngroups + g];
    }
}

/* The column of stored value p of a CSR matrix. */
static inline int spruce__qcol(const struct spruce_qsparse *A, int64_t p)
{
    return A->col16 ? (int)A->col16[p] : (int)A->col32[p];
}

/* CSR: the oracle (every value type, any batch), and the AVX2 kernels: batch
 * 1 (gathers of x, the scales of int4 per group of columns) and batch > 1. */
void qcsr_spmm_scalar(const struct spruce_qsparse *A, const float *X, int batch, float *Y, int r0,
                      int r1);
void qcsr_spmv_avx2(const struct spruce_qsparse *A, const float *X, int batch, float *Y, int r0,
                    int r1);
void qcsr_spmm_avx2(const struct spruce_qsparse *A, const float *X, int batch, float *Y, int r0,
                    int r1);

/* mask (Q->rows, Q->cols) bytes: 1 where a weight of Q dequantizes to a
 * non-zero (bf16: not +-0; int8 and int4: the code is not the zero point),
 * the mask spruce_qsparse_pack uses when given none. */
void spruce__qmatrix_kept(const spruce_qmatrix *Q, uint8_t *mask);

/* The scalar kernel (the oracle): every value type, both formats, any batch. */
void qsparse_spmm_scalar(const struct spruce_qsparse *A, const float *X, int batch, float *Y,
                         int r0, int r1);

void qsparse_spmv_bf16_avx2(const struct spruce_qsparse *A, const float *X, int batch, float *Y, int r0, int r1);
void qsparse_spmv_int8_avx2(const struct spruce_qsparse *A, const float *X, int batch, float *Y, int r0, int r1);
void qsparse_spmv_int4_avx2(const struct spruce_qsparse *A, const float *X, int batch, float *Y, int r0, int r1);
void qsparse_spmm_avx2(const struct spruce_qsparse *A, const float *X, int batch, float *Y, int r0, int r1);
void qsparse_spmv_bf16_avx512(const struct spruce_qsparse *A, const float *X, int batch, float *Y, int r0, int r1);
void qsparse_spmv_int8_avx512(const struct spruce_qsparse *A, const float *X, int batch, float *Y, int r0, int r1);
void qsparse_spmv_int4_avx512(const struct spruce_qsparse *A, const float *X, int batch, float *Y, int r0, int r1);
void qsparse_spmm_avx512(const struct spruce_qsparse *A, const float *X, int batch, float *Y, int r0, int r1);

#endif
