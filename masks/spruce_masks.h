/* spruce_masks.h: pruning masks in HDF5 files, and statistics over masks.
 *
 * The file (format_version 1), a schema users may rely on:
 *   - one dataset per pruned tensor at the root, named exactly as the tensor in
 *     the checkpoint ("model.layers.0.self_attn.q_proj.weight");
 *   - shape (rows, cols) = the weight's shape; element type the HDF5 enum that
 *     h5py reads as numpy bool: base H5T_NATIVE_INT8, FALSE = 0, TRUE = 1;
 *     TRUE = weight kept, FALSE = weight pruned (zero);
 *   - chunked (about 1 MiB per chunk), shuffle + deflate (level 4);
 *   - dataset attributes: "sparsity" (double, realised fraction pruned),
 *     "pattern" (string, "unstructured" or "N:M"), "method" (string),
 *     "loss" (double, only when known);
 *   - root attributes: "format" = "spruce-masks", "format_version" = 1, and how
 *     the masks were made (set by the writer's caller: "model", "method",
 *     "pattern", "sparsity", "nsamples", "seqlen", "damp", "blocksize",
 *     "spruce_version", "date"...).
 * Strings are fixed-length UTF-8 (h5py reads them as bytes; readers refuse
 * variable-length strings, which HDF5 1.10 reads unsafely).  Masks are
 * listed in the order written (link creation order is tracked), and the
 * links stay in the root group's header (at most 65535 masks; readers refuse
 * dense link storage).  Readers ignore root objects that are not datasets and
 * check every object header before HDF5 decodes it (doc/mask-files.md).
 *
 * A writer writes to a temporary name beside the final path ("<path>.tmp-<pid>")
 * and renames it into place on commit, so a crash never leaves a file that
 * looks complete.
 *
 * Every function returning int returns 0 or a negative SPRUCE_E* code with
 * spruce_errdetail() naming the file and the dataset.  Nothing prints: HDF5's
 * own error stack printing is switched off by this library. */
#ifndef SPRUCE_MASKS_H
#define SPRUCE_MASKS_H

#include <stddef.h>
#include <stdint.h>

#include "spruce_error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SPRUCE_MASKS_FORMAT "spruce-masks"
#define SPRUCE_MASKS_FORMAT_VERSION 1

/* ---- writing ------------------------------------------------------------ */

typedef struct spruce_maskfile spruce_maskfile;

/* Per-dataset attributes.  pattern: "unstructured" or e.g. "2:4" (NULL writes
 * "unstructured"); method: e.g. "sparsegpt" (NULL writes ""); sparsity: the
 * realised fraction pruned (a negative value means: compute it from keep);
 * loss written only when has_loss.  info itself may be NULL. */
typedef struct {
    const char *pattern;
    const char *method;
    double sparsity;
    double loss;
    int has_loss;
} spruce_mask_info;

/* Create path's temporary sibling and write the format attributes.  An
 * existing file at path is only replaced on commit. */
int spruce_maskfile_create(const char *path, spruce_maskfile **out);
/* Root attributes (an attribute of the same name is replaced). */
int spruce_maskfile_set_attr_string(spruce_maskfile *f, const char *key, const char *value);
int spruce_maskfile_set_attr_double(spruce_maskfile *f, const char *key, double value);
int spruce_maskfile_set_attr_int(spruce_maskfile *f, const char *key, int64_t value);
/* One mask; keep is (rows, cols) row-major, 1 = kept, 0 = pruned (any non-zero
 * byte counts as kept).  SPRUCE_EEXIST if name was already written. */
int spruce_maskfile_write(spruce_maskfile *f, const char *name, int64_t rows, int64_t cols,
                          const uint8_t *keep, const spruce_mask_info *info);
/* Close, flush to disk and rename into place; frees f whatever the outcome
 * (on failure the temporary file is removed, an existing file at path is
 * left as it was).  A failed write (a full disk) is SPRUCE_EIO naming path
 * and what the system said.  commit() is prepare() + publish() + free. */
int spruce_maskfile_commit(spruce_maskfile *f);
/* The two phases of commit, to publish the masks together with a checkpoint:
 * prepare() flushes, closes and fsyncs the temporary file and checks that
 * path can be taken (nothing visible changes); publish() renames it into
 * place, atomically replacing a file at path.  Neither frees f: abort() it
 * afterwards (after publish() that removes nothing). */
int spruce_maskfile_prepare(spruce_maskfile *f);
int spruce_maskfile_publish(spruce_maskfile *f);
/* Close, remove the temporary file and free f.  NULL is a no-op. */
void spruce_maskfile_abort(spruce_maskfile *f);
/* The temporary path being written (for tests and messages). */
const char *spruce_maskfile_temp_path(const spruce_maskfile *f);

/* ---- reading ------------------------------------------------------------ */

typedef struct spruce_maskreader spruce_maskreader;

/* What is known about one mask dataset. */
typedef struct {
    int64_t rows, cols;
    double sparsity;   /* the "sparsity" attribute; NaN when absent */
    double loss;       /* valid when has_loss */
    int has_loss;
    char pattern[32];  /* "" when absent */
    char method[64];   /* "" when absent */
} spruce_mask_meta;

typedef enum {
    SPRUCE_MASK_ATTR_STRING = 0,
    SPRUCE_MASK_ATTR_INT = 1,
    SPRUCE_MASK_ATTR_DOUBLE = 2,
    SPRUCE_MASK_ATTR_OTHER = 3 /* present but not a scalar string or number */
} spruce_mask_attr_type;

/* A root attribute.  For INT, d holds the value too; for DOUBLE, i is the
 * value truncated; s is always a printable form. */
typedef struct {
    const char *key;
    spruce_mask_attr_type type;
    const char *s;
    int64_t i;
    double d;
} spruce_mask_attr;

/* Open and validate: an HDF5 file whose root attribute format is
 * "spruce-masks" and whose format_version this library reads; every root
 * dataset is checked for rank 2 and the boolean element type.  SPRUCE_EFORMAT
 * for a file that is not HDF5, is truncated or is not a spruce mask file. */
int spruce_maskreader_open(const char *path, spruce_maskreader **out);
void spruce_maskreader_close(spruce_maskreader *r); /* NULL is a no-op */

const char *spruce_maskreader_path(const spruce_maskreader *r);
/* Masks in the order they were written (name order for files that did not
 * record creation order). */
int spruce_maskreader_count(const spruce_maskreader *r);
const char *spruce_maskreader_name_at(const spruce_maskreader *r, int i);
/* Index of name, or -1. */
int spruce_maskreader_find(const spruce_maskreader *r, const char *name);
/* Shape and attributes of mask name (SPRUCE_ENOTFOUND if absent). */
int spruce_maskreader_meta(const spruce_maskreader *r, const char *name, spruce_mask_meta *meta);
/* Read mask name into keep, (rows, cols) row-major with rows * cols bytes of
 * 0/1; meta may be NULL.  SPRUCE_EFORMAT for values other than 0 and 1. */
int spruce_maskreader_read(const spruce_maskreader *r, const char *name, uint8_t *keep,
                           spruce_mask_meta *meta);

/* Root attributes. */
int spruce_maskreader_nattrs(const spruce_maskreader *r);
const spruce_mask_attr *spruce_maskreader_attr_at(const spruce_maskreader *r, int i);
const spruce_mask_attr *spruce_maskreader_attr(const spruce_maskreader *r, const char *key);

/* ---- statistics (no HDF5; used by `spruce masks info/diff`) --------------- */

/* The N:M structure of a mask, N pruned of every M (what --pattern N:M
 * makes: 1:4 keeps 3 of every 4).  For each M in {2, 4, 8, 16} that divides
 * cols, N(M) is the fewest pruned weights in any aligned group
 * keep[r, g*M .. g*M+M-1]; M qualifies when N(M) >= 1 and at least half of
 * the groups prune exactly N(M) (so a random mask is not called N:M).  Of
 * those, the largest N/M is reported, then an exact one, then the smallest M.
 * exact says every group prunes exactly N (what an N:M pruner writes).
 * n = m = 0 when no M qualifies. */
typedef struct {
    int n, m;
    int exact;
} spruce_mask_nm;

typedef struct {
    int64_t rows, cols;
    int64_t kept;             /* number of TRUE */
    double sparsity;          /* 1 - kept / (rows * cols) */
    double row_min, row_mean, row_max;   /* sparsity of each row */
    int64_t block;            /* column block width (128 unless cols < 128) */
    int64_t nblocks;          /* ceil(cols / block) */
    double blk_min, blk_mean, blk_max;   /* sparsity of each column block, all rows */
    spruce_mask_nm nm;
} spruce_mask_stats;

/* Does keep ((rows, cols) row-major) prune at least n of every aligned group
 * of m?  1 when it does (*exact: exactly n in every group), 0 when not or
 * when m does not divide cols.  exact may be NULL. */
int spruce_mask_nm_check(const uint8_t *keep, int64_t rows, int64_t cols, int n, int m,
                         int *exact);

/* keep is (rows, cols) row-major; block 0 means 128. */
int spruce_mask_stats_compute(const uint8_t *keep, int64_t rows, int64_t cols, int64_t block,
                              spruce_mask_stats *st);

typedef struct {
    int64_t numel;
    int64_t kept_a, kept_b;
    int64_t shared;           /* kept in both */
    int64_t agree;            /* positions where the masks are equal */
    double agreement;         /* agree / numel */
    double jaccard;           /* shared / (kept_a + kept_b - shared); 1 when both keep nothing */
} spruce_mask_diff;

void spruce_mask_diff_compute(const uint8_t *a, const uint8_t *b, int64_t numel,
                              spruce_mask_diff *d);

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_MASKS_H */
