/* cmd_prune.c: `spruce prune MODEL_DIR -o OUT_DIR --calib FILE ...`: prune a
 * Hugging Face checkpoint block by block and write the pruned checkpoint (and,
 * with --masks, the masks) atomically. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>
#include <jansson.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "config.h"
#include "cli.h"
#include "prune_args.h"
#include "prune_report.h"
#include "spruce_dist.h"
#include "spruce_masks.h"
#include "spruce_memstat.h"
#include "spruce_pipeline.h"
#include "spruce_tokens.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: spruce prune MODEL_DIR -o OUT_DIR --calib FILE (--sparsity S | --pattern N:M)\n"
            "                    [--calib-format F] [--seed S]\n"
            "                    [--method sparsegpt|wanda|magnitude] [--seqlen T] [--nsamples N]\n"
            "                    [--blocksize B] [--damp F] [--true-sequential]\n"
            "                    [--wbits B [--groupsize G] [--sym]]\n"
            "                    [--include RE] [--exclude RE] [--threads N] [--force]\n"
            "                    [--masks FILE.h5] [--save-format dense|compressed]\n"
            "                    [--layer-sparsity FILE.json | --sparsity-profile owl\n"
            "                     [--owl-m M] [--owl-lambda L]] [--json]\n\n"
            "Prune the linear layers of every block (seven; six for opt) of a Hugging Face\n"
            "checkpoint (llama, mistral, qwen2, qwen3, gemma2, gemma3_text, phi3, opt) in one shot,\n"
            "block by block as the published SparseGPT pipeline does: each block is\n"
            "calibrated on the outputs of the already pruned blocks before it.  Embeddings,\n"
            "norms and the output head stay dense.\n"
            "OUT_DIR receives the same layout (tensor names, dtypes, shards, other files).\n\n"
            "  -o, --output DIR     output checkpoint directory (must not exist or be empty;\n"
            "                       never the input, inside it or holding it)\n"
            "  --calib FILE         calibration data (not needed for --method magnitude):\n"
            "                       token ids (.u16, .u32, decimal ids) give their\n"
            "                       consecutive windows of T tokens; a UTF-8 text gives N\n"
            "                       random windows of its tokens; JSON lines (.jsonl, a\n"
            "                       \"text\" per line) per sample a random document of at\n"
            "                       least T tokens, then a random window of it (as the\n"
            "                       published SparseGPT and Wanda draw C4); text needs\n"
            "                       MODEL_DIR/tokenizer.json\n"
            "  --calib-format F     ids, u16, u32, text or jsonl (default: by name and content)\n"
            "  --seed S             seed of the random windows (default 0)\n"
            "  --sparsity S         unstructured: prune the fraction S in [0, 1) of each layer\n"
            "  --pattern N:M        semi-structured: prune N of every M consecutive weights\n"
            "  --method M           sparsegpt (default), wanda or magnitude\n"
            "  --seqlen T           tokens per calibration sample\n"
            "                       (default min(2048, max_position_embeddings))\n"
            "  --nsamples N         calibration samples (default 128, fewer if FILE is shorter)\n"
            "  --blocksize B        SparseGPT column block (default 128; with --pattern a\n"
            "                       multiple of M)\n"
            "  --damp F             relative Hessian damping (default 0.01)\n"
            PRUNE_ARGS_QUANT_HELP
            "  --layer-sparsity F   a JSON object mapping tensor-name regexes (POSIX extended,\n"
            "                       searched in the name) to a sparsity in [0, 1), an \"N:M\"\n"
            "                       pattern or \"dense\"; the first key that matches a layer\n"
            "                       decides, layers no key matches get --sparsity / --pattern;\n"
            "                       every key must match a layer; sparsities are pruned as\n"
            "                       exact counts (the overall sparsity is exact); expert\n"
            "                       tensors of a mixture of experts are layers like any other\n"
            "  --sparsity-profile P uniform (default) or owl: OWL's outlier-weighed blocks\n"
            "                       (as llm-compressor computes them): a dense pass over the\n"
            "                       calibration data gives each block an outlier ratio, and\n"
            "                       the ratios sparsities in --sparsity +- --owl-lambda whose\n"
            "                       mean is --sparsity, pruned as exact counts; needs --sparsity;\n"
            "                       not for a mixture of experts\n"
            "  --owl-m M            OWL's outlier threshold, M x the mean score (default 5)\n"
            "  --owl-lambda L       OWL's half-range of the block sparsities (default 0.08)\n"
            "  --json               the summary as one JSON object on standard output\n"
            "  --true-sequential    calibrate q/k/v, then o, then gate/up, then down, each on\n"
            "                       the outputs of the already pruned earlier layers\n"
            "  --include RE         prune only tensors whose name matches RE (POSIX extended)\n"
            "  --exclude RE         do not prune tensors whose name matches RE\n"
            "  --threads N          threads (default: all cores)\n"
            "  --force              replace a non-empty OUT_DIR\n"
            "  --masks FILE.h5      also write the masks (HDF5, true = kept); never an input\n"
            "                       file, inside the input or inside OUT_DIR\n"
            "  --save-format F      dense (default: the input's layout, zeros stored) or\n"
            "                       compressed: the compressed-tensors layout (sparse-24-bitmask\n"
            "                       for --pattern 2:4, sparse-bitmask otherwise; quantized\n"
            "                       values when the layer reports a grid) with its\n"
            "                       quantization_config in config.json\n"
            "  -h, --help           this message\n\n"
            "OUT_DIR and the masks are written under temporary names (OUT_DIR.tmp-<pid>,\n"
            "FILE.h5.tmp-<pid>) and published together at the end: a failure or SIGINT,\n"
            "SIGTERM or SIGHUP leaves neither, and an old OUT_DIR or FILE.h5 as it was.\n"
            "Temporaries left by a killed run are removed by the next run (and named).\n"
            "Progress goes to standard error; a summary to standard output, with the\n"
            "memory estimate beside the peak resident memory measured (getrusage;\n"
            "anonymous and mapped apart where /proc/self/status gives them).\n\n"
            "Under 'mpirun -np R' (spruce configured --with-mpi) rank r calibrates on its\n"
            "contiguous share of the N samples, the Hessians are summed over the ranks, the\n"
            "layers of a block are pruned on different ranks at once, and rank 0 writes\n"
            "OUT_DIR and the masks; a failure on any rank stops every rank with its message\n"
            "(doc/mpi.md).\n");
}

#define GIB (1024.0 * 1024.0 * 1024.0)

/* "memory: estimate ... GiB; peak resident ... GiB (getrusage); ..." on
 * standard output: what the operating system measured beside the estimate
 * printed at start.  RssAnon and RssFile are the largest values sampled after
 * each layer and block (the kernel keeps no peak of either). */
/* The same figures for --json, in bytes; anonymous and mapped are null where
 * the platform does not tell them. */
static json_t *memory_json(double estimate, const spruce_memstat *max)
{
    json_t *o = json_object();
    json_object_set_new(o, "estimate_bytes", json_integer((json_int_t)estimate));
    json_object_set_new(o, "peak_rss_bytes",
                        max->peak_rss >= 0 ? json_integer((json_int_t)max->peak_rss) : json_null());
    json_object_set_new(o, "rss_anon_bytes",
                        max->rss_anon >= 0 ? json_integer((json_int_t)max->rss_anon) : json_null());
    json_object_set_new(o, "rss_file_bytes",
                        max->rss_file >= 0 ? json_integer((json_int_t)max->rss_file) : json_null());
    return o;
}

static void print_memory(double estimate, const spruce_memstat *max)
{
    printf("memory: estimate %.3f GiB; peak resident %.3f GiB (getrusage ru_maxrss)", estimate / GIB,
           max->peak_rss / GIB);
    if (max->rss_anon >= 0 && max->rss_file >= 0)
        printf("; largest sampled anonymous %.3f GiB, mapped %.3f GiB (RssAnon, RssFile)",
               max->rss_anon / GIB, max->rss_file / GIB);
    printf("\n");
}

/* "per row" or "per row and 128 columns" */
static const char *quant_where(const prune_args *pa, char *buf, size_t n)
{
    if (!pa->groupsize)
        return "per row";
    snprintf(buf, n, "per row and %ld columns", pa->groupsize);
    return buf;
}

typedef struct {
    double t0;
    double last_block;
    const char *method;
    char pattern[32];
    int has_loss, has_data;   /* SparseGPT's loss; calibration data (not magnitude) */
    spruce_maskfile *masks;
    const char *masks_path;
    spruce_ckpt_writer *cw;   /* --save-format compressed: written here, with the grid */
    /* a mixture of experts: (layers, experts) tokens, loss and relative error
     * (summed over the expert's three matrices), and which took a fallback */
    int nexperts;
    int64_t *etokens;
    double *eloss, *erel;
    unsigned char *efallback;
    prune_report rep;         /* the summary's rows */
    uint8_t *ones;            /* an all-kept mask for layers the plan keeps dense */
    size_t ones_cap;
    double owl_m, owl_lambda;
    const char *layer_file;
    spruce_memstat mem;       /* the largest figures sampled after each layer and block */
} prune_ctx;

static int on_layer(void *vctx, const spruce_layer_report *r)
{
    prune_ctx *ctx = vctx;
    double frac = ((double)r->layer + (double)(r->which + 1) / SPRUCE_NPROJ) / r->nlayers;
    double el = r->elapsed;
    int rc;
    char pattern[32];
    if (cli_interrupted())
        return 1; /* stop at this check point: the caller sees the signal */
    spruce_memstat_sample(&ctx->mem); /* the layer's Hessian and factors are still held */
    prune_report_pattern(&r->target, ctx->pattern, pattern, sizeof pattern);
    if (prune_report_add(&ctx->rep, r, pattern, ctx->has_loss))
        return spruce__seterr(SPRUCE_ENOMEM, "the summary of %s", r->name);
    if (r->target.kind == SPRUCE_TARGET_DENSE) {
        size_t n = (size_t)r->rows * r->cols;
        fprintf(stderr, "block %d/%d  %-40s %5dx%-5d dense (the plan keeps it)\n", r->layer + 1,
                r->nlayers, r->name, r->rows, r->cols);
        if (!ctx->masks) /* nothing written: the writer copies the tensor as it was */
            return 0;
        if (n > ctx->ones_cap) {
            free(ctx->ones);
            if (!(ctx->ones = malloc(n)))
                return spruce__seterr(SPRUCE_ENOMEM, "mask of %s", r->name);
            memset(ctx->ones, 1, n);
            ctx->ones_cap = n;
        }
        spruce_mask_info info = {pattern, ctx->method, 0.0, 0.0, 0};
        return spruce_maskfile_write(ctx->masks, r->name, r->rows, r->cols, ctx->ones, &info);
    }
    fprintf(stderr, "block %d/%d  %-40s %5dx%-5d loss %.4e  sparsity %.4f  %.2f s  ETA %.1f s\n",
            r->layer + 1, r->nlayers, r->name, r->rows, r->cols, r->result.loss,
            r->result.sparsity, r->result.seconds, frac > 0 ? el * (1 - frac) / frac : 0.0);
    if (r->expert >= 0 && ctx->etokens) {
        size_t i = (size_t)r->layer * ctx->nexperts + r->expert;
        if (r->which != SPRUCE_PROJ_DOWN)   /* gate and up: the tokens routed to it */
            ctx->etokens[i] = r->tokens;
        ctx->eloss[i] += r->result.loss;
        ctx->erel[i] += r->rel_error > 0 ? r->rel_error : 0;
        if (ctx->has_data && r->which != SPRUCE_PROJ_UP)   /* up shares gate's input */
            fprintf(stderr, "  expert %d %s: %lld calibration tokens%s%s\n", r->expert,
                    r->which == SPRUCE_PROJ_DOWN ? "down" : "gate/up", (long long)r->tokens,
                    r->fallback ? "; fewer than its inputs: " : "",
                    r->fallback ? r->fallback : "");
        ctx->efallback[i] |= r->fallback != NULL;
    }
    if (r->result.dead_columns > 0)
        fprintf(stderr, "  %s: %d of its %d inputs are dead (zero in every calibration token: H_ii = 0); "
                "their weights are pruned (SparseGPT sets them to zero, as its published code does)\n",
                r->name, r->result.dead_columns, r->cols);
    if (ctx->cw && (rc = spruce_ckpt_writer_set_quantized(ctx->cw, r->name, r->weight, r->grid)))
        return rc;
    if (ctx->masks) {
        spruce_mask_info info;
        info.pattern = pattern;
        info.method = ctx->method;
        info.sparsity = -1.0;
        info.loss = r->result.loss;
        info.has_loss = ctx->has_loss;
        if ((rc = spruce_maskfile_write(ctx->masks, r->name, r->rows, r->cols, r->mask, &info)))
            return rc;
    }
    return 0;
}

/* Per expert of every mixture-of-experts block: its calibration tokens, its
 * loss (SparseGPT) and relative output error summed over gate, up and down. */
static void print_experts(const prune_ctx *ctx, const spruce_config *c)
{
    int l, e, any = 0;
    for (l = 0; l < c->num_hidden_layers; l++)
        any |= spruce_config_layer_moe(c, l);
    if (!any) /* every layer dense (mlp_only_layers, decoder_sparse_step) */
        return;
    printf("experts (block.expert: calibration tokens, loss, relative error of gate+up+down; "
           "* fewer tokens than inputs, see above):\n");
    for (l = 0; l < c->num_hidden_layers; l++) {
        if (!spruce_config_layer_moe(c, l))
            continue;
        for (e = 0; e < ctx->nexperts; e++) {
            size_t i = (size_t)l * ctx->nexperts + e;
            if (!ctx->has_data) {
                printf("  %d.%d: magnitude, no calibration\n", l, e);
                continue;
            }
            printf("  %d.%d: %lld tokens, loss %.4e, rel error %.4e%s\n", l, e,
                   (long long)ctx->etokens[i], ctx->eloss[i], ctx->erel[i],
                   ctx->efallback[i] ? " *" : "");
        }
    }
}

static void on_profile(void *vctx, int layer, int nlayers, double ratio, double elapsed)
{
    (void)vctx;
    fprintf(stderr, "owl: dense pass, block %d/%d: outlier ratio %.4f%%  elapsed %.1f s\n",
            layer + 1, nlayers, ratio, elapsed);
}

static int on_plan(void *vctx, const spruce_layer_target *plan, const double *block_sparsity,
                   int nlayers)
{
    prune_ctx *ctx = vctx;
    int i;
    (void)plan;
    if (prune_report_plan(&ctx->rep, block_sparsity, nlayers))
        return spruce__seterr(SPRUCE_ENOMEM, "the plan of %d blocks", nlayers);
    for (i = 0; block_sparsity && i < nlayers; i++)
        fprintf(stderr, "owl: block %d/%d gets sparsity %.6f\n", i + 1, nlayers,
                block_sparsity[i]);
    return ctx->masks ? prune_report_mask_attrs(&ctx->rep, ctx->masks, ctx->owl_m,
                                                ctx->owl_lambda, ctx->layer_file)
                      : 0;
}

static void on_block(void *vctx, int layer, int nlayers, double elapsed)
{
    prune_ctx *ctx = vctx;
    double per = elapsed / (layer + 1);
    spruce_memstat_sample(&ctx->mem);
    fprintf(stderr, "block %d/%d done  %.2f s  elapsed %.1f s  ETA %.1f s  peak resident %.2f GiB\n",
            layer + 1, nlayers, elapsed - ctx->last_block, elapsed, per * (nlayers - layer - 1),
            ctx->mem.peak_rss / GIB);
    ctx->last_block = elapsed;
}

static int set_masks_attrs(spruce_maskfile *f, const char *model, const char *method,
                           const char *pattern, double sparsity, int nsamples, int seqlen,
                           double damp, int blocksize, int true_sequential)
{
    char date[64];
    time_t now = time(NULL);
    struct tm tmv;
    int rc;
    gmtime_r(&now, &tmv);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tmv);
    if ((rc = spruce_maskfile_set_attr_string(f, "model", model)) ||
        (rc = spruce_maskfile_set_attr_string(f, "method", method)) ||
        (rc = spruce_maskfile_set_attr_string(f, "pattern", pattern)) ||
        (!strcmp(pattern, "unstructured") &&
         (rc = spruce_maskfile_set_attr_double(f, "sparsity", sparsity))) ||
        (rc = spruce_maskfile_set_attr_int(f, "nsamples", nsamples)) ||
        (rc = spruce_maskfile_set_attr_int(f, "seqlen", seqlen)) ||
        (rc = spruce_maskfile_set_attr_double(f, "damp", damp)) ||
        (rc = spruce_maskfile_set_attr_int(f, "blocksize", blocksize)) ||
        (rc = spruce_maskfile_set_attr_int(f, "true_sequential", true_sequential)) ||
        (rc = spruce_maskfile_set_attr_string(f, "spruce_version", PACKAGE_VERSION)) ||
        (rc = spruce_maskfile_set_attr_string(f, "date", date)))
        return rc;
    return 0;
}

/* The calibration windows of path: *nsamples of them (fewer from a short
 * token file), said on standard error with where each came from. */
static int load_calib(const char *path, const char *fmt_name, const char *dir,
                      const spruce_config *cfg, int seqlen, long seed, long *nsamples,
                      uint32_t **ids)
{
    spruce_data_format f;
    spruce_tokenizer *tok = NULL;
    spruce_data_window *win = NULL;
    int rc, count = 0, i, status = -1;
    if (cli_data_open("prune", "--calib", path, fmt_name, dir, &f, &tok))
        return -1;
    if ((rc = spruce_data_calib(path, f, tok, 1, (int)*nsamples, seqlen, (uint64_t)seed, NULL,
                                NULL, ids, &win, &count)) ||
        (rc = spruce_tokens_check(*ids, (size_t)count * (size_t)seqlen,
                                  (uint32_t)cfg->vocab_size, path))) {
        cli_error(rc, "prune: --calib");
        goto done;
    }
    if (count < *nsamples)
        fprintf(stderr, "prune: %s holds %d windows of %d tokens: calibrating on %d samples "
                "instead of %ld\n", path, count, seqlen, count, *nsamples);
    *nsamples = count;
    fprintf(stderr, "prune: calibration windows (%s%s, seed %ld):", spruce_data_format_name(f),
            f == SPRUCE_DATA_JSONL ? ": line:first token" : ": first token", seed);
    for (i = 0; i < count; i++) {
        if (win[i].doc >= 0)
            fprintf(stderr, " %lld:%zu", (long long)win[i].doc + 1, win[i].start);
        else
            fprintf(stderr, " %zu", win[i].start);
    }
    fputc('\n', stderr);
    status = 0;
done:
    if (status) {
        free(*ids);
        *ids = NULL;
    }
    free(win);
    spruce_tokenizer_free(tok);
    return status;
}

/* Write out everything and publish it: 0, or 1 after saying what failed. */
static int publish(spruce_ckpt_writer *w, spruce_maskfile *mf, const char *out,
                   const char *masks_path)
{
    int rc;
    if (cli_interrupted())
        return 1;
    /* Publish both or neither: everything is written and synced under the
     * temporary names first; then the checkpoint is renamed into place, then
     * the masks; if the masks cannot be, the checkpoint is rolled back. */
    if ((rc = spruce_ckpt_writer_prepare(w))) {
        cli_error(rc, "prune: writing %s", out);
        return 1;
    }
    if (mf && (rc = spruce_maskfile_prepare(mf))) {
        cli_error(rc, "prune: writing masks %s", masks_path);
        return 1;
    }
    if (cli_interrupted())
        return 1;
    if ((rc = spruce_ckpt_writer_publish(w))) {
        cli_error(rc, "prune: writing %s", out);
        return 1;
    }
    if (mf && (rc = spruce_maskfile_publish(mf))) {
        cli_error(rc, "prune: writing masks %s (%s left as it was)", masks_path, out);
        return 1; /* the caller's abort rolls the checkpoint back */
    }
    return 0;
}

int spruce_cmd_prune(int argc, char **argv)
{
    enum { O_CALIB = 256, O_SEQLEN, O_NSAMPLES, O_TRUESEQ, O_INCLUDE, O_EXCLUDE, O_FORCE,
           O_MASKS, O_SAVEFMT, O_CALIB_FORMAT, O_SEED, O_LAYER_SPARSITY, O_PROFILE, O_OWL_M,
           O_OWL_LAMBDA, O_JSON };
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'},
        {"calib", required_argument, NULL, O_CALIB},
        {"calib-format", required_argument, NULL, O_CALIB_FORMAT},
        {"seed", required_argument, NULL, O_SEED},
        {"seqlen", required_argument, NULL, O_SEQLEN},
        {"nsamples", required_argument, NULL, O_NSAMPLES},
        PRUNE_ARGS_OPTIONS,
        {"true-sequential", no_argument, NULL, O_TRUESEQ},
        {"include", required_argument, NULL, O_INCLUDE},
        {"exclude", required_argument, NULL, O_EXCLUDE},
        {"force", no_argument, NULL, O_FORCE},
        {"masks", required_argument, NULL, O_MASKS},
        {"save-format", required_argument, NULL, O_SAVEFMT},
        {"layer-sparsity", required_argument, NULL, O_LAYER_SPARSITY},
        {"sparsity-profile", required_argument, NULL, O_PROFILE},
        {"owl-m", required_argument, NULL, O_OWL_M},
        {"owl-lambda", required_argument, NULL, O_OWL_LAMBDA},
        {"json", no_argument, NULL, O_JSON},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *out = NULL, *calib = NULL, *dir, *masks_path = NULL, *calib_fmt = NULL;
    long seqlen = 0, nsamples = 128, seed = 0, share;
    int force = 0, c, rc, status = 1, compressed = 0, loaded = 0, failed = 0;
    int json = 0, owl = 0, have_owl_arg = 0;
    const char *layer_file = NULL;
    double owl_m, owl_lambda;
    spruce_layer_rules *rules = NULL;
    spruce_compress_opts co;
    prune_args pa;
    char qwhere[64];
    double estimate;
    spruce_pipeline_opts po;
    spruce_pipeline_summary sum;
    spruce_model *m = NULL;
    spruce_ckpt_writer *w = NULL;
    spruce_maskfile *mf = NULL;
    uint32_t *ids = NULL;
    prune_ctx ctx;
    const spruce_config *cfg = NULL;

    spruce_pipeline_opts_init(&po);
    prune_args_init(&pa, "prune", po.prune.method, 0);
    memset(&ctx, 0, sizeof ctx);
    owl_m = po.owl_m;
    owl_lambda = po.owl_lambda;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case O_CALIB: calib = optarg; break;
        case O_CALIB_FORMAT: calib_fmt = optarg; break;
        case O_SEED:
            if (cli_parse_int("--seed", optarg, 0, 2147483647L, &seed))
                return 2;
            break;
        case O_SEQLEN:
            if (cli_parse_int("--seqlen", optarg, 1, 1 << 20, &seqlen))
                return 2;
            break;
        case O_NSAMPLES:
            if (cli_parse_int("--nsamples", optarg, 1, 1 << 20, &nsamples))
                return 2;
            break;
        case O_TRUESEQ: po.true_sequential = 1; break;
        case O_INCLUDE: po.include = optarg; break;
        case O_EXCLUDE: po.exclude = optarg; break;
        case O_FORCE: force = 1; break;
        case O_MASKS: masks_path = optarg; break;
        case O_SAVEFMT:
            if (!strcmp(optarg, "compressed"))
                compressed = 1;
            else if (strcmp(optarg, "dense")) {
                cli_fail("prune: --save-format expects dense or compressed, found '%s'", optarg);
                return 2;
            }
            break;
        case O_LAYER_SPARSITY: layer_file = optarg; break;
        case O_PROFILE:
            if (!strcmp(optarg, "owl"))
                owl = 1;
            else if (strcmp(optarg, "uniform")) {
                cli_fail("prune: --sparsity-profile expects uniform or owl, found '%s'", optarg);
                return 2;
            }
            break;
        case O_OWL_M:
            if (cli_parse_float("--owl-m", optarg, 0.0, 1e6, &owl_m))
                return 2;
            have_owl_arg = 1;
            break;
        case O_OWL_LAMBDA:
            if (cli_parse_float("--owl-lambda", optarg, 0.0, 0.5, &owl_lambda))
                return 2;
            have_owl_arg = 1;
            break;
        case O_JSON: json = 1; break;
        case 'h': usage(stdout); return 0;
        default:
            if ((rc = prune_args_option(&pa, c, optarg)) < 0)
                return 2;
            if (rc)
                break;
            cli_fail("prune: unknown or incomplete option '%s' (try 'spruce prune --help')",
                     argv[optind - 1]);
            return 2;
        }
    }
    if (optind != argc - 1) {
        cli_fail("prune: expected one MODEL_DIR (try 'spruce prune --help')");
        return 2;
    }
    dir = argv[optind];
    if (!out) {
        cli_fail("prune: -o OUT_DIR is required (try 'spruce prune --help')");
        return 2;
    }
    if (prune_args_check(&pa, 1))
        return 2;
    prune_args_apply(&pa, &po.prune);
    if (layer_file && owl) {
        cli_fail("prune: give --layer-sparsity FILE or --sparsity-profile owl, not both");
        return 2;
    }
    if (compressed && pa.wbits && !pa.sym && pa.n == 2 && pa.m == 4 && !layer_file) {
        /* known before any block is pruned: the writer would refuse it at the end */
        cli_fail("prune: --save-format compressed with --pattern 2:4 and an asymmetric grid: "
                 "sparse-24-bitmask cannot store pruned weights as zeros (compressed-tensors "
                 "decodes them as level 0): use --sym");
        return 2;
    }
    if (have_owl_arg && !owl) {
        cli_fail("prune: --owl-m and --owl-lambda need --sparsity-profile owl");
        return 2;
    }
    if (owl && (!pa.have_sparsity || pa.sparsity <= 0.0)) {
        cli_fail("prune: --sparsity-profile owl shares out an unstructured --sparsity S > 0 "
                 "between the blocks (not --pattern)");
        return 2;
    }
    if (!calib && (po.prune.method != SPRUCE_METHOD_MAGNITUDE || owl)) {
        cli_fail("prune: --calib FILE is required for %s%s", owl ? "--sparsity-profile owl" :
                 "--method ", owl ? "" : spruce_method_name(po.prune.method));
        return 2;
    }
    po.owl = owl;
    po.owl_m = owl_m;
    po.owl_lambda = owl_lambda;
    ctx.owl_m = owl_m;
    ctx.owl_lambda = owl_lambda;
    ctx.layer_file = layer_file;
    ctx.rep.profile = owl ? "owl" : layer_file ? "layer-sparsity" : "uniform";
    if (pa.m && pa.blocksize % pa.m) {
        cli_fail("prune: --blocksize %ld must be a multiple of M = %d of --pattern", pa.blocksize,
                 pa.m);
        return 2;
    }
    cli_set_threads(pa.threads);
    /* no output may destroy an input, nor the masks lie in what OUT replaces */
    if (cli_check_output("prune", out, 1, "the output directory", dir, "the input checkpoint") ||
        cli_check_output("prune", out, 1, "the output directory", calib, "the calibration file") ||
        (masks_path &&
         (cli_check_output("prune", masks_path, 0, "the masks file", dir, "the input checkpoint") ||
          cli_check_output("prune", masks_path, 0, "the masks file", calib,
                           "the calibration file") ||
          cli_check_output("prune", masks_path, 0, "the masks file", out,
                           "the output directory"))))
        return 2;
    if (layer_file && (rc = spruce_layer_rules_load(layer_file, &rules))) {
        cli_error(rc, "prune: --layer-sparsity");
        return 2;
    }
    po.layer_rules = rules;
    cli_signals_install();
    if (cli_rank0()) {
        cli_clean_stale("prune", out);
        if (masks_path)
            cli_clean_stale("prune", masks_path);
    }

    /* every rank reads the model and the calibration data; under mpirun a
     * failure on any of them stops all (cli_agree) */
    if ((rc = spruce_model_open(dir, &m)))
        cli_error(rc, "prune: %s", dir);
    else if (cfg = spruce_model_config(m), cli_model_seqlen("prune", cfg, dir, &seqlen))
        status = 2;
    else if (!calib)
        nsamples = 0;
    else if (!load_calib(calib, calib_fmt, dir, cfg, (int)seqlen, seed, &nsamples, &ids))
        loaded = 1;
    if (cli_agree(!m || status == 2 || (calib && !loaded)))
        goto done;

    ctx.method = spruce_method_name(po.prune.method);
    if (pa.m)
        snprintf(ctx.pattern, sizeof ctx.pattern, "%d:%d", pa.n, pa.m);
    else
        snprintf(ctx.pattern, sizeof ctx.pattern, "unstructured");
    co.sparse = pa.m == 4 && pa.n == 2 ? 2 : (pa.m || pa.sparsity > 0) ? 1 : 0;
    co.structure = ctx.pattern;
    if (layer_file) { /* layers of several patterns: the bitmask holds any of them */
        co.sparse = 1;
        co.structure = "unstructured";
    }
    /* rank 0 alone writes the checkpoint and the masks */
    if (!cli_rank0())
        rc = 0;
    else if (compressed)
        rc = spruce_ckpt_writer_begin_compressed(spruce_model_ckpt(m), out, force, &co, &w);
    else
        rc = spruce_ckpt_writer_begin(spruce_model_ckpt(m), out, force, &w);
    if (rc) {
        cli_error(rc, "prune: output %s", out);
        failed = 1;
    }
    if (compressed)
        ctx.cw = w; /* the layer report brings the weights and the grid */
    ctx.has_loss = po.prune.method == SPRUCE_METHOD_SPARSEGPT;
    ctx.has_data = po.prune.method != SPRUCE_METHOD_MAGNITUDE;
    if (cfg->num_experts > 0) {
        size_t n = (size_t)cfg->num_hidden_layers * cfg->num_experts;
        ctx.nexperts = cfg->num_experts;
        ctx.etokens = calloc(n, sizeof *ctx.etokens);
        ctx.eloss = calloc(n, sizeof *ctx.eloss);
        ctx.erel = calloc(n, sizeof *ctx.erel);
        ctx.efallback = calloc(n, 1);
        if (!ctx.etokens || !ctx.eloss || !ctx.erel || !ctx.efallback) {
            cli_error(SPRUCE_ENOMEM, "prune: the table of %zu experts", n);
            failed = 1;
        }
    }
    if (!failed && masks_path && cli_rank0()) {
        if ((rc = spruce_maskfile_create(masks_path, &mf)) ||
            (rc = set_masks_attrs(mf, dir, ctx.method, ctx.pattern, pa.sparsity, (int)nsamples,
                                  (int)seqlen, pa.damp, (int)pa.blocksize,
                                  po.true_sequential))) {
            cli_error(rc, "prune: masks %s", masks_path);
            failed = 1;
        }
        ctx.masks = mf;
        ctx.masks_path = masks_path;
    }
    if (cli_agree(failed))
        goto done;
    po.on_layer = on_layer;
    po.on_block = on_block;
    po.on_plan = on_plan;
    po.on_profile = on_profile;
    po.ctx = &ctx;
    fprintf(stderr, "prune: %s (%s, %d blocks) -> %s: %s %s, %ld samples x %ld tokens\n", dir,
            cfg->model_type, cfg->num_hidden_layers, out, ctx.method,
            pa.m ? ctx.pattern : "unstructured", nsamples, seqlen);
    if (pa.have_sparsity)
        fprintf(stderr, "prune: target sparsity %.4f\n", pa.sparsity);
    if (pa.wbits)
        fprintf(stderr, "prune: quantizing kept weights to %ld bits, %s grid %s\n", pa.wbits,
                pa.sym ? "symmetric" : "asymmetric", quant_where(&pa, qwhere, sizeof qwhere));
    share = (nsamples + spruce_dist_size() - 1) / spruce_dist_size();
    if (spruce_dist_size() > 1)
        fprintf(stderr, "prune: %d ranks, each calibrating on its share of at most %ld samples\n",
                spruce_dist_size(), share);
    estimate = spruce_pipeline_memory(cfg, (int)share, (int)seqlen);
    fprintf(stderr, "prune: memory needed about %.2f GiB%s (activations of %ld x %ld tokens, one "
            "block, Hessians)\n", estimate / GIB, spruce_dist_size() > 1 ? " per rank" : "", share,
            seqlen);
    spruce_memstat_init(&ctx.mem);
    ctx.t0 = spruce_clock_now();
    if ((rc = spruce_pipeline_run(m, ids, (int)nsamples, (int)seqlen, compressed ? NULL : w, &po,
                                  &sum))) {
        if (!cli_interrupted())
            cli_error(rc, "prune: %s", dir);
        goto done;
    }
    /* rank 0 publishes; every rank learns whether it could */
    if (cli_agree(cli_rank0() ? publish(w, mf, out, masks_path) : 0))
        goto done;
    if (cli_rank0())
        spruce_ckpt_writer_finish(w);
    w = NULL;
    if (json) {
        json_t *head = json_object();
        json_object_set_new(head, "model", json_string(dir));
        json_object_set_new(head, "output", json_string(out));
        json_object_set_new(head, "masks", masks_path ? json_string(masks_path) : json_null());
        json_object_set_new(head, "method", json_string(ctx.method));
        json_object_set_new(head, "pattern", json_string(ctx.pattern));
        json_object_set_new(head, "sparsity", pa.m ? json_null() : cli_json_real(pa.sparsity));
        if (layer_file)
            json_object_set_new(head, "layer_sparsity", json_string(layer_file));
        if (owl) {
            json_object_set_new(head, "owl_m", cli_json_real(owl_m));
            json_object_set_new(head, "owl_lambda", cli_json_real(owl_lambda));
        }
        json_object_set_new(head, "nsamples", json_integer(nsamples));
        json_object_set_new(head, "seqlen", json_integer(seqlen));
        spruce_memstat_sample(&ctx.mem);
        json_object_set_new(head, "memory", memory_json(estimate, &ctx.mem));
        json_object_set_new(head, "seconds", cli_json_real(spruce_clock_now() - ctx.t0));
        if (prune_report_json(&ctx.rep, head, &sum, stdout)) {
            cli_fail("prune: writing the JSON summary failed");
            goto done;
        }
        status = 0;
        goto done;
    }
    prune_report_text(&ctx.rep, stdout);
    if (sum.layers_dense)
        printf("kept %d layers dense as the plan says\n", sum.layers_dense);
    printf("pruned %d layers of %s with %s (%s): %lld of %lld weights zero, sparsity %.4f\n",
           sum.layers_pruned, dir, ctx.method,
           strcmp(ctx.rep.profile, "uniform") ? ctx.rep.profile
           : pa.have_sparsity                 ? "unstructured"
                                              : ctx.pattern,
           (long long)sum.zeros, (long long)sum.params, sum.sparsity);
    if (pa.wbits)
        printf("quantized the kept weights to %ld bits (%s grid %s)\n", pa.wbits,
               pa.sym ? "symmetric" : "asymmetric", quant_where(&pa, qwhere, sizeof qwhere));
    if (ctx.has_loss)
        printf("total loss %.6e\n", sum.loss);
    if (ctx.etokens)
        print_experts(&ctx, cfg);
    spruce_memstat_sample(&ctx.mem);
    print_memory(estimate, &ctx.mem);
    printf("wrote %s%s%s in %.2f s\n", out, masks_path ? " and " : "",
           masks_path ? masks_path : "", spruce_clock_now() - ctx.t0);
    status = 0;
done:
    spruce_ckpt_writer_abort(w);
    spruce_maskfile_abort(mf);
    free(ctx.etokens);
    free(ctx.eloss);
    free(ctx.erel);
    free(ctx.efallback);
    spruce_layer_rules_free(rules);
    prune_report_free(&ctx.rep);
    free(ctx.ones);
    free(ids);
    spruce_model_free(m);
    cli_signals_reraise("prune");
    return status;
}
