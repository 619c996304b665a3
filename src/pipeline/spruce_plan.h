/* spruce_plan.h: a per-layer pruning plan: OWL's layerwise sparsities.
 *
 * OWL (outlier-weighed layerwise sparsity) as llm-compressor implements it for
 * its SparseGPT and Wanda modifiers (sgpt_base.py: _infer_owl_layer_sparsity,
 * _get_activations):
 *
 *   a_j      = sum over calibration samples of ||X_s[:, j]||_2      (dense model)
 *   z_ij     = |W_ij| * a_j over every linear layer of a block, concatenated
 *   ratio_b  = 100 * #{z > M * mean(z)} / #z                         (block b)
 *   r_b      = (ratio_b - min ratio) / (max ratio - min ratio) * 2 lambda
 *   s_b      = 1 - (r_b - mean(r) + (1 - s))  =  s - (r_b - mean(r))
 *
 * so the mean of s_b over the blocks is s, and s_b spans an interval of width
 * 2 lambda containing s.  (llm-compressor scales a_j by 1/128 whatever the
 * number of samples; the threshold is relative to the mean, so the scale does
 * not change the ratios.) */
#ifndef SPRUCE_PLAN_H
#define SPRUCE_PLAN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The outlier ratio, in percent, of one block: nlin linear layers, layer k
 * (rows[k], cols[k]) row-major in W[k], its input norms a_j in norm[k]
 * (cols[k] values).  Scores z = |W_ij| * a_j; the threshold is owl_m times
 * their mean (accumulated in double); strictly greater counts. */
double spruce_owl_outlier_ratio(int nlin, const float *const *W, const int *rows,
                                const int *cols, const double *const *norm, double owl_m);

/* The blocks' sparsities from their outlier ratios (formula above) into
 * out[nblocks].  All ratios equal: every block gets s (llm-compressor divides
 * by zero there).  SPRUCE_EINVAL when a sparsity falls outside [0, 1) or an
 * argument is out of range (s in [0, 1), lambda >= 0, nblocks >= 1). */
int spruce_owl_sparsities(const double *ratio, int nblocks, double s, double lambda,
                          double *out);

/* Whole weights to prune per layer so that the total is exact: layer i asks
 * for sparsity[i] of its numel[i] weights; count[i] = round(C_i) - round(C_i-1)
 * with C_i the running sum of sparsity x numel, so the counts add up to
 * round(C_n) (no per-layer rounding drifts the mean) and each is within one
 * weight of its own target.  SPRUCE_EINVAL for n < 1 or a sparsity outside
 * [0, 1). */
int spruce_plan_counts(const double *sparsity, const int64_t *numel, int n, int64_t *count);

/* ---- what one linear layer gets ------------------------------------------ */

typedef enum {
    SPRUCE_TARGET_DEFAULT = 0,  /* the pipeline's own sparsity or N:M */
    SPRUCE_TARGET_SPARSITY,     /* unstructured: sparsity, pruned as an exact count */
    SPRUCE_TARGET_NM,           /* prune n of every m consecutive weights of a row */
    SPRUCE_TARGET_DENSE         /* not pruned: the tensor is written as it was read */
} spruce_target_kind;

typedef struct {
    spruce_target_kind kind;
    double sparsity;  /* SPARSITY: the fraction asked for, in [0, 1) */
    int64_t count;    /* SPARSITY: the whole weights pruned (set by the pipeline) */
    int n, m;         /* NM */
} spruce_layer_target;

/* "0.6", "2:4", "dense" or "default" (buf of at least 32 bytes). */
const char *spruce_layer_target_str(const spruce_layer_target *t, char *buf, size_t size);

/* ---- --layer-sparsity FILE.json ------------------------------------------ *
 *
 * A JSON object mapping a POSIX extended regular expression on tensor names
 * (searched anywhere in the name: anchor it with ^ and $) to a sparsity in
 * [0, 1), an "N:M" string (0 < N < M <= 256) or "dense":
 *
 *   { "self_attn\\.(q|k)_proj": 0.4, "layers\\.0\\.": "dense", "mlp": "2:4" }
 *
 * Rules are tried in the file's order and the first that matches a name
 * decides; a name no rule matches gets the pipeline's --sparsity / --pattern.
 * Every rule must match at least one linear layer of the model. */
typedef struct spruce_layer_rules spruce_layer_rules;

/* Read and check path: SPRUCE_EFORMAT for a file that is not a JSON object
 * (line and column), SPRUCE_EINVAL for a bad value or regex, naming the file
 * and the key. */
int spruce_layer_rules_load(const char *path, spruce_layer_rules **out);
/* The same from a JSON text; origin names it in messages. */
int spruce_layer_rules_parse(const char *text, const char *origin, spruce_layer_rules **out);
void spruce_layer_rules_free(spruce_layer_rules *r); /* NULL is a no-op */
int spruce_layer_rules_count(const spruce_layer_rules *r);
const char *spruce_layer_rules_key(const spruce_layer_rules *r, int i);
const char *spruce_layer_rules_origin(const spruce_layer_rules *r);
/* The index of the first rule whose regex matches name, or -1 (t, when
 * not NULL, receives its target). */
int spruce_layer_rules_match(const spruce_layer_rules *r, const char *name,
                             spruce_layer_target *t);

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_PLAN_H */
