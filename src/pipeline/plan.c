/* plan.c: OWL's layerwise sparsities (llm-compressor, sgpt_base.py:
 * _infer_owl_layer_sparsity) and exact per-layer counts; see spruce_plan.h. */
#include <math.h>
#include <stddef.h>

#include "spruce_error.h"
#include "spruce_plan.h"

double spruce_owl_outlier_ratio(int nlin, const float *const *W, const int *rows,
                                const int *cols, const double *const *norm, double owl_m)
{
    double sum = 0.0, thr;
    int64_t n = 0, above = 0;
    int k, r, j;
    for (k = 0; k < nlin; k++) /* mean(z) */
        for (r = 0; r < rows[k]; r++)
            for (j = 0; j < cols[k]; j++)
                sum += fabs((double)W[k][(size_t)r * cols[k] + j]) * norm[k][j];
    for (k = 0; k < nlin; k++)
        n += (int64_t)rows[k] * cols[k];
    if (n == 0)
        return 0.0;
    thr = sum / (double)n * owl_m;
    for (k = 0; k < nlin; k++) /* #{z > M mean(z)} */
        for (r = 0; r < rows[k]; r++)
            for (j = 0; j < cols[k]; j++)
                above += fabs((double)W[k][(size_t)r * cols[k] + j]) * norm[k][j] > thr;
    return 100.0 * (double)above / (double)n;
}

int spruce_owl_sparsities(const double *ratio, int nblocks, double s, double lambda,
                          double *out)
{
    double lo, hi, mean = 0.0;
    int b;
    if (!ratio || !out || nblocks < 1 || !(s >= 0.0 && s < 1.0) || !(lambda >= 0.0))
        return spruce__seterr(SPRUCE_EINVAL, "owl: %d blocks, sparsity %g, lambda %g: expected "
                              "at least one block, sparsity in [0, 1), lambda >= 0", nblocks, s,
                              lambda);
    lo = hi = ratio[0];
    for (b = 1; b < nblocks; b++) {
        lo = ratio[b] < lo ? ratio[b] : lo;
        hi = ratio[b] > hi ? ratio[b] : hi;
    }
    /* r_b = (ratio_b - min) / (max - min) * 2 lambda; its mean */
    for (b = 0; b < nblocks; b++) {
        out[b] = hi > lo ? (ratio[b] - lo) * (1.0 / (hi - lo) * lambda * 2.0) : 0.0;
        mean += out[b];
    }
    mean /= nblocks;
    for (b = 0; b < nblocks; b++) { /* s_b = 1 - (r_b - mean(r) + (1 - s)) */
        out[b] = 1.0 - (out[b] - mean + (1.0 - s));
        if (!(out[b] >= 0.0 && out[b] < 1.0))
            return spruce__seterr(SPRUCE_EINVAL, "owl: block %d gets sparsity %g, outside [0, 1): "
                                  "lower --owl-lambda %g or the sparsity %g", b, out[b], lambda, s);
    }
    return 0;
}

int spruce_plan_counts(const double *sparsity, const int64_t *numel, int n, int64_t *count)
{
    double c = 0.0;
    int64_t before = 0, upto;
    int i;
    if (!sparsity || !numel || !count || n < 1)
        return spruce__seterr(SPRUCE_EINVAL, "plan: %d layers", n);
    for (i = 0; i < n; i++) {
        if (!(sparsity[i] >= 0.0 && sparsity[i] < 1.0) || numel[i] < 0)
            return spruce__seterr(SPRUCE_EINVAL, "plan: layer %d: sparsity %g of %lld weights: "
                                  "expected a sparsity in [0, 1)", i, sparsity[i],
                                  (long long)numel[i]);
        c += sparsity[i] * (double)numel[i];
        upto = llround(c);
        count[i] = upto - before;
        before = upto;
    }
    return 0;
}
