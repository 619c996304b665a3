/* weights.c: opening a checkpoint as a model: config.json, every tensor the
 * forward reads checked against the shape the config implies (the family
 * table, spruce_family.h, names them), the final norm in float32, the
 * embedding read by rows, the head in float32 when logits are first needed,
 * and the blocks read to float32 one at a time or cached. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "block.h"
#include "opt.h"
#include "model_internal.h"
#include "spruce_half.h"

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

/* SPRUCE_ENAN naming t's first non-finite value among p[0, n), elements
 * [first, first + n) of t; 0 when all are finite. */
static int check_finite(const spruce_ckpt *ck, const spruce_tensor *t, const float *p, size_t n,
                        size_t first)
{
    size_t i;
    int64_t cols = t->ndim == 2 ? t->shape[1] : spruce_tensor_numel(t), at;
    for (i = 0; i < n; i++)
        if (!isfinite(p[i]))
            break;
    if (i == n)
        return 0;
    at = (int64_t)(first + i);
    return spruce__seterr(SPRUCE_ENAN, "file %s: tensor %s: non-finite value at row %lld, "
                          "column %lld", spruce_ckpt_file_of(ck, t), t->name,
                          (long long)(at / cols), (long long)(at % cols));
}

/* A float32 copy of t, checked for NaN/Inf; t's file pages are given back. */
static int read_tensor(const spruce_ckpt *ck, const spruce_tensor *t, float **out)
{
    int64_t n = spruce_tensor_numel(t);
    float *p;
    int rc;
    *out = NULL;
    p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!p)
        return spruce__seterr(SPRUCE_ENOMEM, "file %s: tensor %s: %lld floats",
                              spruce_ckpt_file_of(ck, t), t->name, (long long)n);
    rc = spruce_tensor_read_f32(t, p);
    if (!rc)
        rc = check_finite(ck, t, p, (size_t)n, 0);
    spruce_ckpt_release(ck, t);
    if (rc) {
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

/* Check t for NaN/Inf chunk by chunk without a float32 copy of it (the
 * embedding and head of a large vocabulary: 4 bytes x V x hidden). */
static int scan_tensor(const spruce_ckpt *ck, const spruce_tensor *t)
{
    enum { SCAN = 65536 };
    size_t n = (size_t)spruce_tensor_numel(t), i, k;
    float *buf = malloc(SCAN * sizeof *buf);
    int rc = 0;
    if (!buf)
        return spruce__seterr(SPRUCE_ENOMEM, "file %s: tensor %s: scan buffer",
                              spruce_ckpt_file_of(ck, t), t->name);
    for (i = 0; i < n && !rc; i += k) {
        k = n - i < SCAN ? n - i : SCAN;
        if (!(rc = spruce_tensor_read_f32_range(t, i, k, buf)))
            rc = check_finite(ck, t, buf, k, i);
    }
    spruce_ckpt_release(ck, t);
    free(buf);
    return rc;
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
    free(b->attn_norm_b);
    free(b->mlp_norm_b);
    free(b->q_norm);
    free(b->k_norm);
    free(b->post_attn_norm);
    free(b->post_mlp_norm);
    for (l = 0; l < SPRUCE_NPROJ; l++) {
        if (!b->fused[l])
            free(b->w[l]);
        free(b->b[l]);
    }
    if (b->expert)
        for (l = 0; l < 3 * b->nexperts; l++)
            free(b->expert[l]);
    free(b->expert);
    free(b->router);
    free(b);
}

/* A mixture-of-experts block's router and experts (spruce_block). */
static int experts_read(const spruce_model *m, spruce_block *b)
{
    const spruce_config *c = &m->cfg;
    int e, k, rc, hid = c->hidden_size, mi = c->moe_intermediate_size;
    char name[256];
    if (!(b->expert = calloc((size_t)3 * c->num_experts, sizeof *b->expert)))
        return spruce__seterr(SPRUCE_ENOMEM, "block %d: %d experts", b->layer, c->num_experts);
    b->nexperts = c->num_experts;
    b->expert_width = mi;
    spruce_family_expert_name(m->fam, b->layer, -1, SPRUCE_NPROJ, name, sizeof name);
    if ((rc = load_named(m->ck, name, c->num_experts, hid, &b->router)))
        return rc;
    for (e = 0; e < c->num_experts; e++)
        for (k = 0; k < 3; k++) {
            spruce_family_expert_name(m->fam, b->layer, e, (spruce_proj)(SPRUCE_PROJ_GATE + k),
                                      name, sizeof name);
            if ((rc = load_named(m->ck, name, k == 2 ? hid : mi, k == 2 ? mi : hid,
                                 &b->expert[3 * e + k])))
                return rc;
        }
    return 0;
}

static int block_read(const spruce_model *m, int layer, spruce_block **out)
{
    const spruce_config *c = &m->cfg;
    const spruce_family *f = m->fam;
    spruce_block *b;
    char name[256];
    int l, rc;
    *out = NULL;
    b = calloc(1, sizeof *b);
    if (!b)
        return spruce__seterr(SPRUCE_ENOMEM, "block %d", layer);
    b->layer = layer;
    /* the two norms (OPT: with biases; none without elementwise affine) */
    spruce_family_norm_name(f, layer, f->attn_norm, name, sizeof name);
    if (!c->no_norm_affine && (rc = load_named(m->ck, name, c->hidden_size, -1, &b->attn_norm)))
        goto done;
    spruce_family_norm_name(f, layer, f->mlp_norm, name, sizeof name);
    if (!c->no_norm_affine && (rc = load_named(m->ck, name, c->hidden_size, -1, &b->mlp_norm)))
        goto done;
    if (f->opt && !c->no_norm_affine) {
        spruce_family_norm_bias_name(f, layer, f->attn_norm, name, sizeof name);
        if ((rc = load_named(m->ck, name, c->hidden_size, -1, &b->attn_norm_b)))
            goto done;
        spruce_family_norm_bias_name(f, layer, f->mlp_norm, name, sizeof name);
        if ((rc = load_named(m->ck, name, c->hidden_size, -1, &b->mlp_norm_b)))
            goto done;
    }
    if (f->q_norm) {   /* per-head norms of q and k (qwen3) */
        spruce_family_norm_name(f, layer, f->q_norm, name, sizeof name);
        if ((rc = load_named(m->ck, name, c->head_dim, -1, &b->q_norm)))
            goto done;
        spruce_family_norm_name(f, layer, f->k_norm, name, sizeof name);
        if ((rc = load_named(m->ck, name, c->head_dim, -1, &b->k_norm)))
            goto done;
    }
    if (f->post_attn_norm) {   /* gemma: norms of the branch outputs */
        spruce_family_norm_name(f, layer, f->post_attn_norm, name, sizeof name);
        if ((rc = load_named(m->ck, name, c->hidden_size, -1, &b->post_attn_norm)))
            goto done;
        spruce_family_norm_name(f, layer, f->post_mlp_norm, name, sizeof name);
        if ((rc = load_named(m->ck, name, c->hidden_size, -1, &b->post_mlp_norm)))
            goto done;
    }
    if (spruce_config_layer_moe(c, layer) && (rc = experts_read(m, b)))
        goto done;
    for (l = 0; l < SPRUCE_NPROJ; l++) {
        size_t rows, cols;
        if (b->nexperts && l >= SPRUCE_PROJ_GATE)
            break;   /* the experts stand for gate/up/down */
        spruce_family_linear_shape(f, c, (spruce_proj)l, &rows, &cols);
        b->rows[l] = (int)rows;   /* config.c keeps every width below 2^30 */
        b->cols[l] = (int)cols;
        if (!f->linear[l].path)   /* OPT's gate: none (w NULL) */
            continue;
        if (f->linear[l].part > 0) {   /* the rows after the previous part's */
            b->w[l] = b->w[l - 1] + (size_t)b->rows[l - 1] * b->cols[l - 1];
            b->fused[l] = 1;
            continue;
        }
        spruce_family_linear_name(f, layer, (spruce_proj)l, 0, name, sizeof name);
        if ((rc = load_named(m->ck, name,
                             (int64_t)spruce_family_tensor_rows(f, c, (spruce_proj)l),
                             b->cols[l], &b->w[l])))
            goto done;
        if (spruce_family_linear_has_bias(f, c, (spruce_proj)l)) {
            spruce_family_linear_name(f, layer, (spruce_proj)l, 1, name, sizeof name);
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

/* Every tensor of the family table is present with the shape the config
 * implies (the head only when not tied, reported below). */
static int check_tensors(const spruce_model *m)
{
    spruce_family_tensor ft;
    const spruce_tensor *t;
    size_t i;
    int rc;
    for (i = 0; (rc = spruce_family_tensor_at(&m->cfg, i, &ft)) == 1; i++) {
        if (ft.role == SPRUCE_TENSOR_EMBED || ft.role == SPRUCE_TENSOR_HEAD ||
            (ft.role == SPRUCE_TENSOR_PROJ && !strcmp(ft.name, m->fam->project_out)))
            continue;   /* read (and checked) by spruce_model_open */
        if ((rc = find_checked(m->ck, ft.name, (int64_t)ft.shape[0],
                               ft.ndim == 2 ? (int64_t)ft.shape[1] : -1, &t)))
            return rc;
    }
    return rc;
}

/* The block index of "<layers>.<i>.<rest>", or -1 for any other name. */
static long block_of(const spruce_family *f, const char *name)
{
    size_t n = strlen(f->layers);
    const char *p = name + n;
    long i = 0;
    if (strncmp(name, f->layers, n) || *p != '.' || p[1] < '0' || p[1] > '9')
        return -1;
    for (p++; *p >= '0' && *p <= '9'; p++)
        if ((i = i * 10 + (*p - '0')) > (long)1 << 30)
            return -1;
    return *p == '.' ? i : -1;
}

/* No block beyond num_hidden_layers: a config that drops layers the
 * checkpoint holds would run another model than the checkpoint's. */
static int check_layer_count(const spruce_model *m)
{
    const spruce_tensor *first = NULL;
    long L = m->cfg.num_hidden_layers, low = -1, top = -1, b;
    char blocks[64];
    int i, n = spruce_ckpt_count(m->ck), extra = 0;
    for (i = 0; i < n; i++) {
        const spruce_tensor *t = spruce_ckpt_tensor_at(m->ck, i);
        if ((b = block_of(m->fam, t->name)) < L)
            continue;
        if (!first || b < low) {
            first = t;
            low = b;
        }
        top = b > top ? b : top;
        extra++;
    }
    if (!first)
        return 0;
    if (top > low)
        snprintf(blocks, sizeof blocks, "blocks %ld..%ld", low, top);
    else
        snprintf(blocks, sizeof blocks, "block %ld", low);
    return spruce__seterr(SPRUCE_ESHAPE, "checkpoint %s: %s.%ld.* present but config.json "
                          "num_hidden_layers is %ld (%d tensors of %s, e.g. %s in %s)",
                          spruce_ckpt_dir(m->ck), m->fam->layers, low, L, extra, blocks,
                          first->name, spruce_ckpt_file_of(m->ck, first));
}

/* Y (n, cols) = A (n, k) B (k, cols), row-major, into a new array. */
static int matmul_new(const float *A, const float *B, size_t n, size_t k, size_t cols,
                      const char *what, float **out)
{
    float *Y = malloc((n * cols > 0 ? n * cols : 1) * sizeof(float));
    *out = Y;
    if (!Y)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: %zu x %zu floats", what, n, cols);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)cols, (int)k, 1.0f, A,
                (int)k, B, (int)cols, 0.0f, Y, (int)cols);
    return 0;
}

/* OPT (modeling_opt.py: OPTDecoder, OPTForCausalLM): the token embedding E
 * (vocab, e) with e = word_embed_proj_dim, the positional table, the final
 * LayerNorm (pre-norm models) and the head (E when tied, else lm_head).  Where
 * e differs from hidden_size, the embedding is kept as E project_in^T and the
 * head as head project_out, both (vocab, hidden), so that the forward's
 * x = project_in(E[id]) and logits = head(project_out(x)) are one row each. */
static int opt_open(spruce_model *m)
{
    const spruce_config *c = &m->cfg;
    const spruce_family *f = m->fam;
    size_t V = (size_t)c->vocab_size, H = (size_t)c->hidden_size;
    size_t e = c->word_embed_proj_dim > 0 ? (size_t)c->word_embed_proj_dim : H;
    float *E = NULL, *raw = NULL, *P = NULL;
    int rc;
    if ((rc = load_named(m->ck, f->embed, (int64_t)V, (int64_t)e, &E)) ||
        (rc = load_named(m->ck, f->positions, (int64_t)c->max_position_embeddings + 2,
                         (int64_t)H, &m->positions)))
        goto done;
    if (!c->no_final_norm && !c->no_norm_affine &&
        ((rc = load_named(m->ck, f->final_norm, (int64_t)H, -1, &m->norm)) ||
         (rc = load_named(m->ck, f->final_norm_bias, (int64_t)H, -1, &m->norm_b))))
        goto done;
    if (!c->tie_word_embeddings) {
        if (!spruce_ckpt_find(m->ck, f->head)) {
            rc = spruce__seterr(SPRUCE_ENOTFOUND, "checkpoint %s: tensor %s is missing and "
                                "config.json sets tie_word_embeddings false",
                                spruce_ckpt_dir(m->ck), f->head);
            goto done;
        }
        if ((rc = load_named(m->ck, f->head, (int64_t)V, (int64_t)e, &raw)))
            goto done;
    }
    if (e == H) {
        m->embed = E;
        m->head = raw ? raw : E;
        return 0;
    }
    /* embed (V, H) = E (V, e) project_in^T, project_in being (H, e): P^T is (e, H) */
    if ((rc = load_named(m->ck, f->project_in, (int64_t)H, (int64_t)e, &P)))
        goto done;
    {
        float *Pt = malloc(e * H * sizeof(float));
        size_t i, j;
        if (!Pt) {
            rc = spruce__seterr(SPRUCE_ENOMEM, "%s: %zu floats", f->project_in, e * H);
            goto done;
        }
        for (i = 0; i < H; i++)
            for (j = 0; j < e; j++)
                Pt[j * H + i] = P[i * e + j];
        rc = matmul_new(E, Pt, V, e, H, f->embed, &m->embed);
        free(Pt);
        free(P);
        P = NULL;
        if (rc)
            goto done;
    }
    /* head (V, H) = (E or lm_head) (V, e) project_out (e, H) */
    if ((rc = load_named(m->ck, f->project_out, (int64_t)e, (int64_t)H, &P)) ||
        (rc = matmul_new(raw ? raw : E, P, V, e, H, f->project_out, &m->head)))
        goto done;
done:
    free(E);
    free(raw);
    free(P);
    return rc;
}

static int model_open(const char *dir, int lazy, spruce_model **out)
{
    spruce_model *m = NULL;
    const spruce_config *c;
    const spruce_family *f, *alt;
    int rc;
    if (!dir || !out)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_model_open: NULL argument");
    *out = NULL;
    m = calloc(1, sizeof *m);
    if (!m)
        return spruce__seterr(SPRUCE_ENOMEM, "model %s", dir);
    pthread_mutex_init(&m->head_lock, NULL);
    if ((rc = spruce_config_load(dir, &m->cfg)))
        goto done;
    c = &m->cfg;
    f = m->fam = c->family;
    m->attention = SPRUCE_ATTENTION_AUTO;
    if ((rc = (lazy ? spruce_ckpt_open_lazy : spruce_ckpt_open)(dir, &m->ck)))
        goto done;
    /* another layout of the family when the checkpoint has its names (OPT's
     * decoder.* of facebook/opt-*) */
    for (alt = f; !spruce_ckpt_find(m->ck, f->embed) && (alt = spruce_family_next(alt));)
        if (spruce_ckpt_find(m->ck, alt->embed)) {
            f = m->fam = m->cfg.family = alt;
            break;
        }
    /* Every tensor the forward reads, with the shape the config implies. */
    if ((rc = check_tensors(m)) || (rc = check_layer_count(m)))
        goto done;
    if (f->opt) { /* the embedding and head in float32, projections folded in */
        if ((rc = opt_open(m)))
            goto done;
        *out = m;
        return 0;
    }
    /* The embedding is read by rows and the head converted on first use
     * (spruce__model_head): no float32 copy of V x hidden while pruning.
     * Both are checked for NaN/Inf here, as every other tensor is when read. */
    if ((rc = find_checked(m->ck, f->embed, c->vocab_size, c->hidden_size, &m->embed_t)) ||
        (rc = scan_tensor(m->ck, m->embed_t)) ||
        (rc = load_named(m->ck, f->final_norm, c->hidden_size, -1, &m->norm)))
        goto done;
    if (c->embed_scale > 0) {
        /* Gemma2Model: normalizer = torch.tensor(hidden_size**0.5, dtype=hidden_states.dtype),
         * the embedding's dtype */
        const spruce_tensor *e = m->embed_t;
        if (e->dtype == SPRUCE_DTYPE_BF16)
            m->cfg.embed_scale = spruce_bf16_to_f32(spruce_f32_to_bf16(c->embed_scale));
        else if (e->dtype == SPRUCE_DTYPE_F16)
            m->cfg.embed_scale = spruce_f16_to_f32(spruce_f32_to_f16(c->embed_scale));
    }
    if (c->tie_word_embeddings) {
        m->head_t = m->embed_t;
    } else if (!spruce_ckpt_find(m->ck, f->head)) {
        rc = spruce__seterr(SPRUCE_ENOTFOUND, "checkpoint %s: tensor %s is missing "
                            "and config.json does not set tie_word_embeddings", dir, f->head);
        goto done;
    } else if ((rc = find_checked(m->ck, f->head, c->vocab_size, c->hidden_size, &m->head_t)) ||
               (rc = scan_tensor(m->ck, m->head_t))) {
        goto done;
    }
    *out = m;
    return 0;
done:
    spruce_model_free(m);
    return rc;
}

int spruce_model_open(const char *dir, spruce_model **out)
{
    return model_open(dir, 0, out);
}

int spruce_model_open_lazy(const char *dir, spruce_model **out)
{
    return model_open(dir, 1, out);
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
    free(m->norm_b);
    free(m->positions);
    pthread_mutex_destroy(&m->head_lock);
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

int spruce_model_set_attention(spruce_model *m, spruce_attention a)
{
    int rc;
    if (!m)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_model_set_attention: NULL model");
    if ((rc = spruce__check_attention(a)))
        return rc;
    m->attention = a;
    return 0;
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

int spruce__model_head(const spruce_model *m, const float **head)
{
    /* the model's one lazily filled member, under its lock: the head in
     * float32, converted when logits are first asked for (OPT's is made at
     * open, with project_out folded in) */
    spruce_model *mm = (spruce_model *)m;
    int rc = 0;
    pthread_mutex_lock(&mm->head_lock);
    if (!mm->head)
        rc = read_tensor(mm->ck, mm->head_t, &mm->head);
    *head = mm->head;
    pthread_mutex_unlock(&mm->head_lock);
    return rc;
}

int spruce__model_embed_at(const spruce_model *m, const uint32_t *ids, int T, int pos0,
                           float *x)
{
    int t, hid, rc = 0;
    if (!m || !ids || !x)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_model_embed: NULL argument");
    hid = m->cfg.hidden_size;
    if (m->positions && (long)pos0 + T > m->cfg.max_position_embeddings)
        return spruce__seterr(SPRUCE_EINVAL, "position %ld: %s has rows for positions "
                              "0..%d (max_position_embeddings %d)", (long)pos0 + T - 1,
                              m->fam->positions, m->cfg.max_position_embeddings - 1,
                              m->cfg.max_position_embeddings);
    for (t = 0; t < T && !rc; t++) {
        float *xt = x + (size_t)t * hid;
        int j;
        if (ids[t] >= (uint32_t)m->cfg.vocab_size) {
            rc = spruce__seterr(SPRUCE_EINVAL, "token %u at position %d is outside the "
                                "vocabulary of %d", ids[t], pos0 + t, m->cfg.vocab_size);
            break;
        }
        if (m->embed) /* OPT: the embedding as computed at open */
            memcpy(xt, m->embed + (size_t)ids[t] * hid, (size_t)hid * sizeof(float));
        else {
            size_t esz = m->embed_t->nbytes / (size_t)spruce_tensor_numel(m->embed_t);
            if ((rc = spruce_tensor_read_f32_range(m->embed_t, (size_t)ids[t] * hid,
                                                   (size_t)hid, xt)))
                break;
            /* Give the row's pages back, and the neighbours the kernel mapped
             * with them (fault-around): random ids would otherwise map most of
             * a large embedding into the resident set. */
            spruce_ckpt_release_range(m->ck, m->embed_t, (size_t)ids[t] * hid * esz,
                                      (size_t)hid * esz);
        }
        if (m->cfg.embed_scale > 0)   /* gemma: times sqrt(hidden) */
            for (j = 0; j < hid; j++)
                xt[j] *= m->cfg.embed_scale;
        if (m->positions) {   /* OPTLearnedPositionalEmbedding, unpadded: row p + 2 */
            const float *pr = m->positions + ((size_t)pos0 + t + SPRUCE__OPT_POS_OFFSET) * hid;
            for (j = 0; j < hid; j++)
                xt[j] += pr[j];
        }
    }
    return rc;
}

int spruce_model_embed(const spruce_model *m, const uint32_t *ids, int T, float *x)
{
    return spruce__model_embed_at(m, ids, T, 0, x);
}

/* Run every block over nseq sequences x (nseq, T, hidden) in place. */
