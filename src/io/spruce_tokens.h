/* spruce_tokens.h: token-id files for calibration and evaluation.
 *
 * The format is chosen by the file name's extension:
 *   .u16  raw little-endian uint16 ids (vocabularies up to 65536)
 *   .u32  raw little-endian uint32 ids
 *   .txt  decimal ids separated by whitespace (spaces, tabs, newlines)
 * An empty file, a size that is not a whole number of ids, text that is not a
 * decimal id, or another extension is an error naming the file (and, for
 * text, the line and the offending word). */
#ifndef SPRUCE_TOKENS_H
#define SPRUCE_TOKENS_H

#include <stddef.h>
#include <stdint.h>

#include "spruce_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Read every id of path into a malloc'ed array (*ids, *n); caller free()s *ids. */
int spruce_tokens_load(const char *path, uint32_t **ids, size_t *n);

/* SPRUCE_EINVAL naming path, the position and the id of the first id >= vocab. */
int spruce_tokens_check(const uint32_t *ids, size_t n, uint32_t vocab, const char *path);

/* Write n ids to path in the format its extension names (.u16 refuses ids >
 * 65535).  The file is written beside as path.tmp-<pid> and renamed. */
int spruce_tokens_save(const char *path, const uint32_t *ids, size_t n);

/* n ids drawn uniformly from [0, vocab) by a generator seeded with seed:
 * the same (vocab, n, seed) always gives the same ids.  ids holds n. */
void spruce_tokens_random(uint32_t *ids, size_t n, uint32_t vocab, uint64_t seed);

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_TOKENS_H */
