/* test_moe.c: mixtures of experts (mixtral, qwen3_moe).  The router against
 * a double-precision softmax and top-k, the config keys and what is refused,
 * the tensor table, that each expert sees exactly the tokens routed to it, and
 * that norm_topk_prob is honoured (the fixtures' golden logits are matched in
 * test_families.c).  Pruning on the fixtures: one Hessian per expert from its
 * tokens, exact sparsity and valid 2:4 in every expert, the routers unchanged
 * bit for bit, every expert tensor in the masks, the pruned checkpoint
 * evaluating, and the rule for experts with few tokens. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "block.h"
#include "families_testutil.h"
#include "model_internal.h"
#include "spruce_ckpt.h"
#include "spruce_decode.h"
#include "spruce_family.h"
#include "spruce_masks.h"
#include "spruce_model.h"
#include "spruce_pipeline.h"
#include "spruce_prune.h"
#include "spruce_tokens.h"

/* ---- the router --------------------------------------------------------------- */

static uint64_t rng(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 11;
}

/* softmax in double, then the k largest by repeated arg-max (lowest index on
 * a tie), then renormalised when asked */
static void route_ref(const float *logit, int E, int k, int renorm, int *sel, double *w)
{
    double p[64], mx = logit[0], sum = 0, ws = 0;
    int e, j, used[64] = {0};
    for (e = 1; e < E; e++)
        mx = logit[e] > mx ? logit[e] : mx;
    for (e = 0; e < E; e++)
        sum += p[e] = exp((double)logit[e] - mx);
    for (j = 0; j < k; j++) {
        int best = -1;
        for (e = 0; e < E; e++)
            if (!used[e] && (best < 0 || p[e] > p[best]))
                best = e;
        used[best] = 1;
        sel[j] = best;
        ws += w[j] = p[best] / sum;
    }
    if (renorm)
        for (j = 0; j < k; j++)
            w[j] /= ws;
}

Test(moe, route_against_double_precision)
{
    enum { NT = 200, E = 8, K = 3 };
    static float p[NT * E], logit[NT * E], w[NT * K];
    static int sel[NT * K];
    uint64_t s = 5;
    int t, j, renorm;
    for (renorm = 0; renorm < 2; renorm++) {
        for (t = 0; t < NT * E; t++)
            p[t] = logit[t] = (float)((double)(rng(&s) % 100000) / 10000.0 - 5.0);
        spruce__moe_route(p, NT, E, K, renorm, sel, w);
        for (t = 0; t < NT; t++) {
            int rs[K];
            double rw[K], total = 0;
            route_ref(logit + t * E, E, K, renorm, rs, rw);
            for (j = 0; j < K; j++) {
                cr_assert_eq(sel[t * K + j], rs[j], "token %d slot %d: expert %d, expected %d",
                             t, j, sel[t * K + j], rs[j]);
                cr_assert(fabs(w[t * K + j] - rw[j]) < 1e-6, "token %d: weight %g, expected %g",
                          t, w[t * K + j], rw[j]);
            }
            for (j = 0; j < E; j++)   /* p is the softmax over all experts */
                total += p[t * E + j];
            cr_assert(fabs(total - 1) < 1e-5);
        }
    }
    /* a tie keeps the lower index first */
    {
        float q[4] = {1, 3, 3, 0}, tw[2];
        int ts[2];
        spruce__moe_route(q, 1, 4, 2, 1, ts, tw);
        cr_assert(ts[0] == 1 && ts[1] == 2 && fabs(tw[0] - 0.5f) < 1e-7);
    }
}

/* ---- config.json ---------------------------------------------------------------- */

#define QWEN3_MOE_BASE                                                                  \
    "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"intermediate_size\": 96, "  \
    "\"num_hidden_layers\": 4, \"num_attention_heads\": 4, \"vocab_size\": 128, "       \
    "\"max_position_embeddings\": 64, \"head_dim\": 16, \"num_experts\": 8, "           \
    "\"moe_intermediate_size\": 24"

static void parse_ok(const char *json, spruce_config *c)
{
    cr_assert_eq(spruce_config_parse(json, "config.json", c), 0, "%s: %s", json,
                 spruce_errdetail());
}

static void refused(const char *json, int code, const char *needle)
{
    spruce_config c;
    int rc = spruce_config_parse(json, "config.json", &c);
    cr_assert_eq(rc, code, "%s: %d (%s)", json, rc, spruce_errdetail());
    cr_assert(strstr(spruce_errdetail(), needle), "'%s' does not name %s", spruce_errdetail(),
              needle);
}

Test(moe, config_keys_and_defaults)
{
    spruce_config c;
    int l;
    parse_ok("{\"model_type\": \"mixtral\", \"hidden_size\": 64, \"intermediate_size\": 96, "
             "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 128, "
             "\"max_position_embeddings\": 64}", &c);
    /* configuration_mixtral.py: 8 experts, top 2; experts intermediate_size wide */
    cr_assert(c.num_experts == 8 && c.num_experts_per_tok == 2 && c.norm_topk_prob == 1);
    cr_assert_eq(c.moe_intermediate_size, 96);
    cr_assert(spruce_config_layer_moe(&c, 0) && spruce_config_layer_moe(&c, 1));
    parse_ok(QWEN3_MOE_BASE "}", &c);
    cr_assert_eq(c.norm_topk_prob, 0, "qwen3_moe: norm_topk_prob false when absent");
    cr_assert_eq(c.num_experts_per_tok, 8, "configuration_qwen3_moe.py: 8 when absent");
    cr_assert_eq(c.moe_intermediate_size, 24);
    /* modeling_qwen3_moe.py: MoE unless in mlp_only_layers or (i + 1) % step != 0 */
    parse_ok(QWEN3_MOE_BASE ", \"decoder_sparse_step\": 2, \"mlp_only_layers\": [3], "
             "\"norm_topk_prob\": true}", &c);
    cr_assert_eq(c.norm_topk_prob, 1);
    for (l = 0; l < 4; l++)
        cr_assert_eq(spruce_config_layer_moe(&c, l), l == 1, "layer %d", l);
    /* a dense family has none */
    parse_ok("{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 96, "
             "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 128, "
             "\"max_position_embeddings\": 64}", &c);
    cr_assert_eq(spruce_config_layer_moe(&c, 0), 0);
}

Test(moe, config_refusals)
{
    refused(QWEN3_MOE_BASE ", \"shared_expert_intermediate_size\": 64}", SPRUCE_EUNSUPPORTED,
            "shared_expert_intermediate_size");
    refused(QWEN3_MOE_BASE ", \"n_shared_experts\": 1}", SPRUCE_EUNSUPPORTED,
            "n_shared_experts");
    refused(QWEN3_MOE_BASE ", \"scoring_func\": \"sigmoid\"}", SPRUCE_EUNSUPPORTED,
            "scoring_func");
    refused(QWEN3_MOE_BASE ", \"num_experts_per_tok\": 9}", SPRUCE_EFORMAT,
            "num_experts_per_tok");
    refused(QWEN3_MOE_BASE ", \"mlp_only_layers\": [4]}", SPRUCE_EFORMAT, "mlp_only_layers[0]");
    refused(QWEN3_MOE_BASE ", \"mlp_only_layers\": 1}", SPRUCE_EFORMAT, "mlp_only_layers");
    refused(QWEN3_MOE_BASE ", \"decoder_sparse_step\": 0}", SPRUCE_EFORMAT,
            "decoder_sparse_step");
    refused(QWEN3_MOE_BASE ", \"use_sliding_window\": true}", SPRUCE_EUNSUPPORTED,
            "use_sliding_window");
    /* the routing of these two, and nothing else, is implemented: zero means unused */
    {
        spruce_config c;
        parse_ok(QWEN3_MOE_BASE ", \"shared_expert_intermediate_size\": 0}", &c);
    }
}

/* ---- the tensor table ------------------------------------------------------------ */

Test(moe, tensor_table)
{
    spruce_config c;
    spruce_family_tensor t;
    size_t i;
    int routers = 0, experts = 0, dense_mlp = 0, rc;
    parse_ok(QWEN3_MOE_BASE ", \"mlp_only_layers\": [0, 2]}", &c);
    for (i = 0; (rc = spruce_family_tensor_at(&c, i, &t)) == 1; i++) {
        if (t.role == SPRUCE_TENSOR_ROUTER) {
            routers++;
            cr_assert(t.shape[0] == 8 && t.shape[1] == 64 && (t.layer == 1 || t.layer == 3));
            cr_assert_eq(spruce_family_is_linear("qwen3_moe", t.name), 0, "%s", t.name);
        } else if (t.role == SPRUCE_TENSOR_LINEAR && t.expert >= 0) {
            experts++;
            cr_assert(t.layer == 1 || t.layer == 3, "%s", t.name);
            if (t.proj == SPRUCE_PROJ_DOWN)
                cr_assert(t.shape[0] == 64 && t.shape[1] == 24, "%s", t.name);
            else
                cr_assert(t.shape[0] == 24 && t.shape[1] == 64, "%s", t.name);
            cr_assert_eq(spruce_family_is_linear("qwen3_moe", t.name), 1, "%s", t.name);
        } else if (t.role == SPRUCE_TENSOR_LINEAR && t.proj >= SPRUCE_PROJ_GATE) {
            dense_mlp++;
            cr_assert(t.layer == 0 || t.layer == 2, "%s", t.name);
            cr_assert(t.proj == SPRUCE_PROJ_DOWN ? t.shape[1] == 96 : t.shape[0] == 96);
        }
    }
    cr_assert_eq(rc, 0);
    cr_assert_eq(routers, 2);
    cr_assert_eq(experts, 2 * 8 * 3);
    cr_assert_eq(dense_mlp, 2 * 3);
    cr_assert_eq(spruce_family_is_linear("qwen3_moe", "model.layers.1.mlp.experts.7.up_proj."
                                         "weight"), 1);
    cr_assert_eq(spruce_family_is_linear("qwen3_moe", "model.layers.1.mlp.experts.07.up_proj."
                                         "weight"), 0);
    cr_assert_eq(spruce_family_is_linear("qwen3_moe", "model.layers.1.mlp.gate.weight"), 0);
    cr_assert_eq(spruce_family_is_linear("mixtral", "model.layers.0.block_sparse_moe.experts.3."
                                         "w2.weight"), 1);
    cr_assert_eq(spruce_family_is_linear("mixtral", "model.layers.0.block_sparse_moe.gate."
                                         "weight"), 0);
}

/* ---- each expert sees exactly its tokens ----------------------------------------- */

typedef struct {
    const spruce_block *b;
    const spruce_config *c;
    float *A;          /* the MLP norm's output of every token (the router's input) */
    int ntok;
    int64_t seen[64];  /* rows each expert saw at its gate/up */
    int64_t down[64];
    int mismatch;
} routed;

static int grab_router_input(void *ctx, spruce_site site, const float *X, int tokens, int cols)
{
    routed *r = ctx;
    if (site == SPRUCE_SITE_GATEUP) {
        r->A = malloc((size_t)tokens * cols * sizeof(float));
        memcpy(r->A, X, (size_t)tokens * cols * sizeof(float));
        r->ntok = tokens;
    }
    return 0;
}

/* The rows expert e sees are, in token order, the rows of A of the tokens
 * whose top-k (from a double-precision router) holds e, copied exactly. */
static int check_expert_rows(void *ctx, int e, spruce_site site, const float *X, int tokens,
                             int cols)
{
    routed *r = ctx;
    const spruce_config *c = r->c;
    int t, j, n = 0;
    if (site == SPRUCE_SITE_DOWN) {
        r->down[e] += tokens;
        cr_assert_eq(cols, c->moe_intermediate_size);
        return 0;
    }
    for (t = 0; t < r->ntok; t++) {
        float lg[64];
        double w[64];
        int sel[64], hit = 0, i, k;
        for (i = 0; i < c->num_experts; i++) {
            double acc = 0;
            for (k = 0; k < c->hidden_size; k++)
                acc += (double)r->b->router[(size_t)i * c->hidden_size + k] *
                       r->A[(size_t)t * c->hidden_size + k];
            lg[i] = (float)acc;
        }
        route_ref(lg, c->num_experts, c->num_experts_per_tok, c->norm_topk_prob, sel, w);
        for (j = 0; j < c->num_experts_per_tok; j++)
            hit |= sel[j] == e;
        if (!hit)
            continue;
        if (n >= tokens ||
            memcmp(X + (size_t)n * cols, r->A + (size_t)t * cols, (size_t)cols * sizeof(float)))
            r->mismatch++;
        n++;
    }
    if (n != tokens)
        r->mismatch++;
    r->seen[e] += tokens;
    return 0;
}

static void check_routing(const char *name)
{
    NEED_FAMILY(dir, name);
    spruce_model *m = NULL;
    spruce_block *b = NULL;
    spruce_fwd_ws *ws;
    const spruce_config *c;
    uint32_t *ids;
    float *gold, *x;
    routed r;
    int64_t total = 0;
    int e;
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    c = spruce_model_config(m);
    load_golden(dir, c->vocab_size, &ids, &gold);
    x = malloc((size_t)NSEQ * SEQ * c->hidden_size * sizeof(float));
    cr_assert_eq(spruce_model_embed(m, ids, NSEQ * SEQ, x), 0);
    ws = spruce_fwd_ws_alloc(c, SEQ, NSEQ);
    cr_assert_not_null(ws);
    cr_assert_eq(spruce_model_get_block(m, 0, &b), 0, "%s", spruce_errdetail());
    cr_assert_eq(b->nexperts, c->num_experts);
    memset(&r, 0, sizeof r);
    r.b = b;
    r.c = c;
    cr_assert_eq(spruce__block_forward_experts(c, b, x, NSEQ, SEQ, ws, grab_router_input, &r,
                                               check_expert_rows, &r, SPRUCE_SITE_DOWN, 0), 0,
                 "%s", spruce_errdetail());
    cr_assert_eq(r.mismatch, 0, "%s: an expert saw other rows than its tokens'", name);
    for (e = 0; e < c->num_experts; e++) {
        cr_assert_eq(r.seen[e], r.down[e]);
        total += r.seen[e];
    }
    cr_assert_eq(total, (int64_t)NSEQ * SEQ * c->num_experts_per_tok);
    spruce_model_put_block(m, b);
    spruce_fwd_ws_free(ws);
    free(r.A);
    free(x);
    free(gold);
    free(ids);
    spruce_model_free(m);
}

Test(moe, mixtral_experts_see_exactly_their_tokens) { check_routing("mixtral"); }
Test(moe, qwen3_moe_experts_see_exactly_their_tokens) { check_routing("qwen3-moe"); }

/* ---- norm_topk_prob is honoured ----------------------------------------------------- */

/* A copy of a fixture with the keys of `keys` set in config.json (the weights
 * linked); takes the reference to keys. */
static char *fixture_with_keys(const char *dir, json_t *keys)
{
    char *d = tmp_dir(), path[1200], cmd[4096];
    json_error_t err;
    json_t *root;
    snprintf(path, sizeof path, "%s/config.json", dir);
    root = json_load_file(path, 0, &err);
    cr_assert_not_null(root);
    cr_assert_eq(json_object_update(root, keys), 0);
    json_decref(keys);
    snprintf(path, sizeof path, "%s/config.json", d);
    cr_assert_eq(json_dump_file(root, path, JSON_INDENT(2)), 0);
    json_decref(root);
    snprintf(cmd, sizeof cmd, "ln -s '%s/model.safetensors' '%s/model.safetensors'", dir, d);
    cr_assert_eq(sh(cmd), 0);
    return d;
}

/* The same with one key set to val. */
static char *fixture_with(const char *dir, const char *key, json_t *val)
{
    json_t *keys = json_object();
    json_object_set_new(keys, key, val);
    return fixture_with_keys(dir, keys);
}

/* The largest difference of m's logits from the fixture's golden ones. */
static double diff_from_golden(spruce_model *m, const char *dir)
{
    int vocab = spruce_model_config(m)->vocab_size;
    uint32_t *ids;
    float *gold, *lg;
    double diff;
    load_golden(dir, vocab, &ids, &gold);
    lg = malloc((size_t)SEQ * vocab * sizeof(float));
    cr_assert_not_null(lg);
    cr_assert_eq(spruce_model_forward(m, ids, SEQ, lg), 0, "%s", spruce_errdetail());
    diff = max_abs_diff(lg, gold, (size_t)SEQ * vocab);
    free(lg);
    free(gold);
    free(ids);
    return diff;
}

Test(moe, norm_topk_prob_false_leaves_the_weights_unnormalised)
{
    NEED_FAMILY(dir, "qwen3-moe");
    spruce_model *m = NULL;
    char *d = fixture_with(dir, "norm_topk_prob", json_false());
    double diff;
    cr_assert_eq(spruce_model_open(d, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_config(m)->norm_topk_prob, 0);
    diff = diff_from_golden(m, dir);
    /* the golden logits renormalise: without, the expert outputs are smaller */
    cr_assert(diff > 1e-2, "norm_topk_prob false changed the logits by only %g", diff);
    spruce_model_free(m);
    rm_tree(d);
    free(d);
}

/* ---- dense MLP layers: mlp_only_layers and decoder_sparse_step ---------------------- */

/* modeling_qwen3_moe.py: Qwen3MoeDecoderLayer takes Qwen3MoeSparseMoeBlock when
 *   layer_idx not in mlp_only_layers and num_experts > 0 and
 *   (layer_idx + 1) % decoder_sparse_step == 0,
 * else Qwen3MoeMLP(intermediate_size), which is qwen3's MLP; the attention is
 * qwen3's.  So the qwen3 fixture relabelled as qwen3_moe with every layer dense
 * by either key is the same model: its golden logits (an independent PyTorch
 * computation) must come out. */
static char *qwen3_as_moe(const char *dir, const char *key, json_t *val)
{
    json_t *keys = json_pack("{s:s, s:[s], s:i, s:i, s:i, s:b}", "model_type", "qwen3_moe",
                             "architectures", "Qwen3MoeForCausalLM", "num_experts", 8,
                             "num_experts_per_tok", 2, "moe_intermediate_size", 32,
                             "norm_topk_prob", 1);
    cr_assert_not_null(keys);
    json_object_set_new(keys, key, val);
    return fixture_with_keys(dir, keys);
}

static void expect_qwen3_logits(const char *key, json_t *val)
{
    NEED_FAMILY(dir, "qwen3");
    spruce_model *m = NULL;
    const spruce_config *c;
    char *d = qwen3_as_moe(dir, key, val);
    double diff;
    int l;
    cr_assert_eq(spruce_model_open(d, &m), 0, "%s", spruce_errdetail());
    c = spruce_model_config(m);
    cr_assert_eq(c->num_experts, 8);
    for (l = 0; l < c->num_hidden_layers; l++)
        cr_assert_not(spruce_config_layer_moe(c, l), "%s: layer %d taken as MoE", key, l);
    diff = diff_from_golden(m, dir);
    cr_assert(diff < 1e-4, "%s: the dense layers' logits differ from qwen3's by %g", key, diff);
    spruce_model_free(m);
    rm_tree(d);
    free(d);
}

Test(moe, mlp_only_layers_are_qwen3_dense_layers)
{
    expect_qwen3_logits("mlp_only_layers", json_pack("[i,i]", 0, 1));
}

Test(moe, decoder_sparse_step_leaves_other_layers_dense)
{
    /* 2 layers, step 3: (0 + 1) % 3 and (1 + 1) % 3 are not 0, both dense */
    expect_qwen3_logits("decoder_sparse_step", json_integer(3));
}

/* A layer the keys make MoE needs its experts: a clear error naming it. */
Test(moe, a_moe_layer_without_experts_is_refused_by_name)
{
    NEED_FAMILY(dir, "qwen3");
    spruce_model *m = NULL;
    char *d = qwen3_as_moe(dir, "decoder_sparse_step", json_integer(2));
    cr_assert_neq(spruce_model_open(d, &m), 0, "layer 1 (MoE by step 2) opened without experts");
    cr_assert(strstr(spruce_errdetail(), "layers.1."), "%s", spruce_errdetail());
    rm_tree(d);
    free(d);
}

/* A model that mixes dense and MoE layers, against an independent reference.
 * One expert chosen from one is the dense MLP (softmax over one logit is 1,
 * renormalised 1: Qwen3MoeSparseMoeBlock gives expert 0's output times 1), so
 * the qwen3 fixture as qwen3_moe with layer 0 dense (mlp_only_layers [0]) and
 * layer 1's MLP moved to mlp.experts.0 beside a router (mlp.gate, zeros) is
 * qwen3: its golden logits must come out of the forward and of the cached
 * decoder, each layer taking its own path. */
static char *qwen3_mixed(const char *dir)
{
    char *d = tmp_dir(), cmd[4096];
    json_t *keys = json_pack("{s:s, s:[s], s:i, s:i, s:i, s:b, s:[i]}", "model_type",
                             "qwen3_moe", "architectures", "Qwen3MoeForCausalLM", "num_experts", 1,
                             "num_experts_per_tok", 1, "moe_intermediate_size", 192,
                             "norm_topk_prob", 1, "mlp_only_layers", 0);
    char *cfgdir = fixture_with_keys(dir, keys);
    json_t *h = st_read_header(dir), *n = json_object(), *v, *e;
    const char *key;
    uint64_t end = 0;
    float zeros[64] = {0};
    snprintf(cmd, sizeof cmd, "cp '%s/config.json' '%s/config.json'", cfgdir, d);
    cr_assert_eq(sh(cmd), 0);
    rm_tree(cfgdir);
    free(cfgdir);
    json_object_foreach(h, key, v) {
        char name[256];
        const char *mlp = "model.layers.1.mlp.";
        json_t *off = json_object_get(v, "data_offsets");
        if (off && (uint64_t)json_integer_value(json_array_get(off, 1)) > end)
            end = (uint64_t)json_integer_value(json_array_get(off, 1));
        if (!strncmp(key, mlp, strlen(mlp)))
            snprintf(name, sizeof name, "%sexperts.0.%s", mlp, key + strlen(mlp));
        else
            snprintf(name, sizeof name, "%s", key);
        json_object_set(n, name, v);
    }
    /* the router (1, hidden) after the data */
    e = json_pack("{s:s, s:[i,i], s:[I,I]}", "dtype", "F32", "shape", 1, 64, "data_offsets",
                  (json_int_t)end, (json_int_t)(end + sizeof zeros));
    cr_assert_not_null(e);
    json_object_set_new(n, "model.layers.1.mlp.gate.weight", e);
    st_write(dir, d, n, zeros, sizeof zeros);
    json_decref(n);
    json_decref(h);
    return d;
}

Test(moe, dense_and_moe_layers_mixed_against_the_golden_logits)
{
    NEED_FAMILY(dir, "qwen3");
    spruce_model *m = NULL;
    const spruce_config *c;
    char *d = qwen3_mixed(dir);
    uint32_t *ids;
    float *gold;
    double diff, worst;
    cr_assert_eq(spruce_model_open(d, &m), 0, "%s", spruce_errdetail());
    c = spruce_model_config(m);
    cr_assert_not(spruce_config_layer_moe(c, 0), "layer 0 should be dense (mlp_only_layers)");
    cr_assert(spruce_config_layer_moe(c, 1), "layer 1 should be a mixture of experts");
    diff = diff_from_golden(m, dir);
    cr_assert(diff < 1e-4, "the mixed model's forward is %g from qwen3's logits", diff);
    load_golden(dir, c->vocab_size, &ids, &gold);
    worst = decoder_error(m, SPRUCE_DECODE_DENSE, ids, SEQ, gold);
    cr_assert(worst < 1e-4, "the mixed model's decoder is %g from qwen3's logits", worst);
    free(gold);
    free(ids);
    spruce_model_free(m);
    rm_tree(d);
    free(d);
}

/* ---- pruning ------------------------------------------------------------------------ */

static void expect_sparse(const float *w, size_t n, int nm, const char *what)
{
    size_t z = 0, k;
    for (k = 0; k < n; k++)
        z += w[k] == 0.0f;
    cr_assert_eq(z, n / 2, "%s: %zu of %zu zero", what, z, n);
    if (nm)   /* every aligned group of 4 along a row has exactly 2 zeros */
        for (k = 0; k < n; k += 4)
            cr_assert_eq((w[k] == 0) + (w[k + 1] == 0) + (w[k + 2] == 0) + (w[k + 3] == 0), 2,
                         "%s: group at %zu is not 2:4", what, k);
}

/* Greedy decoding of 24 tokens after id 1: the same ids on dense OpenBLAS,
 * in CSR and (2:4 models) in the N:M format, every expert its own sparse
 * linear layer. */
static void expect_same_greedy_ids(spruce_model *m, int nm)
{
    static const spruce_decode_mode modes[3] = {SPRUCE_DECODE_DENSE, SPRUCE_DECODE_CSR,
                                                SPRUCE_DECODE_NM};
    int vocab = spruce_model_config(m)->vocab_size, k, t, j, ids[3][24];
    float *lg = malloc((size_t)vocab * sizeof(float));
    for (k = 0; k < (nm ? 3 : 2); k++) {
        spruce_decoder *d = NULL;
        uint32_t id = 1;
        cr_assert_eq(spruce_decoder_create(m, 25, modes[k], &d), 0, "%s", spruce_errdetail());
        if (k)
            cr_assert_eq(spruce_decoder_sparse_layers(d),
                         spruce_decoder_linear_layers(d) -
                             spruce_model_config(m)->num_hidden_layers, "every layer but "
                         "the routers sparse");
        for (t = 0; t < 24; t++) {
            cr_assert_eq(spruce_decoder_step(d, id, lg), 0, "%s", spruce_errdetail());
            for (j = 1, ids[k][t] = 0; j < vocab; j++)
                if (lg[j] > lg[ids[k][t]])
                    ids[k][t] = j;
            id = (uint32_t)ids[k][t];
        }
        spruce_decoder_free(d);
        if (k)
            cr_assert_arr_eq(ids[k], ids[0], sizeof ids[0], "decode mode %d: other greedy ids",
                             (int)modes[k]);
    }
    free(lg);
}

/* spruce prune on the fixture (random calibration ids), then: every expert
 * tensor exactly half zero (2:4 when nm), attention too, routers and norms
 * bit for bit the originals, the masks naming every expert tensor, and the
 * pruned checkpoint evaluating to a finite perplexity. */
static void check_prune(const char *name, const char *how, int nm)
{
    NEED_FAMILY(dir, name);
    NEED_SPRUCE_BIN(bin);
    char *d = tmp_dir(), out[1200], h5[1200], opts[1600], cmd[4096], what[256];
    spruce_model *src = NULL, *m = NULL;
    spruce_maskreader *mr = NULL;
    const spruce_config *c;
    int layer, l, e, i, nexpert = 0, nmasks = 0;
    cr_assert_eq(spruce_model_open(dir, &src), 0, "%s", spruce_errdetail());
    c = spruce_model_config(src);
    snprintf(h5, sizeof h5, "%s/m.h5", d);
    snprintf(opts, sizeof opts, "%s --masks '%s'", how, h5);
    prune_fixture(bin, dir, d, c->vocab_size, opts, out, sizeof out);
    cr_assert_eq(spruce_model_open(out, &m), 0, "%s", spruce_errdetail());
    for (layer = 0; layer < c->num_hidden_layers; layer++) {
        spruce_block *b = NULL, *o = NULL;
        cr_assert_eq(spruce_model_get_block(m, layer, &b), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_model_get_block(src, layer, &o), 0, "%s", spruce_errdetail());
        for (l = 0; l <= SPRUCE_PROJ_O; l++) {
            snprintf(what, sizeof what, "%s layer %d %s", name, layer,
                     spruce_proj_path((spruce_proj)l));
            expect_sparse(b->w[l], (size_t)b->rows[l] * b->cols[l], nm, what);
        }
        cr_assert_eq(b->nexperts, c->num_experts);
        for (e = 0; e < b->nexperts; e++)
            for (i = 0; i < 3; i++) {
                snprintf(what, sizeof what, "%s layer %d expert %d matrix %d", name, layer, e,
                         i);
                expect_sparse(b->expert[3 * e + i],
                              (size_t)c->hidden_size * c->moe_intermediate_size, nm, what);
                nexpert++;
            }
        cr_assert_arr_eq(b->router, o->router,
                         sizeof(float) * c->num_experts * c->hidden_size,
                         "%s layer %d: the router changed", name, layer);
        cr_assert_arr_eq(b->mlp_norm, o->mlp_norm, sizeof(float) * c->hidden_size);
        spruce_model_put_block(m, b);
        spruce_model_put_block(src, o);
    }
    /* the masks: the four attention layers and every expert tensor of each block */
    cr_assert_eq(spruce_maskreader_open(h5, &mr), 0, "%s", spruce_errdetail());
    for (i = 0; i < spruce_maskreader_count(mr); i++) {
        const char *t = spruce_maskreader_name_at(mr, i);
        cr_assert_eq(spruce_family_is_linear(c->model_type, t), 1, "%s", t);
        nmasks += strstr(t, "experts.") != NULL;
    }
    cr_assert_eq(nmasks, nexpert);
    cr_assert_eq(spruce_maskreader_count(mr), nexpert + 4 * c->num_hidden_layers);
    spruce_maskreader_close(mr);
    /* the summary names every expert with its tokens (magnitude: none) */
    snprintf(cmd, sizeof cmd, "grep -c '^  [0-9]*\\.[0-9]*: %s' '%s/out' | grep -qx %d",
             strstr(how, "magnitude") ? "magnitude, no calibration$" : "[0-9]* tokens, loss", d,
             c->num_hidden_layers * c->num_experts);
    cr_assert_eq(sh(cmd), 0, "the summary does not list every expert (%s/out)", d);
    expect_evaluates(m, dir);   /* the pruned checkpoint evaluates */
    expect_same_greedy_ids(m, nm);
    spruce_model_free(m);
    spruce_model_free(src);
    rm_tree(d);
    free(d);
}

Test(prune, mixtral_sparsegpt_half) { check_prune("mixtral", "--sparsity 0.5", 0); }
Test(prune, mixtral_sparsegpt_2_4) { check_prune("mixtral", "--pattern 2:4", 1); }
Test(prune, qwen3_moe_sparsegpt_2_4) { check_prune("qwen3-moe", "--pattern 2:4", 1); }
Test(prune, qwen3_moe_wanda_true_sequential)
{
    check_prune("qwen3-moe", "--method wanda --sparsity 0.5 --true-sequential", 0);
}
Test(prune, mixtral_magnitude_2_4)
{
    check_prune("mixtral", "--method magnitude --pattern 2:4", 1);
}

/* ---- the rule for experts with few tokens ------------------------------------------ */

typedef struct {
    spruce_model *dense;       /* the unpruned fixture, for the magnitude reference */
    int64_t tokens[2][64];     /* [gate/up, down] per expert of block 0 */
    int none, few, checked;
} few_ctx;

static int on_expert(void *vctx, const spruce_layer_report *r)
{
    few_ctx *f = vctx;
    const spruce_config *c = spruce_model_config(f->dense);
    if (r->expert < 0)
        return 0;
    if (r->layer == 0)
        f->tokens[r->which == SPRUCE_PROJ_DOWN][r->expert] = r->tokens;
    if (r->tokens == 0) {
        /* no tokens: magnitude on the dense weights, bit for bit */
        spruce_block *b = NULL;
        spruce_prune_opts po;
        spruce_prune_result res;
        float *w;
        size_t n = (size_t)r->rows * r->cols;
        cr_assert(r->fallback && strstr(r->fallback, "magnitude"), "%s: %s", r->name,
                  r->fallback ? r->fallback : "no rule");
        cr_assert_eq(spruce_model_get_block(f->dense, r->layer, &b), 0);
        w = malloc(n * sizeof(float));
        memcpy(w, b->expert[3 * r->expert + (r->which - SPRUCE_PROJ_GATE)], n * sizeof(float));
        spruce_prune_opts_init(&po);
        po.method = SPRUCE_METHOD_MAGNITUDE;
        po.sparsity = 0.5f;
        cr_assert_eq(spruce_prune_layer(w, r->rows, r->cols, NULL, &po, NULL, &res), 0);
        cr_assert_arr_eq(w, r->weight, n * sizeof(float), "%s", r->name);
        free(w);
        spruce_model_put_block(f->dense, b);
        f->none++;
    } else if (r->tokens < r->cols) {
        cr_assert(r->fallback && strstr(r->fallback, "damping"), "%s: %lld tokens", r->name,
                  (long long)r->tokens);
        cr_assert(r->result.damp_used >= 0.1f, "%s: damping %g", r->name, r->result.damp_used);
        f->few++;
    } else {
        cr_assert_null(r->fallback, "%s: %lld tokens", r->name, (long long)r->tokens);
    }
    cr_assert(r->tokens == 0 || r->rel_error >= 0, "%s: no relative error", r->name);
    (void)c;
    f->checked++;
    return 0;
}

/* 6 calibration tokens: 12 routings among 8 experts of 64 inputs (32 for down). */
Test(prune, qwen3_moe_experts_with_few_tokens)
{
    NEED_FAMILY(dir, "qwen3-moe");
    spruce_model *m = NULL;
    spruce_pipeline_opts po;
    spruce_pipeline_summary sum;
    uint32_t cal[6];
    few_ctx f;
    int e;
    int64_t total = 0;
    memset(&f, 0, sizeof f);
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_open(dir, &f.dense), 0, "%s", spruce_errdetail());
    spruce_tokens_random(cal, 6, (uint32_t)spruce_model_config(m)->vocab_size, 3);
    spruce_pipeline_opts_init(&po);
    po.prune.sparsity = 0.5f;
    po.on_layer = on_expert;
    po.ctx = &f;
    cr_assert_eq(spruce_pipeline_run(m, cal, 1, 6, NULL, &po, &sum), 0, "%s",
                 spruce_errdetail());
    for (e = 0; e < 8; e++) {
        cr_assert_eq(f.tokens[0][e], f.tokens[1][e], "expert %d: gate and down saw %lld, %lld",
                     e, (long long)f.tokens[0][e], (long long)f.tokens[1][e]);
        total += f.tokens[0][e];
    }
    cr_assert_eq(total, 6 * 2, "the tokens routed in block 0");
    cr_assert(f.none > 0 && f.few > 0, "none %d, few %d: the rule was not exercised", f.none,
              f.few);
    cr_assert_eq(f.checked, 2 * 8 * 3);
    spruce_model_free(f.dense);
    spruce_model_free(m);
}

/* ---- how good: SparseGPT < Wanda < magnitude, expert by expert -------------------- */

/* One Hessian per expert and input (gate/up, down) from what the dense block
 * routes to it. */
static int tap_expert_h(void *ctx, int e, spruce_site site, const float *X, int tokens,
                        int cols)
{
    spruce_hessian **h = ctx;
    (void)cols;
    return spruce_hessian_add(h[2 * e + (site == SPRUCE_SITE_DOWN)], X, tokens);
}

/* err[layer * E + e]: the relative output error of expert e's gate, up and
 * down of the pruned model p summed, each over the inputs the dense model d
 * routes to that expert on the calibration tokens (the same inputs for every
 * method). */
static void expert_errors(spruce_model *d, spruce_model *p, const uint32_t *cal, int N, int T,
                          double *err)
{
    const spruce_config *c = spruce_model_config(d);
    int E = c->num_experts, hid = c->hidden_size, w = c->moe_intermediate_size, s, l, e, k;
    float *X = malloc((size_t)N * T * hid * sizeof(float));
    spruce_fwd_ws *ws = spruce_fwd_ws_alloc(c, T, N);
    spruce_hessian **h = calloc((size_t)2 * E, sizeof *h);
    cr_assert(X && ws && h);
    for (s = 0; s < N; s++)
        cr_assert_eq(spruce_model_embed(d, cal + (size_t)s * T, T, X + (size_t)s * T * hid), 0);
    for (l = 0; l < c->num_hidden_layers; l++) {
        spruce_block *bd = NULL, *bp = NULL;
        cr_assert_eq(spruce_model_get_block(d, l, &bd), 0);
        cr_assert_eq(spruce_model_get_block(p, l, &bp), 0);
        for (e = 0; e < 2 * E; e++)
            h[e] = spruce_hessian_alloc(e % 2 ? w : hid);
        cr_assert_eq(spruce__block_forward_experts(c, bd, X, N, T, ws, NULL, NULL, tap_expert_h,
                                                   h, SPRUCE_SITE_DOWN, 0), 0, "%s",
                     spruce_errdetail());
        for (e = 0; e < E; e++) {
            err[l * E + e] = 0;
            cr_assert(spruce_hessian_tokens(h[2 * e]) >= hid, "expert %d.%d: %lld tokens", l, e,
                      (long long)spruce_hessian_tokens(h[2 * e]));
            for (k = 0; k < 3; k++) {
                double rel;
                cr_assert_eq(spruce_prune_rel_error(bd->expert[3 * e + k], bp->expert[3 * e + k],
                                                    k == 2 ? hid : w, k == 2 ? w : hid,
                                                    h[2 * e + (k == 2)], &rel), 0);
                err[l * E + e] += rel;
            }
        }
        for (e = 0; e < 2 * E; e++)
            spruce_hessian_free(h[e]);
        cr_assert_eq(spruce__block_forward_at(c, bd, X, N, T, ws, NULL, NULL, -1, 0), 0);
        spruce_model_put_block(d, bd);
        spruce_model_put_block(p, bp);
    }
    free(h);
    spruce_fwd_ws_free(ws);
    free(X);
}

/* A small synth mixtral (hidden 128, 8 experts of 96, top 2) on 32 x 256
 * calibration tokens (about 2000 per expert), unstructured 50%.  (On synth's
 * random weights Wanda's lead over magnitude is small, a few percent: its
 * inputs' columns have nearly equal norms; at hidden 64 and 32 x 128 tokens
 * one expert of 16 had magnitude 0.6% ahead.) */
Test(quality, sparsegpt_below_wanda_below_magnitude_per_expert)
{
    enum { N = 32, T = 256, L = 2, E = 8 };
    static const spruce_method methods[3] = {SPRUCE_METHOD_SPARSEGPT, SPRUCE_METHOD_WANDA,
                                             SPRUCE_METHOD_MAGNITUDE};
    spruce_synth_config sc;
    spruce_synth_family sf;
    spruce_model *dense = NULL;
    static uint32_t cal[N * T];
    static double err[3][L * E];
    char *d = tmp_dir(), dir[1200];
    int i, j;
    spruce_synth_defaults(&sc);
    sc.hidden = 128;
    sc.intermediate = 96;
    sc.layers = L;
    sc.heads = 4;
    sc.kv_heads = 2;
    sc.vocab = 256;
    sc.max_position = T;
    spruce_synth_family_defaults(&sf);
    sf.model_type = "mixtral";
    sf.experts = E;
    sf.experts_per_tok = 2;
    snprintf(dir, sizeof dir, "%s/m", d);
    cr_assert_eq(spruce_synth_write_family(dir, &sc, &sf, 0), 0, "%s", spruce_errdetail());
    spruce_tokens_random(cal, N * T, (uint32_t)sc.vocab, 11);
    cr_assert_eq(spruce_model_open(dir, &dense), 0, "%s", spruce_errdetail());
    for (i = 0; i < 3; i++) {
        spruce_model *m = NULL;
        spruce_pipeline_opts po;
        cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_model_cache_blocks(m), 0);   /* pruned in place */
        spruce_pipeline_opts_init(&po);
        po.prune.method = methods[i];
        po.prune.sparsity = 0.5f;
        cr_assert_eq(spruce_pipeline_run(m, cal, N, T, NULL, &po, NULL), 0, "%s",
                     spruce_errdetail());
        expert_errors(dense, m, cal, N, T, err[i]);
        spruce_model_free(m);
    }
    for (j = 0; j < L * E; j++) {
        cr_assert(err[0][j] < err[1][j], "expert %d.%d: SparseGPT %g, Wanda %g", j / E, j % E,
                  err[0][j], err[1][j]);
        cr_assert(err[1][j] < err[2][j], "expert %d.%d: Wanda %g, magnitude %g", j / E, j % E,
                  err[1][j], err[2][j]);
    }
    spruce_model_free(dense);
    rm_tree(d);
    free(d);
}

/* The decoder counts the seconds of the experts' linear layers (what
 * `bench --model` reports beside the whole decode): some after steps on a MoE
 * model, none after reset, none on a dense model. */
Test(moe, decoder_counts_the_experts_seconds)
{
    NEED_FAMILY(dir, "qwen3-moe");
    NEED_FAMILY(dense, "qwen3");
    spruce_model *m = NULL, *dm = NULL;
    spruce_decoder *dec = NULL, *dd = NULL;
    float *lg;
    int t;
    cr_assert_eq(spruce_model_open(dir, &m), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_open(dense, &dm), 0, "%s", spruce_errdetail());
    cr_assert(lg = malloc(sizeof *lg * 1024));
    cr_assert_eq(spruce_decoder_create(m, 8, SPRUCE_DECODE_DENSE, &dec), 0, "%s",
                 spruce_errdetail());
    cr_assert_eq(spruce_decoder_create(dm, 8, SPRUCE_DECODE_DENSE, &dd), 0, "%s",
                 spruce_errdetail());
    cr_assert(spruce_model_config(m)->vocab_size <= 1024 &&
              spruce_model_config(dm)->vocab_size <= 1024);
    cr_assert_eq(spruce_decoder_expert_seconds(dec), 0.0);
    for (t = 0; t < 8; t++) {
        cr_assert_eq(spruce_decoder_step(dec, (uint32_t)t + 1, lg), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_decoder_step(dd, (uint32_t)t + 1, lg), 0, "%s", spruce_errdetail());
    }
    cr_assert_gt(spruce_decoder_expert_seconds(dec), 0.0);
    cr_assert_eq(spruce_decoder_expert_seconds(dd), 0.0);
    spruce_decoder_reset(dec);
    cr_assert_eq(spruce_decoder_expert_seconds(dec), 0.0);
    spruce_decoder_free(dec);
    spruce_decoder_free(dd);
    free(lg);
    spruce_model_free(m);
    spruce_model_free(dm);
}

/* masks export and apply name every expert: magnitude pruning changes no
 * kept weight, so its masks applied to the original (as pruned, and as
 * exported back from the pruned checkpoint) give the pruned experts bit for
 * bit. */
static void expect_same_experts(const char *a, const char *b)
{
    spruce_model *ma = NULL, *mb = NULL;
    const spruce_config *c;
    int layer, i;
    cr_assert_eq(spruce_model_open(a, &ma), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_open(b, &mb), 0, "%s", spruce_errdetail());
    c = spruce_model_config(ma);
    for (layer = 0; layer < c->num_hidden_layers; layer++) {
        spruce_block *x = NULL, *y = NULL;
        cr_assert_eq(spruce_model_get_block(ma, layer, &x), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_model_get_block(mb, layer, &y), 0, "%s", spruce_errdetail());
        for (i = 0; i < 3 * c->num_experts; i++)
            cr_assert_arr_eq(x->expert[i], y->expert[i],
                             sizeof(float) * c->hidden_size * c->moe_intermediate_size,
                             "%s and %s: layer %d expert matrix %d differ", a, b, layer, i);
        spruce_model_put_block(ma, x);
        spruce_model_put_block(mb, y);
    }
    spruce_model_free(ma);
    spruce_model_free(mb);
}

Test(moe, masks_export_and_apply_every_expert)
{
    NEED_FAMILY(dir, "qwen3-moe");
    NEED_SPRUCE_BIN(bin);
    char *d = tmp_dir(), out[1200], opts[1400], cmd[8192], path[1300], path2[1300];
    spruce_model *src = NULL;
    int vocab;
    cr_assert_eq(spruce_model_open(dir, &src), 0, "%s", spruce_errdetail());
    vocab = spruce_model_config(src)->vocab_size;
    spruce_model_free(src);
    snprintf(opts, sizeof opts, "--method magnitude --sparsity 0.5 --masks '%s/m.h5'", d);
    prune_fixture(bin, dir, d, vocab, opts, out, sizeof out);
    snprintf(cmd, sizeof cmd, "'%s' masks apply '%s' '%s/m.h5' -o '%s/applied' >'%s/apply.out' "
             "2>&1 && '%s' masks export '%s' -o '%s/ex.h5' >'%s/export.out' 2>&1 && '%s' masks "
             "apply '%s' '%s/ex.h5' -o '%s/applied2' >'%s/apply2.out' 2>&1", bin, dir, d, d, d,
             bin, out, d, d, bin, dir, d, d, d);
    cr_assert_eq(sh(cmd), 0, "%s", cmd);
    snprintf(path, sizeof path, "%s/applied", d);
    snprintf(path2, sizeof path2, "%s/applied2", d);
    expect_same_experts(out, path);
    expect_same_experts(out, path2);
    snprintf(cmd, sizeof cmd, "grep -q ' 0 skipped' '%s/apply.out'", d);
    cr_assert_eq(sh(cmd), 0, "masks apply skipped some masks (%s/apply.out)", d);
    rm_tree(d);
    free(d);
}

/* --include / --exclude match expert tensors by name: only expert 3's
 * matrices but its down_proj are pruned; the attention and the other
 * experts are the originals bit for bit. */
Test(moe, include_and_exclude_select_experts)
{
    NEED_FAMILY(dir, "qwen3-moe");
    NEED_SPRUCE_BIN(bin);
    char *d = tmp_dir(), out[1200];
    spruce_model *src = NULL, *m = NULL;
    const spruce_config *c;
    size_t ne;
    int layer, e, k, l;
    cr_assert_eq(spruce_model_open(dir, &src), 0, "%s", spruce_errdetail());
    c = spruce_model_config(src);
    ne = (size_t)c->hidden_size * c->moe_intermediate_size;
    prune_fixture(bin, dir, d, c->vocab_size, "--sparsity 0.5 --include 'experts\\.3\\.' "
                  "--exclude 'down_proj'", out, sizeof out);
    cr_assert_eq(spruce_model_open(out, &m), 0, "%s", spruce_errdetail());
    for (layer = 0; layer < c->num_hidden_layers; layer++) {
        spruce_block *b = NULL, *o = NULL;
        cr_assert_eq(spruce_model_get_block(m, layer, &b), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_model_get_block(src, layer, &o), 0, "%s", spruce_errdetail());
        for (l = 0; l <= SPRUCE_PROJ_O; l++)
            cr_assert_arr_eq(b->w[l], o->w[l], sizeof(float) * b->rows[l] * b->cols[l],
                             "layer %d %s changed", layer, spruce_proj_path((spruce_proj)l));
        for (e = 0; e < c->num_experts; e++)
            for (k = 0; k < 3; k++) {
                char what[128];
                snprintf(what, sizeof what, "layer %d expert %d matrix %d", layer, e, k);
                if (e == 3 && k < 2)
                    expect_sparse(b->expert[3 * e + k], ne, 0, what);
                else
                    cr_assert_arr_eq(b->expert[3 * e + k], o->expert[3 * e + k],
                                     ne * sizeof(float), "%s changed", what);
            }
        spruce_model_put_block(m, b);
        spruce_model_put_block(src, o);
    }
    spruce_model_free(m);
    spruce_model_free(src);
    rm_tree(d);
    free(d);
}

/* ---- per-layer plans ----------------------------------------------------------------- */

static size_t zeros_of(const float *w, size_t n)
{
    size_t z = 0, k;
    for (k = 0; k < n; k++)
        z += w[k] == 0.0f;
    return z;
}

/* --layer-sparsity names experts like any linear layer: expert 0 kept dense
 * (bit for bit the original), expert 1's down_proj 2:4, the attention at 30%,
 * every other expert matrix at the default 50%; OWL is refused by name. */
Test(moe, layer_sparsity_file_plans_experts)
{
    NEED_FAMILY(dir, "qwen3-moe");
    NEED_SPRUCE_BIN(bin);
    char *d = tmp_dir(), out[1200], rules[1200], opts[1400], cmd[4096];
    spruce_model *src = NULL, *m = NULL;
    const spruce_config *c;
    size_t ne;
    int layer, e, k, l;
    FILE *f;
    cr_assert_eq(spruce_model_open(dir, &src), 0, "%s", spruce_errdetail());
    c = spruce_model_config(src);
    ne = (size_t)c->hidden_size * c->moe_intermediate_size;
    snprintf(rules, sizeof rules, "%s/rules.json", d);
    cr_assert(f = fopen(rules, "w"));
    fputs("{\"experts\\\\.0\\\\.\": \"dense\", \"experts\\\\.1\\\\..*down_proj\": \"2:4\", "
          "\"self_attn\": 0.3}\n", f);
    fclose(f);
    snprintf(opts, sizeof opts, "--sparsity 0.5 --layer-sparsity '%s'", rules);
    prune_fixture(bin, dir, d, c->vocab_size, opts, out, sizeof out);
    cr_assert_eq(spruce_model_open(out, &m), 0, "%s", spruce_errdetail());
    for (layer = 0; layer < c->num_hidden_layers; layer++) {
        spruce_block *b = NULL, *o = NULL;
        cr_assert_eq(spruce_model_get_block(m, layer, &b), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_model_get_block(src, layer, &o), 0, "%s", spruce_errdetail());
        for (l = 0; l <= SPRUCE_PROJ_O; l++) {
            size_t n = (size_t)b->rows[l] * b->cols[l], z = zeros_of(b->w[l], n);
            cr_assert(fabs((double)z - 0.3 * (double)n) <= 1.0, "layer %d %s: %zu of %zu zero "
                      "(the file says 30%%)", layer, spruce_proj_path((spruce_proj)l), z, n);
        }
        for (e = 0; e < c->num_experts; e++)
            for (k = 0; k < 3; k++) {
                const float *w = b->expert[3 * e + k];
                char what[128];
                snprintf(what, sizeof what, "layer %d expert %d matrix %d", layer, e, k);
                if (e == 0)
                    cr_assert_arr_eq(w, o->expert[3 * e + k], ne * sizeof(float),
                                     "%s: the file keeps it dense", what);
                else
                    expect_sparse(w, ne, e == 1 && k == 2, what);
            }
        spruce_model_put_block(m, b);
        spruce_model_put_block(src, o);
    }
    spruce_model_free(m);
    spruce_model_free(src);
    /* OWL's outlier ratios are not defined over routed experts: refused */
    snprintf(cmd, sizeof cmd, "'%s' prune '%s' -o '%s/owl' --calib '%s/calib.u16' --seqlen 32 "
             "--nsamples 16 --sparsity 0.5 --sparsity-profile owl >'%s/owl.out' 2>&1", bin, dir,
             d, d, d);
    cr_assert_eq(sh(cmd), 1, "%s", cmd);
    snprintf(cmd, sizeof cmd, "grep -q 'OWL profile is not supported for a mixture of experts' "
             "'%s/owl.out'", d);
    cr_assert_eq(sh(cmd), 0, "no clear refusal in %s/owl.out", d);
    snprintf(cmd, sizeof cmd, "%s/owl", d);
    cr_assert(!exists(cmd), "the refused run left %s", cmd);
    rm_tree(d);
    free(d);
}

/* ---- quantized and compressed experts ------------------------------------------------ */

/* SparseGPT 2:4 with 4-bit weights on a MoE fixture, saved dense and as
 * compressed-tensors: both give the same logits (the compressed values are the
 * grid's levels times the scales the dense file holds), every expert has its
 * compressed parts under its own name, and the routers stay float32, never
 * quantized or pruned, and are listed in the config's ignore. */
static void check_quantized_experts(const char *name)
{
    NEED_FAMILY(dir, name);
    NEED_SPRUCE_BIN(bin);
    char *dd = tmp_dir(), *cd = tmp_dir(), dense[1200], comp[1200], key[512], cpath[1300];
    spruce_model *src = NULL, *md = NULL, *mc = NULL;
    const spruce_config *c;
    uint32_t *ids;
    float *gold, *ld, *lc;
    json_t *h, *cfg, *ign, *t;
    json_error_t err;
    const spruce_family *f;
    int layer, e, V;
    size_t i;
    cr_assert_eq(spruce_model_open(dir, &src), 0, "%s", spruce_errdetail());
    c = spruce_model_config(src);
    f = spruce_family_find(c->model_type);
    V = c->vocab_size;
    prune_fixture(bin, dir, dd, V, "--pattern 2:4 --wbits 4 --sym", dense, sizeof dense);
    prune_fixture(bin, dir, cd, V, "--pattern 2:4 --wbits 4 --sym --save-format compressed",
                  comp, sizeof comp);
    cr_assert_eq(spruce_model_open(dense, &md), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_open(comp, &mc), 0, "%s", spruce_errdetail());
    load_golden(dir, V, &ids, &gold);
    ld = malloc(sizeof *ld * SEQ * V);
    lc = malloc(sizeof *lc * SEQ * V);
    cr_assert(ld && lc);
    cr_assert_eq(spruce_model_forward(md, ids, SEQ, ld), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_model_forward(mc, ids, SEQ, lc), 0, "%s", spruce_errdetail());
    cr_assert(max_abs_diff(ld, lc, (size_t)SEQ * V) <= 1e-5, "%s: compressed logits %g from "
              "the dense-saved ones", name, max_abs_diff(ld, lc, (size_t)SEQ * V));
    cr_assert(max_abs_diff(ld, gold, (size_t)SEQ * V) > 1e-3, "%s: pruning and 4-bit "
              "rounding left the logits unchanged", name);
    h = st_read_header(comp);
    snprintf(cpath, sizeof cpath, "%s/config.json", comp);
    cr_assert(cfg = json_load_file(cpath, 0, &err), "%s", err.text);
    ign = json_object_get(json_object_get(cfg, "quantization_config"), "ignore");
    cr_assert(json_is_array(ign), "%s: no quantization_config.ignore", cpath);
    for (layer = 0; layer < c->num_hidden_layers; layer++) {
        int found = 0;
        for (e = 0; e < c->num_experts; e++)
            for (i = 0; i < 3; i++) {
                snprintf(key, sizeof key, "model.layers.%d.%s.%d.%s.compressed", layer,
                         f->experts, e, f->expert_proj[i]);
                cr_assert_not_null(json_object_get(h, key), "%s: no %s", name, key);
                snprintf(key, sizeof key, "model.layers.%d.%s.%d.%s.weight_scale", layer,
                         f->experts, e, f->expert_proj[i]);
                cr_assert_not_null(json_object_get(h, key), "%s: no %s", name, key);
            }
        snprintf(key, sizeof key, "model.layers.%d.%s.weight", layer, f->router);
        t = json_object_get(h, key);
        cr_assert_not_null(t, "%s: the router %s is not stored as a weight", name, key);
        cr_assert_str_eq(json_string_value(json_object_get(t, "dtype")), "F32", "%s", key);
        snprintf(key, sizeof key, "model.layers.%d.%s", layer, f->router);
        for (i = 0; i < json_array_size(ign); i++)
            found |= !strcmp(json_string_value(json_array_get(ign, i)), key);
        cr_assert(found, "%s: the router %s is not in quantization_config.ignore", name, key);
    }
    json_decref(cfg);
    json_decref(h);
    free(ld);
    free(lc);
    free(gold);
    free(ids);
    spruce_model_free(md);
    spruce_model_free(mc);
    spruce_model_free(src);
    rm_tree(dd);
    rm_tree(cd);
    free(dd);
    free(cd);
}

Test(moe, mixtral_quantized_experts_dense_and_compressed) { check_quantized_experts("mixtral"); }
Test(moe, qwen3_moe_quantized_experts_dense_and_compressed)
{
    check_quantized_experts("qwen3-moe");
}

/* ---- the memory estimate ------------------------------------------------------- */

/* A synth mixtral with few, wide experts (hidden 512, 2 experts of 2048, top
 * 1, 2 blocks, vocab 256): every block is a mixture of experts, so the
 * estimate has no dense MLP terms; `spruce prune` prints it beside the largest
 * anonymous resident memory it sampled (RssAnon after each layer and block),
 * and the two agree within 15%.  With the dense MLP's 3 h I weights and I^2
 * Hessian counted as well, the estimate was 0.124 GiB against 0.102 measured
 * (+22%) and this test failed; without them it is 0.096 (-6%). */
Test(memory, mixtral_estimate_against_measured_peak)
{
    NEED_SPRUCE_BIN(bin);
#if defined(__SANITIZE_ADDRESS__)
    cr_skip_test("AddressSanitizer's shadow memory and quarantine are not the program's: "
                 "the estimate is checked in the plain build");
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    cr_skip_test("AddressSanitizer's shadow memory and quarantine are not the program's: "
                 "the estimate is checked in the plain build");
#endif
#endif
    spruce_synth_config sc;
    spruce_synth_family sf;
    char *d = tmp_dir(), dir[1200], out[1200], path[1300];
    double est = -1, anon = -1;
    spruce_synth_defaults(&sc);
    sc.hidden = 512;
    sc.intermediate = 2048;
    sc.layers = 2;
    sc.heads = 8;
    sc.kv_heads = 2;
    sc.vocab = 256;
    sc.max_position = 64;
    spruce_synth_family_defaults(&sf);
    sf.model_type = "mixtral";
    sf.experts = 2;
    sf.experts_per_tok = 1;
    snprintf(dir, sizeof dir, "%s/m", d);
    cr_assert_eq(spruce_synth_write_family(dir, &sc, &sf, 0), 0, "%s", spruce_errdetail());
    prune_fixture(bin, dir, d, sc.vocab, "--sparsity 0.5", out, sizeof out);
    snprintf(path, sizeof path, "%s/out", d);
    prune_memory_lines(path, &est, &anon);
    if (anon < 0)
        cr_skip_test("no RssAnon on this platform (%s)", path);
    cr_assert(est > 0, "no estimate in %s", path);
    cr_assert(fabs(est - anon) <= 0.15 * anon, "estimate %.3f GiB, measured %.3f GiB (%s)", est,
              anon, path);
    rm_tree(d);
    free(d);
}
