/* sparsegpt_tile_scalar.c: the in-block SparseGPT sweep of 16 rows, built with the
 * scalar compile flags (see sparsegpt_tile.h). */
#define SPARSEGPT_TILE sparsegpt_tile_scalar
#include "sparsegpt_tile.h"
