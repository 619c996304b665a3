/* hessian.c: the calibration accumulator H = (2/n) sum over n tokens of x x^T.
 *
 * A batch X is (tokens, cols) row-major.  Adding it is one symmetric rank-k
 * update of the upper triangle with the running rescale of the published code:
 *   H <- H * n/(n+b) + (2/(n+b)) X^T X,   n <- n + b
 * so that any split of the same tokens into batches gives the same H (up to
 * rounding).  The lower triangle is mirrored only when someone asks for it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "prune_internal.h"

spruce_hessian *spruce_hessian_alloc(int cols)
{
    spruce_hessian *h;
    if (cols <= 0)
        return NULL;
    h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->cols = cols;
    h->H = calloc((size_t)cols * (size_t)cols, sizeof *h->H);
    if (!h->H) {
        free(h);
        return NULL;
    }
    return h;
}

void spruce_hessian_free(spruce_hessian *h)
{
    if (!h)
        return;
    free(h->H);
    free(h);
}

int spruce__check_finite(const float *A, int64_t rows, int64_t cols, const char *what)
{
    int64_t i, n = rows * cols, bad = -1;
    typedef uint32_t __attribute__((may_alias)) alias_u32;
    const alias_u32 *u = (const alias_u32 *)A;
    uint32_t any = 0;
    /* A branch-free scan of the exponent bits (all ones = NaN or Inf) that the
     * compiler vectorises; the culprit is located only on failure. */
    for (i = 0; i < n; i++)
        any |= (uint32_t)((u[i] & 0x7f800000u) == 0x7f800000u);
    if (!any)
        return 0;
    for (i = 0; i < n; i++)
        if (!isfinite(A[i])) {
            bad = i;
            break;
        }
    if (bad < 0)
        return 0;
    return spruce__seterr(SPRUCE_ENAN, "%s: element (%lld, %lld) is %g", what,
                          (long long)(bad / cols), (long long)(bad % cols), (double)A[bad]);
}

int spruce_hessian_add(spruce_hessian *h, const float *X, int tokens)
{
    int rc;
    double n0, n1;
    if (!h || !X)
        return spruce__seterr(SPRUCE_EINVAL, "hessian_add: %s is NULL", !h ? "accumulator" : "X");
    if (tokens <= 0)
        return spruce__seterr(SPRUCE_EINVAL, "hessian_add: expected tokens > 0, found %d", tokens);
    rc = spruce__check_finite(X, tokens, h->cols, "hessian_add: activations X");
    if (rc)
        return rc;
    n0 = (double)h->tokens;
    n1 = n0 + (double)tokens;
    /* X is (tokens, cols): X^T X is (cols, cols), written to the upper triangle. */
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, h->cols, tokens, (float)(2.0 / n1), X,
                h->cols, (float)(n0 / n1), h->H, h->cols);
    h->tokens += tokens;
    h->lower_stale = 1;
    return 0;
}

int spruce_hessian_cols(const spruce_hessian *h)
{
    return h ? h->cols : 0;
}

int64_t spruce_hessian_tokens(const spruce_hessian *h)
{
    return h ? h->tokens : 0;
}

const float *spruce__hessian_upper(const spruce_hessian *h)
{
    return h ? h->H : NULL;
}

const float *spruce_hessian_matrix(const spruce_hessian *h)
{
    spruce_hessian *m = (spruce_hessian *)h; /* mirroring is a cache refresh */
    int n, i, j;
    if (!h)
        return NULL;
    n = h->cols;
    if (m->lower_stale) {
        for (i = 0; i < n; i++)
            for (j = 0; j < i; j++)
                m->H[(size_t)i * n + j] = m->H[(size_t)j * n + i];
        m->lower_stale = 0;
    }
    return h->H;
}

int spruce_hessian_set_share(spruce_hessian *h, int64_t total)
{
    size_t i, n;
    float f;
    if (!h || total < h->tokens || total <= 0)
        return spruce__seterr(SPRUCE_EINVAL, "hessian_set_share: a share of %lld tokens of %lld",
                              h ? (long long)h->tokens : 0LL, (long long)total);
    if (total == h->tokens)
        return 0;
    f = (float)((double)h->tokens / (double)total);
    n = (size_t)h->cols * (size_t)h->cols;
    for (i = 0; i < n; i++)
        h->H[i] *= f;
    h->tokens = total;
    h->lower_stale = 1;
    return 0;
}

float *spruce_hessian_data(spruce_hessian *h)
{
    if (!h)
        return NULL;
    h->lower_stale = 1; /* the caller may write the upper triangle */
    return h->H;
}
