/* forward.c: the full forward of a LLaMA-family model (spruce_model.h): T
 * tokens per sequence, chunks of sequences at once, the linear layers on
 * cblas_sgemm and the block's maths in block.c.  BLAS is never called from
 * inside an OpenMP parallel region. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "block.h"
#include "model_internal.h"
#include "opt.h"
#include "rope.h"
#include "spruce_sparse.h"

struct spruce_fwd_ws {
    int max_T, max_seq, hidden, qdim, kvdim, inter, nthreads;
    spruce_attention attention;
    size_t ld;    /* positions of kt, vt: max_T rounded up to 8 */
    float *a;     /* (T, hidden)  normed input */
    float *q;     /* (T, qdim) */
    float *k;     /* (T, kvdim) */
    float *v;     /* (T, kvdim) */
    float *kt;    /* (nseq, KV, head_dim, ld) keys by position (rows attention) */
    float *vt;    /* (nseq, KV, head_dim, ld) values */
    float *att;   /* (T, qdim)    attention output, input of o */
    float *S;     /* (T, T) scores of one head (BLAS path), or (nthreads, ld) rows */
    float *h;     /* (T, hidden)  residual stream */
    float *t;     /* (T, hidden)  linear output */
    float *g;     /* (T, inter) */
    float *u;     /* (T, inter) */
    float *cos;   /* (max_T, head_dim / 2) */
    float *sin;   /* (max_T, head_dim / 2) */
    float *cos_local, *sin_local;   /* gemma3's sliding layers (rope_local_theta), or NULL */
    float *moe_x, *moe_y, *moe_p, *moe_w;   /* mixtures of experts (block.h), or NULL */
    int *moe_sel, *moe_tok;
    long rope_len;   /* the sequence length the tables were made for (rope.h) */
};

/* ---- workspace ------------------------------------------------------------ */

int spruce_fwd_chunk(int T)
{
    return T >= SPRUCE_FWD_TOKENS ? 1 : SPRUCE_FWD_TOKENS / (T > 0 ? T : 1);
}

/* n floats of a x b x c, or 0 when the bytes overflow size_t. */
static size_t floats3(size_t a, size_t b, size_t c)
{
    size_t n;
    if (__builtin_mul_overflow(a, b, &n) || __builtin_mul_overflow(n, c, &n) ||
        __builtin_mul_overflow(n, sizeof(float), &n))
        return 0;
    return n;
}

spruce_fwd_ws *spruce_fwd_ws_alloc(const spruce_config *c, int max_T, int max_seq)
{
    spruce_fwd_ws *ws;
    size_t T, ST, half, nS, ld, hid, qd, kvd, inter;
    if (!c || max_T <= 0 || max_seq <= 0 || (int64_t)max_T * max_seq > INT_MAX ||
        c->hidden_size <= 0 || c->intermediate_size <= 0 || c->num_attention_heads <= 0 ||
        c->num_key_value_heads <= 0 || c->head_dim <= 0 ||
        (int64_t)c->num_attention_heads * c->head_dim > INT_MAX ||
        (int64_t)c->num_key_value_heads * c->head_dim > INT_MAX)
        return NULL;
    ST = (size_t)max_T;
    T = ST * (size_t)max_seq;     /* tokens of a chunk, at most INT_MAX */
    hid = (size_t)c->hidden_size;
    qd = (size_t)c->num_attention_heads * (size_t)c->head_dim;
    kvd = (size_t)c->num_key_value_heads * (size_t)c->head_dim;
    inter = (size_t)c->intermediate_size;
    if ((size_t)c->moe_intermediate_size > inter)   /* g, u also hold an expert's */
        inter = (size_t)c->moe_intermediate_size;
    ld = spruce__kv_ld(ST);
    half = (size_t)c->head_dim / 2;
    nS = ST > (size_t)spruce__max_threads() ? ST : (size_t)spruce__max_threads();
    /* Every size in bytes must fit in size_t (a hostile config or T). */
    if (!floats3(T, hid, 1) || !floats3(T, qd, 1) || !floats3(T, kvd, 1) ||
        !floats3(ld, (size_t)max_seq, kvd) || !floats3(T, inter, 1) ||
        !floats3(nS, ST + 8, 1) || !floats3(ST, half > 0 ? half : 1, 1))
        return NULL;
    ws = calloc(1, sizeof *ws);
    if (!ws)
        return NULL;
    ws->max_T = max_T;
    ws->max_seq = max_seq;
    ws->nthreads = spruce__max_threads();
    ws->attention = SPRUCE_ATTENTION_AUTO;
    ws->hidden = c->hidden_size;
    ws->qdim = (int)qd;
    ws->kvdim = (int)kvd;
    ws->inter = c->intermediate_size;
    ws->ld = ld;
    ws->a = malloc(floats3(T, hid, 1));
    ws->q = malloc(floats3(T, qd, 1));
    ws->k = malloc(floats3(T, kvd, 1));
    ws->v = malloc(floats3(T, kvd, 1));
    ws->kt = malloc(floats3(ld, (size_t)max_seq, kvd));
    ws->vt = malloc(floats3(ld, (size_t)max_seq, kvd));
    ws->att = malloc(floats3(T, qd, 1));
    ws->S = malloc(floats3(nS, ST + 8, 1));
    ws->h = malloc(floats3(T, hid, 1));
    ws->t = malloc(floats3(T, hid, 1));
    ws->g = malloc(floats3(T, inter, 1));
    ws->u = malloc(floats3(T, inter, 1));
    ws->cos = malloc(floats3(ST, half > 0 ? half : 1, 1));
    ws->sin = malloc(floats3(ST, half > 0 ? half : 1, 1));
    if (!ws->a || !ws->q || !ws->k || !ws->v || !ws->kt || !ws->vt || !ws->att || !ws->S ||
        !ws->h || !ws->t || !ws->g || !ws->u || !ws->cos || !ws->sin) {
        spruce_fwd_ws_free(ws);
        return NULL;
    }
    if (c->num_experts > 0) {
        size_t E = (size_t)c->num_experts, K = (size_t)c->num_experts_per_tok;
        ws->moe_x = malloc(floats3(T, hid, 1));
        ws->moe_y = malloc(floats3(T, hid, 1));
        ws->moe_p = malloc(floats3(T, E, 1));
        ws->moe_w = malloc(floats3(T, K, 1));
        ws->moe_sel = malloc(floats3(T, K, 1));   /* sizeof(int) == sizeof(float) */
        ws->moe_tok = malloc(floats3(T, K, 1));
        if (!floats3(T, E, 1) || !ws->moe_x || !ws->moe_y || !ws->moe_p || !ws->moe_w ||
            !ws->moe_sel || !ws->moe_tok) {
            spruce_fwd_ws_free(ws);
            return NULL;
        }
    }
    ws->rope_len = spruce__rope_table_len(c, max_T);
    if (spruce__rope_fill(c, ws->rope_len, 0, max_T, ws->cos, ws->sin) ||
        spruce__rope_local_tables(c, max_T, &ws->cos_local, &ws->sin_local)) {
        spruce_fwd_ws_free(ws);
        return NULL;
    }
    return ws;
}

void spruce_fwd_ws_free(spruce_fwd_ws *ws)
{
    if (!ws)
        return;
    free(ws->a); free(ws->q); free(ws->k); free(ws->v); free(ws->kt); free(ws->vt);
    free(ws->att); free(ws->S); free(ws->h); free(ws->t); free(ws->g); free(ws->u);
    free(ws->cos); free(ws->sin); free(ws->cos_local); free(ws->sin_local);
    free(ws->moe_x); free(ws->moe_y); free(ws->moe_p); free(ws->moe_w); free(ws->moe_sel);
    free(ws->moe_tok);
    free(ws);
}

int spruce_fwd_ws_set_attention(spruce_fwd_ws *ws, spruce_attention a)
{
    int rc;
    if (!ws)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_fwd_ws_set_attention: NULL workspace");
    if ((rc = spruce__check_attention(a)))
        return rc;
    ws->attention = a;
    return 0;
}

/* ---- one block ----------------------------------------------------------------- */

/* Y (ntok, rows) = X (ntok, cols) W^T + b for linear l of the block at ctx,
 * W (rows, cols) row-major. */
static int blas_linear(void *ctx, spruce_proj l, const float *X, int ntok, float *Y)
{
    const spruce_block *b = ctx;
    int rows = b->rows[l], cols = b->cols[l];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ntok, rows, cols, 1.0f, X, cols,
                b->w[l], cols, 0.0f, Y, rows);
    if (b->b[l])
        spruce__add_bias(Y, b->b[l], ntok, rows);
    return 0;
}

/* The router (e = -1) or expert e's gate, up, down (k 0, 1, 2) of the block
 * at ctx on BLAS: Y (ntok, rows) = X (ntok, cols) W^T. */
static int blas_expert(void *ctx, int e, int k, const float *X, int ntok, float *Y)
{
    const spruce_block *b = ctx;
    const float *W = e < 0 ? b->router : b->expert[3 * e + k];
    int hid = b->cols[SPRUCE_PROJ_Q], w = b->expert_width;   /* q reads the hidden state */
    int rows = e < 0 ? b->nexperts : k == 2 ? hid : w, cols = e >= 0 && k == 2 ? w : hid;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ntok, rows, cols, 1.0f, X, cols, W,
                cols, 0.0f, Y, rows);
    return 0;
}

/* Small heads go row by row, large ones through BLAS. */
static int attention_uses_blas(const spruce_config *c, spruce_attention a, int T)
{
    if (a == SPRUCE_ATTENTION_ROWS)
        return 0;
    if (a == SPRUCE_ATTENTION_BLAS)
        return 1;
    return c->head_dim >= 32 && T >= 64;
}

/* The block's linear layers must have the shapes of the config. */
static int check_block(const spruce_config *c, const spruce_block *b)
{
    const spruce_family *f = c->family ? c->family : spruce_family_find(c->model_type);
    int l;
    if (!f)
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "block forward: model_type '%s' "
                              "(supported: %s)", c->model_type, spruce_family_supported());
    if (c->qk_norm && (!b->q_norm || !b->k_norm))
        return spruce__seterr(SPRUCE_EINVAL, "block %d: the config has q/k norms, the block "
                              "has none", b->layer);
    if (!b->nexperts != !spruce_config_layer_moe(c, b->layer) ||
        (b->nexperts && (b->nexperts != c->num_experts || !b->router || !b->expert ||
                         b->expert_width != c->moe_intermediate_size)))
        return spruce__seterr(SPRUCE_EINVAL, "block %d: %d experts of width %d, the config "
                              "implies %d of width %d", b->layer, b->nexperts, b->expert_width,
                              spruce_config_layer_moe(c, b->layer) ? c->num_experts : 0,
                              c->moe_intermediate_size);
    for (l = 0; l < SPRUCE_NPROJ; l++) {
        size_t rows, cols;
        if (b->nexperts && l >= SPRUCE_PROJ_GATE)
            break;
        if (!f->linear[l].path)
            continue;   /* OPT's gate: none */
        spruce_family_linear_shape(f, c, (spruce_proj)l, &rows, &cols);
        if (!b->w[l] || (size_t)b->rows[l] != rows || (size_t)b->cols[l] != cols)
            return spruce__seterr(SPRUCE_EINVAL, "block %d: %s is (%d, %d), the config "
                                  "implies (%zu, %zu)", b->layer, f->linear[l].path,
                                  b->rows[l], b->cols[l], rows, cols);
    }
    return 0;
}

int spruce__block_forward_at(const spruce_config *c, const spruce_block *b, float *x, int nseq,
                             int T, spruce_fwd_ws *ws, spruce_tap_fn tap, void *ctx,
                             int stop_after, int seq0)
{
    return spruce__block_forward_experts(c, b, x, nseq, T, ws, tap, ctx, NULL, NULL, stop_after,
                                         seq0);
}

int spruce__block_forward_experts(const spruce_config *c, const spruce_block *b, float *x,
                                  int nseq, int T, spruce_fwd_ws *ws, spruce_tap_fn tap,
                                  void *ctx, spruce__expert_tap_fn expert_tap, void *expert_ctx,
                                  int stop_after, int seq0)
{
    spruce__block_run r;
    int rc;
    if (!c || !b || !x || !ws)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_block_forward: NULL argument");
    if (T <= 0 || T > ws->max_T || nseq <= 0 || nseq > ws->max_seq)
        return spruce__seterr(SPRUCE_EINVAL, "block forward: %d sequences of %d tokens, "
                              "workspace holds %d of %d", nseq, T, ws->max_seq, ws->max_T);
    if (ws->hidden != c->hidden_size || ws->inter != c->intermediate_size ||
        ws->qdim != (int64_t)c->num_attention_heads * c->head_dim ||
        ws->kvdim != (int64_t)c->num_key_value_heads * c->head_dim)
        return spruce__seterr(SPRUCE_EINVAL, "block forward: workspace made for another config");
    if ((rc = check_block(c, b)))
        return rc;
    /* dynamic rope: the tables depend on the sequence's length */
    if (spruce__rope_table_len(c, T) != ws->rope_len) {
        if ((rc = spruce__rope_fill(c, spruce__rope_table_len(c, T), 0, ws->max_T, ws->cos,
                                    ws->sin)))
            return rc;
        ws->rope_len = spruce__rope_table_len(c, T);
    }
    memset(&r, 0, sizeof r);
    r.c = c;
    r.attn_norm = b->attn_norm;
    r.mlp_norm = b->mlp_norm;
    r.attn_norm_b = b->attn_norm_b;
    r.mlp_norm_b = b->mlp_norm_b;
    r.q_norm = b->q_norm;
    r.k_norm = b->k_norm;
    r.linear = blas_linear;
    r.linear_ctx = (void *)b;
    r.post_attn_norm = b->post_attn_norm;
    r.post_mlp_norm = b->post_mlp_norm;
    r.window = spruce_config_layer_window(c, b->layer);
    r.cos = r.window && ws->cos_local ? ws->cos_local : ws->cos;
    r.sin = r.window && ws->sin_local ? ws->sin_local : ws->sin;
    r.pos0 = 0;
    r.blas_attention = attention_uses_blas(c, ws->attention, T);
    /* a chunk's keys: (nseq, KV, head_dim, round8(T)) */
    r.kv.kt = ws->kt;
    r.kv.vt = ws->vt;
    r.kv.ld = spruce__kv_ld((size_t)T);
    r.scores = ws->S;
    r.nthreads = ws->nthreads;
    r.a = ws->a; r.q = ws->q; r.k = ws->k; r.v = ws->v; r.att = ws->att;
    r.h = ws->h; r.t = ws->t; r.g = ws->g; r.u = ws->u;
    r.moe = b->nexperts > 0;
    r.expert = blas_expert;
    r.expert_tap = expert_tap;
    r.expert_tap_ctx = expert_ctx;
    r.moe_x = ws->moe_x; r.moe_y = ws->moe_y; r.moe_p = ws->moe_p; r.moe_w = ws->moe_w;
    r.moe_sel = ws->moe_sel; r.moe_tok = ws->moe_tok;
    r.layer = b->layer;
    r.seq0 = seq0;
    rc = spruce__block(&r, x, nseq, T, tap, ctx, stop_after);
    if (rc == SPRUCE_ENAN) {
        /* x is unchanged (r.h is a copy): run the block again checking every
         * intermediate, to name the first tensor that holds the value. */
        char first[512];
        snprintf(first, sizeof first, "%s", spruce_errdetail());
        r.locate = 1;
        r.expert_tap = NULL;
        if (spruce__block(&r, x, nseq, T, NULL, NULL, -1) != SPRUCE_ENAN)
            spruce__seterr(SPRUCE_ENAN, "%s", first);
    }
    return rc;
}

int spruce_block_forward(const spruce_config *c, const spruce_block *b, float *x, int nseq,
                         int T, spruce_fwd_ws *ws, spruce_tap_fn tap, void *ctx, int stop_after)
{
    return spruce__block_forward_at(c, b, x, nseq, T, ws, tap, ctx, stop_after, 0);
}

/* ---- the model ---------------------------------------------------------------- */

int spruce__run_blocks(spruce_model *m, float *x, int nseq, int T, int seq0,
                       spruce_block_progress_fn progress, void *ctx)
{
    return spruce__run_blocks_values(m, x, nseq, T, seq0, NULL, progress, ctx);
}

int spruce__run_blocks_values(spruce_model *m, float *x, int nseq, int T, int seq0,
                              const spruce_decode_opts *o, spruce_block_progress_fn progress,
                              void *ctx)
{
    spruce_block vb, *run;
    int have_vb = 0;
    const spruce_config *c = &m->cfg;
    int chunk = spruce_fwd_chunk(T) < nseq ? spruce_fwd_chunk(T) : nseq;
    spruce_fwd_ws *ws = spruce_fwd_ws_alloc(c, T, chunk);
    spruce_block *b = NULL;
    int rc = 0, layer, s;
    if (!ws)
        return spruce__seterr(SPRUCE_ENOMEM, "forward workspace for %d x %d tokens", chunk, T);
    spruce_fwd_ws_set_attention(ws, m->attention);
    for (layer = 0; layer < c->num_hidden_layers; layer++) {
        if ((rc = spruce_model_get_block(m, layer, &b)))
            goto done;
        run = b;
        if (o) {
            if ((rc = spruce__block_values(m, b, o, &vb)))
                goto done;
            have_vb = 1;
            run = &vb;
        }
        for (s = 0; s < nseq; s += chunk) {
            int ns = nseq - s < chunk ? nseq - s : chunk;
            if ((rc = spruce__block_forward_at(c, run, x + (size_t)s * T * c->hidden_size, ns,
                                               T, ws, NULL, NULL, -1, seq0 + s)))
                goto done;
        }
        if (have_vb)
            spruce__block_values_free(&vb);
        have_vb = 0;
        spruce_model_put_block(m, b);
        b = NULL;
        if (progress)
            progress(ctx, layer, c->num_hidden_layers);
    }
done:
    if (have_vb)
        spruce__block_values_free(&vb);
    spruce_model_put_block(m, b);
    spruce_fwd_ws_free(ws);
    return rc;
}

/* The head in two steps, so that the checked head checks between them:
 * xn = the final norm of x; logits (T, vocab) = xn head^T, soft-capped where
 * the family caps the final logits (Gemma2ForCausalLM: final_logit_softcapping). */
static void head_norm(const spruce_model *m, const float *x, int T, float *xn)
{
    const spruce_config *c = &m->cfg;
    if (c->no_final_norm)   /* OPT's post-norm models */
        memcpy(xn, x, (size_t)T * c->hidden_size * sizeof(float));
    else if (c->layer_norm)
        spruce__layernorm(xn, x, m->norm, m->norm_b, T, c->hidden_size, c->rms_norm_eps);
    else
        spruce__rmsnorm_off(xn, x, m->norm, c->norm_plus_one ? 1.0f : 0.0f, T,
                            c->hidden_size, c->rms_norm_eps);
}

static int head_logits(const spruce_model *m, const float *xn, int T, float *logits)
{
    const spruce_config *c = &m->cfg;
    const float *head;
    int rc = spruce__model_head(m, &head);
    if (rc)
        return rc;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, c->vocab_size, c->hidden_size, 1.0f,
                xn, c->hidden_size, head, c->hidden_size, 0.0f, logits, c->vocab_size);
    if (c->final_softcap > 0)
        spruce__softcap(logits, (size_t)T * c->vocab_size, (float)c->final_softcap);
    return 0;
}

/* logits (T, vocab) = rmsnorm(x) * norm head^T; xn is (T, hidden) scratch. */
int spruce_model_head(const spruce_model *m, const float *x, int T, float *xn, float *logits)
{
    if (!m || !x || !xn || !logits)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_model_head: NULL argument");
    head_norm(m, x, T, xn);
    return head_logits(m, xn, T, logits);
}

int spruce__head_checked(const spruce_model *m, const float *x, int T, float *xn,
                         float *logits, int pos0, int seq0)
{
    const spruce_config *c = &m->cfg;
    char what[160];
    int rc;
    head_norm(m, x, T, xn);
    snprintf(what, sizeof what, "%s (final norm) output", m->fam->final_norm);
    if ((rc = spruce__check_rows(xn, T, c->hidden_size, T, pos0, seq0, what)) ||
        (rc = head_logits(m, xn, T, logits)))
        return rc;
    return spruce__check_rows(logits, T, c->vocab_size, T, pos0, seq0, "logits");
}

int spruce__head_checked_linear(const spruce_model *m, const spruce_linear *head,
                                const float *x, float *xn, float *logits, int pos0)
{
    const spruce_config *c = &m->cfg;
    char what[160];
    int rc;
    head_norm(m, x, 1, xn);
    snprintf(what, sizeof what, "%s (final norm) output", m->fam->final_norm);
    if ((rc = spruce__check_rows(xn, 1, c->hidden_size, 1, pos0, 0, what)) ||
        (rc = spruce_linear_forward(head, xn, 1, logits)))
        return rc;
    if (c->final_softcap > 0)
        spruce__softcap(logits, (size_t)c->vocab_size, (float)c->final_softcap);
    return spruce__check_rows(logits, 1, c->vocab_size, 1, pos0, 0, "logits");
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
    if ((rc = spruce_model_embed(m, ids, T, x)) ||
        (rc = spruce__run_blocks(m, x, 1, T, 0, NULL, NULL)) ||
        (rc = spruce__head_checked(m, x, T, xn, logits, 0, 0)))
        goto done;
done:
    free(x);
    free(xn);
    return rc;
}
