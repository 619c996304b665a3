/* model.c: the LLaMA-family forward (embedding, RMSNorm, rotate-half RoPE,
 * causal grouped-query attention, SiLU-gated MLP, final norm, head).
 *
 * Linear layers and the two attention products run on cblas_sgemm; the
 * element-wise work (norms, RoPE, softmax, SiLU) runs in OpenMP loops.  BLAS is
 * never called from inside an OpenMP parallel region. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "spruce_model.h"

/* Loops with fewer elements than this run on the calling thread: waking the
 * team costs more than the work. */
#define PAR_MIN 32768L

struct spruce_model {
    spruce_config cfg;
    spruce_ckpt *ck;
    float *embed;             /* (vocab, hidden) */
    float *norm;              /* (hidden) */
    float *head;              /* (vocab, hidden); == embed when tied */
    spruce_block **cache;     /* nlayers cached blocks, or NULL */
};

struct spruce_fwd_ws {
    int max_T, max_seq, hidden, qdim, kvdim, inter, half, nthreads;
    float *a;     /* (T, hidden)  normed input */
    float *q;     /* (T, qdim) */
    float *k;     /* (T, kvdim) */
    float *v;     /* (T, kvdim) */
    float *kt;    /* (nseq, KV, head_dim, T) transposed k (row path) */
    float *vt;    /* (nseq, KV, head_dim, T) transposed v (row path) */
    float *att;   /* (T, qdim)    attention output, input of o */
    float *S;     /* (T, T) scores of one head (BLAS path), or (nthreads, T) rows */
    float *h;     /* (T, hidden)  residual stream */
    float *t;     /* (T, hidden)  linear output */
    float *g;     /* (T, inter) */
    float *u;     /* (T, inter) */
    float *cos;   /* (max_T, half) */
    float *sin;   /* (max_T, half) */
};

static const char *const lin_paths[SPRUCE_NPROJ] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};

const char *spruce_proj_path(spruce_proj l)
{
    return (l >= 0 && l < SPRUCE_NPROJ) ? lin_paths[l] : "?";
}

void spruce_proj_name(int layer, spruce_proj l, int bias, char *buf, size_t size)
{
    snprintf(buf, size, "model.layers.%d.%s.%s", layer, spruce_proj_path(l),
             bias ? "bias" : "weight");
}

spruce_site spruce_proj_site(spruce_proj l)
{
    switch (l) {
    case SPRUCE_PROJ_Q: case SPRUCE_PROJ_K: case SPRUCE_PROJ_V: return SPRUCE_SITE_QKV;
    case SPRUCE_PROJ_O: return SPRUCE_SITE_O;
    case SPRUCE_PROJ_GATE: case SPRUCE_PROJ_UP: return SPRUCE_SITE_GATEUP;
    default: return SPRUCE_SITE_DOWN;
    }
}

/* Shape of linear l: (rows, cols). */
static void lin_shape(const spruce_config *c, spruce_proj l, int *rows, int *cols)
{
    int qd = c->num_attention_heads * c->head_dim, kvd = c->num_key_value_heads * c->head_dim;
    switch (l) {
    case SPRUCE_PROJ_Q: *rows = qd; *cols = c->hidden_size; break;
    case SPRUCE_PROJ_K: case SPRUCE_PROJ_V: *rows = kvd; *cols = c->hidden_size; break;
    case SPRUCE_PROJ_O: *rows = c->hidden_size; *cols = qd; break;
    case SPRUCE_PROJ_GATE: case SPRUCE_PROJ_UP: *rows = c->intermediate_size; *cols = c->hidden_size; break;
    default: *rows = c->hidden_size; *cols = c->intermediate_size; break;
    }
}

static int lin_has_bias(const spruce_config *c, spruce_proj l)
{
    if (l <= SPRUCE_PROJ_V)
        return c->qkv_bias;
    if (l == SPRUCE_PROJ_O)
        return c->o_bias;
    return c->mlp_bias;
}

/* ---- workspace ------------------------------------------------------------ */

int spruce_fwd_chunk(int T)
{
    return T >= SPRUCE_FWD_TOKENS ? 1 : SPRUCE_FWD_TOKENS / (T > 0 ? T : 1);
}

spruce_fwd_ws *spruce_fwd_ws_alloc(const spruce_config *c, int max_T, int max_seq)
{
    spruce_fwd_ws *ws;
    size_t T, ST;
    int p, i;
    if (!c || max_T <= 0 || max_seq <= 0)
        return NULL;
    ws = calloc(1, sizeof *ws);
    if (!ws)
        return NULL;
    ST = (size_t)max_T;
    T = ST * (size_t)max_seq;     /* tokens of a chunk */
    ws->max_T = max_T;
    ws->max_seq = max_seq;
#ifdef _OPENMP
    ws->nthreads = omp_get_max_threads();
#else
    ws->nthreads = 1;
#endif
    ws->hidden = c->hidden_size;
    ws->qdim = c->num_attention_heads * c->head_dim;
    ws->kvdim = c->num_key_value_heads * c->head_dim;
    ws->inter = c->intermediate_size;
    ws->half = c->head_dim / 2;
    ws->a = malloc(T * ws->hidden * sizeof(float));
    ws->q = malloc(T * ws->qdim * sizeof(float));
    ws->k = malloc(T * ws->kvdim * sizeof(float));
    ws->v = malloc(T * ws->kvdim * sizeof(float));
    ws->kt = malloc((ST + 7) / 8 * 8 * max_seq * ws->kvdim * sizeof(float));
    ws->vt = malloc((ST + 7) / 8 * 8 * max_seq * ws->kvdim * sizeof(float));
    ws->att = malloc(T * ws->qdim * sizeof(float));
    ws->S = malloc((ST > (size_t)ws->nthreads ? ST : (size_t)ws->nthreads) * (ST + 8) *
                   sizeof(float));
    ws->h = malloc(T * ws->hidden * sizeof(float));
    ws->t = malloc(T * ws->hidden * sizeof(float));
    ws->g = malloc(T * ws->inter * sizeof(float));
    ws->u = malloc(T * ws->inter * sizeof(float));
    ws->cos = malloc(ST * ws->half * sizeof(float));
    ws->sin = malloc(ST * ws->half * sizeof(float));
    if (!ws->a || !ws->q || !ws->k || !ws->v || !ws->kt || !ws->vt || !ws->att || !ws->S || !ws->h || !ws->t ||
        !ws->g || !ws->u || !ws->cos || !ws->sin) {
        spruce_fwd_ws_free(ws);
        return NULL;
    }
    /* inv_freq_i = theta^(-2i/d) in float32, angle = pos * inv_freq as
     * transformers computes them. */
    for (i = 0; i < ws->half; i++) {
        float inv = (float)(1.0 / pow(c->rope_theta, (double)(2 * i) / (double)c->head_dim));
        for (p = 0; p < max_T; p++) {
            float ang = (float)p * inv;
            ws->cos[(size_t)p * ws->half + i] = (float)cos((double)ang);
            ws->sin[(size_t)p * ws->half + i] = (float)sin((double)ang);
        }
    }
    return ws;
}

void spruce_fwd_ws_free(spruce_fwd_ws *ws)
{
    if (!ws)
        return;
    free(ws->a); free(ws->q); free(ws->k); free(ws->v); free(ws->kt); free(ws->vt); free(ws->att); free(ws->S);
    free(ws->h); free(ws->t); free(ws->g); free(ws->u); free(ws->cos); free(ws->sin);
    free(ws);
}

/* ---- pieces of the forward ------------------------------------------------ */

/* y[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w;  x, y are (T, n). */
static void rmsnorm(float *y, const float *x, const float *w, int T, int n, double eps)
{
    int t;
#pragma omp parallel for schedule(static) if ((long)T * n >= PAR_MIN)
    for (t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * n;
        float *yr = y + (size_t)t * n;
        double ss = 0;
        float r;
        int j;
        for (j = 0; j < n; j++)
            ss += (double)xr[j] * xr[j];
        r = (float)(1.0 / sqrt(ss / n + eps));
        for (j = 0; j < n; j++)
            yr[j] = w[j] * (xr[j] * r);
    }
}

/* Y (T, rows) = X (T, cols) W^T + b, W (rows, cols) row-major. */
static void linear(float *Y, const float *X, const float *W, const float *b, int T, int rows,
                   int cols)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, rows, cols, 1.0f, X, cols, W, cols,
                0.0f, Y, rows);
    if (b) {
        int t;
#pragma omp parallel for schedule(static) if ((long)T * rows >= PAR_MIN)
        for (t = 0; t < T; t++) {
            float *yr = Y + (size_t)t * rows;
            int j;
            for (j = 0; j < rows; j++)
                yr[j] += b[j];
        }
    }
}

/* Rotate-half RoPE in place on x (nseq * T, nheads * d), token t at position
 * t % T: for i < d/2,
 * (x_i, x_{i+d/2}) -> (x_i cos - x_{i+d/2} sin, x_{i+d/2} cos + x_i sin). */
static void rope(float *x, int ntok, int T, int nheads, int d, const float *cs, const float *sn)
{
    int t, half = d / 2;
#pragma omp parallel for schedule(static) if ((long)ntok * nheads * d >= PAR_MIN)
    for (t = 0; t < ntok; t++) {
        const float *c = cs + (size_t)(t % T) * half, *s = sn + (size_t)(t % T) * half;
        int h, i;
        for (h = 0; h < nheads; h++) {
            float *xh = x + (size_t)t * nheads * d + (size_t)h * d;
            for (i = 0; i < half; i++) {
                float a = xh[i], b = xh[i + half];
                xh[i] = a * c[i] - b * s[i];
                xh[i + half] = b * c[i] + a * s[i];
            }
        }
    }
}

/* e^x for x <= 0 (softmax arguments), branch-free so that loops over it
 * vectorise: x = k ln2 + r, |r| <= ln2/2, e^r by a degree-6 polynomial,
 * 2^k through the exponent bits.  Relative error below 3e-7; results below
 * 2^-126 are returned as 0.  x must be > -2^31 ln2. */
#pragma omp declare simd notinbranch
static inline float exp_neg(float x)
{
    float k, r, p, s;
    int32_t ki = (int32_t)(x * 1.44269504f - 0.5f), bits; /* round(x / ln2), x <= 0 */
    k = (float)ki;
    r = x - k * 0.693145752f;
    r = r - k * 1.42860677e-6f;
    p = 1.0f + r * (1.0f + r * (0.5f + r * (0.166666672f + r * (0.0416666418f +
        r * (0.00833336823f + r * 0.00138925819f)))));
    bits = ki < -126 ? 0 : (ki + 127) << 23;
    memcpy(&s, &bits, sizeof s);
    return p * s;
}

/* Causal softmax over the rows of S (T, T): row i keeps columns 0..i. */
static void causal_softmax(float *S, int T)
{
    int i;
#pragma omp parallel for schedule(dynamic, 16) if ((long)T * T >= PAR_MIN)
    for (i = 0; i < T; i++) {
        float *r = S + (size_t)i * T, mx = r[0], inv;
        double sum = 0;
        int j;
        for (j = 1; j <= i; j++)
            if (r[j] > mx)
                mx = r[j];
#pragma omp simd
        for (j = 0; j <= i; j++)
            r[j] = exp_neg(r[j] - mx);
        for (j = 0; j <= i; j++)
            sum += r[j];
        inv = (float)(1.0 / sum);
        for (j = 0; j <= i; j++)
            r[j] *= inv;
        for (j = i + 1; j < T; j++)
            r[j] = 0.0f;
    }
}

/* Attention on BLAS: per sequence and head, two matrix products
 * (the masked upper half of S is computed and discarded). */
static void attention_blas(const spruce_config *c, spruce_fwd_ws *ws, int nseq, int T)
{
    int H = c->num_attention_heads, KV = c->num_key_value_heads, d = c->head_dim;
    int per = H / KV, h, s;
    float scale = (float)(1.0 / sqrt((double)d));
    for (s = 0; s < nseq; s++) {
        const float *q = ws->q + (size_t)s * T * H * d;
        const float *k = ws->k + (size_t)s * T * KV * d;
        const float *v = ws->v + (size_t)s * T * KV * d;
        float *att = ws->att + (size_t)s * T * H * d;
        for (h = 0; h < H; h++) {
            int g = h / per;
            /* S (T, T) = scale * q_h (T, d) k_g^T (d, T) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, d, scale,
                        q + (size_t)h * d, H * d, k + (size_t)g * d, KV * d, 0.0f, ws->S, T);
            causal_softmax(ws->S, T);
            /* att_h (T, d) = S (T, T) v_g (T, d) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, d, T, 1.0f, ws->S, T,
                        v + (size_t)g * d, KV * d, 0.0f, att + (size_t)h * d, H * d);
        }
    }
}

/* Attention row by row on OpenMP threads: for small heads, where many small
 * matrix products would cost more in BLAS calls than in arithmetic.  K and V
 * are first transposed per sequence and kv head to kt, vt (d, T) so that the
 * inner loops run over contiguous keys. */
static void attention_rows(const spruce_config *c, spruce_fwd_ws *ws, int nseq, int T)
{
    int H = c->num_attention_heads, KV = c->num_key_value_heads, d = c->head_dim;
    int per = H / KV, Tp = (T + 7) / 8 * 8;
    long nrows = (long)nseq * H * T, r, nkv = (long)nseq * KV;
    float scale = (float)(1.0 / sqrt((double)d));
    /* kt[(s*KV + g)*d*Tp + e*Tp + j] = k[(s*T + j)*KV*d + g*d + e], zero for j >= T */
#pragma omp parallel for schedule(static) if (nkv * d * T >= PAR_MIN)
    for (r = 0; r < nkv; r++) {
        int s = (int)(r / KV), g = (int)(r % KV), j, e;
        float *kt = ws->kt + (size_t)r * d * Tp, *vt = ws->vt + (size_t)r * d * Tp;
        for (j = T; j < Tp; j++)
            for (e = 0; e < d; e++)
                kt[(size_t)e * Tp + j] = vt[(size_t)e * Tp + j] = 0.0f;
        for (j = 0; j < T; j++) {
            const float *kj = ws->k + ((size_t)s * T + j) * KV * d + (size_t)g * d;
            const float *vj = ws->v + ((size_t)s * T + j) * KV * d + (size_t)g * d;
            for (e = 0; e < d; e++) {
                kt[(size_t)e * Tp + j] = kj[e];
                vt[(size_t)e * Tp + j] = vj[e];
            }
        }
    }
#pragma omp parallel for schedule(dynamic, 32) if (nrows * T * d >= PAR_MIN) num_threads(ws->nthreads)
    for (r = 0; r < nrows; r++) {
        int i = (int)(r % T), h = (int)((r / T) % H), s = (int)(r / ((long)T * H)), g = h / per;
        int tid = 0, j, e, len = i + 1;
        const float *qi = ws->q + ((size_t)s * T + i) * H * d + (size_t)h * d;
        const float *kt = ws->kt + ((size_t)s * KV + g) * d * Tp;
        const float *vt = ws->vt + ((size_t)s * KV + g) * d * Tp;
        float *out = ws->att + ((size_t)s * T + i) * H * d + (size_t)h * d;
        float *p, mx = -INFINITY, inv, sum = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        p = ws->S + (size_t)tid * (ws->max_T + 8);
        /* p[j] = scale q_i . k_j, eight keys at a time (kt rows are padded to Tp) */
        for (j = 0; j < len; j += 8) {
            float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            int jj, nj = len - j < 8 ? len - j : 8;
            for (e = 0; e < d; e++) {
                const float *ke = kt + (size_t)e * Tp + j;
                float qe = qi[e] * scale;
#pragma omp simd
                for (jj = 0; jj < 8; jj++)
                    acc[jj] += qe * ke[jj];
            }
            for (jj = 0; jj < nj; jj++) {
                p[j + jj] = acc[jj];
                mx = acc[jj] > mx ? acc[jj] : mx;
            }
        }
#pragma omp simd
        for (j = 0; j < len; j++)
            p[j] = exp_neg(p[j] - mx);
#pragma omp simd reduction(+:sum)
        for (j = 0; j < len; j++)
            sum += p[j];
        inv = 1.0f / sum;
        for (e = 0; e < d; e++) {
            const float *ve = vt + (size_t)e * Tp;
            float acc = 0;
#pragma omp simd reduction(+:acc)
            for (j = 0; j < len; j++)
                acc += p[j] * ve[j];
            out[e] = acc * inv;
        }
    }
}

/* y += x, both n floats. */
static void add_inplace(float *y, const float *x, size_t n)
{
    long i, nn = (long)n;
#pragma omp parallel for schedule(static) if (nn >= PAR_MIN)
    for (i = 0; i < nn; i++)
        y[i] += x[i];
}

/* g = silu(g) * u, n floats. */
static void swiglu(float *g, const float *u, size_t n)
{
    long i, nn = (long)n;
#pragma omp parallel for schedule(static) if (nn >= PAR_MIN)
    for (i = 0; i < nn; i++) {
        float x = g[i];
        g[i] = x / (1.0f + expf(-x)) * u[i];
    }
}

/* Small heads go row by row, large ones through BLAS. */
static int attention_uses_blas(const spruce_config *c, int T)
{
    const char *e = getenv("SPRUCE_ATTENTION");
    if (e && !strcmp(e, "rows"))
        return 0;
    if (e && !strcmp(e, "blas"))
        return 1;
    return c->head_dim >= 32 && T >= 64;
}

int spruce_block_forward(const spruce_config *c, const spruce_block *b, float *x, int nseq,
                         int T, spruce_fwd_ws *ws, spruce_tap_fn tap, void *ctx, int stop_after)
{
    int rc, hid, ntok;
    size_t n;
    if (!c || !b || !x || !ws)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_block_forward: NULL argument");
    if (T <= 0 || T > ws->max_T || nseq <= 0 || nseq > ws->max_seq)
        return spruce__seterr(SPRUCE_EINVAL, "block forward: %d sequences of %d tokens, "
                              "workspace holds %d of %d", nseq, T, ws->max_seq, ws->max_T);
    if (ws->hidden != c->hidden_size || ws->inter != c->intermediate_size ||
        ws->qdim != c->num_attention_heads * c->head_dim)
        return spruce__seterr(SPRUCE_EINVAL, "block forward: workspace made for another config");
    if (c->sliding_window > 0 && T > c->sliding_window)
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "sequence of %d tokens is longer than the "
                              "sliding window %d (supported: sequences within the window)", T,
                              c->sliding_window);
    hid = c->hidden_size;
    ntok = nseq * T;
    n = (size_t)ntok * hid;

    /* attention */
    rmsnorm(ws->a, x, b->attn_norm, ntok, hid, c->rms_norm_eps);
    if (tap && (rc = tap(ctx, SPRUCE_SITE_QKV, ws->a, ntok, hid)))
        return rc;
    if (stop_after == SPRUCE_SITE_QKV)
        return 0;
    linear(ws->q, ws->a, b->w[SPRUCE_PROJ_Q], b->b[SPRUCE_PROJ_Q], ntok, ws->qdim, hid);
    linear(ws->k, ws->a, b->w[SPRUCE_PROJ_K], b->b[SPRUCE_PROJ_K], ntok, ws->kvdim, hid);
    linear(ws->v, ws->a, b->w[SPRUCE_PROJ_V], b->b[SPRUCE_PROJ_V], ntok, ws->kvdim, hid);
    rope(ws->q, ntok, T, c->num_attention_heads, c->head_dim, ws->cos, ws->sin);
    rope(ws->k, ntok, T, c->num_key_value_heads, c->head_dim, ws->cos, ws->sin);
    if (attention_uses_blas(c, T))
        attention_blas(c, ws, nseq, T);
    else
        attention_rows(c, ws, nseq, T);
    if (tap && (rc = tap(ctx, SPRUCE_SITE_O, ws->att, ntok, ws->qdim)))
        return rc;
    if (stop_after == SPRUCE_SITE_O)
        return 0;
    linear(ws->t, ws->att, b->w[SPRUCE_PROJ_O], b->b[SPRUCE_PROJ_O], ntok, hid, ws->qdim);
    memcpy(ws->h, x, n * sizeof(float));
    add_inplace(ws->h, ws->t, n);

    /* MLP */
    rmsnorm(ws->a, ws->h, b->mlp_norm, ntok, hid, c->rms_norm_eps);
    if (tap && (rc = tap(ctx, SPRUCE_SITE_GATEUP, ws->a, ntok, hid)))
        return rc;
    if (stop_after == SPRUCE_SITE_GATEUP)
        return 0;
    linear(ws->g, ws->a, b->w[SPRUCE_PROJ_GATE], b->b[SPRUCE_PROJ_GATE], ntok, ws->inter, hid);
    linear(ws->u, ws->a, b->w[SPRUCE_PROJ_UP], b->b[SPRUCE_PROJ_UP], ntok, ws->inter, hid);
    swiglu(ws->g, ws->u, (size_t)ntok * ws->inter);
    if (tap && (rc = tap(ctx, SPRUCE_SITE_DOWN, ws->g, ntok, ws->inter)))
        return rc;
    if (stop_after == SPRUCE_SITE_DOWN)
        return 0;
    linear(ws->t, ws->g, b->w[SPRUCE_PROJ_DOWN], b->b[SPRUCE_PROJ_DOWN], ntok, hid, ws->inter);
    add_inplace(ws->h, ws->t, n);
    memcpy(x, ws->h, n * sizeof(float));
    return 0;
}

/* ---- reading tensors ------------------------------------------------------- */

/* Find name and check its shape is (d0) or (d0, d1) (d1 < 0: one dimension). */
static int find_checked(const spruce_ckpt *ck, const char *name, int64_t d0, int64_t d1,
                        const spruce_tensor **out)
{
    const spruce_tensor *t = spruce_ckpt_find(ck, name);
    int want = d1 < 0 ? 1 : 2;
    *out = NULL;
    if (!t)
        return spruce__seterr(SPRUCE_ENOTFOUND, "checkpoint %s: tensor %s is missing",
                              spruce_ckpt_dir(ck), name);
    if (t->ndim != want || t->shape[0] != d0 || (want == 2 && t->shape[1] != d1)) {
        char found[96] = "(";
        int i;
        for (i = 0; i < t->ndim && i < 4; i++)
            snprintf(found + strlen(found), sizeof found - strlen(found), "%s%lld",
                     i ? ", " : "", (long long)t->shape[i]);
        strncat(found, ")", sizeof found - strlen(found) - 1);
        if (want == 1)
            return spruce__seterr(SPRUCE_ESHAPE, "file %s: tensor %s: expected (%lld) from "
                                  "config.json, found %s", spruce_ckpt_file_of(ck, t), name,
                                  (long long)d0, found);
        return spruce__seterr(SPRUCE_ESHAPE, "file %s: tensor %s: expected (%lld, %lld) from "
                              "config.json, found %s", spruce_ckpt_file_of(ck, t), name,
                              (long long)d0, (long long)d1, found);
    }
    if (t->dtype != SPRUCE_DTYPE_F32 && t->dtype != SPRUCE_DTYPE_F16 &&
        t->dtype != SPRUCE_DTYPE_BF16)
        return spruce__seterr(SPRUCE_EDTYPE, "file %s: tensor %s: dtype %s (supported: F32, "
                              "F16, BF16)", spruce_ckpt_file_of(ck, t), name, t->dtype_name);
    *out = t;
    return 0;
}

/* A float32 copy of t, checked for NaN/Inf. */
static int read_tensor(const spruce_ckpt *ck, const spruce_tensor *t, float **out)
{
    int64_t n = spruce_tensor_numel(t), i, bad = -1;
    float *p;
    int rc;
    *out = NULL;
    p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!p)
        return spruce__seterr(SPRUCE_ENOMEM, "file %s: tensor %s: %lld floats",
                              spruce_ckpt_file_of(ck, t), t->name, (long long)n);
    if ((rc = spruce_tensor_read_f32(t, p))) {
        free(p);
        return rc;
    }
    for (i = 0; i < n; i++)
        if (!isfinite(p[i])) {
            bad = i;
            break;
        }
    if (bad >= 0) {
        int64_t cols = t->ndim == 2 ? t->shape[1] : n;
        free(p);
        return spruce__seterr(SPRUCE_ENAN, "file %s: tensor %s: non-finite value at row %lld, "
                              "column %lld", spruce_ckpt_file_of(ck, t), t->name,
                              (long long)(bad / cols), (long long)(bad % cols));
    }
    *out = p;
    return 0;
}

static int load_named(const spruce_ckpt *ck, const char *name, int64_t d0, int64_t d1,
                      float **out)
{
    const spruce_tensor *t;
    int rc = find_checked(ck, name, d0, d1, &t);
    if (rc)
        return rc;
    return read_tensor(ck, t, out);
}

static void block_free(spruce_block *b)
{
    int l;
    if (!b)
        return;
    free(b->attn_norm);
    free(b->mlp_norm);
    for (l = 0; l < SPRUCE_NPROJ; l++) {
        free(b->w[l]);
        free(b->b[l]);
    }
    free(b);
}

static int block_read(const spruce_model *m, int layer, spruce_block **out)
{
    const spruce_config *c = &m->cfg;
    spruce_block *b;
    char name[256];
    int l, rc;
    *out = NULL;
    b = calloc(1, sizeof *b);
    if (!b)
        return spruce__seterr(SPRUCE_ENOMEM, "block %d", layer);
    b->layer = layer;
    snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", layer);
    if ((rc = load_named(m->ck, name, c->hidden_size, -1, &b->attn_norm)))
        goto done;
    snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", layer);
    if ((rc = load_named(m->ck, name, c->hidden_size, -1, &b->mlp_norm)))
        goto done;
    for (l = 0; l < SPRUCE_NPROJ; l++) {
        lin_shape(c, (spruce_proj)l, &b->rows[l], &b->cols[l]);
        spruce_proj_name(layer, (spruce_proj)l, 0, name, sizeof name);
        if ((rc = load_named(m->ck, name, b->rows[l], b->cols[l], &b->w[l])))
            goto done;
        if (lin_has_bias(c, (spruce_proj)l)) {
            spruce_proj_name(layer, (spruce_proj)l, 1, name, sizeof name);
            if ((rc = load_named(m->ck, name, b->rows[l], -1, &b->b[l])))
                goto done;
        }
    }
    *out = b;
    return 0;
done:
    block_free(b);
    return rc;
}

/* ---- the model --------------------------------------------------------------- */

int spruce_model_open(const char *dir, spruce_model **out)
{
    spruce_model *m = NULL;
    const spruce_config *c;
    const spruce_tensor *t;
    char name[256];
    int rc, layer, l;
    if (!dir || !out)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_model_open: NULL argument");
    *out = NULL;
    m = calloc(1, sizeof *m);
    if (!m)
        return spruce__seterr(SPRUCE_ENOMEM, "model %s", dir);
    if ((rc = spruce_config_load(dir, &m->cfg)))
        goto done;
    c = &m->cfg;
    if ((rc = spruce_ckpt_open(dir, &m->ck)))
        goto done;
    /* Every tensor the forward reads, with the shape the config implies. */
    for (layer = 0; layer < c->num_hidden_layers; layer++) {
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", layer);
        if ((rc = find_checked(m->ck, name, c->hidden_size, -1, &t)))
            goto done;
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", layer);
        if ((rc = find_checked(m->ck, name, c->hidden_size, -1, &t)))
            goto done;
        for (l = 0; l < SPRUCE_NPROJ; l++) {
            int rows, cols;
            lin_shape(c, (spruce_proj)l, &rows, &cols);
            spruce_proj_name(layer, (spruce_proj)l, 0, name, sizeof name);
            if ((rc = find_checked(m->ck, name, rows, cols, &t)))
                goto done;
            if (lin_has_bias(c, (spruce_proj)l)) {
                spruce_proj_name(layer, (spruce_proj)l, 1, name, sizeof name);
                if ((rc = find_checked(m->ck, name, rows, -1, &t)))
                    goto done;
            }
        }
    }
    if ((rc = load_named(m->ck, "model.embed_tokens.weight", c->vocab_size, c->hidden_size,
                         &m->embed)) ||
        (rc = load_named(m->ck, "model.norm.weight", c->hidden_size, -1, &m->norm)))
        goto done;
    if (c->tie_word_embeddings) {
        m->head = m->embed;
    } else if (!spruce_ckpt_find(m->ck, "lm_head.weight")) {
        rc = spruce__seterr(SPRUCE_ENOTFOUND, "checkpoint %s: tensor lm_head.weight is missing "
                            "and config.json does not set tie_word_embeddings", dir);
        goto done;
    } else if ((rc = load_named(m->ck, "lm_head.weight", c->vocab_size, c->hidden_size,
                                &m->head))) {
        goto done;
    }
    *out = m;
    return 0;
done:
    spruce_model_free(m);
    return rc;
}

void spruce_model_free(spruce_model *m)
{
    int i;
    if (!m)
        return;
    if (m->cache) {
        for (i = 0; i < m->cfg.num_hidden_layers; i++)
            block_free(m->cache[i]);
        free(m->cache);
    }
    if (m->head != m->embed)
        free(m->head);
    free(m->embed);
    free(m->norm);
    spruce_ckpt_close(m->ck);
    free(m);
}

const spruce_config *spruce_model_config(const spruce_model *m)
{
    return m ? &m->cfg : NULL;
}

const spruce_ckpt *spruce_model_ckpt(const spruce_model *m)
{
    return m ? m->ck : NULL;
}

int spruce_model_cache_blocks(spruce_model *m)
{
    int i, rc, L;
    if (!m)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_model_cache_blocks: NULL model");
    if (m->cache)
        return 0;
    L = m->cfg.num_hidden_layers;
    m->cache = calloc((size_t)L, sizeof *m->cache);
    if (!m->cache)
        return spruce__seterr(SPRUCE_ENOMEM, "block cache");
    for (i = 0; i < L; i++)
        if ((rc = block_read(m, i, &m->cache[i]))) {
            int j;
            for (j = 0; j < i; j++)
                block_free(m->cache[j]);
            free(m->cache);
            m->cache = NULL;
            return rc;
        }
    return 0;
}

int spruce_model_get_block(spruce_model *m, int layer, spruce_block **out)
{
    if (!m || !out)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_model_get_block: NULL argument");
    *out = NULL;
    if (layer < 0 || layer >= m->cfg.num_hidden_layers)
        return spruce__seterr(SPRUCE_EINVAL, "block %d: the model has %d blocks", layer,
                              m->cfg.num_hidden_layers);
    if (m->cache) {
        *out = m->cache[layer];
        return 0;
    }
    return block_read(m, layer, out);
}

void spruce_model_put_block(spruce_model *m, spruce_block *b)
{
    if (!b)
        return;
    if (m && m->cache && b->layer >= 0 && b->layer < m->cfg.num_hidden_layers &&
        m->cache[b->layer] == b)
        return;
    block_free(b);
}

int spruce_model_embed(const spruce_model *m, const uint32_t *ids, int T, float *x)
{
    int t, hid;
    if (!m || !ids || !x)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_model_embed: NULL argument");
    hid = m->cfg.hidden_size;
    for (t = 0; t < T; t++) {
        if (ids[t] >= (uint32_t)m->cfg.vocab_size)
            return spruce__seterr(SPRUCE_EINVAL, "token %u at position %d is outside the "
                                  "vocabulary of %d", ids[t], t, m->cfg.vocab_size);
        memcpy(x + (size_t)t * hid, m->embed + (size_t)ids[t] * hid, (size_t)hid * sizeof(float));
    }
    return 0;
}

/* Run every block over nseq sequences x (nseq, T, hidden) in place. */
static int run_blocks(spruce_model *m, float *x, int nseq, int T, spruce_block_progress_fn progress,
                      void *ctx)
{
    const spruce_config *c = &m->cfg;
    int chunk = spruce_fwd_chunk(T) < nseq ? spruce_fwd_chunk(T) : nseq;
    spruce_fwd_ws *ws = spruce_fwd_ws_alloc(c, T, chunk);
    spruce_block *b = NULL;
    int rc = 0, layer, s;
    if (!ws)
        return spruce__seterr(SPRUCE_ENOMEM, "forward workspace for %d x %d tokens", chunk, T);
    for (layer = 0; layer < c->num_hidden_layers; layer++) {
        if ((rc = spruce_model_get_block(m, layer, &b)))
            goto done;
        for (s = 0; s < nseq; s += chunk) {
            int ns = nseq - s < chunk ? nseq - s : chunk;
            if ((rc = spruce_block_forward(c, b, x + (size_t)s * T * c->hidden_size, ns, T, ws,
                                           NULL, NULL, -1)))
                goto done;
        }
        spruce_model_put_block(m, b);
        b = NULL;
        if (progress)
            progress(ctx, layer, c->num_hidden_layers);
    }
done:
    spruce_model_put_block(m, b);
    spruce_fwd_ws_free(ws);
    return rc;
}

/* logits (T, vocab) = rmsnorm(x) * norm head^T; xn is (T, hidden) scratch. */
static void head_logits(const spruce_model *m, const float *x, float *xn, int T, float *logits)
{
    const spruce_config *c = &m->cfg;
    rmsnorm(xn, x, m->norm, T, c->hidden_size, c->rms_norm_eps);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, c->vocab_size, c->hidden_size, 1.0f,
                xn, c->hidden_size, m->head, c->hidden_size, 0.0f, logits, c->vocab_size);
}

void spruce_model_head(const spruce_model *m, const float *x, int T, float *xn, float *logits)
{
    head_logits(m, x, xn, T, logits);
}

int spruce_model_forward(spruce_model *m, const uint32_t *ids, int T, float *logits)
{
    float *x = NULL, *xn = NULL;
    int rc;
    if (!m || !ids || !logits || T <= 0)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_model_forward: bad argument");
    x = malloc((size_t)T * m->cfg.hidden_size * sizeof(float));
    xn = malloc((size_t)T * m->cfg.hidden_size * sizeof(float));
    if (!x || !xn) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "forward of %d tokens", T);
        goto done;
    }
    if ((rc = spruce_model_embed(m, ids, T, x)) || (rc = run_blocks(m, x, 1, T, NULL, NULL)))
        goto done;
    head_logits(m, x, xn, T, logits);
done:
    free(x);
    free(xn);
    return rc;
}

/* Sum over rows t of logsumexp(logits[t]) - logits[t][target[t]]. */
static double nll_sum(const float *logits, const uint32_t *target, int rows, int vocab)
{
    double total = 0;
    int t;
#pragma omp parallel for schedule(static) reduction(+:total) if ((long)rows * vocab >= PAR_MIN)
    for (t = 0; t < rows; t++) {
        const float *r = logits + (size_t)t * vocab;
        float mx = r[0];
        double s = 0;
        int j;
        for (j = 1; j < vocab; j++)
            if (r[j] > mx)
                mx = r[j];
        for (j = 0; j < vocab; j++)
            s += exp((double)r[j] - mx);
        total += log(s) + mx - r[target[t]];
    }
    return total;
}

#define HEAD_CHUNK 256
/* Activations kept at once by the perplexity evaluation: windows beyond this
 * are evaluated in further passes over the blocks (SPRUCE_EVAL_ACT_MIB
 * overrides it). */
#define EVAL_ACT_BYTES ((size_t)2 << 30)

int spruce_model_perplexity(spruce_model *m, const uint32_t *ids, size_t n, int seqlen,
                            spruce_block_progress_fn progress, void *ctx, double *ppl,
                            int *nwin_out)
{
    const spruce_config *c;
    float *x = NULL, *xn = NULL, *logits = NULL;
    size_t nwin, w, w0, batch, per;
    double nll = 0;
    int rc = 0;
    if (!m || !ids || !ppl)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_model_perplexity: NULL argument");
    c = &m->cfg;
    if (seqlen < 2)
        return spruce__seterr(SPRUCE_EINVAL, "perplexity: seqlen %d, expected at least 2", seqlen);
    nwin = n / (size_t)seqlen;
    if (nwin == 0)
        return spruce__seterr(SPRUCE_EINVAL, "perplexity: %zu tokens are shorter than one window "
                              "of %d", n, seqlen);
    if (nwin > (size_t)1 << 30)
        return spruce__seterr(SPRUCE_EINVAL, "perplexity: too many windows");
    per = (size_t)seqlen * c->hidden_size * sizeof(float);
    batch = EVAL_ACT_BYTES / per;
    if (getenv("SPRUCE_EVAL_ACT_MIB"))   /* tuning and tests */
        batch = ((size_t)atol(getenv("SPRUCE_EVAL_ACT_MIB")) << 20) / per;
    if (batch < 1)
        batch = 1;
    if (batch > nwin)
        batch = nwin;
    x = malloc(batch * per);
    xn = malloc((size_t)HEAD_CHUNK * c->hidden_size * sizeof(float));
    logits = malloc((size_t)HEAD_CHUNK * c->vocab_size * sizeof(float));
    if (!x || !xn || !logits) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "perplexity: activations of %zu windows of %d tokens "
                            "(%zu MiB)", batch, seqlen, (batch * per) >> 20);
        goto done;
    }
    for (w0 = 0; w0 < nwin; w0 += batch) {
        size_t nb = nwin - w0 < batch ? nwin - w0 : batch;
        for (w = 0; w < nb; w++)
            if ((rc = spruce_model_embed(m, ids + (w0 + w) * seqlen, seqlen,
                                         x + w * seqlen * c->hidden_size)))
                goto done;
        if ((rc = run_blocks(m, x, (int)nb, seqlen, progress, ctx)))
            goto done;
        /* Window w predicts ids[w*T + t + 1] from position t, t < T - 1. */
        for (w = 0; w < nb; w++) {
            int t0;
            for (t0 = 0; t0 < seqlen - 1; t0 += HEAD_CHUNK) {
                int rows = seqlen - 1 - t0 < HEAD_CHUNK ? seqlen - 1 - t0 : HEAD_CHUNK;
                head_logits(m, x + (w * seqlen + t0) * c->hidden_size, xn, rows, logits);
                nll += nll_sum(logits, ids + (w0 + w) * seqlen + t0 + 1, rows, c->vocab_size);
            }
        }
    }
    *ppl = exp(nll / ((double)nwin * (seqlen - 1)));
    if (nwin_out)
        *nwin_out = (int)nwin;
done:
    free(x);
    free(xn);
    free(logits);
    return rc;
}
