/* test_cancel.c: the cancel flag (spruce_set_cancel_flag) stops the long
 * library steps at their next check point: SparseGPT between column blocks,
 * the checkpoint writer between pieces of a shard copy, synth between pieces
 * of a tensor.  Each returns SPRUCE_ECANCELED with a message and leaves no
 * temporary file or directory, and the final path is not created.  The flag
 * is set before the call, so where it stops is deterministic: at the first
 * check point, before any column block, copy piece or tensor piece is done.
 * (test_kill sends the signals to the program at moments inside the steps.) */
#define _GNU_SOURCE
#include "ckpt_testutil.h"

#include "spruce_prune.h"

static volatile sig_atomic_t flag;

static void reset(void)
{
    flag = 0;
    spruce_set_cancel_flag(&flag);
}

static void unset(void) { spruce_set_cancel_flag(NULL); }

TestSuite(cancel, .init = reset, .fini = unset);

/* A (rows, cols) layer and the Hessian of random inputs. */
static spruce_hessian *layer(float *W, int rows, int cols)
{
    uint64_t s = 11;
    int tokens = 4 * cols, k;
    float *X = malloc((size_t)tokens * cols * sizeof *X);
    spruce_hessian *h = spruce_hessian_alloc(cols);
    cr_assert(X && h);
    for (k = 0; k < tokens * cols; k++)
        X[k] = (float)((double)lcg(&s) / 9007199254740992.0 - 0.5);
    for (k = 0; k < rows * cols; k++)
        W[k] = (float)((double)lcg(&s) / 9007199254740992.0 - 0.5);
    cr_assert_eq(spruce_hessian_add(h, X, tokens), 0, "%s", spruce_errdetail());
    free(X);
    return h;
}

Test(cancel, sparsegpt_stops_before_a_column_block)
{
    enum { R = 16, C = 256 };
    float *W = malloc(R * C * sizeof *W), *W0 = malloc(R * C * sizeof *W0);
    spruce_hessian *h = layer(W, R, C);
    spruce_prune_opts o;
    spruce_prune_result res;
    int k;
    memcpy(W0, W, R * C * sizeof *W);
    spruce_prune_opts_init(&o);
    o.sparsity = 0.5f;
    o.threads = 1;
    flag = SIGINT;
    cr_assert_eq(spruce_prune_layer(W, R, C, h, &o, NULL, &res), SPRUCE_ECANCELED, "%s",
                 spruce_errdetail());
    cr_assert_not_null(strstr(spruce_errdetail(), "stopped at column 0 of 256"), "%s",
                       spruce_errdetail());
    for (k = 0; k < R * C; k++) /* no block was swept (no input column is dead here) */
        cr_assert_eq(fbits(W[k]), fbits(W0[k]), "weight %d changed", k);
    /* the flag cleared, the same call prunes */
    flag = 0;
    cr_assert_eq(spruce_prune_layer(W, R, C, h, &o, NULL, &res), 0, "%s", spruce_errdetail());
    cr_assert_float_eq(res.sparsity, 0.5, 1e-9);
    spruce_hessian_free(h);
    free(W);
    free(W0);
}

Test(cancel, checkpoint_writer_stops_in_the_shard_copy)
{
    char *d = mktmp(), *in = path2(d, "in"), *out = path2(d, "out");
    spruce_synth_config c = small_cfg(SPRUCE_DTYPE_F32);
    spruce_ckpt *ck = NULL;
    spruce_ckpt_writer *w = NULL;
    cr_assert_eq(spruce_synth_write(in, &c, 0), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_open(in, &ck), 0, "%s", spruce_errdetail());
    flag = SIGTERM;
    cr_assert_eq(spruce_ckpt_writer_begin(ck, out, 0, &w), SPRUCE_ECANCELED, "%s",
                 spruce_errdetail());
    cr_assert_null(w);
    cr_assert_not_null(strstr(spruce_errdetail(), "stopped while copying"), "%s",
                       spruce_errdetail());
    cr_assert(!exists(out));
    cr_assert_eq(count_entries_with(d, ".tmp-"), 0, "a temporary is left");
    flag = 0;
    cr_assert_eq(spruce_ckpt_writer_begin(ck, out, 0, &w), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_commit(w), 0, "%s", spruce_errdetail());
    cr_assert(exists(out));
    spruce_ckpt_close(ck);
    rmrf(d);
    free(d);
    free(in);
    free(out);
}

Test(cancel, synth_stops_in_its_write)
{
    char *d = mktmp(), *out = path2(d, "out");
    spruce_synth_config c = small_cfg(SPRUCE_DTYPE_BF16);
    flag = SIGHUP;
    cr_assert_eq(spruce_synth_write(out, &c, 0), SPRUCE_ECANCELED, "%s", spruce_errdetail());
    cr_assert_not_null(strstr(spruce_errdetail(), "stopped while writing"), "%s",
                       spruce_errdetail());
    cr_assert(!exists(out));
    cr_assert_eq(count_entries_with(d, ".tmp-"), 0, "a temporary is left");
    flag = 0;
    cr_assert_eq(spruce_synth_write(out, &c, 0), 0, "%s", spruce_errdetail());
    rmrf(d);
    free(d);
    free(out);
}
