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
 * Progress goes to stderr, the report to stdout; demo_files.c looks after the
 * output directory. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "config.h"
#include "cli.h"
#include "cmd_demo.h"
#include "spruce_ckpt.h"
#include "spruce_decode.h"
#include "spruce_masks.h"
#include "spruce_pipeline.h"
#include "spruce_tokens.h"

#define DEMO_BOS 1

/* The default run, or with quick the small one for tests. */
static void plan_init(demo_plan *p, int quick)
{
    spruce_synth_defaults(&p->synth);
    p->synth.hidden = quick ? 256 : 2048;
    p->synth.intermediate = quick ? 688 : 5632;
    p->synth.layers = quick ? 2 : 4;
    p->synth.heads = quick ? 8 : 32;
    p->synth.kv_heads = 4;
    p->synth.vocab = quick ? 512 : 4096;
    p->synth.max_position = quick ? 256 : 512;
    p->synth.dtype = SPRUCE_DTYPE_F32;
    p->synth.seed = 0;
    p->nsamples = quick ? 8 : 32;
    p->seqlen = quick ? 64 : 256;
    p->nheld = quick ? 4 : 16;
    p->steps = quick ? 16 : 64;
}

static void usage(FILE *f)
{
    demo_plan d, q;
    plan_init(&d, 0);
    plan_init(&q, 1);
    fprintf(f,
            "usage: spruce demo [--out DIR] [--force] [--quick] [--threads N] [--keep]\n\n"
            "Everything spruce does, on a random model made on the spot (no download):\n"
            "  1. write a random LLaMA-shaped checkpoint (spruce synth: hidden %d,\n"
            "     intermediate %d, %d layers, %d heads, %d key/value heads, vocab %d, f32)\n"
            "     and random calibration (%d x %d tokens) and held-out (%d x %d) token ids;\n"
            "  2. prune every linear layer of the blocks 2:4 with SparseGPT, writing the pruned\n"
            "     checkpoint and the masks (HDF5), with the per-layer losses;\n"
            "  3. perplexity of the dense and of the pruned model on the held-out tokens, and\n"
            "     how often their most likely next tokens agree (and their mean KL divergence);\n"
            "  4. decode tokens/s of the pruned weights: dense OpenBLAS against the runtime's\n"
            "     'auto' mode (each layer in the sparse format that measured fastest, or dense)\n"
            "     and against the 2:4 format in every layer, %d tokens per run, %d interleaved\n"
            "     runs each, medians and their ratio.\n"
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

/* ---- pruning callbacks ----------------------------------------------------- */

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
    t0 = spruce_clock_now();
    if ((rc = spruce_decoder_step(d, DEMO_BOS, logits)))
        return rc;
    for (i = 0; i < steps; i++) {
        ids[i] = argmax(logits, vocab);
        if (i + 1 < steps && (rc = spruce_decoder_step(d, ids[i], logits)))
            return rc;
    }
    *seconds = spruce_clock_now() - t0;
    return 0;
}

/* The decoders compared: all on the same pruned weights. */
static const spruce_decode_mode dec_mode[DEC_N] = {
    SPRUCE_DECODE_DENSE, SPRUCE_DECODE_AUTO, SPRUCE_DECODE_NM,
};
const char *const demo_dec_name[DEC_N] = {"dense", "auto", "2:4"};

/* ---- the command ---------------------------------------------------------- */

/* The options: 0, 1 when --help was printed, -1 after a usage error. */
static int parse_options(int argc, char **argv, demo_run *d, const char **out, int *keep)
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
    int c, quick = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_OUT: *out = optarg; break;
        case O_FORCE: d->force = 1; break;
        case O_QUICK: quick = 1; break;
        case O_THREADS:
            if (cli_parse_int("--threads", optarg, 1, 1024, &d->threads))
                return -1;
            break;
        case O_KEEP: *keep = 1; break;
        case 'h': usage(stdout); return 1;
        default:
            cli_fail("demo: unknown or incomplete option '%s' (try 'spruce demo --help')",
                     argv[optind - 1]);
            return -1;
        }
    }
    if (optind != argc) {
        cli_fail("demo: unexpected argument '%s' (try 'spruce demo --help')", argv[optind]);
        return -1;
    }
    plan_init(&d->plan, quick);
    return 0;
}

/* 1. The random model and the token files.  0, or 1 after a message. */
static int stage_inputs(demo_run *d)
{
    const demo_plan *plan = &d->plan;
    int rc;
    d->nparams = spruce_synth_nparams(&plan->synth);
    fprintf(stderr, "demo: writing a random model (%.1f M parameters, %.0f MB) to %s\n",
            d->nparams / 1e6, d->nparams * 4.0 / 1e6, d->paths.model);
    if ((rc = spruce_synth_write(d->paths.model, &plan->synth, d->force))) {
        cli_error(rc, "demo: %s", d->paths.model);
        return 1;
    }
    d->paths.wrote_model = 1;
    d->ncalib = (size_t)plan->nsamples * plan->seqlen;
    d->nheld = (size_t)plan->nheld * plan->seqlen;
    d->calib = malloc(d->ncalib * sizeof *d->calib);
    d->held = malloc(d->nheld * sizeof *d->held);
    if (!d->calib || !d->held) {
        cli_fail("demo: out of memory");
        return 1;
    }
    spruce_tokens_random(d->calib, d->ncalib, (uint32_t)plan->synth.vocab, 0x5eed0001ull);
    spruce_tokens_random(d->held, d->nheld, (uint32_t)plan->synth.vocab, 0x5eed0002ull);
    d->paths.wrote_tokens = 1; /* each file is written whole or not at all */
    if ((rc = spruce_tokens_save(d->paths.calib, d->calib, d->ncalib))) {
        cli_error(rc, "demo: %s", d->paths.calib);
        return 1;
    }
    if ((rc = spruce_tokens_save(d->paths.held, d->held, d->nheld))) {
        cli_error(rc, "demo: %s", d->paths.held);
        return 1;
    }
    return 0;
}

/* 2. The dense perplexity, and the dense model's predictions on the first
 * windows for comparison.  0, or 1 after a message. */
static int stage_dense(demo_run *d)
{
    const demo_plan *plan = &d->plan;
    size_t ncmp;
    int rc;
    if ((rc = spruce_model_open(d->paths.model, &d->m))) {
        cli_error(rc, "demo: %s", d->paths.model);
        return 1;
    }
    if ((rc = spruce_model_perplexity(d->m, d->held, d->nheld, plan->seqlen, ppl_progress,
                                      "dense", &d->ppl_dense, &d->nwin_dense))) {
        cli_error(rc, "demo: dense perplexity");
        return 1;
    }
    d->cmpwin = plan->nheld < DEMO_CMP_WINDOWS ? plan->nheld : DEMO_CMP_WINDOWS;
    ncmp = (size_t)d->cmpwin * plan->seqlen * plan->synth.vocab;
    d->lp_dense = malloc(ncmp * sizeof *d->lp_dense);
    d->lp_pruned = malloc(ncmp * sizeof *d->lp_pruned);
    if (!d->lp_dense || !d->lp_pruned) {
        cli_fail("demo: out of memory");
        return 1;
    }
    fprintf(stderr, "demo: dense predictions on %d windows\n", d->cmpwin);
    if ((rc = window_logprobs(d->m, d->held, d->cmpwin, plan->seqlen, plan->synth.vocab,
                              d->lp_dense))) {
        cli_error(rc, "demo: dense forward");
        return 1;
    }
    return 0;
}

static int create_masks(const demo_run *d, spruce_maskfile **mf)
{
    int rc;
    if ((rc = spruce_maskfile_create(d->paths.masks, mf)) ||
        (rc = spruce_maskfile_set_attr_string(*mf, "model", d->paths.model)) ||
        (rc = spruce_maskfile_set_attr_string(*mf, "method", "sparsegpt")) ||
        (rc = spruce_maskfile_set_attr_string(*mf, "pattern", "2:4")) ||
        (rc = spruce_maskfile_set_attr_int(*mf, "nsamples", d->plan.nsamples)) ||
        (rc = spruce_maskfile_set_attr_int(*mf, "seqlen", d->plan.seqlen)) ||
        (rc = spruce_maskfile_set_attr_string(*mf, "spruce_version", PACKAGE_VERSION)))
        return rc;
    return 0;
}

/* 3. Prune 2:4 with SparseGPT, writing the pruned checkpoint and the masks;
 * the dense model is closed afterwards.  0, or 1 after a message. */
static int stage_prune(demo_run *d)
{
    const demo_plan *plan = &d->plan;
    spruce_ckpt_writer *w = NULL;
    spruce_maskfile *mf = NULL;
    spruce_pipeline_opts po;
    int rc, status = 1;
    d->pctx.nlayers = plan->synth.layers;
    d->pctx.loss = calloc((size_t)plan->synth.layers * SPRUCE_NPROJ, sizeof *d->pctx.loss);
    d->pctx.nz = calloc((size_t)plan->synth.layers, sizeof *d->pctx.nz);
    d->pctx.numel = calloc((size_t)plan->synth.layers, sizeof *d->pctx.numel);
    if (!d->pctx.loss || !d->pctx.nz || !d->pctx.numel) {
        cli_fail("demo: out of memory");
        goto done;
    }
    if ((rc = spruce_ckpt_writer_begin(spruce_model_ckpt(d->m), d->paths.pruned, d->force, &w))) {
        cli_error(rc, "demo: %s", d->paths.pruned);
        goto done;
    }
    if ((rc = create_masks(d, &mf))) {
        cli_error(rc, "demo: %s", d->paths.masks);
        goto done;
    }
    d->pctx.masks = mf;
    spruce_pipeline_opts_init(&po);
    po.prune.method = SPRUCE_METHOD_SPARSEGPT;
    po.prune.prune_n = 2;
    po.prune.prune_m = 4;
    po.prune.sparsity = 0.0f;
    po.prune.threads = (int)d->threads;
    po.on_layer = on_layer;
    po.on_block = on_block;
    po.ctx = &d->pctx;
    fprintf(stderr, "demo: pruning 2:4 with SparseGPT on %d x %d calibration tokens\n",
            plan->nsamples, plan->seqlen);
    if ((rc = spruce_pipeline_run(d->m, d->calib, plan->nsamples, plan->seqlen, w, &po,
                                  &d->sum))) {
        cli_error(rc, "demo: pruning %s", d->paths.model);
        goto done;
    }
    /* both or neither: prepare both, then publish the checkpoint and the
     * masks (the checkpoint is rolled back if the masks cannot be) */
    if ((rc = spruce_ckpt_writer_prepare(w))) {
        cli_error(rc, "demo: writing %s", d->paths.pruned);
        goto done;
    }
    if ((rc = spruce_maskfile_prepare(mf))) {
        cli_error(rc, "demo: writing %s", d->paths.masks);
        goto done;
    }
    if ((rc = spruce_ckpt_writer_publish(w))) {
        cli_error(rc, "demo: writing %s", d->paths.pruned);
        goto done;
    }
    if ((rc = spruce_maskfile_publish(mf))) {
        cli_error(rc, "demo: writing %s", d->paths.masks);
        goto done;
    }
    spruce_ckpt_writer_finish(w);
    w = NULL;
    d->paths.wrote_pruned = 1;
    d->paths.wrote_masks = 1;
    spruce_model_free(d->m);
    d->m = NULL;
    status = 0;
done:
    spruce_ckpt_writer_abort(w);
    spruce_maskfile_abort(mf);
    return status;
}

/* 4. The pruned perplexity, and how far its predictions moved.  0, or 1
 * after a message. */
static int stage_pruned(demo_run *d)
{
    const demo_plan *plan = &d->plan;
    int rc;
    if ((rc = spruce_model_open(d->paths.pruned, &d->mp))) {
        cli_error(rc, "demo: %s", d->paths.pruned);
        return 1;
    }
    if ((rc = spruce_model_perplexity(d->mp, d->held, d->nheld, plan->seqlen, ppl_progress,
                                      "pruned", &d->ppl_pruned, &d->nwin_pruned))) {
        cli_error(rc, "demo: pruned perplexity");
        return 1;
    }
    fprintf(stderr, "demo: pruned predictions on %d windows\n", d->cmpwin);
    if ((rc = window_logprobs(d->mp, d->held, d->cmpwin, plan->seqlen, plan->synth.vocab,
                              d->lp_pruned))) {
        cli_error(rc, "demo: pruned forward");
        return 1;
    }
    compare_predictions(d->lp_dense, d->lp_pruned, (size_t)d->cmpwin * plan->seqlen,
                        plan->synth.vocab, &d->kl, &d->top1);
    return 0;
}

/* 5. Decoding the same pruned weights: dense OpenBLAS, auto (the runtime
 * picks per layer), and the 2:4 format in every layer; one short untimed run
 * each, then DEMO_REPS rounds of one timed run each, rotating which goes
 * first.  The decoder setup counts as stage ST_DECODE_PREP.  0, or 1 after a
 * message. */
static int stage_decode(demo_run *d)
{
    const demo_plan *plan = &d->plan;
    const int vocab = plan->synth.vocab;
    spruce_decoder *dec[DEC_N] = {NULL, NULL, NULL};
    uint32_t *dec_ids[DEC_N] = {NULL, NULL, NULL}, *scratch = NULL;
    float *logits = NULL;
    double dec_t[DEC_N][DEMO_REPS], t0 = spruce_clock_now(), warm;
    int rc, k, j, r, status = 1;
    fprintf(stderr, "demo: preparing the decoders (dense; auto, which times each layer's "
            "formats; 2:4)\n");
    for (k = 0; k < DEC_N; k++)
        if ((rc = spruce_decoder_create(d->mp, plan->steps + 1, dec_mode[k], &dec[k]))) {
            cli_error(rc, "demo: %s decoder for %s", demo_dec_name[k], d->paths.pruned);
            goto done;
        }
    d->nsparse = spruce_decoder_sparse_layers(dec[DEC_AUTO]);
    logits = malloc((size_t)vocab * sizeof *logits);
    scratch = malloc((size_t)plan->steps * sizeof *scratch);
    for (k = 0; k < DEC_N; k++)
        if (!(dec_ids[k] = malloc((size_t)plan->steps * sizeof *dec_ids[k])))
            break;
    if (!logits || !scratch || k < DEC_N) {
        cli_fail("demo: out of memory");
        goto done;
    }
    d->stage[ST_DECODE_PREP] = spruce_clock_now() - t0;
    t0 = spruce_clock_now();
    for (k = 0; k < DEC_N; k++) /* caches, thread pools */
        if ((rc = decode_run(dec[k], logits, vocab, plan->steps < 8 ? plan->steps : 8, scratch,
                             &warm))) {
            cli_error(rc, "demo: decoding (%s)", demo_dec_name[k]);
            goto done;
        }
    for (r = 0; r < DEMO_REPS; r++)
        for (j = 0; j < DEC_N; j++) {
            double s = 0;
            k = (j + r) % DEC_N;
            if ((rc = decode_run(dec[k], logits, vocab, plan->steps,
                                 r == 0 ? dec_ids[k] : scratch, &s))) {
                cli_error(rc, "demo: decoding (%s)", demo_dec_name[k]);
                goto done;
            }
            dec_t[k][r] = s;
            fprintf(stderr, "demo: decode run %d/%d %-5s %.1f tokens/s\n", r + 1, DEMO_REPS,
                    demo_dec_name[k], s > 0 ? plan->steps / s : 0.0);
        }
    d->stage[ST_DECODE] = spruce_clock_now() - t0;
    for (k = 0; k < DEC_N; k++) {
        d->tps[k] = plan->steps / spruce_clock_median(dec_t[k], DEMO_REPS);
        for (d->same[k] = 0; d->same[k] < plan->steps; d->same[k]++)
            if (dec_ids[k][d->same[k]] != dec_ids[DEC_DENSE][d->same[k]])
                break;
    }
    status = 0;
done:
    for (k = 0; k < DEC_N; k++) {
        spruce_decoder_free(dec[k]);
        free(dec_ids[k]);
    }
    free(scratch);
    free(logits);
    return status;
}

static void demo_run_free(demo_run *d)
{
    spruce_model_free(d->m);
    spruce_model_free(d->mp);
    free(d->calib);
    free(d->held);
    free(d->lp_dense);
    free(d->lp_pruned);
    free(d->pctx.loss);
    free(d->pctx.nz);
    free(d->pctx.numel);
}

int spruce_cmd_demo(int argc, char **argv)
{
    const char *out = "spruce-demo";
    int rc, keep = 0, status = 1;
    double t0, t_all;
    demo_run d;
    memset(&d, 0, sizeof d);
    if ((rc = parse_options(argc, argv, &d, &out, &keep)))
        return rc > 0 ? 0 : 2;
    cli_set_threads(d.threads);
    d.nthreads = 1;
#ifdef _OPENMP
    d.nthreads = omp_get_max_threads();
#endif
    if (d.threads > 0)
        d.nthreads = (int)d.threads;
    if ((rc = demo_prepare_dir(&d.paths, out, d.force)))
        return rc;
    t_all = spruce_clock_now();

    t0 = spruce_clock_now();
    if (stage_inputs(&d))
        goto done;
    d.stage[ST_SYNTH] = spruce_clock_now() - t0;
    t0 = spruce_clock_now();
    if (stage_dense(&d))
        goto done;
    d.stage[ST_DENSE_PPL] = spruce_clock_now() - t0;
    fprintf(stderr, "demo: dense perplexity %.2f (%.1f s)\n", d.ppl_dense, d.stage[ST_DENSE_PPL]);
    t0 = spruce_clock_now();
    if (stage_prune(&d))
        goto done;
    d.stage[ST_PRUNE] = spruce_clock_now() - t0;
    t0 = spruce_clock_now();
    if (stage_pruned(&d))
        goto done;
    d.stage[ST_PRUNED_PPL] = spruce_clock_now() - t0;
    fprintf(stderr, "demo: pruned perplexity %.2f (%.1f s)\n", d.ppl_pruned,
            d.stage[ST_PRUNED_PPL]);
    if (stage_decode(&d))
        goto done;
    demo_print_report(&d, spruce_clock_now() - t_all);
    status = 0;
done:
    demo_run_free(&d);
    if (status && !keep) {
        demo_cleanup_failed(&d.paths);
        fprintf(stderr, "demo: removed what this run wrote (--keep keeps it)\n");
    }
    return status;
}
