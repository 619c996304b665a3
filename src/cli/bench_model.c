/* bench_model.c: `spruce bench --model DIR`: every linear layer of a (pruned)
 * checkpoint, dense OpenBLAS against the linear layer's choice, each layer
 * timed alone; then end-to-end decoding, dense against auto, on the same
 * weights. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd_bench.h"
#include "spruce_ckpt.h"
#include "spruce_decode.h"
#include "spruce_family.h"
#include "spruce_model.h"
#include "spruce_sparse.h"

/* A block's prunable linear layer: as the family table says when config.json
 * names a family (every expert, never a router), else by its name. */
static int is_linear(const char *model_type, const spruce_tensor *t)
{
    const char *n = t->name;
    size_t len = strlen(n);
    if (model_type && t->ndim == 2)
        return spruce_family_is_linear(model_type, n) == 1;
    return t->ndim == 2 && len > 7 && !strcmp(n + len - 7, ".weight") && strstr(n, "layers.") &&
           (strstr(n, "_proj") || strstr(n, ".fc") || strstr(n, "dense"));
}

/* End-to-end decoding, dense OpenBLAS against the linear layers' choice, on
 * the same weights: `steps` tokens at batch 1 after BOS, in alternating runs
 * (dense first, then auto, `rounds` times); the median tokens/s of each. */
static int bench_decode(const char *dir, int steps, int rounds)
{
    spruce_model *m = NULL;
    spruce_decoder *d[2] = {NULL, NULL};
    float *logits = NULL;
    double tps[2][16], med[2], exs[2][16], exmed[2];
    int rc, r, k, i, vocab;
    if (rounds > 16)
        rounds = 16;
    if ((rc = spruce_model_open(dir, &m)) < 0) {
        cli_error(rc, "bench --model %s: decode (the model forward cannot run it)", dir);
        return 1;
    }
    vocab = spruce_model_config(m)->vocab_size;
    fprintf(stderr, "bench: decode: preparing the dense and auto decoders...\n");
    if ((rc = spruce_decoder_create(m, steps + 1, SPRUCE_DECODE_DENSE, &d[0])) < 0 ||
        (rc = spruce_decoder_create(m, steps + 1, SPRUCE_DECODE_AUTO, &d[1])) < 0) {
        cli_error(rc, "bench --model %s: decoder", dir);
        rc = 1;
        goto done;
    }
    if (!(logits = malloc(sizeof *logits * (size_t)vocab))) {
        cli_fail("bench --model %s: out of memory", dir);
        rc = 1;
        goto done;
    }
    for (r = 0; r < rounds; r++)
        for (k = 0; k < 2; k++) {
            uint32_t id = 1;
            double t0;
            spruce_decoder_reset(d[k]);
            t0 = spruce_clock_now();
            for (i = 0; i < steps; i++) {
                int j, best = 0;
                if ((rc = spruce_decoder_step(d[k], id, logits)) < 0) {
                    cli_error(rc, "bench --model %s: decode", dir);
                    rc = 1;
                    goto done;
                }
                for (j = 1; j < vocab; j++) /* greedy */
                    if (logits[j] > logits[best])
                        best = j;
                id = (uint32_t)best;
            }
            tps[k][r] = steps / (spruce_clock_now() - t0);
            exs[k][r] = spruce_decoder_expert_seconds(d[k]) / steps;
        }
    for (k = 0; k < 2; k++) {
        med[k] = spruce_clock_median(tps[k], rounds);
        exmed[k] = spruce_clock_median(exs[k], rounds);
    }
    printf("decode, batch 1, %d tokens after BOS, median of %d alternating runs: dense %.2f "
           "tokens/s, auto %.2f tokens/s (%d of %d linear layers sparse): %.2fx\n",
           steps, rounds, med[0], med[1], spruce_decoder_sparse_layers(d[1]),
           spruce_decoder_linear_layers(d[1]), med[1] / med[0]);
    if (exmed[0] > 0 && exmed[1] > 0)   /* a mixture of experts: the experts alone */
        printf("decode, the experts' linear layers alone (the chosen experts' gate, up and "
               "down, median of the same runs): dense %.3f ms/token, auto %.3f ms/token: "
               "%.2fx\n", 1e3 * exmed[0], 1e3 * exmed[1], exmed[0] / exmed[1]);
    rc = 0;
done:
    free(logits);
    spruce_decoder_free(d[0]);
    spruce_decoder_free(d[1]);
    spruce_model_free(m);
    return rc;
}

int bench_model(bench_ctx *cx, const char *dir, const int *batches, int nb)
{
    spruce_ckpt *ck = NULL;
    float *W = NULL, *X = NULL, *Y = NULL;
    double tot_dense[BENCH_MAX_BATCHES] = {0}, tot_sparse[BENCH_MAX_BATCHES] = {0};
    int rc, i, b, r, maxb = 1, nlayers = 0;
    double *t = malloc(sizeof *t * cx->reps);
    spruce_config cfg;
    int have_cfg = spruce_config_load(dir, &cfg) == 0;
    if ((rc = spruce_ckpt_open(dir, &ck)) < 0) {
        cli_error(rc, "bench --model %s", dir);
        free(t);
        return 1;
    }
    for (b = 0; b < nb; b++)
        if (batches[b] > maxb)
            maxb = batches[b];
    if (!cx->json)
        printf("%-44s %-11s %5s %8s %-9s %10s %10s %8s\n", "layer", "shape", "batch", "zeros",
               "format", "dense ms", "sparse ms", "speedup");
    for (i = 0; i < spruce_ckpt_count(ck); i++) {
        const spruce_tensor *tt = spruce_ckpt_tensor_at(ck, i);
        int rows, cols;
        int64_t zeros = 0, k;
        spruce_linear_opts o;
        spruce_linear *lin = NULL;
        if (!is_linear(have_cfg ? cfg.model_type : NULL, tt))
            continue;
        rows = (int)tt->shape[0];
        cols = (int)tt->shape[1];
        free(W);
        free(X);
        free(Y);
        W = malloc(sizeof *W * (size_t)rows * cols);
        X = malloc(sizeof *X * (size_t)cols * maxb);
        Y = malloc(sizeof *Y * (size_t)rows * maxb);
        if (!W || !X || !Y) {
            cli_fail("bench: out of memory for %s", tt->name);
            rc = 1;
            goto done;
        }
        if ((rc = spruce_tensor_read_f32(tt, W)) < 0) {
            cli_error(rc, "bench --model: %s", tt->name);
            rc = 1;
            goto done;
        }
        for (k = 0; k < (int64_t)rows * cols; k++)
            zeros += W[k] == 0.0f;
        for (k = 0; k < (int64_t)cols * maxb; k++)
            X[k] = (float)((bench_mix(k) >> 40) / 16777216.0) - 0.5f;
        spruce_linear_opts_init(&o);
        o.nthreads = cx->threads;
        o.nbatches = nb;
        for (b = 0; b < nb; b++)
            o.batches[b] = batches[b];
        if ((rc = spruce_linear_create(W, rows, cols, &o, &lin)) < 0) {
            cli_error(rc, "bench --model: %s", tt->name);
            rc = 1;
            goto done;
        }
        nlayers++;
        for (b = 0; b < nb; b++) {
            double dms, sms;
            bench_settle();
            bench_dense_mul(W, rows, cols, X, batches[b], Y);
            for (r = 0; r < cx->reps; r++) {
                double t0 = spruce_clock_now();
                bench_dense_mul(W, rows, cols, X, batches[b], Y);
                t[r] = spruce_clock_now() - t0;
            }
            dms = 1e3 * spruce_clock_median(t, cx->reps);
            bench_settle();
            spruce_linear_forward(lin, X, batches[b], Y);
            for (r = 0; r < cx->reps; r++) {
                double t0 = spruce_clock_now();
                spruce_linear_forward(lin, X, batches[b], Y);
                t[r] = spruce_clock_now() - t0;
            }
            sms = 1e3 * spruce_clock_median(t, cx->reps);
            tot_dense[b] += dms;
            tot_sparse[b] += sms;
            if (cx->json) {
                bench_result res;
                memset(&res, 0, sizeof res);
                snprintf(res.format, sizeof res.format, "auto(%s)",
                         spruce_format_name(spruce_linear_format(lin, batches[b])));
                res.rows = rows;
                res.cols = cols;
                res.batch = batches[b];
                res.sparsity = (double)zeros / ((double)rows * cols);
                res.dense_ms = dms;
                res.sparse_ms = sms;
                res.speedup = dms / sms;
                bench_add_result(cx, &res);
            } else {
                printf("%-44s %5dx%-5d %5d %7.1f%% %-9s %10.3f %10.3f %7.2fx\n", tt->name, rows,
                       cols, batches[b], 100.0 * zeros / ((double)rows * cols),
                       spruce_format_name(spruce_linear_format(lin, batches[b])), dms, sms,
                       dms / sms);
                fflush(stdout);
            }
        }
        spruce_linear_free(lin);
    }
    if (!nlayers) {
        cli_fail("bench --model %s: no linear layer weights (*.layers.*_proj.weight) found", dir);
        rc = 1;
        goto done;
    }
    if (!cx->json)
        for (b = 0; b < nb; b++)
            printf("all %d linear layers, batch %d: dense %.3f ms, sparse %.3f ms, %.2fx "
                   "(each layer timed alone, in cache when it fits)\n",
                   nlayers, batches[b], tot_dense[b], tot_sparse[b], tot_dense[b] / tot_sparse[b]);
    rc = 0;
    if (!cx->json) {
        fflush(stdout);
        rc = bench_decode(dir, 64, 3);
    }
done:
    spruce_ckpt_close(ck);
    free(W);
    free(X);
    free(Y);
    free(t);
    return rc;
}
