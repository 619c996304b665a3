/* bench_dtype.c: `spruce bench --dtype`: the value types (bf16, int8, int4)
 * of one shape and sparsity against dense OpenBLAS float32.
 *
 * The case's random float32 matrices are quantized to the type; each
 * representation of the type in bench_qreps[] (the dense kernels, bitmask,
 * N:M when the case is N:M, and the linear layer's choice among them) holds
 * the same values and is rotated past the
 * cache as bench_kernels.c rotates the float32 ones, and timed in the same
 * rounds as dense float32 OpenBLAS (sgemv / sgemm), interleaved; the median
 * is reported.  Every row carries dense_ms, the dense kernel of the same value
 * type, and dense_f32_ms, OpenBLAS float32, from the same run.
 *
 * Products: W (rows, cols), X (cols, batch), Y (rows, batch), row-major. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd_bench.h"
#include "spruce_qmatrix.h"
#include "spruce_qsparse.h"
#include "spruce_sparse.h"

/* ---- the representations of a value type ------------------------------------ */
static int dense_make(const float *W, int rows, int cols, int dtype, int groupsize, void **out)
{
    return spruce_qmatrix_quantize(W, rows, cols, dtype, groupsize, 0, (spruce_qmatrix **)out);
}

static int dense_mul(const void *M, const float *X, int batch, float *Y, int threads)
{
    return spruce_qmatrix_product(M, X, batch, Y, threads);
}

static size_t dense_bytes(const void *M) { return spruce_qmatrix_bytes(M); }
static const char *dense_kernel(const void *M, int batch)
{
    return spruce_qmatrix_kernel_name(M, batch);
}
static void dense_free(void *M) { spruce_qmatrix_free(M); }

/* The case being measured (its N:M pattern) and the threads: for the makes. */
static const bench_case *cur_case;
static int cur_threads;
static int cur_want[8]; /* the representations --format asked for */

/* Bitmask and N:M of the values dense_make gives (the weights whose level
 * dequantizes to non-zero): SPRUCE_EPATTERN when the case is not N:M. */
static int qsparse_make(const float *W, int rows, int cols, int dtype, int groupsize, int format,
                        void **out)
{
    spruce_qmatrix *Q = NULL;
    spruce_pack_opts po = {format == BENCH_NM_PAIRS ? SPRUCE_FMT_NM : format, cur_case->n,
                           cur_case->m, cur_threads,
                           format == BENCH_NM_PAIRS ? SPRUCE_LAYOUT_PAIRS : SPRUCE_LAYOUT_BITS};
    int rc;
    if ((format == SPRUCE_FMT_NM || format == BENCH_NM_PAIRS) && cur_case->n <= 0)
        return SPRUCE_EPATTERN;
    if (format == BENCH_NM_PAIRS && !bench_pairs_fit(cur_case))
        return SPRUCE_EPATTERN; /* not a layout of this pattern: nothing to time */
    if ((rc = spruce_qmatrix_quantize(W, rows, cols, dtype, groupsize, 0, &Q)) < 0)
        return rc;
    rc = spruce_qsparse_pack(Q, NULL, &po, (spruce_qsparse **)out);
    spruce_qmatrix_free(Q);
    return rc;
}
static int bitmask_make(const float *W, int rows, int cols, int dtype, int groupsize, void **out)
{
    return qsparse_make(W, rows, cols, dtype, groupsize, SPRUCE_FMT_BITMASK, out);
}
static int nm_make(const float *W, int rows, int cols, int dtype, int groupsize, void **out)
{
    return qsparse_make(W, rows, cols, dtype, groupsize, SPRUCE_FMT_NM, out);
}
static int nm_pairs_make(const float *W, int rows, int cols, int dtype, int groupsize, void **out)
{
    return qsparse_make(W, rows, cols, dtype, groupsize, BENCH_NM_PAIRS, out);
}
static int csr_make(const float *W, int rows, int cols, int dtype, int groupsize, void **out)
{
    return qsparse_make(W, rows, cols, dtype, groupsize, SPRUCE_FMT_CSR, out);
}
static int qsparse_mul(const void *M, const float *X, int batch, float *Y, int threads)
{
    (void)threads; /* the threads it was packed for */
    return spruce_qsparse_mul(M, X, batch, Y);
}
static size_t qsparse_bytes(const void *M) { return spruce_qsparse_bytes(M); }
static const char *qsparse_kernel(const void *M, int batch)
{
    (void)M, (void)batch;
    return spruce_sparse_isa_name(spruce_sparse_isa());
}
static void qsparse_free(void *M) { spruce_qsparse_free(M); }

/* The linear layer of the type: its choice among the three, timed at pack
 * time for batches 1 and 16. */
static int auto_make(const float *W, int rows, int cols, int dtype, int groupsize, void **out)
{
    spruce_linear_opts o;
    spruce_linear_opts_init(&o);
    o.dtype = dtype;
    o.groupsize = groupsize;
    o.nthreads = cur_threads;
    if (cur_case->n > 0)
        o.n = cur_case->n, o.m = cur_case->m;
    return spruce_linear_create(W, rows, cols, &o, (spruce_linear **)out);
}
static int auto_mul(const void *M, const float *X, int batch, float *Y, int threads)
{
    (void)threads;
    return spruce_linear_forward(M, X, batch, Y);
}
static size_t auto_bytes(const void *M) { return spruce_linear_bytes(M); }
static const char *auto_kernel(const void *M, int batch)
{
    return spruce_format_name(spruce_linear_format(M, batch));
}
static void auto_free(void *M) { spruce_linear_free(M); }

/* The first entry must be "dense": every row's dense_ms is its time. */
static const bench_qrep bench_qreps[] = {
    {"dense", dense_make, dense_mul, dense_bytes, dense_kernel, dense_free},
    {"csr", csr_make, qsparse_mul, qsparse_bytes, qsparse_kernel, qsparse_free},
    {"bitmask", bitmask_make, qsparse_mul, qsparse_bytes, qsparse_kernel, qsparse_free},
    {"nm", nm_make, qsparse_mul, qsparse_bytes, qsparse_kernel, qsparse_free},
    {"nm", nm_pairs_make, qsparse_mul, qsparse_bytes, qsparse_kernel, qsparse_free},
    {"auto", auto_make, auto_mul, auto_bytes, auto_kernel, auto_free},
};
#define NREPS ((int)(sizeof bench_qreps / sizeof *bench_qreps))

/* ---- the rotation ----------------------------------------------------------- */
typedef struct {
    int nd, nrot[NREPS];
    float **Wd;           /* (nd) dense float32 copies */
    void **M[NREPS];      /* (nrot[k]) matrices of representation k */
} qrotation;

static void qrotation_free(qrotation *rs)
{
    int k, i;
    for (k = 0; k < NREPS; k++) {
        for (i = 0; rs->M[k] && i < rs->nrot[k] && rs->M[k][i]; i++)
            bench_qreps[k].free(rs->M[k][i]);
        free(rs->M[k]);
    }
    for (i = 0; rs->Wd && i < rs->nd; i++)
        free(rs->Wd[i]);
    free(rs->Wd);
}

static int qrotation_build(const bench_ctx *cx, int rows, int cols, const bench_case *c,
                           int dtype, int groupsize, float *W, qrotation *rs)
{
    const size_t bytes = sizeof *W * (size_t)rows * cols;
    int k, i, rc, nmax;
    memset(rs, 0, sizeof *rs);
    rs->nd = nmax = bench_rotation_count((double)bytes, cx);
    if (!(rs->Wd = calloc(rs->nd, sizeof *rs->Wd)))
        goto nomem;
    bench_gen_matrix(W, rows, cols, c, 0);
    for (k = 0; k < NREPS; k++) {
        void *M;
        if (!cur_want[k])
            continue;
        rc = bench_qreps[k].make(W, rows, cols, dtype, groupsize, &M);
        if (rc == SPRUCE_EPATTERN && k > 0) { /* nm of a case that is not N:M */
            spruce_errclear();
            continue;
        }
        if (rc < 0)
            goto make_failed;
        rs->nrot[k] = bench_rotation_count((double)bench_qreps[k].bytes(M), cx);
        bench_qreps[k].free(M);
        nmax = rs->nrot[k] > nmax ? rs->nrot[k] : nmax;
        if (!(rs->M[k] = calloc(rs->nrot[k], sizeof *rs->M[k])))
            goto nomem;
    }
    if (cx->verbose)
        fprintf(stderr, "bench: %dx%d %s: rotating %d dense f32 (%.0f MB), %d %s\n", rows, cols,
                spruce_dtype_name(dtype), rs->nd, rs->nd * (double)bytes / 1e6, rs->nrot[0],
                spruce_dtype_name(dtype));
    for (i = 0; i < nmax; i++) {
        bench_gen_matrix(W, rows, cols, c, (uint64_t)i);
        for (k = 0; k < NREPS; k++)
            if (i < rs->nrot[k] &&
                (rc = bench_qreps[k].make(W, rows, cols, dtype, groupsize, &rs->M[k][i])) < 0)
                goto make_failed;
        if (i < rs->nd) {
            if (!(rs->Wd[i] = malloc(bytes)))
                goto nomem;
            memcpy(rs->Wd[i], W, bytes);
        }
    }
    return 0;
make_failed:
    cli_error(rc, "bench: %dx%d: %s as %s", rows, cols, bench_qreps[k].format,
              spruce_dtype_name(dtype));
    return 1;
nomem:
    cli_fail("bench: out of memory for the rotation of %dx%d matrices", rows, cols);
    return 1;
}

/* Seconds per matrix of one pass over representation k's rotation (after one
 * untimed product that wakes the threads up). */
static double qpass(const bench_ctx *cx, const qrotation *rs, int k, const float *X, int b,
                    float *Y, int *rc)
{
    const int n = rs->nrot[k];
    double t0;
    int i;
    if ((*rc = bench_qreps[k].mul(rs->M[k][n - 1], X, b, Y, cx->threads)) < 0)
        return -1;
    t0 = spruce_clock_now();
    for (i = 0; i < n; i++)
        if ((*rc = bench_qreps[k].mul(rs->M[k][i], X, b, Y, cx->threads)) < 0)
            return -1;
    return (spruce_clock_now() - t0) / n;
}

/* The layout of representation k's matrix M at batch bs, for N:M rows:
 * "bits" or "pairs" ("" for the others). */
static void layout_of(int k, const void *M, int bs, char *buf, size_t n)
{
    int l = -1;
    if (bench_qreps[k].make == nm_make || bench_qreps[k].make == nm_pairs_make)
        l = spruce_qsparse_layout(M);
    else if (bench_qreps[k].make == auto_make && spruce_linear_format(M, bs) == SPRUCE_FMT_NM)
        l = spruce_linear_layout(M, bs);
    snprintf(buf, n, "%s", l < 0 ? "" : spruce_layout_name(l));
}

/* Representation k is among the --format list (dense, the baseline, always). */
static int wanted(int k, const int *formats, int nf)
{
    static const int fmt[NREPS] = {SPRUCE_FMT_DENSE, SPRUCE_FMT_CSR, SPRUCE_FMT_BITMASK,
                                   SPRUCE_FMT_NM, BENCH_NM_PAIRS, BENCH_AUTO};
    int f;
    for (f = 0; f < nf; f++)
        if (formats[f] == fmt[k])
            return 1;
    return k == 0;
}

int bench_dtype_run(bench_ctx *cx, int rows, int cols, const bench_case *c, int dtype,
                    int groupsize, const int *formats, int nf, const int *batches, int nb)
{
    const int reps = cx->reps > 64 ? 64 : cx->reps;
    int rc = 0, b, k, r, maxb = 1;
    qrotation rs;
    float *W = NULL, *X = NULL, *Y = NULL;
    memset(&rs, 0, sizeof rs);
    for (b = 0; b < nb; b++)
        maxb = batches[b] > maxb ? batches[b] : maxb;
    if (!(W = malloc(sizeof *W * (size_t)rows * cols)) ||
        !(X = malloc(sizeof *X * (size_t)cols * maxb)) ||
        !(Y = malloc(sizeof *Y * (size_t)rows * maxb))) {
        cli_fail("bench: out of memory for a %dx%d matrix", rows, cols);
        rc = 1;
        goto done;
    }
    bench_gen_input(X, (size_t)cols * maxb);
    cur_case = c;
    cur_threads = cx->threads;
    for (k = 0; k < NREPS; k++)
        cur_want[k] = wanted(k, formats, nf);
    if ((rc = qrotation_build(cx, rows, cols, c, dtype, groupsize, W, &rs)))
        goto done;
    for (b = 0; b < nb; b++) {
        const int bs = batches[b];
        double t[1 + NREPS][64], med[1 + NREPS], s;
        for (r = -1; r < reps; r++) { /* a warm-up round, then timed rounds */
            bench_settle();
            s = bench_pass_dense(rs.Wd, rs.nd, rows, cols, X, bs, Y);
            if (r >= 0)
                t[0][r] = s;
            for (k = 0; k < NREPS; k++) {
                if (!rs.nrot[k])
                    continue;
                bench_settle();
                if ((s = qpass(cx, &rs, k, X, bs, Y, &rc)) < 0) {
                    cli_error(rc, "bench: %dx%d %s: %s product", rows, cols,
                              spruce_dtype_name(dtype), bench_qreps[k].format);
                    rc = 1;
                    goto done;
                }
                if (r >= 0)
                    t[1 + k][r] = s;
            }
        }
        for (k = 0; k <= NREPS; k++)
            med[k] = k == 0 || rs.nrot[k - 1] ? spruce_clock_median(t[k], reps) : 0;
        for (k = 0; k < NREPS; k++) {
            bench_result res;
            if (!rs.nrot[k])
                continue;
            /* what a product at this batch streams (auto holds one
             * representation per batch size it was tuned for) */
            const double bytes = !strcmp(bench_qreps[k].format, "auto")
                                     ? (double)spruce_linear_batch_bytes(rs.M[k][0], bs)
                                     : (double)bench_qreps[k].bytes(rs.M[k][0]);
            bench_row_init(&res, rows, cols, c, bs);
            snprintf(res.format, sizeof res.format, "%s", bench_qreps[k].format);
            res.dtype = dtype;
            res.groupsize = dtype == SPRUCE_DT_INT4 ? groupsize : 0;
            res.dense_f32_ms = 1e3 * med[0];
            res.dense_ms = 1e3 * med[1];
            res.sparse_ms = 1e3 * med[1 + k];
            res.speedup = res.dense_ms / res.sparse_ms;
            res.dense_gbps = 4.0 * rows * cols / med[0] / 1e9;
            res.gbps = bytes / med[1 + k] / 1e9;
            res.ceiling = 4.0 * rows * cols / bytes;
            res.rot_dense = rs.nd;
            res.rot_sparse = rs.nrot[k];
            snprintf(res.kernel, sizeof res.kernel, "%s",
                     bench_qreps[k].kernel(rs.M[k][0], bs));
            layout_of(k, rs.M[k][0], bs, res.layout, sizeof res.layout);
            if ((rc = bench_emit_row(cx, &res)))
                goto done;
        }
    }
done:
    qrotation_free(&rs);
    free(W);
    free(X);
    free(Y);
    return rc;
}
