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
 * Under mpirun (spruce_dist.h) each of the R ranks holds X of its contiguous
 * share of the calibration samples only and runs every forward on it; the
 * Hessians' shares are summed over the ranks in rank order; the group's
 * layers are pruned on different ranks at once (the costliest first, each to
 * the least loaded rank) and every rank receives each pruned layer (weights,
 * mask, result, grid) from the rank that pruned it; rank 0 alone writes and
 * reports.  A failure on any rank is agreed on at the end of each step, so
 * every rank stops with the failing rank's message. */
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spruce_clock.h"
#include "spruce_family.h"
#include "model_internal.h"
#include "pipeline_internal.h"
#include "spruce_dist.h"
#include "spruce_pipeline.h"

void spruce_pipeline_opts_init(spruce_pipeline_opts *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    spruce_prune_opts_init(&o->prune);
}

typedef struct {
    spruce_hessian *h[SPRUCE_NSITES];
} taps;

static int tap_add(void *ctx, spruce_site site, const float *X, int tokens, int cols)
{
    taps *t = ctx;
    (void)cols;
    return t->h[site] ? spruce_hessian_add(t->h[site], X, tokens) : 0;
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
    float *X;                       /* (nsamples, seqlen, hidden) the current block's input */
    uint8_t *mask;                  /* one rank: (rows, cols) of the largest linear layer;
                                       R ranks: every layer's, one after the other */
    uint8_t *lmask[SPRUCE_NPROJ];   /* layer l's mask in mask */
    spruce_qgrid grid;              /* prune.wbits > 0: the grids' storage */
    spruce_qgrid lgrid[SPRUCE_NPROJ]; /* layer l's grid, in grid's storage */
    spruce_prune_result res[SPRUCE_NPROJ]; /* the current group's results */
    spruce_fwd_ws *ws;
    taps tp;                        /* one Hessian per site of the current group */
    spruce_hinv *hi[SPRUCE_NSITES]; /* shared factorisations */
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
    if (!(r->selected = calloc((size_t)r->L * SPRUCE_NPROJ, 1))) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "pipeline");
        goto done;
    }
    for (layer = 0; layer < r->L; layer++)
        for (l = 0; l < SPRUCE_NPROJ; l++) {
            unsigned char *sel = &r->selected[(size_t)layer * SPRUCE_NPROJ + l];
            spruce_family_linear_name(r->f, layer, (spruce_proj)l, 0, name, sizeof name);
            *sel = (!have_inc || regexec(&inc, name, 0, NULL, 0) == 0) &&
                   (!have_exc || regexec(&exc, name, 0, NULL, 0) != 0);
            n += *sel;
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
 * row and group of prune.groupsize columns); with R ranks for every layer's
 * (a group's layers are pruned at once). */
static int prepare_grid(run *r)
{
    const spruce_prune_opts *po = &r->o->prune;
    size_t maxg = 0, rows, cols, n, off[SPRUCE_NPROJ], sum = 0;
    int l;
    if (po->wbits <= 0)
        return 0;
    for (l = 0; l < SPRUCE_NPROJ; l++) {
        spruce_family_linear_shape(r->f, r->c, (spruce_proj)l, &rows, &cols);
        n = rows * (po->groupsize > 0 ? cols / (size_t)po->groupsize : 1);
        maxg = n > maxg ? n : maxg;
        off[l] = r->nranks > 1 ? sum : 0;
        sum += n;
    }
    maxg = r->nranks > 1 ? sum : maxg;
    r->grid.scale = malloc((maxg ? maxg : 1) * sizeof *r->grid.scale);
    r->grid.zero = malloc((maxg ? maxg : 1) * sizeof *r->grid.zero);
    if (!r->grid.scale || !r->grid.zero)
        return spruce__seterr(SPRUCE_ENOMEM, "pipeline: quantization grid of %zu groups", maxg);
    for (l = 0; l < SPRUCE_NPROJ; l++) {
        r->lgrid[l].scale = r->grid.scale + off[l];
        r->lgrid[l].zero = r->grid.zero + off[l];
    }
    return 0;
}

/* The mask of the largest linear layer (R ranks: of every layer) and, when
 * the method needs data, the forward's workspace and X = embed(calibration
 * windows of this rank's share). */
static int prepare(run *r)
{
    const spruce_config *c = r->c;
    size_t maxw = 0, rows, cols, n, off[SPRUCE_NPROJ], sum = 0;
    int l, s, rc;
    for (l = 0; l < SPRUCE_NPROJ; l++) {
        spruce_family_linear_shape(r->f, c, (spruce_proj)l, &rows, &cols);
        rows = spruce_family_tensor_rows(r->f, c, (spruce_proj)l);   /* fused: every part */
        maxw = rows * cols > maxw ? rows * cols : maxw;
        off[l] = r->nranks > 1 ? sum : 0;
        sum += rows * cols;
    }
    maxw = r->nranks > 1 ? sum : maxw;
    if (!(r->mask = malloc(maxw)))
        return spruce__seterr(SPRUCE_ENOMEM, "pipeline: mask of %zu bytes", maxw);
    for (l = 0; l < SPRUCE_NPROJ; l++)
        r->lmask[l] = r->mask + off[l];
    if ((rc = prepare_grid(r)))
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
    for (s = 0; s < r->nsamples; s++)
        if ((rc = spruce_model_embed(r->m, r->calib + (size_t)s * r->seqlen, r->seqlen,
                                     r->X + (size_t)s * r->seqlen * c->hidden_size)))
            return rc;
    return 0;
}

/* Block b over every calibration sequence, chunk by chunk (see
 * spruce_block_forward for tap and stop_after).  A NaN or infinity in what
 * the taps see or in the block output is SPRUCE_ENAN naming the layer, the
 * tensor, the calibration sequence and the position. */
static int forward_all(run *r, const spruce_block *b, spruce_tap_fn tap, void *ctx,
                       int stop_after)
{
    size_t per = (size_t)r->seqlen * r->c->hidden_size;
    int s, rc;
    for (s = 0; s < r->nsamples; s += r->chunk)
        if ((rc = spruce__block_forward_at(r->c, b, r->X + (size_t)s * per,
                                           r->nsamples - s < r->chunk ? r->nsamples - s
                                                                      : r->chunk,
                                           r->seqlen, r->ws, tap, ctx, stop_after,
                                           r->first + s)))
            return rc;
    return 0;
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
                      !r->f->linear[l].part && (ngroups == 1 || (int)site == g);
        if (in_group[l]) {
            per_site[site]++;
            last = (int)site > last ? (int)site : last;
        }
    }
    return last;
}

/* One Hessian per distinct input of the group, from a forward that stops
 * after the last of them. */
static int calibrate(run *r, const spruce_block *b, const int in_group[], int last_site)
{
    int l;
    for (l = 0; l < SPRUCE_NPROJ; l++) {
        spruce_site site = r->f->linear[l].site;
        size_t cols = spruce_family_site_cols(r->f, r->c, site);
        if (in_group[l] && !r->tp.h[site] && !(r->tp.h[site] = spruce_hessian_alloc((int)cols)))
            return spruce__seterr(SPRUCE_ENOMEM, "Hessian of %zu x %zu floats", cols, cols);
    }
    return forward_all(r, b, tap_add, &r->tp, last_site);
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
}

/* The Hessians of the group summed over the ranks: each rank's share is
 * weighted by its tokens (spruce_hessian_set_share), then added in rank
 * order. */
static int reduce_hessians(run *r)
{
    int site, rc;
    for (site = 0; site < SPRUCE_NSITES; site++) {
        spruce_hessian *h = r->tp.h[site];
        int64_t total;
        size_t cols;
        if (!h || r->nranks == 1)
            continue;
        total = spruce_hessian_tokens(h);
        cols = (size_t)spruce_hessian_cols(h);
        if ((rc = spruce_dist_allreduce_sum_i64(&total, 1)) ||
            (rc = spruce_hessian_set_share(h, total)) ||
            (rc = spruce_dist_allreduce_sum(spruce_hessian_data(h), cols * cols)))
            return rc;
    }
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

/* Prune linear l of block b into b->w[l], r->lmask[l], r->res[l] and, with
 * wbits, r->lgrid[l] (layers sharing an input share one factorisation of its
 * Hessian).  A fused tensor (phi3's qkv_proj: q, k and v rows) is one layer of
 * all its rows. */
static int prune_one(run *r, spruce_block *b, spruce_proj l, int shared)
{
    spruce_prune_opts opts = r->o->prune, *po = &opts;
    spruce_site site = r->f->linear[l].site;
    int rows = (int)spruce_family_tensor_rows(r->f, r->c, l);
    char name[256];
    int rc = 0;
    spruce_family_linear_name(r->f, b->layer, l, 0, name, sizeof name);
    memset(&r->res[l], 0, sizeof r->res[l]);
    if (po->wbits > 0) { /* the layer's grid, for the report (and so the writer) */
        r->lgrid[l].rows = b->rows[l];
        r->lgrid[l].cols = b->cols[l];
        r->lgrid[l].groupsize = po->groupsize > 0 ? po->groupsize : b->cols[l];
        po->grid_out = &r->lgrid[l];
        { /* the scales are stored in the weight's dtype (spruce_qgrid.h) */
            const spruce_tensor *t = spruce_ckpt_find(spruce_model_ckpt(r->m), name);
            po->scale_dtype = !t                              ? SPRUCE_QSCALE_F32
                              : t->dtype == SPRUCE_DTYPE_BF16 ? SPRUCE_QSCALE_BF16
                              : t->dtype == SPRUCE_DTYPE_F16  ? SPRUCE_QSCALE_F16
                                                              : SPRUCE_QSCALE_F32;
        }
    }
    if (po->method == SPRUCE_METHOD_SPARSEGPT && shared && !r->hi[site])
        rc = spruce_hinv_prepare(r->tp.h[site], po, &r->hi[site]);
    if (!rc && r->hi[site])
        rc = spruce_prune_layer_prepared(b->w[l], rows, b->cols[l], r->hi[site], po,
                                         r->lmask[l], &r->res[l]);
    else if (!rc)
        rc = spruce_prune_layer(b->w[l], rows, b->cols[l], r->tp.h[site], po, r->lmask[l],
                                &r->res[l]);
    if (rc) {
        /* Say which tensor the pruner failed on. */
        const spruce_ckpt *ck = spruce_model_ckpt(r->m);
        const spruce_tensor *t = spruce_ckpt_find(ck, name);
        char detail[512];
        snprintf(detail, sizeof detail, "%s", spruce_errdetail());
        return spruce__seterr(rc, "file %s: tensor %s: %s",
                              t ? spruce_ckpt_file_of(ck, t) : spruce_ckpt_dir(ck), name, detail);
    }
    return 0;
}

/* Every rank receives layer l from the rank that pruned it: the weights, the
 * mask, the result and, with wbits, the grid. */
static int share_one(run *r, spruce_block *b, spruce_proj l, int owner)
{
    size_t numel = spruce_family_tensor_rows(r->f, r->c, l) * (size_t)b->cols[l];
    spruce_qgrid *g = &r->lgrid[l], head = *g;
    int rc;
    if ((rc = spruce_dist_bcast(b->w[l], numel * sizeof *b->w[l], owner)) ||
        (rc = spruce_dist_bcast(r->lmask[l], numel, owner)) ||
        (rc = spruce_dist_bcast(&r->res[l], sizeof r->res[l], owner)))
        return rc;
    if (r->o->prune.wbits <= 0)
        return 0;
    if ((rc = spruce_dist_bcast(&head, sizeof head, owner)))
        return rc;
    head.scale = g->scale; /* this rank's storage */
    head.zero = g->zero;
    *g = head;
    numel = (size_t)g->rows * (size_t)(g->cols / g->groupsize);
    if ((rc = spruce_dist_bcast(g->scale, numel * sizeof *g->scale, owner)) ||
        (rc = spruce_dist_bcast(g->zero, numel * sizeof *g->zero, owner)))
        return rc;
    return 0;
}

/* Count the pruned layer l, write it and report it (rank 0 only: the other
 * ranks have no writer and no callback). */
static int finish_one(run *r, spruce_block *b, spruce_proj l)
{
    int rows = (int)spruce_family_tensor_rows(r->f, r->c, l);
    int64_t numel = (int64_t)rows * b->cols[l], i, zeros = 0;
    spruce_layer_report rep;
    char name[256];
    int rc;
    spruce_family_linear_name(r->f, b->layer, l, 0, name, sizeof name);
    for (i = 0; i < numel; i++)
        zeros += b->w[l][i] == 0.0f;
    if (r->rank == 0 && r->w && (rc = spruce_ckpt_writer_set_f32(r->w, name, b->w[l])))
        return rc;
    r->total.layers_pruned++;
    r->total.params += numel;
    r->total.zeros += zeros;
    r->total.loss += r->res[l].loss;
    if (!r->o->on_layer || r->rank != 0)
        return 0;
    memset(&rep, 0, sizeof rep);
    rep.grid = r->o->prune.wbits > 0 ? &r->lgrid[l] : NULL;
    rep.result = r->res[l];
    rep.name = name;
    rep.layer = b->layer;
    rep.nlayers = r->L;
    rep.which = l;
    rep.rows = rows;
    rep.cols = b->cols[l];
    rep.weight = b->w[l];
    rep.mask = r->lmask[l];
    rep.elapsed = spruce_clock_now() - r->t0;
    return r->o->on_layer(r->o->ctx, &rep);
}

/* Prune the layers of the group: each on its owner rank, then every rank
 * receives them and rank 0 writes and reports them in layer order.  One rank:
 * each layer is written and reported as soon as it is pruned. */
static int prune_group(run *r, spruce_block *b, const int in_group[], const int per_site[])
{
    int owner[SPRUCE_NPROJ], l, rc = 0;
    assign_owners(r, b, in_group, owner);
    for (l = 0; l < SPRUCE_NPROJ && !rc; l++)
        if (in_group[l] && owner[l] == r->rank) {
            rc = prune_one(r, b, (spruce_proj)l, per_site[r->f->linear[l].site] > 1);
            if (!rc && r->nranks == 1)
                rc = finish_one(r, b, (spruce_proj)l);
        }
    if ((rc = spruce_dist_agree(rc)) || r->nranks == 1)
        return rc;
    for (l = 0; l < SPRUCE_NPROJ && !rc; l++)
        if (in_group[l] && !(rc = share_one(r, b, (spruce_proj)l, owner[l])))
            rc = finish_one(r, b, (spruce_proj)l);
    return spruce_dist_agree(rc);
}

/* Calibrate and prune block `layer` group by group, then X = block(X) with
 * the pruned weights: the next block's input. */
static int prune_block(run *r, int layer)
{
    int ngroups = r->o->true_sequential ? SPRUCE_NSITES : 1, g, rc = 0;
    spruce_block *b = NULL;
    rc = spruce_dist_agree(spruce_model_get_block(r->m, layer, &b));
    if (rc)
        goto done;
    for (g = 0; g < ngroups; g++) {
        int in_group[SPRUCE_NPROJ], per_site[SPRUCE_NSITES];
        int last_site = group_members(r, layer, g, ngroups, in_group, per_site);
        if (last_site < 0)
            continue;
        if (r->need_data && ((rc = spruce_dist_agree(calibrate(r, b, in_group, last_site))) ||
                             (rc = reduce_hessians(r))))
            goto done;
        if ((rc = prune_group(r, b, in_group, per_site)))
            goto done;
        free_hessians(r);
    }
    if (r->need_data && layer + 1 < r->L)
        rc = spruce_dist_agree(forward_all(r, b, NULL, NULL, -1));
done:
    spruce_model_put_block(r->m, b);
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
    if (!m || !o || (!calib && o->prune.method != SPRUCE_METHOD_MAGNITUDE))
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
    r.need_data = o->prune.method != SPRUCE_METHOD_MAGNITUDE;
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
    if ((rc = spruce_dist_agree(rc)))
        goto done;
    for (layer = 0; layer < r.L; layer++) {
        int l, any = 0;
        for (l = 0; l < SPRUCE_NPROJ; l++)
            any |= r.selected[(size_t)layer * SPRUCE_NPROJ + l];
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
    free(r.selected);
    return rc;
}

double spruce_pipeline_memory(const spruce_config *c, int nsamples, int seqlen)
{
    double h, I, qd, kvd, V, T, N, chunk, pblock, mx, total;
    if (!c)
        return 0;
    h = c->hidden_size;
    I = c->intermediate_size;
    qd = (double)c->num_attention_heads * c->head_dim;
    kvd = (double)c->num_key_value_heads * c->head_dim;
    V = c->vocab_size;
    T = seqlen;
    N = nsamples;
    chunk = spruce_fwd_chunk(seqlen) < nsamples ? spruce_fwd_chunk(seqlen) : nsamples;
    if (chunk < 1)
        chunk = 1;
    pblock = h * (2 * qd + 2 * kvd) + 3 * h * I;
    mx = h > qd ? h : qd;
    mx = mx > I ? mx : I;
    total = N * T * h                                         /* activations */
            + pblock                                          /* one block */
            + V * h * (c->tie_word_embeddings ? 1 : 2)        /* embedding, head */
            + 2 * h * h + qd * qd + I * I                     /* Hessians */
            + mx * mx + 2 * h * h                             /* factors */
            + chunk * T * (3 * h + 2 * qd + 4 * kvd + 2 * I)  /* forward workspace */
            + T * (T + 8);                                    /* attention scores */
    return 4.0 * total;
}
