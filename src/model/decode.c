/* decode.c: token-by-token generation with a key/value cache on the runtime's
 * linear layers (dense OpenBLAS or a sparse format, chosen per layer). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "spruce_decode.h"
#include "spruce_sparse.h"

typedef struct {
    float *attn_norm, *mlp_norm;          /* (hidden) */
    spruce_linear *lin[SPRUCE_NPROJ];
    float *bias[SPRUCE_NPROJ];            /* (rows) or NULL */
    float *kc, *vc;                       /* (max_T, kvdim) key and value cache */
} dec_layer;

struct spruce_decoder {
    spruce_model *m;
    const spruce_config *c;
    int max_T, pos, qdim, kvdim, nsparse;
    dec_layer *layers;
    float *inv_freq;                      /* (head_dim / 2) */
    float *x, *a, *q, *k, *v, *att, *t;   /* (hidden) or (qdim / kvdim) */
    float *g, *u;                         /* (intermediate) */
    float *p;                             /* (max_T) attention weights of one head */
    float *xn;                            /* (hidden) scratch of the head */
};

void spruce_decoder_free(spruce_decoder *d)
{
    int i, l;
    if (!d)
        return;
    if (d->layers) {
        for (i = 0; i < d->c->num_hidden_layers; i++) {
            dec_layer *L = &d->layers[i];
            free(L->attn_norm);
            free(L->mlp_norm);
            for (l = 0; l < SPRUCE_NPROJ; l++) {
                spruce_linear_free(L->lin[l]);
                free(L->bias[l]);
            }
            free(L->kc);
            free(L->vc);
        }
        free(d->layers);
    }
    free(d->inv_freq);
    free(d->x); free(d->a); free(d->q); free(d->k); free(d->v); free(d->att); free(d->t);
    free(d->g); free(d->u); free(d->p); free(d->xn);
    free(d);
}

static float *copy_vec(const float *src, int n)
{
    float *p;
    if (!src)
        return NULL;
    p = malloc((size_t)n * sizeof(float));
    if (p)
        memcpy(p, src, (size_t)n * sizeof(float));
    return p;
}

int spruce_decoder_create(spruce_model *m, int max_T, spruce_decode_mode mode,
                          spruce_decoder **out)
{
    spruce_decoder *d;
    spruce_linear_opts lo;
    const spruce_config *c;
    int rc = 0, i, l, hid, half;
    if (!m || !out || max_T <= 0)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_decoder_create: bad argument");
    *out = NULL;
    c = spruce_model_config(m);
    d = calloc(1, sizeof *d);
    if (!d)
        return spruce__seterr(SPRUCE_ENOMEM, "decoder");
    d->m = m;
    d->c = c;
    d->max_T = max_T;
    hid = c->hidden_size;
    d->qdim = c->num_attention_heads * c->head_dim;
    d->kvdim = c->num_key_value_heads * c->head_dim;
    half = c->head_dim / 2;
    d->layers = calloc((size_t)c->num_hidden_layers, sizeof *d->layers);
    d->inv_freq = malloc((size_t)half * sizeof(float));
    d->x = malloc((size_t)hid * sizeof(float));
    d->a = malloc((size_t)hid * sizeof(float));
    d->t = malloc((size_t)hid * sizeof(float));
    d->xn = malloc((size_t)hid * sizeof(float));
    d->q = malloc((size_t)d->qdim * sizeof(float));
    d->att = malloc((size_t)d->qdim * sizeof(float));
    d->k = malloc((size_t)d->kvdim * sizeof(float));
    d->v = malloc((size_t)d->kvdim * sizeof(float));
    d->g = malloc((size_t)c->intermediate_size * sizeof(float));
    d->u = malloc((size_t)c->intermediate_size * sizeof(float));
    d->p = malloc((size_t)max_T * sizeof(float));
    if (!d->layers || !d->inv_freq || !d->x || !d->a || !d->t || !d->xn || !d->q || !d->att ||
        !d->k || !d->v || !d->g || !d->u || !d->p) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "decoder buffers");
        goto done;
    }
    /* as in the workspace of the batched forward: float32 inv_freq */
    for (i = 0; i < half; i++)
        d->inv_freq[i] = (float)(1.0 / pow(c->rope_theta, (double)(2 * i) / (double)c->head_dim));

    spruce_linear_opts_init(&lo);
    lo.nbatches = 1;
    lo.batches[0] = 1;
    switch (mode) {
    case SPRUCE_DECODE_DENSE: lo.format = SPRUCE_FMT_DENSE; break;
    case SPRUCE_DECODE_CSR: lo.format = SPRUCE_FMT_CSR; break;
    case SPRUCE_DECODE_BITMASK: lo.format = SPRUCE_FMT_BITMASK; break;
    case SPRUCE_DECODE_NM: lo.format = SPRUCE_FMT_NM; break;
    default: lo.format = -1; break;
    }
    for (i = 0; i < c->num_hidden_layers; i++) {
        dec_layer *L = &d->layers[i];
        spruce_block *b = NULL;
        if ((rc = spruce_model_get_block(m, i, &b)))
            goto done;
        L->attn_norm = copy_vec(b->attn_norm, hid);
        L->mlp_norm = copy_vec(b->mlp_norm, hid);
        L->kc = malloc((size_t)max_T * d->kvdim * sizeof(float));
        L->vc = malloc((size_t)max_T * d->kvdim * sizeof(float));
        if (!L->attn_norm || !L->mlp_norm || !L->kc || !L->vc)
            rc = spruce__seterr(SPRUCE_ENOMEM, "decoder block %d", i);
        for (l = 0; !rc && l < SPRUCE_NPROJ; l++) {
            if (b->b[l] && !(L->bias[l] = copy_vec(b->b[l], b->rows[l])))
                rc = spruce__seterr(SPRUCE_ENOMEM, "decoder block %d", i);
            else
                rc = spruce_linear_create(b->w[l], b->rows[l], b->cols[l], &lo, &L->lin[l]);
            if (!rc && spruce_linear_format(L->lin[l], 1) != SPRUCE_FMT_DENSE)
                d->nsparse++;
        }
        spruce_model_put_block(m, b);
        if (rc)
            goto done;
    }
    *out = d;
    return 0;
done:
    spruce_decoder_free(d);
    return rc;
}

void spruce_decoder_reset(spruce_decoder *d)
{
    if (d)
        d->pos = 0;
}

int spruce_decoder_pos(const spruce_decoder *d)
{
    return d ? d->pos : 0;
}

int spruce_decoder_sparse_layers(const spruce_decoder *d)
{
    return d ? d->nsparse : 0;
}

/* y = x / sqrt(mean(x^2) + eps) * w, n floats. */
static void rmsnorm1(float *y, const float *x, const float *w, int n, double eps)
{
    double ss = 0;
    float r;
    int j;
    for (j = 0; j < n; j++)
        ss += (double)x[j] * x[j];
    r = (float)(1.0 / sqrt(ss / n + eps));
    for (j = 0; j < n; j++)
        y[j] = w[j] * (x[j] * r);
}

/* Rotate-half RoPE of nheads heads of size dim at position pos. */
static void rope1(float *x, int nheads, int dim, int pos, const float *inv_freq)
{
    int h, i, half = dim / 2;
    for (i = 0; i < half; i++) {
        float ang = (float)pos * inv_freq[i];
        float cs = (float)cos((double)ang), sn = (float)sin((double)ang);
        for (h = 0; h < nheads; h++) {
            float *xh = x + (size_t)h * dim, a = xh[i], b = xh[i + half];
            xh[i] = a * cs - b * sn;
            xh[i + half] = b * cs + a * sn;
        }
    }
}

/* y (rows) = W x (+ b) on the runtime's linear layer. */
static int lin1(const spruce_linear *lin, const float *bias, const float *x, float *y)
{
    int rc = spruce_linear_forward(lin, x, 1, y), i, rows;
    if (rc || !bias)
        return rc;
    rows = spruce_linear_rows(lin);
    for (i = 0; i < rows; i++)
        y[i] += bias[i];
    return 0;
}

int spruce_decoder_step(spruce_decoder *d, uint32_t id, float *logits)
{
    const spruce_config *c;
    int rc, i, hid, H, KV, dim, per, pos, n;
    float scale;
    if (!d)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_decoder_step: NULL decoder");
    c = d->c;
    if (d->pos >= d->max_T)
        return spruce__seterr(SPRUCE_EINVAL, "decoder: the cache holds %d positions", d->max_T);
    if (c->sliding_window > 0 && d->pos >= c->sliding_window)
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "decoder: position %d is beyond the sliding "
                              "window %d (supported: sequences within the window)", d->pos,
                              c->sliding_window);
    if ((rc = spruce_model_embed(d->m, &id, 1, d->x)))
        return rc;
    hid = c->hidden_size;
    H = c->num_attention_heads;
    KV = c->num_key_value_heads;
    dim = c->head_dim;
    per = H / KV;
    pos = d->pos;
    n = pos + 1;
    scale = (float)(1.0 / sqrt((double)dim));
    for (i = 0; i < c->num_hidden_layers; i++) {
        dec_layer *L = &d->layers[i];
        int h, j;
        rmsnorm1(d->a, d->x, L->attn_norm, hid, c->rms_norm_eps);
        if ((rc = lin1(L->lin[SPRUCE_PROJ_Q], L->bias[SPRUCE_PROJ_Q], d->a, d->q)) ||
            (rc = lin1(L->lin[SPRUCE_PROJ_K], L->bias[SPRUCE_PROJ_K], d->a, d->k)) ||
            (rc = lin1(L->lin[SPRUCE_PROJ_V], L->bias[SPRUCE_PROJ_V], d->a, d->v)))
            return rc;
        rope1(d->q, H, dim, pos, d->inv_freq);
        rope1(d->k, KV, dim, pos, d->inv_freq);
        memcpy(L->kc + (size_t)pos * d->kvdim, d->k, (size_t)d->kvdim * sizeof(float));
        memcpy(L->vc + (size_t)pos * d->kvdim, d->v, (size_t)d->kvdim * sizeof(float));
        /* att_h = softmax_j(q_h . k_j * scale) v_j over the cached positions */
        for (h = 0; h < H; h++) {
            const float *qh = d->q + (size_t)h * dim;
            const float *kc = L->kc + (size_t)(h / per) * dim, *vc = L->vc + (size_t)(h / per) * dim;
            float *out = d->att + (size_t)h * dim, mx = -INFINITY;
            double sum = 0;
            int e;
            for (j = 0; j < n; j++) {
                const float *kj = kc + (size_t)j * d->kvdim;
                float dot = 0;
                for (e = 0; e < dim; e++)
                    dot += qh[e] * kj[e];
                d->p[j] = dot * scale;
                mx = d->p[j] > mx ? d->p[j] : mx;
            }
            for (j = 0; j < n; j++) {
                d->p[j] = expf(d->p[j] - mx);
                sum += d->p[j];
            }
            for (e = 0; e < dim; e++)
                out[e] = 0.0f;
            for (j = 0; j < n; j++) {
                const float *vj = vc + (size_t)j * d->kvdim;
                float pj = (float)(d->p[j] / sum);
                for (e = 0; e < dim; e++)
                    out[e] += pj * vj[e];
            }
        }
        if ((rc = lin1(L->lin[SPRUCE_PROJ_O], L->bias[SPRUCE_PROJ_O], d->att, d->t)))
            return rc;
        for (j = 0; j < hid; j++)
            d->x[j] += d->t[j];
        rmsnorm1(d->a, d->x, L->mlp_norm, hid, c->rms_norm_eps);
        if ((rc = lin1(L->lin[SPRUCE_PROJ_GATE], L->bias[SPRUCE_PROJ_GATE], d->a, d->g)) ||
            (rc = lin1(L->lin[SPRUCE_PROJ_UP], L->bias[SPRUCE_PROJ_UP], d->a, d->u)))
            return rc;
        for (j = 0; j < c->intermediate_size; j++)
            d->g[j] = d->g[j] / (1.0f + expf(-d->g[j])) * d->u[j];
        if ((rc = lin1(L->lin[SPRUCE_PROJ_DOWN], L->bias[SPRUCE_PROJ_DOWN], d->g, d->t)))
            return rc;
        for (j = 0; j < hid; j++)
            d->x[j] += d->t[j];
    }
    d->pos++;
    if (logits)
        spruce_model_head(d->m, d->x, 1, d->xn, logits);
    return 0;
}
