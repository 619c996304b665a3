/* family.c: the table of model families (spruce_family.h).
 *
 * llama    modeling_llama.py: LlamaForCausalLM (attention_bias, mlp_bias)
 * mistral  modeling_mistral.py: MistralForCausalLM (sliding_window)
 * qwen2    modeling_qwen2.py: Qwen2ForCausalLM (q/k/v biases; use_sliding_window,
 *          sliding_window, max_window_layers: config.c, qwen_window)
 * qwen3    modeling_qwen3.py: Qwen3ForCausalLM (q_norm/k_norm over head_dim before
 *          RoPE; attention_bias; use_sliding_window; head_dim 128 when absent)
 * All four: embedding, per block input_layernorm -> self_attn (q/k/v/o) ->
 * post_attention_layernorm -> SiLU-gated mlp (gate/up/down), final norm, head.
 * gemma2   modeling_gemma2.py: Gemma2ForCausalLM, Gemma2DecoderLayer:
 *          input_layernorm -> self_attn -> post_attention_layernorm -> + residual,
 *          pre_feedforward_layernorm -> mlp -> post_feedforward_layernorm -> + residual;
 *          attention_bias; head_dim 256 when absent
 * gemma3   modeling_gemma3.py: Gemma3ForCausalLM (model_type gemma3_text): gemma2's
 *          block with q_norm/k_norm
 * phi3     modeling_phi3.py: Phi3ForCausalLM: LLaMA's block with q/k/v fused in
 *          self_attn.qkv_proj (rows q, then k, then v) and gate/up in
 *          mlp.gate_up_proj (rows gate, then up; Phi3MLP chunks gate first);
 *          no biases (Phi3Attention, Phi3MLP: bias=False)
 * opt      modeling_opt.py: OPTForCausalLM, OPTDecoderLayer: self_attn_layer_norm
 *          -> self_attn (q/k/v, out_proj) -> final_layer_norm -> fc1 -> relu -> fc2,
 *          LayerNorms with weight and bias, biases on every linear (enable_bias);
 *          the decoder's embed_positions, project_in/out and final_layer_norm
 * mixtral  modeling_mixtral.py: MixtralForCausalLM: Mistral's attention (no
 *          biases, sliding_window), the MLP a MixtralSparseMoeBlock:
 *          block_sparse_moe.gate (the router) and block_sparse_moe.experts.E.
 *          {w1, w3, w2} = gate, up, down of width intermediate_size
 * qwen3_moe modeling_qwen3_moe.py: Qwen3MoeForCausalLM: qwen3's attention, the
 *          MLP a Qwen3MoeSparseMoeBlock (mlp.gate, mlp.experts.E.{gate,up,
 *          down}_proj of width moe_intermediate_size) or, on the layers
 *          mlp_only_layers and decoder_sparse_step leave dense, qwen3's MLP */
#include <stdio.h>
#include <string.h>

#include "spruce_family.h"

/* The block of LlamaDecoderLayer: q/k/v read the normed input, o the
 * attention output, gate/up the normed residual, down silu(gate) * up. */
#define LLAMA_LINEARS                                                                   \
    {                                                                                   \
        {"self_attn.q_proj", SPRUCE_SITE_QKV, SPRUCE_DIM_Q, SPRUCE_DIM_HIDDEN,           \
         SPRUCE_BIAS_QKV, 0},                                                              \
        {"self_attn.k_proj", SPRUCE_SITE_QKV, SPRUCE_DIM_KV, SPRUCE_DIM_HIDDEN,          \
         SPRUCE_BIAS_QKV, 0},                                                              \
        {"self_attn.v_proj", SPRUCE_SITE_QKV, SPRUCE_DIM_KV, SPRUCE_DIM_HIDDEN,          \
         SPRUCE_BIAS_QKV, 0},                                                              \
        {"self_attn.o_proj", SPRUCE_SITE_O, SPRUCE_DIM_HIDDEN, SPRUCE_DIM_Q,             \
         SPRUCE_BIAS_O, 0},                                                                \
        {"mlp.gate_proj", SPRUCE_SITE_GATEUP, SPRUCE_DIM_INTER, SPRUCE_DIM_HIDDEN,       \
         SPRUCE_BIAS_MLP, 0},                                                              \
        {"mlp.up_proj", SPRUCE_SITE_GATEUP, SPRUCE_DIM_INTER, SPRUCE_DIM_HIDDEN,         \
         SPRUCE_BIAS_MLP, 0},                                                              \
        {"mlp.down_proj", SPRUCE_SITE_DOWN, SPRUCE_DIM_HIDDEN, SPRUCE_DIM_INTER,         \
         SPRUCE_BIAS_MLP, 0},                                                              \
    }

#define LLAMA_NAMES                                                                     \
    "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight", "model.layers", \
        "input_layernorm", "post_attention_layernorm", LLAMA_LINEARS

/* Gemma's block: the MLP's input is pre_feedforward_layernorm's output. */
#define GEMMA_NAMES                                                                     \
    "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight", "model.layers", \
        "input_layernorm", "pre_feedforward_layernorm", LLAMA_LINEARS

/* Phi3DecoderLayer: LLaMA's sites, q/k/v and gate/up stored fused. */
#define PHI3_LINEARS                                                                    \
    {                                                                                   \
        {"self_attn.qkv_proj", SPRUCE_SITE_QKV, SPRUCE_DIM_Q, SPRUCE_DIM_HIDDEN,         \
         SPRUCE_BIAS_QKV, 0},                                                           \
        {"self_attn.qkv_proj", SPRUCE_SITE_QKV, SPRUCE_DIM_KV, SPRUCE_DIM_HIDDEN,        \
         SPRUCE_BIAS_QKV, 1},                                                           \
        {"self_attn.qkv_proj", SPRUCE_SITE_QKV, SPRUCE_DIM_KV, SPRUCE_DIM_HIDDEN,        \
         SPRUCE_BIAS_QKV, 2},                                                           \
        {"self_attn.o_proj", SPRUCE_SITE_O, SPRUCE_DIM_HIDDEN, SPRUCE_DIM_Q,             \
         SPRUCE_BIAS_O, 0},                                                             \
        {"mlp.gate_up_proj", SPRUCE_SITE_GATEUP, SPRUCE_DIM_INTER, SPRUCE_DIM_HIDDEN,    \
         SPRUCE_BIAS_MLP, 0},                                                           \
        {"mlp.gate_up_proj", SPRUCE_SITE_GATEUP, SPRUCE_DIM_INTER, SPRUCE_DIM_HIDDEN,    \
         SPRUCE_BIAS_MLP, 1},                                                           \
        {"mlp.down_proj", SPRUCE_SITE_DOWN, SPRUCE_DIM_HIDDEN, SPRUCE_DIM_INTER,         \
         SPRUCE_BIAS_MLP, 0},                                                           \
    }

/* OPTDecoderLayer: q/k/v read the (normed) input, out_proj the attention
 * output, fc1 the (normed) residual, fc2 relu(fc1); no gate. */
#define OPT_LINEARS                                                                     \
    {                                                                                   \
        {"self_attn.q_proj", SPRUCE_SITE_QKV, SPRUCE_DIM_Q, SPRUCE_DIM_HIDDEN,           \
         SPRUCE_BIAS_QKV, 0},                                                           \
        {"self_attn.k_proj", SPRUCE_SITE_QKV, SPRUCE_DIM_KV, SPRUCE_DIM_HIDDEN,          \
         SPRUCE_BIAS_QKV, 0},                                                           \
        {"self_attn.v_proj", SPRUCE_SITE_QKV, SPRUCE_DIM_KV, SPRUCE_DIM_HIDDEN,          \
         SPRUCE_BIAS_QKV, 0},                                                           \
        {"self_attn.out_proj", SPRUCE_SITE_O, SPRUCE_DIM_HIDDEN, SPRUCE_DIM_Q,           \
         SPRUCE_BIAS_O, 0},                                                             \
        {NULL, SPRUCE_SITE_GATEUP, SPRUCE_DIM_INTER, SPRUCE_DIM_HIDDEN, SPRUCE_BIAS_MLP, 0}, \
        {"fc1", SPRUCE_SITE_GATEUP, SPRUCE_DIM_INTER, SPRUCE_DIM_HIDDEN, SPRUCE_BIAS_MLP, 0}, \
        {"fc2", SPRUCE_SITE_DOWN, SPRUCE_DIM_HIDDEN, SPRUCE_DIM_INTER, SPRUCE_BIAS_MLP, 0}, \
    }

/* The OPT fields of the other families' rows (opt and its tensors). */
#define NOT_OPT 0, NULL, NULL, NULL, NULL

/* The fields of a family without experts. */
#define NO_MOE 0, NULL, NULL, {NULL, NULL, NULL}, NULL

static const spruce_family families[] = {
    {"llama", "LlamaForCausalLM", LLAMA_NAMES, 0, "attention_bias", "mlp_bias", NULL, NULL,
     NULL, NULL, 0, NULL, NULL, 0, 0, NOT_OPT, NO_MOE},
    /* transformers' Mistral has no bias keys; they are read as for llama, absent = false */
    {"mistral", "MistralForCausalLM", LLAMA_NAMES, 0, "attention_bias", "mlp_bias",
     "sliding_window", NULL, NULL, NULL, 0, NULL, NULL, 0, 0, NOT_OPT, NO_MOE},
    {"qwen2", "Qwen2ForCausalLM", LLAMA_NAMES, 1, NULL, NULL, NULL, "use_sliding_window", NULL,
     NULL, 0, NULL, NULL, 0, 0, NOT_OPT, NO_MOE},
    /* configuration_qwen3.py: head_dim 128 when absent */
    {"qwen3", "Qwen3ForCausalLM", LLAMA_NAMES, 0, "attention_bias", NULL, NULL,
     "use_sliding_window", "self_attn.q_norm", "self_attn.k_norm", 128, NULL, NULL, 0, 0, NOT_OPT, NO_MOE},
    /* configuration_gemma2.py, configuration_gemma3.py: head_dim 256 when absent;
     * the window and the layers using it are read by config.c (gemma_keys) */
    {"gemma2", "Gemma2ForCausalLM", GEMMA_NAMES, 0, "attention_bias", NULL, NULL, NULL, NULL,
     NULL, 256, "post_attention_layernorm", "post_feedforward_layernorm", 2, 0, NOT_OPT, NO_MOE},
    {"gemma3_text", "Gemma3ForCausalLM", GEMMA_NAMES, 0, "attention_bias", NULL, NULL, NULL,
     "self_attn.q_norm", "self_attn.k_norm", 256, "post_attention_layernorm",
     "post_feedforward_layernorm", 3, 0, NOT_OPT, NO_MOE},
    /* configuration_phi3.py: no bias keys (the layers have none), the window
     * on every layer (config.c reads sliding_window for phi3) */
    {"phi3", "Phi3ForCausalLM", "model.embed_tokens.weight", "model.norm.weight",
     "lm_head.weight", "model.layers", "input_layernorm", "post_attention_layernorm",
     PHI3_LINEARS, 0, NULL, NULL, "sliding_window", NULL, NULL, NULL, 0, NULL, NULL, 0, 1, NOT_OPT, NO_MOE},
    /* configuration_opt.py: enable_bias, do_layer_norm_before, word_embed_proj_dim,
     * ffn_dim, ... are read by config.c (opt_keys) */
    {.model_type = "opt", .architecture = "OPTForCausalLM",
     .embed = "model.decoder.embed_tokens.weight",
     .final_norm = "model.decoder.final_layer_norm.weight", .head = "lm_head.weight",
     .layers = "model.decoder.layers", .attn_norm = "self_attn_layer_norm",
     .mlp_norm = "final_layer_norm", .linear = OPT_LINEARS, .opt = 1,
     .positions = "model.decoder.embed_positions.weight",
     .project_in = "model.decoder.project_in.weight",
     .project_out = "model.decoder.project_out.weight",
     .final_norm_bias = "model.decoder.final_layer_norm.bias"},
    /* OPT as facebook/opt-* store it: saved from OPTModel, the same names
     * without "model." (transformers and vLLM load both); chosen by
     * spruce_model_open when the checkpoint has these names */
    {.model_type = "opt", .architecture = "OPTForCausalLM",
     .embed = "decoder.embed_tokens.weight", .final_norm = "decoder.final_layer_norm.weight",
     .head = "lm_head.weight", .layers = "decoder.layers", .attn_norm = "self_attn_layer_norm",
     .mlp_norm = "final_layer_norm", .linear = OPT_LINEARS, .opt = 1,
     .positions = "decoder.embed_positions.weight",
     .project_in = "decoder.project_in.weight", .project_out = "decoder.project_out.weight",
     .final_norm_bias = "decoder.final_layer_norm.bias"},
    /* configuration_mixtral.py: no bias keys (MixtralAttention: bias=False),
     * sliding_window on every layer as mistral */
    {"mixtral", "MixtralForCausalLM", LLAMA_NAMES, 0, NULL, NULL, "sliding_window", NULL, NULL,
     NULL, 0, NULL, NULL, 0, 0, NOT_OPT, 1, "block_sparse_moe.gate", "block_sparse_moe.experts",
     {"w1", "w3", "w2"}, "num_local_experts"},
    /* configuration_qwen3_moe.py: attention_bias, use_sliding_window as qwen3;
     * Qwen3MoeAttention: head_dim from the config, else hidden / heads */
    {"qwen3_moe", "Qwen3MoeForCausalLM", LLAMA_NAMES, 0, "attention_bias", NULL, NULL,
     "use_sliding_window", "self_attn.q_norm", "self_attn.k_norm", 0, NULL, NULL, 0, 0, NOT_OPT, 2,
     "mlp.gate", "mlp.experts", {"gate_proj", "up_proj", "down_proj"}, "num_experts"},
};

#define NFAMILIES ((int)(sizeof families / sizeof families[0]))

const spruce_family *spruce_family_find(const char *model_type)
{
    int i;
    if (!model_type)
        return NULL;
    for (i = 0; i < NFAMILIES; i++)
        if (!strcmp(families[i].model_type, model_type))
            return &families[i];
    return NULL;
}

const spruce_family *spruce_family_next(const spruce_family *f)
{
    int i;
    for (i = f ? (int)(f - families) + 1 : NFAMILIES; i < NFAMILIES; i++)
        if (!strcmp(families[i].model_type, f->model_type))
            return &families[i];
    return NULL;
}

const spruce_family *spruce_family_at(int i)
{
    return i >= 0 && i < NFAMILIES ? &families[i] : NULL;
}

/* Kept in step with the table by the tests (test_model.c: family). */
const char *spruce_family_supported(void)
{
    return "llama, mistral, qwen2, qwen3, gemma2, gemma3_text, phi3, opt, mixtral, qwen3_moe";
}

size_t spruce_dim_of(const spruce_config *c, spruce_dim d)
{
    switch (d) {
    case SPRUCE_DIM_HIDDEN: return (size_t)c->hidden_size;
    case SPRUCE_DIM_Q: return (size_t)c->num_attention_heads * (size_t)c->head_dim;
    case SPRUCE_DIM_KV: return (size_t)c->num_key_value_heads * (size_t)c->head_dim;
    case SPRUCE_DIM_INTER: return (size_t)c->intermediate_size;
    case SPRUCE_DIM_VOCAB: return (size_t)c->vocab_size;
    }
    return 0;
}

int spruce_family_linear_name(const spruce_family *f, int layer, spruce_proj l, int bias,
                              char *buf, size_t size)
{
    const char *path = l >= 0 && l < SPRUCE_NPROJ && f->linear[l].path ? f->linear[l].path : "?";
    return snprintf(buf, size, "%s.%d.%s.%s", f->layers, layer, path, bias ? "bias" : "weight");
}

int spruce_family_expert_name(const spruce_family *f, int layer, int e, spruce_proj l,
                              char *buf, size_t size)
{
    if (!f->moe)
        return snprintf(buf, size, "%s.%d.?", f->layers, layer);
    if (e < 0)
        return snprintf(buf, size, "%s.%d.%s.weight", f->layers, layer, f->router);
    return snprintf(buf, size, "%s.%d.%s.%d.%s.weight", f->layers, layer, f->experts, e,
                    l >= SPRUCE_PROJ_GATE && l <= SPRUCE_PROJ_DOWN
                        ? f->expert_proj[l - SPRUCE_PROJ_GATE] : "?");
}

int spruce_family_norm_name(const spruce_family *f, int layer, const char *norm, char *buf,
                            size_t size)
{
    return snprintf(buf, size, "%s.%d.%s.weight", f->layers, layer, norm);
}

int spruce_family_norm_bias_name(const spruce_family *f, int layer, const char *norm,
                                 char *buf, size_t size)
{
    return snprintf(buf, size, "%s.%d.%s.bias", f->layers, layer, norm);
}

int spruce_family_nlinear(const spruce_family *f)
{
    int l, n = 0;
    for (l = 0; l < SPRUCE_NPROJ; l++)
        n += f->linear[l].path != NULL;
    return n;
}

void spruce_family_linear_shape(const spruce_family *f, const spruce_config *c, spruce_proj l,
                                size_t *rows, size_t *cols)
{
    *rows = spruce_dim_of(c, f->linear[l].rows);
    *cols = spruce_dim_of(c, f->linear[l].cols);
}

size_t spruce_family_tensor_rows(const spruce_family *f, const spruce_config *c, spruce_proj l)
{
    size_t rows = 0;
    int k;
    if (f->linear[l].part > 0)
        return 0;
    for (k = l; k < SPRUCE_NPROJ && (k == (int)l || f->linear[k].part > 0); k++)
        rows += spruce_dim_of(c, f->linear[k].rows);
    return rows;
}

int spruce_family_linear_has_bias(const spruce_family *f, const spruce_config *c,
                                  spruce_proj l)
{
    switch (f->linear[l].bias) {
    case SPRUCE_BIAS_QKV: return c->qkv_bias != 0;
    case SPRUCE_BIAS_O: return c->o_bias != 0;
    case SPRUCE_BIAS_MLP: return c->mlp_bias != 0;
    }
    return 0;
}

size_t spruce_family_site_cols(const spruce_family *f, const spruce_config *c, spruce_site s)
{
    int l;
    for (l = 0; l < SPRUCE_NPROJ; l++)
        if (f->linear[l].site == s)
            return spruce_dim_of(c, f->linear[l].cols);
    return 0;
}

static void set_tensor(spruce_family_tensor *t, spruce_tensor_role role, int layer,
                       spruce_proj l, size_t d0, size_t d1)
{
    t->role = role;
    t->layer = layer;
    t->proj = l;
    t->expert = -1;
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
}

/* Entry j of a block: its norms before the first linear layer of their part
 * (attention, MLP), each weight followed by its bias. */
static int block_tensor(const spruce_family *f, const spruce_config *c, int layer, size_t j,
                        spruce_family_tensor *t)
{
    size_t k = 0, rows, cols, hid = spruce_dim_of(c, SPRUCE_DIM_HIDDEN);
    size_t mi = (size_t)c->moe_intermediate_size;
    int l, moe = spruce_config_layer_moe(c, layer);
    for (l = 0; l < SPRUCE_NPROJ; l++) {
        spruce_proj p = (spruce_proj)l;
        const char *norm = l == 0 ? f->attn_norm
                           : f->linear[l].site == SPRUCE_SITE_GATEUP &&
                                     f->linear[l - 1].site != SPRUCE_SITE_GATEUP
                               ? f->mlp_norm
                               : NULL;
        if (norm && norm == f->mlp_norm && f->q_norm) {   /* the per-head norms of q, k */
            const char *qk[2] = {f->q_norm, f->k_norm};
            int e;
            for (e = 0; e < 2; e++)
                if (k++ == j) {
                    set_tensor(t, SPRUCE_TENSOR_NORM, layer, SPRUCE_NPROJ,
                               (size_t)c->head_dim, 0);
                    spruce_family_norm_name(f, layer, qk[e], t->name, sizeof t->name);
                    return 1;
                }
        }
        if (c->no_norm_affine)
            norm = NULL;   /* OPT's LayerNorms without weight and bias: no tensors */
        if (norm && k++ == j) {
            set_tensor(t, SPRUCE_TENSOR_NORM, layer, SPRUCE_NPROJ, hid, 0);
            spruce_family_norm_name(f, layer, norm, t->name, sizeof t->name);
            return 1;
        }
        if (norm && f->opt && k++ == j) {   /* the LayerNorm's bias */
            set_tensor(t, SPRUCE_TENSOR_NORM_BIAS, layer, SPRUCE_NPROJ, hid, 0);
            spruce_family_norm_bias_name(f, layer, norm, t->name, sizeof t->name);
            return 1;
        }
        if (f->linear[l].part > 0 || !f->linear[l].path)
            continue;   /* rows of the lead's fused tensor, or no such layer */
        if (moe && l == SPRUCE_PROJ_GATE) {   /* the router, then every expert */
            size_t e = j - k;   /* j >= k: lower entries have returned */
            if (e == 0) {
                set_tensor(t, SPRUCE_TENSOR_ROUTER, layer, SPRUCE_NPROJ,
                           (size_t)c->num_experts, hid);
                spruce_family_expert_name(f, layer, -1, p, t->name, sizeof t->name);
                return 1;
            }
            e--;
            if (e >= (size_t)c->num_experts * 3)
                return 0;
            p = (spruce_proj)(SPRUCE_PROJ_GATE + (int)(e % 3));
            set_tensor(t, SPRUCE_TENSOR_LINEAR, layer, p, p == SPRUCE_PROJ_DOWN ? hid : mi,
                       p == SPRUCE_PROJ_DOWN ? mi : hid);
            t->expert = (int)(e / 3);
            spruce_family_expert_name(f, layer, t->expert, p, t->name, sizeof t->name);
            return 1;
        }
        spruce_family_linear_shape(f, c, p, &rows, &cols);
        rows = spruce_family_tensor_rows(f, c, p);
        if (k++ == j) {
            set_tensor(t, SPRUCE_TENSOR_LINEAR, layer, p, rows, cols);
            spruce_family_linear_name(f, layer, p, 0, t->name, sizeof t->name);
            return 1;
        }
        if (spruce_family_linear_has_bias(f, c, p) && k++ == j) {
            set_tensor(t, SPRUCE_TENSOR_BIAS, layer, p, rows, 0);
            spruce_family_linear_name(f, layer, p, 1, t->name, sizeof t->name);
            return 1;
        }
    }
    if (f->post_attn_norm) {   /* gemma's norms of the branch outputs */
        const char *post[2] = {f->post_attn_norm, f->post_mlp_norm};
        int e;
        for (e = 0; e < 2; e++)
            if (k++ == j) {
                set_tensor(t, SPRUCE_TENSOR_NORM, layer, SPRUCE_NPROJ, hid, 0);
                spruce_family_norm_name(f, layer, post[e], t->name, sizeof t->name);
                return 1;
            }
    }
    return 0;
}

/* The tensors after the blocks, in order: the final norm (and its bias),
 * project_out, the head; j-th of them into t, 0 past the end. */
static int tail_tensor(const spruce_family *f, const spruce_config *c, size_t j, size_t E,
                       int proj, spruce_family_tensor *t)
{
    size_t k = 0, hid = spruce_dim_of(c, SPRUCE_DIM_HIDDEN);
    size_t vocab = spruce_dim_of(c, SPRUCE_DIM_VOCAB);
    int norm = !c->no_final_norm && !c->no_norm_affine;
    if (norm && k++ == j) {
        set_tensor(t, SPRUCE_TENSOR_NORM, -1, SPRUCE_NPROJ, hid, 0);
        snprintf(t->name, sizeof t->name, "%s", f->final_norm);
        return 1;
    }
    if (norm && f->final_norm_bias && k++ == j) {
        set_tensor(t, SPRUCE_TENSOR_NORM_BIAS, -1, SPRUCE_NPROJ, hid, 0);
        snprintf(t->name, sizeof t->name, "%s", f->final_norm_bias);
        return 1;
    }
    if (proj && k++ == j) {
        set_tensor(t, SPRUCE_TENSOR_PROJ, -1, SPRUCE_NPROJ, E, hid);
        snprintf(t->name, sizeof t->name, "%s", f->project_out);
        return 1;
    }
    if (!c->tie_word_embeddings && k++ == j) {
        set_tensor(t, SPRUCE_TENSOR_HEAD, -1, SPRUCE_NPROJ, vocab, E);
        snprintf(t->name, sizeof t->name, "%s", f->head);
        return 1;
    }
    return 0;
}

/* Tensors of block `layer`: per (a dense block's count), or for a MoE block
 * the router and 3 per expert in place of gate/up/down (and their biases). */
static size_t block_count(const spruce_family *f, const spruce_config *c, int layer, size_t per)
{
    int l;
    if (!spruce_config_layer_moe(c, layer))
        return per;
    for (l = SPRUCE_PROJ_GATE; l <= SPRUCE_PROJ_DOWN; l++)
        if (!f->linear[l].part)
            per -= 1 + (size_t)spruce_family_linear_has_bias(f, c, (spruce_proj)l);
    return per + 1 + 3 * (size_t)c->num_experts;
}

int spruce_family_tensor_at(const spruce_config *c, size_t i, spruce_family_tensor *t)
{
    const spruce_family *f;
    size_t per = 2, hid, vocab, L, E, pre, n;
    int l, proj;
    if (!c || !t)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_family_tensor_at: NULL argument");
    if (!(f = c->family ? c->family : spruce_family_find(c->model_type)))
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "model_type '%s' is not supported "
                              "(supported: %s)", c->model_type, spruce_family_supported());
    memset(t, 0, sizeof *t);
    hid = spruce_dim_of(c, SPRUCE_DIM_HIDDEN);
    vocab = spruce_dim_of(c, SPRUCE_DIM_VOCAB);
    L = (size_t)c->num_hidden_layers;
    /* OPT: the embedding's width, and project_in / project_out where it differs */
    E = c->word_embed_proj_dim > 0 ? (size_t)c->word_embed_proj_dim : hid;
    proj = E != hid && f->project_in;
    pre = 1 + (f->positions != NULL) + (size_t)proj;
    for (l = 0; l < SPRUCE_NPROJ; l++)
        if (!f->linear[l].part && f->linear[l].path)
            per += 1 + (size_t)spruce_family_linear_has_bias(f, c, (spruce_proj)l);
    if (f->opt)
        per += 2;   /* the norms' biases */
    if (c->no_norm_affine)
        per -= 4;   /* nor weights nor biases */
    if (f->q_norm)
        per += 2;
    if (f->post_attn_norm)
        per += 2;
    if (i == 0) {
        set_tensor(t, SPRUCE_TENSOR_EMBED, -1, SPRUCE_NPROJ, vocab, E);
        snprintf(t->name, sizeof t->name, "%s", f->embed);
        return 1;
    }
    if (f->positions && i == 1) {   /* OPTLearnedPositionalEmbedding: 2 rows more */
        set_tensor(t, SPRUCE_TENSOR_POSITIONS, -1, SPRUCE_NPROJ,
                   (size_t)c->max_position_embeddings + 2, hid);
        snprintf(t->name, sizeof t->name, "%s", f->positions);
        return 1;
    }
    if (proj && i == pre - 1) {
        set_tensor(t, SPRUCE_TENSOR_PROJ, -1, SPRUCE_NPROJ, hid, E);
        snprintf(t->name, sizeof t->name, "%s", f->project_in);
        return 1;
    }
    i -= pre;
    if (!f->moe) {
        if (i < L * per)
            return block_tensor(f, c, (int)(i / per), i % per, t);
        i -= L * per;
    } else {   /* blocks of different counts */
        for (l = 0; l < (int)L; l++, i -= n)
            if (i < (n = block_count(f, c, l, per)))
                return block_tensor(f, c, l, i, t);
    }
    return tail_tensor(f, c, i, E, proj, t);
}

/* s starts with "<layers>.<digits>." for a block index without leading zeros:
 * the rest after it, or NULL. */
static const char *after_block(const spruce_family *f, const char *s)
{
    size_t n = strlen(f->layers);
    const char *p;
    if (strncmp(s, f->layers, n) || s[n] != '.')
        return NULL;
    p = s + n + 1;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9'))
        return NULL;
    while (*p >= '0' && *p <= '9')
        p++;
    return *p == '.' ? p + 1 : NULL;
}

int spruce_family_is_linear(const char *model_type, const char *tensor_name)
{
    const spruce_family *f;
    const char *rest;
    int l;
    if (!model_type || !tensor_name)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_family_is_linear: NULL argument");
    if (!(f = spruce_family_find(model_type)))
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "model_type '%s' is not supported "
                              "(supported: %s)", model_type, spruce_family_supported());
    while (f && !(rest = after_block(f, tensor_name)))
        f = spruce_family_next(f);   /* another layout of the family (OPT's) */
    if (!f)
        return 0;
    if (f->moe) {   /* "<experts>.<e>.<proj>.weight"; the router is never pruned */
        size_t n = strlen(f->experts);
        const char *p = rest + n + 1;
        if (!strncmp(rest, f->experts, n) && rest[n] == '.' && *p >= '0' && *p <= '9' &&
            !(p[0] == '0' && p[1] >= '0' && p[1] <= '9')) {
            while (*p >= '0' && *p <= '9')
                p++;
            if (*p++ == '.')
                for (l = 0; l < 3; l++) {
                    size_t m = strlen(f->expert_proj[l]);
                    if (!strncmp(p, f->expert_proj[l], m) && !strcmp(p + m, ".weight"))
                        return 1;
                }
            return 0;
        }
    }
    for (l = 0; l < SPRUCE_NPROJ; l++) {
        size_t n;
        if (!f->linear[l].path)
            continue;
        n = strlen(f->linear[l].path);
        if (!strncmp(rest, f->linear[l].path, n) && !strcmp(rest + n, ".weight"))
            return 1;
    }
    return 0;
}

/* ---- spruce_model.h: the LLaMA layout every family of the table shares ---- */

const char *spruce_proj_path(spruce_proj l)
{
    return (l >= 0 && l < SPRUCE_NPROJ) ? families[0].linear[l].path : "?";
}

void spruce_proj_name(int layer, spruce_proj l, int bias, char *buf, size_t size)
{
    spruce_family_linear_name(&families[0], layer, l, bias, buf, size);
}

spruce_site spruce_proj_site(spruce_proj l)
{
    return (l >= 0 && l < SPRUCE_NPROJ) ? families[0].linear[l].site : SPRUCE_SITE_DOWN;
}
