/* tokens_internal.h: the token-file parser on a buffer (internal to libspruce;
 * the fuzz target and the tests call it). */
#ifndef SPRUCE_TOKENS_INTERNAL_H
#define SPRUCE_TOKENS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Parse len bytes b as the token file path (its extension chooses the format)
 * into a malloc'ed array (*ids, *n), as spruce_tokens_load does after reading. */
int spruce__tokens_parse(const char *path, const unsigned char *b, size_t len, uint32_t **ids,
                         size_t *n);

/* The same with the format given: decimal text, or raw u16 / u32 ids (the
 * file's name is only used in messages). */
enum { SPRUCE__TOKENS_TXT, SPRUCE__TOKENS_U16, SPRUCE__TOKENS_U32 };
int spruce__tokens_parse_as(const char *path, int kind, const unsigned char *b, size_t len,
                            uint32_t **ids, size_t *n);

#endif
