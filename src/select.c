/* select.c: choosing exactly k weights to prune, deterministically.
 *
 * Keys are the bit patterns of non-negative float scores, which order like the
 * floats.  spruce__select_lowest finds the k-th smallest key by a three-pass
 * radix select (11 + 11 + 10 bits), then prunes every key below it and, among
 * the keys equal to it, the ones with the lowest indices. */
#include <string.h>

#include "prune_internal.h"

void spruce__select_lowest(const uint32_t *keys, size_t n, size_t k, uint8_t *keep)
{
    static const int shift[3] = {21, 10, 0};
    static const uint32_t width[3] = {11, 11, 10};
    uint32_t prefix = 0, pmask = 0, thr;
    size_t hist[2048], i, kk = k;
    int pass;

    if (k == 0) {
        memset(keep, 1, n);
        return;
    }
    if (k >= n) {
        memset(keep, 0, n);
        return;
    }
    for (pass = 0; pass < 3; pass++) {
        uint32_t nb = 1u << width[pass], b;
        memset(hist, 0, nb * sizeof hist[0]);
        for (i = 0; i < n; i++)
            if ((keys[i] & pmask) == prefix)
                hist[(keys[i] >> shift[pass]) & (nb - 1)]++;
        for (b = 0; b < nb; b++) { /* the bin that holds the kk-th smallest (0-based) */
            if (kk < hist[b])
                break;
            kk -= hist[b];
        }
        prefix |= b << shift[pass];
        pmask |= (nb - 1) << shift[pass];
    }
    thr = prefix; /* the k-th smallest key; kk keys equal to it are still to prune */
    for (i = 0; i < n; i++) {
        uint32_t x = keys[i];
        if (x < thr) {
            keep[i] = 0;
        } else if (x == thr && kk > 0) {
            keep[i] = 0;
            kk--;
        } else {
            keep[i] = 1;
        }
    }
}

void spruce__select_group(const uint32_t *keys, int m, int n, uint8_t *keep)
{
    int i, j;
    if (m > 32) {
        spruce__select_lowest(keys, (size_t)m, (size_t)n, keep);
        return;
    }
    /* rank of i = how many keys come before it in (key, index) order */
    for (i = 0; i < m; i++) {
        int rank = 0;
        for (j = 0; j < m; j++)
            rank += keys[j] < keys[i] || (keys[j] == keys[i] && j < i);
        keep[i] = rank >= n;
    }
}
