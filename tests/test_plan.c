/* test_plan.c: OWL's layerwise sparsities (llm-compressor's formula) and the
 * exact per-layer counts of a plan, against direct computations. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "prune_testutil.h"
#include "spruce_error.h"
#include "spruce_plan.h"
#include "spruce_prune.h"

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

/* ---- the pruner at an exact count ------------------------------------------ */

/* Prune a fresh copy of one layer (rows, cols) with method and count (or,
 * count 0, sparsity s); the mask goes to keep, the pruned weights to W. */
static void prune_copy(spruce_method method, int rows, int cols, int64_t count, float s,
                       float *W, uint8_t *keep)
{
    float *W0 = make_weights(rows, cols, 11), *X = make_acts(4 * cols, cols, 12);
    spruce_hessian *h = spruce_hessian_alloc(cols);
    spruce_prune_opts o;
    spruce_prune_result res;
    cr_assert(h && W0 && X);
    cr_assert_eq(spruce_hessian_add(h, X, 4 * cols), 0);
    spruce_prune_opts_init(&o);
    o.method = method;
    o.count = count;
    o.sparsity = s;
    o.blocksize = 32;
    o.threads = 2;
    memcpy(W, W0, (size_t)rows * cols * sizeof *W);
    cr_assert_eq(spruce_prune_layer(W, rows, cols, h, &o, keep, &res), 0, "%s",
                 spruce_errdetail());
    spruce_hessian_free(h);
    free(W0);
    free(X);
}

static int64_t pruned_in(const uint8_t *keep, size_t from, size_t n, size_t stride, size_t width)
{
    int64_t p = 0;
    size_t i, j;
    for (i = from; i < from + n; i++)
        for (j = 0; j < width; j++)
            p += !keep[i * stride + j];
    return p;
}

/* A count prunes exactly that many weights with every method, spread over
 * SparseGPT's column blocks and Wanda's rows by the running rounding; the
 * pruned weights are zero and the kept ones are not all moved to zero. */
Test(count, every_method_prunes_exactly_the_count)
{
    enum { R = 24, C = 80 }; /* blocks of 32, 32 and 16 columns */
    static const spruce_method methods[3] = {SPRUCE_METHOD_SPARSEGPT, SPRUCE_METHOD_WANDA,
                                             SPRUCE_METHOD_MAGNITUDE};
    static const int64_t counts[4] = {1, 777, 1001, R * C - 1 - 16};
    float *W = malloc(R * C * sizeof *W);
    uint8_t *keep = malloc(R * C);
    int mi, ci, i, r, b;
    for (mi = 0; mi < 3; mi++)
        for (ci = 0; ci < 4; ci++) {
            int64_t k = counts[ci], got = 0;
            if (methods[mi] != SPRUCE_METHOD_MAGNITUDE && ci == 3)
                continue; /* the last block or row would be all pruned */
            prune_copy(methods[mi], R, C, k, 0.5f, W, keep);
            for (i = 0; i < R * C; i++) {
                got += !keep[i];
                if (!keep[i])
                    cr_assert_eq(W[i], 0.0f);
            }
            cr_assert_eq(got, k, "%s: %lld pruned, asked %lld",
                         spruce_method_name(methods[mi]), (long long)got, (long long)k);
            if (methods[mi] == SPRUCE_METHOD_WANDA) /* row r: round(k(r+1)/R) - round(kr/R) */
                for (r = 0; r < R; r++)
                    cr_assert_eq(pruned_in(keep, (size_t)r, 1, C, C),
                                 (k * (r + 1) + R / 2) / R - (k * r + R / 2) / R, "row %d", r);
            if (methods[mi] == SPRUCE_METHOD_SPARSEGPT) /* block [i1, i2) of the columns */
                for (b = 0; b < C; b += 32) {
                    int e = b + 32 < C ? b + 32 : C, rr, j;
                    int64_t p = 0;
                    for (rr = 0; rr < R; rr++)
                        for (j = b; j < e; j++)
                            p += !keep[(size_t)rr * C + j];
                    cr_assert_eq(p, (k * e + C / 2) / C - (k * b + C / 2) / C, "block at %d", b);
                }
        }
    free(W);
    free(keep);
}

/* Where the sparsity's own rounding already gives the count, the count gives
 * the same layer bit for bit: SparseGPT 50% of 24 x 32 per block, Wanda 50%
 * of every row, magnitude round(s n). */
Test(count, equals_the_sparsity_where_the_roundings_agree)
{
    enum { R = 24, C = 64 };
    static const spruce_method methods[3] = {SPRUCE_METHOD_SPARSEGPT, SPRUCE_METHOD_WANDA,
                                             SPRUCE_METHOD_MAGNITUDE};
    float *Wa = malloc(R * C * sizeof *Wa), *Wb = malloc(R * C * sizeof *Wb);
    uint8_t *ka = malloc(R * C), *kb = malloc(R * C);
    int mi;
    for (mi = 0; mi < 3; mi++) {
        prune_copy(methods[mi], R, C, 0, 0.5f, Wa, ka);
        prune_copy(methods[mi], R, C, R * C / 2, 0.5f, Wb, kb);
        cr_assert(!memcmp(ka, kb, R * C), "%s: masks differ", spruce_method_name(methods[mi]));
        cr_assert(!memcmp(Wa, Wb, R * C * sizeof *Wa), "%s: weights differ",
                  spruce_method_name(methods[mi]));
    }
    free(Wa);
    free(Wb);
    free(ka);
    free(kb);
}

Test(count, refuses_counts_it_cannot_honour)
{
    enum { R = 8, C = 32 };
    float *W = make_weights(R, C, 3);
    uint8_t keep[R * C];
    spruce_prune_opts o;
    spruce_prune_opts_init(&o);
    o.method = SPRUCE_METHOD_MAGNITUDE;
    o.count = R * C; /* every weight */
    cr_assert_eq(spruce_prune_layer(W, R, C, NULL, &o, keep, NULL), SPRUCE_EINVAL);
    cr_assert(strstr(spruce_errdetail(), "count"), "%s", spruce_errdetail());
    o.count = -1;
    cr_assert_eq(spruce_prune_layer(W, R, C, NULL, &o, keep, NULL), SPRUCE_EINVAL);
    o.count = 10; /* and a pattern */
    o.prune_n = 2;
    o.prune_m = 4;
    cr_assert_eq(spruce_prune_layer(W, R, C, NULL, &o, keep, NULL), SPRUCE_EINVAL);
    cr_assert(strstr(spruce_errdetail(), "N:M"), "%s", spruce_errdetail());
    free(W);
}

/* ---- --layer-sparsity rules ------------------------------------------------- */

Test(rules, keep_the_file_order_and_the_first_match_wins)
{
    spruce_layer_rules *r;
    spruce_layer_target t;
    char buf[32];
    /* "q_proj" also matches the later, broader key: the order decides */
    cr_assert_eq(spruce_layer_rules_parse("{\"zz\\\\.q_proj\": \"dense\", \"self_attn\": 0.25, "
                                          "\"mlp\": \"2:4\", \"^a\": 0}", "r.json", &r), 0, "%s",
                 spruce_errdetail());
    cr_assert_eq(spruce_layer_rules_count(r), 4);
    cr_assert_str_eq(spruce_layer_rules_key(r, 0), "zz\\.q_proj");
    cr_assert_str_eq(spruce_layer_rules_key(r, 3), "^a");
    cr_assert_eq(spruce_layer_rules_match(r, "x.zz.q_proj.weight", &t), 0);
    cr_assert_eq(t.kind, SPRUCE_TARGET_DENSE);
    cr_assert_eq(spruce_layer_rules_match(r, "x.zzXq_proj.self_attn", &t), 1); /* \. is a dot */
    cr_assert_eq(t.kind, SPRUCE_TARGET_SPARSITY);
    cr_assert_eq(t.sparsity, 0.25);
    cr_assert_eq(spruce_layer_rules_match(r, "layers.0.mlp.up_proj", &t), 2);
    cr_assert_eq(t.kind, SPRUCE_TARGET_NM);
    cr_assert(t.n == 2 && t.m == 4);
    cr_assert_str_eq(spruce_layer_target_str(&t, buf, sizeof buf), "2:4");
    cr_assert_eq(spruce_layer_rules_match(r, "abc", &t), 3);
    cr_assert_eq(t.sparsity, 0.0);
    cr_assert_eq(spruce_layer_rules_match(r, "lm_head", NULL), -1);
    spruce_layer_rules_free(r);
    spruce_layer_rules_free(NULL);
}

/* Each bad file is refused naming the file and, for a bad entry, the key. */
Test(rules, bad_files_are_named_with_the_key)
{
    static const struct {
        const char *text, *want1, *want2;
        int rc;
    } cases[] = {
        {"{\"a\": 1.0}", "key 'a'", "[0, 1)", SPRUCE_EINVAL},
        {"{\"a\": -0.1}", "key 'a'", "expected", SPRUCE_EINVAL},
        {"{\"a\": \"4:4\"}", "key 'a'", "N:M", SPRUCE_EINVAL},
        {"{\"a\": \"2:4x\"}", "key 'a'", "N:M", SPRUCE_EINVAL},
        {"{\"a\": \"sparse\"}", "key 'a'", "dense", SPRUCE_EINVAL},
        {"{\"a\": true}", "key 'a'", "sparsity", SPRUCE_EINVAL},
        {"{\"mlp\": 0.5, \"(q\": 0.5}", "key '(q'", "regular expression", SPRUCE_EINVAL},
        {"{\"a\": 0.5, \"a\": 0.6}", "duplicate", "b.json", SPRUCE_EFORMAT},
        {"[0.5]", "JSON object", "b.json", SPRUCE_EFORMAT},
        {"{}", "non-empty", "b.json", SPRUCE_EFORMAT},
        {"{\"a\": 0.5", "line 1", "b.json", SPRUCE_EFORMAT},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        spruce_layer_rules *r = (spruce_layer_rules *)1;
        cr_assert_eq(spruce_layer_rules_parse(cases[i].text, "b.json", &r), cases[i].rc, "%s",
                     cases[i].text);
        cr_assert_null(r);
        cr_assert(strstr(spruce_errdetail(), "b.json") && strstr(spruce_errdetail(), cases[i].want1)
                  && strstr(spruce_errdetail(), cases[i].want2), "%s: %s", cases[i].text,
                  spruce_errdetail());
    }
    cr_assert_eq(spruce_layer_rules_load("/nonexistent/plan.json", &(spruce_layer_rules *){0}),
                 SPRUCE_ENOTFOUND);
}
