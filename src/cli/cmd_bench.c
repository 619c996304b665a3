/* cmd_bench.c: `spruce bench`: sparse kernels against dense OpenBLAS, and the
 * dispatch of `spruce bench prune` (cmd_bench_prune.c).
 *
 * For every shape, sparsity and format, random matrices are generated and
 * packed, and both dense (OpenBLAS sgemv / sgemm) and sparse products are timed
 * in the same run.  Enough distinct matrices are rotated that each working set
 * (dense and every sparse one) is more than twice the last-level cache, so no
 * figure is flattered by the cache.  Each repetition is one pass over the
 * whole rotation; dense and sparse passes alternate; the median is reported.
 *
 * Products: W (rows, cols), X (cols, batch), Y (rows, batch), row-major. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>
#include <jansson.h>
#include <omp.h>

#include "cli.h"
#include "spruce_ckpt.h"
#include "spruce_decode.h"
#include "spruce_model.h"
#include "spruce_sparse.h"

#define MAX_SHAPES 16
#define MAX_CASES 32
#define MAX_BATCHES 8
#define MAX_FORMATS 5
#define MAX_ROT 512

typedef struct {
    double sparsity; /* unstructured: fraction of zeros */
    int n, m;        /* N:M when n > 0 */
} bcase;

typedef struct {
    char format[24]; /* "bitmask", "auto(bitmask)" ... */
    int rows, cols, batch, n, m;
    double sparsity, dense_ms, sparse_ms, speedup, gbps, dense_gbps, ceiling;
    int rot_dense, rot_sparse;
} bresult;

typedef struct {
    int threads, reps, json, verbose;
    double llc;  /* bytes */
    double load; /* 1-minute load average when the run started */
    double rotate; /* bytes each working set must exceed */
    bresult *res;
    int nres, cap;
    const char *isa;
} bctx;

/* ---- helpers ------------------------------------------------------------ */
static uint64_t mix(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* W (rows, cols): values uniform in [-1, 1) and never 0 where kept; zeros
 * with probability c.sparsity, or N of every M columns kept at random. */
static void gen_matrix(float *W, int rows, int cols, const bcase *c, uint64_t seed)
{
    int i;
#pragma omp parallel for schedule(static)
    for (i = 0; i < rows; i++) {
        uint64_t s = mix(seed * 1000003ull + (uint64_t)i);
        float *w = W + (int64_t)i * cols;
        const uint64_t thr = (uint64_t)(c->sparsity * 18446744073709551615.0);
        int j, g;
        for (j = 0; j < cols; j++) {
            s = mix(s);
            w[j] = (float)((s >> 40) + 1) / 8388608.0f - 1.0f;
            if (w[j] == 0.0f)
                w[j] = 0.25f;
            if (!c->n && mix(s ^ 0x5bd1e995ull) < thr)
                w[j] = 0.0f;
        }
        if (c->n) /* keep N random positions of every group of M */
            for (g = 0; g < cols; g += c->m) {
                int e = g + c->m < cols ? g + c->m : cols, width = e - g, k, drop;
                for (drop = width - c->n; drop > 0; drop--) {
                    s = mix(s);
                    k = (int)(s % (uint64_t)width);
                    while (w[g + k] == 0.0f)
                        k = (k + 1) % width;
                    w[g + k] = 0.0f;
                }
            }
    }
}

static double llc_bytes(void)
{
    long v = sysconf(_SC_LEVEL3_CACHE_SIZE);
    FILE *f;
    if (v > 0)
        return (double)v;
    f = fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r");
    if (f) {
        char unit = 0;
        long k = 0;
        if (fscanf(f, "%ld%c", &k, &unit) >= 1) {
            fclose(f);
            return (double)k * (unit == 'M' ? 1048576.0 : unit == 'K' ? 1024.0 : 1.0);
        }
        fclose(f);
    }
    return 32.0 * 1048576.0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *t, int n)
{
    qsort(t, n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

static void dense_mul(const float *W, int rows, int cols, const float *X, int batch, float *Y)
{
    if (batch == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1.0f, W, cols, X, 1, 0.0f, Y, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, batch, cols, 1.0f, W, cols,
                    X, batch, 0.0f, Y, batch);
}

/* Seconds per matrix of one pass over the rotation. */
/* Each pass starts with one untimed product on the last matrix of the
 * rotation, which wakes the worker threads up (and is evicted again by the
 * time the pass reaches it). */
static double pass_dense(float **W, int n, int rows, int cols, const float *X, int b, float *Y)
{
    double t0;
    int i;
    dense_mul(W[n - 1], rows, cols, X, b, Y);
    t0 = cli_now();
    for (i = 0; i < n; i++)
        dense_mul(W[i], rows, cols, X, b, Y);
    return (cli_now() - t0) / n;
}

static double pass_sparse(spruce_sparse **A, int n, const float *X, int b, float *Y, int *rc)
{
    double t0;
    int i;
    if ((*rc = spruce_sparse_mul(A[n - 1], X, b, Y)) < 0)
        return -1;
    t0 = cli_now();
    for (i = 0; i < n; i++)
        if ((*rc = spruce_sparse_mul(A[i], X, b, Y)) < 0)
            return -1;
    return (cli_now() - t0) / n;
}

/* Between timed blocks: let the worker threads of the previous block (OpenBLAS
 * spins its workers for a while after a call, OpenMP too) go idle, so that
 * they do not compete with the next block's threads for the cores. */
static void settle(void)
{
    usleep(50000);
}

static int rotation(double bytes, const bctx *cx)
{
    double n = floor(cx->rotate / bytes) + 1;
    return n < 2 ? 2 : n > MAX_ROT ? MAX_ROT : (int)n;
}

static void case_label(const bcase *c, char *buf, size_t n)
{
    if (c->n)
        snprintf(buf, n, "%d:%d", c->n, c->m);
    else
        snprintf(buf, n, "%.0f%%", 100 * c->sparsity);
}

static int add_result(bctx *cx, const bresult *r)
{
    if (cx->nres == cx->cap) {
        int cap = cx->cap ? 2 * cx->cap : 64;
        bresult *p = realloc(cx->res, sizeof *p * cap);
        if (!p)
            return -1;
        cx->res = p;
        cx->cap = cap;
    }
    cx->res[cx->nres++] = *r;
    return 0;
}

static void print_header(void)
{
    printf("%-15s %-11s %5s %8s %10s %10s %8s %7s\n", "format", "shape", "batch", "sparsity",
           "dense ms", "sparse ms", "speedup", "GB/s");
}

static void print_row(const bresult *r)
{
    char shape[32], sp[16];
    snprintf(shape, sizeof shape, "%dx%d", r->rows, r->cols);
    if (r->n)
        snprintf(sp, sizeof sp, "%d:%d", r->n, r->m);
    else
        snprintf(sp, sizeof sp, "%.0f%%", 100 * r->sparsity);
    printf("%-15s %-11s %5d %8s %10.3f %10.3f %7.2fx %7.1f\n", r->format, shape, r->batch, sp,
           r->dense_ms, r->sparse_ms, r->speedup, r->gbps);
    fflush(stdout);
}

/* ---- one shape and sparsity: every format and batch ---------------------- */
static int bench_case(bctx *cx, int rows, int cols, const bcase *c, const int *formats, int nf,
                      const int *batches, int nb)
{
    const double dense_bytes = 4.0 * rows * cols;
    int rc = 0, i, f, b, r, maxb = 1, nd, nmax;
    int want[4] = {0, 0, 0, 0};   /* sparse formats to pack */
    int nrot[4] = {0, 0, 0, 0};
    int chosen[MAX_FORMATS][MAX_BATCHES];
    spruce_sparse **A[4] = {NULL, NULL, NULL, NULL};
    float **Wd = NULL, *W = NULL, *X = NULL, *Y = NULL;
    char label[16];
    case_label(c, label, sizeof label);
    for (b = 0; b < nb; b++)
        if (batches[b] > maxb)
            maxb = batches[b];
    if (!(W = malloc(sizeof *W * (size_t)rows * cols)) ||
        !(X = malloc(sizeof *X * (size_t)cols * maxb)) ||
        !(Y = malloc(sizeof *Y * (size_t)rows * maxb))) {
        cli_fail("bench: out of memory for a %dx%d matrix", rows, cols);
        rc = 1;
        goto done;
    }
    for (i = 0; i < cols * maxb; i++)
        X[i] = (float)((mix(i) >> 40) / 16777216.0) - 0.5f;
    gen_matrix(W, rows, cols, c, 0);

    /* Which sparse formats; `auto` asks the linear layer on the first matrix. */
    for (f = 0; f < nf; f++) {
        for (b = 0; b < nb; b++)
            chosen[f][b] = formats[f];
        if (formats[f] == SPRUCE_FMT_NM && !c->n) {
            if (cx->verbose)
                fprintf(stderr, "bench: %dx%d %s: nm needs --pattern, skipped\n", rows, cols, label);
            for (b = 0; b < nb; b++)
                chosen[f][b] = -2;
            continue;
        }
        if (formats[f] < 0) {
            spruce_linear_opts o;
            spruce_linear *lin;
            double t0 = cli_now();
            spruce_linear_opts_init(&o);
            o.nthreads = cx->threads;
            if (c->n) {
                o.n = c->n;
                o.m = c->m;
            }
            o.nbatches = nb;
            for (b = 0; b < nb; b++)
                o.batches[b] = batches[b];
            if ((rc = spruce_linear_create(W, rows, cols, &o, &lin)) < 0) {
                cli_error(rc, "bench: %dx%d %s: linear layer", rows, cols, label);
                rc = 1;
                goto done;
            }
            for (b = 0; b < nb; b++)
                chosen[f][b] = spruce_linear_format(lin, batches[b]);
            spruce_linear_free(lin);
            if (cx->verbose) {
                fprintf(stderr, "bench: %dx%d %s: auto chose", rows, cols, label);
                for (b = 0; b < nb; b++)
                    fprintf(stderr, " %s (batch %d)", spruce_format_name(chosen[f][b]), batches[b]);
                fprintf(stderr, " in %.1f s\n", cli_now() - t0);
            }
        }
        for (b = 0; b < nb; b++)
            if (chosen[f][b] > 0)
                want[chosen[f][b]] = 1;
    }

    /* Rotation sizes: each working set beyond cx->rotate bytes. */
    nd = rotation(dense_bytes, cx);
    nmax = nd;
    for (f = 1; f < 4; f++) {
        spruce_pack_opts po = {f, c->n, c->m, cx->threads};
        spruce_sparse *S;
        if (!want[f])
            continue;
        if ((rc = spruce_sparse_pack(W, NULL, rows, cols, &po, &S)) < 0) {
            cli_error(rc, "bench: %dx%d %s: packing as %s", rows, cols, label, spruce_format_name(f));
            rc = 1;
            goto done;
        }
        nrot[f] = rotation((double)spruce_sparse_bytes(S), cx);
        spruce_sparse_free(S);
        if (nrot[f] > nmax)
            nmax = nrot[f];
        if (!(A[f] = calloc(nrot[f], sizeof *A[f]))) {
            rc = 1;
            goto done;
        }
    }
    if (!(Wd = calloc(nd, sizeof *Wd))) {
        rc = 1;
        goto done;
    }
    if (cx->verbose)
        fprintf(stderr, "bench: %dx%d %s: rotating %d dense (%.0f MB)%s%s%s%s%s%s, LLC %.0f MB\n",
                rows, cols, label, nd, nd * dense_bytes / 1e6, want[1] ? ", csr" : "",
                want[1] ? "" : "", want[2] ? ", bitmask" : "", want[2] ? "" : "",
                want[3] ? ", nm" : "", "", cx->llc / 1048576.0);
    for (i = 0; i < nmax; i++) {
        gen_matrix(W, rows, cols, c, (uint64_t)i);
        for (f = 1; f < 4; f++) {
            spruce_pack_opts po = {f, c->n, c->m, cx->threads};
            if (i < nrot[f] && (rc = spruce_sparse_pack(W, NULL, rows, cols, &po, &A[f][i])) < 0) {
                cli_error(rc, "bench: %dx%d %s: packing as %s", rows, cols, label,
                          spruce_format_name(f));
                rc = 1;
                goto done;
            }
        }
        if (i < nd) {
            if (!(Wd[i] = malloc(sizeof *W * (size_t)rows * cols))) {
                cli_fail("bench: out of memory for %d dense %dx%d matrices", nd, rows, cols);
                rc = 1;
                goto done;
            }
            memcpy(Wd[i], W, sizeof *W * (size_t)rows * cols);
        }
    }

    for (b = 0; b < nb; b++) {
        const int bs = batches[b];
        double dense_s, fmt_s[4] = {0, 0, 0, 0};
        /* One warm-up pass of each representation, then rounds of one timed
         * pass of each, interleaved so that dense and sparse see the same
         * machine (others may be using it).  Before every pass the previous
         * pass's worker threads are given time to go idle (settle). */
        {
            double t[4][64];
            const int reps = cx->reps > 64 ? 64 : cx->reps;
            int use[4] = {1, 0, 0, 0};
            for (f = 1; f < 4; f++) {
                int g;
                for (g = 0; g < nf; g++)
                    use[f] |= want[f] && chosen[g][b] == f;
            }
            for (r = -1; r < reps; r++) {
                double s;
                settle();
                s = pass_dense(Wd, nd, rows, cols, X, bs, Y);
                if (r >= 0)
                    t[0][r] = s;
                for (f = 1; f < 4; f++) {
                    if (!use[f])
                        continue;
                    settle();
                    if ((s = pass_sparse(A[f], nrot[f], X, bs, Y, &rc)) < 0)
                        goto kernel_failed;
                    if (r >= 0)
                        t[f][r] = s;
                }
            }
            dense_s = median(t[0], reps);
            for (f = 1; f < 4; f++)
                if (use[f])
                    fmt_s[f] = median(t[f], reps);
        }
        for (f = 0; f < nf; f++) {
            bresult res;
            int fmt = chosen[f][b];
            if (fmt == -2)
                continue;
            memset(&res, 0, sizeof res);
            if (formats[f] < 0)
                snprintf(res.format, sizeof res.format, "auto(%s)", spruce_format_name(fmt));
            else
                snprintf(res.format, sizeof res.format, "%s", spruce_format_name(fmt));
            res.rows = rows;
            res.cols = cols;
            res.batch = bs;
            res.n = c->n;
            res.m = c->m;
            res.sparsity = c->n ? 1.0 - (double)c->n / c->m : c->sparsity;
            res.dense_ms = 1e3 * dense_s;
            res.sparse_ms = 1e3 * (fmt == SPRUCE_FMT_DENSE ? dense_s : fmt_s[fmt]);
            res.speedup = res.dense_ms / res.sparse_ms;
            res.dense_gbps = dense_bytes / dense_s / 1e9;
            res.rot_dense = nd;
            if (fmt == SPRUCE_FMT_DENSE) {
                res.gbps = res.dense_gbps;
                res.ceiling = 1.0;
                res.rot_sparse = nd;
            } else {
                double bytes = (double)spruce_sparse_bytes(A[fmt][0]);
                res.gbps = bytes / fmt_s[fmt] / 1e9;
                res.ceiling = dense_bytes / bytes;
                res.rot_sparse = nrot[fmt];
            }
            if (!cx->json)
                print_row(&res);
            if (add_result(cx, &res) < 0) {
                rc = 1;
                goto done;
            }
        }
    }
    goto done;
kernel_failed:
    cli_error(rc, "bench: %dx%d %s: sparse product", rows, cols, label);
    rc = 1;
done:
    for (f = 1; f < 4; f++) {
        for (i = 0; A[f] && i < nrot[f]; i++)
            spruce_sparse_free(A[f][i]);
        free(A[f]);
    }
    for (i = 0; Wd && i < nd; i++)
        free(Wd[i]);
    free(Wd);
    free(W);
    free(X);
    free(Y);
    return rc;
}

/* ---- the sweep chart ---------------------------------------------------- */
static double ceiling_bitmask(double s) { return 4.0 / (4.0 * (1.0 - s) + 0.125); }

static int write_svg(const char *path, const bctx *cx, int rows, int cols, int big)
{
    const double W = 780, H = 480, L = 70, R = 210, T = 50, B = 60;
    const double pw = W - L - R, ph = H - T - B, x0 = 0.25, x1 = 1.0;
    double ymax = 1.0;
    int i, k, b;
    FILE *f = fopen(path, "w");
    const char *colors[2] = {"#1f77b4", "#d62728"};
    const int bs[2] = {1, big};
    if (!f) {
        cli_fail("bench: cannot write %s: %s", path, strerror(errno));
        return 1;
    }
    for (i = 0; i < cx->nres; i++)
        if (cx->res[i].speedup > ymax)
            ymax = cx->res[i].speedup;
    if (ceiling_bitmask(0.95) > ymax)
        ymax = ceiling_bitmask(0.95);
    ymax = ceil(ymax + 0.5);
#define PX(s) (L + ((s) - x0) / (x1 - x0) * pw)
#define PY(v) (T + ph - (v) / ymax * ph)
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"20\" font-size=\"15\">spruce sparse kernels against dense "
               "OpenBLAS: %dx%d, float32, %d threads, %s</text>\n",
            L, rows, cols, cx->threads, cx->isa);
    fprintf(f, "<text x=\"%.0f\" y=\"38\" font-size=\"11\" fill=\"#555\">median of %d passes "
               "over > %.1f MB of distinct matrices each; load average %.2f at the start</text>\n",
            L, cx->reps, cx->rotate / 1e6, cx->load);
    /* grid and axes */
    {
        /* at most about 12 labelled ticks: a step of 1, 2, 5, 10, 20, 50 ... */
        int step = 1, mult = 1;
        while (ymax / step > 12) {
            step = (step / mult == 1 ? 2 : step / mult == 2 ? 5 : 10) * mult;
            if (step / mult == 10)
                mult *= 10;
        }
        for (k = 0; k <= (int)ymax; k += step) {
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                       "stroke=\"#e5e5e5\"/>\n", L, PY(k), L + pw, PY(k));
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%d</text>\n", L - 6,
                    PY(k) + 4, k);
        }
    }
    for (k = 30; k <= 95; k += 10) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n",
                PX(k / 100.0), T, PX(k / 100.0), T + ph);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%d%%</text>\n",
                PX(k / 100.0), T + ph + 18, k);
    }
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
               "stroke=\"black\"/>\n", L, T, pw, ph);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">sparsity (fraction of weights "
               "that are zero)</text>\n", L + pw / 2, H - 18);
    fprintf(f, "<text transform=\"translate(20,%.1f) rotate(-90)\" text-anchor=\"middle\">speedup "
               "over dense (x)</text>\n", T + ph / 2);
    /* dense line and the byte-ratio ceiling of the bitmask format */
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\" "
               "stroke-dasharray=\"6,4\"/>\n", L, PY(1.0), L + pw, PY(1.0));
    fprintf(f, "<polyline fill=\"none\" stroke=\"#2ca02c\" stroke-dasharray=\"2,3\" "
               "stroke-width=\"2\" points=\"");
    for (k = 30; k <= 95; k++)
        fprintf(f, "%.1f,%.1f ", PX(k / 100.0), PY(ceiling_bitmask(k / 100.0)));
    fprintf(f, "\"/>\n");
    /* measured lines, unstructured; 2:4 as separate markers */
    for (b = 0; b < 2; b++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colors[b]);
        for (i = 0; i < cx->nres; i++)
            if (cx->res[i].batch == bs[b] && !cx->res[i].n)
                fprintf(f, "%.1f,%.1f ", PX(cx->res[i].sparsity), PY(cx->res[i].speedup));
        fprintf(f, "\"/>\n");
        for (i = 0; i < cx->nres; i++) {
            const bresult *r = &cx->res[i];
            if (r->batch != bs[b])
                continue;
            if (!r->n)
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"><title>%s "
                           "%.0f%% batch %d: %.2fx</title></circle>\n",
                        PX(r->sparsity), PY(r->speedup), colors[b], r->format,
                        100 * r->sparsity, r->batch, r->speedup);
            else
                fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"9\" height=\"9\" fill=\"%s\" "
                           "transform=\"rotate(45 %.1f %.1f)\"><title>%s %d:%d batch %d: "
                           "%.2fx</title></rect>\n",
                        PX(r->sparsity) - 4.5, PY(r->speedup) - 4.5, colors[b], PX(r->sparsity),
                        PY(r->speedup), r->format, r->n, r->m, r->batch, r->speedup);
        }
    }
    /* 2:4 ceiling */
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#2ca02c\" "
               "stroke-width=\"2\"/>\n", PX(0.5) - 8, PY(4 / 2.125), PX(0.5) + 8, PY(4 / 2.125));
    /* legend */
    {
        double lx = L + pw + 15, ly = T + 10;
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" "
                   "stroke-width=\"2\"/><text x=\"%.0f\" y=\"%.0f\">batch 1, unstructured</text>\n",
                lx, ly, lx + 25, ly, colors[0], lx + 30, ly + 4);
        ly += 20;
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" "
                   "stroke-width=\"2\"/><text x=\"%.0f\" y=\"%.0f\">batch %d, unstructured</text>\n",
                lx, ly, lx + 25, ly, colors[1], lx + 30, ly + 4, big);
        ly += 20;
        fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"8\" height=\"8\" fill=\"#555\" "
                   "transform=\"rotate(45 %.0f %.0f)\"/><text x=\"%.0f\" y=\"%.0f\">2:4 (same "
                   "colours)</text>\n", lx + 8, ly - 4, lx + 12, ly, lx + 30, ly + 4);
        ly += 20;
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\" "
                   "stroke-dasharray=\"6,4\"/><text x=\"%.0f\" y=\"%.0f\">dense OpenBLAS = 1</text>\n",
                lx, ly, lx + 25, ly, lx + 30, ly + 4);
        ly += 20;
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#2ca02c\" "
                   "stroke-dasharray=\"2,3\" stroke-width=\"2\"/><text x=\"%.0f\" y=\"%.0f\">byte "
                   "ceiling (bitmask,</text><text x=\"%.0f\" y=\"%.0f\">batch 1)</text>\n",
                lx, ly, lx + 25, ly, lx + 30, ly + 4, lx + 30, ly + 18);
        ly += 14;
        ly += 20;
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#2ca02c\" "
                   "stroke-width=\"2\"/><text x=\"%.0f\" y=\"%.0f\">byte ceiling (2:4)</text>\n",
                lx + 8, ly, lx + 18, ly, lx + 30, ly + 4);
        ly += 30;
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"10\">format: auto (fastest of</text>\n"
                   "<text x=\"%.0f\" y=\"%.0f\" font-size=\"10\">dense, csr, bitmask, nm)</text>\n",
                lx, ly, lx, ly + 13);
    }
#undef PX
#undef PY
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0) {
        cli_fail("bench: writing %s: %s", path, strerror(errno));
        return 1;
    }
    return 0;
}

/* ---- --model: every linear layer of a checkpoint --------------------------- */
static int is_linear(const spruce_tensor *t)
{
    const char *n = t->name;
    size_t len = strlen(n);
    return t->ndim == 2 && len > 7 && !strcmp(n + len - 7, ".weight") && strstr(n, "layers.") &&
           (strstr(n, "_proj") || strstr(n, ".fc") || strstr(n, "dense"));
}

/* End-to-end decoding, dense OpenBLAS against the linear layers' choice, on
 * the same weights: `steps` tokens at batch 1 after BOS, in alternating runs
 * (dense first, then auto, `rounds` times); the median tokens/s of each. */
static int bench_decode(const char *dir, int steps, int rounds)
{
    spruce_model *m = NULL;
    spruce_decoder *d[2] = {NULL, NULL};
    float *logits = NULL;
    double tps[2][16];
    int rc, r, k, i, vocab;
    if (rounds > 16)
        rounds = 16;
    if ((rc = spruce_model_open(dir, &m)) < 0) {
        cli_error(rc, "bench --model %s: decode (the model forward cannot run it)", dir);
        return 1;
    }
    vocab = spruce_model_config(m)->vocab_size;
    fprintf(stderr, "bench: decode: preparing the dense and auto decoders...\n");
    if ((rc = spruce_decoder_create(m, steps + 1, SPRUCE_DECODE_DENSE, &d[0])) < 0 ||
        (rc = spruce_decoder_create(m, steps + 1, SPRUCE_DECODE_AUTO, &d[1])) < 0) {
        cli_error(rc, "bench --model %s: decoder", dir);
        rc = 1;
        goto done;
    }
    if (!(logits = malloc(sizeof *logits * (size_t)vocab))) {
        cli_fail("bench --model %s: out of memory", dir);
        rc = 1;
        goto done;
    }
    for (r = 0; r < rounds; r++)
        for (k = 0; k < 2; k++) {
            uint32_t id = 1;
            double t0;
            spruce_decoder_reset(d[k]);
            t0 = cli_now();
            for (i = 0; i < steps; i++) {
                int j, best = 0;
                if ((rc = spruce_decoder_step(d[k], id, logits)) < 0) {
                    cli_error(rc, "bench --model %s: decode", dir);
                    rc = 1;
                    goto done;
                }
                for (j = 1; j < vocab; j++) /* greedy */
                    if (logits[j] > logits[best])
                        best = j;
                id = (uint32_t)best;
            }
            tps[k][r] = steps / (cli_now() - t0);
        }
    for (k = 0; k < 2; k++)
        qsort(tps[k], (size_t)rounds, sizeof tps[k][0], cmp_double);
    printf("decode, batch 1, %d tokens after BOS, median of %d alternating runs: dense %.2f "
           "tokens/s, auto %.2f tokens/s (%d of %d linear layers sparse): %.2fx\n",
           steps, rounds, tps[0][rounds / 2], tps[1][rounds / 2], spruce_decoder_sparse_layers(d[1]),
           SPRUCE_NPROJ * spruce_model_config(m)->num_hidden_layers,
           tps[1][rounds / 2] / tps[0][rounds / 2]);
    rc = 0;
done:
    free(logits);
    spruce_decoder_free(d[0]);
    spruce_decoder_free(d[1]);
    spruce_model_free(m);
    return rc;
}

static int bench_model(bctx *cx, const char *dir, const int *batches, int nb)
{
    spruce_ckpt *ck = NULL;
    float *W = NULL, *X = NULL, *Y = NULL;
    double tot_dense[MAX_BATCHES] = {0}, tot_sparse[MAX_BATCHES] = {0};
    int rc, i, b, r, maxb = 1, nlayers = 0;
    double *t = malloc(sizeof *t * cx->reps);
    if ((rc = spruce_ckpt_open(dir, &ck)) < 0) {
        cli_error(rc, "bench --model %s", dir);
        free(t);
        return 1;
    }
    for (b = 0; b < nb; b++)
        if (batches[b] > maxb)
            maxb = batches[b];
    if (!cx->json)
        printf("%-44s %-11s %5s %8s %-9s %10s %10s %8s\n", "layer", "shape", "batch", "zeros",
               "format", "dense ms", "sparse ms", "speedup");
    for (i = 0; i < spruce_ckpt_count(ck); i++) {
        const spruce_tensor *tt = spruce_ckpt_tensor_at(ck, i);
        int rows, cols;
        int64_t zeros = 0, k;
        spruce_linear_opts o;
        spruce_linear *lin = NULL;
        if (!is_linear(tt))
            continue;
        rows = (int)tt->shape[0];
        cols = (int)tt->shape[1];
        free(W);
        free(X);
        free(Y);
        W = malloc(sizeof *W * (size_t)rows * cols);
        X = malloc(sizeof *X * (size_t)cols * maxb);
        Y = malloc(sizeof *Y * (size_t)rows * maxb);
        if (!W || !X || !Y) {
            cli_fail("bench: out of memory for %s", tt->name);
            rc = 1;
            goto done;
        }
        if ((rc = spruce_tensor_read_f32(tt, W)) < 0) {
            cli_error(rc, "bench --model: %s", tt->name);
            rc = 1;
            goto done;
        }
        for (k = 0; k < (int64_t)rows * cols; k++)
            zeros += W[k] == 0.0f;
        for (k = 0; k < (int64_t)cols * maxb; k++)
            X[k] = (float)((mix(k) >> 40) / 16777216.0) - 0.5f;
        spruce_linear_opts_init(&o);
        o.nthreads = cx->threads;
        o.nbatches = nb;
        for (b = 0; b < nb; b++)
            o.batches[b] = batches[b];
        if ((rc = spruce_linear_create(W, rows, cols, &o, &lin)) < 0) {
            cli_error(rc, "bench --model: %s", tt->name);
            rc = 1;
            goto done;
        }
        nlayers++;
        for (b = 0; b < nb; b++) {
            double dms, sms;
            settle();
            dense_mul(W, rows, cols, X, batches[b], Y);
            for (r = 0; r < cx->reps; r++) {
                double t0 = cli_now();
                dense_mul(W, rows, cols, X, batches[b], Y);
                t[r] = cli_now() - t0;
            }
            dms = 1e3 * median(t, cx->reps);
            settle();
            spruce_linear_forward(lin, X, batches[b], Y);
            for (r = 0; r < cx->reps; r++) {
                double t0 = cli_now();
                spruce_linear_forward(lin, X, batches[b], Y);
                t[r] = cli_now() - t0;
            }
            sms = 1e3 * median(t, cx->reps);
            tot_dense[b] += dms;
            tot_sparse[b] += sms;
            if (cx->json) {
                bresult res;
                memset(&res, 0, sizeof res);
                snprintf(res.format, sizeof res.format, "auto(%s)",
                         spruce_format_name(spruce_linear_format(lin, batches[b])));
                res.rows = rows;
                res.cols = cols;
                res.batch = batches[b];
                res.sparsity = (double)zeros / ((double)rows * cols);
                res.dense_ms = dms;
                res.sparse_ms = sms;
                res.speedup = dms / sms;
                add_result(cx, &res);
            } else {
                printf("%-44s %5dx%-5d %5d %7.1f%% %-9s %10.3f %10.3f %7.2fx\n", tt->name, rows,
                       cols, batches[b], 100.0 * zeros / ((double)rows * cols),
                       spruce_format_name(spruce_linear_format(lin, batches[b])), dms, sms,
                       dms / sms);
                fflush(stdout);
            }
        }
        spruce_linear_free(lin);
    }
    if (!nlayers) {
        cli_fail("bench --model %s: no linear layer weights (*.layers.*_proj.weight) found", dir);
        rc = 1;
        goto done;
    }
    if (!cx->json)
        for (b = 0; b < nb; b++)
            printf("all %d linear layers, batch %d: dense %.3f ms, sparse %.3f ms, %.2fx "
                   "(each layer timed alone, in cache when it fits)\n",
                   nlayers, batches[b], tot_dense[b], tot_sparse[b], tot_dense[b] / tot_sparse[b]);
    rc = 0;
    if (!cx->json) {
        fflush(stdout);
        rc = bench_decode(dir, 64, 3);
    }
done:
    spruce_ckpt_close(ck);
    free(W);
    free(X);
    free(Y);
    free(t);
    return rc;
}

/* ---- the command -------------------------------------------------------- */
static void usage(FILE *f)
{
    fprintf(f,
        "usage: spruce bench [--shape RxC ...] [--sparsity S[,S...] | --pattern N:M]\n"
        "                    [--batch B[,B...]] [--format auto|csr|bitmask|nm|dense[,...]]\n"
        "                    [--threads T] [--reps R] [--rotate-mb MB] [--json]\n"
        "       spruce bench --sweep --svg FILE [--shape RxC] [--batch B] [--threads T]\n"
        "       spruce bench --model DIR [--batch B[,B...]] [--threads T] [--json]\n"
        "       spruce bench prune --help\n\n"
        "Times sparse products y = W x (batch 1) and Y = W X (batch B) against dense\n"
        "OpenBLAS (sgemv / sgemm) measured in the same run, on random float32 matrices.\n"
        "Enough distinct matrices are rotated that every working set exceeds twice the\n"
        "last-level cache; the median of the repetitions is reported.\n\n"
        "  --shape RxC        matrix shape (repeatable; default 4096x4096, 11008x4096,\n"
        "                     4096x11008: the linear layers of a 7B LLaMA)\n"
        "  --sparsity S,...   fractions of zero weights, unstructured (default 0.5)\n"
        "  --pattern N:M      N:M sparsity instead (e.g. 2:4)\n"
        "  --batch B,...      batch sizes (default 1,16)\n"
        "  --format F,...     auto (the linear layer's choice), csr, bitmask, nm, dense\n"
        "                     (default auto)\n"
        "  --threads T        threads for OpenBLAS and the sparse kernels (default: all)\n"
        "  --reps R           timed passes over the rotation (default 7)\n"
        "  --rotate-mb MB     bytes each working set must exceed (default 2 x LLC)\n"
        "  --json             a JSON list of results on stdout instead of the table\n"
        "  --sweep            speedup against sparsity 30%%..95%% and 2:4, batch 1 and the\n"
        "                     largest --batch (default 16), format auto, one shape\n"
        "                     (default 11008x4096)\n"
        "  --svg FILE         with --sweep: draw the chart as SVG\n"
        "  --model DIR        every linear layer of a (pruned) checkpoint, dense against\n"
        "                     the linear layer's choice; then end-to-end decoding tokens/s,\n"
        "                     dense against auto, on the same weights (not with --json)\n"
        "Set SPRUCE_ISA=scalar|avx2|avx512 to force the kernels' instruction set;\n"
        "'spruce --verbose bench' names it and shows progress.\n");
}

static int parse_list_int(const char *opt, const char *s, long lo, long hi, int *out, int max)
{
    char buf[256], *tok, *save = NULL;
    int n = 0;
    long v;
    snprintf(buf, sizeof buf, "%s", s);
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == max) {
            cli_fail("%s: at most %d values", opt, max);
            return -1;
        }
        if (cli_parse_int(opt, tok, lo, hi, &v) < 0)
            return -1;
        out[n++] = (int)v;
    }
    if (!n) {
        cli_fail("%s: expected a list of numbers, got '%s'", opt, s);
        return -1;
    }
    return n;
}

int spruce_cmd_bench(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"shape", required_argument, NULL, 'S'},   {"sparsity", required_argument, NULL, 's'},
        {"pattern", required_argument, NULL, 'p'}, {"batch", required_argument, NULL, 'b'},
        {"format", required_argument, NULL, 'f'},  {"threads", required_argument, NULL, 't'},
        {"reps", required_argument, NULL, 'r'},    {"json", no_argument, NULL, 'j'},
        {"sweep", no_argument, NULL, 'w'},         {"svg", required_argument, NULL, 'g'},
        {"model", required_argument, NULL, 'M'},   {"rotate-mb", required_argument, NULL, 'R'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    int shapes[MAX_SHAPES][2], nshapes = 0, batches[MAX_BATCHES] = {1, 16}, nb = 2;
    int formats[MAX_FORMATS] = {-1}, nf = 1, sweep = 0, pn = 0, pm = 0, have_sparsity = 0;
    bcase cases[MAX_CASES];
    int ncases = 0, opt, rc = 0, i, k, isa;
    const char *svg = NULL, *model = NULL;
    double rotate_mb = 0;
    bctx cx;
    memset(&cx, 0, sizeof cx);
    cx.reps = 7;
    cx.verbose = cli_verbose;

    if (argc >= 2 && !strcmp(argv[1], "prune"))
        return spruce_cmd_bench_prune(argc - 1, argv + 1);
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'S': {
            int r = 0, c = 0, len = 0;
            if (nshapes == MAX_SHAPES) {
                cli_fail("bench: at most %d --shape options", MAX_SHAPES);
                return 2;
            }
            if (sscanf(optarg, "%dx%d%n", &r, &c, &len) != 2 || optarg[len] || r < 1 || c < 1 ||
                r > 1000000 || c > 1000000) {
                cli_fail("bench: --shape: expected ROWSxCOLS (e.g. 11008x4096), got '%s'", optarg);
                return 2;
            }
            shapes[nshapes][0] = r;
            shapes[nshapes][1] = c;
            nshapes++;
            break;
        }
        case 's': {
            char buf[256], *tok, *save = NULL;
            snprintf(buf, sizeof buf, "%s", optarg);
            for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                double v;
                if (ncases == MAX_CASES) {
                    cli_fail("bench: at most %d sparsities", MAX_CASES);
                    return 2;
                }
                if (cli_parse_float("--sparsity", tok, 0.0, 0.999, &v) < 0)
                    return 2;
                cases[ncases].sparsity = v;
                cases[ncases].n = cases[ncases].m = 0;
                ncases++;
            }
            have_sparsity = 1;
            break;
        }
        case 'p':
            if (cli_parse_pattern("--pattern", optarg, &pn, &pm) < 0)
                return 2;
            if (pm > 64) {
                cli_fail("bench: --pattern: M must be at most 64, got %d", pm);
                return 2;
            }
            break;
        case 'b':
            if ((nb = parse_list_int("--batch", optarg, 1, 4096, batches, MAX_BATCHES)) < 0)
                return 2;
            break;
        case 'f': {
            char buf[128], *tok, *save = NULL;
            nf = 0;
            snprintf(buf, sizeof buf, "%s", optarg);
            for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                int fm = !strcmp(tok, "auto") ? -1 : spruce_format_parse(tok);
                if (fm == -1 && strcmp(tok, "auto")) {
                    cli_fail("bench: --format: expected auto, csr, bitmask, nm or dense, got '%s'",
                             tok);
                    return 2;
                }
                if (nf == MAX_FORMATS) {
                    cli_fail("bench: --format: at most %d formats", MAX_FORMATS);
                    return 2;
                }
                formats[nf++] = fm;
            }
            if (!nf) {
                cli_fail("bench: --format: empty list");
                return 2;
            }
            break;
        }
        case 't': {
            long v;
            if (cli_parse_int("--threads", optarg, 1, 1024, &v) < 0)
                return 2;
            cx.threads = (int)v;
            break;
        }
        case 'r': {
            long v;
            if (cli_parse_int("--reps", optarg, 1, 64, &v) < 0)
                return 2;
            cx.reps = (int)v;
            break;
        }
        case 'R':
            if (cli_parse_float("--rotate-mb", optarg, 0.0, 1e6, &rotate_mb) < 0)
                return 2;
            break;
        case 'j': cx.json = 1; break;
        case 'w': sweep = 1; break;
        case 'g': svg = optarg; break;
        case 'M': model = optarg; break;
        case 'h': usage(stdout); return 0;
        default:
            cli_fail("bench: unknown or incomplete option '%s' (try 'spruce bench --help')",
                     argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        cli_fail("bench: unexpected argument '%s' (try 'spruce bench --help')", argv[optind]);
        return 2;
    }
    if (svg && !sweep) {
        cli_fail("bench: --svg needs --sweep");
        return 2;
    }
    if (sweep && (have_sparsity || pn || nshapes > 1 || model)) {
        cli_fail("bench: --sweep chooses the sparsities itself and takes at most one --shape "
                 "(no --sparsity, --pattern or --model)");
        return 2;
    }
    if (pn && have_sparsity) {
        cli_fail("bench: give --sparsity or --pattern, not both");
        return 2;
    }

    if ((isa = spruce_sparse_isa()) < 0) {
        cli_error(isa, "bench");
        return 1;
    }
    cx.isa = spruce_sparse_isa_name(isa);
    if (!cx.threads)
        cx.threads = omp_get_max_threads();
    cli_set_threads(cx.threads);
    cx.llc = llc_bytes();
    cx.rotate = rotate_mb > 0 ? rotate_mb * 1e6 : 2.0 * cx.llc;
    if (getloadavg(&cx.load, 1) != 1)
        cx.load = -1;
    if (cx.verbose)
        fprintf(stderr, "bench: kernels %s, %d threads, last-level cache %.0f MB, each working "
                        "set > %.0f MB, load average %.2f\n", cx.isa, cx.threads,
                cx.llc / 1048576.0, cx.rotate / 1e6, cx.load);

    if (model) {
        rc = bench_model(&cx, model, batches, nb);
        goto out;
    }
    if (sweep) {
        static const double sw[] = {0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95};
        int big = 1;
        for (i = 0; i < nb; i++)
            if (batches[i] > big)
                big = batches[i];
        if (big == 1)
            big = 16;
        batches[0] = 1;
        batches[1] = big;
        nb = 2;
        for (ncases = 0; ncases < (int)(sizeof sw / sizeof sw[0]); ncases++) {
            cases[ncases].sparsity = sw[ncases];
            cases[ncases].n = cases[ncases].m = 0;
        }
        cases[ncases].sparsity = 0.5;
        cases[ncases].n = 2;
        cases[ncases].m = 4;
        ncases++;
        formats[0] = -1;
        nf = 1;
        if (!nshapes) {
            shapes[0][0] = 11008;
            shapes[0][1] = 4096;
            nshapes = 1;
        }
    }
    if (!nshapes) {
        static const int def[3][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}};
        for (nshapes = 0; nshapes < 3; nshapes++) {
            shapes[nshapes][0] = def[nshapes][0];
            shapes[nshapes][1] = def[nshapes][1];
        }
    }
    if (pn) {
        cases[0].sparsity = 1.0 - (double)pn / pm;
        cases[0].n = pn;
        cases[0].m = pm;
        ncases = 1;
    } else if (!ncases) {
        cases[0].sparsity = 0.5;
        cases[0].n = cases[0].m = 0;
        ncases = 1;
    }

    if (!cx.json)
        print_header();
    for (i = 0; i < nshapes && !rc; i++)
        for (k = 0; k < ncases && !rc; k++) {
            if (cx.verbose) {
                char label[16];
                case_label(&cases[k], label, sizeof label);
                fprintf(stderr, "bench: %dx%d %s ...\n", shapes[i][0], shapes[i][1], label);
            }
            rc = bench_case(&cx, shapes[i][0], shapes[i][1], &cases[k], formats, nf, batches, nb);
        }
    if (!rc && sweep && svg) {
        rc = write_svg(svg, &cx, shapes[0][0], shapes[0][1], batches[1]);
        if (!rc && !cx.json)
            printf("chart written to %s\n", svg);
    }
out:
    if (!rc && cx.json) {
        json_t *list = json_array();
        for (i = 0; i < cx.nres; i++) {
            const bresult *r = &cx.res[i];
            char pat[16];
            json_t *o = json_object();
            if (r->n)
                snprintf(pat, sizeof pat, "%d:%d", r->n, r->m);
            json_object_set_new(o, "format", json_string(r->format));
            json_object_set_new(o, "rows", json_integer(r->rows));
            json_object_set_new(o, "cols", json_integer(r->cols));
            json_object_set_new(o, "batch", json_integer(r->batch));
            json_object_set_new(o, "sparsity", json_real(r->sparsity));
            json_object_set_new(o, "pattern", r->n ? json_string(pat) : json_string("unstructured"));
            json_object_set_new(o, "dense_ms", json_real(r->dense_ms));
            json_object_set_new(o, "sparse_ms", json_real(r->sparse_ms));
            json_object_set_new(o, "speedup", json_real(r->speedup));
            if (!model) {
                json_object_set_new(o, "sparse_gbps", json_real(r->gbps));
                json_object_set_new(o, "dense_gbps", json_real(r->dense_gbps));
                json_object_set_new(o, "byte_ceiling", json_real(r->ceiling));
                json_object_set_new(o, "rotated_dense", json_integer(r->rot_dense));
                json_object_set_new(o, "rotated_sparse", json_integer(r->rot_sparse));
            }
            json_object_set_new(o, "threads", json_integer(cx.threads));
            json_object_set_new(o, "isa", json_string(cx.isa));
            json_object_set_new(o, "load_average", json_real(cx.load));
            json_array_append_new(list, o);
        }
        json_dumpf(list, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
        json_decref(list);
    }
    free(cx.res);
    return rc;
}
