/* test_plan.c: OWL's layerwise sparsities (llm-compressor's formula) and the
 * exact per-layer counts of a plan, against direct computations. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "spruce_error.h"
#include "spruce_plan.h"

/* Ratios 1, 2, 4 percent, s = 0.5, lambda = 0.08, worked by hand as
 * llm-compressor computes them: r = (ratio - 1) / 3 * 0.16 = 0, 0.05333,
 * 0.16; mean(r) = 0.07111; s_b = 0.5 - (r_b - mean) = 0.57111, 0.51778,
 * 0.41111. */
Test(owl, sparsities_follow_llm_compressor)
{
    const double ratio[3] = {1.0, 2.0, 4.0};
    const double want[3] = {0.5 + 0.16 / 2.25, 0.5 + 0.16 / 2.25 - 0.16 / 3, 0.5 + 0.16 / 2.25 - 0.16};
    double out[3], mean = 0;
    int b;
    cr_assert_eq(spruce_owl_sparsities(ratio, 3, 0.5, 0.08, out), 0, "%s", spruce_errdetail());
    for (b = 0; b < 3; b++) {
        cr_assert(fabs(out[b] - want[b]) < 1e-12, "block %d: %.15f, want %.15f", b, out[b], want[b]);
        mean += out[b] / 3;
    }
    cr_assert(fabs(mean - 0.5) < 1e-12, "mean %.15f", mean);
    cr_assert(fabs((out[0] - out[2]) - 0.16) < 1e-12, "span 2 lambda");
    /* more outliers, lower sparsity */
    cr_assert(out[0] > out[1] && out[1] > out[2]);
}

Test(owl, equal_ratios_give_the_uniform_sparsity)
{
    const double ratio[4] = {3.0, 3.0, 3.0, 3.0};
    double out[4];
    int b;
    cr_assert_eq(spruce_owl_sparsities(ratio, 4, 0.6, 0.08, out), 0);
    for (b = 0; b < 4; b++)
        cr_assert(fabs(out[b] - 0.6) < 1e-12, "block %d: %.15f", b, out[b]);
}

Test(owl, refuses_a_sparsity_outside_0_1)
{
    const double ratio[2] = {0.0, 1.0};
    double out[2];
    cr_assert_eq(spruce_owl_sparsities(ratio, 2, 0.95, 0.2, out), SPRUCE_EINVAL);
    cr_assert_eq(spruce_owl_sparsities(ratio, 2, 1.0, 0.01, out), SPRUCE_EINVAL);
    cr_assert_eq(spruce_owl_sparsities(ratio, 0, 0.5, 0.01, out), SPRUCE_EINVAL);
}

/* The ratio against a direct count: two layers, norms a_j, scores |w| a_j. */
Test(owl, outlier_ratio_counts_scores_above_m_times_the_mean)
{
    enum { R0 = 5, C0 = 7, R1 = 3, C1 = 4 };
    float w0[R0 * C0], w1[R1 * C1];
    double a0[C0], a1[C1], sum = 0, got, want;
    const float *W[2] = {w0, w1};
    const double *A[2] = {a0, a1};
    const int rows[2] = {R0, R1}, cols[2] = {C0, C1};
    int i, above = 0, n = R0 * C0 + R1 * C1;
    srand(7);
    for (i = 0; i < C0; i++)
        a0[i] = 0.1 + i;
    for (i = 0; i < C1; i++)
        a1[i] = 3.0 / (i + 1);
    for (i = 0; i < R0 * C0; i++)
        w0[i] = (float)(rand() % 2001 - 1000) / 100.0f;
    for (i = 0; i < R1 * C1; i++)
        w1[i] = (float)(rand() % 2001 - 1000) / 10.0f;
    for (i = 0; i < R0 * C0; i++)
        sum += fabs(w0[i]) * a0[i % C0];
    for (i = 0; i < R1 * C1; i++)
        sum += fabs(w1[i]) * a1[i % C1];
    for (i = 0; i < R0 * C0; i++)
        above += fabs(w0[i]) * a0[i % C0] > 2.0 * sum / n;
    for (i = 0; i < R1 * C1; i++)
        above += fabs(w1[i]) * a1[i % C1] > 2.0 * sum / n;
    want = 100.0 * above / n;
    got = spruce_owl_outlier_ratio(2, W, rows, cols, A, 2.0);
    cr_assert(above > 0 && above < n, "the example must have some outliers");
    cr_assert(fabs(got - want) < 1e-12, "ratio %.6f, direct %.6f", got, want);
}

/* Counts add up to round(sum s_i n_i) and each is within one of its target. */
Test(plan, counts_are_exact_in_total)
{
    enum { N = 35 };
    double s[N], c = 0;
    int64_t numel[N], count[N], total = 0;
    int i;
    for (i = 0; i < N; i++) {
        s[i] = 0.6 + 0.07 * sin(i * 1.3);
        numel[i] = (i % 7 < 2) ? 64 * 64 : (i % 7 < 4 ? 32 * 64 : 172 * 64);
        c += s[i] * numel[i];
    }
    cr_assert_eq(spruce_plan_counts(s, numel, N, count), 0);
    for (i = 0; i < N; i++) {
        total += count[i];
        cr_assert(fabs((double)count[i] - s[i] * numel[i]) <= 1.0, "layer %d: %lld for %.3f", i,
                  (long long)count[i], s[i] * numel[i]);
    }
    cr_assert_eq(total, llround(c));
    s[3] = 1.0;
    cr_assert_eq(spruce_plan_counts(s, numel, N, count), SPRUCE_EINVAL);
}
