/* spruce_decode.h: token-by-token generation with a key/value cache, every
 * linear layer of the blocks run by the runtime's linear-layer object
 * (spruce_sparse.h): sparse where it measured faster, or dense OpenBLAS.
 *
 *   spruce_decoder *d;
 *   spruce_decoder_create(model, max_T, SPRUCE_DECODE_AUTO, &d);
 *   spruce_decoder_prefill(d, prompt, n, logits);   // logits of the next token (vocab)
 *   then per token:  spruce_decoder_step(d, id, logits);
 *   spruce_decoder_free(d);
 *
 * The same maths as spruce_model_forward (spruce_model.h), one position at a
 * time: x (hidden) at position pos attends to the cached keys and values of
 * positions 0..pos. */
#ifndef SPRUCE_DECODE_H
#define SPRUCE_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "spruce_error.h"
#include "spruce_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SPRUCE_DECODE_DENSE = 0,   /* every linear layer on dense OpenBLAS */
    SPRUCE_DECODE_AUTO = 1,    /* sparse formats where they measured faster at batch 1 */
    SPRUCE_DECODE_CSR = 2,     /* every linear layer in this format (tests, comparisons) */
    SPRUCE_DECODE_BITMASK = 3,
    SPRUCE_DECODE_NM = 4       /* the layers must follow 2:4 */
} spruce_decode_mode;

typedef struct spruce_decoder spruce_decoder;

/* The value type of the linear layers: the checkpoint's own. */
#define SPRUCE_DECODE_OWN_DTYPE (-1)

typedef struct {
    spruce_decode_mode mode;
    /* SPRUCE_DECODE_OWN_DTYPE (the default): the checkpoint's own type, bf16
     * for BF16 linear weights (held as bf16, never as a float32 copy), float32
     * for F32 and F16, and for a compressed-tensors checkpoint opened lazily
     * (spruce_model_open_lazy) each quantized layer's own levels: int8 per
     * row, int4 in groups (the head and the layers left dense in their own
     * type); or a type of spruce_qmatrix.h (SPRUCE_DT_F32, _BF16, _INT8,
     * _INT4) to convert to, when the user asks (levels of that type are taken
     * as they are).  The head follows (int4: int8 per row); the embedding is
     * read from the file as before. */
    int dtype;
    int groupsize;   /* int4 (0: 128) */
    int asym;        /* int8/int4 grids with zero points (default symmetric) */
} spruce_decode_opts;

/* AUTO, the checkpoint's own type, groups of 128, symmetric. */
void spruce_decode_opts_init(spruce_decode_opts *o);

/* Read every block of m, build the linear layers (AUTO times the candidate
 * formats of each once, among those of its value type) and a cache for
 * max_T positions.  SPRUCE_EUNSUPPORTED for CSR with other values than
 * float32. */
int spruce_decoder_create_opts(spruce_model *m, int max_T, const spruce_decode_opts *o,
                               spruce_decoder **out);
/* The same with the defaults and mode. */
int spruce_decoder_create(spruce_model *m, int max_T, spruce_decode_mode mode,
                          spruce_decoder **out);
/* Block layer's linear layer proj (spruce_proj: q, k, v, o, gate, up, down),
 * NULL when it has none (fused tensors, a mixture of experts' MLP). */
struct spruce_linear;
const struct spruce_linear *spruce_decoder_linear(const spruce_decoder *d, int layer, int proj);
/* The linear layers' value type (SPRUCE_DT_*). */
int spruce_decoder_dtype(const spruce_decoder *d);
/* Bytes the decoder's weights take as held: every linear layer (all of its
 * kept representations) and the head (float32 when the type is, as the
 * model holds it). */
size_t spruce_decoder_weight_bytes(const spruce_decoder *d);
void spruce_decoder_free(spruce_decoder *d); /* NULL is a no-op */

/* Forget the cached positions (and the experts' seconds). */
void spruce_decoder_reset(spruce_decoder *d);
/* A mixture of experts: the wall seconds spent in the experts' linear layers
 * (gate, up and down of the chosen experts, not the routers) since create or
 * reset; 0 for other models. */
double spruce_decoder_expert_seconds(const spruce_decoder *d);
/* Positions cached so far. */
int spruce_decoder_pos(const spruce_decoder *d);
/* Linear layers running a sparse format at batch 1, of spruce_decoder_linear_layers. */
int spruce_decoder_sparse_layers(const spruce_decoder *d);
/* Linear-layer objects of the decoder: 7 per block (fewer with fused tensors),
 * a mixture of experts 4 + 1 (the router, always dense) + 3 per expert. */
int spruce_decoder_linear_layers(const spruce_decoder *d);

/* Feed token id at the next position; logits (vocab), if not NULL, receives
 * the scores of the token after it.  SPRUCE_EINVAL for an id outside the
 * vocabulary or a full cache; SPRUCE_ENAN when an activation or the logits
 * hold a NaN or an infinity (weights so large that float32 overflows), the
 * message naming the layer and the tensor where it first appears. */
int spruce_decoder_step(spruce_decoder *d, uint32_t id, float *logits);

/* Feed a prompt ids[0..n) at the next positions; logits (may be NULL) as the
 * last step's.  The same as stepping each id, except where the rotary
 * embeddings depend on the sequence length (rope_scaling dynamic beyond
 * max_position_embeddings): then the whole prompt rotates with the
 * frequencies of its length, as transformers' generate computes a prompt in
 * one forward; spruce_decoder_step alone gives each position those of the
 * sequence up to it. */
int spruce_decoder_prefill(spruce_decoder *d, const uint32_t *ids, int n, float *logits);

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_DECODE_H */
