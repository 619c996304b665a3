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
 * one block + X + the Hessians. */
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spruce_clock.h"
#include "spruce_family.h"
#include "model_internal.h"
#include "pipeline_internal.h"
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
    const uint32_t *calib;
    int nsamples, seqlen, need_data, chunk, L;
    unsigned char *selected;        /* (L, SPRUCE_NPROJ): pruned or not */
    float *X;                       /* (nsamples, seqlen, hidden) the current block's input */
    uint8_t *mask;                  /* (rows, cols) of the largest linear layer */
    spruce_qgrid grid;              /* prune.wbits > 0: the current layer's grid */
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
        n = rows * (po->groupsize > 0 ? cols / (size_t)po->groupsize : 1);
        maxg = n > maxg ? n : maxg;
    }
    r->grid.scale = malloc((maxg ? maxg : 1) * sizeof *r->grid.scale);
    r->grid.zero = malloc((maxg ? maxg : 1) * sizeof *r->grid.zero);
    if (!r->grid.scale || !r->grid.zero)
        return spruce__seterr(SPRUCE_ENOMEM, "pipeline: quantization grid of %zu groups", maxg);
    return 0;
}

/* The mask of the largest linear layer and, when the method needs data, the
 * forward's workspace and X = embed(calibration windows). */
static int prepare(run *r)
{
    const spruce_config *c = r->c;
    size_t maxw = 0, rows, cols, n;
    int l, s, rc;
    for (l = 0; l < SPRUCE_NPROJ; l++) {
        spruce_family_linear_shape(r->f, c, (spruce_proj)l, &rows, &cols);
        rows = spruce_family_tensor_rows(r->f, c, (spruce_proj)l);   /* fused: every part */
        maxw = rows * cols > maxw ? rows * cols : maxw;
    }
    if (!(r->mask = malloc(maxw)))
        return spruce__seterr(SPRUCE_ENOMEM, "pipeline: mask of %zu bytes", maxw);
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
                                           r->seqlen, r->ws, tap, ctx, stop_after, s)))
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

/* Prune linear l of block b (layers sharing an input share one factorisation
 * of its Hessian), write it, count it and report it.  A fused tensor (phi3's
 * qkv_proj: q, k and v rows) is one layer of all its rows. */
static int prune_one(run *r, spruce_block *b, spruce_proj l, int shared)
{
    spruce_prune_opts opts = r->o->prune, *po = &opts;
    spruce_site site = r->f->linear[l].site;
    int rows = (int)spruce_family_tensor_rows(r->f, r->c, l);
    int64_t numel = (int64_t)rows * b->cols[l], i, zeros = 0;
    spruce_layer_report rep;
    char name[256];
    int rc = 0;
    spruce_family_linear_name(r->f, b->layer, l, 0, name, sizeof name);
    memset(&rep, 0, sizeof rep);
    if (po->wbits > 0) { /* the layer's grid, for the report (and so the writer) */
        r->grid.rows = b->rows[l];
        r->grid.cols = b->cols[l];
        r->grid.groupsize = po->groupsize > 0 ? po->groupsize : b->cols[l];
        po->grid_out = &r->grid;
        rep.grid = &r->grid;
    }
    if (po->method == SPRUCE_METHOD_SPARSEGPT && shared && !r->hi[site])
        rc = spruce_hinv_prepare(r->tp.h[site], po, &r->hi[site]);
    if (!rc && r->hi[site])
        rc = spruce_prune_layer_prepared(b->w[l], rows, b->cols[l], r->hi[site], po,
                                         r->mask, &rep.result);
    else if (!rc)
        rc = spruce_prune_layer(b->w[l], rows, b->cols[l], r->tp.h[site], po, r->mask,
                                &rep.result);
    if (rc) {
        /* Say which tensor the pruner failed on. */
        const spruce_ckpt *ck = spruce_model_ckpt(r->m);
        const spruce_tensor *t = spruce_ckpt_find(ck, name);
        char detail[512];
        snprintf(detail, sizeof detail, "%s", spruce_errdetail());
        return spruce__seterr(rc, "file %s: tensor %s: %s",
                              t ? spruce_ckpt_file_of(ck, t) : spruce_ckpt_dir(ck), name, detail);
    }
    for (i = 0; i < numel; i++)
        zeros += b->w[l][i] == 0.0f;
    if (r->w && (rc = spruce_ckpt_writer_set_f32(r->w, name, b->w[l])))
        return rc;
    r->total.layers_pruned++;
    r->total.params += numel;
    r->total.zeros += zeros;
    r->total.loss += rep.result.loss;
    if (!r->o->on_layer)
        return 0;
    rep.name = name;
    rep.layer = b->layer;
    rep.nlayers = r->L;
    rep.which = l;
    rep.rows = rows;
    rep.cols = b->cols[l];
    rep.weight = b->w[l];
    rep.mask = r->mask;
    rep.elapsed = spruce_clock_now() - r->t0;
    return r->o->on_layer(r->o->ctx, &rep);
}

/* Calibrate and prune block `layer` group by group, then X = block(X) with
 * the pruned weights: the next block's input. */
static int prune_block(run *r, int layer)
{
    int ngroups = r->o->true_sequential ? SPRUCE_NSITES : 1, g, l, rc = 0;
    spruce_block *b = NULL;
    if ((rc = spruce_model_get_block(r->m, layer, &b)))
        return rc;
    for (g = 0; g < ngroups; g++) {
        int in_group[SPRUCE_NPROJ], per_site[SPRUCE_NSITES];
        int last_site = group_members(r, layer, g, ngroups, in_group, per_site);
        if (last_site < 0)
            continue;
        if (r->need_data && (rc = calibrate(r, b, in_group, last_site)))
            goto done;
        for (l = 0; l < SPRUCE_NPROJ; l++)
            if (in_group[l] &&
                (rc = prune_one(r, b, (spruce_proj)l, per_site[r->f->linear[l].site] > 1)))
                goto done;
        free_hessians(r);
    }
    if (r->need_data && layer + 1 < r->L)
        rc = forward_all(r, b, NULL, NULL, -1);
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
    if (r.need_data && (nsamples <= 0 || seqlen <= 0))
        return spruce__seterr(SPRUCE_EINVAL, "pipeline: %d calibration samples of %d tokens",
                              nsamples, seqlen);
    if ((rc = select_layers(&r)) || (rc = prepare(&r)))
        goto done;
    for (layer = 0; layer < r.L; layer++) {
        int l, any = 0;
        for (l = 0; l < SPRUCE_NPROJ; l++)
            any |= r.selected[(size_t)layer * SPRUCE_NPROJ + l];
        if (!any && !r.need_data)
            continue;   /* nothing to prune, no input to carry to the next block */
        if ((rc = prune_block(&r, layer)))
            goto done;
        if (o->on_block)
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
    double h, I, qd, kvd, T, N, chunk, pblock, mx, total;
    if (!c)
        return 0;
    h = c->hidden_size;
    I = c->intermediate_size;
    qd = (double)c->num_attention_heads * c->head_dim;
    kvd = (double)c->num_key_value_heads * c->head_dim;
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
            + 2 * h * h + qd * qd + I * I                     /* Hessians */
            + mx * mx + 2 * h * h                             /* factors */
            + chunk * T * (3 * h + 2 * qd + 4 * kvd + 2 * I)  /* forward workspace */
            + T * (T + 8);                                    /* attention scores */
    return 4.0 * total;
}
