/* opt.h: the pieces of OPT's decoder (transformers models/opt/modeling_opt.py)
 * that LLaMA's block has not: LayerNorm with weight and bias, the learned
 * positional embedding looked up at position + 2, ReLU, and the decoder
 * block (OPTDecoderLayer) in its pre- and post-norm forms on weights given one
 * by one.  The family row is family.c's "opt"; the model's forward runs the
 * same block (block.c) with the config's switches (spruce_config: layer_norm,
 * learned_positions, post_norm). */
#ifndef SPRUCE_OPT_H
#define SPRUCE_OPT_H

#include <stddef.h>

#include "block.h"

/* The row offset of OPT's positional table (OPTLearnedPositionalEmbedding:
 * the table has max_position_embeddings + 2 rows). */
#define SPRUCE__OPT_POS_OFFSET 2

/* torch.nn.LayerNorm over the last dimension, on x (T, n) into y (y may be x):
 *   mu = mean_j x_j,  var = mean_j (x_j - mu)^2 (biased),
 *   y_j = (x_j - mu) / sqrt(var + eps) * w_j + b_j;
 * w NULL: 1, b NULL: 0 (layer_norm_elementwise_affine false). */
void spruce__layernorm(float *y, const float *x, const float *w, const float *b, int T, int n,
                       double eps);

/* The rows of the positional table that OPTLearnedPositionalEmbedding reads
 * for a sequence of T tokens whose attention mask is mask (1 for a token, 0
 * for padding; NULL: no padding), the first `past` of them already cached:
 *   p_t = (sum_{s <= t} mask_s) * mask_t - 1,  row_t = p_t + 2,  t = past..T-1,
 * into rows[0 .. T-past-1].  Unpadded: row_t = t + 2; padding reads row 1. */
void spruce__opt_position_rows(int *rows, const int *mask, int T, int past);

/* x = max(x, 0) on n floats (activation_function "relu"). */
void spruce__relu(float *x, size_t n);

/* One OPT decoder block over whole sequences (positions 0..T-1).  Buffers are
 * (nseq * T, width): a, q, k, v, att, t (hidden), f (ffn); S is (T, T).  The
 * linear callback computes X W^T + b for SPRUCE_PROJ_Q, _K, _V, _O (out_proj),
 * _UP (fc1) and _DOWN (fc2); _GATE is never asked for. */
typedef struct {
    int hidden, heads, ffn;                /* head_dim = hidden / heads */
    int pre_norm;                          /* do_layer_norm_before */
    double eps;                            /* LayerNorm eps, 1e-5 */
    const float *attn_norm_w, *attn_norm_b;   /* self_attn_layer_norm, (hidden) or NULL */
    const float *mlp_norm_w, *mlp_norm_b;     /* the block's final_layer_norm */
    spruce__linear_fn linear;
    void *linear_ctx;
    float *a, *q, *k, *v, *att, *t, *f, *S;
} spruce__opt_block_run;

/* x (nseq * T, hidden) through OPTDecoderLayer, d = hidden / heads:
 *   pre-norm:  a = LN1(x);  q = (a Wq^T + bq) d^-0.5;  k, v = linears(a)
 *              x = x + out(softmax_causal(q k^T) v)
 *              x = x + fc2(relu(fc1(LN2(x))))
 *   post-norm: x = LN1(x + out(attention(x)));  x = LN2(x + fc2(relu(fc1(x))))
 * (OPTAttention scales q after its bias and not the scores; spruce scales the
 * scores by d^-0.5, the same up to float rounding).  Runs spruce__block with
 * an OPT config of these widths, the attention on BLAS (S is (T, T)); the
 * linear callback is asked for Q, K, V, O, UP and DOWN.  0, or a linear
 * layer's error (x is then partly updated). */
int spruce__opt_block(const spruce__opt_block_run *r, float *x, int nseq, int T);

#endif /* SPRUCE_OPT_H */
