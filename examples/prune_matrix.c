/* prune_matrix.c: prune one weight matrix with SparseGPT through the C API.
 *
 *   cc prune_matrix.c $(pkg-config --cflags --libs spruce) -o prune_matrix
 *   ./prune_matrix [rows cols tokens]
 *
 * A layer y = W x with W (rows, cols); calibration activations arrive in
 * batches of (batch, cols).  The example prunes W to 2:4 (two of every four
 * consecutive weights of a row are zero), then reports what it cost. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "spruce_prune.h"

/* A small deterministic Gaussian generator (not part of spruce). */
static double gauss(uint64_t *s)
{
    double u, v;
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    u = ((double)(*s >> 11) + 0.5) / 9007199254740992.0;
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    v = ((double)(*s >> 11) + 0.5) / 9007199254740992.0;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "prune_matrix: %s: %s: %s\n", what, spruce_strerror(rc), spruce_errdetail());
    return 1;
}

int main(int argc, char **argv)
{
    int rows = argc > 1 ? atoi(argv[1]) : 256, cols = argc > 2 ? atoi(argv[2]) : 512;
    int tokens = argc > 3 ? atoi(argv[3]) : 1024, batch = 128, t, j, r, g, rc, status = 1;
    uint64_t seed = 42;
    float *W = NULL, *W0 = NULL, *X = NULL;
    uint8_t *mask = NULL;
    spruce_hessian *h = NULL;
    spruce_prune_opts opts;
    spruce_prune_result res;
    double rel = 0.0;

    if (rows <= 0 || cols <= 0 || tokens <= 0 || cols % 4) {
        fprintf(stderr, "usage: prune_matrix [rows cols tokens] (cols a multiple of 4)\n");
        return 2;
    }
    W = malloc((size_t)rows * cols * sizeof *W);    // W is (rows, cols) row-major
    W0 = malloc((size_t)rows * cols * sizeof *W0);
    X = malloc((size_t)batch * cols * sizeof *X);   // one batch X is (batch, cols)
    mask = malloc((size_t)rows * cols);
    h = spruce_hessian_alloc(cols);
    if (!W || !W0 || !X || !mask || !h) {
        fprintf(stderr, "prune_matrix: out of memory\n");
        goto done;
    }
    for (j = 0; j < rows * cols; j++)
        W0[j] = W[j] = (float)(gauss(&seed) / sqrt((double)cols));

    /* 1. Accumulate H = (2/n) sum x x^T over the calibration tokens, batch by batch. */
    for (t = 0; t < tokens; t += batch) {
        int b = tokens - t < batch ? tokens - t : batch;
        for (j = 0; j < b * cols; j++)
            X[j] = (float)(gauss(&seed) * (j % cols == 5 ? 10.0 : 1.0)); /* one loud input */
        if ((rc = spruce_hessian_add(h, X, b))) {
            fail("hessian_add", rc);
            goto done;
        }
    }

    /* 2. Prune 2:4 with SparseGPT: W is updated in place, mask says what was kept. */
    spruce_prune_opts_init(&opts);
    opts.method = SPRUCE_METHOD_SPARSEGPT;
    opts.prune_n = 2;
    opts.prune_m = 4;
    if ((rc = spruce_prune_layer(W, rows, cols, h, &opts, mask, &res))) {
        fail("prune_layer", rc);
        goto done;
    }

    /* 3. How much did the output change?  ||(W0 - W) X^T||^2 / ||W0 X^T||^2 */
    if ((rc = spruce_prune_rel_error(W0, W, rows, cols, h, &rel))) {
        fail("rel_error", rc);
        goto done;
    }

    for (r = 0; r < rows; r++) /* every group of four holds two zeros */
        for (g = 0; g < cols; g += 4) {
            int zeros = 0;
            for (j = g; j < g + 4; j++)
                zeros += W[(size_t)r * cols + j] == 0.0f;
            if (zeros < 2) {
                fprintf(stderr, "prune_matrix: row %d group %d has %d zeros\n", r, g, zeros);
                goto done;
            }
        }
    printf("pruned (%d, %d) to 2:4 with %d calibration tokens in %.3f s\n", rows, cols, tokens,
           res.seconds);
    printf("sparsity %.4f  loss %.4g  relative output error %.4g  damping %g (%d retries)\n",
           res.sparsity, res.loss, rel, (double)res.damp_used, res.damp_retries);
    status = 0;
done:
    free(W);
    free(W0);
    free(X);
    free(mask);
    spruce_hessian_free(h);
    return status;
}
