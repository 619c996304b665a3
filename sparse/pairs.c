/* pairs.c: the pair layout of 2:4 and 1:4 matrices (pairs_internal.h) for
 * every value type: building it, reading it back, the scalar kernel (the
 * oracle) and the threaded product.  The packers that fill it from float32
 * weights or a quantized matrix are in pack.c and qsparse.c. */
#include "config.h"

#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "pairs_internal.h"
#include "sparse_internal.h"
#include "spruce_half.h"

void spruce__pairs_free(struct spruce__pairs *P)
{
    if (!P)
        return;
    free(P->split);
    free(P->val);
    free(P->meta);
    free(P->scale);
    free(P->zero);
    free(P);
}

int spruce__pairs_new(int dtype, int rows, int cols, int n, const spruce_qmatrix *Q, int nthreads,
                      struct spruce__pairs **out)
{
    struct spruce__pairs *P;
    size_t slots;
    *out = NULL;
    if (dtype == SPRUCE_DT_INT4 && Q->groupsize % 8 != 0)
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "sparse pack: the pair layout needs int4 "
                              "groups of a multiple of 8 columns, not %d", Q->groupsize);
    if (!(P = calloc(1, sizeof *P)))
        goto nomem;
    P->dtype = dtype;
    P->rows = rows;
    P->cols = cols;
    P->n = n;
    P->nb = (cols + 7) / 8;
    P->npairs = (rows + 1) / 2;
    P->groupsize = dtype == SPRUCE_DT_INT4 ? Q->groupsize : 0;
    P->ngroups = dtype == SPRUCE_DT_INT4 ? Q->ngroups : 1;
    P->nthreads = nthreads ? nthreads : omp_get_max_threads();
    slots = (size_t)P->npairs * P->nb * 8;
    P->val = calloc(spruce__value_bytes(dtype, (int64_t)slots) + SPRUCE__PAIRS_PAD, 1);
    P->meta = calloc((size_t)P->npairs * P->nb + SPRUCE__PAIRS_PAD, sizeof *P->meta);
    if (!P->val || !P->meta)
        goto nomem;
    if (dtype == SPRUCE_DT_INT8 || dtype == SPRUCE_DT_INT4) {
        const size_t ns = (size_t)rows * P->ngroups;
        if (!(P->scale = malloc(sizeof *P->scale * ns)) || (Q->zero && !(P->zero = malloc(ns))))
            goto nomem;
        memcpy(P->scale, Q->scale, sizeof *P->scale * ns);
        if (P->zero)
            memcpy(P->zero, Q->zero, ns);
    }
    *out = P;
    return 0;
nomem:
    spruce__pairs_free(P);
    return spruce__seterr(SPRUCE_ENOMEM, "sparse pack: (%d, %d) %s matrix in pairs", rows, cols,
                          spruce_dtype_name(dtype));
}

void spruce__pairs_put(struct spruce__pairs *P, int i, int j, int s, uint32_t c)
{
    const int p = i / 2, b = j / 8, lane = 4 * (j % 8 / 4) + 2 * (i % 2) + s;
    const size_t at = ((size_t)p * P->nb + b) * 8 + lane;
    uint16_t *m = P->meta + (size_t)p * P->nb + b;
    *m = (uint16_t)((*m & ~(3u << (2 * lane))) | (unsigned)(j % 4) << (2 * lane));
    switch (P->dtype) {
    case SPRUCE_DT_F32:
        memcpy(P->val + 4 * at, &c, 4);
        break;
    case SPRUCE_DT_BF16: {
        const uint16_t h = (uint16_t)c;
        memcpy(P->val + 2 * at, &h, 2);
        break;
    }
    case SPRUCE_DT_INT8:
        P->val[at] = (uint8_t)c;
        break;
    default: /* u ^ 8: its sign extension is u - 8 */
        P->val[at / 2] = (uint8_t)((P->val[at / 2] & ~(15u << (4 * (at % 2)))) |
                                   ((c ^ 8u) & 15u) << (4 * (at % 2)));
    }
}

void spruce__pairs_fill(struct spruce__pairs *P, const float *W, const uint8_t *mask,
                        spruce__pairs_code code, const void *ctx)
{
    const int rows = P->rows, cols = P->cols;
    int p;
#pragma omp parallel for schedule(static)
    for (p = 0; p < P->npairs; p++) {
        int i, at;
        for (i = 2 * p; i < 2 * p + 2 && i < rows; i++)
            for (at = 0; at < cols; at += 4) {
                const int64_t o = (int64_t)i * cols + at;
                const int width = cols - at < 4 ? cols - at : 4;
                uint64_t sel = spruce__nm_slots(W, mask, o, width, P->n);
                int s = 0, j;
                for (; sel; sel &= sel - 1) { /* one branch a slot, not a column */
                    j = __builtin_ctzll(sel);
                    spruce__pairs_put(P, i, at + j, s++,
                                      code(ctx, i, at + j, mask ? mask[o + j] != 0
                                                                : W[o + j] != 0.0f));
                }
                for (; s < 2; s++) /* 1:4, or a group narrower than 2 */
                    spruce__pairs_put(P, i, at, s, code(ctx, i, at, 0));
            }
    }
}

int spruce__pairs_finish(struct spruce__pairs *P)
{
    int t;
    P->nsplit = spruce__nsplit(P->nthreads, (int64_t)P->npairs * P->nb * 8, P->npairs);
    if (P->nsplit < 1)
        P->nsplit = 1;
    if (!(P->split = malloc(sizeof *P->split * (P->nsplit + 1))))
        return spruce__seterr(SPRUCE_ENOMEM, "sparse pack: %d row ranges", P->nsplit);
    for (t = 0; t <= P->nsplit; t++) /* every pair streams the same bytes */
        P->split[t] = (int)((int64_t)P->npairs * t / P->nsplit);
    return 0;
}

/* The zero point of row i, group g: int8 per row, int4 per row and group. */
static int zero_of(const struct spruce__pairs *P, int i, int g)
{
    if (P->dtype == SPRUCE_DT_INT8)
        return P->zero ? (int)(int8_t)P->zero[i] : 0;
    return P->zero ? P->zero[(size_t)i * P->ngroups + g] : 8;
}

float spruce__pairs_value(const struct spruce__pairs *P, int p, int b, int l)
{
    const size_t at = ((size_t)p * P->nb + b) * 8 + l;
    const int i = 2 * p + (l >> 1 & 1);
    switch (P->dtype) {
    case SPRUCE_DT_F32: {
        float v;
        memcpy(&v, P->val + 4 * at, 4);
        return v;
    }
    case SPRUCE_DT_BF16: {
        uint16_t h;
        memcpy(&h, P->val + 2 * at, 2);
        return spruce_bf16_to_f32(h);
    }
    case SPRUCE_DT_INT8:
        if (i >= P->rows)
            return 0.0f;
        return ((float)(int8_t)P->val[at] - (float)zero_of(P, i, 0)) * P->scale[i];
    default: {
        const int j = 8 * b + 4 * (l >> 2), g = j / P->groupsize;
        const int u = (P->val[at / 2] >> (4 * (at % 2)) & 15) ^ 8;
        if (i >= P->rows || j >= P->cols)
            return 0.0f;
        return ((float)u - (float)zero_of(P, i, g)) * P->scale[(size_t)i * P->ngroups + g];
    }
    }
}

/* The column of lane l of block b of pair p. */
static int col_of(const struct spruce__pairs *P, int p, int b, int l)
{
    return 8 * b + 4 * (l >> 2) + (P->meta[(size_t)p * P->nb + b] >> (2 * l) & 3);
}

void spruce__pairs_unpack(const struct spruce__pairs *P, float *W)
{
    int p, b, l;
    for (p = 0; p < P->npairs; p++)
        for (b = 0; b < P->nb; b++)
            for (l = 0; l < 8; l++) {
                const int i = 2 * p + (l >> 1 & 1), j = col_of(P, p, b, l);
                if (i < P->rows && j < P->cols)
                    W[(size_t)i * P->cols + j] += spruce__pairs_value(P, p, b, l);
            }
}

size_t spruce__pairs_value_bytes(const struct spruce__pairs *P)
{
    return spruce__value_bytes(P->dtype, (int64_t)P->npairs * P->nb * 8);
}

size_t spruce__pairs_bytes(const struct spruce__pairs *P)
{
    const size_t ns = (size_t)P->rows * P->ngroups;
    return spruce__pairs_value_bytes(P) +
           (size_t)P->npairs * P->nb * sizeof *P->meta + (P->scale ? ns * sizeof(float) : 0) +
           (P->zero ? ns : 0);
}

int64_t spruce__pairs_slots(const struct spruce__pairs *P)
{
    return (int64_t)P->rows * ((P->cols + 3) / 4) * 2;
}

/* The oracle: each row's slots in column order of the blocks, summed one by
 * one in float32, for every column of X. */
void pairs_spmm_scalar(const struct spruce__pairs *P, const float *X, int batch, float *Y, int p0,
                       int p1)
{
    int p, r, c, b, l;
    for (p = p0; p < p1; p++)
        for (r = 0; r < 2 && 2 * p + r < P->rows; r++)
            for (c = 0; c < batch; c++) {
                float s = 0.0f;
                for (b = 0; b < P->nb; b++)
                    for (l = 0; l < 8; l++) {
                        const int j = col_of(P, p, b, l);
                        if ((l >> 1 & 1) == r && j < P->cols)
                            s += spruce__pairs_value(P, p, b, l) * X[(size_t)j * batch + c];
                    }
                Y[(size_t)(2 * p + r) * batch + c] = s;
            }
}

/* [isa][dtype][0: batch 1, 1: batch > 1].  AVX-512 has its own batch-1
 * kernels (16 lanes: two blocks a step, half the instructions a value) and
 * runs the AVX2 kernel at batch > 1; which of the two batch-1 kernels a
 * matrix runs is the linear layer's planner's choice (it times both). */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static spruce__pkernel tables[SPRUCE_ISA_COUNT][4][2];

static void init_tables(void)
{
    int isa, d, b;
    for (isa = 0; isa < SPRUCE_ISA_COUNT; isa++)
        for (d = 0; d < 4; d++)
            for (b = 0; b < 2; b++)
                tables[isa][d][b] = pairs_spmm_scalar;
#ifdef SPRUCE_HAVE_AVX2
    if (spruce_sparse_isa_supported(SPRUCE_ISA_AVX2))
        for (isa = SPRUCE_ISA_AVX2; isa < SPRUCE_ISA_COUNT; isa++) {
            tables[isa][SPRUCE_DT_F32][0] = pairs_spmv_f32_avx2;
            tables[isa][SPRUCE_DT_BF16][0] = pairs_spmv_bf16_avx2;
            tables[isa][SPRUCE_DT_INT8][0] = pairs_spmv_int8_avx2;
            tables[isa][SPRUCE_DT_INT4][0] = pairs_spmv_int4_avx2;
            for (d = 0; d < 4; d++)
                tables[isa][d][1] = pairs_spmm_avx2;
        }
#endif
#ifdef SPRUCE_HAVE_AVX512
    if (spruce_sparse_isa_supported(SPRUCE_ISA_AVX512)) {
        tables[SPRUCE_ISA_AVX512][SPRUCE_DT_F32][0] = pairs_spmv_f32_avx512;
        tables[SPRUCE_ISA_AVX512][SPRUCE_DT_BF16][0] = pairs_spmv_bf16_avx512;
        tables[SPRUCE_ISA_AVX512][SPRUCE_DT_INT8][0] = pairs_spmv_int8_avx512;
        tables[SPRUCE_ISA_AVX512][SPRUCE_DT_INT4][0] = pairs_spmv_int4_avx512;
    }
#endif
}

int spruce__pairs_mul(const struct spruce__pairs *P, int isa, const float *X, int batch, float *Y)
{
    spruce__pkernel k;
    if (!spruce_sparse_isa_supported(isa))
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "sparse product: instruction set %s is not "
                              "supported by this build, CPU or OS", spruce_sparse_isa_name(isa));
    pthread_once(&once, init_tables);
    k = tables[isa][P->dtype][batch > 1];
    if (P->nthreads == 1 || P->nsplit == 1) {
        k(P, X, batch, Y, 0, P->npairs);
    } else {
        int t;
#pragma omp parallel for num_threads(P->nthreads) schedule(dynamic, 1)
        for (t = 0; t < P->nsplit; t++)
            if (P->split[t] < P->split[t + 1])
                k(P, X, batch, Y, P->split[t], P->split[t + 1]);
    }
    return 0;
}
