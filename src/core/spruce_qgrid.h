/* spruce_qgrid.h: a weight-quantization grid, as the pruner finds it and the
 * checkpoint writer stores it.
 *
 * W is (rows, cols) row-major; a grid has one (scale, zero) per row and per
 * group of `groupsize` columns (groupsize == cols: one per row).
 *   ngroups = cols / groupsize
 *   scale, zero are (rows, ngroups) row-major
 * The integer level of a weight w in group g of row r is
 *   q = clamp(round(w / scale[r][g]) + zero[r][g], 0, 2^bits - 1)
 * and its value on the grid is scale[r][g] * (q - zero[r][g]).
 * zero is an integer held in a float; a symmetric grid has zero = 2^(bits-1)
 * ((maxq + 1) / 2, as the published quant.py sets it).  A checkpoint of bf16 or
 * f16 weights stores its scales in that type (compressed-tensors computes
 * w = (q - zero) * scale in the scale's dtype), so such a grid rounds each scale
 * to that type as it is found (scale_dtype): the values the pruner keeps are
 * then exactly what a reader decodes from the stored scale.
 * (The published quant.py keeps float32 scales.)  Pruned weights are
 * exactly +0.0 and are not levels of the grid. */
#ifndef SPRUCE_QGRID_H
#define SPRUCE_QGRID_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SPRUCE_QSCALE_F32 = 0,  /* scales kept in float32 */
    SPRUCE_QSCALE_BF16 = 1, /* each scale rounded to bf16 (to nearest even) */
    SPRUCE_QSCALE_F16 = 2   /* each scale rounded to IEEE half */
} spruce_qscale_dtype;

typedef struct {
    int bits;          /* 2 to 8 */
    int sym;           /* 1: symmetric grid */
    int64_t rows;
    int64_t cols;
    int64_t groupsize; /* divides cols; == cols for one grid per row */
    float *scale;      /* (rows, cols / groupsize) */
    float *zero;       /* (rows, cols / groupsize), integer values in [0, 2^bits - 1] */
    int scale_dtype;   /* spruce_qscale_dtype */
} spruce_qgrid;

#ifdef __cplusplus
}
#endif
#endif /* SPRUCE_QGRID_H */
