/* sparsegpt.c: the SparseGPT sweep (Frantar & Alistarh 2023) over one layer.
 *
 * W is (rows, cols) row-major; U is (cols, cols) upper triangular with
 * U^T U = (H + lambda I)^-1.  Columns are visited in blocks [i1, i2) of B:
 *
 *   choose the mask of the block (unstructured: one threshold on w^2 / U_jj^2
 *   over the whole rows x B block, exactly round(s * rows * B) pruned; with a
 *   count k for the layer, round(k i2 / cols) - round(k i1 / cols));
 *   for each column j of the block, for each row r (rows are independent):
 *     q = w_rj if kept else 0;   e_r = (w_rj - q) / U_jj;   loss += e_r^2 / 2
 *     w_rk -= e_r * U_jk  for k in (j, i2)      (inside the block only)
 *     (N:M: when j - i1 is a multiple of M, the N lowest w^2 / U^2 of the next
 *      M already-updated weights of the row are pruned)
 *   W[:, i2:] -= E @ U[i1:i2, i2:]              (one sgemm, E is (rows, B))
 *
 * The in-block work is split over tiles of 16 rows with OpenMP (a tile is
 * copied column-major so that the kernel's inner loops are 16-lane vectors and
 * its working set, 16 x B floats plus B x B of U, stays in L1/L2); the sgemm is
 * called outside any parallel region so that OpenBLAS uses its own threads.
 * Every row is computed by one thread in a fixed order, so the result does not
 * depend on the thread count except through the sgemm's partitioning.
 *
 * With wbits (o->wbits > 0; g the grid, see quant.c): the grid of every row is
 * found on the whole W before anything is pruned (sparsegpt.py); with
 * groups of G columns, the grids of the groups that start in a block are found
 * when the sweep reaches that block, from W as the previous blocks left it
 * (GPTQ's find_params(W[:, i1+i : i1+i+G]) at (i1 + i) % G == 0, which reads W,
 * not the block's working copy).  The kernel rounds each kept weight to its
 * grid before its error is spread. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <lapacke.h>

#include "config.h"
#include "prune_internal.h"
#include "spruce_sparse.h"

#define TILE 16 /* rows per tile: one vector of 16 floats per column */

/* ---- the prepared inverse ------------------------------------------------ */

/* A (n, n) is filled, as a column-major matrix, with the upper triangle of
 * P (H + lambda I) P (P reverses the index order); dead inputs get H_ii = 1. */
static void fill_reversed(const float *Hup, int n, float lambda, const uint8_t *dead, float *A)
{
    int i, j;
    /* column-major A(i, j), i <= j, is H[n-1-j][n-1-i], an upper entry of H:
     * column j of A is row n-1-j of H read backwards from its last element.
     * (Serial: an OpenMP team here would spin against OpenBLAS's threads in
     * the factorisation that follows, and the copy is memory-bound anyway.) */
    for (j = 0; j < n; j++) {
        const float *hrow = Hup + (size_t)(n - 1 - j) * n;
        float *acol = A + (size_t)j * n;
        for (i = 0; i <= j; i++)
            acol[i] = hrow[n - 1 - i];
        if (dead && dead[n - 1 - j])
            acol[j] = 1.0f;
        acol[j] += lambda;
        for (i = j + 1; i < n; i++)
            acol[i] = 0.0f;
    }
}

int spruce__hinv_factor(const float *Hup, int n, float damp, int max_retries, float *U,
                        uint8_t *dead, int *dead_columns, float *damp_used, int *retries)
{
    double mean = 0.0;
    int i, ndead = 0, attempt;
    uint8_t *dflags = dead;
    size_t nn = (size_t)n * (size_t)n, k;
    float d = damp;

    if (!dflags && !(dflags = malloc((size_t)n)))
        return spruce__seterr(SPRUCE_ENOMEM, "hessian inverse: %d flags", n);
    for (i = 0; i < n; i++) {
        float hii = Hup[(size_t)i * n + i];
        dflags[i] = hii == 0.0f;
        ndead += dflags[i];
        mean += dflags[i] ? 1.0 : (double)hii;
    }
    mean /= n;
    if (dead_columns)
        *dead_columns = ndead;
    for (attempt = 0; attempt <= max_retries; attempt++) {
        lapack_int info;
        int ok = 1;
        if (attempt > 0)
            d = d > 0.0f ? d * 10.0f : 1e-6f;
        fill_reversed(Hup, n, (float)(d * mean), dflags, U);
        /* As column-major, A = R^T R (R upper), then A <- R^-1. */
        info = LAPACKE_spotrf(LAPACK_COL_MAJOR, 'U', n, U, n);
        if (info == 0)
            info = LAPACKE_strtri(LAPACK_COL_MAJOR, 'U', 'N', n, U, n);
        if (info < 0) {
            if (!dead)
                free(dflags);
            return spruce__seterr(SPRUCE_EINVAL, "hessian inverse: LAPACK argument %d rejected",
                                  (int)-info);
        }
        if (info == 0)
            for (i = 0; i < n && ok; i++)
                ok = isfinite(U[(size_t)i * n + i]) && U[(size_t)i * n + i] > 0.0f;
        if (info == 0 && ok) {
            /* Reversing the whole array turns column-major R^-1 into row-major
             * U = P R^-T P, the upper Cholesky factor of the inverse; the junk
             * below the diagonal is cleared. */
            for (k = 0; k < nn / 2; k++) {
                float t = U[k];
                U[k] = U[nn - 1 - k];
                U[nn - 1 - k] = t;
            }
            for (i = 1; i < n; i++)
                memset(U + (size_t)i * n, 0, (size_t)i * sizeof *U);
            if (damp_used)
                *damp_used = d;
            if (retries)
                *retries = attempt;
            if (!dead)
                free(dflags);
            return 0;
        }
    }
    if (!dead)
        free(dflags);
    return spruce__seterr(SPRUCE_ESINGULAR,
                          "hessian (%d, %d): Cholesky failed with relative damping %g through "
                          "%g (%d retries); the calibration inputs are degenerate",
                          n, n, (double)damp, (double)d, max_retries);
}

/* ---- the sweep ----------------------------------------------------------- */

/* The tile kernel for this CPU, chosen once by the runtime's dispatch
 * (SPRUCE_ISA=scalar|avx2|avx512 overrides it). */
spruce__tile_fn spruce__sparsegpt_tile(void)
{
    int isa = spruce_sparse_isa();
#ifdef SPRUCE_HAVE_AVX512
    if (isa == SPRUCE_ISA_AVX512)
        return sparsegpt_tile_avx512;
#endif
#ifdef SPRUCE_HAVE_AVX2
    if (isa == SPRUCE_ISA_AVX2 || isa == SPRUCE_ISA_AVX512)
        return sparsegpt_tile_avx2;
#endif
    (void)isa;
    return sparsegpt_tile_scalar;
}

/* The grid of the tile's lanes for the groups [k0, k1) (padding lanes: 1, 0). */
static void gather_grid(const spruce_qgrid *g, int r0, int nr, int k0, int k1, float *ts, float *tz)
{
    int64_t ng = g->cols / g->groupsize;
    int k, t;
    for (k = k0; k < k1; k++)
        for (t = 0; t < TILE; t++) {
            size_t i = (size_t)(k - k0) * TILE + t, src = (size_t)(r0 + t) * ng + k;
            ts[i] = t < nr ? g->scale[src] : 1.0f;
            tz[i] = t < nr ? g->zero[src] : 0.0f;
        }
}

int spruce__sparsegpt(float *W, int rows, int cols, const struct spruce_hinv *hi,
                      const spruce_prune_opts *o, const spruce_qgrid *grid, uint8_t *mask,
                      double *loss_out)
{
    const float *U = hi->U;
    int B = o->blocksize < cols ? o->blocksize : cols;
    int pn = o->prune_m > 0 ? o->prune_n : 0, pm = o->prune_m > 0 ? o->prune_m : 0;
    int nt = spruce__threads(o->threads), ntiles = (rows + TILE - 1) / TILE, i1, r, j;
    size_t blk = (size_t)rows * (size_t)B, tw = (size_t)TILE * B;
    float *E = NULL, *invd2 = NULL, *twork = NULL, *tgrid = NULL;
    uint32_t *keys = NULL;
    uint8_t *keep = NULL, *tkeep = NULL;
    double *rowloss = NULL, loss = 0.0;
    spruce__tile_fn tile = spruce__sparsegpt_tile();
    spruce__select_ws sel;
    int rc = 0;

    E = malloc(blk * sizeof *E);
    keys = pm ? NULL : malloc(blk * sizeof *keys);
    keep = pm ? NULL : malloc(blk);
    invd2 = malloc((size_t)cols * sizeof *invd2);
    rowloss = calloc((size_t)rows, sizeof *rowloss);
    twork = malloc((size_t)nt * 2 * tw * sizeof *twork); /* per thread: wt, et */
    tkeep = malloc((size_t)nt * tw);
    if (grid) /* per thread: the scale and zero of at most bw groups of 16 lanes */
        tgrid = malloc((size_t)nt * 2 * tw * sizeof *tgrid);
    memset(&sel, 0, sizeof sel);
    if (!pm) {
        sel.hist = malloc((size_t)nt * (2048 + 2) * sizeof *sel.hist);
        sel.off = sel.hist ? sel.hist + (size_t)nt * 2048 : NULL;
        sel.eq = sel.hist ? sel.off + nt : NULL;
        sel.cand = malloc(blk * sizeof *sel.cand);
    }
    if (!E || (!pm && (!keys || !keep || !sel.hist || !sel.cand)) || !invd2 || !rowloss || !twork ||
        !tkeep || (grid && !tgrid)) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "sparsegpt: workspace for (%d, %d) blocks", rows, B);
        goto done;
    }
    for (j = 0; j < cols; j++) {
        float d = U[(size_t)j * cols + j];
        invd2[j] = 1.0f / (d * d);
    }
    if (grid) /* one grid per row (or the first groups) on W before pruning */
        spruce__qgrid_rows(W, rows, cols, 0, (int)(cols / grid->groupsize), grid);
    /* dead inputs: their weights are zeroed (score 0, so pruned first) */
    for (j = 0; j < cols; j++)
        if (hi->dead[j])
            for (r = 0; r < rows; r++)
                W[(size_t)r * cols + j] = 0.0f;

    for (i1 = 0; i1 < cols; i1 += B) {
        int i2 = i1 + B < cols ? i1 + B : cols, bw = i2 - i1;
        const float *Ublk = U + (size_t)i1 * cols + i1;
        if (spruce__cancelled()) {
            rc = spruce__seterr(SPRUCE_ECANCELED, "sparsegpt: stopped at column %d of %d", i1, cols);
            goto done;
        }
        int G = grid ? (int)grid->groupsize : 1, k0 = i1 / G, k1 = (i2 - 1) / G + 1;
        if (grid && G < cols && i1 % G == 0) /* groups starting here: from W as it is now */
            spruce__qgrid_rows(W, rows, cols, k0, (i2 + G - 1) / G, grid);
        /* One parallel region per block: fewer wake-ups of the OpenMP team. */
        #pragma omp parallel num_threads(nt) private(r, j)
        {
            int tid = spruce__thread_id(), ti;
            float *wt = twork + (size_t)tid * 2 * tw, *et = wt + tw;
            uint8_t *kt = tkeep + (size_t)tid * tw;
            if (!pm) {
                /* one threshold over the rows x bw block */
                #pragma omp for schedule(static)
                for (r = 0; r < rows; r++) {
                    const float *w = W + (size_t)r * cols + i1;
                    for (j = 0; j < bw; j++)
                        keys[(size_t)r * bw + j] = spruce__fkey(w[j] * w[j] * invd2[i1 + j]);
                }
                spruce__select_lowest_team(keys, (size_t)rows * bw,
                                           o->count > 0 ? (size_t)spruce__count_share(o->count, i1,
                                                                                       i2, cols)
                                           : (size_t)llround((double)o->sparsity * (double)rows * bw),
                                           keep, &sel);
            }
            #pragma omp for schedule(static)
            for (ti = 0; ti < ntiles; ti++) {
                int r0 = ti * TILE, nr = rows - r0 < TILE ? rows - r0 : TILE, t, k;
                double tl[TILE] = {0};
                spruce__tile_q tq, *tqp = NULL;
                /* gather the tile column-major; padding rows are zero and kept */
                for (t = 0; t < TILE; t++) {
                    const float *w = W + (size_t)(r0 + t) * cols + i1;
                    const uint8_t *kp = keep ? keep + (size_t)(r0 + t) * bw : NULL;
                    for (k = 0; k < bw; k++) {
                        wt[(size_t)k * TILE + t] = t < nr ? w[k] : 0.0f;
                        kt[(size_t)k * TILE + t] = t < nr && kp ? kp[k] : 1;
                    }
                }
                if (grid) {
                    float *ts = tgrid + (size_t)tid * 2 * tw, *tz = ts + tw;
                    gather_grid(grid, r0, nr, k0, k1, ts, tz);
                    tq.maxq = (float)((1 << grid->bits) - 1);
                    tq.G = G;
                    tq.gofs = i1 - k0 * G;
                    tq.scale = ts;
                    tq.zero = tz;
                    tqp = &tq;
                }
                tile(wt, kt, et, Ublk, cols, bw, invd2 + i1, pn, pm, tqp, tl);
                for (t = 0; t < nr; t++) {
                    float *w = W + (size_t)(r0 + t) * cols + i1, *e = E + (size_t)(r0 + t) * bw;
                    uint8_t *m = mask ? mask + (size_t)(r0 + t) * cols + i1 : NULL;
                    for (k = 0; k < bw; k++) {
                        w[k] = wt[(size_t)k * TILE + t];
                        e[k] = et[(size_t)k * TILE + t];
                    }
                    if (m)
                        for (k = 0; k < bw; k++)
                            m[k] = kt[(size_t)k * TILE + t];
                    rowloss[r0 + t] += tl[t];
                }
            }
        }
        if (i2 < cols) /* W[:, i2:] -= E (rows, bw) @ U[i1:i2, i2:] (bw, cols - i2) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, cols - i2, bw, -1.0f,
                        E, bw, U + (size_t)i1 * cols + i2, cols, 1.0f, W + i2, cols);
    }
    for (r = 0; r < rows; r++)
        loss += rowloss[r];
    *loss_out = loss;
done:
    free(E);
    free(keys);
    free(keep);
    free(invd2);
    free(rowloss);
    free(twork);
    free(tkeep);
    free(tgrid);
    free(sel.hist);
    free(sel.cand);
    return rc;
}
