/* baselines.c: magnitude and Wanda pruning (no weight update).
 *
 * W is (rows, cols) row-major.  Magnitude scores |w| with one threshold over the
 * whole matrix (exactly round(s * rows * cols) pruned, or the layer's count);
 * Wanda (Sun et al. 2023) scores |w_rj| * ||x_j||_2 and prunes exactly
 * floor(s * cols) per output row (with a count k for the layer, row r prunes
 * round(k (r + 1) / rows) - round(k r / rows)), as
 * the published Wanda code does (its int(cols * s)): on small layers the
 * difference from rounding is visible (stories260k at 20%: perplexity 47.85
 * with floor, the published figure, against 55.5 with round).
 * N:M prunes the N lowest scores of every aligned group of M in a row.  Ties go
 * to the lower index.  The same statistics as SparseGPT: ||x_j||^2 = H_jj n / 2. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prune_internal.h"

/* N:M over every row: score |w_rj| * colscale[j] (colscale NULL: |w_rj|). */
static void prune_nm(float *W, int rows, int cols, int pn, int pm, const float *colscale,
                     uint8_t *mask, int nt)
{
    int r;
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (r = 0; r < rows; r++) {
        float *w = W + (size_t)r * cols;
        uint32_t keys[256];
        uint8_t keep[256];
        int g, k;
        for (g = 0; g < cols; g += pm) {
            for (k = 0; k < pm; k++)
                keys[k] = spruce__fkey(fabsf(w[g + k]) * (colscale ? colscale[g + k] : 1.0f));
            spruce__select_group(keys, pm, pn, keep);
            for (k = 0; k < pm; k++) {
                if (!keep[k])
                    w[g + k] = 0.0f;
                if (mask)
                    mask[(size_t)r * cols + g + k] = keep[k];
            }
        }
    }
}

int spruce__magnitude(float *W, int rows, int cols, const spruce_prune_opts *o, uint8_t *mask)
{
    size_t n = (size_t)rows * (size_t)cols, k;
    uint32_t *keys = NULL;
    uint8_t *keep = mask;
    int nt = spruce__threads(o->threads), rc = 0;
    spruce__select_ws ws = {0};
    if (o->prune_m > 0) {
        prune_nm(W, rows, cols, o->prune_n, o->prune_m, NULL, mask, nt);
        return 0;
    }
    keys = malloc(n * sizeof *keys);
    if (!keep)
        keep = malloc(n);
    ws.hist = malloc((size_t)nt * (2048 + 2) * sizeof *ws.hist);
    ws.cand = malloc(n * sizeof *ws.cand);
    if (!keys || !keep || !ws.hist || !ws.cand) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "magnitude: scores for (%d, %d)", rows, cols);
        goto done;
    }
    ws.off = ws.hist + (size_t)nt * 2048;
    ws.eq = ws.off + nt;
    k = o->count > 0 ? (size_t)o->count : (size_t)llround((double)o->sparsity * (double)n);
    #pragma omp parallel num_threads(nt)
    {
        int64_t q;
        #pragma omp for schedule(static)
        for (q = 0; q < (int64_t)n; q++)
            keys[q] = spruce__fkey(fabsf(W[q]));
        spruce__select_lowest_team(keys, n, k, keep, &ws);
        #pragma omp for schedule(static)
        for (q = 0; q < (int64_t)n; q++)
            if (!keep[q])
                W[q] = 0.0f;
    }
done:
    free(keys);
    if (keep != mask)
        free(keep);
    free(ws.hist);
    free(ws.cand);
    return rc;
}

int spruce__wanda(float *W, int rows, int cols, const double *xnorm2, const spruce_prune_opts *o,
                  uint8_t *mask)
{
    float *scale = malloc((size_t)cols * sizeof *scale);
    uint32_t *keys = NULL;
    uint8_t *keep = NULL;
    int nt = spruce__threads(o->threads), j, r, rc = 0;
    /* floor, like the published Wanda code's int(cols * s); the small excess
     * absorbs float's rounding of decimal targets (0.7f * 100 = 69.99999). */
    size_t k = (size_t)floor((double)o->sparsity * (double)cols * (1.0 + 1e-6));
    if (!scale)
        return spruce__seterr(SPRUCE_ENOMEM, "wanda: %d column norms", cols);
    for (j = 0; j < cols; j++)
        scale[j] = (float)sqrt(xnorm2[j]);
    if (o->prune_m > 0) {
        prune_nm(W, rows, cols, o->prune_n, o->prune_m, scale, mask, nt);
        goto done;
    }
    keys = malloc((size_t)nt * cols * sizeof *keys);
    keep = malloc((size_t)nt * cols);
    if (!keys || !keep) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "wanda: scores of %d columns for %d threads", cols, nt);
        goto done;
    }
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (r = 0; r < rows; r++) {
        float *w = W + (size_t)r * cols;
        uint32_t *key = keys + (size_t)spruce__thread_id() * cols;
        uint8_t *kp = keep + (size_t)spruce__thread_id() * cols;
        int c;
        for (c = 0; c < cols; c++)
            key[c] = spruce__fkey(fabsf(w[c]) * scale[c]);
        spruce__select_lowest(key, (size_t)cols,
                              o->count > 0 ? (size_t)spruce__count_share(o->count, r, r + 1, rows)
                                           : k, kp);
        for (c = 0; c < cols; c++)
            if (!kp[c])
                w[c] = 0.0f;
        if (mask)
            memcpy(mask + (size_t)r * cols, kp, (size_t)cols);
    }
done:
    free(scale);
    free(keys);
    free(keep);
    return rc;
}
