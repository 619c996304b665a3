/* test_opt.c: OPT's pieces (src/model/opt.h) against direct computations of
 * the transformers definitions (modeling_opt.py): nn.LayerNorm with weight and
 * bias over the hidden size, OPTLearnedPositionalEmbedding's rows from the
 * attention mask (offset 2), ReLU, and OPTDecoderLayer pre- and post-norm
 * against a token-by-token double-precision computation of the block. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "opt.h"
#include "ref_testutil.h"

/* A reproducible value in [-a, a). */
static float rnd(uint32_t *s, float a)
{
    *s = *s * 1664525u + 1013904223u;
    return a * ((float)(*s >> 8) / 8388608.0f - 1.0f);
}

/* LayerNorm of one float row in double (ref_testutil.h); n <= 4096. */
static void ref_layernorm(double *y, const float *x, const float *w, const float *b, int n,
                          double eps)
{
    double xd[4096];
    int j;
    cr_assert(n <= 4096);
    for (j = 0; j < n; j++)
        xd[j] = x[j];
    ref_layernorm_d(y, xd, w, b, n, eps);
}

/* Largest |y - ref| over T rows of n, each row checked against ref_layernorm. */
static double layernorm_error(const float *y, const float *x, const float *w, const float *b,
                              int T, int n, double eps)
{
    double *ref = malloc(sizeof *ref * (size_t)n), worst = 0;
    int t, j;
    cr_assert_not_null(ref);
    for (t = 0; t < T; t++) {
        ref_layernorm(ref, x + (size_t)t * n, w, b, n, eps);
        for (j = 0; j < n; j++) {
            double d = fabs(y[(size_t)t * n + j] - ref[j]);
            if (!(d <= worst))
                worst = d;   /* NaN counts as the largest */
        }
    }
    free(ref);
    return worst;
}

static void fill(float *x, size_t n, uint32_t *s, float a, float shift)
{
    size_t i;
    for (i = 0; i < n; i++)
        x[i] = rnd(s, a) + shift;
}

Test(opt, layernorm_with_weight_and_bias)
{
    enum { T = 5, N = 96 };
    float x[T * N], w[N], b[N], y[T * N];
    uint32_t s = 3;
    fill(x, T * N, &s, 3.0f, 0.0f);
    fill(w, N, &s, 0.5f, 1.0f);
    fill(b, N, &s, 0.1f, 0.0f);
    spruce__layernorm(y, x, w, b, T, N, 1e-5);
    /* outputs are O(3); float32 rounding of a length-96 reduction: ~1e-6 */
    cr_assert(layernorm_error(y, x, w, b, T, N, 1e-5) < 1e-5 * 3);
}

Test(opt, layernorm_subtracts_the_mean)
{
    /* Rows far from zero: an RMSNorm, or a one-pass variance in float, is far off. */
    enum { T = 3, N = 64 };
    float x[T * N], w[N], b[N], y[T * N];
    uint32_t s = 7;
    double worst;
    fill(x, T * N, &s, 1.0f, 40.0f);
    fill(w, N, &s, 0.5f, 1.0f);
    fill(b, N, &s, 0.1f, 0.0f);
    spruce__layernorm(y, x, w, b, T, N, 1e-5);
    worst = layernorm_error(y, x, w, b, T, N, 1e-5);
    cr_assert(worst < 1e-4, "rows around 40: max abs error %g", worst);
}

Test(opt, layernorm_without_affine_and_in_place)
{
    enum { T = 4, N = 40 };
    float x[T * N], y[T * N];
    uint32_t s = 11;
    int i;
    fill(x, T * N, &s, 2.0f, -0.5f);
    for (i = 0; i < T * N; i++)
        y[i] = x[i];
    spruce__layernorm(y, y, NULL, NULL, T, N, 1e-5);
    cr_assert(layernorm_error(y, x, NULL, NULL, T, N, 1e-5) < 1e-5 * 3);
}

Test(opt, layernorm_of_a_constant_row_is_the_bias)
{
    /* A constant row has variance 0: y = b exactly, whatever eps (no division by 0). */
    enum { N = 16 };
    float x[N], w[N], b[N], y[N];
    int j;
    for (j = 0; j < N; j++) {
        x[j] = 2.5f;
        w[j] = 1.0f + j;
        b[j] = 0.25f * j;
    }
    spruce__layernorm(y, x, w, b, 1, N, 1e-5);
    for (j = 0; j < N; j++)
        cr_assert_eq(y[j], b[j], "y[%d] = %g, expected the bias %g", j, y[j], b[j]);
}

Test(opt, layernorm_many_rows_as_one)
{
    /* Past the threshold where the rows run in parallel: same as row by row. */
    enum { T = 300, N = 128 };
    float *x = malloc(sizeof *x * T * N), *y = malloc(sizeof *y * T * N), w[N], b[N];
    uint32_t s = 5;
    cr_assert(x && y);
    fill(x, (size_t)T * N, &s, 2.0f, 0.3f);
    fill(w, N, &s, 0.5f, 1.0f);
    fill(b, N, &s, 0.1f, 0.0f);
    spruce__layernorm(y, x, w, b, T, N, 1e-5);
    cr_assert(layernorm_error(y, x, w, b, T, N, 1e-5) < 1e-5 * 3);
    free(x);
    free(y);
}

Test(opt, positions_unpadded_are_t_plus_2)
{
    enum { T = 9 };
    int rows[T], t;
    spruce__opt_position_rows(rows, NULL, T, 0);
    for (t = 0; t < T; t++)
        cr_assert_eq(rows[t], t + 2, "token %d reads row %d", t, rows[t]);
}

Test(opt, positions_with_a_cache_continue)
{
    /* Decoding token T-1 after T-1 cached ones reads row T-1 + 2. */
    int rows[3], mask[7] = {1, 1, 1, 1, 1, 1, 1};
    spruce__opt_position_rows(rows, mask, 7, 4);
    cr_assert(rows[0] == 6 && rows[1] == 7 && rows[2] == 8, "%d %d %d", rows[0], rows[1],
              rows[2]);
    spruce__opt_position_rows(rows, NULL, 7, 6);
    cr_assert_eq(rows[0], 8);
}

Test(opt, positions_from_a_padded_mask)
{
    /* cumsum(mask) * mask - 1 + 2: left padding reads row 1, tokens count from 2. */
    int mask[6] = {0, 0, 1, 1, 0, 1}, rows[6], want[6] = {1, 1, 2, 3, 1, 4}, t;
    spruce__opt_position_rows(rows, mask, 6, 0);
    for (t = 0; t < 6; t++)
        cr_assert_eq(rows[t], want[t], "token %d reads row %d, expected %d", t, rows[t],
                     want[t]);
}

Test(opt, relu)
{
    float x[6] = {-2.0f, -0.0f, 0.0f, 1e-30f, 3.5f, NAN};
    spruce__relu(x, 6);
    cr_assert(x[0] == 0.0f && x[1] == 0.0f && x[2] == 0.0f);
    cr_assert(x[3] == 1e-30f && x[4] == 3.5f);
    cr_assert(isnan(x[5]), "NaN stays NaN, as torch.relu keeps it");
}

/* ---- the decoder block, pre- and post-norm ------------------------------------ */

enum { HID = 32, HEADS = 4, DH = HID / HEADS, FFN = 48, SEQ = 2, TT = 7, NTOK = SEQ * TT };

/* Weights of one block; W[l], b[l] for l in Q, K, V, O, UP (fc1), DOWN (fc2). */
typedef struct {
    float *W[SPRUCE_NPROJ], *b[SPRUCE_NPROJ];
    int rows[SPRUCE_NPROJ], cols[SPRUCE_NPROJ];
    float ln1w[HID], ln1b[HID], ln2w[HID], ln2b[HID];
    int calls[SPRUCE_NPROJ];
} opt_weights;

static const spruce_proj used[6] = {SPRUCE_PROJ_Q, SPRUCE_PROJ_K, SPRUCE_PROJ_V,
                                    SPRUCE_PROJ_O, SPRUCE_PROJ_UP, SPRUCE_PROJ_DOWN};

static void weights_make(opt_weights *w, uint32_t seed)
{
    uint32_t s = seed;
    int i;
    memset(w, 0, sizeof *w);
    for (i = 0; i < 6; i++) {
        spruce_proj l = used[i];
        w->rows[l] = l == SPRUCE_PROJ_UP ? FFN : HID;
        w->cols[l] = l == SPRUCE_PROJ_DOWN ? FFN : HID;
        w->W[l] = malloc(sizeof(float) * (size_t)w->rows[l] * w->cols[l]);
        w->b[l] = malloc(sizeof(float) * (size_t)w->rows[l]);
        cr_assert(w->W[l] && w->b[l]);
        /* N(0, 1/fan_in)-sized entries: activations stay of order one */
        fill(w->W[l], (size_t)w->rows[l] * w->cols[l], &s, 1.7f / sqrtf((float)w->cols[l]),
             0.0f);
        fill(w->b[l], (size_t)w->rows[l], &s, 0.1f, 0.0f);
    }
    fill(w->ln1w, HID, &s, 0.5f, 1.0f);
    fill(w->ln1b, HID, &s, 0.1f, 0.0f);
    fill(w->ln2w, HID, &s, 0.5f, 1.0f);
    fill(w->ln2b, HID, &s, 0.1f, 0.0f);
}

static void weights_free(opt_weights *w)
{
    int i;
    for (i = 0; i < 6; i++) {
        free(w->W[used[i]]);
        free(w->b[used[i]]);
    }
}

/* The block's linear layers: Y = X W^T + b, accumulated in double. */
static int dense_linear(void *ctx, spruce_proj l, const float *X, int ntok, float *Y)
{
    opt_weights *w = ctx;
    int t, r, c;
    cr_assert(w->W[l], "the OPT block asked for linear %d, which it has not", (int)l);
    w->calls[l]++;
    for (t = 0; t < ntok; t++)
        for (r = 0; r < w->rows[l]; r++) {
            double acc = w->b[l][r];
            for (c = 0; c < w->cols[l]; c++)
                acc += (double)X[(size_t)t * w->cols[l] + c] * w->W[l][(size_t)r * w->cols[l] + c];
            Y[(size_t)t * w->rows[l] + r] = (float)acc;
        }
    return 0;
}

static void ref_linear(double *y, const double *x, const opt_weights *w, spruce_proj l)
{
    int r, c;
    for (r = 0; r < w->rows[l]; r++) {
        double acc = w->b[l][r];
        for (c = 0; c < w->cols[l]; c++)
            acc += x[c] * w->W[l][(size_t)r * w->cols[l] + c];
        y[r] = acc;
    }
}

/* LayerNorm over HID, eps 1e-5. */
static void ref_ln(double *y, const double *x, const float *g, const float *b)
{
    ref_layernorm_d(y, x, g, b, HID, 1e-5);
}

/* OPTDecoderLayer on one sequence x (TT, HID), in double, token by token. */
static void ref_block(double *x, const opt_weights *w, int pre)
{
    static double a[TT][HID], q[TT][HID], k[TT][HID], v[TT][HID], att[TT][HID], o[HID],
        f[FFN];
    int t, j, h, s;
    for (t = 0; t < TT; t++) {
        double *in = x + t * HID;
        if (pre) {
            ref_ln(a[t], in, w->ln1w, w->ln1b);
            in = a[t];
        }
        ref_linear(q[t], in, w, SPRUCE_PROJ_Q);
        ref_linear(k[t], in, w, SPRUCE_PROJ_K);
        ref_linear(v[t], in, w, SPRUCE_PROJ_V);
    }
    for (t = 0; t < TT; t++)
        for (h = 0; h < HEADS; h++) {
            double sc[TT], mx = -INFINITY, sum = 0;
            for (s = 0; s <= t; s++) {
                sc[s] = 0;
                for (j = 0; j < DH; j++)
                    sc[s] += q[t][h * DH + j] * k[s][h * DH + j];
                sc[s] /= sqrt((double)DH);
                mx = fmax(mx, sc[s]);
            }
            for (s = 0; s <= t; s++)
                sum += (sc[s] = exp(sc[s] - mx));
            for (j = 0; j < DH; j++) {
                double acc = 0;
                for (s = 0; s <= t; s++)
                    acc += sc[s] / sum * v[s][h * DH + j];
                att[t][h * DH + j] = acc;
            }
        }
    for (t = 0; t < TT; t++) {
        double *xt = x + t * HID, m[HID];
        ref_linear(o, att[t], w, SPRUCE_PROJ_O);
        for (j = 0; j < HID; j++)
            xt[j] += o[j];
        if (!pre)
            ref_ln(xt, xt, w->ln1w, w->ln1b);
        if (pre)
            ref_ln(m, xt, w->ln2w, w->ln2b);
        else
            memcpy(m, xt, sizeof m);
        ref_linear(f, m, w, SPRUCE_PROJ_UP);
        for (j = 0; j < FFN; j++)
            f[j] = f[j] > 0 ? f[j] : 0;
        ref_linear(o, f, w, SPRUCE_PROJ_DOWN);
        for (j = 0; j < HID; j++)
            xt[j] += o[j];
        if (!pre)
            ref_ln(xt, xt, w->ln2w, w->ln2b);
    }
}

/* Largest |block(x) - ref_block(x)| over both sequences. */
static double block_error(int pre, opt_weights *w)
{
    static float x[NTOK * HID], a[NTOK * HID], q[NTOK * HID], k[NTOK * HID], v[NTOK * HID],
        att[NTOK * HID], t[NTOK * HID], f[NTOK * FFN], S[TT * TT];
    static double ref[NTOK * HID];
    spruce__opt_block_run r = {HID, HEADS, FFN, pre, 1e-5, w->ln1w, w->ln1b, w->ln2w,
                               w->ln2b, dense_linear, w, a, q, k, v, att, t, f, S};
    uint32_t s = 99;
    double worst = 0;
    int i;
    fill(x, NTOK * HID, &s, 1.5f, 0.2f);
    for (i = 0; i < NTOK * HID; i++)
        ref[i] = x[i];
    cr_assert_eq(spruce__opt_block(&r, x, SEQ, TT), 0);
    for (i = 0; i < SEQ; i++)
        ref_block(ref + (size_t)i * TT * HID, w, pre);
    for (i = 0; i < NTOK * HID; i++) {
        double d = fabs(x[i] - ref[i]);
        if (!(d <= worst))
            worst = d;
    }
    return worst;
}

Test(opt, pre_norm_block_matches_scalar)
{
    opt_weights w;
    double e;
    int i;
    weights_make(&w, 21);
    e = block_error(1, &w);
    /* values of order one through reductions of at most 48 terms: float32 ~1e-6 */
    cr_assert(e < 1e-4, "pre-norm block: max abs error %g", e);
    for (i = 0; i < 6; i++)
        cr_assert_eq(w.calls[used[i]], 1, "linear %d called %d times", (int)used[i],
                     w.calls[used[i]]);
    cr_assert_eq(w.calls[SPRUCE_PROJ_GATE], 0);
    weights_free(&w);
}

Test(opt, post_norm_block_matches_scalar)
{
    opt_weights w;
    double e;
    weights_make(&w, 22);
    e = block_error(0, &w);
    cr_assert(e < 1e-4, "post-norm block: max abs error %g", e);
    weights_free(&w);
}
