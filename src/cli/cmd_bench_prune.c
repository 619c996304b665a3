/* cmd_bench_prune.c: `spruce bench prune`: time and score the pruner on one layer.
 *
 * The layer is either read from .npy files (W (rows, cols), X (tokens, cols),
 * float32 C order) or made up deterministically: X = Z A + noise, with Z
 * (tokens, r) and A (r, cols) Gaussian, r = cols / 16, plus a few channels
 * scaled up 20x (the large-magnitude features of LLM activations); W is
 * Gaussian with variance 1/cols.
 *
 * Floating-point work counted for GFLOP/s (multiply-add = 2):
 *   Hessian    tokens * cols * (cols + 1)                       (ssyrk)
 *   inverse    cols^3 / 3 (Cholesky) + cols^3 / 3 (triangular inverse)
 *   sweep      sum over blocks [i1, i2) of width b:
 *                rows * b * (b - 1)             (in-block updates)
 *              + 2 * rows * b * (cols - i2)     (trailing sgemm)
 * Wanda and magnitude count no pruning work; magnitude needs no Hessian.
 * The relative output error ||(W - Wp) X^T||^2 / ||W X^T||^2 is computed from
 * H, which holds the same sums. */
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>
#include <jansson.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cli.h"
#include "npy.h"
#include "prune_args.h"
#include "spruce_prune.h"

static void usage(FILE *f)
{
    fprintf(f,
        "usage: spruce bench prune [--rows R --cols C --tokens N |\n"
        "                           --weights W.npy --inputs X.npy]\n"
        "           [--sparsity S | --pattern N:M] [--method sparsegpt|wanda|magnitude|all]\n"
        "           [--blocksize B] [--damp F] [--save-pruned OUT.npy] [--threads T]\n"
        "           [--wbits B [--groupsize G] [--sym]]\n"
        "           [--seed K] [--save-layer DIR] [--baseline] [--json]\n\n"
        "Prune one linear layer and report, per method, the Hessian and pruning times,\n"
        "GFLOP/s, the realised sparsity and the relative output error\n"
        "||(W - Wp) X^T||^2 / ||W X^T||^2.\n\n"
        "  --rows R, --cols C, --tokens N  synthetic layer shape (default 1024 x 1024,\n"
        "                       2048 tokens): low-rank activations + noise + a few large\n"
        "                       channels\n"
        "  --weights W.npy      weights (rows, cols), float32 C order\n"
        "  --inputs X.npy       calibration activations (tokens, cols), float32 C order\n"
        "  --sparsity S         unstructured target in [0, 1) (default 0.5); one that\n"
        "                       rounds to every weight of the layer is refused\n"
        "  --pattern N:M        N:M sparsity instead (e.g. 2:4); M divides the columns\n"
        "                       and, for sparsegpt, --blocksize\n"
        "  --method M           sparsegpt, wanda, magnitude or all (default all)\n"
        "  --blocksize B        SparseGPT column block (default 128)\n"
        PRUNE_ARGS_QUANT_HELP
        "  --damp F             relative damping (default 0.01)\n"
        "  --save-pruned OUT.npy  write the pruned weights of the first method run\n"
        "  --threads T          threads for OpenMP and OpenBLAS (default: all)\n"
        "  --seed K             seed of the synthetic layer (default 1)\n"
        "  --save-layer DIR     also write the layer as DIR/weights.npy, DIR/inputs.npy\n"
        "  --baseline           also time one OpenBLAS sgemm (rows, cols) x (cols, cols) in\n"
        "                       the same run: the machine's GFLOP/s at that moment\n"
        "  --json               one JSON object per method and line instead of a table\n"
        "                       (a number JSON cannot write, NaN or infinite, is null)\n\n"
        "When OPENBLAS_CORETYPE or OMP_WAIT_POLICY is unset, the command runs itself again\n"
        "with OMP_WAIT_POLICY=passive and, if OpenBLAS fell back to its SSE3 kernels on an\n"
        "AVX2/AVX-512 CPU, OPENBLAS_CORETYPE=Haswell/SkylakeX (SPRUCE_NO_REEXEC=1 turns this\n"
        "off).\n");
}

/* A Gaussian value from (seed, i) alone, so the layer does not depend on threads. */
static inline uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void fill_gauss(float *a, size_t n, uint64_t seed, float scale)
{
    int64_t i;
    #pragma omp parallel for schedule(static)
    for (i = 0; i < (int64_t)(n + 1) / 2; i++) {
        uint64_t h1 = mix(seed * 0x9e3779b97f4a7c15ull + 2 * (uint64_t)i + 1);
        uint64_t h2 = mix(h1 ^ 0x5851f42d4c957f2dull);
        double u = ((double)(h1 >> 11) + 0.5) / 9007199254740992.0;
        double v = ((double)(h2 >> 11) + 0.5) / 9007199254740992.0;
        double r = sqrt(-2.0 * log(u)) * scale;
        a[2 * i] = (float)(r * cos(6.283185307179586 * v));
        if ((size_t)(2 * i + 1) < n)
            a[2 * i + 1] = (float)(r * sin(6.283185307179586 * v));
    }
}

/* X (tokens, cols) = Z (tokens, r) A (r, cols) + 0.5 noise; every 97th channel x20. */
static int synth_layer(int rows, int cols, int tokens, uint64_t seed, float **Wout, float **Xout)
{
    int r = cols / 16 > 1 ? cols / 16 : 1;
    float *W = malloc((size_t)rows * cols * sizeof *W);
    float *X = malloc((size_t)tokens * cols * sizeof *X);
    float *Z = malloc((size_t)tokens * r * sizeof *Z), *A = malloc((size_t)r * cols * sizeof *A);
    int64_t t;
    if (!W || !X || !Z || !A) {
        free(W), free(X), free(Z), free(A);
        return -1;
    }
    fill_gauss(W, (size_t)rows * cols, seed * 4 + 1, 1.0f / sqrtf((float)cols));
    fill_gauss(X, (size_t)tokens * cols, seed * 4 + 2, 0.5f);
    fill_gauss(Z, (size_t)tokens * r, seed * 4 + 3, 1.0f);
    fill_gauss(A, (size_t)r * cols, seed * 4 + 4, 1.0f / sqrtf((float)r));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, tokens, cols, r, 1.0f, Z, r, A, cols,
                1.0f, X, cols);
    #pragma omp parallel for schedule(static)
    for (t = 0; t < tokens; t++) {
        int j;
        for (j = 3; j < cols; j += 97)
            X[(size_t)t * cols + j] *= 20.0f;
    }
    free(Z);
    free(A);
    *Wout = W;
    *Xout = X;
    return 0;
}

static double sweep_flops(int rows, int cols, int B)
{
    double f = 0.0;
    int i1;
    if (B > cols)
        B = cols;
    for (i1 = 0; i1 < cols; i1 += B) {
        int i2 = i1 + B < cols ? i1 + B : cols, b = i2 - i1;
        f += (double)rows * b * (b - 1) + 2.0 * rows * b * (cols - i2);
    }
    return f;
}

/* What the options ask for. */
typedef struct {
    prune_args pa;
    long rows, cols, tokens, seed; /* the synthetic layer; then the layer's shape */
    int json, baseline, shape_given;
    int methods[3], nmethods;
    const char *wpath, *xpath, *save, *save_layer;
} bp_opts;

/* One method's figures. */
typedef struct {
    spruce_method method;
    spruce_prune_result res;
    double rel, hessian_s, flops, gflops;
} bp_row;

/* The options into b: 0, 1 when --help was printed, -1 after a usage error. */
static int parse_options(int argc, char **argv, bp_opts *b)
{
    enum { O_ROWS = 256, O_COLS, O_TOKENS, O_WEIGHTS, O_INPUTS, O_SAVE, O_SEED, O_JSON, O_HELP,
           O_SAVE_LAYER, O_BASELINE };
    static const struct option longopts[] = {
        {"rows", required_argument, NULL, O_ROWS},
        {"cols", required_argument, NULL, O_COLS},
        {"tokens", required_argument, NULL, O_TOKENS},
        {"weights", required_argument, NULL, O_WEIGHTS},
        {"inputs", required_argument, NULL, O_INPUTS},
        PRUNE_ARGS_OPTIONS,
        {"save-pruned", required_argument, NULL, O_SAVE},
        {"seed", required_argument, NULL, O_SEED},
        {"json", no_argument, NULL, O_JSON},
        {"help", no_argument, NULL, O_HELP},
        {"save-layer", required_argument, NULL, O_SAVE_LAYER},
        {"baseline", no_argument, NULL, O_BASELINE},
        {NULL, 0, NULL, 0},
    };
    int c, i, rc;
    long v;
    memset(b, 0, sizeof *b);
    b->rows = 1024;
    b->cols = 1024;
    b->tokens = 2048;
    b->seed = 1;
    prune_args_init(&b->pa, "bench prune", PRUNE_ARGS_ALL, 1);
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case O_ROWS: case O_COLS: case O_TOKENS:
            if (cli_parse_int(c == O_ROWS ? "--rows" : c == O_COLS ? "--cols" : "--tokens", optarg,
                              1, 1 << 20, &v))
                return -1;
            *(c == O_ROWS ? &b->rows : c == O_COLS ? &b->cols : &b->tokens) = v;
            b->shape_given = 1;
            break;
        case O_WEIGHTS: b->wpath = optarg; break;
        case O_INPUTS: b->xpath = optarg; break;
        case O_SAVE: b->save = optarg; break;
        case O_SAVE_LAYER: b->save_layer = optarg; break;
        case O_SEED:
            if (cli_parse_int("--seed", optarg, 0, 1L << 30, &b->seed))
                return -1;
            break;
        case O_JSON: b->json = 1; break;
        case O_BASELINE: b->baseline = 1; break;
        case O_HELP: usage(stdout); return 1;
        default:
            if ((rc = prune_args_option(&b->pa, c, optarg)) < 0)
                return -1;
            if (rc)
                break;
            cli_fail("bench prune: unknown or incomplete option '%s' (try 'spruce bench prune "
                     "--help')", argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) {
        cli_fail("bench prune: unexpected argument '%s'", argv[optind]);
        return -1;
    }
    if (prune_args_check(&b->pa, 0))
        return -1;
    if ((b->wpath != NULL) != (b->xpath != NULL)) {
        cli_fail("bench prune: --weights and --inputs go together");
        return -1;
    }
    if (b->wpath && b->shape_given) {
        cli_fail("bench prune: --rows/--cols/--tokens describe the synthetic layer; not with "
                 "--weights");
        return -1;
    }
    /* the files written never overwrite the ones read */
    if (b->save && (cli_check_output("bench prune", b->save, 0, "--save-pruned", b->wpath,
                                     "the --weights file") ||
                    cli_check_output("bench prune", b->save, 0, "--save-pruned", b->xpath,
                                     "the --inputs file")))
        return -1;
    if (b->save_layer && b->wpath) {
        char w[4096], x[4096];
        snprintf(w, sizeof w, "%s/weights.npy", b->save_layer);
        snprintf(x, sizeof x, "%s/inputs.npy", b->save_layer);
        if (cli_check_output("bench prune", w, 0, "--save-layer", b->wpath, "the --weights file") ||
            cli_check_output("bench prune", w, 0, "--save-layer", b->xpath, "the --inputs file") ||
            cli_check_output("bench prune", x, 0, "--save-layer", b->wpath, "the --weights file") ||
            cli_check_output("bench prune", x, 0, "--save-layer", b->xpath, "the --inputs file"))
            return -1;
    }
    if (b->pa.method == PRUNE_ARGS_ALL)
        for (i = 0; i < 3; i++)
            b->methods[b->nmethods++] = i;
    else
        b->methods[b->nmethods++] = b->pa.method;
    return 0;
}

/* W0 (rows, cols) and X (tokens, cols) from the .npy files, whose shapes go
 * into b, or made up; with --save-layer also written out.  0, or 1 after a
 * message. */
static int load_layer(bp_opts *b, float **W0, float **X)
{
    int rc;
    if (b->wpath) {
        int64_t wr, wc, xr, xc;
        if ((rc = spruce__npy_read(b->wpath, W0, &wr, &wc))) {
            cli_error(rc, "bench prune: --weights");
            return 1;
        }
        if ((rc = spruce__npy_read(b->xpath, X, &xr, &xc))) {
            cli_error(rc, "bench prune: --inputs");
            return 1;
        }
        if (xc != wc) {
            cli_fail("bench prune: %s is (%lld, %lld) but %s is (%lld, %lld): the inputs need "
                     "%lld columns", b->xpath, (long long)xr, (long long)xc, b->wpath,
                     (long long)wr, (long long)wc, (long long)wc);
            return 1;
        }
        b->rows = wr, b->cols = wc, b->tokens = xr;
    } else if (synth_layer((int)b->rows, (int)b->cols, (int)b->tokens, (uint64_t)b->seed, W0,
                           X)) {
        cli_fail("bench prune: out of memory for a (%ld, %ld) layer with %ld tokens", b->rows,
                 b->cols, b->tokens);
        return 1;
    }
    if (b->save_layer) {
        char path[4096];
        snprintf(path, sizeof path, "%s/weights.npy", b->save_layer);
        if ((rc = spruce__npy_write(path, *W0, b->rows, b->cols))) {
            cli_error(rc, "bench prune: --save-layer");
            return 1;
        }
        snprintf(path, sizeof path, "%s/inputs.npy", b->save_layer);
        if ((rc = spruce__npy_write(path, *X, b->tokens, b->cols))) {
            cli_error(rc, "bench prune: --save-layer");
            return 1;
        }
    }
    return 0;
}

/* The pattern against the layer and the block size, once, before any timing,
 * so that wrong usage says so clearly.  0, or -1 after a message. */
static int check_pattern(const bp_opts *b)
{
    const prune_args *pa = &b->pa;
    int i;
    for (i = 0; pa->m > 0 && i < b->nmethods; i++) {
        if (b->methods[i] == SPRUCE_METHOD_SPARSEGPT && pa->blocksize % pa->m) {
            cli_fail("bench prune: --pattern %d:%d: M must divide --blocksize %ld", pa->n, pa->m,
                     pa->blocksize);
            return -1;
        }
        if (b->cols % pa->m) {
            cli_fail("bench prune: --pattern %d:%d: M must divide the column count %ld", pa->n,
                     pa->m, b->cols);
            return -1;
        }
    }
    return 0;
}

/* The machine's sgemm rate right now, GFLOP/s: W0 (rows, cols) @ H (cols,
 * cols); -1 after a message. */
static double time_baseline(const bp_opts *b, const float *W0, const spruce_hessian *h)
{
    const int rows = (int)b->rows, cols = (int)b->cols;
    float *C = malloc((size_t)rows * cols * sizeof *C);
    double t0, gflops;
    if (!C) {
        cli_fail("bench prune: out of memory for --baseline");
        return -1;
    }
    t0 = spruce_clock_now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, cols, cols, 1.0f, W0, cols,
                spruce_hessian_matrix(h), cols, 0.0f, C, cols);
    gflops = 2.0 * rows * cols * cols / (spruce_clock_now() - t0) / 1e9;
    free(C);
    if (!b->json)
        printf("baseline: OpenBLAS sgemm (%d, %d) x (%d, %d) at %.1f GFLOP/s\n", rows, cols, cols,
               cols, gflops);
    return gflops;
}

/* Prune a copy W of W0 with method m and measure it into r; hessian_s and
 * hessian_flops are what building the Hessian took.  0, or the exit status
 * after a message. */
static int prune_one(const bp_opts *b, spruce_prune_opts o, spruce_method m, const float *W0,
                     float *W, const spruce_hessian *h, double hessian_s, double hessian_flops,
                     bp_row *r)
{
    const int rows = (int)b->rows, cols = (int)b->cols;
    int rc;
    memset(r, 0, sizeof *r);
    r->method = o.method = m;
    memcpy(W, W0, (size_t)rows * cols * sizeof *W);
    if (cli_verbose)
        fprintf(stderr, "spruce: bench prune: %s\n", spruce_method_name(m));
    if ((rc = spruce_prune_layer(W, rows, cols, m == SPRUCE_METHOD_MAGNITUDE ? NULL : h, &o, NULL,
                                 &r->res))) {
        cli_error(rc, "bench prune: %s", spruce_method_name(m));
        return rc == SPRUCE_EINVAL ? 2 : 1;
    }
    if (r->res.dead_columns > 0) { /* an input never active: H_ii = 0 */
        int all = r->res.dead_columns == cols;
        fprintf(stderr,
                "spruce: bench prune: %s: warning: %s%d of the %d input columns are dead (zero in every "
                "token of the inputs: the Hessian's diagonal is zero there); %s\n",
                spruce_method_name(m), all ? "all " : "", r->res.dead_columns, cols,
                m == SPRUCE_METHOD_SPARSEGPT
                    ? (all ? "their weights are set to zero, as SparseGPT's published code does: every "
                             "weight is pruned"
                           : "their weights are set to zero, as SparseGPT's published code does")
                    : "their Wanda scores are zero, so they are pruned first and ties among them are "
                      "arbitrary");
    }
    if ((rc = spruce_prune_rel_error(W0, W, rows, cols, h, &r->rel))) {
        cli_error(rc, "bench prune: relative error");
        return 1;
    }
    r->hessian_s = m == SPRUCE_METHOD_MAGNITUDE ? 0.0 : hessian_s;
    r->flops = m == SPRUCE_METHOD_MAGNITUDE ? 0.0 : hessian_flops;
    if (m == SPRUCE_METHOD_SPARSEGPT)
        r->flops += 2.0 * (double)cols * cols * cols / 3.0 + sweep_flops(rows, cols, o.blocksize);
    r->gflops = r->hessian_s + r->res.seconds > 0.0
                    ? r->flops / (r->hessian_s + r->res.seconds) / 1e9 : 0.0;
    return 0;
}

static void print_header(const bp_opts *b)
{
    printf("layer %ld x %ld, %ld tokens (%s), ", b->rows, b->cols, b->tokens,
           b->wpath ? b->wpath : "synthetic");
    if (b->pa.m)
        printf("%d:%d", b->pa.n, b->pa.m);
    else
        printf("%.0f%% unstructured", 100.0 * b->pa.sparsity);
    if (b->pa.wbits)
        printf(", wbits %ld%s%s", b->pa.wbits, b->pa.sym ? " sym" : "",
               b->pa.groupsize ? " groupsize " : "");
    if (b->pa.wbits && b->pa.groupsize)
        printf("%ld", b->pa.groupsize);
    printf(", threads %d\n", b->pa.threads > 0 ? (int)b->pa.threads : openblas_get_num_threads());
    printf("%-10s %10s %9s %8s %9s %11s %11s\n", "method", "hessian_s", "prune_s", "GFLOP/s",
           "sparsity", "rel_error", "loss");
}

static void print_row(const bp_row *r)
{
    printf("%-10s %10.3f %9.3f %8.1f %9.4f %11.4e %11.4e\n", spruce_method_name(r->method),
           r->hessian_s, r->res.seconds, r->gflops, r->res.sparsity, r->rel, r->res.loss);
    if (r->res.damp_retries)
        printf("  (damping raised %d times to %g)\n", r->res.damp_retries,
               (double)r->res.damp_used);
}

/* One JSON object on one line; sgemm_gflops < 0: no --baseline. */
static void print_json_row(const bp_opts *b, const bp_row *r, double sgemm_gflops)
{
    json_t *j = json_object();
    char target[32];
    if (b->pa.m)
        snprintf(target, sizeof target, "%d:%d", b->pa.n, b->pa.m);
    else
        snprintf(target, sizeof target, "%g", b->pa.sparsity);
    json_object_set_new(j, "method", json_string(spruce_method_name(r->method)));
    json_object_set_new(j, "rows", json_integer(b->rows));
    json_object_set_new(j, "cols", json_integer(b->cols));
    json_object_set_new(j, "tokens", json_integer(b->tokens));
    json_object_set_new(j, "target", json_string(target));
    json_object_set_new(j, "wbits", json_integer(b->pa.wbits));
    json_object_set_new(j, "groupsize", json_integer(b->pa.groupsize));
    json_object_set_new(j, "sym", json_boolean(b->pa.sym));
    json_object_set_new(j, "hessian_s", cli_json_real(r->hessian_s));
    json_object_set_new(j, "prune_s", cli_json_real(r->res.seconds));
    json_object_set_new(j, "gflop", cli_json_real(r->flops / 1e9));
    json_object_set_new(j, "gflops", cli_json_real(r->gflops));
    json_object_set_new(j, "sparsity", cli_json_real(r->res.sparsity));
    json_object_set_new(j, "rel_error", cli_json_real(r->rel));
    json_object_set_new(j, "loss", cli_json_real(r->res.loss));
    json_object_set_new(j, "damp_used", cli_json_real(r->res.damp_used));
    json_object_set_new(j, "damp_retries", json_integer(r->res.damp_retries));
    json_object_set_new(j, "dead_columns", json_integer(r->res.dead_columns));
    if (sgemm_gflops >= 0)
        json_object_set_new(j, "sgemm_gflops", cli_json_real(sgemm_gflops));
    json_dumpf(j, stdout, JSON_REAL_PRECISION(7));
    fputc('\n', stdout);
    json_decref(j);
}

int spruce_cmd_bench_prune(int argc, char **argv)
{
    bp_opts b;
    spruce_prune_opts o;
    spruce_hessian *h = NULL;
    float *W0 = NULL, *X = NULL, *W = NULL;
    double t0, hessian_s, hessian_flops, sgemm_gflops = -1;
    int i, rc, status = 1;
    if ((rc = parse_options(argc, argv, &b)))
        return rc > 0 ? 0 : 2;
    spruce_prune_opts_init(&o);
    prune_args_apply(&b.pa, &o);
    cli_set_threads(b.pa.threads);
    if (load_layer(&b, &W0, &X))
        goto done;
    if (check_pattern(&b)) {
        status = 2;
        goto done;
    }
    if (!(h = spruce_hessian_alloc((int)b.cols)) ||
        !(W = malloc((size_t)b.rows * b.cols * sizeof *W))) {
        cli_fail("bench prune: out of memory");
        goto done;
    }
    if (cli_verbose)
        fprintf(stderr, "spruce: bench prune: Hessian of %ld tokens x %ld inputs\n", b.tokens,
                b.cols);
    t0 = spruce_clock_now();
    if ((rc = spruce_hessian_add(h, X, (int)b.tokens))) {
        cli_error(rc, "bench prune: %s", b.xpath ? b.xpath : "synthetic inputs");
        goto done;
    }
    hessian_s = spruce_clock_now() - t0;
    hessian_flops = (double)b.tokens * b.cols * (b.cols + 1);
    free(X);
    X = NULL;
    if (b.baseline && (sgemm_gflops = time_baseline(&b, W0, h)) < 0)
        goto done;

    if (!b.json)
        print_header(&b);
    for (i = 0; i < b.nmethods; i++) {
        bp_row r;
        if ((status = prune_one(&b, o, (spruce_method)b.methods[i], W0, W, h, hessian_s,
                                hessian_flops, &r)))
            goto done;
        status = 1;
        if (b.json)
            print_json_row(&b, &r, sgemm_gflops);
        else
            print_row(&r);
        fflush(stdout);
        if (b.save && i == 0 && (rc = spruce__npy_write(b.save, W, b.rows, b.cols))) {
            cli_error(rc, "bench prune: --save-pruned");
            goto done;
        }
    }
    status = 0;
done:
    free(W0);
    free(X);
    free(W);
    spruce_hessian_free(h);
    return status;
}
