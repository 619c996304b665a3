/* spruce_pipeline.h: block-by-block pruning of a model.
 *
 * The one-way flow: the model's forward (spruce_model.h) feeds each block's
 * calibration activations into Hessians, the pruner (spruce_prune.h) prunes
 * each linear layer, and the pruned weights go to a checkpoint writer
 * (spruce_ckpt.h); the caller writes the masks. */
#ifndef SPRUCE_PIPELINE_H
#define SPRUCE_PIPELINE_H

#include "spruce_model.h"
#include "spruce_prune.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What the pipeline says after pruning one linear layer. */
typedef struct {
    const char *name;            /* tensor name, "model.layers.0.self_attn.q_proj.weight" */
    int layer, nlayers;
    spruce_proj which;
    int rows, cols;
    const float *weight;         /* the pruned (rows, cols) weights */
    const uint8_t *mask;         /* (rows, cols), 1 = kept */
    const spruce_qgrid *grid;    /* prune.wbits > 0: the grid of weight; else NULL */
    spruce_prune_result result;
    double elapsed;              /* seconds since the pipeline started */
} spruce_layer_report;

typedef struct {
    spruce_prune_opts prune;     /* method, sparsity or N:M, blocksize, damp, threads */
    int true_sequential;         /* q/k/v, then o, then gate/up, then down */
    const char *include;         /* POSIX extended regex on tensor names, NULL = all */
    const char *exclude;         /* NULL = none */
    /* After each pruned layer; a non-zero return stops the pipeline with it. */
    int (*on_layer)(void *ctx, const spruce_layer_report *r);
    /* After each block (layer counts from 0). */
    void (*on_block)(void *ctx, int layer, int nlayers, double elapsed);
    void *ctx;
} spruce_pipeline_opts;

void spruce_pipeline_opts_init(spruce_pipeline_opts *o);

typedef struct {
    int layers_pruned;           /* linear layers pruned */
    int64_t params;              /* weights in the pruned layers */
    int64_t zeros;               /* of which zero */
    double sparsity;             /* zeros / params */
    double loss;                 /* sum of the layers' losses */
    double seconds;
} spruce_pipeline_summary;

/* Estimated peak of the anonymous memory spruce_pipeline_run needs, in bytes
 * (the mapped checkpoint is page cache and not counted; the embedding is
 * read by rows from it and the head is never converted):
 *   4 [ N T h + P_block + 2 h^2 + (H d)^2 + I^2
 *       + max(h, H d, I)^2 + 2 h^2 + c T (3h + 2 H d + 4 KV d + 2 I) + T^2 ]
 * with c = spruce_fwd_chunk(T) sequences per chunk (see the README). */
double spruce_pipeline_memory(const spruce_config *c, int nsamples, int seqlen);

/* Prune m block by block on nsamples calibration sequences of seqlen tokens
 * (calib holds nsamples * seqlen ids).  Each pruned tensor goes to w (may be
 * NULL) with spruce_ckpt_writer_set_f32; the caller commits or aborts w.
 * Embeddings, norms and the head are never pruned.  Peak memory: one block in
 * float32, nsamples * seqlen * hidden floats of activations, the Hessians. */
int spruce_pipeline_run(spruce_model *m, const uint32_t *calib, int nsamples, int seqlen,
                        spruce_ckpt_writer *w, const spruce_pipeline_opts *o,
                        spruce_pipeline_summary *sum);

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_PIPELINE_H */
