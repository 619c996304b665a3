/* test_quant.c: joint pruning and quantization (wbits) against a
 * double-precision port of the published sparsegpt.py with quant.py (and
 * GPTQ's groups), the grid against a naive min-max grid, the grid values of
 * kept weights, +0.0 for pruned ones, Wanda/magnitude rounding and the
 * refused combinations. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prune_internal.h"
#include "prune_testutil.h"
#include "spruce_prune.h"
#include "spruce_sparse.h"

/* ---- the published quantizer, in double ---------------------------------- */

static void naive_find_f(const double *x, int n, int bits, int sym, int f32, double *scale,
                         double *zero);

/* quant.py find_params(x, weight=True) for one row segment; f32: each step
 * rounded to float32 as torch computes it on float32 tensors (the grid of the
 * all-zero segment, zero = round(7.5), is a tie that float32 decides). */
static void naive_find(const double *x, int n, int bits, int sym, double *scale, double *zero)
{
    naive_find_f(x, n, bits, sym, 0, scale, zero);
}

static void naive_find_f(const double *x, int n, int bits, int sym, int f32, double *scale,
                         double *zero)
{
    double xmin = 0.0, xmax = 0.0, maxq = (double)((1 << bits) - 1);
    int i;
    for (i = 0; i < n; i++) {
        xmin = fmin(xmin, x[i]);
        xmax = fmax(xmax, x[i]);
    }
    if (sym) {
        xmax = fmax(fabs(xmin), xmax);
        if (xmin < 0)
            xmin = -xmax;
    }
    if (xmin == 0 && xmax == 0) {
        xmin = -1;
        xmax = 1;
    }
    *scale = (xmax - xmin) / maxq;
    if (f32)
        *scale = (float)((float)(xmax - xmin) / maxq);
    *zero = sym ? (maxq + 1) / 2 : nearbyint(f32 ? (float)(-xmin / *scale) : -xmin / *scale);
}

/* quant.py quantize(): scale * (clamp(round(x / scale) + zero, 0, maxq) - zero) */
static double naive_quant(double x, double scale, double zero, int bits)
{
    double q = nearbyint(x / scale) + zero, maxq = (double)((1 << bits) - 1);
    q = q < 0 ? 0 : q > maxq ? maxq : q;
    return scale * (q - zero);
}

/* The same with the division rounded to float32, as torch computes x / scale
 * on float32 tensors (the rest is exact in double). */
static double naive_quant32(float x, float scale, float zero, int bits)
{
    double q = nearbyint((double)(x / scale)) + zero, maxq = (double)((1 << bits) - 1);
    q = q < 0 ? 0 : q > maxq ? maxq : q;
    return (double)scale * (q - zero);
}

typedef struct {
    int bits, sym, G; /* G = cols for one grid per row */
    double *scale, *zero; /* (rows, cols / G) */
} ngrid;

static void naive_grid_groups(const double *W, int rows, int cols, ngrid *g, int k0, int k1)
{
    int r, k, ng = cols / g->G;
    for (r = 0; r < rows; r++)
        for (k = k0; k < k1; k++)
            naive_find(W + (size_t)r * cols + (size_t)k * g->G, g->G, g->bits, g->sym,
                       g->scale + (size_t)r * ng + k, g->zero + (size_t)r * ng + k);
}

/* The mask of one unstructured block (as sparsegpt.py: the k = round(s rows bw)
 * lowest w^2 / d^2 over the block, ties to the lower index). */
static void naive_block_mask(const double *W, int rows, int cols, const double *U, int i1, int bw,
                             float s, uint8_t *keep)
{
    int nb = rows * bw, a, b, r, c, k = (int)llround((double)s * nb);
    float *sc = malloc((size_t)nb * sizeof *sc);
    for (r = 0; r < rows; r++)
        for (c = 0; c < bw; c++) {
            double w = W[(size_t)r * cols + i1 + c], d = U[(size_t)(i1 + c) * cols + i1 + c];
            sc[r * bw + c] = (float)(w * w / (d * d));
        }
    for (a = 0; a < nb; a++) {
        int rank = 0;
        for (b = 0; b < nb; b++)
            rank += cmp_idx_key(sc[b], b, sc[a], a);
        keep[(size_t)(a / bw) * cols + i1 + a % bw] = rank >= k;
    }
    free(sc);
}

/* The N:M mask of columns [i, i + pm) of W1 (block copy, width bw). */
static void naive_nm_mask(const double *W1, int rows, int bw, int cols, const double *U, int i1, int i,
                          int pn, int pm, uint8_t *keep)
{
    int r, a, b;
    for (r = 0; r < rows; r++) {
        float sc[256];
        for (a = 0; a < pm; a++) {
            double w = W1[(size_t)r * bw + i + a], d = U[(size_t)(i1 + i + a) * cols + i1 + i + a];
            sc[a] = (float)(w * w / (d * d));
        }
        for (a = 0; a < pm; a++) {
            int rank = 0;
            for (b = 0; b < pm; b++)
                rank += cmp_idx_key(sc[b], b, sc[a], a);
            keep[(size_t)r * cols + i1 + i + a] = rank >= pn;
        }
    }
}

/* sparsegpt.py fasterprune with a quantizer, in double, with GPTQ's groups:
 * blocks of B, the block copy W1, find_params on W at (i1 + i) % G == 0. */
static double naive_joint(double *W, int rows, int cols, const double *U, const uint8_t *dead,
                          float s, int pn, int pm, int B, ngrid *g, uint8_t *keep)
{
    int ng = cols / g->G, i1, i, r, c, k;
    double loss = 0.0, *W1 = malloc((size_t)rows * B * sizeof *W1),
           *E1 = malloc((size_t)rows * B * sizeof *E1);
    naive_grid_groups(W, rows, cols, g, 0, ng); /* before pruning, on the whole W */
    for (c = 0; c < cols; c++)
        if (dead[c])
            for (r = 0; r < rows; r++)
                W[(size_t)r * cols + c] = 0.0;
    for (i1 = 0; i1 < cols; i1 += B) {
        int i2 = i1 + B < cols ? i1 + B : cols, bw = i2 - i1;
        for (r = 0; r < rows; r++)
            for (c = 0; c < bw; c++)
                W1[(size_t)r * bw + c] = W[(size_t)r * cols + i1 + c];
        if (!pm)
            naive_block_mask(W, rows, cols, U, i1, bw, s, keep);
        for (i = 0; i < bw; i++) {
            int col = i1 + i;
            double d = U[(size_t)col * cols + col];
            if (g->G < cols && col % g->G == 0) /* reads W, as gptq.py does */
                naive_grid_groups(W, rows, cols, g, col / g->G, col / g->G + 1);
            if (pm && i % pm == 0)
                naive_nm_mask(W1, rows, bw, cols, U, i1, i, pn, pm, keep);
            for (r = 0; r < rows; r++) {
                double *w1 = W1 + (size_t)r * bw, w = w1[i], q = 0.0, err;
                size_t gi = (size_t)r * ng + col / g->G;
                if (keep[(size_t)r * cols + col])
                    q = naive_quant(w, g->scale[gi], g->zero[gi], g->bits);
                err = (w - q) / d;
                loss += err * err / 2;
                for (k = i; k < bw; k++)
                    w1[k] -= err * U[(size_t)col * cols + i1 + k];
                w1[i] = q;
                E1[(size_t)r * bw + i] = err;
            }
        }
        for (r = 0; r < rows; r++) {
            for (c = 0; c < bw; c++)
                W[(size_t)r * cols + i1 + c] = W1[(size_t)r * bw + c];
            for (k = i2; k < cols; k++) {
                double acc = 0.0;
                for (c = 0; c < bw; c++)
                    acc += E1[(size_t)r * bw + c] * U[(size_t)(i1 + c) * cols + k];
                W[(size_t)r * cols + k] -= acc;
            }
        }
    }
    free(W1);
    free(E1);
    return loss;
}

/* ---- helpers --------------------------------------------------------------- */


static spruce_qgrid grid_alloc(int rows, int cols, int G)
{
    spruce_qgrid g;
    memset(&g, 0, sizeof g);
    g.rows = rows;
    g.cols = cols;
    g.groupsize = G;
    g.scale = malloc((size_t)rows * (cols / G) * sizeof *g.scale);
    g.zero = malloc((size_t)rows * (cols / G) * sizeof *g.zero);
    return g;
}

/* Every kept weight is exactly scale * (q - zero) in float for an integer
 * level q in [0, maxq]; every pruned one is +0.0. */
static void check_on_grid(const float *W, const uint8_t *mask, const spruce_qgrid *g)
{
    int64_t r, j, ng = g->cols / g->groupsize;
    float maxq = (float)((1 << g->bits) - 1);
    for (r = 0; r < g->rows; r++)
        for (j = 0; j < g->cols; j++) {
            float w = W[r * g->cols + j], s = g->scale[r * ng + j / g->groupsize],
                  z = g->zero[r * ng + j / g->groupsize], l;
            if (mask && !mask[r * g->cols + j]) {
                cr_assert(w == 0.0f && !signbit(w), "pruned W[%lld,%lld] = %g is not +0.0",
                          (long long)r, (long long)j, (double)w);
                continue;
            }
            cr_assert(s > 0.0f && z == rintf(z) && z >= 0.0f && z <= maxq, "grid (%g, %g) at row %lld",
                      (double)s, (double)z, (long long)r);
            l = rintf(w / s) + z;
            cr_assert(l >= 0.0f && l <= maxq && w == s * (l - z),
                      "kept W[%lld,%lld] = %.9g is off the grid (scale %.9g, zero %g)", (long long)r,
                      (long long)j, (double)w, (double)s, (double)z);
            if (w == 0.0f)
                cr_assert(!signbit(w), "kept W[%lld,%lld] is -0.0", (long long)r, (long long)j);
        }
}

/* ---- the grid against the naive one -------------------------------------- */

Test(quant, grid_and_rounding_match_the_naive_quantizer)
{
    int bits, sym, n = 64, i, t, zdiff = 0, trials = 0;
    rng_t g = {7};
    for (t = 0; t < 40; t++)
        for (bits = 2; bits <= 8; bits++)
            for (sym = 0; sym <= 1; sym++) {
                float x[64], s, z;
                double xd[64], sd, zd;
                for (i = 0; i < n; i++) {
                    /* some segments all positive, all negative, or all zero */
                    double v = rng_normal(&g) * (1 + t % 5);
                    v = t % 7 == 1 ? fabs(v) : t % 7 == 2 ? -fabs(v) : t % 7 == 3 ? 0.0 : v;
                    x[i] = (float)v;
                    xd[i] = x[i];
                }
                spruce__qgrid_find(x, n, bits, sym, SPRUCE_QSCALE_F32, &s, &z);
                naive_find_f(xd, n, bits, sym, 1, &sd, &zd);
                cr_assert(fabs(s - sd) <= 1e-6 * sd, "bits %d sym %d: scale %.9g, naive %.9g", bits,
                          sym, (double)s, sd);
                /* zero is an integer: float and double round -xmin / scale
                 * apart only when it lies within float precision of a half */
                cr_assert(fabs(z - zd) <= 1.0, "bits %d sym %d: zero %g, naive %g", bits, sym,
                          (double)z, zd);
                zdiff += z != zd;
                trials++;
                for (i = 0; i < n; i++) {
                    double qd = naive_quant32(x[i], s, z, bits);
                    float q = spruce__qround(x[i], s, z, (float)((1 << bits) - 1));
                    cr_assert(fabs(q - qd) <= 1e-6 * fabs(qd) + 1e-30,
                              "bits %d: %.9g rounds to %.9g, naive %.9g", bits, (double)x[i],
                              (double)q, qd);
                }
            }
    cr_assert_eq(zdiff, 0, "%d of %d zeros differ from the naive grid", zdiff, trials);
}

/* Scales stored in bf16 or f16 (a checkpoint of that dtype): each scale is the
 * naive scale within half a step of that type (f16 scales below 2^-14 are
 * subnormal, with steps of 2^-24) and representable in it, and
 * the zero point is found from the rounded scale. */
Test(quant, grid_scales_rounded_to_the_stored_dtype)
{
    int bits, sym, t, i, dt;
    rng_t g = {11};
    for (dt = SPRUCE_QSCALE_BF16; dt <= SPRUCE_QSCALE_F16; dt++)
        for (t = 0; t < 20; t++)
            for (bits = 2; bits <= 8; bits++)
                for (sym = 0; sym <= 1; sym++) {
                    float x[64], s, z, xmin = 0.0f;
                    double xd[64], sd, zd, rel = dt == SPRUCE_QSCALE_BF16 ? 0x1p-8 : 0x1p-11;
                    uint32_t u;
                    for (i = 0; i < 64; i++) {
                        x[i] = (float)(rng_normal(&g) * (t % 2 ? 1e-3 : 3.0));
                        xd[i] = x[i];
                        xmin = x[i] < xmin ? x[i] : xmin;
                    }
                    spruce__qgrid_find(x, 64, bits, sym, dt, &s, &z);
                    naive_find_f(xd, 64, bits, sym, 1, &sd, &zd);
                    /* half a step: relative, or a half's subnormal step 2^-24 */
                    double half = fmax(rel * sd, dt == SPRUCE_QSCALE_F16 ? 0x1p-25 : 0.0);
                    cr_assert(fabs(s - sd) <= half * (1 + 1e-6), "dtype %d bits %d: scale %.9g, "
                              "naive %.9g", dt, bits, (double)s, sd);
                    memcpy(&u, &s, 4);
                    if (dt == SPRUCE_QSCALE_BF16)
                        cr_assert_eq(u & 0xffff, 0, "scale %.9g is not a bf16 value", (double)s);
                    else /* a normal half: 10 fraction bits, the rest zero */
                        cr_assert_eq(u & 0x1fff, 0, "scale %.9g is not a half value", (double)s);
                    if (!sym)
                        cr_assert_eq(z, rintf(-xmin / s), "zero from the rounded scale");
                }
}

/* ---- joint SparseGPT + quantization against the naive published port ----- */

typedef struct {
    int rows, cols, B, pn, pm, bits, sym, G;
    float s;
    uint64_t seed;
} jcase;

/* Weights within tol of the naive port, except where a rounding decision
 * flipped (float and double land on either side of a half step): those rows
 * then differ by about one grid step and are counted, allowed up to 2%. */
static void check_joint(jcase c)
{
    layer L = make_layer(c.rows, c.cols, 4 * c.cols, c.seed);
    size_t n = (size_t)c.rows * c.cols, i;
    int G = c.G ? c.G : c.cols, ng = c.cols / G, far = 0, mdiff = 0;
    float *W = malloc(n * sizeof *W), *Wn = malloc(n * sizeof *Wn);
    double *Wd = malloc(n * sizeof *Wd), *Hd = naive_hessian(L.X, L.tokens, c.cols), *Ud, maxw = 0,
           loss_ref, tol, e, en;
    uint8_t *mask = malloc(n), *mref = malloc(n), *dead = malloc((size_t)c.cols);
    ngrid ngr = {c.bits, c.sym, G, malloc((size_t)c.rows * ng * sizeof(double)),
                 malloc((size_t)c.rows * ng * sizeof(double))};
    spruce_qgrid g = grid_alloc(c.rows, c.cols, G);
    spruce_prune_opts o;
    spruce_prune_result res;

    memcpy(W, L.W0, n * sizeof *W);
    for (i = 0; i < n; i++) {
        Wd[i] = L.W0[i];
        maxw = fmax(maxw, fabs(Wd[i]));
    }
    Ud = naive_hinv_upper(Hd, c.cols, 0.01, dead);
    cr_assert_not_null(Ud);
    loss_ref = naive_joint(Wd, c.rows, c.cols, Ud, dead, c.s, c.pn, c.pm, c.B, &ngr, mref);

    spruce_prune_opts_init(&o);
    o.sparsity = c.s;
    o.prune_n = c.pn;
    o.prune_m = c.pm;
    o.blocksize = c.B;
    o.wbits = c.bits;
    o.sym = c.sym;
    o.groupsize = c.G;
    o.grid_out = &g;
    cr_assert_eq(spruce_prune_layer(W, c.rows, c.cols, L.h, &o, mask, &res), 0, "%s",
                 spruce_errdetail());
    cr_assert_eq(g.bits, c.bits);
    cr_assert_eq(g.sym, c.sym);
    check_on_grid(W, mask, &g);
    for (i = 0; i < n; i++)
        mdiff += mask[i] != mref[i];
    tol = 2e-6 * c.cols * maxw;
    for (i = 0; i < n; i++) {
        Wn[i] = (float)Wd[i];
        far += fabs(W[i] - Wd[i]) > tol;
    }
    cr_assert(far * 50 <= (int)n && mdiff * 50 <= (int)n,
              "%d of %zu weights beyond %g and %d mask entries differ from the naive port", far, n, tol,
              mdiff);
    cr_assert(fabs(res.loss - loss_ref) <= 1e-2 * loss_ref + 1e-12, "loss %g, naive %g", res.loss,
              loss_ref);
    cr_assert_eq(spruce_prune_rel_error(L.W0, W, c.rows, c.cols, L.h, &e), 0);
    cr_assert_eq(spruce_prune_rel_error(L.W0, Wn, c.rows, c.cols, L.h, &en), 0);
    cr_assert(fabs(e - en) <= 0.01 * en, "relative output error %g, naive published %g", e, en);
    free(W);
    free(Wn);
    free(Wd);
    free(Hd);
    free(Ud);
    free(mask);
    free(mref);
    free(dead);
    free(ngr.scale);
    free(ngr.zero);
    free(g.scale);
    free(g.zero);
    free_layer(&L);
}

Test(joint, wbits8_and_4_at_50_percent_match_the_published_port)
{
    check_joint((jcase){32, 64, 16, 0, 0, 8, 0, 0, 0.5f, 31});
    check_joint((jcase){32, 64, 16, 0, 0, 4, 0, 0, 0.5f, 32});
    check_joint((jcase){20, 72, 32, 0, 0, 4, 1, 0, 0.5f, 33}); /* sym, partial last block */
}

Test(joint, wbits8_and_4_at_2_4_match_the_published_port)
{
    check_joint((jcase){32, 64, 16, 2, 4, 8, 0, 0, 0.0f, 34});
    check_joint((jcase){32, 64, 16, 2, 4, 4, 0, 0, 0.0f, 35});
    check_joint((jcase){16, 64, 32, 2, 4, 4, 1, 0, 0.0f, 36});
}

Test(joint, groups_inside_and_across_blocks_match_the_published_port)
{
    check_joint((jcase){24, 64, 32, 0, 0, 4, 0, 8, 0.5f, 37});  /* 4 groups per block */
    check_joint((jcase){24, 64, 16, 2, 4, 4, 0, 32, 0.0f, 38}); /* a group spans 2 blocks */
    check_joint((jcase){24, 64, 16, 0, 0, 3, 1, 16, 0.3f, 39});
}

Test(joint, plain_gptq_without_sparsity)
{
    check_joint((jcase){32, 64, 16, 0, 0, 4, 0, 0, 0.0f, 40});
    check_joint((jcase){32, 64, 16, 0, 0, 2, 0, 16, 0.0f, 41});
}

Test(joint, every_tile_kernel_matches_the_published_port)
{
    int isa, tried = 0;
    for (isa = 0; isa < SPRUCE_ISA_COUNT; isa++) {
        if (!spruce_sparse_isa_supported(isa))
            continue;
        cr_assert_eq(spruce_sparse_isa_set(isa), 0);
        check_joint((jcase){21, 48, 16, 0, 0, 4, 0, 0, 0.5f, 42});
        check_joint((jcase){21, 48, 16, 2, 4, 8, 0, 16, 0.0f, 43});
        tried++;
    }
    cr_assert_geq(tried, 1);
}

/* ---- Wanda and magnitude: the grid of the dense W, no error feedback ----- */

static void check_baseline(spruce_method m, int G, int sym)
{
    layer L = make_layer(16, 64, 200, 50 + m);
    size_t n = 16 * 64, i;
    int Gg = G ? G : 64, ng = 64 / Gg;
    float *W = malloc(n * sizeof *W), *Wp = malloc(n * sizeof *Wp);
    uint8_t *mask = malloc(n), *mp = malloc(n);
    double *Wd = malloc(n * sizeof *Wd);
    ngrid ngr = {4, sym, Gg, malloc(16 * ng * sizeof(double)), malloc(16 * ng * sizeof(double))};
    spruce_qgrid g = grid_alloc(16, 64, Gg);
    spruce_prune_opts o;
    memcpy(W, L.W0, n * sizeof *W);
    memcpy(Wp, L.W0, n * sizeof *W);
    for (i = 0; i < n; i++)
        Wd[i] = L.W0[i];
    for (i = 0; i < 16 * (size_t)ng; i++)
        naive_find_f(Wd + (i / ng) * 64 + (i % ng) * Gg, Gg, 4, sym, 1, ngr.scale + i, ngr.zero + i);
    spruce_prune_opts_init(&o);
    o.method = m;
    cr_assert_eq(spruce_prune_layer(Wp, 16, 64, L.h, &o, mp, NULL), 0, "%s", spruce_errdetail());
    o.wbits = 4;
    o.groupsize = G;
    o.sym = sym;
    o.grid_out = &g;
    cr_assert_eq(spruce_prune_layer(W, 16, 64, L.h, &o, mask, NULL), 0, "%s", spruce_errdetail());
    cr_assert_eq(memcmp(mask, mp, n), 0, "%s: wbits changed the mask", spruce_method_name(m));
    check_on_grid(W, mask, &g);
    for (i = 0; i < (size_t)(16 * ng); i++)
        cr_assert(fabs(g.scale[i] - ngr.scale[i]) <= 1e-6 * ngr.scale[i] && g.zero[i] == ngr.zero[i],
                  "%s: grid %zu is (%g, %g), naive (%g, %g)", spruce_method_name(m), i,
                  (double)g.scale[i], (double)g.zero[i], ngr.scale[i], ngr.zero[i]);
    for (i = 0; i < n; i++) {
        size_t gi = (i / 64) * ng + (i % 64) / Gg;
        double want = mask[i] ? naive_quant32(L.W0[i], g.scale[gi], g.zero[gi], 4) : 0.0;
        cr_assert(fabs(W[i] - want) <= 1e-6 * fabs(want),
                  "%s: W[%zu] = %.9g, the dense weight rounded is %.9g", spruce_method_name(m), i,
                  (double)W[i], want);
    }
    free(W);
    free(Wp);
    free(mask);
    free(mp);
    free(Wd);
    free(ngr.scale);
    free(ngr.zero);
    free(g.scale);
    free(g.zero);
    free_layer(&L);
}

Test(baselines, wanda_and_magnitude_round_kept_weights_to_the_dense_grid)
{
    check_baseline(SPRUCE_METHOD_WANDA, 0, 0);
    check_baseline(SPRUCE_METHOD_WANDA, 16, 1);
    check_baseline(SPRUCE_METHOD_MAGNITUDE, 0, 1);
    check_baseline(SPRUCE_METHOD_MAGNITUDE, 32, 0);
}

/* ---- refused combinations ------------------------------------------------ */

static void expect_refused(spruce_prune_opts o, int cols, const char *word)
{
    layer L = make_layer(8, cols, 40, 60);
    float *W = malloc((size_t)8 * cols * sizeof *W);
    int rc;
    memcpy(W, L.W0, (size_t)8 * cols * sizeof *W);
    rc = spruce_prune_layer(W, 8, cols, L.h, &o, NULL, NULL);
    cr_assert_eq(rc, SPRUCE_EINVAL, "expected EINVAL, got %s (%s)", spruce_strerror(rc),
                 spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), word) != NULL, "detail '%s' lacks '%s'", spruce_errdetail(),
              word);
    cr_assert_eq(memcmp(W, L.W0, (size_t)8 * cols * sizeof *W), 0, "W was modified");
    free(W);
    free_layer(&L);
}

Test(errors, invalid_quantization_options_are_clear_errors)
{
    spruce_prune_opts o;
    spruce_qgrid g = grid_alloc(8, 64, 16);
    int bad[] = {1, 9, -1, 16}, i;
    for (i = 0; i < 4; i++) {
        spruce_prune_opts_init(&o);
        o.wbits = bad[i];
        expect_refused(o, 64, "wbits from 2 to 8");
    }
    spruce_prune_opts_init(&o);
    o.wbits = 4;
    o.groupsize = 24; /* does not divide 64 */
    expect_refused(o, 64, "divisor of the column count 64");
    o.groupsize = 4;
    o.prune_n = 4;
    o.prune_m = 8; /* N:M group larger than the quantization group */
    expect_refused(o, 64, "multiple of the N:M group");
    spruce_prune_opts_init(&o);
    o.wbits = 4;
    o.blocksize = 32;
    o.groupsize = 48; /* neither divides the other */
    expect_refused(o, 96, "divide the block size 32");
    spruce_prune_opts_init(&o);
    o.groupsize = 16; /* without wbits */
    expect_refused(o, 64, "needs wbits");
    spruce_prune_opts_init(&o);
    o.wbits = 4;
    o.groupsize = 32;
    o.grid_out = &g; /* allocated for groups of 16 */
    expect_refused(o, 64, "grid_out");
    o.method = SPRUCE_METHOD_WANDA;
    o.groupsize = 48;
    expect_refused(o, 64, "divisor");
    free(g.scale);
    free(g.zero);
}
