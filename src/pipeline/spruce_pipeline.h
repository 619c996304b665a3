/* spruce_pipeline.h: block-by-block pruning of a model.
 *
 * The one-way flow: the model's forward (spruce_model.h) feeds each block's
 * calibration activations into Hessians, the pruner (spruce_prune.h) prunes
 * each linear layer, and the pruned weights go to a checkpoint writer
 * (spruce_ckpt.h); the caller writes the masks. */
#ifndef SPRUCE_PIPELINE_H
#define SPRUCE_PIPELINE_H

#include "spruce_model.h"
#include "spruce_plan.h"
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
    /* A mixture-of-experts block's expert: its index (-1 for every other
     * layer; which is then GATE, UP or DOWN), and for every layer the
     * calibration tokens its Hessian saw (an expert: exactly the tokens
     * routed to it; 0 for magnitude). */
    int expert;
    int64_t tokens;
    /* NULL, or the rule that pruned this expert because it saw fewer
     * calibration tokens than its inputs (cols):
     *   "magnitude, no calibration tokens"          none at all (any method)
     *   "sparsegpt, damping raised to 0.1"          0 < tokens < cols, SparseGPT
     * Wanda with 0 < tokens < cols keeps its rule: the input norms of the
     * tokens seen. */
    const char *fallback;
    /* ||(W0 - W) X^T||^2 / ||W0 X^T||^2 over the calibration tokens (W0 the
     * dense weights): computed for experts with tokens > 0, the same measure
     * for every method; -1 otherwise. */
    double rel_error;
    /* What the plan gave the layer (kind DEFAULT without a plan).  A layer the
     * plan keeps DENSE is reported too: weight is its dense weights, mask NULL,
     * result zero, and nothing is written for it (the writer copies it). */
    spruce_layer_target target;
    int64_t pruned;              /* weights the mask prunes */
} spruce_layer_report;

typedef struct {
    spruce_prune_opts prune;     /* method, sparsity or N:M, blocksize, damp, threads */
    int true_sequential;         /* q/k/v, then o, then gate/up, then down (a mixture
                                  * of experts: every expert's gate/up, then every down) */
    const char *include;         /* POSIX extended regex on tensor names, NULL = all */
    const char *exclude;         /* NULL = none */
    /* A per-layer plan (spruce_plan.h); without one every layer gets prune.
     * layer_rules: --layer-sparsity, first match wins; owl: --sparsity-profile
     * owl, block sparsities from a dense pass over the calibration data around
     * prune.sparsity (owl_m, owl_lambda: 5 and 0.08 from opts_init).  Planned
     * unstructured layers prune exact counts (spruce_plan_counts) so that the
     * pruned layers' overall sparsity is the plan's to the weight. */
    const spruce_layer_rules *layer_rules;
    int owl;
    double owl_m, owl_lambda;
    /* Once the plan is made, before pruning: plan (nlayers, SPRUCE_NPROJ), the
     * entry of each lead linear layer (DEFAULT for layers not selected);
     * block_sparsity (nlayers) with owl, else NULL.  Non-zero stops. */
    int (*on_plan)(void *ctx, const spruce_layer_target *plan, const double *block_sparsity,
                   int nlayers);
    /* owl: after the dense pass over each block, its outlier ratio (percent). */
    void (*on_profile)(void *ctx, int layer, int nlayers, double outlier_ratio, double elapsed);
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
    int64_t pruned;              /* of which the masks prune */
    int layers_dense;            /* layers the plan kept dense (not in params) */
    double sparsity;             /* zeros / params */
    double loss;                 /* sum of the layers' losses */
    double seconds;
} spruce_pipeline_summary;

/* Estimated peak of the anonymous memory spruce_pipeline_run needs, in bytes
 * (the mapped checkpoint is page cache and not counted; the embedding is
 * read by rows from it and the head is never converted):
 *   4 [ N T h + P_block + 2 h^2 + (H d)^2 + I^2
 *       + max(h, H d, I)^2 + 2 h^2 + c T (3h + 2 H d + 4 KV d + 2 I) + T^2 ]
 * with c = spruce_fwd_chunk(T) sequences per chunk (see the README).  A
 * mixture of experts adds, per block, every expert's weights (3 E h I_e) and
 * both Hessians of every expert (E (h^2 + I_e^2)): all experts of a block are
 * calibrated in one forward and their Hessians held at once (with
 * true_sequential, the gate/up ones and then the down ones; the estimate
 * counts both).  When every block is a mixture of experts (no block has
 * the dense MLP, spruce_config_layer_moe), the dense terms 3 h I and I^2 are
 * left out and the factor is max(h, H d, I_e)^2. */
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
