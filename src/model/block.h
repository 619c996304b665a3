/* block.h (internal): the maths of a decoder block, once, for the full forward
 * (forward.c: T tokens per sequence, batched sequences, BLAS linears) and for
 * token-by-token decoding (decode.c: T = 1 at a position offset, the runtime's
 * linear layers, a key/value cache).
 *
 * Every function works on rows: x is (ntok, n) row-major with ntok = nseq * T,
 * token t of a chunk at position pos0 + t % T.  Loops run on OpenMP threads
 * when they are large enough (PAR_MIN elements) and on the calling thread
 * otherwise, so that one decoding step never wakes the team for a few hundred
 * floats.  No function here calls BLAS from inside an OpenMP region. */
#ifndef SPRUCE_BLOCK_H
#define SPRUCE_BLOCK_H

#include <stddef.h>

#include "spruce_model.h"

/* Loops with fewer elements than this run on the calling thread: waking the
 * team costs more than the work. */
#define SPRUCE__PAR_MIN 32768L

/* Threads an OpenMP region may use (1 without OpenMP). */
int spruce__max_threads(void);

/* 0 when a is a spruce_attention, else SPRUCE_EINVAL naming it. */
int spruce__check_attention(spruce_attention a);

/* y[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w;  x, y are (T, n), y may be x. */
void spruce__rmsnorm(float *y, const float *x, const float *w, int T, int n, double eps);

/* The same with weights (w + off): off 1 for Gemma's norms, whose stored
 * weight w is applied as (1 + w) (modeling_gemma2.py: Gemma2RMSNorm). */
void spruce__rmsnorm_off(float *y, const float *x, const float *w, float off, int T, int n,
                         double eps);

/* Y (T, rows) += b (rows) on every row. */
void spruce__add_bias(float *Y, const float *b, int T, int rows);

/* y += x, n floats. */
void spruce__add(float *y, const float *x, size_t n);

/* g = silu(g) * u, n floats (the SiLU-gated MLP's activation). */
void spruce__swiglu(float *g, const float *u, size_t n);

/* gelu with the tanh approximation (gelu_pytorch_tanh):
 * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in float32. */
float spruce__gelu_tanh(float x);

/* tanh(x), float32, branch-free rational form (vectorizes); NaN stays NaN,
 * +-inf gives +-1. */
float spruce__tanhf(float x);

/* x = tanh(x / cap) cap on n floats (Gemma's final-logit soft-cap). */
void spruce__softcap(float *x, size_t n, float cap);

/* g = gelu_tanh(g) * u, n floats (Gemma's gated MLP, Gemma2MLP). */
void spruce__geglu(float *g, const float *u, size_t n);

/* The RoPE tables (cos, sin for each position) come from rope.h. */

/* Rotate-half RoPE in place on the first rd dims of each head of x
 * (ntok, nheads * d), token t at position pos0 + t % T: for i < rd/2,
 * (x_i, x_{i+rd/2}) -> (x_i cos - x_{i+rd/2} sin, x_{i+rd/2} cos + x_i sin),
 * dims rd..d-1 unchanged (phi3's partial rotary; rd = d elsewhere).  cos,
 * sin have rows of d / 2 floats per position, the first rd / 2 used. */
void spruce__rope(float *x, int ntok, int T, int pos0, int nheads, int d, int rd,
                  const float *cos, const float *sin);

/* Keys and values by position: for sequence s and kv head g, kt + (s * KV + g)
 * * d * ld is (d, ld), column j the key of position j (likewise vt), so that
 * the attention's inner loops run over contiguous positions.  ld is a multiple
 * of 8 (the attention reads whole groups of 8 positions). */
typedef struct {
    float *kt, *vt;
    size_t ld;
} spruce__kv;

/* Round n up to a multiple of 8: the ld of a cache for n positions. */
static inline size_t spruce__kv_ld(size_t n)
{
    return (n + 7) / 8 * 8;
}

/* Store k, v (nseq * T, KV * d) at positions pos0..pos0+T-1 of each
 * sequence's columns, and zero the columns up to the next multiple of 8. */
void spruce__kv_store(const spruce__kv *kv, const float *k, const float *v, int nseq, int T,
                      int pos0, int KV, int d);

/* Causal attention on OpenMP threads, one query row at a time: for query
 * token i of sequence s (position pos0 + i) and head h (kv head
 * g = h / (H / KV)),
 *   att_h = softmax_j(q_h . k_j / sqrt(d)) v_j over the positions j <= pos0 + i
 * with q, att (nseq * T, H * d) and the keys and values in kv.  scratch holds
 * nthreads rows of kv->ld floats; at most nthreads threads run. */
void spruce__attention_rows(const spruce__kv *kv, const float *q, float *att, int nseq, int T,
                            int pos0, int H, int KV, int d, float *scratch, int nthreads);

/* What the attention of a layer does besides softmax(q k) v: the scale of
 * the scores, their soft-cap s -> tanh(s / softcap) softcap (0: none, Gemma 2's
 * attn_logit_softcapping, before the mask) and the window: a query at
 * position p sees the keys at p - window < j <= p (0: every j <= p;
 * masking_utils.py: sliding_window_overlay). */
typedef struct {
    float scale, softcap;
    int window;
} spruce__attn;

/* scale 1 / sqrt(d), no soft-cap, no window. */
void spruce__attn_default(spruce__attn *a, int d);

/* spruce__attention_rows with a's scale, soft-cap and window. */
void spruce__attention_rows_opts(const spruce__kv *kv, const float *q, float *att, int nseq,
                                 int T, int pos0, int H, int KV, int d, const spruce__attn *a,
                                 float *scratch, int nthreads);

/* The same at positions 0..T-1 on BLAS, per sequence and head two matrix
 * products: for large heads and long sequences.  k, v are (nseq * T, KV * d);
 * S is (T, T) scratch (its masked upper half is computed and discarded). */
void spruce__attention_blas(const float *q, const float *k, const float *v, float *att,
                            int nseq, int T, int H, int KV, int d, float *S);
void spruce__attention_blas_opts(const float *q, const float *k, const float *v, float *att,
                                 int nseq, int T, int H, int KV, int d, const spruce__attn *a,
                                 float *S);

/* The first element of x (ntok, n) that is NaN or infinite, as its row and
 * column (0 and -1 when every element is finite); a branch-free scan that
 * costs a small fraction of the matrix product the values come from. */
int spruce__first_nonfinite(const float *x, size_t ntok, size_t n, size_t *row, size_t *col);

/* SPRUCE_ENAN "<what>: non-finite value (nan|inf|-inf) at position P[ of
 * sequence S]" for the first non-finite element of x (ntok, n) of nseq
 * sequences of T tokens, sequence 0 being seq0 and each starting at
 * position pos0; 0 when there is none. */
int spruce__check_rows(const float *x, int ntok, int n, int T, int pos0, int seq0,
                       const char *what);

/* Y (ntok, rows) = X (ntok, cols) W_l^T + b_l for linear l of the block. */
typedef int (*spruce__linear_fn)(void *ctx, spruce_proj l, const float *X, int ntok, float *Y);

/* Y (ntok, rows) = X (ntok, cols) W^T for a mixture-of-experts block's
 * router (e = -1, k = 0) or expert e's gate (k 0), up (1) or down (2). */
typedef int (*spruce__expert_fn)(void *ctx, int e, int k, const float *X, int ntok, float *Y);

/* Sees expert e's inputs: X (tokens, cols) at site GATEUP (the tokens routed
 * to e, rows of the MLP norm's output, unweighted) or DOWN (silu(gate) * up
 * of those tokens); tokens >= 1.  A non-zero return stops the block. */
typedef int (*spruce__expert_tap_fn)(void *ctx, int e, spruce_site site, const float *X,
                                     int tokens, int cols);

/* The router's choice for ntok tokens (modeling_mixtral.py:
 * MixtralSparseMoeBlock; modeling_qwen3_moe.py: Qwen3MoeSparseMoeBlock):
 * p (ntok, E) holds the router logits and is replaced by their softmax over
 * all E experts; sel (ntok, k) receives the k most probable experts of each
 * token, most probable first (the lower index first on a tie, as torch.topk
 * on CPU), and w (ntok, k) their probabilities, divided by their sum when
 * renorm. */
void spruce__moe_route(float *p, int ntok, int E, int k, int renorm, int *sel, float *w);

/* Everything one block needs besides its input.  Buffers are (ntok, width):
 * a (hidden), q (H d), k, v (KV d), att (H d), t (hidden), g, u (inter), and
 * h (hidden), the residual stream, which may be x itself (decoding: x is
 * updated as it goes) or a copy (the forward: x is written back at the end,
 * so a forward stopped early leaves it unchanged). */
typedef struct {
    const spruce_config *c;
    const float *attn_norm, *mlp_norm;     /* (hidden) */
    const float *attn_norm_b, *mlp_norm_b; /* (hidden) OPT: the LayerNorms' biases, or NULL */
    const float *q_norm, *k_norm;          /* (head_dim) per-head norms of q, k, or NULL */
    const float *post_attn_norm;           /* (hidden) gemma: norm of o's output, or NULL */
    const float *post_mlp_norm;            /* (hidden) gemma: norm of down's output, or NULL */
    int window;                            /* the layer's attention window, 0: none */
    spruce__linear_fn linear;
    void *linear_ctx;
    const float *cos, *sin;                /* RoPE tables from position 0 */
    int pos0;                              /* position of each sequence's first token */
    int blas_attention;                    /* attention on BLAS (pos0 must be 0) */
    spruce__kv kv;                         /* rows attention: where keys and values go */
    float *scores;                         /* rows: (nthreads, kv.ld); BLAS: (T, T) */
    int nthreads;
    float *a, *q, *k, *v, *att, *h, *t, *g, *u;
    /* Non-finite values (a weight so large that the activations overflow):
     * the block output, and the inputs tap sees, are always checked; with
     * locate every intermediate is, so that the message names the first
     * tensor that holds one ("layer 3 mlp.down_proj output: ...").  layer and
     * seq0 (the index of the first sequence) are for the message. */
    int locate;
    int layer, seq0;
    /* A mixture-of-experts MLP (r->moe, spruce_config_layer_moe): the router
     * and experts go through expert (with linear_ctx), each expert on only the
     * tokens routed to it; expert_tap (may be NULL) sees their inputs.
     * Scratch: moe_x, moe_y (ntok, hidden), moe_p (ntok, experts), moe_w and
     * moe_sel (ntok, top-k), moe_tok (ntok * top-k); g and u then hold
     * (ntok, moe_intermediate_size). */
    int moe;
    spruce__expert_fn expert;
    spruce__expert_tap_fn expert_tap;
    void *expert_tap_ctx;
    float *moe_x, *moe_y, *moe_p, *moe_w;
    int *moe_sel, *moe_tok;
} spruce__block_run;

/* The MoE MLP of r on a (ntok, hidden) = r->a: r->t (ntok, hidden) = the sum
 * over each token's chosen experts of w_e down_e(silu(gate_e a) * up_e a).
 * Returns 0, an expert's or the tap's non-zero return, or SPRUCE_ENAN (with
 * r->locate: naming the first expert output holding one). */
int spruce__moe_mlp(const spruce__block_run *r, int ntok, int T);

/* x (nseq * T, hidden) through one LLaMA decoder block (modeling_llama.py:
 * LlamaDecoderLayer; modeling_qwen3.py: Qwen3Attention adds the per-head
 * norms, q_h = rmsnorm(q_h) * q_norm and likewise k, before RoPE):
 *   a = rmsnorm(x) * attn_norm;  q, k, v = linears(a);  [q/k norms];  RoPE(q, k)
 *   att = causal attention;  h = x + o(att)
 *   a = rmsnorm(h) * mlp_norm;  g = silu(gate(a)) * up(a);  x = h + down(g)
 * and as c says for Gemma (modeling_gemma2.py: Gemma2DecoderLayer): norm
 * weights (1 + w), scores scaled by c->attn_scale and soft-capped, the
 * window r->window, gelu_tanh for silu, and h = x + post_attn_norm(o(att)),
 * x = h + post_mlp_norm(down(g)).
 * OPT (modeling_opt.py: OPTDecoderLayer; c->layer_norm, learned_positions,
 * act RELU): LayerNorms with biases for the RMSNorms, no RoPE, the MLP
 * fc2(relu(fc1(a))) in the up and down slots (g holds relu(fc1)), and with
 * c->post_norm the post-norm block: q/k/v read x itself,
 *   h = LN1(x + o(att));  x = LN2(h + fc2(relu(fc1(h)))).
 * tap (may be NULL) sees the input of each group of linear layers; with
 * stop_after a site (not -1) the block stops right after tapping it and x is
 * unchanged (when r->h is not x).  Returns 0, a linear layer's error, the
 * tap's non-zero return, or SPRUCE_ENAN for a non-finite value (see locate);
 * x is then unchanged when r->h is not x, and the block can be run again with
 * locate to name the tensor. */
int spruce__block(const spruce__block_run *r, float *x, int nseq, int T, spruce_tap_fn tap,
                  void *ctx, int stop_after);

#endif /* SPRUCE_BLOCK_H */
