/* ckpt.c: a Hugging Face checkpoint directory, memory-mapped.
 *
 * dir/model.safetensors.index.json  {"weight_map": {"tensor": "file", ...}}
 *   names the shard files; otherwise dir/model.safetensors is the only file.
 * Every file is mapped read-only and its header validated (safetensors.c);
 * the index must agree with the files: each tensor of the map in the file the
 * map names, no tensor in two files, no tensor missing from the map. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "ckpt_internal.h"
#include "spruce_files.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "spruce reads safetensors (little-endian) in place: a little-endian host is required"
#endif

typedef struct {
    char *name;  /* file name inside the directory */
    char *path;  /* dir/name */
    uint8_t *map;
    size_t size;
    spruce__st_header hdr;
} shard;

struct spruce_ckpt {
    char *dir;
    shard *sh;
    int nsh;
    spruce_tensor *t;
    int n;
    int *slot;     /* open-addressing hash of tensor names: index into t, -1 empty */
    size_t nslot;  /* power of two */
    void **dec;    /* compressed-tensors: decoded weights and their names */
    char **dec_name;
    int ndec;
    /* Opened lazily (spruce_ckpt_open_lazy): the compressed modules, whose
     * parts are in pt (indexed by pslot) and out of t; the module decoded last
     * (cache_t, its bytes cache_buf) for the table's tensor cached. */
    spruce__ct_scheme scheme;
    struct spruce__ct_lazy *mods;
    int nmods;
    spruce_tensor *pt;
    int npt;
    int *pslot;
    size_t npslot;
    pthread_mutex_t lock;
    const spruce_tensor *cached;
    spruce_tensor cache_t;
    void *cache_buf;
};

struct spruce__ct_lazy {
    spruce_ckpt *c;
    char *prefix;
    int part[8];   /* its parts in c->pt */
    int nparts;
};

char *spruce__path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

void spruce_ckpt_close(spruce_ckpt *c)
{
    int i;
    if (!c)
        return;
    for (i = 0; i < c->nsh; i++) {
        if (c->sh[i].map)
            munmap(c->sh[i].map, c->sh[i].size);
        spruce__st_header_clear(&c->sh[i].hdr);
        free(c->sh[i].name);
        free(c->sh[i].path);
    }
    free(c->sh);
    for (i = 0; i < c->ndec; i++) {
        free(c->dec[i]);
        free(c->dec_name[i]);
    }
    free(c->dec);
    free(c->dec_name);
    for (i = 0; i < c->nmods; i++)
        free(c->mods[i].prefix);
    if (c->mods)
        pthread_mutex_destroy(&c->lock);
    free(c->mods);
    free(c->cache_buf);
    free(c->pt);
    free(c->pslot);
    free(c->t);
    free(c->slot);
    free(c->dir);
    free(c);
}

static int map_shard(shard *s)
{
    int fd, rc = 0;
    struct stat st;
    if ((rc = spruce__open_regular(s->path, &fd)))
        return rc; /* a directory or a FIFO is refused before it is mapped */
    if (fstat(fd, &st) < 0) {
        rc = spruce__seterr(spruce__errno_code(errno), "%s: cannot stat: %s", s->path, strerror(errno));
        goto done;
    }
    s->size = (size_t)st.st_size;
    if (s->size < 8) { /* mmap of an empty file fails; let the parser say why */
        rc = spruce__safetensors_parse((const uint8_t *)"", s->size, s->path, &s->hdr);
        goto done;
    }
    s->map = mmap(NULL, s->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (s->map == MAP_FAILED) {
        s->map = NULL;
        rc = spruce__seterr(spruce__errno_code(errno), "%s: cannot map %zu bytes: %s", s->path, s->size,
                            strerror(errno));
        goto done;
    }
    rc = spruce__safetensors_parse(s->map, s->size, s->path, &s->hdr);
done:
    close(fd);
    return rc;
}

/* Index every tensor of every shard; refuse a name in two shards. */
static int build_table(spruce_ckpt *c)
{
    int i, j, total = 0;
    for (i = 0; i < c->nsh; i++)
        total += c->sh[i].hdr.n;
    c->t = calloc((size_t)total + 1, sizeof *c->t);
    for (c->nslot = 16; c->nslot < 2 * (size_t)total; c->nslot *= 2)
        ;
    c->slot = malloc(c->nslot * sizeof *c->slot);
    if (!c->t || !c->slot)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory indexing %d tensors", c->dir, total);
    memset(c->slot, 0xff, c->nslot * sizeof *c->slot);
    for (i = 0; i < c->nsh; i++) {
        shard *s = &c->sh[i];
        for (j = 0; j < s->hdr.n; j++) {
            spruce__st_entry *e = &s->hdr.e[j];
            spruce_tensor *t = &c->t[c->n];
            size_t h = hash_str(e->name) & (c->nslot - 1);
            while (c->slot[h] >= 0) {
                const spruce_tensor *o = &c->t[c->slot[h]];
                if (!strcmp(o->name, e->name))
                    return spruce__seterr(SPRUCE_EFORMAT,
                                          "%s: tensor '%s': expected in one file only, found also in %s",
                                          s->path, e->name, c->sh[o->shard].path);
                h = (h + 1) & (c->nslot - 1);
            }
            c->slot[h] = c->n;
            t->name = e->name;
            t->dtype = e->dtype;
            t->dtype_name = e->dtype_name;
            t->ndim = e->ndim;
            memcpy(t->shape, e->shape, sizeof t->shape);
            t->data = s->map ? s->map + s->hdr.data_start + e->begin : NULL;
            t->nbytes = (size_t)(e->end - e->begin);
            t->shard = i;
            c->n++;
        }
    }
    return 0;
}

static int add_shard(spruce_ckpt *c, const char *name)
{
    shard *s;
    int i;
    for (i = 0; i < c->nsh; i++)
        if (!strcmp(c->sh[i].name, name))
            return i;
    s = realloc(c->sh, (size_t)(c->nsh + 1) * sizeof *s);
    if (!s)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", c->dir);
    c->sh = s;
    s = &c->sh[c->nsh];
    memset(s, 0, sizeof *s);
    c->nsh++;
    s->name = strdup(name);
    s->path = spruce__path_join(c->dir, name);
    if (!s->name || !s->path)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", c->dir);
    return c->nsh - 1;
}

/* Read the index: collect the shard names (in order of first appearance), map
 * them, then check the weight map against what the files hold. */
static int open_index(spruce_ckpt *c, const char *ipath)
{
    json_error_t jerr;
    json_t *root = NULL, *wm;
    const char *k;
    json_t *v;
    int rc = 0, i;

    if ((rc = spruce__check_regular(ipath)))
        return rc; /* json_load_file would block on a FIFO */
    root = json_load_file(ipath, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return spruce__seterr(SPRUCE_EFORMAT, "%s: not valid JSON: %s (line %d, column %d)", ipath,
                              jerr.text, jerr.line, jerr.column);
    wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) {
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: expected \"weight_map\" to be an object of tensor -> file",
                            ipath);
        goto done;
    }
    json_object_foreach(wm, k, v) {
        const char *f = json_string_value(v);
        if (!f || !*f || strchr(f, '/') || !strcmp(f, ".") || !strcmp(f, "..")) {
            rc = spruce__seterr(SPRUCE_EFORMAT,
                                "%s: tensor '%s': expected a file name in this directory, found %s%s%s",
                                ipath, k, f ? "'" : "", f ? f : "a non-string", f ? "'" : "");
            goto done;
        }
        if ((rc = add_shard(c, f)) < 0)
            goto done;
        rc = 0;
    }
    if (c->nsh == 0) {
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: \"weight_map\" is empty", ipath);
        goto done;
    }
    for (i = 0; i < c->nsh; i++)
        if ((rc = map_shard(&c->sh[i])))
            goto done;
    if ((rc = build_table(c)))
        goto done;
    json_object_foreach(wm, k, v) {
        const spruce_tensor *t = spruce_ckpt_find(c, k);
        if (!t) {
            rc = spruce__seterr(SPRUCE_EFORMAT, "%s/%s: tensor '%s': listed in %s, not found in the file",
                                c->dir, json_string_value(v), k, ipath);
            goto done;
        }
        if (strcmp(c->sh[t->shard].name, json_string_value(v))) {
            rc = spruce__seterr(SPRUCE_EFORMAT, "%s: tensor '%s': expected in %s as the index says, found in %s",
                                ipath, k, json_string_value(v), c->sh[t->shard].name);
            goto done;
        }
    }
    if ((size_t)c->n != json_object_size(wm)) {
        for (i = 0; i < c->n; i++)
            if (!json_object_get(wm, c->t[i].name))
                break;
        rc = spruce__seterr(SPRUCE_EFORMAT, "%s: tensor '%s': expected in the weight map of %s, not listed",
                            c->sh[c->t[i < c->n ? i : 0].shard].path, i < c->n ? c->t[i].name : "?", ipath);
        goto done;
    }
done:
    json_decref(root);
    return rc;
}

/* Index c->t[0..n) by name again. */
static void rehash(spruce_ckpt *c)
{
    int i;
    memset(c->slot, 0xff, c->nslot * sizeof *c->slot);
    for (i = 0; i < c->n; i++) {
        size_t h = hash_str(c->t[i].name) & (c->nslot - 1);
        while (c->slot[h] >= 0)
            h = (h + 1) & (c->nslot - 1);
        c->slot[h] = i;
    }
}

static const spruce_tensor *find_in(const spruce_tensor *t, const int *slot, size_t nslot,
                                    const char *name)
{
    size_t h;
    if (!slot || !name)
        return NULL;
    for (h = hash_str(name) & (nslot - 1); slot[h] >= 0; h = (h + 1) & (nslot - 1))
        if (!strcmp(t[slot[h]].name, name))
            return &t[slot[h]];
    return NULL;
}

const spruce_tensor *spruce__ckpt_find_part(const spruce_ckpt *c, const char *name)
{
    if (c && c->pt)
        return find_in(c->pt, c->pslot, c->npslot, name);
    return spruce_ckpt_find(c, name);
}

/* A compressed-tensors checkpoint: each compressed module becomes one dense
 * M.weight (compressed_read.c); its parts leave the table.  Decoded now, or
 * (lazy) described now and decoded when read, the parts kept aside in pt. */
static int decode_compressed(spruce_ckpt *c, int lazy)
{
    spruce__ct_scheme s;
    spruce_tensor *nt;
    int rc, i, n = 0;
    if ((rc = spruce__ct_scheme_read(c->dir, &s)) || !s.present || (!s.sparse && !s.bits))
        return rc;
    c->scheme = s;
    nt = calloc((size_t)c->n + 1, sizeof *nt);
    c->dec = calloc((size_t)c->n + 1, sizeof *c->dec);
    c->dec_name = calloc((size_t)c->n + 1, sizeof *c->dec_name);
    if (lazy && (c->mods = calloc((size_t)c->n + 1, sizeof *c->mods)))
        pthread_mutex_init(&c->lock, NULL);
    if (!nt || !c->dec || !c->dec_name || (lazy && !c->mods)) {
        free(nt);
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", c->dir);
    }
    for (i = 0; i < c->n && !rc; i++) {
        size_t plen;
        int primary;
        char *prefix;
        if (!spruce__ct_component(c->t[i].name, c->t[i].dtype_name, &s, &plen, &primary)) {
            nt[n++] = c->t[i];
            continue;
        }
        if (!primary)
            continue;
        if (!(prefix = strndup(c->t[i].name, plen)) ||
            !(c->dec_name[c->ndec] = malloc(plen + 8))) {
            free(prefix);
            rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", c->dir);
            break;
        }
        sprintf(c->dec_name[c->ndec], "%s.weight", prefix);
        if (lazy) {
            struct spruce__ct_lazy *mod = &c->mods[c->nmods++];
            mod->c = c;
            mod->prefix = prefix;
            rc = spruce__ct_describe(c, prefix, &s, &nt[n]);
            nt[n].lazy = mod;
            prefix = NULL;
        } else {
            rc = spruce__ct_decode(c, prefix, &s, &nt[n], &c->dec[c->ndec]);
        }
        nt[n].name = c->dec_name[c->ndec++];
        n++;
        free(prefix);
    }
    if (rc) {
        free(nt);
        return rc;
    }
    if (lazy) { /* the parts stay findable for decoding, out of the table */
        c->pt = c->t, c->npt = c->n, c->pslot = c->slot, c->npslot = c->nslot;
        if (!(c->slot = malloc(c->nslot * sizeof *c->slot))) {
            c->t = nt; /* freed with the checkpoint */
            return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", c->dir);
        }
    } else {
        free(c->t);
    }
    c->t = nt;
    c->n = n;
    rehash(c);
    for (i = 0; lazy && i < c->npt; i++) { /* each module's parts, to give their pages back */
        size_t plen;
        int primary;
        char name[1024];
        const spruce_tensor *t;
        if (!spruce__ct_component(c->pt[i].name, c->pt[i].dtype_name, &s, &plen, &primary) ||
            plen + 8 > sizeof name)
            continue;
        memcpy(name, c->pt[i].name, plen);
        memcpy(name + plen, ".weight", 8);
        if ((t = spruce_ckpt_find(c, name)) && t->lazy && t->lazy->nparts < 8) {
            struct spruce__ct_lazy *mod = &c->mods[t->lazy - c->mods];
            mod->part[mod->nparts++] = i;
        }
    }
    return 0;
}

/* Give back the file pages of a lazy module's parts once it is decoded. */
static void release_parts(const struct spruce__ct_lazy *mod)
{
    int i;
    for (i = 0; i < mod->nparts; i++)
        spruce_ckpt_release(mod->c, &mod->c->pt[mod->part[i]]);
}

int spruce__ckpt_decoded(const spruce_ckpt *c)
{
    return c->ndec > 0;
}

static int finish_open(spruce_ckpt *c, int rc, spruce_ckpt **out)
{
    if (rc) {
        spruce_ckpt_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

static int open_dir(const char *dir, int lazy, spruce_ckpt **out)
{
    spruce_ckpt *c;
    char *ipath = NULL;
    struct stat st;
    int rc = 0;

    if (!dir || !out)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_ckpt_open: NULL argument");
    *out = NULL;
    if (stat(dir, &st) < 0)
        return spruce__seterr(spruce__errno_code(errno), "%s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) /* a single .safetensors file */
        return spruce_ckpt_open_file(dir, out);
    c = calloc(1, sizeof *c);
    if (!c || !(c->dir = strdup(dir)) || !(ipath = spruce__path_join(dir, "model.safetensors.index.json"))) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", dir);
        goto done;
    }
    if (access(ipath, F_OK) == 0) {
        rc = open_index(c, ipath);
    } else {
        char *p = spruce__path_join(dir, "model.safetensors");
        int exists = p && access(p, F_OK) == 0;
        free(p);
        if (!exists) {
            rc = spruce__seterr(SPRUCE_ENOTFOUND,
                                "%s: expected model.safetensors or model.safetensors.index.json, found neither",
                                dir);
            goto done;
        }
        if ((rc = add_shard(c, "model.safetensors")) < 0)
            goto done;
        if ((rc = map_shard(&c->sh[0])) || (rc = build_table(c)))
            goto done;
    }
    if (!rc)
        rc = decode_compressed(c, lazy);
done:
    free(ipath);
    return finish_open(c, rc, out);
}

int spruce_ckpt_open(const char *dir, spruce_ckpt **out)
{
    return open_dir(dir, 0, out);
}

int spruce_ckpt_open_lazy(const char *dir, spruce_ckpt **out)
{
    return open_dir(dir, 1, out);
}

int spruce_ckpt_open_file(const char *path, spruce_ckpt **out)
{
    spruce_ckpt *c;
    const char *slash;
    int rc = 0;
    if (!path || !out)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_ckpt_open_file: NULL argument");
    *out = NULL;
    c = calloc(1, sizeof *c);
    if (!c)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", path);
    slash = strrchr(path, '/');
    c->dir = slash ? strndup(path, (size_t)(slash == path ? 1 : slash - path)) : strdup(".");
    if (!c->dir) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    if ((rc = add_shard(c, slash ? slash + 1 : path)) < 0)
        goto done;
    rc = 0;
    free(c->sh[0].path); /* keep the path exactly as given, for messages */
    if (!(c->sh[0].path = strdup(path))) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    if ((rc = map_shard(&c->sh[0])) || (rc = build_table(c)))
        goto done;
done:
    return finish_open(c, rc, out);
}

const char *spruce_ckpt_dir(const spruce_ckpt *c) { return c->dir; }
int spruce_ckpt_count(const spruce_ckpt *c) { return c->n; }
int spruce_ckpt_nshards(const spruce_ckpt *c) { return c->nsh; }

const spruce_tensor *spruce_ckpt_tensor_at(const spruce_ckpt *c, int i)
{
    return i >= 0 && i < c->n ? &c->t[i] : NULL;
}

const spruce_tensor *spruce_ckpt_find(const spruce_ckpt *c, const char *name)
{
    return c ? find_in(c->t, c->slot, c->nslot, name) : NULL;
}

const char *spruce_ckpt_file_of(const spruce_ckpt *c, const spruce_tensor *t)
{
    return t && t->shard >= 0 && t->shard < c->nsh ? c->sh[t->shard].path : "?";
}

/* Forget the decoded bytes of t (any when t is NULL). */
static void drop_cached(spruce_ckpt *c, const spruce_tensor *t)
{
    pthread_mutex_lock(&c->lock);
    if (!t || c->cached == t) {
        free(c->cache_buf);
        c->cache_buf = NULL;
        c->cached = NULL;
    }
    pthread_mutex_unlock(&c->lock);
}

/* Elements [first, first + count) of a lazily decoded module. */
static int lazy_read(const spruce_tensor *t, size_t first, size_t count, float *out)
{
    spruce_ckpt *c = t->lazy->c;
    int rc = 0;
    pthread_mutex_lock(&c->lock);
    if (c->cached != t) {
        void *buf = NULL;
        spruce_tensor d;
        free(c->cache_buf);
        c->cache_buf = NULL;
        c->cached = NULL;
        memset(&d, 0, sizeof d);
        rc = spruce__ct_decode(c, t->lazy->prefix, &c->scheme, &d, &buf);
        release_parts(t->lazy);
        if (!rc) {
            d.name = t->name;
            d.lazy = NULL;
            c->cache_t = d;
            c->cache_buf = buf;
            c->cached = t;
        }
    }
    if (!rc)
        rc = spruce_tensor_read_f32_range(&c->cache_t, first, count, out);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int spruce_ckpt_quantized(const spruce_tensor *t, spruce_ckpt_qscheme *s)
{
    const spruce__ct_scheme *k;
    if (!t || !t->lazy || !t->lazy->c->scheme.bits)
        return 0;
    k = &t->lazy->c->scheme;
    if (s) {
        s->bits = k->bits;
        s->groupsize = k->groupsize;
        s->sym = k->sym;
        s->sparse = k->sparse;
    }
    return 1;
}

int spruce_ckpt_read_levels(const spruce_tensor *t, int8_t **q, float **scale, int8_t **zero)
{
    int64_t rows, cols;
    int rc;
    if (!t || !q || !scale || !zero)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_ckpt_read_levels: NULL argument");
    *q = NULL, *scale = NULL, *zero = NULL;
    if (!spruce_ckpt_quantized(t, NULL))
        return spruce__seterr(SPRUCE_EINVAL, "tensor '%s': not a quantized module of a lazily "
                              "opened checkpoint", t->name);
    rc = spruce__ct_levels(t->lazy->c, t->lazy->prefix, &t->lazy->c->scheme, &rows, &cols, q,
                           scale, zero);
    release_parts(t->lazy);
    if (!rc && (rows != t->shape[0] || cols != t->shape[1])) { /* described at open */
        free(*q), free(*scale), free(*zero);
        *q = NULL, *scale = NULL, *zero = NULL;
        rc = spruce__seterr(SPRUCE_ESHAPE, "tensor '%s': levels (%lld, %lld), expected (%lld, "
                            "%lld)", t->name, (long long)rows, (long long)cols,
                            (long long)t->shape[0], (long long)t->shape[1]);
    }
    return rc;
}

/* The window the kernel maps around a faulting page (fault-around: 64 KiB by
 * default on Linux), so that releasing a read range also releases the
 * neighbours mapped with it. */
#define FAULT_AROUND_BYTES ((size_t)64 << 10)

void spruce_ckpt_release_range(const spruce_ckpt *c, const spruce_tensor *t, size_t off,
                               size_t len)
{
    const shard *s;
    const uint8_t *p;
    size_t page = (size_t)sysconf(_SC_PAGESIZE), nbytes, tlo, thi, lo, hi;
    if (c && t && t->lazy) {
        if (len && off < t->nbytes && len >= t->nbytes - off) /* its end: drop the decoded bytes */
            drop_cached(t->lazy->c, t);
        return;
    }
    if (!c || !t || t->shard < 0 || t->shard >= c->nsh || !c->sh[t->shard].map)
        return;
    s = &c->sh[t->shard];
    p = t->data;
    nbytes = t->nbytes;
    if (p < s->map || p >= s->map + s->size || nbytes > (size_t)(s->map + s->size - p))
        return; /* a decoded (compressed-tensors) weight: not file pages */
    if (off >= nbytes || len == 0)
        return;
    if (len > nbytes - off)
        len = nbytes - off;
    /* whole pages of the tensor only: a neighbour sharing the edge pages keeps them */
    tlo = ((size_t)(p - s->map) + page - 1) / page * page;
    thi = ((size_t)(p - s->map) + nbytes) / page * page;
    /* the range read, widened to the fault-around windows it touched */
    lo = ((size_t)(p - s->map) + off) / FAULT_AROUND_BYTES * FAULT_AROUND_BYTES;
    hi = ((size_t)(p - s->map) + off + len + FAULT_AROUND_BYTES - 1) / FAULT_AROUND_BYTES *
         FAULT_AROUND_BYTES;
    if (lo < tlo)
        lo = tlo;
    if (hi > thi)
        hi = thi;
    if (hi > lo)
        (void)madvise(s->map + lo, hi - lo, MADV_DONTNEED);
}

void spruce_ckpt_release(const spruce_ckpt *c, const spruce_tensor *t)
{
    if (t)
        spruce_ckpt_release_range(c, t, 0, t->nbytes);
}

const char *spruce_ckpt_metadata(const spruce_ckpt *c, int s, const char *key)
{
    int i;
    if (s < 0 || s >= c->nsh)
        return NULL;
    for (i = 0; i < c->sh[s].hdr.nmeta; i++)
        if (!strcmp(c->sh[s].hdr.meta_key[i], key))
            return c->sh[s].hdr.meta_val[i];
    return NULL;
}

int64_t spruce_tensor_numel(const spruce_tensor *t)
{
    int64_t n = 1;
    int i;
    for (i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

int spruce_tensor_read_f32_range(const spruce_tensor *t, size_t first, size_t count, float *out)
{
    const uint8_t *p;
    size_t i, numel;
    if (!t || (!out && count))
        return spruce__seterr(SPRUCE_EINVAL, "spruce_tensor_read_f32: NULL argument");
    numel = (size_t)spruce_tensor_numel(t);
    if (first > numel || count > numel - first)
        return spruce__seterr(SPRUCE_EINVAL,
                              "tensor '%s': expected elements within [0, %zu), found [%zu, %zu)", t->name,
                              numel, first, first + count);
    if (t->lazy)
        return lazy_read(t, first, count, out);
    p = t->data;
    switch (t->dtype) {
    case SPRUCE_DTYPE_F32:
        if (count)
            memcpy(out, p + 4 * first, 4 * count);
        return 0;
    case SPRUCE_DTYPE_F16:
    case SPRUCE_DTYPE_BF16:
        p += 2 * first;
        for (i = 0; i < count; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2); /* the data may be unaligned */
            out[i] = t->dtype == SPRUCE_DTYPE_F16 ? spruce_f16_to_f32(h) : spruce_bf16_to_f32(h);
        }
        return 0;
    default:
        return spruce__seterr(SPRUCE_EDTYPE, "tensor '%s': expected dtype F32, F16 or BF16, found %s",
                              t->name, t->dtype_name);
    }
}

int spruce_tensor_read_f32(const spruce_tensor *t, float *out)
{
    if (!t)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_tensor_read_f32: NULL tensor");
    return spruce_tensor_read_f32_range(t, 0, (size_t)spruce_tensor_numel(t), out);
}

/* For the writer: the shard table. */
int spruce__ckpt_shard(const spruce_ckpt *c, int i, const char **name, const char **path,
                       const uint8_t **map, size_t *size)
{
    if (i < 0 || i >= c->nsh)
        return SPRUCE_EINVAL;
    *name = c->sh[i].name;
    *path = c->sh[i].path;
    *map = c->sh[i].map;
    *size = c->sh[i].size;
    return 0;
}
