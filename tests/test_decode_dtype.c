/* test_decode_dtype.c: decoding with the linear layers (and the head) in a
 * value type other than float32 (spruce_decode_opts.dtype).  A BF16
 * checkpoint runs in bf16 by default, holding its own values: the logits are
 * those of the float32 decoder of the same weights to float32 rounding, and
 * the weights take half the bytes.  A float32 model runs in bf16, int8 or int4
 * only when asked, each holding the bytes of its type, its logits within the
 * error of its grid. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model_testutil.h"
#include "families_testutil.h"
#include "spruce_ckpt.h"
#include "spruce_decode.h"
#include "spruce_model.h"
#include "spruce_qmatrix.h"
#include "spruce_sparse.h"

/* Feed ids[0..n) to decoders a and b; the largest |difference| of their
 * logits and the largest |logit| of a. */
static void compare(spruce_decoder *a, spruce_decoder *b, const uint32_t *ids, int n, int vocab,
                    double *diff, double *scale)
{
    float *la = malloc(sizeof *la * (size_t)vocab), *lb = malloc(sizeof *lb * (size_t)vocab);
    int t, j;
    *diff = 0, *scale = 0;
    for (t = 0; t < n; t++) {
        cr_assert_eq(spruce_decoder_step(a, ids[t], la), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_decoder_step(b, ids[t], lb), 0, "%s", spruce_errdetail());
        for (j = 0; j < vocab; j++) {
            *diff = fmax(*diff, fabs((double)la[j] - lb[j]));
            *scale = fmax(*scale, fabs((double)la[j]));
        }
    }
    free(la);
    free(lb);
}

static spruce_decoder *decoder(spruce_model *m, int T, int mode, int dtype, int gs)
{
    spruce_decode_opts o;
    spruce_decoder *d = NULL;
    spruce_decode_opts_init(&o);
    o.mode = (spruce_decode_mode)mode;
    o.dtype = dtype;
    o.groupsize = gs;
    cr_assert_eq(spruce_decoder_create_opts(m, T, &o, &d), 0, "%s", spruce_errdetail());
    return d;
}

Test(decode_dtype, bf16_checkpoint_runs_in_its_own_type)
{
    NEED_FAMILY(dir, "qwen3-bf16");
    spruce_model *m = NULL;
    spruce_decoder *own, *f32;
    uint32_t ids[SEQ];
    double diff, scale;
    int vocab, t;
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    vocab = spruce_model_config(m)->vocab_size;
    for (t = 0; t < SEQ; t++)
        ids[t] = (uint32_t)((t * 7919) % vocab);
    own = decoder(m, SEQ, SPRUCE_DECODE_DENSE, SPRUCE_DECODE_OWN_DTYPE, 0);
    f32 = decoder(m, SEQ, SPRUCE_DECODE_DENSE, SPRUCE_DT_F32, 0);
    cr_assert_eq(spruce_decoder_dtype(own), SPRUCE_DT_BF16);
    cr_assert_eq(spruce_decoder_dtype(f32), SPRUCE_DT_F32);
    /* the same values: half the bytes, exactly */
    cr_assert_eq(2 * spruce_decoder_weight_bytes(own), spruce_decoder_weight_bytes(f32),
                 "bf16 %zu bytes, float32 %zu", spruce_decoder_weight_bytes(own),
                 spruce_decoder_weight_bytes(f32));
    compare(own, f32, ids, SEQ, vocab, &diff, &scale);
    cr_assert(diff <= TOL * fmax(1.0, scale), "bf16 against float32 of the same weights: logits "
              "up to %g apart (largest logit %g)", diff, scale);
    spruce_decoder_free(own);
    spruce_decoder_free(f32);
    spruce_model_free(m);
}

Test(decode_dtype, a_float32_model_in_the_types_asked)
{
    NEED_FIXTURE(dir);
    static const struct {
        int dtype, gs;
        double bytes, err; /* bytes of float32's at most; logit error of the largest logit */
    } k[] = {{SPRUCE_DT_F32, 0, 1.0, 0.0},
             {SPRUCE_DT_BF16, 0, 0.5, 0.03},
             /* a byte a weight and a float32 scale a row of 64 (the hidden
              * size): (1 + 4 / 64) / 4 = 0.266 of float32 at most */
             {SPRUCE_DT_INT8, 0, 0.266, 0.15},
             /* half a byte and a scale per 32 columns (0.156), the head int8;
              * 4 bits cost this 260K-parameter model most of its logits (the
              * exact check is the test below) */
             {SPRUCE_DT_INT4, 32, 0.266, 1.5}};
    spruce_model *m = NULL;
    spruce_decoder *ref, *d;
    uint32_t *ids;
    double diff, scale;
    size_t i;
    int vocab;
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    vocab = spruce_model_config(m)->vocab_size;
    ids = stories_ids(dir, "eval.u16", 32);
    ref = decoder(m, 32, SPRUCE_DECODE_DENSE, SPRUCE_DECODE_OWN_DTYPE, 0);
    cr_assert_eq(spruce_decoder_dtype(ref), SPRUCE_DT_F32, "a float32 checkpoint stays float32");
    for (i = 0; i < sizeof k / sizeof *k; i++) {
        const int modes[2] = {SPRUCE_DECODE_DENSE, SPRUCE_DECODE_AUTO};
        int j;
        for (j = 0; j < 2; j++) {
            d = decoder(m, 32, modes[j], k[i].dtype, k[i].gs);
            cr_assert_eq(spruce_decoder_dtype(d), k[i].dtype);
            if (j == 0) /* dense: the type's own bytes (int4: the head int8) */
                cr_assert_leq((double)spruce_decoder_weight_bytes(d),
                              k[i].bytes * (double)spruce_decoder_weight_bytes(ref) + 1e-9,
                              "%s: %zu bytes against float32's %zu", spruce_dtype_name(k[i].dtype),
                              spruce_decoder_weight_bytes(d), spruce_decoder_weight_bytes(ref));
            spruce_decoder_reset(ref);
            compare(ref, d, ids, 32, vocab, &diff, &scale);
            cr_assert(diff <= k[i].err * scale + (k[i].err ? 0 : 1e-4 * scale),
                      "%s (%s): logits up to %g from float32's (largest %g)",
                      spruce_dtype_name(k[i].dtype), j ? "auto" : "dense", diff, scale);
            spruce_decoder_free(d);
        }
    }
    spruce_decoder_free(ref);
    free(ids);
    spruce_model_free(m);
}

Test(decode_dtype, refusals)
{
    NEED_FIXTURE(dir);
    spruce_model *m = NULL;
    spruce_decode_opts o;
    spruce_decoder *d = NULL;
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    spruce_decode_opts_init(&o);
    o.mode = SPRUCE_DECODE_CSR; /* compressed rows of int8: made */
    o.dtype = SPRUCE_DT_INT8;
    cr_assert_eq(spruce_decoder_create_opts(m, 8, &o, &d), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_decoder_dtype(d), SPRUCE_DT_INT8);
    cr_assert_eq(spruce_linear_format(spruce_decoder_linear(d, 0, SPRUCE_PROJ_Q), 1),
                 SPRUCE_FMT_CSR);
    spruce_decoder_free(d);
    d = NULL;
    o.mode = SPRUCE_DECODE_AUTO;
    o.dtype = 7;
    cr_assert_eq(spruce_decoder_create_opts(m, 8, &o, &d), SPRUCE_EINVAL);
    o.dtype = SPRUCE_DT_INT4;
    o.groupsize = 40;
    cr_assert_eq(spruce_decoder_create_opts(m, 8, &o, &d), SPRUCE_EINVAL);
    cr_assert_null(d);
    spruce_model_free(m);
}

/* A copy of checkpoint in at ref with every linear layer (and, with head,
 * the head: int8 per row for int4) replaced by the values
 * spruce_qmatrix_quantize gives it in dtype (groups of gs), dequantized. */
static void write_values(const char *in, const char *ref, int dtype, int gs, int head)
{
    spruce_ckpt *ck;
    spruce_ckpt_writer *w;
    int i;
    cr_assert_eq(spruce_ckpt_open(in, &ck), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_begin(ck, ref, 0, &w), 0, "%s", spruce_errdetail());
    for (i = 0; i < spruce_ckpt_count(ck); i++) {
        const spruce_tensor *t = spruce_ckpt_tensor_at(ck, i);
        int is_head = !strcmp(t->name, "lm_head.weight"), rows, cols;
        float *v;
        spruce_qmatrix *Q;
        if (!(is_head && head) && !strstr(t->name, "_proj.weight"))
            continue;
        rows = (int)t->shape[0], cols = (int)t->shape[1];
        v = malloc(sizeof *v * (size_t)rows * cols);
        cr_assert_eq(spruce_tensor_read_f32(t, v), 0);
        cr_assert_eq(spruce_qmatrix_quantize(v, rows, cols,
                                             is_head && dtype == SPRUCE_DT_INT4 ? SPRUCE_DT_INT8
                                                                                : dtype,
                                             gs, 0, &Q), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_qmatrix_dequantize(Q, v), 0);
        cr_assert_eq(spruce_ckpt_writer_set_f32(w, t->name, v), 0, "%s", spruce_errdetail());
        spruce_qmatrix_free(Q);
        free(v);
    }
    cr_assert_eq(spruce_ckpt_writer_commit(w), 0, "%s", spruce_errdetail());
    spruce_ckpt_close(ck);
}

/* The exact check: a decoder in int8, int4 or bf16 computes with exactly the
 * values spruce_qmatrix_quantize gives (the head, untied here, per row in
 * int8 for int4), so its logits are the float32 decoder's on a checkpoint
 * whose linear layers and head hold those values dequantized, to float32
 * rounding. */
static void against_dequantized_checkpoint(const char *base, int dtype, int gs)
{
    char in[1200], ref[1200];
    spruce_model *mq = NULL, *mr = NULL;
    spruce_decoder *dq, *dr;
    uint32_t ids[24];
    double diff, scale;
    int i, vocab;
    snprintf(in, sizeof in, "%s/in", base);
    snprintf(ref, sizeof ref, "%s/ref-%s", base, spruce_dtype_name(dtype));
    write_values(in, ref, dtype, gs, 1);
    cr_assert_eq(spruce_model_open(in, &mq), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_open(ref, &mr), 0, "%s", spruce_errdetail());
    vocab = spruce_model_config(mq)->vocab_size;
    for (i = 0; i < 24; i++)
        ids[i] = (uint32_t)((i * 37 + 5) % vocab);
    dq = decoder(mq, 24, SPRUCE_DECODE_DENSE, dtype, gs);
    dr = decoder(mr, 24, SPRUCE_DECODE_DENSE, SPRUCE_DT_F32, 0);
    compare(dr, dq, ids, 24, vocab, &diff, &scale);
    cr_assert(diff <= 1e-4 * fmax(1.0, scale), "%s: logits up to %g from the float32 decoder of "
              "the dequantized weights (largest %g)", spruce_dtype_name(dtype), diff, scale);
    spruce_decoder_free(dq);
    spruce_decoder_free(dr);
    spruce_model_free(mq);
    spruce_model_free(mr);
}

Test(decode_dtype, every_type_computes_with_its_grid_values)
{
    spruce_synth_config c;
    char *base = tmp_dir(), in[1200];
    spruce_synth_defaults(&c);
    c.hidden = 64, c.intermediate = 160, c.layers = 2, c.heads = 4, c.kv_heads = 2;
    c.vocab = 96, c.max_position = 64, c.dtype = SPRUCE_DTYPE_F32, c.seed = 3;
    snprintf(in, sizeof in, "%s/in", base);
    cr_assert_eq(spruce_synth_write(in, &c, 0), 0, "%s", spruce_errdetail());
    against_dequantized_checkpoint(base, SPRUCE_DT_BF16, 0);
    against_dequantized_checkpoint(base, SPRUCE_DT_INT8, 0);
    against_dequantized_checkpoint(base, SPRUCE_DT_INT4, 32);  /* 160 = 5 groups */
    rm_tree(base);
    free(base);
}

/* ---- a compressed-tensors checkpoint, on its own levels --------------------- */

/* Each linear layer of base/in pruned 2:4 (sparse) by magnitude, quantized
 * by spruce_qmatrix_quantize (int8 per row, int4 in groups of gs) and written
 * compressed (its grid as the levels' own) to base/c-<tag>, and the same
 * values dequantized written dense to base/d-<tag>.  The head is not
 * touched. */
static void write_pair(const char *base, const char *tag, int dtype, int gs, int asym, int sparse)
{
    char in[1200], cdir[1200], ddir[1200];
    spruce_ckpt *ck;
    spruce_ckpt_writer *wc, *wd;
    spruce_compress_opts co = {sparse ? 2 : 0, sparse ? "2:4" : NULL};
    int i;
    snprintf(in, sizeof in, "%s/in", base);
    snprintf(cdir, sizeof cdir, "%s/c-%s", base, tag);
    snprintf(ddir, sizeof ddir, "%s/d-%s", base, tag);
    cr_assert_eq(spruce_ckpt_open(in, &ck), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_begin_compressed(ck, cdir, 0, &co, &wc), 0, "%s",
                 spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_begin(ck, ddir, 0, &wd), 0, "%s", spruce_errdetail());
    for (i = 0; i < spruce_ckpt_count(ck); i++) {
        const spruce_tensor *t = spruce_ckpt_tensor_at(ck, i);
        spruce_qmatrix *Q;
        spruce_qgrid g;
        int rows, cols, r, j, k, ng, bits = dtype == SPRUCE_DT_INT8 ? 8 : 4;
        float *v;
        if (!strstr(t->name, "_proj.weight"))
            continue;
        rows = (int)t->shape[0], cols = (int)t->shape[1];
        v = malloc(sizeof *v * (size_t)rows * cols);
        cr_assert_eq(spruce_tensor_read_f32(t, v), 0);
        for (j = 0; sparse && j < rows * cols; j += 4) { /* the two smallest of four to 0 */
            int a = 0, b = 1, x;
            if (fabsf(v[j + b]) < fabsf(v[j + a]))
                a = 1, b = 0;
            for (x = 2; x < 4; x++)
                if (fabsf(v[j + x]) < fabsf(v[j + a]))
                    b = a, a = x;
                else if (fabsf(v[j + x]) < fabsf(v[j + b]))
                    b = x;
            v[j + a] = 0.0f, v[j + b] = 0.0f;
        }
        cr_assert_eq(spruce_qmatrix_quantize(v, rows, cols, dtype, gs, asym, &Q), 0, "%s",
                     spruce_errdetail());
        cr_assert_eq(spruce_qmatrix_dequantize(Q, v), 0);
        ng = dtype == SPRUCE_DT_INT8 ? 1 : Q->ngroups;
        g.bits = bits, g.sym = !asym, g.rows = rows, g.cols = cols;
        g.groupsize = dtype == SPRUCE_DT_INT8 ? cols : gs;
        g.scale = malloc(sizeof *g.scale * (size_t)rows * ng);
        g.zero = malloc(sizeof *g.zero * (size_t)rows * ng);
        g.scale_dtype = SPRUCE_QSCALE_F32;
        for (r = 0; r < rows; r++)
            for (k = 0; k < ng; k++) {
                /* the grid's level u = q + 2^(b-1) (int8) or the nibble (int4) */
                int z = !Q->zero ? (dtype == SPRUCE_DT_INT8 ? 0 : 8)
                                 : dtype == SPRUCE_DT_INT8 ? (int8_t)Q->zero[r] : Q->zero[r * ng + k];
                g.scale[r * ng + k] = Q->scale[r * ng + k];
                g.zero[r * ng + k] = (float)(dtype == SPRUCE_DT_INT8 ? z + 128 : z);
            }
        cr_assert_eq(spruce_ckpt_writer_set_quantized(wc, t->name, v, &g), 0, "%s: %s", t->name,
                     spruce_errdetail());
        cr_assert_eq(spruce_ckpt_writer_set_f32(wd, t->name, v), 0, "%s", spruce_errdetail());
        spruce_qmatrix_free(Q);
        free(g.scale), free(g.zero), free(v);
    }
    cr_assert_eq(spruce_ckpt_writer_commit(wc), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_commit(wd), 0, "%s", spruce_errdetail());
    spruce_ckpt_close(ck);
}

/* Opened lazily, a compressed checkpoint runs in the type of its levels
 * (never quantized again: the head, not quantized, stays float32), each
 * linear layer in it, and its logits are the float32 decoder's of the same
 * values saved dense, to float32 rounding; forced to N:M, the 2:4 ones run
 * there.  Opened eagerly it is decoded to floats (its scales' float32). */
static void compressed_on_levels(const char *base, const char *tag, int dtype, int gs, int asym,
                                 int sparse)
{
    char cdir[1200], ddir[1200];
    spruce_model *mc = NULL, *md = NULL, *me = NULL;
    spruce_decoder *dc, *dd, *de;
    uint32_t ids[24];
    double diff, scale;
    size_t bytes = 0;
    int i, l, vocab, hid;
    write_pair(base, tag, dtype, gs, asym, sparse);
    snprintf(cdir, sizeof cdir, "%s/c-%s", base, tag);
    snprintf(ddir, sizeof ddir, "%s/d-%s", base, tag);
    cr_assert_eq(spruce_model_open_lazy(cdir, &mc), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_open(ddir, &md), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_open(cdir, &me), 0, "%s", spruce_errdetail());
    vocab = spruce_model_config(mc)->vocab_size;
    hid = spruce_model_config(mc)->hidden_size;
    for (i = 0; i < 24; i++)
        ids[i] = (uint32_t)((i * 37 + 5) % vocab);
    dc = decoder(mc, 24, sparse ? SPRUCE_DECODE_NM : SPRUCE_DECODE_DENSE, SPRUCE_DECODE_OWN_DTYPE, 0);
    dd = decoder(md, 24, SPRUCE_DECODE_DENSE, SPRUCE_DECODE_OWN_DTYPE, 0);
    de = decoder(me, 24, SPRUCE_DECODE_DENSE, SPRUCE_DECODE_OWN_DTYPE, 0);
    cr_assert_eq(spruce_decoder_dtype(dc), dtype, "%s: runs in %s", tag,
                 spruce_dtype_name(spruce_decoder_dtype(dc)));
    cr_assert_eq(spruce_decoder_dtype(de), SPRUCE_DT_F32, "%s: eagerly decoded to float32", tag);
    for (i = 0; i < spruce_model_config(mc)->num_hidden_layers; i++)
        for (l = 0; l < SPRUCE_NPROJ; l++) {
            const spruce_linear *lin = spruce_decoder_linear(dc, i, l);
            cr_assert(lin, "layer %d linear %d", i, l);
            cr_assert_eq(spruce_linear_dtype(lin), dtype, "%s: layer %d linear %d in %s", tag, i, l,
                         spruce_dtype_name(spruce_linear_dtype(lin)));
            if (sparse)
                cr_assert_eq(spruce_linear_format(lin, 1), SPRUCE_FMT_NM);
            bytes += spruce_linear_bytes(lin);
        }
    /* the head float32, as the checkpoint holds it */
    cr_assert_eq(spruce_decoder_weight_bytes(dc), bytes + (size_t)vocab * hid * sizeof(float),
                 "%s: %zu bytes, the linear layers %zu", tag, spruce_decoder_weight_bytes(dc), bytes);
    cr_assert_lt(spruce_decoder_weight_bytes(dc), spruce_decoder_weight_bytes(de));
    {
        /* about the size on disk (which holds the embedding too) */
        char st[1300];
        struct stat sb;
        snprintf(st, sizeof st, "%s/model.safetensors", cdir);
        cr_assert_eq(stat(st, &sb), 0);
        cr_assert((double)spruce_decoder_weight_bytes(dc) <= 1.1 * (double)sb.st_size &&
                      (double)spruce_decoder_weight_bytes(dc) >= 0.5 * (double)sb.st_size,
                  "%s: %zu bytes held, %lld on disk", tag, spruce_decoder_weight_bytes(dc),
                  (long long)sb.st_size);
    }
    compare(dd, dc, ids, 24, vocab, &diff, &scale);
    cr_assert(diff <= 1e-4 * fmax(1.0, scale), "%s: logits up to %g from the float32 decoder of "
              "the same values (largest %g)", tag, diff, scale);
    {
        /* the perplexity on the levels (the runtime's layers, batched) is
         * OpenBLAS's on the same values saved dense */
        uint32_t text[4 * 16];
        spruce_eval_opts eo;
        double pl, pd, pe;
        for (i = 0; i < 64; i++)
            text[i] = (uint32_t)((i * 53 + 11) % vocab);
        spruce_eval_opts_init(&eo);
        cr_assert_eq(spruce_model_perplexity_opts(md, text, 64, 16, &eo, &pd, NULL), 0, "%s",
                     spruce_errdetail());
        cr_assert_eq(spruce_model_perplexity_opts(mc, text, 64, 16, &eo, &pe, NULL), 0, "%s",
                     spruce_errdetail());
        eo.dtype = SPRUCE_DECODE_OWN_DTYPE;
        cr_assert_eq(spruce_model_perplexity_opts(mc, text, 64, 16, &eo, &pl, NULL), 0, "%s",
                     spruce_errdetail());
        cr_assert(fabs(pl - pd) <= 1e-5 * pd && fabs(pe - pd) <= 1e-5 * pd,
                  "%s: perplexity on the levels %.9g, decoded %.9g, dense save %.9g", tag, pl, pe,
                  pd);
    }
    spruce_decoder_free(dc);
    spruce_decoder_free(dd);
    spruce_decoder_free(de);
    spruce_model_free(mc);
    spruce_model_free(md);
    spruce_model_free(me);
}

Test(decode_dtype, compressed_checkpoint_runs_on_its_own_levels)
{
    spruce_synth_config c;
    char *base = tmp_dir(), in[1200];
    spruce_synth_defaults(&c);
    c.hidden = 64, c.intermediate = 160, c.layers = 2, c.heads = 4, c.kv_heads = 2;
    c.vocab = 96, c.max_position = 64, c.dtype = SPRUCE_DTYPE_F32, c.seed = 5;
    snprintf(in, sizeof in, "%s/in", base);
    cr_assert_eq(spruce_synth_write(in, &c, 0), 0, "%s", spruce_errdetail());
    compressed_on_levels(base, "int8-24", SPRUCE_DT_INT8, 0, 0, 1);
    compressed_on_levels(base, "int8-asym", SPRUCE_DT_INT8, 0, 1, 0);
    compressed_on_levels(base, "int4-g32", SPRUCE_DT_INT4, 32, 0, 0);
    compressed_on_levels(base, "int4-g32-asym", SPRUCE_DT_INT4, 32, 1, 0);
    rm_tree(base);
    free(base);
}

/* eval --dtype on a float32 model: the perplexity equals OpenBLAS's on a
 * checkpoint whose linear layers hold the values spruce_qmatrix_quantize
 * gives (symmetric grids; the head is not converted in eval). */
Test(decode_dtype, perplexity_in_a_type_is_that_of_its_values)
{
    static const struct {
        int dtype, gs;
    } k[] = {{SPRUCE_DT_BF16, 0}, {SPRUCE_DT_INT8, 0}, {SPRUCE_DT_INT4, 32}};
    spruce_synth_config c;
    char *base = tmp_dir(), in[1200], ref[1200];
    uint32_t text[4 * 16];
    size_t i;
    int j;
    spruce_synth_defaults(&c);
    c.hidden = 64, c.intermediate = 160, c.layers = 2, c.heads = 4, c.kv_heads = 2;
    c.vocab = 96, c.max_position = 64, c.dtype = SPRUCE_DTYPE_F32, c.seed = 9;
    snprintf(in, sizeof in, "%s/in", base);
    cr_assert_eq(spruce_synth_write(in, &c, 0), 0, "%s", spruce_errdetail());
    for (j = 0; j < 64; j++)
        text[j] = (uint32_t)((j * 29 + 3) % c.vocab);
    for (i = 0; i < sizeof k / sizeof *k; i++) {
        spruce_model *mi = NULL, *mr = NULL;
        spruce_eval_opts eo;
        double pt, pr, p32;
        snprintf(ref, sizeof ref, "%s/ref-%zu", base, i);
        write_values(in, ref, k[i].dtype, k[i].gs, 0);
        cr_assert_eq(spruce_model_open_lazy(in, &mi), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_model_open(ref, &mr), 0, "%s", spruce_errdetail());
        spruce_eval_opts_init(&eo);
        cr_assert_eq(spruce_model_perplexity_opts(mr, text, 64, 16, &eo, &pr, NULL), 0);
        cr_assert_eq(spruce_model_perplexity_opts(mi, text, 64, 16, &eo, &p32, NULL), 0);
        eo.dtype = k[i].dtype;
        eo.groupsize = k[i].gs;
        cr_assert_eq(spruce_model_perplexity_opts(mi, text, 64, 16, &eo, &pt, NULL), 0, "%s",
                     spruce_errdetail());
        cr_assert(fabs(pt - pr) <= 1e-5 * pr, "%s: perplexity %.9g, of its values saved %.9g",
                  spruce_dtype_name(k[i].dtype), pt, pr);
        cr_assert(k[i].dtype == SPRUCE_DT_BF16 || pt != p32, "%s: the type changed nothing (%.9g)",
                  spruce_dtype_name(k[i].dtype), pt);
        spruce_model_free(mi);
        spruce_model_free(mr);
    }
    rm_tree(base);
    free(base);
}
