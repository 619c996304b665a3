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

/* End-to-end decoding on the same weights: dense float32 (OpenBLAS) first,
 * then for each value type its dense kernels and auto (float32: auto
 * alone; without value types, auto in the checkpoint's own type too when that
 * is not float32); `steps` tokens at batch 1 after BOS, in alternating runs (every
 * decoder once, `rounds` times); the median tokens/s of each, against dense
 * float32's. */
#define MAX_DEC 9
static int bench_decode(const char *dir, int steps, int rounds, const int *dtypes, int ndt,
                        int groupsize)
{
    spruce_model *m = NULL;
    spruce_decoder *d[MAX_DEC] = {NULL};
    const char *label[MAX_DEC];
    float *logits = NULL;
    double tps[MAX_DEC][16], med[MAX_DEC], exs[MAX_DEC][16], exmed[MAX_DEC];
    int rc, r, k, i, vocab, nd = 0, t, asked = ndt > 0;
    static const int f32only[1] = {SPRUCE_DT_F32};
    if (rounds > 16)
        rounds = 16;
    if (!ndt)
        dtypes = f32only, ndt = 1;
    if ((rc = spruce_model_open_lazy(dir, &m)) < 0) {
        cli_error(rc, "bench --model %s: decode (the model forward cannot run it)", dir);
        return 1;
    }
    vocab = spruce_model_config(m)->vocab_size;
    fprintf(stderr, "bench: decode: preparing the decoders...\n");
    /* (dtype, mode): dense float32 first, then each type's dense and auto
     * (float32's dense is the first) */
    for (t = -1; t < ndt; t++)
        for (k = 0; k < 2; k++) {
            static char names[MAX_DEC][32];
            spruce_decode_opts o;
            const int dt = t < 0 ? SPRUCE_DT_F32 : dtypes[t];
            if ((t < 0 && k == 1) || (t >= 0 && dt == SPRUCE_DT_F32 && k == 0) || nd == MAX_DEC)
                continue;
            spruce_decode_opts_init(&o);
            o.mode = k ? SPRUCE_DECODE_AUTO : SPRUCE_DECODE_DENSE;
            o.dtype = dt;
            o.groupsize = groupsize;
            if ((rc = spruce_decoder_create_opts(m, steps + 1, &o, &d[nd])) < 0) {
                cli_error(rc, "bench --model %s: decoder", dir);
                rc = 1;
                goto done;
            }
            snprintf(names[nd], sizeof names[nd], "%s %s", k ? "auto" : "dense",
                     spruce_dtype_name(dt));
            label[nd] = names[nd];
            nd++;
        }
    if (!asked && nd < MAX_DEC) {
        /* no --dtype: also the checkpoint's own type when it is not float32
         * (bf16 weights; a compressed checkpoint's quantized levels) */
        spruce_decode_opts o;
        spruce_decode_opts_init(&o);
        if ((rc = spruce_decoder_create_opts(m, steps + 1, &o, &d[nd])) < 0) {
            cli_error(rc, "bench --model %s: decoder", dir);
            rc = 1;
            goto done;
        }
        if (spruce_decoder_dtype(d[nd]) == SPRUCE_DT_F32) {
            spruce_decoder_free(d[nd]);
            d[nd] = NULL;
        } else {
            static char own[32];
            snprintf(own, sizeof own, "auto %s", spruce_dtype_name(spruce_decoder_dtype(d[nd])));
            label[nd++] = own;
        }
    }
    if (!(logits = malloc(sizeof *logits * (size_t)vocab))) {
        cli_fail("bench --model %s: out of memory", dir);
        rc = 1;
        goto done;
    }
    for (r = 0; r < rounds; r++)
        for (k = 0; k < nd; k++) {
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
    for (k = 0; k < nd; k++) {
        med[k] = spruce_clock_median(tps[k], rounds);
        exmed[k] = spruce_clock_median(exs[k], rounds);
    }
    printf("decode, batch 1, %d tokens after BOS, median of %d alternating runs "
           "(against dense f32):\n", steps, rounds);
    for (k = 0; k < nd; k++)
        printf("  %-11s %8.2f tokens/s  %5.2fx  weights %9.3f MiB  %d of %d linear layers "
               "sparse\n", label[k], med[k], med[k] / med[0],
               (double)spruce_decoder_weight_bytes(d[k]) / 1048576.0,
               spruce_decoder_sparse_layers(d[k]), spruce_decoder_linear_layers(d[k]));
    if (exmed[0] > 0)   /* a mixture of experts: the experts alone */
        for (k = 1; k < nd; k++)
            printf("decode, the experts' linear layers alone (the chosen experts' gate, up and "
                   "down, median of the same runs): dense f32 %.3f ms/token, %s %.3f ms/token: "
                   "%.2fx\n", 1e3 * exmed[0], label[k], 1e3 * exmed[k], exmed[0] / exmed[k]);
    rc = 0;
done:
    free(logits);
    for (k = 0; k < MAX_DEC; k++)
        spruce_decoder_free(d[k]);
    spruce_model_free(m);
    return rc;
}

int bench_model(bench_ctx *cx, const char *dir, const int *batches, int nb, const int *dtypes,
                int ndt, int groupsize)
{
    static const int f32only[1] = {SPRUCE_DT_F32};
    const int *dts = ndt ? dtypes : f32only;
    int nt = ndt ? ndt : 1, di;
    spruce_ckpt *ck = NULL;
    float *W = NULL, *X = NULL, *Y = NULL;
    double tot_dense[BENCH_MAX_BATCHES] = {0}, tot_sparse[4][BENCH_MAX_BATCHES] = {{0}};
    int rc, i, b, r, maxb = 1, nlayers = 0;
    double *t = malloc(sizeof *t * cx->reps);
    spruce_config cfg;
    int have_cfg = spruce_config_load(dir, &cfg) == 0;
    if ((rc = spruce_ckpt_open_lazy(dir, &ck)) < 0) {
        cli_error(rc, "bench --model %s", dir);
        free(t);
        return 1;
    }
    for (b = 0; b < nb; b++)
        if (batches[b] > maxb)
            maxb = batches[b];
    if (!cx->json)
        printf("%-44s %-11s %5s %8s %-12s %10s %10s %8s\n", "layer", "shape", "batch", "zeros",
               ndt ? "format/type" : "format", "dense ms", "auto ms", "speedup");
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
        spruce_ckpt_release(ck, tt);
        for (k = 0; k < (int64_t)rows * cols; k++)
            zeros += W[k] == 0.0f;
        for (k = 0; k < (int64_t)cols * maxb; k++)
            X[k] = (float)((bench_mix(k) >> 40) / 16777216.0) - 0.5f;
        nlayers++;
        for (di = 0; di < nt; di++) {
            spruce_linear_opts_init(&o);
            o.nthreads = cx->threads;
            o.nbatches = nb;
            o.dtype = dts[di];
            o.groupsize = groupsize;
            for (b = 0; b < nb; b++)
                o.batches[b] = batches[b];
            if ((rc = spruce_linear_create(W, rows, cols, &o, &lin)) < 0) {
                cli_error(rc, "bench --model: %s in %s", tt->name, spruce_dtype_name(dts[di]));
                rc = 1;
                goto done;
            }
            for (b = 0; b < nb; b++) {
                double dms, sms;
                char fmt[32];
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
                tot_dense[b] += di == 0 ? dms : 0;
                tot_sparse[di][b] += sms;
                snprintf(fmt, sizeof fmt, "%s%s%s",
                         spruce_format_name(spruce_linear_format(lin, batches[b])),
                         ndt ? "/" : "", ndt ? spruce_dtype_name(dts[di]) : "");
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
                    res.dense_f32_ms = dms;
                    res.sparse_ms = sms;
                    res.speedup = dms / sms;
                    res.dtype = dts[di];
                    res.groupsize = dts[di] == SPRUCE_DT_INT4 ? groupsize : 0;
                    bench_add_result(cx, &res);
                } else {
                    printf("%-44s %5dx%-5d %5d %7.1f%% %-12s %10.3f %10.3f %7.2fx\n", tt->name,
                           rows, cols, batches[b], 100.0 * zeros / ((double)rows * cols), fmt,
                           dms, sms, dms / sms);
                    fflush(stdout);
                }
            }
            spruce_linear_free(lin);
            lin = NULL;
        }
    }
    if (!nlayers) {
        cli_fail("bench --model %s: no linear layer weights (*.layers.*_proj.weight) found", dir);
        rc = 1;
        goto done;
    }
    if (!cx->json)
        for (di = 0; di < nt; di++)
            for (b = 0; b < nb; b++)
                printf("all %d linear layers, batch %d: dense f32 %.3f ms, auto%s%s %.3f ms, "
                       "%.2fx (each layer timed alone, in cache when it fits)\n", nlayers,
                       batches[b], tot_dense[b], ndt ? " " : "",
                       ndt ? spruce_dtype_name(dts[di]) : "", tot_sparse[di][b],
                       tot_dense[b] / tot_sparse[di][b]);
    rc = 0;
    if (!cx->json) {
        fflush(stdout);
        rc = bench_decode(dir, 64, 3, dtypes, ndt, groupsize);
    }
done:
    spruce_ckpt_close(ck);
    free(W);
    free(X);
    free(Y);
    free(t);
    return rc;
}
