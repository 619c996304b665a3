/* perplexity.c: perplexity over non-overlapping windows, as the reference
 * evaluation (llama.py: llama_eval) computes it, streaming the blocks over as
 * many windows at once as the activation budget allows. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "block.h"
#include "model_internal.h"

#define PAR_MIN SPRUCE__PAR_MIN

/* Sum over rows t of logsumexp(logits[t]) - logits[t][target[t]]. */
static double nll_sum(const float *logits, const uint32_t *target, int rows, int vocab)
{
    double total = 0;
    int t;
#pragma omp parallel for schedule(static) reduction(+:total) if ((long)rows * vocab >= PAR_MIN)
    for (t = 0; t < rows; t++) {
        const float *r = logits + (size_t)t * vocab;
        float mx = r[0];
        double s = 0;
        int j;
        for (j = 1; j < vocab; j++)
            if (r[j] > mx)
                mx = r[j];
        for (j = 0; j < vocab; j++)
            s += exp((double)r[j] - mx);
        total += log(s) + mx - r[target[t]];
    }
    return total;
}

/* Rows of logits computed at once. */
#define HEAD_CHUNK 256

void spruce_eval_opts_init(spruce_eval_opts *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->act_bytes = SPRUCE_EVAL_ACT_BYTES;
    o->dtype = SPRUCE_EVAL_BLAS;
}

int spruce_model_perplexity(spruce_model *m, const uint32_t *ids, size_t n, int seqlen,
                            spruce_block_progress_fn progress, void *ctx, double *ppl,
                            int *nwin)
{
    spruce_eval_opts o;
    spruce_eval_opts_init(&o);
    o.progress = progress;
    o.ctx = ctx;
    return spruce_model_perplexity_opts(m, ids, n, seqlen, &o, ppl, nwin);
}

int spruce_model_perplexity_opts(spruce_model *m, const uint32_t *ids, size_t n, int seqlen,
                                 const spruce_eval_opts *opts, double *ppl, int *nwin_out)
{
    spruce_eval_opts o;
    const spruce_config *c;
    float *x = NULL, *xn = NULL, *logits = NULL;
    size_t nwin, w, w0, batch, per;
    double nll = 0;
    spruce_decode_opts dopts;
    int rc = 0;
    if (!m || !ids || !ppl)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_model_perplexity: NULL argument");
    c = &m->cfg;
    if (opts)
        o = *opts;
    else
        spruce_eval_opts_init(&o);
    spruce_decode_opts_init(&dopts);
    dopts.dtype = o.dtype;
    dopts.groupsize = o.groupsize;
    if (o.dtype != SPRUCE_EVAL_BLAS && o.dtype != SPRUCE_DECODE_OWN_DTYPE &&
        (o.dtype < SPRUCE_DT_F32 || o.dtype > SPRUCE_DT_INT4))
        return spruce__seterr(SPRUCE_EINVAL, "perplexity: unknown value type %d", o.dtype);
    if (o.act_bytes == 0)
        return spruce__seterr(SPRUCE_EINVAL, "perplexity: an activation budget of 0 bytes "
                              "(expected at least one byte; one window is always kept)");
    if (seqlen < 2)
        return spruce__seterr(SPRUCE_EINVAL, "perplexity: seqlen %d, expected at least 2", seqlen);
    nwin = n / (size_t)seqlen;
    if (nwin == 0)
        return spruce__seterr(SPRUCE_EINVAL, "perplexity: %zu tokens are shorter than one window "
                              "of %d", n, seqlen);
    if (nwin > (size_t)1 << 30)
        return spruce__seterr(SPRUCE_EINVAL, "perplexity: too many windows");
    per = (size_t)seqlen * c->hidden_size * sizeof(float);
    batch = o.act_bytes / per;
    if (batch < 1)
        batch = 1;
    if (batch > nwin)
        batch = nwin;
    x = malloc(batch * per);
    xn = malloc((size_t)HEAD_CHUNK * c->hidden_size * sizeof(float));
    logits = malloc((size_t)HEAD_CHUNK * c->vocab_size * sizeof(float));
    if (!x || !xn || !logits) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "perplexity: activations of %zu windows of %d tokens "
                            "(%zu MiB)", batch, seqlen, (batch * per) >> 20);
        goto done;
    }
    for (w0 = 0; w0 < nwin; w0 += batch) {
        size_t nb = nwin - w0 < batch ? nwin - w0 : batch;
        for (w = 0; w < nb; w++)
            if ((rc = spruce_model_embed(m, ids + (w0 + w) * seqlen, seqlen,
                                         x + w * seqlen * c->hidden_size)))
                goto done;
        if ((rc = spruce__run_blocks_values(m, x, (int)nb, seqlen, (int)(o.first_window + w0),
                                            o.dtype == SPRUCE_EVAL_BLAS ? NULL : &dopts,
                                            o.progress, o.ctx)))
            goto done;
        /* Window w predicts ids[w*T + t + 1] from position t, t < T - 1; the
         * last position's logits are computed only for o.logits. */
        for (w = 0; w < nb; w++) {
            int t0, npos = o.logits ? seqlen : seqlen - 1;
            for (t0 = 0; t0 < npos; t0 += HEAD_CHUNK) {
                int rows = npos - t0 < HEAD_CHUNK ? npos - t0 : HEAD_CHUNK;
                int pred = seqlen - 1 - t0 < rows ? seqlen - 1 - t0 : rows;
                /* the rows of one window: position t0 of window w0 + w */
                if ((rc = spruce__head_checked(m, x + (w * seqlen + t0) * c->hidden_size, rows,
                                               xn, logits, t0,
                                               (int)(o.first_window + w0 + w))))
                    goto done;
                nll += nll_sum(logits, ids + (w0 + w) * seqlen + t0 + 1, pred, c->vocab_size);
                if (o.logits &&
                    (rc = o.logits(o.logits_ctx, w0 + w, t0, logits, rows, c->vocab_size)))
                    goto done;
            }
        }
    }
    *ppl = exp(nll / ((double)nwin * (seqlen - 1)));
    if (o.nll_sum)
        *o.nll_sum = nll;
    if (nwin_out)
        *nwin_out = (int)nwin;
done:
    free(x);
    free(xn);
    free(logits);
    return rc;
}
