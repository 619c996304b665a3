/* test_qdense.c: the dense bf16, int8 and int4 products Y = W X of every
 * instruction set (spruce_qmatrix_product), each against a double-precision
 * product of the dequantized weights, against the scalar oracle
 * (spruce_qmatrix_mul) and against OpenBLAS on the dequantized float32
 * weights, with bounds scaled to the row length; odd shapes (columns not a
 * multiple of 16 or of the group, rows not a multiple of 4, fewer rows than
 * threads), batches 1 to 19, one and two threads. */
#include <cblas.h>
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prune_testutil.h"
#include "spruce_qmatrix.h"
#include "spruce_sparse.h"

typedef struct {
    int dtype, groupsize, asym;
} qcase;

static const qcase cases[] = {
    {SPRUCE_DT_BF16, 0, 0}, {SPRUCE_DT_INT8, 0, 0},  {SPRUCE_DT_INT8, 0, 1},
    {SPRUCE_DT_INT4, 32, 0}, {SPRUCE_DT_INT4, 64, 1}, {SPRUCE_DT_INT4, 96, 0},
    {SPRUCE_DT_INT4, 128, 0}, {SPRUCE_DT_INT4, 128, 1}, {SPRUCE_DT_INT4, 160, 1},
    {SPRUCE_DT_INT4, 256, 0},
};
static const int shapes[][2] = {{1, 1},    {3, 17},   {5, 33},   {7, 100},  {4, 257},
                                {13, 1031}, {64, 256}, {9, 4100}, {2, 511}};
static const int batches[] = {1, 3, 16, 19};

static float *random_floats(size_t n, uint64_t seed)
{
    rng_t r = {seed};
    float *v = malloc(sizeof *v * n);
    size_t k;
    for (k = 0; k < n; k++)
        v[k] = (float)(2.0 * rng_uniform(&r) - 1.0);
    return v;
}

/* A random (rows, cols) matrix quantized to c, with an all-zero row and an
 * all-zero first group of row 1. */
static spruce_qmatrix *make_matrix(int rows, int cols, const qcase *c, uint64_t seed)
{
    float *W = random_floats((size_t)rows * cols, seed);
    spruce_qmatrix *A = NULL;
    memset(W, 0, sizeof *W * (size_t)cols);
    if (rows > 1)
        memset(W + cols, 0, sizeof *W * (size_t)(cols < 32 ? cols : 32));
    cr_assert_eq(spruce_qmatrix_quantize(W, rows, cols, c->dtype, c->groupsize, c->asym, &A), 0,
                 "%s", spruce_errdetail());
    free(W);
    return A;
}

/* |Y - R| <= k (cols eps + extra) sum_j |w_ij X_jb| for every entry. */
static void check_close(const char *what, const spruce_qmatrix *A, const float *Wd,
                        const float *X, int batch, const float *Y, const float *R, double k,
                        double extra)
{
    const int rows = A->rows, cols = A->cols;
    int i, b, j;
    for (i = 0; i < rows; i++)
        for (b = 0; b < batch; b++) {
            double a = 0.0, bound, err;
            for (j = 0; j < cols; j++)
                a += fabs((double)Wd[(size_t)i * cols + j] * X[(size_t)j * batch + b]);
            bound = k * (cols * (double)FLT_EPSILON + extra) * a + 1e-30;
            err = fabs((double)Y[(size_t)i * batch + b] - R[(size_t)i * batch + b]);
            if (!(err <= bound))
                cr_assert_fail("%s: %s g%d%s (%d x %d) batch %d, kernel %s: Y[%d, %d] = %.9g, "
                               "expected %.9g (bound %g)", what, spruce_dtype_name(A->dtype),
                               A->groupsize, A->zero ? " zero point" : "", rows, cols, batch,
                               spruce_qmatrix_kernel_name(A, batch), i, b,
                               (double)Y[(size_t)i * batch + b], (double)R[(size_t)i * batch + b],
                               bound);
        }
}

/* One matrix and batch on the chosen instruction set against the three
 * references. */
static void check_one(const spruce_qmatrix *A, int batch, int nthreads, uint64_t seed)
{
    const int rows = A->rows, cols = A->cols;
    float *Wd = malloc(sizeof *Wd * (size_t)rows * cols);
    float *X = random_floats((size_t)cols * batch, seed);
    float *Y = malloc(sizeof *Y * (size_t)rows * batch);
    float *R = malloc(sizeof *R * (size_t)rows * batch);
    float *x = malloc(sizeof *x * cols), *y = malloc(sizeof *y * rows);
    const double extra =
        A->dtype == SPRUCE_DT_BF16 && batch == 1 && spruce_qmatrix_bf16dp() &&
                spruce_sparse_isa() == SPRUCE_ISA_AVX512
            ? ldexp(1.0, -23)
            : 0.0;
    int i, b, j;
    cr_assert_eq(spruce_qmatrix_dequantize(A, Wd), 0);
    for (i = 0; i < rows * batch; i++)
        Y[i] = NAN; /* every entry must be written */
    cr_assert_eq(spruce_qmatrix_product(A, X, batch, Y, nthreads), 0, "%s", spruce_errdetail());

    for (i = 0; i < rows; i++) /* double precision */
        for (b = 0; b < batch; b++) {
            double s = 0.0;
            for (j = 0; j < cols; j++)
                s += (double)Wd[(size_t)i * cols + j] * X[(size_t)j * batch + b];
            R[(size_t)i * batch + b] = (float)s;
        }
    check_close("double", A, Wd, X, batch, Y, R, 2.0, extra);

    for (b = 0; b < batch; b++) { /* the scalar oracle, column by column */
        for (j = 0; j < cols; j++)
            x[j] = X[(size_t)j * batch + b];
        cr_assert_eq(spruce_qmatrix_mul(A, x, y), 0);
        for (i = 0; i < rows; i++)
            R[(size_t)i * batch + b] = y[i];
    }
    check_close("scalar oracle", A, Wd, X, batch, Y, R, 4.0, extra);

    if (batch == 1) /* OpenBLAS on the dequantized weights */
        cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1.0f, Wd, cols, X, 1, 0.0f, R, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, batch, cols, 1.0f, Wd, cols,
                    X, batch, 0.0f, R, batch);
    check_close("OpenBLAS", A, Wd, X, batch, Y, R, 4.0, extra);
    free(Wd);
    free(X);
    free(Y);
    free(R);
    free(x);
    free(y);
}

static void run_isa(int isa)
{
    size_t c, s, b;
    int t;
    if (!spruce_sparse_isa_supported(isa)) {
        /* cr_skip_test alone: Criterion 2.4.1 exits 1 after any cr_log_warn. */
        cr_skip_test("instruction set %s not available on this CPU/OS/build",
                     spruce_sparse_isa_name(isa));
        return;
    }
    cr_assert_eq(spruce_sparse_isa_set(isa), 0);
    for (c = 0; c < sizeof cases / sizeof *cases; c++)
        for (s = 0; s < sizeof shapes / sizeof *shapes; s++) {
            spruce_qmatrix *A = make_matrix(shapes[s][0], shapes[s][1], &cases[c], 100 + s);
            for (b = 0; b < sizeof batches / sizeof *batches; b++)
                for (t = 1; t <= 2; t++)
                    check_one(A, batches[b], t, 7 * b + t);
            spruce_qmatrix_free(A);
        }
}

Test(qdense, scalar) { run_isa(SPRUCE_ISA_SCALAR); }
Test(qdense, avx2) { run_isa(SPRUCE_ISA_AVX2); }

/* AVX-512 with the plain bf16 kernel, then (where the CPU has it) with the
 * AVX512-BF16 dot products. */
Test(qdense, avx512)
{
    if (spruce_qmatrix_bf16dp_available())
        cr_assert_eq(spruce_qmatrix_bf16dp_set(0), 0);
    run_isa(SPRUCE_ISA_AVX512);
}

Test(qdense, avx512_bf16dp)
{
    if (!spruce_qmatrix_bf16dp_available() || !spruce_sparse_isa_supported(SPRUCE_ISA_AVX512)) {
        cr_assert_eq(spruce_qmatrix_bf16dp_set(1), SPRUCE_EUNSUPPORTED);
        cr_skip_test("AVX512-BF16 not available on this CPU/OS/build");
        return;
    }
    cr_assert_eq(spruce_qmatrix_bf16dp_set(1), 0);
    cr_assert_eq(spruce_sparse_isa_set(SPRUCE_ISA_AVX512), 0);
    {
        const qcase c = {SPRUCE_DT_BF16, 0, 0};
        size_t s;
        for (s = 0; s < sizeof shapes / sizeof *shapes; s++) {
            spruce_qmatrix *A = make_matrix(shapes[s][0], shapes[s][1], &c, 300 + s);
            cr_assert_str_eq(spruce_qmatrix_kernel_name(A, 1), "avx512-bf16dp");
            check_one(A, 1, 1, 5);
            check_one(A, 1, 2, 6);
            spruce_qmatrix_free(A);
        }
    }
}

/* Every instruction set gives the same products within the bound, on a
 * matrix as wide as a LLaMA layer's rows. */
Test(qdense, instruction_sets_agree)
{
    const qcase c[3] = {{SPRUCE_DT_BF16, 0, 0}, {SPRUCE_DT_INT8, 0, 1}, {SPRUCE_DT_INT4, 128, 1}};
    int k, isa, bi;
    for (k = 0; k < 3; k++) {
        spruce_qmatrix *A = make_matrix(6, 11008, &c[k], 77);
        float *Wd = malloc(sizeof *Wd * 6 * 11008);
        cr_assert_eq(spruce_qmatrix_dequantize(A, Wd), 0);
        for (bi = 0; bi < 2; bi++) {
            const int batch = bi ? 16 : 1;
            float *X = random_floats((size_t)11008 * batch, 9);
            float *Y0 = malloc(sizeof *Y0 * 6 * batch), *Y = malloc(sizeof *Y * 6 * batch);
            cr_assert_eq(spruce_sparse_isa_set(SPRUCE_ISA_SCALAR), 0);
            cr_assert_eq(spruce_qmatrix_product(A, X, batch, Y0, 1), 0);
            for (isa = 1; isa < SPRUCE_ISA_COUNT; isa++) {
                if (!spruce_sparse_isa_supported(isa))
                    continue;
                cr_assert_eq(spruce_sparse_isa_set(isa), 0);
                cr_assert_eq(spruce_qmatrix_product(A, X, batch, Y, 2), 0);
                check_close(spruce_sparse_isa_name(isa), A, Wd, X, batch, Y, Y0, 4.0,
                            ldexp(1.0, -23) / 11008);
            }
            free(X);
            free(Y0);
            free(Y);
        }
        free(Wd);
        spruce_qmatrix_free(A);
    }
}

Test(qdense, bad_arguments)
{
    const qcase c = {SPRUCE_DT_INT8, 0, 0};
    spruce_qmatrix *A = make_matrix(2, 8, &c, 1);
    float x[8] = {0}, y[2];
    cr_assert_eq(spruce_qmatrix_product(NULL, x, 1, y, 1), SPRUCE_EINVAL);
    cr_assert_eq(spruce_qmatrix_product(A, NULL, 1, y, 1), SPRUCE_EINVAL);
    cr_assert(strstr(spruce_errdetail(), "input"), "%s", spruce_errdetail());
    cr_assert_eq(spruce_qmatrix_product(A, x, 0, y, 1), SPRUCE_ESHAPE);
    cr_assert_eq(spruce_qmatrix_product(A, x, 1, y, -1), SPRUCE_EINVAL);
    A->dtype = SPRUCE_DT_F32;
    cr_assert_eq(spruce_qmatrix_product(A, x, 1, y, 1), SPRUCE_EDTYPE);
    A->dtype = SPRUCE_DT_INT8;
    spruce_qmatrix_free(A);
}

/* A row of odd length ends in a byte whose high nibble is no column: a
 * checkpoint may leave anything there, and no kernel may count it. */
Test(qdense, spare_nibble_of_odd_rows_counts_nothing)
{
    const qcase c = {SPRUCE_DT_INT4, 32, 1};
    const int rows = 6, cols = 65, batches2[2] = {1, 5};
    spruce_qmatrix *A = make_matrix(rows, cols, &c, 41);
    float *X = random_floats((size_t)cols * 5, 3), Y0[6 * 5], Y[6 * 5];
    int isa, i, b, k;
    for (b = 0; b < 2; b++) {
        cr_assert_eq(spruce_sparse_isa_set(SPRUCE_ISA_SCALAR), 0);
        for (i = 0; i < rows; i++)
            A->q[(size_t)i * A->ld + A->ld - 1] &= 0x0f;
        cr_assert_eq(spruce_qmatrix_product(A, X, batches2[b], Y0, 1), 0);
        for (i = 0; i < rows; i++)
            A->q[(size_t)i * A->ld + A->ld - 1] |= 0xf0;
        for (isa = 0; isa < SPRUCE_ISA_COUNT; isa++) {
            if (!spruce_sparse_isa_supported(isa))
                continue;
            cr_assert_eq(spruce_sparse_isa_set(isa), 0);
            cr_assert_eq(spruce_qmatrix_product(A, X, batches2[b], Y, 2), 0);
            for (k = 0; k < rows * batches2[b]; k++)
                cr_assert_float_eq(Y[k], Y0[k], 1e-4f * (1.0f + fabsf(Y0[k])),
                                   "%s batch %d: entry %d", spruce_sparse_isa_name(isa),
                                   batches2[b], k);
        }
    }
    free(X);
    spruce_qmatrix_free(A);
}
