/* test_sparse_dtype.c: the runtime's value types (bf16, int8, int4): their
 * quantizers, the checks that refuse bad scales and group sizes, and the dense
 * scalar kernels, each product against a double-precision product of the
 * dequantized weights with a bound scaled to the row length. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "spruce_half.h"
#include "spruce_qmatrix.h"

static uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = s * 0x9E3779B97F4A7C15ull + 1; }
static float rng_float(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
}

static float *random_floats(size_t n, uint64_t seed)
{
    float *v = malloc(sizeof *v * n);
    size_t k;
    rng_seed(seed);
    for (k = 0; k < n; k++)
        v[k] = rng_float();
    return v;
}

/* y = W x from the dequantized weights in double; the scalar kernel must be
 * within a float32 summation bound: n eps sum |w_ij x_j|, n the row length. */
static void check_product(const spruce_qmatrix *A)
{
    const int rows = A->rows, cols = A->cols;
    float *W = malloc(sizeof *W * (size_t)rows * cols);
    float *x = random_floats((size_t)cols, 7), *y = malloc(sizeof *y * rows);
    int i, j;
    cr_assert_eq(spruce_qmatrix_dequantize(A, W), 0);
    cr_assert_eq(spruce_qmatrix_mul(A, x, y), 0);
    for (i = 0; i < rows; i++) {
        double s = 0.0, a = 0.0;
        for (j = 0; j < cols; j++) {
            s += (double)W[(int64_t)i * cols + j] * x[j];
            a += fabs((double)W[(int64_t)i * cols + j] * x[j]);
        }
        cr_assert_leq(fabs(y[i] - s), 2.0 * cols * 1.2e-7 * a + 1e-30,
                      "%s (%d, %d) row %d: %g, expected %g", spruce_dtype_name(A->dtype), rows,
                      cols, i, (double)y[i], s);
    }
    free(W);
    free(x);
    free(y);
}

/* The dequantized weights are within half a grid step of the originals. */
static void check_rounding(const float *W, const spruce_qmatrix *A)
{
    int i, j;
    for (i = 0; i < A->rows; i++)
        for (j = 0; j < A->cols; j++) {
            const float w = W[(int64_t)i * A->cols + j], d = spruce_qmatrix_at(A, i, j);
            float step;
            if (A->dtype == SPRUCE_DT_BF16)
                step = fabsf(w) * (1.0f / 128.0f);
            else if (A->dtype == SPRUCE_DT_INT8)
                step = A->scale[i];
            else
                step = A->scale[(size_t)i * A->ngroups + j / A->groupsize];
            cr_assert_leq(fabsf(w - d), 0.5f * step * 1.0001f + 1e-30f,
                          "%s (%d, %d): %g became %g, step %g", spruce_dtype_name(A->dtype), i, j,
                          (double)w, (double)d, (double)step);
        }
}

static void quantize_and_check(int rows, int cols, int dtype, int g, int asym, uint64_t seed)
{
    float *W = random_floats((size_t)rows * cols, seed);
    spruce_qmatrix *A = NULL;
    /* an all-zero row and an all-zero group */
    memset(W, 0, sizeof *W * (size_t)cols);
    if (rows > 2 && cols > 40)
        memset(W + 2 * (size_t)cols, 0, sizeof *W * 32);
    cr_assert_eq(spruce_qmatrix_quantize(W, rows, cols, dtype, g, asym, &A), 0, "%s",
                 spruce_errdetail());
    cr_assert_eq(spruce_qmatrix_check(A), 0);
    check_rounding(W, A);
    check_product(A);
    cr_assert_eq(spruce_qmatrix_at(A, 0, cols - 1), 0.0f, "an all-zero row stays zero");
    spruce_qmatrix_free(A);
    free(W);
}

Test(dtype, bf16_odd_shapes)
{
    quantize_and_check(1, 1, SPRUCE_DT_BF16, 0, 0, 1);
    quantize_and_check(7, 37, SPRUCE_DT_BF16, 0, 0, 2);
    quantize_and_check(33, 1031, SPRUCE_DT_BF16, 0, 0, 3);
}

Test(dtype, int8_symmetric_and_zero_point)
{
    quantize_and_check(5, 17, SPRUCE_DT_INT8, 0, 0, 4);
    quantize_and_check(19, 1000, SPRUCE_DT_INT8, 0, 0, 5);
    quantize_and_check(19, 1000, SPRUCE_DT_INT8, 0, 1, 6);
}

/* Group edges: widths a multiple of the group, one past, one short, and a
 * row narrower than one group. */
Test(dtype, int4_group_edges)
{
    static const int gs[] = {32, 64, 128, 256};
    int k;
    for (k = 0; k < 4; k++) {
        quantize_and_check(3, gs[k] * 3, SPRUCE_DT_INT4, gs[k], 0, 10 + k);
        quantize_and_check(3, gs[k] * 3 + 1, SPRUCE_DT_INT4, gs[k], 1, 20 + k);
        quantize_and_check(4, gs[k] * 2 - 1, SPRUCE_DT_INT4, gs[k], 0, 30 + k);
        quantize_and_check(2, gs[k] / 2 + 3, SPRUCE_DT_INT4, gs[k], 1, 40 + k);
    }
}

/* int4 packing: column j in byte j / 2 at bits 4 (j % 2), stored u = q + 8
 * on the symmetric grid (compressed-tensors' pack-quantized order within a
 * little-endian int32 word). */
Test(dtype, int4_packing_order)
{
    float W[64];
    spruce_qmatrix *A = NULL;
    int j;
    for (j = 0; j < 64; j++)
        W[j] = (float)((j % 15) - 7); /* levels -7..7, max 7: scale exactly 1 */
    cr_assert_eq(spruce_qmatrix_quantize(W, 1, 64, SPRUCE_DT_INT4, 32, 0, &A), 0);
    cr_assert_float_eq(A->scale[0], 1.0f, 0.0f);
    for (j = 0; j < 64; j++)
        cr_assert_eq((A->q[j / 2] >> (4 * (j % 2))) & 15, (j % 15) - 7 + 8, "column %d", j);
    spruce_qmatrix_free(A);
}

Test(dtype, int8_symmetric_avoids_minus_128)
{
    float W[4] = {-1.0f, 1.0f, -0.5f, 0.25f};
    spruce_qmatrix *A = NULL;
    cr_assert_eq(spruce_qmatrix_quantize(W, 1, 4, SPRUCE_DT_INT8, 0, 0, &A), 0);
    cr_assert_eq(((int8_t *)A->q)[0], -127);
    cr_assert_eq(((int8_t *)A->q)[1], 127);
    spruce_qmatrix_free(A);
}

Test(dtype, bad_group_sizes_refused)
{
    static const int bad[] = {0, 16, 31, 48, 288, 512, -32};
    float W[64] = {1.0f};
    spruce_qmatrix *A = NULL;
    int k;
    for (k = 0; k < (int)(sizeof bad / sizeof *bad); k++) {
        cr_assert_eq(spruce_qmatrix_quantize(W, 1, 64, SPRUCE_DT_INT4, bad[k], 0, &A),
                     SPRUCE_EINVAL, "group %d", bad[k]);
        cr_assert_null(A);
        cr_assert(strstr(spruce_errdetail(), "group size"), "%s", spruce_errdetail());
    }
}

Test(dtype, bad_scales_and_weights_refused)
{
    float W[64], x[64], y[2];
    spruce_qmatrix *A = NULL;
    int j;
    for (j = 0; j < 64; j++)
        W[j] = x[j] = (float)j / 64.0f;
    cr_assert_eq(spruce_qmatrix_quantize(W, 1, 64, SPRUCE_DT_INT4, 32, 0, &A), 0);
    A->scale[1] = 0.0f;
    cr_assert_eq(spruce_qmatrix_mul(A, x, y), SPRUCE_EINVAL);
    cr_assert(strstr(spruce_errdetail(), "row 0, group 1"), "%s", spruce_errdetail());
    A->scale[1] = NAN;
    cr_assert_eq(spruce_qmatrix_check(A), SPRUCE_ENAN);
    A->scale[1] = 1.0f;
    A->groupsize = 40;
    cr_assert_eq(spruce_qmatrix_check(A), SPRUCE_EINVAL);
    spruce_qmatrix_free(A);
    W[5] = NAN;
    cr_assert_eq(spruce_qmatrix_quantize(W, 1, 64, SPRUCE_DT_INT8, 0, 0, &A), SPRUCE_ENAN);
    cr_assert(strstr(spruce_errdetail(), "(0, 5)"), "%s", spruce_errdetail());
    cr_assert_eq(spruce_qmatrix_quantize(W, 1, 64, 9, 0, 0, &A), SPRUCE_EDTYPE);
}

Test(dtype, names)
{
    int d;
    for (d = 0; d < 4; d++)
        cr_assert_eq(spruce_dtype_parse(spruce_dtype_name(d)), d);
    cr_assert_eq(spruce_dtype_parse("fp8"), -1);
}
