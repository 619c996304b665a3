/* spruce_ckpt.h: Hugging Face checkpoint directories (config.json + safetensors).
 *
 * A checkpoint is a directory with model.safetensors, or shards listed in
 * model.safetensors.index.json.  Files are memory-mapped and every header is
 * validated on open (header length, JSON, dtype, shape against byte range,
 * ranges inside the file and not overlapping).  Tensors keep their on-disk
 * dtype; spruce_tensor_read_f32() converts F32/F16/BF16 to float32.
 *
 * The writer produces a checkpoint in the same layout: same tensor names,
 * dtypes, shards, index and __metadata__, every other file of the directory
 * copied.  It writes into a temporary directory beside the output and renames
 * it when spruce_ckpt_writer_commit() succeeds, so a crash never leaves half a
 * checkpoint.  Errors are negative SPRUCE_E* codes with spruce_errdetail()
 * naming the file and tensor. */
#ifndef SPRUCE_CKPT_H
#define SPRUCE_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "spruce_error.h"
#include "spruce_half.h"
#include "spruce_qgrid.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SPRUCE_DTYPE_F32 = 0,
    SPRUCE_DTYPE_F16 = 1,
    SPRUCE_DTYPE_BF16 = 2,
    SPRUCE_DTYPE_OTHER = 3 /* kept byte-for-byte, but cannot be read as float */
} spruce_dtype;

#define SPRUCE_MAX_DIMS 8

typedef struct {
    const char *name;
    spruce_dtype dtype;
    const char *dtype_name;           /* as written in the file, e.g. "BF16", "I64" */
    int ndim;
    int64_t shape[SPRUCE_MAX_DIMS];
    const void *data;                 /* inside the mapped file; may be unaligned */
    size_t nbytes;
    int shard;                        /* index of the file that holds it */
    /* A compressed-tensors module of a lazily opened checkpoint
     * (spruce_ckpt_open_lazy): data is NULL, the values are decoded when read;
     * NULL for every other tensor. */
    const struct spruce__ct_lazy *lazy;
} spruce_tensor;

/* An open checkpoint is read-only: tensors (valid until close) and every read
 * function may be used from several threads at once. */
typedef struct spruce_ckpt spruce_ckpt;

/* dir: a checkpoint directory (or a single .safetensors file: see _open_file). */
int spruce_ckpt_open(const char *dir, spruce_ckpt **out);
void spruce_ckpt_close(spruce_ckpt *c); /* NULL is a no-op */
/* The same, except that the modules of a compressed-tensors checkpoint are
 * not decoded when it opens: each M.weight (its shape and the dtype it
 * decodes to, its parts' headers and grid checked) has data NULL and nbytes
 * its decoded size; spruce_tensor_read_f32 and _range decode it when called,
 * and a quantized one gives its integer levels (spruce_ckpt_read_levels).
 * So nothing dense of the whole model is ever held: for the runtime, which
 * reads a module at a time.  (Whatever needs the bytes, as the writer does,
 * opens with spruce_ckpt_open.)  The decoded module last read is kept until
 * another is read or it is released (spruce_ckpt_release, or a release range
 * reaching its end), so that reading it a range at a time decodes it once. */
int spruce_ckpt_open_lazy(const char *dir, spruce_ckpt **out);

/* A quantized module of a lazily opened checkpoint. */
typedef struct {
    int bits;        /* 2 to 8 */
    int groupsize;   /* columns per scale; 0: one scale per row */
    int sym;         /* 1: no zero points */
    int sparse;      /* 0 dense, 1 sparse-bitmask, 2 sparse-24-bitmask */
} spruce_ckpt_qscheme;

/* 1 (and *s filled when s is not NULL) when t is a quantized module of a
 * lazily opened checkpoint, else 0. */
int spruce_ckpt_quantized(const spruce_tensor *t, spruce_ckpt_qscheme *s);
/* Its levels: q (rows, cols) signed integers of the bits (0 where the
 * sparsity layout pruned), scale (rows, ngroups) float32 and zero (rows,
 * ngroups) signed, or NULL when symmetric; w = (q - zero) scale, groups of
 * groupsize columns (ngroups = cols / groupsize, 1 when per row).  All
 * malloc'ed; the caller frees them.  Errors name the file and tensor (a
 * scale 0 or NaN, a level outside the bits, a bitmask and values that
 * disagree). */
int spruce_ckpt_read_levels(const spruce_tensor *t, int8_t **q, float **scale, int8_t **zero);

const char *spruce_ckpt_dir(const spruce_ckpt *c);
int spruce_ckpt_count(const spruce_ckpt *c);
const spruce_tensor *spruce_ckpt_tensor_at(const spruce_ckpt *c, int i);
const spruce_tensor *spruce_ckpt_find(const spruce_ckpt *c, const char *name); /* NULL if absent */
/* Path of the shard file that holds tensor t (for error messages). */
const char *spruce_ckpt_file_of(const spruce_ckpt *c, const spruce_tensor *t);
/* Give back the resident pages of t's bytes in the mapped file once they have
 * been read (madvise MADV_DONTNEED: the page cache keeps them, a later read
 * maps them again), so that a checkpoint read block by block does not stay in
 * the process's resident set.  A no-op for tensors not in a mapped file. */
void spruce_ckpt_release(const spruce_ckpt *c, const spruce_tensor *t);
/* The same for bytes [off, off + len) of t (clamped to t), with the pages the
 * kernel maps around them on a fault: for a few rows of a large tensor. */
void spruce_ckpt_release_range(const spruce_ckpt *c, const spruce_tensor *t, size_t off,
                               size_t len);

int64_t spruce_tensor_numel(const spruce_tensor *t);
/* Convert to float32 (numel floats).  SPRUCE_EDTYPE for other dtypes. */
int spruce_tensor_read_f32(const spruce_tensor *t, float *out);
/* Convert elements [first, first + count) only (e.g. rows of an embedding:
 * first = row * cols).  SPRUCE_EINVAL when the range is outside the tensor. */
int spruce_tensor_read_f32_range(const spruce_tensor *t, size_t first, size_t count, float *out);

/* Open one .safetensors file on its own (the checkpoint's directory is the
 * file's directory, its only shard the file). */
int spruce_ckpt_open_file(const char *path, spruce_ckpt **out);
/* Number of safetensors files (1, or the shards of the index). */
int spruce_ckpt_nshards(const spruce_ckpt *c);
/* A value of a shard's __metadata__, NULL when absent. */
const char *spruce_ckpt_metadata(const spruce_ckpt *c, int shard, const char *key);

/* A writer copies every regular file of in's directory except safetensors
 * files, then each shard whole; set_* rewrite one tensor in place (streaming: a
 * 64k-element chunk at a time).  Use a writer from one thread at a time. */
typedef struct spruce_ckpt_writer spruce_ckpt_writer;

/* Start a copy of in at outdir.  Refuses an existing non-empty outdir unless
 * force, and refuses outdir == in's directory. */
int spruce_ckpt_writer_begin(const spruce_ckpt *in, const char *outdir, int force,
                             spruce_ckpt_writer **out);
/* Replace a tensor's contents: float32 converted to the tensor's own dtype
 * (zeros become +0.0 in every dtype).  SPRUCE_ENAN naming the element when data
 * holds NaN or Inf (the writer is then spoiled: commit fails, nothing is left). */
int spruce_ckpt_writer_set_f32(spruce_ckpt_writer *w, const char *name, const float *data);
/* Replace a tensor's raw bytes (nbytes must equal the tensor's). */
int spruce_ckpt_writer_set_raw(spruce_ckpt_writer *w, const char *name, const void *bytes,
                               size_t nbytes);
/* Flush and rename into place; frees w whatever the outcome. */
int spruce_ckpt_writer_commit(spruce_ckpt_writer *w);
/* Remove the temporary directory and free w.  NULL is a no-op. */
void spruce_ckpt_writer_abort(spruce_ckpt_writer *w);

/* The compressed-tensors layout (doc/checkpoints.md, spruce_compressed.h):
 * the same shard files, each replaced X.weight stored as its compressed parts,
 * config.json with a "quantization_config".  Tensors never set are written as
 * they were (their layers listed in "ignore").  A replaced tensor is encoded
 * when it is set (its parts, at most its float32 size, held until written). */
typedef struct {
    int sparse;              /* 0: not sparse, 1: sparse-bitmask, 2: sparse-24-bitmask */
    const char *structure;   /* sparsity_structure: "unstructured", "2:4", ... */
} spruce_compress_opts;

int spruce_ckpt_writer_begin_compressed(const spruce_ckpt *in, const char *outdir, int force,
                                        const spruce_compress_opts *o, spruce_ckpt_writer **out);
/* Replace name by data on grid (NULL: not quantized; the same as set_f32).
 * data must lie on the grid (pruned weights +0.0).  With a dense writer the
 * values are written as floats. */
int spruce_ckpt_writer_set_quantized(spruce_ckpt_writer *w, const char *name, const float *data,
                                     const spruce_qgrid *grid);

/* Two-phase commit, to publish the checkpoint together with another file (the
 * masks):
 *   prepare(): fsync and close every file under the temporary name and check
 *              that outdir can still be taken; nothing visible changes.
 *   publish(): rename the temporary directory to outdir; a replaced outdir is
 *              kept aside (exchanged with the temporary one where the file
 *              system can, else OUTDIR.old-<pid>).
 *   finish():  remove the replaced outdir and free w: the commit is done.
 *   abort() after publish() rolls it back: the new outdir is removed and the
 *              replaced one put back.
 * commit() is prepare + publish + finish.  prepare() and publish() leave w
 * alive on failure (abort() it); nothing was published then. */
int spruce_ckpt_writer_prepare(spruce_ckpt_writer *w);
int spruce_ckpt_writer_publish(spruce_ckpt_writer *w);
void spruce_ckpt_writer_finish(spruce_ckpt_writer *w);

/* ---- output paths -------------------------------------------------------- */

/* Refuse an output path that would destroy an input: SPRUCE_EINVAL naming
 * both when out (a directory when out_is_dir, else a file) is the same file
 * or directory as in, lies inside in (a directory), or, as a directory that
 * exists (and would be replaced), contains in.  Paths are compared by device
 * and inode after resolving symlinks and "..", never as strings.  out_what
 * and in_what name the two in the message ("the masks file", "the input
 * checkpoint").  0 when in does not exist. */
int spruce_output_check(const char *out, int out_is_dir, const char *out_what, const char *in,
                        const char *in_what);

/* Remove what killed runs left beside path (an output directory or file):
 * PATH.tmp-<pid> and PATH.old-<pid> whose process no longer runs (the
 * writers of this file and of the mask files name their temporaries so).  A
 * PATH.old-<pid> directory is put back as PATH when PATH is absent (the run
 * died between its two renames).  note (may be NULL) is told each one, with
 * what = "removed" or "restored as".  Returns how many were handled. */
int spruce_output_clean_stale(const char *path,
                              void (*note)(void *ctx, const char *path, const char *what),
                              void *ctx);

/* A deterministic random LLaMA-shaped checkpoint (Hugging Face names, config.json
 * with model_type "llama"), for benchmarks and demos without a download.
 * Linear weights are N(0, 1/fan_in), norms 1 + 0.05 N(0, 1), embeddings N(0, 1);
 * the same configuration and seed always give the same bytes. */
typedef struct {
    int hidden, intermediate, layers, heads, kv_heads, vocab, max_position;
    spruce_dtype dtype;   /* F32, F16 or BF16 */
    uint64_t seed;
} spruce_synth_config;

/* A small model: hidden 256, intermediate 688, 2 layers, 8 heads, 4 kv heads,
 * vocab 512, max_position 512, F32, seed 0. */
void spruce_synth_defaults(spruce_synth_config *cfg);
/* Write cfg's checkpoint to outdir through a temporary directory and a rename;
 * refuses an existing non-empty outdir unless force. */
int spruce_synth_write(const char *outdir, const spruce_synth_config *cfg, int force);
/* Number of parameters of cfg's model. */
int64_t spruce_synth_nparams(const spruce_synth_config *cfg);

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_CKPT_H */
