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

/* The same selection split over the threads of an OpenMP team: every thread
 * of the team calls it with the same arguments (outside a team it runs alone).
 * Each thread histograms its own contiguous share of the keys by their top 11
 * bits; the keys of the bin that holds the k-th smallest are gathered and
 * finished by one thread; ties at the threshold are resolved in index order
 * from per-thread counts.  The result equals spruce__select_lowest's. */
void spruce__select_lowest_team(const uint32_t *keys, size_t n, size_t k, uint8_t *keep,
                                spruce__select_ws *ws)
{
    int tid = spruce__thread_id(), nt = 1, t;
    size_t lo, hi, i, *h;
#ifdef _OPENMP
    nt = omp_get_num_threads();
#endif
    lo = n * (size_t)tid / (size_t)nt;
    hi = n * (size_t)(tid + 1) / (size_t)nt;
    if (k == 0 || k >= n) {
        memset(keep + lo, k == 0, hi - lo);
        #pragma omp barrier
        return;
    }
    h = ws->hist + (size_t)tid * 2048;
    memset(h, 0, 2048 * sizeof *h);
    for (i = lo; i < hi; i++)
        h[keys[i] >> 21]++;
    #pragma omp barrier
    if (tid == 0) {
        size_t kk = k, off = 0;
        uint32_t b;
        for (b = 0; b < 2048; b++) {
            size_t c = 0;
            for (t = 0; t < nt; t++)
                c += ws->hist[(size_t)t * 2048 + b];
            if (kk < c)
                break;
            kk -= c;
        }
        ws->b1 = b;
        ws->kk = kk;
        for (t = 0; t < nt; t++) { /* where each thread's candidates go */
            ws->off[t] = off;
            off += ws->hist[(size_t)t * 2048 + b];
        }
        ws->ncand = off;
    }
    #pragma omp barrier
    {
        uint32_t b1 = ws->b1, *c = ws->cand + ws->off[tid];
        for (i = lo; i < hi; i++)
            if (keys[i] >> 21 == b1)
                *c++ = keys[i];
    }
    #pragma omp barrier
    if (tid == 0) {
        /* the rank of the threshold inside the bin: select among the candidates */
        size_t m = ws->ncand, kk = ws->kk, c;
        uint32_t lo21 = 0, mid;
        size_t hist2[2048];
        memset(hist2, 0, sizeof hist2);
        for (c = 0; c < m; c++)
            hist2[(ws->cand[c] >> 10) & 2047]++;
        for (mid = 0; mid < 2048; mid++) {
            if (kk < hist2[mid])
                break;
            kk -= hist2[mid];
        }
        memset(hist2, 0, 1024 * sizeof hist2[0]);
        for (c = 0; c < m; c++)
            if (((ws->cand[c] >> 10) & 2047) == mid)
                hist2[ws->cand[c] & 1023]++;
        for (lo21 = 0; lo21 < 1024; lo21++) {
            if (kk < hist2[lo21])
                break;
            kk -= hist2[lo21];
        }
        ws->thr = ws->b1 << 21 | mid << 10 | lo21;
        ws->kk = kk; /* keys equal to thr still to prune, lowest index first */
    }
    #pragma omp barrier
    {
        uint32_t thr = ws->thr;
        size_t eq = 0;
        for (i = lo; i < hi; i++) { /* ties kept for now */
            keep[i] = keys[i] >= thr;
            eq += keys[i] == thr;
        }
        ws->eq[tid] = eq;
    }
    #pragma omp barrier
    {
        size_t before = 0, allow;
        for (t = 0; t < tid; t++)
            before += ws->eq[t];
        allow = ws->kk > before ? ws->kk - before : 0;
        if (allow > ws->eq[tid])
            allow = ws->eq[tid];
        for (i = lo; i < hi && allow > 0; i++)
            if (keys[i] == ws->thr) {
                keep[i] = 0;
                allow--;
            }
    }
    #pragma omp barrier
}
