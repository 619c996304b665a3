/* test_linear_dtype.c: the linear layer with bf16, int8 and int4 values
 * (spruce_linear_opts.dtype, spruce_linear_create_quantized).  Every value
 * type, with each format forced and with auto, at batch 1 and 16, against a
 * double-precision product of the dequantized weights (the layer must hold
 * exactly the values spruce_qmatrix_quantize gives), with a bound scaled to
 * the row length; odd shapes (columns not a multiple of 16, of M or of the
 * group; fewer rows than threads); the type kept and its bytes; refusals. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spruce_qmatrix.h"
#include "spruce_qsparse.h"
#include "spruce_sparse.h"

static uint64_t rng_state;
static float rng_float(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
}

/* W (rows, cols): 2:4 by value (the two smallest of each four set to 0),
 * with an empty row when rows > 2. */
static float *weights_24(int rows, int cols, uint64_t seed)
{
    float *W = malloc(sizeof *W * (size_t)rows * cols);
    int i, j, k;
    rng_state = seed * 0x9E3779B97F4A7C15ull + 1;
    for (i = 0; i < rows * cols; i++)
        W[i] = rng_float();
    for (i = 0; i < rows; i++)
        for (j = 0; j < cols; j += 4) {
            float *g = W + (size_t)i * cols + j;
            int n = cols - j < 4 ? cols - j : 4;
            for (k = 0; k < 2 && n == 4; k++) { /* zero the two smallest */
                int a, m = -1;
                for (a = 0; a < 4; a++)
                    if (g[a] != 0.0f && (m < 0 || fabsf(g[a]) < fabsf(g[m])))
                        m = a;
                if (m >= 0)
                    g[m] = 0.0f;
            }
            if (n < 4)
                for (k = 1; k < n; k++)
                    g[k] = 0.0f;
        }
    if (rows > 2)
        memset(W + (size_t)cols, 0, sizeof *W * (size_t)cols);
    return W;
}

static void check_against_dequantized(const spruce_linear *lin, const float *Wq, int rows,
                                      int cols, int batch, const char *what)
{
    /* two float32 sums in any order: 2 cols eps sum |w x|; the bf16
     * dot-product variant (AVX512-BF16, batch 1) adds 2^-23 sum |w x|
     * (doc/runtime.md) */
    const double extra = spruce_linear_dtype(lin) == SPRUCE_DT_BF16 && batch == 1 &&
                                 spruce_qmatrix_bf16dp() ? ldexp(1.0, -23) : 0.0;
    float *X = malloc(sizeof *X * (size_t)cols * batch), *Y = malloc(sizeof *Y * (size_t)rows * batch);
    int i, j, b;
    for (i = 0; i < cols * batch; i++)
        X[i] = rng_float();
    cr_assert_eq(spruce_linear_forward(lin, X, batch, Y), 0, "%s: %s", what, spruce_errdetail());
    for (i = 0; i < rows; i++)
        for (b = 0; b < batch; b++) {
            double s = 0, a = 0;
            for (j = 0; j < cols; j++) {
                s += (double)Wq[(size_t)i * cols + j] * X[(size_t)j * batch + b];
                a += fabs((double)Wq[(size_t)i * cols + j] * X[(size_t)j * batch + b]);
            }
            cr_assert_leq(fabs(Y[(size_t)i * batch + b] - s),
                          2.0 * (cols * (double)FLT_EPSILON + extra) * a + 1e-30,
                          "%s batch %d: y[%d][%d] = %g, expected %g", what, batch, i, b,
                          (double)Y[(size_t)i * batch + b], s);
        }
    free(X);
    free(Y);
}

static const int formats[] = {SPRUCE_FMT_DENSE, SPRUCE_FMT_CSR, SPRUCE_FMT_BITMASK, SPRUCE_FMT_NM,
                               -1};

static void one_case(int dtype, int rows, int cols, int gs, int asym, uint64_t seed)
{
    float *W = weights_24(rows, cols, seed), *Wq = malloc(sizeof *Wq * (size_t)rows * cols);
    spruce_qmatrix *Q;
    size_t f;
    int b;
    cr_assert_eq(spruce_qmatrix_quantize(W, rows, cols, dtype, gs, asym, &Q), 0, "%s",
                 spruce_errdetail());
    cr_assert_eq(spruce_qmatrix_dequantize(Q, Wq), 0);
    for (f = 0; f < sizeof formats / sizeof *formats; f++)
        for (b = 0; b < 2; b++) {
            spruce_linear_opts o;
            spruce_linear *lin = NULL, *lq = NULL;
            char what[160];
            snprintf(what, sizeof what, "%s%s (%d, %d) g%d %s", spruce_dtype_name(dtype),
                     asym ? " asym" : "", rows, cols, gs,
                     formats[f] < 0 ? "auto" : spruce_format_name(formats[f]));
            spruce_linear_opts_init(&o);
            o.dtype = dtype, o.groupsize = gs, o.asym = asym, o.format = formats[f];
            o.nthreads = 2, o.reps = 2;
            cr_assert_eq(spruce_linear_create(W, rows, cols, &o, &lin), 0, "%s: %s", what,
                         spruce_errdetail());
            cr_assert_eq(spruce_linear_dtype(lin), dtype, "%s", what);
            if (formats[f] >= 0)
                cr_assert_eq(spruce_linear_format(lin, 1), formats[f], "%s", what);
            check_against_dequantized(lin, Wq, rows, cols, b ? 16 : 1, what);
            /* the same values given already quantized; opts->dtype is ignored */
            o.dtype = SPRUCE_DT_F32;
            cr_assert_eq(spruce_linear_create_quantized(Q, &o, &lq), 0, "%s: %s", what,
                         spruce_errdetail());
            cr_assert_eq(spruce_linear_dtype(lq), dtype, "%s", what);
            check_against_dequantized(lq, Wq, rows, cols, b ? 16 : 1, what);
            if (formats[f] == SPRUCE_FMT_DENSE)
                cr_assert_eq(spruce_linear_bytes(lin), spruce_qmatrix_bytes(Q), "%s", what);
            spruce_linear_free(lin);
            spruce_linear_free(lq);
        }
    spruce_qmatrix_free(Q);
    free(W);
    free(Wq);
}

Test(linear_dtype, every_type_and_format_against_the_dequantized_weights)
{
    one_case(SPRUCE_DT_BF16, 24, 200, 0, 0, 1);
    one_case(SPRUCE_DT_INT8, 24, 200, 0, 0, 2);
    one_case(SPRUCE_DT_INT8, 17, 90, 0, 1, 3);
    one_case(SPRUCE_DT_INT4, 24, 256, 128, 0, 4);
    one_case(SPRUCE_DT_INT4, 9, 200, 64, 1, 5); /* a short last group */
}

Test(linear_dtype, odd_shapes)
{
    one_case(SPRUCE_DT_BF16, 1, 7, 0, 0, 6);      /* fewer rows than threads, cols < M * 2 */
    one_case(SPRUCE_DT_INT8, 3, 13, 0, 1, 7);     /* cols not a multiple of 4 or 16 */
    one_case(SPRUCE_DT_INT4, 5, 33, 32, 0, 8);    /* one column past the group */
    one_case(SPRUCE_DT_BF16, 4, 8200, 0, 0, 9);   /* wider than a column block */
}

/* A bf16 layer from weights that are bf16 already holds them exactly: the
 * same products as the float32 layer of those weights, to rounding order. */
Test(linear_dtype, bf16_of_bf16_weights_is_exact)
{
    const int rows = 32, cols = 96;
    float *W = weights_24(rows, cols, 11);
    spruce_linear_opts o;
    spruce_linear *lin;
    int i;
    for (i = 0; i < rows * cols; i++) { /* onto bf16: the low 16 bits cleared */
        uint32_t u;
        memcpy(&u, &W[i], 4);
        u &= 0xffff0000u;
        memcpy(&W[i], &u, 4);
    }
    spruce_linear_opts_init(&o);
    o.dtype = SPRUCE_DT_BF16;
    cr_assert_eq(spruce_linear_create(W, rows, cols, &o, &lin), 0);
    check_against_dequantized(lin, W, rows, cols, 1, "bf16 of bf16");
    spruce_linear_free(lin);
    o.format = SPRUCE_FMT_DENSE;
    cr_assert_eq(spruce_linear_create(W, rows, cols, &o, &lin), 0);
    check_against_dequantized(lin, W, rows, cols, 1, "dense bf16 of bf16");
    cr_assert_eq(spruce_linear_bytes(lin), (size_t)2 * rows * cols); /* half of float32 */
    spruce_linear_free(lin);
    free(W);
}

Test(linear_dtype, refusals)
{
    float W[64];
    spruce_linear_opts o;
    spruce_linear *lin = NULL;
    spruce_qmatrix bad;
    int i;
    for (i = 0; i < 64; i++)
        W[i] = (float)(i % 5) - 2.0f;
    spruce_linear_opts_init(&o);
    o.format = -1, o.dtype = 9;
    cr_assert_eq(spruce_linear_create(W, 4, 16, &o, &lin), SPRUCE_EINVAL);
    o.dtype = SPRUCE_DT_INT4, o.groupsize = 48;
    cr_assert_eq(spruce_linear_create(W, 4, 16, &o, &lin), SPRUCE_EINVAL);
    o.dtype = SPRUCE_DT_INT8, o.groupsize = 0, o.format = SPRUCE_FMT_NM;
    W[1] = W[2] = W[3] = 1.0f; /* three of four kept: not 2:4 */
    cr_assert_eq(spruce_linear_create(W, 4, 16, &o, &lin), SPRUCE_EPATTERN);
    W[0] = NAN;
    o.format = -1;
    cr_assert_eq(spruce_linear_create(W, 4, 16, &o, &lin), SPRUCE_ENAN);
    cr_assert_null(lin);
    memset(&bad, 0, sizeof bad); /* no values */
    cr_assert_eq(spruce_linear_create_quantized(&bad, NULL, &lin), SPRUCE_EINVAL);
}

/* The planner's variants forced one by one (SPRUCE_VARIANT) give the same
 * products, and the layer names the kernel it runs; an unknown or
 * unsupported variant is refused by name. */
Test(linear_dtype, every_forced_variant_gives_the_same_products)
{
    static const int types[4] = {SPRUCE_DT_F32, SPRUCE_DT_BF16, SPRUCE_DT_INT8, SPRUCE_DT_INT4};
    static const int fmts[3] = {SPRUCE_FMT_BITMASK, SPRUCE_FMT_NM, SPRUCE_FMT_CSR};
    const int rows = 20, cols = 256;
    float *W = weights_24(rows, cols, 21), *Wq = malloc(sizeof *Wq * (size_t)rows * cols);
    int isa, t, f;
    for (t = 0; t < 4; t++) {
        spruce_qmatrix *Q = NULL;
        if (types[t] == SPRUCE_DT_F32) {
            memcpy(Wq, W, sizeof *Wq * (size_t)rows * cols);
        } else {
            cr_assert_eq(spruce_qmatrix_quantize(W, rows, cols, types[t], 128, 0, &Q), 0);
            cr_assert_eq(spruce_qmatrix_dequantize(Q, Wq), 0);
        }
        for (isa = 0; isa < SPRUCE_ISA_COUNT; isa++)
            for (f = 0; f < 3; f++) {
                spruce_linear_opts o;
                spruce_linear *lin = NULL;
                char what[640], desc[512];
                if (!spruce_sparse_isa_supported(isa))
                    continue;
                setenv("SPRUCE_VARIANT", spruce_sparse_isa_name(isa), 1);
                spruce_linear_opts_init(&o);
                o.format = fmts[f];
                if (Q)
                    cr_assert_eq(spruce_linear_create_quantized(Q, &o, &lin), 0, "%s",
                                 spruce_errdetail());
                else
                    cr_assert_eq(spruce_linear_create(W, rows, cols, &o, &lin), 0, "%s",
                                 spruce_errdetail());
                cr_assert_eq(spruce_linear_describe(lin, 1, desc, sizeof desc), fmts[f]);
                snprintf(what, sizeof what, "variant %s: %s", spruce_sparse_isa_name(isa), desc);
                cr_assert(strstr(desc, spruce_sparse_isa_name(isa)) &&
                          strstr(desc, "SPRUCE_VARIANT"), "%s", what);
                check_against_dequantized(lin, Wq, rows, cols, 1, what);
                check_against_dequantized(lin, Wq, rows, cols, 16, what);
                spruce_linear_free(lin);
            }
        spruce_qmatrix_free(Q);
    }
    setenv("SPRUCE_VARIANT", "avx1024", 1);
    {
        spruce_linear *lin = NULL;
        spruce_linear_opts o;
        /* float32's sparse formats have variants too; dense has none */
        cr_assert_eq(spruce_linear_create(W, rows, cols, NULL, &lin), SPRUCE_EUNSUPPORTED);
        spruce_linear_opts_init(&o);
        o.format = SPRUCE_FMT_DENSE;
        cr_assert_eq(spruce_linear_create(W, rows, cols, &o, &lin), 0, "%s", spruce_errdetail());
        spruce_linear_free(lin);
        spruce_linear_opts_init(&o);
        o.dtype = SPRUCE_DT_INT8;
        o.format = SPRUCE_FMT_BITMASK;
        cr_assert_eq(spruce_linear_create(W, rows, cols, &o, &lin), SPRUCE_EUNSUPPORTED);
        cr_assert(strstr(spruce_errdetail(), "SPRUCE_VARIANT=avx1024"), "%s", spruce_errdetail());
    }
    unsetenv("SPRUCE_VARIANT");
    free(W);
    free(Wq);
}

/* The pair layout's kernels in every variant (SPRUCE_VARIANT with
 * SPRUCE_LAYOUT=pairs) give the same products, every value type, with
 * zero points, at a shape with an odd number of 8-column blocks and a last
 * narrower one; unforced, the pair layout's variants are timed on it (the
 * layer names each variant's time). */
Test(linear_dtype, pair_layout_in_every_variant)
{
    static const int types[4] = {SPRUCE_DT_F32, SPRUCE_DT_BF16, SPRUCE_DT_INT8, SPRUCE_DT_INT4};
    const int rows = 19, cols = 300; /* 37.5 blocks */
    float *W = weights_24(rows, cols, 29), *Wq = malloc(sizeof *Wq * (size_t)rows * cols);
    int t, isa;
    setenv("SPRUCE_LAYOUT", "pairs", 1);
    for (t = 0; t < 4; t++) {
        spruce_qmatrix *Q = NULL;
        if (types[t] == SPRUCE_DT_F32) {
            memcpy(Wq, W, sizeof *Wq * (size_t)rows * cols);
        } else {
            cr_assert_eq(spruce_qmatrix_quantize(W, rows, cols, types[t], 32, 1, &Q), 0);
            cr_assert_eq(spruce_qmatrix_dequantize(Q, Wq), 0);
        }
        for (isa = -1; isa < SPRUCE_ISA_COUNT; isa++) {
            spruce_linear_opts o;
            spruce_linear *lin = NULL;
            char what[640], desc[512];
            if (isa >= 0 && !spruce_sparse_isa_supported(isa))
                continue;
            if (isa >= 0)
                setenv("SPRUCE_VARIANT", spruce_sparse_isa_name(isa), 1);
            else
                unsetenv("SPRUCE_VARIANT");
            spruce_linear_opts_init(&o);
            o.format = SPRUCE_FMT_NM;
            if (Q)
                cr_assert_eq(spruce_linear_create_quantized(Q, &o, &lin), 0, "%s",
                             spruce_errdetail());
            else
                cr_assert_eq(spruce_linear_create(W, rows, cols, &o, &lin), 0, "%s",
                             spruce_errdetail());
            cr_assert_eq(spruce_linear_describe(lin, 1, desc, sizeof desc), SPRUCE_FMT_NM);
            snprintf(what, sizeof what, "%s, variant %s: %s", spruce_dtype_name(types[t]),
                     isa < 0 ? "planned" : spruce_sparse_isa_name(isa), desc);
            cr_assert_eq(spruce_linear_layout(lin, 1), SPRUCE_LAYOUT_PAIRS, "%s", what);
            if (isa >= 0)
                cr_assert(strstr(desc, "SPRUCE_VARIANT"), "%s", what);
            else if (spruce_sparse_isa_supported(SPRUCE_ISA_AVX512) && !getenv("SPRUCE_ISA"))
                cr_assert(strstr(desc, "; avx2 ") && strstr(desc, "; avx512 "), "%s", what);
            check_against_dequantized(lin, Wq, rows, cols, 1, what);
            check_against_dequantized(lin, Wq, rows, cols, 5, what);
            spruce_linear_free(lin);
        }
        spruce_qmatrix_free(Q);
    }
    unsetenv("SPRUCE_VARIANT");
    unsetenv("SPRUCE_LAYOUT");
    free(W);
    free(Wq);
}

/* N:M's layouts forced one by one (SPRUCE_LAYOUT) give the same products in
 * every value type, the layer says which it holds; without the variable the
 * planner keeps one of the two and names both times; an unknown layout is
 * refused by name, and a pattern the pair layout cannot hold (3:4) stays in bits. */
Test(linear_dtype, every_forced_layout_gives_the_same_products)
{
    static const int types[4] = {SPRUCE_DT_F32, SPRUCE_DT_BF16, SPRUCE_DT_INT8, SPRUCE_DT_INT4};
    static const char *const names[2] = {"bits", "pairs"};
    const int rows = 21, cols = 260;
    float *W = weights_24(rows, cols, 23), *Wq = malloc(sizeof *Wq * (size_t)rows * cols);
    int t, l;
    for (t = 0; t < 4; t++) {
        spruce_qmatrix *Q = NULL;
        if (types[t] == SPRUCE_DT_F32) {
            memcpy(Wq, W, sizeof *Wq * (size_t)rows * cols);
        } else {
            cr_assert_eq(spruce_qmatrix_quantize(W, rows, cols, types[t], 128, 1, &Q), 0);
            cr_assert_eq(spruce_qmatrix_dequantize(Q, Wq), 0);
        }
        for (l = -1; l < 2; l++) {
            spruce_linear_opts o;
            spruce_linear *lin = NULL;
            char what[640], desc[512];
            if (l >= 0)
                setenv("SPRUCE_LAYOUT", names[l], 1);
            else
                unsetenv("SPRUCE_LAYOUT");
            spruce_linear_opts_init(&o);
            o.format = SPRUCE_FMT_NM;
            if (Q)
                cr_assert_eq(spruce_linear_create_quantized(Q, &o, &lin), 0, "%s",
                             spruce_errdetail());
            else
                cr_assert_eq(spruce_linear_create(W, rows, cols, &o, &lin), 0, "%s",
                             spruce_errdetail());
            cr_assert_eq(spruce_linear_describe(lin, 1, desc, sizeof desc), SPRUCE_FMT_NM);
            snprintf(what, sizeof what, "%s, layout %s: %s", spruce_dtype_name(types[t]),
                     l < 0 ? "planned" : names[l], desc);
            if (l >= 0) {
                cr_assert_eq(spruce_linear_layout(lin, 1), l, "%s", what);
                cr_assert(strstr(desc, names[l]) && strstr(desc, "SPRUCE_LAYOUT"), "%s", what);
            } else {
                cr_assert(strstr(desc, "bits ") && strstr(desc, "pairs "), "%s", what);
                cr_assert(strstr(desc, names[spruce_linear_layout(lin, 1)]), "%s", what);
            }
            check_against_dequantized(lin, Wq, rows, cols, 1, what);
            check_against_dequantized(lin, Wq, rows, cols, 16, what);
            spruce_linear_free(lin);
        }
        spruce_qmatrix_free(Q);
    }
    {
        spruce_linear *lin = NULL;
        spruce_linear_opts o;
        setenv("SPRUCE_LAYOUT", "pairs", 1);
        spruce_linear_opts_init(&o);
        o.format = SPRUCE_FMT_NM;
        o.n = 3;
        o.m = 4;
        cr_assert_eq(spruce_linear_create(W, rows, cols, &o, &lin), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_linear_layout(lin, 1), SPRUCE_LAYOUT_BITS);
        check_against_dequantized(lin, W, rows, cols, 1, "3:4 with SPRUCE_LAYOUT=pairs");
        spruce_linear_free(lin);
        setenv("SPRUCE_LAYOUT", "diagonal", 1);
        cr_assert_eq(spruce_linear_create(W, rows, cols, NULL, &lin), SPRUCE_EUNSUPPORTED);
        cr_assert(strstr(spruce_errdetail(), "SPRUCE_LAYOUT=diagonal"), "%s", spruce_errdetail());
    }
    unsetenv("SPRUCE_LAYOUT");
    free(W);
    free(Wq);
}

/* W (rows, cols) of random non-zero values with every k-th set to 0. */
static float *weights_zero_every(int rows, int cols, int k, uint64_t seed)
{
    float *W = malloc(sizeof *W * (size_t)rows * cols);
    int i;
    rng_state = seed * 0x9E3779B97F4A7C15ull + 1;
    for (i = 0; i < rows * cols; i++) {
        const float v = rng_float();
        W[i] = k > 0 && i % k == 0 ? 0.0f : v != 0.0f ? v : 0.5f;
    }
    return W;
}

/* Whether auto made sparse candidates of W in dtype, from what the layer
 * says; and that it computes the product either way. */
static int has_sparse_candidates(const float *W, int rows, int cols, int dtype)
{
    spruce_linear_opts o;
    spruce_linear *lin = NULL;
    char what[512];
    spruce_linear_opts_init(&o);
    o.dtype = dtype;
    o.reps = 1;
    cr_assert_eq(spruce_linear_create(W, rows, cols, &o, &lin), 0, "%s", spruce_errdetail());
    spruce_linear_describe(lin, 1, what, sizeof what);
    {
        const int none = strstr(what, "no sparse candidate") != NULL;
        if (none) {
            cr_assert_eq(spruce_linear_format(lin, 1), SPRUCE_FMT_DENSE, "%s", what);
            cr_assert_eq(spruce_linear_format(lin, 16), SPRUCE_FMT_DENSE, "%s", what);
        }
        spruce_linear_free(lin);
        return !none;
    }
}

/* A matrix that keeps nearly all its weights gets no sparse candidates (none
 * could be 3% faster at batch 1 or 30% at batch 16): more than about 94% kept
 * in float32, 91% in bf16, 72% in int4 (its zero levels count as pruned);
 * below, the candidates are made and timed.  A forced format still packs. */
Test(linear_dtype, nearly_dense_matrices_have_no_sparse_candidates)
{
    const int rows = 64, cols = 256;
    float *dense = weights_zero_every(rows, cols, 0, 1), *w95 = weights_zero_every(rows, cols, 20, 2);
    float *w90 = weights_zero_every(rows, cols, 10, 3), *w85 = weights_zero_every(rows, cols, 7, 4);
    float *w50 = weights_zero_every(rows, cols, 2, 5);
    spruce_linear_opts o;
    spruce_linear *lin = NULL;
    cr_assert(!has_sparse_candidates(dense, rows, cols, SPRUCE_DT_F32));
    cr_assert(!has_sparse_candidates(w95, rows, cols, SPRUCE_DT_F32));
    cr_assert(has_sparse_candidates(w90, rows, cols, SPRUCE_DT_F32));
    cr_assert(!has_sparse_candidates(w95, rows, cols, SPRUCE_DT_BF16));
    cr_assert(has_sparse_candidates(w85, rows, cols, SPRUCE_DT_BF16));
    /* int4 of uniform values: about 7% more round to level 0 */
    cr_assert(!has_sparse_candidates(w90, rows, cols, SPRUCE_DT_INT4));
    cr_assert(has_sparse_candidates(w50, rows, cols, SPRUCE_DT_INT4));
    spruce_linear_opts_init(&o);
    o.format = SPRUCE_FMT_BITMASK;
    cr_assert_eq(spruce_linear_create(dense, rows, cols, &o, &lin), 0);
    cr_assert_eq(spruce_linear_format(lin, 1), SPRUCE_FMT_BITMASK);
    spruce_linear_free(lin);
    free(dense), free(w95), free(w90), free(w85), free(w50);
}

/* What auto times of W in dtype tuned for batch 1 alone (batch16 0) or for
 * batches 1 and 16: whether compressed rows were among the candidates (the
 * layer's description lists every candidate's time), and that the product
 * matches dense OpenBLAS on the layer's own weights either way. */
static int csr_timed(const float *W, int rows, int cols, int dtype, int batch16)
{
    spruce_linear_opts o;
    spruce_linear *lin = NULL;
    char what[768];
    int left_out, timed;
    spruce_linear_opts_init(&o);
    o.dtype = dtype;
    o.reps = 1;
    o.nbatches = batch16 ? 2 : 1;
    cr_assert_eq(spruce_linear_create(W, rows, cols, &o, &lin), 0, "%s", spruce_errdetail());
    spruce_linear_describe(lin, 1, what, sizeof what);
    left_out = strstr(what, "csr not a candidate") != NULL;
    timed = strstr(what, ", csr ") != NULL;
    cr_assert(left_out != timed || spruce_linear_format(lin, 1) == SPRUCE_FMT_CSR, "%s", what);
    cr_assert(!left_out || spruce_linear_format(lin, 1) != SPRUCE_FMT_CSR, "%s", what);
    spruce_linear_free(lin);
    return !left_out;
}

/* Tuned for batch 1 alone, compressed rows are not packed when they would
 * stream at least dense's bytes (kept: float32 2/3, bf16 1/2, int8 1/3 with
 * 16-bit columns); tuned for batch 16 too, they stay a candidate. */
Test(linear_dtype, batch_one_layers_leave_out_compressed_rows_past_dense_bytes)
{
    const int rows = 64, cols = 256;
    float *w50 = weights_zero_every(rows, cols, 2, 6);       /* 50% kept */
    float *w75 = weights_zero_every(rows, cols, 4, 7);       /* 75% kept */
    float *w10 = malloc(sizeof *w10 * rows * cols);          /* 10% kept */
    int i;
    for (i = 0; i < rows * cols; i++)
        w10[i] = i % 10 == 3 ? 0.25f + (float)(i % 7) : 0.0f;
    cr_assert(!csr_timed(w75, rows, cols, SPRUCE_DT_F32, 0));
    cr_assert(csr_timed(w50, rows, cols, SPRUCE_DT_F32, 0));
    cr_assert(csr_timed(w75, rows, cols, SPRUCE_DT_F32, 1));
    cr_assert(!csr_timed(w50, rows, cols, SPRUCE_DT_BF16, 0));
    cr_assert(!csr_timed(w50, rows, cols, SPRUCE_DT_INT8, 0));
    cr_assert(csr_timed(w50, rows, cols, SPRUCE_DT_INT8, 1));
    cr_assert(csr_timed(w10, rows, cols, SPRUCE_DT_INT8, 0));
    free(w50), free(w75), free(w10);
}
