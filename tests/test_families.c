/* test_families.c: the model families beyond plain llama, on the shared fixtures
 * ($SPRUCE_FIXTURES/families: tiny random checkpoints with the logits that an
 * independent implementation of the transformers definitions computed):
 * llama with rope_scaling llama3 and yarn, qwen3 in F32 and BF16, gemma2 and
 * gemma3 (test_gemma.c checks Gemma's parts one by one).  The dense
 * forward, `spruce eval --logits` and the key/value-cache decoder must all
 * match the golden logits; each rope-scaling formula is checked against a
 * scalar double-precision computation of transformers' formula
 * (modeling_rope_utils.py), qwen3's q/k norms against a scalar block, and
 * pruning keeps the norms and gives exact sparsity. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "block.h"
#include "decode_testutil.h"
#include "model_testutil.h"
#include "ref_testutil.h"
#include "families_testutil.h"
#include "rope.h"
#include "spruce_ckpt.h"
#include "spruce_decode.h"
#include "spruce_family.h"
#include "spruce_masks.h"
#include "spruce_model.h"
#include "spruce_pipeline.h"
#include "spruce_qmatrix.h"
#include "spruce_tokens.h"


static const char *matching[] = {"llama3-rope", "llama-yarn", "qwen3", "qwen3-bf16", "gemma2",
                                  "gemma3", "phi3", "opt", "mixtral", "qwen3-moe"};
#define NMATCHING ((int)(sizeof matching / sizeof matching[0]))

/* ---- the dense forward ------------------------------------------------------ */

static void check_forward(const char *name, spruce_attention att)
{
    NEED_FAMILY(dir, name);
    spruce_model *m = NULL;
    uint32_t *ids;
    float *gold, *lg;
    int vocab, s;
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s: %s", name, spruce_errdetail());
    cr_assert_eq(spruce_model_set_attention(m, att), 0);
    vocab = spruce_model_config(m)->vocab_size;
    load_golden(dir, vocab, &ids, &gold);
    lg = malloc((size_t)SEQ * vocab * sizeof(float));
    for (s = 0; s < NSEQ; s++) {
        double d;
        cr_assert_eq(spruce_model_forward(m, ids + s * SEQ, SEQ, lg), 0, "%s",
                     spruce_errdetail());
        d = max_abs_diff(lg, gold + (size_t)s * SEQ * vocab, (size_t)SEQ * vocab);
        cr_assert(d < TOL, "%s sequence %d: max abs difference %g from the golden logits", name,
                  s, d);
    }
    free(lg);
    free(gold);
    free(ids);
    spruce_model_free(m);
}

Test(families, llama3_rope_forward) { check_forward("llama3-rope", SPRUCE_ATTENTION_AUTO); }
Test(families, llama_yarn_forward) { check_forward("llama-yarn", SPRUCE_ATTENTION_AUTO); }
Test(families, qwen3_forward) { check_forward("qwen3", SPRUCE_ATTENTION_AUTO); }
Test(families, qwen3_bf16_forward) { check_forward("qwen3-bf16", SPRUCE_ATTENTION_AUTO); }
Test(families, phi3_forward) { check_forward("phi3", SPRUCE_ATTENTION_AUTO); }
Test(families, phi3_longrope_forward) { check_forward("phi3-longrope", SPRUCE_ATTENTION_AUTO); }
Test(families, phi3_forward_on_blas_attention) { check_forward("phi3", SPRUCE_ATTENTION_BLAS); }
Test(families, opt_forward) { check_forward("opt", SPRUCE_ATTENTION_AUTO); }
Test(families, opt_forward_on_row_attention) { check_forward("opt", SPRUCE_ATTENTION_ROWS); }
Test(families, opt_forward_on_blas_attention) { check_forward("opt", SPRUCE_ATTENTION_BLAS); }

Test(families, forward_on_blas_attention)
{
    int i;
    for (i = 0; i < NMATCHING; i++)
        check_forward(matching[i], SPRUCE_ATTENTION_BLAS);
}

/* ---- spruce eval --logits ---------------------------------------------------- */

static void check_eval_logits(const char *name)
{
    NEED_FAMILY(dir, name);
    NEED_SPRUCE_BIN(bin);
    spruce_config c;
    uint32_t *ids;
    float *gold, *lg;
    char *d = tmp_dir(), data[1200], out[1200], cmd[4096];
    size_t n = (size_t)NSEQ * SEQ, nl;
    FILE *f;
    double diff;
    cr_assert_eq(spruce_config_load(dir, &c), 0, "%s", spruce_errdetail());
    load_golden(dir, c.vocab_size, &ids, &gold);
    /* the two sequences back to back in a .u16 file: two windows of 48 */
    snprintf(data, sizeof data, "%s/ids.u16", d);
    cr_assert_eq(spruce_tokens_save(data, ids, n), 0, "%s", spruce_errdetail());
    snprintf(out, sizeof out, "%s/logits.f32", d);
    snprintf(cmd, sizeof cmd, "'%s' eval '%s' --data '%s' --seqlen %d --logits '%s' "
             ">/dev/null 2>&1", bin, dir, data, SEQ, out);
    cr_assert_eq(sh(cmd), 0, "%s", cmd);
    nl = n * (size_t)c.vocab_size;
    lg = malloc((nl + 1) * sizeof(float));
    f = fopen(out, "rb");
    cr_assert(f, "%s was not written", out);
    cr_assert_eq(fread(lg, sizeof(float), nl + 1, f), nl, "%s: expected %zu floats", out, nl);
    fclose(f);
    diff = max_abs_diff(lg, gold, nl);
    cr_assert(diff < TOL, "%s: eval --logits is %g from the golden logits", name, diff);
    /* nothing but the data and the logits in the directory: the temporary is gone */
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | wc -l) -eq 2", d);
    cr_assert_eq(sh(cmd), 0, "a temporary file was left beside %s", out);
    free(lg);
    free(gold);
    free(ids);
    rm_tree(d);
    free(d);
}

Test(families, eval_logits_match)
{
    int i;
    for (i = 0; i < NMATCHING; i++)
        check_eval_logits(matching[i]);
}

Test(families, eval_logits_unwritable_leaves_nothing)
{
    NEED_FAMILY(dir, "qwen3");
    NEED_SPRUCE_BIN(bin);
    char *d = tmp_dir(), cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' eval '%s' --data '%s/ids.txt' --seqlen %d --logits "
             "'%s/absent/l.f32' >/dev/null 2>'%s/err'", bin, dir, dir, SEQ, d, d);
    cr_assert_eq(sh(cmd), 1);
    snprintf(cmd, sizeof cmd, "grep -q 'absent/l.f32' '%s/err'", d);
    cr_assert_eq(sh(cmd), 0, "the message names the file");
    rm_tree(d);
    free(d);
}

/* ---- decoding with a key/value cache ------------------------------------------ */


static void check_decoder(const char *name)
{
    NEED_FAMILY(dir, name);
    spruce_model *m = NULL;
    spruce_decoder *dec = NULL;
    uint32_t *ids;
    float *gold, *lg;
    int vocab, s, t;
    double worst = 0;
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    vocab = spruce_model_config(m)->vocab_size;
    load_golden(dir, vocab, &ids, &gold);
    lg = malloc((size_t)vocab * sizeof(float));
    cr_assert_eq(spruce_decoder_create(m, SEQ, SPRUCE_DECODE_DENSE, &dec), 0, "%s",
                 spruce_errdetail());
    for (s = 0; s < NSEQ; s++) {
        spruce_decoder_reset(dec);
        for (t = 0; t < SEQ; t++) {
            double d;
            cr_assert_eq(spruce_decoder_step(dec, ids[s * SEQ + t], lg), 0, "%s",
                         spruce_errdetail());
            d = max_abs_diff(lg, gold + ((size_t)s * SEQ + t) * vocab, (size_t)vocab);
            worst = d > worst ? d : worst;
        }
    }
    cr_assert(worst < TOL, "%s: the decoder's logits are up to %g from the golden ones", name,
              worst);
    spruce_decoder_free(dec);
    free(lg);
    free(gold);
    free(ids);
    spruce_model_free(m);
}

Test(families, decoder_matches_every_position)
{
    int i;
    for (i = 0; i < NMATCHING; i++)
        check_decoder(matching[i]);
}

/* phi3-longrope one token at a time, as transformers' generate: within the
 * original context (32) each step is the forward of the sequence so far with
 * the short factors; from the first token beyond it the cache is recomputed
 * with the long factors, so positions 32..47 are the golden ones (those of
 * the 48-token forward, causal). */
Test(families, phi3_longrope_decoder_switches_at_the_original_context)
{
    NEED_FAMILY(dir, "phi3-longrope");
    spruce_model *m = NULL;
    spruce_decoder *dec = NULL;
    uint32_t *ids;
    float *gold, *lg, *fw;
    int vocab, s, t;
    double short_worst = 0, long_worst = 0;
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_config(m)->rope.original_max_position_embeddings, 32);
    vocab = spruce_model_config(m)->vocab_size;
    load_golden(dir, vocab, &ids, &gold);
    lg = malloc((size_t)vocab * sizeof(float));
    fw = malloc((size_t)SEQ * vocab * sizeof(float));
    cr_assert_eq(spruce_decoder_create(m, SEQ, SPRUCE_DECODE_DENSE, &dec), 0, "%s",
                 spruce_errdetail());
    for (s = 0; s < NSEQ; s++) {
        spruce_decoder_reset(dec);
        for (t = 0; t < SEQ; t++) {
            double d;
            cr_assert_eq(spruce_decoder_step(dec, ids[s * SEQ + t], lg), 0, "%s",
                         spruce_errdetail());
            if (t < 32) {
                cr_assert_eq(spruce_model_forward(m, ids + s * SEQ, t + 1, fw), 0);
                d = max_abs_diff(lg, fw + (size_t)t * vocab, (size_t)vocab);
                short_worst = d > short_worst ? d : short_worst;
            } else {
                d = max_abs_diff(lg, gold + ((size_t)s * SEQ + t) * vocab, (size_t)vocab);
                long_worst = d > long_worst ? d : long_worst;
            }
        }
        /* the short factors really differ: position 31 is not the golden one */
        cr_assert_eq(spruce_model_forward(m, ids + s * SEQ, 32, fw), 0);
        cr_assert(max_abs_diff(fw + (size_t)31 * vocab, gold + ((size_t)s * SEQ + 31) * vocab,
                               (size_t)vocab) > 1e-3);
    }
    cr_assert(short_worst < TOL, "within the context: up to %g from the forward", short_worst);
    cr_assert(long_worst < TOL, "beyond the context: up to %g from the golden", long_worst);
    /* a prompt beyond the context is one forward with the long factors */
    spruce_decoder_reset(dec);
    cr_assert_eq(spruce_decoder_prefill(dec, ids, SEQ, lg), 0, "%s", spruce_errdetail());
    cr_assert(max_abs_diff(lg, gold + (size_t)(SEQ - 1) * vocab, (size_t)vocab) < TOL);
    spruce_decoder_free(dec);
    free(fw);
    free(lg);
    free(gold);
    free(ids);
    spruce_model_free(m);
}

/* `spruce run` on a sequence as prompt generates the golden argmax of its last
 * position, where the top logit leads the next by more than the tolerance. */
Test(families, run_generates_the_golden_argmax)
{
    NEED_SPRUCE_BIN(bin);
    int i, checked = 0;
    for (i = 0; i < NMATCHING; i++) {
        NEED_FAMILY(dir, matching[i]);
        spruce_config c;
        uint32_t *ids;
        float *gold;
        char cmd[8192], line[4096], want[32];
        int s, t, len;
        FILE *p;
        cr_assert_eq(spruce_config_load(dir, &c), 0, "%s", spruce_errdetail());
        load_golden(dir, c.vocab_size, &ids, &gold);
        for (s = 0; s < NSEQ; s++) {
            const float *last = gold + ((size_t)s * SEQ + SEQ - 1) * c.vocab_size;
            int best = 0, second = -1, j;
            for (j = 1; j < c.vocab_size; j++)
                if (last[j] > last[best]) {
                    second = best;
                    best = j;
                } else if (second < 0 || last[j] > last[second]) {
                    second = j;
                }
            if (last[best] - last[second] < 2 * TOL)
                continue;
            len = snprintf(cmd, sizeof cmd, "'%s' run '%s' --steps 1 --sparse off --prompt '",
                           bin, dir);
            for (t = 0; t < SEQ; t++)
                len += snprintf(cmd + len, sizeof cmd - len, "%s%u", t ? " " : "",
                                ids[s * SEQ + t]);
            snprintf(cmd + len, sizeof cmd - len, "' 2>/dev/null");
            p = popen(cmd, "r");
            cr_assert(p);
            cr_assert(fgets(line, sizeof line, p), "%s printed nothing", matching[i]);
            cr_assert_eq(pclose(p), 0);
            snprintf(want, sizeof want, "%d\n", best);
            cr_assert_str_eq(line, want, "%s sequence %d", matching[i], s);
            checked++;
        }
        free(gold);
        free(ids);
    }
    cr_assert(checked > 0, "no sequence had a clear argmax");
}

/* ---- rope-scaling formulas against transformers' formulas, scalar, double ---- */

static void parse_ok(const char *json, spruce_config *c)
{
    cr_assert_eq(spruce_config_parse(json, "test", c), 0, "%s: %s", json, spruce_errdetail());
}

#define LLAMA_CFG(extra)                                                                \
    "{\"model_type\": \"llama\", \"hidden_size\": 128, \"intermediate_size\": 256, "    \
    "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"vocab_size\": 64, "        \
    "\"head_dim\": 32, \"rope_theta\": 500000.0, " extra "}"

/* inv_freq and attention from spruce against ref (half values, double),
 * relative 1e-12; then the tables at positions p (each) against
 * cos(p inv) * attention, within float32 angle rounding. */
static void check_rope(const spruce_config *c, long L, const double *ref, double ref_att,
                       const int *pos, int npos)
{
    int half = c->head_dim / 2, i, k;
    double inv[64], att;
    float cs[64], sn[64];
    cr_assert(half <= 64);
    spruce__rope_inv_freq(c, L, inv, &att);
    cr_assert(fabs(att - ref_att) <= 1e-12 * ref_att, "attention %.17g, expected %.17g", att,
              ref_att);
    for (i = 0; i < half; i++)
        cr_assert(fabs(inv[i] - ref[i]) <= 1e-12 * ref[i], "inv_freq[%d] %.17g, expected %.17g",
                  i, inv[i], ref[i]);
    for (k = 0; k < npos; k++) {
        cr_assert_eq(spruce__rope_fill(c, L, pos[k], 1, cs, sn), 0);
        for (i = 0; i < half; i++) {
            double ang = pos[k] * ref[i];
            /* float32 angles as transformers computes them: off by ~ang 2^-23 */
            double tol = ref_att * (1e-6 + ang * 2.5e-7);
            cr_assert(fabs(cs[i] - cos(ang) * ref_att) <= tol, "cos at %d, %d", pos[k], i);
            cr_assert(fabs(sn[i] - sin(ang) * ref_att) <= tol, "sin at %d, %d", pos[k], i);
        }
    }
}

Test(rope, linear_divides_every_frequency)
{
    spruce_config c;
    double ref[16];
    int i, pos[] = {5, 100, 3000};   /* below and above max_position_embeddings 1024 */
    parse_ok(LLAMA_CFG("\"max_position_embeddings\": 1024, \"rope_scaling\": "
                       "{\"type\": \"linear\", \"factor\": 4.0}"), &c);
    cr_assert_eq(c.rope.type, SPRUCE_ROPE_LINEAR);
    for (i = 0; i < 16; i++)
        ref[i] = 1.0 / (4.0 * pow(500000.0, 2.0 * i / 32.0));
    check_rope(&c, spruce__rope_table_len(&c, 3000), ref, 1.0, pos, 3);
}

Test(rope, dynamic_depends_on_the_length_beyond_the_context)
{
    spruce_config c;
    double ref[16], base;
    int i, pos[] = {3, 60, 500};
    parse_ok(LLAMA_CFG("\"max_position_embeddings\": 256, \"rope_scaling\": "
                       "{\"rope_type\": \"dynamic\", \"factor\": 2.0}"), &c);
    /* within the context: the default frequencies, whatever the length */
    cr_assert_eq(spruce__rope_table_len(&c, 100), 256);
    cr_assert_eq(spruce__rope_table_len(&c, 256), 256);
    for (i = 0; i < 16; i++)
        ref[i] = 1.0 / pow(500000.0, 2.0 * i / 32.0);
    check_rope(&c, spruce__rope_table_len(&c, 100), ref, 1.0, pos, 2);
    /* a sequence of 700 tokens: base (factor L / max_pos - (factor - 1))^(d / (d - 2)) */
    cr_assert_eq(spruce__rope_table_len(&c, 700), 700);
    base = 500000.0 * pow(2.0 * 700.0 / 256.0 - 1.0, 32.0 / 30.0);
    for (i = 0; i < 16; i++)
        ref[i] = 1.0 / pow(base, 2.0 * i / 32.0);
    check_rope(&c, 700, ref, 1.0, pos, 3);
}

/* The fixture's llama3 scaling: factor 8, low/high 1/4, original 128,
 * rope_theta 500000, head_dim 32: three bands. */
Test(rope, llama3_three_bands)
{
    spruce_config c;
    double ref[16];
    int i, high = 0, mid = 0, low = 0, pos[] = {7, 100, 127, 128, 700, 5000};
    parse_ok(LLAMA_CFG("\"max_position_embeddings\": 1024, \"rope_scaling\": "
                       "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
                       "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 128}"),
             &c);
    for (i = 0; i < 16; i++) {
        double f = 1.0 / pow(500000.0, 2.0 * i / 32.0), wl = 2 * M_PI / f;
        if (wl < 128.0 / 4.0) {
            ref[i] = f;
            high++;
        } else if (wl > 128.0 / 1.0) {
            ref[i] = f / 8.0;
            low++;
        } else {
            double s = (128.0 / wl - 1.0) / (4.0 - 1.0);
            ref[i] = (1 - s) * f / 8.0 + s * f;
            mid++;
        }
    }
    cr_assert(high && mid && low, "bands %d %d %d", high, mid, low);
    check_rope(&c, 0, ref, 1.0, pos, 6);
}

/* yarn as the llama-yarn fixture has it (factor 4, no original: max_pos 64 is
 * the pre-extension length, beta 32/1), and with its optional keys. */
static void yarn_ref(int d, double theta, double o, double f, double bfast, double bslow,
                     int truncate, double *ref)
{
    double lo = d * log(o / (bfast * 2 * M_PI)) / (2 * log(theta));
    double hi = d * log(o / (bslow * 2 * M_PI)) / (2 * log(theta));
    int i;
    if (truncate) {
        lo = floor(lo);
        hi = ceil(hi);
    }
    lo = fmax(lo, 0);
    hi = fmin(hi, d - 1);
    if (lo == hi)
        hi += 0.001;
    for (i = 0; i < d / 2; i++) {
        double ramp = fmin(fmax((i - lo) / (hi - lo), 0), 1), e = 1 - ramp;
        double p = pow(theta, 2.0 * i / d);
        ref[i] = 1.0 / (f * p) * (1 - e) + 1.0 / p * e;
    }
}

Test(rope, yarn_ramp_and_attention_factor)
{
    spruce_config c;
    double ref[16];
    int i, ramped = 0, pos[] = {10, 63, 64, 400};
    parse_ok("{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 192, "
             "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"vocab_size\": 64, "
             "\"head_dim\": 16, \"rope_theta\": 10000.0, \"max_position_embeddings\": 64, "
             "\"rope_scaling\": {\"factor\": 4.0, \"rope_type\": \"yarn\"}}", &c);
    yarn_ref(16, 10000.0, 64, 4.0, 32, 1, 1, ref);
    for (i = 0; i < 8; i++) {
        double p = pow(10000.0, 2.0 * i / 16);
        ramped += ref[i] < 1.0 / p * (1 - 1e-9) && ref[i] > 1.0 / (4 * p) * (1 + 1e-9);
    }
    cr_assert(ramped > 0, "no frequency inside the ramp");
    check_rope(&c, 0, ref, 0.1 * log(4.0) + 1.0, pos, 4);

    /* original_max_position_embeddings: the factor becomes max_pos / original;
     * mscale and mscale_all_dim set the attention factor; truncate false */
    parse_ok("{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 192, "
             "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"vocab_size\": 64, "
             "\"head_dim\": 16, \"rope_theta\": 10000.0, \"max_position_embeddings\": 256, "
             "\"rope_scaling\": {\"factor\": 4.0, \"rope_type\": \"yarn\", \"beta_fast\": 16.0, "
             "\"beta_slow\": 2.0, \"mscale\": 0.707, \"mscale_all_dim\": 1.0, "
             "\"original_max_position_embeddings\": 32, \"truncate\": false}}", &c);
    yarn_ref(16, 10000.0, 32, 256.0 / 32, 16, 2, 0, ref);
    check_rope(&c, 0, ref, (0.1 * 0.707 * log(8.0) + 1) / (0.1 * 1.0 * log(8.0) + 1), pos, 4);

    /* attention_factor given wins */
    parse_ok("{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 192, "
             "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"vocab_size\": 64, "
             "\"head_dim\": 16, \"rope_theta\": 10000.0, \"max_position_embeddings\": 64, "
             "\"rope_scaling\": {\"factor\": 4.0, \"type\": \"yarn\", "
             "\"attention_factor\": 1.5}}", &c);
    yarn_ref(16, 10000.0, 64, 4.0, 32, 1, 1, ref);
    check_rope(&c, 0, ref, 1.5, pos, 4);
}

/* phi3-longrope's config: head_dim 16, partial_rotary_factor 0.75 (12 rotary
 * dims, 6 factors), original context 32 of 128. */
#define PHI3_LONGROPE_CFG(extra)                                                        \
    "{\"model_type\": \"phi3\", \"hidden_size\": 64, \"intermediate_size\": 96, "          \
    "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"vocab_size\": 64, "          \
    "\"max_position_embeddings\": 128, \"original_max_position_embeddings\": 32, "         \
    "\"partial_rotary_factor\": 0.75" extra "}"
#define LONGROPE_SCALING                                                                \
    ", \"rope_scaling\": {\"type\": \"longrope\", "                                       \
    "\"short_factor\": [1.005, 1.0995, 1.1466, 1.4717, 1.2017, 1.0909], "                  \
    "\"long_factor\": [3.0932, 1.9414, 1.3636, 1.9708, 3.7936, 3.369]}"

/* inv_freq_i = 1 / (factor_i 10000^(2i/12)), short at or below the original
 * context (32), long above it; cos, sin times sqrt(1 + ln 4 / ln 32) at every
 * length; the tables at positions below and above 32. */
Test(rope, longrope_short_and_long_factors)
{
    static const double sf[6] = {1.005, 1.0995, 1.1466, 1.4717, 1.2017, 1.0909};
    static const double lf[6] = {3.0932, 1.9414, 1.3636, 1.9708, 3.7936, 3.369};
    spruce_config c;
    double inv[8], att, ref_att = sqrt(1 + log(4.0) / log(32.0));
    float cs[8 * 41], sn[8 * 41];
    int pass, i, k, pos[2] = {5, 40};
    parse_ok(PHI3_LONGROPE_CFG(LONGROPE_SCALING), &c);
    cr_assert_eq(c.rope.type, SPRUCE_ROPE_LONGROPE);
    cr_assert_eq(c.rotary_dim, 12);
    cr_assert_eq(spruce__rope_table_len(&c, 32), 0, "32 tokens: the short factors");
    cr_assert_neq(spruce__rope_table_len(&c, 33), 0, "33 tokens: the long factors");
    for (pass = 0; pass < 2; pass++) {
        long L = spruce__rope_table_len(&c, pass ? 48 : 16);
        const double *f = pass ? lf : sf;
        spruce__rope_inv_freq(&c, L, inv, &att);
        cr_assert(fabs(att - ref_att) < 1e-12, "attention %.17g, expected %.17g", att, ref_att);
        for (i = 0; i < 6; i++) {
            double ref = 1.0 / (f[i] * pow(10000.0, 2.0 * i / 12));
            cr_assert(fabs(inv[i] - ref) <= 1e-12 * ref, "%s inv_freq[%d] %.17g, expected %.17g",
                      pass ? "long" : "short", i, inv[i], ref);
        }
        cr_assert_eq(spruce__rope_fill(&c, L, 0, 41, cs, sn), 0);
        for (k = 0; k < 2; k++)
            for (i = 0; i < 6; i++) {
                double ang = pos[k] / (f[i] * pow(10000.0, 2.0 * i / 12));
                double tol = ref_att * (1e-6 + ang * 2.5e-7);
                /* rows of head_dim / 2 = 8 floats, the first 6 used */
                cr_assert(fabs(cs[pos[k] * 8 + i] - cos(ang) * ref_att) <= tol);
                cr_assert(fabs(sn[pos[k] * 8 + i] - sin(ang) * ref_att) <= tol);
            }
    }
    /* attention_factor given wins; phi3 without the top-level key: 4096 */
    parse_ok(PHI3_LONGROPE_CFG(", \"rope_scaling\": {\"type\": \"su\", \"attention_factor\": "
                               "1.25, \"short_factor\": [1, 1, 1, 1, 1, 1], \"long_factor\": "
                               "[2, 2, 2, 2, 2, 2]}"), &c);
    spruce__rope_inv_freq(&c, 0, inv, &att);
    cr_assert_eq(att, 1.25);
    parse_ok("{\"model_type\": \"phi3\", \"hidden_size\": 64, \"intermediate_size\": 96, "
             "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"vocab_size\": 64, "
             "\"max_position_embeddings\": 8192}", &c);
    cr_assert_eq(c.rotary_dim, 16);
    cr_assert_eq(c.rms_norm_eps, 1e-5);
}

/* Partial rotary against a direct computation: the first 12 dims of each
 * 16-wide head rotate (pairs i, i + 6), the last 4 pass through. */
Test(rope, partial_rotary_rotates_the_first_dims)
{
    spruce_config c;
    float x[2 * 16], y[2 * 16], cs[8 * 8], sn[8 * 8];
    int h, i, p = 7;
    parse_ok(PHI3_LONGROPE_CFG(""), &c);
    cr_assert_eq(c.rotary_dim, 12);
    cr_assert_eq(spruce__rope_fill(&c, 0, 0, 8, cs, sn), 0);
    for (i = 0; i < 32; i++)
        x[i] = y[i] = (float)sin(1.7 * i + 0.3);
    spruce__rope(y, 1, 1, p, 2, 16, 12, cs, sn);
    for (h = 0; h < 2; h++)
        for (i = 0; i < 16; i++) {
            const float *xh = x + 16 * h;
            double ref;
            if (i >= 12) {
                ref = xh[i];
            } else {
                int j = i % 6;
                double ang = p / pow(10000.0, 2.0 * j / 12), co = cos(ang), si = sin(ang);
                ref = i < 6 ? xh[i] * co - xh[i + 6] * si : xh[i] * co + xh[i - 6] * si;
            }
            cr_assert(fabs(y[16 * h + i] - ref) < 1e-5, "head %d dim %d: %g, expected %g", h, i,
                      y[16 * h + i], ref);
        }
}

/* What phi3's keys do not allow is refused, naming it. */
Test(rope, phi3_refusals)
{
    spruce_config c;
    cr_assert_eq(spruce_config_parse(PHI3_LONGROPE_CFG(", \"rope_scaling\": {\"type\": "
                                                       "\"longrope\", \"short_factor\": [1], "
                                                       "\"long_factor\": [1]}"), "t", &c),
                 SPRUCE_EFORMAT);
    cr_assert(strstr(spruce_errdetail(), "short_factor"), "%s", spruce_errdetail());
    cr_assert_eq(spruce_config_parse(PHI3_LONGROPE_CFG(", \"rope_scaling\": {\"rope_type\": "
                                                       "\"linear\", \"factor\": 2}"), "t", &c),
                 SPRUCE_EUNSUPPORTED);
    cr_assert(strstr(spruce_errdetail(), "longrope"), "%s", spruce_errdetail());
    cr_assert_eq(spruce_config_parse(LLAMA_CFG("\"max_position_embeddings\": 64, "
                                               "\"partial_rotary_factor\": 0.5"), "t", &c),
                 SPRUCE_EUNSUPPORTED);
    cr_assert(strstr(spruce_errdetail(), "phi3"), "%s", spruce_errdetail());
}

Test(rope, default_type_and_rope_theta_inside)
{
    spruce_config c;
    double ref[16];
    int i, pos[] = {1, 2000};
    parse_ok(LLAMA_CFG("\"max_position_embeddings\": 1024, \"rope_scaling\": "
                       "{\"rope_type\": \"default\", \"rope_theta\": 1000.0}"), &c);
    for (i = 0; i < 16; i++)
        ref[i] = 1.0 / pow(1000.0, 2.0 * i / 32.0);
    check_rope(&c, 0, ref, 1.0, pos, 2);
}

static void expect_refused(const char *json, int code, const char *a, const char *b)
{
    spruce_config c;
    int rc = spruce_config_parse(json, "cfg.json", &c);
    cr_assert_eq(rc, code, "%s: %d (%s)", json, rc, spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), "cfg.json"), "%s", spruce_errdetail());
    cr_assert(!a || strstr(spruce_errdetail(), a), "'%s' not in: %s", a, spruce_errdetail());
    cr_assert(!b || strstr(spruce_errdetail(), b), "'%s' not in: %s", b, spruce_errdetail());
}

Test(rope, what_is_not_implemented_is_refused)
{
    expect_refused(LLAMA_CFG("\"max_position_embeddings\": 64, \"rope_scaling\": "
                             "{\"rope_type\": \"longrope\", \"short_factor\": [1], "
                             "\"long_factor\": [1]}"),
                   SPRUCE_EUNSUPPORTED, "longrope", "default, linear, dynamic, yarn, llama3");
    expect_refused(LLAMA_CFG("\"max_position_embeddings\": 64, \"rope_scaling\": "
                             "{\"rope_type\": \"linear\", \"factor\": 2.0, \"low_freq_factor\": 1}"),
                   SPRUCE_EUNSUPPORTED, "low_freq_factor", "rope_type, factor");
    expect_refused(LLAMA_CFG("\"max_position_embeddings\": 64, \"rope_scaling\": "
                             "{\"rope_type\": \"llama3\", \"factor\": 8.0, "
                             "\"original_max_position_embeddings\": 128}"),
                   SPRUCE_EFORMAT, "low_freq_factor", "missing");
    expect_refused(LLAMA_CFG("\"max_position_embeddings\": 64, \"rope_scaling\": "
                             "{\"factor\": 8.0}"),
                   SPRUCE_EFORMAT, "rope_type", NULL);
    expect_refused(LLAMA_CFG("\"max_position_embeddings\": 64, \"rope_scaling\": "
                             "{\"type\": \"dynamic\", \"factor\": -1}"),
                   SPRUCE_EFORMAT, "factor", "positive");
    /* an empty key is no key of any type (it once made the key lookup loop forever) */
    expect_refused(LLAMA_CFG("\"max_position_embeddings\": 64, \"rope_scaling\": "
                             "{\"rope_type\": \"linear\", \"factor\": 2.0, \"\": 1}"),
                   SPRUCE_EUNSUPPORTED, "key ''", "rope_type, factor");
    expect_refused(LLAMA_CFG("\"max_position_embeddings\": 64, \"partial_rotary_factor\": 0.5"),
                   SPRUCE_EUNSUPPORTED, "partial_rotary_factor", NULL);
    /* sliding layers without a window (use_sliding_window false) */
    expect_refused("{\"model_type\": \"qwen3\", \"hidden_size\": 64, \"intermediate_size\": 96, "
                   "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 64, "
                   "\"max_position_embeddings\": 64, \"layer_types\": [\"full_attention\", "
                   "\"sliding_attention\"]}",
                   SPRUCE_EUNSUPPORTED, "layer_types[1]", "no window");
}

Test(rope, head_dim_defaults_per_family)
{
    spruce_config c;
    /* qwen3: 128 when absent (configuration_qwen3.py), not hidden / heads */
    parse_ok("{\"model_type\": \"qwen3\", \"hidden_size\": 64, \"intermediate_size\": 96, "
             "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 64, "
             "\"max_position_embeddings\": 64}", &c);
    cr_assert_eq(c.head_dim, 128);
    cr_assert(c.qk_norm);
    cr_assert(!c.tie_word_embeddings);
    /* llama: head_dim given wins over hidden / heads */
    parse_ok(LLAMA_CFG("\"max_position_embeddings\": 64"), &c);
    cr_assert_eq(c.head_dim, 32);
    parse_ok("{\"model_type\": \"llama\", \"hidden_size\": 128, \"intermediate_size\": 256, "
             "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"vocab_size\": 64, "
             "\"head_dim\": 48, \"max_position_embeddings\": 64}", &c);
    cr_assert_eq(c.head_dim, 48);
    cr_assert_eq(spruce_dim_of(&c, SPRUCE_DIM_Q), 192);
}

Test(rope, warning_beyond_the_context)
{
    spruce_config c;
    char buf[512] = "";
    parse_ok(LLAMA_CFG("\"max_position_embeddings\": 64, \"rope_scaling\": "
                       "{\"rope_type\": \"dynamic\", \"factor\": 2.0}"), &c);
    cr_assert_eq(spruce_config_length_warning(&c, 64, buf, sizeof buf), 0);
    cr_assert_str_empty(buf);
    cr_assert_eq(spruce_config_length_warning(&c, 65, buf, sizeof buf), 1);
    cr_assert(strstr(buf, "65") && strstr(buf, "64") && strstr(buf, "dynamic"), "%s", buf);
}

/* ---- dynamic rope through the forward ------------------------------------------ */

/* A copy of the fixture at src (its weights linked) with the keys of the JSON
 * object keys set in config.json. */
static char *with_keys(const char *src, const char *keys)
{
    char *d = tmp_dir(), path[1200], cmd[4096];
    json_error_t e;
    json_t *cfg, *k;
    snprintf(path, sizeof path, "%s/config.json", src);
    cfg = json_load_file(path, 0, &e);
    cr_assert(cfg, "%s", e.text);
    k = json_loads(keys, 0, &e);
    cr_assert(k, "%s", e.text);
    cr_assert_eq(json_object_update(cfg, k), 0);
    json_decref(k);
    snprintf(path, sizeof path, "%s/config.json", d);
    cr_assert_eq(json_dump_file(cfg, path, JSON_REAL_PRECISION(17)), 0);
    json_decref(cfg);
    snprintf(cmd, sizeof cmd, "ln -s '%s/model.safetensors' '%s/model.safetensors'", src, d);
    cr_assert_eq(sh(cmd), 0);
    return d;
}

/* A copy of the llama3-rope fixture (its weights linked, not copied) with
 * config.json's rope keys replaced. */
static char *with_rope(const char *src, const char *scaling_json, double theta, int maxpos)
{
    char keys[4096];
    snprintf(keys, sizeof keys, "{\"rope_scaling\": %s, \"rope_theta\": %.17g, "
             "\"max_position_embeddings\": %d}", scaling_json ? scaling_json : "null", theta,
             maxpos);
    return with_keys(src, keys);
}

static void forward_of(const char *dir, const uint32_t *ids, int T, float *lg)
{
    spruce_model *m = NULL;
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_forward(m, ids, T, lg), 0, "%s", spruce_errdetail());
    spruce_model_free(m);
}

/* dynamic on a sequence longer than max_position_embeddings is the default
 * rope with the rescaled base for that length; within it, the default rope. */
Test(rope, dynamic_forward_is_default_with_the_rescaled_base)
{
    NEED_FAMILY(src, "llama3-rope");
    const char *dyn = "{\"rope_type\": \"dynamic\", \"factor\": 2.0}";
    double base = 500000.0 * pow(2.0 * SEQ / 32.0 - 1.0, 32.0 / 30.0);
    char *a = with_rope(src, dyn, 500000.0, 32);
    char *b = with_rope(src, NULL, base, 1024);
    char *c = with_rope(src, NULL, 500000.0, 1024);
    uint32_t *ids;
    float *gold, *la, *lb, *lc;
    size_t V = 256, n = (size_t)SEQ * V;
    double d;
    load_golden(src, (int)V, &ids, &gold);
    la = malloc(n * sizeof(float));
    lb = malloc(n * sizeof(float));
    lc = malloc(n * sizeof(float));
    forward_of(a, ids, SEQ, la);
    forward_of(b, ids, SEQ, lb);
    d = max_abs_diff(la, lb, n);
    cr_assert(d < TOL, "dynamic at %d tokens is %g from the default rope with the rescaled base",
              SEQ, d);
    forward_of(a, ids, 24, la);
    forward_of(c, ids, 24, lc);
    d = max_abs_diff(la, lc, (size_t)24 * V);
    cr_assert(d < TOL, "dynamic within the context is %g from the default rope", d);
    /* and the 48-token sequence's first 24 positions differ from the 24-token one's */
    forward_of(a, ids, SEQ, lb);
    cr_assert(max_abs_diff(lb, la, (size_t)24 * V) > 1e-3, "dynamic ignored the length");
    free(la);
    free(lb);
    free(lc);
    free(gold);
    free(ids);
    rm_tree(a);
    rm_tree(b);
    rm_tree(c);
    free(a);
    free(b);
    free(c);
}

/* The decoder within the context is the forward; beyond it, the token at p
 * has the frequencies of a p + 1 token sequence: its logits at p differ from
 * a decoder whose table never changes (the default rope). */
Test(rope, dynamic_decoder_updates_beyond_the_context)
{
    NEED_FAMILY(src, "llama3-rope");
    char *a = with_rope(src, "{\"rope_type\": \"dynamic\", \"factor\": 2.0}", 500000.0, 32);
    char *c = with_rope(src, NULL, 500000.0, 1024);
    spruce_model *ma = NULL, *mc = NULL;
    spruce_decoder *da = NULL, *dc = NULL;
    uint32_t *ids;
    float *gold, la[256], lc[256];
    int t;
    load_golden(src, 256, &ids, &gold);
    cr_assert_eq(spruce_model_open(a, &ma), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_open(c, &mc), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_decoder_create(ma, SEQ, SPRUCE_DECODE_DENSE, &da), 0);
    cr_assert_eq(spruce_decoder_create(mc, SEQ, SPRUCE_DECODE_DENSE, &dc), 0);
    for (t = 0; t < SEQ; t++) {
        double d;
        cr_assert_eq(spruce_decoder_step(da, ids[t], la), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_decoder_step(dc, ids[t], lc), 0, "%s", spruce_errdetail());
        d = max_abs_diff(la, lc, 256);
        if (t < 32)
            cr_assert(d < TOL, "position %d within the context: %g", t, d);
        else
            cr_assert(d > 1e-3, "position %d beyond the context: the frequencies did not "
                      "change (%g)", t, d);
    }
    spruce_decoder_free(da);
    spruce_decoder_free(dc);
    spruce_model_free(ma);
    spruce_model_free(mc);
    free(gold);
    free(ids);
    rm_tree(a);
    rm_tree(c);
    free(a);
    free(c);
}

/* A prompt fed with spruce_decoder_prefill rotates with the frequencies of its
 * length, as transformers' generate computes the prompt in one forward: its
 * last position's logits are the forward's. */
Test(rope, dynamic_prefill_is_the_forward_of_the_prompt)
{
    NEED_FAMILY(src, "llama3-rope");
    char *a = with_rope(src, "{\"rope_type\": \"dynamic\", \"factor\": 2.0}", 500000.0, 32);
    spruce_model *m = NULL;
    spruce_decoder *dec = NULL;
    uint32_t *ids;
    float *gold, *fw, lg[256], st[256];
    int t, n;
    load_golden(src, 256, &ids, &gold);
    fw = malloc(sizeof(float) * SEQ * 256);
    cr_assert_eq(spruce_model_open(a, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_decoder_create(m, SEQ + 1, SPRUCE_DECODE_DENSE, &dec), 0);
    for (n = 20; n <= SEQ; n += SEQ - 20) {   /* within the context, then beyond it */
        cr_assert_eq(spruce_model_forward(m, ids, n, fw), 0, "%s", spruce_errdetail());
        spruce_decoder_reset(dec);
        cr_assert_eq(spruce_decoder_prefill(dec, ids, n, lg), 0, "%s", spruce_errdetail());
        cr_assert(max_abs_diff(lg, fw + (size_t)(n - 1) * 256, 256) < TOL,
                  "prefill of %d tokens: %g from the forward", n,
                  max_abs_diff(lg, fw + (size_t)(n - 1) * 256, 256));
        spruce_decoder_reset(dec);
        for (t = 0; t < n; t++)
            cr_assert_eq(spruce_decoder_step(dec, ids[t], st), 0);
        if (n <= 32)
            cr_assert(max_abs_diff(st, lg, 256) < TOL, "within the context, steps = prefill");
        else
            cr_assert(max_abs_diff(st, lg, 256) > 1e-3, "beyond it, steps rotate each "
                      "position with its own frequencies");
    }
    spruce_decoder_free(dec);
    spruce_model_free(m);
    free(fw);
    free(gold);
    free(ids);
    rm_tree(a);
    free(a);
}

/* ---- qwen3's q/k norms against a scalar block ---------------------------------- */

typedef struct {
    float *att;
    int tokens, cols;
} tap_copy;

static int copy_tap(void *ctx, spruce_site site, const float *X, int tokens, int cols)
{
    tap_copy *t = ctx;
    if (site == SPRUCE_SITE_O) {
        t->att = malloc((size_t)tokens * cols * sizeof(float));
        memcpy(t->att, X, (size_t)tokens * cols * sizeof(float));
        t->tokens = tokens;
        t->cols = cols;
    }
    return 0;
}

/* y = x / sqrt(mean(x^2) + eps) * w over n values */
static void rms_ref(double *y, const double *x, const float *w, int n, double eps)
{
    double ss = 0;
    int i;
    for (i = 0; i < n; i++)
        ss += x[i] * x[i];
    for (i = 0; i < n; i++)
        y[i] = x[i] / sqrt(ss / n + eps) * w[i];
}

/* The attention output of block 0 for tokens 0..T-1 (T <= 8), computed
 * scalar from the block's weights (modeling_qwen3.py: Qwen3Attention), with
 * or without the q/k norms. */
static void attention_ref(const spruce_config *c, const spruce_block *b, const float *x, int T,
                          int with_norms, double *out)
{
    int hid = c->hidden_size, H = c->num_attention_heads, KV = c->num_key_value_heads;
    int d = c->head_dim, half = d / 2, t, h, i, j;
    double *a = malloc(sizeof(double) * hid), *xr = malloc(sizeof(double) * hid);
    double *q = malloc(sizeof(double) * (size_t)T * H * d);
    double *k = malloc(sizeof(double) * (size_t)T * KV * d);
    double *v = malloc(sizeof(double) * (size_t)T * KV * d);
    double tmp[512], rot[512];
    cr_assert(d <= 512 && T <= 8);
    for (t = 0; t < T; t++) {
        for (i = 0; i < hid; i++)
            xr[i] = x[(size_t)t * hid + i];
        rms_ref(a, xr, b->attn_norm, hid, c->rms_norm_eps);
        for (i = 0; i < H * d; i++) {
            double s = 0;
            for (j = 0; j < hid; j++)
                s += (double)b->w[SPRUCE_PROJ_Q][(size_t)i * hid + j] * a[j];
            q[(size_t)t * H * d + i] = s;
        }
        for (i = 0; i < KV * d; i++) {
            double s = 0, u = 0;
            for (j = 0; j < hid; j++) {
                s += (double)b->w[SPRUCE_PROJ_K][(size_t)i * hid + j] * a[j];
                u += (double)b->w[SPRUCE_PROJ_V][(size_t)i * hid + j] * a[j];
            }
            k[(size_t)t * KV * d + i] = s;
            v[(size_t)t * KV * d + i] = u;
        }
        /* per-head norms, then rotate-half RoPE at position t */
        for (h = 0; h < H + KV; h++) {
            double *xh = h < H ? q + ((size_t)t * H + h) * d : k + ((size_t)t * KV + h - H) * d;
            if (with_norms) {
                rms_ref(tmp, xh, h < H ? b->q_norm : b->k_norm, d, c->rms_norm_eps);
                memcpy(xh, tmp, sizeof(double) * d);
            }
            for (i = 0; i < half; i++) {
                double ang = t / pow(c->rope_theta, 2.0 * i / d);
                rot[i] = xh[i] * cos(ang) - xh[i + half] * sin(ang);
                rot[i + half] = xh[i + half] * cos(ang) + xh[i] * sin(ang);
            }
            memcpy(xh, rot, sizeof(double) * d);
        }
    }
    for (t = 0; t < T; t++)
        for (h = 0; h < H; h++) {
            int g = h / (H / KV);
            ref_causal_head(out + ((size_t)t * H + h) * d, q + ((size_t)t * H + h) * d,
                            k + (size_t)g * d, v + (size_t)g * d, (size_t)KV * d, t, d,
                            1.0 / sqrt((double)d));
        }
    free(a);
    free(xr);
    free(q);
    free(k);
    free(v);
}

Test(families, qwen3_qk_norm_against_a_scalar_block)
{
    NEED_FAMILY(dir, "qwen3");
    const int T = 6;
    spruce_model *m = NULL;
    spruce_block *b = NULL;
    spruce_fwd_ws *ws;
    const spruce_config *c;
    tap_copy tc = {NULL, 0, 0};
    uint32_t ids[6] = {3, 77, 150, 9, 301, 42};
    float *x;
    double *ref, *plain, d = 0, dn = 0;
    size_t i, n;
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    c = spruce_model_config(m);
    cr_assert_eq(c->head_dim, 32);
    cr_assert_neq(c->head_dim * c->num_attention_heads, c->hidden_size);
    cr_assert_eq(spruce_model_get_block(m, 0, &b), 0, "%s", spruce_errdetail());
    cr_assert(b->q_norm && b->k_norm);
    x = malloc(sizeof(float) * (size_t)T * c->hidden_size);
    cr_assert_eq(spruce_model_embed(m, ids, T, x), 0);
    ws = spruce_fwd_ws_alloc(c, T, 1);
    cr_assert_eq(spruce_block_forward(c, b, x, 1, T, ws, copy_tap, &tc, SPRUCE_SITE_O), 0, "%s",
                 spruce_errdetail());
    n = (size_t)T * c->num_attention_heads * c->head_dim;
    cr_assert_eq((size_t)tc.tokens * tc.cols, n);
    ref = malloc(sizeof(double) * n);
    plain = malloc(sizeof(double) * n);
    attention_ref(c, b, x, T, 1, ref);
    attention_ref(c, b, x, T, 0, plain);
    for (i = 0; i < n; i++) {
        d = fmax(d, fabs(tc.att[i] - ref[i]));
        dn = fmax(dn, fabs(plain[i] - ref[i]));
    }
    cr_assert(d < 1e-5, "the block's attention is %g from the scalar one", d);
    cr_assert(dn > 1e-3, "the q/k norms changed nothing (%g): the check would not see them",
              dn);
    free(tc.att);
    free(ref);
    free(plain);
    free(x);
    spruce_fwd_ws_free(ws);
    spruce_model_put_block(m, b);
    spruce_model_free(m);
}

Test(families, qwen3_tensor_table)
{
    spruce_config c;
    spruce_family_tensor t;
    size_t i;
    int qn = 0, kn = 0;
    parse_ok("{\"model_type\": \"qwen3\", \"hidden_size\": 64, \"intermediate_size\": 96, "
             "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 64, "
             "\"head_dim\": 32, \"max_position_embeddings\": 64, \"tie_word_embeddings\": true}",
             &c);
    for (i = 0; spruce_family_tensor_at(&c, i, &t) == 1; i++) {
        if (strstr(t.name, "q_norm")) {
            qn++;
            cr_assert_eq(t.role, SPRUCE_TENSOR_NORM);
            cr_assert_eq(t.shape[0], 32);
        }
        if (strstr(t.name, "k_norm"))
            kn++;
        cr_assert(!strstr(t.name, "lm_head"), "tied: no head");
    }
    cr_assert_eq(qn, 2);
    cr_assert_eq(kn, 2);
    cr_assert_eq(spruce_family_is_linear("qwen3", "model.layers.1.self_attn.q_norm.weight"), 0);
    cr_assert_eq(spruce_family_is_linear("qwen3", "model.layers.1.self_attn.q_proj.weight"), 1);
}

/* ---- pruning --------------------------------------------------------------------- */

static void check_prune(const char *name, const char *how, int nm)
{
    NEED_FAMILY(dir, name);
    NEED_SPRUCE_BIN(bin);
    char *d = tmp_dir(), out[1200], h5[1200], cmd[4096];
    spruce_model *src = NULL, *m = NULL;
    spruce_maskreader *mr = NULL;
    const spruce_config *c;
    int layer, l, i;
    cr_assert_eq(spruce_model_open(dir, &src), 0, "%s", spruce_errdetail());
    c = spruce_model_config(src);
    prune_fixture(bin, dir, d, c->vocab_size, how, out, sizeof out);
    cr_assert_eq(spruce_model_open(out, &m), 0, "%s", spruce_errdetail());
    for (layer = 0; layer < c->num_hidden_layers; layer++) {
        spruce_block *b = NULL, *o = NULL;
        cr_assert_eq(spruce_model_get_block(m, layer, &b), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_model_get_block(src, layer, &o), 0, "%s", spruce_errdetail());
        for (l = 0; l < SPRUCE_NPROJ; l++) {
            /* a fused tensor (phi3) is one layer: its lead holds every row */
            size_t n = spruce_family_tensor_rows(c->family, c, (spruce_proj)l) * b->cols[l];
            size_t z = 0, k;
            if (c->family->linear[l].part || !c->family->linear[l].path)
                continue;   /* a part of a fused tensor; OPT's gate, which it has not */
            /* biases are never pruned, and survive the writer */
            cr_assert_eq(!b->b[l], !o->b[l], "%s layer %d: bias", name, layer);
            if (o->b[l])
                cr_assert_arr_eq(b->b[l], o->b[l], sizeof(float) * b->rows[l]);
            for (k = 0; k < n; k++)
                z += b->w[l][k] == 0.0f;
            cr_assert_eq(z, n / 2, "%s layer %d %s: %zu of %zu zero", name, layer,
                         spruce_proj_path((spruce_proj)l), z, n);
            if (nm)   /* every group of 4 along a row keeps at most 2 */
                for (k = 0; k < n; k += 4)
                    cr_assert((b->w[l][k] == 0) + (b->w[l][k + 1] == 0) +
                              (b->w[l][k + 2] == 0) + (b->w[l][k + 3] == 0) >= 2,
                              "%s layer %d: group at %zu is not 2:4", name, layer, k);
        }
        /* norms are never pruned */
        cr_assert_arr_eq(b->attn_norm, o->attn_norm, sizeof(float) * c->hidden_size);
        cr_assert_arr_eq(b->mlp_norm, o->mlp_norm, sizeof(float) * c->hidden_size);
        cr_assert_eq(!b->attn_norm_b, !o->attn_norm_b);
        if (o->attn_norm_b) {   /* OPT's LayerNorm biases */
            cr_assert_arr_eq(b->attn_norm_b, o->attn_norm_b, sizeof(float) * c->hidden_size);
            cr_assert_arr_eq(b->mlp_norm_b, o->mlp_norm_b, sizeof(float) * c->hidden_size);
        }
        if (c->qk_norm) {
            cr_assert_arr_eq(b->q_norm, o->q_norm, sizeof(float) * c->head_dim);
            cr_assert_arr_eq(b->k_norm, o->k_norm, sizeof(float) * c->head_dim);
        }
        cr_assert_eq(!b->post_attn_norm, !o->post_attn_norm);
        if (o->post_attn_norm) {
            cr_assert_arr_eq(b->post_attn_norm, o->post_attn_norm,
                             sizeof(float) * c->hidden_size);
            cr_assert_arr_eq(b->post_mlp_norm, o->post_mlp_norm,
                             sizeof(float) * c->hidden_size);
        }
        spruce_model_put_block(m, b);
        spruce_model_put_block(src, o);
    }
    expect_evaluates(m, dir);   /* the pruned checkpoint evaluates */
    /* masks export lists exactly the linear layers */
    snprintf(h5, sizeof h5, "%s/m.h5", d);
    snprintf(cmd, sizeof cmd, "'%s' masks export '%s' -o '%s' >/dev/null 2>&1", bin, out, h5);
    cr_assert_eq(sh(cmd), 0, "%s", cmd);
    cr_assert_eq(spruce_maskreader_open(h5, &mr), 0, "%s", spruce_errdetail());
    for (l = 0, i = 0; l < SPRUCE_NPROJ; l++)
        i += !c->family->linear[l].part && c->family->linear[l].path;
    cr_assert_eq(spruce_maskreader_count(mr), i * c->num_hidden_layers);
    for (i = 0; i < spruce_maskreader_count(mr); i++)
        cr_assert_eq(spruce_family_is_linear(c->model_type, spruce_maskreader_name_at(mr, i)),
                     1, "%s", spruce_maskreader_name_at(mr, i));
    spruce_maskreader_close(mr);
    spruce_model_free(m);
    spruce_model_free(src);
    rm_tree(d);
    free(d);
}

Test(prune, qwen3_sparsegpt_half) { check_prune("qwen3", "--sparsity 0.5", 0); }
Test(prune, qwen3_sparsegpt_2_4) { check_prune("qwen3", "--pattern 2:4", 1); }
Test(prune, llama3_rope_sparsegpt_half)
{
    check_prune("llama3-rope", "--sparsity 0.5", 0);
}
Test(prune, llama3_rope_sparsegpt_2_4)
{
    check_prune("llama3-rope", "--pattern 2:4", 1);
}
/* calibration of 32 tokens crosses the window (16) of the sliding layers */
Test(prune, gemma2_sparsegpt_half) { check_prune("gemma2", "--sparsity 0.5", 0); }
Test(prune, gemma2_sparsegpt_2_4) { check_prune("gemma2", "--pattern 2:4", 1); }
Test(prune, gemma3_sparsegpt_half) { check_prune("gemma3", "--sparsity 0.5", 0); }
Test(prune, gemma3_sparsegpt_2_4) { check_prune("gemma3", "--pattern 2:4", 1); }
/* the fused qkv_proj and gate_up_proj are pruned as one layer each */
Test(prune, phi3_sparsegpt_half) { check_prune("phi3", "--sparsity 0.5", 0); }
Test(prune, phi3_sparsegpt_2_4) { check_prune("phi3", "--pattern 2:4", 1); }
Test(prune, phi3_longrope_wanda_half) { check_prune("phi3-longrope", "--method wanda --sparsity 0.5", 0); }
Test(prune, phi3_magnitude_true_sequential)
{
    check_prune("phi3", "--method magnitude --sparsity 0.5 --true-sequential", 0);
}
Test(prune, gemma2_true_sequential)
{
    check_prune("gemma2", "--sparsity 0.5 --true-sequential", 0);
}
/* q/k/v, out_proj, fc1 and fc2; no gate */
Test(prune, opt_sparsegpt_half) { check_prune("opt", "--sparsity 0.5", 0); }
Test(prune, opt_sparsegpt_2_4) { check_prune("opt", "--pattern 2:4", 1); }
Test(prune, opt_wanda_2_4_true_sequential)
{
    check_prune("opt", "--method wanda --pattern 2:4 --true-sequential", 1);
}
Test(prune, opt_magnitude_half) { check_prune("opt", "--method magnitude --sparsity 0.5", 0); }

/* Sum over the calibration windows of |logits - dense logits|^2 after pruning
 * the model at dir in place by method (50%, or 2:4 with nm). */
static double pruned_logit_error(const char *dir, spruce_method method, int nm,
                                 const uint32_t *cal, int ns, int T, const float *dense)
{
    spruce_model *m = NULL;
    spruce_pipeline_opts o;
    spruce_pipeline_summary sum;
    const spruce_config *c;
    double err = 0;
    float *lg;
    size_t i, V;
    int s;
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_cache_blocks(m), 0, "%s", spruce_errdetail());
    c = spruce_model_config(m);
    V = (size_t)c->vocab_size;
    spruce_pipeline_opts_init(&o);
    o.prune.method = method;
    if (nm) {
        o.prune.prune_n = 2;
        o.prune.prune_m = 4;
    } else {
        o.prune.sparsity = 0.5f;
    }
    cr_assert_eq(spruce_pipeline_run(m, cal, ns, T, NULL, &o, &sum), 0, "%s",
                 spruce_errdetail());
    cr_assert(fabs(sum.sparsity - 0.5) < 1e-9, "%s: sparsity %g", spruce_method_name(method),
              sum.sparsity);
    cr_assert_eq(sum.layers_pruned, 6 * c->num_hidden_layers, "q, k, v, out_proj, fc1, fc2");
    lg = malloc((size_t)T * V * sizeof(float));
    cr_assert_not_null(lg);
    for (s = 0; s < ns; s++) {
        const float *ref = dense + (size_t)s * T * V;
        cr_assert_eq(spruce_model_forward(m, cal + (size_t)s * T, T, lg), 0, "%s",
                     spruce_errdetail());
        for (i = 0; i < (size_t)T * V; i++)
            err += ((double)lg[i] - ref[i]) * ((double)lg[i] - ref[i]);
    }
    free(lg);
    spruce_model_free(m);
    return err;
}

/* On the same calibration windows the pruned OPT model's logits are nearest
 * the dense ones after SparseGPT, then Wanda, then magnitude. */
static void check_opt_method_order(int nm)
{
    NEED_FAMILY(dir, "opt");
    enum { NS = 16, T = 32 };
    spruce_model *m = NULL;
    uint32_t cal[NS * T];
    float *dense;
    double sg, wa, mg;
    size_t V;
    int s;
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    V = (size_t)spruce_model_config(m)->vocab_size;
    spruce_tokens_random(cal, NS * T, (uint32_t)V, 11);
    dense = malloc((size_t)NS * T * V * sizeof(float));
    cr_assert_not_null(dense);
    for (s = 0; s < NS; s++)
        cr_assert_eq(spruce_model_forward(m, cal + s * T, T, dense + (size_t)s * T * V), 0);
    spruce_model_free(m);
    sg = pruned_logit_error(dir, SPRUCE_METHOD_SPARSEGPT, nm, cal, NS, T, dense);
    wa = pruned_logit_error(dir, SPRUCE_METHOD_WANDA, nm, cal, NS, T, dense);
    mg = pruned_logit_error(dir, SPRUCE_METHOD_MAGNITUDE, nm, cal, NS, T, dense);
    cr_assert(sg < wa && wa < mg, "%s: squared logit error sparsegpt %g, wanda %g, "
              "magnitude %g (expected increasing)", nm ? "2:4" : "50%", sg, wa, mg);
    free(dense);
}

Test(prune, opt_sparsegpt_beats_wanda_beats_magnitude_half) { check_opt_method_order(0); }
Test(prune, opt_sparsegpt_beats_wanda_beats_magnitude_2_4) { check_opt_method_order(1); }

/* ---- the memory estimate covers qwen3's shapes ------------------------------------ */

/* At least the float32 block it holds (every tensor of a block, from the
 * family table) and the Hessian of o's input, heads * head_dim wide. */
Test(families, memory_estimate_covers_qwen3_shapes)
{
    spruce_config c;
    spruce_family_tensor t;
    double block = 0, qd;
    size_t i;
    parse_ok("{\"model_type\": \"qwen3\", \"hidden_size\": 1024, \"intermediate_size\": 3072, "
             "\"num_hidden_layers\": 2, \"num_attention_heads\": 16, "
             "\"num_key_value_heads\": 8, \"vocab_size\": 1000, "
             "\"max_position_embeddings\": 4096}", &c);
    qd = (double)spruce_dim_of(&c, SPRUCE_DIM_Q);
    cr_assert_eq(qd, 16 * 128);
    for (i = 0; spruce_family_tensor_at(&c, i, &t) == 1; i++)
        if (t.layer == 0)
            block += (double)t.shape[0] * (t.ndim == 2 ? (double)t.shape[1] : 1.0);
    cr_assert(spruce_pipeline_memory(&c, 1, 16) >= 4.0 * (block + qd * qd),
              "estimate %g B, the block and o's Hessian alone are %g B",
              spruce_pipeline_memory(&c, 1, 16), 4.0 * (block + qd * qd));
}

/* `spruce synth` with the options opts (bf16), pruned at 50% on 8 x 256
 * random ids below vocab: the estimate it prints at start and the largest
 * anonymous resident memory it sampled (RssAnon after each layer and block),
 * in GiB.  *anon < 0 where the platform has no RssAnon. */
static void estimate_and_measured(const char *bin, const char *opts, int vocab, double *est,
                                  double *anon)
{
    char *d = tmp_dir(), cmd[4096], path[1300];
    uint32_t *cal = malloc(sizeof *cal * 8 * 256);
    cr_assert_not_null(cal);
    snprintf(cmd, sizeof cmd, "'%s' synth '%s/m' %s --dtype bf16 >'%s/synth.out' 2>&1", bin, d,
             opts, d);
    cr_assert_eq(sh(cmd), 0, "%s", cmd);
    spruce_tokens_random(cal, 8 * 256, (uint32_t)vocab, 7);
    snprintf(path, sizeof path, "%s/calib.u32", d);
    cr_assert_eq(spruce_tokens_save(path, cal, 8 * 256), 0, "%s", spruce_errdetail());
    free(cal);
    snprintf(cmd, sizeof cmd, "'%s' prune '%s/m' -o '%s/p' --calib '%s' --seqlen 256 "
             "--nsamples 8 --sparsity 0.5 --threads 2 >'%s/out' 2>&1", bin, d, d, path, d);
    cr_assert_eq(sh(cmd), 0, "%s (see %s/out)", cmd, d);
    snprintf(path, sizeof path, "%s/out", d);
    prune_memory_lines(path, est, anon);
    cr_assert(*est > 0, "no estimate in %s", path);
    rm_tree(d);
    free(d);
}

/* Two blocks of Gemma 3 270M (hidden 640, 4 heads of 256 beside one
 * key/value head, MLP 2048, a vocabulary of 262144) and of a Llama 3 shape
 * (hidden 1024, 16 heads, 4 key/value heads, MLP 3584, a vocabulary of 128256,
 * rope_scaling llama3): the measured memory is at most 15% above the
 * estimate, and the estimate at most 25% above the measured memory (it
 * counts the forward workspace and the Cholesky factors as if held at once:
 * measured 0.230 GiB against 0.276 for the Llama 3 shape, 0.138 against 0.136
 * for Gemma's), where a float32 copy of the tied embedding (0.63 and 0.49
 * GiB) would put either far outside. */
Test(memory, large_vocabulary_estimates_against_measured_memory)
{
    NEED_SPRUCE_BIN(bin);
    static const struct {
        const char *opts;
        int vocab;
    } shapes[] = {
        {"--family gemma3 --hidden 640 --intermediate 2048 --layers 2 --heads 4 --kv-heads 1 "
         "--head-dim 256 --vocab 262144 --max-position 32768", 262144},
        {"--hidden 1024 --intermediate 3584 --layers 2 --heads 16 --kv-heads 4 --vocab 128256 "
         "--max-position 131072 --rope-scaling llama3", 128256},
    };
    double est, anon;
    size_t i;
    if (SANITIZED)
        cr_skip_test("AddressSanitizer's shadow memory and quarantine are not the program's: "
                     "the estimate is checked in the plain build");
    for (i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        estimate_and_measured(bin, shapes[i].opts, shapes[i].vocab, &est, &anon);
        if (anon < 0)
            cr_skip_test("no RssAnon on this platform");
        cr_assert(anon <= 1.15 * est && est <= 1.25 * anon, "%s: estimate %.3f GiB, measured "
                  "%.3f GiB", shapes[i].opts, est, anon);
    }
}

/* ---- synth of a family ------------------------------------------------------------- */

/* A qwen3 checkpoint with heads x head_dim != hidden and a llama one with
 * llama3 rope scaling: they open with the shapes asked for, and the cached
 * decoder gives the forward's logits. */
static void check_synth(const spruce_synth_family *fam, int hidden, int heads, int head_dim)
{
    spruce_synth_config sc;
    spruce_model *m = NULL;
    spruce_decoder *dec = NULL;
    const spruce_config *c;
    char *d = tmp_dir();
    uint32_t ids[20];
    float *fw, *lg;
    int t, V;
    double worst = 0;
    spruce_synth_defaults(&sc);
    sc.hidden = hidden;
    sc.heads = heads;
    sc.kv_heads = heads / 2;
    sc.intermediate = 96;
    sc.vocab = 128;
    sc.max_position = 256;
    cr_assert_eq(spruce_synth_write_family(d, &sc, fam, 1), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_open(d, &m), 0, "%s", spruce_errdetail());
    c = spruce_model_config(m);
    cr_assert_str_eq(c->model_type, fam->model_type);
    cr_assert_eq(c->head_dim, head_dim);
    cr_assert_eq(c->rope.type, fam->rope);
    cr_assert_eq(c->qk_norm, !strcmp(fam->model_type, "qwen3"));
    {
        const spruce_ckpt *ck = spruce_model_ckpt(m);
        int64_t total = 0;
        int i;
        for (i = 0; i < spruce_ckpt_count(ck); i++)
            total += spruce_tensor_numel(spruce_ckpt_tensor_at(ck, i));
        cr_assert_eq(spruce_synth_family_nparams(&sc, fam), total);
    }
    V = c->vocab_size;
    spruce_tokens_random(ids, 20, (uint32_t)V, 3);
    fw = malloc(sizeof(float) * 20 * V);
    lg = malloc(sizeof(float) * V);
    cr_assert_eq(spruce_model_forward(m, ids, 20, fw), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_decoder_create(m, 20, SPRUCE_DECODE_DENSE, &dec), 0);
    for (t = 0; t < 20; t++) {
        cr_assert_eq(spruce_decoder_step(dec, ids[t], lg), 0, "%s", spruce_errdetail());
        worst = fmax(worst, max_abs_diff(lg, fw + (size_t)t * V, (size_t)V));
    }
    cr_assert(worst < TOL, "%s: decoder %g from the forward", fam->model_type, worst);
    spruce_decoder_free(dec);
    free(fw);
    free(lg);
    spruce_model_free(m);
    rm_tree(d);
    free(d);
}

Test(synth, qwen3_with_its_own_head_dim)
{
    spruce_synth_family f;
    spruce_synth_family_defaults(&f);
    f.model_type = "qwen3";
    f.head_dim = 32;
    check_synth(&f, 64, 4, 32);
}

/* qwen2's q/k/v biases, which its config always has */
Test(synth, qwen2_with_its_biases)
{
    spruce_synth_family f;
    spruce_synth_family_defaults(&f);
    f.model_type = "qwen2";
    check_synth(&f, 64, 4, 16);
}

/* every tensor of OPT's table (biases, LayerNorm biases, positions), tied */
Test(synth, opt)
{
    spruce_synth_family f;
    spruce_synth_family_defaults(&f);
    f.model_type = "opt";
    check_synth(&f, 64, 4, 16);
}

Test(synth, llama_with_llama3_rope)
{
    spruce_synth_family f;
    spruce_synth_family_defaults(&f);
    f.rope = SPRUCE_ROPE_LLAMA3;
    check_synth(&f, 64, 4, 16);
    f.rope = SPRUCE_ROPE_YARN;
    check_synth(&f, 64, 4, 16);
}

/* ---- OPT against a direct computation, pre- and post-norm ----------------------- */



/* Tensor name of the checkpoint ck as floats (numel n). */
static float *tensor_f(const spruce_ckpt *ck, const char *name, size_t n)
{
    const spruce_tensor *t = spruce_ckpt_find(ck, name);
    float *f;
    cr_assert(t, "tensor %s", name);
    cr_assert_eq((size_t)spruce_tensor_numel(t), n, "%s", name);
    f = malloc(n * sizeof *f);
    cr_assert_not_null(f);
    cr_assert_eq(spruce_tensor_read_f32(t, f), 0, "%s", spruce_errdetail());
    return f;
}

/* Tensor name of the checkpoint ck as doubles (numel n). */
static double *tensor_d(const spruce_ckpt *ck, const char *name, size_t n)
{
    float *f = tensor_f(ck, name, n);
    double *x = malloc(n * sizeof *x);
    size_t i;
    cr_assert_not_null(x);
    for (i = 0; i < n; i++)
        x[i] = f[i];
    free(f);
    return x;
}

/* y (rows) = W (rows, cols) x + b (b may be NULL). */
static void mv_d(double *y, const double *W, const double *b, const double *x, int rows,
                 int cols)
{
    int r, c;
    for (r = 0; r < rows; r++) {
        double acc = b ? b[r] : 0;
        for (c = 0; c < cols; c++)
            acc += W[(size_t)r * cols + c] * x[c];
        y[r] = acc;
    }
}


/* OPTForCausalLM on one unpadded sequence, in double, written from
 * modeling_opt.py for the fixture's shapes (tied head, project_in/out,
 * biases everywhere): logits (T, vocab). */
static void opt_reference(const char *dir, const uint32_t *ids, int T, double *logits)
{
    spruce_config c;
    spruce_ckpt *ck = NULL;
    double *E, *P, *Pin, *Pout, *x, *q, *k, *v, *att, *tmp, *f;
    float *fw = NULL, *fb = NULL;
    char nm[256];
    int H, nh, d, F, V, e, L, t, j, h, l, pre;
    cr_assert_eq(spruce_config_load(dir, &c), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_open(dir, &ck), 0, "%s", spruce_errdetail());
    H = c.hidden_size, nh = c.num_attention_heads, d = H / nh, F = c.intermediate_size;
    V = c.vocab_size, e = c.word_embed_proj_dim, L = c.num_hidden_layers, pre = !c.post_norm;
    cr_assert(e != H && c.tie_word_embeddings, "the reference is for the opt fixture's shapes");
    E = tensor_d(ck, "model.decoder.embed_tokens.weight", (size_t)V * e);
    P = tensor_d(ck, "model.decoder.embed_positions.weight",
                 (size_t)(c.max_position_embeddings + 2) * H);
    Pin = tensor_d(ck, "model.decoder.project_in.weight", (size_t)H * e);
    Pout = tensor_d(ck, "model.decoder.project_out.weight", (size_t)e * H);
    if (pre && !c.no_norm_affine) {   /* without elementwise affine: weight 1, bias 0 */
        fw = tensor_f(ck, "model.decoder.final_layer_norm.weight", (size_t)H);
        fb = tensor_f(ck, "model.decoder.final_layer_norm.bias", (size_t)H);
    }
    x = calloc((size_t)T * H, sizeof *x);
    q = calloc((size_t)T * H, sizeof *q);
    k = calloc((size_t)T * H, sizeof *k);
    v = calloc((size_t)T * H, sizeof *v);
    att = calloc((size_t)T * H, sizeof *att);
    tmp = calloc((size_t)(H > e ? H : e), sizeof *tmp);
    f = calloc((size_t)F, sizeof *f);
    cr_assert(x && q && k && v && att && tmp && f);
    /* inputs_embeds = project_in(embed_tokens(ids)) + embed_positions(t + 2) */
    for (t = 0; t < T; t++) {
        mv_d(x + (size_t)t * H, Pin, NULL, E + (size_t)ids[t] * e, H, e);
        for (j = 0; j < H; j++)
            x[(size_t)t * H + j] += P[(size_t)(t + 2) * H + j];
    }
    for (l = 0; l < L; l++) {
        double *W[6], *B[6], *a = tmp;
        float *n1w = NULL, *n1b = NULL, *n2w = NULL, *n2b = NULL;
        static const char *lin[6] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                     "self_attn.out_proj", "fc1", "fc2"};
        int rows[6] = {H, H, H, H, F, H}, cols[6] = {H, H, H, H, H, F}, i;
        for (i = 0; i < 6; i++) {
            snprintf(nm, sizeof nm, "model.decoder.layers.%d.%s.weight", l, lin[i]);
            W[i] = tensor_d(ck, nm, (size_t)rows[i] * cols[i]);
            snprintf(nm, sizeof nm, "model.decoder.layers.%d.%s.bias", l, lin[i]);
            B[i] = tensor_d(ck, nm, (size_t)rows[i]);
        }
        if (!c.no_norm_affine) {
            snprintf(nm, sizeof nm, "model.decoder.layers.%d.self_attn_layer_norm.weight", l);
            n1w = tensor_f(ck, nm, (size_t)H);
            snprintf(nm, sizeof nm, "model.decoder.layers.%d.self_attn_layer_norm.bias", l);
            n1b = tensor_f(ck, nm, (size_t)H);
            snprintf(nm, sizeof nm, "model.decoder.layers.%d.final_layer_norm.weight", l);
            n2w = tensor_f(ck, nm, (size_t)H);
            snprintf(nm, sizeof nm, "model.decoder.layers.%d.final_layer_norm.bias", l);
            n2b = tensor_f(ck, nm, (size_t)H);
        }
        for (t = 0; t < T; t++) {   /* q = (Wq a + bq) * d^-0.5, k, v */
            double *xt = x + (size_t)t * H, in[4096];
            cr_assert(H <= 4096);
            memcpy(in, xt, sizeof(double) * H);
            if (pre)
                ref_layernorm_d(in, in, n1w, n1b, H, 1e-5);
            mv_d(q + (size_t)t * H, W[0], B[0], in, H, H);
            for (j = 0; j < H; j++)
                q[(size_t)t * H + j] /= sqrt((double)d);
            mv_d(k + (size_t)t * H, W[1], B[1], in, H, H);
            mv_d(v + (size_t)t * H, W[2], B[2], in, H, H);
        }
        for (t = 0; t < T; t++)   /* causal softmax(q k^T) v per head, scale 1 */
            for (h = 0; h < nh; h++)
                ref_causal_head(att + (size_t)t * H + h * d, q + (size_t)t * H + h * d,
                                k + h * d, v + h * d, (size_t)H, t, d, 1.0);
        for (t = 0; t < T; t++) {
            double *xt = x + (size_t)t * H, in[4096];
            mv_d(a, W[3], B[3], att + (size_t)t * H, H, H);
            for (j = 0; j < H; j++)
                xt[j] += a[j];
            if (!pre)
                ref_layernorm_d(xt, xt, n1w, n1b, H, 1e-5);
            memcpy(in, xt, sizeof(double) * H);
            if (pre)
                ref_layernorm_d(in, in, n2w, n2b, H, 1e-5);
            mv_d(f, W[4], B[4], in, F, H);
            for (j = 0; j < F; j++)
                f[j] = f[j] > 0 ? f[j] : 0;
            mv_d(a, W[5], B[5], f, H, F);
            for (j = 0; j < H; j++)
                xt[j] += a[j];
            if (!pre)
                ref_layernorm_d(xt, xt, n2w, n2b, H, 1e-5);
        }
        for (i = 0; i < 6; i++) {
            free(W[i]);
            free(B[i]);
        }
        free(n1w); free(n1b); free(n2w); free(n2b);
    }
    /* final_layer_norm (pre-norm models only), project_out, the tied head */
    for (t = 0; t < T; t++) {
        double *xt = x + (size_t)t * H;
        if (pre)
            ref_layernorm_d(xt, xt, fw, fb, H, 1e-5);
        mv_d(tmp, Pout, NULL, xt, e, H);
        mv_d(logits + (size_t)t * V, E, NULL, tmp, V, e);
    }
    free(x); free(q); free(k); free(v); free(att); free(tmp); free(f);
    free(E); free(P); free(Pin); free(Pout); free(fw); free(fb);
    spruce_ckpt_close(ck);
}

/* Largest |a - b| of n floats against doubles. */
static double max_abs_diff_d(const float *a, const double *b, size_t n)
{
    double mx = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        double dd = fabs((double)a[i] - b[i]);
        if (!(dd <= mx))
            mx = dd;
    }
    return mx;
}

/* The reference itself lands on the fixture's golden logits (pre-norm). */
Test(families, opt_reference_matches_the_golden_logits)
{
    NEED_FAMILY(dir, "opt");
    uint32_t *ids;
    float *gold;
    double *ref, dd;
    int V = 320;
    load_golden(dir, V, &ids, &gold);
    ref = malloc(sizeof *ref * SEQ * V);
    cr_assert_not_null(ref);
    opt_reference(dir, ids, SEQ, ref);
    dd = max_abs_diff_d(gold, ref, (size_t)SEQ * V);
    cr_assert(dd < 1e-5, "the double reference is %g from the golden logits", dd);
    free(ref);
    free(gold);
    free(ids);
}

/* The opt fixture with config keys changed: the forward, on every attention
 * path, and the decoder against the reference; far from the golden logits
 * (another model). */
static void check_opt_variant(const char *keys, int post_norm, int no_affine)
{
    NEED_FAMILY(src, "opt");
    char *dir = with_keys(src, keys);
    spruce_model *m = NULL;
    uint32_t *ids;
    float *gold, *lg;
    double *ref, dd, worst = 0;
    int V, t, a;
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_config(m)->post_norm, post_norm);
    cr_assert_eq(spruce_model_config(m)->no_norm_affine, no_affine);
    V = spruce_model_config(m)->vocab_size;
    load_golden(src, V, &ids, &gold);
    ref = malloc(sizeof *ref * SEQ * V);
    lg = malloc(sizeof *lg * SEQ * V);
    cr_assert(ref && lg);
    opt_reference(dir, ids, SEQ, ref);
    cr_assert(max_abs_diff_d(gold, ref, (size_t)SEQ * V) > 0.1, "%s: the variant is another "
              "model", keys);
    for (a = 0; a < 3; a++) {
        spruce_attention at[3] = {SPRUCE_ATTENTION_AUTO, SPRUCE_ATTENTION_ROWS,
                                  SPRUCE_ATTENTION_BLAS};
        cr_assert_eq(spruce_model_set_attention(m, at[a]), 0);
        cr_assert_eq(spruce_model_forward(m, ids, SEQ, lg), 0, "%s", spruce_errdetail());
        dd = max_abs_diff_d(lg, ref, (size_t)SEQ * V);
        cr_assert(dd < TOL, "%s: forward (attention %d) %g from the reference", keys, a, dd);
    }
    for (t = 0; t < SEQ * V; t++)   /* the reference in float: rounding far below TOL */
        lg[t] = (float)ref[t];
    worst = decoder_error(m, SPRUCE_DECODE_DENSE, ids, SEQ, lg);
    cr_assert(worst < TOL, "%s: decoder %g from the reference", keys, worst);
    spruce_model_free(m);
    free(ref);
    free(lg);
    free(gold);
    free(ids);
    rm_tree(dir);
    free(dir);
}

/* do_layer_norm_before false (OPT-350m's block): no final norm is read (the
 * fixture's stays in the file, unused, as transformers leaves it). */
Test(families, opt_post_norm_against_a_direct_computation)
{
    check_opt_variant("{\"do_layer_norm_before\": false}", 1, 0);
}

/* layer_norm_elementwise_affine false: every LayerNorm without weight and
 * bias (the fixture's norm tensors unused), pre- and post-norm. */
Test(families, opt_without_elementwise_affine_against_a_direct_computation)
{
    check_opt_variant("{\"layer_norm_elementwise_affine\": false}", 0, 1);
    check_opt_variant("{\"layer_norm_elementwise_affine\": false, "
                      "\"do_layer_norm_before\": false}", 1, 1);
}

/* A 2:4-pruned OPT decodes in every runtime format as its own forward does:
 * the logits of each position within TOL, and greedy ids whatever the format. */
Test(families, opt_pruned_decodes_in_every_format_as_its_forward)
{
    NEED_FAMILY(dir, "opt");
    NEED_SPRUCE_BIN(bin);
    static const spruce_decode_mode modes[4] = {SPRUCE_DECODE_DENSE, SPRUCE_DECODE_CSR,
                                                SPRUCE_DECODE_BITMASK, SPRUCE_DECODE_NM};
    char *d = tmp_dir(), calib[1200], out[1200], cmd[4096];
    spruce_model *m = NULL;
    uint32_t cal[16 * 32], *ids;
    float *gold, *fwd;
    int V, k;
    spruce_tokens_random(cal, 16 * 32, 320, 5);
    snprintf(calib, sizeof calib, "%s/calib.u16", d);
    cr_assert_eq(spruce_tokens_save(calib, cal, 16 * 32), 0);
    snprintf(out, sizeof out, "%s/pruned", d);
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' -o '%s' --calib '%s' --pattern 2:4 --seqlen 32 "
             "--nsamples 16 >/dev/null 2>&1", bin, dir, out, calib);
    cr_assert_eq(sh(cmd), 0, "%s", cmd);
    cr_assert_eq(spruce_model_open(out, &m), 0, "%s", spruce_errdetail());
    V = spruce_model_config(m)->vocab_size;
    load_golden(dir, V, &ids, &gold);
    fwd = malloc(sizeof *fwd * SEQ * V);
    cr_assert_not_null(fwd);
    cr_assert_eq(spruce_model_forward(m, ids, SEQ, fwd), 0, "%s", spruce_errdetail());
    for (k = 0; k < 4; k++) {
        double worst = decoder_error(m, modes[k], ids, SEQ, fwd);
        cr_assert(worst < TOL, "mode %d: the decoder is %g from the forward", k, worst);
    }
    spruce_model_free(m);
    check_greedy_margin(out, ids, 8, 16, modes, 4);
    free(fwd);
    free(gold);
    free(ids);
    rm_tree(d);
    free(d);
}

/* OPT's keys: defaults as configuration_opt.py, and what is not implemented
 * refused by name. */
Test(families, opt_config_defaults_and_refusals)
{
    static const char *base = "{\"model_type\": \"opt\", \"hidden_size\": 64, "
                              "\"ffn_dim\": 256, \"num_hidden_layers\": 2, "
                              "\"num_attention_heads\": 4, \"vocab_size\": 320, "
                              "\"max_position_embeddings\": 128";
    char json[1024];
    spruce_config c;
    snprintf(json, sizeof json, "%s}", base);
    parse_ok(json, &c);
    cr_assert(c.tie_word_embeddings, "OPT ties its head when the key is absent");
    cr_assert(c.qkv_bias && c.o_bias && c.mlp_bias, "enable_bias defaults to true");
    cr_assert(c.layer_norm && c.learned_positions && !c.post_norm && !c.no_final_norm);
    cr_assert_eq(c.act, SPRUCE_ACT_RELU);
    cr_assert_eq(c.word_embed_proj_dim, 64);
    cr_assert_eq(c.intermediate_size, 256);
    cr_assert_eq(c.head_dim, 16);
    cr_assert_eq(c.num_key_value_heads, 4);
    cr_assert_float_eq(c.rms_norm_eps, 1e-5, 1e-12);
    snprintf(json, sizeof json, "%s, \"enable_bias\": false, \"_remove_final_layer_norm\": "
             "true, \"tie_word_embeddings\": false, \"word_embed_proj_dim\": 32}", base);
    parse_ok(json, &c);
    cr_assert(!c.qkv_bias && !c.o_bias && !c.mlp_bias && c.no_final_norm && !c.post_norm);
    cr_assert(!c.tie_word_embeddings && c.word_embed_proj_dim == 32);
    snprintf(json, sizeof json, "%s, \"layer_norm_elementwise_affine\": false, "
             "\"do_layer_norm_before\": false}", base);
    parse_ok(json, &c);
    cr_assert(c.no_norm_affine && c.post_norm && c.no_final_norm);
    snprintf(json, sizeof json, "%s, \"activation_function\": \"gelu\"}", base);
    expect_refused(json, SPRUCE_EUNSUPPORTED, "activation_function 'gelu'", "relu");
    snprintf(json, sizeof json, "%s, \"do_layer_norm_before\": 1}", base);
    expect_refused(json, SPRUCE_EFORMAT, "do_layer_norm_before", "true or false");
    /* the MLP's width is ffn_dim: without it the config is incomplete */
    expect_refused("{\"model_type\": \"opt\", \"hidden_size\": 64, \"intermediate_size\": 256, "
                   "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 320, "
                   "\"max_position_embeddings\": 128}", SPRUCE_EFORMAT, "ffn_dim", "missing");
}

/* The positional table has rows for max_position_embeddings positions: a
 * longer sequence is refused naming it (transformers fails to index it). */
Test(families, opt_beyond_the_positional_table_is_refused)
{
    NEED_FAMILY(dir, "opt");
    spruce_model *m = NULL;
    uint32_t ids[129] = {0};
    float *lg = malloc(sizeof *lg * 129 * 320);
    cr_assert_not_null(lg);
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_forward(m, ids, 128, lg), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_forward(m, ids, 129, lg), SPRUCE_EINVAL);
    cr_assert(strstr(spruce_errdetail(), "embed_positions") &&
              strstr(spruce_errdetail(), "max_position_embeddings 128"), "%s",
              spruce_errdetail());
    free(lg);
    spruce_model_free(m);
}

/* The family table names exactly the fixture's tensors, with their shapes;
 * in the post-norm variant the final norm is not among them. */
Test(families, opt_tensor_table_is_the_checkpoint)
{
    NEED_FAMILY(dir, "opt");
    spruce_config c;
    spruce_ckpt *ck = NULL;
    spruce_family_tensor t;
    size_t i, n, nlin = 0, nb = 0;
    cr_assert_eq(spruce_config_load(dir, &c), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_open(dir, &ck), 0, "%s", spruce_errdetail());
    i = expect_table_in_ckpt(&c, ck);
    for (n = 0; spruce_family_tensor_at(&c, n, &t) == 1; n++) {
        nlin += t.role == SPRUCE_TENSOR_LINEAR;
        nb += t.role == SPRUCE_TENSOR_BIAS || t.role == SPRUCE_TENSOR_NORM_BIAS;
    }
    cr_assert_eq(i, (size_t)spruce_ckpt_count(ck), "the table has %zu tensors, the fixture %d",
                 i, spruce_ckpt_count(ck));
    cr_assert_eq(nlin, 12, "q, k, v, out_proj, fc1, fc2 in 2 blocks");
    cr_assert_eq(nb, 2 * (6 + 2) + 1, "every linear and every LayerNorm has a bias");
    cr_assert_eq(spruce_family_is_linear("opt", "model.decoder.layers.0.fc1.weight"), 1);
    cr_assert_eq(spruce_family_is_linear("opt", "model.decoder.layers.0.fc1.bias"), 0);
    cr_assert_eq(spruce_family_is_linear("opt", "model.decoder.embed_positions.weight"), 0);
    cr_assert_eq(spruce_family_is_linear("opt", "model.decoder.project_in.weight"), 0);
    c.no_norm_affine = 1;   /* no norm tensors at all */
    for (i = 0; spruce_family_tensor_at(&c, i, &t) == 1; i++)
        cr_assert(!strstr(t.name, "layer_norm"), "%s", t.name);
    cr_assert_eq(i, (size_t)spruce_ckpt_count(ck) - 2 * 4 - 2);
    c.no_norm_affine = 0;
    c.post_norm = c.no_final_norm = 1;
    for (i = 0; spruce_family_tensor_at(&c, i, &t) == 1; i++)
        cr_assert(!strstr(t.name, "decoder.final_layer_norm"), "%s", t.name);
    cr_assert_eq(i, (size_t)spruce_ckpt_count(ck) - 2);
    spruce_ckpt_close(ck);
}

/* ---- qwen2 and qwen3 sliding windows ---------------------------------------------- */

#define QWEN_CFG(type, extra)                                                            \
    "{\"model_type\": \"" type "\", \"hidden_size\": 64, \"intermediate_size\": 96, "      \
    "\"num_hidden_layers\": 3, \"num_attention_heads\": 4, \"vocab_size\": 64, "           \
    "\"max_position_embeddings\": 64" extra "}"

/* The window of layers 0, 1, 2 of json. */
static void expect_windows(const char *json, int w0, int w1, int w2)
{
    spruce_config c;
    parse_ok(json, &c);
    cr_assert(spruce_config_layer_window(&c, 0) == w0 && spruce_config_layer_window(&c, 1) == w1 &&
              spruce_config_layer_window(&c, 2) == w2, "%s: windows %d %d %d, expected %d %d %d",
              json, spruce_config_layer_window(&c, 0), spruce_config_layer_window(&c, 1),
              spruce_config_layer_window(&c, 2), w0, w1, w2);
}

/* configuration_qwen2.py / _qwen3.py: layer i slides when use_sliding_window,
 * sliding_window is not null and i >= max_window_layers (28), unless
 * layer_types says which. */
Test(families, qwen_sliding_layers_as_transformers_chooses_them)
{
    expect_windows(QWEN_CFG("qwen3", ", \"use_sliding_window\": true, \"sliding_window\": 16, "
                            "\"max_window_layers\": 1"), 0, 16, 16);
    expect_windows(QWEN_CFG("qwen2", ", \"use_sliding_window\": true, \"sliding_window\": 16, "
                            "\"max_window_layers\": 2"), 0, 0, 16);
    expect_windows(QWEN_CFG("qwen2", ", \"use_sliding_window\": true, \"sliding_window\": 16, "
                            "\"max_window_layers\": 0"), 16, 16, 16);
    /* max_window_layers 28 when absent: none of 3 layers slides */
    expect_windows(QWEN_CFG("qwen3", ", \"use_sliding_window\": true, \"sliding_window\": 16"),
                   0, 0, 0);
    /* sliding_window 4096 when absent */
    expect_windows(QWEN_CFG("qwen3", ", \"use_sliding_window\": true, \"max_window_layers\": 1"),
                   0, 4096, 4096);
    /* use_sliding_window false: sliding_window is None */
    expect_windows(QWEN_CFG("qwen3", ", \"use_sliding_window\": false, \"sliding_window\": 16, "
                            "\"max_window_layers\": 0"), 0, 0, 0);
    expect_windows(QWEN_CFG("qwen3", ", \"use_sliding_window\": true, \"sliding_window\": null, "
                            "\"max_window_layers\": 0"), 0, 0, 0);
    /* layer_types wins over max_window_layers */
    expect_windows(QWEN_CFG("qwen3", ", \"use_sliding_window\": true, \"sliding_window\": 8, "
                            "\"max_window_layers\": 0, \"layer_types\": [\"full_attention\", "
                            "\"full_attention\", \"sliding_attention\"]"), 0, 0, 8);
    expect_windows(QWEN_CFG("qwen3", ", \"use_sliding_window\": true, \"sliding_window\": 8, "
                            "\"max_window_layers\": 1, \"layer_types\": [\"full_attention\", "
                            "\"full_attention\", \"full_attention\"]"), 0, 0, 0);
    /* in any order (Qwen3Attention: config.layer_types[layer_idx]) */
    expect_windows(QWEN_CFG("qwen3", ", \"use_sliding_window\": true, \"sliding_window\": 8, "
                            "\"layer_types\": [\"full_attention\", \"sliding_attention\", "
                            "\"full_attention\"]"), 0, 8, 0);
    expect_windows(QWEN_CFG("qwen2", ", \"use_sliding_window\": true, \"sliding_window\": 8, "
                            "\"max_window_layers\": 2, \"layer_types\": [\"sliding_attention\", "
                            "\"full_attention\", \"sliding_attention\"]"), 8, 0, 8);
    expect_refused(QWEN_CFG("qwen3", ", \"use_sliding_window\": true, \"sliding_window\": 0"),
                   SPRUCE_EFORMAT, "sliding_window", NULL);
    expect_refused(QWEN_CFG("qwen3", ", \"use_sliding_window\": true, \"max_window_layers\": -1"),
                   SPRUCE_EFORMAT, "max_window_layers", NULL);
}

/* The qwen3 fixture (2 layers) with the keys `keys`, under which layer
 * `sliding` alone slides with window 8: positions 0..7 see every key in both
 * layers, so their logits are the golden ones; later ones differ.  The
 * decoder, whose cache reads the window, gives the forward's logits at every
 * position, and both attention paths agree.  The forward's logits go to out
 * (SEQ x vocab, malloc'd). */
static void check_qwen3_window(const char *src, const char *keys, int sliding, float **out)
{
    char *dir = with_keys(src, keys);
    spruce_model *m = NULL;
    uint32_t *ids;
    float *gold, *lg, *rows;
    double early, late = 0, worst;
    int V, t;
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    for (t = 0; t < 2; t++)
        cr_assert_eq(spruce_config_layer_window(spruce_model_config(m), t), t == sliding ? 8 : 0,
                     "%s: layer %d", keys, t);
    V = spruce_model_config(m)->vocab_size;
    load_golden(src, V, &ids, &gold);
    lg = malloc(sizeof *lg * SEQ * V);
    rows = malloc(sizeof *rows * SEQ * V);
    cr_assert(lg && rows);
    cr_assert_eq(spruce_model_set_attention(m, SPRUCE_ATTENTION_BLAS), 0);
    cr_assert_eq(spruce_model_forward(m, ids, SEQ, lg), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_set_attention(m, SPRUCE_ATTENTION_ROWS), 0);
    cr_assert_eq(spruce_model_forward(m, ids, SEQ, rows), 0, "%s", spruce_errdetail());
    cr_assert(max_abs_diff(lg, rows, (size_t)SEQ * V) < TOL, "%s: the two attention paths "
              "differ", keys);
    early = max_abs_diff(lg, gold, (size_t)8 * V);
    for (t = 8; t < SEQ; t++) {
        double dd = max_abs_diff(lg + (size_t)t * V, gold + (size_t)t * V, (size_t)V);
        late = dd > late ? dd : late;
    }
    cr_assert(early < TOL, "%s: positions 0..7 are %g from the full-attention logits", keys,
              early);
    cr_assert(late > 1e-2, "%s: beyond the window the logits should change, moved by %g", keys,
              late);
    worst = decoder_error(m, SPRUCE_DECODE_DENSE, ids, SEQ, lg);
    cr_assert(worst < TOL, "%s: the decoder is %g from the sliding forward", keys, worst);
    spruce_model_free(m);
    free(rows);
    free(gold);
    free(ids);
    rm_tree(dir);
    free(dir);
    *out = lg;
}

/* max_window_layers 1: the second layer slides; layer_types may also put a
 * full layer after a sliding one (the first slides), and then the logits are
 * not those of the other order.  With max_window_layers = num_hidden_layers
 * nothing slides. */
Test(families, qwen3_sliding_window_through_the_forward_and_the_decoder)
{
    NEED_FAMILY(src, "qwen3");
    char *none = with_keys(src, "{\"use_sliding_window\": true, \"sliding_window\": 8, "
                                "\"max_window_layers\": 2}");
    uint32_t *ids;
    float *gold, *second, *first, *lg;
    int V;
    check_qwen3_window(src, "{\"use_sliding_window\": true, \"sliding_window\": 8, "
                            "\"max_window_layers\": 1}", 1, &second);
    check_qwen3_window(src, "{\"use_sliding_window\": true, \"sliding_window\": 8, "
                            "\"layer_types\": [\"sliding_attention\", \"full_attention\"]}", 0,
                       &first);
    {
        spruce_config c;
        cr_assert_eq(spruce_config_load(src, &c), 0, "%s", spruce_errdetail());
        V = c.vocab_size;
    }
    cr_assert(max_abs_diff(first, second, (size_t)SEQ * V) > 1e-2, "the sliding layer "
              "should matter: first and second give the same logits");
    load_golden(src, V, &ids, &gold);
    lg = malloc(sizeof *lg * SEQ * V);
    cr_assert(lg);
    forward_of(none, ids, SEQ, lg);
    cr_assert(max_abs_diff(lg, gold, (size_t)SEQ * V) < TOL, "max_window_layers 2: no layer "
              "slides");
    free(lg);
    free(first);
    free(second);
    free(gold);
    free(ids);
    rm_tree(none);
    free(none);
}

/* A copy of the checkpoint at src whose tensors are renamed: prefix `from`
 * removed where a name starts with it (the data section is the same bytes). */
static char *with_names_stripped(const char *src, const char *from)
{
    char *d = tmp_dir(), cmd[4096];
    json_t *h = st_read_header(src), *n = json_object(), *v;
    const char *key;
    json_object_foreach(h, key, v)
        json_object_set(n, strncmp(key, from, strlen(from)) ? key : key + strlen(from), v);
    st_write(src, d, n, NULL, 0);
    json_decref(n);
    json_decref(h);
    snprintf(cmd, sizeof cmd, "cp '%s/config.json' '%s/' && cp '%s/ids.txt' '%s/logits.f32' '%s/'",
             src, d, src, src, d);
    cr_assert_eq(sh(cmd), 0);
    return d;
}

/* facebook/opt-* keep their tensors as decoder.* (saved from OPTModel):
 * spruce reads, prunes, writes and exports masks in that layout. */
Test(families, opt_without_the_model_prefix)
{
    NEED_FAMILY(src, "opt");
    NEED_SPRUCE_BIN(bin);
    char *dir = with_names_stripped(src, "model."), *work = tmp_dir(), calib[1200], out[1200];
    char h5[1200], cmd[8192];
    spruce_model *m = NULL;
    spruce_maskreader *mr = NULL;
    uint32_t *ids, cal[16 * 32];
    float *gold, *lg;
    double ppl = 0;
    int nwin = 0, s, i;
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    cr_assert_str_eq(spruce_model_config(m)->family->embed, "decoder.embed_tokens.weight");
    load_golden(dir, 320, &ids, &gold);
    lg = malloc(sizeof *lg * SEQ * 320);
    cr_assert_not_null(lg);
    for (s = 0; s < NSEQ; s++) {
        cr_assert_eq(spruce_model_forward(m, ids + s * SEQ, SEQ, lg), 0, "%s",
                     spruce_errdetail());
        cr_assert(max_abs_diff(lg, gold + (size_t)s * SEQ * 320, (size_t)SEQ * 320) < TOL);
    }
    spruce_model_free(m);
    cr_assert_eq(spruce_family_is_linear("opt", "decoder.layers.1.fc2.weight"), 1);
    cr_assert_eq(spruce_family_is_linear("opt", "model.decoder.layers.1.fc2.weight"), 1);
    cr_assert_eq(spruce_family_is_linear("opt", "decoder.layers.1.fc2.bias"), 0);
    spruce_tokens_random(cal, 16 * 32, 320, 9);
    snprintf(calib, sizeof calib, "%s/calib.u16", work);
    cr_assert_eq(spruce_tokens_save(calib, cal, 16 * 32), 0);
    snprintf(out, sizeof out, "%s/pruned", work);
    snprintf(h5, sizeof h5, "%s/m.h5", work);
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' -o '%s' --calib '%s' --pattern 2:4 --seqlen 32 "
             "--nsamples 16 --exclude 'layers\\.0\\.fc1' >/dev/null 2>&1 && '%s' masks export "
             "'%s' -o '%s' >/dev/null 2>&1", bin, dir, out, calib, bin, out, h5);
    cr_assert_eq(sh(cmd), 0, "%s", cmd);
    cr_assert_eq(spruce_model_open(out, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_perplexity(m, ids, (size_t)NSEQ * SEQ, SEQ, NULL, NULL, &ppl,
                                         &nwin), 0, "%s", spruce_errdetail());
    cr_assert(isfinite(ppl) && ppl > 1 && nwin == NSEQ, "perplexity %g", ppl);
    {   /* layer 0's fc1 excluded by its decoder.* name: dense; fc2 2:4 */
        spruce_block *b = NULL;
        size_t k, n = (size_t)256 * 64, z1 = 0, z2 = 0;
        cr_assert_eq(spruce_model_get_block(m, 0, &b), 0, "%s", spruce_errdetail());
        for (k = 0; k < n; k++) {
            z1 += b->w[SPRUCE_PROJ_UP][k] == 0.0f;
            z2 += b->w[SPRUCE_PROJ_DOWN][k] == 0.0f;
        }
        cr_assert_eq(z1, 0, "layers.0.fc1 was excluded");
        cr_assert_eq(z2, n / 2);
        spruce_model_put_block(m, b);
    }
    spruce_model_free(m);
    cr_assert_eq(spruce_maskreader_open(h5, &mr), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_maskreader_count(mr), 12, "six linear layers in each of 2 blocks");
    for (i = 0; i < spruce_maskreader_count(mr); i++)
        cr_assert(!strncmp(spruce_maskreader_name_at(mr, i), "decoder.layers.", 15), "%s",
                  spruce_maskreader_name_at(mr, i));
    spruce_maskreader_close(mr);
    free(lg);
    free(gold);
    free(ids);
    rm_tree(dir);
    rm_tree(work);
    free(dir);
    free(work);
}

/* spruce__tanhf against double tanh on a dense grid of [-20, 20] (step 1e-4)
 * plus the edge cases: absolute error at most 4e-7 (under 7 float ulps
 * of 1), relative at most 2e-6 where |tanh| >= 1e-3, NaN stays NaN, +-inf
 * gives +-1, and the result never leaves [-1, 1]. */
Test(families, tanh_rational)
{
    double maxabs = 0, maxrel = 0;
    for (long i = -200000; i <= 200000; i++) {
        float x = (float)i * 1e-4f;
        double ref = tanh((double)x);
        float got = spruce__tanhf(x);
        cr_assert(got >= -1.0f && got <= 1.0f, "tanh(%g) = %g out of [-1, 1]", x, got);
        double ae = fabs((double)got - ref);
        if (ae > maxabs)
            maxabs = ae;
        if (fabs(ref) >= 1e-3 && ae / fabs(ref) > maxrel)
            maxrel = ae / fabs(ref);
    }
    for (float x = 1e-8f; x < 1e-3f; x *= 1.01f) {
        double ref = tanh((double)x);
        cr_assert(fabs(spruce__tanhf(x) - ref) <= 2e-6 * ref, "tanh(%g)", x);
        cr_assert(fabs(spruce__tanhf(-x) + ref) <= 2e-6 * ref, "tanh(-%g)", x);
    }
    cr_assert(maxabs <= 4e-7, "max abs error %g", maxabs);
    cr_assert(maxrel <= 2e-6, "max rel error %g", maxrel);
    cr_assert(isnan(spruce__tanhf(NAN)));
    cr_assert_eq(spruce__tanhf(INFINITY), 1.0f);
    cr_assert_eq(spruce__tanhf(-INFINITY), -1.0f);
    cr_assert_eq(spruce__tanhf(1e30f), 1.0f);
    cr_assert_eq(spruce__tanhf(0.0f), 0.0f);
}

/* ---- pruned and quantized, saved compressed ------------------------------- */

/* SparseGPT 2:4 with 8-bit values saved dense and compressed: the compressed
 * checkpoint decodes to exactly the dense save's weights (every linear layer,
 * fused ones included), and opened lazily it runs on its int8 levels with
 * the logits of the dense save's float32 decoder, to float32 rounding. */
static void check_quantized(const char *name)
{
    NEED_FAMILY(dir, name);
    NEED_SPRUCE_BIN(bin);
    char *d = tmp_dir(), da[1200], dc[1200], out_d[1200], out_c[1200], cmd[4096];
    spruce_model *md = NULL, *mc = NULL, *ml = NULL;
    spruce_decoder *dd = NULL, *dl = NULL;
    spruce_decode_opts o;
    const spruce_config *c;
    float *la, *lb;
    double diff = 0, scale = 0, tol;
    int layer, l, t, j, vocab;
    snprintf(da, sizeof da, "%s/d", d);
    snprintf(dc, sizeof dc, "%s/c", d);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' '%s'", da, dc);
    cr_assert_eq(sh(cmd), 0);
    cr_assert_eq(spruce_model_open(dir, &md), 0, "%s", spruce_errdetail());
    vocab = spruce_model_config(md)->vocab_size;
    spruce_model_free(md);
    md = NULL;
    prune_fixture(bin, dir, da, vocab, "--pattern 2:4 --wbits 8 --sym", out_d, sizeof out_d);
    prune_fixture(bin, dir, dc, vocab, "--pattern 2:4 --wbits 8 --sym --save-format compressed",
                  out_c, sizeof out_c);
    cr_assert_eq(spruce_model_open(out_d, &md), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_open(out_c, &mc), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_open_lazy(out_c, &ml), 0, "%s", spruce_errdetail());
    c = spruce_model_config(md);
    for (layer = 0; layer < c->num_hidden_layers; layer++) {
        spruce_block *a = NULL, *b = NULL;
        cr_assert_eq(spruce_model_get_block(md, layer, &a), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_model_get_block(mc, layer, &b), 0, "%s", spruce_errdetail());
        for (l = 0; l < SPRUCE_NPROJ; l++)
            if (a->w[l] && !c->family->linear[l].part)
                cr_assert_arr_eq(a->w[l], b->w[l],
                                 sizeof(float) * spruce_family_tensor_rows(c->family, c,
                                                                           (spruce_proj)l) *
                                     a->cols[l],
                                 "%s layer %d %s: decoded weights differ", name, layer,
                                 spruce_proj_path((spruce_proj)l));
        for (l = 0; l < 3 * a->nexperts; l++)
            cr_assert_arr_eq(a->expert[l], b->expert[l],
                             sizeof(float) * a->expert_width * c->hidden_size,
                             "%s layer %d expert matrix %d differs", name, layer, l);
        spruce_model_put_block(md, a);
        spruce_model_put_block(mc, b);
    }
    spruce_decode_opts_init(&o);
    o.mode = SPRUCE_DECODE_DENSE;
    o.dtype = SPRUCE_DT_F32;
    cr_assert_eq(spruce_decoder_create_opts(md, 16, &o, &dd), 0, "%s", spruce_errdetail());
    spruce_decode_opts_init(&o);
    cr_assert_eq(spruce_decoder_create_opts(ml, 16, &o, &dl), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_decoder_dtype(dl), SPRUCE_DT_INT8, "%s: runs in %s", name,
                 spruce_dtype_name(spruce_decoder_dtype(dl)));
    la = malloc(sizeof *la * (size_t)vocab);
    lb = malloc(sizeof *lb * (size_t)vocab);
    for (t = 0; t < 16; t++) {
        const uint32_t id = (uint32_t)((t * 31 + 1) % vocab);
        cr_assert_eq(spruce_decoder_step(dd, id, la), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_decoder_step(dl, id, lb), 0, "%s", spruce_errdetail());
        for (j = 0; j < vocab; j++) {
            diff = fmax(diff, fabs((double)la[j] - lb[j]));
            scale = fmax(scale, fabs((double)la[j]));
        }
    }
    /* a BF16 checkpoint's dense save holds each (q - z) s rounded to bf16, as
     * compressed-tensors dequantizes in the scale's dtype; the int8 kernels
     * multiply by the unrounded product: weights 2^-9 apart, relatively */
    tol = spruce_ckpt_tensor_at(spruce_model_ckpt(md), 0)->dtype == SPRUCE_DTYPE_BF16 ? 2e-2
                                                                                     : 1e-4;
    cr_assert(diff <= tol * fmax(1.0, scale), "%s: int8 levels' logits up to %g from the dense "
              "save's (largest %g)", name, diff, scale);
    free(la);
    free(lb);
    spruce_decoder_free(dd);
    spruce_decoder_free(dl);
    spruce_model_free(md);
    spruce_model_free(mc);
    spruce_model_free(ml);
    rm_tree(d);
    free(d);
}

Test(quantized, llama3_rope) { check_quantized("llama3-rope"); }
Test(quantized, qwen3) { check_quantized("qwen3"); }
Test(quantized, qwen3_bf16) { check_quantized("qwen3-bf16"); }
Test(quantized, gemma2) { check_quantized("gemma2"); }
Test(quantized, gemma3) { check_quantized("gemma3"); }
Test(quantized, phi3_fused) { check_quantized("phi3"); }
Test(quantized, opt) { check_quantized("opt"); }
Test(quantized, mixtral) { check_quantized("mixtral"); }
Test(quantized, qwen3_moe) { check_quantized("qwen3-moe"); }
