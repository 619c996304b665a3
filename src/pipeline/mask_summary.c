/* mask_summary.c: what the masks of a file look like (sparsity, rows, column
 * blocks, N:M: `spruce masks info`) and how the masks of two files agree
 * (kept by each, by both, agreement, Jaccard: `spruce masks diff`). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spruce_ckpt_masks.h"
#include "pipeline_internal.h"

/* spruce__masks_reserve, the failure naming the file and the mask. */
static int reserve(uint8_t **buf, size_t *cap, size_t n, const char *path, const char *name)
{
    if (spruce__masks_reserve(buf, cap, n) < 0)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: mask %s: out of memory for %zu bytes", path,
                              name, n);
    return 0;
}

/* ---- summary ------------------------------------------------------------ */

void spruce_masks_summary_clear(spruce_masks_summary *s)
{
    if (!s)
        return;
    free(s->masks);
    memset(s, 0, sizeof *s);
    s->sparsity = NAN;
}

/* The pattern the file records for mask e (its own "pattern" attribute, else
 * the root's), when it is N:M and the mask conforms to it (prunes at least N
 * of every aligned group of M): e->stats.nm then says that pattern rather
 * than what the data alone suggest. */
static void recorded_pattern(const spruce_maskreader *r, spruce_masks_summary_entry *e,
                             const uint8_t *keep)
{
    const spruce_mask_attr *a = spruce_maskreader_attr(r, "pattern");
    const char *p = e->meta.pattern[0] ? e->meta.pattern
                    : a && a->type == SPRUCE_MASK_ATTR_STRING ? a->s
                                                              : "";
    int n, m, exact, end = 0;
    if (sscanf(p, "%d:%d%n", &n, &m, &end) != 2 || p[end] || n < 1 || n > m)
        return;
    if (spruce_mask_nm_check(keep, e->meta.rows, e->meta.cols, n, m, &exact)) {
        e->stats.nm.n = n;
        e->stats.nm.m = m;
        e->stats.nm.exact = exact;
        e->nm_recorded = 1;
    }
}

int spruce_masks_summarize(const spruce_maskreader *r, int64_t block, spruce_masks_summary *s)
{
    uint8_t *keep = NULL;
    size_t cap = 0;
    int rc = 0, i, n;
    const char *path;

    if (!s)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_masks_summarize: NULL argument");
    memset(s, 0, sizeof *s);
    s->sparsity = NAN;
    if (!r || block < 0)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_masks_summarize: %s (block %lld)",
                              r ? "invalid block" : "NULL reader", (long long)block);
    path = spruce_maskreader_path(r);
    n = spruce_maskreader_count(r);
    s->masks = calloc((size_t)n + 1, sizeof *s->masks);
    if (!s->masks)
        return spruce__seterr(SPRUCE_ENOMEM, "%s: out of memory for %d masks", path, n);
    for (i = 0; i < n; i++) {
        spruce_masks_summary_entry *e = &s->masks[i];
        size_t ne;
        e->name = spruce_maskreader_name_at(r, i);
        if ((rc = spruce_maskreader_meta(r, e->name, &e->meta)) < 0)
            goto done;
        ne = (size_t)e->meta.rows * (size_t)e->meta.cols;
        if ((rc = reserve(&keep, &cap, ne, path, e->name)) < 0 ||
            (rc = spruce_maskreader_read(r, e->name, keep, NULL)) < 0)
            goto done;
        if ((rc = spruce_mask_stats_compute(keep, e->meta.rows, e->meta.cols, block,
                                            &e->stats)) < 0) {
            rc = spruce__seterr(rc, "%s: mask %s: no statistics for a (%lld, %lld) mask", path,
                                e->name, (long long)e->meta.rows, (long long)e->meta.cols);
            goto done;
        }
        recorded_pattern(r, e, keep);
        s->numel += (int64_t)ne;
        s->kept += e->stats.kept;
        s->any_loss |= e->meta.has_loss;
    }
    s->count = n;
    if (s->numel)
        s->sparsity = 1.0 - (double)s->kept / (double)s->numel;
done:
    free(keep);
    if (rc < 0)
        spruce_masks_summary_clear(s);
    return rc;
}

/* ---- comparison --------------------------------------------------------- */

void spruce_masks_comparison_clear(spruce_masks_comparison *c)
{
    if (!c)
        return;
    free(c->masks);
    free(c->only_a);
    free(c->only_b);
    memset(c, 0, sizeof *c);
}

int spruce_masks_compare(const spruce_maskreader *a, const spruce_maskreader *b,
                         spruce_masks_comparison *c)
{
    uint8_t *ka = NULL, *kb = NULL;
    size_t cap = 0, capb = 0;
    int rc = 0, i, na, nb;
    spruce_mask_diff *tot;

    if (!c)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_masks_compare: NULL argument");
    memset(c, 0, sizeof *c);
    if (!a || !b)
        return spruce__seterr(SPRUCE_EINVAL, "spruce_masks_compare: NULL reader");
    na = spruce_maskreader_count(a);
    nb = spruce_maskreader_count(b);
    c->masks = calloc((size_t)na + 1, sizeof *c->masks);
    c->only_a = calloc((size_t)na + 1, sizeof *c->only_a);
    c->only_b = calloc((size_t)nb + 1, sizeof *c->only_b);
    if (!c->masks || !c->only_a || !c->only_b) {
        rc = spruce__seterr(SPRUCE_ENOMEM, "%s, %s: out of memory for %d and %d masks",
                            spruce_maskreader_path(a), spruce_maskreader_path(b), na, nb);
        goto done;
    }
    tot = &c->total;
    for (i = 0; i < na; i++) {
        const char *name = spruce_maskreader_name_at(a, i);
        spruce_masks_comparison_entry *e = &c->masks[c->count];
        spruce_mask_meta ma, mb;
        size_t ne;
        if (spruce_maskreader_find(b, name) < 0) {
            c->only_a[c->n_only_a++] = name;
            continue;
        }
        if ((rc = spruce_maskreader_meta(a, name, &ma)) < 0 ||
            (rc = spruce_maskreader_meta(b, name, &mb)) < 0)
            goto done;
        if (ma.rows != mb.rows || ma.cols != mb.cols) {
            rc = spruce__seterr(SPRUCE_ESHAPE, "mask %s is (%lld, %lld) in %s but (%lld, %lld) "
                                "in %s", name, (long long)ma.rows, (long long)ma.cols,
                                spruce_maskreader_path(a), (long long)mb.rows,
                                (long long)mb.cols, spruce_maskreader_path(b));
            goto done;
        }
        ne = (size_t)ma.rows * (size_t)ma.cols;
        if ((rc = reserve(&ka, &cap, ne, spruce_maskreader_path(a), name)) < 0 ||
            (rc = reserve(&kb, &capb, ne, spruce_maskreader_path(b), name)) < 0 ||
            (rc = spruce_maskreader_read(a, name, ka, NULL)) < 0 ||
            (rc = spruce_maskreader_read(b, name, kb, NULL)) < 0)
            goto done;
        e->name = name;
        e->rows = ma.rows;
        e->cols = ma.cols;
        spruce_mask_diff_compute(ka, kb, (int64_t)ne, &e->diff);
        tot->numel += e->diff.numel;
        tot->kept_a += e->diff.kept_a;
        tot->kept_b += e->diff.kept_b;
        tot->shared += e->diff.shared;
        tot->agree += e->diff.agree;
        c->count++;
    }
    for (i = 0; i < nb; i++) {
        const char *name = spruce_maskreader_name_at(b, i);
        if (spruce_maskreader_find(a, name) < 0)
            c->only_b[c->n_only_b++] = name;
    }
    tot->agreement = tot->numel ? (double)tot->agree / (double)tot->numel : 1.0;
    tot->jaccard = tot->kept_a + tot->kept_b - tot->shared
                       ? (double)tot->shared / (double)(tot->kept_a + tot->kept_b - tot->shared)
                       : 1.0;
done:
    free(ka);
    free(kb);
    if (rc < 0)
        spruce_masks_comparison_clear(c);
    return rc;
}
