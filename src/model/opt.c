/* opt.c: LayerNorm, OPT's positional rows and ReLU (opt.h), as
 * modeling_opt.py defines them: nn.LayerNorm in OPTDecoderLayer and
 * OPTDecoder, OPTLearnedPositionalEmbedding.forward, ACT2FN["relu"]. */
#include <math.h>

#include "block.h"
#include "opt.h"

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

/* att = softmax_causal(q k^T) v with q already scaled: the scores' scale is 1. */
static int opt_attention(const spruce__opt_block_run *r, const float *in, int nseq, int T)
{
    const int ntok = nseq * T, hid = r->hidden, H = r->heads, d = hid / H;
    const float qs = (float)(1.0 / sqrt((double)d));
    spruce__attn a;
    size_t i;
    int rc;
    if ((rc = r->linear(r->linear_ctx, SPRUCE_PROJ_Q, in, ntok, r->q)) ||
        (rc = r->linear(r->linear_ctx, SPRUCE_PROJ_K, in, ntok, r->k)) ||
        (rc = r->linear(r->linear_ctx, SPRUCE_PROJ_V, in, ntok, r->v)))
        return rc;
    for (i = 0; i < (size_t)ntok * hid; i++)
        r->q[i] *= qs;
    spruce__attn_default(&a, d);
    a.scale = 1.0f;
    spruce__attention_blas_opts(r->q, r->k, r->v, r->att, nseq, T, H, H, d, &a, r->S);
    return r->linear(r->linear_ctx, SPRUCE_PROJ_O, r->att, ntok, r->t);
}

/* t = fc2(relu(fc1(in))). */
static int opt_mlp(const spruce__opt_block_run *r, const float *in, int ntok)
{
    int rc = r->linear(r->linear_ctx, SPRUCE_PROJ_UP, in, ntok, r->f);
    if (rc)
        return rc;
    spruce__relu(r->f, (size_t)ntok * r->ffn);
    return r->linear(r->linear_ctx, SPRUCE_PROJ_DOWN, r->f, ntok, r->t);
}

int spruce__opt_block(const spruce__opt_block_run *r, float *x, int nseq, int T)
{
    const int ntok = nseq * T, hid = r->hidden;
    const size_t n = (size_t)ntok * hid;
    const float *in = x;
    int rc;
    if (r->pre_norm) {
        spruce__layernorm(r->a, x, r->attn_norm_w, r->attn_norm_b, ntok, hid, r->eps);
        in = r->a;
    }
    if ((rc = opt_attention(r, in, nseq, T)))
        return rc;
    spruce__add(x, r->t, n);
    if (!r->pre_norm)
        spruce__layernorm(x, x, r->attn_norm_w, r->attn_norm_b, ntok, hid, r->eps);
    in = x;
    if (r->pre_norm) {
        spruce__layernorm(r->a, x, r->mlp_norm_w, r->mlp_norm_b, ntok, hid, r->eps);
        in = r->a;
    }
    if ((rc = opt_mlp(r, in, ntok)))
        return rc;
    spruce__add(x, r->t, n);
    if (!r->pre_norm)
        spruce__layernorm(x, x, r->mlp_norm_w, r->mlp_norm_b, ntok, hid, r->eps);
    return 0;
}
