/* test_nonfinite.c: finite weights so large that the float32 activations
 * overflow (1e38 in BF16) are an error naming the layer and the tensor where
 * the first NaN or infinity appears, in the forward, the perplexity, decoding,
 * the pipeline's calibration and the eval, run, bench --model and prune
 * commands; never a "perplexity nan" or arbitrary ids with exit status 0. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "model_testutil.h"
#include "spruce_ckpt.h"
#include "spruce_decode.h"
#include "spruce_model.h"
#include "spruce_pipeline.h"

/* A small BF16 checkpoint in dir/base (2 layers, hidden 64). */
static void synth(const char *dir, char *base, size_t size)
{
    spruce_synth_config sc;
    spruce_synth_defaults(&sc);
    sc.hidden = 64;
    sc.intermediate = 96;
    sc.heads = 4;
    sc.kv_heads = 2;
    sc.vocab = 64;
    sc.max_position = 64;
    sc.dtype = SPRUCE_DTYPE_BF16;
    snprintf(base, size, "%s/base", dir);
    cr_assert_eq(spruce_synth_write(base, &sc, 0), 0, "%s", spruce_errdetail());
}

/* Layer 1's up_proj row 3 at 1e38: its output overflows for every token whose
 * normed input sums to more than 3.4 in magnitude (most of them); layers 0 and
 * the embedding stay finite. */
#define UP1 "model.layers.1.mlp.up_proj.weight"
#define EXPECT_UP1 "layer 1 mlp.up_proj output: non-finite value ("

static void expect_detail(const char *needle)
{
    cr_assert(strstr(spruce_errdetail(), needle), "no '%s' in '%s'", needle,
              spruce_errdetail());
}

static uint32_t *ids_of(int n)
{
    uint32_t *ids = malloc((size_t)n * sizeof *ids);
    int i;
    cr_assert_not_null(ids);
    for (i = 0; i < n; i++)
        ids[i] = (uint32_t)((i * 7 + 3) % 64);
    return ids;
}

Test(nonfinite, base_model_is_finite)
{
    /* the control: the same calls on the unpoisoned copy succeed */
    char *d = tmp_dir(), base[1100];
    spruce_model *m;
    uint32_t *ids = ids_of(256);
    double ppl = 0;
    int nwin = 0;
    synth(d, base, sizeof base);
    cr_assert_eq(spruce_model_open(base, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_perplexity(m, ids, 256, 32, NULL, NULL, &ppl, &nwin), 0, "%s",
                 spruce_errdetail());
    cr_assert(ppl > 1 && ppl < 1e6, "perplexity %g", ppl);
    spruce_model_free(m);
    free(ids);
    rm_tree(d);
    free(d);
}

Test(nonfinite, perplexity_and_forward_name_the_layer_and_tensor)
{
    char *d = tmp_dir(), base[1100], bad[1100];
    spruce_model *m;
    uint32_t *ids = ids_of(256);
    float *logits = malloc(32 * 64 * sizeof(float));
    double ppl = 0;
    int nwin = 0;
    synth(d, base, sizeof base);
    snprintf(bad, sizeof bad, "%s/bad", d);
    poison(base, bad, UP1, 3, 1e38f);
    /* the weights are finite: opening and reading them succeeds */
    cr_assert_eq(spruce_model_open(bad, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_perplexity(m, ids, 256, 32, NULL, NULL, &ppl, &nwin), SPRUCE_ENAN,
                 "perplexity %g accepted", ppl);
    expect_detail(EXPECT_UP1);
    expect_detail(" of sequence ");
    cr_assert_eq(spruce_model_forward(m, ids, 32, logits), SPRUCE_ENAN);
    expect_detail(EXPECT_UP1);
    /* the same on the cached blocks */
    cr_assert_eq(spruce_model_cache_blocks(m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_perplexity(m, ids, 256, 32, NULL, NULL, &ppl, &nwin), SPRUCE_ENAN);
    expect_detail(EXPECT_UP1);
    spruce_model_free(m);
    free(logits);
    free(ids);
    rm_tree(d);
    free(d);
}

Test(nonfinite, logits_are_checked)
{
    /* lm_head row 5 at 1e38: the blocks are finite, logit 5 overflows */
    char *d = tmp_dir(), base[1100], bad[1100];
    spruce_model *m;
    uint32_t *ids = ids_of(64);
    double ppl = 0;
    int nwin = 0;
    synth(d, base, sizeof base);
    snprintf(bad, sizeof bad, "%s/bad", d);
    poison(base, bad, "lm_head.weight", 5, 1e38f);
    cr_assert_eq(spruce_model_open(bad, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_perplexity(m, ids, 64, 32, NULL, NULL, &ppl, &nwin), SPRUCE_ENAN,
                 "perplexity %g accepted", ppl);
    expect_detail("logits: non-finite value (");
    spruce_model_free(m);
    free(ids);
    rm_tree(d);
    free(d);
}

Test(nonfinite, decoding_names_the_layer_and_tensor)
{
    char *d = tmp_dir(), base[1100], bad[1100];
    spruce_model *m;
    spruce_decoder *dec;
    float logits[64];
    int i, rc = 0;
    synth(d, base, sizeof base);
    snprintf(bad, sizeof bad, "%s/bad", d);
    poison(base, bad, UP1, 3, 1e38f);
    cr_assert_eq(spruce_model_open(bad, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_decoder_create(m, 32, SPRUCE_DECODE_DENSE, &dec), 0, "%s",
                 spruce_errdetail());
    for (i = 0; i < 32 && !rc; i++)
        rc = spruce_decoder_step(dec, (uint32_t)((i * 7 + 3) % 64), logits);
    cr_assert_eq(rc, SPRUCE_ENAN, "32 steps without an error");
    expect_detail(EXPECT_UP1);
    expect_detail("at position ");
    spruce_decoder_free(dec);
    spruce_model_free(m);
    rm_tree(d);
    free(d);
}

Test(nonfinite, pipeline_calibration_names_the_layer_and_tensor)
{
    char *d = tmp_dir(), base[1100], bad[1100];
    spruce_model *m;
    spruce_pipeline_opts o;
    uint32_t *ids = ids_of(256);
    int method;
    synth(d, base, sizeof base);
    snprintf(bad, sizeof bad, "%s/bad", d);
    poison(base, bad, UP1, 3, 1e38f);
    cr_assert_eq(spruce_model_open(bad, &m), 0, "%s", spruce_errdetail());
    for (method = SPRUCE_METHOD_SPARSEGPT; method <= SPRUCE_METHOD_WANDA; method++) {
        spruce_pipeline_opts_init(&o);
        o.prune.method = method;
        o.prune.sparsity = 0.5f;
        cr_assert_eq(spruce_pipeline_run(m, ids, 8, 32, NULL, &o, NULL), SPRUCE_ENAN,
                     "method %d: %s", method, spruce_errdetail());
        expect_detail(EXPECT_UP1);
        /* and with true-sequential groups, whose forwards stop early */
        o.true_sequential = 1;
        cr_assert_eq(spruce_pipeline_run(m, ids, 8, 32, NULL, &o, NULL), SPRUCE_ENAN,
                     "method %d: %s", method, spruce_errdetail());
        expect_detail(EXPECT_UP1);
    }
    spruce_model_free(m);
    free(ids);
    rm_tree(d);
    free(d);
}

/* ---- the commands ---------------------------------------------------------- */

static const char *bin(void)
{
    const char *b = getenv("SPRUCE_BIN");
    if (!b || !*b || access(b, X_OK) != 0)
        return NULL;
    return b;
}

/* Exit status of cmd; its standard error in err (size bytes). */
static int run_err(const char *cmd, const char *errfile, char *err, size_t size)
{
    char full[4096];
    FILE *f;
    size_t n = 0;
    int st;
    snprintf(full, sizeof full, "%s >/dev/null 2>'%s'", cmd, errfile);
    st = system(full);
    err[0] = '\0';
    if ((f = fopen(errfile, "r"))) {
        n = fread(err, 1, size - 1, f);
        fclose(f);
    }
    err[n] = '\0';
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(nonfinite, commands_exit_1_naming_the_tensor)
{
    char *d = tmp_dir(), base[1100], bad[1100], cmd[4096], errf[1200], err[4096], data[1200];
    const char *b = bin();
    FILE *f;
    int i;
    if (!b) {
        cr_skip_test("SPRUCE_BIN not set or not executable (run through 'make check')");
        return;
    }
    synth(d, base, sizeof base);
    snprintf(bad, sizeof bad, "%s/bad", d);
    poison(base, bad, UP1, 3, 1e38f);
    snprintf(data, sizeof data, "%s/ids.txt", d);
    snprintf(errf, sizeof errf, "%s/err", d);
    cr_assert_not_null(f = fopen(data, "w"));
    for (i = 0; i < 128; i++)
        fprintf(f, "%d\n", (i * 7 + 3) % 64);
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' eval '%s' --data '%s' --seqlen 32", b, bad, data);
    cr_assert_eq(run_err(cmd, errf, err, sizeof err), 1, "eval: %s", err);
    cr_assert(strstr(err, EXPECT_UP1), "eval: %s", err);
    snprintf(cmd, sizeof cmd, "'%s' run '%s' --prompt '3 10 17 24 31 38 45 52' --steps 8", b,
             bad);
    cr_assert_eq(run_err(cmd, errf, err, sizeof err), 1, "run: %s", err);
    cr_assert(strstr(err, EXPECT_UP1), "run: %s", err);
    snprintf(cmd, sizeof cmd, "'%s' bench --model '%s' --batch 1", b, bad);
    cr_assert_eq(run_err(cmd, errf, err, sizeof err), 1, "bench --model: %s", err);
    cr_assert(strstr(err, EXPECT_UP1), "bench --model: %s", err);
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' -o '%s/out' --calib '%s' --sparsity 0.5 "
             "--seqlen 32 --nsamples 4", b, bad, d, data);
    cr_assert_eq(run_err(cmd, errf, err, sizeof err), 1, "prune: %s", err);
    cr_assert(strstr(err, EXPECT_UP1), "prune: %s", err);
    snprintf(cmd, sizeof cmd, "%s/out", d);
    cr_assert(!exists(cmd), "prune left %s", cmd);
    /* the control */
    snprintf(cmd, sizeof cmd, "'%s' eval '%s' --data '%s' --seqlen 32", b, base, data);
    cr_assert_eq(run_err(cmd, errf, err, sizeof err), 0, "eval: %s", err);
    rm_tree(d);
    free(d);
}
