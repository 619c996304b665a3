/* pipeline_internal.h: what the files of src/pipeline share (not installed). */
#ifndef SPRUCE_PIPELINE_INTERNAL_H
#define SPRUCE_PIPELINE_INTERNAL_H

#include <regex.h>
#include <stddef.h>
#include <stdint.h>

/* Grow the byte buffer *buf of *cap bytes to at least n (its contents are not
 * kept).  0, or -1 when out of memory (*buf is then NULL and *cap 0): the
 * caller records the error naming the tensor. */
int spruce__masks_reserve(uint8_t **buf, size_t *cap, size_t n);

/* Compile the POSIX extended regular expression pat into re (REG_NOSUB); on
 * failure SPRUCE_EINVAL naming what (e.g. "--include") and pat. */
int spruce__regcomp(regex_t *re, const char *pat, const char *what);

#endif
