/* pipeline.c: block-by-block pruning, as the published SparseGPT pipeline
 * (llama.py) does it.
 *
 *   X (nsamples, seqlen, hidden) = embed(calibration windows)
 *   for each block:
 *     run the block on X, accumulating one Hessian per distinct linear input:
 *       q/k/v share rmsnorm(x), o sees the attention output, gate/up share
 *       rmsnorm(x + attn), down sees silu(gate) * up
 *     prune the block's selected linear layers with those Hessians
 *     X = block(X) with the pruned weights        // the next block's input
 *
 * With true_sequential the groups q/k/v, o, gate/up, down are calibrated and
 * pruned in that order, each on a forward through the already-pruned earlier
 * groups.  A block is read from the mapped checkpoint, pruned, written through
 * the checkpoint writer and freed before the next one is read, so the peak is
 * one block + X + the Hessians.
 *
 * A mixture-of-experts block (mixtral, qwen3_moe) has one Hessian per expert
 * and input, from exactly the tokens the router sends to it (the routing
 * weights scale its output, not its input, and are not applied), all
 * accumulated in the block's forward; the router is never pruned.  With
 * true_sequential: q/k/v, o, then every expert's gate/up, then every down.
 *
 * Under mpirun (spruce_dist.h) each of the R ranks holds X of its contiguous
 * share of the calibration samples only and runs every forward on it; the
 * Hessians' shares are summed over the ranks in rank order (OWL's input
 * norms likewise); the group's layers are pruned on different ranks at once
 * (the costliest first, each to the least loaded rank) and every rank
 * receives each pruned layer (weights, mask, result, grid) from the rank that
 * pruned it; rank 0 alone writes and reports.  A failure on any rank is
 * agreed on at the end of each step, so every rank stops with the failing
 * rank's message.  A mixture of experts: the experts' Hessians are summed
 * the same way and every rank prunes every expert (the forward, which the
 * ranks share, is what costs). */
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spruce_clock.h"
#include "spruce_family.h"
#include "model_internal.h"
#include "pipeline_internal.h"
#include "prune_internal.h"
#include "spruce_dist.h"
#include "spruce_pipeline.h"

void spruce_pipeline_opts_init(spruce_pipeline_opts *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    spruce_prune_opts_init(&o->prune);
    o->owl_m = 5.0;       /* the OWL recipes of llm-compressor's predecessor (sparseml) */
    o->owl_lambda = 0.08;
}

typedef struct {
    spruce_hessian *h[SPRUCE_NSITES];
    spruce_hessian **eh;   /* (experts, 2): an expert's gate/up and down inputs, or NULL */
} taps;

static int tap_add(void *ctx, spruce_site site, const float *X, int tokens, int cols)
{
    taps *t = ctx;
    (void)cols;
    return t->h[site] ? spruce_hessian_add(t->h[site], X, tokens) : 0;
}

static int expert_tap_add(void *ctx, int e, spruce_site site, const float *X, int tokens,
                          int cols)
{
    taps *t = ctx;
    spruce_hessian *h = t->eh ? t->eh[2 * e + (site == SPRUCE_SITE_DOWN)] : NULL;
    (void)cols;
    return h ? spruce_hessian_add(h, X, tokens) : 0;
}

/* One run of the pipeline: its inputs, buffers and running totals. */
typedef struct {
    spruce_model *m;
    const spruce_config *c;
    const spruce_family *f;
    const spruce_pipeline_opts *o;
    spruce_ckpt_writer *w;
    const uint32_t *calib;          /* this rank's share */
    int nsamples, seqlen, need_data, chunk, L;
    int first;                      /* this rank's first calibration sample */
    int rank, nranks;
    unsigned char *selected;        /* (L, SPRUCE_NPROJ): pruned or not */
    unsigned char *eselected;       /* (L, experts, 3): an expert's gate, up, down, or NULL */
    int E;                          /* experts per MoE block, 0 without */
    float *X;                       /* (nsamples, seqlen, hidden) the current block's input */
    uint8_t *mask;                  /* (rows, cols) of the largest linear layer */
    spruce_qgrid grid;              /* prune.wbits > 0: the current layer's grid */
    /* R ranks: a group's layers are pruned at once, each into its own */
    uint8_t *gmask, *lmask[SPRUCE_NPROJ];    /* layer l's mask in gmask */
    spruce_qgrid ggrid, lgrid[SPRUCE_NPROJ]; /* layer l's grid in ggrid's storage */
    spruce_fwd_ws *ws;
    taps tp;                        /* one Hessian per site of the current group */
    spruce_hinv *hi[SPRUCE_NSITES]; /* shared factorisations */
    spruce_layer_target *plan;      /* (L, SPRUCE_NPROJ) or NULL: every layer gets o->prune */
    spruce_layer_target *eplan;     /* (L, experts, 3) beside plan with a layer file, or NULL */
    double *block_sparsity;         /* owl: (L) */
    spruce_pipeline_summary total;
    double t0;
} run;

/* r->selected: the linear layers whose names --include matches and --exclude
 * does not; SPRUCE_EINVAL when there is none. */
static int select_layers(run *r)
{
    const spruce_pipeline_opts *o = r->o;
    regex_t inc, exc;
    int have_inc = 0, have_exc = 0, rc = 0, layer, l, n = 0;
    char name[256];
    if (o->include && (rc = spruce__regcomp(&inc, o->include, "--include")))
        return rc;
    have_inc = o->include != NULL;
    if (o->exclude && (rc = spruce__regcomp(&exc, o->exclude, "--exclude")))
        goto done;
    have_exc = o->exclude != NULL;
    if (!(r->selected = calloc((size_t)r->L * SPRUCE_NPROJ, 1)) ||
        (r->E && !(r->eselected = calloc((size_t)r->L * r->E * 3, 1)))) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "pipeline");
        goto done;
    }
    for (layer = 0; layer < r->L; layer++)
        for (l = 0; l < SPRUCE_NPROJ; l++) {
            unsigned char *sel = &r->selected[(size_t)layer * SPRUCE_NPROJ + l];
            if (!r->f->linear[l].path)
                continue;   /* no such layer in the family (OPT's gate) */
            spruce_family_linear_name(r->f, layer, (spruce_proj)l, 0, name, sizeof name);
            *sel = (!have_inc || regexec(&inc, name, 0, NULL, 0) == 0) &&
                   (!have_exc || regexec(&exc, name, 0, NULL, 0) != 0);
            n += *sel;
        }
    for (layer = 0; layer < r->L && r->E; layer++) {
        int e;
        if (!spruce_config_layer_moe(r->c, layer))
            continue;
        for (l = SPRUCE_PROJ_GATE; l <= SPRUCE_PROJ_DOWN; l++)   /* the experts stand for these */
            n -= r->selected[(size_t)layer * SPRUCE_NPROJ + l];
        memset(r->selected + (size_t)layer * SPRUCE_NPROJ + SPRUCE_PROJ_GATE, 0, 3);
        for (e = 0; e < r->E; e++)
            for (l = 0; l < 3; l++) {
                unsigned char *sel = &r->eselected[((size_t)layer * r->E + e) * 3 + l];
                spruce_family_expert_name(r->f, layer, e, (spruce_proj)(SPRUCE_PROJ_GATE + l),
                                          name, sizeof name);
                *sel = (!have_inc || regexec(&inc, name, 0, NULL, 0) == 0) &&
                       (!have_exc || regexec(&exc, name, 0, NULL, 0) != 0);
                n += *sel;
            }
    }
    if (n == 0) {
        spruce_family_linear_name(r->f, 0, SPRUCE_PROJ_Q, 0, name, sizeof name);
        rc = spruce__seterr(SPRUCE_EINVAL, "no linear layer of the %d blocks is selected by "
                            "--include '%s' --exclude '%s' (names look like %s)", r->L,
                            o->include ? o->include : "", o->exclude ? o->exclude : "", name);
    }
done:
    if (have_inc)
        regfree(&inc);
    if (have_exc)
        regfree(&exc);
    return rc;
}

/* With wbits: room for the grid of the largest layer (a grid per row, or per
 * row and group of prune.groupsize columns). */
static int prepare_grid(run *r)
{
    const spruce_prune_opts *po = &r->o->prune;
    size_t maxg = 0, rows, cols, n;
    int l;
    if (po->wbits <= 0)
        return 0;
    for (l = 0; l < SPRUCE_NPROJ; l++) {
        spruce_family_linear_shape(r->f, r->c, (spruce_proj)l, &rows, &cols);
        rows = spruce_family_tensor_rows(r->f, r->c, (spruce_proj)l);   /* fused: every part */
        n = rows * (po->groupsize > 0 ? cols / (size_t)po->groupsize : 1);
        maxg = n > maxg ? n : maxg;
    }
    if (r->E) {   /* an expert's gate/up (I_e, h) and down (h, I_e) */
        size_t h = (size_t)r->c->hidden_size, ie = (size_t)r->c->moe_intermediate_size;
        n = ie * (po->groupsize > 0 ? h / (size_t)po->groupsize : 1);
        maxg = n > maxg ? n : maxg;
        n = h * (po->groupsize > 0 ? ie / (size_t)po->groupsize : 1);
        maxg = n > maxg ? n : maxg;
    }
    r->grid.scale = malloc((maxg ? maxg : 1) * sizeof *r->grid.scale);
    r->grid.zero = malloc((maxg ? maxg : 1) * sizeof *r->grid.zero);
    if (!r->grid.scale || !r->grid.zero)
        return spruce__seterr(SPRUCE_ENOMEM, "pipeline: quantization grid of %zu groups", maxg);
    return 0;
}

/* R ranks: room for every layer's mask and (with wbits) grid, one after the
 * other, since a group's layers are pruned at once on different ranks. */
static int prepare_group(run *r)
{
    const spruce_prune_opts *po = &r->o->prune;
    size_t rows, cols, offw[SPRUCE_NPROJ], offg[SPRUCE_NPROJ], sumw = 0, sumg = 0;
    int l;
    if (r->nranks == 1)
        return 0;
    for (l = 0; l < SPRUCE_NPROJ; l++) {
        spruce_family_linear_shape(r->f, r->c, (spruce_proj)l, &rows, &cols);
        rows = spruce_family_tensor_rows(r->f, r->c, (spruce_proj)l);   /* fused: every part */
        offg[l] = sumg;
        sumg += rows * (po->groupsize > 0 ? cols / (size_t)po->groupsize : 1);
        offw[l] = sumw;
        sumw += rows * cols;
    }
    if (!(r->gmask = malloc(sumw ? sumw : 1)))
        return spruce__seterr(SPRUCE_ENOMEM, "pipeline: masks of %zu bytes", sumw);
    if (po->wbits > 0) {
        r->ggrid.scale = malloc((sumg ? sumg : 1) * sizeof *r->ggrid.scale);
        r->ggrid.zero = malloc((sumg ? sumg : 1) * sizeof *r->ggrid.zero);
        if (!r->ggrid.scale || !r->ggrid.zero)
            return spruce__seterr(SPRUCE_ENOMEM, "pipeline: quantization grids of %zu groups",
                                  sumg);
    }
    for (l = 0; l < SPRUCE_NPROJ; l++) {
        r->lmask[l] = r->gmask + offw[l];
        r->lgrid[l].scale = r->ggrid.scale ? r->ggrid.scale + offg[l] : NULL;
        r->lgrid[l].zero = r->ggrid.zero ? r->ggrid.zero + offg[l] : NULL;
    }
    return 0;
}

static int embed_all(run *r);

/* The mask of the largest linear layer and, when the method needs data, the
 * forward's workspace and X = embed(calibration windows). */
static int prepare(run *r)
{
    const spruce_config *c = r->c;
    size_t maxw = 0, rows, cols, n;
    int l, rc;
    /* the grid's options against the width of every layer to prune, before
     * anything is pruned */
    for (l = 0; r->o->prune.wbits > 0 && l < SPRUCE_NPROJ + 3; l++) {
        const int expert = l >= SPRUCE_NPROJ, k = l - SPRUCE_NPROJ;
        size_t i, any = 0;
        if (!expert)
            for (i = 0; i < (size_t)r->L; i++)
                any |= r->selected[i * SPRUCE_NPROJ + (size_t)l];
        else
            for (i = 0; r->eselected && i < (size_t)r->L * r->E; i++)
                any |= r->eselected[i * 3 + (size_t)k];
        if (!any)
            continue;
        if (!expert)
            spruce_family_linear_shape(r->f, c, (spruce_proj)l, &rows, &cols);
        else
            cols = k == 2 ? (size_t)c->moe_intermediate_size : (size_t)c->hidden_size;
        if ((rc = spruce__check_quant(&r->o->prune, (int)cols))) {
            char detail[512];
            snprintf(detail, sizeof detail, "%s", spruce_errdetail());
            return spruce__seterr(rc, "%s%s (%zu columns): %s", expert ? "the experts' " : "",
                                  expert ? spruce_proj_path((spruce_proj)(SPRUCE_PROJ_GATE + k))
                                         : r->f->linear[l].path, cols, detail);
        }
    }
    for (l = 0; l < SPRUCE_NPROJ; l++) {
        spruce_family_linear_shape(r->f, c, (spruce_proj)l, &rows, &cols);
        rows = spruce_family_tensor_rows(r->f, c, (spruce_proj)l);   /* fused: every part */
        maxw = rows * cols > maxw ? rows * cols : maxw;
    }
    n = (size_t)c->hidden_size * (size_t)c->moe_intermediate_size;   /* an expert's */
    maxw = r->E && n > maxw ? n : maxw;
    if (!(r->mask = malloc(maxw)))
        return spruce__seterr(SPRUCE_ENOMEM, "pipeline: mask of %zu bytes", maxw);
    if ((rc = prepare_grid(r)) || (rc = prepare_group(r)))
        return rc;
    if (!r->need_data)
        return 0;
    /* X holds nsamples x seqlen x hidden floats: refuse what size_t cannot count */
    if (__builtin_mul_overflow((size_t)r->nsamples, (size_t)r->seqlen, &n) ||
        __builtin_mul_overflow(n, (size_t)c->hidden_size, &n) ||
        __builtin_mul_overflow(n, sizeof(float), &n))
        return spruce__seterr(SPRUCE_EINVAL, "pipeline: %d calibration samples x seqlen %d x "
                              "hidden_size %d floats overflow the address space", r->nsamples,
                              r->seqlen, c->hidden_size);
    n /= sizeof(float);
    r->chunk = spruce_fwd_chunk(r->seqlen) < r->nsamples ? spruce_fwd_chunk(r->seqlen)
                                                         : r->nsamples;
    r->X = malloc(n * sizeof(float));
    r->ws = spruce_fwd_ws_alloc(c, r->seqlen, r->chunk);
    if (!r->X || !r->ws)
        return spruce__seterr(SPRUCE_ENOMEM, "pipeline: calibration activations of %d x %d "
                              "tokens (%zu MiB)", r->nsamples, r->seqlen,
                              (n * sizeof(float)) >> 20);
    return embed_all(r);
}

/* X = embed(calibration windows): the first block's input. */
static int embed_all(run *r)
{
    int s, rc;
    for (s = 0; s < r->nsamples; s++)
        if ((rc = spruce_model_embed(r->m, r->calib + (size_t)s * r->seqlen, r->seqlen,
                                     r->X + (size_t)s * r->seqlen * r->c->hidden_size)))
            return rc;
    return 0;
}

/* Block b over every calibration sequence, chunk by chunk (see
 * spruce_block_forward for tap and stop_after).  A NaN or infinity in what
 * the taps see or in the block output is SPRUCE_ENAN naming the layer, the
 * tensor, the calibration sequence and the position. */
static int forward_experts(run *r, const spruce_block *b, spruce_tap_fn tap, void *ctx,
                           int stop_after, int experts)
{
    size_t per = (size_t)r->seqlen * r->c->hidden_size;
    int s, rc;
    for (s = 0; s < r->nsamples; s += r->chunk)
        if ((rc = spruce__block_forward_experts(
                 r->c, b, r->X + (size_t)s * per,
                 r->nsamples - s < r->chunk ? r->nsamples - s : r->chunk, r->seqlen, r->ws, tap,
                 ctx, experts ? expert_tap_add : NULL, ctx, stop_after, r->first + s)))
            return rc;
    return 0;
}

static int forward_all(run *r, const spruce_block *b, spruce_tap_fn tap, void *ctx,
                       int stop_after)
{
    return forward_experts(r, b, tap, ctx, stop_after, 0);
}

/* The layers of group g of block layer (all seven at once, or in
 * true-sequential order the groups are the sites: q/k/v, o, gate/up, down):
 * in_group, how many per site, and the last site they read (-1: none). */
static int group_members(const run *r, int layer, int g, int ngroups, int in_group[],
                         int per_site[])
{
    int l, last = -1;
    for (l = 0; l < SPRUCE_NSITES; l++)
        per_site[l] = 0;
    for (l = 0; l < SPRUCE_NPROJ; l++) {
        spruce_site site = r->f->linear[l].site;
        /* a part of a fused tensor is pruned with its lead, as one layer */
        in_group[l] = r->selected[(size_t)layer * SPRUCE_NPROJ + l] &&
                      !r->f->linear[l].part && (ngroups == 1 || (int)site == g) &&
                      !(r->plan && r->plan[(size_t)layer * SPRUCE_NPROJ + l].kind ==
                                       SPRUCE_TARGET_DENSE);
        if (in_group[l]) {
            per_site[site]++;
            last = (int)site > last ? (int)site : last;
        }
    }
    return last;
}

/* One Hessian per distinct input of the group, from a forward that stops
 * after the last of them. */
static int calibrate(run *r, const spruce_block *b, const int in_group[], int last_site,
                     int ephase)
{
    int l, e, k;
    for (l = 0; l < SPRUCE_NPROJ; l++) {
        spruce_site site = r->f->linear[l].site;
        size_t cols = spruce_family_site_cols(r->f, r->c, site);
        if (in_group[l] && !r->tp.h[site] && !(r->tp.h[site] = spruce_hessian_alloc((int)cols)))
            return spruce__seterr(SPRUCE_ENOMEM, "Hessian of %zu x %zu floats", cols, cols);
    }
    if (ephase < 0)
        return forward_all(r, b, tap_add, &r->tp, last_site);
    /* every expert with a selected matrix of the phase: its Hessians */
    if (!r->tp.eh && !(r->tp.eh = calloc((size_t)2 * r->E, sizeof *r->tp.eh)))
        return spruce__seterr(SPRUCE_ENOMEM, "Hessians of %d experts", r->E);
    for (e = 0; e < r->E; e++)
        for (k = 0; k < 2; k++) {
            const unsigned char *sel = &r->eselected[((size_t)b->layer * r->E + e) * 3];
            int cols = k ? b->expert_width : r->c->hidden_size;
            if ((ephase == 2 || ephase == k) && (k ? sel[2] : sel[0] || sel[1]) &&
                !(r->tp.eh[2 * e + k] = spruce_hessian_alloc(cols)))
                return spruce__seterr(SPRUCE_ENOMEM, "Hessian of expert %d: %d x %d floats", e,
                                      cols, cols);
        }
    return forward_experts(r, b, tap_add, &r->tp, SPRUCE_SITE_DOWN, 1);
}

static void free_hessians(run *r)
{
    int site;
    for (site = 0; site < SPRUCE_NSITES; site++) {
        spruce_hessian_free(r->tp.h[site]);
        r->tp.h[site] = NULL;
        spruce_hinv_free(r->hi[site]);
        r->hi[site] = NULL;
    }
    if (r->tp.eh)
        for (site = 0; site < 2 * r->E; site++)
            spruce_hessian_free(r->tp.eh[site]);
    free(r->tp.eh);
    r->tp.eh = NULL;
}

/* The options of a layer the plan gives target t (DEFAULT: po unchanged). */
static void apply_target(const spruce_layer_target *t, spruce_prune_opts *po,
                         spruce_layer_target *got)
{
    *got = *t;
    if (t->kind == SPRUCE_TARGET_SPARSITY) {
        po->sparsity = (float)t->sparsity;
        po->count = t->count;
        po->prune_n = po->prune_m = 0;
        if (t->count == 0)
            po->sparsity = 0.0f; /* a layer too small for one weight of its share */
    } else if (t->kind == SPRUCE_TARGET_NM) {
        po->sparsity = 0.0f;
        po->count = 0;
        po->prune_n = t->n;
        po->prune_m = t->m;
    }
}

/* Report a matrix the plan keeps dense (block b's linear l, or expert's
 * matrix l when expert >= 0): nothing is pruned or written. */
static int report_dense_matrix(run *r, const spruce_block *b, spruce_proj l, int expert,
                               const char *name, int rows, int cols, const float *W,
                               const spruce_layer_target *target)
{
    spruce_layer_report rep;
    r->total.layers_dense++;
    if (!r->o->on_layer || r->rank != 0)
        return 0;
    memset(&rep, 0, sizeof rep);
    rep.expert = expert;
    rep.rel_error = -1;
    rep.name = name;
    rep.layer = b->layer;
    rep.nlayers = r->L;
    rep.which = l;
    rep.rows = rows;
    rep.cols = cols;
    rep.weight = W;
    rep.target = *target;
    rep.elapsed = spruce_clock_now() - r->t0;
    return r->o->on_layer(r->o->ctx, &rep);
}

static int report_dense(run *r, spruce_block *b, spruce_proj l)
{
    char name[256];
    spruce_family_linear_name(r->f, b->layer, l, 0, name, sizeof name);
    return report_dense_matrix(r, b, l, -1, name, (int)spruce_family_tensor_rows(r->f, r->c, l),
                               b->cols[l], b->w[l], &r->plan[(size_t)b->layer * SPRUCE_NPROJ + l]);
}

/* One matrix to prune: W (rows, cols), the tensor name of block layer,
 * linear which (an expert's: GATE, UP, DOWN) of expert (-1: none), with the
 * Hessian h of its input (NULL for magnitude), the plan's target (NULL: the
 * options as given) and, when shared, the slot *hi of the factorisation of h
 * that layers reading the same input share. */
typedef struct {
    float *W;
    int rows, cols, layer, expert;
    spruce_proj which;
    const char *name;
    const spruce_hessian *h;
    const spruce_layer_target *target;
    spruce_hinv **hi;
} matrix;

/* The rule for an expert that saw fewer calibration tokens than its inputs
 * (spruce_layer_report.fallback): none at all, magnitude; SparseGPT on fewer,
 * damping at least 0.1 (the damped Hessian then leans towards the diagonal,
 * the least-squares update trusting the few tokens less).  NULL: the method
 * as asked. */
static const char *expert_rule(const run *r, const matrix *x, spruce_prune_opts *po)
{
    int64_t n = x->h ? spruce_hessian_tokens(x->h) : 0;
    if (x->expert < 0 || !r->need_data)
        return NULL;
    if (n == 0) {
        po->method = SPRUCE_METHOD_MAGNITUDE;
        return "magnitude, no calibration tokens";
    }
    if (po->method == SPRUCE_METHOD_SPARSEGPT && n < x->cols) {
        po->damp = po->damp > 0.1f ? po->damp : 0.1f;
        return "sparsegpt, damping raised to 0.1";
    }
    return NULL;
}

/* Prune x into x->W, mask (rows, cols) and, with wbits, grid; *rep receives
 * what the pruner measured (result, target, fallback, tokens, rel_error,
 * grid).  A fused tensor (phi3's qkv_proj: q, k and v rows) is one matrix of
 * all its rows. */
static int compute_matrix(run *r, const matrix *x, uint8_t *mask, spruce_qgrid *grid,
                          spruce_layer_report *rep_out)
{
    spruce_prune_opts opts = r->o->prune, *po = &opts;
    int64_t numel = (int64_t)x->rows * x->cols;
    const spruce_hessian *h = x->h;
    spruce_hinv **hi = x->hi;
    spruce_layer_report rep;
    float *W0 = NULL;
    int rc = 0;
    memset(&rep, 0, sizeof rep);
    rep.rel_error = -1;
    rep.expert = x->expert;
    rep.tokens = h ? spruce_hessian_tokens(h) : 0;
    if (x->target)
        apply_target(x->target, po, &rep.target);
    if ((rep.fallback = expert_rule(r, x, po)) && po->method == SPRUCE_METHOD_MAGNITUDE)
        h = NULL;
    if (po->wbits > 0) { /* the layer's grid, for the report (and so the writer) */
        const spruce_tensor *t = spruce_ckpt_find(spruce_model_ckpt(r->m), x->name);
        grid->rows = x->rows;
        grid->cols = x->cols;
        grid->groupsize = po->groupsize > 0 ? po->groupsize : x->cols;
        po->grid_out = grid;
        rep.grid = grid;
        /* the scales are stored in the weight's dtype (spruce_qgrid.h) */
        po->scale_dtype = !t                              ? SPRUCE_QSCALE_F32
                          : t->dtype == SPRUCE_DTYPE_BF16 ? SPRUCE_QSCALE_BF16
                          : t->dtype == SPRUCE_DTYPE_F16  ? SPRUCE_QSCALE_F16
                                                          : SPRUCE_QSCALE_F32;
    }
    if (x->expert >= 0 && h && rep.tokens > 0) {   /* the dense weights, for rel_error */
        if (!(W0 = malloc((size_t)numel * sizeof(float))))
            return spruce__seterr(SPRUCE_ENOMEM, "tensor %s: a copy of %lld floats", x->name,
                                  (long long)numel);
        memcpy(W0, x->W, (size_t)numel * sizeof(float));
    }
    if (po->method == SPRUCE_METHOD_SPARSEGPT && hi && !*hi)
        rc = spruce_hinv_prepare(h, po, hi);
    if (!rc && po->method == SPRUCE_METHOD_SPARSEGPT && hi && *hi)
        rc = spruce_prune_layer_prepared(x->W, x->rows, x->cols, *hi, po, mask, &rep.result);
    else if (!rc)
        rc = spruce_prune_layer(x->W, x->rows, x->cols, h, po, mask, &rep.result);
    if (!rc && W0)
        rc = spruce_prune_rel_error(W0, x->W, x->rows, x->cols, h, &rep.rel_error);
    free(W0);
    if (rc) {
        /* Say which tensor the pruner failed on. */
        const spruce_ckpt *ck = spruce_model_ckpt(r->m);
        const spruce_tensor *t = spruce_ckpt_find(ck, x->name);
        char detail[512];
        snprintf(detail, sizeof detail, "%s", spruce_errdetail());
        return spruce__seterr(rc, "file %s: tensor %s: %s",
                              t ? spruce_ckpt_file_of(ck, t) : spruce_ckpt_dir(ck), x->name,
                              detail);
    }
    *rep_out = rep;
    return 0;
}

/* Count the pruned x (mask its mask, rep what compute_matrix measured),
 * write it and report it: rank 0 only writes and reports (the other ranks
 * have no writer and no callback). */
static int finish_matrix(run *r, const matrix *x, const uint8_t *mask, spruce_layer_report *rep)
{
    int64_t numel = (int64_t)x->rows * x->cols, i, zeros = 0;
    int rc;
    rep->pruned = 0;
    for (i = 0; i < numel; i++) {
        zeros += x->W[i] == 0.0f;
        rep->pruned += !mask[i];
    }
    if (r->rank == 0 && r->w && (rc = spruce_ckpt_writer_set_f32(r->w, x->name, x->W)))
        return rc;
    r->total.layers_pruned++;
    r->total.params += numel;
    r->total.zeros += zeros;
    r->total.pruned += rep->pruned;
    r->total.loss += rep->result.loss;
    if (!r->o->on_layer || r->rank != 0)
        return 0;
    rep->name = x->name;
    rep->layer = x->layer;
    rep->nlayers = r->L;
    rep->which = x->which;
    rep->rows = x->rows;
    rep->cols = x->cols;
    rep->weight = x->W;
    rep->mask = mask;
    rep->elapsed = spruce_clock_now() - r->t0;
    return r->o->on_layer(r->o->ctx, rep);
}

/* Prune x, write it, count it and report it. */
static int prune_matrix(run *r, const matrix *x)
{
    spruce_layer_report rep;
    int rc = compute_matrix(r, x, r->mask, &r->grid, &rep);
    return rc ? rc : finish_matrix(r, x, r->mask, &rep);
}

/* Linear l of block b as a matrix to prune, its name in name (256 bytes);
 * layers sharing an input share one factorisation of its Hessian. */
static void linear_matrix(run *r, spruce_block *b, spruce_proj l, int shared, char *name,
                          matrix *x)
{
    spruce_site site = r->f->linear[l].site;
    spruce_family_linear_name(r->f, b->layer, l, 0, name, 256);
    x->W = b->w[l];
    x->rows = (int)spruce_family_tensor_rows(r->f, r->c, l);
    x->cols = b->cols[l];
    x->layer = b->layer;
    x->expert = -1;
    x->which = l;
    x->name = name;
    x->h = r->tp.h[site];
    x->target = r->plan ? &r->plan[(size_t)b->layer * SPRUCE_NPROJ + l] : NULL;
    x->hi = shared || r->hi[site] ? &r->hi[site] : NULL;
}

/* One Hessian summed over the ranks: each rank's share weighted by its
 * tokens (spruce_hessian_set_share), then added in rank order.  An expert
 * no rank routed a token to stays empty. */
static int reduce_one(spruce_hessian *h)
{
    int64_t total = spruce_hessian_tokens(h);
    size_t cols = (size_t)spruce_hessian_cols(h);
    int rc;
    if ((rc = spruce_dist_allreduce_sum_i64(&total, 1)))
        return rc;
    if (total == 0)
        return 0;
    if ((rc = spruce_hessian_set_share(h, total)) ||
        (rc = spruce_dist_allreduce_sum(spruce_hessian_data(h), cols * cols)))
        return rc;
    return 0;
}

/* The Hessians of the group, and of the experts, summed over the ranks. */
static int reduce_hessians(run *r)
{
    int site, k, rc;
    if (r->nranks == 1)
        return 0;
    for (site = 0; site < SPRUCE_NSITES; site++)
        if (r->tp.h[site] && (rc = reduce_one(r->tp.h[site])))
            return rc;
    for (k = 0; r->tp.eh && k < 2 * r->E; k++) /* the same experts on every rank */
        if (r->tp.eh[k] && (rc = reduce_one(r->tp.eh[k])))
            return rc;
    return 0;
}

/* Which rank prunes each layer of the group: the costliest first (about
 * rows x cols^2 for SparseGPT's sweep), each to the least loaded rank; ties
 * go to the lower layer and the lower rank, so every rank computes the same. */
static void assign_owners(const run *r, const spruce_block *b, const int in_group[],
                          int owner[])
{
    double load[64] = {0}, cost[SPRUCE_NPROJ];
    int l, k, done[SPRUCE_NPROJ] = {0}, nr = r->nranks < 64 ? r->nranks : 64;
    for (l = 0; l < SPRUCE_NPROJ; l++) {
        owner[l] = 0;
        cost[l] = in_group[l] ? (double)spruce_family_tensor_rows(r->f, r->c, (spruce_proj)l) *
                                    b->cols[l] * b->cols[l] : 0;
    }
    for (;;) {
        int best = -1, low = 0;
        for (l = 0; l < SPRUCE_NPROJ; l++)
            if (in_group[l] && !done[l] && (best < 0 || cost[l] > cost[best]))
                best = l;
        if (best < 0)
            break;
        for (k = 1; k < nr; k++)
            if (load[k] < load[low])
                low = k;
        /* beyond 64 ranks the layers go round the first 64 (a block has 7) */
        owner[best] = low;
        load[low] += cost[best];
        done[best] = 1;
    }
}

/* Every rank receives layer x (linear l) from the rank that pruned it: the
 * weights, the mask, the result and, with wbits, the grid. */
static int share_one(run *r, const matrix *x, spruce_proj l, spruce_layer_report *rep,
                     int owner)
{
    size_t numel = (size_t)x->rows * (size_t)x->cols;
    spruce_qgrid *g = &r->lgrid[l], head = *g;
    int rc;
    if ((rc = spruce_dist_bcast(x->W, numel * sizeof *x->W, owner)) ||
        (rc = spruce_dist_bcast(r->lmask[l], numel, owner)) ||
        (rc = spruce_dist_bcast(&rep->result, sizeof rep->result, owner)))
        return rc;
    rep->grid = NULL;
    if (r->o->prune.wbits <= 0)
        return 0;
    if ((rc = spruce_dist_bcast(&head, sizeof head, owner)))
        return rc;
    head.scale = g->scale; /* this rank's storage */
    head.zero = g->zero;
    *g = head;
    rep->grid = g;
    numel = (size_t)g->rows * (size_t)(g->cols / g->groupsize);
    if ((rc = spruce_dist_bcast(g->scale, numel * sizeof *g->scale, owner)) ||
        (rc = spruce_dist_bcast(g->zero, numel * sizeof *g->zero, owner)))
        return rc;
    return 0;
}

/* Prune the dense layers of the group.  One rank: each is written and
 * reported as soon as it is pruned.  R ranks: each on its owner rank, then
 * every rank receives them and rank 0 writes and reports them in layer
 * order. */
static int prune_group(run *r, spruce_block *b, const int in_group[], const int per_site[])
{
    char name[SPRUCE_NPROJ][256];
    matrix x[SPRUCE_NPROJ];
    spruce_layer_report rep[SPRUCE_NPROJ];
    int owner[SPRUCE_NPROJ], l, rc = 0;
    for (l = 0; l < SPRUCE_NPROJ; l++)
        if (in_group[l])
            linear_matrix(r, b, (spruce_proj)l, per_site[r->f->linear[l].site] > 1, name[l],
                          &x[l]);
    if (r->nranks == 1) {
        for (l = 0; l < SPRUCE_NPROJ && !rc; l++)
            if (in_group[l])
                rc = prune_matrix(r, &x[l]);
        return rc;
    }
    assign_owners(r, b, in_group, owner);
    for (l = 0; l < SPRUCE_NPROJ && !rc; l++) {
        memset(&rep[l], 0, sizeof rep[l]);
        if (in_group[l] && owner[l] == r->rank)
            rc = compute_matrix(r, &x[l], r->lmask[l], &r->lgrid[l], &rep[l]);
    }
    if ((rc = spruce_dist_agree(rc)))
        return rc;
    for (l = 0; l < SPRUCE_NPROJ && !rc; l++)
        if (in_group[l]) {
            if (owner[l] != r->rank) { /* what the owner measured, as every rank knows it */
                rep[l].rel_error = -1;
                rep[l].expert = -1;
                rep[l].tokens = x[l].h ? spruce_hessian_tokens(x[l].h) : 0;
                if (x[l].target) {
                    spruce_prune_opts po = r->o->prune;
                    apply_target(x[l].target, &po, &rep[l].target);
                }
            }
            if (!(rc = share_one(r, &x[l], (spruce_proj)l, &rep[l], owner[l])))
                rc = finish_matrix(r, &x[l], r->lmask[l], &rep[l]);
        }
    return spruce_dist_agree(rc);
}

/* The selected matrices of every expert of block b: gate/up (k 0, 1) in
 * phase 0, down (k 2) in phase 1, all in phase 2.  gate and up share their
 * input's factorisation. */
static int prune_experts(run *r, spruce_block *b, int ephase)
{
    int e, k, rc = 0, hid = r->c->hidden_size, w = b->expert_width;
    char name[256];
    for (e = 0; e < b->nexperts && !rc; e++) {
        const unsigned char *sel = &r->eselected[((size_t)b->layer * r->E + e) * 3];
        spruce_hinv *hi = NULL;
        for (k = 0; k < 3 && !rc; k++) {
            matrix x;
            if (!sel[k] || (ephase == 0 && k == 2) || (ephase == 1 && k < 2))
                continue;
            spruce_family_expert_name(r->f, b->layer, e, (spruce_proj)(SPRUCE_PROJ_GATE + k),
                                      name, sizeof name);
            x.W = b->expert[3 * e + k];
            x.rows = k == 2 ? hid : w;
            x.cols = k == 2 ? w : hid;
            x.layer = b->layer;
            x.expert = e;
            x.which = (spruce_proj)(SPRUCE_PROJ_GATE + k);
            x.name = name;
            x.h = r->tp.eh ? r->tp.eh[2 * e + (k == 2)] : NULL;
            /* the layer file's target, else the options as given */
            x.target = r->eplan ? &r->eplan[((size_t)b->layer * r->E + e) * 3 + k] : NULL;
            x.hi = k < 2 && sel[0] && sel[1] ? &hi : NULL;
            if (x.target && x.target->kind == SPRUCE_TARGET_DENSE)
                rc = report_dense_matrix(r, b, x.which, e, name, x.rows, x.cols, x.W, x.target);
            else
                rc = prune_matrix(r, &x);
        }
        spruce_hinv_free(hi);
    }
    return rc;
}

/* Calibrate and prune block `layer` group by group, then X = block(X) with
 * the pruned weights: the next block's input. */
static int prune_block(run *r, int layer)
{
    int ngroups = r->o->true_sequential ? SPRUCE_NSITES : 1, g, l, rc = 0;
    spruce_block *b = NULL;
    if ((rc = spruce_dist_agree(spruce_model_get_block(r->m, layer, &b))))
        goto done;
    for (g = 0; g < ngroups; g++) {
        int in_group[SPRUCE_NPROJ], per_site[SPRUCE_NSITES];
        int last_site = group_members(r, layer, g, ngroups, in_group, per_site);
        if (r->plan) /* the layers of the group the plan keeps dense */
            for (l = 0; l < SPRUCE_NPROJ; l++)
                if (r->selected[(size_t)layer * SPRUCE_NPROJ + l] && !r->f->linear[l].part &&
                    (ngroups == 1 || (int)r->f->linear[l].site == g) &&
                    r->plan[(size_t)layer * SPRUCE_NPROJ + l].kind == SPRUCE_TARGET_DENSE &&
                    (rc = report_dense(r, b, (spruce_proj)l)))
                    break;
        if ((rc = spruce_dist_agree(rc)))
            goto done;
        /* the experts: with the rest (one group), or gate/up then down */
        int ephase = !b->nexperts ? -1 : ngroups == 1 ? 2 : g == SPRUCE_SITE_GATEUP ? 0
                     : g == SPRUCE_SITE_DOWN ? 1 : -1;
        if (last_site < 0 && ephase < 0)
            continue;
        if (r->need_data &&
            ((rc = spruce_dist_agree(calibrate(r, b, in_group, last_site, ephase))) ||
             (rc = reduce_hessians(r))))
            goto done;
        if ((rc = prune_group(r, b, in_group, per_site)))
            goto done;
        /* R ranks: every rank prunes every expert from the same summed
         * Hessians (the same bits everywhere: nothing to send); rank 0
         * writes and reports them */
        if (ephase >= 0 && (rc = spruce_dist_agree(prune_experts(r, b, ephase))))
            goto done;
        free_hessians(r);
    }
    if (r->need_data && layer + 1 < r->L)
        rc = spruce_dist_agree(forward_all(r, b, NULL, NULL, -1));
done:
    spruce_model_put_block(r->m, b);
    return rc;
}

/* ---- the per-layer plan ---------------------------------------------------- */

/* OWL's input norms: a[site][j] += sqrt(sum over the tokens of one
 * calibration sequence of x_j^2), sequence by sequence (llm-compressor's
 * _get_activations runs batch 1; its 1/128 scale does not change a ratio). */
typedef struct {
    double *a[SPRUCE_NSITES];
    double *acc;   /* (max cols) one sequence's sums of squares */
    int seqlen;
} owl_norms;

static int owl_tap(void *ctx, spruce_site site, const float *X, int tokens, int cols)
{
    owl_norms *on = ctx;
    int s, t, j;
    for (s = 0; s < tokens / on->seqlen; s++) {
        memset(on->acc, 0, (size_t)cols * sizeof *on->acc);
        for (t = 0; t < on->seqlen; t++) {
            const float *x = X + ((size_t)s * on->seqlen + t) * cols;
            for (j = 0; j < cols; j++)
                on->acc[j] += (double)x[j] * x[j];
        }
        for (j = 0; j < cols; j++)
            on->a[site][j] += sqrt(on->acc[j]);
    }
    return 0;
}

/* The dense pass of OWL: block by block, the dense block's forward over the
 * calibration data (its output is the next block's input, as in the dense
 * model) measures the input norms of its linear layers; the outlier ratio of
 * the selected ones gives the block's ratio, and the ratios the blocks'
 * sparsities (spruce_owl_sparsities).  One block in memory at a time; X is
 * left as the last block's output (the caller embeds again). */
static int owl_pass(run *r, double *bs)
{
    owl_norms on;
    double *ratio = calloc((size_t)r->L, sizeof *ratio);
    size_t mx = 0;
    int site, layer, l, rc = 0, nb = 0;
    memset(&on, 0, sizeof on);
    on.seqlen = r->seqlen;
    for (site = 0; site < SPRUCE_NSITES; site++) {
        size_t cols = spruce_family_site_cols(r->f, r->c, (spruce_site)site);
        mx = cols > mx ? cols : mx;
        if (!(on.a[site] = malloc(cols * sizeof *on.a[site])))
            rc = spruce__seterr(SPRUCE_ENOMEM, "owl: input norms of %zu columns", cols);
    }
    if (!rc && (!ratio || !(on.acc = malloc(mx * sizeof *on.acc))))
        rc = spruce__seterr(SPRUCE_ENOMEM, "owl: %d blocks", r->L);
    for (layer = 0; !rc && layer < r->L; layer++) {
        const float *W[SPRUCE_NPROJ];
        const double *norm[SPRUCE_NPROJ];
        int rows[SPRUCE_NPROJ], cols[SPRUCE_NPROJ], n = 0;
        spruce_block *b = NULL;
        for (site = 0; site < SPRUCE_NSITES; site++)
            memset(on.a[site], 0, spruce_family_site_cols(r->f, r->c, (spruce_site)site) *
                                      sizeof *on.a[site]);
        if ((rc = spruce_dist_agree(spruce_model_get_block(r->m, layer, &b))))
            break;
        /* R ranks: each measured its share of the sequences; the norms are sums */
        rc = spruce_dist_agree(forward_all(r, b, owl_tap, &on, -1));
        for (site = 0; !rc && site < SPRUCE_NSITES; site++)
            rc = spruce_dist_allreduce_sum_f64(
                on.a[site], spruce_family_site_cols(r->f, r->c, (spruce_site)site));
        if (!rc) {
            for (l = 0; l < SPRUCE_NPROJ; l++) {
                if (!r->selected[(size_t)layer * SPRUCE_NPROJ + l] || r->f->linear[l].part)
                    continue;
                W[n] = b->w[l];
                rows[n] = (int)spruce_family_tensor_rows(r->f, r->c, (spruce_proj)l);
                cols[n] = b->cols[l];
                norm[n++] = on.a[r->f->linear[l].site];
            }
            if (n > 0)
                ratio[nb++] = spruce_owl_outlier_ratio(n, W, rows, cols, norm, r->o->owl_m);
        }
        spruce_model_put_block(r->m, b);
        if (!rc && n > 0 && r->o->on_profile && r->rank == 0)
            r->o->on_profile(r->o->ctx, layer, r->L, ratio[nb - 1], spruce_clock_now() - r->t0);
        if (!rc && spruce__cancelled())
            rc = spruce__seterr(SPRUCE_ECANCELED, "owl: stopped after block %d", layer);
        rc = spruce_dist_agree(rc);
    }
    /* blocks without a selected layer take no part in the profile */
    if (!rc) {
        double *sb = malloc((size_t)(nb ? nb : 1) * sizeof *sb);
        int k = 0;
        if (!sb)
            rc = spruce__seterr(SPRUCE_ENOMEM, "owl: %d blocks", nb);
        else if (!(rc = spruce_owl_sparsities(ratio, nb, (double)r->o->prune.sparsity,
                                               r->o->owl_lambda, sb)))
            for (layer = 0, k = 0; layer < r->L; layer++) {
                int any = 0;
                for (l = 0; l < SPRUCE_NPROJ; l++)
                    any |= r->selected[(size_t)layer * SPRUCE_NPROJ + l] && !r->f->linear[l].part;
                bs[layer] = any ? sb[k++] : 0.0;
            }
        free(sb);
    }
    for (site = 0; site < SPRUCE_NSITES; site++)
        free(on.a[site]);
    free(on.acc);
    free(ratio);
    return rc;
}

/* r->plan from the options: every selected lead layer's target (the rules'
 * first match, OWL's block sparsity or the default), each rule checked to
 * match some linear layer, then the exact counts of the unstructured ones in
 * model order.  No plan (r->plan NULL) without rules or OWL. */
static int build_plan(run *r)
{
    const spruce_pipeline_opts *o = r->o;
    const spruce_prune_opts *po = &o->prune;
    size_t n = (size_t)r->L * SPRUCE_NPROJ, ne = (size_t)r->L * r->E * 3, i;
    spruce_layer_target def;
    double *sp = NULL;
    int64_t *numel = NULL, *count = NULL;
    unsigned char *used = NULL;
    char name[256];
    int rc = 0, nrules = spruce_layer_rules_count(o->layer_rules), k, ns = 0;
    if (!o->layer_rules && !o->owl)
        return 0;
    if (o->layer_rules && o->owl)
        return spruce__seterr(SPRUCE_EINVAL, "pipeline: a layer sparsity file (%s) and the OWL "
                              "profile are two plans: give one",
                              spruce_layer_rules_origin(o->layer_rules));
    if (o->owl && r->E)
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "pipeline: the OWL profile is not "
                              "supported for a mixture of experts (%s): its outlier ratios "
                              "are not defined over routed experts; give a layer sparsity "
                              "file or one sparsity", r->c->model_type);
    if (o->owl && (po->prune_m > 0 || !(po->sparsity > 0.0f)))
        return spruce__seterr(SPRUCE_EINVAL, "pipeline: the OWL profile shares out an "
                              "unstructured sparsity in (0, 1) between the blocks, not %s",
                              po->prune_m > 0 ? "an N:M pattern" : "sparsity 0");
    memset(&def, 0, sizeof def);
    def.kind = po->prune_m > 0 ? SPRUCE_TARGET_NM : SPRUCE_TARGET_SPARSITY;
    def.sparsity = po->prune_m > 0 ? 0.0 : (double)po->sparsity;
    def.n = po->prune_n;
    def.m = po->prune_m;
    r->plan = calloc(n, sizeof *r->plan);
    if (ne)
        r->eplan = calloc(ne, sizeof *r->eplan);
    sp = malloc((n + ne) * sizeof *sp);
    numel = malloc((n + ne) * sizeof *numel);
    count = malloc((n + ne) * sizeof *count);
    used = calloc((size_t)nrules + 1, 1);
    if (!r->plan || (ne && !r->eplan) || !sp || !numel || !count || !used ||
        (o->owl && !(r->block_sparsity = calloc((size_t)r->L, sizeof *r->block_sparsity))))
        rc = spruce__seterr(SPRUCE_ENOMEM, "pipeline: plan of %zu layers", n);
    if ((rc = spruce_dist_agree(rc)))
        goto done;
    if (o->owl && (rc = owl_pass(r, r->block_sparsity)))
        goto done;
    for (i = 0; i < n; i++) {
        int layer = (int)(i / SPRUCE_NPROJ);
        spruce_proj l = (spruce_proj)(i % SPRUCE_NPROJ);
        spruce_layer_target t = def;
        if (r->f->linear[l].part || !r->f->linear[l].path)
            continue;
        if (r->E && spruce_config_layer_moe(r->c, layer) && l >= SPRUCE_PROJ_GATE &&
            l <= SPRUCE_PROJ_DOWN)
            continue;   /* the experts stand for these: below */
        spruce_family_linear_name(r->f, layer, l, 0, name, sizeof name);
        if (o->layer_rules && (k = spruce_layer_rules_match(o->layer_rules, name, &t)) >= 0)
            used[k] = 1;
        else if (o->owl)
            t.sparsity = r->block_sparsity[layer];
        if (!r->selected[i])
            continue;
        r->plan[i] = t;
        if (t.kind == SPRUCE_TARGET_SPARSITY) {
            sp[ns] = t.sparsity;
            numel[ns++] = (int64_t)spruce_family_tensor_rows(r->f, r->c, l) *
                          (int64_t)spruce_family_site_cols(r->f, r->c, r->f->linear[l].site);
        }
    }
    for (i = 0; i < ne; i++) {   /* every expert's gate, up and down, in model order */
        int layer = (int)(i / ((size_t)r->E * 3)), e = (int)(i / 3 % (size_t)r->E);
        int k3 = (int)(i % 3);
        spruce_layer_target t = def;
        if (!spruce_config_layer_moe(r->c, layer))
            continue;
        spruce_family_expert_name(r->f, layer, e, (spruce_proj)(SPRUCE_PROJ_GATE + k3), name,
                                  sizeof name);
        if ((k = spruce_layer_rules_match(o->layer_rules, name, &t)) >= 0)
            used[k] = 1;
        if (!r->eselected[i])
            continue;
        r->eplan[i] = t;
        if (t.kind == SPRUCE_TARGET_SPARSITY) {
            sp[ns] = t.sparsity;
            numel[ns++] = (int64_t)r->c->hidden_size * r->c->moe_intermediate_size;
        }
    }
    for (k = 0; k < nrules; k++)
        if (!used[k]) {
            spruce_family_linear_name(r->f, 0, SPRUCE_PROJ_Q, 0, name, sizeof name);
            rc = spruce__seterr(SPRUCE_EINVAL, "file %s: key '%s' matches no linear layer of "
                                "the model (names look like %s)",
                                spruce_layer_rules_origin(o->layer_rules),
                                spruce_layer_rules_key(o->layer_rules, k), name);
            goto done;
        }
    if (ns > 0 && (rc = spruce_plan_counts(sp, numel, ns, count)))
        goto done;
    for (i = 0, k = 0; i < n; i++)
        if (r->selected[i] && !r->f->linear[i % SPRUCE_NPROJ].part &&
            r->plan[i].kind == SPRUCE_TARGET_SPARSITY)
            r->plan[i].count = count[k++];
    for (i = 0; i < ne; i++)
        if (r->eselected[i] && spruce_config_layer_moe(r->c, (int)(i / ((size_t)r->E * 3))) &&
            r->eplan[i].kind == SPRUCE_TARGET_SPARSITY)
            r->eplan[i].count = count[k++];
    /* the pruning pass starts from the embeddings again */
    if ((rc = spruce_dist_agree(o->owl ? embed_all(r) : 0)))
        goto done;
    if ((rc = spruce_dist_agree(o->on_plan && r->rank == 0
                                    ? o->on_plan(o->ctx, r->plan, r->block_sparsity, r->L)
                                    : 0)))
        goto done;
done:
    free(sp);
    free(numel);
    free(count);
    free(used);
    return rc;
}

int spruce_pipeline_run(spruce_model *m, const uint32_t *calib, int nsamples, int seqlen,
                        spruce_ckpt_writer *w, const spruce_pipeline_opts *o,
                        spruce_pipeline_summary *sum)
{
    run r;
    int rc, layer;
    memset(&r, 0, sizeof r);
    r.t0 = spruce_clock_now();
    if (!m || !o || (!calib && (o->prune.method != SPRUCE_METHOD_MAGNITUDE || o->owl)))
        return spruce__seterr(SPRUCE_EINVAL, "spruce_pipeline_run: NULL argument");
    r.m = m;
    r.c = spruce_model_config(m);
    r.f = r.c->family;
    r.o = o;
    r.w = w;
    r.calib = calib;
    r.nsamples = nsamples;
    r.seqlen = seqlen;
    r.L = r.c->num_hidden_layers;
    r.E = r.c->num_experts;
    r.need_data = o->prune.method != SPRUCE_METHOD_MAGNITUDE || o->owl;
    r.rank = spruce_dist_rank();
    r.nranks = spruce_dist_size();
    if (r.need_data && (nsamples <= 0 || seqlen <= 0))
        return spruce__seterr(SPRUCE_EINVAL, "pipeline: %d calibration samples of %d tokens",
                              nsamples, seqlen);
    if (r.need_data && nsamples < r.nranks)
        return spruce__seterr(SPRUCE_EINVAL, "pipeline: %d calibration samples for %d ranks "
                              "(each rank needs at least one)", nsamples, r.nranks);
    if (r.need_data) { /* this rank's contiguous share */
        int64_t first, count;
        spruce_dist_share(nsamples, &first, &count);
        r.first = (int)first;
        r.nsamples = (int)count;
        r.calib = calib + (size_t)first * (size_t)seqlen;
    }
    rc = select_layers(&r);
    if (!rc)
        rc = prepare(&r);
    if ((rc = spruce_dist_agree(rc)) || (rc = build_plan(&r)))
        goto done;
    for (layer = 0; layer < r.L; layer++) {
        int l, any = 0;
        for (l = 0; l < SPRUCE_NPROJ; l++)
            any |= r.selected[(size_t)layer * SPRUCE_NPROJ + l];
        for (l = 0; l < 3 * r.E; l++)
            any |= r.eselected[(size_t)layer * r.E * 3 + l];
        if (!any && !r.need_data)
            continue;   /* nothing to prune, no input to carry to the next block */
        if ((rc = prune_block(&r, layer)))
            goto done;
        if (o->on_block && r.rank == 0)
            o->on_block(o->ctx, layer, r.L, spruce_clock_now() - r.t0);
    }
    r.total.sparsity = r.total.params ? (double)r.total.zeros / (double)r.total.params : 0.0;
    r.total.seconds = spruce_clock_now() - r.t0;
    if (sum)
        *sum = r.total;
done:
    free_hessians(&r);
    spruce_fwd_ws_free(r.ws);
    free(r.X);
    free(r.mask);
    free(r.grid.scale);
    free(r.grid.zero);
    free(r.gmask);
    free(r.ggrid.scale);
    free(r.ggrid.zero);
    free(r.selected);
    free(r.eselected);
    free(r.plan);
    free(r.eplan);
    free(r.block_sparsity);
    return rc;
}

double spruce_pipeline_memory(const spruce_config *c, int nsamples, int seqlen)
{
    double h, I, Id, qd, kvd, V, T, N, chunk, pblock, mx, total, heads;
    int dense;
    if (!c)
        return 0;
    /* tied: one (vocab, hidden) matrix, but OPT with project_in/out keeps two
     * (the embedding times project_in, the head times project_out) */
    heads = c->tie_word_embeddings &&
                    (c->word_embed_proj_dim <= 0 || c->word_embed_proj_dim == c->hidden_size)
                ? 1
                : 2;
    h = c->hidden_size;
    V = c->vocab_size;
    I = c->intermediate_size;
    qd = (double)c->num_attention_heads * c->head_dim;
    kvd = (double)c->num_key_value_heads * c->head_dim;
    T = seqlen;
    N = nsamples;
    chunk = spruce_fwd_chunk(seqlen) < nsamples ? spruce_fwd_chunk(seqlen) : nsamples;
    if (chunk < 1)
        chunk = 1;
    /* the dense MLP's weights, Hessians and factor only when some block has
     * one: when every block is a mixture of experts, the experts' terms below
     * are the MLP (the forward workspace is still max(I, I_e) wide) */
    dense = 1;
    if (c->num_experts > 0) {
        int l;
        dense = 0;
        for (l = 0; l < c->num_hidden_layers && !dense; l++)
            dense = !spruce_config_layer_moe(c, l);
    }
    Id = dense ? I : 0;
    pblock = h * (2 * qd + 2 * kvd) + 3 * h * Id;
    mx = h > qd ? h : qd;
    mx = mx > Id ? mx : Id;
    if (c->num_experts > 0 && c->moe_intermediate_size > mx)
        mx = c->moe_intermediate_size;
    total = N * T * h                                         /* activations */
            + pblock                                          /* one block */
            + (c->learned_positions   /* OPT: the embedding and head in float32, positions */
                   ? V * h * heads + (c->max_position_embeddings + 2.0) * h
                   : 0)
            + 2 * h * h + qd * qd + Id * Id                   /* Hessians */
            + mx * mx + 2 * h * h                             /* factors */
            + chunk * T * (3 * h + 2 * qd + 4 * kvd + 2 * I)  /* forward workspace */
            + T * (T + 8);                                    /* attention scores */
    if (c->num_experts > 0) {   /* every expert's weights and both its Hessians */
        double E = c->num_experts, Ie = c->moe_intermediate_size;
        total += E * (3 * h * Ie + h * h + Ie * Ie) + E * h  /* experts, Hessians, router */
                 + chunk * T * (2 * h + E + 3 * c->num_experts_per_tok) /* MoE workspace */
                 + (Ie > I ? 2 * chunk * T * (Ie - I) : 0);
    }
    return 4.0 * total;
}
