/* test_sparse.c: packed formats, kernels of every instruction set and the
 * linear layer (`spruce bench` is tested in test_bench.c).
 * Every product is checked against a double-precision reference with a bound
 * that grows with the row length, against the scalar kernels (the oracle) and
 * against OpenBLAS. */
#if defined(__linux__)
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <sched.h>
#endif
#include <cblas.h>
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sparse_internal.h"
#include "spruce_sparse.h"

/* ---- helpers ----------------------------------------------------------- */
static uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = s * 0x9E3779B97F4A7C15ull + 1; }
static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static float rng_float(void) { return (float)((rng_next() >> 40) / (double)(1 << 24)) * 2.0f - 1.0f; }

/* W (rows, cols) with about `sparsity` zeros; rows listed in empty are all zero. */
static float *make_matrix(int rows, int cols, double sparsity, uint64_t seed)
{
    float *W = malloc(sizeof *W * (size_t)rows * cols);
    int64_t i;
    rng_seed(seed);
    for (i = 0; i < (int64_t)rows * cols; i++) {
        double u = (rng_next() >> 11) / 9007199254740992.0;
        W[i] = u < sparsity ? 0.0f : rng_float();
        if (W[i] == 0.0f && u >= sparsity)
            W[i] = 0.5f;
    }
    return W;
}

/* Keep the n largest |w| of every group of m columns (a short last group too). */
static void make_nm(float *W, int rows, int cols, int n, int m)
{
    int i, g, j, k;
    for (i = 0; i < rows; i++)
        for (g = 0; g < cols; g += m) {
            int e = g + m < cols ? g + m : cols;
            for (k = 0; k < (e - g) - n; k++) { /* drop the smallest, (width - n) times */
                int lo = -1;
                for (j = g; j < e; j++) {
                    float a = fabsf(W[(int64_t)i * cols + j]);
                    if (W[(int64_t)i * cols + j] != 0.0f &&
                        (lo < 0 || a < fabsf(W[(int64_t)i * cols + lo])))
                        lo = j;
                }
                if (lo >= 0)
                    W[(int64_t)i * cols + lo] = 0.0f;
            }
        }
}

/* Check Y (rows, batch) against the double product of W and X with the bound
 * |err| <= (cols + 2) eps sum_k |w_ik x_kj| (+ a tiny absolute term). */
static void check_product(const float *W, const float *X, const float *Y, int rows, int cols,
                          int batch, const char *what)
{
    int i, j, k;
    for (i = 0; i < rows; i++)
        for (j = 0; j < batch; j++) {
            double s = 0, a = 0, err, bound;
            for (k = 0; k < cols; k++) {
                double t = (double)W[(int64_t)i * cols + k] * X[(int64_t)k * batch + j];
                s += t;
                a += fabs(t);
            }
            err = fabs(Y[(int64_t)i * batch + j] - s);
            bound = (cols + 2) * FLT_EPSILON * a + 1e-30;
            if (!(err <= bound))
                cr_assert_fail("%s: (%d x %d) batch %d: Y[%d, %d] = %.9g, expected %.9g (bound %g)",
                               what, rows, cols, batch, i, j, Y[(int64_t)i * batch + j], s, bound);
        }
}

static float *make_input(int cols, int batch, uint64_t seed)
{
    float *X = malloc(sizeof *X * (size_t)cols * batch);
    int64_t i;
    rng_seed(seed);
    for (i = 0; i < (int64_t)cols * batch; i++)
        X[i] = rng_float();
    return X;
}

typedef struct {
    int rows, cols;
    double sparsity;
} shape;

/* Odd shapes: columns not a multiple of 16 or of M, fewer rows than threads,
 * single elements, wide rows that need 32-bit column indices. */
static const shape shapes[] = {
    {1, 1, 0.0}, {3, 64, 0.5}, {37, 100, 0.5}, {70, 129, 0.7}, {64, 256, 0.9},
    {16, 1000, 0.3}, {9, 17, 0.0}, {33, 200, 1.0}, {2, 70001, 0.9}, {5, 9000, 0.5},
};
static const int batches[] = {1, 2, 5, 8, 16, 17, 33, 64, 70};

static int isa_or_skip(int isa)
{
    if (!spruce_sparse_isa_supported(isa)) {
        /* cr_skip_test alone: Criterion 2.4.1 exits 1 after any cr_log_warn. */
        cr_skip_test("instruction set %s not available on this CPU/OS/build",
                     spruce_sparse_isa_name(isa));
        return 0;
    }
    return 1;
}

/* Every shape and batch size of one (format, ISA) against the reference and
 * against the scalar oracle (exactly the same values are summed, so the two
 * agree within the same bound). */
static void run_format(int format, int isa, int n, int m)
{
    size_t s;
    int b, threads;
    for (s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (threads = 1; threads <= 4; threads += 3) {
            const shape sh = shapes[s];
            float *W = make_matrix(sh.rows, sh.cols, sh.sparsity, 11 + s);
            spruce_pack_opts po = {format, n, m, threads, SPRUCE_LAYOUT_BITS};
            spruce_sparse *A = NULL;
            if (sh.rows > 1)
                memset(W + (int64_t)(sh.rows / 2) * sh.cols, 0, sizeof *W * sh.cols); /* empty row */
            if (format == SPRUCE_FMT_NM)
                make_nm(W, sh.rows, sh.cols, n, m);
            cr_assert_eq(spruce_sparse_pack(W, NULL, sh.rows, sh.cols, &po, &A), 0, "pack: %s",
                         spruce_errdetail());
            for (b = 0; b < (int)(sizeof batches / sizeof batches[0]); b++) {
                int batch = batches[b];
                float *X, *Y, *Yo;
                char what[96];
                if (sh.cols > 10000 && batch > 17)
                    continue;
                X = make_input(sh.cols, batch, 7 + b);
                Y = malloc(sizeof *Y * (size_t)sh.rows * batch);
                Yo = malloc(sizeof *Yo * (size_t)sh.rows * batch);
                cr_assert_eq(spruce_sparse_isa_set(SPRUCE_ISA_SCALAR), 0);
                cr_assert_eq(spruce_sparse_mul(A, X, batch, Yo), 0);
                cr_assert_eq(spruce_sparse_isa_set(isa), 0);
                cr_assert_eq(spruce_sparse_mul(A, X, batch, Y), 0);
                snprintf(what, sizeof what, "%s/%s %d threads", spruce_format_name(format),
                         spruce_sparse_isa_name(isa), threads);
                check_product(W, X, Y, sh.rows, sh.cols, batch, what);
                check_product(W, X, Yo, sh.rows, sh.cols, batch, "scalar oracle");
                {
                    int64_t i;
                    for (i = 0; i < (int64_t)sh.rows * batch; i++) {
                        double tol = 1e-5 * (sh.cols + 2) * (fabs(Yo[i]) + 1.0);
                        cr_assert(fabs(Y[i] - Yo[i]) <= tol, "%s: Y[%ld] = %g, oracle %g", what,
                                  (long)i, Y[i], Yo[i]);
                    }
                }
                free(X);
                free(Y);
                free(Yo);
            }
            spruce_sparse_free(A);
            free(W);
        }
}

#define FORMAT_ISA_TEST(fmt, FMT, isa, ISA, n, m)                       \
    Test(kernels, fmt##_##isa)                                          \
    {                                                                   \
        if (!isa_or_skip(SPRUCE_ISA_##ISA))                             \
            return;                                                     \
        run_format(SPRUCE_FMT_##FMT, SPRUCE_ISA_##ISA, n, m);           \
    }

FORMAT_ISA_TEST(csr, CSR, scalar, SCALAR, 0, 0)
FORMAT_ISA_TEST(csr, CSR, avx2, AVX2, 0, 0)
FORMAT_ISA_TEST(csr, CSR, avx512, AVX512, 0, 0)
FORMAT_ISA_TEST(bitmask, BITMASK, scalar, SCALAR, 0, 0)
FORMAT_ISA_TEST(bitmask, BITMASK, avx2, AVX2, 0, 0)
FORMAT_ISA_TEST(bitmask, BITMASK, avx512, AVX512, 0, 0)
FORMAT_ISA_TEST(nm24, NM, scalar, SCALAR, 2, 4)
FORMAT_ISA_TEST(nm24, NM, avx2, AVX2, 2, 4)
FORMAT_ISA_TEST(nm24, NM, avx512, AVX512, 2, 4)
FORMAT_ISA_TEST(nm14, NM, avx512, AVX512, 1, 4)
FORMAT_ISA_TEST(nm14, NM, avx2, AVX2, 1, 4)
FORMAT_ISA_TEST(nm48, NM, avx2, AVX2, 4, 8)
FORMAT_ISA_TEST(nm48, NM, avx512, AVX512, 4, 8)
FORMAT_ISA_TEST(nm23, NM, avx2, AVX2, 2, 3)
FORMAT_ISA_TEST(nm23, NM, avx512, AVX512, 2, 3)

/* ---- against OpenBLAS --------------------------------------------------- */
Test(kernels, every_format_matches_openblas)
{
    const int rows = 96, cols = 300, fmts[3] = {SPRUCE_FMT_CSR, SPRUCE_FMT_BITMASK, SPRUCE_FMT_NM};
    float *W = make_matrix(rows, cols, 0.2, 5);
    int f, isa, b;
    make_nm(W, rows, cols, 2, 4);
    for (isa = 0; isa < SPRUCE_ISA_COUNT; isa++) {
        if (!spruce_sparse_isa_supported(isa))
            continue;
        cr_assert_eq(spruce_sparse_isa_set(isa), 0);
        for (f = 0; f < 3; f++) {
            spruce_pack_opts po = {fmts[f], 2, 4, 2, SPRUCE_LAYOUT_BITS};
            spruce_sparse *A;
            cr_assert_eq(spruce_sparse_pack(W, NULL, rows, cols, &po, &A), 0);
            for (b = 1; b <= 16; b += 15) {
                float *X = make_input(cols, b, 3), *Y = malloc(sizeof *Y * rows * b);
                float *R = malloc(sizeof *R * rows * b);
                int i, k;
                if (b == 1)
                    cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1, W, cols, X, 1, 0, R, 1);
                else
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, b, cols, 1, W,
                                cols, X, b, 0, R, b);
                cr_assert_eq(spruce_sparse_mul(A, X, b, Y), 0);
                for (i = 0; i < rows * b; i++) {
                    double a = 0;
                    for (k = 0; k < cols; k++)
                        a += fabs(W[(i / b) * cols + k] * X[k * b + i % b]);
                    cr_assert(fabs(Y[i] - R[i]) <= 2 * (cols + 2) * FLT_EPSILON * a + 1e-30,
                              "%s/%s batch %d: %g vs sgemv/sgemm %g", spruce_format_name(fmts[f]),
                              spruce_sparse_isa_name(isa), b, Y[i], R[i]);
                }
                free(X);
                free(Y);
                free(R);
            }
            spruce_sparse_free(A);
        }
    }
    free(W);
}

/* ---- packing ------------------------------------------------------------ */
Test(pack, round_trips_and_counts)
{
    const int rows = 41, cols = 133;
    float *W = make_matrix(rows, cols, 0.6, 9), *U = malloc(sizeof *U * rows * cols);
    int f, i;
    int64_t nnz = 0;
    for (i = 0; i < rows * cols; i++)
        nnz += W[i] != 0.0f;
    W[5] = -0.0f; /* negative zero is a zero */
    nnz -= 0;
    for (f = SPRUCE_FMT_CSR; f <= SPRUCE_FMT_BITMASK; f++) {
        spruce_pack_opts po = {f, 0, 0, 3, SPRUCE_LAYOUT_BITS};
        spruce_sparse *A;
        cr_assert_eq(spruce_sparse_pack(W, NULL, rows, cols, &po, &A), 0);
        cr_assert_eq(spruce_sparse_format(A), f);
        cr_assert_eq(spruce_sparse_rows(A), rows);
        cr_assert_eq(spruce_sparse_cols(A), cols);
        cr_assert_eq(spruce_sparse_unpack(A, U), 0);
        for (i = 0; i < rows * cols; i++)
            cr_assert(U[i] == W[i], "%s: element %d: %g != %g", spruce_format_name(f), i, U[i], W[i]);
        cr_assert_eq(spruce_sparse_index_bits(A), f == SPRUCE_FMT_CSR ? 16 : 0);
        cr_assert(spruce_sparse_bytes(A) > 0);
        spruce_sparse_free(A);
    }
    free(W);
    free(U);
}

Test(pack, nnz_and_bytes_follow_the_format)
{
    const int rows = 8, cols = 128;
    float *W = make_matrix(rows, cols, 0.0, 1);
    spruce_pack_opts csr = {SPRUCE_FMT_CSR, 0, 0, 1, SPRUCE_LAYOUT_BITS}, bm = {SPRUCE_FMT_BITMASK, 0, 0, 1, SPRUCE_LAYOUT_BITS};
    spruce_pack_opts nm = {SPRUCE_FMT_NM, 2, 4, 1, SPRUCE_LAYOUT_BITS};
    spruce_sparse *A, *B, *C;
    make_nm(W, rows, cols, 2, 4);
    cr_assert_eq(spruce_sparse_pack(W, NULL, rows, cols, &csr, &A), 0);
    cr_assert_eq(spruce_sparse_pack(W, NULL, rows, cols, &bm, &B), 0);
    cr_assert_eq(spruce_sparse_pack(W, NULL, rows, cols, &nm, &C), 0);
    cr_assert_eq(spruce_sparse_nnz(A), rows * cols / 2);
    cr_assert_eq(spruce_sparse_nnz(B), rows * cols / 2);
    cr_assert_eq(spruce_sparse_nnz(C), rows * cols / 2);
    /* values + 16-bit indices + row pointers; values + 1 bit per weight + row pointers */
    cr_assert_eq(spruce_sparse_bytes(A), (size_t)rows * cols / 2 * 6 + (rows + 1) * 8);
    cr_assert_eq(spruce_sparse_bytes(B), (size_t)rows * cols / 2 * 4 + rows * cols / 8 + (rows + 1) * 8);
    spruce_sparse_free(A);
    spruce_sparse_free(B);
    spruce_sparse_free(C);
    free(W);
}

/* Bitmask and N:M matrices wider than SPRUCE__BLOCK_COLS are column blocks of
 * widths that keep N:M groups whole; packing, unpacking, counts and errors see
 * one matrix. */
Test(pack, wide_bitmask_and_nm_are_column_blocks)
{
    const int rows = 3, cols = 2 * SPRUCE__BLOCK_COLS + 100; /* not a multiple of 64 or 6 */
    float *W = make_matrix(rows, cols, 0.0, 21), *U = malloc(sizeof *U * rows * cols);
    spruce_pack_opts bm = {SPRUCE_FMT_BITMASK, 0, 0, 2, SPRUCE_LAYOUT_BITS}, nm = {SPRUCE_FMT_NM, 2, 6, 2, SPRUCE_LAYOUT_BITS};
    spruce_sparse *A;
    int64_t i, nz = 0;
    int b;
    make_nm(W, rows, cols, 2, 6);
    for (i = 0; i < (int64_t)rows * cols; i++)
        nz += W[i] != 0.0f;
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(spruce_sparse_pack(W, NULL, rows, cols, k ? &nm : &bm, &A), 0, "%s",
                     spruce_errdetail());
        cr_assert_eq(A->nblk, 3);
        for (b = 0; b < A->nblk; b++) {
            cr_assert(A->blk[b]->cols <= SPRUCE__BLOCK_COLS);
            cr_assert_eq(A->col0[b] % (k ? 192 : 64), 0, "block %d starts at column %d", b,
                         A->col0[b]);
        }
        cr_assert_eq(A->col0[2] + A->blk[2]->cols, cols);
        if (!k)
            cr_assert_eq(spruce_sparse_nnz(A), nz);
        cr_assert_eq(spruce_sparse_unpack(A, U), 0);
        cr_assert_eq(memcmp(U, W, sizeof *U * rows * cols), 0);
        spruce_sparse_free(A);
    }
    /* a group of the last block that keeps 3 of 6: named by its global columns */
    W[(int64_t)2 * cols + 12000] = 1.0f;
    W[(int64_t)2 * cols + 12001] = 1.0f;
    W[(int64_t)2 * cols + 12002] = 1.0f;
    cr_assert_eq(spruce_sparse_pack(W, NULL, rows, cols, &nm, &A), SPRUCE_EPATTERN);
    cr_assert(strstr(spruce_errdetail(), "row 2, group 2000 (columns 12000..12005)"), "%s",
              spruce_errdetail());
    free(W);
    free(U);
}

Test(pack, wide_rows_use_32_bit_indices)
{
    const int rows = 2, cols = 65537;
    float *W = make_matrix(rows, cols, 0.9, 4), *U = malloc(sizeof *U * rows * cols);
    spruce_pack_opts po = {SPRUCE_FMT_CSR, 0, 0, 1, SPRUCE_LAYOUT_BITS};
    spruce_sparse *A;
    int i;
    W[cols - 1] = 3.0f;
    cr_assert_eq(spruce_sparse_pack(W, NULL, rows, cols, &po, &A), 0);
    cr_assert_eq(spruce_sparse_index_bits(A), 32);
    cr_assert_eq(spruce_sparse_unpack(A, U), 0);
    for (i = 0; i < rows * cols; i++)
        cr_assert(U[i] == W[i]);
    spruce_sparse_free(A);
    free(W);
    free(U);
}

Test(pack, mask_keeps_exactly_the_marked_weights)
{
    const int rows = 10, cols = 40;
    float *W = make_matrix(rows, cols, 0.0, 2), *U = malloc(sizeof *U * rows * cols);
    uint8_t *mask = malloc(rows * cols);
    int f, i;
    for (i = 0; i < rows * cols; i++)
        mask[i] = (i % 4) < 2; /* 2:4 */
    W[0] = 0.0f;               /* kept, but zero */
    for (f = SPRUCE_FMT_CSR; f <= SPRUCE_FMT_NM; f++) {
        spruce_pack_opts po = {f, 2, 4, 2, SPRUCE_LAYOUT_BITS};
        spruce_sparse *A;
        cr_assert_eq(spruce_sparse_pack(W, mask, rows, cols, &po, &A), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_sparse_nnz(A), rows * cols / 2);
        cr_assert_eq(spruce_sparse_unpack(A, U), 0);
        for (i = 0; i < rows * cols; i++)
            cr_assert(U[i] == (mask[i] ? W[i] : 0.0f));
        spruce_sparse_free(A);
    }
    free(W);
    free(U);
    free(mask);
}

Test(pack, nm_pads_short_groups_and_round_trips)
{
    const int rows = 5, cols = 23; /* 23 = 5 groups of 4 + 3 */
    float *W = make_matrix(rows, cols, 0.8, 3), *U = malloc(sizeof *U * rows * cols);
    spruce_pack_opts po = {SPRUCE_FMT_NM, 2, 4, 2, SPRUCE_LAYOUT_BITS};
    spruce_sparse *A;
    int i;
    make_nm(W, rows, cols, 2, 4);
    cr_assert_eq(spruce_sparse_pack(W, NULL, rows, cols, &po, &A), 0);
    cr_assert_eq(spruce_sparse_nnz(A), rows * (5 * 2 + 2)); /* every group holds N slots */
    cr_assert_eq(spruce_sparse_unpack(A, U), 0);
    for (i = 0; i < rows * cols; i++)
        cr_assert(U[i] == W[i]);
    spruce_sparse_free(A);
    free(W);
    free(U);
}

Test(pack, not_nm_is_refused_with_row_and_group)
{
    const int rows = 6, cols = 16;
    float *W = calloc(rows * cols, sizeof *W);
    spruce_pack_opts po = {SPRUCE_FMT_NM, 2, 4, 1, SPRUCE_LAYOUT_BITS};
    spruce_sparse *A = (spruce_sparse *)1;
    W[3 * cols + 8] = W[3 * cols + 9] = W[3 * cols + 11] = 1.0f; /* row 3, group 2: 3 of 4 */
    cr_assert_eq(spruce_sparse_pack(W, NULL, rows, cols, &po, &A), SPRUCE_EPATTERN);
    cr_assert_null(A);
    cr_assert(strstr(spruce_errdetail(), "row 3, group 2"), "detail: %s", spruce_errdetail());
    free(W);
}

Test(pack, invalid_arguments)
{
    float W[4] = {1, 0, 0, 1}, x[2] = {1, 1}, y[2];
    spruce_pack_opts po = {SPRUCE_FMT_CSR, 0, 0, 1, SPRUCE_LAYOUT_BITS}, bad = {7, 0, 0, 1, SPRUCE_LAYOUT_BITS};
    spruce_pack_opts badnm = {SPRUCE_FMT_NM, 4, 4, 1, SPRUCE_LAYOUT_BITS}, badt = {SPRUCE_FMT_CSR, 0, 0, -1, SPRUCE_LAYOUT_BITS};
    spruce_sparse *A = NULL;
    cr_assert_eq(spruce_sparse_pack(NULL, NULL, 2, 2, &po, &A), SPRUCE_EINVAL);
    cr_assert_eq(spruce_sparse_pack(W, NULL, 2, 2, NULL, &A), SPRUCE_EINVAL);
    cr_assert_eq(spruce_sparse_pack(W, NULL, 2, 2, &po, NULL), SPRUCE_EINVAL);
    cr_assert_eq(spruce_sparse_pack(W, NULL, 0, 2, &po, &A), SPRUCE_ESHAPE);
    cr_assert_eq(spruce_sparse_pack(W, NULL, 2, -1, &po, &A), SPRUCE_ESHAPE);
    cr_assert(strstr(spruce_errdetail(), "(2, -1)"));
    cr_assert_eq(spruce_sparse_pack(W, NULL, 2, 2, &bad, &A), SPRUCE_EINVAL);
    cr_assert_eq(spruce_sparse_pack(W, NULL, 2, 2, &badnm, &A), SPRUCE_EINVAL);
    cr_assert_eq(spruce_sparse_pack(W, NULL, 2, 2, &badt, &A), SPRUCE_EINVAL);
    cr_assert_eq(spruce_sparse_pack(W, NULL, 2, 2, &po, &A), 0);
    cr_assert_eq(spruce_sparse_mul(A, NULL, 1, y), SPRUCE_EINVAL);
    cr_assert_eq(spruce_sparse_mul(A, x, 1, NULL), SPRUCE_EINVAL);
    cr_assert_eq(spruce_sparse_mul(NULL, x, 1, y), SPRUCE_EINVAL);
    cr_assert_eq(spruce_sparse_mul(A, x, 0, y), SPRUCE_ESHAPE);
    cr_assert_eq(spruce_sparse_unpack(A, NULL), SPRUCE_EINVAL);
    cr_assert_eq(spruce_sparse_isa_set(SPRUCE_ISA_COUNT), SPRUCE_EUNSUPPORTED);
    cr_assert_eq(spruce_format_parse("bitmask"), SPRUCE_FMT_BITMASK);
    cr_assert_eq(spruce_format_parse("coo"), -1);
    spruce_sparse_free(A);
    spruce_sparse_free(NULL);
    spruce_linear_free(NULL);
}

Test(pack, thread_splits_cover_rows_and_balance_nonzeros)
{
    const int rows = 200, cols = 256, T = 4;
    float *W = make_matrix(rows, cols, 0.5, 8);
    spruce_pack_opts po = {SPRUCE_FMT_CSR, 0, 0, T, SPRUCE_LAYOUT_BITS};
    spruce_sparse *A;
    int i, t;
    for (i = 0; i < 50; i++) /* the first quarter of the rows is dense, the rest nearly empty */
        memset(W + (int64_t)(100 + i) * cols, 0, sizeof *W * cols), memset(W + (int64_t)(150 + i) * cols, 0, sizeof *W * cols);
    cr_assert_eq(spruce_sparse_pack(W, NULL, rows, cols, &po, &A), 0);
    cr_assert_eq(A->nsplit, T); /* a small matrix: one range per thread */
    cr_assert_eq(A->split[0], 0);
    cr_assert_eq(A->split[A->nsplit], rows);
    for (t = 0; t < A->nsplit; t++) {
        /* cost of a CSR row: its non-zeros + 8; every range within one row of an equal share */
        int64_t work = A->rowptr[A->split[t + 1]] - A->rowptr[A->split[t]] +
                       8 * (A->split[t + 1] - A->split[t]);
        int64_t share = (A->nnz + 8 * rows) / A->nsplit;
        cr_assert(A->split[t] <= A->split[t + 1]);
        cr_assert(labs((long)(work - share)) <= cols + 8, "range %d: cost %ld, share %ld", t,
                  (long)work, (long)share);
    }
    spruce_sparse_free(A);
    free(W);
}

/* ---- the linear layer --------------------------------------------------- */
/* Every choice of a small layer and of one wide enough for column blocks. */
static void linear_choices(int rows, int cols)
{
    const int fmts[5] = {-1, SPRUCE_FMT_DENSE, SPRUCE_FMT_CSR, SPRUCE_FMT_BITMASK, SPRUCE_FMT_NM};
    float *W = make_matrix(rows, cols, 0.3, 12);
    int f, b;
    make_nm(W, rows, cols, 2, 4);
    for (f = 0; f < 5; f++) {
        spruce_linear_opts o;
        spruce_linear *lin;
        spruce_linear_opts_init(&o);
        o.format = fmts[f];
        o.nthreads = 2;
        o.reps = 2;
        o.nbatches = 3;
        o.batches[0] = 16;
        o.batches[1] = 1;
        o.batches[2] = 4;
        cr_assert_eq(spruce_linear_create(W, rows, cols, &o, &lin), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_linear_rows(lin), rows);
        cr_assert_eq(spruce_linear_cols(lin), cols);
        cr_assert(spruce_linear_bytes(lin) > 0);
        for (b = 1; b <= 20; b += 3) {
            float *X = make_input(cols, b, b), *Y = malloc(sizeof *Y * rows * b);
            int fmt = spruce_linear_format(lin, b);
            cr_assert(fmt >= SPRUCE_FMT_DENSE && fmt <= SPRUCE_FMT_NM);
            if (fmts[f] >= 0)
                cr_assert_eq(fmt, fmts[f]);
            cr_assert_eq(spruce_linear_forward(lin, X, b, Y), 0);
            check_product(W, X, Y, rows, cols, b, spruce_format_name(fmt));
            free(X);
            free(Y);
        }
        spruce_linear_free(lin);
    }
    free(W);
}

Test(linear, every_choice_computes_the_product)
{
    linear_choices(64, 200);
    linear_choices(8, SPRUCE__BLOCK_COLS + 808);
}

Test(linear, forced_nm_on_a_matrix_that_is_not_nm_fails)
{
    float *W = make_matrix(8, 32, 0.0, 1);
    spruce_linear_opts o;
    spruce_linear *lin = NULL;
    spruce_linear_opts_init(&o);
    o.format = SPRUCE_FMT_NM;
    cr_assert_eq(spruce_linear_create(W, 8, 32, &o, &lin), SPRUCE_EPATTERN);
    cr_assert_null(lin);
    o.format = -1; /* auto: N:M is simply not a candidate */
    cr_assert_eq(spruce_linear_create(W, 8, 32, &o, &lin), 0);
    cr_assert_neq(spruce_linear_format(lin, 1), SPRUCE_FMT_NM);
    cr_assert_eq(spruce_linear_forward(lin, W, 0, W), SPRUCE_ESHAPE);
    cr_assert_eq(spruce_linear_forward(lin, NULL, 1, W), SPRUCE_EINVAL);
    spruce_linear_free(lin);
    cr_assert_eq(spruce_linear_create(W, 0, 32, &o, &lin), SPRUCE_ESHAPE);
    cr_assert_eq(spruce_linear_create(NULL, 8, 32, &o, &lin), SPRUCE_EINVAL);
    free(W);
}

/* linear.c's choice from the candidates' times: sparse where 3% faster than
 * dense at batch 1 (30% at larger batches); at batch 1 in float32 only, a
 * format of at most 60% of dense's bytes that timed within 30% of dense. */
Test(linear, choice_from_times_and_bytes)
{
    const int all[4] = {1, 1, 1, 1}, no_csr[4] = {1, 0, 1, 1};
    const size_t bytes[4] = {4000, 1200, 2125, 2250}; /* dense, csr, bitmask, nm */
    double allowed;
    /* the fastest sparse format that beat dense by 3% */
    {
        const double t[4] = {2.0, 1.9, 1.5, 1.6};
        cr_assert_eq(spruce__linear_choose(t, bytes, all, 1, SPRUCE_DT_F32, &allowed),
                     SPRUCE_FMT_BITMASK);
        cr_assert_float_eq(allowed, 1.94, 1e-12);
    }
    /* 2% faster than dense is not enough, for any value type, unless bytes decide */
    {
        const double t[4] = {2.0, 1e300, 1.96, 1e300};
        const size_t big[4] = {4000, 0, 2600, 0}; /* 65% of dense's bytes */
        const int bm[4] = {1, 0, 1, 0};
        cr_assert_eq(spruce__linear_choose(t, big, bm, 1, SPRUCE_DT_F32, &allowed),
                     SPRUCE_FMT_DENSE);
        cr_assert_eq(spruce__linear_choose(t, big, bm, 1, SPRUCE_DT_INT8, &allowed),
                     SPRUCE_FMT_DENSE);
    }
    /* 20% slower with 30% of dense's bytes: float32 takes it, the other types keep dense */
    {
        const double t[4] = {1.0, 1.2, 1.5, 1e300};
        cr_assert_eq(spruce__linear_choose(t, bytes, all, 1, SPRUCE_DT_F32, &allowed),
                     SPRUCE_FMT_CSR);
        cr_assert_eq(spruce__linear_choose(t, bytes, all, 1, SPRUCE_DT_BF16, &allowed),
                     SPRUCE_FMT_DENSE);
        cr_assert_eq(spruce__linear_choose(t, bytes, all, 1, SPRUCE_DT_INT8, &allowed),
                     SPRUCE_FMT_DENSE);
        cr_assert_eq(spruce__linear_choose(t, bytes, all, 1, SPRUCE_DT_INT4, &allowed),
                     SPRUCE_FMT_DENSE);
        /* not a candidate: bitmask has 53% of the bytes and timed 50% slower */
        cr_assert_eq(spruce__linear_choose(t, bytes, no_csr, 1, SPRUCE_DT_F32, &allowed),
                     SPRUCE_FMT_DENSE);
        /* 31% slower is too slow even for float32 */
        {
            const double t2[4] = {1.0, 1.31, 1.5, 1e300};
            cr_assert_eq(spruce__linear_choose(t2, bytes, all, 1, SPRUCE_DT_F32, &allowed),
                         SPRUCE_FMT_DENSE);
        }
    }
    /* batch 16: only 30% faster than dense wins, and bytes never decide */
    {
        const double t[4] = {1.0, 0.75, 0.72, 1.2};
        cr_assert_eq(spruce__linear_choose(t, bytes, all, 16, SPRUCE_DT_F32, &allowed),
                     SPRUCE_FMT_DENSE);
        cr_assert_float_eq(allowed, 0.7, 1e-12);
    }
    {
        const double t[4] = {1.0, 0.65, 0.6, 1.2};
        cr_assert_eq(spruce__linear_choose(t, bytes, all, 16, SPRUCE_DT_INT8, &allowed),
                     SPRUCE_FMT_BITMASK);
    }
}

/* The rule at dense's edge (linear.c): dense and a sparse format within 3%
 * (or SPRUCE__TIE_SECONDS) of each other at batch 1, of the 30% margin at
 * larger batches, are a tie that the fewer bytes settle. */
Test(linear, ties_with_dense_settle_on_fewer_bytes)
{
    const int all[4] = {1, 1, 1, 1}, bm_nm[4] = {1, 0, 1, 1};
    const size_t bytes[4] = {4000, 1200, 2125, 2250}; /* dense, csr, bitmask, nm */
    double allowed;
    int seen[4];
    /* 2% slower than dense: a tie, nm has fewer bytes */
    {
        const double t[4] = {1e-3, 1e300, 1e300, 1.02e-3};
        cr_assert_eq(spruce__linear_choose(t, bytes, all, 1, SPRUCE_DT_INT8, &allowed),
                     SPRUCE_FMT_DENSE);
        cr_assert_eq(spruce__linear_edge(t, bytes, all, 1, SPRUCE_DT_INT8, seen, &allowed),
                     SPRUCE_FMT_NM);
        cr_assert(seen[SPRUCE_FMT_DENSE] && seen[SPRUCE_FMT_NM]);
        cr_assert(!seen[SPRUCE_FMT_CSR] && !seen[SPRUCE_FMT_BITMASK]);
        cr_assert_float_eq(allowed, 1.03e-3, 1e-15);
    }
    /* 5% slower: no tie */
    {
        const double t[4] = {1e-3, 1e300, 1e300, 1.05e-3};
        cr_assert_eq(spruce__linear_edge(t, bytes, all, 1, SPRUCE_DT_INT8, seen, &allowed),
                     SPRUCE_FMT_DENSE);
        cr_assert(seen[SPRUCE_FMT_DENSE] && !seen[SPRUCE_FMT_NM]);
    }
    /* a small layer: 6 us apart is within the floor, 10 us is not */
    {
        const double t[4] = {30e-6, 1e300, 80e-6, 36e-6};
        const double t2[4] = {30e-6, 1e300, 80e-6, 40e-6};
        cr_assert_eq(spruce__linear_edge(t, bytes, all, 1, SPRUCE_DT_INT4, seen, &allowed),
                     SPRUCE_FMT_NM);
        cr_assert_eq(spruce__linear_edge(t2, bytes, all, 1, SPRUCE_DT_INT4, seen, &allowed),
                     SPRUCE_FMT_DENSE);
    }
    /* two sparse formats in the tie: the fewest bytes of them */
    {
        const double t[4] = {1e-3, 1e300, 1.01e-3, 1.02e-3};
        cr_assert_eq(spruce__linear_edge(t, bytes, bm_nm, 1, SPRUCE_DT_BF16, seen, &allowed),
                     SPRUCE_FMT_BITMASK);
        cr_assert(seen[SPRUCE_FMT_BITMASK] && seen[SPRUCE_FMT_NM] && seen[SPRUCE_FMT_DENSE]);
    }
    /* a format with more bytes than dense is never taken for its bytes, and
     * dense takes back a tie it has fewer bytes in */
    {
        const size_t fat[4] = {4000, 4100, 4200, 4300};
        const double t[4] = {1e-3, 1.02e-3, 1e300, 1e300};
        const double t2[4] = {1e-3, 0.96e-3, 1e300, 1e300};
        cr_assert_eq(spruce__linear_edge(t, fat, all, 1, SPRUCE_DT_F32, seen, &allowed),
                     SPRUCE_FMT_DENSE);
        cr_assert(!seen[SPRUCE_FMT_CSR]);
        cr_assert_eq(spruce__linear_choose(t2, fat, all, 1, SPRUCE_DT_F32, &allowed),
                     SPRUCE_FMT_CSR);
        cr_assert_eq(spruce__linear_edge(t2, fat, all, 1, SPRUCE_DT_F32, seen, &allowed),
                     SPRUCE_FMT_DENSE);
        cr_assert(seen[SPRUCE_FMT_CSR] && seen[SPRUCE_FMT_DENSE]);
    }
    /* a clear win is no tie */
    {
        const double t[4] = {1e-3, 1e300, 1e300, 0.8e-3};
        cr_assert_eq(spruce__linear_edge(t, bytes, all, 1, SPRUCE_DT_INT8, seen, &allowed),
                     SPRUCE_FMT_NM);
        cr_assert(!seen[SPRUCE_FMT_DENSE]);
    }
    /* batch 16: within 3% of the 30% margin is a tie; 4% past it is not */
    {
        const double t[4] = {1e-3, 1e300, 1e300, 0.72e-3};
        const double t2[4] = {1e-3, 1e300, 1e300, 0.73e-3};
        cr_assert_eq(spruce__linear_choose(t, bytes, all, 16, SPRUCE_DT_F32, &allowed),
                     SPRUCE_FMT_DENSE);
        cr_assert_eq(spruce__linear_edge(t, bytes, all, 16, SPRUCE_DT_F32, seen, &allowed),
                     SPRUCE_FMT_NM);
        cr_assert_eq(spruce__linear_edge(t2, bytes, all, 16, SPRUCE_DT_F32, seen, &allowed),
                     SPRUCE_FMT_DENSE);
    }
}

/* The rule for near ties (linear.c): among sparse formats within 3% of the
 * chosen one that also beat dense, the fewest bytes; never from dense, never
 * a format more than 3% slower or one that did not beat dense. */
Test(linear, near_ties_settle_on_fewer_bytes)
{
    const int all[4] = {1, 1, 1, 1};
    const size_t bytes[4] = {4000, 600, 525, 530}; /* dense, csr, bitmask, nm */
    int tie;
    /* csr chosen at 1.00, bitmask at 1.02: bitmask, fewer bytes */
    const double t1[4] = {2.0, 1.00, 1.02, 1.50};
    cr_assert_eq(spruce__linear_settle(t1, bytes, all, SPRUCE_FMT_CSR, 1.94, &tie),
                 SPRUCE_FMT_BITMASK);
    cr_assert_eq(tie, SPRUCE_FMT_CSR);
    /* 4% apart: no tie, the faster stays */
    {
        const double t[4] = {2.0, 1.00, 1.04, 1.50};
        cr_assert_eq(spruce__linear_settle(t, bytes, all, SPRUCE_FMT_CSR, 1.94, &tie),
                     SPRUCE_FMT_CSR);
        cr_assert_eq(tie, -1);
    }
    /* the chosen one has the fewest bytes already */
    cr_assert_eq(spruce__linear_settle(t1, bytes, all, SPRUCE_FMT_BITMASK, 1.94, &tie),
                 SPRUCE_FMT_BITMASK);
    cr_assert_eq(tie, -1);
    /* a tied format that is not a candidate, or did not beat dense, is not taken */
    {
        const int no_bitmask[4] = {1, 1, 0, 1};
        cr_assert_eq(spruce__linear_settle(t1, bytes, no_bitmask, SPRUCE_FMT_CSR, 1.94, &tie),
                     SPRUCE_FMT_CSR);
        cr_assert_eq(spruce__linear_settle(t1, bytes, all, SPRUCE_FMT_CSR, 1.01, &tie),
                     SPRUCE_FMT_CSR);
    }
    /* three within 3%: the fewest bytes of them */
    {
        const double t[4] = {2.0, 1.00, 1.02, 1.01};
        cr_assert_eq(spruce__linear_settle(t, bytes, all, SPRUCE_FMT_CSR, 1.94, &tie),
                     SPRUCE_FMT_BITMASK);
    }
    /* dense stays dense */
    {
        const double t[4] = {1.0, 1.01, 1.01, 1.01};
        cr_assert_eq(spruce__linear_settle(t, bytes, all, SPRUCE_FMT_DENSE, 0.97, &tie),
                     SPRUCE_FMT_DENSE);
        cr_assert_eq(tie, -1);
    }
}
