/* spruce_ckpt_masks.h: masks between checkpoints and HDF5 mask files.
 *
 *   selection   which tensors of a checkpoint have a mask (spruce_mask_selector)
 *   export      checkpoint -> mask file: kept = value != 0 (-0.0 is zero)
 *   apply       checkpoint + mask file -> a new checkpoint with the pruned places
 *               set to zero, written atomically through the checkpoint writer
 *   summary     what the masks of a file look like (behind `spruce masks info`)
 *   comparison  how the masks of two files agree (behind `spruce masks diff`)
 *
 * Files are read and written through spruce_ckpt.h and spruce_masks.h only.
 * Every function returning int returns 0 or a negative SPRUCE_E* code with
 * spruce_errdetail() naming the file and the tensor; nothing prints. */
#ifndef SPRUCE_CKPT_MASKS_H
#define SPRUCE_CKPT_MASKS_H

#include <stdint.h>

#include "spruce_ckpt.h"
#include "spruce_masks.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- selection ---------------------------------------------------------- */

/* A tensor is selected when it is 2-D (a mask is (rows, cols)), no exclude
 * pattern matches its name, it is a default tensor (unless set_all), and, when
 * include patterns were given, at least one of them matches.  The default
 * tensors are the linear layers: for a known family those its table names
 * (spruce_family_is_linear), otherwise every tensor whose name is not an
 * embedding or the output head (embed_tokens, embed_positions, embedding(s),
 * wte, wpe, lm_head as a name component).  Patterns are POSIX extended regular
 * expressions searched anywhere in the name, compiled once when added. */
typedef struct spruce_mask_selector spruce_mask_selector;

/* The default selection.  model_type: config.json's model_type when known
 * (NULL otherwise), for the family's own table of linear layers. */
int spruce_mask_selector_alloc(const char *model_type, spruce_mask_selector **out);
/* Make the default selection that of checkpoint ck: the table of its
 * config.json's model_type when that file reads and names a known family,
 * else the name rule. */
int spruce_mask_selector_use_ckpt(spruce_mask_selector *s, const spruce_ckpt *ck);
void spruce_mask_selector_free(spruce_mask_selector *s); /* NULL is a no-op */
/* Add a pattern: SPRUCE_EINVAL naming the pattern when it does not compile. */
int spruce_mask_selector_include(spruce_mask_selector *s, const char *regex);
int spruce_mask_selector_exclude(spruce_mask_selector *s, const char *regex);
/* all != 0: every 2-D tensor is a candidate, not only the default ones. */
void spruce_mask_selector_set_all(spruce_mask_selector *s, int all);
/* 1 if t is selected, 0 if not. */
int spruce_mask_selector_match(const spruce_mask_selector *s, const spruce_tensor *t);

/* ---- export and apply --------------------------------------------------- */

typedef enum {
    SPRUCE_CKPT_MASKS_DONE = 0,      /* a mask was written (export) or applied (apply) */
    SPRUCE_CKPT_MASKS_NO_TENSOR = 1, /* apply, partial: a mask without a tensor, skipped */
    SPRUCE_CKPT_MASKS_NO_MASK = 2    /* apply, partial: a selected tensor without a mask,
                                      * copied unchanged */
} spruce_ckpt_masks_event;

/* What the progress callback is told, once per tensor or mask. */
typedef struct {
    spruce_ckpt_masks_event event;
    const char *name;            /* tensor or mask name */
    int64_t rows, cols;          /* DONE: the shape */
    int64_t params, zeros;       /* DONE: weights, and of those pruned */
    double sparsity;             /* DONE: zeros / params */
    const char *pattern;         /* DONE, export: the "pattern" written ("2:4", "unstructured") */
} spruce_ckpt_masks_progress;

typedef struct {
    /* Which tensors have masks; NULL = spruce_mask_selector_alloc(NULL, ...). */
    const spruce_mask_selector *select;
    /* export: the root attributes "method" (also each mask's; NULL = "unknown"),
     * "model" (NULL = the checkpoint's directory) and "source" (NULL =
     * "spruce_ckpt_masks_export"); "spruce_version" and "date" are always set. */
    const char *method, *model, *source;
    /* apply: allow masks without a tensor and selected tensors without a mask
     * (reported through progress and skipped); shapes must match regardless. */
    int partial;
    /* apply: replace an existing non-empty output directory. */
    int force;
    /* Optional.  A non-zero return stops the operation, which leaves nothing
     * behind and returns that value. */
    int (*progress)(void *ctx, const spruce_ckpt_masks_progress *p);
    void *ctx;
} spruce_ckpt_masks_opts;

void spruce_ckpt_masks_opts_init(spruce_ckpt_masks_opts *o);

typedef struct {
    int tensors;                 /* masks written (export) or applied (apply) */
    int skipped;                 /* apply: masks without a tensor */
    int unmasked;                /* apply: selected tensors without a mask */
    int64_t params;              /* weights of those tensors */
    int64_t zeros;               /* export: zero in the checkpoint; apply: pruned by the masks */
} spruce_ckpt_masks_result;

/* Write the masks of the selected tensors of ck to the mask file path
 * (replaced atomically; tensors with no elements are skipped).  Each mask's
 * "pattern" is "N:M" when every aligned group of M prunes exactly N, else
 * "unstructured".  SPRUCE_ENOTFOUND when no tensor is selected: nothing is
 * written.  res may be NULL. */
int spruce_ckpt_masks_export(const spruce_ckpt *ck, const char *path,
                             const spruce_ckpt_masks_opts *o, spruce_ckpt_masks_result *res);

/* Write a copy of ck to outdir with exactly the pruned places of the masks of
 * r set to zero (all bytes of the element cleared: +0.0 in every float dtype);
 * every other byte of every file is identical.  Checked before anything is
 * written: every mask has a tensor of the same shape (ESHAPE names the tensor,
 * both files and both shapes) and every selected tensor has a mask
 * (ENOTFOUND), unless o->partial.  On any failure outdir is left as it was.
 * res may be NULL. */
int spruce_ckpt_masks_apply(const spruce_ckpt *ck, const spruce_maskreader *r,
                            const char *outdir, const spruce_ckpt_masks_opts *o,
                            spruce_ckpt_masks_result *res);

/* keep[i] = element i of t is not zero, by its bits: for float dtypes every bit
 * but the sign bit clear is zero, for other dtypes every bit clear.  keep holds
 * spruce_tensor_numel(t) bytes. */
void spruce_ckpt_masks_keep(const spruce_tensor *t, uint8_t *keep);

/* ---- summary of a mask file (spruce masks info) -------------------------- */

typedef struct {
    const char *name;            /* the reader's: valid while it is open */
    spruce_mask_meta meta;
    spruce_mask_stats stats;     /* stats.nm: the file's "pattern" when the mask conforms */
    int nm_recorded;             /* stats.nm is the file's pattern, checked (else the data's) */
} spruce_masks_summary_entry;

typedef struct {
    int count;
    spruce_masks_summary_entry *masks; /* count entries, in the file's order */
    int64_t numel, kept;         /* over every mask */
    double sparsity;             /* 1 - kept / numel; NaN when numel is 0 */
    int any_loss;                /* some mask has a "loss" attribute */
} spruce_masks_summary;

/* Statistics of every mask of r with column blocks of block (0 = 128).  On
 * failure s is empty.  Free with spruce_masks_summary_clear. */
int spruce_masks_summarize(const spruce_maskreader *r, int64_t block, spruce_masks_summary *s);
void spruce_masks_summary_clear(spruce_masks_summary *s); /* NULL is a no-op */

/* ---- comparison of two mask files (spruce masks diff) -------------------- */

typedef struct {
    const char *name;            /* a's: valid while it is open */
    int64_t rows, cols;
    spruce_mask_diff diff;
} spruce_masks_comparison_entry;

typedef struct {
    int count;                   /* masks in both, in a's order */
    spruce_masks_comparison_entry *masks;
    int n_only_a, n_only_b;      /* names (the readers') of masks in one file only */
    const char **only_a, **only_b;
    spruce_mask_diff total;      /* over the masks in both; agreement and jaccard 1 when empty */
} spruce_masks_comparison;

/* Compare every mask present in both a and b.  SPRUCE_ESHAPE naming the mask
 * and both files when its shapes differ.  On failure c is empty.  Free with
 * spruce_masks_comparison_clear. */
int spruce_masks_compare(const spruce_maskreader *a, const spruce_maskreader *b,
                         spruce_masks_comparison *c);
void spruce_masks_comparison_clear(spruce_masks_comparison *c); /* NULL is a no-op */

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_CKPT_MASKS_H */
