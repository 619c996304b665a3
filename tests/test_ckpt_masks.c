/* test_ckpt_masks.c: the library behind `spruce masks`: which tensors are
 * selected, export and apply on small checkpoints made here (spruce_synth and
 * the checkpoint writer), and the failures that must leave nothing behind
 * (summaries and comparisons are in test_mask_summary.c). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "masks_testutil.h"
#include "spruce_ckpt.h"
#include "spruce_ckpt_masks.h"
#include "spruce_masks.h"

/* ---- helpers ------------------------------------------------------------ */

/* A one-block LLaMA checkpoint at dir: seven linear layers, two norms, the
 * embedding and lm_head (no value is zero). */
static spruce_ckpt *small_ckpt(const char *dir, spruce_dtype dt)
{
    spruce_synth_config c;
    spruce_ckpt *ck;
    spruce_synth_defaults(&c);
    c.hidden = 32;
    c.intermediate = 48;
    c.layers = 1;
    c.heads = 4;
    c.kv_heads = 2;
    c.vocab = 64;
    c.max_position = 64;
    c.dtype = dt;
    c.seed = 11;
    cr_assert_eq(spruce_synth_write(dir, &c, 0), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_open(dir, &ck), 0, "%s", spruce_errdetail());
    return ck;
}

static int is_linear(const char *name)
{
    return strstr(name, "_proj.weight") != NULL;
}

/* Element k of t is zero by its bits (either sign). */
static int zero_at(const spruce_tensor *t, size_t k)
{
    size_t es = t->nbytes / (size_t)spruce_tensor_numel(t), b;
    const uint8_t *p = (const uint8_t *)t->data + k * es;
    for (b = 0; b + 1 < es; b++)
        if (p[b])
            return 0;
    return (p[es - 1] & 0x7f) == 0;
}

static spruce_tensor fake(const char *name, int ndim, int64_t r, int64_t c)
{
    spruce_tensor t;
    memset(&t, 0, sizeof t);
    t.name = name;
    t.dtype = SPRUCE_DTYPE_F32;
    t.dtype_name = "F32";
    t.ndim = ndim;
    t.shape[0] = r;
    t.shape[1] = c;
    return t;
}

/* ---- selection ---------------------------------------------------------- */

Test(select, default_is_the_linear_layers)
{
    spruce_mask_selector *s;
    spruce_tensor q = fake("model.layers.0.self_attn.q_proj.weight", 2, 8, 8),
                  emb = fake("model.embed_tokens.weight", 2, 8, 8),
                  head = fake("lm_head.weight", 2, 8, 8), wte = fake("transformer.wte.weight", 2, 8, 8),
                  norm = fake("model.layers.0.input_layernorm.weight", 1, 8, 0),
                  conv = fake("model.layers.0.conv.weight", 3, 8, 8),
                  lookalike = fake("model.layers.0.mlp.lm_header_proj.weight", 2, 8, 8);
    cr_assert_eq(spruce_mask_selector_alloc(NULL, &s), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_mask_selector_match(s, &q), 1);
    cr_assert_eq(spruce_mask_selector_match(s, &emb), 0);
    cr_assert_eq(spruce_mask_selector_match(s, &head), 0);
    cr_assert_eq(spruce_mask_selector_match(s, &wte), 0);
    cr_assert_eq(spruce_mask_selector_match(s, &norm), 0);
    cr_assert_eq(spruce_mask_selector_match(s, &conv), 0);
    cr_assert_eq(spruce_mask_selector_match(s, &lookalike), 1, "a name component, not a substring");
    /* --all: every 2-D tensor, still not 1-D or 3-D ones. */
    spruce_mask_selector_set_all(s, 1);
    cr_assert_eq(spruce_mask_selector_match(s, &emb), 1);
    cr_assert_eq(spruce_mask_selector_match(s, &head), 1);
    cr_assert_eq(spruce_mask_selector_match(s, &norm), 0);
    cr_assert_eq(spruce_mask_selector_match(s, &conv), 0);
    cr_assert_eq(spruce_mask_selector_match(s, NULL), 0);
    spruce_mask_selector_free(s);
    spruce_mask_selector_free(NULL);
}

/* With a known family the table decides: a 2-D tensor that is no linear
 * layer of the family (a lookalike name, an extra matrix) is not selected,
 * while the name rule (no family) takes it. */
Test(select, a_known_family_selects_by_its_table)
{
    spruce_mask_selector *s, *byname;
    spruce_tensor q = fake("model.layers.0.self_attn.q_proj.weight", 2, 8, 8),
                  down = fake("model.layers.3.mlp.down_proj.weight", 2, 8, 8),
                  extra = fake("model.layers.0.mlp.lm_header_proj.weight", 2, 8, 8),
                  emb = fake("model.embed_tokens.weight", 2, 8, 8);
    cr_assert_eq(spruce_mask_selector_alloc("llama", &s), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_mask_selector_alloc(NULL, &byname), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_mask_selector_match(s, &q), 1);
    cr_assert_eq(spruce_mask_selector_match(s, &down), 1);
    cr_assert_eq(spruce_mask_selector_match(s, &emb), 0);
    cr_assert_eq(spruce_mask_selector_match(s, &extra), 0, "not a llama linear layer");
    cr_assert_eq(spruce_mask_selector_match(byname, &extra), 1, "the name rule takes it");
    spruce_mask_selector_set_all(s, 1);
    cr_assert_eq(spruce_mask_selector_match(s, &extra), 1, "--all takes every 2-D tensor");
    spruce_mask_selector_free(s);
    /* an unknown family falls back to the name rule */
    cr_assert_eq(spruce_mask_selector_alloc("no-such-family", &s), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_mask_selector_match(s, &extra), 1);
    cr_assert_eq(spruce_mask_selector_match(s, &emb), 0);
    spruce_mask_selector_free(s);
    spruce_mask_selector_free(byname);
}

/* use_ckpt reads the family from the checkpoint's config.json. */
Test(select, use_ckpt_takes_the_family_of_config_json, .init = make_tmpdir,
     .fini = remove_tmpdir)
{
    spruce_mask_selector *s;
    spruce_ckpt *ck = small_ckpt(tpath("m"), SPRUCE_DTYPE_F32);
    spruce_tensor extra = fake("model.layers.0.mlp.lm_header_proj.weight", 2, 8, 8);
    int i, n = 0;
    cr_assert_eq(spruce_mask_selector_alloc(NULL, &s), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_mask_selector_use_ckpt(s, ck), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_mask_selector_match(s, &extra), 0, "llama's table decides");
    for (i = 0; i < spruce_ckpt_count(ck); i++)
        n += spruce_mask_selector_match(s, spruce_ckpt_tensor_at(ck, i));
    cr_assert_eq(n, 7, "the seven linear layers of one block, got %d", n);
    cr_assert_lt(spruce_mask_selector_use_ckpt(NULL, ck), 0);
    spruce_mask_selector_free(s);
    spruce_ckpt_close(ck);
}

Test(select, include_restricts_and_exclude_removes)
{
    spruce_mask_selector *s;
    spruce_tensor up = fake("model.layers.0.mlp.up_proj.weight", 2, 8, 8),
                  down = fake("model.layers.1.mlp.down_proj.weight", 2, 8, 8),
                  q = fake("model.layers.0.self_attn.q_proj.weight", 2, 8, 8),
                  emb = fake("model.embed_tokens.weight", 2, 8, 8);
    cr_assert_eq(spruce_mask_selector_alloc("llama", &s), 0);
    cr_assert_eq(spruce_mask_selector_include(s, "mlp"), 0);
    cr_assert_eq(spruce_mask_selector_include(s, "embed"), 0); /* any include may match */
    cr_assert_eq(spruce_mask_selector_exclude(s, "down_proj"), 0);
    cr_assert_eq(spruce_mask_selector_match(s, &up), 1);
    cr_assert_eq(spruce_mask_selector_match(s, &down), 0);
    cr_assert_eq(spruce_mask_selector_match(s, &q), 0);
    cr_assert_eq(spruce_mask_selector_match(s, &emb), 0, "the default exclusion still holds");
    spruce_mask_selector_set_all(s, 1);
    cr_assert_eq(spruce_mask_selector_match(s, &emb), 1);
    cr_assert_eq(spruce_mask_selector_exclude(s, "^model\\.embed"), 0);
    cr_assert_eq(spruce_mask_selector_match(s, &emb), 0, "exclude wins over include");
    spruce_mask_selector_free(s);
}

Test(select, many_patterns_and_invalid_regex)
{
    spruce_mask_selector *s;
    spruce_tensor up = fake("model.layers.0.mlp.up_proj.weight", 2, 8, 8);
    char pat[32];
    int i;
    cr_assert_eq(spruce_mask_selector_alloc(NULL, &s), 0);
    for (i = 0; i < 100; i++) {
        snprintf(pat, sizeof pat, "layers\\.%d\\.", i + 1);
        cr_assert_eq(spruce_mask_selector_exclude(s, pat), 0, "%s", spruce_errdetail());
    }
    cr_assert_eq(spruce_mask_selector_match(s, &up), 1);
    cr_assert_eq(spruce_mask_selector_include(s, "("), SPRUCE_EINVAL);
    cr_assert(strstr(spruce_errdetail(), "include '('") &&
                  strstr(spruce_errdetail(), "invalid regular expression"),
              "%s", spruce_errdetail());
    cr_assert_eq(spruce_mask_selector_exclude(s, "a[b"), SPRUCE_EINVAL);
    cr_assert(strstr(spruce_errdetail(), "exclude 'a[b'"), "%s", spruce_errdetail());
    /* A failed pattern adds nothing: the selection is as before. */
    cr_assert_eq(spruce_mask_selector_match(s, &up), 1);
    cr_assert_eq(spruce_mask_selector_include(NULL, "x"), SPRUCE_EINVAL);
    cr_assert_eq(spruce_mask_selector_alloc(NULL, NULL), SPRUCE_EINVAL);
    spruce_mask_selector_free(s);
}

/* ---- export and apply --------------------------------------------------- */

typedef struct {
    int done, no_tensor, no_mask, stop_after;
    int64_t zeros;
} events;

static int count_events(void *ctx, const spruce_ckpt_masks_progress *p)
{
    events *e = ctx;
    cr_assert_not_null(p->name);
    if (p->event == SPRUCE_CKPT_MASKS_DONE) {
        e->done++;
        e->zeros += p->zeros;
        cr_assert_gt(p->rows * p->cols, 0);
        cr_assert_eq(p->params, p->rows * p->cols);
        cr_assert_float_eq(p->sparsity, (double)p->zeros / (double)p->params, 1e-12);
    } else if (p->event == SPRUCE_CKPT_MASKS_NO_TENSOR) {
        e->no_tensor++;
    } else {
        e->no_mask++;
    }
    return e->stop_after && e->done == e->stop_after ? SPRUCE_EIO : 0;
}

/* Masks for every linear layer of ck, written to path; masks[i] is tensor i's
 * (NULL for the others). */
static void write_linear_masks(const spruce_ckpt *ck, const char *path, uint8_t **masks,
                               int64_t *pruned)
{
    spruce_maskfile *f;
    int i;
    int64_t k;
    *pruned = 0;
    cr_assert_eq(spruce_maskfile_create(path, &f), 0, "%s", spruce_errdetail());
    for (i = 0; i < spruce_ckpt_count(ck); i++) {
        const spruce_tensor *t = spruce_ckpt_tensor_at(ck, i);
        masks[i] = NULL;
        if (!is_linear(t->name))
            continue;
        masks[i] = random_mask(1, t->shape[0] * t->shape[1], 40);
        for (k = 0; k < t->shape[0] * t->shape[1]; k++)
            *pruned += !masks[i][k];
        cr_assert_eq(spruce_maskfile_write(f, t->name, t->shape[0], t->shape[1], masks[i], NULL),
                     0, "%s", spruce_errdetail());
    }
    cr_assert_eq(spruce_maskfile_commit(f), 0, "%s", spruce_errdetail());
}

TestSuite(roundtrip, .init = make_tmpdir, .fini = remove_tmpdir);

static void apply_then_export(spruce_dtype dt)
{
    spruce_ckpt *ck = small_ckpt(tpath("model"), dt), *out;
    uint8_t *masks[64];
    spruce_maskreader *mr, *back;
    spruce_ckpt_masks_opts o;
    spruce_ckpt_masks_result res;
    events ev = {0, 0, 0, 0, 0};
    int64_t pruned, params = 0;
    int i, nlinear = 0;
    cr_assert_lt(spruce_ckpt_count(ck), 64);
    write_linear_masks(ck, tpath("m.h5"), masks, &pruned);
    cr_assert_eq(spruce_maskreader_open(tpath("m.h5"), &mr), 0, "%s", spruce_errdetail());

    spruce_ckpt_masks_opts_init(&o);
    o.progress = count_events;
    o.ctx = &ev;
    cr_assert_eq(spruce_ckpt_masks_apply(ck, mr, tpath("out"), &o, &res), 0, "%s",
                 spruce_errdetail());
    for (i = 0; i < spruce_ckpt_count(ck); i++)
        if (masks[i]) {
            nlinear++;
            params += spruce_tensor_numel(spruce_ckpt_tensor_at(ck, i));
        }
    cr_assert_eq(nlinear, 7);
    cr_assert_eq(res.tensors, 7);
    cr_assert_eq(res.skipped, 0);
    cr_assert_eq(res.unmasked, 0);
    cr_assert_eq(res.params, params);
    cr_assert_eq(res.zeros, pruned);
    cr_assert_eq(ev.done, 7);
    cr_assert_eq(ev.zeros, pruned);

    /* Kept weights keep their bytes, pruned ones are +0.0, other tensors are
     * unchanged. */
    cr_assert_eq(spruce_ckpt_open(tpath("out"), &out), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_count(out), spruce_ckpt_count(ck));
    for (i = 0; i < spruce_ckpt_count(ck); i++) {
        const spruce_tensor *a = spruce_ckpt_tensor_at(ck, i), *b = spruce_ckpt_find(out, a->name);
        size_t n = (size_t)spruce_tensor_numel(a), es = a->nbytes / n, k;
        cr_assert_not_null(b);
        cr_assert_eq(b->nbytes, a->nbytes);
        for (k = 0; k < n; k++) {
            const uint8_t *pa = (const uint8_t *)a->data + k * es,
                          *pb = (const uint8_t *)b->data + k * es;
            static const uint8_t zero[4] = {0, 0, 0, 0};
            if (masks[i] && !masks[i][k])
                cr_assert_eq(memcmp(pb, zero, es), 0, "%s[%zu] not +0.0", a->name, k);
            else
                cr_assert_eq(memcmp(pa, pb, es), 0, "%s[%zu] changed", a->name, k);
        }
    }

    /* Export of the result gives back exactly the masks. */
    spruce_ckpt_masks_opts_init(&o);
    o.method = "magnitude";
    cr_assert_eq(spruce_ckpt_masks_export(out, tpath("back.h5"), &o, &res), 0, "%s",
                 spruce_errdetail());
    cr_assert_eq(res.tensors, 7);
    cr_assert_eq(res.params, params);
    cr_assert_eq(res.zeros, pruned);
    cr_assert_eq(spruce_maskreader_open(tpath("back.h5"), &back), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_maskreader_count(back), 7);
    cr_assert_str_eq(spruce_maskreader_attr(back, "method")->s, "magnitude");
    cr_assert_str_eq(spruce_maskreader_attr(back, "model")->s, tpath("out"));
    cr_assert_not_null(spruce_maskreader_attr(back, "spruce_version"));
    cr_assert_not_null(spruce_maskreader_attr(back, "date"));
    for (i = 0; i < spruce_ckpt_count(ck); i++) {
        const spruce_tensor *t = spruce_ckpt_tensor_at(ck, i);
        spruce_mask_meta meta;
        uint8_t *k;
        if (!masks[i]) {
            cr_assert_eq(spruce_maskreader_find(back, t->name), -1, "%s", t->name);
            continue;
        }
        k = malloc((size_t)spruce_tensor_numel(t));
        cr_assert_eq(spruce_maskreader_read(back, t->name, k, &meta), 0, "%s",
                     spruce_errdetail());
        cr_assert_eq(memcmp(k, masks[i], (size_t)spruce_tensor_numel(t)), 0, "%s", t->name);
        cr_assert_str_eq(meta.method, "magnitude");
        cr_assert_str_eq(meta.pattern, "unstructured");
        free(k);
        free(masks[i]);
    }
    spruce_maskreader_close(back);
    spruce_maskreader_close(mr);
    spruce_ckpt_close(out);
    spruce_ckpt_close(ck);
}

Test(roundtrip, apply_then_export_f32) { apply_then_export(SPRUCE_DTYPE_F32); }
Test(roundtrip, apply_then_export_bf16) { apply_then_export(SPRUCE_DTYPE_BF16); }

/* -0.0 is zero, and a 2:4 pattern is named in the "pattern" attribute. */
Test(roundtrip, export_sees_negative_zero_and_nm)
{
    spruce_ckpt *ck = small_ckpt(tpath("model"), SPRUCE_DTYPE_F16), *z;
    const spruce_tensor *q = spruce_ckpt_find(ck, "model.layers.0.self_attn.q_proj.weight"), *t;
    spruce_ckpt_writer *w;
    spruce_maskreader *r;
    spruce_mask_meta meta;
    spruce_ckpt_masks_result res;
    uint16_t *v;
    uint8_t *keep;
    size_t n, k;
    int64_t zeros = 0;
    cr_assert_not_null(q);
    n = (size_t)spruce_tensor_numel(q);
    v = malloc(q->nbytes);
    memcpy(v, q->data, q->nbytes);
    for (k = 0; k < n; k += 4) { /* 2:4 (not 1:2), one of the two zeros negative */
        v[k + 2] = 0x8000;
        v[k + 3] = 0x0000;
    }
    cr_assert_eq(spruce_ckpt_writer_begin(ck, tpath("z"), 0, &w), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_set_raw(w, q->name, v, q->nbytes), 0, "%s",
                 spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_commit(w), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_open(tpath("z"), &z), 0);
    cr_assert_eq(spruce_ckpt_masks_export(z, tpath("z.h5"), NULL, &res), 0, "%s",
                 spruce_errdetail());
    cr_assert_eq(res.tensors, 7);
    cr_assert_eq(res.zeros, (int64_t)n / 2);
    cr_assert_eq(spruce_maskreader_open(tpath("z.h5"), &r), 0);
    cr_assert_str_eq(spruce_maskreader_attr(r, "method")->s, "unknown");
    keep = malloc(n);
    cr_assert_eq(spruce_maskreader_read(r, q->name, keep, &meta), 0);
    cr_assert_str_eq(meta.pattern, "2:4");
    t = spruce_ckpt_find(z, q->name);
    for (k = 0; k < n; k++) {
        cr_assert_eq(keep[k], !zero_at(t, k), "element %zu", k);
        zeros += !keep[k];
    }
    cr_assert_eq(zeros, (int64_t)n / 2);
    /* spruce_ckpt_masks_keep is the same test. */
    memset(keep, 7, n);
    spruce_ckpt_masks_keep(t, keep);
    for (k = 0; k < n; k++)
        cr_assert_eq(keep[k], k % 4 == 0 || k % 4 == 1);
    free(keep);
    free(v);
    spruce_maskreader_close(r);
    spruce_ckpt_close(z);
    spruce_ckpt_close(ck);
}

Test(roundtrip, export_of_nothing_selected_writes_nothing)
{
    spruce_ckpt *ck = small_ckpt(tpath("model"), SPRUCE_DTYPE_F32);
    spruce_mask_selector *s;
    spruce_ckpt_masks_opts o;
    events ev = {0, 0, 0, 2, 0};
    int before = count_dir_entries(tmpdir);
    cr_assert_eq(spruce_mask_selector_alloc(NULL, &s), 0);
    cr_assert_eq(spruce_mask_selector_include(s, "nomatch"), 0);
    spruce_ckpt_masks_opts_init(&o);
    o.select = s;
    cr_assert_eq(spruce_ckpt_masks_export(ck, tpath("none.h5"), &o, NULL), SPRUCE_ENOTFOUND);
    cr_assert(strstr(spruce_errdetail(), tpath("model")), "%s", spruce_errdetail());
    cr_assert_not(exists(tpath("none.h5")));
    /* A callback that stops the export: its code, and no file either. */
    o.select = NULL;
    o.progress = count_events;
    o.ctx = &ev;
    cr_assert_eq(spruce_ckpt_masks_export(ck, tpath("stop.h5"), &o, NULL), SPRUCE_EIO);
    cr_assert_eq(ev.done, 2);
    cr_assert_not(exists(tpath("stop.h5")));
    cr_assert_eq(count_dir_entries(tmpdir), before, "a temporary file was left behind");
    spruce_mask_selector_free(s);
    spruce_ckpt_close(ck);
}

TestSuite(apply, .init = make_tmpdir, .fini = remove_tmpdir);

Test(apply, wrong_shape_names_the_tensor_and_leaves_nothing)
{
    spruce_ckpt *ck = small_ckpt(tpath("model"), SPRUCE_DTYPE_F32);
    const char *name = "model.layers.0.mlp.up_proj.weight"; /* (48, 32) */
    uint8_t *k = random_mask(1, 48 * 32, 50);
    spruce_maskfile *f;
    spruce_maskreader *r;
    spruce_ckpt_masks_opts o;
    spruce_ckpt_masks_result res;
    int before;
    cr_assert_eq(spruce_maskfile_create(tpath("t.h5"), &f), 0);
    cr_assert_eq(spruce_maskfile_write(f, name, 32, 48, k, NULL), 0);
    cr_assert_eq(spruce_maskfile_commit(f), 0);
    cr_assert_eq(spruce_maskreader_open(tpath("t.h5"), &r), 0);
    before = count_dir_entries(tmpdir);
    spruce_ckpt_masks_opts_init(&o);
    o.partial = 1; /* shapes must match even then */
    res.tensors = 99;
    cr_assert_eq(spruce_ckpt_masks_apply(ck, r, tpath("out"), &o, &res), SPRUCE_ESHAPE);
    cr_assert(strstr(spruce_errdetail(), name), "%s", spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), "(32, 48)") && strstr(spruce_errdetail(), "(48, 32)") &&
                  strstr(spruce_errdetail(), "t.h5") &&
                  strstr(spruce_errdetail(), "model.safetensors"),
              "%s", spruce_errdetail());
    cr_assert_eq(res.tensors, 0);
    cr_assert_not(exists(tpath("out")));
    cr_assert_eq(count_dir_entries(tmpdir), before, "something was left behind");
    spruce_maskreader_close(r);
    spruce_ckpt_close(ck);
    free(k);
}

Test(apply, missing_masks_and_tensors)
{
    spruce_ckpt *ck = small_ckpt(tpath("model"), SPRUCE_DTYPE_F32);
    uint8_t *k = random_mask(1, 48 * 32, 50);
    spruce_maskfile *f;
    spruce_maskreader *r;
    spruce_ckpt_masks_opts o;
    spruce_ckpt_masks_result res;
    events ev = {0, 0, 0, 0, 0};
    int64_t z = 0, i;
    cr_assert_eq(spruce_maskfile_create(tpath("few.h5"), &f), 0);
    cr_assert_eq(spruce_maskfile_write(f, "model.layers.0.mlp.up_proj.weight", 48, 32, k, NULL), 0);
    cr_assert_eq(spruce_maskfile_write(f, "model.layers.9.mlp.up_proj.weight", 48, 32, k, NULL), 0);
    cr_assert_eq(spruce_maskfile_commit(f), 0);
    cr_assert_eq(spruce_maskreader_open(tpath("few.h5"), &r), 0);
    spruce_ckpt_masks_opts_init(&o);
    /* A mask without a tensor. */
    cr_assert_eq(spruce_ckpt_masks_apply(ck, r, tpath("o1"), &o, NULL), SPRUCE_ENOTFOUND);
    cr_assert(strstr(spruce_errdetail(), "model.layers.9.mlp.up_proj.weight"), "%s",
              spruce_errdetail());
    cr_assert_not(exists(tpath("o1")));
    /* A tensor without a mask, once the other mask is out of the way. */
    cr_assert_eq(spruce_maskreader_find(r, "model.layers.0.self_attn.q_proj.weight"), -1);
    o.partial = 1;
    o.progress = count_events;
    o.ctx = &ev;
    cr_assert_eq(spruce_ckpt_masks_apply(ck, r, tpath("o2"), &o, &res), 0, "%s",
                 spruce_errdetail());
    for (i = 0; i < 48 * 32; i++)
        z += !k[i];
    cr_assert_eq(res.tensors, 1);
    cr_assert_eq(res.skipped, 1);
    cr_assert_eq(res.unmasked, 6);
    cr_assert_eq(res.params, 48 * 32);
    cr_assert_eq(res.zeros, z);
    cr_assert_eq(ev.done, 1);
    cr_assert_eq(ev.no_tensor, 1);
    cr_assert_eq(ev.no_mask, 6);
    cr_assert(exists(tpath("o2/model.safetensors")));
    /* The output exists: refused unless force. */
    o.progress = NULL;
    cr_assert_eq(spruce_ckpt_masks_apply(ck, r, tpath("o2"), &o, NULL), SPRUCE_EEXIST);
    o.force = 1;
    cr_assert_eq(spruce_ckpt_masks_apply(ck, r, tpath("o2"), &o, NULL), 0, "%s",
                 spruce_errdetail());
    cr_assert_eq(spruce_ckpt_masks_apply(NULL, r, tpath("o3"), &o, NULL), SPRUCE_EINVAL);
    spruce_maskreader_close(r);
    spruce_ckpt_close(ck);
    free(k);
}
