/* cmd_demo.c: `spruce demo [--out DIR] [--force] [--quick] [--threads N] [--keep]`:
 * the whole of spruce in one command, without a download.
 *
 *   1. write a random LLaMA-shaped checkpoint (spruce_synth_write) and random
 *      calibration and held-out token files;
 *   2. perplexity of the dense model on the held-out tokens;
 *   3. prune it 2:4 with SparseGPT block by block, writing the pruned
 *      checkpoint and the masks (HDF5);
 *   4. perplexity of the pruned model;
 *   5. decode tokens/s of the pruned weights on dense OpenBLAS against the
 *      runtime's `auto` mode (sparse formats where they measured faster),
 *      interleaved runs, medians;
 *   6. a summary and the paths written.
 * Progress goes to stderr, the report to stdout. */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "config.h"
#include "cli.h"
#include "spruce_ckpt.h"
#include "spruce_decode.h"
#include "spruce_masks.h"
#include "spruce_pipeline.h"
#include "spruce_tokens.h"

#define DEMO_BOS 1
#define DEMO_REPS 5

/* What one run of the demo does; quick is the small variant for tests. */
typedef struct {
    spruce_synth_config synth;
    int nsamples, seqlen;        /* calibration: nsamples windows of seqlen tokens */
    int nheld;                   /* held-out windows of seqlen tokens */
    int steps;                   /* decoded tokens per timed run */
} demo_plan;

static void plan_default(demo_plan *p)
{
    spruce_synth_defaults(&p->synth);
    p->synth.hidden = 2048;
    p->synth.intermediate = 5632;
    p->synth.layers = 4;
    p->synth.heads = 32;
    p->synth.kv_heads = 4;
    p->synth.vocab = 4096;
    p->synth.max_position = 512;
    p->synth.dtype = SPRUCE_DTYPE_F32;
    p->synth.seed = 0;
    p->nsamples = 32;
    p->seqlen = 256;
    p->nheld = 16;
    p->steps = 64;
}

static void plan_quick(demo_plan *p)
{
    spruce_synth_defaults(&p->synth);
    p->synth.hidden = 256;
    p->synth.intermediate = 688;
    p->synth.layers = 2;
    p->synth.heads = 8;
    p->synth.kv_heads = 4;
    p->synth.vocab = 512;
    p->synth.max_position = 256;
    p->synth.dtype = SPRUCE_DTYPE_F32;
    p->synth.seed = 0;
    p->nsamples = 8;
    p->seqlen = 64;
    p->nheld = 4;
    p->steps = 16;
}

static void usage(FILE *f)
{
    demo_plan d, q;
    plan_default(&d);
    plan_quick(&q);
    fprintf(f,
            "usage: spruce demo [--out DIR] [--force] [--quick] [--threads N] [--keep]\n\n"
            "Everything spruce does, on a random model made on the spot (no download):\n"
            "  1. write a random LLaMA-shaped checkpoint (spruce synth: hidden %d,\n"
            "     intermediate %d, %d layers, %d heads, %d key/value heads, vocab %d, f32)\n"
            "     and random calibration (%d x %d tokens) and held-out (%d x %d) token ids;\n"
            "  2. prune every linear layer of the blocks 2:4 with SparseGPT, writing the pruned\n"
            "     checkpoint and the masks (HDF5), with the per-layer losses;\n"
            "  3. perplexity of the dense and of the pruned model on the held-out tokens;\n"
            "  4. decode tokens/s of the pruned weights: dense OpenBLAS against the runtime's\n"
            "     'auto' mode (each layer in the sparse format that measured fastest, or dense),\n"
            "     %d tokens per run, %d interleaved runs each, medians and their ratio.\n"
            "About 2 minutes on 2 cores (more when they are busy), 2.5 GB of memory, 1.5 GB\n"
            "of disk.  The ids are random, so the perplexities are not meaningful as language\n"
            "modelling: "
            "their change measures how far pruning moved the model\n"
            "away from the dense one.\n\n"
            "  --out DIR      where to write (default ./spruce-demo): DIR/model, DIR/pruned,\n"
            "                 DIR/masks.h5, DIR/calib.u16, DIR/heldout.u16\n"
            "  --force        use DIR even when it is not empty (those five entries are\n"
            "                 replaced, nothing else in DIR is touched); without it a\n"
            "                 non-empty DIR is refused\n"
            "  --quick        a small model (hidden %d, %d layers, vocab %d): seconds, for tests\n"
            "  --threads N    threads (default: all cores)\n"
            "  --keep         on failure, keep what was written so far (default: remove it)\n"
            "  -h, --help     this message\n\n"
            "Progress goes to standard error, the report to standard output.\n",
            d.synth.hidden, d.synth.intermediate, d.synth.layers, d.synth.heads,
            d.synth.kv_heads, d.synth.vocab, d.nsamples, d.seqlen, d.nheld, d.seqlen, d.steps,
            DEMO_REPS, q.synth.hidden, q.synth.layers, q.synth.vocab);
}

/* ---- files ---------------------------------------------------------------- */

typedef struct {
    char dir[4096];
    char model[4200], pruned[4200], masks[4200], calib[4200], held[4200];
    int created_dir;             /* this run made dir */
    int wrote_model, wrote_tokens, wrote_pruned, wrote_masks;   /* what this run wrote */
} demo_paths;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path) ? -1 : 0;
}

static void rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st))
        return;
    if (S_ISDIR(st.st_mode))
        nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    else
        remove(path);
}

/* 1 when dir holds anything but . and .., 0 when empty, -1 when unreadable. */
static int dir_nonempty(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int any = 0;
    if (!d)
        return -1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            any = 1;
            break;
        }
    closedir(d);
    return any;
}

/* Make the output directory, refusing a non-empty one unless force. */
static int prepare_dir(demo_paths *p, const char *dir, int force)
{
    struct stat st;
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof p->dir) {
        cli_fail("demo: --out: bad directory name");
        return 2;
    }
    memcpy(p->dir, dir, n + 1);
    while (n > 1 && p->dir[n - 1] == '/')
        p->dir[--n] = '\0';
    snprintf(p->model, sizeof p->model, "%s/model", p->dir);
    snprintf(p->pruned, sizeof p->pruned, "%s/pruned", p->dir);
    snprintf(p->masks, sizeof p->masks, "%s/masks.h5", p->dir);
    snprintf(p->calib, sizeof p->calib, "%s/calib.u16", p->dir);
    snprintf(p->held, sizeof p->held, "%s/heldout.u16", p->dir);
    p->created_dir = p->wrote_model = p->wrote_tokens = p->wrote_pruned = p->wrote_masks = 0;
    if (!stat(p->dir, &st)) {
        int ne;
        if (!S_ISDIR(st.st_mode)) {
            cli_fail("demo: %s exists and is not a directory", p->dir);
            return 1;
        }
        if ((ne = dir_nonempty(p->dir)) < 0) {
            cli_fail("demo: cannot read %s: %s", p->dir, strerror(errno));
            return 1;
        }
        if (ne && !force) {
            cli_fail("demo: %s exists and is not empty (use --force to replace the demo's "
                     "files in it, or --out DIR)", p->dir);
            return 1;
        }
        return 0;
    }
    if (mkdir(p->dir, 0777)) {
        cli_fail("demo: cannot create %s: %s", p->dir, strerror(errno));
        return 1;
    }
    p->created_dir = 1;
    return 0;
}

/* After a failure: remove what this run wrote (writers are atomic, so these
 * are whole outputs of the stages that finished; a failed stage left nothing). */
static void cleanup_failed(const demo_paths *p)
{
    if (p->wrote_model)
        rm_tree(p->model);
    if (p->wrote_pruned)
        rm_tree(p->pruned);
    if (p->wrote_masks)
        rm_tree(p->masks);
    if (p->wrote_tokens) {
        rm_tree(p->calib);
        rm_tree(p->held);
    }
    if (p->created_dir)
        rmdir(p->dir);
}

/* ---- pruning callbacks ----------------------------------------------------- */

typedef struct {
    double t0, last_block;
    int nlayers;
    double *loss;                /* (nlayers, SPRUCE_NPROJ) */
    int64_t *nz, *numel;         /* zeros and weights per block */
    spruce_maskfile *masks;
} prune_ctx;

static int on_layer(void *vctx, const spruce_layer_report *r)
{
    prune_ctx *ctx = vctx;
    spruce_mask_info info;
    int64_t i, n = (int64_t)r->rows * r->cols, z = 0;
    fprintf(stderr, "demo: prune block %d/%d %-16s %5dx%-5d loss %.4g  %.2f s\n", r->layer + 1,
            r->nlayers, spruce_proj_path(r->which), r->rows, r->cols, r->result.loss,
            r->result.seconds);
    ctx->loss[r->layer * SPRUCE_NPROJ + r->which] = r->result.loss;
    for (i = 0; i < n; i++)
        z += r->weight[i] == 0.0f;
    ctx->nz[r->layer] += z;
    ctx->numel[r->layer] += n;
    info.pattern = "2:4";
    info.method = "sparsegpt";
    info.sparsity = -1.0;
    info.loss = r->result.loss;
    info.has_loss = 1;
    return spruce_maskfile_write(ctx->masks, r->name, r->rows, r->cols, r->mask, &info);
}

static void on_block(void *vctx, int layer, int nlayers, double elapsed)
{
    prune_ctx *ctx = vctx;
    fprintf(stderr, "demo: prune block %d/%d done in %.1f s, ETA %.0f s\n", layer + 1, nlayers,
            elapsed - ctx->last_block, elapsed / (layer + 1) * (nlayers - layer - 1));
    ctx->last_block = elapsed;
}

static void ppl_progress(void *ctx, int layer, int nlayers)
{
    fprintf(stderr, "demo: %s perplexity: block %d/%d\n", (const char *)ctx, layer + 1, nlayers);
}

/* ---- how far the pruned model's predictions moved -------------------------- */

#define DEMO_CMP_WINDOWS 4

/* lp (nwin * T, vocab) = log softmax of the logits of nwin windows of T ids. */
static int window_logprobs(spruce_model *m, const uint32_t *ids, int nwin, int T, int vocab,
                           float *lp)
{
    int w, t, j, rc;
    for (w = 0; w < nwin; w++) {
        float *L = lp + (size_t)w * T * vocab;
        if ((rc = spruce_model_forward(m, ids + (size_t)w * T, T, L)))
            return rc;
        for (t = 0; t < T; t++) {
            float *r = L + (size_t)t * vocab, mx = r[0];
            double sum = 0, lse;
            for (j = 1; j < vocab; j++)
                if (r[j] > mx)
                    mx = r[j];
            for (j = 0; j < vocab; j++)
                sum += exp((double)r[j] - mx);
            lse = mx + log(sum);
            for (j = 0; j < vocab; j++)
                r[j] = (float)(r[j] - lse);
        }
    }
    return 0;
}

/* Over rows of log-probabilities a (dense) and b (pruned): the mean
 * KL(a || b) in nats and the fraction of rows whose most likely token agrees. */
static void compare_predictions(const float *a, const float *b, size_t rows, int vocab,
                                double *kl, double *top1)
{
    size_t t;
    double skl = 0;
    size_t agree = 0;
    int j;
    for (t = 0; t < rows; t++) {
        const float *x = a + t * vocab, *y = b + t * vocab;
        int ax = 0, ay = 0;
        double k = 0;
        for (j = 0; j < vocab; j++) {
            k += exp((double)x[j]) * ((double)x[j] - y[j]);
            if (x[j] > x[ax])
                ax = j;
            if (y[j] > y[ay])
                ay = j;
        }
        skl += k;
        agree += ax == ay;
    }
    *kl = rows ? skl / rows : 0.0;
    *top1 = rows ? (double)agree / rows : 0.0;
}

/* ---- decoding ------------------------------------------------------------- */

static uint32_t argmax(const float *x, int n)
{
    int j, b = 0;
    for (j = 1; j < n; j++)
        if (x[j] > x[b])
            b = j;
    return (uint32_t)b;
}

/* Greedy decoding of steps tokens after BOS from a fresh cache; ids (steps)
 * receives them, *seconds the time of the steps. */
static int decode_run(spruce_decoder *d, float *logits, int vocab, int steps, uint32_t *ids,
                      double *seconds)
{
    int i, rc;
    double t0;
    spruce_decoder_reset(d);
    t0 = cli_now();
    if ((rc = spruce_decoder_step(d, DEMO_BOS, logits)))
        return rc;
    for (i = 0; i < steps; i++) {
        ids[i] = argmax(logits, vocab);
        if (i + 1 < steps && (rc = spruce_decoder_step(d, ids[i], logits)))
            return rc;
    }
    *seconds = cli_now() - t0;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* The decoders compared: all on the same pruned weights. */
enum { DEC_DENSE, DEC_AUTO, DEC_NM, DEC_N };
static const spruce_decode_mode dec_mode[DEC_N] = {
    SPRUCE_DECODE_DENSE, SPRUCE_DECODE_AUTO, SPRUCE_DECODE_NM,
};
static const char *dec_name[DEC_N] = {"dense", "auto", "2:4"};

/* ---- the command ---------------------------------------------------------- */

enum { ST_SYNTH, ST_DENSE_PPL, ST_PRUNE, ST_PRUNED_PPL, ST_DECODE_PREP, ST_DECODE, ST_N };
static const char *stage_name[ST_N] = {
    "synth model + tokens", "dense perplexity", "prune 2:4 (SparseGPT)", "pruned perplexity",
    /* the perplexity stages include the forward of the compared windows */
    "decoder setup", "decode benchmark",
};

int spruce_cmd_demo(int argc, char **argv)
{
    enum { O_OUT = 256, O_FORCE, O_QUICK, O_THREADS, O_KEEP };
    static const struct option opts[] = {
        {"out", required_argument, NULL, O_OUT},
        {"force", no_argument, NULL, O_FORCE},
        {"quick", no_argument, NULL, O_QUICK},
        {"threads", required_argument, NULL, O_THREADS},
        {"keep", no_argument, NULL, O_KEEP},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *out = "spruce-demo";
    long threads = 0;
    int c, rc, force = 0, quick = 0, keep = 0, status = 1, l, j, nthreads = 1;
    int nwin_dense = 0, nwin_pruned = 0, nsparse = 0, same[DEC_N], r, k;
    double stage[ST_N], t0, t_all, ppl_dense = 0, ppl_pruned = 0;
    double dec_t[DEC_N][DEMO_REPS], tps[DEC_N], tps_dense, tps_auto;
    demo_plan plan;
    demo_paths paths;
    spruce_model *m = NULL, *mp = NULL;
    spruce_ckpt_writer *w = NULL;
    spruce_maskfile *mf = NULL;
    spruce_decoder *dec[DEC_N] = {NULL, NULL, NULL};
    spruce_pipeline_opts po;
    spruce_pipeline_summary sum;
    prune_ctx pctx;
    uint32_t *calib = NULL, *held = NULL, *dec_ids[DEC_N] = {NULL, NULL, NULL};
    uint32_t *scratch = NULL;
    float *logits = NULL, *lp_dense = NULL, *lp_pruned = NULL;
    size_t ncalib, nheld, ncmp;
    int cmpwin;
    double kl = 0, top1 = 0;
    int64_t nparams;

    memset(&pctx, 0, sizeof pctx);
    memset(stage, 0, sizeof stage);
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_OUT: out = optarg; break;
        case O_FORCE: force = 1; break;
        case O_QUICK: quick = 1; break;
        case O_THREADS:
            if (cli_parse_int("--threads", optarg, 1, 1024, &threads))
                return 2;
            break;
        case O_KEEP: keep = 1; break;
        case 'h': usage(stdout); return 0;
        default:
            cli_fail("demo: unknown or incomplete option '%s' (try 'spruce demo --help')",
                     argv[optind - 1]);
            return 2;
        }
    }
    if (optind != argc) {
        cli_fail("demo: unexpected argument '%s' (try 'spruce demo --help')", argv[optind]);
        return 2;
    }
    if (quick)
        plan_quick(&plan);
    else
        plan_default(&plan);
    cli_set_threads(threads);
#ifdef _OPENMP
    nthreads = omp_get_max_threads();
#endif
    if (threads > 0)
        nthreads = (int)threads;
    if ((rc = prepare_dir(&paths, out, force)))
        return rc;
    t_all = cli_now();

    /* 1. the model and the token files */
    nparams = spruce_synth_nparams(&plan.synth);
    fprintf(stderr, "demo: writing a random model (%.1f M parameters, %.0f MB) to %s\n",
            nparams / 1e6, nparams * 4.0 / 1e6, paths.model);
    t0 = cli_now();
    if ((rc = spruce_synth_write(paths.model, &plan.synth, force))) {
        cli_error(rc, "demo: %s", paths.model);
        goto done;
    }
    paths.wrote_model = 1;
    ncalib = (size_t)plan.nsamples * plan.seqlen;
    nheld = (size_t)plan.nheld * plan.seqlen;
    calib = malloc(ncalib * sizeof *calib);
    held = malloc(nheld * sizeof *held);
    if (!calib || !held) {
        cli_fail("demo: out of memory");
        goto done;
    }
    spruce_tokens_random(calib, ncalib, (uint32_t)plan.synth.vocab, 0x5eed0001ull);
    spruce_tokens_random(held, nheld, (uint32_t)plan.synth.vocab, 0x5eed0002ull);
    paths.wrote_tokens = 1; /* each file is written whole or not at all */
    if ((rc = spruce_tokens_save(paths.calib, calib, ncalib))) {
        cli_error(rc, "demo: %s", paths.calib);
        goto done;
    }
    if ((rc = spruce_tokens_save(paths.held, held, nheld))) {
        cli_error(rc, "demo: %s", paths.held);
        goto done;
    }
    stage[ST_SYNTH] = cli_now() - t0;

    /* 2. dense perplexity */
    t0 = cli_now();
    if ((rc = spruce_model_open(paths.model, &m))) {
        cli_error(rc, "demo: %s", paths.model);
        goto done;
    }
    if ((rc = spruce_model_perplexity(m, held, nheld, plan.seqlen, ppl_progress, "dense",
                                      &ppl_dense, &nwin_dense))) {
        cli_error(rc, "demo: dense perplexity");
        goto done;
    }
    /* the dense model's predictions on the first windows, for comparison */
    cmpwin = plan.nheld < DEMO_CMP_WINDOWS ? plan.nheld : DEMO_CMP_WINDOWS;
    ncmp = (size_t)cmpwin * plan.seqlen * plan.synth.vocab;
    lp_dense = malloc(ncmp * sizeof *lp_dense);
    lp_pruned = malloc(ncmp * sizeof *lp_pruned);
    if (!lp_dense || !lp_pruned) {
        cli_fail("demo: out of memory");
        goto done;
    }
    fprintf(stderr, "demo: dense predictions on %d windows\n", cmpwin);
    if ((rc = window_logprobs(m, held, cmpwin, plan.seqlen, plan.synth.vocab, lp_dense))) {
        cli_error(rc, "demo: dense forward");
        goto done;
    }
    stage[ST_DENSE_PPL] = cli_now() - t0;
    fprintf(stderr, "demo: dense perplexity %.2f (%.1f s)\n", ppl_dense, stage[ST_DENSE_PPL]);

    /* 3. prune 2:4 */
    t0 = cli_now();
    pctx.nlayers = plan.synth.layers;
    pctx.loss = calloc((size_t)plan.synth.layers * SPRUCE_NPROJ, sizeof *pctx.loss);
    pctx.nz = calloc((size_t)plan.synth.layers, sizeof *pctx.nz);
    pctx.numel = calloc((size_t)plan.synth.layers, sizeof *pctx.numel);
    if (!pctx.loss || !pctx.nz || !pctx.numel) {
        cli_fail("demo: out of memory");
        goto done;
    }
    if ((rc = spruce_ckpt_writer_begin(spruce_model_ckpt(m), paths.pruned, force, &w))) {
        cli_error(rc, "demo: %s", paths.pruned);
        goto done;
    }
    if ((rc = spruce_maskfile_create(paths.masks, &mf)) ||
        (rc = spruce_maskfile_set_attr_string(mf, "model", paths.model)) ||
        (rc = spruce_maskfile_set_attr_string(mf, "method", "sparsegpt")) ||
        (rc = spruce_maskfile_set_attr_string(mf, "pattern", "2:4")) ||
        (rc = spruce_maskfile_set_attr_int(mf, "nsamples", plan.nsamples)) ||
        (rc = spruce_maskfile_set_attr_int(mf, "seqlen", plan.seqlen)) ||
        (rc = spruce_maskfile_set_attr_string(mf, "spruce_version", PACKAGE_VERSION))) {
        cli_error(rc, "demo: %s", paths.masks);
        goto done;
    }
    pctx.masks = mf;
    spruce_pipeline_opts_init(&po);
    po.prune.method = SPRUCE_METHOD_SPARSEGPT;
    po.prune.prune_n = 2;
    po.prune.prune_m = 4;
    po.prune.sparsity = 0.0f;
    po.prune.threads = (int)threads;
    po.on_layer = on_layer;
    po.on_block = on_block;
    po.ctx = &pctx;
    fprintf(stderr, "demo: pruning 2:4 with SparseGPT on %d x %d calibration tokens\n",
            plan.nsamples, plan.seqlen);
    if ((rc = spruce_pipeline_run(m, calib, plan.nsamples, plan.seqlen, w, &po, &sum))) {
        cli_error(rc, "demo: pruning %s", paths.model);
        goto done;
    }
    rc = spruce_ckpt_writer_commit(w);
    w = NULL;
    if (rc) {
        cli_error(rc, "demo: writing %s", paths.pruned);
        goto done;
    }
    paths.wrote_pruned = 1;
    rc = spruce_maskfile_commit(mf);
    mf = NULL;
    if (rc) {
        cli_error(rc, "demo: writing %s", paths.masks);
        goto done;
    }
    paths.wrote_masks = 1;
    stage[ST_PRUNE] = cli_now() - t0;
    spruce_model_free(m);
    m = NULL;

    /* 4. pruned perplexity */
    t0 = cli_now();
    if ((rc = spruce_model_open(paths.pruned, &mp))) {
        cli_error(rc, "demo: %s", paths.pruned);
        goto done;
    }
    if ((rc = spruce_model_perplexity(mp, held, nheld, plan.seqlen, ppl_progress, "pruned",
                                      &ppl_pruned, &nwin_pruned))) {
        cli_error(rc, "demo: pruned perplexity");
        goto done;
    }
    fprintf(stderr, "demo: pruned predictions on %d windows\n", cmpwin);
    if ((rc = window_logprobs(mp, held, cmpwin, plan.seqlen, plan.synth.vocab, lp_pruned))) {
        cli_error(rc, "demo: pruned forward");
        goto done;
    }
    compare_predictions(lp_dense, lp_pruned, (size_t)cmpwin * plan.seqlen, plan.synth.vocab,
                        &kl, &top1);
    stage[ST_PRUNED_PPL] = cli_now() - t0;
    fprintf(stderr, "demo: pruned perplexity %.2f (%.1f s)\n", ppl_pruned, stage[ST_PRUNED_PPL]);

    /* 5. decoding the same pruned weights: dense OpenBLAS, auto (the runtime
     * picks per layer), and the 2:4 format in every layer */
    t0 = cli_now();
    fprintf(stderr, "demo: preparing the decoders (dense; auto, which times each layer's "
            "formats; 2:4)\n");
    for (k = 0; k < DEC_N; k++)
        if ((rc = spruce_decoder_create(mp, plan.steps + 1, dec_mode[k], &dec[k]))) {
            cli_error(rc, "demo: %s decoder for %s", dec_name[k], paths.pruned);
            goto done;
        }
    nsparse = spruce_decoder_sparse_layers(dec[DEC_AUTO]);
    logits = malloc((size_t)plan.synth.vocab * sizeof *logits);
    scratch = malloc((size_t)plan.steps * sizeof *scratch);
    for (k = 0; k < DEC_N; k++)
        if (!(dec_ids[k] = malloc((size_t)plan.steps * sizeof *dec_ids[k])))
            break;
    if (!logits || !scratch || k < DEC_N) {
        cli_fail("demo: out of memory");
        goto done;
    }
    stage[ST_DECODE_PREP] = cli_now() - t0;
    t0 = cli_now();
    for (k = 0; k < DEC_N; k++) {
        double warm; /* one short untimed run each: caches, thread pools */
        if ((rc = decode_run(dec[k], logits, plan.synth.vocab, plan.steps < 8 ? plan.steps : 8,
                             scratch, &warm))) {
            cli_error(rc, "demo: decoding (%s)", dec_name[k]);
            goto done;
        }
    }
    for (r = 0; r < DEMO_REPS; r++) {
        for (j = 0; j < DEC_N; j++) {
            double s = 0;
            k = (j + r) % DEC_N; /* rotate which goes first */
            if ((rc = decode_run(dec[k], logits, plan.synth.vocab, plan.steps,
                                 r == 0 ? dec_ids[k] : scratch, &s))) {
                cli_error(rc, "demo: decoding (%s)", dec_name[k]);
                goto done;
            }
            dec_t[k][r] = s;
            fprintf(stderr, "demo: decode run %d/%d %-5s %.1f tokens/s\n", r + 1, DEMO_REPS,
                    dec_name[k], s > 0 ? plan.steps / s : 0.0);
        }
    }
    stage[ST_DECODE] = cli_now() - t0;
    for (k = 0; k < DEC_N; k++) {
        tps[k] = plan.steps / median(dec_t[k], DEMO_REPS);
        for (same[k] = 0; same[k] < plan.steps; same[k]++)
            if (dec_ids[k][same[k]] != dec_ids[DEC_DENSE][same[k]])
                break;
    }
    tps_dense = tps[DEC_DENSE];
    tps_auto = tps[DEC_AUTO];

    /* 6. the report */
    printf("spruce demo: 2:4 SparseGPT pruning of a random LLaMA-shaped model, end to end\n\n");
    printf("model        hidden %d, intermediate %d, %d layers, %d heads (%d key/value), "
           "vocab %d, f32: %.1f M parameters\n", plan.synth.hidden, plan.synth.intermediate,
           plan.synth.layers, plan.synth.heads, plan.synth.kv_heads, plan.synth.vocab,
           nparams / 1e6);
    printf("tokens       random ids: calibration %d x %d, held-out %d x %d\n", plan.nsamples,
           plan.seqlen, plan.nheld, plan.seqlen);
    printf("threads      %d\n\n", nthreads);

    printf("SparseGPT loss per layer (the pruner's sum of (w - q)^2 / U_ii^2 / 2):\n");
    printf("block");
    for (j = 0; j < SPRUCE_NPROJ; j++) {
        const char *s = strchr(spruce_proj_path((spruce_proj)j), '.');
        char name[16];
        snprintf(name, sizeof name, "%s", s ? s + 1 : spruce_proj_path((spruce_proj)j));
        if ((s = strstr(name, "_proj")))
            name[s - name] = '\0';
        printf(" %10s", name);
    }
    printf(" %10s %9s\n", "sum", "sparsity");
    for (l = 0; l < plan.synth.layers; l++) {
        double tot = 0;
        printf("%5d", l);
        for (j = 0; j < SPRUCE_NPROJ; j++) {
            printf(" %10.4g", pctx.loss[l * SPRUCE_NPROJ + j]);
            tot += pctx.loss[l * SPRUCE_NPROJ + j];
        }
        printf(" %10.4g %9.4f\n", tot,
               pctx.numel[l] ? (double)pctx.nz[l] / (double)pctx.numel[l] : 0.0);
    }
    printf("pruned %d linear layers: %lld of %lld weights zero (sparsity %.4f), total loss "
           "%.4g\n\n", sum.layers_pruned, (long long)sum.zeros, (long long)sum.params,
           sum.sparsity, sum.loss);

    printf("perplexity on the held-out tokens (%d windows of %d):\n", nwin_dense, plan.seqlen);
    printf("  dense perplexity   %.3f\n", ppl_dense);
    printf("  pruned perplexity  %.3f  (%+.2f%%)\n", ppl_pruned,
           100.0 * (ppl_pruned / ppl_dense - 1.0));
    printf("  The model and the token ids are random, so these perplexities are\n"
           "  not meaningful as language modelling (a random model scores near the vocabulary\n"
           "  size, %d): their change measures how far 2:4 pruning moved the model away from\n"
           "  the dense one.\n",
           plan.synth.vocab);
    printf("  next-token predictions, pruned against dense (%d windows): the same most likely\n"
           "  token at %.1f%% of positions, mean KL(dense || pruned) %.4g nats\n\n", cmpwin,
           100.0 * top1, kl);

    printf("decoding the pruned weights (batch 1, %d tokens after BOS, median of %d "
           "interleaved runs):\n", plan.steps, DEMO_REPS);
    printf("  dense OpenBLAS     %8.2f tokens/s\n", tps_dense);
    printf("  spruce auto        %8.2f tokens/s  (%d of %d linear layers in a sparse format)\n",
           tps_auto, nsparse, SPRUCE_NPROJ * plan.synth.layers);
    printf("  spruce 2:4         %8.2f tokens/s  (every linear layer in the 2:4 format, "
           "%.2fx)\n", tps[DEC_NM], tps[DEC_NM] / tps_dense);
    printf("  decode speed-up    %.2fx  (auto against dense)\n", tps_auto / tps_dense);
    printf("  'auto' chose per layer, by timing it once at start-up, between dense and the\n"
           "  sparse formats; on a busy machine that choice and these rates vary run to run.\n");
    for (k = DEC_AUTO; k < DEC_N; k++) {
        if (same[k] == plan.steps)
            printf("  dense and %s generated the same %d greedy ids.\n", dec_name[k],
                   plan.steps);
        else
            printf("  dense and %s greedy ids agree on the first %d of %d (float rounding "
                   "differs between kernels).\n", dec_name[k], same[k], plan.steps);
    }
    printf("\n");

    printf("time per stage:\n");
    for (j = 0; j < ST_N; j++)
        printf("  %-24s %7.1f s\n", stage_name[j], stage[j]);
    printf("  %-24s %7.1f s\n\n", "total", cli_now() - t_all);

    printf("summary: 2:4 SparseGPT, perplexity %.3f -> %.3f (%+.2f%%), decode %.2f -> %.2f "
           "tokens/s (%.2fx)\n", ppl_dense, ppl_pruned, 100.0 * (ppl_pruned / ppl_dense - 1.0),
           tps_dense, tps_auto, tps_auto / tps_dense);
    printf("wrote:\n");
    printf("  model         %s\n", paths.model);
    printf("  pruned model  %s\n", paths.pruned);
    printf("  masks         %s\n", paths.masks);
    printf("  tokens        %s, %s\n", paths.calib, paths.held);
    printf("next: spruce masks info %s\n      spruce run %s --prompt 1 --steps 32\n",
           paths.masks, paths.pruned);
    status = 0;
done:
    spruce_ckpt_writer_abort(w);
    spruce_maskfile_abort(mf);
    for (k = 0; k < DEC_N; k++) {
        spruce_decoder_free(dec[k]);
        free(dec_ids[k]);
    }
    spruce_model_free(m);
    spruce_model_free(mp);
    free(calib);
    free(held);
    free(scratch);
    free(logits);
    free(lp_dense);
    free(lp_pruned);
    free(pctx.loss);
    free(pctx.nz);
    free(pctx.numel);
    if (status && !keep) {
        cleanup_failed(&paths);
        fprintf(stderr, "demo: removed what this run wrote (--keep keeps it)\n");
    }
    return status;
}
