/* test_prune.c: SparseGPT against an unblocked double-precision OBS, exact
 * sparsity, N:M validity, baselines, determinism, errors (.npy files and
 * `spruce bench prune` are in test_bench_prune.c). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "npy.h"
#include "prune_internal.h"
#include "prune_testutil.h"
#include "spruce_prune.h"
#include "spruce_sparse.h"


static float *copy_w(const layer *L)
{
    float *W = malloc((size_t)L->rows * L->cols * sizeof *W);
    memcpy(W, L->W0, (size_t)L->rows * L->cols * sizeof *W);
    return W;
}

/* SparseGPT (blocked, float) against the naive unblocked OBS (double). */
static void check_against_naive(int rows, int cols, int B, float s, int pn, int pm, uint64_t seed)
{
    layer L = make_layer(rows, cols, 4 * cols, seed);
    float *W = copy_w(&L);
    double *Wd = malloc((size_t)rows * cols * sizeof *Wd), *Hd = naive_hessian(L.X, L.tokens, cols),
           *Ud, maxw = 0.0, loss_ref, tol;
    uint8_t *mask = malloc((size_t)rows * cols), *mref = malloc((size_t)rows * cols), *dead = malloc(cols);
    spruce_prune_opts o;
    spruce_prune_result res;
    int i, diff = 0;

    for (i = 0; i < rows * cols; i++) {
        Wd[i] = L.W0[i];
        maxw = fmax(maxw, fabs(Wd[i]));
    }
    Ud = naive_hinv_upper(Hd, cols, 0.01, dead);
    cr_assert_not_null(Ud);
    loss_ref = naive_obs(Wd, rows, cols, Ud, dead, s, pn, pm, B, mref);

    spruce_prune_opts_init(&o);
    o.sparsity = s;
    o.prune_n = pn;
    o.prune_m = pm;
    o.blocksize = B;
    cr_assert_eq(spruce_prune_layer(W, rows, cols, L.h, &o, mask, &res), 0, "%s",
                 spruce_errdetail());
    for (i = 0; i < rows * cols; i++)
        diff += mask[i] != mref[i];
    cr_assert_eq(diff, 0, "B=%d: %d mask entries differ from the naive OBS", B, diff);
    /* error of float32 updates accumulates over the column sweep */
    tol = 2e-6 * cols * maxw;
    for (i = 0; i < rows * cols; i++)
        cr_assert(fabs(W[i] - Wd[i]) <= tol, "B=%d: W[%d,%d] = %.7g, naive OBS %.7g (tol %g)", B,
                  i / cols, i % cols, W[i], Wd[i], tol);
    cr_assert(fabs(res.loss - loss_ref) <= 1e-3 * loss_ref + 1e-12, "loss %g, naive %g", res.loss,
              loss_ref);
    free(W);
    free(Wd);
    free(Hd);
    free(Ud);
    free(mask);
    free(mref);
    free(dead);
    free_layer(&L);
}

Test(sparsegpt, matches_naive_obs_block16)
{
    check_against_naive(24, 64, 16, 0.5f, 0, 0, 11);
}

Test(sparsegpt, matches_naive_obs_partial_last_block)
{
    check_against_naive(20, 72, 32, 0.6f, 0, 0, 12); /* blocks 32, 32, 8 */
}

Test(sparsegpt, matches_naive_obs_block1_and_block_wider_than_layer)
{
    check_against_naive(9, 40, 1, 0.5f, 0, 0, 13);
    check_against_naive(9, 40, 128, 0.3f, 0, 0, 14);
}

Test(sparsegpt, matches_naive_obs_2_4)
{
    check_against_naive(16, 64, 16, 0.0f, 2, 4, 15);
}

Test(sparsegpt, matches_naive_obs_4_8_partial_block)
{
    check_against_naive(16, 72, 24, 0.0f, 4, 8, 16); /* blocks 24, 24, 24 */
    check_against_naive(8, 48, 32, 0.0f, 4, 8, 17);  /* blocks 32, 16 */
}

/* Every instruction set's tile kernel against the naive OBS. */
Test(sparsegpt, every_tile_kernel_matches_naive_obs)
{
    int isa, tried = 0;
    for (isa = 0; isa < SPRUCE_ISA_COUNT; isa++) {
        if (!spruce_sparse_isa_supported(isa))
            continue;
        cr_assert_eq(spruce_sparse_isa_set(isa), 0);
        check_against_naive(21, 48, 16, 0.5f, 0, 0, 18);
        check_against_naive(21, 48, 16, 0.0f, 2, 4, 19);
        tried++;
    }
    cr_assert_geq(tried, 1);
}

static void prune_method(layer *L, float *W, spruce_method m, float s, int pn, int pm, int B,
                         uint8_t *mask, spruce_prune_result *res)
{
    spruce_prune_opts o;
    spruce_prune_opts_init(&o);
    o.method = m;
    o.sparsity = s;
    o.prune_n = pn;
    o.prune_m = pm;
    o.blocksize = B;
    cr_assert_eq(spruce_prune_layer(W, L->rows, L->cols, L->h, &o, mask, res), 0, "%s: %s",
                 spruce_method_name(m), spruce_errdetail());
}

Test(sparsegpt, prunes_exactly_the_target_in_every_block)
{
    layer L = make_layer(33, 100, 200, 21); /* blocks 32, 32, 32, 4 */
    float *W = copy_w(&L), s = 0.37f;
    uint8_t *mask = malloc(33 * 100);
    spruce_prune_result res;
    int i1, r, c, total = 0;
    prune_method(&L, W, SPRUCE_METHOD_SPARSEGPT, s, 0, 0, 32, mask, &res);
    for (i1 = 0; i1 < 100; i1 += 32) {
        int bw = i1 + 32 < 100 ? 32 : 100 - i1, pruned = 0;
        for (r = 0; r < 33; r++)
            for (c = i1; c < i1 + bw; c++) {
                pruned += !mask[r * 100 + c];
                if (!mask[r * 100 + c])
                    cr_assert_eq(W[r * 100 + c], 0.0f);
                cr_assert(!signbit(W[r * 100 + c]) || W[r * 100 + c] != 0.0f, "no -0.0");
            }
        cr_assert_eq(pruned, (int)llround(s * 33 * bw), "block at %d: %d pruned", i1, pruned);
        total += pruned;
    }
    cr_assert_float_eq(res.sparsity, (double)total / 3300, 1e-3, "realised sparsity %g", res.sparsity);
    cr_assert_gt(res.loss, 0.0);
    free(W);
    free(mask);
    free_layer(&L);
}

Test(prune, every_group_of_every_row_is_n_m)
{
    int pats[][2] = {{2, 4}, {4, 8}, {1, 4}, {3, 16}}, p, m;
    for (p = 0; p < 4; p++)
        for (m = 0; m < 3; m++) {
            layer L = make_layer(10, 64, 80, 30 + p);
            float *W = copy_w(&L);
            uint8_t *mask = malloc(640);
            spruce_prune_result res;
            int pn = pats[p][0], pm = pats[p][1], r, g, k;
            prune_method(&L, W, (spruce_method)m, 0.0f, pn, pm, 32, mask, &res);
            for (r = 0; r < 10; r++)
                for (g = 0; g < 64; g += pm) {
                    int zeros = 0, pruned = 0;
                    for (k = 0; k < pm; k++) {
                        zeros += W[r * 64 + g + k] == 0.0f;
                        pruned += !mask[r * 64 + g + k];
                    }
                    cr_assert_eq(pruned, pn, "%s %d:%d row %d group %d: %d pruned",
                                 spruce_method_name((spruce_method)m), pn, pm, r, g, pruned);
                    cr_assert_geq(zeros, pn);
                }
            cr_assert_float_eq(res.sparsity, (double)pn / pm, 0.02);
            free(W);
            free(mask);
            free_layer(&L);
        }
}

Test(magnitude, prunes_the_smallest_exactly)
{
    layer L = make_layer(17, 30, 40, 40);
    float *W = copy_w(&L), maxpruned = 0.0f, minkept = INFINITY;
    uint8_t *mask = malloc(17 * 30);
    spruce_prune_result res;
    spruce_prune_opts o;
    int i, pruned = 0;
    /* magnitude needs no statistics */
    spruce_prune_opts_init(&o);
    o.method = SPRUCE_METHOD_MAGNITUDE;
    o.sparsity = 0.45f;
    cr_assert_eq(spruce_prune_layer(W, 17, 30, NULL, &o, mask, &res), 0);
    for (i = 0; i < 17 * 30; i++) {
        if (!mask[i]) {
            pruned++;
            cr_assert_eq(W[i], 0.0f);
            maxpruned = fmaxf(maxpruned, fabsf(L.W0[i]));
        } else {
            cr_assert_eq(W[i], L.W0[i], "kept weights are not changed");
            minkept = fminf(minkept, fabsf(L.W0[i]));
        }
    }
    cr_assert_eq(pruned, (int)llround((double)0.45f * 17 * 30));
    cr_assert_leq(maxpruned, minkept);
    cr_assert_eq(res.loss, 0.0);
    free(W);
    free(mask);
    free_layer(&L);
}

Test(wanda, prunes_floor_of_the_target_per_row_like_the_published_code)
{
    layer L = make_layer(5, 64, 80, 55);
    float targets[] = {0.2f, 0.7f, 0.5f, 0.99f}, *W;
    int want[] = {12, 44, 32, 63}, i, r, c;
    for (i = 0; i < 4; i++) {
        W = copy_w(&L);
        prune_method(&L, W, SPRUCE_METHOD_WANDA, targets[i], 0, 0, 128, NULL, NULL);
        for (r = 0; r < 5; r++) {
            int z = 0;
            for (c = 0; c < 64; c++)
                z += W[r * 64 + c] == 0.0f;
            cr_assert_eq(z, want[i], "sparsity %g row %d: %d pruned, want %d", (double)targets[i], r, z,
                         want[i]);
        }
        free(W);
    }
    free_layer(&L);
}

Test(magnitude, ties_go_to_the_lower_index)
{
    float W[12] = {1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2};
    uint8_t mask[12];
    spruce_prune_opts o;
    int i;
    spruce_prune_opts_init(&o);
    o.method = SPRUCE_METHOD_MAGNITUDE;
    o.sparsity = 0.25f; /* 3 of 12, all among six equal ones */
    cr_assert_eq(spruce_prune_layer(W, 3, 4, NULL, &o, mask, NULL), 0);
    for (i = 0; i < 12; i++)
        cr_assert_eq(mask[i], i >= 3, "mask[%d]", i);
}

Test(wanda, prunes_per_row_by_weight_times_input_norm)
{
    layer L = make_layer(12, 40, 100, 50);
    float *W = copy_w(&L);
    double norm[40];
    uint8_t *mask = malloc(12 * 40);
    spruce_prune_result res;
    int r, c, t;
    for (c = 0; c < 40; c++) {
        norm[c] = 0.0;
        for (t = 0; t < 100; t++)
            norm[c] += (double)L.X[t * 40 + c] * L.X[t * 40 + c];
        norm[c] = sqrt(norm[c]);
    }
    prune_method(&L, W, SPRUCE_METHOD_WANDA, 0.3f, 0, 0, 128, mask, &res);
    for (r = 0; r < 12; r++) {
        double maxp = 0.0, mink = INFINITY;
        int pruned = 0;
        for (c = 0; c < 40; c++) {
            double sc = fabs(L.W0[r * 40 + c]) * norm[c];
            if (!mask[r * 40 + c]) {
                pruned++;
                maxp = fmax(maxp, sc);
                cr_assert_eq(W[r * 40 + c], 0.0f);
            } else {
                mink = fmin(mink, sc);
                cr_assert_eq(W[r * 40 + c], L.W0[r * 40 + c]);
            }
        }
        cr_assert_eq(pruned, 12, "row %d: %d pruned, want floor(0.3 * 40)", r, pruned);
        cr_assert_leq(maxp, mink * (1 + 1e-5), "row %d: a pruned score beats a kept one", r);
    }
    free(W);
    free(mask);
    free_layer(&L);
}

Test(sparsegpt, dead_inputs_zero_their_column)
{
    int rows = 8, cols = 32, t, r;
    layer L = {rows, cols, 64, make_acts(64, cols, 60), make_weights(rows, cols, 61),
               spruce_hessian_alloc(cols)};
    float *W = copy_w(&L);
    spruce_prune_result res;
    for (t = 0; t < 64; t++)
        L.X[t * cols + 7] = L.X[t * cols + 20] = 0.0f;
    cr_assert_eq(spruce_hessian_add(L.h, L.X, 64), 0);
    prune_method(&L, W, SPRUCE_METHOD_SPARSEGPT, 0.25f, 0, 0, 16, NULL, &res);
    cr_assert_eq(res.dead_columns, 2);
    for (r = 0; r < rows; r++) {
        cr_assert_eq(W[r * cols + 7], 0.0f);
        cr_assert_eq(W[r * cols + 20], 0.0f);
    }
    for (t = 0; t < rows * cols; t++)
        cr_assert(isfinite(W[t]));
    free(W);
    free_layer(&L);
}

/* An accumulator made indefinite by hand (the real ones are positive semidefinite
 * up to rounding): the result reports the raised damping, or the failure. */
Test(sparsegpt, damping_retries_are_reported)
{
    int cols = 16, rows = 4, i, j;
    spruce_hessian *h = spruce_hessian_alloc(cols);
    float x[16], *W = make_weights(rows, cols, 400), *W2 = make_weights(rows, cols, 400);
    spruce_prune_opts o;
    spruce_prune_result res;
    for (i = 0; i < cols; i++)
        x[i] = 1.0f;
    cr_assert_eq(spruce_hessian_add(h, x, 1), 0);
    for (i = 0; i < cols; i++) /* diag 1, off-diagonal 0.5, one pair at -0.9: indefinite */
        for (j = i; j < cols; j++)
            h->H[i * cols + j] = i == j ? 1.0f : 0.5f;
    h->H[0 * cols + 1] = -0.9f;
    h->lower_stale = 1;
    spruce_prune_opts_init(&o);
    o.damp = 0.001f;
    cr_assert_eq(spruce_prune_layer(W, rows, cols, h, &o, NULL, &res), 0, "%s", spruce_errdetail());
    cr_assert_gt(res.damp_retries, 0);
    cr_assert_float_eq(res.damp_used, 0.001f * powf(10.0f, (float)res.damp_retries), 1e-6f);
    cr_assert_float_eq(res.sparsity, 0.5, 1e-9);
    o.max_damp_retries = 0;
    cr_assert_eq(spruce_prune_layer(W2, rows, cols, h, &o, NULL, &res), SPRUCE_ESINGULAR);
    cr_assert(strstr(spruce_errdetail(), "(16, 16)") != NULL, "detail: %s", spruce_errdetail());
    spruce_hessian_free(h);
    free(W);
    free(W2);
}

Test(sparsegpt, zero_sparsity_changes_nothing)
{
    layer L = make_layer(6, 32, 50, 70);
    float *W = copy_w(&L);
    spruce_prune_result res;
    prune_method(&L, W, SPRUCE_METHOD_SPARSEGPT, 0.0f, 0, 0, 16, NULL, &res);
    cr_assert_eq(memcmp(W, L.W0, 6 * 32 * sizeof *W), 0);
    cr_assert_eq(res.loss, 0.0);
    cr_assert_eq(res.sparsity, 0.0);
    free(W);
    free_layer(&L);
}

Test(prune, bit_identical_across_runs)
{
    layer L = make_layer(96, 160, 320, 80);
    spruce_method m;
    for (m = SPRUCE_METHOD_SPARSEGPT; m <= SPRUCE_METHOD_MAGNITUDE; m++) {
        int pat;
        for (pat = 0; pat < 2; pat++) {
            float *a = copy_w(&L), *b = copy_w(&L);
            uint8_t *ma = malloc(96 * 160), *mb = malloc(96 * 160);
            spruce_prune_result ra, rb;
            spruce_prune_opts o;
            spruce_prune_opts_init(&o);
            o.method = m;
            o.sparsity = 0.5f;
            o.prune_n = pat ? 2 : 0;
            o.prune_m = pat ? 4 : 0;
            o.blocksize = 32;
            o.threads = 2;
            cr_assert_eq(spruce_prune_layer(a, 96, 160, L.h, &o, ma, &ra), 0);
            cr_assert_eq(spruce_prune_layer(b, 96, 160, L.h, &o, mb, &rb), 0);
            cr_assert_eq(memcmp(a, b, 96 * 160 * sizeof *a), 0, "%s: weights differ",
                         spruce_method_name(m));
            cr_assert_eq(memcmp(ma, mb, 96 * 160), 0);
            cr_assert_eq(ra.loss, rb.loss);
            free(a);
            free(b);
            free(ma);
            free(mb);
        }
    }
    free_layer(&L);
}

Test(sparsegpt, prepared_inverse_gives_identical_results)
{
    layer L = make_layer(40, 96, 200, 90);
    float *a = copy_w(&L), *b = copy_w(&L);
    spruce_prune_opts o;
    spruce_prune_result ra, rb;
    spruce_hinv *hi = NULL;
    spruce_prune_opts_init(&o);
    o.prune_n = 2;
    o.prune_m = 4;
    o.blocksize = 32;
    cr_assert_eq(spruce_hinv_prepare(L.h, &o, &hi), 0);
    cr_assert_eq(spruce_prune_layer(a, 40, 96, L.h, &o, NULL, &ra), 0);
    cr_assert_eq(spruce_prune_layer_prepared(b, 40, 96, hi, &o, NULL, &rb), 0);
    cr_assert_eq(memcmp(a, b, 40 * 96 * sizeof *a), 0);
    cr_assert_eq(ra.loss, rb.loss);
    o.method = SPRUCE_METHOD_WANDA;
    cr_assert_eq(spruce_prune_layer_prepared(b, 40, 96, hi, &o, NULL, &rb), SPRUCE_EINVAL);
    o.method = SPRUCE_METHOD_SPARSEGPT;
    cr_assert_eq(spruce_prune_layer_prepared(b, 40, 48, hi, &o, NULL, &rb), SPRUCE_ESHAPE);
    spruce_hinv_free(hi);
    free(a);
    free(b);
    free_layer(&L);
}

static double rel_error_of(layer *L, spruce_method m, float s, int pn, int pm)
{
    float *W = copy_w(L);
    spruce_prune_result res;
    double e = -1.0;
    prune_method(L, W, m, s, pn, pm, 128, NULL, &res);
    cr_assert_eq(spruce_prune_rel_error(L->W0, W, L->rows, L->cols, L->h, &e), 0);
    free(W);
    return e;
}

Test(prune, sparsegpt_beats_wanda_beats_magnitude)
{
    layer L = make_layer(128, 256, 1024, 100);
    int pat;
    for (pat = 0; pat < 2; pat++) {
        double sg = rel_error_of(&L, SPRUCE_METHOD_SPARSEGPT, 0.5f, pat ? 2 : 0, pat ? 4 : 0);
        double wa = rel_error_of(&L, SPRUCE_METHOD_WANDA, 0.5f, pat ? 2 : 0, pat ? 4 : 0);
        double ma = rel_error_of(&L, SPRUCE_METHOD_MAGNITUDE, 0.5f, pat ? 2 : 0, pat ? 4 : 0);
        cr_assert_lt(sg, wa, "%s: sparsegpt %g, wanda %g", pat ? "2:4" : "50%", sg, wa);
        cr_assert_lt(wa, ma, "%s: wanda %g, magnitude %g", pat ? "2:4" : "50%", wa, ma);
        cr_assert_gt(sg, 0.0);
    }
    free_layer(&L);
}

/* Every invalid argument returns a clear error and leaves W untouched. */
static void expect_error(layer *L, spruce_prune_opts o, int rows, int cols, int want, const char *word)
{
    float *W = copy_w(L);
    int rc = spruce_prune_layer(W, rows, cols, L->h, &o, NULL, NULL);
    cr_assert_eq(rc, want, "expected %s, got %s (%s)", spruce_strerror(want), spruce_strerror(rc),
                 spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), word) != NULL, "detail '%s' lacks '%s'", spruce_errdetail(),
              word);
    cr_assert_eq(memcmp(W, L->W0, (size_t)L->rows * L->cols * sizeof *W), 0, "W was modified");
    free(W);
}

Test(errors, sparsity_outside_0_1)
{
    layer L = make_layer(4, 16, 20, 110);
    spruce_prune_opts o;
    float bad[] = {1.0f, -0.1f, 1.5f, NAN, INFINITY};
    int i;
    spruce_method m;
    for (m = SPRUCE_METHOD_SPARSEGPT; m <= SPRUCE_METHOD_MAGNITUDE; m++)
        for (i = 0; i < 5; i++) {
            spruce_prune_opts_init(&o);
            o.method = m;
            o.sparsity = bad[i];
            expect_error(&L, o, 4, 16, SPRUCE_EINVAL, "sparsity");
        }
    free_layer(&L);
}

Test(errors, bad_n_m_patterns)
{
    layer L = make_layer(4, 24, 20, 120);
    spruce_prune_opts o;
    spruce_method m;
    for (m = SPRUCE_METHOD_SPARSEGPT; m <= SPRUCE_METHOD_MAGNITUDE; m++) {
        spruce_prune_opts_init(&o);
        o.method = m;
        o.prune_n = 4, o.prune_m = 4; /* N >= M */
        expect_error(&L, o, 4, 24, SPRUCE_EINVAL, "0 < N < M");
        o.prune_n = 5, o.prune_m = 4;
        expect_error(&L, o, 4, 24, SPRUCE_EINVAL, "0 < N < M");
        o.prune_n = 0, o.prune_m = 4;
        expect_error(&L, o, 4, 24, SPRUCE_EINVAL, "0 < N < M");
        o.prune_n = -1, o.prune_m = 4;
        expect_error(&L, o, 4, 24, SPRUCE_EINVAL, "0 < N < M");
        o.prune_n = 2, o.prune_m = -4;
        expect_error(&L, o, 4, 24, SPRUCE_EINVAL, "N:M");
        o.prune_n = 2, o.prune_m = 0;
        expect_error(&L, o, 4, 24, SPRUCE_EINVAL, "N:M");
        o.prune_n = 2, o.prune_m = 16; /* 16 does not divide 24 columns */
        expect_error(&L, o, 4, 24, SPRUCE_EINVAL, "column count 24");
    }
    spruce_prune_opts_init(&o);
    o.prune_n = 4, o.prune_m = 8, o.blocksize = 12; /* 8 does not divide B = 12 */
    expect_error(&L, o, 4, 24, SPRUCE_EINVAL, "block size 12");
    o.blocksize = 0;
    o.prune_n = 0, o.prune_m = 0;
    expect_error(&L, o, 4, 24, SPRUCE_EINVAL, "blocksize");
    free_layer(&L);
}

Test(errors, non_finite_weights_and_hessian)
{
    layer L = make_layer(4, 16, 20, 130);
    spruce_prune_opts o;
    spruce_method m;
    float vals[] = {NAN, INFINITY, -INFINITY};
    int k;
    for (m = SPRUCE_METHOD_SPARSEGPT; m <= SPRUCE_METHOD_MAGNITUDE; m++)
        for (k = 0; k < 3; k++) {
            float *W = copy_w(&L);
            spruce_prune_opts_init(&o);
            o.method = m;
            W[2 * 16 + 9] = vals[k];
            cr_assert_eq(spruce_prune_layer(W, 4, 16, L.h, &o, NULL, NULL), SPRUCE_ENAN);
            cr_assert(strstr(spruce_errdetail(), "(2, 9)") != NULL, "detail: %s", spruce_errdetail());
            free(W);
        }
    /* a Hessian whose entries overflowed float */
    {
        float x[16];
        float *W = copy_w(&L);
        spruce_hessian *h = spruce_hessian_alloc(16);
        for (k = 0; k < 16; k++)
            x[k] = 3e19f;
        cr_assert_eq(spruce_hessian_add(h, x, 1), 0);
        spruce_prune_opts_init(&o);
        cr_assert_eq(spruce_prune_layer(W, 4, 16, h, &o, NULL, NULL), SPRUCE_ENAN);
        cr_assert(strstr(spruce_errdetail(), "Hessian") != NULL, "detail: %s", spruce_errdetail());
        spruce_hessian_free(h);
        free(W);
    }
    free_layer(&L);
}

Test(errors, shapes_and_null_pointers)
{
    layer L = make_layer(4, 16, 20, 140);
    spruce_hessian *empty = spruce_hessian_alloc(16), *other = spruce_hessian_alloc(8);
    float x8[16] = {1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 9};
    float *W = copy_w(&L);
    spruce_prune_opts o;
    spruce_prune_opts_init(&o);
    cr_assert_eq(spruce_hessian_add(other, x8, 2), 0);
    expect_error(&L, o, 0, 16, SPRUCE_EINVAL, "(0, 16)");
    expect_error(&L, o, 4, -2, SPRUCE_EINVAL, "(4, -2)");
    cr_assert_eq(spruce_prune_layer(W, 2, 8, L.h, &o, NULL, NULL), SPRUCE_ESHAPE);
    cr_assert(strstr(spruce_errdetail(), "(16, 16)") != NULL, "detail: %s", spruce_errdetail());
    cr_assert_eq(spruce_prune_layer(W, 4, 16, other, &o, NULL, NULL), SPRUCE_ESHAPE);
    cr_assert_eq(spruce_prune_layer(W, 4, 16, empty, &o, NULL, NULL), SPRUCE_EINVAL);
    cr_assert(strstr(spruce_errdetail(), "no tokens") != NULL);
    cr_assert_eq(spruce_prune_layer(NULL, 4, 16, L.h, &o, NULL, NULL), SPRUCE_EINVAL);
    cr_assert_eq(spruce_prune_layer(W, 4, 16, NULL, &o, NULL, NULL), SPRUCE_EINVAL);
    o.method = SPRUCE_METHOD_WANDA;
    cr_assert_eq(spruce_prune_layer(W, 4, 16, NULL, &o, NULL, NULL), SPRUCE_EINVAL);
    cr_assert_eq(spruce_prune_layer(W, 4, 16, L.h, NULL, NULL, NULL), SPRUCE_EINVAL);
    o.method = (spruce_method)7;
    cr_assert_eq(spruce_prune_layer(W, 4, 16, L.h, &o, NULL, NULL), SPRUCE_EINVAL);
    spruce_prune_opts_init(&o);
    o.threads = -1;
    cr_assert_eq(spruce_prune_layer(W, 4, 16, L.h, &o, NULL, NULL), SPRUCE_EINVAL);
    cr_assert_eq(memcmp(W, L.W0, 4 * 16 * sizeof *W), 0);
    spruce_hessian_free(empty);
    spruce_hessian_free(other);
    free(W);
    free_layer(&L);
}

Test(prune, method_names_round_trip)
{
    spruce_method m, got;
    for (m = SPRUCE_METHOD_SPARSEGPT; m <= SPRUCE_METHOD_MAGNITUDE; m++) {
        cr_assert_eq(spruce_method_parse(spruce_method_name(m), &got), 0);
        cr_assert_eq(got, m);
    }
    cr_assert_eq(spruce_method_parse("obs", &got), SPRUCE_EINVAL);
    cr_assert(strstr(spruce_errdetail(), "'obs'") != NULL);
}

Test(select, exact_count_with_many_ties)
{
    uint32_t keys[1000];
    uint8_t keep[1000];
    size_t k, i;
    for (i = 0; i < 1000; i++)
        keys[i] = spruce__fkey((float)(i % 7)); /* heavy ties */
    for (k = 0; k <= 1000; k += 37) {
        size_t pruned = 0;
        uint32_t maxp = 0, mink = UINT32_MAX;
        spruce__select_lowest(keys, 1000, k, keep);
        for (i = 0; i < 1000; i++) {
            pruned += !keep[i];
            if (!keep[i])
                maxp = keys[i] > maxp ? keys[i] : maxp;
            else
                mink = keys[i] < mink ? keys[i] : mink;
        }
        cr_assert_eq(pruned, k);
        if (k > 0 && k < 1000)
            cr_assert_leq(maxp, mink);
        /* among equal keys at the threshold, the lower indices go first */
        for (i = 1; i < 1000; i++)
            if (keys[i] == maxp && !keep[i] && k < 1000) {
                size_t j;
                for (j = 0; j < i; j++)
                    if (keys[j] == maxp)
                        cr_assert_eq(keep[j], 0, "k=%zu: index %zu kept before %zu", k, j, i);
            }
    }
}

Test(select, team_version_matches_the_serial_one)
{
    size_t n = 50000, k, i, nts[] = {1, 2, 3};
    uint32_t *keys = malloc(n * sizeof *keys);
    uint8_t *a = malloc(n), *b = malloc(n);
    rng_t g = {77};
    for (i = 0; i < n; i++) /* a few hundred distinct values: ties cross thread boundaries */
        keys[i] = spruce__fkey((float)(int)(rng_uniform(&g) * 300.0) * 0.01f);
    for (k = 0; k <= n; k += 4999) {
        size_t q;
        spruce__select_lowest(keys, n, k, a);
        for (q = 0; q < 3; q++) {
            spruce__select_ws ws;
            int nt = (int)nts[q];
            ws.hist = malloc((size_t)nt * 2050 * sizeof *ws.hist);
            ws.off = ws.hist + (size_t)nt * 2048;
            ws.eq = ws.off + nt;
            ws.cand = malloc(n * sizeof *ws.cand);
            #pragma omp parallel num_threads(nt)
            spruce__select_lowest_team(keys, n, k, b, &ws);
            cr_assert_eq(memcmp(a, b, n), 0, "k=%zu, %d threads: the selections differ", k, nt);
            free(ws.hist);
            free(ws.cand);
        }
    }
    free(keys);
    free(a);
    free(b);
}
