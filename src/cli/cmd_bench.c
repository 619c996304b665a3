/* cmd_bench.c: `spruce bench`: sparse kernels against dense OpenBLAS (the
 * parts are listed in cmd_bench.h), and the dispatch of `spruce bench prune`
 * (cmd_bench_prune.c).  Here: the options, the cases they ask for, and the
 * output as a table or as JSON. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <omp.h>

#include "cli.h"
#include "cmd_bench.h"
#include "spruce_qmatrix.h"
#include "spruce_sparse.h"

/* What the options ask for. */
typedef struct {
    int shapes[BENCH_MAX_SHAPES][2], nshapes;
    int batches[BENCH_MAX_BATCHES], nb;
    int formats[BENCH_MAX_FORMATS], nf;
    bench_case cases[BENCH_MAX_CASES];
    int ncases, have_sparsity, pn, pm, sweep;
    int threads, reps, json;
    int dtypes[4], ndt, groupsize; /* --dtype (none: f32 alone, as before) */
    int layout;                    /* --layout: 0 bits, 1 pairs, 2 both (the default) */
    double rotate_mb;
    const char *svg, *model;
} bench_opts;

/* ---- options -------------------------------------------------------------- */
static void usage(FILE *f)
{
    fprintf(f,
        "usage: spruce bench [--shape RxC ...] [--sparsity S[,S...] | --pattern N:M]\n"
        "                    [--batch B[,B...]] [--format auto|csr|bitmask|nm|dense[,...]]\n"
        "                    [--dtype f32|bf16|int8|int4[,...]] [--groupsize G]\n"
        "                    [--layout bits|pairs|both] [--threads T] [--reps R]\n"
        "                    [--rotate-mb MB] [--json]\n"
        "       spruce bench --sweep [--svg FILE] [--shape RxC] [--batch B] [--threads T]\n"
        "                    [--reps R] [--rotate-mb MB] [--json]\n"
        "       spruce bench --model DIR [--batch B[,B...]] [--dtype D[,...]] [--groupsize G]\n"
        "                    [--threads T] [--json]\n"
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
        "  --format F,...     auto (the linear layer's choice: dense, csr, bitmask, or nm\n"
        "                     when the matrix fits --pattern, or 2:4 without one), csr,\n"
        "                     bitmask, nm (needs --pattern), dense (default auto)\n"
        "  --dtype D,...      value types: f32 (the formats above), bf16, int8 (per-row\n"
        "                     scale), int4 (per-group scales): random weights quantized\n"
        "                     to the type; its dense kernel (format \"dense\", always)\n"
        "                     and the --format entries csr, bitmask, nm and auto holding\n"
        "                     the same values, against dense\n"
        "                     OpenBLAS float32 in the same run (default f32)\n"
        "  --groupsize G      int4 group size, a multiple of 32 from 32 to 256 (default 128)\n"
        "  --layout L         the layouts an nm entry of --format is timed in: bits (a bit\n"
        "                     per weight), pairs (2:4 and 1:4: rows in pairs, 2 bits of\n"
        "                     position per value) or both (default); auto holds the one\n"
        "                     the linear layer's planner timed faster\n"
        "  --threads T        threads for OpenBLAS and the sparse kernels (default: all)\n"
        "  --reps R           timed passes over the rotation (default 7)\n"
        "  --rotate-mb MB     bytes each working set must exceed (default 2 x LLC)\n"
        "  --json             a JSON list of results on stdout instead of the table\n"
        "  --sweep            speedup against sparsity 30%%..95%% and 2:4, batch 1 and the\n"
        "                     largest --batch (default 16), format auto, one shape\n"
        "                     (default 11008x4096); with one --dtype, in that value\n"
        "                     type against its dense kernel\n"
        "  --svg FILE         with --sweep: draw the chart as SVG (FILE is created, as\n"
        "                     FILE.tmp-PID, before the sweep and renamed when complete)\n"
        "  --model DIR        every linear layer of a (pruned) checkpoint, dense OpenBLAS\n"
        "                     float32 against the linear layer's choice (with --dtype: in\n"
        "                     each value type); then end-to-end decoding tokens/s, dense\n"
        "                     float32 against dense and auto of each value type (without\n"
        "                     --dtype: auto in the checkpoint's own type too, bf16 or a\n"
        "                     compressed checkpoint's levels), on the same weights (not\n"
        "                     with --json)\n"
        "Set SPRUCE_ISA=scalar|avx2|avx512 to force the kernels' instruction set\n"
        "(SPRUCE_BF16DP=0: AVX-512 bf16 without the AVX512-BF16 dot products);\n"
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

static int parse_shape(const char *s, bench_opts *o)
{
    int r = 0, c = 0, len = 0;
    if (o->nshapes == BENCH_MAX_SHAPES) {
        cli_fail("bench: at most %d --shape options", BENCH_MAX_SHAPES);
        return -1;
    }
    if (sscanf(s, "%dx%d%n", &r, &c, &len) != 2 || s[len] || r < 1 || c < 1 || r > 1000000 ||
        c > 1000000) {
        cli_fail("bench: --shape: expected ROWSxCOLS (e.g. 11008x4096), got '%s'", s);
        return -1;
    }
    o->shapes[o->nshapes][0] = r;
    o->shapes[o->nshapes][1] = c;
    o->nshapes++;
    return 0;
}

static int parse_sparsities(const char *s, bench_opts *o)
{
    char buf[256], *tok, *save = NULL;
    snprintf(buf, sizeof buf, "%s", s);
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        double v;
        if (o->ncases == BENCH_MAX_CASES) {
            cli_fail("bench: at most %d sparsities", BENCH_MAX_CASES);
            return -1;
        }
        if (cli_parse_float("--sparsity", tok, 0.0, 0.999, &v) < 0)
            return -1;
        o->cases[o->ncases].sparsity = v;
        o->cases[o->ncases].n = o->cases[o->ncases].m = 0;
        o->ncases++;
    }
    o->have_sparsity = 1;
    return 0;
}

static int parse_dtypes(const char *s, bench_opts *o)
{
    char buf[128], *tok, *save = NULL;
    o->ndt = 0;
    snprintf(buf, sizeof buf, "%s", s);
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int d = spruce_dtype_parse(tok), k;
        if (d < 0) {
            cli_fail("bench: --dtype: expected f32, bf16, int8 or int4, got '%s'", tok);
            return -1;
        }
        for (k = 0; k < o->ndt; k++)
            if (o->dtypes[k] == d) {
                cli_fail("bench: --dtype: %s given twice", tok);
                return -1;
            }
        o->dtypes[o->ndt++] = d;
    }
    if (!o->ndt) {
        cli_fail("bench: --dtype: empty list");
        return -1;
    }
    return 0;
}

static int parse_formats(const char *s, bench_opts *o)
{
    char buf[128], *tok, *save = NULL;
    o->nf = 0;
    snprintf(buf, sizeof buf, "%s", s);
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int fm = !strcmp(tok, "auto") ? BENCH_AUTO : spruce_format_parse(tok);
        if (fm == -1 && strcmp(tok, "auto")) {
            cli_fail("bench: --format: expected auto, csr, bitmask, nm or dense, got '%s'", tok);
            return -1;
        }
        if (o->nf == BENCH_MAX_FORMATS) {
            cli_fail("bench: --format: at most %d formats", BENCH_MAX_FORMATS);
            return -1;
        }
        o->formats[o->nf++] = fm;
    }
    if (!o->nf) {
        cli_fail("bench: --format: empty list");
        return -1;
    }
    return 0;
}

/* Each nm entry of --format as the layouts --layout names: the bit layout
 * (SPRUCE_FMT_NM), the pair layout (BENCH_NM_PAIRS, where the pattern fits
 * it) or both, in that order. */
static int expand_layouts(bench_opts *o)
{
    int out[2 * BENCH_MAX_FORMATS], n = 0, i;
    const int pairs = o->pn > 0 && o->pn <= 2 && o->pm == 4;
    for (i = 0; i < o->nf; i++) {
        if (o->formats[i] != SPRUCE_FMT_NM) {
            out[n++] = o->formats[i];
            continue;
        }
        if (o->layout != 1 || !pairs)
            out[n++] = SPRUCE_FMT_NM;
        if (o->layout != 0 && pairs)
            out[n++] = BENCH_NM_PAIRS;
    }
    if (n > BENCH_MAX_FORMATS) {
        cli_fail("bench: --format: at most %d formats, with nm counted once per --layout",
                 BENCH_MAX_FORMATS);
        return -1;
    }
    memcpy(o->formats, out, sizeof *out * n);
    o->nf = n;
    return 0;
}

/* The options into o: 0, 1 when --help was printed, -1 after a usage error. */
static int parse_options(int argc, char **argv, bench_opts *o)
{
    static const struct option longopts[] = {
        {"shape", required_argument, NULL, 'S'},   {"sparsity", required_argument, NULL, 's'},
        {"pattern", required_argument, NULL, 'p'}, {"batch", required_argument, NULL, 'b'},
        {"format", required_argument, NULL, 'f'},  {"threads", required_argument, NULL, 't'},
        {"reps", required_argument, NULL, 'r'},    {"json", no_argument, NULL, 'j'},
        {"sweep", no_argument, NULL, 'w'},         {"svg", required_argument, NULL, 'g'},
        {"model", required_argument, NULL, 'M'},   {"rotate-mb", required_argument, NULL, 'R'},
        {"dtype", required_argument, NULL, 'd'},   {"groupsize", required_argument, NULL, 'G'},
        {"layout", required_argument, NULL, 'L'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    int opt;
    long v;
    memset(o, 0, sizeof *o);
    o->batches[0] = 1;
    o->batches[1] = 16;
    o->nb = 2;
    o->formats[0] = BENCH_AUTO;
    o->nf = 1;
    o->reps = 7;
    o->groupsize = 128;
    o->layout = 2;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'S':
            if (parse_shape(optarg, o) < 0)
                return -1;
            break;
        case 's':
            if (parse_sparsities(optarg, o) < 0)
                return -1;
            break;
        case 'p':
            if (cli_parse_pattern("--pattern", optarg, &o->pn, &o->pm) < 0)
                return -1;
            if (o->pm > 64) {
                cli_fail("bench: --pattern: M must be at most 64, got %d", o->pm);
                return -1;
            }
            break;
        case 'b':
            o->nb = parse_list_int("--batch", optarg, 1, 4096, o->batches, BENCH_MAX_BATCHES);
            if (o->nb < 0)
                return -1;
            break;
        case 'f':
            if (parse_formats(optarg, o) < 0)
                return -1;
            break;
        case 't':
            if (cli_parse_int("--threads", optarg, 1, 1024, &v) < 0)
                return -1;
            o->threads = (int)v;
            break;
        case 'r':
            if (cli_parse_int("--reps", optarg, 1, 64, &v) < 0)
                return -1;
            o->reps = (int)v;
            break;
        case 'R':
            if (cli_parse_float("--rotate-mb", optarg, 0.0, 1e6, &o->rotate_mb) < 0)
                return -1;
            break;
        case 'd':
            if (parse_dtypes(optarg, o) < 0)
                return -1;
            break;
        case 'G':
            if (cli_parse_groupsize("bench", optarg, &v) < 0)
                return -1;
            o->groupsize = (int)v;
            break;
        case 'L':
            if (!strcmp(optarg, "bits") || !strcmp(optarg, "pairs") || !strcmp(optarg, "both")) {
                o->layout = optarg[0] == 'b' && optarg[1] == 'i' ? 0 : optarg[0] == 'p' ? 1 : 2;
                break;
            }
            cli_fail("bench: --layout: expected bits, pairs or both, got '%s'", optarg);
            return -1;
        case 'j': o->json = 1; break;
        case 'w': o->sweep = 1; break;
        case 'g': o->svg = optarg; break;
        case 'M': o->model = optarg; break;
        case 'h': usage(stdout); return 1;
        default:
            cli_fail("bench: unknown or incomplete option '%s' (try 'spruce bench --help')",
                     argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) {
        cli_fail("bench: unexpected argument '%s' (try 'spruce bench --help')", argv[optind]);
        return -1;
    }
    if (o->svg && !o->sweep) {
        cli_fail("bench: --svg needs --sweep");
        return -1;
    }
    if (o->sweep && (o->have_sparsity || o->pn || o->nshapes > 1 || o->model)) {
        cli_fail("bench: --sweep chooses the sparsities itself and takes at most one --shape "
                 "(no --sparsity, --pattern or --model)");
        return -1;
    }
    if (o->ndt > 1 && o->sweep) {
        cli_fail("bench: --sweep takes one --dtype (one chart per value type)");
        return -1;
    }
    if (o->pn && o->have_sparsity) {
        cli_fail("bench: give --sparsity or --pattern, not both");
        return -1;
    }
    if (!o->pn && !o->sweep && !o->model) {
        int i;
        for (i = 0; i < o->nf; i++)
            if (o->formats[i] == SPRUCE_FMT_NM) {
                cli_fail("bench: --format nm needs --pattern N:M (nm packs an N:M matrix: e.g. "
                         "--pattern 2:4); an unstructured --sparsity has no nm layout");
                return -1;
            }
    }
    return expand_layouts(o);
}

/* What --sweep measures: 30%..95% and 2:4, batch 1 and the largest --batch
 * (16 when that is 1), format auto, one shape (default 11008x4096). */
static void sweep_cases(bench_opts *o)
{
    static const double sw[] = {0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95};
    int i, big = 1;
    for (i = 0; i < o->nb; i++)
        if (o->batches[i] > big)
            big = o->batches[i];
    o->batches[0] = 1;
    o->batches[1] = big == 1 ? 16 : big;
    o->nb = 2;
    for (o->ncases = 0; o->ncases < (int)(sizeof sw / sizeof sw[0]); o->ncases++) {
        o->cases[o->ncases].sparsity = sw[o->ncases];
        o->cases[o->ncases].n = o->cases[o->ncases].m = 0;
    }
    o->cases[o->ncases].sparsity = 0.5;
    o->cases[o->ncases].n = 2;
    o->cases[o->ncases].m = 4;
    o->ncases++;
    o->formats[0] = BENCH_AUTO;
    o->nf = 1;
    if (!o->nshapes) {
        o->shapes[0][0] = 11008;
        o->shapes[0][1] = 4096;
        o->nshapes = 1;
    }
}

/* The shapes and sparsities that were not given: the defaults. */
static void default_cases(bench_opts *o)
{
    static const int def[3][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}};
    if (!o->nshapes)
        for (o->nshapes = 0; o->nshapes < 3; o->nshapes++) {
            o->shapes[o->nshapes][0] = def[o->nshapes][0];
            o->shapes[o->nshapes][1] = def[o->nshapes][1];
        }
    if (o->pn) {
        o->cases[0].sparsity = 1.0 - (double)o->pn / o->pm;
        o->cases[0].n = o->pn;
        o->cases[0].m = o->pm;
        o->ncases = 1;
    } else if (!o->ncases) {
        o->cases[0].sparsity = 0.5;
        o->cases[0].n = o->cases[0].m = 0;
        o->ncases = 1;
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

/* The run's settings: kernels, threads, cache size, rotation, load. 0, or 1
 * after a message. */
static int setup_context(const bench_opts *o, bench_ctx *cx)
{
    int isa;
    memset(cx, 0, sizeof *cx);
    cx->reps = o->reps;
    cx->json = o->json;
    cx->verbose = cli_verbose;
    if ((isa = spruce_sparse_isa()) < 0) {
        cli_error(isa, "bench");
        return 1;
    }
    cx->isa = spruce_sparse_isa_name(isa);
    cx->dtypes = o->ndt > 0;
    cx->threads = o->threads ? o->threads : omp_get_max_threads();
    cli_set_threads(cx->threads);
    cx->llc = llc_bytes();
    cx->rotate = o->rotate_mb > 0 ? o->rotate_mb * 1e6 : 2.0 * cx->llc;
    if (getloadavg(&cx->load, 1) != 1)
        cx->load = -1;
    if (cx->verbose)
        fprintf(stderr, "bench: kernels %s, %d threads, last-level cache %.0f MB, each working "
                        "set > %.0f MB, load average %.2f\n", cx->isa, cx->threads,
                cx->llc / 1048576.0, cx->rotate / 1e6, cx->load);
    return 0;
}

/* Every shape, sparsity and value type, in order: 0, or 1 after a message. */
static int run_cases(bench_ctx *cx, const bench_opts *o)
{
    int i, k, rc = 0;
    const int f32only[1] = {SPRUCE_DT_F32};
    const int *dts = o->ndt ? o->dtypes : f32only, ndt = o->ndt ? o->ndt : 1;
    int d;
    if (!cx->json)
        bench_print_header(cx);
    for (i = 0; i < o->nshapes && !rc; i++)
        for (k = 0; k < o->ncases && !rc; k++)
            for (d = 0; d < ndt && !rc; d++) {
                if (cli_interrupted()) /* --svg: a signal stops between cases */
                    return 1;
                if (cx->verbose) {
                    char label[16];
                    bench_case_label(&o->cases[k], label, sizeof label);
                    fprintf(stderr, "bench: %dx%d %s %s ...\n", o->shapes[i][0],
                            o->shapes[i][1], label, spruce_dtype_name(dts[d]));
                }
                if (dts[d] == SPRUCE_DT_F32)
                    rc = bench_case_run(cx, o->shapes[i][0], o->shapes[i][1], &o->cases[k],
                                        o->formats, o->nf, o->batches, o->nb);
                else
                    rc = bench_dtype_run(cx, o->shapes[i][0], o->shapes[i][1], &o->cases[k],
                                         dts[d], o->groupsize, o->formats, o->nf, o->batches,
                                         o->nb);
            }
    return rc;
}

/* The rows as a JSON list on stdout (--model rows have no rotation figures). */
static void print_json(const bench_ctx *cx, int model)
{
    json_t *list = json_array();
    int i;
    for (i = 0; i < cx->nres; i++) {
        const bench_result *r = &cx->res[i];
        char pat[16];
        json_t *o = json_object();
        snprintf(pat, sizeof pat, "%d:%d", r->n, r->m);
        json_object_set_new(o, "format", json_string(r->format));
        json_object_set_new(o, "rows", json_integer(r->rows));
        json_object_set_new(o, "cols", json_integer(r->cols));
        json_object_set_new(o, "batch", json_integer(r->batch));
        json_object_set_new(o, "sparsity", cli_json_real(r->sparsity));
        json_object_set_new(o, "pattern", json_string(r->n ? pat : "unstructured"));
        json_object_set_new(o, "dense_ms", cli_json_real(r->dense_ms));
        json_object_set_new(o, "sparse_ms", cli_json_real(r->sparse_ms));
        json_object_set_new(o, "speedup", cli_json_real(r->speedup));
        json_object_set_new(o, "dtype", json_string(spruce_dtype_name(r->dtype)));
        if (r->groupsize)
            json_object_set_new(o, "groupsize", json_integer(r->groupsize));
        json_object_set_new(o, "dense_f32_ms", cli_json_real(r->dense_f32_ms));
        if (r->kernel[0])
            json_object_set_new(o, "kernel", json_string(r->kernel));
        if (r->layout[0])
            json_object_set_new(o, "layout", json_string(r->layout));
        if (!model) {
            json_object_set_new(o, "sparse_gbps", cli_json_real(r->gbps));
            json_object_set_new(o, "dense_gbps", cli_json_real(r->dense_gbps));
            json_object_set_new(o, "byte_ceiling", cli_json_real(r->ceiling));
            json_object_set_new(o, "rotated_dense", json_integer(r->rot_dense));
            json_object_set_new(o, "rotated_sparse", json_integer(r->rot_sparse));
        }
        json_object_set_new(o, "threads", json_integer(cx->threads));
        json_object_set_new(o, "isa", json_string(cx->isa));
        json_object_set_new(o, "load_average", cli_json_real(cx->load));
        json_array_append_new(list, o);
    }
    json_dumpf(list, stdout, JSON_INDENT(2));
    fputc('\n', stdout);
    json_decref(list);
}

int spruce_cmd_bench(int argc, char **argv)
{
    bench_opts o;
    bench_ctx cx;
    bench_svg svg = {NULL, NULL, NULL};
    int rc;
    if (argc >= 2 && !strcmp(argv[1], "prune"))
        return spruce_cmd_bench_prune(argc - 1, argv + 1);
    if ((rc = parse_options(argc, argv, &o)))
        return rc > 0 ? 0 : 2;
    if (o.svg) {
        /* SIGINT, SIGTERM, SIGHUP stop the sweep at the next case and remove
         * FILE.tmp-PID (cli_signal.c) */
        cli_signals_install();
        if (bench_svg_open(o.svg, &svg)) /* before the sweep, not after it */
            return 1;
    }
    if (setup_context(&o, &cx)) {
        bench_svg_discard(&svg);
        return 1;
    }
    if (o.model) {
        rc = bench_model(&cx, o.model, o.batches, o.nb, o.dtypes, o.ndt, o.groupsize);
    } else {
        if (o.sweep)
            sweep_cases(&o);
        default_cases(&o);
        rc = run_cases(&cx, &o);
        if (!rc && o.sweep && o.svg) {
            rc = bench_write_svg(&svg, &cx, o.shapes[0][0], o.shapes[0][1], o.batches[1],
                                 o.ndt ? o.dtypes[0] : SPRUCE_DT_F32, o.groupsize);
            if (!rc && !cx.json)
                printf("chart written to %s\n", o.svg);
        }
    }
    if (!rc && cx.json)
        print_json(&cx, o.model != NULL);
    bench_svg_discard(&svg); /* a failed sweep leaves no chart and no temporary */
    free(cx.res);
    if (o.svg && cli_interrupted())
        cli_signals_reraise("bench");
    return rc;
}
