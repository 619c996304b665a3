/* qsparse_bench.c: batch-1 products of bf16, int8 and int4 bitmask (50%) and
 * 2:4 matrices against the dense kernel of the same value type, the float32
 * bitmask and 2:4 runtime and dense OpenBLAS float32 (sgemv), all timed in the
 * same run, in interleaved rounds.  Each candidate rotates over enough
 * distinct copies of its matrix that together they exceed the last-level
 * cache, so every product streams its weights from memory.
 *
 *   bench/qsparse_bench [--shape RxC]... [--reps N] [--threads T] [--groupsize G] [--json]
 *
 * The dense bf16, int8 and int4 products are spruce_qmatrix_mul (the scalar
 * kernels), each thread taking half the rows. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spruce_clock.h"
#include "spruce_qsparse.h"

#define MAXC 12
#define MAXCOPY 8
#define MIN_BYTES (96u << 20) /* rotate copies up to this many bytes (L3: 32 MB) */

typedef struct {
    char name[32];
    int kind;   /* 0 OpenBLAS f32, 1 f32 sparse, 2 dense qmatrix, 3 qsparse */
    int dtype, format;
    int ncopy;
    void *m[MAXCOPY];
    size_t bytes;
    double best, t[256];
} cand;

static float *rand_matrix(int rows, int cols, uint64_t seed)
{
    float *W = malloc(sizeof *W * (size_t)rows * cols);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    size_t k;
    for (k = 0; k < (size_t)rows * cols; k++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        W[k] = (float)((s >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
    }
    return W;
}

/* mask: 50% at random (nm 0) or 2 of every 4 at random. */
static uint8_t *make_mask(int rows, int cols, int nm, uint64_t seed)
{
    uint8_t *mk = calloc((size_t)rows * cols, 1);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 3;
    size_t k;
    for (k = 0; k < (size_t)rows * cols; k += nm ? 4 : 1) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        if (!nm) {
            mk[k] = (s >> 33) & 1;
        } else { /* one of the 6 pairs of 4 */
            static const int pairs[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
            const int *p = pairs[(s >> 33) % 6];
            if (k + (size_t)p[1] < (size_t)rows * cols) {
                mk[k + p[0]] = 1;
                mk[k + p[1]] = 1;
            }
        }
    }
    return mk;
}

static int nthreads = 2;
static int maxcopy = MAXCOPY; /* --copies: 1 measures the kernels on a matrix in the cache */

/* y = W x with the dense scalar kernels, rows split in halves over threads. */
static void qdense_mul(const spruce_qmatrix *A, const float *x, float *y)
{
    int t;
#pragma omp parallel for num_threads(nthreads) schedule(static, 1)
    for (t = 0; t < nthreads; t++) {
        spruce_qmatrix v = *A;
        const int r0 = (int)((int64_t)A->rows * t / nthreads);
        const int r1 = (int)((int64_t)A->rows * (t + 1) / nthreads);
        v.rows = r1 - r0;
        v.q = A->q + (size_t)r0 * A->ld;
        v.scale = A->scale ? A->scale + (size_t)r0 * A->ngroups : NULL;
        v.zero = A->zero ? A->zero + (size_t)r0 * A->ngroups : NULL;
        if (v.rows > 0)
            spruce_qmatrix_mul(&v, x, y + r0);
    }
}

static int run(const cand *c, int copy, int rows, int cols, const float *x, float *y)
{
    void *m = c->m[copy];
    switch (c->kind) {
    case 0:
        cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1.0f, m, cols, x, 1, 0.0f, y, 1);
        return 0;
    case 1:
        return spruce_sparse_mul(m, x, 1, y);
    case 2:
        qdense_mul(m, x, y);
        return 0;
    default:
        return spruce_qsparse_mul(m, x, 1, y);
    }
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int bench_shape(int rows, int cols, int reps, int gs, int json)
{
    static const int dts[3] = {SPRUCE_DT_BF16, SPRUCE_DT_INT8, SPRUCE_DT_INT4};
    cand *cs = calloc(MAXC, sizeof *cs);
    float *W = rand_matrix(rows, cols, 1), *x = rand_matrix(1, cols, 2);
    float *y = malloc(sizeof *y * rows);
    uint8_t *mk[2] = {make_mask(rows, cols, 0, 3), make_mask(rows, cols, 1, 4)};
    int nc = 0, i, d, f, r, rc = 0;
    /* the candidates, one copy first (for the size) */
    snprintf(cs[nc].name, sizeof cs[nc].name, "f32 dense (OpenBLAS)");
    cs[nc].kind = 0;
    cs[nc].dtype = SPRUCE_DT_F32;
    cs[nc].format = SPRUCE_FMT_DENSE;
    nc++;
    for (f = 0; f < 2; f++, nc++) {
        snprintf(cs[nc].name, sizeof cs[nc].name, "f32 %s", f ? "2:4" : "bitmask 50%");
        cs[nc].kind = 1;
        cs[nc].dtype = SPRUCE_DT_F32;
        cs[nc].format = f ? SPRUCE_FMT_NM : SPRUCE_FMT_BITMASK;
    }
    for (d = 0; d < 3; d++)
        for (f = -1; f < 2; f++, nc++) {
            snprintf(cs[nc].name, sizeof cs[nc].name, "%s %s", spruce_dtype_name(dts[d]),
                     f < 0 ? "dense (scalar)" : f ? "2:4" : "bitmask 50%");
            cs[nc].kind = f < 0 ? 2 : 3;
            cs[nc].dtype = dts[d];
            cs[nc].format = f < 0 ? SPRUCE_FMT_DENSE : f ? SPRUCE_FMT_NM : SPRUCE_FMT_BITMASK;
        }
    for (i = 0; i < nc; i++) {
        cand *c = &cs[i];
        const int f = c->format == SPRUCE_FMT_NM;
        const spruce_pack_opts po = {c->format, 2, 4, nthreads, SPRUCE_LAYOUT_BITS};
        int k;
        for (k = 0; k < maxcopy; k++) {
            /* each copy from its own weights, so no two share cache lines */
            float *Wk = k ? rand_matrix(rows, cols, 10 + k) : W;
            if (c->kind == 0) {
                c->m[k] = Wk == W ? memcpy(malloc(sizeof *W * (size_t)rows * cols), W,
                                           sizeof *W * (size_t)rows * cols)
                                  : Wk;
                Wk = NULL;
                c->bytes = sizeof(float) * (size_t)rows * cols;
            } else if (c->kind == 1) {
                rc = spruce_sparse_pack(Wk, mk[f], rows, cols, &po, (spruce_sparse **)&c->m[k]);
                c->bytes = spruce_sparse_bytes(c->m[k]);
            } else if (c->kind == 2) {
                rc = spruce_qmatrix_quantize(Wk, rows, cols, c->dtype, gs, 0,
                                             (spruce_qmatrix **)&c->m[k]);
                c->bytes = spruce_qmatrix_bytes(c->m[k]);
            } else {
                rc = spruce_qsparse_quantize(Wk, mk[f], rows, cols, c->dtype, gs, 0, &po,
                                             (spruce_qsparse **)&c->m[k]);
                c->bytes = spruce_qsparse_bytes(c->m[k]);
            }
            if (Wk != W)
                free(Wk);
            if (rc < 0) {
                fprintf(stderr, "qsparse_bench: %s (%d, %d): %s\n", c->name, rows, cols,
                        spruce_errdetail());
                return rc;
            }
            c->ncopy = k + 1;
            if (c->bytes * c->ncopy >= MIN_BYTES)
                break;
        }
    }
    /* rounds: every candidate once, on its next copy, after one warm-up round */
    for (r = -1; r < reps; r++)
        for (i = 0; i < nc; i++) {
            cand *c = &cs[i];
            const double t0 = spruce_clock_now();
            if ((rc = run(c, (r + 1) % c->ncopy, rows, cols, x, y)) < 0) {
                fprintf(stderr, "qsparse_bench: %s: %s\n", c->name, spruce_errdetail());
                return rc;
            }
            if (r >= 0)
                c->t[r] = spruce_clock_now() - t0;
        }
    if (!json)
        printf("\n%d x %d, batch 1, %d threads, %s kernels, %d rounds (min / median ms)\n", rows,
               cols, nthreads, spruce_sparse_isa_name(spruce_sparse_isa()), reps);
    for (i = 0; i < nc; i++) {
        cand *c = &cs[i];
        const cand *dense = c->kind == 3 ? &cs[3 + 3 * (c->dtype - 1)] : c->kind == 1 ? &cs[0] : c;
        double med;
        qsort(c->t, (size_t)reps, sizeof *c->t, cmp_double);
        c->best = c->t[0];
        med = c->t[reps / 2];
        (void)dense;
        if (json)
            printf("{\"rows\": %d, \"cols\": %d, \"dtype\": \"%s\", \"format\": \"%s\", "
                   "\"kernel\": \"%s\", \"min_ms\": %.4f, \"median_ms\": %.4f, \"bytes\": %zu, "
                   "\"gbps\": %.2f, \"dense_ms\": %.4f, \"dense_f32_ms\": %.4f, \"copies\": %d}\n",
                   rows, cols, spruce_dtype_name(c->dtype), spruce_format_name(c->format), c->name,
                   1e3 * c->best, 1e3 * med, c->bytes, c->bytes / c->best / 1e9,
                   1e3 * dense->best, 1e3 * cs[0].best, c->ncopy);
        else
            printf("  %-22s %8.3f / %8.3f ms  %7.1f MB  %6.1f GB/s  %5.2fx dense same type  "
                   "%5.2fx OpenBLAS f32\n",
                   c->name, 1e3 * c->best, 1e3 * med, c->bytes / 1e6, c->bytes / c->best / 1e9,
                   dense->best / c->best, cs[0].best / c->best);
    }
    for (i = 0; i < nc; i++) {
        int k;
        for (k = 0; k < cs[i].ncopy; k++) {
            if (cs[i].kind == 0)
                free(cs[i].m[k]);
            else if (cs[i].kind == 1)
                spruce_sparse_free(cs[i].m[k]);
            else if (cs[i].kind == 2)
                spruce_qmatrix_free(cs[i].m[k]);
            else
                spruce_qsparse_free(cs[i].m[k]);
        }
    }
    free(cs);
    free(W);
    free(x);
    free(y);
    free(mk[0]);
    free(mk[1]);
    return 0;
}

static void usage(FILE *to)
{
    fprintf(to, "usage: qsparse_bench [--shape RxC]... [--reps N] [--threads T] [--groupsize G] "
                "[--copies K] [--json]\n"
                "Times batch-1 products of bf16, int8 and int4 bitmask (50%%) and 2:4 matrices\n"
                "against the dense kernel of the same value type, the float32 bitmask and 2:4\n"
                "runtime and OpenBLAS sgemv, in one run.  Defaults: --shape 11008x4096 --shape\n"
                "4096x11008 --reps 30 --threads 2 --groupsize 128 --copies 8 (each matrix\n"
                "rotates over up to K copies of 96 MB in all; --copies 1 keeps a small one in\n"
                "the cache, to measure the kernels' own speed).\n");
}

int main(int argc, char **argv)
{
    int shapes[8][2], ns = 0, reps = 30, gs = 128, json = 0, a, s;
    for (a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[a], "--shape") && a + 1 < argc && ns < 8 &&
                   sscanf(argv[a + 1], "%dx%d", &shapes[ns][0], &shapes[ns][1]) == 2 &&
                   shapes[ns][0] > 0 && shapes[ns][1] > 0) {
            ns++;
            a++;
        } else if (!strcmp(argv[a], "--reps") && a + 1 < argc && (reps = atoi(argv[++a])) > 0 &&
                   reps <= 256) {
        } else if (!strcmp(argv[a], "--threads") && a + 1 < argc &&
                   (nthreads = atoi(argv[++a])) > 0) {
        } else if (!strcmp(argv[a], "--groupsize") && a + 1 < argc && (gs = atoi(argv[++a])) > 0) {
        } else if (!strcmp(argv[a], "--copies") && a + 1 < argc &&
                   (maxcopy = atoi(argv[++a])) > 0 && maxcopy <= MAXCOPY) {
        } else if (!strcmp(argv[a], "--json")) {
            json = 1;
        } else {
            fprintf(stderr, "qsparse_bench: bad or incomplete option '%s'\n", argv[a]);
            usage(stderr);
            return 2;
        }
    }
    if (!ns) {
        shapes[0][0] = 11008, shapes[0][1] = 4096;
        shapes[1][0] = 4096, shapes[1][1] = 11008;
        ns = 2;
    }
    if (spruce_sparse_isa() < 0) {
        fprintf(stderr, "qsparse_bench: %s\n", spruce_errdetail());
        return 1;
    }
    for (s = 0; s < ns; s++)
        if (bench_shape(shapes[s][0], shapes[s][1], reps, gs, json) < 0)
            return 1;
    return 0;
}
