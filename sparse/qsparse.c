/* qsparse.c: bitmask and N:M matrices with bf16, int8 and int4 values:
 * packing them from a quantized matrix and a mask (or from float32 weights,
 * quantized as spruce_qmatrix_quantize does), the reverse, and the threaded
 * product Y = A X.  W is (rows, cols), X (cols, batch), Y (rows, batch), all
 * row-major; the layouts are in spruce_qsparse.h and qsparse_internal.h. */
#include "config.h"

#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernel_common.h"
#include "kernels/qdense.h"
#include "pairs_internal.h"
#include "qsparse_internal.h"

void spruce_qsparse_free(spruce_qsparse *A)
{
    int b;
    if (!A)
        return;
    for (b = 0; b < A->nblk; b++)
        spruce_qsparse_free(A->blk[b]);
    free(A->split);
    free(A->rowptr);
    free(A->val);
    free(A->bits);
    free(A->col16);
    free(A->col32);
    free(A->rowcnt);
    free(A->scale);
    free(A->zero);
    spruce__pairs_free(A->pairs);
    free(A);
}

/* The stored code of weight (i, j) of Q: bf16 bits, int8 q (as a byte), int4
 * u.  The _of forms take Q->dtype as a constant, so the packers' loops are
 * made once per value type. */
SPRUCE__INLINE unsigned code_of(const spruce_qmatrix *Q, int i, int j, const int dtype)
{
    const uint8_t *row = Q->q + (size_t)i * Q->ld;
    if (dtype == SPRUCE_DT_BF16)
        return ((const uint16_t *)row)[j];
    if (dtype == SPRUCE_DT_INT8)
        return row[j];
    return (unsigned)spruce__nibble(row, j);
}

static unsigned code_at(const spruce_qmatrix *Q, int i, int j)
{
    return code_of(Q, i, j, Q->dtype);
}

/* The code that dequantizes to 0 at (i, j): what a top-up N:M slot holds. */
SPRUCE__INLINE unsigned zero_of(const spruce_qmatrix *Q, int i, int j, const int dtype)
{
    if (dtype == SPRUCE_DT_BF16)
        return 0;
    if (dtype == SPRUCE_DT_INT8)
        return Q->zero ? Q->zero[i] : 0;
    return Q->zero ? Q->zero[(size_t)i * Q->ngroups + j / Q->groupsize] & 15u : 8;
}

static unsigned zero_code(const spruce_qmatrix *Q, int i, int j)
{
    return zero_of(Q, i, j, Q->dtype);
}

SPRUCE__INLINE void put_code(spruce_qsparse *A, int64_t p, unsigned c, const int dtype)
{
    if (dtype == SPRUCE_DT_BF16)
        ((uint16_t *)A->val)[p] = (uint16_t)c;
    else if (dtype == SPRUCE_DT_INT8)
        A->val[p] = (uint8_t)c;
    else
        A->val[p >> 1] |= (uint8_t)(c << (4 * (p & 1)));
}

/* Row i of A (columns [c0, c0 + A->cols) of Q, mask row mrow), in its format. */
SPRUCE__INLINE void pack_row(spruce_qsparse *A, const spruce_qmatrix *Q, const uint8_t *mrow,
                             int i, int c0, const int dtype)
{
    const int cols = A->cols;
    uint64_t *bits = A->bits + (int64_t)i * A->wpr;
    int64_t p = A->rowptr[i];
    int j, g;
    if (A->format != SPRUCE_FMT_NM) { /* compressed rows, bitmask: the kept weights */
        for (j = 0; j < cols; j += 64) {
            uint64_t b = spruce__kept_bits(NULL, mrow, j, cols - j < 64 ? cols - j : 64);
            if (A->format == SPRUCE_FMT_BITMASK)
                bits[j / 64] = b;
            for (; b; b &= b - 1, p++) {
                const int k = j + __builtin_ctzll(b);
                if (A->format == SPRUCE_FMT_CSR) {
                    if (A->col16)
                        A->col16[p] = (uint16_t)(c0 + k);
                    else
                        A->col32[p] = (uint32_t)(c0 + k);
                }
                put_code(A, p, code_of(Q, i, c0 + k, dtype), dtype);
            }
        }
        return;
    }
    for (g = 0; g * A->m < cols; g++) { /* N:M: the slots, topped up with zero codes */
        const int g0 = g * A->m, g1 = g0 + A->m < cols ? g0 + A->m : cols;
        uint64_t sel = spruce__nm_slots(NULL, mrow, g0, g1 - g0, A->n);
        for (; sel; sel &= sel - 1) {
            j = g0 + __builtin_ctzll(sel);
            bits[j / 64] |= 1ull << (j % 64);
            put_code(A, p++,
                     mrow[j] ? code_of(Q, i, c0 + j, dtype) : zero_of(Q, i, c0 + j, dtype),
                     dtype);
        }
    }
}

void spruce__qmatrix_kept(const spruce_qmatrix *Q, uint8_t *mask)
{
    int i;
#pragma omp parallel for schedule(static)
    for (i = 0; i < Q->rows; i++) {
        uint8_t *m = mask + (size_t)i * Q->cols;
        int j;
        if (Q->dtype == SPRUCE_DT_BF16)
            for (j = 0; j < Q->cols; j++)
                m[j] = (code_of(Q, i, j, SPRUCE_DT_BF16) & 0x7fffu) != 0;
        else if (Q->dtype == SPRUCE_DT_INT8)
            for (j = 0; j < Q->cols; j++)
                m[j] = code_of(Q, i, j, SPRUCE_DT_INT8) != zero_of(Q, i, j, SPRUCE_DT_INT8);
        else
            for (j = 0; j < Q->cols; j++)
                m[j] = code_of(Q, i, j, SPRUCE_DT_INT4) != zero_of(Q, i, j, SPRUCE_DT_INT4);
    }
}

/* The scales and zero points of columns [c0, c0 + A->cols) of Q. */
static int copy_scales(spruce_qsparse *A, const spruce_qmatrix *Q, int c0)
{
    const int g0 = Q->dtype == SPRUCE_DT_INT4 ? c0 / Q->groupsize : 0;
    const size_t n = (size_t)A->rows * A->ngroups;
    int i;
    if (Q->dtype == SPRUCE_DT_BF16)
        return 0;
    if (!(A->scale = malloc(sizeof *A->scale * n)) || (Q->zero && !(A->zero = malloc(n))))
        return -1;
    for (i = 0; i < A->rows; i++) {
        const size_t from = (size_t)i * Q->ngroups + g0, to = (size_t)i * A->ngroups;
        memcpy(A->scale + to, Q->scale + from, sizeof *A->scale * A->ngroups);
        if (A->zero)
            memcpy(A->zero + to, Q->zero + from, (size_t)A->ngroups);
    }
    return 0;
}

/* The fields of a matrix of cols columns of Q, from its shape and options. */
static void init_header(spruce_qsparse *A, const spruce_qmatrix *Q, int cols,
                        const spruce_pack_opts *opts)
{
    A->format = opts->format;
    A->dtype = Q->dtype;
    A->rows = Q->rows;
    A->cols = cols;
    A->n = opts->n;
    A->m = opts->m;
    A->groupsize = Q->groupsize;
    A->ngroups = Q->dtype == SPRUCE_DT_INT4 ? (cols + Q->groupsize - 1) / Q->groupsize : 1;
    A->nthreads = opts->nthreads ? opts->nthreads : omp_get_max_threads();
    A->wpr = (cols + 63) / 64;
}

/* Columns [c0, c0 + cols) of Q as one matrix; mask is (Q->rows, Q->cols). */
static int pack_one(const spruce_qmatrix *Q, const uint8_t *mask, int c0, int cols,
                    const spruce_pack_opts *opts, spruce_qsparse **out)
{
    const int rows = Q->rows;
    const int64_t ld = Q->cols;
    spruce_qsparse *A = calloc(1, sizeof *A);
    int64_t *cnt = malloc(sizeof *cnt * rows);
    int rc = 0, i;
    *out = NULL;
    if (!A || !cnt)
        goto nomem;
    init_header(A, Q, cols, opts);
    if (A->format == SPRUCE_FMT_NM) {
        if ((rc = spruce__nm_count(NULL, mask + c0, rows, cols, ld, c0, A->n, A->m, cnt)) < 0)
            goto done;
    } else {
        for (i = 0; i < rows; i++) {
            int64_t c = 0;
            int j;
            for (j = 0; j < cols; j++)
                c += mask[i * ld + c0 + j] != 0;
            cnt[i] = c;
        }
    }
    if (!(A->rowptr = malloc(sizeof *A->rowptr * (rows + 1))))
        goto nomem;
    A->rowptr[0] = 0;
    for (i = 0; i < rows; i++) {
        A->nnz += cnt[i];
        /* int4: every row starts on a byte */
        A->rowptr[i + 1] = A->rowptr[i] + cnt[i] + (A->dtype == SPRUCE_DT_INT4 ? cnt[i] & 1 : 0);
    }
    A->nsplit = spruce__nsplit(A->nthreads, A->nnz, rows);
    A->split = malloc(sizeof *A->split * (A->nsplit + 1));
    A->val = calloc(spruce__value_bytes(A->dtype, A->rowptr[rows]) + SPRUCE__QPAD, 1);
    if (A->format == SPRUCE_FMT_CSR) { /* columns instead of bits, padded for 8-lane loads */
        A->rowcnt = malloc(sizeof *A->rowcnt * rows);
        if (cols <= 65536)
            A->col16 = calloc((size_t)A->rowptr[rows] + 16, sizeof *A->col16);
        else
            A->col32 = calloc((size_t)A->rowptr[rows] + 16, sizeof *A->col32);
        if (A->rowcnt)
            memcpy(A->rowcnt, cnt, sizeof *cnt * rows);
    } else {
        A->bits = calloc((size_t)rows * A->wpr, sizeof *A->bits);
    }
    if (!A->split || !A->val || (A->format == SPRUCE_FMT_CSR ? !A->rowcnt || (!A->col16 && !A->col32)
                                                             : !A->bits) ||
        copy_scales(A, Q, c0) < 0)
        goto nomem;
#pragma omp parallel for schedule(static)
    for (i = 0; i < rows; i++) {
        const uint8_t *mrow = mask + i * ld + c0;
        if (A->dtype == SPRUCE_DT_BF16)
            pack_row(A, Q, mrow, i, c0, SPRUCE_DT_BF16);
        else if (A->dtype == SPRUCE_DT_INT8)
            pack_row(A, Q, mrow, i, c0, SPRUCE_DT_INT8);
        else
            pack_row(A, Q, mrow, i, c0, SPRUCE_DT_INT4);
    }
    spruce__balance(A->rowptr, rows, A->wpr * 4, A->nsplit, A->split);
    *out = A;
    A = NULL;
    goto done;
nomem:
    rc = spruce__seterr(SPRUCE_ENOMEM, "sparse pack: (%d, %d) %s matrix", rows, cols,
                        spruce_dtype_name(Q->dtype));
done:
    free(cnt);
    spruce_qsparse_free(A);
    return rc;
}

/* A weight's code in the pair layout: Q's (the zero code where not kept). */
static uint32_t q_code(const void *ctx, int i, int j, int kept)
{
    return kept ? code_at(ctx, i, j) : zero_code(ctx, i, j);
}

/* NM (2:4, 1:4) in the pair layout. */
static int pack_pairs(const spruce_qmatrix *Q, const uint8_t *mask, const spruce_pack_opts *opts,
                      spruce_qsparse **out)
{
    const int rows = Q->rows, cols = Q->cols;
    spruce_qsparse *A = calloc(1, sizeof *A);
    int64_t *cnt = malloc(sizeof *cnt * rows);
    int rc = 0;
    if (!A || !cnt) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "sparse pack: (%d, %d) %s matrix", rows, cols,
                            spruce_dtype_name(Q->dtype));
        goto done;
    }
    init_header(A, Q, cols, opts);
    if ((rc = spruce__nm_count(NULL, mask, rows, cols, cols, 0, A->n, A->m, cnt)) < 0 ||
        (rc = spruce__pairs_new(Q->dtype, rows, cols, A->n, Q, A->nthreads, &A->pairs)) < 0)
        goto done;
    spruce__pairs_fill(A->pairs, NULL, mask, q_code, Q);
    if ((rc = spruce__pairs_finish(A->pairs)) < 0)
        goto done;
    A->nnz = spruce__pairs_slots(A->pairs);
    A->nthreads = A->pairs->nthreads;
    *out = A;
    A = NULL;
done:
    free(cnt);
    spruce_qsparse_free(A);
    return rc;
}

/* Wide matrices as column blocks (see pack.c's pack_blocks for why), of
 * widths that are multiples of 64, of M and of the int4 group size. */
static int pack_blocks(const spruce_qmatrix *Q, const uint8_t *mask, const spruce_pack_opts *opts,
                       spruce_qsparse **out)
{
    const int rows = Q->rows, cols = Q->cols;
    const int width = spruce__block_width(cols, opts->format == SPRUCE_FMT_NM ? opts->m : 0,
                                          Q->dtype == SPRUCE_DT_INT4 ? Q->groupsize : 0);
    int b, i, rc = 0;
    spruce_qsparse *A = calloc(1, sizeof *A);
    if (!A)
        goto nomem;
    init_header(A, Q, cols, opts);
    for (b = 0; b * width < cols; b++) {
        const int c0 = b * width, w = cols - c0 < width ? cols - c0 : width;
        A->col0[b] = c0;
        if ((rc = pack_one(Q, mask, c0, w, opts, &A->blk[b])) < 0)
            goto done;
        A->blk[b]->add = b > 0;
        A->nblk = b + 1;
        A->nnz += A->blk[b]->nnz;
    }
    A->nthreads = A->blk[0]->nthreads;
    A->nsplit = A->blk[0]->nsplit;
    A->rowptr = malloc(sizeof *A->rowptr * (rows + 1));
    A->split = malloc(sizeof *A->split * (A->nsplit + 1));
    if (!A->rowptr || !A->split)
        goto nomem;
    A->rowptr[0] = 0;
    for (i = 0; i < rows; i++) {
        int64_t c = 0;
        for (b = 0; b < A->nblk; b++)
            c += A->blk[b]->rowptr[i + 1] - A->blk[b]->rowptr[i];
        A->rowptr[i + 1] = A->rowptr[i] + c;
    }
    spruce__balance(A->rowptr, rows, A->wpr * 4, A->nsplit, A->split);
    *out = A;
    return 0;
nomem:
    rc = spruce__seterr(SPRUCE_ENOMEM, "sparse pack: (%d, %d) %s matrix", rows, cols,
                        spruce_dtype_name(Q->dtype));
done:
    spruce_qsparse_free(A);
    return rc;
}

static int check_opts(const spruce_pack_opts *opts)
{
    if (opts->format != SPRUCE_FMT_BITMASK && opts->format != SPRUCE_FMT_NM &&
        opts->format != SPRUCE_FMT_CSR)
        return spruce__seterr(SPRUCE_EINVAL, "sparse pack: format %s for %s, expected csr, "
                              "bitmask or nm", spruce_format_name(opts->format), "quantized values");
    if (opts->format == SPRUCE_FMT_NM && !(opts->n > 0 && opts->n < opts->m && opts->m <= 64))
        return spruce__seterr(SPRUCE_EINVAL,
                              "sparse pack: N:M pattern %d:%d, expected 0 < N < M <= 64", opts->n,
                              opts->m);
    if (opts->nthreads < 0)
        return spruce__seterr(SPRUCE_EINVAL, "sparse pack: %d threads", opts->nthreads);
    return spruce__check_layout(opts);
}

int spruce_qsparse_pack(const spruce_qmatrix *Q, const uint8_t *mask, const spruce_pack_opts *opts,
                        spruce_qsparse **out)
{
    uint8_t *own = NULL;
    int rc;
    if (out)
        *out = NULL;
    if (!Q || !opts || !out)
        return spruce__seterr(SPRUCE_EINVAL, "sparse pack: NULL %s",
                              !Q ? "matrix" : !opts ? "options" : "output");
    if ((rc = spruce_qmatrix_check(Q)) < 0 || (rc = check_opts(opts)) < 0)
        return rc;
    if (!mask) { /* keep what dequantizes to a non-zero */
        if (!(own = malloc((size_t)Q->rows * Q->cols)))
            return spruce__seterr(SPRUCE_ENOMEM, "sparse pack: (%d, %d) mask", Q->rows, Q->cols);
        spruce__qmatrix_kept(Q, own);
        mask = own;
    }
    if (opts->layout == SPRUCE_LAYOUT_PAIRS)
        rc = pack_pairs(Q, mask, opts, out);
    else if (opts->format != SPRUCE_FMT_CSR && Q->cols > SPRUCE__BLOCK_COLS &&
        Q->cols <= SPRUCE__BLOCK_COLS * SPRUCE__MAX_BLOCKS / 2)
        rc = pack_blocks(Q, mask, opts, out);
    else
        rc = pack_one(Q, mask, 0, Q->cols, opts, out);
    free(own);
    return rc;
}

int spruce_qsparse_quantize(const float *W, const uint8_t *mask, int rows, int cols, int dtype,
                            int groupsize, int asym, const spruce_pack_opts *opts,
                            spruce_qsparse **out)
{
    const size_t count = (size_t)rows * cols;
    spruce_qmatrix *Q = NULL;
    float *Wk = NULL;
    uint8_t *mk = NULL;
    size_t k;
    int rc;
    if (out)
        *out = NULL;
    if (!W || !opts || !out)
        return spruce__seterr(SPRUCE_EINVAL, "sparse pack: NULL %s",
                              !W ? "matrix" : !opts ? "options" : "output");
    if (rows <= 0 || cols <= 0)
        return spruce__seterr(SPRUCE_ESHAPE,
                              "sparse pack: expected rows, cols >= 1, found (%d, %d)", rows, cols);
    if ((rc = check_opts(opts)) < 0)
        return rc;
    if (!(Wk = malloc(sizeof *Wk * count)) || !(mk = malloc(count))) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "sparse pack: (%d, %d) matrix", rows, cols);
        goto done;
    }
    for (k = 0; k < count; k++) {
        mk[k] = mask ? mask[k] != 0 : W[k] != 0.0f;
        Wk[k] = mk[k] ? W[k] : 0.0f;
    }
    if ((rc = spruce_qmatrix_quantize(Wk, rows, cols, dtype, groupsize, asym, &Q)) < 0)
        goto done;
    rc = spruce_qsparse_pack(Q, mk, opts, out);
done:
    spruce_qmatrix_free(Q);
    free(Wk);
    free(mk);
    return rc;
}

/* W (rows, ld) receives columns [0, A->cols) of A. */
static void dequantize_one(const spruce_qsparse *A, float *W, int64_t ld)
{
    int i, w;
    for (i = 0; A->format == SPRUCE_FMT_CSR && i < A->rows; i++) {
        int64_t p;
        for (p = A->rowptr[i]; p < A->rowptr[i] + A->rowcnt[i]; p++)
            W[i * ld + spruce__qcol(A, p)] = spruce__qvalue(A, p, i, spruce__qcol(A, p));
    }
    for (i = 0; A->format != SPRUCE_FMT_CSR && i < A->rows; i++) {
        int64_t p = A->rowptr[i];
        for (w = 0; w < A->wpr; w++) {
            uint64_t b = A->bits[(int64_t)i * A->wpr + w];
            while (b) {
                const int j = 64 * w + __builtin_ctzll(b);
                W[i * ld + j] = spruce__qvalue(A, p++, i, j);
                b &= b - 1;
            }
        }
    }
}

int spruce_qsparse_dequantize(const spruce_qsparse *A, float *W)
{
    int b;
    if (!A || !W)
        return spruce__seterr(SPRUCE_EINVAL, "sparse dequantize: NULL %s",
                              !A ? "matrix" : "output");
    memset(W, 0, sizeof *W * (size_t)A->rows * A->cols);
    if (A->pairs)
        spruce__pairs_unpack(A->pairs, W);
    else if (!A->nblk)
        dequantize_one(A, W, A->cols);
    for (b = 0; b < A->nblk; b++)
        dequantize_one(A->blk[b], W + A->col0[b], A->cols);
    return 0;
}

int spruce_qsparse_format(const spruce_qsparse *A) { return A ? A->format : -1; }
int spruce_qsparse_dtype(const spruce_qsparse *A) { return A ? A->dtype : -1; }
int spruce_qsparse_rows(const spruce_qsparse *A) { return A ? A->rows : 0; }
int spruce_qsparse_cols(const spruce_qsparse *A) { return A ? A->cols : 0; }
int64_t spruce_qsparse_nnz(const spruce_qsparse *A) { return A ? A->nnz : 0; }
int spruce_qsparse_layout(const spruce_qsparse *A)
{
    return A && A->pairs ? SPRUCE_LAYOUT_PAIRS : SPRUCE_LAYOUT_BITS;
}

size_t spruce_qsparse_bytes(const spruce_qsparse *A)
{
    size_t b = 0, n;
    int k;
    if (!A)
        return 0;
    if (A->pairs)
        return spruce__pairs_bytes(A->pairs);
    for (k = 0; k < A->nblk; k++)
        b += spruce_qsparse_bytes(A->blk[k]);
    if (A->nblk)
        return b;
    n = (size_t)A->rows * A->ngroups;
    if (A->format == SPRUCE_FMT_CSR) /* the row starts and counts, a column per value */
        return spruce__value_bytes(A->dtype, A->rowptr[A->rows]) +
               (size_t)(2 * A->rows + 1) * sizeof(int64_t) +
               (size_t)A->nnz * (A->col16 ? sizeof(uint16_t) : sizeof(uint32_t)) +
               (A->scale ? n * sizeof(float) : 0) + (A->zero ? n : 0);
    return spruce__value_bytes(A->dtype, A->rowptr[A->rows]) + (size_t)(A->rows + 1) * sizeof(int64_t) +
           (size_t)A->rows * A->wpr * sizeof(uint64_t) + (A->scale ? n * sizeof(float) : 0) +
           (A->zero ? n : 0);
}

/* ---- kernels and the product ------------------------------------------ */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static spruce__qskernel_table tables[SPRUCE_ISA_COUNT];
/* CSR: [isa][0: batch 1, 1: batch > 1], every value type in one kernel.  An
 * AVX-512 host runs the AVX2 kernels: CSR lives on gathers, and 16-lane
 * gathers are slower than two of 8 on some of those CPUs (AMD Zen 4). */
static spruce__qskernel csr_tables[SPRUCE_ISA_COUNT][2];

static void init_tables(void)
{
    int d, b, isa;
    for (d = 0; d < 4; d++)
        for (b = 0; b < 2; b++)
            tables[SPRUCE_ISA_SCALAR].k[d][b] = qsparse_spmm_scalar;
    for (isa = 1; isa < SPRUCE_ISA_COUNT; isa++)
        tables[isa] = tables[SPRUCE_ISA_SCALAR];
    for (isa = 0; isa < SPRUCE_ISA_COUNT; isa++)
        for (b = 0; b < 2; b++)
            csr_tables[isa][b] = qcsr_spmm_scalar;
#ifdef SPRUCE_HAVE_AVX2
    if (spruce_sparse_isa_supported(SPRUCE_ISA_AVX2))
        for (isa = SPRUCE_ISA_AVX2; isa < SPRUCE_ISA_COUNT; isa++) {
            csr_tables[isa][0] = qcsr_spmv_avx2;
            csr_tables[isa][1] = qcsr_spmm_avx2;
        }
#endif
    /* spruce_sparse_isa_supported initialises the float32 kernels first (the
     * AVX2 kernels share their permutation tables) */
#ifdef SPRUCE_HAVE_AVX2
    if (spruce_sparse_isa_supported(SPRUCE_ISA_AVX2))
        spruce__qskernels_avx2(&tables[SPRUCE_ISA_AVX2]);
#endif
#ifdef SPRUCE_HAVE_AVX512
    if (spruce_sparse_isa_supported(SPRUCE_ISA_AVX512))
        spruce__qskernels_avx512(&tables[SPRUCE_ISA_AVX512]);
#endif
}

/* Rows [r0, r1): block 0 writes them, each further block adds its product. */
static void mul_rows(const spruce_qsparse *A, int isa, const float *X, int batch, float *Y, int r0,
                     int r1)
{
    int b;
    if (A->format == SPRUCE_FMT_CSR) {
        csr_tables[isa][batch > 1](A, X, batch, Y, r0, r1);
        return;
    }
    if (!A->nblk) {
        tables[isa].k[A->dtype][batch > 1](A, X, batch, Y, r0, r1);
        return;
    }
    for (b = 0; b < A->nblk; b++)
        mul_rows(A->blk[b], isa, X + (int64_t)A->col0[b] * batch, batch, Y, r0, r1);
}

int spruce_qsparse_mul_isa(const spruce_qsparse *A, int isa, const float *X, int batch, float *Y)
{
    if (!A || !X || !Y)
        return spruce__seterr(SPRUCE_EINVAL, "sparse product: NULL %s",
                              !A ? "matrix" : !X ? "input" : "output");
    if (batch < 1)
        return spruce__seterr(SPRUCE_ESHAPE, "sparse product: batch %d, expected >= 1", batch);
    if (!spruce_sparse_isa_supported(isa))
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "sparse product: instruction set %s is not "
                              "supported by this build, CPU or OS", spruce_sparse_isa_name(isa));
    if (A->pairs)
        return spruce__pairs_mul(A->pairs, isa, X, batch, Y);
    pthread_once(&once, init_tables);
    if (A->nthreads == 1) {
        mul_rows(A, isa, X, batch, Y, 0, A->rows);
    } else {
        int t;
#pragma omp parallel for num_threads(A->nthreads) schedule(dynamic, 1)
        for (t = 0; t < A->nsplit; t++)
            if (A->split[t] < A->split[t + 1])
                mul_rows(A, isa, X, batch, Y, A->split[t], A->split[t + 1]);
    }
    return 0;
}

int spruce_qsparse_mul(const spruce_qsparse *A, const float *X, int batch, float *Y)
{
    const int isa = spruce_sparse_isa();
    return isa < 0 ? isa : spruce_qsparse_mul_isa(A, isa, X, batch, Y);
}
