/* qmatrix.c: dense bf16, int8 and int4 matrices: quantizing float32 weights
 * to them, checking hand-built ones, dequantizing, y = W x with the scalar
 * kernels, and Y = W X with the chosen instruction set's kernels on several
 * threads.  W is (rows, cols) row-major; the value layouts are in
 * spruce_qmatrix.h. */
#include "config.h"

#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/qdense.h"
#include "sparse_internal.h"

static const char *const dtype_names[4] = {"f32", "bf16", "int8", "int4"};

const char *spruce_dtype_name(int dtype)
{
    return dtype >= 0 && dtype < 4 ? dtype_names[dtype] : "?";
}

int spruce_dtype_parse(const char *s)
{
    int i;
    for (i = 0; s && i < 4; i++)
        if (!strcmp(s, dtype_names[i]))
            return i;
    return -1;
}

void spruce_qmatrix_free(spruce_qmatrix *A)
{
    if (!A)
        return;
    free(A->q);
    free(A->scale);
    free(A->zero);
    free(A);
}

static int check_groupsize(int g)
{
    if (g < 32 || g > 256 || g % 32)
        return spruce__seterr(SPRUCE_EINVAL,
                              "int4 group size %d, expected a multiple of 32 from 32 to 256", g);
    return 0;
}

/* The header of a (rows, cols) matrix of dtype, its arrays allocated. */
static int alloc_q(int rows, int cols, int dtype, int groupsize, int asym, spruce_qmatrix **out)
{
    spruce_qmatrix *A = calloc(1, sizeof *A);
    size_t nsc;
    if (!A)
        goto nomem;
    A->dtype = dtype;
    A->rows = rows;
    A->cols = cols;
    A->groupsize = dtype == SPRUCE_DT_INT4 ? groupsize : 0;
    A->ngroups = dtype == SPRUCE_DT_INT4 ? (cols + groupsize - 1) / groupsize : 1;
    A->ld = dtype == SPRUCE_DT_BF16 ? 2 * (size_t)cols
            : dtype == SPRUCE_DT_INT8 ? (size_t)cols
                                      : ((size_t)cols + 1) / 2;
    nsc = (size_t)rows * A->ngroups;
    if (!(A->q = calloc((size_t)rows, A->ld)))
        goto nomem;
    if (dtype != SPRUCE_DT_BF16 && !(A->scale = malloc(sizeof *A->scale * nsc)))
        goto nomem;
    if (dtype != SPRUCE_DT_BF16 && asym && !(A->zero = malloc(nsc)))
        goto nomem;
    *out = A;
    return 0;
nomem:
    spruce_qmatrix_free(A);
    return spruce__seterr(SPRUCE_ENOMEM, "quantize: (%d, %d) matrix", rows, cols);
}

/* The grid of one run of weights w[0 .. n): levels lo..hi of the integer
 * type; symmetric: scale max|w| / hi and zero point zsym; asymmetric: the
 * range [min(w, 0), max(w, 0)] over hi - lo steps. */
static void grid(const float *w, int n, int lo, int hi, int zsym, int asym, float *scale, int *zero)
{
    float mn = 0.0f, mx = 0.0f, s;
    int j;
    for (j = 0; j < n; j++) {
        mn = w[j] < mn ? w[j] : mn;
        mx = w[j] > mx ? w[j] : mx;
    }
    if (!asym) {
        const float a = fabsf(mn) > mx ? fabsf(mn) : mx;
        s = a / (float)(hi - zsym);
        *zero = zsym;
    } else {
        s = (mx - mn) / (float)(hi - lo);
        *zero = s > 0.0f ? (int)lrintf((float)lo - mn / s) : zsym;
        *zero = *zero < lo ? lo : *zero > hi ? hi : *zero;
    }
    *scale = s > 0.0f ? s : 1.0f; /* an all-zero run: any scale, q = zero */
}

static int level(float w, float s, int z, int lo, int hi)
{
    long q = lrintf(w / s) + z;
    return (int)(q < lo ? lo : q > hi ? hi : q);
}

static void quantize_row(const float *w, spruce_qmatrix *A, int i, int asym)
{
    uint8_t *row = A->q + (size_t)i * A->ld;
    int j, g, z;
    if (A->dtype == SPRUCE_DT_BF16) {
        spruce_f32_to_bf16_n(w, (uint16_t *)row, (size_t)A->cols);
        return;
    }
    if (A->dtype == SPRUCE_DT_INT8) {
        /* symmetric [-127, 127] keeps -128 out (see NOTES: the int8 trap) */
        grid(w, A->cols, asym ? -128 : -127, 127, 0, asym, &A->scale[i], &z);
        if (A->zero)
            A->zero[i] = (uint8_t)(int8_t)z;
        for (j = 0; j < A->cols; j++)
            ((int8_t *)row)[j] = (int8_t)level(w[j], A->scale[i], z, asym ? -128 : -127, 127);
        return;
    }
    for (g = 0; g < A->ngroups; g++) {
        const int j0 = g * A->groupsize;
        const int n = j0 + A->groupsize < A->cols ? A->groupsize : A->cols - j0;
        float *s = &A->scale[(size_t)i * A->ngroups + g];
        grid(w + j0, n, asym ? 0 : 1, 15, 8, asym, s, &z);
        if (A->zero)
            A->zero[(size_t)i * A->ngroups + g] = (uint8_t)z;
        for (j = j0; j < j0 + n; j++)
            row[j >> 1] |= (uint8_t)(level(w[j], *s, z, asym ? 0 : 1, 15) << (4 * (j & 1)));
    }
}

int spruce_qmatrix_quantize(const float *W, int rows, int cols, int dtype, int groupsize,
                            int asym, spruce_qmatrix **out)
{
    spruce_qmatrix *A = NULL;
    int64_t k;
    int rc, i;
    if (out)
        *out = NULL;
    if (!W || !out)
        return spruce__seterr(SPRUCE_EINVAL, "quantize: NULL %s", !W ? "matrix" : "output");
    if (rows <= 0 || cols <= 0)
        return spruce__seterr(SPRUCE_ESHAPE, "quantize: expected rows, cols >= 1, found (%d, %d)",
                              rows, cols);
    if (dtype != SPRUCE_DT_BF16 && dtype != SPRUCE_DT_INT8 && dtype != SPRUCE_DT_INT4)
        return spruce__seterr(SPRUCE_EDTYPE, "quantize: dtype %d, expected bf16, int8 or int4",
                              dtype);
    if (dtype == SPRUCE_DT_INT4 && (rc = check_groupsize(groupsize)) < 0)
        return rc;
    for (k = 0; k < (int64_t)rows * cols; k++)
        if (!isfinite(W[k]))
            return spruce__seterr(SPRUCE_ENAN, "quantize: weight (%d, %d) is %g",
                                  (int)(k / cols), (int)(k % cols), (double)W[k]);
    if ((rc = alloc_q(rows, cols, dtype, groupsize, asym, &A)) < 0)
        return rc;
    for (i = 0; i < rows; i++)
        quantize_row(W + (int64_t)i * cols, A, i, asym);
    *out = A;
    return 0;
}

int spruce_qmatrix_check(const spruce_qmatrix *A)
{
    size_t k, n;
    int rc;
    if (!A || !A->q)
        return spruce__seterr(SPRUCE_EINVAL, "quantized matrix: NULL %s", !A ? "matrix" : "values");
    if (A->rows <= 0 || A->cols <= 0)
        return spruce__seterr(SPRUCE_ESHAPE, "quantized matrix: (%d, %d)", A->rows, A->cols);
    if (A->dtype == SPRUCE_DT_BF16)
        return 0;
    if (A->dtype != SPRUCE_DT_INT8 && A->dtype != SPRUCE_DT_INT4)
        return spruce__seterr(SPRUCE_EDTYPE, "quantized matrix: dtype %d", A->dtype);
    if (A->dtype == SPRUCE_DT_INT4 &&
        ((rc = check_groupsize(A->groupsize)) < 0 ||
         A->ngroups != (A->cols + A->groupsize - 1) / A->groupsize))
        return rc < 0 ? rc
                      : spruce__seterr(SPRUCE_ESHAPE, "quantized matrix: %d groups per row, "
                                       "expected %d", A->ngroups,
                                       (A->cols + A->groupsize - 1) / A->groupsize);
    if (!A->scale)
        return spruce__seterr(SPRUCE_EINVAL, "quantized matrix: %s without scales",
                              spruce_dtype_name(A->dtype));
    n = (size_t)A->rows * A->ngroups;
    for (k = 0; k < n; k++) {
        if (!isfinite(A->scale[k]) || A->scale[k] == 0.0f)
            return spruce__seterr(isfinite(A->scale[k]) ? SPRUCE_EINVAL : SPRUCE_ENAN,
                                  "quantized matrix: scale of row %d, group %d is %g, expected "
                                  "finite and non-zero", (int)(k / A->ngroups),
                                  (int)(k % A->ngroups), (double)A->scale[k]);
        if (A->zero && A->dtype == SPRUCE_DT_INT4 && A->zero[k] > 15)
            return spruce__seterr(SPRUCE_EINVAL, "quantized matrix: int4 zero point of row %d, "
                                  "group %d is %d, expected 0..15", (int)(k / A->ngroups),
                                  (int)(k % A->ngroups), A->zero[k]);
    }
    return 0;
}

float spruce_qmatrix_at(const spruce_qmatrix *A, int i, int j)
{
    const uint8_t *row = A->q + (size_t)i * A->ld;
    if (A->dtype == SPRUCE_DT_BF16)
        return spruce_bf16_to_f32(((const uint16_t *)row)[j]);
    if (A->dtype == SPRUCE_DT_INT8)
        return ((float)((const int8_t *)row)[j] - (float)spruce__zero(A, i, 0)) * A->scale[i];
    return ((float)spruce__nibble(row, j) - (float)spruce__zero(A, i, j / A->groupsize)) *
           A->scale[(size_t)i * A->ngroups + j / A->groupsize];
}

int spruce_qmatrix_dequantize(const spruce_qmatrix *A, float *W)
{
    int rc, i, j;
    if ((rc = spruce_qmatrix_check(A)) < 0)
        return rc;
    if (!W)
        return spruce__seterr(SPRUCE_EINVAL, "dequantize: NULL output");
    for (i = 0; i < A->rows; i++)
        for (j = 0; j < A->cols; j++)
            W[(int64_t)i * A->cols + j] = spruce_qmatrix_at(A, i, j);
    return 0;
}

size_t spruce_qmatrix_bytes(const spruce_qmatrix *A)
{
    size_t n;
    if (!A)
        return 0;
    n = (size_t)A->rows * A->ngroups;
    return (size_t)A->rows * A->ld + (A->scale ? n * sizeof(float) : 0) + (A->zero ? n : 0);
}

int spruce_qmatrix_mul(const spruce_qmatrix *A, const float *x, float *y)
{
    int rc;
    if ((rc = spruce_qmatrix_check(A)) < 0)
        return rc;
    if (!x || !y)
        return spruce__seterr(SPRUCE_EINVAL, "quantized product: NULL %s", !x ? "input" : "output");
    if (A->dtype == SPRUCE_DT_BF16)
        dense_spmv_bf16_scalar(A, x, y, 0, A->rows);
    else if (A->dtype == SPRUCE_DT_INT8)
        dense_spmv_int8_scalar(A, x, y, 0, A->rows);
    else
        dense_spmv_int4_scalar(A, x, y, 0, A->rows);
    return 0;
}

/* ---- the vector kernels, chosen once ---------------------------------------- */
static pthread_once_t qonce = PTHREAD_ONCE_INIT;
static spruce__qdense_table qtables[SPRUCE_ISA_COUNT];
static spruce__qdense_table qtable_bf16dp; /* AVX-512 with the bf16 dot products */
static int bf16dp_on;

static void qinit(void)
{
    const char *env = getenv("SPRUCE_BF16DP");
    int i;
    spruce__qdense_scalar(&qtables[SPRUCE_ISA_SCALAR]);
    for (i = 1; i < SPRUCE_ISA_COUNT; i++)
        qtables[i] = qtables[SPRUCE_ISA_SCALAR];
#ifdef SPRUCE_HAVE_AVX2
    if (spruce_sparse_isa_supported(SPRUCE_ISA_AVX2))
        spruce__qdense_avx2(&qtables[SPRUCE_ISA_AVX2]);
#endif
#ifdef SPRUCE_HAVE_AVX512
    if (spruce_sparse_isa_supported(SPRUCE_ISA_AVX512)) {
        spruce__qdense_avx512(&qtables[SPRUCE_ISA_AVX512], 0);
        spruce__qdense_avx512(&qtable_bf16dp, 1);
    }
#endif
    bf16dp_on = spruce_qmatrix_bf16dp_available() && !(env && !strcmp(env, "0"));
}

void spruce__qdense_scalar(spruce__qdense_table *t)
{
    memset(t, 0, sizeof *t);
    t->k[SPRUCE_DT_BF16][0] = t->k[SPRUCE_DT_BF16][1] = dense_spmm_bf16_scalar;
    t->k[SPRUCE_DT_INT8][0] = t->k[SPRUCE_DT_INT8][1] = dense_spmm_int8_scalar;
    t->k[SPRUCE_DT_INT4][0] = t->k[SPRUCE_DT_INT4][1] = dense_spmm_int4_scalar;
}

int spruce_qmatrix_bf16dp_available(void)
{
#ifdef SPRUCE_HAVE_AVX512BF16
    return spruce_sparse_isa_supported(SPRUCE_ISA_AVX512) && spruce__cpu_has_bf16dp();
#else
    return 0;
#endif
}

int spruce_qmatrix_bf16dp(void)
{
    pthread_once(&qonce, qinit);
    return bf16dp_on;
}

int spruce_qmatrix_bf16dp_set(int on)
{
    pthread_once(&qonce, qinit);
    if (on && !spruce_qmatrix_bf16dp_available())
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "AVX512-BF16 dot products are not supported "
                              "by this build, CPU or OS");
    bf16dp_on = on != 0;
    return 0;
}

/* The kernel of A's dtype at this batch on instruction set isa. */
static spruce__qkernel qkernel(int dtype, int batch, int isa)
{
    pthread_once(&qonce, qinit);
    if (isa == SPRUCE_ISA_AVX512 && bf16dp_on && batch == 1)
        return qtable_bf16dp.k[dtype][0];
    return qtables[isa].k[dtype][batch > 1];
}

const char *spruce_qmatrix_kernel_name(const spruce_qmatrix *A, int batch)
{
    const int isa = spruce_sparse_isa();
    if (!A || isa < 0)
        return "?";
    if (isa == SPRUCE_ISA_AVX512 && A->dtype == SPRUCE_DT_BF16 && batch == 1 &&
        qkernel(A->dtype, batch, isa) != qtables[isa].k[A->dtype][0])
        return "avx512-bf16dp";
    return spruce_sparse_isa_name(isa);
}

int spruce_qmatrix_product(const spruce_qmatrix *A, const float *X, int batch, float *Y,
                           int nthreads)
{
    int isa, blocks, parts, t;
    int64_t most;
    spruce__qkernel k;
    if (!A || !A->q || !X || !Y)
        return spruce__seterr(SPRUCE_EINVAL, "quantized product: NULL %s",
                              !A || !A->q ? "matrix" : !X ? "input" : "output");
    if (A->dtype != SPRUCE_DT_BF16 && A->dtype != SPRUCE_DT_INT8 && A->dtype != SPRUCE_DT_INT4)
        return spruce__seterr(SPRUCE_EDTYPE, "quantized product: dtype %d, expected bf16, int8 "
                              "or int4", A->dtype);
    if (A->rows <= 0 || A->cols <= 0 || batch < 1)
        return spruce__seterr(SPRUCE_ESHAPE, "quantized product: (%d, %d) matrix, batch %d",
                              A->rows, A->cols, batch);
    if (A->dtype != SPRUCE_DT_BF16 && !A->scale)
        return spruce__seterr(SPRUCE_EINVAL, "quantized product: %s without scales",
                              spruce_dtype_name(A->dtype));
    if (nthreads < 0)
        return spruce__seterr(SPRUCE_EINVAL, "quantized product: %d threads", nthreads);
    if ((isa = spruce_sparse_isa()) < 0)
        return isa;
    k = qkernel(A->dtype, batch, isa);
    if (!nthreads)
        nthreads = omp_get_max_threads();
    /* Row ranges of whole blocks, SPRUCE__PARTS per thread, each worth at
     * least SPRUCE__PART_MIN weights (but one per thread at least), taken
     * dynamically as the sparse products take theirs. */
    blocks = (A->rows + SPRUCE__QROWS - 1) / SPRUCE__QROWS;
    most = (int64_t)A->rows * A->cols / SPRUCE__PART_MIN;
    parts = nthreads == 1 ? 1 : nthreads * SPRUCE__PARTS;
    if (most < nthreads)
        most = nthreads;
    if (parts > most)
        parts = (int)most;
    if (parts > blocks)
        parts = blocks;
    if (parts <= 1) {
        k(A, X, batch, Y, 0, A->rows);
        return 0;
    }
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
    for (t = 0; t < parts; t++) {
        const int r0 = (int)((int64_t)blocks * t / parts) * SPRUCE__QROWS;
        int r1 = (int)((int64_t)blocks * (t + 1) / parts) * SPRUCE__QROWS;
        r1 = r1 < A->rows ? r1 : A->rows;
        if (r0 < r1)
            k(A, X, batch, Y, r0, r1);
    }
    return 0;
}
