/* compressed_write.c: the checkpoint writer's compressed-tensors mode.
 *
 * Follows vllm-project/compressed-tensors 0.14 (the layouts are in
 * spruce_compressed.h; the config in ModelCompressor.update_config: a
 * "quantization_config" with quant_method "compressed-tensors", format,
 * config_groups, ignore and sparsity_config).
 *
 * Each shard is written once, in place.  At begin, room is reserved for its
 * header: an upper bound of the header's length, from the names, dtypes and
 * ranks of the tensors it will hold (see header_bound).  Each replaced tensor
 * is encoded when it is set and its parts appended after that room (one
 * tensor's parts in memory at a time); at prepare the tensors never set are
 * appended as they were, and the header is written into the room, padded with
 * spaces to its end, as the safetensors format allows ("MAY be trailing padded
 * with whitespace").  The rest (temporary name, rename, sync, --force) is
 * ckpt_writer.c's. */
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
    char *path;   /* the shard file, inside the temporary directory */
    uint64_t room; /* bytes reserved for the header (a multiple of 8) */
    uint64_t size; /* data bytes written after 8 + room */
    entry *e;
    int ne, cap;
} shard_out;

struct spruce__ctw {
    const spruce_ckpt *in;
    char *tmp;
    spruce_compress_opts o;
    shard_out *sp;
    int nsh;
    uint8_t *set;            /* per input tensor: replaced */
    int plain;               /* a dense checkpoint (from a compressed one) */
    int bits, sym, groupsize, quantized, grouped;
    int64_t params, zeros;
    /* scratch buffers, reused from tensor to tensor (fresh pages for every
     * tensor would cost a fault each): see scratch() */
    void *scr[8];
    size_t scrn[8];
};

enum { S_BITMASK, S_VALUES, S_ROWOFF, S_LEVELS, S_ZP, S_SCALE, S_PACKED, S_DENSE };

/* Scratch buffer k of at least n bytes (its contents not kept), or NULL. */
static void *scratch(spruce__ctw *c, int k, size_t n)
{
    if (n > c->scrn[k]) {
        free(c->scr[k]);
        c->scrn[k] = 0;
        if (!(c->scr[k] = malloc(n + 64)))
            return NULL;
        c->scrn[k] = n;
    }
    return c->scr[k];
}

void spruce__ctw_free(spruce__ctw *c)
{
    int i, j;
    if (!c)
        return;
    for (i = 0; i < c->nsh; i++) {
        if (c->sp[i].fd >= 0)
            close(c->sp[i].fd);
        free(c->sp[i].path); /* the temporary directory is removed on abort */
        for (j = 0; j < c->sp[i].ne; j++)
            free(c->sp[i].e[j].name);
        free(c->sp[i].e);
    }
    for (i = 0; i < 8; i++)
        free(c->scr[i]);
    free(c->sp);
    free(c->set);
    free(c->tmp);
    free(c);
}

/* Bytes that jansson's compact output takes for the string s, quotes
 * included: control characters as \u00XX, '"' and '\\' escaped, the rest
 * (UTF-8 included) as it is. */
static uint64_t json_string_len(const char *s)
{
    uint64_t n = 2;
    for (; *s; s++)
        n += (unsigned char)*s < 0x20 ? 6 : (*s == '"' || *s == '\\') ? 2 : 1;
    return n;
}

static uint64_t digits(uint64_t v)
{
    uint64_t d = 1;
    for (; v >= 10; v /= 10)
        d++;
    return d;
}

/* One header entry, at most: "NAME":{"dtype":"D","shape":[...],
 * "data_offsets":[A,B]}, with ndim dimensions of at most dd digits and
 * offsets of at most od digits (name_len counts the name's quotes). */
static uint64_t entry_bound(uint64_t name_len, const char *dtype, int ndim, uint64_t dd,
                            uint64_t od)
{
    return name_len + json_string_len(dtype) + (dd + 1) * (uint64_t)(ndim > 0 ? ndim : 1) +
           2 * od + 1 + sizeof ":{\"dtype\":,\"shape\":[],\"data_offsets\":[]}," - 1;
}

static int replaceable(const spruce_tensor *t)
{
    size_t len = strlen(t->name);
    return t->ndim == 2 && len > 7 && !strcmp(t->name + len - 7, ".weight");
}

/* Each shard's header room: an upper bound of its header.  A tensor that
 * could be replaced counts as every part its layout may write: sparse-bitmask
 * shape, compressed, bitmask, row_offsets (sparse-24-bitmask: the first three;
 * not sparse: weight or weight_packed, and weight_shape), then weight_scale
 * and weight_zero_point, each "PREFIX.weight_zero_point" long at most.  Every
 * other tensor counts as itself.  Offsets are bounded by the data a shard
 * can hold: a replaced tensor's parts take at most its own bytes (values)
 * and 6 bytes a weight and 9 a row more (bitmask, row offsets, int8 values,
 * scales and zero points of groups of one); 17 and 24 are counted.
 * Dimensions are bounded by the largest element count. */
static void header_rooms(spruce__ctw *c)
{
    int i, n = spruce_ckpt_count(c->in);
    int nparts = c->plain ? 0 : c->o.sparse == 1 ? 6 : c->o.sparse == 2 ? 5 : 4;
    uint64_t *data = calloc((size_t)c->nsh, sizeof *data), *dmax = calloc((size_t)c->nsh, 8);
    for (i = 0; i < n && data && dmax; i++) {
        const spruce_tensor *t = spruce_ckpt_tensor_at(c->in, i);
        uint64_t numel = (uint64_t)spruce_tensor_numel(t), b = t->nbytes;
        int k;
        if (replaceable(t) && nparts)
            b += 17 * numel + 24 * (uint64_t)t->shape[0] + 64;
        data[t->shard] += b;
        for (k = 0; k < t->ndim; k++)
            if ((uint64_t)t->shape[k] > dmax[t->shard])
                dmax[t->shard] = (uint64_t)t->shape[k];
        if (numel > dmax[t->shard])
            dmax[t->shard] = numel;
    }
    for (i = 0; i < c->nsh; i++)
        c->sp[i].room = sizeof "{\"__metadata__\":{\"format\":\"pt\"}}" + 8;
    for (i = 0; i < n; i++) {
        const spruce_tensor *t = spruce_ckpt_tensor_at(c->in, i);
        int s = t->shard;
        uint64_t nl = json_string_len(t->name), od = 20, dd = 20, b;
        const char *pd = strlen(t->dtype_name) > 4 ? t->dtype_name : "BF16"; /* I64, U8, ... */
        if (data && dmax)
            od = digits(data[s]), dd = digits(dmax[s]);
        b = entry_bound(nl, t->dtype_name, t->ndim, dd, od);
        if (replaceable(t) && nparts) /* "PREFIX.weight_zero_point": 10 longer than the name */
            b += (uint64_t)nparts * entry_bound(nl + 10, pd, 2, dd, od);
        c->sp[s].room += b;
    }
    for (i = 0; i < c->nsh; i++)
        c->sp[i].room = (c->sp[i].room + 7) / 8 * 8;
    free(data);
    free(dmax);
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
    header_rooms(c);
    for (i = 0; i < c->nsh; i++) {
        const char *sn, *sp;
        const uint8_t *m;
        size_t sz;
        spruce__ckpt_shard(in, i, &sn, &sp, &m, &sz);
        if (!(c->sp[i].path = spruce__path_join(tmp, sn)))
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

/* Append one part (name, dtype, shape) to shard s, after its header room. */
static int emit(spruce__ctw *c, int s, const char *name, const char *dtype, int ndim,
                const int64_t *shape, const void *bytes, uint64_t n)
{
    shard_out *p = &c->sp[s];
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
    if ((rc = spruce__pwrite_all(p->fd, bytes, (size_t)n, 8 + p->room + p->size, p->path)))
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
    uint8_t *bm = scratch(c, S_BITMASK, bmn ? bmn : 1), *vals = NULL;
    int64_t *ro = NULL;
    int rc;
    if (!bm)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", what);
    if (c->o.sparse == 2) {
        nnz = rows * cols / 2;
        if (!(vals = scratch(c, S_VALUES, (size_t)nnz * (size_t)es + 1))) {
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
        vals = scratch(c, S_VALUES, (size_t)nnz * (size_t)es + 1);
        ro = scratch(c, S_ROWOFF, (size_t)rows * sizeof *ro);
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
    int8_t *q = scratch(c, S_LEVELS, (size_t)n + 1), *zp = scratch(c, S_ZP, (size_t)(rows * ng) + 1);
    void *sc = scratch(c, S_SCALE, (size_t)(rows * ng) * (size_t)es + 1);
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
        if (!(pk = scratch(c, S_PACKED, (size_t)(rows * pc) * 4 + 4))) {
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
            if (!(pk = scratch(c, S_PACKED, (size_t)(pr * ng) * 4 + 4))) {
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
    {   /* one pass, without a branch: the finite check and the zeros */
        int finite = 1;
        int64_t zeros = 0;
        for (i = 0; i < n; i++) {
            finite &= isfinite(data[i]) != 0;
            zeros += data[i] == 0.0f;
        }
        for (i = 0; !finite && i < n; i++) /* only to name the first */
            if (!isfinite(data[i]))
                return spruce__seterr(SPRUCE_ENAN, "%s: element %lld of the replacement is %g",
                                      what, (long long)i, (double)data[i]);
        c->zeros += zeros;
    }
    c->params += n;
    snprintf(prefix, sizeof prefix, "%.*s", (int)(len - 7), t->name);
    c->set[index] = 1;
    if (g && !c->plain)
        return emit_quantized(c, t, prefix, data, g, what);
    if (!(dense = scratch(c, S_DENSE, (size_t)n * (size_t)es + 1)))
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", what);
    to_dtype(data, (size_t)n, t->dtype, dense);
    if (c->o.sparse)
        rc = emit_sparse(c, t->shard, prefix, dense, es, 1, t->dtype_name, t->shape[0],
                         t->shape[1], what);
    else
        rc = emit(c, t->shard, t->name, t->dtype_name, t->ndim, t->shape, dense, (uint64_t)n * es);
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

/* Shard s's header, into the room before its data: 8-byte length, the JSON,
 * spaces to the end of the room. */
static int write_header(spruce__ctw *c, int s)
{
    shard_out *p = &c->sp[s];
    json_t *h = json_object(), *meta = json_object();
    char *js = NULL, *room = NULL;
    int rc = 0, i;
    size_t hl;
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
    if (!(js = json_dumps(h, JSON_COMPACT)) || !(room = malloc((size_t)p->room))) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", p->path);
        goto done;
    }
    hl = strlen(js);
    if (hl > p->room) { /* header_rooms is an upper bound: a bug if not */
        rc = spruce__seterr(SPRUCE_EIO, "%s: header of %zu bytes exceeds the %llu bytes "
                            "reserved for it", p->path, hl, (unsigned long long)p->room);
        goto done;
    }
    memcpy(room, js, hl);
    memset(room + hl, ' ', (size_t)p->room - hl);
    for (i = 0; i < 8; i++)
        lb[i] = (uint8_t)(p->room >> (8 * i));
    if ((rc = spruce__pwrite_all(p->fd, lb, 8, 0, p->path)) ||
        (rc = spruce__pwrite_all(p->fd, room, (size_t)p->room, 8, p->path)))
        goto done;
    if (fsync(p->fd) < 0)
        rc = spruce__seterr(SPRUCE_EIO, "%s: fsync failed: %s", p->path, strerror(errno));
done:
    json_decref(h);
    free(js);
    free(room);
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
        rc = write_header(c, i);
        for (j = 0; j < c->sp[i].ne; j++)
            json_object_set_new(wm, c->sp[i].e[j].name, json_string(sn));
        if (close(c->sp[i].fd) < 0 && !rc)
            rc = spruce__seterr(SPRUCE_EIO, "%s: close failed: %s", c->sp[i].path, strerror(errno));
        c->sp[i].fd = -1;
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
