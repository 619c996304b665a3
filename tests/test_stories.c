/* test_stories.c: the dense model against the stories260k golden outputs, the
 * errors its damaged copies give, and token-by-token decoding with the
 * key/value cache against the full forward. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model_testutil.h"
#include "spruce_ckpt.h"
#include "spruce_model.h"
#include "spruce_family.h"
#include "spruce_pipeline.h"
#include "spruce_decode.h"
#include "spruce_tokens.h"

static void *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    void *p;
    long len;
    cr_assert(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    p = malloc((size_t)len + 1);
    cr_assert(fread(p, 1, (size_t)len, f) == (size_t)len);
    ((char *)p)[len] = 0;
    fclose(f);
    *n = (size_t)len;
    return p;
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert(f, "cannot create %s", path);
    cr_assert(fwrite(data, 1, n, f) == n);
    fclose(f);
}

/* A copy of the fixture in a temporary directory with config.json replaced by
 * the fixture's with `from` substituted by `to` (from == NULL: unchanged). */
static char *fixture_copy(const char *fix, const char *from, const char *to)
{
    char *d = tmp_dir(), path[1200];
    size_t n, m;
    char *cfg, *st, *out, *p;
    snprintf(path, sizeof path, "%s/config.json", fix);
    cfg = read_all(path, &n);
    snprintf(path, sizeof path, "%s/model.safetensors", fix);
    st = read_all(path, &m);
    snprintf(path, sizeof path, "%s/model.safetensors", d);
    write_file(path, st, m);
    out = malloc(n + (to ? strlen(to) : 0) + 1);
    if (from && (p = strstr(cfg, from))) {
        size_t pre = (size_t)(p - cfg);
        memcpy(out, cfg, pre);
        strcpy(out + pre, to);
        strcat(out, p + strlen(from));
    } else {
        cr_assert(!from, "fixture config.json has no '%s'", from);
        strcpy(out, cfg);
    }
    snprintf(path, sizeof path, "%s/config.json", d);
    write_file(path, out, strlen(out));
    free(cfg);
    free(st);
    free(out);
    return d;
}

/* ---- the stories260k checkpoint ------------------------------------------------ */

Test(stories, dense_logits_match_golden)
{
    NEED_FIXTURE(dir);
    spruce_model *m;
    char path[1200];
    uint32_t *ids;
    size_t n, gn;
    float *golden, *logits;
    double maxerr = 0;
    size_t i;
    snprintf(path, sizeof path, "%s/eval.u16", dir);
    cr_assert_eq(spruce_tokens_load(path, &ids, &n), 0, "%s", spruce_errdetail());
    snprintf(path, sizeof path, "%s/eval_seq0_logits.f32", dir);
    golden = read_all(path, &gn);
    cr_assert_eq(gn, (size_t)256 * 512 * 4);
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_config(m)->num_hidden_layers, 5);
    logits = malloc((size_t)256 * 512 * sizeof(float));
    cr_assert_eq(spruce_model_forward(m, ids, 256, logits), 0, "%s", spruce_errdetail());
    for (i = 0; i < (size_t)256 * 512; i++)
        if (fabs(logits[i] - golden[i]) > maxerr)
            maxerr = fabs(logits[i] - golden[i]);
    cr_assert(maxerr < 1e-3, "max abs error %g against llama2.c's logits", maxerr);
    free(logits);
    free(golden);
    free(ids);
    spruce_model_free(m);
}

/* Both attention paths of the model's forward give the golden logits' model
 * the same logits; values outside the enum are refused. */
Test(stories, attention_paths_agree)
{
    NEED_FIXTURE(dir);
    spruce_model *m;
    spruce_fwd_ws *ws;
    uint32_t ids[96];
    float *rows = malloc((size_t)96 * 512 * sizeof(float));
    float *blas = malloc((size_t)96 * 512 * sizeof(float));
    double maxerr = 0;
    size_t i;
    for (i = 0; i < 96; i++)
        ids[i] = (uint32_t)(i * 37 % 512);
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_set_attention(m, SPRUCE_ATTENTION_ROWS), 0);
    cr_assert_eq(spruce_model_forward(m, ids, 96, rows), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_set_attention(m, SPRUCE_ATTENTION_BLAS), 0);
    cr_assert_eq(spruce_model_forward(m, ids, 96, blas), 0, "%s", spruce_errdetail());
    for (i = 0; i < (size_t)96 * 512; i++)
        if (fabs(rows[i] - blas[i]) > maxerr)
            maxerr = fabs(rows[i] - blas[i]);
    cr_assert(maxerr < 1e-4, "rows and BLAS attention differ by %g", maxerr);
    cr_assert_eq(spruce_model_set_attention(m, (spruce_attention)3), SPRUCE_EINVAL);
    cr_assert_eq(spruce_model_set_attention(NULL, SPRUCE_ATTENTION_AUTO), SPRUCE_EINVAL);
    ws = spruce_fwd_ws_alloc(spruce_model_config(m), 4, 1);
    cr_assert(ws);
    cr_assert_eq(spruce_fwd_ws_set_attention(ws, (spruce_attention)-1), SPRUCE_EINVAL);
    cr_assert_eq(spruce_fwd_ws_set_attention(NULL, SPRUCE_ATTENTION_ROWS), SPRUCE_EINVAL);
    spruce_fwd_ws_free(ws);
    free(rows);
    free(blas);
    spruce_model_free(m);
}

Test(stories, greedy_continuation_matches_golden)
{
    NEED_FIXTURE(dir);
    spruce_model *m;
    char path[1200];
    uint32_t *ids, next[256];
    size_t n, t;
    int T = 0, steps;
    float *logits;
    snprintf(path, sizeof path, "%s/greedy_ids.txt", dir);
    cr_assert_eq(spruce_tokens_load(path, &ids, &n), 0, "%s", spruce_errdetail());
    cr_assert_eq(n, 201);
    cr_assert_eq(ids[0], 1);
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_cache_blocks(m), 0);
    logits = malloc((size_t)201 * 512 * sizeof(float));
    /* Generate the first 20 tokens one by one from BOS (a full forward per
     * step); the whole continuation is then checked by teacher forcing. */
    next[T++] = 1;
    for (steps = 0; steps < 20; steps++) {
        int j, best = 0;
        cr_assert_eq(spruce_model_forward(m, next, T, logits), 0);
        for (j = 1; j < 512; j++)
            if (logits[(size_t)(T - 1) * 512 + j] > logits[(size_t)(T - 1) * 512 + best])
                best = j;
        next[T++] = (uint32_t)best;
    }
    for (t = 0; t < (size_t)T; t++)
        cr_assert_eq(next[t], ids[t], "step-by-step greedy id %zu: %u, golden %u", t, next[t],
                     ids[t]);
    /* Teacher forcing: argmax at position t of the golden sequence = id t+1. */
    cr_assert_eq(spruce_model_forward(m, ids, 201, logits), 0);
    for (t = 0; t < 200; t++) {
        int j, best = 0;
        for (j = 1; j < 512; j++)
            if (logits[t * 512 + j] > logits[t * 512 + best])
                best = j;
        cr_assert_eq((uint32_t)best, ids[t + 1], "greedy id %zu: %d, golden %u", t + 1, best,
                     ids[t + 1]);
    }
    free(logits);
    free(ids);
    spruce_model_free(m);
}

static void count_progress(void *ctx, int layer, int nlayers)
{
    (void)layer;
    (void)nlayers;
    (*(int *)ctx)++;
}

/* exp(mean NLL) over nwin windows of 256, from the logits of the full forward. */
static double perplexity_from_logits(spruce_model *m, const uint32_t *ids, int nwin)
{
    float *logits = malloc((size_t)256 * 512 * sizeof(float));
    double nll = 0;
    int w, t, j;
    for (w = 0; w < nwin; w++) {
        cr_assert_eq(spruce_model_forward(m, ids + (size_t)w * 256, 256, logits), 0);
        for (t = 0; t < 255; t++) {
            const float *r = logits + (size_t)t * 512;
            double mx = r[0], s = 0;
            for (j = 1; j < 512; j++)
                mx = r[j] > mx ? r[j] : mx;
            for (j = 0; j < 512; j++)
                s += exp(r[j] - mx);
            nll += log(s) + mx - r[ids[(size_t)w * 256 + t + 1]];
        }
    }
    free(logits);
    return exp(nll / (nwin * 255.0));
}

Test(stories, perplexity_is_17_78)
{
    NEED_FIXTURE(dir);
    spruce_model *m;
    char path[1200];
    uint32_t *ids;
    size_t n;
    double ppl = 0, ref;
    int nwin = 0;
    snprintf(path, sizeof path, "%s/eval.u16", dir);
    cr_assert_eq(spruce_tokens_load(path, &ids, &n), 0);
    cr_assert_eq(n, (size_t)64 * 256);
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    /* The streaming evaluation agrees with the full forward's logits. */
    cr_assert_eq(spruce_model_perplexity(m, ids, 3 * 256 + 100, 256, NULL, NULL, &ppl, &nwin), 0,
                 "%s", spruce_errdetail());
    cr_assert_eq(nwin, 3);
    ref = perplexity_from_logits(m, ids, 3);
    cr_assert(fabs(ppl - ref) < 1e-4 * ref, "streamed %.6f, from logits %.6f", ppl, ref);
    if (!SANITIZED) {
        spruce_eval_opts eo;
        double batched = 0;
        int nprogress = 0;
        cr_assert_eq(spruce_model_perplexity(m, ids, n, 256, NULL, NULL, &ppl, &nwin), 0, "%s",
                     spruce_errdetail());
        cr_assert_eq(nwin, 64);
        cr_assert(fabs(ppl - 17.78) < 0.005, "perplexity %.4f, expected 17.78", ppl);
        /* 1 MiB of activations: 16 windows per pass over the blocks, same result */
        spruce_eval_opts_init(&eo);
        eo.act_bytes = (size_t)1 << 20;
        eo.progress = count_progress;
        eo.ctx = &nprogress;
        cr_assert_eq(spruce_model_perplexity_opts(m, ids, n, 256, &eo, &batched, &nwin), 0);
        cr_assert_eq(nwin, 64);
        cr_assert_eq(nprogress, 4 * 5, "%d blocks run: 4 passes of 5 expected", nprogress);
        cr_assert(fabs(batched - ppl) < 1e-9 * ppl, "batched %.9f, at once %.9f", batched, ppl);
    }
    /* A budget of nothing; shorter than one window; an id outside the vocabulary. */
    {
        spruce_eval_opts eo;
        spruce_eval_opts_init(&eo);
        cr_assert_eq(eo.act_bytes, SPRUCE_EVAL_ACT_BYTES);
        eo.act_bytes = 0;
        cr_assert_eq(spruce_model_perplexity_opts(m, ids, n, 256, &eo, &ppl, &nwin),
                     SPRUCE_EINVAL);
        cr_assert(strstr(spruce_errdetail(), "budget"), "%s", spruce_errdetail());
    }
    cr_assert_eq(spruce_model_perplexity(m, ids, 100, 256, NULL, NULL, &ppl, &nwin),
                 SPRUCE_EINVAL);
    ids[5] = 512;
    cr_assert_eq(spruce_model_perplexity(m, ids, n, 256, NULL, NULL, &ppl, &nwin), SPRUCE_EINVAL);
    cr_assert(strstr(spruce_errdetail(), "512"), "%s", spruce_errdetail());
    free(ids);
    spruce_model_free(m);
}

static void expect_open_error(const char *from, const char *to, int code, const char *needle)
{
    const char *fix = fixture();
    char *d = fixture_copy(fix, from, to);
    spruce_model *m = NULL;
    int rc = spruce_model_open(d, &m);
    cr_assert_eq(rc, code, "config '%s': expected %d, got %d (%s)", to, code, rc,
                 spruce_errdetail());
    cr_assert_null(m);
    cr_assert(strstr(spruce_errdetail(), needle), "no '%s' in '%s'", needle, spruce_errdetail());
    rm_tree(d);
    free(d);
}

Test(stories, shapes_that_disagree_with_config_are_named)
{
    NEED_FIXTURE(dir);
    (void)dir;
    expect_open_error("\"intermediate_size\": 172", "\"intermediate_size\": 170", SPRUCE_ESHAPE,
                      "model.layers.0.mlp.gate_proj.weight");
    expect_open_error("\"intermediate_size\": 172", "\"intermediate_size\": 170", SPRUCE_ESHAPE,
                      "model.safetensors");
    expect_open_error("\"num_key_value_heads\": 4", "\"num_key_value_heads\": 2", SPRUCE_ESHAPE,
                      "k_proj");
    expect_open_error("\"vocab_size\": 512", "\"vocab_size\": 500", SPRUCE_ESHAPE,
                      "model.embed_tokens.weight");
    expect_open_error("\"num_hidden_layers\": 5", "\"num_hidden_layers\": 6", SPRUCE_ENOTFOUND,
                      "model.layers.5.input_layernorm.weight");
    expect_open_error("\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false",
                      SPRUCE_ENOTFOUND, "lm_head.weight");
}

Test(stories, unsupported_configs_are_refused)
{
    NEED_FIXTURE(dir);
    (void)dir;
    expect_open_error("\"model_type\": \"llama\"", "\"model_type\": \"gemma\"",
                      SPRUCE_EUNSUPPORTED, "llama, mistral, qwen2");
    expect_open_error("\"rope_theta\": 10000.0",
                      "\"rope_theta\": 10000.0, \"rope_scaling\": {\"type\": \"ntk-by-parts\"}",
                      SPRUCE_EUNSUPPORTED, "rope_scaling");
    expect_open_error("\"hidden_size\": 64,", "", SPRUCE_EFORMAT, "hidden_size");
    /* qwen2 needs q/k/v biases, which this llama checkpoint does not have */
    expect_open_error("\"model_type\": \"llama\"", "\"model_type\": \"qwen2\"",
                      SPRUCE_ENOTFOUND, "model.layers.0.self_attn.q_proj.bias");
    expect_open_error("{", "{,", SPRUCE_EFORMAT, "config.json");
}

/* mistral's sliding_window acts on every layer as transformers' mask does
 * (p - window < j <= p): the first 128 positions of a 129-token sequence are
 * those of the same model without a window, the last one is not. */
Test(stories, mistral_applies_its_window_beyond_it)
{
    NEED_FIXTURE(dir);
    char *d = fixture_copy(dir, "\"model_type\": \"llama\"",
                           "\"model_type\": \"mistral\", \"sliding_window\": 128");
    spruce_model *m = NULL, *full = NULL;
    uint32_t ids[256];
    float *logits = malloc((size_t)129 * 512 * sizeof(float));
    float *ref = malloc((size_t)129 * 512 * sizeof(float));
    double before = 0, last = 0;
    size_t i;
    for (i = 0; i < 256; i++)
        ids[i] = (uint32_t)(i * 7 % 512);
    cr_assert_eq(spruce_model_open(d, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_open(dir, &full), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_config(m)->sliding_window, 128);
    cr_assert_eq(spruce_model_forward(m, ids, 129, logits), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_forward(full, ids, 129, ref), 0, "%s", spruce_errdetail());
    for (i = 0; i < (size_t)129 * 512; i++) {
        double e = fabs((double)logits[i] - ref[i]);
        if (i < (size_t)128 * 512)
            before = e > before ? e : before;
        else
            last = e > last ? e : last;
    }
    cr_assert(before < 1e-5, "within the window: %g from the full attention", before);
    cr_assert(last > 1e-4, "beyond the window the first key is not seen: %g", last);
    free(logits);
    free(ref);
    spruce_model_free(m);
    spruce_model_free(full);
    rm_tree(d);
    free(d);
}

Test(stories, missing_config_is_named)
{
    NEED_FIXTURE(dir);
    char *d = fixture_copy(dir, NULL, NULL), path[1200];
    spruce_model *m = NULL;
    snprintf(path, sizeof path, "%s/config.json", d);
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(spruce_model_open(d, &m), SPRUCE_ENOTFOUND);
    cr_assert(strstr(spruce_errdetail(), "config.json"), "%s", spruce_errdetail());
    rm_tree(d);
    free(d);
}

Test(stories, nan_weight_is_named_with_file_and_tensor)
{
    NEED_FIXTURE(dir);
    char *d = tmp_dir(), out[1200];
    spruce_ckpt *ck;
    spruce_ckpt_writer *w;
    const spruce_tensor *t;
    spruce_model *m = NULL;
    spruce_block *b = NULL;
    float *v;
    snprintf(out, sizeof out, "%s/nan", d);
    cr_assert_eq(spruce_ckpt_open(dir, &ck), 0, "%s", spruce_errdetail());
    t = spruce_ckpt_find(ck, "model.layers.2.mlp.up_proj.weight");
    cr_assert(t);
    v = malloc((size_t)spruce_tensor_numel(t) * sizeof(float));
    cr_assert_eq(spruce_tensor_read_f32(t, v), 0);
    v[3 * 64 + 7] = NAN;
    cr_assert_eq(spruce_ckpt_writer_begin(ck, out, 0, &w), 0, "%s", spruce_errdetail());
    /* The fixture is F32: write the bytes as they are (the float setter may
     * refuse non-finite values). */
    cr_assert_eq(t->dtype, SPRUCE_DTYPE_F32);
    cr_assert_eq(spruce_ckpt_writer_set_raw(w, t->name, v, t->nbytes), 0, "%s",
                 spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_commit(w), 0, "%s", spruce_errdetail());
    spruce_ckpt_close(ck);
    cr_assert_eq(spruce_model_open(out, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_get_block(m, 1, &b), 0);
    spruce_model_put_block(m, b);
    cr_assert_eq(spruce_model_get_block(m, 2, &b), SPRUCE_ENAN);
    cr_assert_null(b);
    cr_assert(strstr(spruce_errdetail(), "model.layers.2.mlp.up_proj.weight"), "%s",
              spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), "model.safetensors"), "%s", spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), "row 3, column 7"), "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_cache_blocks(m), SPRUCE_ENAN);
    spruce_model_free(m);
    spruce_model_free(NULL);
    free(v);
    rm_tree(d);
    free(d);
}

/* ---- token-by-token decoding with the key/value cache ------------------------ */

/* The decoder's logits at each of the first T positions of ids against the
 * full forward's. */
static void check_decoder(spruce_model *m, spruce_decode_mode mode, const uint32_t *ids, int T,
                          const char *what)
{
    spruce_decoder *d;
    float *ref = malloc((size_t)T * 512 * sizeof(float)), *lg = malloc(512 * sizeof(float));
    double maxerr = 0;
    int t, j;
    cr_assert_eq(spruce_model_forward(m, ids, T, ref), 0);
    cr_assert_eq(spruce_decoder_create(m, T, mode, &d), 0, "%s: %s", what, spruce_errdetail());
    for (t = 0; t < T; t++) {
        cr_assert_eq(spruce_decoder_step(d, ids[t], lg), 0, "%s", spruce_errdetail());
        for (j = 0; j < 512; j++)
            if (fabs(lg[j] - ref[(size_t)t * 512 + j]) > maxerr)
                maxerr = fabs(lg[j] - ref[(size_t)t * 512 + j]);
    }
    cr_assert_eq(spruce_decoder_pos(d), T);
    /* the cache is full */
    cr_assert_eq(spruce_decoder_step(d, 1, lg), SPRUCE_EINVAL);
    if (mode == SPRUCE_DECODE_CSR || mode == SPRUCE_DECODE_BITMASK || mode == SPRUCE_DECODE_NM)
        cr_assert_eq(spruce_decoder_sparse_layers(d), 35, "%s: %d sparse layers", what,
                     spruce_decoder_sparse_layers(d));
    if (mode == SPRUCE_DECODE_DENSE)
        cr_assert_eq(spruce_decoder_sparse_layers(d), 0);
    cr_assert(maxerr < 1e-4, "%s: decoder logits differ from the full forward by %g", what,
              maxerr);
    spruce_decoder_reset(d);
    cr_assert_eq(spruce_decoder_pos(d), 0);
    spruce_decoder_free(d);
    spruce_decoder_free(NULL);
    free(ref);
    free(lg);
}

Test(decode, kv_cache_matches_full_forward_dense_and_sparse)
{
    NEED_FIXTURE(dir);
    spruce_model *m;
    spruce_pipeline_opts o;
    char path[1200];
    uint32_t *ids;
    size_t n;
    snprintf(path, sizeof path, "%s/greedy_ids.txt", dir);
    cr_assert_eq(spruce_tokens_load(path, &ids, &n), 0);
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_cache_blocks(m), 0);
    check_decoder(m, SPRUCE_DECODE_DENSE, ids, 40, "dense");
    check_decoder(m, SPRUCE_DECODE_AUTO, ids, 40, "auto");
    /* prune the cached blocks in memory (magnitude: no calibration) */
    spruce_pipeline_opts_init(&o);
    o.prune.method = SPRUCE_METHOD_MAGNITUDE;
    o.prune.sparsity = 0.6f;
    cr_assert_eq(spruce_pipeline_run(m, NULL, 0, 0, NULL, &o, NULL), 0, "%s", spruce_errdetail());
    check_decoder(m, SPRUCE_DECODE_DENSE, ids, 40, "60% dense");
    check_decoder(m, SPRUCE_DECODE_CSR, ids, 40, "60% csr");
    check_decoder(m, SPRUCE_DECODE_BITMASK, ids, 40, "60% bitmask");
    spruce_model_free(m);
    cr_assert_eq(spruce_model_open(dir, &m), 0);
    cr_assert_eq(spruce_model_cache_blocks(m), 0);
    o.prune.sparsity = 0;
    o.prune.prune_n = 2;
    o.prune.prune_m = 4;
    cr_assert_eq(spruce_pipeline_run(m, NULL, 0, 0, NULL, &o, NULL), 0, "%s", spruce_errdetail());
    check_decoder(m, SPRUCE_DECODE_NM, ids, 40, "2:4 nm");
    spruce_model_free(m);
    free(ids);
}
