/* test_hessian.c: the calibration accumulator and the prepared inverse. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prune_internal.h"
#include "prune_testutil.h"
#include "spruce_prune.h"

/* max |a - b| over the full (n, n) matrices, float against double */
static double maxdiff(const float *a, const double *b, int n)
{
    double m = 0.0;
    int i;
    for (i = 0; i < n * n; i++)
        m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static double maxabs(const double *b, int n)
{
    double m = 0.0;
    int i;
    for (i = 0; i < n; i++)
        m = fmax(m, fabs(b[i]));
    return m;
}

Test(hessian, matches_double_precision_sum)
{
    int tokens = 300, cols = 37;
    float *X = make_acts(tokens, cols, 1);
    double *ref = naive_hessian(X, tokens, cols);
    spruce_hessian *h = spruce_hessian_alloc(cols);
    cr_assert_not_null(h);
    cr_assert_eq(spruce_hessian_add(h, X, tokens), 0);
    cr_assert_eq(spruce_hessian_tokens(h), tokens);
    cr_assert_eq(spruce_hessian_cols(h), cols);
    /* float32 sums of `tokens` products: relative error grows with the length */
    cr_assert_lt(maxdiff(spruce_hessian_matrix(h), ref, cols),
                 1e-6 * tokens * maxabs(ref, cols * cols) / 10.0, "H differs from the double sum");
    spruce_hessian_free(h);
    free(X);
    free(ref);
}

Test(hessian, batch_splitting_gives_the_same_matrix)
{
    int tokens = 257, cols = 24, splits[] = {1, 7, 50, 100, 99}, i, off = 0;
    float *X = make_acts(tokens, cols, 2);
    double *ref = naive_hessian(X, tokens, cols);
    spruce_hessian *one = spruce_hessian_alloc(cols), *many = spruce_hessian_alloc(cols);
    cr_assert_eq(spruce_hessian_add(one, X, tokens), 0);
    for (i = 0; i < 5; i++) {
        cr_assert_eq(spruce_hessian_add(many, X + (size_t)off * cols, splits[i]), 0);
        off += splits[i];
    }
    cr_assert_eq(off, tokens);
    cr_assert_eq(spruce_hessian_tokens(many), tokens);
    {
        const float *a = spruce_hessian_matrix(one), *b = spruce_hessian_matrix(many);
        double tol = 1e-6 * tokens * maxabs(ref, cols * cols) / 10.0, m = 0.0;
        for (i = 0; i < cols * cols; i++)
            m = fmax(m, fabs((double)a[i] - b[i]));
        cr_assert_lt(m, tol, "one batch and five batches differ by %g", m);
        cr_assert_lt(maxdiff(b, ref, cols), tol);
    }
    spruce_hessian_free(one);
    spruce_hessian_free(many);
    free(X);
    free(ref);
}

/* What the ranks of mpirun do (src/pipeline/pipeline.c): each accumulates its
 * share, weights it by its tokens with set_share, and the shares' matrices
 * are added in rank order; the sum is the Hessian of all the tokens. */
Test(hessian, shares_summed_give_the_whole_matrix)
{
    int tokens = 301, cols = 29, shares[] = {101, 100, 100}, r, i, off = 0;
    float *X = make_acts(tokens, cols, 5);
    double *ref = naive_hessian(X, tokens, cols);
    float *sum = calloc((size_t)cols * cols, sizeof *sum);
    cr_assert_not_null(sum);
    for (r = 0; r < 3; r++) {
        spruce_hessian *h = spruce_hessian_alloc(cols);
        const float *d;
        cr_assert_eq(spruce_hessian_add(h, X + (size_t)off * cols, shares[r]), 0);
        off += shares[r];
        cr_assert_eq(spruce_hessian_set_share(h, tokens), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_hessian_tokens(h), tokens);
        d = spruce_hessian_data(h);
        for (i = 0; i < cols * cols; i++)
            sum[i] += d[i];
        spruce_hessian_free(h);
    }
    {
        /* only the upper triangle counts: compare it */
        double tol = 1e-6 * tokens * maxabs(ref, cols * cols) / 10.0, m = 0.0;
        int j;
        for (i = 0; i < cols; i++)
            for (j = i; j < cols; j++)
                m = fmax(m, fabs((double)sum[i * cols + j] - ref[i * cols + j]));
        cr_assert_lt(m, tol, "the summed shares differ from the whole Hessian by %g", m);
    }
    {
        /* a share larger than the total, or no total, is refused */
        spruce_hessian *h = spruce_hessian_alloc(cols);
        cr_assert_eq(spruce_hessian_add(h, X, 10), 0);
        cr_assert_eq(spruce_hessian_set_share(h, 9), SPRUCE_EINVAL);
        cr_assert_eq(spruce_hessian_set_share(NULL, 9), SPRUCE_EINVAL);
        cr_assert_eq(spruce_hessian_set_share(h, 10), 0); /* the whole: unchanged */
        spruce_hessian_free(h);
    }
    free(sum);
    free(X);
    free(ref);
}

Test(hessian, matrix_is_symmetric_after_every_add)
{
    int cols = 19, i, j, b;
    float *X = make_acts(40, cols, 3);
    spruce_hessian *h = spruce_hessian_alloc(cols);
    for (b = 0; b < 4; b++) {
        const float *H;
        cr_assert_eq(spruce_hessian_add(h, X + (size_t)b * 10 * cols, 10), 0);
        H = spruce_hessian_matrix(h);
        for (i = 0; i < cols; i++)
            for (j = 0; j < cols; j++)
                cr_assert_eq(H[i * cols + j], H[j * cols + i], "H(%d,%d) != H(%d,%d)", i, j, j, i);
    }
    spruce_hessian_free(h);
    free(X);
}

Test(hessian, rejects_bad_arguments)
{
    float x[8] = {0};
    spruce_hessian *h = spruce_hessian_alloc(4);
    cr_assert_null(spruce_hessian_alloc(0));
    cr_assert_null(spruce_hessian_alloc(-3));
    spruce_hessian_free(NULL);
    cr_assert_eq(spruce_hessian_add(NULL, x, 2), SPRUCE_EINVAL);
    cr_assert_eq(spruce_hessian_add(h, NULL, 2), SPRUCE_EINVAL);
    cr_assert_eq(spruce_hessian_add(h, x, 0), SPRUCE_EINVAL);
    cr_assert(strstr(spruce_errdetail(), "tokens") != NULL, "detail: %s", spruce_errdetail());
    cr_assert_eq(spruce_hessian_add(h, x, -1), SPRUCE_EINVAL);
    cr_assert_eq(spruce_hessian_tokens(h), 0);
    spruce_hessian_free(h);
}

Test(hessian, rejects_non_finite_activations)
{
    float x[12];
    int i, k;
    float bad[] = {NAN, INFINITY, -INFINITY};
    spruce_hessian *h = spruce_hessian_alloc(4);
    for (k = 0; k < 3; k++) {
        for (i = 0; i < 12; i++)
            x[i] = 0.5f * i;
        x[6] = bad[k];
        cr_assert_eq(spruce_hessian_add(h, x, 3), SPRUCE_ENAN);
        cr_assert(strstr(spruce_errdetail(), "(1, 2)") != NULL, "detail names the element: %s",
                  spruce_errdetail());
    }
    cr_assert_eq(spruce_hessian_tokens(h), 0, "a rejected batch is not counted");
    for (i = 0; i < 16; i++)
        cr_assert_eq(spruce_hessian_matrix(h)[i], 0.0f);
    spruce_hessian_free(h);
}

/* U from spruce__hinv_factor against the published chain in double. */
Test(hinv, factor_matches_published_chain)
{
    int tokens = 200, cols = 48, i, j;
    float *X = make_acts(tokens, cols, 4), *U = malloc((size_t)cols * cols * sizeof *U);
    double *Hd = naive_hessian(X, tokens, cols), *Uref;
    uint8_t dead[48], dref[48];
    int ndead = -1, retries = -1;
    float used = -1.0f;
    spruce_hessian *h = spruce_hessian_alloc(cols);
    cr_assert_eq(spruce_hessian_add(h, X, tokens), 0);
    cr_assert_eq(spruce__hinv_factor(spruce__hessian_upper(h), cols, 0.01f, 4, U, dead, &ndead,
                                     &used, &retries), 0);
    Uref = naive_hinv_upper(Hd, cols, 0.01, dref);
    cr_assert_not_null(Uref);
    cr_assert_eq(ndead, 0);
    cr_assert_eq(retries, 0);
    cr_assert_float_eq(used, 0.01f, 1e-9);
    for (i = 0; i < cols; i++)
        for (j = 0; j < cols; j++) {
            double ref = Uref[i * cols + j], got = U[i * cols + j];
            if (j < i)
                cr_assert_eq(got, 0.0, "U(%d,%d) below the diagonal is %g", i, j, got);
            else
                cr_assert(fabs(got - ref) <= 1e-3 * fabs(Uref[j * cols + j]) + 1e-4 * fabs(ref),
                          "U(%d,%d) = %g, published chain gives %g", i, j, got, ref);
        }
    spruce_hessian_free(h);
    free(X);
    free(U);
    free(Hd);
    free(Uref);
}

Test(hinv, dead_inputs_are_flagged)
{
    int tokens = 60, cols = 16, t;
    float *X = make_acts(tokens, cols, 5), *U = malloc((size_t)cols * cols * sizeof *U);
    uint8_t dead[16];
    int ndead = 0, retries = 0;
    float used;
    spruce_hessian *h = spruce_hessian_alloc(cols);
    for (t = 0; t < tokens; t++)
        X[t * cols + 5] = X[t * cols + 11] = 0.0f;
    cr_assert_eq(spruce_hessian_add(h, X, tokens), 0);
    cr_assert_eq(spruce__hinv_factor(spruce__hessian_upper(h), cols, 0.01f, 0, U, dead, &ndead,
                                     &used, &retries), 0);
    cr_assert_eq(ndead, 2);
    for (t = 0; t < cols; t++)
        cr_assert_eq(dead[t], t == 5 || t == 11, "dead[%d]", t);
    /* a dead input is independent of the others: its row of U is e_j / sqrt(1 + lambda) */
    for (t = 0; t < cols; t++)
        if (t != 5)
            cr_assert_eq(U[5 * cols + t], 0.0f);
    cr_assert_gt(U[5 * cols + 5], 0.0f);
    spruce_hessian_free(h);
    free(X);
    free(U);
}

/* An indefinite matrix: Cholesky fails until the damping outweighs the negative eigenvalue. */
Test(hinv, damping_is_raised_until_cholesky_succeeds)
{
    int n = 8, i, j, ndead, retries = -1;
    float H[64], U[64], used = 0.0f;
    /* diag 1, all off-diagonal 0.5 except one pair at -0.9 -> smallest eigenvalue < 0 */
    for (i = 0; i < n; i++)
        for (j = 0; j < n; j++)
            H[i * n + j] = i == j ? 1.0f : 0.5f;
    H[0 * n + 1] = H[1 * n + 0] = -0.9f;
    cr_assert_eq(spruce__hinv_factor(H, n, 0.001f, 4, U, NULL, &ndead, &used, &retries), 0);
    cr_assert_gt(retries, 0, "expected at least one retry");
    cr_assert_float_eq(used, 0.001f * powf(10.0f, (float)retries), 1e-6f);
    cr_assert_eq(spruce__hinv_factor(H, n, 0.001f, 0, U, NULL, &ndead, &used, &retries),
                 SPRUCE_ESINGULAR);
    cr_assert(strstr(spruce_errdetail(), "Cholesky") != NULL, "detail: %s", spruce_errdetail());
}

Test(hinv, prepare_checks_arguments_and_reports_damping)
{
    int cols = 12, tokens = 30;
    float *X = make_acts(tokens, cols, 8);
    spruce_hessian *h = spruce_hessian_alloc(cols), *empty = spruce_hessian_alloc(cols);
    spruce_hinv *hi = (spruce_hinv *)1;
    spruce_prune_opts o;
    cr_assert_eq(spruce_hessian_add(h, X, tokens), 0);
    spruce_prune_opts_init(&o);
    cr_assert_eq(spruce_hinv_prepare(NULL, &o, &hi), SPRUCE_EINVAL);
    cr_assert_null(hi, "the output is cleared on failure");
    cr_assert_eq(spruce_hinv_prepare(h, &o, NULL), SPRUCE_EINVAL);
    cr_assert_eq(spruce_hinv_prepare(empty, &o, &hi), SPRUCE_EINVAL);
    cr_assert(strstr(spruce_errdetail(), "no tokens") != NULL, "detail: %s", spruce_errdetail());
    o.damp = -0.5f;
    cr_assert_eq(spruce_hinv_prepare(h, &o, &hi), SPRUCE_EINVAL);
    o.damp = NAN;
    cr_assert_eq(spruce_hinv_prepare(h, &o, &hi), SPRUCE_EINVAL);
    o.damp = 0.01f;
    o.max_damp_retries = -1;
    cr_assert_eq(spruce_hinv_prepare(h, &o, &hi), SPRUCE_EINVAL);
    o.max_damp_retries = 4;
    cr_assert_eq(spruce_hinv_prepare(h, &o, &hi), 0);
    cr_assert_not_null(hi);
    cr_assert_eq(spruce_hinv_cols(hi), cols);
    cr_assert_not_null(spruce_hinv_factor(hi));
    cr_assert_eq(hi->damp_retries, 0);
    cr_assert_float_eq(hi->damp_used, 0.01f, 1e-9f);
    spruce_hinv_free(hi);
    spruce_hinv_free(NULL);
    spruce_hessian_free(h);
    spruce_hessian_free(empty);
    free(X);
}

Test(hessian, rel_error_from_h_matches_direct_product)
{
    int tokens = 90, cols = 20, rows = 7, t, r, j;
    float *X = make_acts(tokens, cols, 6), *W0 = make_weights(rows, cols, 7);
    float *W = malloc((size_t)rows * cols * sizeof *W);
    double num = 0.0, den = 0.0, got = -1.0;
    spruce_hessian *h = spruce_hessian_alloc(cols);
    for (j = 0; j < rows * cols; j++)
        W[j] = j % 3 ? W0[j] : 0.0f;
    cr_assert_eq(spruce_hessian_add(h, X, tokens), 0);
    for (t = 0; t < tokens; t++)
        for (r = 0; r < rows; r++) {
            double y = 0.0, d = 0.0;
            for (j = 0; j < cols; j++) {
                y += (double)W0[r * cols + j] * X[t * cols + j];
                d += (double)(W0[r * cols + j] - W[r * cols + j]) * X[t * cols + j];
            }
            num += d * d;
            den += y * y;
        }
    cr_assert_eq(spruce_prune_rel_error(W0, W, rows, cols, h, &got), 0);
    cr_assert_float_eq(got, num / den, 1e-4 * num / den);
    cr_assert_eq(spruce_prune_rel_error(W0, W, rows, cols + 1, h, &got), SPRUCE_ESHAPE);
    spruce_hessian_free(h);
    free(X);
    free(W0);
    free(W);
}
