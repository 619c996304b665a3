/* rope.h (internal): rotary embeddings as Hugging Face computes them
 * (modeling_rope_utils.py): rope_scaling parsed from config.json, the inverse
 * frequencies and attention factor of each rope type, and the cos/sin tables
 * the block's rotate-half RoPE reads (block.h: spruce__rope). */
#ifndef SPRUCE_ROPE_H
#define SPRUCE_ROPE_H

#include <jansson.h>

#include "spruce_model.h"

/* Read config.json's rope_scaling (root: the whole object) into c->rope;
 * c->rope_theta, c->head_dim and c->max_position_embeddings must be set.
 * SPRUCE_EFORMAT for a malformed value, SPRUCE_EUNSUPPORTED (listing what is)
 * for a rope type, key or option that is not implemented. */
int spruce__rope_parse(const json_t *root, const char *origin, spruce_config *c);

/* The sequence length the tables of a T-token sequence depend on: for
 * dynamic, max(T, max_position_embeddings) (the L of its formula); for every
 * other type 0 (the tables are the same for all lengths). */
long spruce__rope_table_len(const spruce_config *c, long T);

/* inv_freq (head_dim / 2) and the factor cos and sin are multiplied by
 * (*attention, 1 except for yarn), in double precision, for a sequence whose
 * spruce__rope_table_len is L (ignored unless dynamic). */
void spruce__rope_inv_freq(const spruce_config *c, long L, double *inv_freq, double *attention);

/* cos, sin (npos, head_dim / 2) for positions p0..p0+npos-1 of a sequence of
 * table length L: angle = pos * inv_freq in float32 as transformers computes
 * it, cos and sin times the attention factor.  0 or SPRUCE_ENOMEM. */
int spruce__rope_fill(const spruce_config *c, long L, int p0, int npos, float *cos, float *sin);

/* Gemma 3's sliding layers (modeling_gemma3.py: rotary_emb_local): the
 * default RoPE with base rope_local_theta and no rope_scaling.  Allocates and
 * fills cos, sin (npos, head_dim / 2) for positions 0..npos-1, or leaves both
 * NULL when c->rope_local_theta is 0.  0 or SPRUCE_ENOMEM. */
int spruce__rope_local_tables(const spruce_config *c, int npos, float **cos, float **sin);

#endif /* SPRUCE_ROPE_H */
