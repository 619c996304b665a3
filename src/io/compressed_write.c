/* compressed_write.c: the checkpoint writer's compressed-tensors mode.
 *
 * Follows vllm-project/compressed-tensors 0.14 (the layouts are in
 * spruce_compressed.h; the config in ModelCompressor.update_config: a
 * "quantization_config" with quant_method "compressed-tensors", format,
 * config_groups, ignore and sparsity_config).
 *
 * Each shard is written once, in place.  At begin, room is reserved for its
 * header: an upper bound of the header's length, from the names, dtypes and
 * ranks of the tensors it will hold (see header_rooms).  Each replaced tensor
 * is written when it is set, after that room: a piece of rows at a time
 * checked, converted (or quantized), encoded and appended, rows in parallel,
 * so that only a piece and the tensor's bitmask are in memory (emit_pieces);
 * its writeback to the disk is started then, so that the sync at prepare
 * waits for less.  At prepare the tensors never set are
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
#include <sys/stat.h>
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
    int in_fd;    /* the input shard, opened to copy the tensors left as they were */
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
        if (c->sp[i].in_fd >= 0)
            close(c->sp[i].in_fd);
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
        c->sp[i].fd = c->sp[i].in_fd = -1;
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

/* Shard s's entry for a part of n bytes at data offset off. */
static int add_entry(spruce__ctw *c, int s, const char *name, const char *dtype, int ndim,
                     const int64_t *shape, uint64_t off, uint64_t n)
{
    shard_out *p = &c->sp[s];
    entry *e;
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
    e->off = off;
    e->n = n;
    p->ne++;
    return 0;
}

/* n bytes appended to shard s's data, after its header room. */
static int append(spruce__ctw *c, int s, const void *bytes, uint64_t n)
{
    shard_out *p = &c->sp[s];
    int rc = spruce__pwrite_all(p->fd, bytes, (size_t)n, 8 + p->room + p->size, p->path);
    if (!rc)
        p->size += n;
    return rc;
}

/* Append one part (name, dtype, shape) to shard s. */
static int emit(spruce__ctw *c, int s, const char *name, const char *dtype, int ndim,
                const int64_t *shape, const void *bytes, uint64_t n)
{
    int rc = add_entry(c, s, name, dtype, ndim, shape, c->sp[s].size, n);
    return rc ? rc : append(c, s, bytes, n);
}

static int emit2(spruce__ctw *c, int s, const char *prefix, const char *part, const char *dtype,
                 int64_t d0, int64_t d1, const void *bytes, uint64_t n)
{
    char name[1024 + sizeof ".weight_zero_point"]; /* the prefix is at most 1023 */
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

/* Packed levels (pack-quantized): the whole tensor quantized, then packed. */
static int emit_packed(spruce__ctw *c, const spruce_tensor *t, const char *prefix,
                       const float *data, const spruce_qgrid *g, const char *what)
{
    int64_t rows = t->shape[0], cols = t->shape[1], ng = cols / g->groupsize, n = rows * cols;
    int64_t shape[2] = {rows, cols}, pc = spruce_ct_packed_cols(cols, c->bits);
    int es = t->dtype == SPRUCE_DTYPE_F32 ? 4 : 2, rc;
    int8_t *q = scratch(c, S_LEVELS, (size_t)n + 1), *zp = scratch(c, S_ZP, (size_t)(rows * ng) + 1);
    void *sc = scratch(c, S_SCALE, (size_t)(rows * ng) * (size_t)es + 1);
    int32_t *pk = scratch(c, S_PACKED, (size_t)(rows * pc) * 4 + 4);
    if (!q || !zp || !sc || !pk)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", what);
    if ((rc = spruce_ct_quantize(data, g, q, zp, what)))
        return rc;
    to_dtype(g->scale, (size_t)(rows * ng), t->dtype, sc); /* the scale in the weight's dtype */
    spruce_ct_pack(q, rows, cols, c->bits, pk);
    if ((rc = emit2(c, t->shard, prefix, "weight_packed", "I32", rows, pc, pk,
                    (uint64_t)(rows * pc) * 4)) ||
        (rc = emit2(c, t->shard, prefix, "weight_shape", "I64", 2, -1, shape, 16)) ||
        (rc = emit2(c, t->shard, prefix, "weight_scale", t->dtype_name, rows, ng, sc,
                    (uint64_t)(rows * ng) * es)))
        return rc;
    if (!g->sym) {
        int64_t pr = spruce_ct_packed_cols(rows, c->bits);
        if (!(pk = scratch(c, S_PACKED, (size_t)(pr * ng) * 4 + 4)))
            return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", what);
        spruce_ct_pack_dim0(zp, rows, ng, c->bits, pk);
        rc = emit2(c, t->shard, prefix, "weight_zero_point", "I32", pr, ng, pk,
                   (uint64_t)(pr * ng) * 4);
    }
    return rc;
}

/* Every other layout is written a piece of rows at a time, each piece about
 * this many bytes of stored elements, its buffers reused from piece to
 * piece: rows in parallel, each row checked, converted and encoded by one
 * thread while it is in that thread's cache, then the piece appended. */
#define PIECE_BYTES ((size_t)4 << 20)

/* What one piece found: its first bad row (nr when none) for each check. */
typedef struct {
    int64_t nonfinite, bad_grid, bad_pattern, zeros;
} piece_status;

/* Rows [r0, r0 + nr) of data (rows of cols floats): checked finite, zeros
 * counted, stored as elements of es bytes in dense (the tensor's dtype dt,
 * or g's levels), and 2:4-encoded into vals and bm (row r0 + i of the
 * bitmask at bm + i bpr) when sparse24. */
static void piece(const float *data, int64_t r0, int64_t nr, int64_t cols, spruce_dtype dt,
                  const spruce_qgrid *g, int8_t *zp, int es, uint8_t *dense, int sparse24,
                  uint8_t *vals, uint8_t *bm, piece_status *st)
{
    const size_t bpr = (size_t)((cols + 7) / 8);
    int64_t nonfinite = nr, bad_grid = nr, bad_pattern = nr, zeros = 0, i;
#pragma omp parallel for schedule(static) reduction(min:nonfinite, bad_grid, bad_pattern) \
    reduction(+:zeros)
    for (i = 0; i < nr; i++) {
        const float *x = data + (r0 + i) * cols;
        uint8_t *d = dense + (size_t)(i * cols) * es;
        int64_t j, z = 0;
        int f = 1;
        if (g) { /* the grid check refuses what is not finite, and counts the zeros */
            if (spruce__ct_quantize_row(data, g, r0 + i, (int8_t *)d, zp, &z, NULL)) {
                if (i < bad_grid)
                    bad_grid = i;
                continue;
            }
            zeros += z;
        } else {
#pragma omp simd reduction(&:f) reduction(+:z)
            for (j = 0; j < cols; j++) { /* without a branch: the finite check and the zeros */
                f &= isfinite(x[j]) != 0;
                z += x[j] == 0.0f;
            }
            zeros += z;
            if (!f) {
                if (i < nonfinite)
                    nonfinite = i;
                continue;
            }
            to_dtype(x, (size_t)cols, dt, d);
        }
        if (sparse24 && spruce__ct_24_row(d, es, !g, cols, vals + (size_t)(i * (cols / 2)) * es,
                                          bm + (size_t)i * bpr) && i < bad_pattern)
            bad_pattern = i;
    }
    st->nonfinite = nonfinite;
    st->bad_grid = bad_grid;
    st->bad_pattern = bad_pattern;
    st->zeros = zeros;
}

/* Tensor t (rows, cols) from data, in pieces (see PIECE_BYTES): its values in
 * t's dtype, or on grid g as I8 levels; sparse, the values as the bitmask
 * layout stores them, the whole bitmask (and row offsets) after them. */
static int emit_pieces(spruce__ctw *c, const spruce_tensor *t, const char *prefix,
                       const float *data, const spruce_qgrid *g, const char *what)
{
    const int64_t rows = t->shape[0], cols = t->shape[1];
    const int sparse = c->o.sparse, es = g ? 1 : t->dtype == SPRUCE_DTYPE_F32 ? 4 : 2, s = t->shard;
    const char *dtype = g ? "I8" : t->dtype_name;
    const size_t bpr = (size_t)((cols + 7) / 8), row_bytes = (size_t)cols * (size_t)es;
    const int64_t pr = row_bytes >= PIECE_BYTES ? 1 : (int64_t)(PIECE_BYTES / (row_bytes + !row_bytes));
    const int64_t ng = g ? cols / g->groupsize : 0;
    int64_t shape[2] = {rows, cols}, r0, nnz = 0, i;
    uint64_t off;
    uint8_t *dense, *vals = NULL, *bm = NULL;
    int64_t *ro = NULL;
    int8_t *zp = NULL;
    void *sc = NULL;
    int rc;
    if (sparse == 2 && cols % 4)
        return spruce__seterr(SPRUCE_ESHAPE, "%s: sparse-24-bitmask needs columns divisible by 4, "
                              "found %lld", what, (long long)cols);
    dense = scratch(c, S_DENSE, (size_t)(pr < rows ? pr : rows) * row_bytes + 1);
    if (sparse) {
        vals = scratch(c, S_VALUES, (size_t)(pr < rows ? pr : rows) * row_bytes + 1);
        bm = scratch(c, S_BITMASK, (size_t)rows * bpr + 1);
    }
    if (sparse == 1)
        ro = scratch(c, S_ROWOFF, (size_t)rows * sizeof *ro + 1);
    if (g) {
        zp = scratch(c, S_ZP, (size_t)(rows * ng) + 1);
        sc = scratch(c, S_SCALE, (size_t)(rows * ng) * (t->dtype == SPRUCE_DTYPE_F32 ? 4 : 2) + 1);
    }
    if (!dense || (sparse && (!vals || !bm)) || (sparse == 1 && !ro) || (g && (!zp || !sc)))
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", what);
    if (sparse && (rc = emit2(c, s, prefix, "shape", "I64", 2, 1, shape, 16)))
        return rc;
    off = c->sp[s].size;
    for (r0 = 0; r0 < rows; r0 += pr) {
        const int64_t nr = rows - r0 < pr ? rows - r0 : pr;
        uint8_t *out = sparse ? vals : dense;
        uint64_t nb = (uint64_t)nr * row_bytes;
        piece_status st;
        piece(data, r0, nr, cols, t->dtype, g, zp, es, dense, sparse == 2, vals,
              sparse ? bm + (size_t)r0 * bpr : NULL, &st);
        if (st.bad_grid < nr) /* off the grid, or not finite: said as such */
            st.nonfinite = st.bad_grid;
        if (st.nonfinite < nr) /* only to name the first */
            for (i = (r0 + st.nonfinite) * cols; i < (r0 + st.nonfinite + 1) * cols; i++)
                if (!isfinite(data[i]))
                    return spruce__seterr(SPRUCE_ENAN, "%s: element %lld of the replacement is %g",
                                          what, (long long)i, (double)data[i]);
        if (st.bad_grid < nr)
            return spruce__ct_quantize_row(data, g, r0 + st.bad_grid,
                                           (int8_t *)dense + st.bad_grid * cols, zp, NULL, what);
        if (st.bad_pattern < nr)
            return spruce__ct_24_error(dense + (size_t)(st.bad_pattern * cols) * es, es, !g,
                                       r0 + st.bad_pattern, cols, what);
        c->zeros += st.zeros;
        if (sparse == 1) {
            int64_t base = nnz;
            spruce_ct_bitmask_encode(dense, es, !g, nr, cols, vals, bm + (size_t)r0 * bpr, ro + r0);
            for (i = 0; i < nr; i++)
                ro[r0 + i] += base;
            for (i = 0; i < (int64_t)(nr * bpr); i++)
                nnz += __builtin_popcount(bm[(size_t)r0 * bpr + (size_t)i]);
            nb = (uint64_t)(nnz - base) * (uint64_t)es;
        } else if (sparse == 2) {
            nb /= 2;
        }
        if ((rc = append(c, s, out, nb)))
            return rc;
    }
    if (sparse) {
        char name[1024 + sizeof ".compressed"];
        int64_t vshape[2] = {sparse == 2 ? rows : nnz, cols / 2};
        snprintf(name, sizeof name, "%s.compressed", prefix);
        if ((rc = add_entry(c, s, name, dtype, sparse == 2 ? 2 : 1, vshape, off,
                            c->sp[s].size - off)) ||
            (rc = emit2(c, s, prefix, "bitmask", "U8", rows, (cols + 7) / 8, bm,
                        (uint64_t)rows * bpr)) ||
            (sparse == 1 && (rc = emit2(c, s, prefix, "row_offsets", "I64", rows, -1, ro,
                                        (uint64_t)rows * 8))))
            return rc;
    } else if ((rc = add_entry(c, s, t->name, dtype, 2, shape, off, c->sp[s].size - off))) {
        return rc;
    }
    if (!g)
        return 0;
    to_dtype(g->scale, (size_t)(rows * ng), t->dtype, sc); /* the scale in the weight's dtype */
    if ((rc = emit2(c, s, prefix, "weight_scale", t->dtype_name, rows, ng, sc,
                    (uint64_t)(rows * ng) * (t->dtype == SPRUCE_DTYPE_F32 ? 4 : 2))))
        return rc;
    return g->sym ? 0 : emit2(c, s, prefix, "weight_zero_point", "I8", rows, ng, zp,
                              (uint64_t)(rows * ng));
}

/* Start writing shard p's data from start on to the disk, without waiting:
 * the sync at prepare then waits for less.  Only a hint: its errors are the
 * sync's to report. */
static void start_writeback(const shard_out *p, uint64_t start)
{
    (void)sync_file_range(p->fd, (off_t)(8 + p->room + start), (off_t)(p->size - start),
                          SYNC_FILE_RANGE_WRITE);
}

int spruce__ctw_set(spruce__ctw *c, const spruce_tensor *t, int index, const float *data,
                    const spruce_qgrid *g)
{
    char what[1024], prefix[1024];
    size_t len = strlen(t->name);
    int64_t i, n = spruce_tensor_numel(t);
    int rc;
    snprintf(what, sizeof what, "%s: tensor '%s'", spruce_ckpt_file_of(c->in, t), t->name);
    if (t->ndim != 2 || len < 8 || strcmp(t->name + len - 7, ".weight"))
        return spruce__seterr(SPRUCE_EINVAL, "%s: only 2-D X.weight tensors are stored compressed",
                              what);
    if (c->set[index])
        return spruce__seterr(SPRUCE_EINVAL, "%s: set twice", what);
    if (c->plain)
        g = NULL; /* a dense checkpoint: the values, not their levels */
    if (g && (rc = check_grid(c, g, t->shape[0], t->shape[1], what)))
        return rc;
    c->params += n;
    snprintf(prefix, sizeof prefix, "%.*s", (int)(len - 7), t->name);
    c->set[index] = 1;
    if (g && packed_format(c)) {
        for (i = 0; i < n; i++) /* the other layouts check each piece as they write it */
            if (!isfinite(data[i]))
                return spruce__seterr(SPRUCE_ENAN, "%s: element %lld of the replacement is %g",
                                      what, (long long)i, (double)data[i]);
        for (i = 0; i < n; i++)
            c->zeros += data[i] == 0.0f;
        return emit_packed(c, t, prefix, data, g, what);
    }
    {
        const uint64_t start = c->sp[t->shard].size;
        if ((rc = emit_pieces(c, t, prefix, data, g, what)))
            return rc;
        start_writeback(&c->sp[t->shard], start);
    }
    return 0;
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

/* Tensor t as it was.  Bytes that lie in the input shard are copied from
 * it by the kernel (copy_file_range, without passing through this process);
 * decoded ones, or any when the shard cannot be opened again as the file
 * that was mapped, are written from memory. */
static int emit_unset(spruce__ctw *c, const spruce_tensor *t)
{
    shard_out *p = &c->sp[t->shard];
    const char *sn, *sp;
    const uint8_t *m;
    size_t sz;
    uintptr_t a = (uintptr_t)t->data;
    struct stat st;
    int rc;
    spruce__ckpt_shard(c->in, t->shard, &sn, &sp, &m, &sz);
    if (!m || a < (uintptr_t)m || a - (uintptr_t)m > sz || t->nbytes > sz - (a - (uintptr_t)m))
        return emit(c, t->shard, t->name, t->dtype_name, t->ndim, t->shape, t->data, t->nbytes);
    if (p->in_fd == -1) {
        p->in_fd = open(sp, O_RDONLY | O_CLOEXEC);
        if (p->in_fd >= 0 && (fstat(p->in_fd, &st) < 0 || !S_ISREG(st.st_mode) ||
                              (uint64_t)st.st_size != (uint64_t)sz)) {
            close(p->in_fd);
            p->in_fd = -1;
        }
        if (p->in_fd < 0)
            p->in_fd = -2; /* not tried again */
    }
    if (p->in_fd < 0)
        return emit(c, t->shard, t->name, t->dtype_name, t->ndim, t->shape, t->data, t->nbytes);
    if ((rc = add_entry(c, t->shard, t->name, t->dtype_name, t->ndim, t->shape, p->size,
                        t->nbytes)) ||
        (rc = spruce__copy_range(p->in_fd, a - (uintptr_t)m, p->fd, 8 + p->room + p->size,
                                 t->nbytes, sp, p->path)))
        return rc;
    p->size += t->nbytes;
    return 0;
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
        rc = emit_unset(c, t);
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
