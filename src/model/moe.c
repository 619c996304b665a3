/* moe.c: the mixture-of-experts MLP of a decoder block (block.h), as
 * modeling_mixtral.py (MixtralSparseMoeBlock) and modeling_qwen3_moe.py
 * (Qwen3MoeSparseMoeBlock) define it:
 *   p = softmax(a Wr^T) over all experts          // a (T, hidden), Wr (E, hidden)
 *   sel, w = top-k of p per token; w /= sum(w)    // renormalised: mixtral always,
 *                                                 // qwen3_moe with norm_topk_prob
 *   out[t] = sum_j w[t, j] down_e(silu(gate_e a[t]) * up_e a[t]),  e = sel[t, j]
 * Each expert runs once per block on exactly the tokens routed to it (gathered
 * into one matrix), experts in index order, as the reference loop does. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "block.h"
#include "spruce_family.h"

void spruce__moe_route(float *p, int ntok, int E, int k, int renorm, int *sel, float *w)
{
    int t, e, j, i;
    for (t = 0; t < ntok; t++) {
        float *pt = p + (size_t)t * E, mx = pt[0], sum = 0;
        int *st = sel + (size_t)t * k;
        float *wt = w + (size_t)t * k;
        for (e = 1; e < E; e++)
            mx = pt[e] > mx ? pt[e] : mx;
        for (e = 0; e < E; e++)
            sum += pt[e] = expf(pt[e] - mx);
        for (e = 0; e < E; e++)
            pt[e] /= sum;
        /* insertion into the k best so far: strictly greater moves up, so
         * of equal probabilities the lower index stays first */
        for (j = 0; j < k; j++)
            st[j] = -1;
        for (e = 0; e < E; e++) {
            for (i = k; i > 0 && (st[i - 1] < 0 || pt[e] > pt[st[i - 1]]); i--)
                if (i < k)
                    st[i] = st[i - 1];
            if (i < k)
                st[i] = e;
        }
        sum = 0;
        for (j = 0; j < k; j++)
            sum += wt[j] = pt[st[j]];
        if (renorm)
            for (j = 0; j < k; j++)
                wt[j] /= sum;
    }
}

int spruce__moe_mlp(const spruce__block_run *r, int ntok, int T)
{
    const spruce_config *c = r->c;
    int E = c->num_experts, k = c->num_experts_per_tok, hid = c->hidden_size;
    int mi = c->moe_intermediate_size, e, t, n, j, rc;
    const spruce_family *f = c->family ? c->family : spruce_family_find(c->model_type);
    size_t row, col;
    char what[160];
    if ((rc = r->expert(r->linear_ctx, -1, 0, r->a, ntok, r->moe_p)))
        return rc;
    snprintf(what, sizeof what, "layer %d router logits", r->layer);
    if (r->locate && (rc = spruce__check_rows(r->moe_p, ntok, E, T, r->pos0, r->seq0, what)))
        return rc;
    spruce__moe_route(r->moe_p, ntok, E, k, c->norm_topk_prob, r->moe_sel, r->moe_w);
    memset(r->t, 0, (size_t)ntok * hid * sizeof(float));
    for (e = 0; e < E; e++) {
        /* moe_tok: the (token, slot) entries that chose e, in token order */
        for (n = 0, t = 0; t < ntok * k; t++)
            if (r->moe_sel[t] == e)
                r->moe_tok[n++] = t;
        if (!n)
            continue;
        for (j = 0; j < n; j++)
            memcpy(r->moe_x + (size_t)j * hid, r->a + (size_t)(r->moe_tok[j] / k) * hid,
                   (size_t)hid * sizeof(float));
        if (r->expert_tap &&
            (rc = r->expert_tap(r->expert_tap_ctx, e, SPRUCE_SITE_GATEUP, r->moe_x, n, hid)))
            return rc;
        if ((rc = r->expert(r->linear_ctx, e, 0, r->moe_x, n, r->g)) ||
            (rc = r->expert(r->linear_ctx, e, 1, r->moe_x, n, r->u)))
            return rc;
        spruce__swiglu(r->g, r->u, (size_t)n * mi);
        if (r->expert_tap &&
            (rc = r->expert_tap(r->expert_tap_ctx, e, SPRUCE_SITE_DOWN, r->g, n, mi)))
            return rc;
        if ((rc = r->expert(r->linear_ctx, e, 2, r->g, n, r->moe_y)))
            return rc;
        if (r->locate && spruce__first_nonfinite(r->moe_y, (size_t)n, (size_t)hid, &row, &col)) {
            /* name the token of that row: its position (and sequence) */
            int tok = r->moe_tok[row] / k;
            snprintf(what, sizeof what, "layer %d %s.%d down output", r->layer,
                     f ? f->experts : "experts", e);
            return spruce__check_rows(r->moe_y + row * hid, 1, hid, 1, r->pos0 + tok % T,
                                      r->seq0 + tok / T, what);
        }
        for (j = 0; j < n; j++) {   /* out[t] += w y_j */
            float *ot = r->t + (size_t)(r->moe_tok[j] / k) * hid, wj = r->moe_w[r->moe_tok[j]];
            const float *yj = r->moe_y + (size_t)j * hid;
            int i;
            for (i = 0; i < hid; i++)
                ot[i] += wj * yj[i];
        }
    }
    return 0;
}
