/* eval_logits.h: `spruce eval --logits OUT`: float32 little-endian logits,
 * [window][position][vocab], appended to a temporary file beside OUT and
 * renamed to OUT when every window is written. */
#ifndef SPRUCE_EVAL_LOGITS_H
#define SPRUCE_EVAL_LOGITS_H

#include <stddef.h>
#include <stdio.h>

typedef struct {
    const char *path;   /* OUT */
    char *tmp;          /* the temporary file beside it, NULL when closed */
    FILE *f;
} eval_logits;

/* Create the temporary file; 0 or a SPRUCE_E* code (spruce_errdetail names OUT). */
int eval_logits_open(eval_logits *o, const char *path);
/* spruce_eval_opts.logits: append rows (nrows, vocab), ctx an eval_logits. */
int eval_logits_write(void *ctx, size_t w, int t0, const float *rows, int nrows, int vocab);
/* Rename into place when ok, else remove the temporary file; 0 or SPRUCE_EIO.
 * A closed one (or one never opened) is a no-op. */
int eval_logits_close(eval_logits *o, int ok);

#endif /* SPRUCE_EVAL_LOGITS_H */
