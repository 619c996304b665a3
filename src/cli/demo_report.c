/* demo_report.c: the report `spruce demo` prints on stdout: the model, the
 * pruner's losses, the perplexities, the decoding rates, the time per stage
 * and the paths written. */
#include <stdio.h>
#include <string.h>

#include "cmd_demo.h"

static const char *const stage_name[ST_N] = {
    "synth model + tokens", "dense perplexity", "prune 2:4 (SparseGPT)", "pruned perplexity",
    /* the perplexity stages include the forward of the compared windows */
    "decoder setup", "decode benchmark",
};

static void print_losses(const demo_run *d)
{
    const demo_plan *plan = &d->plan;
    int l, j;
    printf("SparseGPT loss per layer (the pruner's sum of (w - q)^2 / U_ii^2 / 2):\n");
    printf("block");
    for (j = 0; j < SPRUCE_NPROJ; j++) {
        const char *s = strchr(spruce_proj_path((spruce_proj)j), '.');
        char name[16];
        snprintf(name, sizeof name, "%s", s ? s + 1 : spruce_proj_path((spruce_proj)j));
        if ((s = strstr(name, "_proj")))
            name[s - name] = '\0';
        printf(" %10s", name);
    }
    printf(" %10s %9s\n", "sum", "sparsity");
    for (l = 0; l < plan->synth.layers; l++) {
        const double *loss = d->pctx.loss + l * SPRUCE_NPROJ;
        double tot = 0;
        printf("%5d", l);
        for (j = 0; j < SPRUCE_NPROJ; j++) {
            printf(" %10.4g", loss[j]);
            tot += loss[j];
        }
        printf(" %10.4g %9.4f\n", tot,
               d->pctx.numel[l] ? (double)d->pctx.nz[l] / (double)d->pctx.numel[l] : 0.0);
    }
    printf("pruned %d linear layers: %lld of %lld weights zero (sparsity %.4f), total loss "
           "%.4g\n\n", d->sum.layers_pruned, (long long)d->sum.zeros, (long long)d->sum.params,
           d->sum.sparsity, d->sum.loss);
}

static void print_perplexities(const demo_run *d)
{
    printf("perplexity on the held-out tokens (%d windows of %d):\n", d->nwin_dense,
           d->plan.seqlen);
    printf("  dense perplexity   %.3f\n", d->ppl_dense);
    printf("  pruned perplexity  %.3f  (%+.2f%%)\n", d->ppl_pruned,
           100.0 * (d->ppl_pruned / d->ppl_dense - 1.0));
    printf("  The model and the token ids are random, so these perplexities are\n"
           "  not meaningful as language modelling (a random model scores near the vocabulary\n"
           "  size, %d): their change measures how far 2:4 pruning moved the model away from\n"
           "  the dense one.\n",
           d->plan.synth.vocab);
    printf("  next-token predictions, pruned against dense (%d windows): the same most likely\n"
           "  token at %.1f%% of positions, mean KL(dense || pruned) %.4g nats\n\n", d->cmpwin,
           100.0 * d->top1, d->kl);
}

static void print_decoding(const demo_run *d)
{
    const double tps_dense = d->tps[DEC_DENSE], tps_auto = d->tps[DEC_AUTO];
    const int steps = d->plan.steps;
    int k;
    printf("decoding the pruned weights (batch 1, %d tokens after BOS, median of %d "
           "interleaved runs):\n", steps, DEMO_REPS);
    printf("  dense OpenBLAS     %8.2f tokens/s\n", tps_dense);
    printf("  spruce auto        %8.2f tokens/s  (%d of %d linear layers in a sparse format)\n",
           tps_auto, d->nsparse, SPRUCE_NPROJ * d->plan.synth.layers);
    printf("  spruce 2:4         %8.2f tokens/s  (every linear layer in the 2:4 format, "
           "%.2fx)\n", d->tps[DEC_NM], d->tps[DEC_NM] / tps_dense);
    printf("  decode speed-up    %.2fx  (auto against dense)\n", tps_auto / tps_dense);
    printf("  'auto' chose per layer, by timing it once at start-up, between dense and the\n"
           "  sparse formats; on a busy machine that choice and these rates vary run to run.\n");
    for (k = DEC_AUTO; k < DEC_N; k++) {
        if (d->same[k] == steps)
            printf("  dense and %s generated the same %d greedy ids.\n", demo_dec_name[k], steps);
        else
            printf("  dense and %s greedy ids agree on the first %d of %d (float rounding "
                   "differs between kernels).\n", demo_dec_name[k], d->same[k], steps);
    }
    printf("\n");
}

void demo_print_report(const demo_run *d, double total)
{
    const demo_plan *plan = &d->plan;
    const double tps_dense = d->tps[DEC_DENSE], tps_auto = d->tps[DEC_AUTO];
    int j;
    printf("spruce demo: 2:4 SparseGPT pruning of a random LLaMA-shaped model, end to end\n\n");
    printf("model        hidden %d, intermediate %d, %d layers, %d heads (%d key/value), "
           "vocab %d, f32: %.1f M parameters\n", plan->synth.hidden, plan->synth.intermediate,
           plan->synth.layers, plan->synth.heads, plan->synth.kv_heads, plan->synth.vocab,
           d->nparams / 1e6);
    printf("tokens       random ids: calibration %d x %d, held-out %d x %d\n", plan->nsamples,
           plan->seqlen, plan->nheld, plan->seqlen);
    printf("threads      %d\n\n", d->nthreads);
    print_losses(d);
    print_perplexities(d);
    print_decoding(d);
    printf("time per stage:\n");
    for (j = 0; j < ST_N; j++)
        printf("  %-24s %7.1f s\n", stage_name[j], d->stage[j]);
    printf("  %-24s %7.1f s\n\n", "total", total);
    printf("summary: 2:4 SparseGPT, perplexity %.3f -> %.3f (%+.2f%%), decode %.2f -> %.2f "
           "tokens/s (%.2fx)\n", d->ppl_dense, d->ppl_pruned,
           100.0 * (d->ppl_pruned / d->ppl_dense - 1.0), tps_dense, tps_auto,
           tps_auto / tps_dense);
    printf("wrote:\n");
    printf("  model         %s\n", d->paths.model);
    printf("  pruned model  %s\n", d->paths.pruned);
    printf("  masks         %s\n", d->paths.masks);
    printf("  tokens        %s, %s\n", d->paths.calib, d->paths.held);
    printf("next: spruce masks info %s\n      spruce run %s --prompt 1 --steps 32\n",
           d->paths.masks, d->paths.pruned);
}
