/* prune.c: the public pruning entry points: option checks, dispatch to
 * SparseGPT / Wanda / magnitude, the shared inverse and the output error. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "prune_internal.h"
#include "spruce_clock.h"

void spruce_prune_opts_init(spruce_prune_opts *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->method = SPRUCE_METHOD_SPARSEGPT;
    o->sparsity = 0.5f;
    o->prune_n = 0;
    o->prune_m = 0;
    o->blocksize = 128;
    o->damp = 0.01f;
    o->max_damp_retries = 4;
    o->threads = 0;
}

static const char *const method_names[] = {"sparsegpt", "wanda", "magnitude"};

const char *spruce_method_name(spruce_method m)
{
    if ((int)m < 0 || (int)m > 2)
        return "unknown";
    return method_names[m];
}

int spruce_method_parse(const char *s, spruce_method *out)
{
    int i;
    if (!s || !out)
        return spruce__seterr(SPRUCE_EINVAL, "method: NULL argument");
    for (i = 0; i < 3; i++)
        if (!strcmp(s, method_names[i])) {
            *out = (spruce_method)i;
            return 0;
        }
    return spruce__seterr(SPRUCE_EINVAL,
                          "method: expected sparsegpt, wanda or magnitude, found '%s'", s);
}

/* wbits 2..8; a group of G columns divides cols, holds whole N:M groups and
 * (SparseGPT) divides the block or is a multiple of it, so that every grid is
 * found from weights that the sweep has finished updating. */
static int check_quant(const spruce_prune_opts *o, int cols)
{
    int G = o->groupsize;
    if (o->wbits == 0) {
        if (G != 0 || o->sym)
            return spruce__seterr(SPRUCE_EINVAL, "prune: %s needs wbits (2 to 8)",
                                  G ? "a groupsize" : "a symmetric grid");
        return 0;
    }
    if (o->wbits < 2 || o->wbits > 8)
        return spruce__seterr(SPRUCE_EINVAL, "prune: expected wbits from 2 to 8, found %d", o->wbits);
    if (G < 0 || (G > 0 && cols % G))
        return spruce__seterr(SPRUCE_EINVAL,
                              "prune: groupsize %d: expected a positive divisor of the column count %d",
                              G, cols);
    if (G > 0 && o->prune_m > 0 && G % o->prune_m)
        return spruce__seterr(SPRUCE_EINVAL,
                              "prune: groupsize %d must be a multiple of the N:M group M = %d "
                              "(pattern %d:%d)", G, o->prune_m, o->prune_n, o->prune_m);
    if (G > 0 && G < cols && o->method == SPRUCE_METHOD_SPARSEGPT && o->blocksize > 0 &&
        o->blocksize % G && G % o->blocksize)
        return spruce__seterr(SPRUCE_EINVAL,
                              "prune: groupsize %d must divide the block size %d or be a multiple "
                              "of it", G, o->blocksize);
    return 0;
}

int spruce__check_quant(const spruce_prune_opts *o, int cols)
{
    return check_quant(o, cols);
}

int spruce__check_opts(const spruce_prune_opts *o, int rows, int cols)
{
    int rc;
    if (!o)
        return spruce__seterr(SPRUCE_EINVAL, "prune: options are NULL");
    if (rows <= 0 || cols <= 0)
        return spruce__seterr(SPRUCE_EINVAL, "prune: expected a non-empty (rows, cols), found (%d, %d)",
                              rows, cols);
    if ((int)o->method < 0 || (int)o->method > 2)
        return spruce__seterr(SPRUCE_EINVAL, "prune: unknown method %d", (int)o->method);
    if (o->prune_m < 0 || (o->prune_m == 0 && o->prune_n != 0))
        return spruce__seterr(SPRUCE_EINVAL, "prune: N:M pattern %d:%d: expected M > 0 with 0 < N < M",
                              o->prune_n, o->prune_m);
    if (o->count < 0 || (o->count > 0 && o->prune_m > 0) ||
        o->count >= (int64_t)rows * cols)
        return spruce__seterr(SPRUCE_EINVAL, "prune: a count of %lld weights to prune of (%d, %d)%s: "
                              "expected 0 <= count < %lld, unstructured", (long long)o->count,
                              rows, cols, o->prune_m > 0 ? " with an N:M pattern" : "",
                              (long long)rows * cols);
    if (o->prune_m > 0) {
        if (o->prune_n <= 0 || o->prune_n >= o->prune_m)
            return spruce__seterr(SPRUCE_EINVAL, "prune: N:M pattern %d:%d: expected 0 < N < M",
                                  o->prune_n, o->prune_m);
        if (o->prune_m > 256)
            return spruce__seterr(SPRUCE_EINVAL, "prune: N:M pattern %d:%d: expected M <= 256",
                                  o->prune_n, o->prune_m);
        if (cols % o->prune_m)
            return spruce__seterr(SPRUCE_EINVAL,
                                  "prune: N:M pattern %d:%d: M must divide the column count %d",
                                  o->prune_n, o->prune_m, cols);
    } else if (!(o->sparsity >= 0.0f && o->sparsity < 1.0f)) {
        return spruce__seterr(SPRUCE_EINVAL, "prune: expected sparsity in [0, 1), found %g",
                              (double)o->sparsity);
    }
    if ((rc = check_quant(o, cols)))
        return rc;
    if (o->method == SPRUCE_METHOD_SPARSEGPT) {
        if (o->blocksize <= 0)
            return spruce__seterr(SPRUCE_EINVAL, "prune: expected blocksize > 0, found %d",
                                  o->blocksize);
        if (o->prune_m > 0 && o->blocksize % o->prune_m)
            return spruce__seterr(SPRUCE_EINVAL,
                                  "prune: N:M pattern %d:%d: M must divide the block size %d",
                                  o->prune_n, o->prune_m, o->blocksize);
        if (!(o->damp >= 0.0f) || !isfinite(o->damp))
            return spruce__seterr(SPRUCE_EINVAL, "prune: expected damp >= 0, found %g",
                                  (double)o->damp);
        if (o->max_damp_retries < 0)
            return spruce__seterr(SPRUCE_EINVAL, "prune: expected max_damp_retries >= 0, found %d",
                                  o->max_damp_retries);
    }
    if (o->threads < 0)
        return spruce__seterr(SPRUCE_EINVAL, "prune: expected threads >= 0, found %d", o->threads);
    return 0;
}

/* Refuse an unstructured target below every weight that rounds to every
 * weight of the group its method counts in (and so would prune 100%):
 * magnitude rounds sparsity x rows x cols over the whole layer, Wanda floors
 * sparsity x cols per row, SparseGPT rounds sparsity x rows x width per column
 * block (the narrowest block, the last, rounds up first); with a count, the
 * share of the count each group gets (spruce__count_share).  The counts are
 * the methods' own expressions (baselines.c, sparsegpt.c). */
static int check_rounding(const spruce_prune_opts *o, int rows, int cols)
{
    double s = (double)o->sparsity;
    size_t group = 0, k = 0;
    const char *where;
    int64_t c = o->count, i, n = o->method == SPRUCE_METHOD_WANDA ? rows : cols;
    if (o->prune_m > 0 || (c == 0 && s <= 0.0))
        return 0;
    if (o->method == SPRUCE_METHOD_MAGNITUDE) {
        group = (size_t)rows * (size_t)cols;
        k = c > 0 ? (size_t)c : (size_t)llround(s * (double)group);
        where = "of the layer";
    } else if (c > 0) { /* the largest share: a row (Wanda) or a column block (SparseGPT) */
        int64_t step = o->method == SPRUCE_METHOD_WANDA ? 1 : o->blocksize;
        int64_t width = o->method == SPRUCE_METHOD_WANDA ? cols : rows;
        for (i = 0; i < n; i += step) {
            int64_t e = i + step < n ? i + step : n, share = spruce__count_share(c, i, e, n);
            if ((size_t)share >= (size_t)(width * (e - i))) {
                group = (size_t)(width * (e - i));
                k = (size_t)share;
                break;
            }
        }
        if (group == 0)
            return 0; /* every share leaves a weight */
        where = o->method == SPRUCE_METHOD_WANDA ? "of a row" : "of a column block";
    } else if (o->method == SPRUCE_METHOD_WANDA) {
        group = (size_t)cols;
        k = (size_t)floor(s * (double)cols * (1.0 + 1e-6));
        where = "of every row";
    } else {
        int bw = cols % o->blocksize ? cols % o->blocksize : o->blocksize;
        if (bw > cols)
            bw = cols;
        group = (size_t)rows * (size_t)bw;
        k = (size_t)llround(s * (double)rows * bw);
        where = bw == cols || bw == o->blocksize ? "of every column block" : "of the last column block";
    }
    if (k < group)
        return 0;
    if (c > 0)
        return spruce__seterr(SPRUCE_EINVAL,
                              "prune: a count of %lld rounds to every weight: %s (%d, %d) would "
                              "prune all %zu of the %zu weights %s; give a lower count",
                              (long long)c, spruce_method_name(o->method), rows, cols, k, group,
                              where);
    return spruce__seterr(SPRUCE_EINVAL,
                          "prune: sparsity %g rounds to every weight: %s (%d, %d) would prune all %zu of "
                          "the %zu weights %s; give a lower sparsity",
                          s, spruce_method_name(o->method), rows, cols, k, group, where);
}

static int check_hessian(const spruce_hessian *h, int cols)
{
    const float *H;
    int i;
    if (!h)
        return spruce__seterr(SPRUCE_EINVAL, "prune: the Hessian accumulator is NULL");
    if (h->cols != cols)
        return spruce__seterr(SPRUCE_ESHAPE, "prune: Hessian is (%d, %d) but W has %d columns",
                              h->cols, h->cols, cols);
    if (h->tokens <= 0)
        return spruce__seterr(SPRUCE_EINVAL, "prune: the Hessian accumulator holds no tokens");
    H = h->H;
    for (i = 0; i < cols; i++) { /* rows of the upper triangle */
        int rc = spruce__check_finite(H + (size_t)i * cols + i, 1, cols - i, "prune: Hessian row");
        if (rc)
            return spruce__seterr(SPRUCE_ENAN, "prune: Hessian row %d holds a non-finite value", i);
    }
    return 0;
}

/* Fraction of zeros (by value: -0 counts) in W. */
static double zero_fraction(const float *W, size_t n)
{
    size_t i, z = 0;
    for (i = 0; i < n; i++)
        z += W[i] == 0.0f;
    return (double)z / (double)n;
}

/* ---- the shared inverse -------------------------------------------------- */

void spruce_hinv_free(spruce_hinv *hi)
{
    if (!hi)
        return;
    free(hi->U);
    free(hi->dead);
    free(hi);
}

int spruce_hinv_cols(const spruce_hinv *hi)
{
    return hi ? hi->cols : 0;
}

const float *spruce_hinv_factor(const spruce_hinv *hi)
{
    return hi ? hi->U : NULL;
}

int spruce_hinv_prepare(const spruce_hessian *h, const spruce_prune_opts *opts, spruce_hinv **out)
{
    spruce_hinv *hi = NULL;
    spruce_prune_opts o;
    int rc;
    if (!out)
        return spruce__seterr(SPRUCE_EINVAL, "hinv_prepare: output pointer is NULL");
    *out = NULL;
    if (!h)
        return spruce__seterr(SPRUCE_EINVAL, "hinv_prepare: the Hessian accumulator is NULL");
    if (opts)
        o = *opts;
    else
        spruce_prune_opts_init(&o);
    o.method = SPRUCE_METHOD_SPARSEGPT;
    o.count = 0; /* the factorisation does not depend on the target */
    if ((rc = spruce__check_opts(&o, 1, h->cols)) || (rc = check_hessian(h, h->cols)))
        return rc;
    hi = calloc(1, sizeof *hi);
    if (!hi)
        return spruce__seterr(SPRUCE_ENOMEM, "hinv_prepare: (%d, %d)", h->cols, h->cols);
    hi->cols = h->cols;
    hi->U = malloc((size_t)h->cols * (size_t)h->cols * sizeof *hi->U);
    hi->dead = malloc((size_t)h->cols);
    if (!hi->U || !hi->dead) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "hinv_prepare: factor of (%d, %d)", h->cols, h->cols);
        goto done;
    }
    rc = spruce__hinv_factor(h->H, h->cols, o.damp, o.max_damp_retries, hi->U, hi->dead,
                             &hi->dead_columns, &hi->damp_used, &hi->damp_retries);
done:
    if (rc) {
        spruce_hinv_free(hi);
        return rc;
    }
    *out = hi;
    return 0;
}

/* ---- pruning ------------------------------------------------------------- */

/* The grid to fill: the caller's grid_out (checked against the layer), or
 * one allocated here (*owned).  NULL in *out without wbits. */
static int grid_setup(const spruce_prune_opts *o, int rows, int cols, spruce_qgrid *tmp,
                      spruce_qgrid **out, int *owned)
{
    int64_t G = o->groupsize > 0 ? o->groupsize : cols, n = (int64_t)rows * (cols / G);
    *out = NULL;
    *owned = 0;
    if (o->wbits == 0)
        return 0;
    if (o->grid_out) {
        spruce_qgrid *g = o->grid_out;
        if (g->rows != rows || g->cols != cols || g->groupsize != G || !g->scale || !g->zero)
            return spruce__seterr(SPRUCE_EINVAL,
                                  "prune: grid_out is (%lld, %lld) in groups of %lld%s but the layer "
                                  "needs (%d, %d) in groups of %lld",
                                  (long long)g->rows, (long long)g->cols, (long long)g->groupsize,
                                  !g->scale || !g->zero ? " without scale or zero" : "", rows, cols,
                                  (long long)G);
        *out = g;
    } else {
        memset(tmp, 0, sizeof *tmp);
        tmp->rows = rows;
        tmp->cols = cols;
        tmp->groupsize = G;
        tmp->scale = malloc((size_t)n * sizeof *tmp->scale);
        tmp->zero = malloc((size_t)n * sizeof *tmp->zero);
        if (!tmp->scale || !tmp->zero) {
            free(tmp->scale);
            free(tmp->zero);
            return spruce__seterr(SPRUCE_ENOMEM, "prune: quantization grid of (%d, %lld)", rows,
                                  (long long)(cols / G));
        }
        *out = tmp;
        *owned = 1;
    }
    (*out)->bits = o->wbits;
    (*out)->sym = o->sym != 0;
    (*out)->scale_dtype = o->scale_dtype;
    return 0;
}

static void grid_release(spruce_qgrid *g, int owned)
{
    if (owned) {
        free(g->scale);
        free(g->zero);
    }
}

int spruce_prune_layer_prepared(float *W, int rows, int cols, const spruce_hinv *hi,
                                const spruce_prune_opts *opts, uint8_t *mask,
                                spruce_prune_result *res)
{
    double t0 = spruce_clock_now(), loss = 0.0;
    spruce_qgrid gtmp, *grid = NULL;
    int rc, owned = 0;
    if (!W || !hi)
        return spruce__seterr(SPRUCE_EINVAL, "prune: %s is NULL", !W ? "W" : "the prepared inverse");
    if ((rc = spruce__check_opts(opts, rows, cols)) || (rc = check_rounding(opts, rows, cols)))
        return rc;
    if (opts->method != SPRUCE_METHOD_SPARSEGPT)
        return spruce__seterr(SPRUCE_EINVAL, "prune: a prepared inverse serves sparsegpt only, not %s",
                              spruce_method_name(opts->method));
    if (hi->cols != cols)
        return spruce__seterr(SPRUCE_ESHAPE, "prune: prepared inverse is (%d, %d) but W has %d columns",
                              hi->cols, hi->cols, cols);
    if ((rc = spruce__check_finite(W, rows, cols, "prune: weights W")))
        return rc;
    if ((rc = grid_setup(opts, rows, cols, &gtmp, &grid, &owned)))
        return rc;
    rc = spruce__sparsegpt(W, rows, cols, hi, opts, grid, mask, &loss);
    grid_release(grid, owned);
    if (rc)
        return rc;
    if (res) {
        res->sparsity = zero_fraction(W, (size_t)rows * cols);
        res->loss = loss;
        res->damp_used = hi->damp_used;
        res->damp_retries = hi->damp_retries;
        res->dead_columns = hi->dead_columns;
        res->seconds = spruce_clock_now() - t0;
    }
    return 0;
}

/* Wanda or magnitude on W, counting dead inputs into r. */
static int prune_baseline(float *W, int rows, int cols, const spruce_hessian *h,
                          const spruce_prune_opts *opts, uint8_t *mask, spruce_prune_result *r)
{
    double *xn;
    int rc, j;
    if (opts->method == SPRUCE_METHOD_MAGNITUDE)
        return spruce__magnitude(W, rows, cols, opts, mask);
    xn = malloc((size_t)cols * sizeof *xn);
    if (!xn)
        return spruce__seterr(SPRUCE_ENOMEM, "wanda: %d column norms", cols);
    for (j = 0; j < cols; j++) { /* ||x_j||^2 = H_jj n / 2 */
        xn[j] = (double)h->H[(size_t)j * cols + j] * (double)h->tokens / 2.0;
        r->dead_columns += xn[j] == 0.0;
    }
    rc = spruce__wanda(W, rows, cols, xn, opts, mask);
    free(xn);
    return rc;
}

int spruce_prune_layer(float *W, int rows, int cols, const spruce_hessian *h,
                       const spruce_prune_opts *opts, uint8_t *mask, spruce_prune_result *res)
{
    double t0 = spruce_clock_now();
    int rc, owned = 0;
    spruce_prune_result r;
    spruce_qgrid gtmp, *grid = NULL;
    memset(&r, 0, sizeof r);
    if (!W)
        return spruce__seterr(SPRUCE_EINVAL, "prune: W is NULL");
    if ((rc = spruce__check_opts(opts, rows, cols)) || (rc = check_rounding(opts, rows, cols)))
        return rc;
    if (opts->method != SPRUCE_METHOD_MAGNITUDE || h)
        if ((rc = check_hessian(h, cols)))
            return rc;
    if ((rc = spruce__check_finite(W, rows, cols, "prune: weights W")))
        return rc;

    if (opts->method == SPRUCE_METHOD_SPARSEGPT) {
        spruce_hinv *hi = NULL;
        if ((rc = spruce_hinv_prepare(h, opts, &hi)))
            return rc;
        rc = spruce_prune_layer_prepared(W, rows, cols, hi, opts, mask, &r);
        spruce_hinv_free(hi);
        if (rc)
            return rc;
    } else {
        /* Wanda, magnitude: the grid of the dense W, kept weights rounded after */
        if ((rc = grid_setup(opts, rows, cols, &gtmp, &grid, &owned)))
            return rc;
        if (grid)
            spruce__qgrid_rows(W, rows, cols, 0, (int)(cols / grid->groupsize), grid);
        rc = prune_baseline(W, rows, cols, h, opts, mask, &r);
        if (!rc && grid)
            spruce__qgrid_round(W, rows, cols, grid);
        grid_release(grid, owned);
        if (rc)
            return rc;
        r.sparsity = zero_fraction(W, (size_t)rows * cols);
    }
    r.seconds = spruce_clock_now() - t0;
    if (res)
        *res = r;
    return 0;
}
/* sum over rows r of a_r^T H a_r, for A (rows, cols), H given by its upper triangle */
static int quad_form(const float *A, const float *B, int rows, int cols, const float *Hup,
                     double *out)
{
    enum { CHUNK = 256 };
    float *D = malloc((size_t)CHUNK * cols * sizeof *D);
    float *DH = malloc((size_t)CHUNK * cols * sizeof *DH);
    double acc = 0.0;
    int r0, r, j;
    if (!D || !DH) {
        free(D);
        free(DH);
        return spruce__seterr(SPRUCE_ENOMEM, "rel_error: (%d, %d) workspace", CHUNK, cols);
    }
    for (r0 = 0; r0 < rows; r0 += CHUNK) {
        int nr = rows - r0 < CHUNK ? rows - r0 : CHUNK;
        size_t off = (size_t)r0 * cols, i, n = (size_t)nr * cols;
        for (i = 0; i < n; i++)
            D[i] = B ? A[off + i] - B[off + i] : A[off + i];
        /* DH (nr, cols) = D (nr, cols) @ H (cols, cols), H symmetric on the right */
        cblas_ssymm(CblasRowMajor, CblasRight, CblasUpper, nr, cols, 1.0f, Hup, cols, D, cols,
                    0.0f, DH, cols);
        for (r = 0; r < nr; r++) {
            double s = 0.0;
            for (j = 0; j < cols; j++)
                s += (double)D[(size_t)r * cols + j] * (double)DH[(size_t)r * cols + j];
            acc += s;
        }
    }
    free(D);
    free(DH);
    *out = acc;
    return 0;
}

int spruce_prune_rel_error(const float *W0, const float *W, int rows, int cols,
                           const spruce_hessian *h, double *out)
{
    double num, den;
    int rc;
    if (!W0 || !W || !h || !out)
        return spruce__seterr(SPRUCE_EINVAL, "rel_error: NULL argument");
    if (rows <= 0 || cols <= 0)
        return spruce__seterr(SPRUCE_EINVAL, "rel_error: expected a non-empty (rows, cols), found (%d, %d)",
                              rows, cols);
    if (h->cols != cols)
        return spruce__seterr(SPRUCE_ESHAPE, "rel_error: Hessian is (%d, %d) but W has %d columns",
                              h->cols, h->cols, cols);
    if ((rc = quad_form(W0, W, rows, cols, h->H, &num)) ||
        (rc = quad_form(W0, NULL, rows, cols, h->H, &den)))
        return rc;
    *out = den > 0.0 ? num / den : 0.0;
    return 0;
}
