/* spruce_family.h: what a model family is made of, as data.
 *
 * One table row per Hugging Face model_type says the names of its tensors and
 * the shape of its decoder block: the embedding, the final norm and the head,
 * the norms of a block, its linear layers (their path, the input they read
 * and their shape in terms of the config), and which config.json keys switch
 * biases or the attention window on.  config.c, the forward, decoding, synth
 * and the pipeline all read this table; the masks export asks it which tensors
 * are prunable linear layers.
 *
 * Today's families share LLaMA's layout (modeling_llama.py: LlamaDecoderLayer;
 * modeling_mistral.py, modeling_qwen2.py, modeling_qwen3.py) and differ only in
 * biases, the attention window, per-head q/k norms and the default head_dim;
 * Gemma 2 and 3 (modeling_gemma2.py, modeling_gemma3.py) add two norms per
 * block and the maths their config keys switch on (spruce_config); OPT
 * (modeling_opt.py) has LayerNorms with biases, learned positions, an ungated
 * MLP of two layers (fc1, fc2: the up and down slots, no gate) and, where
 * word_embed_proj_dim differs from hidden_size, project_in and project_out. */
#ifndef SPRUCE_FAMILY_H
#define SPRUCE_FAMILY_H

#include <stddef.h>
#include <stdint.h>

#include "spruce_error.h"
#include "spruce_model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A size of the config, by name: the shapes of a family's tensors are written
 * with these. */
typedef enum {
    SPRUCE_DIM_HIDDEN = 0,     /* hidden_size */
    SPRUCE_DIM_Q,              /* num_attention_heads * head_dim */
    SPRUCE_DIM_KV,             /* num_key_value_heads * head_dim */
    SPRUCE_DIM_INTER,          /* intermediate_size */
    SPRUCE_DIM_VOCAB           /* vocab_size */
} spruce_dim;

/* The value of d for config c, as a size_t (products of config values are
 * never computed in int). */
size_t spruce_dim_of(const spruce_config *c, spruce_dim d);

/* The config flag that says whether a linear layer has a bias. */
typedef enum {
    SPRUCE_BIAS_QKV = 0,       /* spruce_config.qkv_bias */
    SPRUCE_BIAS_O,             /* spruce_config.o_bias */
    SPRUCE_BIAS_MLP            /* spruce_config.mlp_bias */
} spruce_bias_flag;

/* One linear layer of a block: W is (rows, cols) row-major, its input is the
 * activation at `site` (layers with the same site share one input). */
typedef struct {
    const char *path;          /* inside the block: "self_attn.q_proj"; NULL: the
                                * family has no such layer (OPT's gate) */
    spruce_site site;
    spruce_dim rows, cols;
    spruce_bias_flag bias;
    /* > 0: this layer is rows of a fused tensor, the part-th after the lead
     * layer before it of the same path (phi3: k and v of qkv_proj, up of
     * gate_up_proj).  The lead's tensor holds every part's rows in order and
     * is pruned as one layer (one input, one Hessian). */
    int part;
} spruce_family_linear;

typedef struct spruce_family {
    const char *model_type;    /* config.json "model_type": "llama" */
    const char *architecture;  /* config.json "architectures"[0]: "LlamaForCausalLM" */
    const char *embed;         /* "model.embed_tokens.weight" (vocab, hidden) */
    const char *final_norm;    /* "model.norm.weight" (hidden) */
    const char *head;          /* "lm_head.weight" (vocab, hidden), absent when tied */
    const char *layers;        /* blocks are "<layers>.<i>.": "model.layers" */
    const char *attn_norm;     /* before attention: "input_layernorm" (.weight, (hidden)) */
    const char *mlp_norm;      /* before the MLP: "post_attention_layernorm" */
    spruce_family_linear linear[SPRUCE_NPROJ];   /* in spruce_proj order */
    /* How config.json sets the spruce_config bias flags and the window. */
    int qkv_bias;              /* q/k/v always have biases (qwen2) */
    const char *attention_bias_key;   /* boolean key for q/k/v/o biases, or NULL */
    const char *mlp_bias_key;         /* boolean key for gate/up/down biases, or NULL */
    const char *window_key;           /* integer key of the attention window, or NULL */
    const char *window_switch_key;    /* boolean key that turns a window on
                                       * (qwen2, qwen3: use_sliding_window, with
                                       * sliding_window and max_window_layers), or NULL */
    /* Per-head RMSNorm of q and k before RoPE (qwen3: "self_attn.q_norm",
     * "self_attn.k_norm", .weight (head_dim)), or NULL. */
    const char *q_norm, *k_norm;
    int default_head_dim;      /* head_dim when config.json has none; 0: hidden / heads */
    /* Gemma's sandwich norms, applied to the attention's and the MLP's output
     * before each residual add ("post_attention_layernorm",
     * "post_feedforward_layernorm"), or NULL. */
    const char *post_attn_norm, *post_mlp_norm;
    int gemma;                 /* 2 or 3: config.json has Gemma 2's or Gemma 3's keys */
    /* phi3 (modeling_phi3.py, configuration_phi3.py): config.json's
     * partial_rotary_factor, original_max_position_embeddings (4096) and
     * rope_scaling type longrope are read; sliding_window on every layer. */
    int phi3;
    /* OPT (modeling_opt.py, configuration_opt.py): its keys are read by
     * config.c (opt_keys); the norms have a ".bias" beside ".weight" and the
     * final norm is present only in pre-norm models. */
    int opt;
    const char *positions;     /* "model.decoder.embed_positions.weight"
                                * (max_position_embeddings + 2, hidden), or NULL */
    const char *project_in;    /* (hidden, word_embed_proj_dim), when it differs */
    const char *project_out;   /* (word_embed_proj_dim, hidden) */
    const char *final_norm_bias;   /* "model.decoder.final_layer_norm.bias" */
    /* Mixtures of experts: 1 mixtral (modeling_mixtral.py: every block's MLP is
     * block_sparse_moe, the k weights always renormalised), 2 qwen3_moe
     * (modeling_qwen3_moe.py: mlp.*, dense where mlp_only_layers /
     * decoder_sparse_step say, norm_topk_prob); 0 elsewhere. */
    int moe;
    const char *router;        /* "block_sparse_moe.gate" (.weight, (experts, hidden)) */
    const char *experts;       /* expert e is "<experts>.<e>.": "block_sparse_moe.experts" */
    const char *expert_proj[3];   /* its gate, up and down: "w1", "w3", "w2" */
    const char *experts_key;   /* config.json's count: "num_local_experts" */
} spruce_family;

/* The family of model_type, or NULL when there is none. */
const spruce_family *spruce_family_find(const char *model_type);
/* The next row of f's model_type: another layout of the same family (OPT's
 * names without "model."), or NULL. */
const spruce_family *spruce_family_next(const spruce_family *f);
/* The rows of the table, in order: i from 0 while the result is not NULL
 * (a family with two layouts has two rows). */
const spruce_family *spruce_family_at(int i);
/* "llama, mistral, qwen2, qwen3": for messages. */
const char *spruce_family_supported(void);

/* "<layers>.<layer>.<path>.weight" (bias: ".bias") of linear l into buf;
 * snprintf's return (the length it needed). */
int spruce_family_linear_name(const spruce_family *f, int layer, spruce_proj l, int bias,
                              char *buf, size_t size);
/* "<layers>.<layer>.<norm>.weight" into buf, norm being f->attn_norm or
 * f->mlp_norm; snprintf's return. */
int spruce_family_norm_name(const spruce_family *f, int layer, const char *norm, char *buf,
                            size_t size);
/* The same with ".bias" (OPT's LayerNorms). */
int spruce_family_norm_bias_name(const spruce_family *f, int layer, const char *norm,
                                 char *buf, size_t size);
/* The number of linear layers of a block (7; 6 for OPT, which has no gate). */
int spruce_family_nlinear(const spruce_family *f);
/* The shape (rows, cols) of linear l of family f under config c. */
void spruce_family_linear_shape(const spruce_family *f, const spruce_config *c, spruce_proj l,
                                size_t *rows, size_t *cols);
/* The rows of the tensor that linear l is stored in: its own rows, or for a
 * lead of a fused tensor the rows of every part (phi3's qkv_proj: q + k + v);
 * 0 for a part (k, v, up of phi3), which has no tensor of its own. */
size_t spruce_family_tensor_rows(const spruce_family *f, const spruce_config *c, spruce_proj l);

/* Whether linear l has a bias under config c (0 or 1). */
int spruce_family_linear_has_bias(const spruce_family *f, const spruce_config *c,
                                  spruce_proj l);

/* The input width of the linear layers reading site (their cols). */
size_t spruce_family_site_cols(const spruce_family *f, const spruce_config *c, spruce_site s);

/* One tensor of a checkpoint of a family. */
typedef enum {
    SPRUCE_TENSOR_ROUTER = -1, /* a MoE block's router (experts, hidden): never pruned */
    SPRUCE_TENSOR_EMBED = 0,   /* the embedding (vocab, hidden) */
    SPRUCE_TENSOR_NORM,        /* a norm's weight (hidden): a block's or the final one;
                                * (head_dim) for the per-head q/k norms */
    SPRUCE_TENSOR_LINEAR,      /* a block's linear weight (rows, cols) */
    SPRUCE_TENSOR_BIAS,        /* its bias (rows) */
    SPRUCE_TENSOR_HEAD,        /* the head (vocab, hidden), absent when tied */
    SPRUCE_TENSOR_NORM_BIAS,   /* a LayerNorm's bias (hidden), OPT */
    SPRUCE_TENSOR_POSITIONS,   /* OPT's positional table (max_position_embeddings + 2, hidden) */
    SPRUCE_TENSOR_PROJ         /* OPT's project_in (hidden, proj), project_out (proj, hidden) */
} spruce_tensor_role;

typedef struct {
    char name[160];
    spruce_tensor_role role;
    int layer;                 /* the block, -1 for the embedding, final norm and head */
    spruce_proj proj;          /* LINEAR and BIAS: which (an expert's: GATE, UP, DOWN);
                                * otherwise SPRUCE_NPROJ */
    int expert;                /* LINEAR of an expert: its index, otherwise -1 */
    int ndim;                  /* 1 or 2 */
    size_t shape[2];
} spruce_family_tensor;

/* Tensor i of every tensor a checkpoint of config c holds, in file order: the
 * embedding; per block its attention norm, q/k/v/o (each followed by its bias
 * when it has one), the q and k norms when the family has them, its MLP norm,
 * gate/up/down, then the post-attention and post-MLP norms when the family has
 * them (a mixture-of-experts block: after its MLP norm the router, then per
 * expert its gate, up and down, in place of gate/up/down); the final norm;
 * the head unless tied.  OPT: the embedding (vocab, word_embed_proj_dim), the
 * positional table and project_in; per block each norm's weight then bias;
 * the final norm's weight and bias when present; project_out; the head
 * (vocab, word_embed_proj_dim) unless tied.  1 with *t filled, 0 past the
 * end, SPRUCE_EUNSUPPORTED when c names no family.  The model reads and checks exactly these, synth writes
 * exactly these. */
int spruce_family_tensor_at(const spruce_config *c, size_t i, spruce_family_tensor *t);

/* "<layers>.<layer>.<experts>.<e>.<gate|up|down>.weight" of expert e's linear
 * l (GATE, UP, DOWN) into buf, or with e = -1 the router's
 * "<layers>.<layer>.<router>.weight"; snprintf's return. */
int spruce_family_expert_name(const spruce_family *f, int layer, int e, spruce_proj l,
                              char *buf, size_t size);

/* 1 when tensor_name is the weight of one of the prunable linear layers of a
 * block of the family model_type ("model.layers.3.mlp.down_proj.weight", in
 * any of its layouts), 0
 * when it is anything else (an embedding, a norm, the head, a bias, a name of
 * another layout), SPRUCE_EUNSUPPORTED (detail: the supported types) for an
 * unknown model_type, SPRUCE_EINVAL for NULL. */
int spruce_family_is_linear(const char *model_type, const char *tensor_name);

/* ---- random checkpoints of a family (synth.c) ------------------------------ */

/* What spruce_synth_write (spruce_ckpt.h) leaves at llama's: the family, an
 * explicit head_dim, and rope_scaling. */
typedef struct {
    const char *model_type;    /* a family of the table; NULL: "llama" */
    int head_dim;              /* 0: hidden / heads */
    spruce_rope_type rope;     /* SPRUCE_ROPE_DEFAULT: no rope_scaling */
    double rope_factor;        /* 0: 8 for llama3, 4 for the others */
    /* mixtral, qwen3_moe: experts per block (0: 8), chosen per token (0: 2)
     * and an expert's width (0: the synth config's intermediate); qwen3_moe
     * gets norm_topk_prob true and every block a mixture of experts. */
    int experts, experts_per_tok, expert_intermediate;
} spruce_synth_family;

void spruce_synth_family_defaults(spruce_synth_family *f);

/* spruce_synth_write for family f (NULL: llama's defaults).  config.json gets
 * the family's model_type and architecture, head_dim, and for rope:
 *   linear, dynamic  {"rope_type", "factor"}
 *   yarn             {"rope_type", "factor"} (max_position is the pre-yarn length)
 *   llama3           {"rope_type", "factor", "low_freq_factor": 1, "high_freq_factor": 4,
 *                     "original_max_position_embeddings": max_position / factor}
 * Every tensor of the family table is written (the q/k norms of qwen3 as
 * norms, near 1). */
int spruce_synth_write_family(const char *outdir, const spruce_synth_config *c,
                              const spruce_synth_family *f, int force);

/* Parameters of that checkpoint (every tensor of the family table). */
int64_t spruce_synth_family_nparams(const spruce_synth_config *c, const spruce_synth_family *f);

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_FAMILY_H */
