/* test_quant_stories.c: joint pruning and quantization through the pipeline
 * on stories260k: 2:4 with --wbits 8 against the published 2:4 perplexity
 * (the fixture lists none for wbits: 8-bit rounding with error feedback must
 * stay within a few percent of it), and --wbits 4 --groupsize 32 no worse than
 * rounding to nearest after SparseGPT; every reported layer's grid holds its
 * kept weights and its pruned ones are +0.0. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_testutil.h"
#include "spruce_pipeline.h"
#include "spruce_tokens.h"

typedef struct {
    int layers, with_grid, off_grid, bad_zero;
} grid_log;

/* Every kept weight is scale * (q - zero) of its group; pruned ones +0.0. */
static int check_layer(void *ctx, const spruce_layer_report *r)
{
    grid_log *lg = ctx;
    int64_t i, numel = (int64_t)r->rows * r->cols;
    lg->layers++;
    if (!r->grid)
        return 0;
    lg->with_grid++;
    for (i = 0; i < numel; i++) {
        int64_t row = i / r->cols, g = (i % r->cols) / r->grid->groupsize,
                k = row * (r->grid->cols / r->grid->groupsize) + g;
        float w = r->weight[i], s = r->grid->scale[k], z = r->grid->zero[k];
        if (!r->mask[i]) {
            lg->bad_zero += w != 0.0f || signbit(w);
            continue;
        }
        lg->off_grid += w != s * ((rintf(w / s) + z) - z);
    }
    return 0;
}

/* Round every selected layer of the (pruned) model to nearest on a grid of
 * its own weights: magnitude at sparsity 0 with wbits prunes nothing and
 * rounds the non-zero weights, no error feedback. */
static void round_to_nearest(spruce_model *m, int wbits, int groupsize, int skip_down)
{
    const spruce_config *c = spruce_model_config(m);
    int layer, l;
    for (layer = 0; layer < c->num_hidden_layers; layer++) {
        spruce_block *b;
        cr_assert_eq(spruce_model_get_block(m, layer, &b), 0, "%s", spruce_errdetail());
        for (l = 0; l < SPRUCE_NPROJ; l++) {
            spruce_prune_opts o;
            if (skip_down && l == SPRUCE_PROJ_DOWN)
                continue;
            spruce_prune_opts_init(&o);
            o.method = SPRUCE_METHOD_MAGNITUDE;
            o.sparsity = 0.0f;
            o.wbits = wbits;
            o.groupsize = groupsize;
            cr_assert_eq(spruce_prune_layer(b->w[l], b->rows[l], b->cols[l], NULL, &o, NULL, NULL),
                         0, "%s", spruce_errdetail());
        }
        spruce_model_put_block(m, b);
    }
}

typedef struct {
    float sparsity;
    int pn, pm, wbits, groupsize, rtn_bits;
    const char *exclude;
} qcase;

static double prune_eval(const char *dir, qcase q, grid_log *lg)
{
    spruce_model *m;
    spruce_pipeline_opts o;
    spruce_pipeline_summary s;
    size_t n;
    uint32_t *calib = fixture_tokens(dir, "calib.u16", &n);
    double ppl;
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_cache_blocks(m), 0, "%s", spruce_errdetail());
    spruce_pipeline_opts_init(&o);
    o.prune.sparsity = q.sparsity;
    o.prune.prune_n = q.pn;
    o.prune.prune_m = q.pm;
    o.prune.wbits = q.wbits;
    o.prune.groupsize = q.wbits ? q.groupsize : 0;
    o.exclude = q.exclude;
    o.on_layer = check_layer;
    o.ctx = lg;
    cr_assert_eq(spruce_pipeline_run(m, calib, NCALIB, 256, NULL, &o, &s), 0, "%s",
                 spruce_errdetail());
    if (q.pm)
        cr_assert(s.sparsity >= 0.5, "sparsity %.4f", s.sparsity);
    if (q.rtn_bits)
        round_to_nearest(m, q.rtn_bits, q.groupsize, q.exclude != NULL);
    ppl = stories_ppl(m, dir, NEVAL);
    free(calib);
    spruce_model_free(m);
    return ppl;
}

Test(stories_quant, pattern_2_4_wbits_8_near_the_published_2_4)
{
    NEED_FIXTURE(dir);
    grid_log lg = {0};
    double ppl = prune_eval(dir, (qcase){0.0f, 2, 4, 8, 0, 0, NULL}, &lg);
    cr_log_info("2:4 + wbits 8: perplexity %.1f (published 2:4 without quantization 2433)", ppl);
    cr_assert_eq(lg.layers, 35);
    cr_assert_eq(lg.with_grid, 35, "every layer report carries its grid");
    cr_assert_eq(lg.off_grid, 0, "%d kept weights off their grid", lg.off_grid);
    cr_assert_eq(lg.bad_zero, 0, "%d pruned weights are not +0.0", lg.bad_zero);
    if (SANITIZED)
        cr_assert(isfinite(ppl) && ppl > 17.0, "perplexity %.1f", ppl);
    else
        cr_assert(fabs(ppl - 2433) <= 0.05 * 2433, "2:4 + wbits 8: perplexity %.1f, published 2:4 "
                  "%.0f (tolerance 5%%)", ppl, 2433.0);
}

/* At 20% (SparseGPT 36.71 in the fixture's table), where 4-bit rounding is
 * visible; at 2:4 this model is already at perplexity ~2400 and the two differ
 * by noise.  down_proj has 172 inputs, which 32 does not divide: it stays
 * out of both runs. */
Test(stories_quant, wbits_4_groupsize_32_no_worse_than_round_to_nearest_after_sparsegpt)
{
    NEED_FIXTURE(dir);
    grid_log lg = {0}, lg2 = {0};
    double joint = prune_eval(dir, (qcase){0.2f, 0, 0, 4, 32, 0, "down_proj"}, &lg);
    double rtn = prune_eval(dir, (qcase){0.2f, 0, 0, 0, 32, 4, "down_proj"}, &lg2);
    cr_log_info("20%%, 4 bits, groups of 32: joint %.1f, round to nearest after SparseGPT %.1f",
                joint, rtn);
    cr_assert_eq(lg.with_grid, 30);
    cr_assert_eq(lg2.with_grid, 0);
    cr_assert_eq(lg.off_grid + lg.bad_zero, 0, "%d off the grid, %d pruned not +0.0", lg.off_grid,
                 lg.bad_zero);
    cr_assert(joint <= rtn, "joint %.1f is worse than rounding to nearest after SparseGPT %.1f",
              joint, rtn);
}
