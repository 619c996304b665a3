/* linears.c: the runtime's linear layers of a model's blocks, from a
 * checkpoint's values: a quantized module's own levels where a value type
 * holds them (never quantized again), else its floats in the type asked; and
 * those values in float32 for the batched forward (the perplexity in a value
 * type). */
#include <stdlib.h>
#include <string.h>

#include "spruce_ckpt.h"
#include "spruce_qmatrix.h"
#include "spruce_sparse.h"

#include "block.h"
#include "model_internal.h"
#include "spruce_decode.h"

/* The value type that holds a quantized module's levels as they are: int4
 * for at most 4 bits (per group of 32..256 columns, a multiple of 32, or per
 * row: one scale repeated over groups of 128), int8 for a grid per row of
 * more bits; -1 for neither (more than 4 bits in groups: such a module is
 * decoded to floats and runs in its scale's type). */
int spruce__levels_dtype(const spruce_ckpt_qscheme *s, int64_t cols)
{
    if (s->bits <= 4 && (s->groupsize == 0 || s->groupsize == cols ||
                         (s->groupsize >= 32 && s->groupsize <= 256 && s->groupsize % 32 == 0)))
        return SPRUCE_DT_INT4;
    if (s->groupsize == 0 || s->groupsize == cols)
        return SPRUCE_DT_INT8;
    return -1;
}

/* Rows [r0, r0 + rows) of quantized module t as a matrix of levels_dtype:
 * the checkpoint's levels, scales and zero points, not quantized again. */
int spruce__levels_qmatrix(const spruce_tensor *t, const spruce_ckpt_qscheme *s, int dtype,
                          int r0, int rows, spruce_qmatrix **out)
{
    const int cols = (int)t->shape[1];
    const int ng = s->groupsize && s->groupsize != cols ? cols / s->groupsize : 1;
    spruce_qmatrix *Q = NULL;
    int8_t *q = NULL, *zp = NULL;
    float *sc = NULL;
    int rc, r, j, g;
    *out = NULL;
    if ((rc = spruce_ckpt_read_levels(t, &q, &sc, &zp)))
        return rc;
    if (!(Q = calloc(1, sizeof *Q))) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "tensor %s", t->name);
        goto done;
    }
    Q->dtype = dtype, Q->rows = rows, Q->cols = cols;
    if (dtype == SPRUCE_DT_INT8) {
        Q->ngroups = 1;
        Q->ld = (size_t)cols;
    } else {
        Q->groupsize = ng > 1 ? s->groupsize : 128;
        Q->ngroups = (cols + Q->groupsize - 1) / Q->groupsize;
        Q->ld = ((size_t)cols + 1) / 2;
    }
    Q->q = calloc((size_t)rows, Q->ld);
    Q->scale = malloc(sizeof *Q->scale * (size_t)rows * Q->ngroups);
    Q->zero = zp ? malloc((size_t)rows * Q->ngroups) : NULL;
    if (!Q->q || !Q->scale || (zp && !Q->zero)) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "tensor %s: (%d, %d) in %s", t->name, rows, cols,
                            spruce_dtype_name(dtype));
        goto done;
    }
    for (r = 0; r < rows; r++) {
        const int8_t *qr = q + (size_t)(r0 + r) * cols;
        uint8_t *dst = Q->q + Q->ld * (size_t)r;
        if (dtype == SPRUCE_DT_INT8)
            memcpy(dst, qr, (size_t)cols);
        else /* u = q + 8, two to a byte, column j in bits 4 (j % 2) of byte j / 2 */
            for (j = 0; j < cols; j++)
                dst[j / 2] |= (uint8_t)((qr[j] + 8) << 4 * (j % 2));
        for (g = 0; g < Q->ngroups; g++) {
            size_t k = (size_t)(r0 + r) * ng + (ng > 1 ? g : 0);
            Q->scale[(size_t)r * Q->ngroups + g] = sc[k];
            if (Q->zero)
                Q->zero[(size_t)r * Q->ngroups + g] =
                    (uint8_t)(dtype == SPRUCE_DT_INT8 ? zp[k] : zp[k] + 8);
        }
    }
done:
    free(q);
    free(sc);
    free(zp);
    if (rc)
        spruce_qmatrix_free(Q);
    else
        *out = Q;
    return rc;
}

/* The checkpoint's tensor behind linear l of block b (the fused tensor of
 * q/k/v, *r0 the row where l's part starts), or NULL. */
const spruce_tensor *spruce__linear_tensor(const spruce_model *m, const spruce_block *b, int l,
                                          int *r0)
{
    const spruce_family *f = m->fam;
    const spruce_tensor *t;
    char name[512];
    int k = l - (f->linear[l].part > 0 ? f->linear[l].part : 0), j;
    *r0 = 0;
    if (k < 0 || spruce_family_linear_name(f, b->layer, (spruce_proj)k, 0, name, sizeof name) >=
                     (int)sizeof name ||
        !(t = spruce_ckpt_find(m->ck, name)))
        return NULL;
    for (j = k; j < l; j++)
        *r0 += b->rows[j];
    if (t->ndim != 2 || t->shape[1] != b->cols[l] || t->shape[0] < *r0 + b->rows[l])
        return NULL;
    return t;
}

/* Linear layer W (rows, cols) of the decoder in the type asked (dtype, or
 * SPRUCE_DECODE_OWN_DTYPE), from t (rows r0.. of it) in the checkpoint:
 * - a quantized module whose levels a value type holds (levels_dtype), when
 *   that type is the one asked or the checkpoint's own is: its levels, scales
 *   and zero points as they are;
 * - else W converted to the type asked; the checkpoint's own is t's (bf16
 *   for BF16, float32 otherwise; dflt when there is no t). */
int spruce__linear_make(int dtype, int dflt, const spruce_linear_opts *lo, const float *W,
                        int rows, int cols, const spruce_tensor *t, int r0, spruce_linear **out)
{
    spruce_linear_opts o = *lo;
    spruce_ckpt_qscheme qs;
    int ldt = t && spruce_ckpt_quantized(t, &qs) ? spruce__levels_dtype(&qs, t->shape[1]) : -1, rc;
    if (ldt >= 0 && (dtype == SPRUCE_DECODE_OWN_DTYPE || dtype == ldt)) {
        spruce_qmatrix *Q = NULL;
        if ((rc = spruce__levels_qmatrix(t, &qs, ldt, r0, rows, &Q)))
            return rc;
        rc = spruce_linear_create_quantized(Q, &o, out);
        spruce_qmatrix_free(Q);
        return rc;
    }
    if (dtype != SPRUCE_DECODE_OWN_DTYPE)
        o.dtype = dtype;
    else if (t)
        o.dtype = t->dtype == SPRUCE_DTYPE_BF16 ? SPRUCE_DT_BF16 : SPRUCE_DT_F32;
    else
        o.dtype = dflt;
    return spruce_linear_create(W, rows, cols, &o, out);
}

/* ---- the batched forward on their values ------------------------------------ */

int spruce__linear_values(int dtype, int groupsize, const float *W, int rows, int cols,
                          const spruce_tensor *t, int r0, float *V)
{
    spruce_ckpt_qscheme qs;
    spruce_qmatrix *Q = NULL;
    int ldt = t && spruce_ckpt_quantized(t, &qs) ? spruce__levels_dtype(&qs, t->shape[1]) : -1, rc;
    if (ldt >= 0 && (dtype == SPRUCE_DECODE_OWN_DTYPE || dtype == ldt)) {
        rc = spruce__levels_qmatrix(t, &qs, ldt, r0, rows, &Q);
    } else {
        const int dt = dtype != SPRUCE_DECODE_OWN_DTYPE ? dtype
                       : t && t->dtype == SPRUCE_DTYPE_BF16 ? SPRUCE_DT_BF16
                                                            : SPRUCE_DT_F32;
        if (dt == SPRUCE_DT_F32 || dt == SPRUCE_DT_BF16) {
            /* float32 as it is; bf16 rounded to nearest even, as the runtime holds it
             * (exact for weights read from bf16) */
            size_t k, n = (size_t)rows * cols;
            for (k = 0; k < n; k++)
                V[k] = dt == SPRUCE_DT_F32 ? W[k] : spruce_bf16_to_f32(spruce_f32_to_bf16(W[k]));
            return 0;
        }
        rc = spruce_qmatrix_quantize(W, rows, cols, dt, groupsize > 0 ? groupsize : 128, 0, &Q);
    }
    if (!rc)
        rc = spruce_qmatrix_dequantize(Q, V);
    spruce_qmatrix_free(Q);
    return rc;
}

/* A copy of W's values in o's type, or NULL after setting the error. */
static float *values(const spruce_decode_opts *o, const float *W, int rows, int cols,
                     const spruce_tensor *t, int r0, int layer, int *rc)
{
    float *V = malloc(sizeof *V * (size_t)rows * cols);
    if (!V) {
        *rc = spruce__seterr(SPRUCE_ENOMEM, "block %d: (%d, %d) weights in %s", layer, rows, cols,
                             spruce_dtype_name(o->dtype));
        return NULL;
    }
    if ((*rc = spruce__linear_values(o->dtype, o->groupsize, W, rows, cols, t, r0, V))) {
        free(V);
        return NULL;
    }
    return V;
}

void spruce__block_values_free(spruce_block *v)
{
    int l;
    if (!v)
        return;
    for (l = 0; l < SPRUCE_NPROJ; l++)
        free(v->w[l]);
    free(v->router);
    for (l = 0; v->expert && l < 3 * v->nexperts; l++)
        free(v->expert[l]);
    free(v->expert);
    memset(v, 0, sizeof *v);
}

int spruce__block_values(const spruce_model *m, const spruce_block *b, const spruce_decode_opts *o,
                         spruce_block *v)
{
    const int hid = m->cfg.hidden_size, w = b->expert_width;
    char name[512];
    int l, e, k, rc = 0;
    *v = *b; /* the norms and biases shared, the linear weights replaced */
    memset(v->w, 0, sizeof v->w);
    memset(v->fused, 0, sizeof v->fused);
    v->router = NULL;
    v->expert = NULL;
    for (l = 0; l < SPRUCE_NPROJ && !rc; l++) {
        const spruce_tensor *t;
        int r0;
        if (!b->w[l])
            continue;
        t = spruce__linear_tensor(m, b, l, &r0);
        v->w[l] = values(o, b->w[l], b->rows[l], b->cols[l], t, r0, b->layer, &rc);
    }
    if (!rc && b->nexperts) {
        if (!(v->expert = calloc((size_t)3 * b->nexperts, sizeof *v->expert))) {
            rc = spruce__seterr(SPRUCE_ENOMEM, "block %d: %d experts", b->layer, b->nexperts);
        } else {
            spruce_family_expert_name(m->fam, b->layer, -1, SPRUCE_NPROJ, name, sizeof name);
            v->router = values(o, b->router, b->nexperts, hid, spruce_ckpt_find(m->ck, name), 0,
                               b->layer, &rc);
        }
        for (e = 0; e < b->nexperts && !rc; e++)
            for (k = 0; k < 3 && !rc; k++) {
                const spruce_tensor *t;
                const int rows = k == 2 ? hid : w, cols = k == 2 ? w : hid;
                spruce_family_expert_name(m->fam, b->layer, e, (spruce_proj)(SPRUCE_PROJ_GATE + k),
                                          name, sizeof name);
                t = spruce_ckpt_find(m->ck, name);
                if (t && (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols))
                    t = NULL;
                v->expert[3 * e + k] = values(o, b->expert[3 * e + k], rows, cols, t, 0, b->layer,
                                              &rc);
            }
    }
    if (rc)
        spruce__block_values_free(v);
    return rc;
}
