/* config.c: config.json of a Hugging Face LLaMA-family checkpoint (jansson);
 * rope_scaling is read by rope.c. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "rope.h"
#include "spruce_family.h"
#include "model_internal.h"
#include "spruce_files.h"

/* An integer key in [lo, hi]; required keys must be present, optional ones
 * keep *out. */
static int get_int(const json_t *root, const char *origin, const char *key, int required,
                   int lo, int hi, int *out)
{
    const json_t *v = json_object_get(root, key);
    json_int_t i;
    if (!v || json_is_null(v)) {
        if (required)
            return spruce__seterr(SPRUCE_EFORMAT, "file %s: key '%s' is missing", origin, key);
        return 0;
    }
    if (!json_is_integer(v))
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: key '%s': expected an integer", origin,
                              key);
    i = json_integer_value(v);
    if (i < lo || i > hi)
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: key '%s': expected an integer in "
                              "%d..%d, found %lld", origin, key, lo, hi, (long long)i);
    *out = (int)i;
    return 0;
}

/* a x b (keys ka, kb) must not exceed lim. */
static int check_product(const char *origin, const char *ka, int a, const char *kb, int b,
                         int64_t lim)
{
    int64_t p = (int64_t)a * b;
    if (p > lim)
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: %s (%d) x %s (%d) = %lld exceeds %lld",
                              origin, ka, a, kb, b, (long long)p, (long long)lim);
    return 0;
}

static int get_double(const json_t *root, const char *origin, const char *key, int required,
                      double *out)
{
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required)
            return spruce__seterr(SPRUCE_EFORMAT, "file %s: key '%s' is missing", origin, key);
        return 0;
    }
    if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) <= 0)
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: key '%s': expected a positive number",
                              origin, key);
    *out = json_number_value(v);
    return 0;
}

static int get_bool(const json_t *root, const char *origin, const char *key, int *out)
{
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: key '%s': expected true or false", origin,
                              key);
    *out = json_is_true(v);
    return 0;
}

/* layer_types (qwen3 and newer configs): every layer full attention, the only
 * kind implemented. */
static int check_layer_types(const json_t *root, const char *origin)
{
    const json_t *v = json_object_get(root, "layer_types"), *e;
    size_t i;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: key 'layer_types': expected an array",
                              origin);
    json_array_foreach(v, i, e)
        if (!json_is_string(e) || strcmp(json_string_value(e), "full_attention"))
            return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: layer_types[%zu] is not "
                                  "\"full_attention\" (supported: full causal attention on "
                                  "every layer)", origin, i);
    return 0;
}

/* A soft-cap of Gemma 2: absent gives the family's default, null none. */
static int get_softcap(const json_t *root, const char *origin, const char *key, double dflt,
                       double *out)
{
    const json_t *v = json_object_get(root, key);
    *out = v ? 0 : dflt;
    return v ? get_double(root, origin, key, 0, out) : 0;
}

static void set_full_layer(spruce_config *c, int layer)
{
    c->full_layer[layer / 8] |= (unsigned char)(1u << (layer % 8));
}

/* layer_types (gemma2, gemma3, qwen2, qwen3: one "sliding_attention" or
 * "full_attention" per layer, in any order): the full ones are marked in
 * c->full_layer; *first_sliding gets the first sliding layer, or -1. */
static int read_layer_types(const json_t *v, const char *origin, spruce_config *c,
                            int *first_sliding)
{
    const json_t *e;
    size_t i;
    if (!json_is_array(v) || json_array_size(v) != (size_t)c->num_hidden_layers)
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: key 'layer_types': expected an array "
                              "of num_hidden_layers (%d) strings", origin, c->num_hidden_layers);
    *first_sliding = -1;
    memset(c->full_layer, 0, sizeof c->full_layer);
    json_array_foreach(v, i, e) {
        const char *s = json_is_string(e) ? json_string_value(e) : "";
        if (!strcmp(s, "full_attention"))
            set_full_layer(c, (int)i);
        else if (!strcmp(s, "sliding_attention")) {
            if (*first_sliding < 0)
                *first_sliding = (int)i;
        } else
            return spruce__seterr(SPRUCE_EFORMAT, "file %s: layer_types[%zu]: expected "
                                  "\"sliding_attention\" or \"full_attention\"", origin, i);
    }
    return 0;
}

/* The keys of configuration_gemma2.py and configuration_gemma3.py
 * (Gemma3TextConfig) that change the maths, with their defaults:
 *   hidden_activation       gelu_pytorch_tanh (the MLP reads it, not hidden_act)
 *   query_pre_attn_scalar   256: scores scaled by its ^-0.5
 *   attn_logit_softcapping  gemma2 50 (null: none); gemma3's forward never applies it
 *   final_logit_softcapping gemma2 30, gemma3 none (null: none)
 *   sliding_window          4096, on the layers of layer_types (any order), else of
 *                           the pattern (gemma2: 2, Gemma2DecoderLayer is_sliding = not
 *                           layer_idx % 2; gemma3: sliding_window_pattern, 6): layer i
 *                           slides when (i + 1) % pattern != 0
 *   rope_local_base_freq    gemma3 10000: the RoPE base of sliding layers, no scaling
 *   tie_word_embeddings     true
 * Embeddings are multiplied by sqrt(hidden_size) (in the embedding's dtype,
 * weights.c) and every RMSNorm weight is applied as (1 + w). */
static int gemma_keys(const json_t *root, const char *origin, const spruce_family *f,
                      spruce_config *c)
{
    const json_t *v = json_object_get(root, "hidden_activation");
    const char *act = "gelu_pytorch_tanh";
    double qpas = 256;
    int rc, on = 0, pattern = 2, first, i;
    if (v && !json_is_null(v)) {
        if (!json_is_string(v))
            return spruce__seterr(SPRUCE_EFORMAT, "file %s: key 'hidden_activation': expected "
                                  "a string", origin);
        act = json_string_value(v);
    }
    if (strcmp(act, "gelu_pytorch_tanh") && strcmp(act, "gelu_new"))
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: hidden_activation '%s' is not "
                              "supported (supported: gelu_pytorch_tanh, gelu_new)", origin, act);
    c->act = SPRUCE_ACT_GELU_TANH;
    c->norm_plus_one = 1;
    c->embed_scale = (float)sqrt((double)c->hidden_size);
    if ((rc = get_double(root, origin, "query_pre_attn_scalar", 0, &qpas)))
        return rc;
    c->attn_scale = 1.0 / sqrt(qpas);
    if (f->gemma == 2 &&
        ((rc = get_softcap(root, origin, "attn_logit_softcapping", 50.0, &c->attn_softcap)) ||
         (rc = get_softcap(root, origin, "final_logit_softcapping", 30.0, &c->final_softcap))))
        return rc;
    if (f->gemma == 3 &&
        (rc = get_softcap(root, origin, "final_logit_softcapping", 0, &c->final_softcap)))
        return rc;
    v = json_object_get(root, "sliding_window");
    if (v && json_is_null(v))
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: sliding_window null is not "
                              "supported (supported: an integer >= 1)", origin);
    c->sliding_window = 4096;
    if ((rc = get_int(root, origin, "sliding_window", 0, 1, INT_MAX, &c->sliding_window)))
        return rc;
    v = json_object_get(root, "rope_parameters");   /* the per-layer-type layout */
    if (v && !json_is_null(v))
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: key 'rope_parameters' is not "
                              "supported (supported: rope_theta, rope_scaling and "
                              "rope_local_base_freq at top level)", origin);
    if ((rc = get_bool(root, origin, "use_bidirectional_attention", &on)))
        return rc;
    if (on)
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: use_bidirectional_attention true "
                              "is not supported (supported: causal attention)", origin);
    if (f->gemma == 3) {
        pattern = 6;
        c->rope_local_theta = 10000.0;
        if ((rc = get_int(root, origin, "sliding_window_pattern", 0, 1, SPRUCE_MAX_LAYERS,
                          &pattern)) ||
            (rc = get_double(root, origin, "rope_local_base_freq", 0, &c->rope_local_theta)))
            return rc;
    }
    /* layer_types wins over the pattern. */
    v = json_object_get(root, "layer_types");
    if (v && !json_is_null(v))
        return read_layer_types(v, origin, c, &first);
    for (i = 0; i < c->num_hidden_layers; i++)
        if (!((i + 1) % pattern))
            set_full_layer(c, i);
    return 0;
}

/* The keys of configuration_opt.py (OPTConfig) that change the maths, with
 * their defaults (ffn_dim, the MLP's width, is read with the sizes):
 *   activation_function            relu (the only one implemented)
 *   do_layer_norm_before           true; false: the post-norm block, no final norm
 *   _remove_final_layer_norm       false; true: no final norm
 *   enable_bias                    true: biases on every linear layer
 *   layer_norm_elementwise_affine  true; false: LayerNorms without weight and bias
 *                                  (and without their tensors)
 *   word_embed_proj_dim            hidden_size; else project_in and project_out
 *   tie_word_embeddings            true
 * Every norm is nn.LayerNorm (eps 1e-5, weight and bias); head_dim is
 * hidden_size / num_attention_heads with one key/value head per head; no
 * RoPE (rope_theta and rope_scaling are not read): the positional table's
 * row position + 2 is added to the embedding. */
static int opt_keys(const json_t *root, const char *origin, spruce_config *c)
{
    const json_t *v = json_object_get(root, "activation_function");
    int pre = 1, remove = 0, bias = 1, affine = 1, rc;
    if (v && !json_is_null(v)) {
        if (!json_is_string(v))
            return spruce__seterr(SPRUCE_EFORMAT, "file %s: key 'activation_function': "
                                  "expected a string", origin);
        if (strcmp(json_string_value(v), "relu"))
            return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: activation_function '%s' is "
                                  "not supported (supported: relu)", origin,
                                  json_string_value(v));
    }
    if ((rc = get_bool(root, origin, "do_layer_norm_before", &pre)) ||
        (rc = get_bool(root, origin, "_remove_final_layer_norm", &remove)) ||
        (rc = get_bool(root, origin, "enable_bias", &bias)) ||
        (rc = get_bool(root, origin, "layer_norm_elementwise_affine", &affine)))
        return rc;
    c->act = SPRUCE_ACT_RELU;
    c->layer_norm = 1;
    c->learned_positions = 1;
    c->rms_norm_eps = 1e-5;   /* nn.LayerNorm's default; OPTConfig has no key for it */
    c->post_norm = !pre;
    c->no_final_norm = !pre || remove;
    c->no_norm_affine = !affine;
    c->qkv_bias = c->o_bias = c->mlp_bias = bias;
    c->word_embed_proj_dim = c->hidden_size;
    if ((rc = get_int(root, origin, "word_embed_proj_dim", 0, 1, SPRUCE_MAX_HIDDEN,
                      &c->word_embed_proj_dim)) ||
        (rc = check_product(origin, "vocab_size", c->vocab_size, "word_embed_proj_dim",
                            c->word_embed_proj_dim, SPRUCE_MAX_TENSOR)) ||
        (rc = check_product(origin, "word_embed_proj_dim", c->word_embed_proj_dim,
                            "hidden_size", c->hidden_size, SPRUCE_MAX_TENSOR)))
        return rc;
    return 0;
}

/* Qwen2's and Qwen3's window (configuration_qwen2.py, configuration_qwen3.py):
 *   use_sliding_window  false: no layer slides (sliding_window is then None)
 *   sliding_window      4096 (null: none, every layer full)
 *   max_window_layers   28: layers 0 .. max_window_layers - 1 attend fully, the
 *                       later ones slide
 *   layer_types         when given, says which layers slide instead, in any order;
 *                       sliding layers without a window are refused
 * on: use_sliding_window. */
static int qwen_window(const json_t *root, const char *origin, int on, spruce_config *c)
{
    const json_t *v = json_object_get(root, "sliding_window");
    int window = 4096, from = 28, first = -1, rc, i;
    if (!on || (v && json_is_null(v)))
        window = 0;
    else if ((rc = get_int(root, origin, "sliding_window", 0, 1, INT_MAX, &window)))
        return rc;
    if ((rc = get_int(root, origin, "max_window_layers", 0, 0, INT_MAX, &from)))
        return rc;
    v = json_object_get(root, "layer_types");
    if (v && !json_is_null(v)) {
        if ((rc = read_layer_types(v, origin, c, &first)))
            return rc;
        if (first >= 0 && !window)
            return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: layer_types[%d] is "
                                  "\"sliding_attention\" but there is no window "
                                  "(use_sliding_window false or sliding_window null; "
                                  "supported: a window of use_sliding_window true and "
                                  "sliding_window)", origin, first);
        c->sliding_window = first >= 0 ? window : 0;
        return 0;
    }
    c->sliding_window = from < c->num_hidden_layers ? window : 0;
    for (i = 0; i < from && i < c->num_hidden_layers; i++)
        set_full_layer(c, i);
    return 0;
}

int spruce_config_layer_window(const spruce_config *c, int layer)
{
    if (!c || c->sliding_window <= 0 || layer < 0 || layer >= SPRUCE_MAX_LAYERS_BITS ||
        (c->full_layer[layer / 8] >> (layer % 8) & 1))
        return 0;
    return c->sliding_window;
}

int spruce_config_layer_moe(const spruce_config *c, int layer)
{
    if (!c || c->num_experts <= 0 || layer < 0 || layer >= SPRUCE_MAX_LAYERS_BITS)
        return 0;
    if (c->decoder_sparse_step > 1 && (layer + 1) % c->decoder_sparse_step)
        return 0;
    return !(c->mlp_only[layer / 8] >> (layer % 8) & 1);
}

/* Keys of other mixture-of-experts designs that change the maths: refused
 * unless absent or at the value that means "not used". */
static int refuse_moe_key(const json_t *root, const char *origin, const char *key)
{
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v) || json_is_false(v) ||
        (json_is_number(v) && json_number_value(v) == 0))
        return 0;
    return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: key '%s' is set (shared experts or "
                          "another routing than Mixtral's and Qwen3-MoE's are not supported: "
                          "softmax over all experts, top-k)", origin, key);
}

/* configuration_mixtral.py and configuration_qwen3_moe.py, with their
 * defaults:
 *   num_local_experts (mixtral, 8) / num_experts (qwen3_moe, 128)
 *   num_experts_per_tok     mixtral 2, qwen3_moe 8
 *   norm_topk_prob          qwen3_moe false; mixtral always renormalises
 *   moe_intermediate_size   qwen3_moe 768; mixtral's experts are intermediate_size wide
 *   decoder_sparse_step     qwen3_moe 1
 *   mlp_only_layers         qwen3_moe [] (layers with qwen3's dense MLP)
 * router_jitter_noise and the auxiliary loss act in training only. */
static int moe_keys(const json_t *root, const char *origin, const spruce_family *f,
                    spruce_config *c)
{
    static const char *refused[] = {"shared_expert_intermediate_size", "n_shared_experts",
                                    "num_shared_experts", "first_k_dense_replace",
                                    "routed_scaling_factor", "n_group", "topk_group"};
    const json_t *v, *e;
    size_t i;
    int rc;
    for (i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if ((rc = refuse_moe_key(root, origin, refused[i])))
            return rc;
    v = json_object_get(root, "scoring_func");
    if (v && !json_is_null(v) && (!json_is_string(v) || strcmp(json_string_value(v), "softmax")))
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: key 'scoring_func' is not "
                              "\"softmax\" (supported: softmax over all experts)", origin);
    c->num_experts = f->moe == 1 ? 8 : 128;
    c->num_experts_per_tok = f->moe == 1 ? 2 : 8;
    c->norm_topk_prob = f->moe == 1;
    c->moe_intermediate_size = f->moe == 1 ? c->intermediate_size : 768;
    c->decoder_sparse_step = 1;
    if ((rc = get_int(root, origin, f->experts_key, 0, 1, SPRUCE_MAX_EXPERTS, &c->num_experts)) ||
        (rc = get_int(root, origin, "num_experts_per_tok", 0, 1, SPRUCE_MAX_EXPERTS,
                      &c->num_experts_per_tok)))
        return rc;
    if (c->num_experts_per_tok > c->num_experts)
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: num_experts_per_tok %d exceeds %s %d",
                              origin, c->num_experts_per_tok, f->experts_key, c->num_experts);
    if (f->moe == 1)
        return 0;
    if ((rc = get_bool(root, origin, "norm_topk_prob", &c->norm_topk_prob)) ||
        (rc = get_int(root, origin, "moe_intermediate_size", 0, 1, SPRUCE_MAX_INTERMEDIATE,
                      &c->moe_intermediate_size)) ||
        (rc = check_product(origin, "moe_intermediate_size", c->moe_intermediate_size,
                            "hidden_size", c->hidden_size, SPRUCE_MAX_TENSOR)) ||
        (rc = get_int(root, origin, "decoder_sparse_step", 0, 1, SPRUCE_MAX_LAYERS,
                      &c->decoder_sparse_step)))
        return rc;
    v = json_object_get(root, "mlp_only_layers");
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: key 'mlp_only_layers': expected an "
                              "array of layer indices", origin);
    json_array_foreach(v, i, e) {
        json_int_t l = json_is_integer(e) ? json_integer_value(e) : -1;
        if (l < 0 || l >= c->num_hidden_layers)
            return spruce__seterr(SPRUCE_EFORMAT, "file %s: mlp_only_layers[%zu]: expected a "
                                  "layer index in 0..%d", origin, i, c->num_hidden_layers - 1);
        c->mlp_only[l / 8] |= (unsigned char)(1u << (l % 8));
    }
    return 0;
}

static int parse(const json_t *root, const char *origin, spruce_config *c)
{
    const json_t *v;
    const char *type;
    const spruce_family *f;
    int rc, on = 0;

    memset(c, 0, sizeof *c);
    if (!json_is_object(root))
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: expected a JSON object", origin);

    v = json_object_get(root, "model_type");
    if (!v)
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: key 'model_type' is missing "
                              "(supported: %s)", origin, spruce_family_supported());
    if (!json_is_string(v))
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: key 'model_type': expected a string",
                              origin);
    type = json_string_value(v);
    if (!(f = spruce_family_find(type)))
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: model_type '%s' is not supported "
                              "(supported: %s)", origin, type, spruce_family_supported());
    snprintf(c->model_type, sizeof c->model_type, "%s", type);
    c->family = f;

    if ((rc = get_int(root, origin, "hidden_size", 1, 1, SPRUCE_MAX_HIDDEN,
                      &c->hidden_size)) ||
        (rc = get_int(root, origin, f->opt ? "ffn_dim" : "intermediate_size", 1, 1,
                      SPRUCE_MAX_INTERMEDIATE, &c->intermediate_size)) ||
        (rc = get_int(root, origin, "num_hidden_layers", 1, 1, SPRUCE_MAX_LAYERS,
                      &c->num_hidden_layers)) ||
        (rc = get_int(root, origin, "num_attention_heads", 1, 1, SPRUCE_MAX_HEADS,
                      &c->num_attention_heads)) ||
        (rc = get_int(root, origin, "vocab_size", 1, 1, SPRUCE_MAX_VOCAB, &c->vocab_size)) ||
        (rc = get_int(root, origin, "max_position_embeddings", 1, 1, SPRUCE_MAX_POSITIONS,
                      &c->max_position_embeddings)))
        return rc;
    c->num_key_value_heads = c->num_attention_heads;   /* OPT: always */
    if (!f->opt && (rc = get_int(root, origin, "num_key_value_heads", 0, 1, SPRUCE_MAX_HEADS,
                                 &c->num_key_value_heads)))
        return rc;
    if (c->num_attention_heads % c->num_key_value_heads)
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: num_attention_heads %d is not a multiple "
                              "of num_key_value_heads %d", origin, c->num_attention_heads,
                              c->num_key_value_heads);
    c->head_dim = 0;   /* OPTAttention: always hidden / heads */
    if (!f->opt &&
        (rc = get_int(root, origin, "head_dim", 0, 1, SPRUCE_MAX_HEAD_DIM, &c->head_dim)))
        return rc;
    if (!c->head_dim)
        c->head_dim = f->default_head_dim;   /* 0: hidden / heads */
    if (!c->head_dim) {
        if (c->hidden_size % c->num_attention_heads)
            return spruce__seterr(SPRUCE_EFORMAT, "file %s: hidden_size %d is not a multiple of "
                                  "num_attention_heads %d", origin, c->hidden_size,
                                  c->num_attention_heads);
        c->head_dim = c->hidden_size / c->num_attention_heads;
        if (c->head_dim > SPRUCE_MAX_HEAD_DIM)
            return spruce__seterr(SPRUCE_EFORMAT, "file %s: head_dim from hidden_size (%d) / "
                                  "num_attention_heads (%d) is %d, above the bound %d", origin,
                                  c->hidden_size, c->num_attention_heads, c->head_dim,
                                  SPRUCE_MAX_HEAD_DIM);
    }
    /* The attention's widths are tensor dimensions like hidden_size and have
     * its bound; every product of two keys is checked before it is used. */
    if ((rc = check_product(origin, "num_attention_heads", c->num_attention_heads, "head_dim",
                            c->head_dim, SPRUCE_MAX_HIDDEN)) ||
        (rc = check_product(origin, "num_key_value_heads", c->num_key_value_heads, "head_dim",
                            c->head_dim, SPRUCE_MAX_HIDDEN)) ||
        (rc = check_product(origin, "vocab_size", c->vocab_size, "hidden_size", c->hidden_size,
                            SPRUCE_MAX_TENSOR)) ||
        (rc = check_product(origin, "intermediate_size", c->intermediate_size, "hidden_size",
                            c->hidden_size, SPRUCE_MAX_TENSOR)))
        return rc;
    if (c->head_dim % 2 && !f->opt)
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: head_dim %d must be even for rotary "
                              "embeddings", origin, c->head_dim);

    c->rms_norm_eps = f->phi3 ? 1e-5 : 1e-6;   /* configuration_phi3.py: 1e-5 */
    c->rope_theta = f->gemma == 3 ? 1e6 : 10000.0;   /* configuration_gemma3.py */
    c->tie_word_embeddings = f->gemma != 0 || f->opt;   /* Gemma's, OPT's configs: true */
    if ((!f->opt && (rc = get_double(root, origin, "rms_norm_eps", 0, &c->rms_norm_eps))) ||
        (rc = get_double(root, origin, "rope_theta", 0, &c->rope_theta)) ||
        (rc = get_bool(root, origin, "tie_word_embeddings", &c->tie_word_embeddings)))
        return rc;

    /* gemma: gemma_keys, opt: opt_keys */
    v = f->gemma || f->opt ? NULL : json_object_get(root, "hidden_act");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v))
            return spruce__seterr(SPRUCE_EFORMAT, "file %s: key 'hidden_act': expected a string",
                                  origin);
        if (strcmp(json_string_value(v), "silu"))
            return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: hidden_act '%s' is not "
                                  "supported (supported: silu)", origin, json_string_value(v));
    }
    if (!f->opt && (rc = spruce__rope_parse(root, origin, c)))   /* rope.c */
        return rc;
    c->qk_norm = f->q_norm != NULL;
    /* layer_types: gemma_keys; qwen2, qwen3: qwen_window */
    if ((rc = f->gemma              ? gemma_keys(root, origin, f, c)
              : f->window_switch_key ? 0
                                     : check_layer_types(root, origin)))
        return rc;
    if (f->moe && (rc = moe_keys(root, origin, f, c)))
        return rc;

    /* What the family's keys switch on (spruce_family.h). */
    c->qkv_bias = f->qkv_bias;
    if (f->attention_bias_key) {
        if ((rc = get_bool(root, origin, f->attention_bias_key, &on)))
            return rc;
        c->qkv_bias = c->o_bias = on;
    }
    if (f->mlp_bias_key && (rc = get_bool(root, origin, f->mlp_bias_key, &c->mlp_bias)))
        return rc;
    if (f->opt && (rc = opt_keys(root, origin, c)))
        return rc;
    if (f->window_switch_key) {   /* qwen2, qwen3 */
        on = 0;
        if ((rc = get_bool(root, origin, f->window_switch_key, &on)))
            return rc;
        if (on && f->moe) /* the experts' sliding attention is not checked against a reference */
            return spruce__seterr(SPRUCE_EUNSUPPORTED, "file %s: key '%s' true: sliding-window "
                                  "attention is not implemented for %s (supported: qwen2, "
                                  "qwen3)", origin, f->window_switch_key, f->model_type);
        if ((rc = qwen_window(root, origin, on, c)))
            return rc;
    }
    /* The window (mistral, phi3: every layer, as their models' sliding-window
     * causal mask; no bit of full_layer set). */
    if (f->window_key &&
        (rc = get_int(root, origin, f->window_key, 0, 1, INT_MAX, &c->sliding_window)))
        return rc;
    return 0;
}

/* Duplicate keys are refused, as the safetensors header refuses them: which
 * of two values a reader takes is not defined. */
#define JSON_FLAGS JSON_REJECT_DUPLICATES

static int parse_root(json_t *root, const json_error_t *err, const char *origin,
                      spruce_config *cfg)
{
    int rc;
    if (!root)
        return spruce__seterr(SPRUCE_EFORMAT, "file %s: line %d column %d: %s", origin, err->line,
                              err->column, err->text);
    rc = parse(root, origin, cfg);
    json_decref(root);
    return rc;
}

int spruce__config_parse_buffer(const char *buf, size_t len, const char *origin,
                                spruce_config *cfg)
{
    json_error_t err;
    if (!buf || !cfg)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_config_parse: NULL argument");
    if (!origin)
        origin = "config.json";
    return parse_root(json_loadb(buf, len, JSON_FLAGS, &err), &err, origin, cfg);
}

int spruce_config_parse(const char *text, const char *origin, spruce_config *cfg)
{
    if (!text || !cfg)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_config_parse: NULL argument");
    return spruce__config_parse_buffer(text, strlen(text), origin, cfg);
}

int spruce_config_load(const char *path, spruce_config *cfg)
{
    char buf[4096];
    struct stat st;
    json_error_t err;
    int rc;
    if (!path || !cfg)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_config_load: NULL argument");
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        snprintf(buf, sizeof buf, "%s/config.json", path);
    else
        snprintf(buf, sizeof buf, "%s", path);
    if ((rc = spruce__check_regular(buf))) /* not found, a directory, a FIFO: before reading */
        return rc;
    return parse_root(json_load_file(buf, JSON_FLAGS, &err), &err, buf, cfg);
}
