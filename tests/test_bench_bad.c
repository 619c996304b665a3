/* test_bench_bad.c: careless options of the pruner and of `spruce bench`: a
 * sparsity that rounds to every weight, dead inputs, --format nm without
 * --pattern, an --svg path that cannot be written. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "npy.h"
#include "prune_testutil.h"
#include "spruce_ckpt.h"
#include "spruce_prune.h"
#include "spruce_tokens.h"

/* cmd's stdout and stderr (2>&1 is the caller's), its exit status in *code. */
static char *run(const char *cmd, int *code)
{
    FILE *p = popen(cmd, "r");
    size_t cap = 1 << 16, len = 0, got;
    char *buf = malloc(cap);
    int st;
    cr_assert_not_null(p);
    while ((got = fread(buf + len, 1, cap - 1 - len, p)) > 0) {
        len += got;
        if (len + 1 >= cap)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    st = pclose(p);
    *code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return buf;
}

static const char *bin(void)
{
    const char *b = getenv("SPRUCE_BIN");
    if (!b || access(b, X_OK))
        cr_skip_test("SPRUCE_BIN is not set to a built spruce program");
    return b;
}

static char tmpdir[4096];

static void setup(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/spruce-test-bench-bad-XXXXXX", base && *base ? base : "/tmp");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void teardown(void)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

/* ---- a sparsity that rounds to every weight ----------------------------------- */

/* For each method, a sparsity below 1 whose rounded count prunes every weight
 * (0.9999999 on a (32, 256) layer: the 8192 of magnitude's whole layer, 256 of
 * Wanda's row, 4096 of SparseGPT's 128-column block) is refused, naming the
 * method, and the weights are untouched; 0.99 still prunes and keeps some. */
Test(prune_rounding, a_sparsity_that_rounds_to_every_weight_is_refused)
{
    const int rows = 32, cols = 256, tokens = 512;
    float *X = make_acts(tokens, cols, 3), *W0 = make_weights(rows, cols, 4),
          *W = malloc((size_t)rows * cols * sizeof *W);
    spruce_hessian *h = spruce_hessian_alloc(cols);
    spruce_method m;
    cr_assert_eq(spruce_hessian_add(h, X, tokens), 0);
    for (m = SPRUCE_METHOD_SPARSEGPT; m <= SPRUCE_METHOD_MAGNITUDE; m++) {
        spruce_prune_opts o;
        spruce_prune_result r;
        size_t i, kept = 0;
        spruce_prune_opts_init(&o);
        o.method = m;
        o.sparsity = 0.9999999f;
        memcpy(W, W0, (size_t)rows * cols * sizeof *W);
        cr_assert_eq(spruce_prune_layer(W, rows, cols, h, &o, NULL, &r), SPRUCE_EINVAL, "%s: %s",
                     spruce_method_name(m), spruce_errdetail());
        cr_assert(strstr(spruce_errdetail(), "rounds to every weight"), "%s", spruce_errdetail());
        cr_assert(strstr(spruce_errdetail(), spruce_method_name(m)), "%s", spruce_errdetail());
        cr_assert_eq(memcmp(W, W0, (size_t)rows * cols * sizeof *W), 0, "%s: W was changed",
                     spruce_method_name(m));
        o.sparsity = 0.99f;
        cr_assert_eq(spruce_prune_layer(W, rows, cols, h, &o, NULL, &r), 0, "%s", spruce_errdetail());
        for (i = 0; i < (size_t)rows * cols; i++)
            kept += W[i] != 0.0f;
        cr_assert_gt(kept, 0, "%s at 0.99 kept nothing", spruce_method_name(m));
    }
    spruce_hessian_free(h);
    free(X);
    free(W0);
    free(W);
}

Test(prune_rounding, bench_prune_refuses_it_too)
{
    char cmd[512], *out;
    int code;
    snprintf(cmd, sizeof cmd, "%s bench prune --rows 32 --cols 256 --tokens 256 --sparsity 0.999999 2>&1",
             bin());
    out = run(cmd, &code);
    cr_assert_eq(code, 2, "%s", out);
    cr_assert(strstr(out, "rounds to every weight"), "%s", out);
    /* SparseGPT runs first: its 128-column blocks of 32 rows */
    cr_assert(strstr(out, "all 4096 of the 4096 weights"), "%s", out);
    free(out);
}

/* ---- dead inputs ---------------------------------------------------------------- */

Test(dead_columns, all_zero_inputs_are_counted_and_warned_about, .init = setup, .fini = teardown)
{
    const int rows = 16, cols = 64, tokens = 128;
    float *W = make_weights(rows, cols, 5), *X = calloc((size_t)tokens * cols, sizeof *X);
    char w[4200], x[4200], cmd[9000], *out;
    spruce_hessian *h = spruce_hessian_alloc(cols);
    spruce_prune_opts o;
    spruce_prune_result r;
    int code, j;
    /* columns 0..9 are never active, the others are */
    for (j = 0; j < tokens * cols; j++)
        X[j] = j % cols < 10 ? 0.0f : (float)((j * 7919) % 13) - 6.0f;
    cr_assert_eq(spruce_hessian_add(h, X, tokens), 0);
    spruce_prune_opts_init(&o);
    cr_assert_eq(spruce_prune_layer(W, rows, cols, h, &o, NULL, &r), 0, "%s", spruce_errdetail());
    cr_assert_eq(r.dead_columns, 10);
    spruce_hessian_free(h);
    /* all-zero inputs from the command line: every column is dead */
    memset(X, 0, (size_t)tokens * cols * sizeof *X);
    snprintf(w, sizeof w, "%s/w.npy", tmpdir);
    snprintf(x, sizeof x, "%s/x.npy", tmpdir);
    cr_assert_eq(spruce__npy_write(w, W, rows, cols), 0);
    cr_assert_eq(spruce__npy_write(x, X, tokens, cols), 0);
    snprintf(cmd, sizeof cmd, "%s bench prune --weights %s --inputs %s --method sparsegpt 2>&1", bin(), w,
             x);
    out = run(cmd, &code);
    cr_assert_eq(code, 0, "%s", out);
    cr_assert(strstr(out, "all 64 of the 64 input columns are dead"), "%s", out);
    cr_assert(strstr(out, "every weight is pruned"), "%s", out);
    free(out);
    free(W);
    free(X);
}

/* ---- spruce bench ----------------------------------------------------------------- */

Test(bench_options, format_nm_without_a_pattern_is_refused)
{
    char cmd[512], *out;
    int code;
    snprintf(cmd, sizeof cmd, "%s bench --format nm --shape 64x64 --reps 1 2>&1", bin());
    out = run(cmd, &code);
    cr_assert_eq(code, 2, "%s", out);
    cr_assert(strstr(out, "--format nm needs --pattern"), "%s", out);
    free(out);
    /* with a pattern it measures */
    snprintf(cmd, sizeof cmd, "%s bench --format nm --pattern 2:4 --shape 64x64 --reps 1 2>&1", bin());
    out = run(cmd, &code);
    cr_assert_eq(code, 0, "%s", out);
    cr_assert(strstr(out, "64x64"), "%s", out);
    free(out);
}

/* An --svg path in a missing directory fails before the sweep: nothing of the
 * sweep is printed.  A good path gets the chart and no temporary is left. */
Test(bench_options, an_svg_path_that_cannot_be_written_fails_first, .init = setup, .fini = teardown)
{
    char cmd[9000], *out, svg[4200];
    struct stat st;
    int code;
    snprintf(cmd, sizeof cmd, "%s bench --sweep --shape 64x64 --reps 1 --svg %s/no/such/dir/c.svg 2>&1",
             bin(), tmpdir);
    out = run(cmd, &code);
    cr_assert_eq(code, 1, "%s", out);
    cr_assert(strstr(out, "no/such/dir/c.svg"), "%s", out);
    cr_assert_null(strstr(out, "64x64"), "the sweep ran before the refusal: %s", out);
    free(out);
    snprintf(svg, sizeof svg, "%s/c.svg", tmpdir);
    snprintf(cmd, sizeof cmd, "%s bench --sweep --shape 64x64 --reps 1 --svg %s 2>&1; ls %s", bin(), svg,
             tmpdir);
    out = run(cmd, &code);
    cr_assert_eq(code, 0, "%s", out);
    cr_assert_eq(stat(svg, &st), 0, "%s", out);
    cr_assert_gt(st.st_size, 100);
    cr_assert_null(strstr(out, ".tmp-"), "a temporary was left: %s", out);
    free(out);
}

/* A checkpoint whose embedding has three all-zero columns: the inputs of
 * block 0's q, k and v projections are dead there, and `spruce prune` says so
 * for each of those layers. */
Test(dead_columns, prune_reports_the_dead_inputs_of_each_layer, .init = setup, .fini = teardown,
     .timeout = 300)
{
    spruce_synth_config cfg;
    spruce_ckpt *ck;
    spruce_ckpt_writer *w;
    const spruce_tensor *t;
    char in[4200], z[4200], out[4200], calib[4200], cmd[20000], *o;
    uint32_t ids[64];
    float *e;
    int64_t v, j;
    int code;
    spruce_synth_defaults(&cfg);
    cfg.hidden = 32;
    cfg.intermediate = 48;
    cfg.layers = 1;
    cfg.heads = 4;
    cfg.kv_heads = 2;
    cfg.vocab = 64;
    cfg.max_position = 64;
    cfg.dtype = SPRUCE_DTYPE_F32;
    snprintf(in, sizeof in, "%s/in", tmpdir);
    snprintf(z, sizeof z, "%s/z", tmpdir);
    snprintf(out, sizeof out, "%s/out", tmpdir);
    snprintf(calib, sizeof calib, "%s/calib.u16", tmpdir);
    cr_assert_eq(spruce_synth_write(in, &cfg, 0), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_open(in, &ck), 0, "%s", spruce_errdetail());
    t = spruce_ckpt_find(ck, "model.embed_tokens.weight");
    cr_assert_not_null(t);
    e = malloc((size_t)spruce_tensor_numel(t) * sizeof *e);
    cr_assert_eq(spruce_tensor_read_f32(t, e), 0);
    for (v = 0; v < t->shape[0]; v++)
        for (j = 0; j < 3; j++)
            e[v * t->shape[1] + j] = 0.0f;
    cr_assert_eq(spruce_ckpt_writer_begin(ck, z, 0, &w), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_set_f32(w, t->name, e), 0);
    cr_assert_eq(spruce_ckpt_writer_commit(w), 0, "%s", spruce_errdetail());
    spruce_ckpt_close(ck);
    free(e);
    spruce_tokens_random(ids, 64, 64, 1);
    cr_assert_eq(spruce_tokens_save(calib, ids, 64), 0);
    snprintf(cmd, sizeof cmd, "%s prune %s -o %s --calib %s --sparsity 0.5 --nsamples 2 --seqlen 32 2>&1",
             bin(), z, out, calib);
    o = run(cmd, &code);
    cr_assert_eq(code, 0, "%s", o);
    cr_assert(strstr(o, "model.layers.0.self_attn.q_proj.weight: 3 of its 32 inputs are dead"), "%s", o);
    cr_assert(strstr(o, "model.layers.0.self_attn.v_proj.weight: 3 of its 32 inputs are dead"), "%s", o);
    cr_assert_null(strstr(o, "o_proj.weight: 3 of"), "%s", o);
    free(o);
}
