/* sparsegpt_tile_avx512.c: the in-block SparseGPT sweep of 16 rows, built with the
 * avx512 compile flags (see sparsegpt_tile.h). */
#define SPARSEGPT_TILE sparsegpt_tile_avx512
#include "sparsegpt_tile.h"
