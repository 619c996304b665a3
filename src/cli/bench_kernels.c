/* bench_kernels.c: `spruce bench` for one shape and sparsity: sparse kernels
 * against dense OpenBLAS.
 *
 * Random matrices of the case are generated and packed, and both dense
 * (OpenBLAS sgemv / sgemm) and sparse products are timed in the same run.
 * Enough distinct matrices are rotated that each working set (dense and every
 * sparse one) is more than cx->rotate bytes, so no figure is flattered by the
 * cache.  Each repetition is one pass over the whole rotation; dense and sparse
 * passes alternate; the median is reported.  `auto` times the formats the
 * linear layer chose for the first matrix, packed as the layer packs them.
 *
 * Products: W (rows, cols), X (cols, batch), Y (rows, batch), row-major. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "cli.h"
#include "cmd_bench.h"
#include "spruce_qmatrix.h"
#include "spruce_sparse.h"

/* ---- helpers ------------------------------------------------------------ */
uint64_t bench_mix(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void bench_gen_matrix(float *W, int rows, int cols, const bench_case *c, uint64_t seed)
{
    int i;
#pragma omp parallel for schedule(static)
    for (i = 0; i < rows; i++) {
        uint64_t s = bench_mix(seed * 1000003ull + (uint64_t)i);
        float *w = W + (int64_t)i * cols;
        const uint64_t thr = (uint64_t)(c->sparsity * 18446744073709551615.0);
        int j, g;
        for (j = 0; j < cols; j++) {
            s = bench_mix(s);
            w[j] = (float)((s >> 40) + 1) / 8388608.0f - 1.0f;
            if (w[j] == 0.0f)
                w[j] = 0.25f;
            if (!c->n && bench_mix(s ^ 0x5bd1e995ull) < thr)
                w[j] = 0.0f;
        }
        if (c->n) /* keep N random positions of every group of M */
            for (g = 0; g < cols; g += c->m) {
                int e = g + c->m < cols ? g + c->m : cols, width = e - g, k, drop;
                for (drop = width - c->n; drop > 0; drop--) {
                    s = bench_mix(s);
                    k = (int)(s % (uint64_t)width);
                    while (w[g + k] == 0.0f)
                        k = (k + 1) % width;
                    w[g + k] = 0.0f;
                }
            }
    }
}

void bench_dense_mul(const float *W, int rows, int cols, const float *X, int batch, float *Y)
{
    if (batch == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1.0f, W, cols, X, 1, 0.0f, Y, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, batch, cols, 1.0f, W, cols,
                    X, batch, 0.0f, Y, batch);
}

/* OpenBLAS spins its workers for a while after a call, OpenMP too: they should
 * not compete with the next block's threads for the cores. */
void bench_settle(void)
{
    usleep(50000);
}

void bench_case_label(const bench_case *c, char *buf, size_t n)
{
    if (c->n)
        snprintf(buf, n, "%d:%d", c->n, c->m);
    else
        snprintf(buf, n, "%.0f%%", 100 * c->sparsity);
}

int bench_add_result(bench_ctx *cx, const bench_result *r)
{
    if (cx->nres == cx->cap) {
        int cap = cx->cap ? 2 * cx->cap : 64;
        bench_result *p = realloc(cx->res, sizeof *p * cap);
        if (!p)
            return -1;
        cx->res = p;
        cx->cap = cap;
    }
    cx->res[cx->nres++] = *r;
    return 0;
}

void bench_gen_input(float *X, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        X[i] = (float)((bench_mix(i) >> 40) / 16777216.0) - 0.5f;
}

void bench_row_init(bench_result *r, int rows, int cols, const bench_case *c, int batch)
{
    memset(r, 0, sizeof *r);
    r->rows = rows;
    r->cols = cols;
    r->batch = batch;
    r->n = c->n;
    r->m = c->m;
    r->sparsity = c->n ? 1.0 - (double)c->n / c->m : c->sparsity;
}

int bench_emit_row(bench_ctx *cx, const bench_result *r)
{
    if (!cx->json)
        bench_print_row(cx, r);
    if (bench_add_result(cx, r) < 0) {
        cli_fail("bench: out of memory");
        return 1;
    }
    return 0;
}

void bench_print_header(const bench_ctx *cx)
{
    if (cx->dtypes)
        printf("%-15s %-9s %-11s %5s %8s %10s %10s %8s %7s %10s %8s %7s\n", "format", "dtype",
               "shape", "batch", "sparsity", "dense ms", "ms", "speedup", "GB/s", "f32 ms",
               "vs f32", "f32GB/s");
    else
        printf("%-15s %-11s %5s %8s %10s %10s %8s %7s\n", "format", "shape", "batch", "sparsity",
               "dense ms", "sparse ms", "speedup", "GB/s");
}

/* The row's format with its layout: "nm/pairs", "auto(nm/bits)". */
static void format_label(const bench_result *r, char *buf, size_t n)
{
    const size_t len = strlen(r->format);
    if (!r->layout[0])
        snprintf(buf, n, "%s", r->format);
    else if (len && r->format[len - 1] == ')')
        snprintf(buf, n, "%.*s/%s)", (int)(len - 1), r->format, r->layout);
    else
        snprintf(buf, n, "%s/%s", r->format, r->layout);
}

void bench_print_row(const bench_ctx *cx, const bench_result *r)
{
    char shape[32], sp[16], dt[24], label[40];
    format_label(r, label, sizeof label);
    snprintf(shape, sizeof shape, "%dx%d", r->rows, r->cols);
    if (r->n)
        snprintf(sp, sizeof sp, "%d:%d", r->n, r->m);
    else
        snprintf(sp, sizeof sp, "%.0f%%", 100 * r->sparsity);
    if (r->groupsize)
        snprintf(dt, sizeof dt, "%s-g%d", spruce_dtype_name(r->dtype), r->groupsize);
    else
        snprintf(dt, sizeof dt, "%s", spruce_dtype_name(r->dtype));
    if (cx->dtypes)
        printf("%-15s %-9s %-11s %5d %8s %10.3f %10.3f %7.2fx %7.1f %10.3f %7.2fx %7.1f\n",
               label, dt, shape, r->batch, sp, r->dense_ms, r->sparse_ms, r->speedup, r->gbps,
               r->dense_f32_ms, r->dense_f32_ms / r->sparse_ms, r->dense_gbps);
    else
        printf("%-15s %-11s %5d %8s %10.3f %10.3f %7.2fx %7.1f\n", label, shape, r->batch,
               sp, r->dense_ms, r->sparse_ms, r->speedup, r->gbps);
    fflush(stdout);
}

/* ---- the timed passes ----------------------------------------------------- */
/* Seconds per matrix of one pass over the rotation.  Each pass starts with one
 * untimed product on the last matrix of the rotation, which wakes the worker
 * threads up (and is evicted again by the time the pass reaches it). */
double bench_pass_dense(float **W, int n, int rows, int cols, const float *X, int b, float *Y)
{
    double t0;
    int i;
    bench_dense_mul(W[n - 1], rows, cols, X, b, Y);
    t0 = spruce_clock_now();
    for (i = 0; i < n; i++)
        bench_dense_mul(W[i], rows, cols, X, b, Y);
    return (spruce_clock_now() - t0) / n;
}

static double pass_sparse(spruce_sparse **A, int n, const float *X, int b, float *Y, int *rc)
{
    double t0;
    int i;
    if ((*rc = spruce_sparse_mul(A[n - 1], X, b, Y)) < 0)
        return -1;
    t0 = spruce_clock_now();
    for (i = 0; i < n; i++)
        if ((*rc = spruce_sparse_mul(A[i], X, b, Y)) < 0)
            return -1;
    return (spruce_clock_now() - t0) / n;
}

/* ---- which formats -------------------------------------------------------- */
/* chosen[f][b]: the format that formats[f] stands for at batches[b]; `auto`
 * asks the linear layer on W, the matrix of seed 0. */
static int choose_formats(const bench_ctx *cx, const float *W, int rows, int cols,
                          const bench_case *c, const int *formats, int nf, const int *batches,
                          int nb, int (*chosen)[BENCH_MAX_BATCHES])
{
    int f, b, rc;
    char label[16];
    bench_case_label(c, label, sizeof label);
    for (f = 0; f < nf; f++) {
        spruce_linear_opts o;
        spruce_linear *lin;
        double t0 = spruce_clock_now();
        for (b = 0; b < nb; b++)
            chosen[f][b] = formats[f];
        if ((formats[f] == SPRUCE_FMT_NM || formats[f] == BENCH_NM_PAIRS) && !c->n) {
            if (cx->verbose)
                fprintf(stderr, "bench: %dx%d %s: nm needs --pattern, skipped\n", rows, cols,
                        label);
            for (b = 0; b < nb; b++)
                chosen[f][b] = BENCH_SKIPPED;
        }
        if (formats[f] == BENCH_NM_PAIRS && c->n && !bench_pairs_fit(c)) {
            if (cx->verbose)
                fprintf(stderr, "bench: %dx%d %s: the pair layout holds 2:4 and 1:4 only, "
                        "skipped\n", rows, cols, label);
            for (b = 0; b < nb; b++)
                chosen[f][b] = BENCH_SKIPPED;
        }
        if (formats[f] != BENCH_AUTO)
            continue;
        spruce_linear_opts_init(&o);
        o.nthreads = cx->threads;
        o.n = c->n;
        o.m = c->m;
        o.nbatches = nb;
        for (b = 0; b < nb; b++)
            o.batches[b] = batches[b];
        if ((rc = spruce_linear_create(W, rows, cols, &o, &lin)) < 0) {
            cli_error(rc, "bench: %dx%d %s: linear layer", rows, cols, label);
            return 1;
        }
        for (b = 0; b < nb; b++) {
            char desc[1024];
            chosen[f][b] = spruce_linear_format(lin, batches[b]);
            if (spruce_linear_layout(lin, batches[b]) == SPRUCE_LAYOUT_PAIRS)
                chosen[f][b] = BENCH_NM_PAIRS;
            if (cx->verbose && spruce_linear_describe(lin, batches[b], desc, sizeof desc) >= 0)
                fprintf(stderr, "bench: %dx%d %s batch %d: %s\n", rows, cols, label, batches[b],
                        desc);
        }
        spruce_linear_free(lin);
        if (cx->verbose) {
            fprintf(stderr, "bench: %dx%d %s: auto chose", rows, cols, label);
            for (b = 0; b < nb; b++)
                fprintf(stderr, " %s (batch %d)", chosen[f][b] == BENCH_NM_PAIRS ? "nm/pairs"
                        : spruce_format_name(chosen[f][b]), batches[b]);
            fprintf(stderr, " in %.1f s\n", spruce_clock_now() - t0);
        }
    }
    return 0;
}

/* ---- the rotation: distinct matrices, more bytes than the cache ----------- */
typedef struct {
    int nd, nrot[BENCH_NREP];      /* how many dense matrices, and packed ones by format */
    float **Wd;                    /* (nd) dense copies */
    spruce_sparse **A[BENCH_NREP]; /* (nrot[f]) packed copies, by format (and nm pairs) */
} rotation_set;

int bench_rotation_count(double bytes, const bench_ctx *cx)
{
    double n = floor(cx->rotate / bytes) + 1;
    return n < 2 ? 2 : n > BENCH_MAX_ROT ? BENCH_MAX_ROT : (int)n;
}

static void rotation_free(rotation_set *rs)
{
    int f, i;
    for (f = 1; f < BENCH_NREP; f++) {
        for (i = 0; rs->A[f] && i < rs->nrot[f]; i++)
            spruce_sparse_free(rs->A[f][i]);
        free(rs->A[f]);
    }
    for (i = 0; rs->Wd && i < rs->nd; i++)
        free(rs->Wd[i]);
    free(rs->Wd);
}

/* How format f packs a matrix of case c.  N:M uses the case's pattern or, for
 * an unstructured case, the one the linear layer tries without a pattern
 * (SPRUCE_LINEAR_DEFAULT_N:M): `auto` may have chosen N:M because the matrix
 * happened to fit it. */
static spruce_pack_opts pack_opts(const bench_ctx *cx, const bench_case *c, int f)
{
    spruce_pack_opts po = {f == BENCH_NM_PAIRS ? SPRUCE_FMT_NM : f,
                           c->n ? c->n : SPRUCE_LINEAR_DEFAULT_N,
                           c->n ? c->m : SPRUCE_LINEAR_DEFAULT_M, cx->threads,
                           f == BENCH_NM_PAIRS ? SPRUCE_LAYOUT_PAIRS : SPRUCE_LAYOUT_BITS};
    return po;
}

int bench_pairs_fit(const bench_case *c)
{
    return c->n > 0 && c->n <= 2 && c->m == 4;
}

/* What matrix i of the rotation packs from in format f: the matrix of seed i
 * (Wi), except N:M for an unstructured case, where only W0, the matrix the
 * linear layer inspected, is known to fit the pattern (another random matrix
 * of the same sparsity may not): there every copy is packed from W0.  The
 * copies are as many and as large, so the cache sees the same working set. */
static const float *pack_source(const bench_case *c, int f, const float *W0, const float *Wi)
{
    return (f == SPRUCE_FMT_NM || f == BENCH_NM_PAIRS) && !c->n ? W0 : Wi;
}

/* Pack the rotation of every format with want[f] and copy the dense one:
 * matrix i is the case's matrix of seed i; W0 holds the one of seed 0. */
static int rotation_build(const bench_ctx *cx, int rows, int cols, const bench_case *c,
                          const int *want, const float *W0, float *W, rotation_set *rs)
{
    const size_t bytes = sizeof *W * (size_t)rows * cols;
    int f, i, rc, nmax;
    char label[16];
    bench_case_label(c, label, sizeof label);
    memset(rs, 0, sizeof *rs);
    rs->nd = nmax = bench_rotation_count((double)bytes, cx);
    for (f = 1; f < BENCH_NREP; f++) {
        spruce_pack_opts po = pack_opts(cx, c, f);
        spruce_sparse *S;
        if (!want[f])
            continue;
        if ((rc = spruce_sparse_pack(W0, NULL, rows, cols, &po, &S)) < 0)
            goto pack_failed;
        rs->nrot[f] = bench_rotation_count((double)spruce_sparse_bytes(S), cx);
        spruce_sparse_free(S);
        if (rs->nrot[f] > nmax)
            nmax = rs->nrot[f];
        if (!(rs->A[f] = calloc(rs->nrot[f], sizeof *rs->A[f])))
            goto nomem;
    }
    if (!(rs->Wd = calloc(rs->nd, sizeof *rs->Wd)))
        goto nomem;
    if (cx->verbose)
        fprintf(stderr, "bench: %dx%d %s: rotating %d dense (%.0f MB)%s%s%s%s, LLC %.0f MB\n",
                rows, cols, label, rs->nd, rs->nd * (double)bytes / 1e6, want[1] ? ", csr" : "",
                want[2] ? ", bitmask" : "", want[3] ? ", nm" : "",
                want[BENCH_NM_PAIRS] ? ", nm/pairs" : "", cx->llc / 1048576.0);
    for (i = 0; i < nmax; i++) {
        bench_gen_matrix(W, rows, cols, c, (uint64_t)i);
        for (f = 1; f < BENCH_NREP; f++) {
            spruce_pack_opts po = pack_opts(cx, c, f);
            if (i < rs->nrot[f] &&
                (rc = spruce_sparse_pack(pack_source(c, f, W0, W), NULL, rows, cols, &po,
                                         &rs->A[f][i])) < 0)
                goto pack_failed;
        }
        if (i < rs->nd) {
            if (!(rs->Wd[i] = malloc(bytes)))
                goto nomem;
            memcpy(rs->Wd[i], W, bytes);
        }
    }
    return 0;
pack_failed:
    cli_error(rc, "bench: %dx%d %s: packing as %s", rows, cols, label,
              f == BENCH_NM_PAIRS ? "nm/pairs" : spruce_format_name(f));
    return 1;
nomem:
    cli_fail("bench: out of memory for the rotation of %dx%d matrices", rows, cols);
    return 1;
}

/* ---- one batch size -------------------------------------------------------- */
/* One warm-up pass of each representation with use[f], then rounds of one
 * timed pass of each, interleaved so that dense and sparse see the same
 * machine (others may be using it); before every pass the previous pass's
 * worker threads are given time to go idle.  The median seconds per matrix:
 * dense in *dense_s, format f in fmt_s[f].  0, or a negative SPRUCE_E* code. */
static int time_batch(const bench_ctx *cx, const rotation_set *rs, int rows, int cols,
                      const float *X, int bs, float *Y, const int *use, double *dense_s,
                      double *fmt_s)
{
    double t[BENCH_NREP][64], s;
    const int reps = cx->reps > 64 ? 64 : cx->reps;
    int r, f, rc = 0;
    for (r = -1; r < reps; r++) {
        bench_settle();
        s = bench_pass_dense(rs->Wd, rs->nd, rows, cols, X, bs, Y);
        if (r >= 0)
            t[0][r] = s;
        for (f = 1; f < BENCH_NREP; f++) {
            if (!use[f])
                continue;
            bench_settle();
            if ((s = pass_sparse(rs->A[f], rs->nrot[f], X, bs, Y, &rc)) < 0)
                return rc;
            if (r >= 0)
                t[f][r] = s;
        }
    }
    *dense_s = spruce_clock_median(t[0], reps);
    for (f = 1; f < BENCH_NREP; f++)
        fmt_s[f] = use[f] ? spruce_clock_median(t[f], reps) : 0.0;
    return 0;
}

/* The row of format fmt (what formats[f] stood for) at batch bs. */
static bench_result make_row(const rotation_set *rs, int rows, int cols, const bench_case *c,
                             int is_auto, int fmt, int bs, double dense_s, const double *fmt_s)
{
    const double dense_bytes = 4.0 * rows * cols;
    bench_result res;
    bench_row_init(&res, rows, cols, c, bs);
    snprintf(res.format, sizeof res.format, is_auto ? "auto(%s)" : "%s",
             spruce_format_name(fmt == BENCH_NM_PAIRS ? SPRUCE_FMT_NM : fmt));
    if (fmt == SPRUCE_FMT_NM || fmt == BENCH_NM_PAIRS)
        snprintf(res.layout, sizeof res.layout, "%s",
                 spruce_layout_name(fmt == BENCH_NM_PAIRS ? SPRUCE_LAYOUT_PAIRS
                                                          : SPRUCE_LAYOUT_BITS));
    res.dense_ms = 1e3 * dense_s;
    res.dense_f32_ms = res.dense_ms;
    res.sparse_ms = 1e3 * (fmt == SPRUCE_FMT_DENSE ? dense_s : fmt_s[fmt]);
    res.speedup = res.dense_ms / res.sparse_ms;
    res.dense_gbps = dense_bytes / dense_s / 1e9;
    res.rot_dense = rs->nd;
    if (fmt == SPRUCE_FMT_DENSE) {
        res.gbps = res.dense_gbps;
        res.ceiling = 1.0;
        res.rot_sparse = rs->nd;
    } else {
        double bytes = (double)spruce_sparse_bytes(rs->A[fmt][0]);
        res.gbps = bytes / fmt_s[fmt] / 1e9;
        res.ceiling = dense_bytes / bytes;
        res.rot_sparse = rs->nrot[fmt];
    }
    return res;
}

/* ---- one shape and sparsity: every format and batch ---------------------- */
int bench_case_measure(bench_ctx *cx, int rows, int cols, const bench_case *c,
                       const int *formats, int nf, const int (*chosen)[BENCH_MAX_BATCHES],
                       const int *batches, int nb)
{
    int rc = 0, f, b, maxb = 1;
    int want[BENCH_NREP] = {0}; /* sparse formats to pack */
    rotation_set rs;
    float *W0 = NULL, *W = NULL, *X = NULL, *Y = NULL;
    char label[16];
    bench_case_label(c, label, sizeof label);
    memset(&rs, 0, sizeof rs);
    for (b = 0; b < nb; b++)
        if (batches[b] > maxb)
            maxb = batches[b];
    for (f = 0; f < nf; f++)
        for (b = 0; b < nb; b++)
            if (chosen[f][b] > 0)
                want[chosen[f][b]] = 1;
    if (!(W0 = malloc(sizeof *W0 * (size_t)rows * cols)) ||
        !(W = malloc(sizeof *W * (size_t)rows * cols)) ||
        !(X = malloc(sizeof *X * (size_t)cols * maxb)) ||
        !(Y = malloc(sizeof *Y * (size_t)rows * maxb))) {
        cli_fail("bench: out of memory for a %dx%d matrix", rows, cols);
        rc = 1;
        goto done;
    }
    bench_gen_input(X, (size_t)cols * maxb);
    bench_gen_matrix(W0, rows, cols, c, 0);
    if ((rc = rotation_build(cx, rows, cols, c, want, W0, W, &rs)))
        goto done;

    for (b = 0; b < nb; b++) {
        double dense_s = 0, fmt_s[BENCH_NREP] = {0};
        int use[BENCH_NREP] = {1}, g;
        for (f = 1; f < BENCH_NREP; f++)
            for (g = 0; g < nf; g++)
                use[f] |= want[f] && chosen[g][b] == f;
        if ((rc = time_batch(cx, &rs, rows, cols, X, batches[b], Y, use, &dense_s, fmt_s)) < 0) {
            cli_error(rc, "bench: %dx%d %s: sparse product", rows, cols, label);
            rc = 1;
            goto done;
        }
        for (f = 0; f < nf; f++) {
            bench_result res;
            if (chosen[f][b] == BENCH_SKIPPED)
                continue;
            res = make_row(&rs, rows, cols, c, formats[f] == BENCH_AUTO, chosen[f][b],
                           batches[b], dense_s, fmt_s);
            if ((rc = bench_emit_row(cx, &res)))
                goto done;
        }
    }
done:
    rotation_free(&rs);
    free(W0);
    free(W);
    free(X);
    free(Y);
    return rc;
}

int bench_case_run(bench_ctx *cx, int rows, int cols, const bench_case *c, const int *formats,
                   int nf, const int *batches, int nb)
{
    int chosen[BENCH_MAX_FORMATS][BENCH_MAX_BATCHES], rc;
    float *W = malloc(sizeof *W * (size_t)rows * cols);
    if (!W) {
        cli_fail("bench: out of memory for a %dx%d matrix", rows, cols);
        return 1;
    }
    bench_gen_matrix(W, rows, cols, c, 0);
    rc = choose_formats(cx, W, rows, cols, c, formats, nf, batches, nb, chosen);
    free(W);
    if (rc)
        return rc;
    return bench_case_measure(cx, rows, cols, c, formats, nf,
                              (const int (*)[BENCH_MAX_BATCHES])chosen, batches, nb);
}
