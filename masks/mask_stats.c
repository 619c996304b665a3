/* mask_stats.c: what a mask looks like (sparsity per row and column block,
 * N:M structure) and how two masks compare.  No HDF5 here. */
#include <stdlib.h>
#include <string.h>

#include "spruce_masks.h"

/* N:M structure: for M in {4, 8, 16} dividing cols, the most kept weights in
 * any aligned group of M; the smallest M where that is at most M / 2. */
static void detect_nm(const uint8_t *keep, int64_t rows, int64_t cols, spruce_mask_nm *nm)
{
    static const int ms[] = {4, 8, 16};
    size_t k;
    int64_t r, g;
    nm->n = nm->m = nm->exact = 0;
    for (k = 0; k < sizeof ms / sizeof ms[0]; k++) {
        int m = ms[k], nmax = 0, nmin = m, j;
        if (cols % m)
            continue;
        for (r = 0; r < rows && nmax <= m / 2; r++) {
            const uint8_t *row = keep + (size_t)r * (size_t)cols;
            for (g = 0; g < cols; g += m) {
                int c = 0;
                for (j = 0; j < m; j++)
                    c += row[g + j] != 0;
                if (c > nmax)
                    nmax = c;
                if (c < nmin)
                    nmin = c;
            }
        }
        if (nmax <= m / 2) {
            nm->n = nmax;
            nm->m = m;
            nm->exact = nmin == nmax;
            return;
        }
    }
}

int spruce_mask_stats_compute(const uint8_t *keep, int64_t rows, int64_t cols, int64_t block,
                              spruce_mask_stats *st)
{
    int64_t r, c, b, *blk = NULL;
    double sum = 0;
    if (!keep || !st || rows <= 0 || cols <= 0 || block < 0)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_mask_stats_compute: invalid arguments "
                              "(rows %lld, cols %lld, block %lld)",
                              (long long)rows, (long long)cols, (long long)block);
    memset(st, 0, sizeof *st);
    st->rows = rows;
    st->cols = cols;
    st->block = block ? block : 128;
    if (st->block > cols)
        st->block = cols;
    st->nblocks = (cols + st->block - 1) / st->block;
    blk = calloc((size_t)st->nblocks, sizeof *blk); /* kept per column block */
    if (!blk)
        return spruce__seterr(SPRUCE_ENOMEM, "mask statistics: out of memory");
    st->row_min = 1;
    st->row_max = 0;
    for (r = 0; r < rows; r++) {
        const uint8_t *row = keep + (size_t)r * (size_t)cols;
        int64_t kr = 0;
        double s;
        for (b = 0; b < st->nblocks; b++) {
            int64_t c1 = (b + 1) * st->block < cols ? (b + 1) * st->block : cols, kb = 0;
            for (c = b * st->block; c < c1; c++)
                kb += row[c] != 0;
            blk[b] += kb;
            kr += kb;
        }
        st->kept += kr;
        s = 1.0 - (double)kr / (double)cols;
        sum += s;
        if (s < st->row_min)
            st->row_min = s;
        if (s > st->row_max)
            st->row_max = s;
    }
    st->row_mean = sum / (double)rows;
    st->sparsity = 1.0 - (double)st->kept / ((double)rows * (double)cols);
    st->blk_min = 1;
    st->blk_max = 0;
    sum = 0;
    for (b = 0; b < st->nblocks; b++) {
        int64_t w = (b + 1) * st->block < cols ? st->block : cols - b * st->block;
        double s = 1.0 - (double)blk[b] / ((double)rows * (double)w);
        sum += s;
        if (s < st->blk_min)
            st->blk_min = s;
        if (s > st->blk_max)
            st->blk_max = s;
    }
    st->blk_mean = sum / (double)st->nblocks;
    detect_nm(keep, rows, cols, &st->nm);
    free(blk);
    return 0;
}

void spruce_mask_diff_compute(const uint8_t *a, const uint8_t *b, int64_t numel,
                              spruce_mask_diff *d)
{
    int64_t i, ka = 0, kb = 0, both = 0;
    for (i = 0; i < numel; i++) {
        int x = a[i] != 0, y = b[i] != 0;
        ka += x;
        kb += y;
        both += x & y;
    }
    d->numel = numel;
    d->kept_a = ka;
    d->kept_b = kb;
    d->shared = both;
    d->agree = numel - (ka + kb - 2 * both); /* positions where exactly one keeps differ */
    d->agreement = numel > 0 ? (double)d->agree / (double)numel : 1.0;
    d->jaccard = ka + kb - both > 0 ? (double)both / (double)(ka + kb - both) : 1.0;
}
