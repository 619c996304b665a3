/* compressed_write.c: the checkpoint writer's compressed-tensors mode.
 *
 * Follows vllm-project/compressed-tensors 0.14 (the layouts are in
 * spruce_compressed.h; the config in ModelCompressor.update_config: a
 * "quantization_config" with quant_method "compressed-tensors", format,
 * config_groups, ignore and sparsity_config).
 *
 * Each replaced tensor is encoded when it is set and its parts appended to a
 * spool file of its shard inside the temporary directory (one tensor's parts
 * in memory at a time); at prepare the tensors never set are appended as they
 * were, and each shard is written as header + the spool's bytes.  The rest
 * (temporary name, rename, sync, --force) is ckpt_writer.c's. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "ckpt_internal.h"
#include "spruce_compressed.h"

typedef struct {
    char *name;
    const char *dtype;
    int ndim;
    int64_t shape[SPRUCE_MAX_DIMS];
    uint64_t off, n;
} entry;

typedef struct {
    int fd;
    char *path;   /* the spool file */
    uint64_t size;
    entry *e;
    int ne, cap;
} spool;

struct spruce__ctw {
    const spruce_ckpt *in;
    char *tmp;
    spruce_compress_opts o;
    spool *sp;
    int nsh;
    uint8_t *set;            /* per input tensor: replaced */
    int plain;               /* a dense checkpoint (from a compressed one) */
    int bits, sym, groupsize, quantized, grouped;
    int64_t params, zeros;
};

void spruce__ctw_free(spruce__ctw *c)
{
    int i, j;
    if (!c)
        return;
    for (i = 0; i < c->nsh; i++) {
        if (c->sp[i].fd >= 0)
            close(c->sp[i].fd);
        if (c->sp[i].path)
            unlink(c->sp[i].path);
        free(c->sp[i].path);
        for (j = 0; j < c->sp[i].ne; j++)
            free(c->sp[i].e[j].name);
        free(c->sp[i].e);
    }
    free(c->sp);
    free(c->set);
    free(c->tmp);
    free(c);
}

int spruce__ctw_new(const spruce_ckpt *in, const char *tmp, const spruce_compress_opts *o,
                    spruce__ctw **out)
{
    spruce__ctw *c = calloc(1, sizeof *c);
    int i;
    *out = NULL;
    if (!c)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", tmp);
    c->in = in;
    c->o = *o;
    c->plain = o->sparse < 0;
    if (c->o.sparse < 0)
        c->o.sparse = 0;
    c->nsh = spruce_ckpt_nshards(in);
    c->sp = calloc((size_t)c->nsh, sizeof *c->sp);
    c->set = calloc((size_t)spruce_ckpt_count(in) + 1, 1);
    c->tmp = strdup(tmp);
    if (!c->sp || !c->set || !c->tmp) {
        free(c->sp), free(c->set), free(c->tmp), free(c);
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", tmp);
    }
    for (i = 0; i < c->nsh; i++)
        c->sp[i].fd = -1;
    for (i = 0; i < c->nsh; i++) {
        char name[64];
        snprintf(name, sizeof name, ".spool-%d", i);
        if (!(c->sp[i].path = spruce__path_join(tmp, name)))
            goto nomem;
        if ((c->sp[i].fd = open(c->sp[i].path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0) {
            int rc = spruce__seterr(spruce__errno_code(errno), "%s: cannot create: %s",
                                    c->sp[i].path, strerror(errno));
            spruce__ctw_free(c);
            return rc;
        }
    }
    *out = c;
    return 0;
nomem:
    spruce__ctw_free(c);
    return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", tmp);
}

/* Append one part (name, dtype, shape) to shard s's spool. */
static int emit(spruce__ctw *c, int s, const char *name, const char *dtype, int ndim,
                const int64_t *shape, const void *bytes, uint64_t n)
{
    spool *p = &c->sp[s];
    entry *e;
    int rc;
    if (p->ne == p->cap) {
        int cap = p->cap ? 2 * p->cap : 64;
        entry *ne = realloc(p->e, (size_t)cap * sizeof *ne);
        if (!ne)
            return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", name);
        p->e = ne, p->cap = cap;
    }
    e = &p->e[p->ne];
    memset(e, 0, sizeof *e);
    if (!(e->name = strdup(name)))
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", name);
    e->dtype = dtype;
    e->ndim = ndim;
    memcpy(e->shape, shape, (size_t)ndim * sizeof *shape);
    e->off = p->size;
    e->n = n;
    p->ne++;
    if ((rc = spruce__pwrite_all(p->fd, bytes, (size_t)n, p->size, p->path)))
        return rc;
    p->size += n;
    return 0;
}

static int emit2(spruce__ctw *c, int s, const char *prefix, const char *part, const char *dtype,
                 int64_t d0, int64_t d1, const void *bytes, uint64_t n)
{
    char name[1024];
    int64_t sh[2] = {d0, d1};
    snprintf(name, sizeof name, "%s.%s", prefix, part);
    return emit(c, s, name, dtype, d1 < 0 ? 1 : 2, sh, bytes, n);
}

/* float32 into the tensor's dtype, zeros +0.0. */
static void to_dtype(const float *w, size_t n, spruce_dtype dt, void *out)
{
    size_t i;
    if (dt == SPRUCE_DTYPE_F32)
        for (i = 0; i < n; i++)
            ((float *)out)[i] = w[i] == 0.0f ? 0.0f : w[i];
    else if (dt == SPRUCE_DTYPE_F16)
        spruce_f32_to_f16_n(w, out, n);
    else
        spruce_f32_to_bf16_n(w, out, n);
}

/* The sparse parts of dense (rows, cols) elements of es bytes. */
static int emit_sparse(spruce__ctw *c, int s, const char *prefix, const void *dense, int es,
                       int is_float, const char *dtype, int64_t rows, int64_t cols, const char *what)
{
    int64_t shape[2] = {rows, cols}, nnz;
    size_t bmn = spruce_ct_bitmask_bytes(rows, cols);
    uint8_t *bm = malloc(bmn ? bmn : 1), *vals = NULL;
    int64_t *ro = NULL;
    int rc;
    if (!bm)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", what);
    if (c->o.sparse == 2) {
        nnz = rows * cols / 2;
        if (!(vals = malloc((size_t)nnz * (size_t)es + 1))) {
            rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", what);
            goto done;
        }
        if ((rc = spruce_ct_24_encode(dense, es, is_float, rows, cols, vals, bm, what)))
            goto done;
        if ((rc = emit2(c, s, prefix, "shape", "I64", 2, 1, shape, 16)) ||
            (rc = emit2(c, s, prefix, "compressed", dtype, rows, cols / 2, vals, (uint64_t)nnz * es)) ||
            (rc = emit2(c, s, prefix, "bitmask", "U8", rows, (cols + 7) / 8, bm, bmn)))
            goto done;
    } else {
        nnz = spruce_ct_bitmask_count(dense, es, is_float, rows, cols);
        vals = malloc((size_t)nnz * (size_t)es + 1);
        ro = malloc((size_t)rows * sizeof *ro);
        if (!vals || !ro) {
            rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", what);
            goto done;
        }
        spruce_ct_bitmask_encode(dense, es, is_float, rows, cols, vals, bm, ro);
        if ((rc = emit2(c, s, prefix, "shape", "I64", 2, 1, shape, 16)) ||
            (rc = emit2(c, s, prefix, "compressed", dtype, nnz, -1, vals, (uint64_t)nnz * es)) ||
            (rc = emit2(c, s, prefix, "bitmask", "U8", rows, (cols + 7) / 8, bm, bmn)) ||
            (rc = emit2(c, s, prefix, "row_offsets", "I64", rows, -1, ro, (uint64_t)rows * 8)))
            goto done;
    }
done:
    free(bm);
    free(vals);
    free(ro);
    return rc;
}

/* The grid must be the same for every layer: one config group. */
static int check_grid(spruce__ctw *c, const spruce_qgrid *g, int64_t rows, int64_t cols,
                      const char *what)
{
    int grouped = g->groupsize != cols;
    if (g->rows != rows || g->cols != cols)
        return spruce__seterr(SPRUCE_ESHAPE, "%s: grid of (%lld, %lld) for a weight of (%lld, %lld)",
                              what, (long long)g->rows, (long long)g->cols, (long long)rows,
                              (long long)cols);
    if (c->o.sparse == 2 && !g->sym)
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "%s: sparse-24-bitmask with an asymmetric grid "
                              "cannot store pruned weights as zeros (compressed-tensors decodes "
                              "them as level 0): use --sym", what);
    if (!c->quantized) {
        c->quantized = 1, c->bits = g->bits, c->sym = g->sym, c->grouped = grouped;
        c->groupsize = (int)g->groupsize;
    } else if (c->bits != g->bits || c->sym != g->sym || c->grouped != grouped ||
               (grouped && c->groupsize != g->groupsize)) {
        return spruce__seterr(SPRUCE_EINVAL, "%s: every layer needs the same grid (bits, sym, "
                              "groupsize) in one compressed-tensors config group", what);
    }
    return 0;
}

static int packed_format(const spruce__ctw *c)
{
    return c->bits < 8 && 32 % c->bits == 0 && !c->o.sparse;
}

static int emit_quantized(spruce__ctw *c, const spruce_tensor *t, const char *prefix,
                          const float *data, const spruce_qgrid *g, const char *what)
{
    int64_t rows = t->shape[0], cols = t->shape[1], ng = cols / g->groupsize, n = rows * cols;
    int es = t->dtype == SPRUCE_DTYPE_F32 ? 4 : 2, rc;
    int8_t *q = malloc((size_t)n + 1), *zp = malloc((size_t)(rows * ng) + 1);
    void *sc = malloc((size_t)(rows * ng) * (size_t)es + 1);
    int32_t *pk = NULL;
    if (!q || !zp || !sc) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", what);
        goto done;
    }
    if ((rc = check_grid(c, g, rows, cols, what)) ||
        (rc = spruce_ct_quantize(data, g, q, zp, what)))
        goto done;
    to_dtype(g->scale, (size_t)(rows * ng), t->dtype, sc); /* the scale in the weight's dtype */
    if (c->o.sparse) {
        if ((rc = emit_sparse(c, t->shard, prefix, q, 1, 0, "I8", rows, cols, what)))
            goto done;
    } else if (packed_format(c)) {
        int64_t shape[2] = {rows, cols}, pc = spruce_ct_packed_cols(cols, c->bits);
        if (!(pk = malloc((size_t)(rows * pc) * 4 + 4))) {
            rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", what);
            goto done;
        }
        spruce_ct_pack(q, rows, cols, c->bits, pk);
        if ((rc = emit2(c, t->shard, prefix, "weight_packed", "I32", rows, pc, pk,
                        (uint64_t)(rows * pc) * 4)) ||
            (rc = emit2(c, t->shard, prefix, "weight_shape", "I64", 2, -1, shape, 16)))
            goto done;
    } else if ((rc = emit2(c, t->shard, prefix, "weight", "I8", rows, cols, q, (uint64_t)n))) {
        goto done;
    }
    if ((rc = emit2(c, t->shard, prefix, "weight_scale", t->dtype_name, rows, ng, sc,
                    (uint64_t)(rows * ng) * es)))
        goto done;
    if (!g->sym) {
        if (packed_format(c)) {
            int64_t pr = spruce_ct_packed_cols(rows, c->bits);
            free(pk);
            if (!(pk = malloc((size_t)(pr * ng) * 4 + 4))) {
                rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", what);
                goto done;
            }
            spruce_ct_pack_dim0(zp, rows, ng, c->bits, pk);
            rc = emit2(c, t->shard, prefix, "weight_zero_point", "I32", pr, ng, pk,
                       (uint64_t)(pr * ng) * 4);
        } else {
            rc = emit2(c, t->shard, prefix, "weight_zero_point", "I8", rows, ng, zp,
                       (uint64_t)(rows * ng));
        }
    }
done:
    free(q);
    free(zp);
    free(sc);
    free(pk);
    return rc;
}

int spruce__ctw_set(spruce__ctw *c, const spruce_tensor *t, int index, const float *data,
                    const spruce_qgrid *g)
{
    char what[1024], prefix[1024];
    size_t len = strlen(t->name);
    int64_t i, n = spruce_tensor_numel(t);
    int es = t->dtype == SPRUCE_DTYPE_F32 ? 4 : 2, rc;
    void *dense;
    snprintf(what, sizeof what, "%s: tensor '%s'", spruce_ckpt_file_of(c->in, t), t->name);
    if (t->ndim != 2 || len < 8 || strcmp(t->name + len - 7, ".weight"))
        return spruce__seterr(SPRUCE_EINVAL, "%s: only 2-D X.weight tensors are stored compressed",
                              what);
    if (c->set[index])
        return spruce__seterr(SPRUCE_EINVAL, "%s: set twice", what);
    for (i = 0; i < n; i++)
        if (!isfinite(data[i]))
            return spruce__seterr(SPRUCE_ENAN, "%s: element %lld of the replacement is %g", what,
                                  (long long)i, (double)data[i]);
    for (i = 0; i < n; i++)
        c->zeros += data[i] == 0.0f;
    c->params += n;
    snprintf(prefix, sizeof prefix, "%.*s", (int)(len - 7), t->name);
    c->set[index] = 1;
    if (g && !c->plain)
        return emit_quantized(c, t, prefix, data, g, what);
    if (!(dense = malloc((size_t)n * (size_t)es + 1)))
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", what);
    to_dtype(data, (size_t)n, t->dtype, dense);
    if (c->o.sparse)
        rc = emit_sparse(c, t->shard, prefix, dense, es, 1, t->dtype_name, t->shape[0],
                         t->shape[1], what);
    else
        rc = emit(c, t->shard, t->name, t->dtype_name, t->ndim, t->shape, dense, (uint64_t)n * es);
    free(dense);
    return rc;
}

/* ---- prepare: shards, index, config.json ---------------------------------- */

static json_t *shape_json(const entry *e)
{
    json_t *a = json_array();
    int i;
    for (i = 0; i < e->ndim; i++)
        json_array_append_new(a, json_integer(e->shape[i]));
    return a;
}

/* OUT/<shard name> = 8-byte length, header, the spool's bytes. */
static int write_shard(spruce__ctw *c, int s, const char *fname)
{
    spool *p = &c->sp[s];
    json_t *h = json_object(), *meta = json_object();
    char *js = NULL, *path = spruce__path_join(c->tmp, fname);
    int fd = -1, rc = 0, i;
    size_t hl, pad;
    uint64_t len, done = 0;
    uint8_t lb[8];
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(h, "__metadata__", meta);
    for (i = 0; i < p->ne; i++) {
        json_t *e = json_object(), *off = json_array();
        json_object_set_new(e, "dtype", json_string(p->e[i].dtype));
        json_object_set_new(e, "shape", shape_json(&p->e[i]));
        json_array_append_new(off, json_integer((json_int_t)p->e[i].off));
        json_array_append_new(off, json_integer((json_int_t)(p->e[i].off + p->e[i].n)));
        json_object_set_new(e, "data_offsets", off);
        json_object_set_new(h, p->e[i].name, e);
    }
    if (!path || !(js = json_dumps(h, JSON_COMPACT))) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", c->tmp);
        goto done;
    }
    hl = strlen(js);
    pad = (8 - hl % 8) % 8;
    len = hl + pad;
    for (i = 0; i < 8; i++)
        lb[i] = (uint8_t)(len >> (8 * i));
    if ((fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0) {
        rc = spruce__seterr(spruce__errno_code(errno), "%s: cannot create: %s", path, strerror(errno));
        goto done;
    }
    if ((rc = spruce__pwrite_all(fd, lb, 8, 0, path)) ||
        (rc = spruce__pwrite_all(fd, js, hl, 8, path)) ||
        (pad && (rc = spruce__pwrite_all(fd, "        ", pad, 8 + hl, path))))
        goto done;
    while (done < p->size) {
        loff_t ino = (loff_t)done, outo = (loff_t)(8 + len + done);
        ssize_t n = copy_file_range(p->fd, &ino, fd, &outo, (size_t)(p->size - done), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            char b[1 << 16];
            ssize_t r = pread(p->fd, b, sizeof b, (off_t)done);
            if (r <= 0) {
                rc = spruce__seterr(SPRUCE_EIO, "%s: read failed: %s", p->path, strerror(errno));
                goto done;
            }
            if ((rc = spruce__pwrite_all(fd, b, (size_t)r, 8 + len + done, path)))
                goto done;
            n = r;
        }
        done += (uint64_t)n;
    }
    if (fsync(fd) < 0)
        rc = spruce__seterr(SPRUCE_EIO, "%s: fsync failed: %s", path, strerror(errno));
done:
    if (fd >= 0 && close(fd) < 0 && !rc)
        rc = spruce__seterr(SPRUCE_EIO, "%s: close failed: %s", path, strerror(errno));
    json_decref(h);
    free(js);
    free(path);
    return rc;
}

static int write_json(const char *tmp, const char *name, json_t *root)
{
    char *path = spruce__path_join(tmp, name);
    int rc = 0;
    if (!path)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", tmp);
    if (json_dump_file(root, path, JSON_INDENT(2)) < 0)
        rc = spruce__seterr(SPRUCE_EIO, "%s: cannot write", path);
    free(path);
    return rc;
}

static json_t *weights_args(const spruce__ctw *c)
{
    json_t *w = json_object();
    json_object_set_new(w, "num_bits", json_integer(c->bits));
    json_object_set_new(w, "type", json_string("int"));
    json_object_set_new(w, "symmetric", json_boolean(c->sym));
    json_object_set_new(w, "strategy", json_string(c->grouped ? "group" : "channel"));
    json_object_set_new(w, "group_size", c->grouped ? json_integer(c->groupsize) : json_null());
    json_object_set_new(w, "dynamic", json_false());
    json_object_set_new(w, "actorder", json_null());
    json_object_set_new(w, "observer", json_string("minmax"));
    json_object_set_new(w, "block_structure", json_null());
    json_object_set_new(w, "observer_kwargs", json_object());
    return w;
}

/* config.json's quantization_config for what was written. */
static json_t *quant_config(const spruce__ctw *c, json_t *ignore)
{
    json_t *qc = json_object();
    json_object_set_new(qc, "quant_method", json_string("compressed-tensors"));
    json_object_set_new(qc, "format", json_string(!c->quantized ? "dense" :
                                                  packed_format(c) ? "pack-quantized" : "int-quantized"));
    json_object_set_new(qc, "quantization_status", json_string("compressed"));
    if (c->quantized) {
        json_t *groups = json_object(), *g = json_object(), *targets = json_array();
        json_array_append_new(targets, json_string("Linear"));
        json_object_set_new(g, "targets", targets);
        json_object_set_new(g, "weights", weights_args(c));
        json_object_set_new(g, "input_activations", json_null());
        json_object_set_new(g, "output_activations", json_null());
        json_object_set_new(g, "format", json_null());
        json_object_set_new(groups, "group_0", g);
        json_object_set_new(qc, "config_groups", groups);
        json_object_set(qc, "ignore", ignore);
    }
    json_object_set_new(qc, "kv_cache_scheme", json_null());
    if (c->o.sparse) {
        json_t *sc = json_object(), *targets = json_array();
        json_array_append_new(targets, json_string("Linear"));
        json_object_set_new(sc, "format", json_string(c->o.sparse == 2 ? "sparse-24-bitmask"
                                                                         : "sparse-bitmask"));
        json_object_set_new(sc, "sparsity_structure",
                            json_string(c->o.structure ? c->o.structure : "unstructured"));
        json_object_set_new(sc, "targets", targets);
        json_object_set(sc, "ignore", ignore);
        json_object_set_new(sc, "global_sparsity",
                            json_real(c->params ? (double)c->zeros / (double)c->params : 0.0));
        json_object_set_new(sc, "registry_requires_subclass", json_false());
        json_object_set_new(qc, "sparsity_config", sc);
    }
    json_object_set_new(qc, "version", json_string("0.14.0.1"));
    return qc;
}

int spruce__ctw_finish(spruce__ctw *c)
{
    int i, rc = 0, n = spruce_ckpt_count(c->in);
    json_t *ignore = json_array(), *cfg = NULL, *wm = json_object(), *idx;
    json_error_t err;
    char *cpath = spruce__path_join(spruce_ckpt_dir(c->in), "config.json");
    for (i = 0; i < n && !rc; i++) {
        const spruce_tensor *t = spruce_ckpt_tensor_at(c->in, i);
        size_t len = strlen(t->name);
        if (c->set[i])
            continue;
        if (t->ndim == 2 && len > 7 && !strcmp(t->name + len - 7, ".weight") &&
            strstr(t->name, "layers.")) /* a linear layer left dense */
            json_array_append_new(ignore, json_stringn(t->name, len - 7));
        rc = emit(c, t->shard, t->name, t->dtype_name, t->ndim, t->shape, t->data, t->nbytes);
    }
    json_array_append_new(ignore, json_string("lm_head"));
    for (i = 0; i < c->nsh && !rc; i++) {
        const char *sn, *sp;
        const uint8_t *m;
        size_t sz;
        int j;
        spruce__ckpt_shard(c->in, i, &sn, &sp, &m, &sz);
        rc = write_shard(c, i, sn);
        for (j = 0; j < c->sp[i].ne; j++)
            json_object_set_new(wm, c->sp[i].e[j].name, json_string(sn));
        close(c->sp[i].fd);
        c->sp[i].fd = -1;
        unlink(c->sp[i].path);
    }
    if (!rc && c->nsh > 1) {
        idx = json_object();
        json_object_set_new(idx, "metadata", json_object());
        json_object_set(idx, "weight_map", wm);
        rc = write_json(c->tmp, "model.safetensors.index.json", idx);
        json_decref(idx);
    }
    if (!rc && cpath && access(cpath, F_OK) == 0) {
        if (!(cfg = json_load_file(cpath, JSON_REJECT_DUPLICATES, &err)) || !json_is_object(cfg))
            rc = spruce__seterr(SPRUCE_EFORMAT, "%s: not a JSON object: %s", cpath, err.text);
        else {
            json_object_del(cfg, "compression_config");
            if (c->plain)
                json_object_del(cfg, "quantization_config");
            else
                json_object_set_new(cfg, "quantization_config", quant_config(c, ignore));
            rc = write_json(c->tmp, "config.json", cfg);
        }
    }
    json_decref(cfg);
    json_decref(ignore);
    json_decref(wm);
    free(cpath);
    return rc;
}
