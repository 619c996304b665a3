/* prune_testutil.h: deterministic data and double-precision references shared
 * by the pruner's tests (test_hessian, test_prune, test_quant, test_bench_prune). */
#ifndef SPRUCE_PRUNE_TESTUTIL_H
#define SPRUCE_PRUNE_TESTUTIL_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spruce_prune.h"

typedef struct {
    uint64_t s;
} rng_t;

static inline double rng_uniform(rng_t *r) /* (0, 1) */
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) / 9007199254740992.0;
}

static inline double rng_normal(rng_t *r)
{
    double u = rng_uniform(r), v = rng_uniform(r);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* LLM-like activations X (tokens, cols): rank-r structure + noise + a few
 * large-magnitude channels. */
static inline float *make_acts(int tokens, int cols, uint64_t seed)
{
    rng_t g = {seed};
    int r = cols / 8 > 2 ? cols / 8 : 2, t, j, k;
    float *X = malloc((size_t)tokens * cols * sizeof *X);
    double *A = malloc((size_t)r * cols * sizeof *A), *z = malloc((size_t)r * sizeof *z);
    for (k = 0; k < r * cols; k++)
        A[k] = rng_normal(&g) / sqrt((double)r);
    for (t = 0; t < tokens; t++) {
        for (k = 0; k < r; k++)
            z[k] = rng_normal(&g);
        for (j = 0; j < cols; j++) {
            double v = 0.3 * rng_normal(&g);
            for (k = 0; k < r; k++)
                v += z[k] * A[(size_t)k * cols + j];
            if (j % 17 == 3)
                v *= 12.0; /* outlier channels */
            X[(size_t)t * cols + j] = (float)v;
        }
    }
    free(A);
    free(z);
    return X;
}

static inline float *make_weights(int rows, int cols, uint64_t seed)
{
    rng_t g = {seed};
    size_t i, n = (size_t)rows * cols;
    float *W = malloc(n * sizeof *W);
    for (i = 0; i < n; i++)
        W[i] = (float)(rng_normal(&g) / sqrt((double)cols));
    return W;
}

/* H = (2/n) X^T X in double, (cols, cols) full. */
static inline double *naive_hessian(const float *X, int tokens, int cols)
{
    double *H = calloc((size_t)cols * cols, sizeof *H);
    int t, i, j;
    for (t = 0; t < tokens; t++) {
        const float *x = X + (size_t)t * cols;
        for (i = 0; i < cols; i++)
            for (j = 0; j < cols; j++)
                H[(size_t)i * cols + j] += (double)x[i] * x[j];
    }
    for (i = 0; i < cols * cols; i++)
        H[i] *= 2.0 / tokens;
    return H;
}

/* In-place lower Cholesky A = L L^T of a (n, n) double matrix; -1 if not PD. */
static inline int dchol(double *A, int n)
{
    int i, j, k;
    for (j = 0; j < n; j++) {
        double d = A[(size_t)j * n + j];
        for (k = 0; k < j; k++)
            d -= A[(size_t)j * n + k] * A[(size_t)j * n + k];
        if (!(d > 0.0))
            return -1;
        d = sqrt(d);
        A[(size_t)j * n + j] = d;
        for (i = j + 1; i < n; i++) {
            double s = A[(size_t)i * n + j];
            for (k = 0; k < j; k++)
                s -= A[(size_t)i * n + k] * A[(size_t)j * n + k];
            A[(size_t)i * n + j] = s / d;
        }
        for (i = 0; i < j; i++)
            A[(size_t)i * n + j] = 0.0;
    }
    return 0;
}

/* The published preparation in double: dead inputs, damping, inverse, then
 * the upper Cholesky factor U of the inverse.  H (n, n) is modified.  dead
 * (n bytes) receives the dead flags. */
static inline double *naive_hinv_upper(double *H, int n, double damp, uint8_t *dead)
{
    double mean = 0.0, *L = malloc((size_t)n * n * sizeof *L), *Hi = calloc((size_t)n * n, sizeof *Hi);
    int i, j, k;
    for (i = 0; i < n; i++) {
        dead[i] = H[(size_t)i * n + i] == 0.0;
        if (dead[i])
            H[(size_t)i * n + i] = 1.0;
        mean += H[(size_t)i * n + i];
    }
    mean /= n;
    for (i = 0; i < n; i++)
        H[(size_t)i * n + i] += damp * mean;
    memcpy(L, H, (size_t)n * n * sizeof *L);
    if (dchol(L, n)) {
        free(L);
        free(Hi);
        return NULL;
    }
    /* Hi = H^-1 column by column: solve L L^T x = e_j */
    for (j = 0; j < n; j++) {
        double *x = malloc((size_t)n * sizeof *x);
        for (i = 0; i < n; i++) {
            double s = i == j;
            for (k = 0; k < i; k++)
                s -= L[(size_t)i * n + k] * x[k];
            x[i] = s / L[(size_t)i * n + i];
        }
        for (i = n - 1; i >= 0; i--) {
            double s = x[i];
            for (k = i + 1; k < n; k++)
                s -= L[(size_t)k * n + i] * x[k];
            x[i] = s / L[(size_t)i * n + i];
        }
        for (i = 0; i < n; i++)
            Hi[(size_t)i * n + j] = x[i];
        free(x);
    }
    if (dchol(Hi, n)) { /* Hi = L2 L2^T, U = L2^T */
        free(L);
        free(Hi);
        return NULL;
    }
    for (i = 0; i < n; i++)
        for (j = 0; j < n; j++)
            L[(size_t)i * n + j] = j >= i ? Hi[(size_t)j * n + i] : 0.0;
    free(Hi);
    return L;
}

static inline int cmp_idx_key(double a, int ia, double b, int ib)
{
    return a < b || (a == b && ia < ib);
}

/* The unblocked OBS sweep in double, mask chosen like spruce: unstructured by
 * block of B over w^2/U_jj^2 (exactly round(s rows bw)), or N:M per group.
 * W (rows, cols) double in place; keep receives the mask; returns the loss. */
static inline double naive_obs(double *W, int rows, int cols, const double *U, const uint8_t *dead,
                               float sparsity, int pn, int pm, int B, uint8_t *keep)
{
    double loss = 0.0;
    int i, r, j, c;
    for (j = 0; j < cols; j++)
        if (dead[j])
            for (r = 0; r < rows; r++)
                W[(size_t)r * cols + j] = 0.0;
    for (i = 0; i < cols; i++) {
        if (!pm && i % B == 0) {
            int bw = i + B < cols ? B : cols - i, nb = rows * bw, a, b, k;
            float *sc = malloc((size_t)nb * sizeof *sc);
            k = (int)llround((double)sparsity * nb);
            for (r = 0; r < rows; r++)
                for (c = 0; c < bw; c++) {
                    double w = W[(size_t)r * cols + i + c], d = U[(size_t)(i + c) * cols + i + c];
                    sc[r * bw + c] = (float)(w * w / (d * d));
                }
            for (a = 0; a < nb; a++) { /* rank by (score, index) */
                int rank = 0;
                for (b = 0; b < nb; b++)
                    rank += cmp_idx_key(sc[b], b, sc[a], a);
                keep[(size_t)(a / bw) * cols + i + a % bw] = rank >= k;
            }
            free(sc);
        }
        if (pm && i % pm == 0) {
            for (r = 0; r < rows; r++) {
                float sc[256];
                int a, b;
                for (c = 0; c < pm; c++) {
                    double w = W[(size_t)r * cols + i + c], d = U[(size_t)(i + c) * cols + i + c];
                    sc[c] = (float)(w * w / (d * d));
                }
                for (a = 0; a < pm; a++) {
                    int rank = 0;
                    for (b = 0; b < pm; b++)
                        rank += cmp_idx_key(sc[b], b, sc[a], a);
                    keep[(size_t)r * cols + i + a] = rank >= pn;
                }
            }
        }
        for (r = 0; r < rows; r++) {
            double *w = W + (size_t)r * cols, d = U[(size_t)i * cols + i];
            double q = keep[(size_t)r * cols + i] ? w[i] : 0.0, err = (w[i] - q) / d;
            loss += err * err / 2.0;
            for (c = i; c < cols; c++)
                w[c] -= err * U[(size_t)i * cols + c];
            w[i] = q;
        }
    }
    return loss;
}

/* A synthetic layer: activations X (tokens, cols), weights W0 (rows, cols) and
 * the Hessian of X. */
typedef struct {
    int rows, cols, tokens;
    float *X, *W0;
    spruce_hessian *h;
} layer;

static inline layer make_layer(int rows, int cols, int tokens, uint64_t seed)
{
    layer L = {rows, cols, tokens, make_acts(tokens, cols, seed), make_weights(rows, cols, seed + 1),
               spruce_hessian_alloc(cols)};
    cr_assert_eq(spruce_hessian_add(L.h, L.X, tokens), 0);
    return L;
}

static inline void free_layer(layer *L)
{
    free(L->X);
    free(L->W0);
    spruce_hessian_free(L->h);
}

#endif
