/* compressed_read.c: a compressed-tensors checkpoint decoded on open.
 *
 * Follows vllm-project/compressed-tensors 0.14: config.json's
 * "quantization_config" (quant_method "compressed-tensors", format,
 * config_groups with their "weights" QuantizationArgs, sparsity_config with
 * its format), and the tensor layouts of spruce_compressed.h.  Each module M
 * stored compressed (M.bitmask, M.weight_packed, or M.weight with
 * M.weight_scale) becomes one dense tensor M.weight: the sparse values' dtype
 * for sparse-only layouts, the scale's dtype for quantized ones (as the
 * reference dequantizes in it).  What is not implemented (float or
 * activation quantization, dynamic or tensor-wise scales, other formats) is
 * refused naming it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ckpt_internal.h"
#include "spruce_compressed.h"
#include "spruce_files.h"

static int unsupported(const char *cfg, const char *what, const char *found)
{
    return spruce__seterr(SPRUCE_EUNSUPPORTED, "%s: quantization_config: %s %s is not supported "
                          "(spruce reads int weight quantization, channel or group, in the "
                          "int-quantized and pack-quantized formats, and the sparse-bitmask and "
                          "sparse-24-bitmask sparsity formats)", cfg, what, found);
}

/* One group's "weights" into s; all groups must agree. */
static int read_weights(const char *cfg, const char *gname, json_t *grp, spruce__ct_scheme *s)
{
    json_t *w = json_object_get(grp, "weights"), *v;
    const char *type, *strategy;
    int bits, sym, gs;
    char what[160];
    if ((v = json_object_get(grp, "input_activations")) && !json_is_null(v)) {
        snprintf(what, sizeof what, "config_groups.%s:", gname);
        return unsupported(cfg, what, "input_activations (activation quantization)");
    }
    if ((v = json_object_get(grp, "output_activations")) && !json_is_null(v)) {
        snprintf(what, sizeof what, "config_groups.%s:", gname);
        return unsupported(cfg, what, "output_activations (activation quantization)");
    }
    if (!w || json_is_null(w))
        return 0;
    type = json_string_value(json_object_get(w, "type"));
    strategy = json_string_value(json_object_get(w, "strategy"));
    snprintf(what, sizeof what, "config_groups.%s.weights:", gname);
    if (!type || strcmp(type, "int")) {
        char f[96];
        snprintf(f, sizeof f, "type \"%s\" (%s)", type ? type : "?",
                 type && !strcmp(type, "float") ? "fp8 / float quantization" : "unknown");
        return unsupported(cfg, what, f);
    }
    if (json_is_true(json_object_get(w, "dynamic")))
        return unsupported(cfg, what, "dynamic true");
    if (!strategy || (strcmp(strategy, "channel") && strcmp(strategy, "group"))) {
        char f[96];
        snprintf(f, sizeof f, "strategy \"%s\"", strategy ? strategy : "?");
        return unsupported(cfg, what, f);
    }
    if ((v = json_object_get(w, "actorder")) && json_is_string(v) &&
        !strcmp(json_string_value(v), "group"))
        return unsupported(cfg, what, "actorder \"group\" (weight_g_idx)");
    bits = (int)json_integer_value(json_object_get(w, "num_bits"));
    if (bits < 2 || bits > 8)
        return spruce__seterr(SPRUCE_EFORMAT, "%s: quantization_config: %s num_bits expected 2 "
                              "to 8, found %d", cfg, what, bits);
    sym = json_is_true(json_object_get(w, "symmetric"));
    gs = !strcmp(strategy, "group") ? (int)json_integer_value(json_object_get(w, "group_size")) : 0;
    if (!strcmp(strategy, "group") && gs <= 0)
        return spruce__seterr(SPRUCE_EFORMAT, "%s: quantization_config: %s strategy \"group\" "
                              "needs a positive group_size", cfg, what);
    if (s->bits && (s->bits != bits || s->sym != sym || s->groupsize != gs))
        return unsupported(cfg, "config_groups with different weight schemes:", gname);
    s->bits = bits, s->sym = sym, s->groupsize = gs;
    return 0;
}

static int read_sparsity(const char *cfg, json_t *sc, spruce__ct_scheme *s)
{
    const char *f;
    if (!sc || json_is_null(sc))
        return 0;
    f = json_string_value(json_object_get(sc, "format"));
    if (!f)
        return spruce__seterr(SPRUCE_EFORMAT, "%s: sparsity_config: expected a string \"format\"", cfg);
    if (!strcmp(f, "sparse-bitmask"))
        s->sparse = 1;
    else if (!strcmp(f, "sparse-24-bitmask"))
        s->sparse = 2;
    else if (strcmp(f, "dense")) {
        char b[96];
        snprintf(b, sizeof b, "format \"%s\"", f);
        return unsupported(cfg, "sparsity_config:", b);
    }
    return 0;
}

int spruce__ct_scheme_read(const char *dir, spruce__ct_scheme *s)
{
    char *cfg = spruce__path_join(dir, "config.json");
    json_t *root = NULL, *qc, *groups, *g, *v;
    json_error_t err;
    const char *k, *fmt, *qm;
    int rc = 0;
    memset(s, 0, sizeof *s);
    if (!cfg)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", dir);
    if (spruce__check_regular(cfg)) /* no config.json: a plain set of tensors */
        goto done;
    if (!(root = json_load_file(cfg, JSON_REJECT_DUPLICATES, &err)))
        goto done; /* config.c reports a broken config.json with its line */
    qc = json_object_get(root, "quantization_config");
    if (!qc)
        qc = json_object_get(root, "compression_config");
    if (!json_is_object(qc))
        goto done;
    qm = json_string_value(json_object_get(qc, "quant_method"));
    if (!qm || strcmp(qm, "compressed-tensors")) {
        rc = unsupported(cfg, "quant_method", qm ? qm : "(absent)");
        goto done;
    }
    s->present = 1;
    fmt = json_string_value(json_object_get(qc, "format"));
    if (fmt && strcmp(fmt, "dense") && strcmp(fmt, "int-quantized") &&
        strcmp(fmt, "naive-quantized") && strcmp(fmt, "pack-quantized")) {
        char b[96];
        snprintf(b, sizeof b, "\"%s\"", fmt);
        rc = unsupported(cfg, "format", b);
        goto done;
    }
    s->packed = fmt && !strcmp(fmt, "pack-quantized");
    if ((v = json_object_get(qc, "kv_cache_scheme")) && !json_is_null(v)) {
        rc = unsupported(cfg, "kv_cache_scheme", "(activation quantization)");
        goto done;
    }
    groups = json_object_get(qc, "config_groups");
    if (json_is_object(groups))
        json_object_foreach(groups, k, g)
            if ((rc = read_weights(cfg, k, g, s)))
                goto done;
    if (s->packed && s->bits && 32 % s->bits) {
        char b[64];
        snprintf(b, sizeof b, "with num_bits %d (its layout differs between versions)", s->bits);
        rc = unsupported(cfg, "format pack-quantized", b);
        goto done;
    }
    rc = read_sparsity(cfg, json_object_get(qc, "sparsity_config"), s);
done:
    json_decref(root);
    free(cfg);
    return rc;
}

/* ---- one module ---------------------------------------------------------- */

typedef struct {
    const spruce_ckpt *c;
    const char *prefix;
    char what[1200];
} mod;

static const spruce_tensor *part(mod *m, const char *suffix, char *name, size_t cap)
{
    snprintf(name, cap, "%s.%s", m->prefix, suffix);
    return spruce__ckpt_find_part(m->c, name);
}

static int want(mod *m, const spruce_tensor *t, const char *name, const char *dtype, int ndim,
                int64_t d0, int64_t d1)
{
    const char *file = spruce_ckpt_dir(m->c);
    if (!t)
        return spruce__seterr(SPRUCE_EFORMAT, "%s: tensor %s: missing (compressed-tensors layout "
                              "of %s.weight)", file, name, m->prefix);
    file = spruce_ckpt_file_of(m->c, t);
    if (dtype && strcmp(t->dtype_name, dtype))
        return spruce__seterr(SPRUCE_EDTYPE, "%s: tensor %s: expected dtype %s, found %s", file,
                              name, dtype, t->dtype_name);
    if ((ndim >= 1 && (t->ndim != ndim || t->shape[0] != d0)) ||
        (ndim == 2 && d1 >= 0 && t->shape[1] != d1))
        return spruce__seterr(SPRUCE_ESHAPE, "%s: tensor %s: expected shape (%lld%s%lld%s), found "
                              "%d dimensions (%lld, %lld)", file, name, (long long)d0,
                              ndim == 2 ? ", " : "", ndim == 2 ? (long long)d1 : 0LL,
                              ndim == 2 ? "" : "", t->ndim, t->ndim ? (long long)t->shape[0] : 0LL,
                              t->ndim > 1 ? (long long)t->shape[1] : 0LL);
    return 0;
}

/* M.shape / M.weight_shape: I64 (2) or (2, 1), both positive. */
static int read_shape(mod *m, const char *suffix, int64_t *rows, int64_t *cols)
{
    char name[512];
    const spruce_tensor *t = part(m, suffix, name, sizeof name);
    int64_t v[2];
    int rc;
    if ((rc = want(m, t, name, "I64", 0, 0, 0)))
        return rc;
    if (spruce_tensor_numel(t) != 2 || t->ndim > 2 || (t->ndim == 2 && t->shape[1] != 1))
        return spruce__seterr(SPRUCE_ESHAPE, "%s: tensor %s: expected the two dimensions of the "
                              "weight, I64 (2) or (2, 1)", spruce_ckpt_file_of(m->c, t), name);
    memcpy(v, t->data, sizeof v);
    if (v[0] <= 0 || v[1] <= 0 || v[0] > (1ll << 31) || v[1] > (1ll << 31))
        return spruce__seterr(SPRUCE_EFORMAT, "%s: tensor %s: expected positive dimensions, "
                              "found (%lld, %lld)", spruce_ckpt_file_of(m->c, t), name,
                              (long long)v[0], (long long)v[1]);
    *rows = v[0], *cols = v[1];
    return 0;
}

static int float_es(const spruce_tensor *t)
{
    return t->dtype == SPRUCE_DTYPE_F32 ? 4 : t->dtype == SPRUCE_DTYPE_OTHER ? 0 : 2;
}

/* The sparse layouts: dense (rows, cols) of es bytes from compressed + bitmask. */
static int decode_sparse(mod *m, const spruce__ct_scheme *s, int64_t *rows, int64_t *cols,
                         void **dense, const spruce_tensor **vals_out)
{
    char name[512], bname[512];
    const spruce_tensor *v, *b;
    int64_t nvals;
    int rc, es;
    if ((rc = read_shape(m, "shape", rows, cols)))
        return rc;
    v = part(m, "compressed", name, sizeof name);
    b = part(m, "bitmask", bname, sizeof bname);
    if ((rc = want(m, b, bname, "U8", 2, *rows, (*cols + 7) / 8)) ||
        (rc = want(m, v, name, NULL, 0, 0, 0)))
        return rc;
    es = s->bits ? (strcmp(v->dtype_name, "I8") ? 0 : 1) : float_es(v);
    if (!es)
        return spruce__seterr(SPRUCE_EDTYPE, "%s: tensor %s: expected dtype %s, found %s",
                              spruce_ckpt_file_of(m->c, v), name, s->bits ? "I8" : "F32, F16 or BF16",
                              v->dtype_name);
    nvals = spruce_tensor_numel(v);
    if (s->sparse == 2 && (*cols % 4 || nvals != *rows * *cols / 2 ||
                           (v->ndim == 2 && (v->shape[0] != *rows || v->shape[1] != *cols / 2))))
        return spruce__seterr(SPRUCE_ESHAPE, "%s: tensor %s: expected (%lld, %lld) values of a 2:4 "
                              "matrix of (%lld, %lld), found %lld", spruce_ckpt_file_of(m->c, v),
                              name, (long long)*rows, (long long)*cols / 2, (long long)*rows,
                              (long long)*cols, (long long)nvals);
    if (!(*dense = malloc((size_t)(*rows * *cols) * (size_t)es)))
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", name);
    snprintf(m->what, sizeof m->what, "%s: tensors %s, %s", spruce_ckpt_file_of(m->c, v), name, bname);
    *vals_out = v;
    return spruce_ct_bitmask_decode(v->data, nvals, b->data, es, *rows, *cols, *dense, m->what);
}

/* Scale (rows, ngroups) as floats and zero points as int8 (NULL when symmetric). */
static int read_scale_zp(mod *m, const spruce__ct_scheme *s, int64_t rows, int64_t cols,
                         float **scale, int8_t **zp, const spruce_tensor **st)
{
    char name[512], zname[512];
    int64_t gs = s->groupsize ? s->groupsize : cols, ng;
    const spruce_tensor *z;
    int rc;
    if (cols % gs)
        return spruce__seterr(SPRUCE_ESHAPE, "%s: %s.weight: group_size %lld does not divide its "
                              "%lld columns", spruce_ckpt_dir(m->c), m->prefix, (long long)gs,
                              (long long)cols);
    ng = cols / gs;
    *st = part(m, "weight_scale", name, sizeof name);
    if ((rc = want(m, *st, name, NULL, 2, rows, ng)))
        return rc;
    if (!float_es(*st))
        return spruce__seterr(SPRUCE_EDTYPE, "%s: tensor %s: expected dtype F32, F16 or BF16, "
                              "found %s", spruce_ckpt_file_of(m->c, *st), name, (*st)->dtype_name);
    if (!(*scale = malloc((size_t)(rows * ng) * sizeof **scale)))
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", name);
    spruce_tensor_read_f32(*st, *scale);
    *zp = NULL;
    if (s->sym)
        return 0;
    z = part(m, "weight_zero_point", zname, sizeof zname);
    if (!(*zp = malloc((size_t)(rows * ng))))
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", zname);
    if (s->packed) {
        if ((rc = want(m, z, zname, "I32", 2, spruce_ct_packed_cols(rows, s->bits), ng)))
            return rc;
        spruce_ct_unpack_dim0(z->data, rows, ng, s->bits, *zp);
        return 0;
    }
    if ((rc = want(m, z, zname, "I8", 2, rows, ng)))
        return rc;
    memcpy(*zp, z->data, (size_t)(rows * ng));
    return 0;
}

/* The integer levels q (rows, cols) of a quantized module that is not sparse. */
static int read_levels(mod *m, const spruce__ct_scheme *s, int64_t *rows, int64_t *cols,
                       int8_t **q)
{
    char name[512];
    const spruce_tensor *t;
    int rc;
    if (s->packed) {
        if ((rc = read_shape(m, "weight_shape", rows, cols)))
            return rc;
        t = part(m, "weight_packed", name, sizeof name);
        if ((rc = want(m, t, name, "I32", 2, *rows, spruce_ct_packed_cols(*cols, s->bits))))
            return rc;
        if (!(*q = malloc((size_t)(*rows * *cols))))
            return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", name);
        spruce_ct_unpack(t->data, *rows, *cols, s->bits, *q);
        return 0;
    }
    t = part(m, "weight", name, sizeof name);
    if ((rc = want(m, t, name, "I8", 2, t ? t->shape[0] : 0, -1)))
        return rc;
    *rows = t->shape[0], *cols = t->shape[1];
    if (!(*q = malloc((size_t)(*rows * *cols))))
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", name);
    memcpy(*q, t->data, (size_t)(*rows * *cols));
    return 0;
}

/* float32 w into out, of dtype dt (F32, F16 or BF16, rounded to nearest even). */
static void store(const float *w, size_t n, spruce_dtype dt, void *out)
{
    size_t i;
    if (dt == SPRUCE_DTYPE_F32) {
        for (i = 0; i < n; i++)
            ((float *)out)[i] = w[i] == 0.0f ? 0.0f : w[i];
    } else if (dt == SPRUCE_DTYPE_F16) {
        spruce_f32_to_f16_n(w, out, n);
    } else {
        spruce_f32_to_bf16_n(w, out, n);
    }
}

int spruce__ct_decode(const spruce_ckpt *c, const char *prefix, const spruce__ct_scheme *s,
                      spruce_tensor *out, void **buf)
{
    mod m = {c, prefix, ""};
    int64_t rows = 0, cols = 0;
    void *dense = NULL;
    int8_t *q = NULL, *zp = NULL;
    float *scale = NULL, *w = NULL;
    const spruce_tensor *src = NULL, *st = NULL;
    int rc;

    *buf = NULL;
    if (s->sparse) {
        if ((rc = decode_sparse(&m, s, &rows, &cols, &dense, &src)))
            goto done;
        if (!s->bits) { /* sparse only: the values' own dtype */
            out->dtype = src->dtype;
            out->dtype_name = src->dtype_name;
            *buf = dense;
            dense = NULL;
            goto fill;
        }
        q = dense;
        dense = NULL;
    } else if ((rc = read_levels(&m, s, &rows, &cols, &q))) {
        goto done;
    }
    if ((rc = read_scale_zp(&m, s, rows, cols, &scale, &zp, &st)))
        goto done;
    if (!(w = malloc((size_t)(rows * cols) * sizeof *w))) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s.weight: out of memory", prefix);
        goto done;
    }
    snprintf(m.what, sizeof m.what, "%s: %s", spruce_ckpt_file_of(c, st), prefix);
    if ((rc = spruce_ct_dequantize(q, scale, zp, s->bits, rows, cols, s->groupsize ? s->groupsize : cols,
                                   w, m.what)))
        goto done;
    out->dtype = st->dtype;
    out->dtype_name = st->dtype_name;
    if (!(*buf = malloc((size_t)(rows * cols) * (size_t)float_es(st)))) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s.weight: out of memory", prefix);
        goto done;
    }
    store(w, (size_t)(rows * cols), st->dtype, *buf); /* in the scale's dtype, as the reference */
    src = st;
fill:
    out->ndim = 2;
    memset(out->shape, 0, sizeof out->shape);
    out->shape[0] = rows;
    out->shape[1] = cols;
    out->data = *buf;
    out->nbytes = (size_t)(rows * cols) * (size_t)float_es(src);
    out->shard = src->shard;
    rc = 0;
done:
    if (rc) {
        free(*buf);
        *buf = NULL;
    }
    free(dense);
    free(q);
    free(zp);
    free(scale);
    free(w);
    return rc;
}

/* The checks of spruce_ct_dequantize without making floats: every scale
 * finite and positive, every zero point (and level, when q is not NULL)
 * within the bits. */
static int check_levels(const int8_t *q, const float *scale, const int8_t *zp, int bits,
                        int64_t rows, int64_t cols, int64_t gs, const char *what)
{
    int64_t ng = cols / gs, r, k;
    int lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
    for (k = 0; k < rows * ng; k++) {
        if (!(scale[k] > 0.0f) || !isfinite(scale[k]))
            return spruce__seterr(SPRUCE_EFORMAT, "%s: weight_scale at row %lld, group %lld "
                                  "is %g, expected finite and positive", what,
                                  (long long)(k / ng), (long long)(k % ng), (double)scale[k]);
        if (zp && (zp[k] < lo || zp[k] > hi))
            return spruce__seterr(SPRUCE_EFORMAT, "%s: weight_zero_point at row %lld, group "
                                  "%lld is %d, outside [%d, %d] of %d bits", what,
                                  (long long)(k / ng), (long long)(k % ng), zp[k], lo, hi, bits);
    }
    if (!q || bits == 8)
        return 0; /* every int8 is a level */
    for (r = 0; r < rows * cols; r++)
        if (q[r] < lo || q[r] > hi)
            return spruce__seterr(SPRUCE_EFORMAT, "%s: weight at row %lld, column %lld is %d, "
                                  "outside [%d, %d] of %d bits", what, (long long)(r / cols),
                                  (long long)(r % cols), q[r], lo, hi, bits);
    return 0;
}

int spruce__ct_levels(const spruce_ckpt *c, const char *prefix, const spruce__ct_scheme *s,
                      int64_t *rows, int64_t *cols, int8_t **q, float **scale, int8_t **zp)
{
    mod m = {c, prefix, ""};
    const spruce_tensor *src = NULL, *st = NULL;
    void *dense = NULL;
    int rc;
    *q = NULL, *scale = NULL, *zp = NULL;
    if (!s->bits)
        return spruce__seterr(SPRUCE_EINVAL, "%s: %s.weight: not quantized", spruce_ckpt_dir(c),
                              prefix);
    if (s->sparse) {
        if ((rc = decode_sparse(&m, s, rows, cols, &dense, &src)))
            goto done;
        *q = dense;
        dense = NULL;
    } else if ((rc = read_levels(&m, s, rows, cols, q))) {
        goto done;
    }
    if ((rc = read_scale_zp(&m, s, *rows, *cols, scale, zp, &st)))
        goto done;
    snprintf(m.what, sizeof m.what, "%s: %s", spruce_ckpt_file_of(c, st), prefix);
    rc = check_levels(*q, *scale, *zp, s->bits, *rows, *cols, s->groupsize ? s->groupsize : *cols,
                      m.what);
done:
    free(dense);
    if (rc) {
        free(*q);
        free(*scale);
        free(*zp);
        *q = NULL, *scale = NULL, *zp = NULL;
    }
    return rc;
}

int spruce__ct_describe(const spruce_ckpt *c, const char *prefix, const spruce__ct_scheme *s,
                        spruce_tensor *out)
{
    mod m = {c, prefix, ""};
    char name[512], bname[512];
    const spruce_tensor *v = NULL, *st = NULL, *src;
    int64_t rows = 0, cols = 0;
    int rc, es;
    if (s->sparse) {
        const spruce_tensor *b;
        if ((rc = read_shape(&m, "shape", &rows, &cols)))
            return rc;
        v = part(&m, "compressed", name, sizeof name);
        b = part(&m, "bitmask", bname, sizeof bname);
        if ((rc = want(&m, b, bname, "U8", 2, rows, (cols + 7) / 8)) ||
            (rc = want(&m, v, name, NULL, 0, 0, 0)))
            return rc;
        es = s->bits ? (strcmp(v->dtype_name, "I8") ? 0 : 1) : float_es(v);
        if (!es)
            return spruce__seterr(SPRUCE_EDTYPE, "%s: tensor %s: expected dtype %s, found %s",
                                  spruce_ckpt_file_of(c, v), name,
                                  s->bits ? "I8" : "F32, F16 or BF16", v->dtype_name);
    } else if (s->packed) {
        const spruce_tensor *t;
        if ((rc = read_shape(&m, "weight_shape", &rows, &cols)))
            return rc;
        t = part(&m, "weight_packed", name, sizeof name);
        if ((rc = want(&m, t, name, "I32", 2, rows, spruce_ct_packed_cols(cols, s->bits))))
            return rc;
    } else {
        const spruce_tensor *t = part(&m, "weight", name, sizeof name);
        if ((rc = want(&m, t, name, "I8", 2, t ? t->shape[0] : 0, -1)))
            return rc;
        rows = t->shape[0], cols = t->shape[1];
    }
    if (s->bits) {
        float *scale = NULL;
        int8_t *zp = NULL;
        /* the grid's tensors are small: read and checked now */
        rc = read_scale_zp(&m, s, rows, cols, &scale, &zp, &st);
        if (!rc) {
            snprintf(m.what, sizeof m.what, "%s: %s", spruce_ckpt_file_of(c, st), prefix);
            rc = check_levels(NULL, scale, zp, s->bits, rows, cols,
                              s->groupsize ? s->groupsize : cols, m.what);
        }
        free(scale);
        free(zp);
        if (rc)
            return rc;
    }
    src = s->bits ? st : v;
    out->dtype = src->dtype;
    out->dtype_name = src->dtype_name;
    out->ndim = 2;
    memset(out->shape, 0, sizeof out->shape);
    out->shape[0] = rows;
    out->shape[1] = cols;
    out->data = NULL;
    out->nbytes = (size_t)(rows * cols) * (size_t)float_es(src);
    out->shard = src->shard;
    return 0;
}

/* Is name a component of a compressed module (prefix length in *plen)? */
int spruce__ct_component(const char *name, const char *dtype, const spruce__ct_scheme *s,
                         size_t *plen, int *primary)
{
    static const char *parts[] = {".shape", ".compressed", ".bitmask", ".row_offsets",
                                  ".weight_packed", ".weight_shape", ".weight_scale",
                                  ".weight_zero_point", NULL};
    size_t n = strlen(name), k;
    int i;
    for (i = 0; parts[i]; i++) {
        k = strlen(parts[i]);
        if (n > k && !strcmp(name + n - k, parts[i])) {
            if (i < 4 && !s->sparse)
                return 0;
            if (i >= 4 && i != 5 && !s->bits)
                return 0;
            if (i == 5 && !(s->bits && s->packed))
                return 0;
            *plen = n - k;
            /* one primary part per module: the bitmask, or the scale when not sparse */
            *primary = s->sparse ? i == 2 : i == 6;
            return 1;
        }
    }
    /* an int-quantized M.weight (I8) is a component too */
    k = strlen(".weight");
    if (s->bits && !s->sparse && !s->packed && n > k && !strcmp(name + n - k, ".weight") &&
        !strcmp(dtype, "I8")) {
        *plen = n - k;
        *primary = 0;
        return 1;
    }
    return 0;
}
