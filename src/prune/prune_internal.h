/* prune_internal.h: what the pruner's source files share (not installed).
 *
 * Layout conventions: W is (rows, cols) row-major; H and U are (cols, cols)
 * row-major; a block is the columns [i1, i2) of W. */
#ifndef SPRUCE_PRUNE_INTERNAL_H
#define SPRUCE_PRUNE_INTERNAL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "spruce_prune.h"

/* The calling thread's number inside an OpenMP region (0 outside). */
static inline int spruce__thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* The thread count for the pruner's OpenMP regions: t, or OpenMP's default. */
static inline int spruce__threads(int t)
{
#ifdef _OPENMP
    return t > 0 ? t : omp_get_max_threads();
#else
    (void)t;
    return 1;
#endif
}

struct spruce_hessian {
    int cols;
    int64_t tokens;   /* n: tokens added so far */
    float *H;         /* (cols, cols); the upper triangle is always current */
    int lower_stale;  /* the lower triangle must be mirrored before it is read */
};

/* The prepared inverse of one Hessian, shared by every layer that reads the
 * same input: U is the upper Cholesky factor of (H + lambda I)^-1, with dead
 * inputs (H_ii == 0) replaced by H_ii = 1 before damping. */
struct spruce_hinv {
    int cols;
    float *U;          /* (cols, cols) row-major, strictly lower part zero */
    uint8_t *dead;     /* cols flags: 1 = input was never active */
    int dead_columns;
    float damp_used;
    int damp_retries;
};

/* Mark the k smallest of n keys (ties broken by lower index first): keep[i]
 * becomes 0 for the k selected and 1 for the others.  Keys are compared as
 * unsigned integers; the bit pattern of a non-negative float orders like the
 * float.  Deterministic, O(n), allocation-free and thread-safe. */
void spruce__select_lowest(const uint32_t *keys, size_t n, size_t k, uint8_t *keep);

/* Workspace of spruce__select_lowest_team for a team of up to nt threads and
 * n keys: hist (nt * 2048), off and eq (nt each), cand (n). */
typedef struct {
    size_t *hist, *off, *eq;
    uint32_t *cand;
    size_t ncand, kk;
    uint32_t b1, thr;
} spruce__select_ws;
void spruce__select_lowest_team(const uint32_t *keys, size_t n, size_t k, uint8_t *keep,
                                spruce__select_ws *ws);

/* The N lowest of one group of m keys (m <= 256) get keep = 0, ties by index. */
void spruce__select_group(const uint32_t *keys, int m, int n, uint8_t *keep);

/* The order-preserving key of a non-negative float (-0 maps to +0). */
static inline uint32_t spruce__fkey(float x)
{
    union { float f; uint32_t u; } v;
    v.f = x + 0.0f; /* -0 + 0 = +0 */
    return v.u;
}

/* Factor H (the full symmetric (n, n) matrix given by its upper triangle
 * Hup, row-major) into U, the upper Cholesky factor of (H + lambda I)^-1
 * with lambda = damp * mean(diag H): one Cholesky of the reversed matrix and
 * one triangular inverse (U = P chol(P H P)^-T P with P the reversal).
 * Entries of diag(H) equal to zero are set to 1 first and flagged in dead.
 * On failure the damping is raised 10x up to max_retries times.
 * U is (n, n) caller-owned; dead (n bytes) may be NULL. */
int spruce__hinv_factor(const float *Hup, int n, float damp, int max_retries, float *U,
                        uint8_t *dead, int *dead_columns, float *damp_used, int *retries);

/* With a count (o->count > 0) spread over n units (SparseGPT: columns,
 * Wanda: rows), what units [a, b) prune: round(k b / n) - round(k a / n),
 * so consecutive parts add up to exactly k. */
static inline int64_t spruce__count_share(int64_t k, int64_t a, int64_t b, int64_t n)
{
    return (k * b + n / 2) / n - (k * a + n / 2) / n;
}

/* Option and shape checks shared by every method. */
int spruce__check_opts(const spruce_prune_opts *o, int rows, int cols);
/* The quantization options alone (wbits, groupsize against cols, the N:M
 * group and the block): for a whole model before any layer is pruned. */
int spruce__check_quant(const spruce_prune_opts *o, int cols);
/* 0, or SPRUCE_ENAN naming the first non-finite element of the (rows, cols) matrix. */
int spruce__check_finite(const float *A, int64_t rows, int64_t cols, const char *what);

/* ---- quantization (quant.c) ---------------------------------------------- */

/* w's value on the grid (scale, zero) with maxq = 2^bits - 1:
 * scale * (clamp(round(w / scale) + zero, 0, maxq) - zero), round half to even. */
static inline float spruce__qround(float w, float scale, float zero, float maxq)
{
    float l = rintf(w / scale) + zero;
    l = l < 0.0f ? 0.0f : l;
    l = l > maxq ? maxq : l;
    return scale * (l - zero);
}
/* The min-max grid of one row segment x[0..n) (quant.py's find_params). */
void spruce__qgrid_find(const float *x, int n, int bits, int sym, int scale_dtype, float *scale,
                        float *zero);
/* Groups [g0, g1) of every row of W (rows, cols) into g (g->groupsize columns each). */
void spruce__qgrid_rows(const float *W, int rows, int cols, int g0, int g1, const spruce_qgrid *g);
/* Every non-zero weight of W rounded to g (no error feedback). */
void spruce__qgrid_round(float *W, int rows, int cols, const spruce_qgrid *g);

/* The grid of a tile for the kernel: scale[(gofs + j) / G * 16 + t] for
 * column j of the block and lane t (NULL: no quantization). */
typedef struct {
    float maxq;
    int G, gofs;
    const float *scale, *zero;
} spruce__tile_q;

/* The in-block sweep of a tile of 16 rows (kernels/sparsegpt_tile.h), one
 * build per instruction set; spruce__sparsegpt_tile picks one once. */
typedef void (*spruce__tile_fn)(float *wt, uint8_t *kt, float *et, const float *Ublk, int ldu,
                                int bw, const float *invd2, int pn, int pm,
                                const spruce__tile_q *q, double *loss);
void sparsegpt_tile_scalar(float *wt, uint8_t *kt, float *et, const float *Ublk, int ldu, int bw,
                           const float *invd2, int pn, int pm, const spruce__tile_q *q,
                           double *loss);
void sparsegpt_tile_avx2(float *wt, uint8_t *kt, float *et, const float *Ublk, int ldu, int bw,
                         const float *invd2, int pn, int pm, const spruce__tile_q *q,
                         double *loss);
void sparsegpt_tile_avx512(float *wt, uint8_t *kt, float *et, const float *Ublk, int ldu, int bw,
                           const float *invd2, int pn, int pm, const spruce__tile_q *q,
                           double *loss);
spruce__tile_fn spruce__sparsegpt_tile(void);

/* The methods; arguments already checked.  xnorm2[j] = sum over tokens x_j^2. */
int spruce__sparsegpt(float *W, int rows, int cols, const struct spruce_hinv *hi,
                      const spruce_prune_opts *o, const spruce_qgrid *grid, uint8_t *mask,
                      double *loss);
int spruce__magnitude(float *W, int rows, int cols, const spruce_prune_opts *o, uint8_t *mask);
int spruce__wanda(float *W, int rows, int cols, const double *xnorm2,
                  const spruce_prune_opts *o, uint8_t *mask);

/* The Hessian's upper triangle without mirroring (for callers that only read it). */
const float *spruce__hessian_upper(const spruce_hessian *h);

#endif
