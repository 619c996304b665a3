/* test_pipeline.c: block-by-block pruning of stories260k against the published
 * pipeline's perplexities, layer selection, callbacks, bad weights, and the
 * `spruce prune` / `spruce eval` commands.
 *
 * Tolerance: the fixture README lists the perplexities the published code
 * reaches; a faithful pipeline "lands within a few percent".  We accept 5% for
 * every method (measured: within 0.7%; the float32 sums and the published
 * code's pruning of one extra weight plus ties per SparseGPT block account for
 * that) and check the ordering SparseGPT < Wanda < magnitude as in the table. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "decode_testutil.h"
#include "model_testutil.h"
#include "spruce_ckpt.h"
#include "spruce_clock.h"
#include "spruce_pipeline.h"
#include "spruce_tokens.h"

#define SGPT_TOL 0.05

/* Prune the fixture in memory (cached blocks, no writer) and evaluate it. */
static double prune_eval(const char *dir, spruce_method method, float sparsity, int pn, int pm,
                         int nsamples, int true_seq, spruce_pipeline_summary *sum)
{
    spruce_model *m;
    spruce_pipeline_opts o;
    spruce_pipeline_summary s;
    size_t n;
    uint32_t *calib = fixture_tokens(dir, "calib.u16", &n);
    double ppl;
    cr_assert_eq(n, (size_t)128 * 256);
    cr_assert(nsamples <= 128);
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_cache_blocks(m), 0, "%s", spruce_errdetail());
    spruce_pipeline_opts_init(&o);
    o.prune.method = method;
    o.prune.sparsity = sparsity;
    o.prune.prune_n = pn;
    o.prune.prune_m = pm;
    o.true_sequential = true_seq;
    cr_assert_eq(spruce_pipeline_run(m, calib, nsamples, 256, NULL, &o, &s), 0, "%s",
                 spruce_errdetail());
    cr_assert_eq(s.layers_pruned, 35);
    cr_assert_eq(s.params, 5 * (64 * 64 * 2 + 32 * 64 * 2 + 172 * 64 * 3));
    ppl = stories_ppl(m, dir, NEVAL);
    if (sum)
        *sum = s;
    free(calib);
    spruce_model_free(m);
    return ppl;
}

static void expect_near(double got, double want, double tol, const char *what)
{
    if (SANITIZED) {
        cr_log_info("%s: %.2f on %d samples and %d windows (sanitizer build: the published "
                    "%.2f is compared in the normal build)", what, got, NCALIB, NEVAL, want);
        cr_assert(isfinite(got) && got > 17.0, "%s: perplexity %.2f", what, got);
        return;
    }
    cr_assert(fabs(got - want) <= tol * want, "%s: perplexity %.2f, published pipeline %.2f "
              "(tolerance %.0f%%)", what, got, want, 100 * tol);
}

/* ---- against the published figures -------------------------------------------- */

Test(stories, sparsity_20_sparsegpt_wanda_magnitude)
{
    NEED_FIXTURE(dir);
    spruce_pipeline_summary s;
    double sg = prune_eval(dir, SPRUCE_METHOD_SPARSEGPT, 0.2f, 0, 0, NCALIB, 0, &s);
    double wa = prune_eval(dir, SPRUCE_METHOD_WANDA, 0.2f, 0, 0, NCALIB, 0, NULL);
    double mg = prune_eval(dir, SPRUCE_METHOD_MAGNITUDE, 0.2f, 0, 0, 0, 0, NULL);
    cr_log_info("20%%: sparsegpt %.2f wanda %.2f magnitude %.2f", sg, wa, mg);
    cr_assert(fabs(s.sparsity - 0.2) < 0.002, "realised sparsity %.4f", s.sparsity);
    expect_near(sg, 36.71, SGPT_TOL, "SparseGPT 20%");
    expect_near(wa, 47.85, SGPT_TOL, "Wanda 20%");
    expect_near(mg, 55.07, SGPT_TOL, "magnitude 20%");
    if (SANITIZED)
        cr_assert(sg < wa && sg < mg, "sparsegpt %.2f, wanda %.2f, magnitude %.2f", sg, wa, mg);
    else
        cr_assert(sg < wa && wa < mg, "expected sparsegpt %.2f < wanda %.2f < magnitude %.2f "
                  "as in the published table (36.71 < 47.85 < 55.07)", sg, wa, mg);
}

Test(stories, sparsity_30_sparsegpt_wanda_magnitude)
{
    NEED_FIXTURE(dir);
    double sg = prune_eval(dir, SPRUCE_METHOD_SPARSEGPT, 0.3f, 0, 0, NCALIB, 0, NULL);
    double wa = prune_eval(dir, SPRUCE_METHOD_WANDA, 0.3f, 0, 0, NCALIB, 0, NULL);
    double mg = prune_eval(dir, SPRUCE_METHOD_MAGNITUDE, 0.3f, 0, 0, 0, 0, NULL);
    cr_log_info("30%%: sparsegpt %.2f wanda %.2f magnitude %.2f", sg, wa, mg);
    expect_near(sg, 103.89, SGPT_TOL, "SparseGPT 30%");
    expect_near(wa, 181.05, SGPT_TOL, "Wanda 30%");
    expect_near(mg, 203.56, SGPT_TOL, "magnitude 30%");
    if (SANITIZED)
        cr_assert(sg < wa && sg < mg, "sparsegpt %.2f, wanda %.2f, magnitude %.2f", sg, wa, mg);
    else
        cr_assert(sg < wa && wa < mg, "expected sparsegpt %.2f < wanda %.2f < magnitude %.2f "
                  "as in the published table (103.89 < 181.05 < 203.56)", sg, wa, mg);
}

Test(stories, pattern_2_4_sparsegpt)
{
    NEED_FIXTURE(dir);
    spruce_pipeline_summary s;
    double sg = prune_eval(dir, SPRUCE_METHOD_SPARSEGPT, 0.0f, 2, 4, NCALIB, 0, &s);
    cr_log_info("2:4: sparsegpt %.1f", sg);
    cr_assert(s.sparsity >= 0.5, "2:4 sparsity %.4f", s.sparsity);
    expect_near(sg, 2433, SGPT_TOL, "SparseGPT 2:4");
}

Test(stories, true_sequential_calibrates_on_pruned_outputs)
{
    NEED_FIXTURE(dir);
    double seq = prune_eval(dir, SPRUCE_METHOD_SPARSEGPT, 0.2f, 0, 0, SANITIZED ? 4 : 12, 1, NULL);
    double par = prune_eval(dir, SPRUCE_METHOD_SPARSEGPT, 0.2f, 0, 0, SANITIZED ? 4 : 12, 0, NULL);
    cr_log_info("20%%, 12 samples: true-sequential %.2f, all at once %.2f", seq, par);
    /* Both are SparseGPT at 20%: well below magnitude's 55.07. */
    cr_assert(seq < 50 && par < 50, "true-sequential %.2f, all at once %.2f", seq, par);
    cr_assert(seq != par, "true-sequential must calibrate o, gate/up, down on other inputs");
}

/* ---- layer selection and callbacks --------------------------------------------- */

typedef struct {
    int n;
    char names[64][96];
    int bad_mask;
    int stop_at;
} report_log;

static int record(void *ctx, const spruce_layer_report *r)
{
    report_log *lg = ctx;
    int64_t i, numel = (int64_t)r->rows * r->cols;
    if (lg->n < 64)
        snprintf(lg->names[lg->n], sizeof lg->names[0], "%s", r->name);
    lg->n++;
    for (i = 0; i < numel; i++)
        if ((r->mask[i] != 0) != (r->weight[i] != 0.0f) && r->mask[i] == 0)
            lg->bad_mask++; /* a pruned place must hold a zero */
    if (lg->stop_at && lg->n == lg->stop_at)
        return SPRUCE_EIO;
    return 0;
}

/* Run the pipeline on the cached fixture and return the model. */
static spruce_model *run_selected(const char *dir, spruce_method method, const char *inc,
                                  const char *exc, report_log *lg, int *rc)
{
    spruce_model *m;
    spruce_pipeline_opts o;
    size_t n;
    uint32_t *calib = fixture_tokens(dir, "calib.u16", &n);
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_cache_blocks(m), 0);
    spruce_pipeline_opts_init(&o);
    o.prune.method = method;
    o.prune.sparsity = 0.5f;
    o.include = inc;
    o.exclude = exc;
    o.on_layer = record;
    o.ctx = lg;
    *rc = spruce_pipeline_run(m, calib, 8, 256, NULL, &o, NULL);
    free(calib);
    return m;
}

static double zero_fraction(spruce_model *m, int layer, spruce_proj l)
{
    spruce_block *b;
    int64_t i, z = 0, n;
    cr_assert_eq(spruce_model_get_block(m, layer, &b), 0);
    n = (int64_t)b->rows[l] * b->cols[l];
    for (i = 0; i < n; i++)
        z += b->w[l][i] == 0.0f;
    spruce_model_put_block(m, b);
    return (double)z / (double)n;
}

Test(pipeline, reports_every_layer_in_order_with_its_mask)
{
    NEED_FIXTURE(dir);
    report_log lg;
    int rc;
    spruce_model *m;
    memset(&lg, 0, sizeof lg);
    m = run_selected(dir, SPRUCE_METHOD_SPARSEGPT, NULL, NULL, &lg, &rc);
    cr_assert_eq(rc, 0, "%s", spruce_errdetail());
    cr_assert_eq(lg.n, 35);
    cr_assert_str_eq(lg.names[0], "model.layers.0.self_attn.q_proj.weight");
    cr_assert_str_eq(lg.names[6], "model.layers.0.mlp.down_proj.weight");
    cr_assert_str_eq(lg.names[34], "model.layers.4.mlp.down_proj.weight");
    cr_assert_eq(lg.bad_mask, 0);
    cr_assert(fabs(zero_fraction(m, 3, SPRUCE_PROJ_UP) - 0.5) < 0.01);
    spruce_model_free(m);
}

Test(pipeline, include_and_exclude_choose_layers)
{
    NEED_FIXTURE(dir);
    report_log lg;
    int rc;
    spruce_model *m;
    memset(&lg, 0, sizeof lg);
    m = run_selected(dir, SPRUCE_METHOD_SPARSEGPT, "mlp\\.", "layers\\.[03]\\.", &lg, &rc);
    cr_assert_eq(rc, 0, "%s", spruce_errdetail());
    cr_assert_eq(lg.n, 9, "3 MLP layers of blocks 1, 2, 4: got %d", lg.n);
    cr_assert_str_eq(lg.names[0], "model.layers.1.mlp.gate_proj.weight");
    cr_assert(zero_fraction(m, 1, SPRUCE_PROJ_Q) < 0.01);
    cr_assert(zero_fraction(m, 0, SPRUCE_PROJ_DOWN) < 0.01);
    cr_assert(zero_fraction(m, 3, SPRUCE_PROJ_GATE) < 0.01);
    cr_assert(fabs(zero_fraction(m, 4, SPRUCE_PROJ_DOWN) - 0.5) < 0.01);
    spruce_model_free(m);

    memset(&lg, 0, sizeof lg);
    m = run_selected(dir, SPRUCE_METHOD_MAGNITUDE, "(", NULL, &lg, &rc);
    cr_assert_eq(rc, SPRUCE_EINVAL);
    cr_assert(strstr(spruce_errdetail(), "--include"), "%s", spruce_errdetail());
    spruce_model_free(m);

    memset(&lg, 0, sizeof lg);
    m = run_selected(dir, SPRUCE_METHOD_SPARSEGPT, "lm_head", NULL, &lg, &rc);
    cr_assert_eq(rc, SPRUCE_EINVAL);
    cr_assert(strstr(spruce_errdetail(), "no linear layer"), "%s", spruce_errdetail());
    cr_assert_eq(lg.n, 0);
    spruce_model_free(m);
}

Test(pipeline, a_failing_callback_stops_the_pipeline)
{
    NEED_FIXTURE(dir);
    report_log lg;
    int rc;
    spruce_model *m;
    memset(&lg, 0, sizeof lg);
    lg.stop_at = 9;
    m = run_selected(dir, SPRUCE_METHOD_MAGNITUDE, NULL, NULL, &lg, &rc);
    cr_assert_eq(rc, SPRUCE_EIO);
    cr_assert_eq(lg.n, 9);
    spruce_model_free(m);
}

Test(pipeline, memory_estimate_for_a_7b_model_fits_24_gib)
{
    spruce_config c;
    double gib;
    cr_assert_eq(spruce_config_parse("{\"model_type\": \"llama\", \"hidden_size\": 4096, "
                                     "\"intermediate_size\": 11008, \"num_hidden_layers\": 32, "
                                     "\"num_attention_heads\": 32, \"vocab_size\": 32000, "
                                     "\"max_position_embeddings\": 4096}", "llama-2-7b", &c), 0);
    gib = spruce_pipeline_memory(&c, 128, 2048) / (1 << 30);
    cr_log_info("LLaMA-2-7B, 128 x 2048 tokens: %.2f GiB", gib);
    /* activations alone are 128 * 2048 * 4096 * 4 bytes = 4 GiB */
    cr_assert(gib > 7.0 && gib < 9.0, "estimate %.2f GiB", gib);
    cr_assert(spruce_pipeline_memory(&c, 64, 2048) < spruce_pipeline_memory(&c, 128, 2048) - 1.9e9);
}

/* ---- bad weights and the commands ---------------------------------------------- */

/* A copy of the fixture at dir/name with a NaN in one weight. */
static void make_nan_copy(const char *fix, const char *out, const char *tensor)
{
    spruce_ckpt *ck;
    spruce_ckpt_writer *w;
    const spruce_tensor *t;
    float *v;
    cr_assert_eq(spruce_ckpt_open(fix, &ck), 0, "%s", spruce_errdetail());
    t = spruce_ckpt_find(ck, tensor);
    cr_assert(t);
    cr_assert_eq(t->dtype, SPRUCE_DTYPE_F32);
    v = malloc(t->nbytes);
    cr_assert_eq(spruce_tensor_read_f32(t, v), 0);
    v[11] = NAN;
    cr_assert_eq(spruce_ckpt_writer_begin(ck, out, 0, &w), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_set_raw(w, t->name, v, t->nbytes), 0, "%s",
                 spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_commit(w), 0, "%s", spruce_errdetail());
    spruce_ckpt_close(ck);
    free(v);
}

Test(pipeline, nan_weight_fails_naming_file_and_tensor_and_leaves_no_output)
{
    NEED_FIXTURE(dir);
    char *d = tmp_dir(), nan[1200], out[1200];
    spruce_model *m;
    spruce_ckpt_writer *w;
    spruce_pipeline_opts o;
    size_t n;
    uint32_t *calib = fixture_tokens(dir, "calib.u16", &n);
    int rc;
    snprintf(nan, sizeof nan, "%s/nan", d);
    snprintf(out, sizeof out, "%s/out", d);
    make_nan_copy(dir, nan, "model.layers.3.self_attn.o_proj.weight");
    cr_assert_eq(spruce_model_open(nan, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_begin(spruce_model_ckpt(m), out, 0, &w), 0);
    spruce_pipeline_opts_init(&o);
    o.prune.sparsity = 0.5f;
    rc = spruce_pipeline_run(m, calib, 4, 256, w, &o, NULL);
    cr_assert_eq(rc, SPRUCE_ENAN, "got %d: %s", rc, spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), "model.layers.3.self_attn.o_proj.weight"), "%s",
              spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), "model.safetensors"), "%s", spruce_errdetail());
    spruce_ckpt_writer_abort(w);
    cr_assert(!exists(out), "%s left behind", out);
    spruce_model_free(m);
    free(calib);
    rm_tree(d);
    free(d);
}

/* Run a shell command; its exit status. */
static int run(const char *cmd)
{
    int st = system(cmd);
    cr_assert(st != -1 && WIFEXITED(st), "%s did not exit", cmd);
    return WEXITSTATUS(st);
}

/* The last line of a file, without its newline. */
static void last_line(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    char line[512];
    cr_assert(f, "no %s", path);
    buf[0] = 0;
    while (fgets(line, sizeof line, f))
        snprintf(buf, size, "%s", line);
    buf[strcspn(buf, "\n")] = 0;
    fclose(f);
}

#define NEED_BIN(bin)                                                                   \
    const char *bin = getenv("SPRUCE_BIN");                                             \
    if (!bin || !exists(bin)) {                                                         \
        cr_skip_test("SPRUCE_BIN does not name the built spruce program");              \
        return;                                                                         \
    }

Test(cli, prune_then_eval)
{
    NEED_FIXTURE(dir);
    NEED_BIN(bin);
    char *d = tmp_dir(), cmd[8192], line[512], out[1200], masks[1200], log[1200], path[1300];
    char data[1300];
    double ppl = 0;
    snprintf(out, sizeof out, "%s/pruned", d);
    snprintf(masks, sizeof masks, "%s/masks.h5", d);
    snprintf(log, sizeof log, "%s/log", d);
    if (SANITIZED) {
        /* the first NEVAL windows only */
        size_t n;
        uint32_t *ids = fixture_tokens(dir, "eval.u16", &n);
        snprintf(data, sizeof data, "%s/eval.u16", d);
        cr_assert_eq(spruce_tokens_save(data, ids, (size_t)NEVAL * 256), 0);
        free(ids);
    } else {
        snprintf(data, sizeof data, "%s/eval.u16", dir);
    }
    /* eval of the dense model: the last line is "perplexity <value>" */
    snprintf(cmd, sizeof cmd, "'%s' eval '%s' --data '%s' --seqlen 256 >'%s' 2>/dev/null", bin,
             dir, data, log);
    cr_assert_eq(run(cmd), 0);
    last_line(log, line, sizeof line);
    cr_assert_eq(sscanf(line, "perplexity %lf", &ppl), 1, "last line '%s'", line);
    if (!SANITIZED)
        cr_assert(fabs(ppl - 17.78) < 0.005, "dense perplexity %.4f", ppl);

    snprintf(cmd, sizeof cmd, "'%s' prune '%s' -o '%s' --calib '%s/calib.u16' --seqlen 256 "
             "--nsamples %d --sparsity 0.3 --masks '%s' >'%s' 2>'%s.err'", bin, dir, out, dir,
             SANITIZED ? 4 : 16, masks, log, log);
    cr_assert_eq(run(cmd), 0, "prune failed, see %s.err", log);
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    cr_assert(exists(path));
    snprintf(path, sizeof path, "%s/config.json", out);
    cr_assert(exists(path));
    cr_assert(exists(masks));
    snprintf(path, sizeof path, "%s.err", log);
    last_line(path, line, sizeof line);
    cr_assert(strstr(line, "block 5/5 done") && strstr(line, "ETA"), "progress '%s'", line);
    snprintf(cmd, sizeof cmd, "grep -q 'block 5/5 .*mlp.down_proj.weight .*loss .*sparsity "
             "0.30.*ETA' '%s'", path);
    cr_assert_eq(run(cmd), 0, "no progress line for the last layer in %s", path);
    last_line(log, line, sizeof line);
    cr_assert(strstr(line, "wrote") && strstr(line, out), "summary '%s'", line);
    snprintf(cmd, sizeof cmd, "'%s' eval '%s' --data '%s' --seqlen 256 >'%s' 2>/dev/null", bin,
             out, data, log);
    cr_assert_eq(run(cmd), 0);
    last_line(log, line, sizeof line);
    cr_assert_eq(sscanf(line, "perplexity %lf", &ppl), 1, "last line '%s'", line);
    if (!SANITIZED)
        cr_assert(ppl > 60 && ppl < 160, "SparseGPT 30%% on 16 samples: perplexity %.2f", ppl);

    /* An existing output is refused without --force, replaced with it. */
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' -o '%s' --method magnitude --sparsity 0.5 "
             ">/dev/null 2>'%s'", bin, dir, out, log);
    cr_assert_eq(run(cmd), 1);
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' -o '%s' --method magnitude --sparsity 0.5 --force "
             ">/dev/null 2>'%s'", bin, dir, out, log);
    cr_assert_eq(run(cmd), 0);
    rm_tree(d);
    free(d);
}

Test(cli, nan_weight_exits_1_and_leaves_nothing)
{
    NEED_FIXTURE(dir);
    NEED_BIN(bin);
    char *d = tmp_dir(), cmd[8192], nan[1200], out[1200], masks[1200], err[1200], line[512];
    snprintf(nan, sizeof nan, "%s/nan", d);
    snprintf(out, sizeof out, "%s/out", d);
    snprintf(masks, sizeof masks, "%s/m.h5", d);
    snprintf(err, sizeof err, "%s/err", d);
    make_nan_copy(dir, nan, "model.layers.1.mlp.gate_proj.weight");
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' -o '%s' --calib '%s/calib.u16' --seqlen 256 "
             "--nsamples 4 --sparsity 0.5 --masks '%s' >/dev/null 2>'%s'", bin, nan, out, dir,
             masks, err);
    cr_assert_eq(run(cmd), 1);
    last_line(err, line, sizeof line);
    cr_assert(strstr(line, "model.layers.1.mlp.gate_proj.weight") && strstr(line, "NaN"),
              "message '%s'", line);
    cr_assert(!exists(out), "%s left behind", out);
    cr_assert(!exists(masks), "%s left behind", masks);
    snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -v -x -e nan -e err", d);
    cr_assert_neq(run(cmd), 0, "temporary files left in %s", d);
    rm_tree(d);
    free(d);
}

Test(cli, bf16_checkpoint_keeps_its_dtype_and_real_zeros)
{
    NEED_BIN(bin);
    char *d = tmp_dir(), cmd[8192], src[1200], out[1200], calib[1200];
    spruce_ckpt *ck;
    const spruce_tensor *t;
    const uint16_t *v;
    int64_t i, n, zeros = 0, negzeros = 0;
    snprintf(src, sizeof src, "%s/m", d);
    snprintf(out, sizeof out, "%s/o", d);
    snprintf(calib, sizeof calib, "%s/c.u16", d);
    snprintf(cmd, sizeof cmd, "'%s' synth '%s' --hidden 64 --intermediate 128 --layers 2 "
             "--heads 4 --kv-heads 2 --vocab 256 --max-position 64 --dtype bf16 --calib '%s' "
             "--count 1024 >/dev/null 2>&1", bin, src, calib);
    cr_assert_eq(run(cmd), 0);
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' -o '%s' --calib '%s' --seqlen 64 --pattern 2:4 "
             ">/dev/null 2>&1", bin, src, out, calib);
    cr_assert_eq(run(cmd), 0);
    cr_assert_eq(spruce_ckpt_open(out, &ck), 0, "%s", spruce_errdetail());
    t = spruce_ckpt_find(ck, "model.layers.1.mlp.down_proj.weight");
    cr_assert(t);
    cr_assert_eq(t->dtype, SPRUCE_DTYPE_BF16);
    v = t->data;
    n = spruce_tensor_numel(t);
    for (i = 0; i < n; i++) {
        zeros += v[i] == 0x0000;
        negzeros += v[i] == 0x8000;
    }
    cr_assert_eq(negzeros, 0);
    cr_assert(zeros >= n / 2, "%lld zeros of %lld", (long long)zeros, (long long)n);
    /* embeddings stay dense */
    t = spruce_ckpt_find(ck, "model.embed_tokens.weight");
    v = t->data;
    for (i = 0, zeros = 0; i < spruce_tensor_numel(t); i++)
        zeros += (v[i] & 0x7fff) == 0;
    cr_assert(zeros < spruce_tensor_numel(t) / 100);
    spruce_ckpt_close(ck);
    snprintf(cmd, sizeof cmd, "'%s' eval '%s' --data '%s' --seqlen 64 >/dev/null 2>&1", bin, out,
             calib);
    cr_assert_eq(run(cmd), 0);
    rm_tree(d);
    free(d);
}

Test(cli, run_reproduces_greedy_ids_dense_and_sparse)
{
    NEED_FIXTURE(dir);
    NEED_BIN(bin);
    char *d = tmp_dir(), cmd[8192], out[1200], log[1200], line[4096];
    size_t n;
    uint32_t *ids = fixture_tokens(dir, "greedy_ids.txt", &n);
    const char *modes[] = {"off", "auto", "csr", "bitmask"};
    char first[4096] = "";
    int i, k, pos;
    snprintf(log, sizeof log, "%s/log", d);
    /* the dense path reproduces llama2.c's greedy continuation from BOS */
    snprintf(cmd, sizeof cmd, "'%s' run '%s' --prompt 1 --steps 200 --sparse off >'%s' "
             "2>/dev/null", bin, dir, log);
    cr_assert_eq(run(cmd), 0);
    {
        FILE *f = fopen(log, "r");
        cr_assert(f && fgets(line, sizeof line, f));
        fclose(f);
    }
    for (i = 0, pos = 0; i < 200; i++) {
        unsigned v;
        cr_assert_eq(sscanf(line + pos, "%u%n", &v, &k), 1, "id %d missing in '%.80s'", i, line);
        cr_assert_eq(v, ids[i + 1], "generated id %d: %u, golden %u", i, v, ids[i + 1]);
        pos += k;
    }
    last_line(log, line, sizeof line);
    cr_assert(strstr(line, "tokens/s"), "'%s'", line);
    /* a pruned model: every format generates the same ids */
    snprintf(out, sizeof out, "%s/p", d);
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' -o '%s' --method magnitude --sparsity 0.5 "
             ">/dev/null 2>&1", bin, dir, out);
    cr_assert_eq(run(cmd), 0);
    {
        /* auto picks each layer's format by timing: its ids equal dense's
         * whatever it picks only when no format can flip a greedy choice */
        static const spruce_decode_mode fm[] = {SPRUCE_DECODE_DENSE, SPRUCE_DECODE_CSR,
                                                SPRUCE_DECODE_BITMASK};
        const uint32_t prompt[] = {1, 461, 461};
        check_greedy_margin(out, prompt, 3, 30, fm, 3);
    }
    for (i = 0; i < 4; i++) {
        char *p;
        snprintf(cmd, sizeof cmd, "'%s' run '%s' --prompt '1 461 461' --steps 30 --sparse %s "
                 "--json >'%s' 2>/dev/null", bin, out, modes[i], log);
        cr_assert_eq(run(cmd), 0, "--sparse %s", modes[i]);
        last_line(log, line, sizeof line);
        cr_assert(strstr(line, "\"tokens_per_s\": "), "'%s'", line);
        p = strstr(line, "\"ids\": [");
        cr_assert(p, "'%s'", line);
        *strchr(p, ']') = 0;
        if (!i)
            snprintf(first, sizeof first, "%s", p);
        else
            cr_assert_str_eq(p, first, "--sparse %s generated other ids", modes[i]);
    }
    snprintf(cmd, sizeof cmd, "'%s' run '%s' --prompt '1 9999' 2>/dev/null", bin, dir);
    cr_assert_eq(run(cmd), 2, "id outside the vocabulary");
    /* beyond max_position_embeddings: computed as transformers does, after a warning */
    snprintf(cmd, sizeof cmd, "'%s' run '%s' --prompt 1 --steps 600 2>&1 >/dev/null | "
             "grep -q 'warning: .*601 tokens are longer than max_position_embeddings 512'",
             bin, dir);
    cr_assert_eq(run(cmd), 0, "beyond max_position_embeddings: no warning");
    free(ids);
    rm_tree(d);
    free(d);
}

Test(cli, usage_errors_exit_2)
{
    NEED_FIXTURE(dir);
    NEED_BIN(bin);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' prune --help >/dev/null", bin);
    cr_assert_eq(run(cmd), 0);
    snprintf(cmd, sizeof cmd, "'%s' eval --help >/dev/null", bin);
    cr_assert_eq(run(cmd), 0);
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' --calib x.u16 --sparsity 0.5 2>/dev/null", bin, dir);
    cr_assert_eq(run(cmd), 2, "missing -o");
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' -o /tmp/x --calib x.u16 --sparsity 0.5 "
             "--pattern 2:4 2>/dev/null", bin, dir);
    cr_assert_eq(run(cmd), 2, "--sparsity and --pattern");
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' -o /tmp/x --calib x.u16 --sparsity 0.5 "
             "--method obs 2>/dev/null", bin, dir);
    cr_assert_eq(run(cmd), 2, "unknown method");
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' -o /tmp/x --sparsity 0.5 2>/dev/null", bin, dir);
    cr_assert_eq(run(cmd), 2, "sparsegpt without --calib");
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' -o /tmp/x --calib x.u16 --sparsity 1.5 "
             "2>/dev/null", bin, dir);
    cr_assert_eq(run(cmd), 2, "sparsity out of range");
    snprintf(cmd, sizeof cmd, "'%s' eval '%s' 2>/dev/null", bin, dir);
    cr_assert_eq(run(cmd), 2, "eval without --data");
    snprintf(cmd, sizeof cmd, "'%s' eval '%s' --data '%s/eval.u16' --seqlen 1024 2>&1 "
             ">/dev/null | grep -q 'warning: .*1024 tokens are longer than "
             "max_position_embeddings 512'", bin, dir, dir);
    cr_assert_eq(run(cmd), 0, "seqlen beyond max_position_embeddings: no warning");
    snprintf(cmd, sizeof cmd, "'%s' eval /nonexistent --data '%s/eval.u16' 2>/dev/null", bin, dir);
    cr_assert_eq(run(cmd), 1, "missing model directory");
    snprintf(cmd, sizeof cmd, "'%s' eval '%s' --data '%s/eval.u16' --act-mib 0 2>/dev/null", bin,
             dir, dir);
    cr_assert_eq(run(cmd), 2, "--act-mib 0");
    snprintf(cmd, sizeof cmd, "'%s' eval '%s' --data '%s/eval.u16' --act-mib x 2>/dev/null", bin,
             dir, dir);
    cr_assert_eq(run(cmd), 2, "--act-mib x");
}

/* --act-mib 1: the 64 windows of 64 KiB take four passes over the blocks,
 * for the same perplexity. */
Test(cli, eval_act_mib_takes_more_passes_for_the_same_result)
{
    NEED_FIXTURE(dir);
    NEED_BIN(bin);
    char *d = tmp_dir(), cmd[8192], line[512], log[1200];
    double ppl = 0;
    if (SANITIZED) {
        rm_tree(d);
        free(d);
        cr_skip_test("the whole evaluation file: not under a sanitizer");
        return;
    }
    snprintf(log, sizeof log, "%s/log", d);
    snprintf(cmd, sizeof cmd, "'%s' eval '%s' --data '%s/eval.u16' --seqlen 256 --act-mib 1 "
             ">'%s' 2>'%s.err'", bin, dir, dir, log, log);
    cr_assert_eq(run(cmd), 0);
    last_line(log, line, sizeof line);
    cr_assert_eq(sscanf(line, "perplexity %lf", &ppl), 1, "last line '%s'", line);
    cr_assert(fabs(ppl - 17.78) < 0.005, "perplexity %.4f", ppl);
    snprintf(cmd, sizeof cmd, "test \"$(grep -c 'block 5/5' '%s.err')\" = 4", log);
    cr_assert_eq(run(cmd), 0, "expected 4 passes over the blocks, see %s.err", log);
    rm_tree(d);
    free(d);
}

Test(clock, monotonic_and_median)
{
    double odd[5] = {3, 1, 5, 2, 4}, even[4] = {4, 1, 3, 2}, t0 = spruce_clock_now(), t1;
    t1 = spruce_clock_now();
    cr_assert(t1 >= t0);
    cr_assert_float_eq(spruce_clock_median(odd, 5), 3.0, 1e-12);
    cr_assert_float_eq(odd[0], 1.0, 1e-12, "sorted in place");
    cr_assert_float_eq(spruce_clock_median(even, 4), 2.5, 1e-12);
    cr_assert_float_eq(spruce_clock_median(NULL, 3), 0.0, 1e-12);
    cr_assert_float_eq(spruce_clock_median(odd, 0), 0.0, 1e-12);
}
