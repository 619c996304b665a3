/* qsparse_testutil.h: random weights, N:M and unstructured masks and the
 * scaled float32 bound shared by the tests of the typed sparse formats and
 * the pair layout (test_qsparse, test_pairs). */
#ifndef SPRUCE_QSPARSE_TESTUTIL_H
#define SPRUCE_QSPARSE_TESTUTIL_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "prune_testutil.h"

static inline float *random_floats(size_t n, uint64_t seed)
{
    rng_t g = {seed};
    float *v = malloc(sizeof *v * n);
    size_t k;
    for (k = 0; k < n; k++)
        v[k] = (float)(2.0 * rng_uniform(&g) - 1.0);
    return v;
}

/* A mask of the given kind: 0 unstructured ~50%, else n:m keeping n of every m
 * (fewer in some groups); every fifth row (3, 8, ..) keeps nothing. */
static inline uint8_t *make_mask(int rows, int cols, int n, int m, uint64_t seed)
{
    rng_t g = {seed};
    uint8_t *mk = calloc((size_t)rows * cols, 1);
    int i, j, c;
    for (i = 0; i < rows; i++) {
        if (i % 5 == 3)
            continue; /* an empty row */
        if (!m) {
            for (j = 0; j < cols; j++)
                mk[(size_t)i * cols + j] = rng_uniform(&g) < 0.5;
            continue;
        }
        for (j = 0; j < cols; j += m) {
            const int w = cols - j < m ? cols - j : m;
            const int keep = rng_uniform(&g) < 0.2 ? n - 1 : n; /* some groups keep fewer */
            for (c = 0; c < keep && c < w; c++) {
                int at = (int)(rng_uniform(&g) * w);
                while (mk[(size_t)i * cols + j + at])
                    at = (at + 1) % w;
                mk[(size_t)i * cols + j + at] = 1;
            }
        }
    }
    return mk;
}

/* |y - r| <= 2 n eps sum |w x| over each output, n the row length (two float32
 * sums in different orders each within n eps of the exact one). */
static inline void check_close(const char *what, const float *y, const float *r, const float *W,
                               const float *X, int rows, int cols, int batch)
{
    int i, b, j;
    for (i = 0; i < rows; i++)
        for (b = 0; b < batch; b++) {
            double a = 0.0;
            for (j = 0; j < cols; j++)
                a += fabs((double)W[(size_t)i * cols + j] * X[(size_t)j * batch + b]);
            cr_assert_leq(fabs((double)y[(size_t)i * batch + b] - r[(size_t)i * batch + b]),
                          2.0 * cols * 1.2e-7 * a + 1e-30,
                          "%s: row %d, column %d: %.9g, expected %.9g", what, i, b,
                          (double)y[(size_t)i * batch + b], (double)r[(size_t)i * batch + b]);
        }
}

#endif
