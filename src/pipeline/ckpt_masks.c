/* ckpt_masks.c: which tensors of a checkpoint have masks, their masks written
 * to an HDF5 mask file (export), and a mask file applied onto a checkpoint
 * (apply) through the checkpoint writer. */
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "spruce_ckpt_masks.h"
#include "spruce_family.h"
#include "spruce_model.h"
#include "pipeline_internal.h"

/* ---- selection ---------------------------------------------------------- */

/* Embeddings and the output head, as a component of a tensor name: in a
 * LLaMA-style checkpoint every other 2-D tensor is one of the seven linear
 * layers of a block (norms are 1-D). */
#define DEFAULT_EXCLUDE "(^|\\.)(embed_tokens|embed_positions|embeddings?|wte|wpe|lm_head)(\\.|$)"

struct spruce_mask_selector {
    regex_t *inc, *exc;
    int ninc, nexc, capinc, capexc;
    regex_t embed_or_head;  /* DEFAULT_EXCLUDE */
    int all;
    char *model_type;       /* NULL when unknown */
};

int spruce__regcomp(regex_t *re, const char *pat, const char *what)
{
    char msg[256];
    int e = regcomp(re, pat, REG_EXTENDED | REG_NOSUB);
    if (e) {
        regerror(e, re, msg, sizeof msg);
        return spruce__seterr(SPRUCE_EINVAL, "%s '%s': invalid regular expression: %s", what, pat,
                              msg);
    }
    return 0;
}

static int matches(const regex_t *re, const char *name)
{
    return regexec(re, name, 0, NULL, 0) == 0;
}

int spruce_mask_selector_alloc(const char *model_type, spruce_mask_selector **out)
{
    spruce_mask_selector *s;
    int rc;
    if (!out)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_mask_selector_alloc: NULL argument");
    *out = NULL;
    s = calloc(1, sizeof *s);
    if (!s || (model_type && !(s->model_type = strdup(model_type)))) {
        free(s);
        return spruce__seterr(SPRUCE_ENOMEM, "mask selector: out of memory");
    }
    if ((rc = spruce__regcomp(&s->embed_or_head, DEFAULT_EXCLUDE, "default exclusion")) < 0) {
        free(s->model_type);
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void spruce_mask_selector_free(spruce_mask_selector *s)
{
    int i;
    if (!s)
        return;
    for (i = 0; i < s->ninc; i++)
        regfree(&s->inc[i]);
    for (i = 0; i < s->nexc; i++)
        regfree(&s->exc[i]);
    regfree(&s->embed_or_head);
    free(s->inc);
    free(s->exc);
    free(s->model_type);
    free(s);
}

/* Append a compiled pat to (*arr)[*n], growing the array. */
static int add_pattern(regex_t **arr, int *n, int *cap, const char *pat, const char *what)
{
    int rc;
    if (*n == *cap) {
        int ncap = *cap ? 2 * *cap : 4;
        regex_t *g = realloc(*arr, (size_t)ncap * sizeof *g);
        if (!g)
            return spruce__seterr(SPRUCE_ENOMEM, "mask selector: out of memory");
        *arr = g;
        *cap = ncap;
    }
    if ((rc = spruce__regcomp(&(*arr)[*n], pat, what)) < 0)
        return rc;
    (*n)++;
    return 0;
}

int spruce_mask_selector_include(spruce_mask_selector *s, const char *regex)
{
    if (!s || !regex)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_mask_selector_include: NULL argument");
    return add_pattern(&s->inc, &s->ninc, &s->capinc, regex, "include");
}

int spruce_mask_selector_exclude(spruce_mask_selector *s, const char *regex)
{
    if (!s || !regex)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_mask_selector_exclude: NULL argument");
    return add_pattern(&s->exc, &s->nexc, &s->capexc, regex, "exclude");
}

void spruce_mask_selector_set_all(spruce_mask_selector *s, int all)
{
    if (s)
        s->all = all != 0;
}

/* The default selection, decided here and nowhere else: is t one of the
 * model's linear layers?  For a known family its table says
 * (spruce_family_is_linear); otherwise, by name alone: not an embedding or
 * the output head (t is 2-D already). */
static int default_selected(const spruce_mask_selector *s, const spruce_tensor *t)
{
    int r = s->model_type ? spruce_family_is_linear(s->model_type, t->name) : -1;
    if (r >= 0)
        return r;
    spruce_errclear();
    return !matches(&s->embed_or_head, t->name);
}

int spruce_mask_selector_use_ckpt(spruce_mask_selector *s, const spruce_ckpt *ck)
{
    char path[4096];
    spruce_config cfg;
    const char *dir = ck ? spruce_ckpt_dir(ck) : NULL;
    char *type = NULL;
    if (!s || !dir)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_mask_selector_use_ckpt: NULL argument");
    if (snprintf(path, sizeof path, "%s/config.json", dir) < (int)sizeof path &&
        spruce_config_load(path, &cfg) == 0 && spruce_family_find(cfg.model_type) &&
        !(type = strdup(cfg.model_type)))
        return spruce__seterr(SPRUCE_ENOMEM, "mask selector: out of memory");
    spruce_errclear(); /* no config, or one spruce cannot read: the name rule */
    free(s->model_type);
    s->model_type = type;
    return 0;
}

int spruce_mask_selector_match(const spruce_mask_selector *s, const spruce_tensor *t)
{
    int i;
    if (!s || !t || !t->name || t->ndim != 2)
        return 0;
    for (i = 0; i < s->nexc; i++)
        if (matches(&s->exc[i], t->name))
            return 0;
    if (!s->all && !default_selected(s, t))
        return 0;
    if (s->ninc == 0)
        return 1;
    for (i = 0; i < s->ninc; i++)
        if (matches(&s->inc[i], t->name))
            return 1;
    return 0;
}

/* ---- shared by export and apply ----------------------------------------- */

void spruce_ckpt_masks_opts_init(spruce_ckpt_masks_opts *o)
{
    if (o)
        memset(o, 0, sizeof *o);
}

/* o->select, or a default selector made into *own (freed by the caller). */
static int selector_of(const spruce_ckpt_masks_opts *o, const spruce_mask_selector **sel,
                       spruce_mask_selector **own)
{
    int rc;
    *own = NULL;
    *sel = o->select;
    if (*sel)
        return 0;
    if ((rc = spruce_mask_selector_alloc(NULL, own)) < 0)
        return rc;
    *sel = *own;
    return 0;
}

/* Tell o's callback, if any; its non-zero answer stops the operation. */
static int report(const spruce_ckpt_masks_opts *o, const spruce_ckpt_masks_progress *p)
{
    int rc;
    if (!o->progress)
        return 0;
    rc = o->progress(o->ctx, p);
    if (rc)
        spruce__seterr(rc, "%s: stopped by the progress callback", p->name);
    return rc;
}

/* The DONE event of the 2-D tensor t, zeros of its elements pruned. */
static int report_done(const spruce_ckpt_masks_opts *o, const spruce_tensor *t, int64_t zeros,
                       double sparsity, const char *pattern)
{
    spruce_ckpt_masks_progress p;
    memset(&p, 0, sizeof p);
    p.event = SPRUCE_CKPT_MASKS_DONE;
    p.name = t->name;
    p.rows = t->shape[0];
    p.cols = t->shape[1];
    p.params = t->shape[0] * t->shape[1];
    p.zeros = zeros;
    p.sparsity = sparsity;
    p.pattern = pattern;
    return report(o, &p);
}

int spruce__masks_reserve(uint8_t **buf, size_t *cap, size_t n)
{
    if (n <= *cap)
        return 0;
    free(*buf);
    *buf = malloc(n);
    *cap = *buf ? n : 0;
    return *buf ? 0 : -1;
}

/* spruce__masks_reserve, the failure naming the file and tensor t of ck. */
static int reserve(uint8_t **buf, size_t *cap, size_t n, const spruce_ckpt *ck,
                   const spruce_tensor *t)
{
    if (spruce__masks_reserve(buf, cap, n) < 0)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: tensor %s: out of memory for %zu bytes",
                              spruce_ckpt_file_of(ck, t), t->name, n);
    return 0;
}

/* ---- zero test by bits -------------------------------------------------- */

/* Floating-point dtypes: a value is zero when every bit but the sign bit (the
 * top bit of the last, most significant byte: safetensors is little-endian)
 * is clear, so -0.0 counts as zero.  Integer dtypes: every bit clear. */
static int is_float_dtype(const char *dt)
{
    return dt[0] == 'F' || !strcmp(dt, "BF16");
}

/* keep[i] = element i is not zero.  t is (rows, cols) row-major. */
void spruce_ckpt_masks_keep(const spruce_tensor *t, uint8_t *keep)
{
    size_t n = (size_t)spruce_tensor_numel(t), es = n ? t->nbytes / n : 0, i, b;
    const uint8_t *p = t->data;
    int fl = is_float_dtype(t->dtype_name);
    if (es == 4 && fl) {
        const uint32_t *v = t->data;
        for (i = 0; i < n; i++)
            keep[i] = (v[i] & 0x7fffffffu) != 0;
    } else if (es == 2 && fl) {
        const uint16_t *v = t->data;
        for (i = 0; i < n; i++)
            keep[i] = (v[i] & 0x7fffu) != 0;
    } else {
        for (i = 0; i < n; i++, p += es) {
            uint8_t acc = fl ? (uint8_t)(p[es - 1] & 0x7f) : p[es - 1];
            for (b = 0; b + 1 < es; b++)
                acc |= p[b];
            keep[i] = acc != 0;
        }
    }
}

/* ---- export ------------------------------------------------------------- */

static void now_iso(char *buf, size_t cap)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int set_root_attrs(spruce_maskfile *mf, const spruce_ckpt *ck,
                          const spruce_ckpt_masks_opts *o, const char *method)
{
    char date[64];
    int rc;
    now_iso(date, sizeof date);
    if ((rc = spruce_maskfile_set_attr_string(mf, "model", o->model ? o->model
                                                                   : spruce_ckpt_dir(ck))) < 0 ||
        (rc = spruce_maskfile_set_attr_string(mf, "method", method)) < 0 ||
        (rc = spruce_maskfile_set_attr_string(
             mf, "source", o->source ? o->source : "spruce_ckpt_masks_export")) < 0 ||
        (rc = spruce_maskfile_set_attr_string(mf, "spruce_version", PACKAGE_VERSION)) < 0 ||
        (rc = spruce_maskfile_set_attr_string(mf, "date", date)) < 0)
        return rc;
    return 0;
}

int spruce_ckpt_masks_export(const spruce_ckpt *ck, const char *path,
                             const spruce_ckpt_masks_opts *o, spruce_ckpt_masks_result *res)
{
    spruce_ckpt_masks_opts defaults;
    const spruce_mask_selector *sel;
    spruce_mask_selector *own = NULL;
    spruce_maskfile *mf = NULL;
    spruce_ckpt_masks_result r;
    uint8_t *keep = NULL;
    size_t cap = 0;
    const char *method;
    int rc, i;

    memset(&r, 0, sizeof r);
    if (res)
        *res = r;
    if (!ck || !path)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_ckpt_masks_export: NULL argument");
    if (!o) {
        spruce_ckpt_masks_opts_init(&defaults);
        o = &defaults;
    }
    method = o->method ? o->method : "unknown";
    if ((rc = selector_of(o, &sel, &own)) < 0)
        return rc;
    if ((rc = spruce_maskfile_create(path, &mf)) < 0 ||
        (rc = set_root_attrs(mf, ck, o, method)) < 0)
        goto done;
    for (i = 0; i < spruce_ckpt_count(ck); i++) {
        const spruce_tensor *t = spruce_ckpt_tensor_at(ck, i);
        spruce_mask_stats st;
        spruce_mask_info info;
        char pat[32];
        size_t n;
        if (!spruce_mask_selector_match(sel, t))
            continue;
        n = (size_t)spruce_tensor_numel(t);
        if (n == 0)
            continue;
        if ((rc = reserve(&keep, &cap, n, ck, t)) < 0)
            goto done;
        spruce_ckpt_masks_keep(t, keep);
        if ((rc = spruce_mask_stats_compute(keep, t->shape[0], t->shape[1], 0, &st)) < 0) {
            rc = spruce__seterr(rc, "%s: tensor %s: mask statistics failed",
                                spruce_ckpt_file_of(ck, t), t->name);
            goto done;
        }
        /* The pattern attribute says what the zeros follow: N:M when every
         * aligned group of M prunes exactly N, else unstructured. */
        if (st.nm.m && st.nm.exact)
            snprintf(pat, sizeof pat, "%d:%d", st.nm.n, st.nm.m);
        else
            snprintf(pat, sizeof pat, "unstructured");
        info.pattern = pat;
        info.method = method;
        info.sparsity = st.sparsity;
        info.loss = 0;
        info.has_loss = 0;
        if ((rc = spruce_maskfile_write(mf, t->name, t->shape[0], t->shape[1], keep, &info)) < 0)
            goto done;
        r.tensors++;
        r.params += (int64_t)n;
        r.zeros += (int64_t)n - st.kept;
        if ((rc = report_done(o, t, (int64_t)n - st.kept, st.sparsity, pat)) != 0)
            goto done;
    }
    if (r.tensors == 0) {
        rc = spruce__seterr(SPRUCE_ENOTFOUND, "%s: no tensor matched the selection (2-D, not "
                            "embeddings/lm_head, --include/--exclude); nothing written",
                            spruce_ckpt_dir(ck));
        goto done;
    }
    rc = spruce_maskfile_commit(mf);
    mf = NULL;
    if (rc < 0)
        goto done;
    if (res)
        *res = r;
done:
    spruce_maskfile_abort(mf);
    spruce_mask_selector_free(own);
    free(keep);
    return rc;
}

/* ---- apply -------------------------------------------------------------- */

/* "a, b, c": t's shape for messages. */
static void shape_str(const spruce_tensor *t, char *buf, size_t cap)
{
    size_t len = 0;
    int d;
    buf[0] = '\0';
    for (d = 0; d < t->ndim && len + 24 < cap; d++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%lld", d ? ", " : "",
                                (long long)t->shape[d]);
}

/* Before anything is written: every mask has a tensor of its shape, every
 * selected tensor has a mask (or, partial, they are reported and counted). */
static int check_apply(const spruce_ckpt *ck, const spruce_maskreader *mr,
                       const spruce_mask_selector *sel, const spruce_ckpt_masks_opts *o,
                       spruce_ckpt_masks_result *r)
{
    const char *mpath = spruce_maskreader_path(mr), *dir = spruce_ckpt_dir(ck);
    spruce_ckpt_masks_progress p;
    int i, rc;
    memset(&p, 0, sizeof p);
    for (i = 0; i < spruce_maskreader_count(mr); i++) {
        const char *name = spruce_maskreader_name_at(mr, i);
        const spruce_tensor *t = spruce_ckpt_find(ck, name);
        spruce_mask_meta meta;
        char shape[128];
        if ((rc = spruce_maskreader_meta(mr, name, &meta)) < 0)
            return rc;
        if (!t) {
            if (!o->partial)
                return spruce__seterr(SPRUCE_ENOTFOUND, "%s: mask %s has no tensor in %s (use "
                                      "--partial to skip it)", mpath, name, dir);
            p.event = SPRUCE_CKPT_MASKS_NO_TENSOR;
            p.name = name;
            r->skipped++;
            if ((rc = report(o, &p)) != 0)
                return rc;
            continue;
        }
        if (t->ndim != 2 || t->shape[0] != meta.rows || t->shape[1] != meta.cols) {
            shape_str(t, shape, sizeof shape);
            return spruce__seterr(SPRUCE_ESHAPE, "tensor %s: mask in %s is (%lld, %lld), tensor "
                                  "in %s is (%s)", name, mpath, (long long)meta.rows,
                                  (long long)meta.cols, spruce_ckpt_file_of(ck, t), shape);
        }
    }
    for (i = 0; i < spruce_ckpt_count(ck); i++) {
        const spruce_tensor *t = spruce_ckpt_tensor_at(ck, i);
        if (!spruce_mask_selector_match(sel, t) || spruce_maskreader_find(mr, t->name) >= 0)
            continue;
        if (!o->partial)
            return spruce__seterr(SPRUCE_ENOTFOUND, "tensor %s of %s has no mask in %s (use "
                                  "--partial to leave it as it is, or --exclude)", t->name, dir,
                                  mpath);
        p.event = SPRUCE_CKPT_MASKS_NO_MASK;
        p.name = t->name;
        r->unmasked++;
        if ((rc = report(o, &p)) != 0)
            return rc;
    }
    return 0;
}

int spruce_ckpt_masks_apply(const spruce_ckpt *ck, const spruce_maskreader *mr,
                            const char *outdir, const spruce_ckpt_masks_opts *o,
                            spruce_ckpt_masks_result *res)
{
    spruce_ckpt_masks_opts defaults;
    const spruce_mask_selector *sel;
    spruce_mask_selector *own = NULL;
    spruce_ckpt_writer *w = NULL;
    spruce_ckpt_masks_result r;
    uint8_t *keep = NULL, *buf = NULL;
    size_t cap = 0, bcap = 0;
    int rc, i;

    memset(&r, 0, sizeof r);
    if (res)
        *res = r;
    if (!ck || !mr || !outdir)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_ckpt_masks_apply: NULL argument");
    if (!o) {
        spruce_ckpt_masks_opts_init(&defaults);
        o = &defaults;
    }
    if ((rc = selector_of(o, &sel, &own)) < 0)
        return rc;
    if ((rc = check_apply(ck, mr, sel, o, &r)) != 0 ||
        (rc = spruce_ckpt_writer_begin(ck, outdir, o->force, &w)) < 0)
        goto done;
    for (i = 0; i < spruce_maskreader_count(mr); i++) {
        const char *name = spruce_maskreader_name_at(mr, i);
        const spruce_tensor *t = spruce_ckpt_find(ck, name);
        size_t n, es, k;
        int64_t zeroed = 0;
        if (!t)
            continue;
        n = (size_t)spruce_tensor_numel(t);
        es = n ? t->nbytes / n : 0;
        if ((rc = reserve(&keep, &cap, n, ck, t)) < 0 ||
            (rc = reserve(&buf, &bcap, t->nbytes, ck, t)) < 0 ||
            (rc = spruce_maskreader_read(mr, name, keep, NULL)) < 0)
            goto done;
        /* Copy the bytes, then clear the pruned elements. */
        memcpy(buf, t->data, t->nbytes);
        for (k = 0; k < n; k++)
            if (!keep[k]) {
                memset(buf + k * es, 0, es);
                zeroed++;
            }
        if ((rc = spruce_ckpt_writer_set_raw(w, name, buf, t->nbytes)) < 0)
            goto done;
        r.tensors++;
        r.params += (int64_t)n;
        r.zeros += zeroed;
        if ((rc = report_done(o, t, zeroed, n ? (double)zeroed / (double)n : 0.0, NULL)) != 0)
            goto done;
    }
    rc = spruce_ckpt_writer_commit(w);
    w = NULL;
    if (rc < 0)
        goto done;
    if (res)
        *res = r;
done:
    spruce_ckpt_writer_abort(w);
    spruce_mask_selector_free(own);
    free(keep);
    free(buf);
    return rc;
}
