/* run_packed.c: pack a pruned matrix once, then run it many times.
 *
 *   ./examples/run_packed [ROWS COLS]
 *
 * Makes a 2:4-sparse matrix W (rows, cols), packs it as N:M, multiplies a
 * vector and a batch of 8 vectors, checks the result against the dense product,
 * and lets a linear layer pick the fastest representation for batch 1 and 8.
 * Layouts: W (rows, cols), X (cols, batch), Y (rows, batch), all row-major. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "spruce_sparse.h"

int main(int argc, char **argv)
{
    int rows = argc > 2 ? atoi(argv[1]) : 1024, cols = argc > 2 ? atoi(argv[2]) : 1024;
    const int batch = 8;
    float *W = malloc(sizeof *W * (size_t)rows * cols), *X = malloc(sizeof *X * (size_t)cols * batch);
    float *Y = malloc(sizeof *Y * (size_t)rows * batch);
    spruce_pack_opts po = {SPRUCE_FMT_NM, 2, 4, 0, SPRUCE_LAYOUT_BITS}; /* 2:4, all threads */
    spruce_sparse *A = NULL;
    spruce_linear *lin = NULL;
    double maxerr = 0;
    int rc, i, j, k, isa;
    if (!W || !X || !Y || rows < 1 || cols < 1)
        return 1;

    /* A 2:4 matrix: in every group of 4 columns, keep 2. */
    for (i = 0; i < rows; i++)
        for (j = 0; j < cols; j++)
            W[(size_t)i * cols + j] = (j % 4 == i % 4 || j % 4 == (i + 1) % 4) ? 1.0f / (1 + j % 7) : 0.0f;
    for (k = 0; k < cols * batch; k++)
        X[k] = (float)(k % 13) - 6.0f;

    if ((isa = spruce_sparse_isa()) < 0) {
        fprintf(stderr, "run_packed: %s: %s\n", spruce_strerror(isa), spruce_errdetail());
        return 1;
    }
    printf("kernels: %s\n", spruce_sparse_isa_name(isa));

    /* Pack once ... */
    if ((rc = spruce_sparse_pack(W, NULL, rows, cols, &po, &A)) < 0) {
        fprintf(stderr, "run_packed: pack: %s: %s\n", spruce_strerror(rc), spruce_errdetail());
        return 1;
    }
    printf("packed %dx%d as %s: %lld values, %.2f MB (dense %.2f MB)\n", rows, cols,
           spruce_format_name(spruce_sparse_format(A)), (long long)spruce_sparse_nnz(A),
           spruce_sparse_bytes(A) / 1e6, 4.0 * rows * cols / 1e6);

    /* ... multiply many times: Y = W X for a batch of 8 columns. */
    if ((rc = spruce_sparse_mul(A, X, batch, Y)) < 0) {
        fprintf(stderr, "run_packed: %s: %s\n", spruce_strerror(rc), spruce_errdetail());
        return 1;
    }
    for (i = 0; i < rows; i++)
        for (j = 0; j < batch; j++) {
            double s = 0;
            for (k = 0; k < cols; k++)
                s += (double)W[(size_t)i * cols + k] * X[(size_t)k * batch + j];
            if (fabs(s - Y[(size_t)i * batch + j]) > maxerr)
                maxerr = fabs(s - Y[(size_t)i * batch + j]);
        }
    printf("Y = W X, batch %d: largest difference from the dense product %.3g\n", batch, maxerr);

    /* A linear layer picks dense or a sparse format per batch size by timing them. */
    if ((rc = spruce_linear_create(W, rows, cols, NULL, &lin)) < 0) {
        fprintf(stderr, "run_packed: linear: %s: %s\n", spruce_strerror(rc), spruce_errdetail());
        return 1;
    }
    spruce_linear_forward(lin, X, 1, Y); /* the first cols values of X as one vector */
    printf("linear layer: batch 1 runs %s, batch 16 runs %s\n",
           spruce_format_name(spruce_linear_format(lin, 1)),
           spruce_format_name(spruce_linear_format(lin, 16)));

    spruce_linear_free(lin);
    spruce_sparse_free(A);
    free(W);
    free(X);
    free(Y);
    return maxerr < 1e-3 * cols ? 0 : 1;
}
