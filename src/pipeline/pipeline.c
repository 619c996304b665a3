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
#include <time.h>

#include "spruce_pipeline.h"

void spruce_pipeline_opts_init(spruce_pipeline_opts *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    spruce_prune_opts_init(&o->prune);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
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

static int compile(regex_t *re, const char *pat, const char *what)
{
    char msg[256];
    int e = regcomp(re, pat, REG_EXTENDED | REG_NOSUB);
    if (e) {
        regerror(e, re, msg, sizeof msg);
        return spruce__seterr(SPRUCE_EINVAL, "%s regular expression '%s': %s", what, pat, msg);
    }
    return 0;
}

/* Width of the activations seen at site. */
static int site_cols(const spruce_config *c, int site)
{
    switch (site) {
    case SPRUCE_SITE_O: return c->num_attention_heads * c->head_dim;
    case SPRUCE_SITE_DOWN: return c->intermediate_size;
    default: return c->hidden_size;
    }
}

/* The groups pruned together: all seven at once, or in true-sequential order. */
static const int group_of_sequential[SPRUCE_NPROJ] = {0, 0, 0, 1, 2, 2, 3};

int spruce_pipeline_run(spruce_model *m, const uint32_t *calib, int nsamples, int seqlen,
                        spruce_ckpt_writer *w, const spruce_pipeline_opts *o,
                        spruce_pipeline_summary *sum)
{
    const spruce_config *c;
    regex_t inc, exc;
    int have_inc = 0, have_exc = 0, rc = 0, L, layer, s, l, g, ngroups, need_data, chunk = 1;
    unsigned char *selected = NULL;     /* (L, NLINEAR) */
    float *X = NULL;
    uint8_t *mask = NULL;
    size_t maxw = 0;
    spruce_fwd_ws *ws = NULL;
    spruce_block *b = NULL;
    taps tp;
    spruce_hinv *hi[SPRUCE_NSITES] = {NULL, NULL, NULL, NULL};
    spruce_pipeline_summary total;
    double t0 = now();
    char name[256];

    memset(&tp, 0, sizeof tp);
    memset(&total, 0, sizeof total);
    if (!m || !o || (!calib && o->prune.method != SPRUCE_METHOD_MAGNITUDE))
        return spruce__seterr(SPRUCE_EINVAL, "spruce_pipeline_run: NULL argument");
    c = spruce_model_config(m);
    L = c->num_hidden_layers;
    need_data = o->prune.method != SPRUCE_METHOD_MAGNITUDE;
    if (need_data && (nsamples <= 0 || seqlen <= 0))
        return spruce__seterr(SPRUCE_EINVAL, "pipeline: %d calibration samples of %d tokens",
                              nsamples, seqlen);
    if (o->include && (rc = compile(&inc, o->include, "--include")))
        return rc;
    have_inc = o->include != NULL;
    if (o->exclude && (rc = compile(&exc, o->exclude, "--exclude")))
        goto done;
    have_exc = o->exclude != NULL;

    /* Which tensors are pruned. */
    selected = calloc((size_t)L * SPRUCE_NPROJ, 1);
    if (!selected) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "pipeline");
        goto done;
    }
    for (layer = 0, s = 0; layer < L; layer++)
        for (l = 0; l < SPRUCE_NPROJ; l++) {
            spruce_proj_name(layer, (spruce_proj)l, 0, name, sizeof name);
            selected[layer * SPRUCE_NPROJ + l] =
                (!have_inc || regexec(&inc, name, 0, NULL, 0) == 0) &&
                (!have_exc || regexec(&exc, name, 0, NULL, 0) != 0);
            s += selected[layer * SPRUCE_NPROJ + l];
        }
    if (s == 0) {
        rc = spruce__seterr(SPRUCE_EINVAL, "no linear layer of the %d blocks is selected by "
                            "--include '%s' --exclude '%s' (names look like %s)", L,
                            o->include ? o->include : "", o->exclude ? o->exclude : "",
                            "model.layers.0.self_attn.q_proj.weight");
        goto done;
    }
    {
        int qd = c->num_attention_heads * c->head_dim;
        size_t a = (size_t)qd * c->hidden_size, bsz = (size_t)c->intermediate_size * c->hidden_size;
        maxw = a > bsz ? a : bsz;
    }
    mask = malloc(maxw);
    if (!mask) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "pipeline: mask of %zu bytes", maxw);
        goto done;
    }

    if (need_data) {
        size_t n = (size_t)nsamples * seqlen * c->hidden_size;
        X = malloc(n * sizeof(float));
        chunk = spruce_fwd_chunk(seqlen) < nsamples ? spruce_fwd_chunk(seqlen) : nsamples;
        ws = spruce_fwd_ws_alloc(c, seqlen, chunk);
        if (!X || !ws) {
            rc = spruce__seterr(SPRUCE_ENOMEM, "pipeline: calibration activations of %d x %d "
                                "tokens (%zu MiB)", nsamples, seqlen, (n * sizeof(float)) >> 20);
            goto done;
        }
        for (s = 0; s < nsamples; s++)
            if ((rc = spruce_model_embed(m, calib + (size_t)s * seqlen, seqlen,
                                         X + (size_t)s * seqlen * c->hidden_size)))
                goto done;
    }

    ngroups = o->true_sequential ? 4 : 1;
    for (layer = 0; layer < L; layer++) {
        int any = 0;
        for (l = 0; l < SPRUCE_NPROJ; l++)
            any |= selected[layer * SPRUCE_NPROJ + l];
        if (!any && !need_data)
            continue;
        if ((rc = spruce_model_get_block(m, layer, &b)))
            goto done;
        for (g = 0; g < ngroups; g++) {
            int in_group[SPRUCE_NPROJ], ngrp = 0, last_site = -1, site;
            int per_site[SPRUCE_NSITES] = {0, 0, 0, 0};
            for (l = 0; l < SPRUCE_NPROJ; l++) {
                in_group[l] = selected[layer * SPRUCE_NPROJ + l] &&
                              (ngroups == 1 || group_of_sequential[l] == g);
                if (in_group[l]) {
                    ngrp++;
                    site = spruce_proj_site((spruce_proj)l);
                    per_site[site]++;
                    if (site > last_site)
                        last_site = site;
                }
            }
            if (!ngrp)
                continue;
            /* Calibrate: one Hessian per distinct input of the group. */
            if (need_data) {
                for (l = 0; l < SPRUCE_NPROJ; l++) {
                    site = spruce_proj_site((spruce_proj)l);
                    if (in_group[l] && !tp.h[site]) {
                        tp.h[site] = spruce_hessian_alloc(site_cols(c, site));
                        if (!tp.h[site]) {
                            rc = spruce__seterr(SPRUCE_ENOMEM, "Hessian of %d x %d floats",
                                                site_cols(c, site), site_cols(c, site));
                            goto done;
                        }
                    }
                }
                for (s = 0; s < nsamples; s += chunk)
                    if ((rc = spruce_block_forward(c, b, X + (size_t)s * seqlen * c->hidden_size,
                                                   nsamples - s < chunk ? nsamples - s : chunk,
                                                   seqlen, ws, tap_add, &tp, last_site)))
                        goto done;
            }
            /* Prune the group's layers, in order. */
            for (l = 0; l < SPRUCE_NPROJ; l++) {
                spruce_layer_report r;
                int64_t numel = (int64_t)b->rows[l] * b->cols[l], i, zeros = 0;
                if (!in_group[l])
                    continue;
                site = spruce_proj_site((spruce_proj)l);
                spruce_proj_name(layer, (spruce_proj)l, 0, name, sizeof name);
                memset(&r, 0, sizeof r);
                /* Layers sharing an input share one factorisation of its Hessian. */
                if (o->prune.method == SPRUCE_METHOD_SPARSEGPT && per_site[site] > 1 &&
                    !hi[site])
                    rc = spruce_hinv_prepare(tp.h[site], &o->prune, &hi[site]);
                if (!rc && hi[site])
                    rc = spruce_prune_layer_prepared(b->w[l], b->rows[l], b->cols[l], hi[site],
                                                     &o->prune, mask, &r.result);
                else if (!rc)
                    rc = spruce_prune_layer(b->w[l], b->rows[l], b->cols[l], tp.h[site],
                                            &o->prune, mask, &r.result);
                if (rc) {
                    /* Say which tensor the pruner failed on. */
                    const spruce_ckpt *ck = spruce_model_ckpt(m);
                    const spruce_tensor *t = spruce_ckpt_find(ck, name);
                    char detail[512];
                    snprintf(detail, sizeof detail, "%s", spruce_errdetail());
                    rc = spruce__seterr(rc, "file %s: tensor %s: %s",
                                        t ? spruce_ckpt_file_of(ck, t) : spruce_ckpt_dir(ck),
                                        name, detail);
                    goto done;
                }
                for (i = 0; i < numel; i++)
                    zeros += b->w[l][i] == 0.0f;
                if (w && (rc = spruce_ckpt_writer_set_f32(w, name, b->w[l])))
                    goto done;
                total.layers_pruned++;
                total.params += numel;
                total.zeros += zeros;
                total.loss += r.result.loss;
                if (o->on_layer) {
                    r.name = name;
                    r.layer = layer;
                    r.nlayers = L;
                    r.which = (spruce_proj)l;
                    r.rows = b->rows[l];
                    r.cols = b->cols[l];
                    r.weight = b->w[l];
                    r.mask = mask;
                    r.elapsed = now() - t0;
                    if ((rc = o->on_layer(o->ctx, &r)))
                        goto done;
                }
            }
            for (site = 0; site < SPRUCE_NSITES; site++) {
                spruce_hessian_free(tp.h[site]);
                tp.h[site] = NULL;
                spruce_hinv_free(hi[site]);
                hi[site] = NULL;
            }
        }
        /* The next block's input: this block with its pruned weights. */
        if (need_data && layer + 1 < L)
            for (s = 0; s < nsamples; s += chunk)
                if ((rc = spruce_block_forward(c, b, X + (size_t)s * seqlen * c->hidden_size,
                                               nsamples - s < chunk ? nsamples - s : chunk,
                                               seqlen, ws, NULL, NULL, -1)))
                    goto done;
        spruce_model_put_block(m, b);
        b = NULL;
        if (o->on_block)
            o->on_block(o->ctx, layer, L, now() - t0);
    }
    total.sparsity = total.params ? (double)total.zeros / (double)total.params : 0.0;
    total.seconds = now() - t0;
    if (sum)
        *sum = total;
done:
    for (s = 0; s < SPRUCE_NSITES; s++) {
        spruce_hessian_free(tp.h[s]);
        spruce_hinv_free(hi[s]);
    }
    spruce_model_put_block(m, b);
    spruce_fwd_ws_free(ws);
    free(X);
    free(mask);
    free(selected);
    if (have_inc)
        regfree(&inc);
    if (have_exc)
        regfree(&exc);
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
