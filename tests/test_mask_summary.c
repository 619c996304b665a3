/* test_mask_summary.c: the summary and comparison of mask files behind `spruce
 * masks info|diff`, against direct counts. */
#include "masks_testutil.h"
#include "spruce_ckpt_masks.h"

/* ---- summary and comparison --------------------------------------------- */

TestSuite(summary, .init = make_tmpdir, .fini = remove_tmpdir);

/* Two files: a has x (30 % kept), y (2:4) and only_a; b has x (50 % kept),
 * y (the same 2:4 mask) and only_b. */
#define ROWS 24
#define COLS 160
static void two_files(uint8_t **x_a, uint8_t **x_b, uint8_t **y)
{
    spruce_maskfile *f;
    int64_t i;
    *x_a = random_mask(1, ROWS * COLS, 30);
    *x_b = random_mask(1, ROWS * COLS, 50);
    *y = calloc(ROWS * COLS, 1);
    for (i = 0; i < ROWS * COLS; i += 4) {
        int j = (int)(rnd() % 3);
        (*y)[i + j] = (*y)[i + 3] = 1;
    }
    cr_assert_eq(spruce_maskfile_create(tpath("a.h5"), &f), 0);
    cr_assert_eq(spruce_maskfile_write(f, "x.weight", ROWS, COLS, *x_a, NULL), 0);
    cr_assert_eq(spruce_maskfile_write(f, "y.weight", ROWS, COLS, *y, NULL), 0);
    cr_assert_eq(spruce_maskfile_write(f, "only_a.weight", 2, 4, *y, NULL), 0);
    cr_assert_eq(spruce_maskfile_commit(f), 0);
    cr_assert_eq(spruce_maskfile_create(tpath("b.h5"), &f), 0);
    cr_assert_eq(spruce_maskfile_write(f, "only_b.weight", 4, 4, *y, NULL), 0);
    cr_assert_eq(spruce_maskfile_write(f, "y.weight", ROWS, COLS, *y, NULL), 0);
    cr_assert_eq(spruce_maskfile_write(f, "x.weight", ROWS, COLS, *x_b, NULL), 0);
    cr_assert_eq(spruce_maskfile_commit(f), 0);
}

Test(summary, numbers_match_a_direct_count)
{
    uint8_t *xa, *xb, *y;
    spruce_maskreader *r;
    spruce_masks_summary s;
    int64_t i, r0, kx = 0, ky = 0, ko = 0, blk_kept[3] = {0, 0, 0};
    double rmin = 1, rmax = 0;
    two_files(&xa, &xb, &y);
    for (i = 0; i < ROWS * COLS; i++) {
        kx += xa[i];
        ky += y[i];
        blk_kept[(i % COLS) / 64] += xa[i];
    }
    for (i = 0; i < 8; i++)
        ko += y[i];
    for (r0 = 0; r0 < ROWS; r0++) {
        int64_t kept = 0, c;
        double sp;
        for (c = 0; c < COLS; c++)
            kept += xa[r0 * COLS + c];
        sp = 1.0 - (double)kept / COLS;
        rmin = sp < rmin ? sp : rmin;
        rmax = sp > rmax ? sp : rmax;
    }
    cr_assert_eq(spruce_maskreader_open(tpath("a.h5"), &r), 0);
    cr_assert_eq(spruce_masks_summarize(r, 64, &s), 0, "%s", spruce_errdetail());
    cr_assert_eq(s.count, 3);
    cr_assert_str_eq(s.masks[0].name, "x.weight");
    cr_assert_str_eq(s.masks[2].name, "only_a.weight");
    cr_assert_eq(s.masks[0].meta.rows, ROWS);
    cr_assert_eq(s.masks[0].meta.cols, COLS);
    cr_assert_eq(s.masks[0].stats.kept, kx);
    cr_assert_float_eq(s.masks[0].stats.sparsity, 1.0 - (double)kx / (ROWS * COLS), 1e-12);
    cr_assert_float_eq(s.masks[0].stats.row_min, rmin, 1e-12);
    cr_assert_float_eq(s.masks[0].stats.row_max, rmax, 1e-12);
    /* Column blocks of 64 over 160 columns: 64, 64 and 32 wide. */
    cr_assert_eq(s.masks[0].stats.nblocks, 3);
    cr_assert_float_eq(s.masks[0].stats.blk_max,
                       fmax(fmax(1.0 - blk_kept[0] / (64.0 * ROWS), 1.0 - blk_kept[1] / (64.0 * ROWS)),
                            1.0 - blk_kept[2] / (32.0 * ROWS)), 1e-12);
    cr_assert_eq(s.masks[0].stats.nm.m, 0);
    cr_assert_eq(s.masks[1].stats.nm.n, 2);
    cr_assert_eq(s.masks[1].stats.nm.m, 4);
    cr_assert(s.masks[1].stats.nm.exact);
    cr_assert_eq(s.numel, 2 * ROWS * COLS + 8);
    cr_assert_eq(s.kept, kx + ky + ko);
    cr_assert_float_eq(s.sparsity, 1.0 - (double)(kx + ky + ko) / (2 * ROWS * COLS + 8), 1e-12);
    cr_assert_eq(s.any_loss, 0);
    spruce_masks_summary_clear(&s);
    spruce_masks_summary_clear(NULL);
    cr_assert_eq(spruce_masks_summarize(r, -1, &s), SPRUCE_EINVAL);
    cr_assert_eq(s.count, 0);
    cr_assert_null(s.masks);
    spruce_maskreader_close(r);
    free(xa);
    free(xb);
    free(y);
}

Test(summary, an_empty_file_has_no_sparsity)
{
    spruce_maskfile *f;
    spruce_maskreader *r;
    spruce_masks_summary s;
    cr_assert_eq(spruce_maskfile_create(tpath("e.h5"), &f), 0);
    cr_assert_eq(spruce_maskfile_commit(f), 0);
    cr_assert_eq(spruce_maskreader_open(tpath("e.h5"), &r), 0);
    cr_assert_eq(spruce_masks_summarize(r, 0, &s), 0, "%s", spruce_errdetail());
    cr_assert_eq(s.count, 0);
    cr_assert_eq(s.numel, 0);
    cr_assert(isnan(s.sparsity));
    spruce_masks_summary_clear(&s);
    spruce_maskreader_close(r);
}

Test(summary, comparison_matches_a_direct_count)
{
    uint8_t *xa, *xb, *y;
    spruce_maskreader *a, *b;
    spruce_masks_comparison c;
    int64_t i, n = ROWS * COLS, ka = 0, kb = 0, both = 0, eq = 0, ky = 0;
    two_files(&xa, &xb, &y);
    for (i = 0; i < n; i++) {
        ka += xa[i];
        kb += xb[i];
        both += xa[i] && xb[i];
        eq += xa[i] == xb[i];
        ky += y[i];
    }
    cr_assert_eq(spruce_maskreader_open(tpath("a.h5"), &a), 0);
    cr_assert_eq(spruce_maskreader_open(tpath("b.h5"), &b), 0);
    cr_assert_eq(spruce_masks_compare(a, b, &c), 0, "%s", spruce_errdetail());
    cr_assert_eq(c.count, 2);
    cr_assert_str_eq(c.masks[0].name, "x.weight"); /* a's order */
    cr_assert_str_eq(c.masks[1].name, "y.weight");
    cr_assert_eq(c.masks[0].rows, ROWS);
    cr_assert_eq(c.masks[0].cols, COLS);
    cr_assert_eq(c.masks[0].diff.kept_a, ka);
    cr_assert_eq(c.masks[0].diff.kept_b, kb);
    cr_assert_eq(c.masks[0].diff.shared, both);
    cr_assert_float_eq(c.masks[0].diff.agreement, (double)eq / n, 1e-12);
    cr_assert_float_eq(c.masks[0].diff.jaccard, (double)both / (ka + kb - both), 1e-12);
    cr_assert_float_eq(c.masks[1].diff.agreement, 1.0, 1e-12);
    cr_assert_float_eq(c.masks[1].diff.jaccard, 1.0, 1e-12);
    cr_assert_eq(c.n_only_a, 1);
    cr_assert_str_eq(c.only_a[0], "only_a.weight");
    cr_assert_eq(c.n_only_b, 1);
    cr_assert_str_eq(c.only_b[0], "only_b.weight");
    cr_assert_eq(c.total.numel, 2 * n);
    cr_assert_eq(c.total.kept_a, ka + ky);
    cr_assert_eq(c.total.kept_b, kb + ky);
    cr_assert_eq(c.total.shared, both + ky);
    cr_assert_float_eq(c.total.agreement, (double)(eq + n) / (2 * n), 1e-12);
    cr_assert_float_eq(c.total.jaccard, (double)(both + ky) / (ka + kb + ky - both), 1e-12);
    spruce_masks_comparison_clear(&c);
    /* A file against itself. */
    cr_assert_eq(spruce_masks_compare(a, a, &c), 0);
    cr_assert_eq(c.count, 3);
    cr_assert_eq(c.n_only_a + c.n_only_b, 0);
    cr_assert_float_eq(c.total.jaccard, 1.0, 1e-12);
    spruce_masks_comparison_clear(&c);
    spruce_masks_comparison_clear(NULL);
    spruce_maskreader_close(a);
    spruce_maskreader_close(b);
    free(xa);
    free(xb);
    free(y);
}

Test(summary, different_shapes_name_the_mask_and_both_files)
{
    spruce_maskfile *f;
    spruce_maskreader *a, *b;
    spruce_masks_comparison c;
    uint8_t *k = random_mask(1, 64, 50);
    cr_assert_eq(spruce_maskfile_create(tpath("p.h5"), &f), 0);
    cr_assert_eq(spruce_maskfile_write(f, "w.weight", 8, 8, k, NULL), 0);
    cr_assert_eq(spruce_maskfile_commit(f), 0);
    cr_assert_eq(spruce_maskfile_create(tpath("q.h5"), &f), 0);
    cr_assert_eq(spruce_maskfile_write(f, "w.weight", 4, 16, k, NULL), 0);
    cr_assert_eq(spruce_maskfile_commit(f), 0);
    cr_assert_eq(spruce_maskreader_open(tpath("p.h5"), &a), 0);
    cr_assert_eq(spruce_maskreader_open(tpath("q.h5"), &b), 0);
    cr_assert_eq(spruce_masks_compare(a, b, &c), SPRUCE_ESHAPE);
    cr_assert(strstr(spruce_errdetail(), "w.weight") && strstr(spruce_errdetail(), "p.h5") &&
                  strstr(spruce_errdetail(), "q.h5") && strstr(spruce_errdetail(), "(8, 8)") &&
                  strstr(spruce_errdetail(), "(4, 16)"),
              "%s", spruce_errdetail());
    cr_assert_eq(c.count, 0);
    cr_assert_null(c.masks);
    spruce_maskreader_close(a);
    spruce_maskreader_close(b);
    free(k);
}

/* The pattern a file records is shown when the mask has it, however else the
 * data could be read; a recorded pattern the mask does not have is not
 * shown, what the data show is. */
Test(summary, recorded_pattern_shown_only_when_the_mask_has_it)
{
    spruce_maskfile *f;
    spruce_maskreader *r;
    spruce_masks_summary s;
    spruce_mask_info info = {0};
    uint8_t *k24 = nm_mask(8, 32, 2, 4), *k14 = nm_mask(8, 32, 3, 4);
    cr_assert_eq(spruce_maskfile_create(tpath("rec.h5"), &f), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_maskfile_set_attr_string(f, "pattern", "2:4"), 0);
    info.method = "magnitude";
    info.pattern = "4:8"; /* a 2:4 mask prunes 4 of every 8 too: the file's word is taken */
    cr_assert_eq(spruce_maskfile_write(f, "a.weight", 8, 32, k24, &info), 0);
    info.pattern = "2:4"; /* keeps 3 of every 4: not 2:4 */
    cr_assert_eq(spruce_maskfile_write(f, "b.weight", 8, 32, k14, &info), 0);
    info.pattern = NULL; /* written "unstructured": the data show 2:4 */
    cr_assert_eq(spruce_maskfile_write(f, "c.weight", 8, 32, k24, &info), 0);
    cr_assert_eq(spruce_maskfile_commit(f), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_maskreader_open(tpath("rec.h5"), &r), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_masks_summarize(r, 0, &s), 0, "%s", spruce_errdetail());
    cr_assert_eq(s.count, 3);
    cr_assert_eq(s.masks[0].stats.nm.n, 4);
    cr_assert_eq(s.masks[0].stats.nm.m, 8);
    cr_assert(s.masks[0].nm_recorded);
    cr_assert_eq(s.masks[1].stats.nm.n, 1);
    cr_assert_eq(s.masks[1].stats.nm.m, 4);
    cr_assert_not(s.masks[1].nm_recorded);
    cr_assert_eq(s.masks[2].stats.nm.n, 2);
    cr_assert_eq(s.masks[2].stats.nm.m, 4);
    cr_assert_not(s.masks[2].nm_recorded);
    spruce_masks_summary_clear(&s);
    spruce_maskreader_close(r);
    free(k24);
    free(k14);
}
