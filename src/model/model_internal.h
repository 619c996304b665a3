/* model_internal.h (internal): the model object, shared by weights.c (opening
 * and reading), forward.c (the forward) and perplexity.c. */
#ifndef SPRUCE_MODEL_INTERNAL_H
#define SPRUCE_MODEL_INTERNAL_H

#include <pthread.h>

#include "spruce_ckpt.h"
#include "spruce_decode.h"
#include "spruce_family.h"
#include "spruce_model.h"
#include "spruce_qmatrix.h"
#include "spruce_sparse.h"

struct spruce_model {
    spruce_config cfg;
    const spruce_family *fam;     /* == cfg.family */
    spruce_ckpt *ck;
    float *embed;                 /* OPT only: (vocab, hidden) in float32, with
                                   * project_in: the embedding times project_in^T;
                                   * NULL elsewhere (embed_t is read by rows) */
    const spruce_tensor *embed_t; /* (vocab, hidden), in the file: read by rows; NULL for OPT */
    float *norm;                  /* (hidden); NULL when the config has no final norm */
    float *norm_b;                /* (hidden) the final LayerNorm's bias (OPT), or NULL */
    float *positions;             /* (max_position_embeddings + 2, hidden) OPT, or NULL */
    const spruce_tensor *head_t;  /* (vocab, hidden); == embed_t when tied; NULL for OPT */
    float *head;                  /* its float32 copy, NULL until logits are needed (OPT:
                                   * made at open, == embed when tied, with project_out:
                                   * the head times project_out) */
    pthread_mutex_t head_lock;    /* guards head's first conversion */
    spruce_block **cache;         /* nlayers cached blocks, or NULL */
    spruce_attention attention;   /* how the forward's attention runs */
};

/* x (T, hidden) = the embeddings of ids at positions pos0..pos0+T-1 (OPT:
 * plus the positional rows pos0 + t + 2; SPRUCE_EINVAL beyond the table). */
int spruce__model_embed_at(const spruce_model *m, const uint32_t *ids, int T, int pos0,
                           float *x);
/* *head = the head in float32 (vocab, hidden), converted on the first call;
 * SPRUCE_ENOMEM or SPRUCE_ENAN when it cannot be. */
int spruce__model_head(const spruce_model *m, const float **head);

/* spruce_config_parse on len bytes (not NUL-terminated) of JSON: the entry
 * point of the fuzz target (tests/fuzz/fuzz_config.c). */
int spruce__config_parse_buffer(const char *buf, size_t len, const char *origin,
                                spruce_config *cfg);

/* Run every block over nseq sequences x (nseq, T, hidden) in place;
 * progress (may be NULL) after each block.  seq0, the index of the first
 * sequence, is for messages (SPRUCE_ENAN naming the block, the tensor, the
 * sequence and the position of a non-finite activation). */
int spruce__run_blocks(spruce_model *m, float *x, int nseq, int T, int seq0,
                       spruce_block_progress_fn progress, void *ctx);
/* The same with the linear weights of each block in o->dtype, as the
 * runtime holds them (spruce__block_values), a block at a time. */
int spruce__run_blocks_values(spruce_model *m, float *x, int nseq, int T, int seq0,
                              const spruce_decode_opts *o, spruce_block_progress_fn progress,
                              void *ctx);

/* ---- the runtime's linear layers from a checkpoint (linears.c) ---- */

/* The value type that holds a quantized module's levels as they are (int4
 * for at most 4 bits in groups of 32..256, a multiple of 32, or per row;
 * int8 for more bits per row), -1 for none. */
int spruce__levels_dtype(const spruce_ckpt_qscheme *s, int64_t cols);
/* Rows [r0, r0 + rows) of quantized module t in that type: its levels,
 * scales and zero points as the checkpoint holds them. */
int spruce__levels_qmatrix(const spruce_tensor *t, const spruce_ckpt_qscheme *s, int dtype,
                           int r0, int rows, spruce_qmatrix **out);
/* The checkpoint's tensor behind linear l of block b (the fused one of q, k,
 * v: *r0 the row where l's part starts), or NULL. */
const spruce_tensor *spruce__linear_tensor(const spruce_model *m, const spruce_block *b, int l,
                                           int *r0);
/* Linear layer W (rows, cols) in the type asked (dtype: SPRUCE_DT_* or
 * SPRUCE_DECODE_OWN_DTYPE), from t's levels where t is a quantized module
 * whose levels a type holds and that type is asked or the checkpoint's own;
 * else W in the type asked (own: bf16 for a BF16 t, float32 for another,
 * dflt without t). */
int spruce__linear_make(int dtype, int dflt, const spruce_linear_opts *lo, const float *W,
                        int rows, int cols, const spruce_tensor *t, int r0, spruce_linear **out);

/* W (rows, cols) as the runtime would hold it in dtype (as
 * spruce__linear_make chooses: t's levels, or W converted; int8/int4 grids
 * symmetric, int4 in groups of groupsize), dequantized into V (rows, cols)
 * float32: the values the runtime's kernels multiply by. */
int spruce__linear_values(int dtype, int groupsize, const float *W, int rows, int cols,
                          const spruce_tensor *t, int r0, float *V);
/* v = block b with every linear weight (and the router and experts) replaced
 * by its values in o->dtype (its norms and biases shared with b): the
 * forward of v on OpenBLAS computes what the runtime's layers of that type
 * do, to float32 rounding.  _free frees what _values made. */
int spruce__block_values(const spruce_model *m, const spruce_block *b, const spruce_decode_opts *o,
                         spruce_block *v);
void spruce__block_values_free(spruce_block *v);

/* spruce_block_forward with seq0 the index of x's first sequence in
 * messages.  The block output (and what tap sees) is checked for NaN and
 * infinity; on SPRUCE_ENAN the block runs again checking every intermediate,
 * and the message names the first tensor holding one. */
int spruce__block_forward_at(const spruce_config *c, const spruce_block *b, float *x, int nseq,
                             int T, spruce_fwd_ws *ws, spruce_tap_fn tap, void *ctx,
                             int stop_after, int seq0);

/* spruce__block_forward_at with expert_tap (may be NULL) seeing the inputs
 * of each expert of a mixture-of-experts block: (ctx, expert, site GATEUP or
 * DOWN, X (tokens, cols)), the tokens routed to it, unweighted.  stop_after
 * SPRUCE_SITE_DOWN stops a MoE block after its experts (x unchanged). */
int spruce__block_forward_experts(const spruce_config *c, const spruce_block *b, float *x,
                                  int nseq, int T, spruce_fwd_ws *ws, spruce_tap_fn tap,
                                  void *ctx,
                                  int (*expert_tap)(void *ctx, int e, spruce_site site,
                                                    const float *X, int tokens, int cols),
                                  void *expert_ctx, int stop_after, int seq0);

/* spruce_model_head, then SPRUCE_ENAN when the final norm's output or the
 * logits hold a non-finite value (positions from pos0, sequence seq0). */
int spruce__head_checked(const spruce_model *m, const float *x, int T, float *xn,
                         float *logits, int pos0, int seq0);
/* The same for one position (T = 1, seq0 0) with the head as a linear layer
 * of the runtime (a decoder's, in its value type) instead of OpenBLAS on the
 * float32 head. */
struct spruce_linear;
int spruce__head_checked_linear(const spruce_model *m, const struct spruce_linear *head,
                                const float *x, float *xn, float *logits, int pos0);

#endif /* SPRUCE_MODEL_INTERNAL_H */
