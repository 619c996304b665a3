/* test_demo.c: `spruce demo --quick` end to end: what it writes is valid (the
 * pruned checkpoint opens and is 2:4 in every linear layer of the blocks, the
 * masks file agrees with the pruned zeros), what it prints has the figures, and
 * its usage errors, refusals and failure clean-up. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "decode_testutil.h"
#include "spruce_decode.h"
#include "spruce_masks.h"
#include "spruce_model.h"

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

#define NEED_BIN(bin)                                                                   \
    const char *bin = getenv("SPRUCE_BIN");                                             \
    if (!bin || !exists(bin)) {                                                         \
        cr_skip_test("SPRUCE_BIN does not name the built spruce program");              \
        return;                                                                         \
    }

static char *tmp_dir(void)
{
    static char buf[256];
    const char *t = getenv("TMPDIR");
    snprintf(buf, sizeof buf, "%s/spruce-test-demo-XXXXXX", t && *t ? t : "/tmp");
    cr_assert_not_null(mkdtemp(buf));
    return buf;
}

static void rm_rf(const char *path)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    cr_assert_eq(system(cmd), 0);
}

/* Run "bin args" with stdout to out and stderr to err; the exit status. */
static int run(const char *bin, const char *args, const char *out, const char *err)
{
    char cmd[4096];
    int st;
    snprintf(cmd, sizeof cmd, "'%s' %s >'%s' 2>'%s'", bin, args, out, err);
    st = system(cmd);
    cr_assert(WIFEXITED(st), "'%s' did not exit normally", cmd);
    return WEXITSTATUS(st);
}

/* The whole file as a string (caller frees). */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    long n;
    char *s;
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    s = malloc((size_t)n + 1);
    cr_assert_not_null(s);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

/* The number after key in text (NAN when key is absent). */
static double number_after(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    return p ? strtod(p + strlen(key), NULL) : NAN;
}

/* One demo run shared by the tests that look at its outputs. */
static char demo_tmp[512], demo_dir[600], demo_out[640], demo_err[640];
static int demo_status = -1;

static void run_demo_once(const char *bin)
{
    char args[1200];
    if (demo_status >= 0)
        return;
    snprintf(demo_tmp, sizeof demo_tmp, "%s", tmp_dir());
    snprintf(demo_dir, sizeof demo_dir, "%s/out", demo_tmp);
    snprintf(demo_out, sizeof demo_out, "%s.stdout", demo_dir);
    snprintf(demo_err, sizeof demo_err, "%s.stderr", demo_dir);
    snprintf(args, sizeof args, "demo --quick --threads 2 --out '%s'", demo_dir);
    demo_status = run(bin, args, demo_out, demo_err);
}

Test(demo, quick_run_writes_valid_outputs)
{
    NEED_BIN(bin);
    char path[1200];
    spruce_model *m = NULL, *d = NULL;
    spruce_maskreader *mr = NULL;
    const spruce_config *c;
    int l, p, nmasks = 0;
    run_demo_once(bin);
    cr_assert_eq(demo_status, 0, "spruce demo --quick failed; stderr in %s", demo_err);

    snprintf(path, sizeof path, "%s/model", demo_dir);
    cr_assert_eq(spruce_model_open(path, &d), 0, "dense model: %s", spruce_errdetail());
    snprintf(path, sizeof path, "%s/pruned", demo_dir);
    cr_assert_eq(spruce_model_open(path, &m), 0, "pruned model: %s", spruce_errdetail());
    snprintf(path, sizeof path, "%s/masks.h5", demo_dir);
    cr_assert_eq(spruce_maskreader_open(path, &mr), 0, "masks: %s", spruce_errdetail());
    c = spruce_model_config(m);
    cr_assert_eq(spruce_maskreader_count(mr), SPRUCE_NPROJ * c->num_hidden_layers);

    for (l = 0; l < c->num_hidden_layers; l++) {
        spruce_block *b = NULL, *bd = NULL;
        cr_assert_eq(spruce_model_get_block(m, l, &b), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_model_get_block(d, l, &bd), 0, "%s", spruce_errdetail());
        for (p = 0; p < SPRUCE_NPROJ; p++) {
            char name[128];
            spruce_mask_meta meta;
            int64_t n = (int64_t)b->rows[p] * b->cols[p], i, dense_zeros = 0;
            uint8_t *keep = malloc((size_t)n);
            const float *w = b->w[p];
            cr_assert_not_null(keep);
            spruce_proj_name(l, (spruce_proj)p, 0, name, sizeof name);
            cr_assert_eq(spruce_maskreader_read(mr, name, keep, &meta), 0, "%s: %s", name,
                         spruce_errdetail());
            cr_assert_eq(meta.rows, b->rows[p]);
            cr_assert_eq(meta.cols, b->cols[p]);
            cr_assert_str_eq(meta.pattern, "2:4");
            cr_assert(meta.has_loss && meta.loss >= 0, "%s: loss", name);
            cr_assert_eq(b->cols[p] % 4, 0);
            /* every aligned group of 4 in a row: exactly 2 kept, 2 zero weights */
            for (i = 0; i < n; i += 4) {
                int kept = keep[i] + keep[i + 1] + keep[i + 2] + keep[i + 3];
                int nz = (w[i] != 0) + (w[i + 1] != 0) + (w[i + 2] != 0) + (w[i + 3] != 0);
                cr_assert_eq(kept, 2, "%s: group at %lld keeps %d", name, (long long)i, kept);
                cr_assert_eq(nz, 2, "%s: group at %lld has %d non-zeros", name, (long long)i,
                             nz);
            }
            /* the mask is where the weights are non-zero */
            for (i = 0; i < n; i++) {
                cr_assert_eq(keep[i] != 0, w[i] != 0.0f, "%s: element %lld: mask %d, weight %g",
                             name, (long long)i, keep[i], w[i]);
                dense_zeros += bd->w[p][i] == 0.0f;
            }
            cr_assert_lt(dense_zeros, n / 100, "%s: the dense model should have few zeros",
                         name);
            free(keep);
            nmasks++;
        }
        spruce_model_put_block(m, b);
        spruce_model_put_block(d, bd);
    }
    cr_assert_eq(nmasks, SPRUCE_NPROJ * c->num_hidden_layers);
    spruce_maskreader_close(mr);
    spruce_model_free(m);
    spruce_model_free(d);
    rm_rf(demo_tmp);
}

Test(demo, quick_run_prints_figures)
{
    NEED_BIN(bin);
    char *out, *err;
    double dense, pruned, ratio, tps_d, tps_a, kl, top1;
    run_demo_once(bin);
    cr_assert_eq(demo_status, 0, "spruce demo --quick failed; stderr in %s", demo_err);
    out = slurp(demo_out);
    err = slurp(demo_err);
    dense = number_after(out, "dense perplexity");
    pruned = number_after(out, "pruned perplexity");
    ratio = number_after(out, "decode speed-up");
    tps_d = number_after(out, "dense OpenBLAS");
    tps_a = number_after(out, "spruce auto");
    /* a random model over a vocabulary of 512 */
    cr_assert(isfinite(dense) && dense > 50 && dense < 5000, "dense perplexity %g", dense);
    cr_assert(isfinite(pruned) && pruned > 50 && pruned < 5000, "pruned perplexity %g", pruned);
    cr_assert_neq(dense, pruned, "pruning should change the perplexity");
    cr_assert(isfinite(tps_d) && tps_d > 0 && isfinite(tps_a) && tps_a > 0);
    cr_assert(number_after(out, "spruce 2:4") > 0, "no 2:4 decode rate");
    /* sparse and dense decoding of the same weights give the same greedy ids */
    cr_assert_not_null(strstr(out, "dense and auto generated the same 16 greedy ids"), "%s", out);
    cr_assert_not_null(strstr(out, "dense and 2:4 generated the same 16 greedy ids"), "%s", out);
    {
        char pruned[700];
        snprintf(pruned, sizeof pruned, "%s/pruned", demo_dir);
        static const spruce_decode_mode modes[] = {SPRUCE_DECODE_DENSE, SPRUCE_DECODE_CSR,
                                                   SPRUCE_DECODE_BITMASK, SPRUCE_DECODE_NM};
        const uint32_t bos = 1;
        /* the demo's line "dense and auto generated the same greedy ids" holds
         * whatever auto picks per layer */
        check_greedy_margin(pruned, &bos, 1, 16, modes, 4);
    }
    /* pruning moved the predictions, but not all of them */
    kl = number_after(out, "mean KL(dense || pruned)");
    top1 = number_after(out, "token at");
    cr_assert(isfinite(kl) && kl > 0 && kl < 5, "KL %g", kl);
    cr_assert(isfinite(top1) && top1 > 1 && top1 < 100, "top-1 agreement %g%%", top1);
    cr_assert(isfinite(ratio) && fabs(ratio - tps_a / tps_d) <= 0.02 * ratio + 0.01,
              "speed-up %g against %g / %g", ratio, tps_a, tps_d);
    cr_assert_not_null(strstr(out, "not meaningful as language modelling"),
                       "the report should say random perplexities mean nothing");
    cr_assert_not_null(strstr(out, "sparsity 0.5000"), "2:4 is sparsity 0.5");
    cr_assert_not_null(strstr(out, demo_dir), "the report should name the output paths");
    cr_assert_not_null(strstr(out, "masks.h5"));
    cr_assert_not_null(strstr(out, "time per stage"));
    /* progress on stderr */
    cr_assert_not_null(strstr(err, "prune block"), "no progress on stderr");
    free(out);
    free(err);
    rm_rf(demo_tmp);
}

Test(demo, refuses_nonempty_dir_and_force_replaces)
{
    NEED_BIN(bin);
    char *d = tmp_dir(), args[1200], out[600], err[600], keepme[600], model[600];
    FILE *f;
    char *text;
    snprintf(keepme, sizeof keepme, "%s/precious.txt", d);
    snprintf(model, sizeof model, "%s/model", d);
    snprintf(out, sizeof out, "%s.stdout", d);
    snprintf(err, sizeof err, "%s.stderr", d);
    f = fopen(keepme, "w");
    cr_assert_not_null(f);
    fputs("user data\n", f);
    fclose(f);
    snprintf(args, sizeof args, "demo --quick --out '%s'", d);
    cr_assert_eq(run(bin, args, out, err), 1);
    text = slurp(err);
    cr_assert_not_null(strstr(text, "--force"), "the message should suggest --force: %s", text);
    free(text);
    cr_assert(!exists(model), "nothing may be written into a refused directory");

    snprintf(args, sizeof args, "demo --quick --force --out '%s'", d);
    cr_assert_eq(run(bin, args, out, err), 0);
    cr_assert(exists(model));
    cr_assert(exists(keepme), "--force must leave other files alone");
    rm_rf(d);
    remove(out);
    remove(err);
}

Test(demo, failure_removes_what_it_wrote)
{
    NEED_BIN(bin);
    char *d = tmp_dir(), args[1200], out[600], err[600], path[600];
    FILE *f;
    char *text;
    /* a regular file where the pruned checkpoint directory goes: pruning fails
     * after the model and tokens were written */
    snprintf(path, sizeof path, "%s/pruned", d);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fclose(f);
    snprintf(out, sizeof out, "%s.stdout", d);
    snprintf(err, sizeof err, "%s.stderr", d);
    snprintf(args, sizeof args, "demo --quick --force --out '%s'", d);
    cr_assert_eq(run(bin, args, out, err), 1);
    text = slurp(err);
    cr_assert_not_null(strstr(text, "pruned"), "the message should name the output: %s", text);
    free(text);
    cr_assert(exists(path), "a file the demo did not write must stay");
    snprintf(path, sizeof path, "%s/model", d);
    cr_assert(!exists(path), "the model of a failed run must be removed");
    snprintf(path, sizeof path, "%s/calib.u16", d);
    cr_assert(!exists(path), "the tokens of a failed run must be removed");
    snprintf(path, sizeof path, "%s/masks.h5", d);
    cr_assert(!exists(path));
    rm_rf(d);
    remove(out);
    remove(err);
}

Test(demo, help_and_usage_errors)
{
    NEED_BIN(bin);
    char *d = tmp_dir(), out[600], err[600], args[1200];
    char *text;
    snprintf(out, sizeof out, "%s/stdout", d);
    snprintf(err, sizeof err, "%s/stderr", d);
    cr_assert_eq(run(bin, "demo --help", out, err), 0);
    text = slurp(out);
    cr_assert_not_null(strstr(text, "usage: spruce demo"));
    cr_assert_not_null(strstr(text, "--quick"));
    free(text);
    cr_assert_eq(run(bin, "demo --no-such-option", out, err), 2);
    text = slurp(err);
    cr_assert_not_null(strstr(text, "--no-such-option"), "%s", text);
    free(text);
    cr_assert_eq(run(bin, "demo extra-argument", out, err), 2);
    cr_assert_eq(run(bin, "demo --threads 0", out, err), 2);
    snprintf(args, sizeof args, "demo --quick --out '%s/sub' --threads", d);
    cr_assert_eq(run(bin, args, out, err), 2);
    snprintf(args, sizeof args, "%s/sub", d);
    cr_assert(!exists(args), "a usage error must write nothing");
    rm_rf(d);
}
