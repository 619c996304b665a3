/* spruce_sparse.h: packed sparse matrices, their kernels and the linear layer.
 *
 * The runtime receives a finished dense-with-zeros matrix (or a dense matrix and
 * a keep-mask) and packs it once into one of three formats:
 *
 *   CSR      compressed rows: values and column indices, 16-bit indices when
 *            cols <= 65536, 32-bit otherwise (6 or 8 bytes per non-zero).
 *   BITMASK  one bit per weight (row-major, 64 columns per word) and the kept
 *            values of each row packed in column order (4 bytes per non-zero
 *            plus 1/8 byte per weight).
 *   NM       N:M: every group of M consecutive columns of a row holds at most N
 *            non-zeros.  Stored as exactly N values per group (padded with zeros
 *            when a group has fewer) and each group's positions as an M-bit
 *            field (for 2:4: 2 values and 4 bits per group of 4, 2.125 bytes
 *            per weight).  Every row then has the same number of values, so the
 *            kernels know every offset without counting bits.
 *
 * Products, with every matrix row-major:
 *   W is (rows, cols), X is (cols, batch), Y is (rows, batch):  Y = W X.
 *   With batch = 1, X is a vector x (cols) and Y a vector y (rows).
 *   A row of X (one input feature across the batch) is contiguous, so a kernel
 *   broadcasts one weight and multiplies it against a whole row of X.
 *   (For token-by-token decoding: X[k][t] is feature k of token t, i.e. the
 *   transpose of the usual (tokens, features) activation layout.)
 *
 * Kernels exist in a scalar version (the oracle and the fallback), AVX2+FMA and
 * AVX-512.  The instruction set is chosen once, from what the build, the CPU
 * (cpuid) and the OS (xgetbv: ymm/zmm state enabled) support.  The environment
 * variable SPRUCE_ISA=scalar|avx2|avx512 forces one; asking for one that is not
 * available (or an unknown name) makes every call that runs a kernel fail with
 * SPRUCE_EUNSUPPORTED and a detail naming what is available.
 *
 * Work is split over OpenMP threads by rows, balanced by non-zeros when the
 * matrix is packed.  No function that multiplies allocates memory (the
 * column blocks of wide bitmask and N:M matrices add into Y itself; see
 * tests/test_sparse_noalloc.c). */
#ifndef SPRUCE_SPARSE_H
#define SPRUCE_SPARSE_H

#include <stddef.h>
#include <stdint.h>

#include "spruce_error.h"
#include "spruce_qmatrix.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- instruction sets ------------------------------------------------- */
typedef enum {
    SPRUCE_ISA_SCALAR = 0,
    SPRUCE_ISA_AVX2 = 1,
    SPRUCE_ISA_AVX512 = 2,
    SPRUCE_ISA_COUNT = 3
} spruce_isa;

/* The instruction set the kernels use (chosen once, on first use).  Negative
 * SPRUCE_E* code if SPRUCE_ISA names one that is unknown or not available. */
int spruce_sparse_isa(void);
/* "scalar", "avx2", "avx512" ("?" for anything else). */
const char *spruce_sparse_isa_name(int isa);
/* 1 if this build, CPU and OS can run isa, else 0. */
int spruce_sparse_isa_supported(int isa);
/* Force isa for the whole process (tests, benchmarks): SPRUCE_EUNSUPPORTED if
 * it is not supported.  Not thread-safe against concurrent products. */
int spruce_sparse_isa_set(int isa);

/* ---- packed matrices -------------------------------------------------- */
typedef enum {
    SPRUCE_FMT_DENSE = 0, /* only used by the linear layer: OpenBLAS */
    SPRUCE_FMT_CSR = 1,
    SPRUCE_FMT_BITMASK = 2,
    SPRUCE_FMT_NM = 3
} spruce_format;

/* "dense", "csr", "bitmask", "nm" ("?" otherwise). */
const char *spruce_format_name(int format);
/* The format named s (one of the names above), or -1. */
int spruce_format_parse(const char *s);

typedef struct spruce_sparse spruce_sparse;

/* How an N:M matrix is laid out (spruce_pack_opts.layout):
 *   SPRUCE_LAYOUT_BITS   (0, the default) a bit per weight and each row's
 *                        stored values in column order, as for bitmask;
 *   SPRUCE_LAYOUT_PAIRS  2:4 and 1:4 only: rows in pairs, each 8 columns of
 *                        a pair 8 slot values and 16 bits of positions
 *                        (2 per slot), so the kernels gather x with one
 *                        in-lane permute per 8 values (doc/runtime.md).
 * The same products; which is faster depends on the CPU, so the linear
 * layer times both (its planner). */
enum { SPRUCE_LAYOUT_BITS = 0, SPRUCE_LAYOUT_PAIRS = 1 };

typedef struct {
    int format;   /* SPRUCE_FMT_CSR, _BITMASK or _NM */
    int n, m;     /* the N:M pattern (format NM only), 0 < n < m <= 64 */
    int nthreads; /* threads the work is split for; 0: omp_get_max_threads() */
    int layout;   /* SPRUCE_LAYOUT_*: NM only (PAIRS: m == 4, n <= 2) */
} spruce_pack_opts;

/* "bits" or "pairs" ("?" otherwise). */
const char *spruce_layout_name(int layout);

/* Pack W (rows, cols), row-major.  Without mask a weight is kept when it is
 * non-zero (-0.0 counts as zero); with mask (rows, cols) bytes, where
 * mask != 0 (kept weights that happen to be 0 stay stored).  NM fails with
 * SPRUCE_EPATTERN (the detail names the first row and group) when some group
 * of m columns keeps more than n weights; the last group of a row may be
 * shorter than m. */
int spruce_sparse_pack(const float *W, const uint8_t *mask, int rows, int cols,
                       const spruce_pack_opts *opts, spruce_sparse **out);
void spruce_sparse_free(spruce_sparse *A); /* NULL is a no-op */

/* Write the dense matrix back: W (rows, cols) with zeros where nothing is kept. */
int spruce_sparse_unpack(const spruce_sparse *A, float *W);

int spruce_sparse_format(const spruce_sparse *A);
int spruce_sparse_rows(const spruce_sparse *A);
int spruce_sparse_cols(const spruce_sparse *A);
int64_t spruce_sparse_nnz(const spruce_sparse *A);    /* stored values */
size_t spruce_sparse_bytes(const spruce_sparse *A);   /* bytes a product streams */
int spruce_sparse_index_bits(const spruce_sparse *A); /* CSR: 16 or 32, else 0 */
int spruce_sparse_layout(const spruce_sparse *A);     /* SPRUCE_LAYOUT_* */

/* Y = A X.  X is (cols, batch) row-major, Y is (rows, batch) row-major;
 * batch >= 1.  Runs on the threads A was packed for, whatever
 * omp_get_max_threads() says later.  Allocates nothing and only reads A:
 * products of the same matrix may run at once from several threads, each
 * with its own Y. */
int spruce_sparse_mul(const spruce_sparse *A, const float *X, int batch, float *Y);
/* The same with the kernels of instruction set isa, whatever
 * spruce_sparse_isa() says (SPRUCE_EUNSUPPORTED if this build, CPU or OS
 * lacks it): the linear layer's planner times each on the matrix. */
int spruce_sparse_mul_isa(const spruce_sparse *A, int isa, const float *X, int batch, float *Y);

/* ---- the linear layer ------------------------------------------------- */
/* A linear layer y = W x that picks, per batch size, the fastest of dense
 * OpenBLAS and the sparse formats the matrix allows, by timing them when it is
 * created (inspect once, execute many).  Sparse is only chosen where it beat
 * dense, so it never makes a layer slower than dense as measured.  To keep
 * fewer copies of the weights, a larger batch size reuses the sparse format of
 * a smaller one when that one timed within 20% of the best there.
 *
 * Values in bf16, int8 or int4 (opts->dtype; spruce_qmatrix.h): the layer
 * holds them in that type only and chooses, the same way, among the dense
 * kernel of that type (the baseline a sparse format must beat), bitmask and
 * N:M of the same values, and compressed rows.  A layer is in
 * another type only when asked: spruce_linear_create converts W to
 * opts->dtype (bf16 exactly for weights that came from bf16; int8 and int4
 * by the min-max grids of spruce_qmatrix_quantize), and
 * spruce_linear_create_quantized keeps the values it is given. */
/* The N:M pattern a linear layer tries when its options give none (2:4). */
#define SPRUCE_LINEAR_DEFAULT_N 2
#define SPRUCE_LINEAR_DEFAULT_M 4

typedef struct spruce_linear spruce_linear;

#define SPRUCE_LINEAR_MAX_BATCHES 8

typedef struct {
    int nthreads;        /* 0: omp_get_max_threads() */
    int format;          /* -1 (or any negative): auto; else force that format */
    int n, m;            /* N:M pattern to try (0, 0: SPRUCE_LINEAR_DEFAULT_N:M when it fits) */
    int nbatches;        /* batch sizes to tune for (0: {1, 16}) */
    int batches[SPRUCE_LINEAR_MAX_BATCHES];
    int reps;            /* timed runs per candidate, interleaved (0: 7) */
    int dtype;           /* SPRUCE_DT_F32 (the default), _BF16, _INT8 or _INT4 */
    int groupsize;       /* int4: columns per scale, 32..256 (0: 128) */
    int asym;            /* int8/int4 grids with a zero point (default: symmetric) */
} spruce_linear_opts;

/* Fills opts with the defaults (auto, all threads, batches {1, 16}, float32). */
void spruce_linear_opts_init(spruce_linear_opts *opts);

/* W (rows, cols) row-major, dense-with-zeros; opts may be NULL (defaults).
 * W is copied (or packed) and not needed afterwards. */
int spruce_linear_create(const float *W, int rows, int cols, const spruce_linear_opts *opts,
                         spruce_linear **out);
/* The same from values already quantized (a checkpoint's): Q is checked
 * (spruce_qmatrix_check), copied, and its type is the layer's whatever
 * opts->dtype says. */
int spruce_linear_create_quantized(const spruce_qmatrix *Q, const spruce_linear_opts *opts,
                                   spruce_linear **out);
void spruce_linear_free(spruce_linear *lin); /* NULL is a no-op */

/* Y = W X, X (cols, batch) and Y (rows, batch) row-major.  Uses the
 * representation tuned for the largest tuned batch size <= batch (the smallest
 * tuned one if batch is below all of them).  Never allocates (but OpenBLAS's
 * threaded sgemm, the dense representation at batch > 1, allocates inside
 * OpenBLAS).  Call it from outside OpenMP parallel regions: it runs on its
 * own threads (OpenMP for the sparse formats, OpenBLAS's for dense). */
int spruce_linear_forward(const spruce_linear *lin, const float *X, int batch, float *Y);

/* The format used for this batch size (SPRUCE_FMT_*). */
int spruce_linear_format(const spruce_linear *lin, int batch);
/* The layout of that format (SPRUCE_LAYOUT_*; BITS but for N:M in pairs). */
int spruce_linear_layout(const spruce_linear *lin, int batch);
/* What runs at this batch size, for --verbose: shape, format, value type
 * and, for a typed sparse format, the kernel variant the planner chose, why,
 * and each variant's time, into buf (n bytes, always terminated).  The
 * format, or -1 for a bad argument.
 *
 * The planner: a typed sparse format's kernel variants (every SIMD
 * instruction set the machine has, up to SPRUCE_ISA's) are timed on the
 * matrix when it is packed, at the smallest tuned batch, and the fastest
 * kept; two within 3% are timed again with three times the runs, and still
 * within 3% the default (the highest) is kept.  SPRUCE_VARIANT=scalar|avx2|
 * avx512 forces one (creating fails with SPRUCE_EUNSUPPORTED naming an
 * unknown or unsupported one).  For 2:4 and 1:4 the N:M candidate is also
 * packed in the pair layout, its own variants timed the same way, and the
 * two layouts timed against each other, each at its fastest variant; the
 * faster is kept (the other freed), with the same rule for near ties but
 * fewer bytes deciding; SPRUCE_LAYOUT=bits|pairs forces one.
 * The text then names the layout, why, and each layout's time. */
int spruce_linear_describe(const spruce_linear *lin, int batch, char *buf, size_t n);
int spruce_linear_rows(const spruce_linear *lin);
/* The values' type (SPRUCE_DT_*). */
int spruce_linear_dtype(const spruce_linear *lin);
int spruce_linear_cols(const spruce_linear *lin);
/* Bytes held by the layer (all kept representations: values, indices or
 * bits, scales and zero points). */
size_t spruce_linear_bytes(const spruce_linear *lin);
/* Bytes a product at this batch size streams: those of the representation
 * used at that size (0 for NULL). */
size_t spruce_linear_batch_bytes(const spruce_linear *lin, int batch);

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_SPARSE_H */
