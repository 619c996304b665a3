/* decode.c: token-by-token generation with a key/value cache on the runtime's
 * linear layers (dense OpenBLAS or a sparse format, chosen per layer).  The
 * maths is the forward's (block.c) at T = 1 and a position offset. */
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "spruce_ckpt.h"
#include "spruce_qmatrix.h"

#include "block.h"
#include "rope.h"
#include "model_internal.h"
#include "spruce_clock.h"
#include "spruce_decode.h"
#include "spruce_family.h"
#include "spruce_sparse.h"

typedef struct {
    float *attn_norm, *mlp_norm;          /* (hidden) */
    float *attn_norm_b, *mlp_norm_b;      /* (hidden) OPT's LayerNorm biases, or NULL */
    float *q_norm, *k_norm;               /* (head_dim) or NULL */
    float *post_attn_norm, *post_mlp_norm;   /* (hidden) gemma, or NULL */
    int window;                           /* the layer's attention window, 0: none */
    spruce_linear *lin[SPRUCE_NPROJ];
    float *bias[SPRUCE_NPROJ];            /* (rows) or NULL */
    spruce__kv kv;                        /* (KV, head_dim, ld) key and value cache */
    /* A mixture of experts: the router and each expert's gate, up, down
     * (expert[3 e + k]) as linear layers of their own, so that a token reads
     * only the weights of the experts chosen for it. */
    int nexperts;
    spruce_linear *router;
    spruce_linear **expert;
    double *expert_s;                     /* the decoder's expert_s: seconds in the experts */
} dec_layer;

struct spruce_decoder {
    spruce_model *m;
    const spruce_config *c;
    int max_T, pos, nsparse, nlinear, nthreads;
    int dtype;                            /* the linear layers' values (SPRUCE_DT_*) */
    spruce_linear *head;                  /* the head in a value type other than float32,
                                           * or NULL: OpenBLAS on the model's float32 head */
    long prefill_len;                     /* rope table length of a prompt being fed, or 0 */
    dec_layer *layers;
    float *cos, *sin;                     /* (max_T, head_dim / 2) RoPE tables */
    float *cos_local, *sin_local;         /* gemma3's sliding layers, or NULL */
    float *x, *a, *q, *k, *v, *att, *t;   /* (hidden) or (qdim / kvdim) */
    float *g, *u;                         /* (intermediate) */
    float *p;                             /* (nthreads, ld) attention weights */
    float *xn;                            /* (hidden) scratch of the head */
    float *moe_x, *moe_y, *moe_p, *moe_w; /* (hidden), (hidden), (experts), (top-k) */
    int *moe_sel, *moe_tok;               /* (top-k) */
    /* longrope (phi3): the ids fed so far, and whether the tables (and the
     * cache) hold the long factors; see longrope_switch */
    uint32_t *ids;
    int rope_long;
    double expert_s;                      /* seconds in the experts' linear layers since
                                           * create or reset */
};

void spruce_decoder_free(spruce_decoder *d)
{
    int i, l;
    if (!d)
        return;
    free(d->ids);
    spruce_linear_free(d->head);
    if (d->layers) {
        for (i = 0; i < d->c->num_hidden_layers; i++) {
            dec_layer *L = &d->layers[i];
            free(L->attn_norm);
            free(L->mlp_norm);
            free(L->attn_norm_b);
            free(L->mlp_norm_b);
            free(L->q_norm);
            free(L->k_norm);
            free(L->post_attn_norm);
            free(L->post_mlp_norm);
            for (l = 0; l < SPRUCE_NPROJ; l++) {
                spruce_linear_free(L->lin[l]);
                free(L->bias[l]);
            }
            free(L->kv.kt);
            free(L->kv.vt);
            spruce_linear_free(L->router);
            if (L->expert)
                for (l = 0; l < 3 * L->nexperts; l++)
                    spruce_linear_free(L->expert[l]);
            free(L->expert);
        }
        free(d->layers);
    }
    free(d->cos);
    free(d->sin);
    free(d->cos_local);
    free(d->sin_local);
    free(d->x); free(d->a); free(d->q); free(d->k); free(d->v); free(d->att); free(d->t);
    free(d->g); free(d->u); free(d->p); free(d->xn);
    free(d->moe_x); free(d->moe_y); free(d->moe_p); free(d->moe_w); free(d->moe_sel);
    free(d->moe_tok);
    free(d);
}

static float *copy_vec(const float *src, size_t n)
{
    float *p;
    if (!src)
        return NULL;
    p = malloc(n * sizeof(float));
    if (p)
        memcpy(p, src, n * sizeof(float));
    return p;
}

/* The router (dense: it is never pruned) and every expert's linear layers. */
static int experts_create(dec_layer *L, const spruce_model *m, const spruce_block *b,
                          int dtype, int dflt, const spruce_linear_opts *lo, int *nsparse,
                          double *expert_s)
{
    const spruce_config *c = &m->cfg;
    spruce_linear_opts dense = *lo;
    char name[512];
    int e, k, rc, hid = c->hidden_size, w = b->expert_width;
    if (!(L->expert = calloc((size_t)3 * b->nexperts, sizeof *L->expert)))
        return spruce__seterr(SPRUCE_ENOMEM, "decoder block %d: %d experts", b->layer,
                              b->nexperts);
    L->nexperts = b->nexperts;
    L->expert_s = expert_s;
    dense.format = SPRUCE_FMT_DENSE;
    spruce_family_expert_name(m->fam, b->layer, -1, SPRUCE_NPROJ, name, sizeof name);
    if ((rc = spruce__linear_make(dtype, dflt, &dense, b->router, b->nexperts, hid,
                          spruce_ckpt_find(m->ck, name), 0, &L->router)))
        return rc;
    for (e = 0; e < b->nexperts; e++)
        for (k = 0; k < 3; k++) {
            spruce_linear **lin = &L->expert[3 * e + k];
            const spruce_tensor *t;
            spruce_family_expert_name(m->fam, b->layer, e, (spruce_proj)(SPRUCE_PROJ_GATE + k),
                                      name, sizeof name);
            t = spruce_ckpt_find(m->ck, name);
            if (t && (t->ndim != 2 || t->shape[0] != (k == 2 ? hid : w) ||
                      t->shape[1] != (k == 2 ? w : hid)))
                t = NULL;
            if ((rc = spruce__linear_make(dtype, dflt, lo, b->expert[3 * e + k], k == 2 ? hid : w,
                                  k == 2 ? w : hid, t, 0, lin)))
                return rc;
            if (spruce_linear_format(*lin, 1) != SPRUCE_FMT_DENSE)
                (*nsparse)++;
        }
    return 0;
}

void spruce_decode_opts_init(spruce_decode_opts *o)
{
    memset(o, 0, sizeof *o);
    o->mode = SPRUCE_DECODE_AUTO;
    o->dtype = SPRUCE_DECODE_OWN_DTYPE;
    o->groupsize = 128;
}

/* The checkpoint's own value type: that of the first of layer 0's linear
 * weights found: the type of a quantized module's levels (levels_dtype), bf16
 * for BF16 weights (F16's values bf16 would round: float32), else float32. */
static int own_dtype(const spruce_model *m)
{
    char name[512];
    int l;
    if (!m->ck)
        return SPRUCE_DT_F32;
    for (l = 0; l < SPRUCE_NPROJ; l++) {
        const spruce_tensor *t;
        spruce_ckpt_qscheme qs;
        if (spruce_family_linear_name(m->fam, 0, (spruce_proj)l, 0, name, sizeof name) >=
            (int)sizeof name)
            continue;
        if (!(t = spruce_ckpt_find(m->ck, name)))
            continue;
        if (spruce_ckpt_quantized(t, &qs) && spruce__levels_dtype(&qs, t->shape[1]) >= 0)
            return spruce__levels_dtype(&qs, t->shape[1]);
        return t->dtype == SPRUCE_DTYPE_BF16 ? SPRUCE_DT_BF16 : SPRUCE_DT_F32;
    }
    return SPRUCE_DT_F32;
}

/* The head (vocab, hidden) in dtype, row-wise grids (int8: per row), without
 * a float32 copy of the whole: a BF16 head kept as bf16 is copied as it is,
 * any other converted a chunk of rows at a time (OPT's, made in float32 at
 * open with project_out, from that). */
static int head_qmatrix(const spruce_model *m, int dtype, int asym, spruce_qmatrix **out)
{
    const spruce_tensor *t = m->head_t;
    const int rows = m->cfg.vocab_size, cols = m->cfg.hidden_size, chunk = 1024;
    spruce_qmatrix *Q = NULL;
    float *buf = NULL;
    size_t esz;
    int rc = 0, r0;
    *out = NULL;
    if (!t) { /* OPT */
        const float *h;
        if ((rc = spruce__model_head(m, &h)))
            return rc;
        return spruce_qmatrix_quantize(h, rows, cols, dtype, 0, asym, out);
    }
    if (!(Q = calloc(1, sizeof *Q)))
        return spruce__seterr(SPRUCE_ENOMEM, "decoder head");
    Q->dtype = dtype, Q->rows = rows, Q->cols = cols, Q->ngroups = 1;
    Q->ld = (dtype == SPRUCE_DT_BF16 ? 2 : 1) * (size_t)cols;
    if (!(Q->q = malloc(Q->ld * (size_t)rows)) ||
        (dtype != SPRUCE_DT_BF16 && !(Q->scale = malloc(sizeof(float) * (size_t)rows))) ||
        (dtype != SPRUCE_DT_BF16 && asym && !(Q->zero = malloc((size_t)rows)))) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "decoder head: (%d, %d) in %s", rows, cols,
                            spruce_dtype_name(dtype));
        goto done;
    }
    if (dtype == SPRUCE_DT_BF16 && t->dtype == SPRUCE_DTYPE_BF16 && t->data) {
        memcpy(Q->q, t->data, Q->ld * (size_t)rows);
        spruce_ckpt_release(m->ck, t);
        goto done;
    }
    esz = t->nbytes / ((size_t)rows * cols);
    if (!(buf = malloc(sizeof *buf * (size_t)chunk * cols))) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "decoder head");
        goto done;
    }
    for (r0 = 0; r0 < rows && !rc; r0 += chunk) {
        const int n = rows - r0 < chunk ? rows - r0 : chunk;
        spruce_qmatrix *P = NULL;
        if ((rc = spruce_tensor_read_f32_range(t, (size_t)r0 * cols, (size_t)n * cols, buf)) ||
            (rc = spruce_qmatrix_quantize(buf, n, cols, dtype, 0, asym, &P)))
            break;
        memcpy(Q->q + Q->ld * (size_t)r0, P->q, Q->ld * (size_t)n);
        if (Q->scale)
            memcpy(Q->scale + r0, P->scale, sizeof(float) * (size_t)n);
        if (Q->zero)
            memcpy(Q->zero + r0, P->zero, (size_t)n);
        spruce_qmatrix_free(P);
        spruce_ckpt_release_range(m->ck, t, (size_t)r0 * cols * esz, (size_t)n * cols * esz);
    }
done:
    free(buf);
    if (rc)
        spruce_qmatrix_free(Q);
    else
        *out = Q;
    return rc;
}

/* The head as a dense linear layer in the decoder's type (int4: int8, per
 * row: a 4-bit head costs more quality than the layers' 4 bits); none for
 * float32. */
static int head_create(spruce_decoder *d, const spruce_decode_opts *o)
{
    const spruce_tensor *t = d->m->head_t;
    spruce_linear_opts lo;
    spruce_qmatrix *Q = NULL;
    spruce_ckpt_qscheme qs;
    int rc, dt = d->dtype == SPRUCE_DT_INT4 ? SPRUCE_DT_INT8 : d->dtype, ldt = -1;
    if (t && spruce_ckpt_quantized(t, &qs))
        ldt = spruce__levels_dtype(&qs, t->shape[1]);
    if (o->dtype == SPRUCE_DECODE_OWN_DTYPE && dt > SPRUCE_DT_BF16 && ldt < 0)
        /* the type of quantized layers: the head's own is not quantized again */
        dt = t && t->dtype == SPRUCE_DTYPE_BF16 ? SPRUCE_DT_BF16 : SPRUCE_DT_F32;
    if (ldt >= 0 && (o->dtype == SPRUCE_DECODE_OWN_DTYPE || o->dtype == ldt)) {
        if ((rc = spruce__levels_qmatrix(t, &qs, ldt, 0, (int)t->shape[0], &Q)))
            return rc;
    } else if (dt == SPRUCE_DT_F32) {
        return 0;
    } else if ((rc = head_qmatrix(d->m, dt, o->asym, &Q))) {
        return rc;
    }
    spruce_linear_opts_init(&lo);
    lo.format = SPRUCE_FMT_DENSE;
    lo.nbatches = 1;
    lo.batches[0] = 1;
    rc = spruce_linear_create_quantized(Q, &lo, &d->head);
    spruce_qmatrix_free(Q);
    return rc;
}

int spruce_decoder_create(spruce_model *m, int max_T, spruce_decode_mode mode,
                          spruce_decoder **out)
{
    spruce_decode_opts o;
    spruce_decode_opts_init(&o);
    o.mode = mode;
    return spruce_decoder_create_opts(m, max_T, &o, out);
}

int spruce_decoder_create_opts(spruce_model *m, int max_T, const spruce_decode_opts *opts,
                               spruce_decoder **out)
{
    spruce_decoder *d;
    spruce_linear_opts lo;
    const spruce_config *c;
    size_t hid, qdim, kvdim, half, ld;
    int rc = 0, i, l, inter;
    spruce_decode_mode mode;
    if (!m || !out || !opts || max_T <= 0)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_decoder_create: bad argument");
    if (opts->dtype != SPRUCE_DECODE_OWN_DTYPE &&
        (opts->dtype < SPRUCE_DT_F32 || opts->dtype > SPRUCE_DT_INT4))
        return spruce__seterr(SPRUCE_EINVAL, "decoder: unknown value type %d", opts->dtype);
    mode = opts->mode;
    *out = NULL;
    c = spruce_model_config(m);
    d = calloc(1, sizeof *d);
    if (!d)
        return spruce__seterr(SPRUCE_ENOMEM, "decoder");
    d->m = m;
    d->c = c;
    d->max_T = max_T;
    d->nthreads = spruce__max_threads();
    d->dtype = opts->dtype == SPRUCE_DECODE_OWN_DTYPE ? own_dtype(m) : opts->dtype;
    hid = (size_t)c->hidden_size;
    qdim = (size_t)c->num_attention_heads * (size_t)c->head_dim;
    kvdim = (size_t)c->num_key_value_heads * (size_t)c->head_dim;
    half = (size_t)c->head_dim / 2;
    ld = spruce__kv_ld((size_t)max_T);
    d->layers = calloc((size_t)c->num_hidden_layers, sizeof *d->layers);
    d->cos = malloc((size_t)max_T * half * sizeof(float));
    d->sin = malloc((size_t)max_T * half * sizeof(float));
    d->x = malloc(hid * sizeof(float));
    d->a = malloc(hid * sizeof(float));
    d->t = malloc(hid * sizeof(float));
    d->xn = malloc(hid * sizeof(float));
    d->q = malloc(qdim * sizeof(float));
    d->att = malloc(qdim * sizeof(float));
    d->k = malloc(kvdim * sizeof(float));
    d->v = malloc(kvdim * sizeof(float));
    inter = c->intermediate_size > c->moe_intermediate_size ? c->intermediate_size
                                                             : c->moe_intermediate_size;
    d->g = malloc((size_t)inter * sizeof(float));
    d->u = malloc((size_t)inter * sizeof(float));
    d->p = malloc((size_t)d->nthreads * ld * sizeof(float));
    d->ids = malloc((size_t)max_T * sizeof *d->ids);
    if (!d->ids || !d->layers || !d->cos || !d->sin || !d->x || !d->a || !d->t || !d->xn || !d->q ||
        !d->att || !d->k || !d->v || !d->g || !d->u || !d->p) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "decoder buffers");
        goto done;
    }
    if (c->num_experts > 0) {
        size_t E = (size_t)c->num_experts, K = (size_t)c->num_experts_per_tok;
        d->moe_x = malloc(hid * sizeof(float));
        d->moe_y = malloc(hid * sizeof(float));
        d->moe_p = malloc(E * sizeof(float));
        d->moe_w = malloc(K * sizeof(float));
        d->moe_sel = malloc(K * sizeof(int));
        d->moe_tok = malloc(K * sizeof(int));
        if (!d->moe_x || !d->moe_y || !d->moe_p || !d->moe_w || !d->moe_sel || !d->moe_tok) {
            rc = spruce__seterr(SPRUCE_ENOMEM, "decoder buffers");
            goto done;
        }
    }
    /* the tables of the batched forward's workspace; dynamic rope fills the
     * row of each position when it is decoded (spruce_decoder_step) */
    if ((rc = spruce__rope_fill(c, spruce__rope_table_len(c, 1), 0, max_T, d->cos, d->sin)) ||
        (rc = spruce__rope_local_tables(c, max_T, &d->cos_local, &d->sin_local)))
        goto done;

    spruce_linear_opts_init(&lo);
    lo.nbatches = 1;
    lo.batches[0] = 1;
    lo.dtype = d->dtype;
    lo.groupsize = opts->groupsize > 0 ? opts->groupsize : 128;
    lo.asym = opts->asym;
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
        L->attn_norm_b = copy_vec(b->attn_norm_b, hid);
        L->mlp_norm_b = copy_vec(b->mlp_norm_b, hid);
        L->q_norm = copy_vec(b->q_norm, (size_t)c->head_dim);
        L->k_norm = copy_vec(b->k_norm, (size_t)c->head_dim);
        L->post_attn_norm = copy_vec(b->post_attn_norm, hid);
        L->post_mlp_norm = copy_vec(b->post_mlp_norm, hid);
        L->window = spruce_config_layer_window(c, i);
        /* zeroed: the attention reads whole groups of 8 positions */
        L->kv.ld = ld;
        L->kv.kt = calloc(kvdim * ld, sizeof(float));
        L->kv.vt = calloc(kvdim * ld, sizeof(float));
        if ((b->attn_norm && !L->attn_norm) || (b->mlp_norm && !L->mlp_norm) || !L->kv.kt ||
            !L->kv.vt ||
            (b->q_norm && !L->q_norm) || (b->k_norm && !L->k_norm) ||
            (b->attn_norm_b && !L->attn_norm_b) || (b->mlp_norm_b && !L->mlp_norm_b) ||
            (b->post_attn_norm && !L->post_attn_norm) || (b->post_mlp_norm && !L->post_mlp_norm))
            rc = spruce__seterr(SPRUCE_ENOMEM, "decoder block %d", i);
        for (l = 0; !rc && l < SPRUCE_NPROJ; l++) {
            if (b->nexperts && l >= SPRUCE_PROJ_GATE)
                break;   /* the experts below */
            if (!b->w[l])
                continue;   /* OPT's gate: none */
            if (b->b[l] && !(L->bias[l] = copy_vec(b->b[l], (size_t)b->rows[l]))) {
                rc = spruce__seterr(SPRUCE_ENOMEM, "decoder block %d", i);
            } else {
                int r0;
                const spruce_tensor *t = spruce__linear_tensor(m, b, l, &r0);
                rc = spruce__linear_make(opts->dtype, d->dtype, &lo, b->w[l], b->rows[l], b->cols[l], t,
                                 r0, &L->lin[l]);
            }
            if (!rc && spruce_linear_format(L->lin[l], 1) != SPRUCE_FMT_DENSE)
                d->nsparse++;
            d->nlinear += !rc;
        }
        if (!rc && b->nexperts) {
            rc = experts_create(L, m, b, opts->dtype, d->dtype, &lo, &d->nsparse, &d->expert_s);
            d->nlinear += 1 + 3 * b->nexperts;
        }
        spruce_model_put_block(m, b);
        if (rc)
            goto done;
    }
    if ((rc = head_create(d, opts)))
        goto done;
#ifdef __GLIBC__
    /* the blocks' float32 copies and the levels, freed, stay in the heap
     * otherwise: the resident set would keep a block's worth beyond the
     * weights held */
    malloc_trim(0);
#endif
    *out = d;
    return 0;
done:
    spruce_decoder_free(d);
    return rc;
}

void spruce_decoder_reset(spruce_decoder *d)
{
    if (!d)
        return;
    d->pos = 0;
    d->expert_s = 0;
    if (d->rope_long && !spruce__rope_fill(d->c, 0, 0, d->max_T, d->cos, d->sin))
        d->rope_long = 0;   /* short factors again (on ENOMEM they stay long, and so
                             * does rope_long: the next crossing is then skipped) */
}

/* longrope as transformers' generate runs it (modeling_phi3.py:
 * Phi3ForCausalLM.prepare_inputs_for_generation, longrope_frequency_update):
 * a sequence within original_max_position_embeddings rotates with the short
 * factors; the first time it grows beyond, the cache is dropped and the whole
 * sequence recomputed with the long factors, which every later token uses.
 * So the logits at each step are those of the forward of the sequence so far.
 * Called before the token at d->pos is fed (prefill_len: the prompt's end). */
static int longrope_switch(spruce_decoder *d)
{
    const spruce_config *c = d->c;
    int n = d->pos, i, rc;
    if (c->rope.type != SPRUCE_ROPE_LONGROPE || d->rope_long ||
        (spruce__rope_table_len(c, (long)d->pos + 1) == 0 && d->prefill_len == 0))
        return 0;
    if ((rc = spruce__rope_fill(c, (long)c->rope.original_max_position_embeddings + 1, 0,
                                d->max_T, d->cos, d->sin)))
        return rc;
    d->rope_long = 1;
    d->pos = 0;   /* the cached keys rotated with the short factors: recompute them */
    for (i = 0; i < n; i++)
        if ((rc = spruce_decoder_step(d, d->ids[i], NULL)))
            return rc;
    return 0;
}

int spruce_decoder_pos(const spruce_decoder *d)
{
    return d ? d->pos : 0;
}

int spruce_decoder_sparse_layers(const spruce_decoder *d)
{
    return d ? d->nsparse : 0;
}

int spruce_decoder_linear_layers(const spruce_decoder *d)
{
    return d ? d->nlinear : 0;
}

const spruce_linear *spruce_decoder_linear(const spruce_decoder *d, int layer, int proj)
{
    if (!d || layer < 0 || layer >= d->c->num_hidden_layers || proj < 0 || proj >= SPRUCE_NPROJ)
        return NULL;
    return d->layers[layer].lin[proj];
}

int spruce_decoder_dtype(const spruce_decoder *d)
{
    return d ? d->dtype : -1;
}

size_t spruce_decoder_weight_bytes(const spruce_decoder *d)
{
    size_t s = 0;
    int i, l;
    if (!d)
        return 0;
    for (i = 0; i < d->c->num_hidden_layers; i++) {
        const dec_layer *L = &d->layers[i];
        for (l = 0; l < SPRUCE_NPROJ; l++)
            s += spruce_linear_bytes(L->lin[l]);
        s += spruce_linear_bytes(L->router);
        for (l = 0; L->expert && l < 3 * L->nexperts; l++)
            s += spruce_linear_bytes(L->expert[l]);
    }
    if (d->head)
        s += spruce_linear_bytes(d->head);
    else /* OpenBLAS on the model's float32 head (OPT's made at open) */
        s += (size_t)d->c->vocab_size * d->c->hidden_size * sizeof(float);
    return s;
}

/* Y (ntok, rows) = X W^T (+ b) for linear l of the dec_layer at ctx. */
static int dec_linear(void *ctx, spruce_proj l, const float *X, int ntok, float *Y)
{
    const dec_layer *L = ctx;
    int rc = spruce_linear_forward(L->lin[l], X, ntok, Y);
    if (!rc && L->bias[l])
        spruce__add_bias(Y, L->bias[l], ntok, spruce_linear_rows(L->lin[l]));
    return rc;
}

/* The router (e = -1) or expert e's gate, up, down (k) of the dec_layer at ctx. */
static int dec_expert(void *ctx, int e, int k, const float *X, int ntok, float *Y)
{
    const dec_layer *L = ctx;
    double t0;
    int rc;
    if (e < 0)
        return spruce_linear_forward(L->router, X, ntok, Y);
    t0 = spruce_clock_now();
    rc = spruce_linear_forward(L->expert[3 * e + k], X, ntok, Y);
    *L->expert_s += spruce_clock_now() - t0;
    return rc;
}

double spruce_decoder_expert_seconds(const spruce_decoder *d)
{
    return d ? d->expert_s : 0;
}

int spruce_decoder_step(spruce_decoder *d, uint32_t id, float *logits)
{
    const spruce_config *c;
    spruce__block_run r;
    long L;
    int rc, i;
    if (!d)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_decoder_step: NULL decoder");
    c = d->c;
    if (d->pos >= d->max_T)
        return spruce__seterr(SPRUCE_EINVAL, "decoder: the cache holds %d positions", d->max_T);
    if ((rc = longrope_switch(d)))
        return rc;
    if ((rc = spruce__model_embed_at(d->m, &id, 1, d->pos, d->x)))
        return rc;
    d->ids[d->pos] = id;
    /* dynamic rope, as transformers' dynamic_rope_update with a cache: the
     * token at pos rotates with the frequencies of a pos + 1 token sequence
     * (of the whole prompt, inside spruce_decoder_prefill), the cached keys
     * keep theirs */
    L = spruce__rope_table_len(c, d->pos + 1);
    if (d->prefill_len > L)
        L = d->prefill_len;
    if (L != spruce__rope_table_len(c, 1) &&
        (rc = spruce__rope_fill(c, L, d->pos, 1, d->cos + (size_t)d->pos * (c->head_dim / 2),
                                d->sin + (size_t)d->pos * (c->head_dim / 2))))
        return rc;
    /* One token at position pos: x is the residual stream, updated in place;
     * its key and value join the layer's cache. */
    memset(&r, 0, sizeof r);
    r.c = c;
    r.linear = dec_linear;
    r.cos = d->cos;
    r.sin = d->sin;
    r.pos0 = d->pos;
    r.scores = d->p;
    r.nthreads = d->nthreads;
    r.a = d->a; r.q = d->q; r.k = d->k; r.v = d->v; r.att = d->att;
    r.h = d->x; r.t = d->t; r.g = d->g; r.u = d->u;
    r.expert = dec_expert;
    r.moe_x = d->moe_x; r.moe_y = d->moe_y; r.moe_p = d->moe_p; r.moe_w = d->moe_w;
    r.moe_sel = d->moe_sel; r.moe_tok = d->moe_tok;
    /* One token: checking every intermediate costs little beside the
     * matrix-vector products, and x is updated in place (no second run). */
    r.locate = 1;
    for (i = 0; i < c->num_hidden_layers; i++) {
        dec_layer *L = &d->layers[i];
        r.attn_norm = L->attn_norm;
        r.mlp_norm = L->mlp_norm;
        r.attn_norm_b = L->attn_norm_b;
        r.mlp_norm_b = L->mlp_norm_b;
        r.q_norm = L->q_norm;
        r.k_norm = L->k_norm;
        r.post_attn_norm = L->post_attn_norm;
        r.post_mlp_norm = L->post_mlp_norm;
        r.window = L->window;
        r.cos = L->window && d->cos_local ? d->cos_local : d->cos;
        r.sin = L->window && d->sin_local ? d->sin_local : d->sin;
        r.linear_ctx = L;
        r.moe = L->nexperts > 0;
        r.kv = L->kv;
        r.layer = i;
        if ((rc = spruce__block(&r, d->x, 1, 1, NULL, NULL, -1)))
            return rc;
    }
    d->pos++;
    if (logits && d->head)
        return spruce__head_checked_linear(d->m, d->head, d->x, d->xn, logits, d->pos - 1);
    if (logits)
        return spruce__head_checked(d->m, d->x, 1, d->xn, logits, d->pos - 1, 0);
    return 0;
}

int spruce_decoder_prefill(spruce_decoder *d, const uint32_t *ids, int n, float *logits)
{
    int rc = 0, i;
    if (!d || !ids || n <= 0)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_decoder_prefill: bad argument");
    if (d->pos + n > d->max_T)
        return spruce__seterr(SPRUCE_EINVAL, "decoder: %d prompt tokens after %d, the cache "
                              "holds %d positions", n, d->pos, d->max_T);
    d->prefill_len = spruce__rope_table_len(d->c, (long)d->pos + n);
    for (i = 0; i < n && !rc; i++)
        rc = spruce_decoder_step(d, ids[i], i == n - 1 ? logits : NULL);
    d->prefill_len = 0;
    return rc;
}
