/* npy.h: numpy's .npy format for 2-D float32 C-order arrays (internal).
 *
 * Only what the pruner's tools need: dtype '<f4', fortran_order False, a 2-D
 * shape.  Anything else is refused with a message naming the file. */
#ifndef SPRUCE_NPY_H
#define SPRUCE_NPY_H

#include <stddef.h>
#include <stdint.h>

/* Read path into a malloc'ed (rows, cols) row-major array. */
int spruce__npy_read(const char *path, float **data, int64_t *rows, int64_t *cols);

/* Write (rows, cols) row-major data to path: written to path.tmp.<pid>, then
 * renamed, so that a reader never sees a half-written file. */
int spruce__npy_write(const char *path, const float *data, int64_t rows, int64_t cols);

/* Parse a header dictionary (the text after the length field); exposed for tests. */
int spruce__npy_parse_header(const char *path, const char *hdr, int64_t *rows, int64_t *cols);

/* Parse a whole .npy file held in memory (len bytes) into a malloc'ed array,
 * with the same checks as spruce__npy_read (the fuzz target calls it). */
int spruce__npy_parse(const char *path, const unsigned char *buf, size_t len, float **data,
                      int64_t *rows, int64_t *cols);

/* The preamble and header of a file of fsize bytes whose first len bytes are
 * in buf: the shape and the data's offset, its size checked against fsize. */
int spruce__npy_parse_prefix(const char *path, const unsigned char *buf, size_t len,
                             unsigned long long fsize, int64_t *rows, int64_t *cols, size_t *data_off);

#endif
