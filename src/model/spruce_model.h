/* spruce_model.h: the forward of the families of spruce_family.h (llama,
 * mistral, qwen2, qwen3, gemma2, gemma3_text, phi3, opt; OPT's LayerNorms,
 * learned positions and ReLU MLP are switches of spruce_config); the
 * block-by-block pruning pipeline built on it is in spruce_pipeline.h, the
 * table of families (tensor names, block shape) in spruce_family.h.
 *
 * The model follows Hugging Face's LlamaForCausalLM:
 *   x = embed[ids]                                   // x is (T, hidden)
 *   for each block:
 *     a = rmsnorm(x) * attn_norm                     // input of q/k/v
 *     q, k, v = a Wq^T (+bq), a Wk^T (+bk), a Wv^T (+bv)
 *     qwen3: q_h = rmsnorm(q_h) * q_norm, k_h likewise, per head (head_dim)
 *     rotate-half RoPE on q, k with rope_theta and rope_scaling
 *     o_in = causal softmax(q k^T / sqrt(head_dim)) v per head, kv heads shared
 *     x += o_in Wo^T                                  // o_in is the input of o
 *     m = rmsnorm(x) * mlp_norm                       // input of gate/up
 *     d_in = silu(m Wg^T) * (m Wu^T)                  // input of down
 *     x += d_in Wd^T
 *   logits = (rmsnorm(x) * norm) head^T               // head = embed when tied
 *
 * Weights are read from the memory-mapped checkpoint one block at a time and
 * converted to float32; every computation is float32.  Linear layers run on
 * cblas_sgemm, the rest on OpenMP threads (never BLAS inside an OpenMP region).
 * Functions return 0 or a negative SPRUCE_E* code; spruce_errdetail() names the
 * file, the key or tensor, the expected and the found value. */
#ifndef SPRUCE_MODEL_H
#define SPRUCE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "spruce_error.h"
#include "spruce_ckpt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- configuration (config.json) ---------------------------------------- */

struct spruce_family;            /* spruce_family.h */

/* rope_scaling of config.json (modeling_rope_utils.py), rope_type or the older
 * key type.  What each changes (rope.c has the formulas):
 *   linear   inv_freq / factor
 *   dynamic  NTK: for a sequence of L > max_position_embeddings tokens, base
 *            rope_theta * (factor L / max_pos - (factor - 1))^(d / (d - 2))
 *   yarn     a per-frequency ramp between inv_freq / factor and inv_freq over
 *            the correction range of beta_fast, beta_slow; cos and sin times
 *            the attention factor
 *   llama3   inv_freq / factor for wavelengths above original / low_freq_factor,
 *            unchanged below original / high_freq_factor, smoothed between */
typedef enum {
    SPRUCE_ROPE_DEFAULT = 0,     /* no rope_scaling, or rope_type "default" */
    SPRUCE_ROPE_LINEAR,
    SPRUCE_ROPE_DYNAMIC,
    SPRUCE_ROPE_YARN,
    SPRUCE_ROPE_LLAMA3,
    SPRUCE_ROPE_LONGROPE         /* phi3: inv_freq / short_factor_i, or / long_factor_i
                                  * for sequences longer than the original context;
                                  * cos and sin times the attention factor */
} spruce_rope_type;

/* longrope's short_factor and long_factor hold rotary_dim / 2 numbers, at most
 * this many (Phi-3 and Phi-4: 48). */
#define SPRUCE_MAX_LONGROPE 256

typedef struct {
    spruce_rope_type type;
    double factor;               /* linear, dynamic, yarn, llama3 (required) */
    double low_freq_factor;      /* llama3 (required) */
    double high_freq_factor;     /* llama3 (required) */
    int original_max_position_embeddings;   /* llama3 (required); yarn (0: absent) */
    double beta_fast, beta_slow; /* yarn, default 32 and 1 */
    double attention_factor;     /* yarn, 0: from factor, mscale, mscale_all_dim */
    double mscale, mscale_all_dim;          /* yarn, 0: absent */
    int truncate;                /* yarn, default 1: the correction range rounded outward */
    /* longrope (modeling_rope_utils.py: _compute_longrope_parameters); the
     * original context is config.json's top-level original_max_position_embeddings
     * (phi3: 4096 when absent), kept in original_max_position_embeddings, and
     * attention_factor (0: from max_position / original) above. */
    int nfactors;                /* rotary_dim / 2 */
    double short_factor[SPRUCE_MAX_LONGROPE], long_factor[SPRUCE_MAX_LONGROPE];
} spruce_rope_scaling;

/* The activation of the gated MLP: down(act(gate x) * up x). */
typedef enum {
    SPRUCE_ACT_SILU = 0,         /* "silu" */
    SPRUCE_ACT_GELU_TANH,        /* "gelu_pytorch_tanh", "gelu_new":
                                  * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
    SPRUCE_ACT_RELU              /* OPT's "relu", ungated: down(relu(up x)) */
} spruce_act;

#define SPRUCE_MAX_LAYERS_BITS 65536   /* == SPRUCE_MAX_LAYERS */
#define SPRUCE_MAX_EXPERTS 4096        /* num_experts, num_experts_per_tok */

typedef struct {
    char model_type[16];         /* "llama", "mistral", "qwen2" or "qwen3" */
    const struct spruce_family *family;   /* its row of the family table */
    int hidden_size;
    int intermediate_size;
    int num_hidden_layers;
    int num_attention_heads;
    int num_key_value_heads;     /* default num_attention_heads */
    int head_dim;                /* default hidden_size / num_attention_heads */
    int vocab_size;
    int max_position_embeddings;
    int sliding_window;          /* attention window of the sliding layers (0 = none) */
    double rms_norm_eps;
    double rope_theta;           /* default 10000 */
    spruce_rope_scaling rope;    /* rope_scaling (type DEFAULT when absent) */
    int qk_norm;                 /* per-head RMSNorm of q and k before RoPE (qwen3) */
    int tie_word_embeddings;     /* default 0, as in transformers */
    int qkv_bias;                /* q/k/v have biases (qwen2, llama attention_bias) */
    int o_bias;                  /* o has a bias (llama attention_bias) */
    int mlp_bias;                /* gate/up/down have biases (llama mlp_bias) */
    /* Gemma 2 and 3 (modeling_gemma2.py, modeling_gemma3.py); 0 elsewhere. */
    int norm_plus_one;           /* every RMSNorm weight applied as (1 + w) */
    spruce_act act;              /* the gated MLP's activation (SILU elsewhere) */
    float embed_scale;           /* embeddings times this float32 (sqrt(hidden)), 0: 1 */
    double attn_scale;           /* query_pre_attn_scalar^-0.5; 0: 1 / sqrt(head_dim) */
    double attn_softcap;         /* attn_logit_softcapping c: s -> tanh(s / c) c, 0: none */
    double final_softcap;        /* final_logit_softcapping, likewise on the logits */
    /* The layers that attend fully although sliding_window is set, one bit
     * each (layer i: bit i % 8 of full_layer[i / 8]); the others use the
     * window.  All clear for mistral, mixtral and phi3 (every layer slides);
     * gemma2 and gemma3 from layer_types or their pattern, qwen2 and qwen3
     * from layer_types or max_window_layers (config.c). */
    unsigned char full_layer[SPRUCE_MAX_LAYERS_BITS / 8];
    double rope_local_theta;     /* gemma3: sliding layers rotate with this base and no
                                  * rope_scaling (rope_local_base_freq); 0: as the others */
    /* phi3 (modeling_phi3.py: apply_rotary_pos_emb): RoPE rotates the first
     * rotary_dim = int(head_dim * partial_rotary_factor) dims of each head
     * (rotate-half within them), the others pass through; head_dim elsewhere. */
    int rotary_dim;
    /* OPT (modeling_opt.py: OPTDecoder, OPTDecoderLayer); 0 elsewhere.  Every
     * norm is a LayerNorm with weight and bias (eps rms_norm_eps, 1e-5); no
     * RoPE: learned positional rows at position + 2 are added to the
     * embedding; the MLP is fc2(relu(fc1 x)) (act RELU, stored as up, down). */
    int layer_norm;              /* LayerNorm (with bias) instead of RMSNorm */
    int learned_positions;       /* embed_positions, no rotary embeddings */
    int post_norm;               /* do_layer_norm_before false: x = LN(x + branch(x)) */
    int no_final_norm;           /* the decoder has no final norm (OPT's post-norm
                                  * models, _remove_final_layer_norm) */
    int no_norm_affine;          /* OPT layer_norm_elementwise_affine false: the
                                  * LayerNorms have no weight and bias (no tensors) */
    int word_embed_proj_dim;     /* width of the token embedding and the head; 0 or
                                  * hidden_size: none, else project_in / project_out */
    /* Mixtures of experts (modeling_mixtral.py: MixtralSparseMoeBlock;
     * modeling_qwen3_moe.py: Qwen3MoeSparseMoeBlock); num_experts 0 elsewhere.
     * The MoE block's router scores every expert, softmax over all of them,
     * keeps the top num_experts_per_tok (renormalised to sum 1 with
     * norm_topk_prob, always for mixtral) and adds those experts' gated MLPs
     * (width moe_intermediate_size) weighted by them.  qwen3_moe: layer i is a
     * MoE block unless listed in mlp_only_layers or (i + 1) % decoder_sparse_step
     * != 0, a dense MLP of intermediate_size otherwise. */
    int num_experts;             /* num_local_experts (mixtral), num_experts (qwen3_moe) */
    int num_experts_per_tok;
    int norm_topk_prob;
    int moe_intermediate_size;   /* mixtral: intermediate_size */
    int decoder_sparse_step;     /* 1 for mixtral */
    unsigned char mlp_only[SPRUCE_MAX_LAYERS_BITS / 8];  /* mlp_only_layers, one bit each */
} spruce_config;

/* Whether block `layer` of c is a mixture of experts (0 or 1). */
int spruce_config_layer_moe(const spruce_config *c, int layer);

/* What config.json may ask for.  Each key is refused above its bound, and so
 * are the products below, with a message naming the keys; within them every
 * size the forward, decoding and the pipeline compute from the config fits in
 * size_t with room to spare (token counts are checked where they meet it).
 * The bounds are far above today's largest models. */
#define SPRUCE_MAX_HIDDEN       (1 << 20)  /* hidden_size; also heads x head_dim */
#define SPRUCE_MAX_INTERMEDIATE (1 << 22)  /* intermediate_size */
#define SPRUCE_MAX_HEAD_DIM     65536      /* head_dim */
#define SPRUCE_MAX_HEADS        65536      /* num_attention_heads, num_key_value_heads */
#define SPRUCE_MAX_LAYERS       65536      /* num_hidden_layers */
#define SPRUCE_MAX_VOCAB        (1 << 24)  /* vocab_size */
#define SPRUCE_MAX_POSITIONS    (1 << 24)  /* max_position_embeddings */
/* Elements of one tensor: vocab_size x hidden_size, intermediate_size x hidden_size. */
#define SPRUCE_MAX_TENSOR       ((int64_t)1 << 36)
/* The attention window of layer `layer` (a query at position p sees the keys
 * at p - window < j <= p, masking_utils.py: sliding_window_overlay), 0 for
 * full causal attention. */
int spruce_config_layer_window(const spruce_config *c, int layer);

/* Parse config.json at path (a file, or a directory holding config.json).
 * SPRUCE_EIO when missing, SPRUCE_EFORMAT when malformed, a key is missing,
 * repeated, of the wrong type or beyond its bound (SPRUCE_MAX_*),
 * SPRUCE_EUNSUPPORTED for a model type or option this forward does not
 * implement (the message lists what is supported). */
int spruce_config_load(const char *path, spruce_config *cfg);
/* The same on JSON text; origin names it in messages. */
int spruce_config_parse(const char *json, const char *origin, spruce_config *cfg);

/* Sequences of T tokens are computed as Hugging Face computes them, also when
 * T exceeds max_position_embeddings.  Then this writes a warning for the
 * caller to print into buf (what the rotary embeddings do at that length) and
 * returns 1; 0 (buf untouched) when T is within the context.  OPT's learned
 * positions have no rows beyond it: the warning says so and the forward
 * refuses the sequence (SPRUCE_EINVAL naming embed_positions). */
int spruce_config_length_warning(const spruce_config *c, long T, char *buf, size_t size);

/* ---- one decoder block -------------------------------------------------- */

/* The seven linear projections of a block ("spruce_linear" is the runtime's
 * linear-layer object, see spruce_sparse.h). */
typedef enum {
    SPRUCE_PROJ_Q = 0,
    SPRUCE_PROJ_K,
    SPRUCE_PROJ_V,
    SPRUCE_PROJ_O,
    SPRUCE_PROJ_GATE,
    SPRUCE_PROJ_UP,
    SPRUCE_PROJ_DOWN,
    SPRUCE_NPROJ
} spruce_proj;

/* "self_attn.q_proj", "mlp.down_proj", ...: the LLaMA layout that today's
 * families share (a model's own names: its config's family, spruce_family.h). */
const char *spruce_proj_path(spruce_proj l);
/* "model.layers.<layer>.<path>.weight" (or ".bias") into buf, LLaMA layout. */
void spruce_proj_name(int layer, spruce_proj l, int bias, char *buf, size_t size);

/* The float32 weights of block `layer`.  w[l] is (rows[l], cols[l]) row-major,
 * b[l] is (rows[l]) or NULL. */
typedef struct {
    int layer;
    float *attn_norm;            /* (hidden) input_layernorm */
    float *attn_norm_b, *mlp_norm_b;   /* (hidden) the LayerNorms' biases (OPT), or NULL */
    float *mlp_norm;             /* (hidden) post_attention_layernorm (gemma:
                                  * pre_feedforward_layernorm) */
    float *q_norm, *k_norm;      /* (head_dim) self_attn.q_norm / k_norm, or NULL */
    float *post_attn_norm;       /* (hidden) gemma: on the attention's output, or NULL */
    float *post_mlp_norm;        /* (hidden) gemma: on the MLP's output, or NULL */
    float *w[SPRUCE_NPROJ];
    float *b[SPRUCE_NPROJ];
    int rows[SPRUCE_NPROJ];
    int cols[SPRUCE_NPROJ];
    /* Fused tensors (phi3's qkv_proj, gate_up_proj): fused[l] is 1 when w[l]
     * is rows of the tensor of an earlier layer (k, v inside q's; up inside
     * gate's), not an allocation of its own; w[lead] then holds every row. */
    unsigned char fused[SPRUCE_NPROJ];
    /* A mixture-of-experts block (spruce_config_layer_moe): w, b, rows, cols
     * of gate/up/down are NULL and 0; the router (nexperts, hidden) and per
     * expert e its gate expert[3 e] and up expert[3 e + 1] (moe_inter, hidden)
     * and down expert[3 e + 2] (hidden, moe_inter) instead.  0 and NULL in a
     * dense block. */
    int nexperts, expert_width;  /* expert_width: moe_intermediate_size */
    float *router;
    float **expert;
} spruce_block;

/* Where a linear layer's input can be observed.  q/k/v share one input, as do
 * gate/up. */
typedef enum {
    SPRUCE_SITE_QKV = 0,   /* rmsnorm(x) * attn_norm, (T, hidden) */
    SPRUCE_SITE_O,         /* attention output, (T, heads * head_dim) */
    SPRUCE_SITE_GATEUP,    /* rmsnorm(x) * mlp_norm, (T, hidden) */
    SPRUCE_SITE_DOWN,      /* silu(gate) * up, (T, intermediate) */
    SPRUCE_NSITES
} spruce_site;

spruce_site spruce_proj_site(spruce_proj l);

/* Called from the calling thread (outside any OpenMP region) with a site's
 * activations X (tokens, cols) row-major; a non-zero return stops the forward
 * and is returned by it. */
typedef int (*spruce_tap_fn)(void *ctx, spruce_site site, const float *X, int tokens, int cols);

/* Scratch space of the forward for up to max_seq sequences of max_T tokens
 * (the linear layers of a chunk of sequences run as one matrix product). */
typedef struct spruce_fwd_ws spruce_fwd_ws;
spruce_fwd_ws *spruce_fwd_ws_alloc(const spruce_config *c, int max_T, int max_seq);
void spruce_fwd_ws_free(spruce_fwd_ws *ws); /* NULL is a no-op */

/* How the forward's attention runs: row by row on OpenMP threads (small
 * heads, short sequences) or as two matrix products per head on BLAS (large
 * heads).  AUTO, the default, takes BLAS for head_dim >= 32 and T >= 64; the
 * two give the same result up to float rounding. */
typedef enum {
    SPRUCE_ATTENTION_AUTO = 0,
    SPRUCE_ATTENTION_ROWS = 1,
    SPRUCE_ATTENTION_BLAS = 2
} spruce_attention;

/* Choose the attention of the forwards run on ws; SPRUCE_EINVAL for NULL or
 * a value that is not a spruce_attention. */
int spruce_fwd_ws_set_attention(spruce_fwd_ws *ws, spruce_attention a);

/* Sequences of T tokens per chunk: about SPRUCE_FWD_TOKENS tokens, at least 1. */
#define SPRUCE_FWD_TOKENS 4096
int spruce_fwd_chunk(int T);

/* Run block b on nseq sequences x (nseq, T, hidden), each at positions
 * 0..T-1, updating x in place.  tap (may be NULL) sees the inputs of the
 * linear layers, (nseq * T, cols).  With stop_after a site (not -1), the
 * forward stops right after tapping it and x is left unchanged: calibration of
 * one group of layers costs no more than needed.  A NaN or infinity in the
 * block output or in what tap sees (weights so large that float32 overflows)
 * is SPRUCE_ENAN, x unchanged, the message naming the layer, the first tensor
 * of the block that holds one, the sequence and the position. */
int spruce_block_forward(const spruce_config *c, const spruce_block *b, float *x, int nseq,
                         int T, spruce_fwd_ws *ws, spruce_tap_fn tap, void *ctx,
                         int stop_after);

/* ---- the model ---------------------------------------------------------- */

typedef struct spruce_model spruce_model;

/* Open a checkpoint directory: parse config.json, map the safetensors, check
 * that every tensor the forward needs is present with the shape the config
 * implies (SPRUCE_ESHAPE / SPRUCE_ENOTFOUND naming file and tensor), read the
 * embedding, final norm and head to float32 (SPRUCE_ENAN on non-finite). */
int spruce_model_open(const char *dir, spruce_model **out);
/* The same on a checkpoint opened with spruce_ckpt_open_lazy: the modules of
 * a compressed-tensors checkpoint are decoded a block at a time when read,
 * never all at once (for run, eval and bench, which do not write the
 * checkpoint again); the decoder takes quantized ones' levels as they are. */
int spruce_model_open_lazy(const char *dir, spruce_model **out);
void spruce_model_free(spruce_model *m); /* NULL is a no-op */

const spruce_config *spruce_model_config(const spruce_model *m);
const spruce_ckpt *spruce_model_ckpt(const spruce_model *m);

/* Read every block to float32 once and keep it (small models, generation,
 * tests).  Afterwards the pipeline prunes these copies in place. */
int spruce_model_cache_blocks(spruce_model *m);

/* Block `layer` in float32: the cached copy, or freshly read from the mapped
 * files (SPRUCE_ENAN naming file and tensor for non-finite weights).  Give it
 * back with spruce_model_put_block, which frees only what is not cached. */
int spruce_model_get_block(spruce_model *m, int layer, spruce_block **out);
void spruce_model_put_block(spruce_model *m, spruce_block *b);

/* Choose the attention of the model's forwards (spruce_model_forward,
 * spruce_model_perplexity); SPRUCE_EINVAL as spruce_fwd_ws_set_attention. */
int spruce_model_set_attention(spruce_model *m, spruce_attention a);

/* x (T, hidden) = embed[ids] (Gemma: times embed_scale, rounded to the
 * embedding's dtype as Gemma2Model's normalizer is; OPT: plus the positional
 * rows 2..T+1); SPRUCE_EINVAL for an id outside the vocabulary or, for OPT, T
 * beyond max_position_embeddings. */
int spruce_model_embed(const spruce_model *m, const uint32_t *ids, int T, float *x);

/* logits (T, vocab) = head (rmsnorm(x) * norm) for x (T, hidden), then
 * soft-capped when final_softcap is set (Gemma: tanh(l / c) c); xn is
 * (T, hidden) scratch.  The head's float32 copy is made on the first call
 * (SPRUCE_ENOMEM when it cannot be): pruning, which needs no logits, never
 * holds it. */
int spruce_model_head(const spruce_model *m, const float *x, int T, float *xn, float *logits);

/* Full forward of one sequence: logits (T, vocab) row-major; SPRUCE_ENAN as
 * spruce_block_forward, or naming the final norm's output or the logits. */
int spruce_model_forward(spruce_model *m, const uint32_t *ids, int T, float *logits);

/* Activations the perplexity evaluation keeps at once by default: 2 GiB. */
#define SPRUCE_EVAL_ACT_BYTES ((size_t)2 << 30)

typedef void (*spruce_block_progress_fn)(void *ctx, int layer, int nlayers);

typedef struct {
    /* Bytes of activations kept at once (> 0): the windows beyond them are
     * evaluated in further passes over the blocks, and one window is always
     * kept.  Default SPRUCE_EVAL_ACT_BYTES. */
    size_t act_bytes;
    spruce_block_progress_fn progress;  /* after each block of each pass, or NULL */
    void *ctx;
    /* When not NULL, receives the logits of every position of every window,
     * in order (window 0 position 0 first): rows (rows, vocab) are positions
     * t0..t0+rows-1 of window w.  A non-zero return stops the evaluation and
     * is returned by it. */
    int (*logits)(void *ctx, size_t w, int t0, const float *rows_logits, int rows, int vocab);
    void *logits_ctx;
    /* The index of ids' first window in a larger text (a rank's share under
     * mpirun): messages name windows from it.  Default 0. */
    size_t first_window;
    /* When not NULL, receives the sum over windows and positions of the
     * negative log-likelihood (nats), the numerator of the mean. */
    double *nll_sum;
    /* SPRUCE_EVAL_BLAS (the default): the linear layers' float32 values.
     * Else their values as the runtime holds them in this type, a block at a
     * time: -1 the checkpoint's own (spruce_decode.h: SPRUCE_DECODE_OWN_DTYPE:
     * a compressed checkpoint's levels where they are quantized, bf16 for
     * BF16 weights) or SPRUCE_DT_F32, _BF16, _INT8, _INT4 (spruce_qmatrix.h;
     * symmetric grids).  The products run on OpenBLAS either way. */
    int dtype;
    int groupsize;   /* int4's columns per scale (0: 128) */
} spruce_eval_opts;

#define SPRUCE_EVAL_BLAS (-2)

void spruce_eval_opts_init(spruce_eval_opts *o);

/* Perplexity over the nwin = n / seqlen non-overlapping windows of ids:
 * exp(mean over windows and positions of the next-token negative
 * log-likelihood), each window predicting seqlen - 1 tokens.  Streams blocks,
 * keeping at most o->act_bytes of activations.  o may be NULL (the defaults);
 * SPRUCE_EINVAL for act_bytes 0; SPRUCE_ENAN as spruce_model_forward (the
 * sequence is the window). */
int spruce_model_perplexity_opts(spruce_model *m, const uint32_t *ids, size_t n, int seqlen,
                                 const spruce_eval_opts *o, double *ppl, int *nwin);

/* The same with the default budget and progress (may be NULL) called after
 * each block. */
int spruce_model_perplexity(spruce_model *m, const uint32_t *ids, size_t n, int seqlen,
                            spruce_block_progress_fn progress, void *ctx, double *ppl,
                            int *nwin);

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_MODEL_H */
