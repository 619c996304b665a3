/* block.c: the maths of a LLaMA decoder block (block.h), shared by the full
 * forward and token-by-token decoding: RMSNorm (also per head of q and k,
 * modeling_qwen3.py: Qwen3Attention), rotate-half RoPE, causal
 * grouped-query attention (row by row, or on BLAS for large heads), the
 * SiLU-gated MLP's activation, and the block that strings them together
 * around the caller's linear layers (modeling_llama.py: LlamaDecoderLayer).
 * Gemma's variants (modeling_gemma2.py: Gemma2RMSNorm, Gemma2MLP,
 * eager_attention_forward, Gemma2DecoderLayer; modeling_gemma3.py) are
 * switches of the same functions: (1 + w) norm weights, gelu (tanh), the
 * scale, soft-cap and window of the attention, the norms of the branch
 * outputs.  So are OPT's (modeling_opt.py: OPTDecoderLayer): LayerNorm with
 * bias (opt.c), no RoPE, relu(fc1) without a gate, and the post-norm order
 * of do_layer_norm_before false. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "block.h"
#include "opt.h"
#include "spruce_family.h"

#define PAR_MIN SPRUCE__PAR_MIN

int spruce__max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int spruce__check_attention(spruce_attention a)
{
    if (a != SPRUCE_ATTENTION_AUTO && a != SPRUCE_ATTENTION_ROWS && a != SPRUCE_ATTENTION_BLAS)
        return spruce__seterr(SPRUCE_EINVAL, "attention %d (expected SPRUCE_ATTENTION_AUTO, "
                              "_ROWS or _BLAS)", (int)a);
    return 0;
}

/* ---- element-wise and per-row pieces --------------------------------------- */

/* yr = xr / rms(xr) * (w + off): off is 0, or 1 for Gemma's (1 + w) weights
 * (modeling_gemma2.py: Gemma2RMSNorm, float32 as there). */
static void rmsnorm_row(float *yr, const float *xr, const float *w, float off, int n,
                        double eps)
{
    double ss = 0;
    float r;
    int j;
    for (j = 0; j < n; j++)
        ss += (double)xr[j] * xr[j];
    r = (float)(1.0 / sqrt(ss / n + eps));
    for (j = 0; j < n; j++)
        yr[j] = (w[j] + off) * (xr[j] * r);
}

void spruce__rmsnorm_off(float *y, const float *x, const float *w, float off, int T, int n,
                         double eps)
{
    int t;
    if ((long)T * n < PAR_MIN) {
        for (t = 0; t < T; t++)
            rmsnorm_row(y + (size_t)t * n, x + (size_t)t * n, w, off, n, eps);
        return;
    }
#pragma omp parallel for schedule(static)
    for (t = 0; t < T; t++)
        rmsnorm_row(y + (size_t)t * n, x + (size_t)t * n, w, off, n, eps);
}

void spruce__rmsnorm(float *y, const float *x, const float *w, int T, int n, double eps)
{
    spruce__rmsnorm_off(y, x, w, 0.0f, T, n, eps);
}

static void add_row(float *y, const float *x, int n)
{
    int j;
    for (j = 0; j < n; j++)
        y[j] += x[j];
}

void spruce__add_bias(float *Y, const float *b, int T, int rows)
{
    int t;
    if ((long)T * rows < PAR_MIN) {
        for (t = 0; t < T; t++)
            add_row(Y + (size_t)t * rows, b, rows);
        return;
    }
#pragma omp parallel for schedule(static)
    for (t = 0; t < T; t++)
        add_row(Y + (size_t)t * rows, b, rows);
}

void spruce__add(float *y, const float *x, size_t n)
{
    long i, nn = (long)n;
    if (nn < PAR_MIN) {
        for (i = 0; i < nn; i++)
            y[i] += x[i];
        return;
    }
#pragma omp parallel for schedule(static)
    for (i = 0; i < nn; i++)
        y[i] += x[i];
}

static inline float silu_mul(float g, float u)
{
    return g / (1.0f + expf(-g)) * u;
}

void spruce__swiglu(float *g, const float *u, size_t n)
{
    long i, nn = (long)n;
    if (nn < PAR_MIN) {
        for (i = 0; i < nn; i++)
            g[i] = silu_mul(g[i], u[i]);
        return;
    }
#pragma omp parallel for schedule(static)
    for (i = 0; i < nn; i++)
        g[i] = silu_mul(g[i], u[i]);
}

/* tanh(x) in float32 as a 13/6 odd/even rational function on [-c, c],
 * c = 7.90531 (where the float tanh is 1 to within an ulp), x itself below
 * 4e-4 in magnitude; branch-free, so the loops below vectorize (tanhf does
 * not). Clamping by comparison keeps NaN (the comparisons are false), and
 * +-inf clamps to +-c, giving +-1. Max error against double tanh: see
 * tests/test_families (tanh_rational). */
static inline float tanh_rational(float x)
{
    const float c = 7.90531110763549805f;
    float y = x > c ? c : (x < -c ? -c : x);
    float y2 = y * y;
    float p = -2.76076847742355e-16f;
    p = p * y2 + 2.00018790482477e-13f;
    p = p * y2 + -8.60467152213735e-11f;
    p = p * y2 + 5.12229709037114e-08f;
    p = p * y2 + 1.48572235717979e-05f;
    p = p * y2 + 6.37261928875436e-04f;
    p = p * y2 + 4.89352455891786e-03f;
    p = p * y;
    float q = 1.19825839466702e-06f;
    q = q * y2 + 1.18534705686654e-04f;
    q = q * y2 + 2.26843463243900e-03f;
    q = q * y2 + 4.89352518554385e-03f;
    float r = p / q;
    return fabsf(x) < 0.0004f ? x : r;
}

static inline float gelu_tanh(float x)
{
    const float k = 0.7978845608028654f;   /* sqrt(2 / pi) */
    return 0.5f * x * (1.0f + tanh_rational(k * (x + 0.044715f * x * x * x)));
}

/* The loops below call the static inline versions: the exported functions
 * may be interposed in a shared library, so the compiler neither inlines
 * nor vectorizes a call to them (a call per element made gemma's MLP and
 * soft-capped attention some 10% slower than llama's). */
float spruce__tanhf(float x)
{
    return tanh_rational(x);
}

float spruce__gelu_tanh(float x)
{
    return gelu_tanh(x);
}

static void softcap_range(float *x, long n, float cap)
{
    long i;
#pragma omp simd
    for (i = 0; i < n; i++)
        x[i] = tanh_rational(x[i] / cap) * cap;
}

void spruce__softcap(float *x, size_t n, float cap)
{
    long i, nn = (long)n;
    if (nn < PAR_MIN) {
        softcap_range(x, nn, cap);
        return;
    }
#pragma omp parallel for simd schedule(static)
    for (i = 0; i < nn; i++)
        x[i] = tanh_rational(x[i] / cap) * cap;
}

void spruce__geglu(float *g, const float *u, size_t n)
{
    long i, nn = (long)n;
    if (nn < PAR_MIN) {
#pragma omp simd
        for (i = 0; i < nn; i++)
            g[i] = gelu_tanh(g[i]) * u[i];
        return;
    }
#pragma omp parallel for simd schedule(static)
    for (i = 0; i < nn; i++)
        g[i] = gelu_tanh(g[i]) * u[i];
}

/* ---- rotary embeddings ------------------------------------------------------ */

/* Each head's first rd dims rotate (rotate-half within them), the rest of
 * its d pass through; c, s hold rd / 2 values. */
static void rope_token(float *xt, int nheads, int d, int rd, const float *c, const float *s)
{
    int h, i, half = rd / 2;
    for (h = 0; h < nheads; h++) {
        float *xh = xt + (size_t)h * d;
        for (i = 0; i < half; i++) {
            float a = xh[i], b = xh[i + half];
            xh[i] = a * c[i] - b * s[i];
            xh[i + half] = b * c[i] + a * s[i];
        }
    }
}

void spruce__rope(float *x, int ntok, int T, int pos0, int nheads, int d, int rd,
                  const float *cs, const float *sn)
{
    size_t half = (size_t)d / 2, width = (size_t)nheads * d;   /* table rows: d / 2 */
    int t;
    if ((long)ntok * nheads * d < PAR_MIN) {
        for (t = 0; t < ntok; t++) {
            size_t p = (size_t)pos0 + (size_t)(t % T);
            rope_token(x + (size_t)t * width, nheads, d, rd, cs + p * half, sn + p * half);
        }
        return;
    }
#pragma omp parallel for schedule(static)
    for (t = 0; t < ntok; t++) {
        size_t p = (size_t)pos0 + (size_t)(t % T);
        rope_token(x + (size_t)t * width, nheads, d, rd, cs + p * half, sn + p * half);
    }
}

/* ---- attention -------------------------------------------------------------- */

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

static void kv_store_head(const spruce__kv *kv, const float *k, const float *v, size_t r,
                          int T, int pos0, int KV, int d)
{
    size_t s = r / (size_t)KV, g = r % (size_t)KV, ld = kv->ld, end = (size_t)pos0 + T;
    float *kt = kv->kt + r * d * ld, *vt = kv->vt + r * d * ld;
    size_t j, pad = spruce__kv_ld(end) < ld ? spruce__kv_ld(end) : ld;
    int e, t;
    for (j = end; j < pad; j++)
        for (e = 0; e < d; e++)
            kt[(size_t)e * ld + j] = vt[(size_t)e * ld + j] = 0.0f;
    for (t = 0; t < T; t++) {
        const float *kj = k + (s * T + t) * KV * d + g * d;
        const float *vj = v + (s * T + t) * KV * d + g * d;
        j = (size_t)pos0 + t;
        for (e = 0; e < d; e++) {
            kt[(size_t)e * ld + j] = kj[e];
            vt[(size_t)e * ld + j] = vj[e];
        }
    }
}

void spruce__kv_store(const spruce__kv *kv, const float *k, const float *v, int nseq, int T,
                      int pos0, int KV, int d)
{
    long r, nkv = (long)nseq * KV;
    if (nkv * d * T < PAR_MIN) {
        for (r = 0; r < nkv; r++)
            kv_store_head(kv, k, v, (size_t)r, T, pos0, KV, d);
        return;
    }
#pragma omp parallel for schedule(static)
    for (r = 0; r < nkv; r++)
        kv_store_head(kv, k, v, (size_t)r, T, pos0, KV, d);
}

/* out (d) = softmax_j(cap(scale qi . k_j)) v_j over the positions lo <= j < len
 * of kt, vt (d, ld), cap(s) = tanh(s / c) c for a soft-cap c > 0; p holds len
 * rounded up to 8 floats. */
static void attend_row(float *out, const float *qi, const float *kt, const float *vt,
                       size_t ld, int lo, int len, int d, const spruce__attn *a, float *p)
{
    float mx = -INFINITY, inv, sum = 0, scale = a->scale, cap = a->softcap;
    int j, e;
    /* p[j] = scale q_i . k_j, eight keys at a time (kt rows are padded to 8),
     * from the group of 8 holding lo */
    for (j = lo / 8 * 8; j < len; j += 8) {
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int jj, nj = len - j < 8 ? len - j : 8;
        for (e = 0; e < d; e++) {
            const float *ke = kt + (size_t)e * ld + j;
            float qe = qi[e] * scale;
#pragma omp simd
            for (jj = 0; jj < 8; jj++)
                acc[jj] += qe * ke[jj];
        }
        for (jj = 0; jj < nj; jj++)
            p[j + jj] = acc[jj];
    }
    if (cap > 0)
        softcap_range(p + lo, len - lo, cap);
    for (j = lo; j < len; j++)
        mx = p[j] > mx ? p[j] : mx;
#pragma omp simd
    for (j = lo; j < len; j++)
        p[j] = exp_neg(p[j] - mx);
#pragma omp simd reduction(+:sum)
    for (j = lo; j < len; j++)
        sum += p[j];
    inv = 1.0f / sum;
    for (e = 0; e < d; e++) {
        const float *ve = vt + (size_t)e * ld;
        float acc = 0;
#pragma omp simd reduction(+:acc)
        for (j = lo; j < len; j++)
            acc += p[j] * ve[j];
        out[e] = acc * inv;
    }
}

/* Row r of (nseq, H, T): query token i of sequence s, head h. */
static void attention_row(const spruce__kv *kv, const float *q, float *att, long r, int T,
                          int pos0, int H, int KV, int d, const spruce__attn *a, float *p)
{
    size_t i = (size_t)(r % T), h = (size_t)((r / T) % H), s = (size_t)(r / ((long)T * H));
    size_t g = h / (size_t)(H / KV), hd = (size_t)H * d;
    const float *kt = kv->kt + (s * KV + g) * d * kv->ld;
    const float *vt = kv->vt + (s * KV + g) * d * kv->ld;
    int pos = pos0 + (int)i, lo = a->window > 0 && pos >= a->window ? pos - a->window + 1 : 0;
    attend_row(att + (s * T + i) * hd + h * d, q + (s * T + i) * hd + h * d, kt, vt, kv->ld,
               lo, pos + 1, d, a, p);
}

void spruce__attn_default(spruce__attn *a, int d)
{
    a->scale = (float)(1.0 / sqrt((double)d));
    a->softcap = 0.0f;
    a->window = 0;
}

void spruce__attention_rows(const spruce__kv *kv, const float *q, float *att, int nseq, int T,
                            int pos0, int H, int KV, int d, float *scratch, int nthreads)
{
    spruce__attn a;
    spruce__attn_default(&a, d);
    spruce__attention_rows_opts(kv, q, att, nseq, T, pos0, H, KV, d, &a, scratch, nthreads);
}

void spruce__attention_rows_opts(const spruce__kv *kv, const float *q, float *att, int nseq,
                                 int T, int pos0, int H, int KV, int d, const spruce__attn *a,
                                 float *scratch, int nthreads)
{
    long nrows = (long)nseq * H * T, r;
    if (nrows * (pos0 + T) * d < PAR_MIN || nthreads < 2) {
        for (r = 0; r < nrows; r++)
            attention_row(kv, q, att, r, T, pos0, H, KV, d, a, scratch);
        return;
    }
#pragma omp parallel for schedule(dynamic, 32) num_threads(nthreads)
    for (r = 0; r < nrows; r++) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        attention_row(kv, q, att, r, T, pos0, H, KV, d, a, scratch + (size_t)tid * kv->ld);
    }
}

/* Causal softmax over the rows of S (T, T): row i keeps columns lo..i (lo =
 * i - window + 1 for a window, else 0), soft-capped first when a->softcap. */
static void causal_softmax(float *S, int T, const spruce__attn *a)
{
    int i;
#pragma omp parallel for schedule(dynamic, 16) if ((long)T * T >= PAR_MIN)
    for (i = 0; i < T; i++) {
        float *r = S + (size_t)i * T, mx, inv, cap = a->softcap;
        double sum = 0;
        int j, lo = a->window > 0 && i >= a->window ? i - a->window + 1 : 0;
        if (cap > 0)
            softcap_range(r + lo, i - lo + 1, cap);
        mx = r[lo];
        for (j = lo + 1; j <= i; j++)
            if (r[j] > mx)
                mx = r[j];
#pragma omp simd
        for (j = lo; j <= i; j++)
            r[j] = exp_neg(r[j] - mx);
        for (j = lo; j <= i; j++)
            sum += r[j];
        inv = (float)(1.0 / sum);
        for (j = 0; j < lo; j++)
            r[j] = 0.0f;
        for (j = lo; j <= i; j++)
            r[j] *= inv;
        for (j = i + 1; j < T; j++)
            r[j] = 0.0f;
    }
}

void spruce__attention_blas(const float *q, const float *k, const float *v, float *att,
                            int nseq, int T, int H, int KV, int d, float *S)
{
    spruce__attn a;
    spruce__attn_default(&a, d);
    spruce__attention_blas_opts(q, k, v, att, nseq, T, H, KV, d, &a, S);
}

void spruce__attention_blas_opts(const float *q, const float *k, const float *v, float *att,
                                 int nseq, int T, int H, int KV, int d, const spruce__attn *a,
                                 float *S)
{
    int per = H / KV, h, s;
    float scale = a->scale;
    for (s = 0; s < nseq; s++) {
        const float *qs = q + (size_t)s * T * H * d;
        const float *ks = k + (size_t)s * T * KV * d;
        const float *vs = v + (size_t)s * T * KV * d;
        float *as = att + (size_t)s * T * H * d;
        for (h = 0; h < H; h++) {
            int g = h / per;
            /* S (T, T) = scale * q_h (T, d) k_g^T (d, T) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, d, scale,
                        qs + (size_t)h * d, H * d, ks + (size_t)g * d, KV * d, 0.0f, S, T);
            causal_softmax(S, T, a);
            /* att_h (T, d) = S (T, T) v_g (T, d) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, d, T, 1.0f, S, T,
                        vs + (size_t)g * d, KV * d, 0.0f, as + (size_t)h * d, H * d);
        }
    }
}

/* ---- non-finite values ------------------------------------------------------ */

int spruce__first_nonfinite(const float *x, size_t ntok, size_t n, size_t *row, size_t *col)
{
    typedef uint32_t __attribute__((may_alias)) alias_u32;
    const alias_u32 *u = (const alias_u32 *)x;
    size_t i, total = ntok * n;
    uint32_t any = 0;
    /* exponent bits all ones: NaN or infinity; located only when present */
#pragma omp simd reduction(|:any)
    for (i = 0; i < total; i++)
        any |= (uint32_t)((u[i] & 0x7f800000u) == 0x7f800000u);
    *row = 0;
    *col = (size_t)-1;
    if (!any)
        return 0;
    for (i = 0; i < total; i++)
        if ((u[i] & 0x7f800000u) == 0x7f800000u)
            break;
    *row = i / n;
    *col = i % n;
    return 1;
}

int spruce__check_rows(const float *x, int ntok, int n, int T, int pos0, int seq0,
                       const char *what)
{
    size_t row, col;
    float v;
    char where[64];
    if (!spruce__first_nonfinite(x, (size_t)ntok, (size_t)n, &row, &col))
        return 0;
    v = x[row * (size_t)n + col];
    if (ntok <= T && seq0 == 0)
        snprintf(where, sizeof where, "position %d", pos0 + (int)row);
    else
        snprintf(where, sizeof where, "position %d of sequence %d", pos0 + (int)(row % T),
                 seq0 + (int)(row / T));
    return spruce__seterr(SPRUCE_ENAN, "%s: non-finite value (%s) at %s", what,
                          isnan(v) ? "nan" : v > 0 ? "inf" : "-inf", where);
}

/* ---- the block -------------------------------------------------------------- */

/* The name of the tensor a block check looks at, for messages. */
static void tensor_label(const spruce__block_run *r, const char *part, const char *what,
                         char *buf, size_t size)
{
    snprintf(buf, size, "layer %d %s%s%s", r->layer, part, *what ? " " : "", what);
}

/* Check x (ntok, n) for non-finite values, naming the tensor part + what. */
static int check(const spruce__block_run *r, int locate_only, const float *x, int ntok, int n,
                 int T, const char *part, const char *what)
{
    char label[160];
    size_t row, col;
    if (locate_only && !r->locate)
        return 0;
    if (!spruce__first_nonfinite(x, (size_t)ntok, (size_t)n, &row, &col))
        return 0;
    tensor_label(r, part, what, label, sizeof label);
    return spruce__check_rows(x, ntok, n, T, r->pos0, r->seq0, label);
}

static const char *proj_path(const spruce_family *f, spruce_proj l)
{
    return f && f->linear[l].path ? f->linear[l].path : spruce_proj_path(l);
}

/* y = norm(x) for ntok rows: RMSNorm with weights (w + off), or OPT's
 * LayerNorm with weight w and bias b. */
static void block_norm(const spruce_config *c, float *y, const float *x, const float *w,
                       const float *b, float off, int ntok)
{
    if (c->layer_norm)
        spruce__layernorm(y, x, w, b, ntok, c->hidden_size, c->rms_norm_eps);
    else
        spruce__rmsnorm_off(y, x, w, off, ntok, c->hidden_size, c->rms_norm_eps);
}

/* Tap site, then say whether the block stops there (*rc: the tap's return). */
static int tap_and_stop(spruce_tap_fn tap, void *ctx, spruce_site site, const float *X,
                        int ntok, int cols, int stop_after, int *rc)
{
    if (tap && (*rc = tap(ctx, site, X, ntok, cols)))
        return 1;
    return stop_after == (int)site;
}

int spruce__block(const spruce__block_run *r, float *x, int nseq, int T, spruce_tap_fn tap,
                  void *ctx, int stop_after)
{
    const spruce_config *c = r->c;
    const spruce_family *f = c->family ? c->family : spruce_family_find(c->model_type);
    const char *attn_norm = f ? f->attn_norm : "input_layernorm";
    const char *mlp_norm = f ? f->mlp_norm : "post_attention_layernorm";
    int hid = c->hidden_size, H = c->num_attention_heads, KV = c->num_key_value_heads;
    int d = c->head_dim, qd = H * d, inter = c->intermediate_size;
    int rd = c->rotary_dim > 0 ? c->rotary_dim : d;   /* phi3: partial rotary */
    int ntok = nseq * T, rc = 0;
    size_t n = (size_t)ntok * hid;
    /* Each check is one pass over a tensor that a matrix product of its width
     * made or will read: the block output and the tapped inputs always, the
     * rest (locate_only 1) when locating. */
#define CHECK(locate_only, X, width, part, what)                                      \
    do {                                                                              \
        if ((rc = check(r, locate_only, X, ntok, width, T, part, what)))              \
            return rc;                                                                \
    } while (0)

    float off = c->norm_plus_one ? 1.0f : 0.0f;   /* gemma: weights (1 + w) */
    const float *in;
    spruce__attn at;

    spruce__attn_default(&at, d);
    if (c->attn_scale > 0)
        at.scale = (float)c->attn_scale;
    at.softcap = (float)c->attn_softcap;
    at.window = r->window;

    /* attention: on norm(x), or on x itself in OPT's post-norm block */
    if (c->post_norm) {
        in = x;
    } else {
        block_norm(c, r->a, x, r->attn_norm, r->attn_norm_b, off, ntok);
        CHECK(!tap, r->a, hid, attn_norm, "output");
        in = r->a;
    }
    if (tap_and_stop(tap, ctx, SPRUCE_SITE_QKV, in, ntok, hid, stop_after, &rc))
        return rc;
    if ((rc = r->linear(r->linear_ctx, SPRUCE_PROJ_Q, in, ntok, r->q)) ||
        (rc = r->linear(r->linear_ctx, SPRUCE_PROJ_K, in, ntok, r->k)) ||
        (rc = r->linear(r->linear_ctx, SPRUCE_PROJ_V, in, ntok, r->v)))
        return rc;
    CHECK(1, r->q, qd, proj_path(f, SPRUCE_PROJ_Q), "output");
    CHECK(1, r->k, KV * d, proj_path(f, SPRUCE_PROJ_K), "output");
    CHECK(1, r->v, KV * d, proj_path(f, SPRUCE_PROJ_V), "output");
    if (r->q_norm)   /* rows of head_dim: every head of every token */
        spruce__rmsnorm_off(r->q, r->q, r->q_norm, off, ntok * H, d, c->rms_norm_eps);
    if (r->k_norm)
        spruce__rmsnorm_off(r->k, r->k, r->k_norm, off, ntok * KV, d, c->rms_norm_eps);
    if (!c->learned_positions) {
        spruce__rope(r->q, ntok, T, r->pos0, H, d, rd, r->cos, r->sin);
        spruce__rope(r->k, ntok, T, r->pos0, KV, d, rd, r->cos, r->sin);
        CHECK(1, r->q, qd, proj_path(f, SPRUCE_PROJ_Q), "output after rotary embedding");
        CHECK(1, r->k, KV * d, proj_path(f, SPRUCE_PROJ_K), "output after rotary embedding");
    }
    if (r->blas_attention) {
        spruce__attention_blas_opts(r->q, r->k, r->v, r->att, nseq, T, H, KV, d, &at,
                                    r->scores);
    } else {
        spruce__kv_store(&r->kv, r->k, r->v, nseq, T, r->pos0, KV, d);
        spruce__attention_rows_opts(&r->kv, r->q, r->att, nseq, T, r->pos0, H, KV, d, &at,
                                    r->scores, r->nthreads);
    }
    CHECK(!tap, r->att, qd, "self_attn", "attention output");
    if (tap_and_stop(tap, ctx, SPRUCE_SITE_O, r->att, ntok, qd, stop_after, &rc))
        return rc;
    if ((rc = r->linear(r->linear_ctx, SPRUCE_PROJ_O, r->att, ntok, r->t)))
        return rc;
    CHECK(1, r->t, hid, proj_path(f, SPRUCE_PROJ_O), "output");
    if (r->post_attn_norm)
        spruce__rmsnorm_off(r->t, r->t, r->post_attn_norm, off, ntok, hid, c->rms_norm_eps);
    if (r->h != x)
        memcpy(r->h, x, n * sizeof(float));
    spruce__add(r->h, r->t, n);
    if (c->post_norm)
        block_norm(c, r->h, r->h, r->attn_norm, r->attn_norm_b, off, ntok);
    CHECK(1, r->h, hid, "residual stream after self_attn", "");

    /* MLP: on norm(h), or on h itself in the post-norm block */
    if (c->post_norm) {
        in = r->h;
    } else {
        block_norm(c, r->a, r->h, r->mlp_norm, r->mlp_norm_b, off, ntok);
        CHECK(!tap, r->a, hid, mlp_norm, "output");
        in = r->a;
    }
    if (tap_and_stop(tap, ctx, SPRUCE_SITE_GATEUP, in, ntok, hid, stop_after, &rc))
        return rc;
    if (r->moe) {   /* the experts chosen for each token, weighted */
        if ((rc = spruce__moe_mlp(r, ntok, T)) || stop_after == (int)SPRUCE_SITE_DOWN)
            return rc;   /* stopping after the experts' down inputs: x unchanged */
        goto residual;
    }
    if (c->act == SPRUCE_ACT_RELU) {   /* OPT: g = relu(fc1(in)), no gate */
        if ((rc = r->linear(r->linear_ctx, SPRUCE_PROJ_UP, in, ntok, r->g)))
            return rc;
        CHECK(1, r->g, inter, proj_path(f, SPRUCE_PROJ_UP), "output");
        spruce__relu(r->g, (size_t)ntok * inter);
        CHECK(!tap, r->g, inter, "mlp", "activation_fn(fc1)");
    } else {
        if ((rc = r->linear(r->linear_ctx, SPRUCE_PROJ_GATE, in, ntok, r->g)) ||
            (rc = r->linear(r->linear_ctx, SPRUCE_PROJ_UP, in, ntok, r->u)))
            return rc;
        CHECK(1, r->g, inter, proj_path(f, SPRUCE_PROJ_GATE), "output");
        CHECK(1, r->u, inter, proj_path(f, SPRUCE_PROJ_UP), "output");
        if (c->act == SPRUCE_ACT_GELU_TANH)
            spruce__geglu(r->g, r->u, (size_t)ntok * inter);
        else
            spruce__swiglu(r->g, r->u, (size_t)ntok * inter);
        CHECK(!tap, r->g, inter, "mlp", "act_fn(gate_proj) * up_proj");
    }
    if (tap_and_stop(tap, ctx, SPRUCE_SITE_DOWN, r->g, ntok, inter, stop_after, &rc))
        return rc;
    if ((rc = r->linear(r->linear_ctx, SPRUCE_PROJ_DOWN, r->g, ntok, r->t)))
        return rc;
    CHECK(1, r->t, hid, proj_path(f, SPRUCE_PROJ_DOWN), "output");
residual:
    if (r->post_mlp_norm)
        spruce__rmsnorm_off(r->t, r->t, r->post_mlp_norm, off, ntok, hid, c->rms_norm_eps);
    spruce__add(r->h, r->t, n);
    if (c->post_norm)
        block_norm(c, r->h, r->h, r->mlp_norm, r->mlp_norm_b, off, ntok);
    CHECK(0, r->h, hid, "output", "");
#undef CHECK
    if (r->h != x)
        memcpy(x, r->h, n * sizeof(float));
    return 0;
}
