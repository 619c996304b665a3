/* spruce_prune.h: one-shot pruning of one linear layer.
 *
 * A linear layer computes y = W x with W (rows, cols) row-major, x of length cols.
 * Calibration activations X are (tokens, cols) row-major float32.
 *
 *   spruce_hessian *h = spruce_hessian_alloc(cols);
 *   spruce_hessian_add(h, X, tokens);           // any number of batches
 *   spruce_prune_opts o; spruce_prune_opts_init(&o);
 *   o.sparsity = 0.5f;                           // or o.prune_n = 2, o.prune_m = 4
 *   spruce_prune_result r;
 *   spruce_prune_layer(W, rows, cols, h, &o, mask, &r);
 *   spruce_hessian_free(h);
 *
 * Several layers that read the same input (q/k/v, gate/up) share one accumulator.
 * Every function returns 0 or a negative SPRUCE_E* code (see spruce_error.h);
 * spruce_errdetail() then says what was wrong. */
#ifndef SPRUCE_PRUNE_H
#define SPRUCE_PRUNE_H

#include <stddef.h>
#include <stdint.h>

#include "spruce_error.h"
#include "spruce_qgrid.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Hessian accumulator: H = (2/n) * sum over n tokens of x x^T ---------- */

typedef struct spruce_hessian spruce_hessian;

/* A zeroed accumulator for inputs of length cols; NULL when out of memory. */
spruce_hessian *spruce_hessian_alloc(int cols);
void spruce_hessian_free(spruce_hessian *h); /* NULL is a no-op */

/* Add a batch: X is (tokens, cols) row-major.  H is rescaled so that after any
 * sequence of batches it equals (2/n) sum x x^T over all n tokens so far. */
int spruce_hessian_add(spruce_hessian *h, const float *X, int tokens);

int spruce_hessian_cols(const spruce_hessian *h);
int64_t spruce_hessian_tokens(const spruce_hessian *h);
/* The full symmetric (cols, cols) matrix, row-major (both triangles valid).
 * The first call after an add mirrors the upper triangle into the lower one,
 * so it must not run concurrently with itself or an add on the same
 * accumulator; the pruning functions read only the upper triangle and may share
 * one accumulator between threads. */
const float *spruce_hessian_matrix(const spruce_hessian *h);

/* Sums over processes (spruce_dist.h).  Make h one share of a Hessian over
 * total tokens, its own and other processes': H <- H * tokens / total and
 * tokens <- total (SPRUCE_EINVAL unless tokens <= total).  The element-wise
 * sum of the shares' spruce_hessian_data is then the Hessian of all of them. */
int spruce_hessian_set_share(spruce_hessian *h, int64_t total);
/* The (cols, cols) row-major matrix to read or overwrite in place; only its
 * upper triangle counts (the lower one is mirrored again when next read). */
float *spruce_hessian_data(spruce_hessian *h);

/* ---- Pruning ------------------------------------------------------------- */

typedef enum {
    SPRUCE_METHOD_SPARSEGPT = 0,
    SPRUCE_METHOD_WANDA = 1,
    SPRUCE_METHOD_MAGNITUDE = 2
} spruce_method;

typedef struct {
    spruce_method method; /* default SPARSEGPT */
    float sparsity;       /* unstructured target in [0, 1); used when prune_m == 0 */
    int64_t count;        /* unstructured, > 0: prune exactly count weights of the layer
                             instead of the fraction sparsity (a per-layer plan's count,
                             spruce_plan_counts); 0 = sparsity decides */
    int prune_n;          /* N:M: prune N of every M consecutive weights of a row */
    int prune_m;          /* 0 = unstructured */
    int blocksize;        /* SparseGPT column block B, default 128 */
    float damp;           /* relative damping, default 0.01 */
    int max_damp_retries; /* retries with 10x damping when Cholesky fails, default 4
                             (from damp = 0 the first retry uses 1e-6) */
    int threads;          /* 0 = OpenMP default */
    int wbits;            /* 0 = no quantization; 2..8: round kept weights to a grid */
    int groupsize;        /* columns per grid (0 = one grid per row) */
    int sym;              /* 1: symmetric grid */
    int scale_dtype;      /* spruce_qscale_dtype: the type the scales are stored in
                             (the checkpoint's weight dtype), default float32 */
    spruce_qgrid *grid_out; /* optional, with wbits > 0: receives the grid; the caller
                               sets rows, cols, groupsize and allocates scale and zero
                               of (rows, cols / groupsize) */
} spruce_prune_opts;

void spruce_prune_opts_init(spruce_prune_opts *o);

/* Human-readable method name and its parse ("sparsegpt", "wanda", "magnitude"). */
const char *spruce_method_name(spruce_method m);
int spruce_method_parse(const char *s, spruce_method *out);

typedef struct {
    double sparsity;      /* realised fraction of zeros in the returned W */
    double loss;          /* SparseGPT: sum (w - q)^2 / U_ii^2 / 2; baselines: 0 */
    double seconds;       /* wall time of this call */
    float damp_used;      /* relative damping that finally succeeded */
    int damp_retries;     /* how many times damping was raised */
    int dead_columns;     /* inputs with H_ii == 0 (their weights zeroed) */
} spruce_prune_result;

/* Prune W (rows, cols) row-major in place with the statistics in h (for
 * magnitude h may be NULL).  mask, if not NULL, receives rows*cols bytes,
 * 1 = weight kept, 0 = pruned.  Results are bit-identical for a fixed thread
 * count.  Errors: SPRUCE_EINVAL (bad options, N >= M, M not dividing the block
 * size or cols, sparsity outside [0,1)), SPRUCE_ESHAPE (h->cols != cols),
 * SPRUCE_ENAN (non-finite W or H), SPRUCE_ESINGULAR (no damping helped). */
int spruce_prune_layer(float *W, int rows, int cols, const spruce_hessian *h,
                       const spruce_prune_opts *opts, uint8_t *mask,
                       spruce_prune_result *res);

/* ---- Sharing one factorisation between layers ---------------------------
 *
 * spruce_prune_layer factors the damped Hessian for every call.  Layers that
 * read the same input (q/k/v; gate/up) can factor it once:
 *
 *   spruce_hinv *hi;
 *   spruce_hinv_prepare(h, &o, &hi);            // uses o.damp, o.max_damp_retries
 *   spruce_prune_layer_prepared(Wq, rq, cols, hi, &o, maskq, &rq_res);
 *   spruce_prune_layer_prepared(Wk, rk, cols, hi, &o, maskk, &rk_res);
 *   spruce_hinv_free(hi);
 *
 * spruce_prune_layer_prepared runs SparseGPT only (o->method must be SPARSEGPT)
 * and gives bit-identical results to spruce_prune_layer with the same options.
 * The preparation is the Cholesky factor U of (H + lambda I)^-1, lambda =
 * damp * mean(diag H), after dead inputs (H_ii == 0) were set to H_ii = 1; it is
 * computed as U = P chol(P H P)^-T P (P reverses the order of the inputs): one
 * Cholesky and one triangular inverse instead of two Cholesky and an inverse. */
typedef struct spruce_hinv spruce_hinv;

int spruce_hinv_prepare(const spruce_hessian *h, const spruce_prune_opts *opts,
                        spruce_hinv **out);
void spruce_hinv_free(spruce_hinv *hi); /* NULL is a no-op */
int spruce_hinv_cols(const spruce_hinv *hi);
/* U, (cols, cols) row-major upper triangular, U^T U = (H + lambda I)^-1. */
const float *spruce_hinv_factor(const spruce_hinv *hi);

int spruce_prune_layer_prepared(float *W, int rows, int cols, const spruce_hinv *hi,
                                const spruce_prune_opts *opts, uint8_t *mask,
                                spruce_prune_result *res);

/* ---- Measuring the result ------------------------------------------------ */

/* The relative output error ||(W0 - W) X^T||^2 / ||W0 X^T||^2 over the tokens
 * accumulated in h, computed from H (tokens never revisited): W0 is the dense
 * layer, W the pruned one, both (rows, cols).  Costs one (rows, cols, cols)
 * symmetric product per matrix. */
int spruce_prune_rel_error(const float *W0, const float *W, int rows, int cols,
                           const spruce_hessian *h, double *out);

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_PRUNE_H */
