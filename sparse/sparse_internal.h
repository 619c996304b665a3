/* sparse_internal.h: the packed layout shared by the framework and the kernels.
 * Not installed. */
#ifndef SPRUCE_SPARSE_INTERNAL_H
#define SPRUCE_SPARSE_INTERNAL_H

#include <stdint.h>

#include "spruce_sparse.h"

/* Values arrays carry this many zero floats past the end, so that a kernel may
 * load a full vector starting at any stored value. */
#define SPRUCE__PAD 16

/* Row ranges per thread (at most; fewer for small matrices, each range
 * worth at least SPRUCE__PART_MIN values).  Threads take ranges dynamically,
 * so a thread that the OS deschedules (a shared machine) holds the others up
 * for one short range only. */
#define SPRUCE__PARTS 16

/* Columns per window of the blocked CSR product: a window of X (cols, batch)
 * stays in the L1 cache (512 x 16 floats = 32 KB) while every row of a
 * thread's range uses it. */
#define SPRUCE__WIN 512
#define SPRUCE__PART_MIN 32768
/* Rows per block of the blocked CSR product (see csr_spmm.h). */
#define SPRUCE__RB 16

/* Bitmask and N:M matrices wider than this many columns are stored as column
 * blocks of at most this width, each a matrix of its own (see pack.c). */
#define SPRUCE__BLOCK_COLS 8192
#define SPRUCE__MAX_BLOCKS 64

struct spruce_sparse {
    int format;        /* SPRUCE_FMT_CSR, _BITMASK, _NM */
    int rows, cols;
    int n, m;          /* NM only */
    int nthreads;
    int nsplit;        /* row ranges: SPRUCE__PARTS per thread (fewer if few rows) */
    int *split;        /* (nsplit + 1) row boundaries, balanced by non-zeros */
    int64_t nnz;       /* stored values */
    int64_t *rowptr;   /* (rows + 1): first value of each row */
    float *val;        /* (nnz + SPRUCE__PAD) */
    /* CSR */
    int idx_bits;      /* 16 or 32 */
    uint16_t *idx16;   /* (nnz) column of each value */
    uint32_t *idx32;
    /* CSR, for batch > 1: column windows of SPRUCE__WIN columns.  Row i's
     * values in window w are [rowptr[i] + woff[i][w], rowptr[i] + woff[i][w+1]) */
    int nwin;          /* ceil(cols / SPRUCE__WIN) */
    uint32_t *woff;    /* (rows, nwin + 1) */
    /* BITMASK and NM: bit j of word w of row i is column 64 w + j */
    int wpr;           /* words per row = ceil(cols / 64) */
    uint64_t *bits;    /* (rows, wpr) */
    /* Column blocks (bitmask and N:M wider than SPRUCE__BLOCK_COLS): block b
     * holds columns [col0[b], col0[b] + blk[b]->cols) with its own values and
     * bits; then val, bits, woff are NULL and rowptr holds the rows' total
     * counts (for the row split only).  Kernels only ever see the blocks. */
    int nblk;
    int col0[SPRUCE__MAX_BLOCKS];
    struct spruce_sparse *blk[SPRUCE__MAX_BLOCKS];
    /* Set on every column block but the first: its kernels add their product
     * to Y instead of writing it, so the blocks of a row sum into Y itself and
     * a product needs no scratch (bitmask and N:M kernels only). */
    int add;
    /* NM in SPRUCE_LAYOUT_PAIRS: the whole matrix is here (the arrays above
     * are NULL, there are no column blocks). */
    struct spruce__pairs *pairs;
};

/* Row i of a product leaves a kernel: y[i] = s, or y[i] += s for a block with
 * A->add set (the same sum either way: the block's own, then added). */
static inline void spruce__put(float *y, int64_t i, float s, int add)
{
    y[i] = add ? y[i] + s : s;
}

/* A kernel computes rows [r0, r1) of Y = A X, X (cols, batch), Y (rows, batch)
 * (Y += A X for a column block with A->add set). */
typedef void (*spruce__kernel)(const struct spruce_sparse *A, const float *X, int batch,
                               float *Y, int r0, int r1);

/* Shared by the packers of every value type (pack.c).  W is (rows, ld) and
 * mask alike; with mask given, W is not read (it may be NULL).
 * spruce__nsplit: how many row ranges a matrix of that many stored values gets;
 * spruce__balance: their boundaries split[0 .. nsplit], balanced by the values
 * of each row (rowptr) plus row_overhead;
 * spruce__nm_count: check the N:M pattern (SPRUCE_EPATTERN naming the row and
 * group) and count the values each row stores;
 * spruce__nm_slots: the positions an N:M group [at, at + width) stores, as bits:
 * the kept weights, topped up with the lowest pruned positions to min(n, width). */
int spruce__nsplit(int nthreads, int64_t total, int rows);
/* The kept weights among [at, at + width) (width <= 64) of mask (mask != 0)
 * or else of W (W != 0, -0.0 counting as zero), as bits: built without a
 * branch per weight, so that the packers branch once per kept weight (a
 * random mask mispredicts half the branches of a test per weight). */
static inline uint64_t spruce__kept_bits(const float *W, const uint8_t *mask, int64_t at,
                                         int width)
{
    uint64_t b = 0;
    int k;
    if (mask)
        for (k = 0; k < width; k++)
            b |= (uint64_t)(mask[at + k] != 0) << k;
    else
        for (k = 0; k < width; k++)
            b |= (uint64_t)(W[at + k] != 0.0f) << k;
    return b;
}
void spruce__balance(const int64_t *rowptr, int rows, int64_t row_overhead, int nsplit, int *split);
int spruce__nm_count(const float *W, const uint8_t *mask, int rows, int cols, int64_t ld, int col0,
                     int n, int m, int64_t *per_row);
uint64_t spruce__nm_slots(const float *W, const uint8_t *mask, int64_t at, int width, int n);
/* The width of the column blocks of a matrix of cols columns (cols >
 * SPRUCE__BLOCK_COLS): nearly equal blocks, each a multiple of 64, of m (no N:M
 * group straddles two blocks; 0: none) and of groupsize (no int4 scale group
 * does; 0: none). */
int spruce__block_width(int cols, int m, int groupsize);
/* opts->layout: BITS, or PAIRS with format NM, m == 4, n <= 2 (else the error). */
int spruce__check_layout(const spruce_pack_opts *opts);

/* Kernel tables of each instruction set: [format][0: batch 1, 1: batch > 1].
 * A NULL entry falls back to the scalar kernel. */
typedef struct {
    spruce__kernel k[4][2];
} spruce__kernel_table;

void spruce__kernels_scalar(spruce__kernel_table *t);
void spruce__kernels_avx2(spruce__kernel_table *t);
void spruce__kernels_avx512(spruce__kernel_table *t);

/* 1 when the CPU has AVX512-BF16 (vdpbf16ps) and AVX-512 is usable. */
int spruce__cpu_has_bf16dp(void);

/* The table of the chosen instruction set (NULL with the error recorded). */
const spruce__kernel_table *spruce__kernels(void);
/* The kernels of instruction set isa, NULL when this build, CPU or OS lacks it. */
const spruce__kernel_table *spruce__kernels_isa(int isa);

/* Kernels, one per (operation, instruction set). */
void csr_spmv_scalar(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0, int r1);
void csr_spmm_scalar(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0, int r1);
void bitmask_spmv_scalar(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0, int r1);
void bitmask_spmm_scalar(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0, int r1);

void csr_spmv_avx2(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0, int r1);
void csr_spmm_avx2(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0, int r1);
void bitmask_spmv_avx2(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0, int r1);
void bitmask_spmm_avx2(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0, int r1);
void nm_spmv_avx2(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0, int r1);

void csr_spmv_avx512(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0, int r1);
void csr_spmm_avx512(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0, int r1);
void bitmask_spmv_avx512(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0, int r1);
void bitmask_spmm_avx512(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0, int r1);
void nm_spmv_avx512(const struct spruce_sparse *A, const float *X, int batch, float *Y, int r0, int r1);

/* linear.c's choice for batch size bs from the candidates' times (best, by
 * format; cand[f] non-zero for candidates; bytes by format): a sparse format
 * only where faster than dense by 3% (batch 1) or 30% (larger batches); at
 * batch 1 in float32 (dtype), also one with at most 60% of dense's bytes that
 * timed within 30% of dense.  *allowed: what a sparse format had to beat. */
int spruce__linear_choose(const double best[4], const size_t bytes[4], const int cand[4], int bs,
                          int dtype, double *allowed);

/* linear.c's rule at dense's edge, where the issue is noise: dense and a
 * sparse format whose times are within 3% or SPRUCE__TIE_SECONDS of each
 * other at batch 1 (of the 30% margin at larger batches) are a tie, settled
 * by the fewest bytes; so is a sparse format chosen within that much of the
 * time it had to beat, when dense has the fewer bytes.  The floor: one product of a small layer (256x2048
 * int4, 30 us) was seen to vary by 5-10 us between runs on the 2-core AMD
 * EPYC host, the time of waking the threads, more than 3% of it.
 * Returns the choice at times t so settled; seen[f] is 1 for the formats of
 * the tie (or the choice alone).  *allowed: what a sparse format had to beat
 * (raised to the tie's bound when a sparse format takes dense's place). */
#define SPRUCE__TIE_SECONDS 8e-6
int spruce__linear_edge(const double t[4], const size_t bytes[4], const int cand[4], int bs,
                        int dtype, int seen[4], double *allowed);

/* linear.c's rule for near ties: the format among the candidates (cand[f]
 * non-zero) that timed within 3% of choice (t: times by format) and below
 * allowed (what beat dense) with the fewest bytes; choice when none has
 * fewer, or when choice is dense.  *tie: the format it replaced, or -1. */
int spruce__linear_settle(const double t[4], const size_t bytes[4], const int cand[4], int choice,
                          double allowed, int *tie);

#endif
