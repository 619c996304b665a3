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

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_PLAN_H */
