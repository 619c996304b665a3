/* quant.c: the weight-quantization grid (the published quant.py's Quantizer
 * with perchannel=True, mse=False; GPTQ's groups) and rounding to it.
 *
 * For one row segment x (a whole row, or one group of G columns):
 *   xmin = min(min x, 0);  xmax = max(max x, 0)
 *   sym: xmax = max(|xmin|, xmax); xmin = -xmax if xmin < 0
 *   xmin = -1, xmax = +1 if both are 0
 *   scale = (xmax - xmin) / maxq;  zero = sym ? (maxq + 1) / 2 : round(-xmin / scale)
 * with maxq = 2^bits - 1 and round half to even (torch.round), all in float32
 * as quant.py computes it.  A weight's value on the grid is spruce__qround().
 * With a bf16 or f16 scale_dtype the scale is rounded to that type before the
 * zero point is found from it (spruce_qgrid.h). */
#include <math.h>

#include "prune_internal.h"
#include "spruce_half.h"

void spruce__qgrid_find(const float *x, int n, int bits, int sym, int scale_dtype, float *scale,
                        float *zero)
{
    float xmin = 0.0f, xmax = 0.0f, maxq = (float)((1 << bits) - 1), s;
    int i;
    for (i = 0; i < n; i++) {
        xmin = x[i] < xmin ? x[i] : xmin;
        xmax = x[i] > xmax ? x[i] : xmax;
    }
    if (sym) {
        xmax = fabsf(xmin) > xmax ? fabsf(xmin) : xmax;
        if (xmin < 0.0f)
            xmin = -xmax;
    }
    if (xmin == 0.0f && xmax == 0.0f) {
        xmin = -1.0f;
        xmax = 1.0f;
    }
    s = (xmax - xmin) / maxq;
    if (scale_dtype == SPRUCE_QSCALE_BF16)
        s = spruce_bf16_to_f32(spruce_f32_to_bf16(s));
    else if (scale_dtype == SPRUCE_QSCALE_F16)
        s = spruce_f16_to_f32(spruce_f32_to_f16(s));
    if (s == 0.0f) /* below the type's smallest step: its smallest positive value */
        s = scale_dtype == SPRUCE_QSCALE_F16 ? 0x1p-24f : 0x1p-133f;
    *scale = s;
    *zero = sym ? (maxq + 1.0f) / 2.0f : rintf(-xmin / s);
}

/* The grid of every row (and group) of W (rows, cols) as it is now. */
void spruce__qgrid_rows(const float *W, int rows, int cols, int g0, int g1, const spruce_qgrid *g)
{
    int64_t ng = g->cols / g->groupsize;
    int r, k;
    #pragma omp parallel for schedule(static) private(k)
    for (r = 0; r < rows; r++)
        for (k = g0; k < g1; k++)
            spruce__qgrid_find(W + (size_t)r * cols + (size_t)k * g->groupsize, (int)g->groupsize,
                               g->bits, g->sym, g->scale_dtype, g->scale + (size_t)r * ng + k,
                               g->zero + (size_t)r * ng + k);
}

/* Wanda and magnitude: every kept (non-zero) weight rounded to the grid, no
 * error feedback.  Pruned weights stay +0.0. */
void spruce__qgrid_round(float *W, int rows, int cols, const spruce_qgrid *g)
{
    int64_t ng = g->cols / g->groupsize;
    float maxq = (float)((1 << g->bits) - 1);
    int r, j;
    #pragma omp parallel for schedule(static) private(j)
    for (r = 0; r < rows; r++) {
        float *w = W + (size_t)r * cols;
        for (j = 0; j < cols; j++) {
            size_t k = (size_t)r * ng + (size_t)(j / g->groupsize);
            if (w[j] != 0.0f)
                w[j] = spruce__qround(w[j], g->scale[k], g->zero[k], maxq);
        }
    }
}
