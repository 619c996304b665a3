/* sparsegpt_tile_avx2.c: the in-block SparseGPT sweep of 16 rows, built with the
 * avx2 compile flags (see sparsegpt_tile.h). */
#define SPARSEGPT_TILE sparsegpt_tile_avx2
#include "sparsegpt_tile.h"
