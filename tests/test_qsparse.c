/* test_qsparse.c: compressed rows, bitmask and N:M matrices with bf16, int8
 * and int4 values.
 * Every value type x format x instruction set against the scalar oracle and
 * against OpenBLAS on the dequantized float32 weights (pruned ones zero), with
 * a bound scaled to the row length; odd shapes (columns not a multiple of 16,
 * of M or of the group; fewer rows than threads; empty rows; column blocks);
 * packing from float32 weights as spruce_qmatrix_quantize quantizes them and
 * from given quantized values; the refusals. */
#include <cblas.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "qsparse_internal.h"
#include "qsparse_testutil.h"
#include "spruce_qsparse.h"

typedef struct {
    int rows, cols, dtype, groupsize, asym, n, m, nthreads;
} shape;

/* Products of one packed matrix at batch 1, 3 and 17 with every instruction
 * set this machine has (skipping none silently: the caller's test skips the
 * ones it lacks), each against the scalar oracle and against OpenBLAS on the
 * dequantized weights. */
static void check_products(const spruce_qsparse *A, int isa, const char *what)
{
    static const int batches[] = {1, 3, 17};
    const int rows = spruce_qsparse_rows(A), cols = spruce_qsparse_cols(A);
    float *W = malloc(sizeof *W * (size_t)rows * cols);
    int k;
    cr_assert_eq(spruce_qsparse_dequantize(A, W), 0);
    for (k = 0; k < 3; k++) {
        const int batch = batches[k];
        float *X = random_floats((size_t)cols * batch, 100 + k);
        float *Y = malloc(sizeof *Y * (size_t)rows * batch);
        float *O = malloc(sizeof *O * (size_t)rows * batch);
        float *R = malloc(sizeof *R * (size_t)rows * batch);
        char msg[200];
        int t;
        for (t = 0; t < rows * batch; t++)
            Y[t] = NAN; /* every output must be written */
        cr_assert_eq(spruce_qsparse_mul_isa(A, isa, X, batch, Y), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_qsparse_mul_isa(A, SPRUCE_ISA_SCALAR, X, batch, O), 0);
        if (batch == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1, W, cols, X, 1, 0, R, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, batch, cols, 1, W, cols,
                        X, batch, 0, R, batch);
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

static const shape shapes[] = {
    /* rows, cols, dtype, group, asym, n, m, threads */
    {37, 100, SPRUCE_DT_BF16, 0, 0, 2, 4, 2},    /* cols not a multiple of 16 */
    {1, 77, SPRUCE_DT_BF16, 0, 0, 2, 4, 2},      /* fewer rows than threads, cols % 4 = 1 */
    {16, 1030, SPRUCE_DT_INT8, 0, 0, 2, 4, 2},
    {9, 333, SPRUCE_DT_INT8, 0, 1, 1, 3, 2},     /* zero point; M not dividing 16 */
    {1, 19, SPRUCE_DT_INT8, 0, 1, 2, 4, 3},
    {13, 200, SPRUCE_DT_INT4, 32, 0, 2, 4, 2},   /* cols not a multiple of the group */
    {6, 300, SPRUCE_DT_INT4, 64, 1, 2, 4, 2},
    {5, 1000, SPRUCE_DT_INT4, 256, 1, 4, 8, 1},
    {3, 95, SPRUCE_DT_INT4, 128, 0, 2, 4, 2},    /* narrower than one group */
    {20, 9001, SPRUCE_DT_INT4, 96, 1, 2, 4, 2},  /* column blocks */
    {20, 8961, SPRUCE_DT_BF16, 0, 0, 2, 4, 2},
    {12, 8500, SPRUCE_DT_INT8, 0, 0, 2, 4, 2},
    {3, 70001, SPRUCE_DT_INT4, 160, 1, 2, 4, 2}, /* CSR's 32-bit columns */
};

/* Pack every shape in the three formats and check every product with isa;
 * the dequantized weights are those spruce_qmatrix_quantize gives the masked
 * W. */
static void check_isa(int isa)
{
    size_t s;
    int f;
    if (!spruce_sparse_isa_supported(isa))
        cr_skip_test("%s: not supported by this build, CPU or OS", spruce_sparse_isa_name(isa));
    for (s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const shape *h = &shapes[s];
        for (f = 0; f < 3; f++) {
            static const int fmts[3] = {SPRUCE_FMT_BITMASK, SPRUCE_FMT_NM, SPRUCE_FMT_CSR};
            const spruce_pack_opts po = {fmts[f], h->n, h->m, h->nthreads, SPRUCE_LAYOUT_BITS};
            float *W = random_floats((size_t)h->rows * h->cols, 7 + s);
            uint8_t *mk = make_mask(h->rows, h->cols, h->n, f == 1 ? h->m : 0, 11 + s);
            float *D = malloc(sizeof *D * (size_t)h->rows * h->cols), *Wk;
            spruce_qsparse *A = NULL;
            spruce_qmatrix *Q = NULL;
            char what[120];
            size_t k;
            snprintf(what, sizeof what, "%s %s (%d, %d) g%d%s", spruce_dtype_name(h->dtype),
                     spruce_format_name(fmts[f]), h->rows, h->cols, h->groupsize,
                     h->asym ? " asym" : "");
            cr_assert_eq(spruce_qsparse_quantize(W, mk, h->rows, h->cols, h->dtype, h->groupsize,
                                                 h->asym, &po, &A),
                         0, "%s: %s", what, spruce_errdetail());
            /* the same values as the dense quantizer gives the masked weights */
            Wk = malloc(sizeof *Wk * (size_t)h->rows * h->cols);
            for (k = 0; k < (size_t)h->rows * h->cols; k++)
                Wk[k] = mk[k] ? W[k] : 0.0f;
            cr_assert_eq(spruce_qmatrix_quantize(Wk, h->rows, h->cols, h->dtype, h->groupsize,
                                                 h->asym, &Q), 0);
            cr_assert_eq(spruce_qsparse_dequantize(A, D), 0);
            for (k = 0; k < (size_t)h->rows * h->cols; k++) {
                const float want = mk[k] ? spruce_qmatrix_at(Q, (int)(k / h->cols),
                                                             (int)(k % h->cols)) : 0.0f;
                cr_assert_eq(D[k], want, "%s: weight (%d, %d) %g, expected %g", what,
                             (int)(k / h->cols), (int)(k % h->cols), (double)D[k], (double)want);
            }
            check_products(A, isa, what);
            spruce_qsparse_free(A);
            spruce_qmatrix_free(Q);
            free(W);
            free(Wk);
            free(mk);
            free(D);
        }
    }
}

Test(qsparse, scalar_matches_openblas) { check_isa(SPRUCE_ISA_SCALAR); }
Test(qsparse, avx2_matches_oracle_and_openblas) { check_isa(SPRUCE_ISA_AVX2); }
Test(qsparse, avx512_matches_oracle_and_openblas) { check_isa(SPRUCE_ISA_AVX512); }

/* Given quantized values, no mask: kept where the weight dequantizes to a
 * non-zero (q != z), and the stored codes are the given ones. */
Test(qsparse, pack_given_values_keeps_nonzero_codes)
{
    spruce_qmatrix *Q = NULL;
    spruce_qsparse *A = NULL;
    const spruce_pack_opts po = {SPRUCE_FMT_BITMASK, 0, 0, 1, SPRUCE_LAYOUT_BITS};
    float W[2 * 64], D[2 * 64];
    int j;
    for (j = 0; j < 128; j++)
        W[j] = j % 3 ? (float)((j % 15) - 7) : 0.0f;
    cr_assert_eq(spruce_qmatrix_quantize(W, 2, 64, SPRUCE_DT_INT4, 32, 0, &Q), 0);
    cr_assert_eq(spruce_qsparse_pack(Q, NULL, &po, &A), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_qsparse_dequantize(A, D), 0);
    for (j = 0; j < 128; j++)
        cr_assert_eq(D[j], W[j], "weight %d: %g, expected %g", j, (double)D[j], (double)W[j]);
    /* 0 and the (j % 15) == 7 weights are level 0: 2 x 64 minus those */
    {
        int64_t want = 0;
        for (j = 0; j < 128; j++)
            want += W[j] != 0.0f;
        cr_assert_eq(spruce_qsparse_nnz(A), want);
    }
    spruce_qsparse_free(A);
    spruce_qmatrix_free(Q);
}

/* An N:M group keeping too many is refused, naming the row and group; so are
 * the dense format, a bad pattern and a bad group size. */
Test(qsparse, refusals)
{
    float W[2 * 16];
    spruce_qsparse *A = NULL;
    spruce_pack_opts po = {SPRUCE_FMT_NM, 2, 4, 1, SPRUCE_LAYOUT_BITS};
    memset(W, 0, sizeof W);
    W[0] = W[1] = 1.0f;                 /* row 0: 2:4 */
    W[16] = W[18] = 1.0f;               /* row 1, group 0: 2 */
    W[20] = W[21] = W[23] = 1.0f;       /* row 1, group 1 (columns 4..7): 3 */
    cr_assert_eq(spruce_qsparse_quantize(W, NULL, 2, 16, SPRUCE_DT_INT8, 0, 0, &po, &A),
                 SPRUCE_EPATTERN);
    cr_assert_null(A);
    cr_assert(strstr(spruce_errdetail(), "row 1, group 1"), "%s", spruce_errdetail());
    po.format = SPRUCE_FMT_DENSE;
    cr_assert_eq(spruce_qsparse_quantize(W, NULL, 2, 16, SPRUCE_DT_INT8, 0, 0, &po, &A),
                 SPRUCE_EINVAL);
    po.format = SPRUCE_FMT_NM;
    po.n = 4;
    cr_assert_eq(spruce_qsparse_quantize(W, NULL, 2, 16, SPRUCE_DT_INT8, 0, 0, &po, &A),
                 SPRUCE_EINVAL);
    po.format = SPRUCE_FMT_BITMASK;
    cr_assert_eq(spruce_qsparse_quantize(W, NULL, 2, 16, SPRUCE_DT_INT4, 48, 0, &po, &A),
                 SPRUCE_EINVAL);
    cr_assert(strstr(spruce_errdetail(), "group size"), "%s", spruce_errdetail());
    cr_assert_eq(spruce_qsparse_quantize(W, NULL, 2, 16, SPRUCE_DT_F32, 0, 0, &po, &A),
                 SPRUCE_EDTYPE);
    cr_assert_null(A);
    W[23] = NAN; /* a kept weight */
    cr_assert_eq(spruce_qsparse_quantize(W, NULL, 2, 16, SPRUCE_DT_INT8, 0, 0, &po, &A),
                 SPRUCE_ENAN);
    cr_assert(strstr(spruce_errdetail(), "(1, 7)"), "%s", spruce_errdetail());
    cr_assert_null(A);
}

/* Bytes a product streams: 2:4 int8 of (64, 1024): 512 values + 1 bit per
 * weight + a scale per row + the row starts. */
Test(qsparse, bytes)
{
    float *W = random_floats(64 * 1024, 3);
    uint8_t *mk = make_mask(64, 1024, 2, 4, 5);
    spruce_qsparse *A = NULL;
    const spruce_pack_opts po = {SPRUCE_FMT_NM, 2, 4, 1, SPRUCE_LAYOUT_BITS};
    cr_assert_eq(spruce_qsparse_quantize(W, mk, 64, 1024, SPRUCE_DT_INT8, 0, 0, &po, &A), 0);
    cr_assert_eq(spruce_qsparse_nnz(A), 64 * 512);
    cr_assert_eq(spruce_qsparse_bytes(A), 64 * 512 + 64 * 1024 / 8 + 64 * 4 + 65 * 8);
    spruce_qsparse_free(A);
    {
        /* compressed rows: a 16-bit column per value, the row starts and counts */
        const spruce_pack_opts pc = {SPRUCE_FMT_CSR, 0, 0, 1, SPRUCE_LAYOUT_BITS};
        size_t kept = 0, k;
        for (k = 0; k < 64 * 1024; k++)
            kept += mk[k] != 0; /* the mask keeps fewer than 2 in some groups */
        cr_assert_eq(spruce_qsparse_quantize(W, mk, 64, 1024, SPRUCE_DT_INT8, 0, 0, &pc, &A), 0);
        cr_assert_eq(spruce_qsparse_nnz(A), (int64_t)kept);
        cr_assert_eq(spruce_qsparse_bytes(A), kept * (1 + 2) + 64 * 4 + (2 * 64 + 1) * 8);
        spruce_qsparse_free(A);
    }
    free(W);
    free(mk);
}

/* The packed int4 values keep spruce_qmatrix.h's (compressed-tensors') nibble
 * order: kept value p of a row in byte p / 2 at bits 4 (p % 2), each row
 * starting on a byte (a row of 3 kept values takes 2 bytes). */
Test(qsparse, int4_packed_nibble_order)
{
    float W[2 * 64];
    uint8_t mk[2 * 64];
    spruce_qsparse *A = NULL;
    const spruce_pack_opts po = {SPRUCE_FMT_BITMASK, 0, 0, 1, SPRUCE_LAYOUT_BITS};
    int j;
    memset(mk, 0, sizeof mk);
    for (j = 0; j < 64; j++)
        W[j] = W[64 + j] = (float)((j % 15) - 7); /* levels -7..7: scale 1, u = level + 8 */
    for (j = 0; j < 64; j += 3)
        mk[j] = 1; /* row 0: columns 0, 3, .., 63 (22 values) */
    mk[64 + 0] = mk[64 + 2] = mk[64 + 4] = 1; /* row 1: 3 values */
    cr_assert_eq(spruce_qsparse_quantize(W, mk, 2, 64, SPRUCE_DT_INT4, 64, 0, &po, &A), 0);
    cr_assert_eq(A->rowptr[1], 22);
    cr_assert_eq(A->rowptr[2], 22 + 4, "row 1 starts on a byte and holds 3 values in 2 bytes");
    for (j = 0; j < 22; j++)
        cr_assert_eq((A->val[j / 2] >> (4 * (j % 2))) & 15, (3 * j % 15) - 7 + 8, "value %d", j);
    cr_assert_eq(A->val[11] & 15, 0 - 7 + 8);
    cr_assert_eq(A->val[11] >> 4, 2 - 7 + 8);
    cr_assert_eq(A->val[12] & 15, 4 - 7 + 8);
    spruce_qsparse_free(A);
}
