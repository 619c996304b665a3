/* test_sparse_noalloc.c: products and the linear layer's forward never allocate.
 *
 * This program defines malloc, calloc, realloc and the aligned allocators
 * itself, forwarding them to glibc's own entry points (__libc_malloc ...), so
 * that every allocation of the process, the libraries' included, passes
 * through them.  They count the calls made while counting is on, and counting
 * is on only around one spruce_sparse_mul, spruce_qsparse_mul or
 * spruce_linear_forward, after an uncounted call of the same product (OpenMP
 * and OpenBLAS set up their threads and buffers on first use, which is theirs
 * and not the product's).  Each
 * counted call's caller is remembered, so that a failure can say which
 * library allocated: OpenBLAS's threaded sgemm (the dense representation at
 * batch > 1) allocates inside OpenBLAS on every call, which spruce cannot
 * change, so for the dense path only the allocations outside OpenBLAS count.
 *
 * AddressSanitizer supplies malloc itself; under it the counter is not built
 * and the tests skip, saying so.  The normal build always runs them. */
#define _GNU_SOURCE /* dladdr */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "qsparse_internal.h"
#include "sparse_internal.h"
#include "spruce_sparse.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

#define CALLERS 256

static atomic_int counting;
static atomic_long allocations;
static void *callers[CALLERS]; /* of the first CALLERS counted calls */

#ifndef UNDER_ASAN
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t align, size_t size);
extern void *__libc_valloc(size_t size);
extern void *__libc_pvalloc(size_t size);

/* Inlined into each allocator, so the return address is its caller's. */
#define note()                                                                         \
    do {                                                                               \
        if (atomic_load_explicit(&counting, memory_order_relaxed)) {                   \
            long k_ = atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed); \
            if (k_ < CALLERS)                                                          \
                callers[k_] = __builtin_return_address(0);                             \
        }                                                                              \
    } while (0)

void *malloc(size_t size)
{
    note();
    return __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
    note();
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
    note();
    return __libc_realloc(p, size);
}

void *memalign(size_t align, size_t size)
{
    note();
    return __libc_memalign(align, size);
}

void *aligned_alloc(size_t align, size_t size)
{
    note();
    return __libc_memalign(align, size);
}

int posix_memalign(void **out, size_t align, size_t size)
{
    void *p;
    if (align % sizeof(void *) || (align & (align - 1)))
        return EINVAL;
    note();
    if (!(p = __libc_memalign(align, size)) && size)
        return ENOMEM;
    *out = p;
    return 0;
}

void *valloc(size_t size)
{
    note();
    return __libc_valloc(size);
}

void *pvalloc(size_t size)
{
    note();
    return __libc_pvalloc(size);
}
#endif

static void count_on(void)
{
    atomic_store(&allocations, 0);
    atomic_store(&counting, 1);
}

static long count_off(void)
{
    atomic_store(&counting, 0);
    return atomic_load(&allocations);
}

/* Of the n allocations counted, how many were made by OpenBLAS itself. */
static long by_openblas(long n)
{
    long k, blas = 0;
    for (k = 0; k < n && k < CALLERS; k++) {
        Dl_info d;
        if (dladdr(callers[k], &d) && d.dli_fname && strstr(d.dli_fname, "openblas"))
            blas++;
    }
    return blas;
}

/* The library that made counted allocation k (for messages). */
static const char *caller_name(long k)
{
    Dl_info d;
    if (k < CALLERS && dladdr(callers[k], &d) && d.dli_fname)
        return d.dli_fname;
    return "?";
}

static int skip_under_asan(void)
{
#ifdef UNDER_ASAN
    cr_skip_test("AddressSanitizer supplies malloc itself, so this build cannot count "
                 "allocations: skipped under ASan (the normal build runs it)");
    return 1;
#else
    return 0;
#endif
}

/* Every value in [-0.5, 0.5), about `sparsity` of them 0; n:m when m > 0. */
static float *make_matrix(int rows, int cols, double sparsity, int n, int m)
{
    float *W = malloc(sizeof *W * (size_t)rows * cols);
    uint32_t s = 12345;
    int64_t i;
    cr_assert_not_null(W);
    for (i = 0; i < (int64_t)rows * cols; i++) {
        s = s * 1664525u + 1013904223u;
        W[i] = (s >> 8) % 1000 < sparsity * 1000 ? 0.0f : (float)((s >> 8) % 997) / 997 - 0.5f;
        if (m > 0)
            W[i] = i % cols % m < n ? W[i] + 1.0f : 0.0f;
    }
    return W;
}

static float *make_input(int cols, int batch)
{
    float *X = malloc(sizeof *X * (size_t)cols * batch);
    int64_t i;
    cr_assert_not_null(X);
    for (i = 0; i < (int64_t)cols * batch; i++)
        X[i] = (float)(i % 101) / 101 - 0.5f;
    return X;
}

/* Narrow matrices and ones wide enough for column blocks (bitmask, N:M). */
static const int shapes[][2] = {{96, 300}, {40, 2 * SPRUCE__BLOCK_COLS + 100}};
static const int batches[] = {1, 5, 16};

/* One product of A (a spruce_sparse, spruce_qsparse or spruce_linear), with
 * the kernels of isa where the call takes one. */
typedef int (*product_fn)(const void *A, int isa, const float *X, int batch, float *Y);

static int sparse_product(const void *A, int isa, const float *X, int batch, float *Y)
{
    (void)isa;
    return spruce_sparse_mul(A, X, batch, Y);
}

static int qsparse_product(const void *A, int isa, const float *X, int batch, float *Y)
{
    return spruce_qsparse_mul_isa(A, isa, X, batch, Y);
}

static int linear_product(const void *A, int isa, const float *X, int batch, float *Y)
{
    (void)isa;
    return spruce_linear_forward(A, X, batch, Y);
}

/* The allocations of one product of A, after an uncounted one. */
static long allocations_of(product_fn mul, const void *A, int isa, const float *X, int batch,
                           float *Y)
{
    long n;
    int rc;
    cr_assert_eq(mul(A, isa, X, batch, Y), 0, "%s", spruce_errdetail());
    count_on();
    rc = mul(A, isa, X, batch, Y);
    n = count_off();
    cr_assert_eq(rc, 0, "%s", spruce_errdetail());
    return n;
}

/* The counter sees what the libraries allocate: packing a matrix does. */
Test(noalloc, the_counter_sees_library_allocations)
{
    const spruce_pack_opts po = {SPRUCE_FMT_CSR, 0, 0, 2, SPRUCE_LAYOUT_BITS};
    float *W;
    spruce_sparse *A = NULL;
    long n;
    if (skip_under_asan())
        return;
    W = make_matrix(8, 64, 0.5, 0, 0);
    count_on();
    cr_assert_eq(spruce_sparse_pack(W, NULL, 8, 64, &po, &A), 0);
    n = count_off();
    cr_assert_gt(n, 0, "packing allocated nothing the counter saw: malloc is not interposed");
    spruce_sparse_free(A);
    free(W);
}

Test(noalloc, sparse_products_of_every_format_isa_and_shape)
{
    /* the last: N:M in the pair layout */
    const int fmts[4] = {SPRUCE_FMT_CSR, SPRUCE_FMT_BITMASK, SPRUCE_FMT_NM, SPRUCE_FMT_NM};
    size_t s, b;
    int f, isa, threads;
    if (skip_under_asan())
        return;
    for (s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int rows = shapes[s][0], cols = shapes[s][1];
        float *W = make_matrix(rows, cols, 0.5, 2, 4), *X = make_input(cols, 16);
        float *Y = malloc(sizeof *Y * (size_t)rows * 16);
        for (f = 0; f < 4; f++)
            for (threads = 1; threads <= 2; threads++) {
                const spruce_pack_opts po = {fmts[f], 2, 4, threads,
                                             f == 3 ? SPRUCE_LAYOUT_PAIRS : SPRUCE_LAYOUT_BITS};
                spruce_sparse *A = NULL;
                cr_assert_eq(spruce_sparse_pack(W, NULL, rows, cols, &po, &A), 0, "%s",
                             spruce_errdetail());
                if (fmts[f] != SPRUCE_FMT_CSR && f != 3 && cols > SPRUCE__BLOCK_COLS)
                    cr_assert_gt(A->nblk, 1, "a wide %s matrix is column blocks",
                                 spruce_format_name(fmts[f]));
                for (isa = 0; isa < SPRUCE_ISA_COUNT; isa++) {
                    if (!spruce_sparse_isa_supported(isa))
                        continue;
                    cr_assert_eq(spruce_sparse_isa_set(isa), 0);
                    for (b = 0; b < sizeof batches / sizeof batches[0]; b++) {
                        const long n = allocations_of(sparse_product, A, isa, X, batches[b], Y);
                        cr_assert_eq(n, 0,
                                     "%s/%s (%d, %d), %d threads, batch %d: %ld allocations, "
                                     "the first by %s",
                                     spruce_format_name(fmts[f]), spruce_sparse_isa_name(isa),
                                     rows, cols, threads, batches[b], n, caller_name(0));
                    }
                }
                spruce_sparse_free(A);
            }
        free(W);
        free(X);
        free(Y);
    }
}

Test(noalloc, linear_forward_of_every_choice)
{
    const int fmts[5] = {-1, SPRUCE_FMT_DENSE, SPRUCE_FMT_CSR, SPRUCE_FMT_BITMASK, SPRUCE_FMT_NM};
    size_t s, b;
    int f;
    if (skip_under_asan())
        return;
    for (s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int rows = shapes[s][0], cols = shapes[s][1];
        float *W = make_matrix(rows, cols, 0.5, 2, 4), *X = make_input(cols, 16);
        float *Y = malloc(sizeof *Y * (size_t)rows * 16);
        for (f = 0; f < 5; f++) {
            spruce_linear_opts o;
            spruce_linear *lin = NULL;
            spruce_linear_opts_init(&o);
            o.format = fmts[f];
            o.nthreads = 2;
            o.reps = 1;
            cr_assert_eq(spruce_linear_create(W, rows, cols, &o, &lin), 0, "%s",
                         spruce_errdetail());
            for (b = 0; b < sizeof batches / sizeof batches[0]; b++) {
                const int fmt = spruce_linear_format(lin, batches[b]);
                const long n = allocations_of(linear_product, lin, 0, X, batches[b], Y);
                const long blas = fmt == SPRUCE_FMT_DENSE ? by_openblas(n) : 0;
                cr_assert_eq(n - blas, 0,
                             "linear %s (%s at batch %d), (%d, %d): %ld allocations (%ld by "
                             "OpenBLAS), the first by %s",
                             fmts[f] < 0 ? "auto" : spruce_format_name(fmts[f]),
                             spruce_format_name(fmt), batches[b], rows, cols, n, blas,
                             caller_name(0));
                if (blas)
                    cr_log_info("dense at batch %d, (%d, %d): %ld allocations inside OpenBLAS",
                                batches[b], rows, cols, blas);
            }
            spruce_linear_free(lin);
        }
        free(W);
        free(X);
        free(Y);
    }
}

/* bf16, int8 and int4 bitmask and N:M products, every instruction set. */
Test(noalloc, quantized_sparse_products)
{
    const int dts[3] = {SPRUCE_DT_BF16, SPRUCE_DT_INT8, SPRUCE_DT_INT4};
    size_t s, b;
    int d, f, isa, threads;
    if (skip_under_asan())
        return;
    for (s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int rows = shapes[s][0], cols = shapes[s][1];
        float *W = make_matrix(rows, cols, 0.5, 2, 4), *X = make_input(cols, 16);
        float *Y = malloc(sizeof *Y * (size_t)rows * 16);
        for (d = 0; d < 3; d++)
            for (f = 0; f < 3; f++) /* bitmask, N:M, N:M in the pair layout */
                for (threads = 1; threads <= 2; threads++) {
                    const spruce_pack_opts po = {f ? SPRUCE_FMT_NM : SPRUCE_FMT_BITMASK, 2, 4,
                                                 threads,
                                                 f == 2 ? SPRUCE_LAYOUT_PAIRS : SPRUCE_LAYOUT_BITS};
                    spruce_qsparse *A = NULL;
                    cr_assert_eq(spruce_qsparse_quantize(W, NULL, rows, cols, dts[d], 64, 1, &po,
                                                         &A),
                                 0, "%s", spruce_errdetail());
                    if (cols > SPRUCE__BLOCK_COLS && f < 2)
                        cr_assert_gt(A->nblk, 1, "a wide matrix is column blocks");
                    for (isa = 0; isa < SPRUCE_ISA_COUNT; isa++) {
                        if (!spruce_sparse_isa_supported(isa))
                            continue;
                        for (b = 0; b < sizeof batches / sizeof batches[0]; b++) {
                            const long n =
                                allocations_of(qsparse_product, A, isa, X, batches[b], Y);
                            cr_assert_eq(n, 0, "%s %s/%s (%d, %d), %d threads, batch %d: %ld "
                                         "allocations, the first by %s",
                                         spruce_dtype_name(dts[d]), spruce_format_name(po.format),
                                         spruce_sparse_isa_name(isa), rows, cols, threads,
                                         batches[b], n, caller_name(0));
                        }
                    }
                    spruce_qsparse_free(A);
                }
        free(W);
        free(X);
        free(Y);
    }
}
