/* mask_stats.c: what a mask looks like (sparsity per row and column block,
 * N:M structure) and how two masks compare.  No HDF5 here. */
#include <stdlib.h>
#include <string.h>

#include "spruce_masks.h"

/* Pruned weights in every aligned group of m of each row: the fewest, the
 * most, and how many groups prune exactly the fewest. */
static void group_counts(const uint8_t *keep, int64_t rows, int64_t cols, int m, int *pmin,
                         int *pmax, int64_t *at_min, int64_t *groups)
{
    int64_t r, g;
    int j;
    *pmin = m;
    *pmax = 0;
    *at_min = 0;
    *groups = rows * (cols / m);
    for (r = 0; r < rows; r++) {
        const uint8_t *row = keep + (size_t)r * (size_t)cols;
        for (g = 0; g < cols; g += m) {
            int p = 0;
            for (j = 0; j < m; j++)
                p += row[g + j] == 0;
            if (p < *pmin) {
                *pmin = p;
                *at_min = 0;
            }
            *at_min += p == *pmin;
            if (p > *pmax)
                *pmax = p;
        }
    }
}

int spruce_mask_nm_check(const uint8_t *keep, int64_t rows, int64_t cols, int n, int m,
                         int *exact)
{
    int pmin, pmax;
    int64_t at_min, groups;
    if (exact)
        *exact = 0;
    if (!keep || rows <= 0 || cols <= 0 || m <= 0 || n <= 0 || n > m || cols % m)
        return 0;
    group_counts(keep, rows, cols, m, &pmin, &pmax, &at_min, &groups);
    if (exact)
        *exact = pmin == n && pmax == n;
    return pmin >= n;
}

/* N:M structure, N pruned of every M (as --pattern N:M means): for M in {2,
 * 4, 8, 16} dividing cols, N is the fewest pruned in any aligned group of M,
 * a candidate when N >= 1 and at least half of the groups prune exactly N (so
 * a random mask, whose groups prune anything, is not called N:M).  The
 * candidate with the largest N / M wins, then an exact one, then the smallest
 * M: 2:4 rather than 4:8 or 1:2, 3:4 rather than 1:2. */
static void detect_nm(const uint8_t *keep, int64_t rows, int64_t cols, spruce_mask_nm *nm)
{
    static const int ms[] = {2, 4, 8, 16};
    size_t k;
    nm->n = nm->m = nm->exact = 0;
    for (k = 0; k < sizeof ms / sizeof ms[0]; k++) {
        int m = ms[k], pmin, pmax, exact;
        int64_t at_min, groups;
        if (cols % m)
            continue;
        group_counts(keep, rows, cols, m, &pmin, &pmax, &at_min, &groups);
        if (pmin < 1 || pmin == m || 2 * at_min < groups)
            continue;
        exact = pmin == pmax;
        /* pmin / m against nm->n / nm->m, compared as integers */
        if (!nm->m || (int64_t)pmin * nm->m > (int64_t)nm->n * m ||
            ((int64_t)pmin * nm->m == (int64_t)nm->n * m && exact && !nm->exact)) {
            nm->n = pmin;
            nm->m = m;
            nm->exact = exact;
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
