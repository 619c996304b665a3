/* test_mpi.c: `mpirun -np 2 spruce prune|eval` (spruce configured --with-mpi)
 * on the stories260k fixture, loopback only: two runs give the same checkpoint
 * bit for bit; against one process the same perplexity within 0.5% and the
 * same masks on at least 99.9% of the weights; eval splits its windows and
 * prints the perplexity of all of them; a bad input on one rank stops both
 * ranks with a non-zero status and the message, leaving no output; per-layer
 * plans (--sparsity-profile owl, --layer-sparsity) prune as in one process;
 * so does a mixture of experts. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "config.h"
#include "model_testutil.h"
#include "shell_testutil.h"
#include "spruce_masks.h"
#include "spruce_tokens.h"

/* Loopback only; shared memory without single-copy (containers forbid it). */
#define MPI_ARGS                                                                         \
    "--allow-run-as-root --oversubscribe --mca btl self,vader,tcp "                      \
    "--mca btl_tcp_if_include lo --mca oob_tcp_if_include lo "                           \
    "--mca btl_vader_single_copy_mechanism none"
/* The prune every test runs: one thread per rank, so the bits do not depend
 * on the machine's core count. */
#define PRUNE_ARGS "--seqlen 256 --nsamples 32 --sparsity 0.5 --threads 1"

static const char *mpirun_path(void)
{
#ifndef SPRUCE_HAVE_MPI
    cr_skip_test("spruce is built without MPI (./configure --with-mpi builds these tests)");
    return NULL;
#else
    const char *m = getenv("SPRUCE_MPIRUN");
    if (!m || !*m || access(m, X_OK) != 0)
        cr_skip_test("no mpirun (SPRUCE_MPIRUN is empty: install openmpi-bin and reconfigure)");
    return m;
#endif
}

static const char *spruce_path(void)
{
    const char *b = getenv("SPRUCE_BIN");
    if (!b || !*b || access(b, X_OK) != 0)
        cr_skip_test("SPRUCE_BIN not set or not executable (run through 'make check')");
    return b;
}

#define NEED_MPI(mr, bin, dir)                                                           \
    const char *mr = mpirun_path();                                                      \
    const char *bin = spruce_path();                                                     \
    if (!mr || !bin)                                                                     \
        return;                                                                          \
    NEED_FIXTURE(dir);

/* `spruce prune` of the fixture with the options of every test and extra to
 * out and out.h5, with R ranks (0: no mpirun); returns its exit status. */
static int prune_status(const char *mr, const char *bin, const char *dir, int ranks,
                        const char *extra, const char *out, const char *log)
{
    if (ranks)
        return run_status("timeout 600 '%s' " MPI_ARGS " -np %d '%s' prune '%s' "
                          "--calib '%s/calib.u16' " PRUNE_ARGS " %s -o '%s' --masks '%s.h5' "
                          ">'%s' 2>&1", mr, ranks, bin, dir, dir, extra, out, out, log);
    return run_status("'%s' prune '%s' --calib '%s/calib.u16' " PRUNE_ARGS " %s -o '%s' "
                      "--masks '%s.h5' >'%s' 2>&1", bin, dir, dir, extra, out, out, log);
}

static void prune(const char *mr, const char *bin, const char *dir, int ranks,
                  const char *extra, const char *out, const char *log)
{
    int st = prune_status(mr, bin, dir, ranks, extra, out, log);
    cr_assert_eq(st, 0, "prune %s with %d ranks exited %d (see %s)", extra, ranks, st, log);
}

/* Two prunes of the fixture with the options extra, with ranks_a and ranks_b
 * ranks (0: no mpirun), to a = tmp/a and b = tmp/b (1200 bytes each) and
 * their .h5 masks. */
static void prune_two(const char *mr, const char *bin, const char *dir, const char *tmp,
                      const char *extra, int ranks_a, char *a, int ranks_b, char *b)
{
    char log[1200];
    snprintf(a, 1200, "%s/a", tmp);
    snprintf(b, 1200, "%s/b", tmp);
    snprintf(log, sizeof log, "%s/log", tmp);
    prune(mr, bin, dir, ranks_a, extra, a, log);
    prune(mr, bin, dir, ranks_b, extra, b, log);
}

/* The perplexity `spruce eval` prints last for model on the fixture's
 * eval.u16 (windows of 256), with R ranks (0: no mpirun). */
static double eval_ppl(const char *mr, const char *bin, const char *dir, int ranks,
                       const char *model, const char *tmp)
{
    char log[1200], line[256] = "";
    double ppl = NAN;
    FILE *f;
    int st;
    snprintf(log, sizeof log, "%s/eval.log", tmp);
    if (ranks)
        st = run_status("timeout 600 '%s' " MPI_ARGS " -np %d '%s' eval '%s' "
                        "--data '%s/eval.u16' --seqlen 256 --threads 1 >'%s' 2>/dev/null", mr,
                        ranks, bin, model, dir, log);
    else
        st = run_status("'%s' eval '%s' --data '%s/eval.u16' --seqlen 256 --threads 1 >'%s' "
                        "2>/dev/null", bin, model, dir, log);
    cr_assert_eq(st, 0, "eval of %s with %d ranks exited %d", model, ranks, st);
    cr_assert_not_null(f = fopen(log, "r"));
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "perplexity %lf", &ppl) == 1)
            break;
    fclose(f);
    cr_assert(isfinite(ppl), "eval of %s with %d ranks printed no perplexity", model, ranks);
    return ppl;
}

/* Kept weights on which the masks files a and b agree, over all masks; every
 * mask of a must be in b with its shape. */
static double mask_agreement(const char *a, const char *b, int64_t *total)
{
    spruce_maskreader *ra, *rb;
    int64_t same = 0, n = 0, i;
    int k;
    cr_assert_eq(spruce_maskreader_open(a, &ra), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_maskreader_open(b, &rb), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_maskreader_count(ra), spruce_maskreader_count(rb));
    for (k = 0; k < spruce_maskreader_count(ra); k++) {
        const char *name = spruce_maskreader_name_at(ra, k);
        spruce_mask_meta ma, mb;
        uint8_t *ka, *kb;
        cr_assert_eq(spruce_maskreader_meta(ra, name, &ma), 0);
        cr_assert_eq(spruce_maskreader_meta(rb, name, &mb), 0, "%s not in %s", name, b);
        cr_assert(ma.rows == mb.rows && ma.cols == mb.cols, "%s: shapes differ", name);
        ka = malloc((size_t)(ma.rows * ma.cols));
        kb = malloc((size_t)(ma.rows * ma.cols));
        cr_assert(ka && kb);
        cr_assert_eq(spruce_maskreader_read(ra, name, ka, NULL), 0);
        cr_assert_eq(spruce_maskreader_read(rb, name, kb, NULL), 0);
        for (i = 0; i < ma.rows * ma.cols; i++)
            same += ka[i] == kb[i];
        n += ma.rows * ma.cols;
        free(ka);
        free(kb);
    }
    spruce_maskreader_close(ra);
    spruce_maskreader_close(rb);
    *total = n;
    return n ? (double)same / (double)n : 0;
}

/* Entries of dir whose name starts with prefix (outputs and temporaries). */
static int count_named(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    cr_assert_not_null(d);
    while ((e = readdir(d)))
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

static int rank_status(const char *tmp, int rank)
{
    char path[1200];
    int st = -1;
    FILE *f;
    snprintf(path, sizeof path, "%s/status.%d", tmp, rank);
    cr_assert_not_null(f = fopen(path, "r"), "rank %d recorded no exit status", rank);
    cr_assert_eq(fscanf(f, "%d", &st), 1);
    fclose(f);
    return st;
}

/* The combined output of the last command contains needle. */
static void log_has(const char *tmp, const char *needle)
{
    char path[1200], buf[16384];
    size_t n;
    FILE *f;
    snprintf(path, sizeof path, "%s/log", tmp);
    cr_assert_not_null(f = fopen(path, "r"));
    n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    cr_assert(strstr(buf, needle), "no '%s' in the output:\n%s", needle, buf);
}

/* `mpirun -np 1 spruce prune MODEL0 ... : -np 1 spruce prune MODEL1 ...`,
 * rank 0 and rank 1 differing only in their model and calibration file, with
 * rank 1's input bad: each rank exits non-zero by itself (its status goes to
 * tmp/status.RANK), the output names rank 1 and says `what`, and neither an
 * output nor a temporary is left in tmp. */
static void expect_both_stop(const char *mr, const char *bin, const char *model0,
                             const char *calib0, const char *model1, const char *calib1,
                             const char *tmp, const char *what)
{
    const char *rec = "sh -c '\"$0\" \"$@\"; s=$?; echo $s >%s/status.$OMPI_COMM_WORLD_RANK; "
                      "exit $s'";
    char r[1200];
    snprintf(r, sizeof r, rec, tmp);
    /* mpirun would kill the other rank once one exits non-zero: let each end
     * by itself, so that its own exit status is seen (mpirun then exits 0) */
    run_status("timeout 600 '%s' " MPI_ARGS " --mca orte_abort_on_non_zero_status 0 "
               "-np 1 %s '%s' prune '%s' --calib '%s' " PRUNE_ARGS " -o '%s/out' "
               "--masks '%s/out.h5' : "
               "-np 1 %s '%s' prune '%s' --calib '%s' " PRUNE_ARGS " -o '%s/out' "
               "--masks '%s/out.h5' >'%s/log' 2>&1",
               mr, r, bin, model0, calib0, tmp, tmp, r, bin, model1, calib1, tmp, tmp, tmp);
    cr_assert_neq(rank_status(tmp, 0), 0, "rank 0 exited 0 although rank 1 failed");
    cr_assert_neq(rank_status(tmp, 1), 0, "rank 1 exited 0 on its bad input");
    log_has(tmp, "rank 1 of 2");
    log_has(tmp, what);
    cr_assert_eq(count_named(tmp, "out"), 0, "an output or a temporary is left in %s", tmp);
}

Test(mpi, two_ranks_give_the_same_checkpoint_bit_for_bit)
{
    NEED_MPI(mr, bin, dir);
    char *tmp = tmp_dir(), a[1200], b[1200];
    int64_t n;
    prune_two(mr, bin, dir, tmp, "", 2, a, 2, b);
    cr_assert_eq(run_status("cmp -s '%s/model.safetensors' '%s/model.safetensors'", a, b), 0,
                 "two runs with 2 ranks wrote different weights");
    cr_assert_eq(run_status("cmp -s '%s/config.json' '%s/config.json'", a, b), 0);
    strcat(a, ".h5");
    strcat(b, ".h5");
    cr_assert_eq(mask_agreement(a, b, &n), 1.0, "two runs with 2 ranks wrote different masks");
    cr_assert_eq(n, 226560, "the masks cover %lld weights, not the 35 layers' 226560",
                 (long long)n);
    rm_tree(tmp);
    free(tmp);
}

Test(mpi, two_ranks_match_one_process)
{
    NEED_MPI(mr, bin, dir);
    char *tmp = tmp_dir(), one[1200], two[1200];
    double p1, p2, agree;
    int64_t n;
    prune_two(mr, bin, dir, tmp, "", 0, one, 2, two);
    p1 = eval_ppl(mr, bin, dir, 0, one, tmp);
    p2 = eval_ppl(mr, bin, dir, 0, two, tmp);
    cr_assert(fabs(p2 - p1) <= 0.005 * p1, "perplexity %.4f with 2 ranks, %.4f with one", p2,
              p1);
    /* pruning changed the model: the comparison is not of two dense models */
    cr_assert(p1 > 17.78 * 1.05, "SparseGPT 50%% perplexity %.4f, dense 17.78", p1);
    strcat(one, ".h5");
    strcat(two, ".h5");
    agree = mask_agreement(one, two, &n);
    cr_assert_eq(n, 226560);
    cr_assert(agree >= 0.999, "the masks agree on %.5f of the weights, expected >= 0.999", agree);
    rm_tree(tmp);
    free(tmp);
}

Test(mpi, eval_splits_its_windows)
{
    NEED_MPI(mr, bin, dir);
    char *tmp = tmp_dir();
    double p1 = eval_ppl(mr, bin, dir, 0, dir, tmp), p2 = eval_ppl(mr, bin, dir, 2, dir, tmp);
    /* the same windows and log-likelihoods; only the order of the sum differs */
    cr_assert(fabs(p2 - p1) <= 1e-9 * p1, "perplexity %.10f with 2 ranks, %.10f with one", p2,
              p1);
    cr_assert(fabs(p1 - 17.78) < 0.005, "dense perplexity %.4f", p1);
    rm_tree(tmp);
    free(tmp);
}

Test(mpi, bad_calibration_on_one_rank_stops_both)
{
    NEED_MPI(mr, bin, dir);
    char *tmp = tmp_dir(), bad[1200], good[1200];
    uint16_t ids[256 * 32];
    FILE *f;
    int i;
    /* rank 1's calibration holds an id beyond the vocabulary (512) */
    for (i = 0; i < 256 * 32; i++)
        ids[i] = (uint16_t)(i % 500);
    ids[300] = 60000;
    snprintf(bad, sizeof bad, "%s/bad.u16", tmp);
    snprintf(good, sizeof good, "%s/calib.u16", dir);
    cr_assert_not_null(f = fopen(bad, "wb"));
    cr_assert_eq(fwrite(ids, sizeof ids, 1, f), 1);
    fclose(f);
    expect_both_stop(mr, bin, dir, good, dir, bad, tmp, "bad.u16");
    rm_tree(tmp);
    free(tmp);
}

Test(mpi, failure_inside_the_pipeline_on_one_rank_stops_both)
{
    NEED_MPI(mr, bin, dir);
    char *tmp = tmp_dir(), bad[1200], calib[1200];
    /* rank 1's copy of the model overflows in block 2: its calibration forward
     * fails after rank 0 has begun writing blocks 0 and 1 */
    snprintf(bad, sizeof bad, "%s/model-bad", tmp);
    snprintf(calib, sizeof calib, "%s/calib.u16", dir);
    poison(dir, bad, "model.layers.2.mlp.up_proj.weight", 3, 1e38f);
    expect_both_stop(mr, bin, dir, calib, bad, calib, tmp, "layer 2 mlp.up_proj");
    rm_tree(tmp);
    free(tmp);
}

/* Weights the masks file h5 prunes (mask 0), over all its masks. */
static int64_t masks_pruned(const char *h5)
{
    spruce_maskreader *rd;
    int64_t pruned = 0, i;
    int k;
    cr_assert_eq(spruce_maskreader_open(h5, &rd), 0, "%s", spruce_errdetail());
    for (k = 0; k < spruce_maskreader_count(rd); k++) {
        const char *name = spruce_maskreader_name_at(rd, k);
        spruce_mask_meta mm;
        uint8_t *keep;
        cr_assert_eq(spruce_maskreader_meta(rd, name, &mm), 0);
        cr_assert_not_null(keep = malloc((size_t)(mm.rows * mm.cols)));
        cr_assert_eq(spruce_maskreader_read(rd, name, keep, NULL), 0);
        for (i = 0; i < mm.rows * mm.cols; i++)
            pruned += !keep[i];
        free(keep);
    }
    spruce_maskreader_close(rd);
    return pruned;
}

/* A per-layer plan with 2 ranks against one process: extra's plan prunes
 * the same number of weights (OWL: within one weight per layer, its block
 * sparsities come from norms summed in another order), on masks of the same
 * tensors that agree on at least 99.9% of their weights. */
static void plan_matches(const char *extra, int64_t slack)
{
    NEED_MPI(mr, bin, dir);
    char *tmp = tmp_dir(), one[1200], two[1200];
    int64_t n, p1, p2;
    double agree;
    prune_two(mr, bin, dir, tmp, extra, 0, one, 2, two);
    strcat(one, ".h5");
    strcat(two, ".h5");
    p1 = masks_pruned(one);
    p2 = masks_pruned(two);
    cr_assert(llabs(p1 - p2) <= slack, "%s: %lld weights pruned with 2 ranks, %lld with one",
              extra, (long long)p2, (long long)p1);
    agree = mask_agreement(one, two, &n);
    cr_assert(n > 0 && p1 > 0, "%s: nothing pruned", extra);
    cr_assert(agree >= 0.999, "%s: the masks agree on %.5f of the weights, expected >= 0.999",
              extra, agree);
    rm_tree(tmp);
    free(tmp);
}

Test(mpi, owl_profile_with_two_ranks_matches_one_process)
{
    plan_matches("--sparsity-profile owl", 35);
}

Test(mpi, layer_sparsity_file_with_two_ranks_matches_one_process)
{
    NEED_MPI(mr, bin, dir);
    char *tmp = tmp_dir(), rules[1200], extra[1400];
    FILE *f;
    (void)mr;
    (void)bin;
    (void)dir;
    snprintf(rules, sizeof rules, "%s/rules.json", tmp);
    cr_assert_not_null(f = fopen(rules, "w"));
    /* q/k keep more, gate/up 2:4, down loses more, o and block 1's down stay dense */
    fputs("{\"self_attn\\\\.o_proj\": \"dense\", \"layers\\\\.1\\\\.mlp\\\\.down\": \"dense\","
          " \"self_attn\\\\.(q|k)_proj\": 0.3, \"mlp\\\\.(gate|up)_proj\": \"2:4\","
          " \"down_proj\": 0.7}\n", f);
    fclose(f);
    snprintf(extra, sizeof extra, "--layer-sparsity '%s'", rules);
    plan_matches(extra, 0);
    rm_tree(tmp);
    free(tmp);
}

/* A mixture of experts under 2 ranks: the experts' Hessians are summed over
 * the ranks and every rank prunes every expert, so two runs give the same
 * checkpoint bit for bit and the masks (every expert's with the rest) agree
 * with one process's on at least 99.9% of the weights. */
Test(mpi, mixture_of_experts_with_two_ranks_matches_one_process)
{
    NEED_MPI(mr, bin, stories);
    char *tmp = tmp_dir(), dir[1200], calib[1200], out[3][1200];
    const char *root = getenv("SPRUCE_FIXTURES");
    uint32_t ids[16 * 32];
    int64_t n;
    double agree;
    int k;
    (void)stories;
    snprintf(dir, sizeof dir, "%s/families/qwen3-moe", root ? root : "");
    if (access(dir, R_OK) != 0) {
        rm_tree(tmp);
        free(tmp);
        cr_skip_test("families fixture qwen3-moe not found under SPRUCE_FIXTURES");
        return;
    }
    spruce_tokens_random(ids, 16 * 32, 100, 7);
    snprintf(calib, sizeof calib, "%s/calib.u16", tmp);
    cr_assert_eq(spruce_tokens_save(calib, ids, 16 * 32), 0, "%s", spruce_errdetail());
    for (k = 0; k < 3; k++) { /* one process, then two runs with 2 ranks */
        int st;
        snprintf(out[k], sizeof out[k], "%s/out%d", tmp, k);
        if (k == 0)
            st = run_status("'%s' prune '%s' --calib '%s' --seqlen 32 --nsamples 16 --sparsity "
                            "0.5 --threads 1 -o '%s' --masks '%s.h5' >'%s/log' 2>&1", bin, dir,
                            calib, out[k], out[k], tmp);
        else
            st = run_status("timeout 600 '%s' " MPI_ARGS " -np 2 '%s' prune '%s' --calib '%s' "
                            "--seqlen 32 --nsamples 16 --sparsity 0.5 --threads 1 -o '%s' "
                            "--masks '%s.h5' >'%s/log' 2>&1", mr, bin, dir, calib, out[k],
                            out[k], tmp);
        cr_assert_eq(st, 0, "prune %d exited %d (see %s/log)", k, st, tmp);
    }
    cr_assert_eq(run_status("cmp -s '%s/model.safetensors' '%s/model.safetensors'", out[1],
                            out[2]), 0, "two runs with 2 ranks wrote different weights");
    for (k = 0; k < 3; k++)
        strcat(out[k], ".h5");
    agree = mask_agreement(out[0], out[1], &n);
    cr_assert(n > 0 && agree >= 0.999, "the masks agree on %.5f of %lld weights, expected >= "
              "0.999", agree, (long long)n);
    cr_assert_eq(mask_agreement(out[1], out[2], &n), 1.0);
    rm_tree(tmp);
    free(tmp);
}
