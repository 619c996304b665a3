/* pack.c: packing dense-with-zeros matrices into CSR, bitmask and N:M, the
 * reverse, and the threaded product Y = A X.
 * W is (rows, cols) row-major, X is (cols, batch), Y is (rows, batch). */
#include "config.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "pairs_internal.h"
#include "sparse_internal.h"

static const char *const format_names[4] = {"dense", "csr", "bitmask", "nm"};

const char *spruce_layout_name(int layout)
{
    return layout == SPRUCE_LAYOUT_BITS ? "bits" : layout == SPRUCE_LAYOUT_PAIRS ? "pairs" : "?";
}

const char *spruce_format_name(int format)
{
    return format >= 0 && format < 4 ? format_names[format] : "?";
}

int spruce_format_parse(const char *s)
{
    int i;
    for (i = 0; s && i < 4; i++)
        if (!strcmp(s, format_names[i]))
            return i;
    return -1;
}

void spruce_sparse_free(spruce_sparse *A)
{
    int b;
    if (!A)
        return;
    for (b = 0; b < A->nblk; b++)
        spruce_sparse_free(A->blk[b]);
    free(A->split);
    free(A->rowptr);
    free(A->val);
    free(A->idx16);
    free(A->idx32);
    free(A->woff);
    free(A->bits);
    spruce__pairs_free(A->pairs);
    free(A);
}

static inline int kept(const float *W, const uint8_t *mask, int64_t at)
{
    return mask ? mask[at] != 0 : W[at] != 0.0f;
}

/* Row boundaries for each of nsplit ranges so that every range gets about the
 * same cost, a row costing its stored values (rowptr[i + 1] - rowptr[i]) plus
 * a fixed overhead. */
void spruce__balance(const int64_t *rowptr, int rows, int64_t row_overhead, int nsplit, int *split)
{
    const int T = nsplit;
    int64_t total = rowptr[rows] - rowptr[0] + row_overhead * rows, acc = 0;
    int t = 1, i;
    split[0] = 0;
    for (i = 0; i < rows && t < T; i++) {
        acc += rowptr[i + 1] - rowptr[i] + row_overhead;
        while (t < T && acc * T >= total * t)
            split[t++] = i + 1;
    }
    while (t <= T)
        split[t++] = rows;
}

static void balance(spruce_sparse *A, int64_t row_overhead)
{
    spruce__balance(A->rowptr, A->rows, row_overhead, A->nsplit, A->split);
}

/* How many row ranges a matrix of rows rows and total stored values gets. */
int spruce__nsplit(int nthreads, int64_t total, int rows)
{
    int64_t most = total / SPRUCE__PART_MIN;
    int n = nthreads == 1 ? 1 : nthreads * SPRUCE__PARTS;
    if (most < nthreads)
        most = nthreads;
    if (n > most)
        n = (int)most;
    return n > rows ? rows : n;
}

/* The slots an N:M group of columns [at, at + width) stores: its kept
 * weights, topped up with the lowest pruned positions to min(n, width). */
uint64_t spruce__nm_slots(const float *W, const uint8_t *mask, int64_t at, int width, int n)
{
    int have = width < n ? width : n, j;
    uint64_t sel = spruce__kept_bits(W, mask, at, width);
    for (j = 0; j < width; j++)
        have -= (int)(sel >> j & 1);
    for (; have > 0; have--)
        sel |= ~sel & (sel + 1); /* the lowest position not stored yet */
    return sel;
}

/* Check the N:M pattern and count the values each row stores: the rows in
 * parallel (a row breaking the pattern counts -1), then the first such row's
 * first such group named. */
int spruce__nm_count(const float *W, const uint8_t *mask, int rows, int cols, int64_t ld, int col0,
                     int n, int m, int64_t *per_row)
{
    const int groups = (cols + m - 1) / m;
    int i, bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad)
    for (i = 0; i < rows; i++) {
        int64_t stored = 0;
        int g, j;
        for (g = 0; g < groups; g++) {
            const int c0 = g * m, c1 = c0 + m < cols ? c0 + m : cols;
            int cnt = 0;
            for (j = c0; j < c1; j++)
                cnt += kept(W, mask, (int64_t)i * ld + j);
            if (cnt > n) {
                stored = -1;
                break;
            }
            stored += c1 - c0 < n ? c1 - c0 : n;
        }
        per_row[i] = stored;
        bad |= stored < 0;
    }
    for (i = 0; bad && i < rows; i++) {
        int g, j;
        if (per_row[i] >= 0)
            continue;
        for (g = 0; g < groups; g++) {
            const int c0 = g * m, c1 = c0 + m < cols ? c0 + m : cols;
            int cnt = 0;
            for (j = c0; j < c1; j++)
                cnt += kept(W, mask, (int64_t)i * ld + j);
            if (cnt > n)
                return spruce__seterr(SPRUCE_EPATTERN,
                                      "row %d, group %d (columns %d..%d): %d weights kept, the "
                                      "%d:%d pattern allows at most %d",
                                      i, (col0 + c0) / m, col0 + c0, col0 + c1 - 1, cnt, n, m, n);
        }
    }
    return 0;
}

/* The fields every packed matrix sets from its shape and options. */
static void init_header(spruce_sparse *A, int rows, int cols, const spruce_pack_opts *opts)
{
    A->format = opts->format;
    A->rows = rows;
    A->cols = cols;
    A->n = opts->n;
    A->m = opts->m;
    A->nthreads = opts->nthreads ? opts->nthreads : omp_get_max_threads();
    A->wpr = (cols + 63) / 64;
    A->idx_bits = cols <= 65536 ? 16 : 32;
}

/* Pack columns [col0, col0 + cols) of W, whose rows are ld floats apart (mask
 * alike), as one matrix. */
static int pack_one(const float *W, const uint8_t *mask, int rows, int cols, int64_t ld, int col0,
                    const spruce_pack_opts *opts, spruce_sparse **out)
{
    spruce_sparse *A = NULL;
    int64_t *cnt = NULL;
    int rc = 0, i;
    *out = NULL;
    W += col0;
    if (mask)
        mask += col0;

    A = calloc(1, sizeof *A);
    cnt = malloc(sizeof *cnt * rows);
    if (!A || !cnt)
        goto nomem;
    init_header(A, rows, cols, opts);

    if (A->format == SPRUCE_FMT_NM) {
        if ((rc = spruce__nm_count(W, mask, rows, cols, ld, col0, A->n, A->m, cnt)) < 0)
            goto done;
    } else {
#pragma omp parallel for schedule(static)
        for (i = 0; i < rows; i++) {
            int64_t c = 0;
            int k;
            for (k = 0; k < cols; k++)
                c += kept(W, mask, (int64_t)i * ld + k);
            cnt[i] = c;
        }
    }
    A->rowptr = malloc(sizeof *A->rowptr * (rows + 1));
    {
        int64_t total = 0;
        for (i = 0; i < rows; i++)
            total += cnt[i];
        A->nsplit = spruce__nsplit(A->nthreads, total, rows);
    }
    A->split = malloc(sizeof *A->split * (A->nsplit + 1));
    if (!A->rowptr || !A->split)
        goto nomem;
    A->rowptr[0] = 0;
    for (i = 0; i < rows; i++)
        A->rowptr[i + 1] = A->rowptr[i] + cnt[i];
    A->nnz = A->rowptr[rows];
    A->val = calloc(A->nnz + SPRUCE__PAD, sizeof *A->val);
    if (!A->val)
        goto nomem;

    if (A->format == SPRUCE_FMT_CSR) {
        if (A->idx_bits == 16)
            A->idx16 = malloc(sizeof *A->idx16 * (A->nnz + 1));
        else
            A->idx32 = malloc(sizeof *A->idx32 * (A->nnz + 1));
        if (!A->idx16 && !A->idx32)
            goto nomem;
#pragma omp parallel for schedule(static)
        for (i = 0; i < rows; i++) {
            int64_t p = A->rowptr[i];
            int j0;
            for (j0 = 0; j0 < cols; j0 += 64) {
                const int64_t at = (int64_t)i * ld + j0;
                uint64_t b = spruce__kept_bits(W, mask, at, cols - j0 < 64 ? cols - j0 : 64);
                for (; b; b &= b - 1, p++) {
                    const int k = __builtin_ctzll(b);
                    A->val[p] = W[at + k];
                    if (A->idx16)
                        A->idx16[p] = (uint16_t)(j0 + k);
                    else
                        A->idx32[p] = (uint32_t)(j0 + k);
                }
            }
        }
        A->nwin = (cols + SPRUCE__WIN - 1) / SPRUCE__WIN;
        if (!(A->woff = malloc(sizeof *A->woff * (size_t)rows * (A->nwin + 1))))
            goto nomem;
#pragma omp parallel for schedule(static)
        for (i = 0; i < rows; i++) {
            uint32_t *wo = A->woff + (int64_t)i * (A->nwin + 1);
            int64_t p = A->rowptr[i], e = A->rowptr[i + 1];
            int w;
            for (w = 0; w < A->nwin; w++) {
                wo[w] = (uint32_t)(p - A->rowptr[i]);
                while (p < e && (int64_t)(A->idx16 ? A->idx16[p] : A->idx32[p]) < (int64_t)(w + 1) * SPRUCE__WIN)
                    p++;
            }
            wo[A->nwin] = (uint32_t)(e - A->rowptr[i]);
        }
        balance(A, 8);
    } else {
        A->bits = calloc((size_t)rows * A->wpr, sizeof *A->bits);
        if (!A->bits)
            goto nomem;
#pragma omp parallel for schedule(static)
        for (i = 0; i < rows; i++) {
            uint64_t *bits = A->bits + (int64_t)i * A->wpr;
            float *v = A->val + A->rowptr[i];
            int j, g;
            if (A->format == SPRUCE_FMT_BITMASK) {
                for (j = 0; j < A->wpr; j++) {
                    const int64_t at = (int64_t)i * ld + 64 * j;
                    uint64_t b = spruce__kept_bits(W, mask, at,
                                                   cols - 64 * j < 64 ? cols - 64 * j : 64);
                    for (bits[j] = b; b; b &= b - 1)
                        *v++ = W[at + __builtin_ctzll(b)];
                }
                continue;
            }
            /* N:M: exactly min(n, group width) slots per group, the kept weights
             * first, topped up with the lowest pruned positions (value 0). */
            for (g = 0; g * A->m < cols; g++) {
                const int c0 = g * A->m, c1 = c0 + A->m < cols ? c0 + A->m : cols;
                uint64_t sel = spruce__nm_slots(W, mask, (int64_t)i * ld + c0, c1 - c0, A->n);
                for (; sel; sel &= sel - 1) {
                    int64_t at;
                    j = c0 + __builtin_ctzll(sel);
                    at = (int64_t)i * ld + j;
                    bits[j / 64] |= 1ull << (j % 64);
                    *v++ = kept(W, mask, at) ? W[at] : 0.0f;
                }
            }
        }
        balance(A, A->wpr * 4);
    }
    *out = A;
    A = NULL;
    goto done;
nomem:
    rc = spruce__seterr(SPRUCE_ENOMEM, "sparse pack: (%d, %d) matrix", rows, cols);
done:
    free(cnt);
    spruce_sparse_free(A);
    return rc;
}

/* Greatest common divisor, for the block width. */
static int gcd(int a, int b)
{
    while (b) {
        int t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Bitmask and N:M matrices wider than SPRUCE__BLOCK_COLS columns are packed as
 * column blocks of (nearly) equal width, each a matrix of its own: a thread
 * then streams one block's values for its rows with that block's part of x in
 * the L1 cache, then the next block's.  With rows of 11008 columns x is 44 KB
 * and does not stay in the 48 KB L1 cache beside the streamed weights (the
 * same kernel streamed 22 GB/s, and 26 GB/s with x cut to 16 KB); column
 * windows over blocks of rows kept x in L1 but split each row's values into
 * separate streams, and were slower still.  Block widths are multiples of 64
 * and of M, so that no N:M group straddles two blocks. */
int spruce__block_width(int cols, int m, int groupsize)
{
    const int nblk = (cols + SPRUCE__BLOCK_COLS - 1) / SPRUCE__BLOCK_COLS;
    int unit = 64, width = (cols + nblk - 1) / nblk;
    if (m > 0)
        unit = unit / gcd(unit, m) * m;
    if (groupsize > 0)
        unit = unit / gcd(unit, groupsize) * groupsize;
    return (width + unit - 1) / unit * unit;
}

static int pack_blocks(const float *W, const uint8_t *mask, int rows, int cols,
                       const spruce_pack_opts *opts, spruce_sparse **out)
{
    const int width = spruce__block_width(cols, opts->format == SPRUCE_FMT_NM ? opts->m : 0, 0);
    int b, i, rc = 0;
    spruce_sparse *A = calloc(1, sizeof *A);
    if (!A)
        goto nomem;
    init_header(A, rows, cols, opts);
    for (b = 0; b * width < cols; b++) {
        const int c0 = b * width, w = cols - c0 < width ? cols - c0 : width;
        A->col0[b] = c0;
        if ((rc = pack_one(W, mask, rows, w, cols, c0, opts, &A->blk[b])) < 0)
            goto done;
        A->blk[b]->add = b > 0;
        A->nblk = b + 1;
        A->nnz += A->blk[b]->nnz;
    }
    /* The row split of the whole, from the rows' total counts. */
    if (!(A->rowptr = malloc(sizeof *A->rowptr * (rows + 1))))
        goto nomem;
    A->rowptr[0] = 0;
    for (i = 0; i < rows; i++) {
        int64_t c = 0;
        for (b = 0; b < A->nblk; b++)
            c += A->blk[b]->rowptr[i + 1] - A->blk[b]->rowptr[i];
        A->rowptr[i + 1] = A->rowptr[i] + c;
    }
    A->nsplit = A->blk[0]->nsplit;
    if (!(A->split = malloc(sizeof *A->split * (A->nsplit + 1))))
        goto nomem;
    balance(A, A->wpr * 4);
    *out = A;
    return 0;
nomem:
    rc = spruce__seterr(SPRUCE_ENOMEM, "sparse pack: (%d, %d) matrix", rows, cols);
done:
    spruce_sparse_free(A);
    return rc;
}

int spruce__check_layout(const spruce_pack_opts *opts)
{
    if (opts->layout == SPRUCE_LAYOUT_BITS)
        return 0;
    if (opts->layout != SPRUCE_LAYOUT_PAIRS)
        return spruce__seterr(SPRUCE_EINVAL, "sparse pack: layout %d, expected %d (bits) or "
                              "%d (pairs)", opts->layout, SPRUCE_LAYOUT_BITS, SPRUCE_LAYOUT_PAIRS);
    if (opts->format != SPRUCE_FMT_NM || opts->m != 4 || opts->n > 2)
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "sparse pack: the pair layout holds 2:4 and "
                              "1:4 matrices, not %s%s%d:%d", spruce_format_name(opts->format),
                              opts->format == SPRUCE_FMT_NM ? " " : "", opts->n, opts->m);
    return 0;
}

/* A float32 weight's code in the pair layout: its bits (0 where not kept). */
struct f32_src {
    const float *W;
    int cols;
};

static uint32_t f32_code(const void *ctx, int i, int j, int kept)
{
    const struct f32_src *s = ctx;
    uint32_t c = 0;
    if (kept)
        memcpy(&c, s->W + (int64_t)i * s->cols + j, sizeof c);
    return c;
}

/* NM (2:4, 1:4) in the pair layout. */
static int pack_pairs(const float *W, const uint8_t *mask, int rows, int cols,
                      const spruce_pack_opts *opts, spruce_sparse **out)
{
    spruce_sparse *A = calloc(1, sizeof *A);
    int64_t *cnt = malloc(sizeof *cnt * rows);
    const struct f32_src src = {W, cols};
    int rc = 0;
    if (!A || !cnt) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "sparse pack: (%d, %d) matrix", rows, cols);
        goto done;
    }
    init_header(A, rows, cols, opts);
    if ((rc = spruce__nm_count(W, mask, rows, cols, cols, 0, A->n, A->m, cnt)) < 0 ||
        (rc = spruce__pairs_new(SPRUCE_DT_F32, rows, cols, A->n, NULL, A->nthreads, &A->pairs)) < 0)
        goto done;
    spruce__pairs_fill(A->pairs, W, mask, f32_code, &src);
    if ((rc = spruce__pairs_finish(A->pairs)) < 0)
        goto done;
    A->nnz = spruce__pairs_slots(A->pairs);
    A->nthreads = A->pairs->nthreads;
    *out = A;
    A = NULL;
done:
    free(cnt);
    spruce_sparse_free(A);
    return rc;
}

int spruce_sparse_pack(const float *W, const uint8_t *mask, int rows, int cols,
                       const spruce_pack_opts *opts, spruce_sparse **out)
{
    int rc;
    if (out)
        *out = NULL;
    if (!W || !opts || !out)
        return spruce__seterr(SPRUCE_EINVAL, "sparse pack: NULL %s",
                              !W      ? "matrix"
                              : !opts ? "options"
                                      : "output");
    if (rows <= 0 || cols <= 0)
        return spruce__seterr(SPRUCE_ESHAPE,
                              "sparse pack: expected rows, cols >= 1, found (%d, %d)", rows, cols);
    if (opts->format != SPRUCE_FMT_CSR && opts->format != SPRUCE_FMT_BITMASK &&
        opts->format != SPRUCE_FMT_NM)
        return spruce__seterr(SPRUCE_EINVAL, "sparse pack: format %d is not csr, bitmask or nm",
                              opts->format);
    if (opts->format == SPRUCE_FMT_NM && !(opts->n > 0 && opts->n < opts->m && opts->m <= 64))
        return spruce__seterr(SPRUCE_EINVAL,
                              "sparse pack: N:M pattern %d:%d, expected 0 < N < M <= 64", opts->n,
                              opts->m);
    if (opts->nthreads < 0)
        return spruce__seterr(SPRUCE_EINVAL, "sparse pack: %d threads", opts->nthreads);

    if ((rc = spruce__check_layout(opts)) < 0)
        return rc;
    if (opts->layout == SPRUCE_LAYOUT_PAIRS)
        return pack_pairs(W, mask, rows, cols, opts, out);
    if (opts->format != SPRUCE_FMT_CSR && cols > SPRUCE__BLOCK_COLS &&
        cols <= SPRUCE__BLOCK_COLS * SPRUCE__MAX_BLOCKS / 2)
        return pack_blocks(W, mask, rows, cols, opts, out);
    return pack_one(W, mask, rows, cols, cols, 0, opts, out);
}

/* W (rows, ld) receives columns [0, A->cols) of A. */
static void unpack_one(const spruce_sparse *A, float *W, int64_t ld)
{
    int i, j, w;
    for (i = 0; i < A->rows; i++) {
        float *row = W + (int64_t)i * ld;
        int64_t p = A->rowptr[i];
        if (A->format == SPRUCE_FMT_CSR) {
            for (; p < A->rowptr[i + 1]; p++)
                row[A->idx16 ? A->idx16[p] : A->idx32[p]] = A->val[p];
            continue;
        }
        for (w = 0; w < A->wpr; w++) {
            uint64_t b = A->bits[(int64_t)i * A->wpr + w];
            while (b) {
                j = 64 * w + __builtin_ctzll(b);
                row[j] = A->val[p++];
                b &= b - 1;
            }
        }
    }
}

int spruce_sparse_unpack(const spruce_sparse *A, float *W)
{
    int b;
    if (!A || !W)
        return spruce__seterr(SPRUCE_EINVAL, "sparse unpack: NULL %s", !A ? "matrix" : "output");
    memset(W, 0, sizeof *W * (size_t)A->rows * A->cols);
    if (A->pairs)
        spruce__pairs_unpack(A->pairs, W);
    else if (!A->nblk)
        unpack_one(A, W, A->cols);
    for (b = 0; b < A->nblk; b++)
        unpack_one(A->blk[b], W + A->col0[b], A->cols);
    return 0;
}

int spruce_sparse_format(const spruce_sparse *A) { return A ? A->format : -1; }
int spruce_sparse_rows(const spruce_sparse *A) { return A ? A->rows : 0; }
int spruce_sparse_cols(const spruce_sparse *A) { return A ? A->cols : 0; }
int64_t spruce_sparse_nnz(const spruce_sparse *A) { return A ? A->nnz : 0; }
int spruce_sparse_layout(const spruce_sparse *A)
{
    return A && A->pairs ? SPRUCE_LAYOUT_PAIRS : SPRUCE_LAYOUT_BITS;
}
int spruce_sparse_index_bits(const spruce_sparse *A)
{
    return A && A->format == SPRUCE_FMT_CSR ? A->idx_bits : 0;
}

size_t spruce_sparse_bytes(const spruce_sparse *A)
{
    size_t b;
    int k;
    if (!A)
        return 0;
    if (A->pairs)
        return spruce__pairs_bytes(A->pairs);
    if (A->nblk) {
        for (b = 0, k = 0; k < A->nblk; k++)
            b += spruce_sparse_bytes(A->blk[k]);
        return b;
    }
    b = (size_t)A->nnz * sizeof(float) + (size_t)(A->rows + 1) * sizeof(int64_t);
    if (A->format == SPRUCE_FMT_CSR)
        b += (size_t)A->nnz * (A->idx_bits / 8); /* (woff is read only for batch > 1) */
    else
        b += (size_t)A->rows * A->wpr * sizeof(uint64_t);
    return b;
}

/* Rows [r0, r1) of Y = A X; with column blocks, block 0 writes those rows
 * of Y and each further block adds its product to them (its add flag), so
 * that nothing but Y is written and a product never allocates. */
static void mul_rows(const spruce_sparse *A, spruce__kernel k, const float *X, int batch, float *Y,
                     int r0, int r1)
{
    int b;
    if (!A->nblk) {
        k(A, X, batch, Y, r0, r1);
        return;
    }
    for (b = 0; b < A->nblk; b++)
        k(A->blk[b], X + (int64_t)A->col0[b] * batch, batch, Y, r0, r1);
}

/* Threads each take row ranges and write only those rows of Y, so products
 * of the same matrix may run at once from several threads (each with its own
 * X and Y), whatever omp_get_max_threads() says at the time. */
int spruce_sparse_mul(const spruce_sparse *A, const float *X, int batch, float *Y)
{
    const int isa = spruce_sparse_isa();
    return isa < 0 ? isa : spruce_sparse_mul_isa(A, isa, X, batch, Y);
}

int spruce_sparse_mul_isa(const spruce_sparse *A, int isa, const float *X, int batch, float *Y)
{
    const spruce__kernel_table *tab;
    spruce__kernel k;
    if (!A || !X || !Y)
        return spruce__seterr(SPRUCE_EINVAL, "sparse product: NULL %s",
                              !A ? "matrix" : !X ? "input" : "output");
    if (batch < 1)
        return spruce__seterr(SPRUCE_ESHAPE, "sparse product: batch %d, expected >= 1", batch);
    if (!(tab = spruce__kernels_isa(isa)))
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "sparse product: instruction set %s is not "
                              "supported by this build, CPU or OS", spruce_sparse_isa_name(isa));
    if (A->pairs)
        return spruce__pairs_mul(A->pairs, isa, X, batch, Y);
    k = tab->k[A->format][batch > 1];
    if (A->nthreads == 1) {
        mul_rows(A, k, X, batch, Y, 0, A->rows);
    } else {
        int t;
#pragma omp parallel for num_threads(A->nthreads) schedule(dynamic, 1)
        for (t = 0; t < A->nsplit; t++)
            if (A->split[t] < A->split[t + 1])
                mul_rows(A, k, X, batch, Y, A->split[t], A->split[t + 1]);
    }
    return 0;
}
