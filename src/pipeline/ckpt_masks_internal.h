/* ckpt_masks_internal.h: what ckpt_masks.c and mask_summary.c share. */
#ifndef SPRUCE_CKPT_MASKS_INTERNAL_H
#define SPRUCE_CKPT_MASKS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Grow the byte buffer *buf of *cap bytes to at least n (its contents are not
 * kept).  0, or -1 when out of memory (*buf is then NULL and *cap 0): the
 * caller records the error naming the tensor. */
int spruce__masks_reserve(uint8_t **buf, size_t *cap, size_t n);

#endif
