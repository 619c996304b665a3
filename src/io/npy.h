/* npy.h: numpy's .npy format for 2-D float32 C-order arrays (internal).
 *
 * Only what the pruner's tools need: dtype '<f4', fortran_order False, a 2-D
 * shape.  Anything else is refused with a message naming the file. */
#ifndef SPRUCE_NPY_H
#define SPRUCE_NPY_H

#include <stdint.h>

/* Read path into a malloc'ed (rows, cols) row-major array. */
int spruce__npy_read(const char *path, float **data, int64_t *rows, int64_t *cols);

/* Write (rows, cols) row-major data to path: written to path.tmp.<pid>, then
 * renamed, so that a reader never sees a half-written file. */
int spruce__npy_write(const char *path, const float *data, int64_t rows, int64_t cols);

/* Parse a header dictionary (the text after the length field); exposed for tests. */
int spruce__npy_parse_header(const char *path, const char *hdr, int64_t *rows, int64_t *cols);

#endif
