/* test_pairs.c: 2:4 and 1:4 matrices in the pair layout (SPRUCE_LAYOUT_PAIRS),
 * float32, bf16, int8 and int4 values.
 * The weights read back equal those of the default layout packed from the
 * same input; every product (batch 1, 3, 16, 37; every instruction set the
 * machine has) against the scalar oracle and against OpenBLAS on those
 * weights, with a bound scaled to the row length; odd shapes (an odd number of
 * rows, columns not a multiple of 8 or of 4, one row, rows fewer than threads,
 * empty rows, wider than a column block); the bytes; the refusals. */
#include <cblas.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "qsparse_testutil.h"
#include "spruce_qsparse.h"
#include "spruce_sparse.h"

/* One of the two kinds of matrix, so the checks below serve both. */
typedef struct {
    spruce_sparse *sp;
    spruce_qsparse *qs;
} mat;

static int mat_mul(const mat *A, int isa, const float *X, int batch, float *Y)
{
    return A->sp ? spruce_sparse_mul_isa(A->sp, isa, X, batch, Y)
                 : spruce_qsparse_mul_isa(A->qs, isa, X, batch, Y);
}

static int mat_read(const mat *A, float *W)
{
    return A->sp ? spruce_sparse_unpack(A->sp, W) : spruce_qsparse_dequantize(A->qs, W);
}

static void mat_free(mat *A)
{
    spruce_sparse_free(A->sp);
    spruce_qsparse_free(A->qs);
}

/* Pack W under mask in layout (float32 as is, other types quantized). */
static int mat_pack(mat *A, const float *W, const uint8_t *mk, int rows, int cols, int dtype,
                    int groupsize, int asym, int n, int threads, int layout)
{
    const spruce_pack_opts po = {SPRUCE_FMT_NM, n, 4, threads, layout};
    memset(A, 0, sizeof *A);
    if (dtype == SPRUCE_DT_F32)
        return spruce_sparse_pack(W, mk, rows, cols, &po, &A->sp);
    return spruce_qsparse_quantize(W, mk, rows, cols, dtype, groupsize, asym, &po, &A->qs);
}

static void check_products(const mat *A, int isa, int rows, int cols, const char *what)
{
    static const int batches[] = {1, 3, 16, 37};
    float *W = malloc(sizeof *W * (size_t)rows * cols);
    int k;
    cr_assert_eq(mat_read(A, W), 0);
    for (k = 0; k < 4; k++) {
        const int batch = batches[k];
        float *X = random_floats((size_t)cols * batch, 100 + k);
        float *Y = malloc(sizeof *Y * (size_t)rows * batch);
        float *O = malloc(sizeof *O * (size_t)rows * batch);
        float *R = malloc(sizeof *R * (size_t)rows * batch);
        char msg[200];
        int t;
        for (t = 0; t < rows * batch; t++)
            Y[t] = O[t] = NAN; /* every output must be written */
        cr_assert_eq(mat_mul(A, isa, X, batch, Y), 0, "%s", spruce_errdetail());
        cr_assert_eq(mat_mul(A, SPRUCE_ISA_SCALAR, X, batch, O), 0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, batch, cols, 1, W, cols, X,
                    batch, 0, R, batch);
        snprintf(msg, sizeof msg, "%s, %s, batch %d, against the oracle", what,
                 spruce_sparse_isa_name(isa), batch);
        check_close(msg, Y, O, W, X, rows, cols, batch);
        snprintf(msg, sizeof msg, "%s, %s, batch %d, against OpenBLAS", what,
                 spruce_sparse_isa_name(isa), batch);
        check_close(msg, Y, R, W, X, rows, cols, batch);
        free(X);
        free(Y);
        free(O);
        free(R);
    }
    free(W);
}

typedef struct {
    int rows, cols, dtype, groupsize, asym, n, threads;
} shape;

static const shape shapes[] = {
    /* rows, cols, dtype, group, asym, n, threads */
    {64, 256, SPRUCE_DT_F32, 0, 0, 2, 2},
    {7, 36, SPRUCE_DT_F32, 0, 0, 2, 2},       /* odd rows; cols % 8 = 4 */
    {5, 37, SPRUCE_DT_F32, 0, 0, 2, 3},       /* cols % 4 = 1: a last group of one */
    {1, 10, SPRUCE_DT_F32, 0, 0, 1, 2},       /* 1:4, one row, fewer rows than threads */
    {6, 9000, SPRUCE_DT_F32, 0, 0, 2, 2},     /* wider than a column block */
    {37, 100, SPRUCE_DT_BF16, 0, 0, 2, 2},
    {3, 7, SPRUCE_DT_BF16, 0, 0, 1, 1},
    {16, 1030, SPRUCE_DT_INT8, 0, 0, 2, 2},
    {9, 333, SPRUCE_DT_INT8, 0, 1, 2, 2},     /* zero points */
    {1, 19, SPRUCE_DT_INT8, 0, 1, 1, 3},
    {13, 200, SPRUCE_DT_INT4, 32, 0, 2, 2},   /* cols not a multiple of the group */
    {6, 300, SPRUCE_DT_INT4, 64, 1, 2, 2},
    {5, 1000, SPRUCE_DT_INT4, 256, 1, 1, 1},
    {3, 95, SPRUCE_DT_INT4, 128, 0, 2, 2},    /* narrower than one group */
    {11, 9001, SPRUCE_DT_INT4, 96, 1, 2, 2},  /* an odd number of blocks per group */
    {4, 72, SPRUCE_DT_INT4, 32, 1, 2, 2},     /* a group and a block past it */
    /* rows wider than 4096 columns */
    {10, 8197, SPRUCE_DT_INT8, 0, 1, 2, 2},   /* the last block narrower, zero points */
    {9, 4100, SPRUCE_DT_BF16, 0, 0, 1, 2},    /* a chunk of one block past the first */
    {5, 12292, SPRUCE_DT_INT4, 32, 0, 2, 3},
    {3, 4104, SPRUCE_DT_F32, 0, 0, 2, 1},
};

static void check_isa(int isa)
{
    size_t s;
    if (!spruce_sparse_isa_supported(isa))
        cr_skip_test("%s: not supported by this build, CPU or OS", spruce_sparse_isa_name(isa));
    for (s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const shape *h = &shapes[s];
        const size_t count = (size_t)h->rows * h->cols;
        float *W = random_floats(count, 7 + s);
        uint8_t *mk = make_mask(h->rows, h->cols, h->n, 4, 11 + s);
        float *D = malloc(sizeof *D * count), *B = malloc(sizeof *B * count);
        mat A, Ab;
        char what[120];
        size_t k;
        snprintf(what, sizeof what, "%s %d:4 pairs (%d, %d) g%d%s", spruce_dtype_name(h->dtype),
                 h->n, h->rows, h->cols, h->groupsize, h->asym ? " asym" : "");
        cr_assert_eq(mat_pack(&A, W, mk, h->rows, h->cols, h->dtype, h->groupsize, h->asym, h->n,
                              h->threads, SPRUCE_LAYOUT_PAIRS),
                     0, "%s: %s", what, spruce_errdetail());
        cr_assert_eq(mat_pack(&Ab, W, mk, h->rows, h->cols, h->dtype, h->groupsize, h->asym, h->n,
                              h->threads, SPRUCE_LAYOUT_BITS),
                     0, "%s: %s", what, spruce_errdetail());
        cr_assert_eq(A.sp ? spruce_sparse_layout(A.sp) : spruce_qsparse_layout(A.qs),
                     SPRUCE_LAYOUT_PAIRS);
        cr_assert_eq(A.sp ? spruce_sparse_nnz(A.sp) : spruce_qsparse_nnz(A.qs),
                     (int64_t)h->rows * ((h->cols + 3) / 4) * 2, "%s: slots", what);
        /* the same weights as the default layout holds */
        cr_assert_eq(mat_read(&A, D), 0);
        cr_assert_eq(mat_read(&Ab, B), 0);
        for (k = 0; k < count; k++)
            cr_assert_eq(D[k], B[k], "%s: weight (%d, %d) %g, expected %g", what,
                         (int)(k / h->cols), (int)(k % h->cols), (double)D[k], (double)B[k]);
        check_products(&A, isa, h->rows, h->cols, what);
        mat_free(&A);
        mat_free(&Ab);
        free(W);
        free(mk);
        free(D);
        free(B);
    }
}

Test(pairs, scalar_matches_openblas) { check_isa(SPRUCE_ISA_SCALAR); }
Test(pairs, avx2_matches_oracle_and_openblas) { check_isa(SPRUCE_ISA_AVX2); }
Test(pairs, avx512_matches_oracle_and_openblas) { check_isa(SPRUCE_ISA_AVX512); }

/* Special values of x reach the products as in a dense product: a NaN in a
 * column no row keeps still poisons nothing it is not multiplied with...
 * except the slots that hold 0 (as in the default layout and dense): an Inf
 * in x gives NaN exactly where OpenBLAS on the weights with the zero slots
 * would, so only finite x is promised; this checks large finite x. */
Test(pairs, large_inputs_stay_finite)
{
    const int rows = 6, cols = 40;
    float *W = random_floats((size_t)rows * cols, 3), X[40], Y[6], O[6];
    uint8_t *mk = make_mask(rows, cols, 2, 4, 5);
    mat A;
    int j, i;
    for (j = 0; j < cols; j++)
        X[j] = (j % 2 ? -1.0f : 1.0f) * 1e30f;
    cr_assert_eq(mat_pack(&A, W, mk, rows, cols, SPRUCE_DT_INT8, 0, 0, 2, 1, SPRUCE_LAYOUT_PAIRS),
                 0);
    cr_assert_eq(mat_mul(&A, spruce_sparse_isa(), X, 1, Y), 0);
    cr_assert_eq(mat_mul(&A, SPRUCE_ISA_SCALAR, X, 1, O), 0);
    for (i = 0; i < rows; i++) {
        cr_assert(isfinite(Y[i]), "row %d: %g", i, (double)Y[i]);
        cr_assert_leq(fabs((double)Y[i] - O[i]), 1e-5 * fabs((double)O[i]) + 1e24, "row %d", i);
    }
    mat_free(&A);
    free(W);
    free(mk);
}

/* What a product streams: 8 values and 16 bits of positions per block of 8
 * columns of a pair of rows, plus int8's scales. */
Test(pairs, bytes)
{
    const int rows = 64, cols = 256;
    float *W = random_floats((size_t)rows * cols, 1);
    uint8_t *mk = make_mask(rows, cols, 2, 4, 2);
    mat A, B;
    cr_assert_eq(mat_pack(&A, W, mk, rows, cols, SPRUCE_DT_F32, 0, 0, 2, 1, SPRUCE_LAYOUT_PAIRS), 0);
    cr_assert_eq(spruce_sparse_bytes(A.sp), (size_t)32 * 32 * (8 * 4 + 2));
    cr_assert_eq(mat_pack(&B, W, mk, rows, cols, SPRUCE_DT_INT8, 0, 0, 2, 1, SPRUCE_LAYOUT_PAIRS), 0);
    cr_assert_eq(spruce_qsparse_bytes(B.qs), (size_t)32 * 32 * (8 + 2) + 4 * rows);
    mat_free(&A);
    mat_free(&B);
    free(W);
    free(mk);
}

Test(pairs, refusals)
{
    float W[64] = {0};
    uint8_t mk[64] = {0};
    spruce_sparse *A = NULL;
    spruce_qsparse *Q = NULL;
    spruce_pack_opts po = {SPRUCE_FMT_NM, 2, 8, 1, SPRUCE_LAYOUT_PAIRS};
    mk[0] = mk[1] = mk[2] = 1; /* 3 of the first 4 */
    cr_assert_eq(spruce_sparse_pack(W, NULL, 8, 8, &po, &A), SPRUCE_EUNSUPPORTED);
    cr_assert(strstr(spruce_errdetail(), "2:8"), "%s", spruce_errdetail());
    po.n = 3, po.m = 4;
    cr_assert_eq(spruce_sparse_pack(W, NULL, 8, 8, &po, &A), SPRUCE_EUNSUPPORTED);
    po.format = SPRUCE_FMT_BITMASK;
    cr_assert_eq(spruce_sparse_pack(W, NULL, 8, 8, &po, &A), SPRUCE_EUNSUPPORTED);
    po.format = SPRUCE_FMT_NM, po.n = 2, po.layout = 5;
    cr_assert_eq(spruce_sparse_pack(W, NULL, 8, 8, &po, &A), SPRUCE_EINVAL);
    po.layout = SPRUCE_LAYOUT_PAIRS;
    cr_assert_eq(spruce_sparse_pack(W, mk, 8, 8, &po, &A), SPRUCE_EPATTERN);
    cr_assert_eq(spruce_qsparse_quantize(W, mk, 8, 8, SPRUCE_DT_INT8, 0, 0, &po, &Q),
                 SPRUCE_EPATTERN);
    cr_assert_null(A);
    cr_assert_null(Q);
}
