/* model_internal.h (internal): the model object, shared by weights.c (opening
 * and reading), forward.c (the forward) and perplexity.c. */
#ifndef SPRUCE_MODEL_INTERNAL_H
#define SPRUCE_MODEL_INTERNAL_H

#include "spruce_family.h"
#include "spruce_model.h"

struct spruce_model {
    spruce_config cfg;
    const spruce_family *fam;     /* == cfg.family */
    spruce_ckpt *ck;
    float *embed;                 /* (vocab, hidden) */
    float *norm;                  /* (hidden) */
    float *head;                  /* (vocab, hidden); == embed when tied */
    spruce_block **cache;         /* nlayers cached blocks, or NULL */
    spruce_attention attention;   /* how the forward's attention runs */
};

/* spruce_config_parse on len bytes (not NUL-terminated) of JSON: the entry
 * point of the fuzz target (tests/fuzz/fuzz_config.c). */
int spruce__config_parse_buffer(const char *buf, size_t len, const char *origin,
                                spruce_config *cfg);

/* Run every block over nseq sequences x (nseq, T, hidden) in place;
 * progress (may be NULL) after each block. */
int spruce__run_blocks(spruce_model *m, float *x, int nseq, int T,
                       spruce_block_progress_fn progress, void *ctx);

#endif /* SPRUCE_MODEL_INTERNAL_H */
