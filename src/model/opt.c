/* opt.c: LayerNorm, OPT's positional rows and ReLU (opt.h), as
 * modeling_opt.py defines them: nn.LayerNorm in OPTDecoderLayer and
 * OPTDecoder, OPTLearnedPositionalEmbedding.forward, ACT2FN["relu"]; and
 * OPTDecoderLayer on its own weights, through the block every family runs
 * (block.c: spruce__block). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "block.h"
#include "opt.h"
#include "spruce_family.h"

#define PAR_MIN SPRUCE__PAR_MIN

/* One row: mean and biased variance in double, then the affine map. */
static void layernorm_row(float *yr, const float *xr, const float *w, const float *b, int n,
                          double eps)
{
    double mu = 0, var = 0;
    float r, m;
    int j;
    for (j = 0; j < n; j++)
        mu += xr[j];
    mu /= n;
    for (j = 0; j < n; j++)
        var += ((double)xr[j] - mu) * ((double)xr[j] - mu);
    r = (float)(1.0 / sqrt(var / n + eps));
    m = (float)mu;
    for (j = 0; j < n; j++) {
        float v = (xr[j] - m) * r;
        if (w)
            v *= w[j];
        if (b)
            v += b[j];
        yr[j] = v;
    }
}

void spruce__layernorm(float *y, const float *x, const float *w, const float *b, int T, int n,
                       double eps)
{
    int t;
    if ((long)T * n < PAR_MIN) {
        for (t = 0; t < T; t++)
            layernorm_row(y + (size_t)t * n, x + (size_t)t * n, w, b, n, eps);
        return;
    }
#pragma omp parallel for schedule(static)
    for (t = 0; t < T; t++)
        layernorm_row(y + (size_t)t * n, x + (size_t)t * n, w, b, n, eps);
}

void spruce__opt_position_rows(int *rows, const int *mask, int T, int past)
{
    int t, sum = 0;
    for (t = 0; t < T; t++) {
        int m = mask ? mask[t] : 1;
        sum += m;
        if (t >= past)
            rows[t - past] = sum * m - 1 + SPRUCE__OPT_POS_OFFSET;
    }
}

void spruce__relu(float *x, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        x[i] = x[i] < 0.0f ? 0.0f : x[i];   /* NaN stays NaN, as in torch */
}

int spruce__opt_block(const spruce__opt_block_run *r, float *x, int nseq, int T)
{
    spruce_config c;
    spruce__block_run b;
    memset(&c, 0, sizeof c);
    snprintf(c.model_type, sizeof c.model_type, "opt");
    c.family = spruce_family_find("opt");
    c.hidden_size = r->hidden;
    c.intermediate_size = r->ffn;
    c.num_hidden_layers = 1;
    c.num_attention_heads = c.num_key_value_heads = r->heads;
    c.head_dim = r->hidden / r->heads;
    c.rms_norm_eps = r->eps;
    c.act = SPRUCE_ACT_RELU;
    c.layer_norm = c.learned_positions = 1;
    c.post_norm = !r->pre_norm;
    memset(&b, 0, sizeof b);
    b.c = &c;
    b.attn_norm = r->attn_norm_w;
    b.attn_norm_b = r->attn_norm_b;
    b.mlp_norm = r->mlp_norm_w;
    b.mlp_norm_b = r->mlp_norm_b;
    b.linear = r->linear;
    b.linear_ctx = r->linear_ctx;
    b.blas_attention = 1;
    b.scores = r->S;
    b.nthreads = 1;
    b.a = r->a; b.q = r->q; b.k = r->k; b.v = r->v; b.att = r->att;
    b.h = x; b.t = r->t; b.g = r->f; b.u = r->f;
    return spruce__block(&b, x, nseq, T, NULL, NULL, -1);
}
