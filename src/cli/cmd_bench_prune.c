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
            "usage: spruce bench prune [--rows R --cols C --tokens N | --weights W.npy --inputs X.npy]\n"
            "                          [--sparsity S | --pattern N:M] [--method sparsegpt|wanda|magnitude|all]\n"
            "                          [--blocksize B] [--damp F] [--save-pruned OUT.npy] [--threads T]\n"
            "                          [--seed K] [--save-layer DIR] [--baseline] [--json]\n\n"
            "Prune one linear layer and report, per method, the Hessian and pruning times, GFLOP/s,\n"
            "the realised sparsity and the relative output error ||(W - Wp) X^T||^2 / ||W X^T||^2.\n\n"
            "  --rows R, --cols C, --tokens N  synthetic layer shape (default 1024 x 1024, 2048 tokens):\n"
            "                                  low-rank activations + noise + a few large channels\n"
            "  --weights W.npy                 weights (rows, cols), float32 C order\n"
            "  --inputs X.npy                  calibration activations (tokens, cols), float32 C order\n"
            "  --sparsity S                    unstructured target in [0, 1) (default 0.5)\n"
            "  --pattern N:M                   N:M sparsity instead (e.g. 2:4)\n"
            "  --method M                      sparsegpt, wanda, magnitude or all (default all)\n"
            "  --blocksize B                   SparseGPT column block (default 128)\n"
            "  --damp F                        relative damping (default 0.01)\n"
            "  --save-pruned OUT.npy           write the pruned weights of the first method run\n"
            "  --threads T                     threads for OpenMP and OpenBLAS (default: all)\n"
            "  --seed K                        seed of the synthetic layer (default 1)\n"
            "  --save-layer DIR                also write the layer as DIR/weights.npy, DIR/inputs.npy\n"
            "  --baseline                      also time one OpenBLAS sgemm (rows, cols) x (cols, cols)\n"
            "                                  in the same run: the machine's GFLOP/s at that moment\n"
            "  --json                          one JSON object per method instead of a table\n\n"
            "When OPENBLAS_CORETYPE or OMP_WAIT_POLICY is unset, the command runs itself again with\n"
            "OMP_WAIT_POLICY=passive and, if OpenBLAS fell back to its SSE3 kernels on an AVX2/AVX-512\n"
            "CPU, OPENBLAS_CORETYPE=Haswell/SkylakeX (SPRUCE_NO_REEXEC=1 turns this off).\n");
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
    float *W = malloc((size_t)rows * cols * sizeof *W), *X = malloc((size_t)tokens * cols * sizeof *X);
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

int spruce_cmd_bench_prune(int argc, char **argv)
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
    long rows = 1024, cols = 1024, tokens = 2048, seed = 1, v;
    double hessian_s = 0.0, hessian_flops, t0, sgemm_gflops = 0.0;
    int json = 0, baseline = 0, shape_given = 0, c, i, rc, status = 1;
    int methods[3], nmethods = 0;
    const char *wpath = NULL, *xpath = NULL, *save = NULL, *save_layer = NULL;
    float *W0 = NULL, *X = NULL, *W = NULL;
    spruce_hessian *h = NULL;
    spruce_prune_opts o;
    prune_args pa;

    prune_args_init(&pa, "bench prune", PRUNE_ARGS_ALL, 1);
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case O_ROWS: case O_COLS: case O_TOKENS:
            if (cli_parse_int(c == O_ROWS ? "--rows" : c == O_COLS ? "--cols" : "--tokens", optarg, 1,
                              1 << 20, &v))
                return 2;
            *(c == O_ROWS ? &rows : c == O_COLS ? &cols : &tokens) = v;
            shape_given = 1;
            break;
        case O_WEIGHTS: wpath = optarg; break;
        case O_INPUTS: xpath = optarg; break;
        case O_SAVE: save = optarg; break;
        case O_SAVE_LAYER: save_layer = optarg; break;
        case O_SEED:
            if (cli_parse_int("--seed", optarg, 0, 1L << 30, &seed))
                return 2;
            break;
        case O_JSON: json = 1; break;
        case O_BASELINE: baseline = 1; break;
        case O_HELP: usage(stdout); return 0;
        default:
            if ((rc = prune_args_option(&pa, c, optarg)) < 0)
                return 2;
            if (rc)
                break;
            cli_fail("bench prune: unknown or incomplete option '%s' (try 'spruce bench prune --help')",
                     argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        cli_fail("bench prune: unexpected argument '%s'", argv[optind]);
        return 2;
    }
    if (prune_args_check(&pa, 0))
        return 2;
    if ((wpath != NULL) != (xpath != NULL)) {
        cli_fail("bench prune: --weights and --inputs go together");
        return 2;
    }
    if (wpath && shape_given) {
        cli_fail("bench prune: --rows/--cols/--tokens describe the synthetic layer; not with --weights");
        return 2;
    }
    if (pa.method == PRUNE_ARGS_ALL) {
        for (i = 0; i < 3; i++)
            methods[nmethods++] = i;
    } else {
        methods[nmethods++] = pa.method;
    }
    spruce_prune_opts_init(&o);
    prune_args_apply(&pa, &o);
    cli_set_threads(pa.threads);

    if (wpath) {
        int64_t wr, wc, xr, xc;
        if ((rc = spruce__npy_read(wpath, &W0, &wr, &wc))) {
            cli_error(rc, "bench prune: --weights");
            goto done;
        }
        if ((rc = spruce__npy_read(xpath, &X, &xr, &xc))) {
            cli_error(rc, "bench prune: --inputs");
            goto done;
        }
        if (xc != wc) {
            cli_fail("bench prune: %s is (%lld, %lld) but %s is (%lld, %lld): the inputs need %lld columns",
                     xpath, (long long)xr, (long long)xc, wpath, (long long)wr, (long long)wc,
                     (long long)wc);
            goto done;
        }
        rows = wr, cols = wc, tokens = xr;
    } else if (synth_layer((int)rows, (int)cols, (int)tokens, (uint64_t)seed, &W0, &X)) {
        cli_fail("bench prune: out of memory for a (%ld, %ld) layer with %ld tokens", rows, cols, tokens);
        goto done;
    }
    if (save_layer) {
        char path[4096];
        snprintf(path, sizeof path, "%s/weights.npy", save_layer);
        if ((rc = spruce__npy_write(path, W0, rows, cols))) {
            cli_error(rc, "bench prune: --save-layer");
            goto done;
        }
        snprintf(path, sizeof path, "%s/inputs.npy", save_layer);
        if ((rc = spruce__npy_write(path, X, tokens, cols))) {
            cli_error(rc, "bench prune: --save-layer");
            goto done;
        }
    }
    /* Check the options once, before any timing, so wrong usage says so clearly. */
    for (i = 0; i < nmethods; i++) {
        spruce_prune_opts t = o;
        t.method = (spruce_method)methods[i];
        if (t.prune_m > 0 && t.method == SPRUCE_METHOD_SPARSEGPT && pa.blocksize % t.prune_m) {
            cli_fail("bench prune: --pattern %d:%d: M must divide --blocksize %ld", pa.n, pa.m,
                     pa.blocksize);
            status = 2;
            goto done;
        }
        if (t.prune_m > 0 && cols % t.prune_m) {
            cli_fail("bench prune: --pattern %d:%d: M must divide the column count %ld", pa.n,
                     pa.m, cols);
            status = 2;
            goto done;
        }
    }

    if (!(h = spruce_hessian_alloc((int)cols)) || !(W = malloc((size_t)rows * cols * sizeof *W))) {
        cli_fail("bench prune: out of memory");
        goto done;
    }
    if (cli_verbose)
        fprintf(stderr, "spruce: bench prune: Hessian of %ld tokens x %ld inputs\n", tokens, cols);
    t0 = cli_now();
    if ((rc = spruce_hessian_add(h, X, (int)tokens))) {
        cli_error(rc, "bench prune: %s", xpath ? xpath : "synthetic inputs");
        goto done;
    }
    hessian_s = cli_now() - t0;
    hessian_flops = (double)tokens * cols * (cols + 1);
    free(X);
    X = NULL;
    if (baseline) {
        /* the machine's sgemm rate right now: W (rows, cols) @ H (cols, cols) */
        float *C = malloc((size_t)rows * cols * sizeof *C);
        if (!C) {
            cli_fail("bench prune: out of memory for --baseline");
            goto done;
        }
        t0 = cli_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)cols, (int)cols, 1.0f,
                    W0, (int)cols, spruce_hessian_matrix(h), (int)cols, 0.0f, C, (int)cols);
        sgemm_gflops = 2.0 * rows * cols * cols / (cli_now() - t0) / 1e9;
        free(C);
        if (!json)
            printf("baseline: OpenBLAS sgemm (%ld, %ld) x (%ld, %ld) at %.1f GFLOP/s\n", rows, cols,
                   cols, cols, sgemm_gflops);
    }

    if (!json) {
        printf("layer %ld x %ld, %ld tokens (%s), ", rows, cols, tokens, wpath ? wpath : "synthetic");
        if (pa.m)
            printf("%d:%d", pa.n, pa.m);
        else
            printf("%.0f%% unstructured", 100.0 * pa.sparsity);
        printf(", threads %d\n", pa.threads > 0 ? (int)pa.threads : openblas_get_num_threads());
        printf("%-10s %10s %9s %8s %9s %11s %11s\n", "method", "hessian_s", "prune_s", "GFLOP/s",
               "sparsity", "rel_error", "loss");
    }
    for (i = 0; i < nmethods; i++) {
        spruce_prune_result res;
        double rel = 0.0, hs, flops, gflops;
        o.method = (spruce_method)methods[i];
        memcpy(W, W0, (size_t)rows * cols * sizeof *W);
        if (cli_verbose)
            fprintf(stderr, "spruce: bench prune: %s\n", spruce_method_name(o.method));
        if ((rc = spruce_prune_layer(W, (int)rows, (int)cols, o.method == SPRUCE_METHOD_MAGNITUDE ? NULL : h,
                                     &o, NULL, &res))) {
            cli_error(rc, "bench prune: %s", spruce_method_name(o.method));
            status = rc == SPRUCE_EINVAL ? 2 : 1;
            goto done;
        }
        if ((rc = spruce_prune_rel_error(W0, W, (int)rows, (int)cols, h, &rel))) {
            cli_error(rc, "bench prune: relative error");
            goto done;
        }
        hs = o.method == SPRUCE_METHOD_MAGNITUDE ? 0.0 : hessian_s;
        flops = o.method == SPRUCE_METHOD_MAGNITUDE ? 0.0 : hessian_flops;
        if (o.method == SPRUCE_METHOD_SPARSEGPT)
            flops += 2.0 * (double)cols * cols * cols / 3.0 + sweep_flops((int)rows, (int)cols, o.blocksize);
        gflops = hs + res.seconds > 0.0 ? flops / (hs + res.seconds) / 1e9 : 0.0;
        if (json) {
            json_t *j = json_object();
            char target[32];
            if (pa.m)
                snprintf(target, sizeof target, "%d:%d", pa.n, pa.m);
            else
                snprintf(target, sizeof target, "%g", pa.sparsity);
            json_object_set_new(j, "method", json_string(spruce_method_name(o.method)));
            json_object_set_new(j, "rows", json_integer(rows));
            json_object_set_new(j, "cols", json_integer(cols));
            json_object_set_new(j, "tokens", json_integer(tokens));
            json_object_set_new(j, "target", json_string(target));
            json_object_set_new(j, "hessian_s", cli_json_real(hs));
            json_object_set_new(j, "prune_s", cli_json_real(res.seconds));
            json_object_set_new(j, "gflop", cli_json_real(flops / 1e9));
            json_object_set_new(j, "gflops", cli_json_real(gflops));
            json_object_set_new(j, "sparsity", cli_json_real(res.sparsity));
            json_object_set_new(j, "rel_error", cli_json_real(rel));
            json_object_set_new(j, "loss", cli_json_real(res.loss));
            json_object_set_new(j, "damp_used", cli_json_real(res.damp_used));
            json_object_set_new(j, "damp_retries", json_integer(res.damp_retries));
            json_object_set_new(j, "dead_columns", json_integer(res.dead_columns));
            if (baseline)
                json_object_set_new(j, "sgemm_gflops", cli_json_real(sgemm_gflops));
            json_dumpf(j, stdout, JSON_REAL_PRECISION(7));
            fputc('\n', stdout);
            json_decref(j);
        } else {
            printf("%-10s %10.3f %9.3f %8.1f %9.4f %11.4e %11.4e\n", spruce_method_name(o.method), hs,
                   res.seconds, gflops, res.sparsity, rel, res.loss);
            if (res.damp_retries)
                printf("  (damping raised %d times to %g)\n", res.damp_retries, (double)res.damp_used);
        }
        fflush(stdout);
        if (save && i == 0) {
            if ((rc = spruce__npy_write(save, W, rows, cols))) {
                cli_error(rc, "bench prune: --save-pruned");
                goto done;
            }
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
