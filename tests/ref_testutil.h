/* ref_testutil.h: double-precision references that test_opt.c and
 * test_families.c share: nn.LayerNorm of one row and one head of causal
 * softmax attention, written from their definitions (torch.nn.LayerNorm;
 * eager_attention_forward of transformers' modeling files). */
#ifndef SPRUCE_REF_TESTUTIL_H
#define SPRUCE_REF_TESTUTIL_H

#include <math.h>
#include <stddef.h>

/* y = (x - mean) / sqrt(var + eps) * w + b over n values (biased variance);
 * y may be x; w NULL: 1, b NULL: 0. */
static inline void ref_layernorm_d(double *y, const double *x, const float *w, const float *b,
                                   int n, double eps)
{
    double mu = 0, var = 0;
    int j;
    for (j = 0; j < n; j++)
        mu += x[j];
    mu /= n;
    for (j = 0; j < n; j++)
        var += (x[j] - mu) * (x[j] - mu);
    var /= n;
    for (j = 0; j < n; j++)
        y[j] = (x[j] - mu) / sqrt(var + eps) * (w ? w[j] : 1.0) + (b ? b[j] : 0.0);
}

/* out (d) = sum_{j <= t} softmax_j(scale q . k_j) v_j for one head: q (d),
 * key and value j at k + j * stride, v + j * stride; at most 4096 keys. */
static inline void ref_causal_head(double *out, const double *q, const double *k,
                                   const double *v, size_t stride, int t, int d, double scale)
{
    double p[4096], mx = -INFINITY, sum = 0;
    int j, e;
    for (j = 0; j <= t && j < 4096; j++) {
        double s = 0;
        for (e = 0; e < d; e++)
            s += q[e] * k[(size_t)j * stride + e];
        p[j] = s * scale;
        mx = fmax(mx, p[j]);
    }
    for (j = 0; j <= t && j < 4096; j++)
        sum += (p[j] = exp(p[j] - mx));
    for (e = 0; e < d; e++) {
        double s = 0;
        for (j = 0; j <= t && j < 4096; j++)
            s += p[j] / sum * v[(size_t)j * stride + e];
        out[e] = s;
    }
}

#endif
