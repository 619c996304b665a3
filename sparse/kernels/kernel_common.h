/* kernel_common.h: small helpers every instruction set's kernels share.
 * Free of vector types, so any kernel library may include it.  Internal to
 * the kernels. */
#ifndef SPRUCE_KERNEL_COMMON_H
#define SPRUCE_KERNEL_COMMON_H

#include <stdint.h>

#define SPRUCE__INLINE static inline __attribute__((always_inline))

/* Column p of a list of column indices of kind 16 (uint16_t), 32 (uint32_t)
 * or 0 (int32_t); kind is a constant at every call, so the test folds. */
SPRUCE__INLINE int64_t spmm_idx(const void *idx, int64_t p, const int kind)
{
    if (kind == 16)
        return ((const uint16_t *)idx)[p];
    if (kind == 32)
        return ((const uint32_t *)idx)[p];
    return ((const int32_t *)idx)[p];
}

/* The address of entry p of such a list (for prefetches). */
SPRUCE__INLINE const char *spmm_idx_addr(const void *idx, int64_t p, const int kind)
{
    return (const char *)idx + p * (kind == 16 ? 2 : 4);
}

#endif
