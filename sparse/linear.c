/* linear.c: a linear layer Y = W X that runs in whichever representation was
 * fastest for its batch size when it was created: dense OpenBLAS (sgemv for
 * batch 1, sgemm otherwise), compressed rows, bitmask or N:M; with bf16, int8
 * or int4 values, the dense kernel of that type (spruce_qmatrix.h), bitmask
 * or N:M (spruce_qsparse.h).
 * W is (rows, cols), X is (cols, batch), Y is (rows, batch), all row-major. */
#include "config.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <emmintrin.h>
#endif

#include "qsparse_internal.h"
#include "pairs_internal.h"
#include "sparse_internal.h"
#include "spruce_clock.h"
#include "spruce_qmatrix.h"
#include "spruce_qsparse.h"

struct spruce_linear {
    int rows, cols;
    int dtype;                              /* SPRUCE_DT_*: the values' type */
    int nthreads;                           /* the typed dense kernel's (0: all) */
    int nbatches;
    int batches[SPRUCE_LINEAR_MAX_BATCHES]; /* ascending */
    int choice[SPRUCE_LINEAR_MAX_BATCHES];  /* SPRUCE_FMT_* per tuned batch */
    float *dense;                           /* (rows, cols) when some choice is dense */
    spruce_sparse *sp[4];                   /* by format, when chosen */
    spruce_qmatrix *qd;                     /* typed values: dense, when chosen */
    spruce_qsparse *qs[4];                  /* typed values: bitmask, N:M, when chosen */
    /* The planner's choice for each sparse format (float32 or typed): the
     * kernel variant (instruction set) it runs, how it was chosen, and each
     * variant's time (seconds, batch lin->batches[0]; 0: not timed). */
    int qisa[4];
    const char *qwhy[4];
    double qtime[4][SPRUCE_ISA_COUNT];
    /* N:M's layout (SPRUCE_LAYOUT_*), why, and each layout's time (seconds,
     * batch lin->batches[0], its fastest variant; 0: not timed). */
    int layout;
    const char *lwhy;
    double ltime[2];
    /* Per tuned batch: the sparse format that timed within 3% of the choice
     * in both timings and lost to its fewer bytes, or -1. */
    int ftie[SPRUCE_LINEAR_MAX_BATCHES];
    /* Per tuned batch: the format the times alone chose when a tie with dense
     * (spruce__linear_edge) went to the fewer bytes instead, or -1. */
    int dtie[SPRUCE_LINEAR_MAX_BATCHES];
    /* Per tuned batch: each candidate's time as the choice saw it (seconds;
     * 0: not timed). */
    double ctime[SPRUCE_LINEAR_MAX_BATCHES][4];
    /* The fraction of weights kept when it left no sparse candidate (auto
     * with more than dense_keep_limit() kept), else 0. */
    double dense_keep;
    /* The fraction kept when compressed rows were left out (csr_loses()), else 0. */
    double csr_keep;
};

/* Sparse formats are not packed (nor timed) for a matrix that keeps more than
 * this fraction of its weights, by value type: at batch 1 the fewest bytes a
 * sparse format streams are the bitmask's, kept values plus a bit a weight,
 * and past this fraction they are more than 97% of dense's, so no format can
 * be the 3% faster the choice asks; and past 70% a sparse product does at
 * least 70% of dense's multiply-adds, never the 30% faster asked at larger
 * batches.  A dense checkpoint then loads without packing and timing sparse
 * copies of every layer (int4: without the tenth or so of levels that are 0). */
static double dense_keep_limit(int dtype)
{
    const double vb = dtype == SPRUCE_DT_F32    ? 4.0
                      : dtype == SPRUCE_DT_BF16 ? 2.0
                      : dtype == SPRUCE_DT_INT8 ? 1.0
                                                : 0.5; /* bytes a value */
    const double bytes = 0.97 - 1.0 / (8.0 * vb);
    return bytes > 0.7 ? bytes : 0.7;
}

/* Whether compressed rows are left out of auto's candidates: when every
 * tuned batch size is 1 and they would stream at least dense's bytes (a
 * value and a 16- or 32-bit column a kept weight against a value a weight:
 * kept at least float32 2/3, bf16 1/2, int8 1/3, int4 1/5 with 16-bit
 * columns).  At batch 1 a product streams its bytes, and a compressed row
 * also costs more instructions a value than dense a weight, so it cannot
 * win; timing it was 7% of the samples of a 2:4 + int8 model's load. */
static int csr_loses(const spruce_linear *lin, int dtype, double keep)
{
    const double vb = dtype == SPRUCE_DT_F32    ? 4.0
                      : dtype == SPRUCE_DT_BF16 ? 2.0
                      : dtype == SPRUCE_DT_INT8 ? 1.0
                                                : 0.5;
    const double ib = lin->cols <= 65536 ? 2.0 : 4.0;
    return lin->batches[lin->nbatches - 1] == 1 && keep * (vb + ib) >= vb;
}

/* The fraction of non-zero weights of W (-0.0 counts as zero), or of mask. */
static double kept_fraction(const float *W, const uint8_t *mask, int rows, int cols)
{
    const int64_t n = (int64_t)rows * cols;
    int64_t k, c = 0;
#pragma omp parallel for schedule(static) reduction(+ : c)
    for (k = 0; k < n; k++)
        c += mask ? mask[k] != 0 : W[k] != 0.0f;
    return (double)c / (double)n;
}

void spruce_linear_opts_init(spruce_linear_opts *o)
{
    memset(o, 0, sizeof *o);
    o->format = -1;
    o->nbatches = 2;
    o->batches[0] = 1;
    o->batches[1] = 16;
    o->reps = 7;
    o->dtype = SPRUCE_DT_F32;
    o->groupsize = 128;
}

void spruce_linear_free(spruce_linear *lin)
{
    int f;
    if (!lin)
        return;
    free(lin->dense);
    spruce_qmatrix_free(lin->qd);
    for (f = 0; f < 4; f++) {
        spruce_sparse_free(lin->sp[f]);
        spruce_qsparse_free(lin->qs[f]);
    }
    free(lin);
}

static void dense_mul(int rows, int cols, const float *W, const float *X, int batch, float *Y)
{
    if (batch == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1.0f, W, cols, X, 1, 0.0f, Y, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, batch, cols, 1.0f, W, cols,
                    X, batch, 0.0f, Y, batch);
}

/* Whether candidate f exists. */
static int has(const spruce_linear *lin, int f)
{
    if (lin->dtype != SPRUCE_DT_F32)
        return f == SPRUCE_FMT_DENSE ? lin->qd != NULL : lin->qs[f] != NULL;
    return f == SPRUCE_FMT_DENSE ? lin->dense != NULL : lin->sp[f] != NULL;
}

/* Bytes candidate f streams in a product. */
static size_t cand_bytes(const spruce_linear *lin, int f)
{
    if (lin->dtype != SPRUCE_DT_F32)
        return f == SPRUCE_FMT_DENSE ? spruce_qmatrix_bytes(lin->qd)
                                     : spruce_qsparse_bytes(lin->qs[f]);
    return f == SPRUCE_FMT_DENSE ? sizeof(float) * (size_t)lin->rows * lin->cols
                                 : spruce_sparse_bytes(lin->sp[f]);
}

static int run(const spruce_linear *lin, int format, const float *X, int batch, float *Y)
{
    if (lin->dtype != SPRUCE_DT_F32) {
        if (format == SPRUCE_FMT_DENSE)
            return spruce_qmatrix_product(lin->qd, X, batch, Y, lin->nthreads);
        return spruce_qsparse_mul_isa(lin->qs[format], lin->qisa[format], X, batch, Y);
    }
    if (format == SPRUCE_FMT_DENSE) {
        dense_mul(lin->rows, lin->cols, lin->dense, X, batch, Y);
        return 0;
    }
    return spruce_sparse_mul_isa(lin->sp[format], lin->qisa[format], X, batch, Y);
}

/* Evict a candidate's data from every cache level, so that its timed run
 * streams from memory as it does in a model, whose weights together are far
 * larger than the last-level cache.  Without it the timing runs on one matrix
 * that stays in the cache, which flatters whichever candidate profits most
 * from the cache and makes choices that lose once the weights stream. */
static void flush_range(const void *p, size_t bytes)
{
#if defined(__x86_64__) || defined(__i386__)
    const char *c = p;
    size_t i;
    if (!p)
        return;
    for (i = 0; i < bytes; i += 64)
        _mm_clflush(c + i);
    _mm_mfence();
#else
    (void)p;
    (void)bytes;
#endif
}

static void flush_pairs(const struct spruce__pairs *P)
{
    if (!P)
        return;
    flush_range(P->val, spruce__pairs_value_bytes(P));
    flush_range(P->meta, sizeof *P->meta * (size_t)P->npairs * P->nb);
    flush_range(P->scale, P->scale ? sizeof(float) * (size_t)P->rows * P->ngroups : 0);
    flush_range(P->zero, P->zero ? (size_t)P->rows * P->ngroups : 0);
}

static void flush_sparse(const struct spruce_sparse *A)
{
    int b;
    flush_pairs(A->pairs);
    for (b = 0; b < A->nblk; b++) /* column blocks hold the data */
        flush_sparse(A->blk[b]);
    flush_range(A->val, A->val ? sizeof(float) * (size_t)A->nnz : 0);
    flush_range(A->rowptr, sizeof(int64_t) * ((size_t)A->rows + 1));
    flush_range(A->idx16, A->idx16 ? sizeof(uint16_t) * (size_t)A->nnz : 0);
    flush_range(A->idx32, A->idx32 ? sizeof(uint32_t) * (size_t)A->nnz : 0);
    flush_range(A->woff, A->woff ? sizeof(uint32_t) * (size_t)A->rows * (A->nwin + 1) : 0);
    flush_range(A->bits, A->bits ? sizeof(uint64_t) * (size_t)A->rows * A->wpr : 0);
}

static void flush_qsparse(const struct spruce_qsparse *A)
{
    const size_t ns = (size_t)A->rows * A->ngroups;
    int b;
    flush_pairs(A->pairs);
    for (b = 0; b < A->nblk; b++)
        flush_qsparse(A->blk[b]);
    flush_range(A->rowptr, A->rowptr ? sizeof(int64_t) * ((size_t)A->rows + 1) : 0);
    flush_range(A->val, A->val ? spruce__value_bytes(A->dtype, A->rowptr[A->rows]) : 0);
    flush_range(A->bits, A->bits ? sizeof(uint64_t) * (size_t)A->rows * A->wpr : 0);
    flush_range(A->scale, A->scale ? sizeof(float) * ns : 0);
    flush_range(A->zero, A->zero ? ns : 0);
    /* compressed rows: the columns and the rows' counts too, or they time warm */
    flush_range(A->col16, A->col16 ? sizeof(uint16_t) * (size_t)A->nnz : 0);
    flush_range(A->col32, A->col32 ? sizeof(uint32_t) * (size_t)A->nnz : 0);
    flush_range(A->rowcnt, A->rowcnt ? sizeof(int64_t) * (size_t)A->rows : 0);
}

static void flush_candidate(const spruce_linear *lin, int format)
{
    if (lin->dtype != SPRUCE_DT_F32) {
        const spruce_qmatrix *Q = lin->qd;
        if (format != SPRUCE_FMT_DENSE) {
            flush_qsparse(lin->qs[format]);
            return;
        }
        flush_range(Q->q, Q->ld * (size_t)Q->rows);
        flush_range(Q->scale, Q->scale ? sizeof(float) * (size_t)Q->rows * Q->ngroups : 0);
        flush_range(Q->zero, Q->zero ? (size_t)Q->rows * Q->ngroups : 0);
        return;
    }
    if (format == SPRUCE_FMT_DENSE)
        flush_range(lin->dense, sizeof(float) * (size_t)lin->rows * lin->cols);
    else
        flush_sparse(lin->sp[format]);
}

/* The options with their defaults filled in, checked. */
static int resolve_opts(const spruce_linear_opts *opts, spruce_linear_opts *o)
{
    int rc;
    if (opts)
        *o = *opts;
    else
        spruce_linear_opts_init(o);
    if (o->nbatches <= 0) {
        o->nbatches = 2;
        o->batches[0] = 1;
        o->batches[1] = 16;
    }
    if (o->nbatches > SPRUCE_LINEAR_MAX_BATCHES)
        return spruce__seterr(SPRUCE_EINVAL, "linear layer: %d batch sizes, at most %d",
                              o->nbatches, SPRUCE_LINEAR_MAX_BATCHES);
    if (o->reps <= 0)
        o->reps = 7;
    if (o->format > SPRUCE_FMT_NM)
        return spruce__seterr(SPRUCE_EINVAL, "linear layer: unknown format %d", o->format);
    if (o->dtype < SPRUCE_DT_F32 || o->dtype > SPRUCE_DT_INT4)
        return spruce__seterr(SPRUCE_EINVAL, "linear layer: unknown value type %d", o->dtype);
    if (o->groupsize <= 0)
        o->groupsize = 128;
    if (o->n == 0 && o->m == 0) {
        o->n = SPRUCE_LINEAR_DEFAULT_N;
        o->m = SPRUCE_LINEAR_DEFAULT_M;
    }
    if ((rc = spruce_sparse_isa()) < 0)
        return rc;
    return 0;
}

/* lin->batches: the tuned batch sizes of o, ascending. */
static int sort_batches(spruce_linear *lin, const spruce_linear_opts *o)
{
    int b, i;
    lin->nbatches = o->nbatches;
    for (b = 0; b < o->nbatches; b++) {
        const int v = o->batches[b];
        if (v < 1)
            return spruce__seterr(SPRUCE_EINVAL, "linear layer: batch size %d", v);
        for (i = b; i > 0 && lin->batches[i - 1] > v; i--) /* insertion sort */
            lin->batches[i] = lin->batches[i - 1];
        lin->batches[i] = v;
    }
    return 0;
}

/* ---- the planner: kernel variants of the typed sparse formats ------------
 * Which kernel of a sparse format is fastest differs between processors (on
 * Zen 4 the AVX-512 expand instructions lose to AVX2's table permutes for
 * int8 2:4 and win for bf16, and its 16-lane gathers make float32 compressed
 * rows slower than AVX2's: BENCHMARKS.md), so each variant
 * the machine can run (every SIMD instruction set up to the one chosen,
 * SPRUCE_ISA) is timed on the matrix itself when it is packed, and the
 * fastest kept.  Two within 3% are timed again with more runs; still within
 * 3%, the higher instruction set (the default) is kept: the variants hold the
 * same bytes.  SPRUCE_VARIANT=scalar|avx2|avx512 forces one. */
static int forced_variant(void)
{
    const char *e = getenv("SPRUCE_VARIANT");
    int i;
    if (!e || !*e)
        return -1;
    for (i = 0; i < SPRUCE_ISA_COUNT; i++)
        if (!strcmp(e, spruce_sparse_isa_name(i)))
            return spruce_sparse_isa_supported(i) ? i : -2;
    return -3;
}

/* Variant isa of sparse format f. */
static int mul_variant(const spruce_linear *lin, int f, int isa, const float *X, int bs, float *Y)
{
    if (lin->dtype == SPRUCE_DT_F32)
        return spruce_sparse_mul_isa(lin->sp[f], isa, X, bs, Y);
    return spruce_qsparse_mul_isa(lin->qs[f], isa, X, bs, Y);
}

/* The fastest of reps cold runs of variant isa of sparse format f at batch bs. */
static double time_variant(const spruce_linear *lin, int f, int isa, const float *X, int bs,
                           float *Y, int reps, int *rc)
{
    double best = 1e300, t0;
    int r;
    for (r = -1; r < reps; r++) {
        if ((*rc = mul_variant(lin, f, isa, X, bs, Y)) < 0)
            return best;
        flush_candidate(lin, f);
        t0 = spruce_clock_now();
        if ((*rc = mul_variant(lin, f, isa, X, bs, Y)) < 0)
            return best;
        t0 = spruce_clock_now() - t0;
        if (r >= 0 && t0 < best)
            best = t0;
    }
    return best;
}

/* The planners' input X (cols, bs), fixed values, and output Y (rows, bs). */
static int timing_buffers(const spruce_linear *lin, int bs, float **X, float **Y)
{
    int i;
    *X = malloc(sizeof **X * (size_t)lin->cols * bs);
    *Y = malloc(sizeof **Y * (size_t)lin->rows * bs);
    if (!*X || !*Y)
        return spruce__seterr(SPRUCE_ENOMEM, "linear layer: (%d, %d) matrix", lin->rows,
                              lin->cols);
    for (i = 0; i < lin->cols * bs; i++)
        (*X)[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    return 0;
}

static int plan_variant(spruce_linear *lin, int f, const spruce_linear_opts *o)
{
    const int forced = forced_variant(), top = spruce_sparse_isa(), bs = lin->batches[0];
    float *X = NULL, *Y = NULL;
    int rc = 0, isa, best = -1, second = -1;
    if (forced <= -2)
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "SPRUCE_VARIANT=%s: %s (expected scalar, "
                              "avx2 or avx512, one this build, CPU and OS support)",
                              getenv("SPRUCE_VARIANT"), forced == -2 ? "not supported here"
                              : "unknown variant");
    if (top < 0)
        return top;
    lin->qisa[f] = forced >= 0 ? forced : top;
    lin->qwhy[f] = forced >= 0 ? "forced by SPRUCE_VARIANT" : "the only variant";
    if (forced >= 0 || top <= SPRUCE_ISA_AVX2 || getenv("SPRUCE_ISA"))
        return 0; /* one variant (SPRUCE_ISA forces the instruction set: that one) */
    if ((rc = timing_buffers(lin, bs, &X, &Y)) < 0)
        goto done;
    for (isa = SPRUCE_ISA_AVX2; isa <= top; isa++) {
        if (!spruce_sparse_isa_supported(isa))
            continue;
        lin->qtime[f][isa] = time_variant(lin, f, isa, X, bs, Y, o->reps, &rc);
        if (rc < 0)
            goto done;
        if (best < 0 || lin->qtime[f][isa] < lin->qtime[f][best])
            second = best, best = isa;
        else if (second < 0 || lin->qtime[f][isa] < lin->qtime[f][second])
            second = isa;
    }
    lin->qwhy[f] = "fastest when timed";
    if (second >= 0 && lin->qtime[f][second] < 1.03 * lin->qtime[f][best]) {
        /* within noise: again, with three times the runs */
        lin->qtime[f][best] = time_variant(lin, f, best, X, bs, Y, 3 * o->reps, &rc);
        if (rc >= 0)
            lin->qtime[f][second] = time_variant(lin, f, second, X, bs, Y, 3 * o->reps, &rc);
        if (rc < 0)
            goto done;
        if (lin->qtime[f][second] < lin->qtime[f][best]) {
            int t = best;
            best = second, second = t;
        }
        lin->qwhy[f] = "fastest when timed twice";
        if (lin->qtime[f][second] < 1.03 * lin->qtime[f][best]) {
            best = best > second ? best : second; /* the same bytes: the default */
            lin->qwhy[f] = "within 3% twice: the default";
        }
    }
    lin->qisa[f] = best;
done:
    free(X);
    free(Y);
    return rc;
}

/* ---- the planner: N:M's layout ---------------------------------------------
 * 2:4 and 1:4 fit the pair layout too (spruce_sparse.h): its kernels gather x
 * with one in-lane permute per 8 values, where the bit layout's expand a
 * slice of 8 columns by a table (AVX2) or an expand instruction (AVX-512).
 * Which is faster depends on the CPU and the value type, so the pair layout
 * is packed from the same weights and timed against the bit layout's fastest
 * variant; the faster is kept and the other freed (one matrix's worth more
 * memory while the two are timed).  Within 3%, timed again with three times
 * the runs; still within 3%, the one with fewer bytes (the pairs on a tie of
 * bytes: their kernels need no tables).  SPRUCE_LAYOUT=bits|pairs forces one. */
static int forced_layout(void)
{
    const char *e = getenv("SPRUCE_LAYOUT");
    if (!e || !*e)
        return -1;
    if (!strcmp(e, "bits"))
        return SPRUCE_LAYOUT_BITS;
    if (!strcmp(e, "pairs"))
        return SPRUCE_LAYOUT_PAIRS;
    return -2;
}

/* Time the bit layout already in lin (format NM, its variant chosen) against
 * the pair layout packed from W (float32) or Q (typed) with the same mask
 * rule, at the pair layout's own fastest variant (plan_variant on it); keep
 * the faster in lin, with its variant and that variant's timings. */
static int plan_layout(spruce_linear *lin, const float *W, const spruce_qmatrix *Q,
                       const uint8_t *qmask, const spruce_linear_opts *o)
{
    const int f = SPRUCE_FMT_NM, forced = forced_layout(), bs = lin->batches[0];
    const int n = o->n, m = o->m;
    const spruce_pack_opts po = {f, n, m, o->nthreads, SPRUCE_LAYOUT_PAIRS};
    spruce_sparse *sp = NULL;
    spruce_qsparse *qs = NULL;
    float *X = NULL, *Y = NULL;
    int rc = 0, isa, keep_pairs;
    size_t bytes_bits, bytes_pairs;
    double t0[SPRUCE_ISA_COUNT], pt[SPRUCE_ISA_COUNT];
    const char *pwhy;
    if (forced == -2)
        return spruce__seterr(SPRUCE_EUNSUPPORTED, "SPRUCE_LAYOUT=%s: expected bits or pairs",
                              getenv("SPRUCE_LAYOUT"));
    lin->layout = SPRUCE_LAYOUT_BITS;
    lin->lwhy = m == 4 && n <= 2 ? "the only layout" : "the only layout for this N:M";
    if (m != 4 || n > 2 || forced == SPRUCE_LAYOUT_BITS) {
        if (forced == SPRUCE_LAYOUT_BITS)
            lin->lwhy = "forced by SPRUCE_LAYOUT";
        return 0;
    }
    rc = lin->dtype == SPRUCE_DT_F32 ? spruce_sparse_pack(W, NULL, lin->rows, lin->cols, &po, &sp)
                                     : spruce_qsparse_pack(Q, qmask, &po, &qs);
    if (rc == SPRUCE_EUNSUPPORTED) { /* values the pair layout cannot hold: bits, as before */
        spruce_errclear();
        return 0;
    }
    if (rc < 0)
        return rc;
    {
        /* the pair layout's own variant (its kernels differ from the bit
         * layout's: which instruction set is faster is timed for each) */
        spruce_sparse *sp0 = lin->sp[f];
        spruce_qsparse *qs0 = lin->qs[f];
        const int isa0 = lin->qisa[f];
        const char *why0 = lin->qwhy[f];
        memcpy(t0, lin->qtime[f], sizeof t0);
        memset(lin->qtime[f], 0, sizeof lin->qtime[f]);
        lin->sp[f] = sp, lin->qs[f] = qs;
        rc = plan_variant(lin, f, o);
        lin->sp[f] = sp0, lin->qs[f] = qs0;
        isa = lin->qisa[f], pwhy = lin->qwhy[f];
        memcpy(pt, lin->qtime[f], sizeof pt);
        lin->qisa[f] = isa0, lin->qwhy[f] = why0;
        memcpy(lin->qtime[f], t0, sizeof t0);
        if (rc < 0)
            goto done;
    }
    if (forced == SPRUCE_LAYOUT_PAIRS) {
        lin->lwhy = "forced by SPRUCE_LAYOUT";
        keep_pairs = 1;
        goto swap;
    }
    if ((rc = timing_buffers(lin, bs, &X, &Y)) < 0)
        goto done;
    {
        spruce_sparse *sp0 = lin->sp[f];
        spruce_qsparse *qs0 = lin->qs[f];
        const int isa0 = lin->qisa[f];
        int r;
        bytes_bits = cand_bytes(lin, f);
        for (r = 0; r < 2; r++) { /* a second round when within 3% */
            const int reps = r ? 3 * o->reps : o->reps;
            lin->ltime[0] = time_variant(lin, f, isa0, X, bs, Y, reps, &rc);
            if (rc < 0)
                goto done;
            lin->sp[f] = sp, lin->qs[f] = qs;
            lin->ltime[1] = time_variant(lin, f, isa, X, bs, Y, reps, &rc);
            bytes_pairs = cand_bytes(lin, f);
            lin->sp[f] = sp0, lin->qs[f] = qs0;
            if (rc < 0)
                goto done;
            if (lin->ltime[1] > 1.03 * lin->ltime[0] || lin->ltime[0] > 1.03 * lin->ltime[1])
                break;
        }
        keep_pairs = lin->ltime[1] < lin->ltime[0];
        lin->lwhy = r ? "faster when timed twice" : "faster when timed";
        if (r == 2) {
            keep_pairs = bytes_pairs <= bytes_bits;
            lin->lwhy = "within 3% twice: fewer bytes";
        }
    }
swap:
    if (keep_pairs) {
        spruce_sparse_free(lin->sp[f]);
        spruce_qsparse_free(lin->qs[f]);
        lin->sp[f] = sp, lin->qs[f] = qs;
        sp = NULL, qs = NULL;
        lin->layout = SPRUCE_LAYOUT_PAIRS;
        lin->qisa[f] = isa; /* and the variant timings of the layout kept */
        lin->qwhy[f] = pwhy;
        memcpy(lin->qtime[f], pt, sizeof pt);
    }
done:
    spruce_sparse_free(sp);
    spruce_qsparse_free(qs);
    free(X);
    free(Y);
    return rc;
}

/* Typed candidates from Q (taken: freed here when dense is no candidate):
 * the dense kernel of its type, and compressed rows, bitmask and N:M of the
 * same values (the weights that dequantize to non-zero, found once). */
static int make_typed(spruce_linear *lin, spruce_qmatrix *Q, const spruce_linear_opts *o)
{
    uint8_t *mask = NULL;
    int f, rc = 0, sparse = o->format != SPRUCE_FMT_DENSE;
    if (sparse) {
        double keep;
        if (!(mask = malloc((size_t)Q->rows * Q->cols))) {
            spruce_qmatrix_free(Q);
            return spruce__seterr(SPRUCE_ENOMEM, "linear layer: (%d, %d) mask", Q->rows,
                                  Q->cols);
        }
        spruce__qmatrix_kept(Q, mask);
        if (o->format < 0) {
            keep = kept_fraction(NULL, mask, Q->rows, Q->cols);
            if (keep > dense_keep_limit(Q->dtype)) {
                lin->dense_keep = keep;
                sparse = 0;
            } else if (csr_loses(lin, Q->dtype, keep)) {
                lin->csr_keep = keep;
            }
        }
    }
    for (f = SPRUCE_FMT_CSR; f <= SPRUCE_FMT_NM && !rc && sparse; f++) {
        spruce_pack_opts po = {f, o->n, o->m, o->nthreads, SPRUCE_LAYOUT_BITS};
        if ((o->format >= 0 && o->format != f) || (f == SPRUCE_FMT_CSR && lin->csr_keep > 0))
            continue;
        rc = spruce_qsparse_pack(Q, mask, &po, &lin->qs[f]);
        if (rc == SPRUCE_EPATTERN && o->format < 0) { /* not N:M: not a candidate */
            spruce_errclear();
            rc = 0;
        } else if (rc >= 0 && (rc = plan_variant(lin, f, o)) >= 0 && f == SPRUCE_FMT_NM) {
            rc = plan_layout(lin, NULL, Q, mask, o);
        }
    }
    free(mask);
    if (o->format < 0 || o->format == SPRUCE_FMT_DENSE)
        lin->qd = Q;
    else
        spruce_qmatrix_free(Q);
    return rc;
}

/* Candidates: dense (a copy of W), and every sparse format the matrix allows
 * (only the forced one when o->format names one); with another value type,
 * W quantized to it first (bf16: rounded to nearest even, exact for weights
 * read from a bf16 checkpoint). */
static int make_candidates(spruce_linear *lin, const float *W, const spruce_linear_opts *o)
{
    if (o->dtype != SPRUCE_DT_F32) {
        spruce_qmatrix *Q = NULL;
        int rc = spruce_qmatrix_quantize(W, lin->rows, lin->cols, o->dtype, o->groupsize,
                                         o->asym, &Q);
        return rc < 0 ? rc : make_typed(lin, Q, o);
    }
    const size_t count = (size_t)lin->rows * lin->cols;
    int f, rc;
    if (o->format < 0 || o->format == SPRUCE_FMT_DENSE) {
        if (!(lin->dense = malloc(sizeof *lin->dense * count)))
            return spruce__seterr(SPRUCE_ENOMEM, "linear layer: (%d, %d) matrix", lin->rows,
                                  lin->cols);
        memcpy(lin->dense, W, sizeof *lin->dense * count);
    }
    if (o->format < 0) {
        const double keep = kept_fraction(W, NULL, lin->rows, lin->cols);
        if (keep > dense_keep_limit(SPRUCE_DT_F32)) {
            lin->dense_keep = keep;
            return 0;
        }
        if (csr_loses(lin, SPRUCE_DT_F32, keep))
            lin->csr_keep = keep;
    }
    for (f = SPRUCE_FMT_CSR; f <= SPRUCE_FMT_NM; f++) {
        spruce_pack_opts po = {f, o->n, o->m, o->nthreads, SPRUCE_LAYOUT_BITS};
        if ((o->format >= 0 && o->format != f) || (f == SPRUCE_FMT_CSR && lin->csr_keep > 0))
            continue;
        rc = spruce_sparse_pack(W, NULL, lin->rows, lin->cols, &po, &lin->sp[f]);
        if (rc == SPRUCE_EPATTERN && o->format < 0) { /* not N:M: not a candidate */
            spruce_errclear();
            continue;
        }
        if (rc < 0 || (rc = plan_variant(lin, f, o)) < 0 ||
            (f == SPRUCE_FMT_NM && (rc = plan_layout(lin, W, NULL, NULL, o)) < 0))
            return rc;
    }
    return 0;
}

/* times[b][f]: the fastest of reps timed products of candidate f at batch
 * size lin->batches[b] (1e300 for formats that are not candidates).  Rounds
 * of one timed run of every candidate (after a warm-up round), so that all of
 * them see the same machine when others use it too; each keeps its fastest
 * run: other programs only ever add time. */
static int time_candidates(const spruce_linear *lin, int reps,
                           double times[SPRUCE_LINEAR_MAX_BATCHES][4],
                           const int only[SPRUCE_LINEAR_MAX_BATCHES][4])
{
    const int maxb = lin->batches[lin->nbatches - 1];
    float *X = malloc(sizeof *X * (size_t)lin->cols * maxb);
    float *Y = malloc(sizeof *Y * (size_t)lin->rows * maxb);
    int rc = 0, b, f, r, i;
    if (!X || !Y) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "linear layer: (%d, %d) matrix", lin->rows, lin->cols);
        goto done;
    }
    for (i = 0; i < lin->cols * maxb; i++)
        X[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    for (b = 0; b < lin->nbatches; b++) {
        const int bs = lin->batches[b];
        double *best = times[b];
        for (f = 0; f < 4; f++)
            best[f] = 1e300;
        for (r = -1; r < reps; r++)
            for (f = SPRUCE_FMT_DENSE; f <= SPRUCE_FMT_NM; f++) {
                double t0;
                if (!has(lin, f) || (only && !only[b][f]))
                    continue;
                /* One untimed run first: switching between OpenBLAS's threads
                 * and OpenMP's wakes the other pool, a cost the first product
                 * after a switch pays and the timed one should not.  Then the
                 * data leaves the caches, and the timed run streams it from
                 * memory. */
                if ((rc = run(lin, f, X, bs, Y)) < 0)
                    goto done;
                flush_candidate(lin, f);
                t0 = spruce_clock_now();
                if ((rc = run(lin, f, X, bs, Y)) < 0)
                    goto done;
                t0 = spruce_clock_now() - t0;
                if (r >= 0 && t0 < best[f])
                    best[f] = t0;
            }
    }
done:
    free(X);
    free(Y);
    return rc;
}

int spruce__linear_choose(const double best[4], const size_t bytes[4], const int cand[4], int bs,
                          int dtype, double *allowed)
{
    int f, choice = SPRUCE_FMT_DENSE;
    /* With batch > 1 the margin is much wider: there the products are close
     * (OpenBLAS's sgemm is compute-bound and very good), and a sparse format's
     * lead in this one-matrix timing has been seen to overstate its lead in a
     * long stream of products by up to a quarter (BENCHMARKS.md). */
    double win = best[SPRUCE_FMT_DENSE] * (bs == 1 ? 0.97 : 0.7);
    *allowed = win;
    for (f = SPRUCE_FMT_CSR; f <= SPRUCE_FMT_NM; f++)
        if (cand[f] && best[f] < win) {
            win = best[f];
            choice = f;
        }
    /* At batch 1 a product streams its bytes: a format with at most 60% of
     * dense's bytes that timed within 30% of dense is taken over dense.  One
     * cold product of a matrix of a few MB is short enough for start-up
     * latency and noise to decide it, while in a model, where the layers
     * stream one after the other, the bytes do; and a dense layer between
     * sparse ones also pays for waking OpenBLAS's threads, which this timing
     * (an untimed run of the same candidate first) does not see.  Measured on
     * a 2:4 model: 1.49x dense decoding with 5%, 1.6x and more with 30%
     * (BENCHMARKS.md, "Decoding").  Only for float32: the dense kernels of
     * the other value types run on the same threads as the sparse ones, and
     * their sparse kernels are bound by instructions, not bytes (taken by
     * this rule, 50% bf16 bitmask ran at 0.73x and 90% int8 compressed rows
     * at 0.75x dense in a rotation of layers). */
    if (bs == 1 && choice == SPRUCE_FMT_DENSE && dtype == SPRUCE_DT_F32) {
        const double dense_bytes = (double)bytes[SPRUCE_FMT_DENSE];
        win = best[SPRUCE_FMT_DENSE] * 1.3;
        for (f = SPRUCE_FMT_CSR; f <= SPRUCE_FMT_NM; f++)
            if (cand[f] && best[f] < win &&
                (double)bytes[f] <= 0.6 * dense_bytes) {
                win = best[f];
                choice = f;
            }
    }
    return choice;
}

/* Fewer copies of the weights: each representation kept is a full copy (N:M
 * for batch 1 plus compressed rows for batch 16 would take more memory than
 * dense).  A larger batch size reuses the sparse format of a smaller one when
 * that format timed at most 20% slower than the best at the larger size and
 * still beat dense there. */
static void share_formats(spruce_linear *lin, double times[SPRUCE_LINEAR_MAX_BATCHES][4],
                          const double *allowed)
{
    int b, k;
    for (b = 1; b < lin->nbatches; b++) {
        const int c = lin->choice[b];
        if (c == SPRUCE_FMT_DENSE)
            continue;
        for (k = 0; k < b; k++) {
            const int f2 = lin->choice[k];
            if (f2 != SPRUCE_FMT_DENSE && f2 != c && times[b][f2] <= 1.2 * times[b][c] &&
                times[b][f2] < allowed[b]) {
                lin->choice[b] = f2;
                break;
            }
        }
    }
}

/* Free the representations no batch size chose. */
static void keep_chosen(spruce_linear *lin)
{
    int used[4] = {0, 0, 0, 0}, b, f;
    for (b = 0; b < lin->nbatches; b++)
        used[lin->choice[b]] = 1;
    if (!used[SPRUCE_FMT_DENSE]) {
        free(lin->dense);
        lin->dense = NULL;
        spruce_qmatrix_free(lin->qd);
        lin->qd = NULL;
    }
    for (f = SPRUCE_FMT_CSR; f <= SPRUCE_FMT_NM; f++)
        if (!used[f]) {
            spruce_sparse_free(lin->sp[f]);
            lin->sp[f] = NULL;
            spruce_qsparse_free(lin->qs[f]);
            lin->qs[f] = NULL;
        }
}

int spruce__linear_settle(const double t[4], const size_t bytes[4], const int cand[4], int choice,
                          double allowed, int *tie)
{
    int f, best = choice;
    *tie = -1;
    if (choice == SPRUCE_FMT_DENSE)
        return choice; /* a sparse format took dense's place by its own rules */
    for (f = SPRUCE_FMT_CSR; f <= SPRUCE_FMT_NM; f++)
        if (f != choice && cand[f] && t[f] <= 1.03 * t[choice] && t[f] < allowed &&
            bytes[f] < bytes[best])
            best = f;
    if (best != choice)
        *tie = choice;
    return best;
}

int spruce__linear_edge(const double t[4], const size_t bytes[4], const int cand[4], int bs,
                        int dtype, int seen[4], double *allowed)
{
    const int best = spruce__linear_choose(t, bytes, cand, bs, dtype, allowed);
    /* what dense's time is compared with (without the margin at batch 1),
     * and how far from it is noise */
    const double edge = bs == 1 ? t[SPRUCE_FMT_DENSE] : *allowed;
    const double band = edge * 0.03 > SPRUCE__TIE_SECONDS ? edge * 0.03 : SPRUCE__TIE_SECONDS;
    int f, pick = best;
    for (f = 0; f < 4; f++)
        seen[f] = f == best;
    if (best == SPRUCE_FMT_DENSE) {
        for (f = SPRUCE_FMT_CSR; f <= SPRUCE_FMT_NM; f++)
            if (cand[f] && t[f] <= edge + band && bytes[f] < bytes[SPRUCE_FMT_DENSE]) {
                seen[f] = 1;
                if (bytes[f] < bytes[pick])
                    pick = f;
            }
        if (pick != best)
            *allowed = edge + band;
    } else if (cand[SPRUCE_FMT_DENSE] && t[best] + band >= *allowed &&
               bytes[SPRUCE_FMT_DENSE] < bytes[best]) {
        seen[SPRUCE_FMT_DENSE] = 1;
        pick = SPRUCE_FMT_DENSE;
    }
    return pick;
}

/* The candidates a second, longer timing settles at each batch size
 * (tied[b][f]): the sparse formats within 3% of the one chosen, and that
 * one; and the formats of a tie with dense (spruce__linear_edge), dense
 * among them.  1 when there is such a tie. */
static int near_tie(const spruce_linear *lin, double times[SPRUCE_LINEAR_MAX_BATCHES][4],
                    int tied[SPRUCE_LINEAR_MAX_BATCHES][4])
{
    int b, f, any = 0;
    memset(tied, 0, sizeof(int) * SPRUCE_LINEAR_MAX_BATCHES * 4);
    for (b = 0; b < lin->nbatches; b++) {
        const int c = lin->choice[b];
        int cand[4], seen[4], n = 0;
        size_t bytes[4];
        double allowed;
        for (f = SPRUCE_FMT_CSR; c != SPRUCE_FMT_DENSE && f <= SPRUCE_FMT_NM; f++)
            if (f != c && has(lin, f) && times[b][f] <= 1.03 * times[b][c])
                tied[b][f] = tied[b][c] = any = 1;
        for (f = 0; f < 4; f++) {
            cand[f] = has(lin, f);
            bytes[f] = cand[f] ? cand_bytes(lin, f) : 0;
        }
        spruce__linear_edge(times[b], bytes, cand, lin->batches[b], lin->dtype, seen, &allowed);
        for (f = 0; f < 4; f++)
            n += seen[f];
        for (f = 0; n > 1 && f < 4; f++)
            if (seen[f])
                tied[b][f] = any = 1;
    }
    return any;
}

/* Time the candidates made, choose, keep only what was chosen; lin is
 * freed on failure.  When two sparse formats time within 3% (noise on a
 * shared machine), or dense and a sparse format sit at the edge of dense's
 * margin (spruce__linear_edge), the tied ones are timed again with three
 * times the runs, each keeping its fastest; still tied, the one with fewer
 * bytes is taken, so that the choice does not flip from run to run. */
static int finish(spruce_linear *lin, const spruce_linear_opts *o, spruce_linear **out)
{
    double times[SPRUCE_LINEAR_MAX_BATCHES][4], allowed[SPRUCE_LINEAR_MAX_BATCHES];
    int rc = 0, b, f;
    for (b = 0; b < SPRUCE_LINEAR_MAX_BATCHES; b++)
        lin->ftie[b] = lin->dtie[b] = -1;
    if (o->format >= 0) {
        for (b = 0; b < lin->nbatches; b++)
            lin->choice[b] = o->format;
    } else {
        size_t bytes[4];
        int cand[4], ncand = 0;
        int tied[SPRUCE_LINEAR_MAX_BATCHES][4];
        for (f = 0; f < 4; f++) {
            cand[f] = has(lin, f);
            bytes[f] = cand[f] ? cand_bytes(lin, f) : 0;
            ncand += cand[f];
        }
        if (ncand == 1) { /* dense alone (no format fits): nothing to time */
            for (b = 0; b < lin->nbatches; b++)
                lin->choice[b] = SPRUCE_FMT_DENSE;
            goto keep;
        }
        if ((rc = time_candidates(lin, o->reps, times, NULL)) < 0)
            goto done;
        for (b = 0; b < lin->nbatches; b++)
            lin->choice[b] = spruce__linear_choose(times[b], bytes, cand, lin->batches[b],
                                                   lin->dtype, &allowed[b]);
        if (near_tie(lin, times, tied)) { /* the tied ones only */
            double again[SPRUCE_LINEAR_MAX_BATCHES][4];
            if ((rc = time_candidates(lin, 3 * (o->reps > 0 ? o->reps : 7), again, tied)) < 0)
                goto done;
            for (b = 0; b < lin->nbatches; b++)
                for (f = 0; f < 4; f++)
                    times[b][f] = again[b][f] < times[b][f] ? again[b][f] : times[b][f];
        }
        for (b = 0; b < lin->nbatches; b++) {
            int seen[4];
            const int plain = spruce__linear_choose(times[b], bytes, cand, lin->batches[b],
                                                    lin->dtype, &allowed[b]);
            /* still at dense's edge after the longer timing: fewer bytes */
            lin->choice[b] = spruce__linear_edge(times[b], bytes, cand, lin->batches[b],
                                                 lin->dtype, seen, &allowed[b]);
            lin->dtie[b] = lin->choice[b] != plain ? plain : -1;
            lin->choice[b] = spruce__linear_settle(times[b], bytes, cand, lin->choice[b],
                                                   allowed[b], &lin->ftie[b]);
            for (f = 0; f < 4; f++)
                lin->ctime[b][f] = cand[f] ? times[b][f] : 0;
        }
        share_formats(lin, times, allowed);
    }
keep:
    keep_chosen(lin);
    *out = lin;
    lin = NULL;
done:
    spruce_linear_free(lin);
    return rc;
}

static int begin(int rows, int cols, const spruce_linear_opts *opts, spruce_linear_opts *o,
                 spruce_linear **lin)
{
    int rc;
    *lin = NULL;
    if (rows <= 0 || cols <= 0)
        return spruce__seterr(SPRUCE_ESHAPE,
                              "linear layer: expected rows, cols >= 1, found (%d, %d)", rows, cols);
    if ((rc = resolve_opts(opts, o)) < 0)
        return rc;
    if (!(*lin = calloc(1, sizeof **lin)))
        return spruce__seterr(SPRUCE_ENOMEM, "linear layer: (%d, %d) matrix", rows, cols);
    (*lin)->rows = rows;
    (*lin)->cols = cols;
    (*lin)->dtype = o->dtype;
    (*lin)->nthreads = o->nthreads;
    if ((rc = sort_batches(*lin, o)) < 0) {
        spruce_linear_free(*lin);
        *lin = NULL;
    }
    return rc;
}

/* Inspect once, execute many: make every candidate, time them at each tuned
 * batch size, choose, then keep only what was chosen. */
int spruce_linear_create(const float *W, int rows, int cols, const spruce_linear_opts *opts,
                         spruce_linear **out)
{
    spruce_linear_opts o;
    spruce_linear *lin = NULL;
    int rc;
    if (out)
        *out = NULL;
    if (!W || !out)
        return spruce__seterr(SPRUCE_EINVAL, "linear layer: NULL %s", !W ? "matrix" : "output");
    if ((rc = begin(rows, cols, opts, &o, &lin)) < 0)
        return rc;
    if ((rc = make_candidates(lin, W, &o)) < 0) {
        spruce_linear_free(lin);
        return rc;
    }
    return finish(lin, &o, out);
}

/* A deep copy of Q. */
static int qmatrix_copy(const spruce_qmatrix *Q, spruce_qmatrix **out)
{
    spruce_qmatrix *A = calloc(1, sizeof *A);
    const size_t ns = (size_t)Q->rows * Q->ngroups;
    *out = NULL;
    if (!A)
        goto nomem;
    *A = *Q;
    A->scale = NULL, A->zero = NULL;
    if (!(A->q = malloc(Q->ld * (size_t)Q->rows + 64)))
        goto nomem;
    memcpy(A->q, Q->q, Q->ld * (size_t)Q->rows);
    memset(A->q + Q->ld * (size_t)Q->rows, 0, 64);
    if (Q->scale && !(A->scale = malloc(ns * sizeof(float))))
        goto nomem;
    if (Q->scale)
        memcpy(A->scale, Q->scale, ns * sizeof(float));
    if (Q->zero && !(A->zero = malloc(ns)))
        goto nomem;
    if (Q->zero)
        memcpy(A->zero, Q->zero, ns);
    *out = A;
    return 0;
nomem:
    spruce_qmatrix_free(A);
    return spruce__seterr(SPRUCE_ENOMEM, "linear layer: (%d, %d) matrix", Q->rows, Q->cols);
}

int spruce_linear_create_quantized(const spruce_qmatrix *Q, const spruce_linear_opts *opts,
                                   spruce_linear **out)
{
    spruce_linear_opts o;
    spruce_linear *lin = NULL;
    spruce_qmatrix *A;
    int rc;
    if (out)
        *out = NULL;
    if (!Q || !out)
        return spruce__seterr(SPRUCE_EINVAL, "linear layer: NULL %s", !Q ? "matrix" : "output");
    if ((rc = spruce_qmatrix_check(Q)) < 0)
        return rc;
    if (opts) {
        o = *opts;
    } else {
        spruce_linear_opts_init(&o);
    }
    o.dtype = Q->dtype; /* the values' own type: never converted */
    if ((rc = begin(Q->rows, Q->cols, &o, &o, &lin)) < 0)
        return rc;
    if ((rc = qmatrix_copy(Q, &A)) < 0 || (rc = make_typed(lin, A, &o)) < 0) {
        spruce_linear_free(lin);
        return rc;
    }
    return finish(lin, &o, out);
}

static int pick(const spruce_linear *lin, int batch)
{
    int b, k = 0;
    for (b = 0; b < lin->nbatches; b++)
        if (lin->batches[b] <= batch)
            k = b;
    return lin->choice[k];
}

int spruce_linear_forward(const spruce_linear *lin, const float *X, int batch, float *Y)
{
    if (!lin || !X || !Y)
        return spruce__seterr(SPRUCE_EINVAL, "linear forward: NULL %s",
                              !lin ? "layer" : !X ? "input" : "output");
    if (batch < 1)
        return spruce__seterr(SPRUCE_ESHAPE, "linear forward: batch %d, expected >= 1", batch);
    return run(lin, pick(lin, batch), X, batch, Y);
}

int spruce_linear_format(const spruce_linear *lin, int batch)
{
    return lin ? pick(lin, batch < 1 ? 1 : batch) : -1;
}

size_t spruce_linear_batch_bytes(const spruce_linear *lin, int batch)
{
    return lin ? cand_bytes(lin, pick(lin, batch < 1 ? 1 : batch)) : 0;
}

int spruce_linear_layout(const spruce_linear *lin, int batch)
{
    if (!lin)
        return -1;
    return pick(lin, batch < 1 ? 1 : batch) == SPRUCE_FMT_NM ? lin->layout : SPRUCE_LAYOUT_BITS;
}

int spruce_linear_rows(const spruce_linear *lin) { return lin ? lin->rows : 0; }

int spruce_linear_describe(const spruce_linear *lin, int batch, char *buf, size_t n)
{
    int f, k, isa, bi;
    size_t len;
    if (!lin || !buf || !n)
        return -1;
    f = pick(lin, batch < 1 ? 1 : batch);
    k = snprintf(buf, n, "%dx%d %s %s", lin->rows, lin->cols, spruce_format_name(f),
                 spruce_dtype_name(lin->dtype));
    len = k < 0 ? 0 : (size_t)k < n ? (size_t)k : n - 1;
    if (f != SPRUCE_FMT_DENSE) {
        k = snprintf(buf + len, n - len, ", kernel %s (%s", spruce_sparse_isa_name(lin->qisa[f]),
                     lin->qwhy[f]);
        len += k < 0 ? 0 : (size_t)k < n - len ? (size_t)k : n - len - 1;
        for (isa = 0; isa < SPRUCE_ISA_COUNT; isa++)
            if (lin->qtime[f][isa] > 0 && len + 1 < n) {
                k = snprintf(buf + len, n - len, "; %s %.3f ms", spruce_sparse_isa_name(isa),
                             1e3 * lin->qtime[f][isa]);
                len += k < 0 ? 0 : (size_t)k < n - len ? (size_t)k : n - len - 1;
            }
        if (len + 1 < n) {
            snprintf(buf + len, n - len, ")");
            len++;
        }
        if (f == SPRUCE_FMT_NM && lin->lwhy && len + 1 < n) {
            k = snprintf(buf + len, n - len, ", layout %s (%s", spruce_layout_name(lin->layout),
                         lin->lwhy);
            len += k < 0 ? 0 : (size_t)k < n - len ? (size_t)k : n - len - 1;
            for (isa = 0; isa < 2; isa++)
                if (lin->ltime[isa] > 0 && len + 1 < n) {
                    k = snprintf(buf + len, n - len, "; %s %.3f ms", spruce_layout_name(isa),
                                 1e3 * lin->ltime[isa]);
                    len += k < 0 ? 0 : (size_t)k < n - len ? (size_t)k : n - len - 1;
                }
            if (len + 1 < n) {
                snprintf(buf + len, n - len, ")");
                len++;
            }
        }
    } else {
        k = snprintf(buf + len, n - len, ", kernel %s",
                     lin->dtype == SPRUCE_DT_F32 ? "OpenBLAS"
                                                 : spruce_qmatrix_kernel_name(lin->qd, batch));
        len += k < 0 ? 0 : (size_t)k < n - len ? (size_t)k : n - len - 1;
        if (lin->dense_keep > 0 && len + 1 < n) {
            k = snprintf(buf + len, n - len, " (%.1f%% of the weights kept: no sparse candidate)",
                         100.0 * lin->dense_keep);
            len += k < 0 ? 0 : (size_t)k < n - len ? (size_t)k : n - len - 1;
        }
    }
    for (k = 0, bi = 0; k < lin->nbatches; k++) /* the batch size pick() used */
        if (lin->batches[k] <= (batch < 1 ? 1 : batch))
            bi = k;
    if (lin->dtie[bi] >= 0 && len + 1 < n) {
        k = snprintf(buf + len, n - len, "; %s by the times alone, tied with dense twice "
                     "(within 3%% or 8 us): fewer bytes", spruce_format_name(lin->dtie[bi]));
        len += k < 0 ? 0 : (size_t)k < n - len ? (size_t)k : n - len - 1;
    }
    if (lin->ftie[bi] >= 0 && len + 1 < n) {
        k = snprintf(buf + len, n - len, "; %s timed within 3%% twice: fewer bytes",
                     spruce_format_name(lin->ftie[bi]));
        len += k < 0 ? 0 : (size_t)k < n - len ? (size_t)k : n - len - 1;
    }
    if (lin->csr_keep > 0 && len + 1 < n) {
        k = snprintf(buf + len, n - len, "; csr not a candidate (%.1f%% kept: at least dense's "
                     "bytes at batch 1)", 100.0 * lin->csr_keep);
        len += k < 0 ? 0 : (size_t)k < n - len ? (size_t)k : n - len - 1;
    }
    { /* the times the choice saw */
        int g, first = 1;
        for (g = 0; g < 4; g++)
            if (lin->ctime[bi][g] > 0 && lin->ctime[bi][g] < 1e300 && len + 1 < n) {
                if (first)
                    k = snprintf(buf + len, n - len, "; timed at batch %d: %s %.3f ms",
                                 lin->batches[bi], spruce_format_name(g),
                                 1e3 * lin->ctime[bi][g]);
                else
                    k = snprintf(buf + len, n - len, ", %s %.3f ms", spruce_format_name(g),
                                 1e3 * lin->ctime[bi][g]);
                len += k < 0 ? 0 : (size_t)k < n - len ? (size_t)k : n - len - 1;
                first = 0;
            }
    }
    return f;
}
int spruce_linear_dtype(const spruce_linear *lin) { return lin ? lin->dtype : -1; }
int spruce_linear_cols(const spruce_linear *lin) { return lin ? lin->cols : 0; }

size_t spruce_linear_bytes(const spruce_linear *lin)
{
    size_t s = 0;
    int f;
    if (!lin)
        return 0;
    for (f = 0; f < 4; f++)
        if (has(lin, f))
            s += cand_bytes(lin, f);
    return s;
}
