/* cmd_bench.h: what the parts of `spruce bench` share.
 *
 *   cmd_bench.c     options, the order of the cases, the table's header, JSON
 *   bench_kernels.c one shape and sparsity: the random matrices, their rotation,
 *                   the formats to time, the timed passes, the rows
 *   bench_dtype.c   --dtype: the value types bf16, int8, int4 against float32
 *   bench_svg.c     the --sweep chart
 *   bench_model.c   --model: every linear layer of a checkpoint, then decoding
 *
 * Products: W (rows, cols), X (cols, batch), Y (rows, batch), row-major. */
#ifndef SPRUCE_CLI_BENCH_H
#define SPRUCE_CLI_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define BENCH_MAX_SHAPES 16
#define BENCH_MAX_CASES 32
#define BENCH_MAX_BATCHES 8
#define BENCH_MAX_FORMATS 6
#define BENCH_MAX_ROT 512
#define BENCH_AUTO (-1)    /* a --format entry: the linear layer's choice */
#define BENCH_SKIPPED (-2) /* a chosen format: nothing to time (nm without a pattern) */
/* A --format entry and a chosen format: N:M in the pair layout (2:4, 1:4).
 * `nm` in --format stands for SPRUCE_FMT_NM (the bit layout), this or both,
 * as --layout says. */
#define BENCH_NM_PAIRS 4
#define BENCH_NREP 5 /* the representations a float32 case packs: dense .. nm, pairs */

/* One sparsity to time: unstructured, or N:M when n > 0. */
typedef struct {
    double sparsity; /* unstructured: fraction of zeros */
    int n, m;
} bench_case;

/* One row of the table (one JSON object). */
typedef struct {
    char format[24]; /* "bitmask", "auto(bitmask)" ... */
    char layout[8];  /* N:M rows: "bits" or "pairs" (the table shows "nm/pairs") */
    int rows, cols, batch, n, m;
    double sparsity, dense_ms, sparse_ms, speedup, gbps, dense_gbps, ceiling;
    int rot_dense, rot_sparse;
    /* the value type (SPRUCE_DT_*; 0: f32), its int4 group size (else 0), and
     * dense OpenBLAS float32 of the same run (dense_ms for f32 rows); the
     * kernel's name when the row's representation has one to tell */
    int dtype, groupsize;
    double dense_f32_ms;
    char kernel[24];
} bench_result;

/* One representation of a value type (--dtype): made from a case's float32
 * matrix W (rows, cols), Y = W X on `threads` threads, the bytes a product
 * streams, the name of the kernel a batch runs.  bench_dtype.c lists them. */
typedef struct {
    const char *format;
    int (*make)(const float *W, int rows, int cols, int dtype, int groupsize, void **out);
    int (*mul)(const void *M, const float *X, int batch, float *Y, int threads);
    size_t (*bytes)(const void *M);
    const char *(*kernel)(const void *M, int batch);
    void (*free)(void *M);
} bench_qrep;

/* The run: its settings and every row measured so far. */
typedef struct {
    int threads, reps, json, verbose;
    double llc;    /* bytes */
    double load;   /* 1-minute load average when the run started */
    double rotate; /* bytes each working set must exceed */
    bench_result *res;
    int nres, cap;
    const char *isa;
    int dtypes;    /* --dtype given: the table has its value-type columns */
} bench_ctx;

/* 1 when case c's pattern fits the pair layout (2:4, 1:4). */
int bench_pairs_fit(const bench_case *c);

/* A 64-bit hash (splitmix64's finaliser): the benchmark's random numbers. */
uint64_t bench_mix(uint64_t z);

/* W (rows, cols): values uniform in [-1, 1) and never 0 where kept; zeros
 * with probability c->sparsity, or N of every M columns kept at random. */
void bench_gen_matrix(float *W, int rows, int cols, const bench_case *c, uint64_t seed);

/* Between timed blocks: let the previous block's worker threads go idle. */
void bench_settle(void);

/* Y = W X on OpenBLAS: sgemv for batch 1, sgemm otherwise. */
void bench_dense_mul(const float *W, int rows, int cols, const float *X, int batch, float *Y);

/* How many distinct matrices of this many bytes a rotation holds: enough
 * that together they exceed cx->rotate (2 .. BENCH_MAX_ROT). */
int bench_rotation_count(double bytes, const bench_ctx *cx);

/* Seconds per matrix of one pass of dense OpenBLAS over W[0 .. n). */
double bench_pass_dense(float **W, int n, int rows, int cols, const float *X, int b, float *Y);

/* X (n): the benchmark's input values, uniform in [-0.5, 0.5). */
void bench_gen_input(float *X, size_t n);

/* r zeroed, with the shape, batch and sparsity of case c. */
void bench_row_init(bench_result *r, int rows, int cols, const bench_case *c, int batch);

/* Print the row (unless --json) and keep it: 0, or 1 after a message. */
int bench_emit_row(bench_ctx *cx, const bench_result *r);

/* Append a row; -1 when out of memory. */
int bench_add_result(bench_ctx *cx, const bench_result *r);

/* "2:4" or "50%". */
void bench_case_label(const bench_case *c, char *buf, size_t n);

/* The table's header and one row of it (with the value-type columns when
 * cx->dtypes). */
void bench_print_header(const bench_ctx *cx);
void bench_print_row(const bench_ctx *cx, const bench_result *r);

/* One shape and sparsity, every format of formats[nf] (BENCH_AUTO or a
 * SPRUCE_FMT_*) and batch: 0, or 1 after a message. */
int bench_case_run(bench_ctx *cx, int rows, int cols, const bench_case *c, const int *formats,
                   int nf, const int *batches, int nb);

/* The part of bench_case_run after the choice: time the formats chosen[f][b]
 * (SPRUCE_FMT_* or BENCH_SKIPPED) that formats[f] stands for at batches[b],
 * on random matrices of the case made from seeds 0, 1, ... (the choice was
 * made on the matrix of seed 0).  0, or 1 after a message. */
int bench_case_measure(bench_ctx *cx, int rows, int cols, const bench_case *c,
                       const int *formats, int nf, const int (*chosen)[BENCH_MAX_BATCHES],
                       const int *batches, int nb);

/* --dtype: one shape and sparsity in value type dtype (bf16, int8, int4;
 * groupsize for int4): the dense kernel of the type and the representations
 * of bench_dtype.c that formats[0..nf) name (csr, bitmask, nm, auto)
 * against dense OpenBLAS float32, every batch: 0, or 1 after a
 * message. */
int bench_dtype_run(bench_ctx *cx, int rows, int cols, const bench_case *c, int dtype,
                    int groupsize, const int *formats, int nf, const int *batches, int nb);

/* The --sweep chart's file: created as path.tmp-<pid> before the sweep (so
 * that a path that cannot be written is found first), renamed to path when
 * the chart is complete. */
typedef struct {
    const char *path;
    char *tmp;
    FILE *f;
} bench_svg;

/* Create svg's temporary file: 0, or 1 after a message naming path. */
int bench_svg_open(const char *path, bench_svg *svg);

/* Remove the temporary file if it is still there (a failure before the
 * chart was written); a no-op after bench_write_svg and on a zeroed svg. */
void bench_svg_discard(bench_svg *svg);

/* The --sweep chart of cx's rows as SVG into svg, then renamed into place:
 * 0, or 1 after a message. */
int bench_write_svg(bench_svg *svg, const bench_ctx *cx, int rows, int cols, int big, int dtype,
                    int groupsize);

/* --model DIR: every linear layer, dense against the linear layer's choice,
 * then end-to-end decoding (not with --json): 0, or 1 after a message. */
/* --model: dtypes[0..ndt) the value types (none: float32 alone), groupsize
 * int4's. */
int bench_model(bench_ctx *cx, const char *dir, const int *batches, int nb, const int *dtypes,
                int ndt, int groupsize);

#endif
