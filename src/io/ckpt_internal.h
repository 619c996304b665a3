/* ckpt_internal.h: what the checkpoint files of src/ share (not installed).
 *
 * safetensors layout: u64 little-endian header length N, N bytes of JSON,
 * then the data section; each tensor's data_offsets [begin, end) are relative
 * to the start of the data section (byte 8 + N of the file). */
#ifndef SPRUCE_CKPT_INTERNAL_H
#define SPRUCE_CKPT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "spruce_ckpt.h"

/* Headers larger than this are refused (the reference implementation's limit). */
#define SPRUCE__ST_MAX_HEADER (100u * 1024u * 1024u)

typedef struct {
    char *name;
    char *dtype_name;
    spruce_dtype dtype;
    int ndim;
    int64_t shape[SPRUCE_MAX_DIMS];
    uint64_t begin, end; /* relative to the data section */
} spruce__st_entry;

typedef struct {
    uint64_t header_len;  /* bytes of JSON */
    uint64_t data_start;  /* 8 + header_len: file offset of the data section */
    uint64_t data_size;   /* file size - data_start */
    spruce__st_entry *e;  /* in header order */
    int n;
    char **meta_key, **meta_val; /* __metadata__, in header order */
    int nmeta;
} spruce__st_header;

/* Parse and validate a whole safetensors file held in memory (buf, len).
 * fname only names the file in error messages.  On failure h is left empty. */
int spruce__safetensors_parse(const uint8_t *buf, size_t len, const char *fname,
                              spruce__st_header *h);
void spruce__st_header_clear(spruce__st_header *h); /* frees what h owns; h may be zeroed */

/* Bytes per element of a safetensors dtype name, 0 if unknown; *dt gets the
 * spruce_dtype (SPRUCE_DTYPE_OTHER for everything but F32/F16/BF16). */
size_t spruce__dtype_itemsize(const char *name, spruce_dtype *dt);

/* The shard table of an open checkpoint, for the writer. */
int spruce__ckpt_shard(const spruce_ckpt *c, int i, const char **name, const char **path,
                       const uint8_t **map, size_t *size);

/* Output directories written atomically: make OUTDIR.tmp-<pid> after the
 * checks (refuse a non-empty outdir unless force; refuse outdir being, lying
 * inside or containing protect_dir when it is not NULL: spruce_output_check).  *tmp is malloc'ed. */
int spruce__outdir_begin(const char *outdir, int force, const char *protect_dir, char **tmp);
/* fsync tmp itself, then publish and finish (below). */
int spruce__outdir_commit(const char *tmp, const char *outdir, int force);
/* Rename tmp to outdir.  An existing non-empty outdir (only with force) is
 * exchanged with tmp in one step where the file system can (RENAME_EXCHANGE:
 * *old is then tmp), else moved to OUTDIR.old-<pid> first (*old); *old is
 * malloc'ed, NULL when nothing was replaced.  On failure nothing changed. */
int spruce__outdir_publish(const char *tmp, const char *outdir, int force, char **old);
/* Undo a publish: the new outdir goes back to tmp and is removed, old is
 * put back as outdir. */
void spruce__outdir_unpublish(const char *tmp, const char *outdir, const char *old);
/* After a publish: remove old (if any) and sync outdir's parent. */
void spruce__outdir_finish(const char *outdir, const char *old);
/* Remove tmp and the plain files inside it (what the writers create). */
void spruce__outdir_abort(const char *tmp);
/* Write all of buf at offset (pwrite loop); SPRUCE_EIO naming path. */
int spruce__pwrite_all(int fd, const void *buf, size_t n, uint64_t off, const char *path);
/* Copy n bytes of in from in_off to out at out_off: by copy_file_range where
 * the file system can, else (or for what it left) through a buffer; errors
 * name src or dst. */
int spruce__copy_range(int in, uint64_t in_off, int out, uint64_t out_off, uint64_t n,
                       const char *src, const char *dst);
/* Copy the file src to dst (created, must not exist). */
int spruce__copy_file(const char *src, const char *dst);
/* Join dir and name into a malloc'ed path (NULL when out of memory). */
char *spruce__path_join(const char *dir, const char *name);

/* The codecs one row at a time (compressed.c), for the writer's pieces.
 * spruce__ct_24_row: the 2:4 encoding of one row (cols % 4 == 0) into its
 * cols / 2 values and ceil(cols / 8) bitmask bytes: 0, or 1 + the first
 * column of a group of more than two non-zeros; spruce__ct_24_error: that
 * row's SPRUCE_EPATTERN, naming it as row r.  spruce__ct_quantize_row: row r
 * of spruce_ct_quantize, its levels into qr and (zeros not NULL) the count of
 * its zero weights into *zeros; without what, 1 at an error. */
int64_t spruce__ct_24_row(const void *row, int es, int is_float, int64_t cols, void *values,
                          uint8_t *bitmask);
int spruce__ct_24_error(const void *row, int es, int is_float, int64_t r, int64_t cols,
                        const char *what);
int spruce__ct_quantize_row(const float *w, const spruce_qgrid *g, int64_t r, int8_t *qr,
                            int8_t *zp, int64_t *zeros, const char *what);

/* compressed-tensors (compressed_read.c): the scheme config.json declares. */
typedef struct {
    int present;     /* quantization_config with quant_method compressed-tensors */
    int sparse;      /* 0 none, 1 sparse-bitmask, 2 sparse-24-bitmask */
    int bits;        /* 0: not quantized */
    int sym;
    int groupsize;   /* 0: one scale per row (strategy channel) */
    int packed;      /* format pack-quantized */
} spruce__ct_scheme;

/* Read dir/config.json's quantization_config; present = 0 when there is none.
 * Schemes spruce does not implement are SPRUCE_EUNSUPPORTED naming them. */
int spruce__ct_scheme_read(const char *dir, spruce__ct_scheme *s);
/* Is a tensor a part of a compressed module?  *plen: length of the module
 * prefix; *primary: the one part per module that stands for it. */
int spruce__ct_component(const char *name, const char *dtype, const spruce__ct_scheme *s,
                         size_t *plen, int *primary);
/* Decode module prefix of c into out (name not set) and *buf (malloc'ed,
 * out->data points into it). */
int spruce__ct_decode(const spruce_ckpt *c, const char *prefix, const spruce__ct_scheme *s,
                      spruce_tensor *out, void **buf);
/* Shape and dtype of module prefix's M.weight as spruce__ct_decode would
 * make it (out->data NULL), from its parts' headers and its grid; the values
 * are checked when decoded. */
int spruce__ct_describe(const spruce_ckpt *c, const char *prefix, const spruce__ct_scheme *s,
                        spruce_tensor *out);
/* A quantized module's integer levels q (rows, cols), zeros where pruned,
 * scales (rows, ngroups) in float32 and zero points (NULL when symmetric),
 * malloc'ed and checked: w = (q - zp) scale. */
int spruce__ct_levels(const spruce_ckpt *c, const char *prefix, const spruce__ct_scheme *s,
                      int64_t *rows, int64_t *cols, int8_t **q, float **scale, int8_t **zp);
/* A tensor by name, the parts of compressed modules included (a lazily
 * opened checkpoint keeps them out of its table). */
const spruce_tensor *spruce__ckpt_find_part(const spruce_ckpt *c, const char *name);
/* The writer's compressed mode (compressed_write.c). */
typedef struct spruce__ctw spruce__ctw;
int spruce__ctw_new(const spruce_ckpt *in, const char *tmp, const spruce_compress_opts *o,
                    spruce__ctw **out);
/* t is in's tensor number index. */
int spruce__ctw_set(spruce__ctw *c, const spruce_tensor *t, int index, const float *data,
                    const spruce_qgrid *g);
/* Write the shards, the index and config.json into tmp. */
int spruce__ctw_finish(spruce__ctw *c);
void spruce__ctw_free(spruce__ctw *c); /* NULL is a no-op */

/* 1 when c was decoded from a compressed-tensors checkpoint. */
int spruce__ckpt_decoded(const spruce_ckpt *c);

#endif
