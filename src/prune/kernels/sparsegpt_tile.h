/* sparsegpt_tile.h: the in-block SparseGPT sweep of one tile of 16 rows.
 * Included by sparsegpt_tile_<isa>.c with SPARSEGPT_TILE set to the function
 * name; each of those files is compiled with its instruction set's flags, and
 * the fixed 16-row inner loops become vector code of that width.
 *
 * The tile is column-major: wt[k*16 + t] = W[r0 + t][i1 + k] for k < bw, so
 * that one column of the tile is one 16-lane vector.  For column j:
 *   (N:M, j % M == 0: keep the M - N largest w^2/U_kk^2 of columns j..j+M-1)
 *   q = keep ? w : 0;  e = (w - q) / U_jj;  loss += e^2 / 2;  w = q
 *   w_k -= e * U_jk   for k in (j, bw)
 * et receives e (column-major like wt).  With a grid (qz != NULL) a kept
 * weight is rounded to it before its error is spread, as the published
 * sparsegpt.py does with quant.py:
 *   q = keep ? scale * (clamp(round(w / scale) + zero, 0, maxq) - zero) : 0
 * (pruned weights stay exactly +0.0; scale > 0, so a kept 0 is +0.0 too). */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "prune_internal.h"

#define T 16

static void nm_select(const float *wt, const float *invd2, int pm, int pn, uint8_t *kt)
{
    float s[32][T];
    int c, c2, t;
    for (c = 0; c < pm; c++)
        for (t = 0; t < T; t++)
            s[c][t] = wt[c * T + t] * wt[c * T + t] * invd2[c];
    for (c = 0; c < pm; c++) {
        int rank[T] = {0};
        for (c2 = 0; c2 < pm; c2++)
            for (t = 0; t < T; t++) /* (score, column) order: ties go to the lower column */
                rank[t] += (s[c2][t] < s[c][t]) | ((s[c2][t] == s[c][t]) & (c2 < c));
        for (t = 0; t < T; t++)
            kt[c * T + t] = rank[t] >= pn;
    }
}

static void nm_select_wide(const float *wt, const float *invd2, int pm, int pn, uint8_t *kt)
{
    int t, a, b;
    for (t = 0; t < T; t++) /* M > 32: per lane, rank by counting (rare patterns) */
        for (a = 0; a < pm; a++) {
            float sa = wt[a * T + t] * wt[a * T + t] * invd2[a];
            int rank = 0;
            for (b = 0; b < pm; b++) {
                float sb = wt[b * T + t] * wt[b * T + t] * invd2[b];
                rank += sb < sa || (sb == sa && b < a);
            }
            kt[a * T + t] = rank >= pn;
        }
}

/* The kept weights of one column on the grid of their lanes (dead: +0.0). */
static void quant_column(const float *w, const uint8_t *kt, const float *qs, const float *qz,
                         float maxq, float *q)
{
    int t;
    for (t = 0; t < T; t++) {
        float v = spruce__qround(w[t], qs[t], qz[t], maxq);
        q[t] = kt[t] ? v : 0.0f;
    }
}

void SPARSEGPT_TILE(float *wt, uint8_t *kt, float *et, const float *Ublk, int ldu, int bw,
                    const float *invd2, int pn, int pm, const spruce__tile_q *tq, double *loss)
{
    int j, k, t;
    for (j = 0; j < bw; j++) {
        const float *u = Ublk + (size_t)j * ldu;
        float *w = wt + (size_t)j * T, e[T], d = u[j];
        int any = 0;
        if (pm > 0 && j % pm == 0) {
            if (pm <= 32)
                nm_select(w, invd2 + j, pm, pn, kt + (size_t)j * T);
            else
                nm_select_wide(w, invd2 + j, pm, pn, kt + (size_t)j * T);
        }
        float q[T];
        if (tq) {
            size_t g = (size_t)((tq->gofs + j) / tq->G) * T;
            quant_column(w, kt + (size_t)j * T, tq->scale + g, tq->zero + g, tq->maxq, q);
        } else {
            for (t = 0; t < T; t++)
                q[t] = kt[(size_t)j * T + t] ? w[t] : 0.0f;
        }
        for (t = 0; t < T; t++) {
            e[t] = (w[t] - q[t]) / d;
            loss[t] += 0.5 * (double)e[t] * (double)e[t];
            w[t] = q[t];
            et[(size_t)j * T + t] = e[t];
            any |= e[t] != 0.0f;
        }
        if (!any)
            continue;
        for (k = j + 1; k < bw; k++) {
            float uk = u[k], *wk = wt + (size_t)k * T;
            for (t = 0; t < T; t++)
                wk[t] -= e[t] * uk;
        }
    }
}
