/* cmd_masks.c: `spruce masks export|apply|info|diff`: HDF5 mask files from and
 * onto checkpoints, and what they look like.  Option parsing and printing
 * only: selection, export, apply and the statistics are spruce_ckpt_masks.h. */
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "spruce_ckpt.h"
#include "spruce_ckpt_masks.h"
#include "spruce_masks.h"

enum { OPT_INCLUDE = 256, OPT_EXCLUDE, OPT_ALL, OPT_METHOD, OPT_PARTIAL, OPT_FORCE, OPT_JSON,
       OPT_BLOCK };

/* --include, --exclude, --all (shared by export and apply) into sel.
 * Returns 0, or the exit code. */
static int parse_select(int c, const char *arg, spruce_mask_selector *sel)
{
    int rc;
    switch (c) {
    case OPT_INCLUDE: rc = spruce_mask_selector_include(sel, arg); break;
    case OPT_EXCLUDE: rc = spruce_mask_selector_exclude(sel, arg); break;
    case OPT_ALL: spruce_mask_selector_set_all(sel, 1); return 0;
    default: return 2;
    }
    if (rc == SPRUCE_EINVAL) {
        cli_fail("--%s", spruce_errdetail()); /* "--include '(': invalid regular expression..." */
        return 2;
    }
    if (rc < 0) {
        cli_error(rc, "masks");
        return 1;
    }
    return 0;
}

/* A library failure of cmd.  Mismatches between the files (nothing selected,
 * a mask without a tensor or a tensor without a mask, different shapes) are
 * a sentence of their own; other errors say their kind first. */
static void masks_error(int rc, const char *cmd)
{
    if (rc == SPRUCE_ENOTFOUND || rc == SPRUCE_ESHAPE)
        cli_fail("%s: %s", cmd, spruce_errdetail());
    else
        cli_error(rc, "%s", cmd);
}

static const char *fmt_pct(char *buf, double v)
{
    if (isnan(v))
        snprintf(buf, 16, "-");
    else
        snprintf(buf, 16, "%.1f%%", 100.0 * v);
    return buf;
}

/* A number for JSON: non-finite values are null. */


/* ---- export ------------------------------------------------------------- */

static void export_usage(FILE *f)
{
    fprintf(f,
            "usage: spruce masks export MODEL_DIR -o FILE.h5 [options]\n\n"
            "Write the masks of an already-pruned checkpoint: kept = value != 0 (-0.0 is zero in\n"
            "every dtype).  By default every 2-D tensor except embeddings and the output head\n"
            "(lm_head) gets a mask, i.e. the linear layers of a LLaMA-style model.\n\n"
            "options:\n"
            "  -o, --output FILE.h5   the mask file to write (replaced atomically, through\n"
            "                         FILE.h5.tmp-<pid>; never inside MODEL_DIR)\n"
            "      --include REGEX    only tensors whose name matches (POSIX extended regex;\n"
            "                         repeatable: any may match)\n"
            "      --exclude REGEX    skip tensors whose name matches (repeatable)\n"
            "      --all              do not skip embeddings and lm_head by default\n"
            "      --method NAME      the 'method' attribute to record (default: unknown)\n"
            "  -h, --help             this message\n\n"
            "A failure, SIGINT, SIGTERM or SIGHUP leaves an existing FILE.h5 as it was and no\n"
            "temporary file; one a killed run left is removed by the next run (and named).\n");
}

static int export_progress(void *ctx, const spruce_ckpt_masks_progress *p)
{
    (void)ctx;
    if (cli_interrupted())
        return 1; /* stop: the temporary file is removed */
    if (cli_verbose && p->event == SPRUCE_CKPT_MASKS_DONE)
        fprintf(stderr, "masks export: %s (%lld x %lld) sparsity %.2f%% %s\n", p->name,
                (long long)p->rows, (long long)p->cols, 100.0 * p->sparsity, p->pattern);
    return 0;
}

static int masks_export(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'}, {"include", required_argument, NULL, OPT_INCLUDE},
        {"exclude", required_argument, NULL, OPT_EXCLUDE}, {"all", no_argument, NULL, OPT_ALL},
        {"method", required_argument, NULL, OPT_METHOD}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *out = NULL;
    spruce_mask_selector *sel = NULL;
    spruce_ckpt *ck = NULL;
    spruce_ckpt_masks_opts o;
    spruce_ckpt_masks_result res;
    int c, ret = 1, rc;
    int64_t kept;
    double t0 = spruce_clock_now();

    spruce_ckpt_masks_opts_init(&o);
    o.method = "unknown";
    o.source = "spruce masks export";
    o.progress = export_progress;
    if ((rc = spruce_mask_selector_alloc(NULL, &sel)) < 0) {
        cli_error(rc, "masks export");
        return 1;
    }
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        if (c == 'h') {
            export_usage(stdout);
            ret = 0;
            goto done;
        } else if (c == 'o') {
            out = optarg;
        } else if (c == OPT_METHOD) {
            o.method = optarg;
        } else if ((ret = parse_select(c, optarg, sel)) != 0) {
            if (c == '?' || c == ':')
                export_usage(stderr);
            goto done;
        }
    }
    ret = 2;
    if (optind + 1 != argc || !out) {
        cli_fail("masks export: expected MODEL_DIR and -o FILE.h5");
        export_usage(stderr);
        goto done;
    }
    if (cli_check_output("masks export", out, 0, "the mask file", argv[optind],
                         "the input checkpoint"))
        goto done;
    ret = 1;
    cli_signals_install();
    cli_clean_stale("masks export", out);
    if ((rc = spruce_ckpt_open(argv[optind], &ck)) < 0) {
        cli_error(rc, "masks export: %s", argv[optind]);
        goto done;
    }
    if ((rc = spruce_mask_selector_use_ckpt(sel, ck)) < 0) {
        cli_error(rc, "masks export: %s", argv[optind]);
        goto done;
    }
    o.select = sel;
    if ((rc = spruce_ckpt_masks_export(ck, out, &o, &res)) != 0) {
        if (!cli_interrupted())
            masks_error(rc, "masks export");
        goto done;
    }
    kept = res.params - res.zeros;
    fprintf(stderr, "masks export: %d masks, %lld weights, sparsity %.2f%%, written to %s in %.1f s\n",
            res.tensors, (long long)res.params,
            res.params ? 100.0 * (1.0 - (double)kept / (double)res.params) : 0.0, out,
            spruce_clock_now() - t0);
    ret = 0;
done:
    spruce_ckpt_close(ck);
    spruce_mask_selector_free(sel);
    cli_signals_reraise("masks export");
    return ret;
}

/* ---- apply -------------------------------------------------------------- */

static void apply_usage(FILE *f)
{
    fprintf(f,
            "usage: spruce masks apply MODEL_DIR FILE.h5 -o OUT_DIR [options]\n\n"
            "Write a copy of MODEL_DIR with exactly the pruned places of FILE.h5 set to zero\n"
            "(+0.0); every other byte of every file is identical to the input.  Every mask must\n"
            "have a tensor of the same shape, and every tensor that would get a mask (2-D, not\n"
            "embeddings/lm_head, see --include/--exclude/--all) must have one.\n\n"
            "options:\n"
            "  -o, --output OUT_DIR   the checkpoint to write (created atomically, through\n"
            "                         OUT_DIR.tmp-<pid>; never MODEL_DIR, inside it or\n"
            "                         holding it or FILE.h5)\n"
            "      --partial          allow masks without a tensor and tensors without a mask\n"
            "                         (they are listed and skipped); shapes must still match\n"
            "      --force            replace an existing non-empty OUT_DIR\n"
            "      --include REGEX    tensors expected to have a mask (repeatable)\n"
            "      --exclude REGEX    tensors not expected to have a mask (repeatable)\n"
            "      --all              expect masks for embeddings and lm_head too\n"
            "  -h, --help             this message\n\n"
            "A failure, SIGINT, SIGTERM or SIGHUP leaves an existing OUT_DIR as it was and no\n"
            "temporary directory; one a killed run left is removed by the next run (and named).\n");
}

/* The model directory, for the messages. */
static int apply_progress(void *ctx, const spruce_ckpt_masks_progress *p)
{
    const char *model = ctx;
    if (cli_interrupted())
        return 1; /* stop: the temporary directory is removed */
    if (p->event == SPRUCE_CKPT_MASKS_NO_TENSOR)
        fprintf(stderr, "masks apply: skipping mask %s: no such tensor in %s\n", p->name, model);
    else if (p->event == SPRUCE_CKPT_MASKS_NO_MASK)
        fprintf(stderr, "masks apply: tensor %s has no mask: copied unchanged\n", p->name);
    else if (cli_verbose)
        fprintf(stderr, "masks apply: %s\n", p->name);
    return 0;
}

static int masks_apply(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'}, {"partial", no_argument, NULL, OPT_PARTIAL},
        {"force", no_argument, NULL, OPT_FORCE}, {"include", required_argument, NULL, OPT_INCLUDE},
        {"exclude", required_argument, NULL, OPT_EXCLUDE}, {"all", no_argument, NULL, OPT_ALL},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *out = NULL;
    spruce_mask_selector *sel = NULL;
    spruce_ckpt *ck = NULL;
    spruce_maskreader *mr = NULL;
    spruce_ckpt_masks_opts o;
    spruce_ckpt_masks_result res;
    int c, ret = 1, rc;
    double t0 = spruce_clock_now();

    spruce_ckpt_masks_opts_init(&o);
    o.progress = apply_progress;
    if ((rc = spruce_mask_selector_alloc(NULL, &sel)) < 0) {
        cli_error(rc, "masks apply");
        return 1;
    }
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        if (c == 'h') {
            apply_usage(stdout);
            ret = 0;
            goto done;
        } else if (c == 'o') {
            out = optarg;
        } else if (c == OPT_PARTIAL) {
            o.partial = 1;
        } else if (c == OPT_FORCE) {
            o.force = 1;
        } else if ((ret = parse_select(c, optarg, sel)) != 0) {
            if (c == '?' || c == ':')
                apply_usage(stderr);
            goto done;
        }
    }
    ret = 2;
    if (optind + 2 != argc || !out) {
        cli_fail("masks apply: expected MODEL_DIR FILE.h5 and -o OUT_DIR");
        apply_usage(stderr);
        goto done;
    }
    if (cli_check_output("masks apply", out, 1, "the output directory", argv[optind],
                         "the input checkpoint") ||
        cli_check_output("masks apply", out, 1, "the output directory", argv[optind + 1],
                         "the mask file"))
        goto done;
    ret = 1;
    cli_signals_install();
    cli_clean_stale("masks apply", out);
    if ((rc = spruce_ckpt_open(argv[optind], &ck)) < 0) {
        cli_error(rc, "masks apply: %s", argv[optind]);
        goto done;
    }
    if ((rc = spruce_mask_selector_use_ckpt(sel, ck)) < 0) {
        cli_error(rc, "masks apply: %s", argv[optind]);
        goto done;
    }
    if ((rc = spruce_maskreader_open(argv[optind + 1], &mr)) < 0) {
        cli_error(rc, "masks apply");
        goto done;
    }
    o.select = sel;
    o.ctx = argv[optind];
    if ((rc = spruce_ckpt_masks_apply(ck, mr, out, &o, &res)) != 0) {
        if (!cli_interrupted())
            masks_error(rc, "masks apply");
        goto done;
    }
    fprintf(stderr,
            "masks apply: %d masks applied, %d skipped, %lld of %lld weights zeroed (%.2f%%), "
            "written to %s in %.1f s\n",
            res.tensors, res.skipped, (long long)res.zeros, (long long)res.params,
            res.params ? 100.0 * (double)res.zeros / (double)res.params : 0.0, out,
            spruce_clock_now() - t0);
    ret = 0;
done:
    spruce_maskreader_close(mr);
    spruce_ckpt_close(ck);
    spruce_mask_selector_free(sel);
    cli_signals_reraise("masks apply");
    return ret;
}

/* ---- info --------------------------------------------------------------- */

static void info_usage(FILE *f)
{
    fprintf(f,
            "usage: spruce masks info FILE.h5 [--json] [--block N]\n\n"
            "One line per mask: shape; sparsity (fraction pruned); N:M structure; sparsity of\n"
            "the rows (min / mean / max) and of the column blocks of N columns, all rows\n"
            "(min / mean / max); totals.  The file's attributes come first.\n\n"
            "N:M: N pruned of every M, as --pattern N:M means (1:4 keeps 3 of every 4).  The\n"
            "pattern the file records is shown when the mask has it (every aligned group of M\n"
            "columns of a row prunes at least N); otherwise what the data show: for M in 2, 4,\n"
            "8, 16 (dividing the columns), N is the fewest pruned in any group, and M counts\n"
            "when N >= 1 and at least half of the groups prune exactly N; the largest N/M is\n"
            "shown, then the smallest M.  '2:4' when every group prunes exactly N, '>=2:4'\n"
            "when some prune more (e.g. weights that were zero already), '-' when none fits.\n\n"
            "options:\n"
            "      --json      machine-readable output\n"
            "      --block N   column block width (default 128)\n"
            "  -h, --help      this message\n");
}

static json_t *info_json(const char *file, const spruce_maskreader *mr,
                         const spruce_masks_summary *s)
{
    json_t *root = json_object(), *attrs = json_object(), *tensors = json_array(),
           *total = json_object();
    int i;
    json_object_set_new(root, "file", json_string(file));
    for (i = 0; i < spruce_maskreader_nattrs(mr); i++) {
        const spruce_mask_attr *a = spruce_maskreader_attr_at(mr, i);
        json_object_set_new(attrs, a->key,
                            a->type == SPRUCE_MASK_ATTR_INT      ? json_integer(a->i)
                            : a->type == SPRUCE_MASK_ATTR_DOUBLE ? cli_json_real(a->d)
                                                                 : json_string(a->s));
    }
    json_object_set_new(root, "attributes", attrs);
    for (i = 0; i < s->count; i++) {
        const spruce_masks_summary_entry *e = &s->masks[i];
        const spruce_mask_stats *st = &e->stats;
        const spruce_mask_meta *meta = &e->meta;
        json_t *o = json_object(), *nm, *rs = json_object(), *bs = json_object();
        json_object_set_new(o, "name", json_string(e->name));
        json_object_set_new(o, "shape", json_pack("[I, I]", (json_int_t)meta->rows,
                                                  (json_int_t)meta->cols));
        json_object_set_new(o, "numel", json_integer((json_int_t)(meta->rows * meta->cols)));
        json_object_set_new(o, "kept", json_integer((json_int_t)st->kept));
        json_object_set_new(o, "sparsity", cli_json_real(st->sparsity));
        nm = st->nm.m ? json_pack("{s:i, s:i, s:b, s:b}", "n", st->nm.n, "m", st->nm.m, "exact",
                                  st->nm.exact, "recorded", e->nm_recorded)
                      : json_null();
        json_object_set_new(o, "nm", nm);
        json_object_set_new(rs, "min", cli_json_real(st->row_min));
        json_object_set_new(rs, "mean", cli_json_real(st->row_mean));
        json_object_set_new(rs, "max", cli_json_real(st->row_max));
        json_object_set_new(o, "row_sparsity", rs);
        json_object_set_new(bs, "block", json_integer((json_int_t)st->block));
        json_object_set_new(bs, "blocks", json_integer((json_int_t)st->nblocks));
        json_object_set_new(bs, "min", cli_json_real(st->blk_min));
        json_object_set_new(bs, "mean", cli_json_real(st->blk_mean));
        json_object_set_new(bs, "max", cli_json_real(st->blk_max));
        json_object_set_new(o, "col_block_sparsity", bs);
        json_object_set_new(o, "pattern", json_string(meta->pattern));
        json_object_set_new(o, "method", json_string(meta->method));
        json_object_set_new(o, "sparsity_attr", cli_json_real(meta->sparsity));
        json_object_set_new(o, "loss", meta->has_loss ? cli_json_real(meta->loss) : json_null());
        json_array_append_new(tensors, o);
    }
    json_object_set_new(root, "tensors", tensors);
    json_object_set_new(total, "tensors", json_integer(s->count));
    json_object_set_new(total, "numel", json_integer((json_int_t)s->numel));
    json_object_set_new(total, "kept", json_integer((json_int_t)s->kept));
    json_object_set_new(total, "sparsity", cli_json_real(s->sparsity));
    json_object_set_new(root, "total", total);
    return root;
}

static void info_text(const char *file, const spruce_maskreader *mr,
                      const spruce_masks_summary *s, long block)
{
    int i, width = 6;
    char blk[48];
    for (i = 0; i < s->count; i++)
        if ((int)strlen(s->masks[i].name) > width)
            width = (int)strlen(s->masks[i].name);
    printf("%s: spruce mask file, %d masks\n", file, s->count);
    for (i = 0; i < spruce_maskreader_nattrs(mr); i++) {
        const spruce_mask_attr *a = spruce_maskreader_attr_at(mr, i);
        if (!strcmp(a->key, "format"))
            continue;
        printf("  %-16s %s\n", a->key, a->s);
    }
    snprintf(blk, sizeof blk, "col blocks of %ld", block);
    printf("\n%-*s  %-13s  %8s  %-6s  %-20s    %-20s\n", width, "", "", "", "", "row sparsity",
           blk);
    printf("%-*s  %-13s  %8s  %-6s  %6s %6s %6s    %6s %6s %6s%s\n", width, "tensor", "shape",
           "sparsity", "N:M", "min", "mean", "max", "min", "mean", "max",
           s->any_loss ? "        loss" : "");
    for (i = 0; i < s->count; i++) {
        const spruce_mask_stats *st = &s->masks[i].stats;
        const spruce_mask_meta *meta = &s->masks[i].meta;
        char shape[40], nm[16], b[6][16];
        snprintf(shape, sizeof shape, "%lld x %lld", (long long)meta->rows, (long long)meta->cols);
        if (st->nm.m)
            snprintf(nm, sizeof nm, "%s%d:%d", st->nm.exact ? "" : ">=", st->nm.n, st->nm.m);
        else
            snprintf(nm, sizeof nm, "-");
        printf("%-*s  %-13s  %7.2f%%  %-6s  %6s %6s %6s    %6s %6s %6s", width, s->masks[i].name,
               shape, 100.0 * st->sparsity, nm, fmt_pct(b[0], st->row_min),
               fmt_pct(b[1], st->row_mean), fmt_pct(b[2], st->row_max),
               fmt_pct(b[3], st->blk_min), fmt_pct(b[4], st->blk_mean),
               fmt_pct(b[5], st->blk_max));
        if (meta->has_loss)
            printf("  %10.4g", meta->loss);
        putchar('\n');
    }
    printf("%-*s  %-13s  %7.2f%%\n", width, "total", "",
           s->numel ? 100.0 * s->sparsity : 0.0);
    printf("\n%lld weights, %lld kept; row sparsity: per output row; column blocks: %ld columns, "
           "all rows\n", (long long)s->numel, (long long)s->kept, block);
}

static int masks_info(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, OPT_JSON},
                                         {"block", required_argument, NULL, OPT_BLOCK},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    spruce_maskreader *mr = NULL;
    spruce_masks_summary s;
    int c, json = 0, ret = 1, rc;
    long block = 128;
    json_t *root = NULL;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'h') {
            info_usage(stdout);
            return 0;
        } else if (c == OPT_JSON) {
            json = 1;
        } else if (c == OPT_BLOCK) {
            if (cli_parse_int("--block", optarg, 1, 1L << 30, &block))
                return 2;
        } else {
            info_usage(stderr);
            return 2;
        }
    }
    if (optind + 1 != argc) {
        cli_fail("masks info: expected one FILE.h5");
        info_usage(stderr);
        return 2;
    }
    if ((rc = spruce_maskreader_open(argv[optind], &mr)) < 0) {
        cli_error(rc, "masks info");
        return 1;
    }
    if ((rc = spruce_masks_summarize(mr, block, &s)) < 0) {
        cli_error(rc, "masks info");
        goto done;
    }
    if (json) {
        root = info_json(argv[optind], mr, &s);
        if (json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0) {
            cli_fail("masks info: cannot write JSON");
            goto done;
        }
        fputc('\n', stdout);
    } else {
        info_text(argv[optind], mr, &s, block);
    }
    ret = 0;
done:
    json_decref(root);
    spruce_masks_summary_clear(&s);
    spruce_maskreader_close(mr);
    return ret;
}

/* ---- diff --------------------------------------------------------------- */

static void diff_usage(FILE *f)
{
    fprintf(f,
            "usage: spruce masks diff A.h5 B.h5 [--json]\n\n"
            "Per mask present in both files: weights kept by A, by B and by both (shared);\n"
            "agreement = fraction of positions where A and B decide the same; Jaccard = shared /\n"
            "kept by either.  Masks present in only one file are listed.  Masks of different\n"
            "shapes are an error.\n\n"
            "options:\n"
            "      --json   machine-readable output\n"
            "  -h, --help   this message\n");
}

static json_t *diff_json(const char *fa, const char *fb, const spruce_masks_comparison *c)
{
    json_t *tensors = json_array(), *only_a = json_array(), *only_b = json_array();
    const spruce_mask_diff *tot = &c->total;
    int i;
    for (i = 0; i < c->count; i++) {
        const spruce_masks_comparison_entry *e = &c->masks[i];
        const spruce_mask_diff *d = &e->diff;
        json_array_append_new(
            tensors, json_pack("{s:s, s:[I, I], s:I, s:I, s:I, s:I, s:o, s:o}", "name", e->name,
                               "shape", (json_int_t)e->rows, (json_int_t)e->cols, "numel",
                               (json_int_t)d->numel, "kept_a", (json_int_t)d->kept_a, "kept_b",
                               (json_int_t)d->kept_b, "shared", (json_int_t)d->shared,
                               "agreement", cli_json_real(d->agreement), "jaccard", cli_json_real(d->jaccard)));
    }
    for (i = 0; i < c->n_only_a; i++)
        json_array_append_new(only_a, json_string(c->only_a[i]));
    for (i = 0; i < c->n_only_b; i++)
        json_array_append_new(only_b, json_string(c->only_b[i]));
    return json_pack("{s:s, s:s, s:o, s:o, s:o, s:{s:i, s:I, s:I, s:I, s:I, s:o, s:o}}", "a", fa,
                     "b", fb, "tensors", tensors, "only_in_a", only_a, "only_in_b", only_b,
                     "total", "tensors", c->count, "numel", (json_int_t)tot->numel, "kept_a",
                     (json_int_t)tot->kept_a, "kept_b", (json_int_t)tot->kept_b, "shared",
                     (json_int_t)tot->shared, "agreement", cli_json_real(tot->agreement), "jaccard",
                     cli_json_real(tot->jaccard));
}

/* width: the longest mask name of A (at least 6). */
static void diff_row(int width, const char *name, const char *shape, const spruce_mask_diff *d)
{
    printf("%-*s  %-13s  %12lld  %12lld  %12lld  %8.2f%%  %7.4f\n", width, name, shape,
           (long long)d->kept_a, (long long)d->kept_b, (long long)d->shared,
           100.0 * d->agreement, d->jaccard);
}

static void diff_text(const char *fa, const char *fb, const spruce_maskreader *ra,
                      const spruce_masks_comparison *c)
{
    int i, width = 6;
    for (i = 0; i < spruce_maskreader_count(ra); i++) {
        const char *name = spruce_maskreader_name_at(ra, i);
        if ((int)strlen(name) > width)
            width = (int)strlen(name);
    }
    printf("%-*s  %-13s  %12s  %12s  %12s  %9s  %7s\n", width, "tensor", "shape", "kept A",
           "kept B", "shared", "agreement", "Jaccard");
    for (i = 0; i < c->count; i++) {
        const spruce_masks_comparison_entry *e = &c->masks[i];
        char shape[40];
        snprintf(shape, sizeof shape, "%lld x %lld", (long long)e->rows, (long long)e->cols);
        diff_row(width, e->name, shape, &e->diff);
    }
    diff_row(width, "total", "", &c->total);
    for (i = 0; i < c->n_only_a; i++)
        printf("only in %s: %s\n", fa, c->only_a[i]);
    for (i = 0; i < c->n_only_b; i++)
        printf("only in %s: %s\n", fb, c->only_b[i]);
}

static int masks_diff(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, OPT_JSON},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    spruce_maskreader *ra = NULL, *rb = NULL;
    spruce_masks_comparison cmp;
    int c, json = 0, ret = 1, rc;
    json_t *root = NULL;

    memset(&cmp, 0, sizeof cmp);
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'h') {
            diff_usage(stdout);
            return 0;
        } else if (c == OPT_JSON) {
            json = 1;
        } else {
            diff_usage(stderr);
            return 2;
        }
    }
    if (optind + 2 != argc) {
        cli_fail("masks diff: expected two mask files A.h5 B.h5");
        diff_usage(stderr);
        return 2;
    }
    if ((rc = spruce_maskreader_open(argv[optind], &ra)) < 0 ||
        (rc = spruce_maskreader_open(argv[optind + 1], &rb)) < 0) {
        cli_error(rc, "masks diff");
        goto done;
    }
    if ((rc = spruce_masks_compare(ra, rb, &cmp)) < 0) {
        masks_error(rc, "masks diff");
        goto done;
    }
    if (json) {
        root = diff_json(argv[optind], argv[optind + 1], &cmp);
        if (!root || json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0) {
            cli_fail("masks diff: cannot write JSON");
            goto done;
        }
        fputc('\n', stdout);
    } else {
        diff_text(argv[optind], argv[optind + 1], ra, &cmp);
    }
    ret = 0;
done:
    json_decref(root);
    spruce_masks_comparison_clear(&cmp);
    spruce_maskreader_close(ra);
    spruce_maskreader_close(rb);
    return ret;
}

/* ---- dispatch ----------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: spruce masks <command> [options]\n\n"
            "HDF5 mask files: one boolean dataset per pruned tensor, TRUE = weight kept.\n\n"
            "commands:\n"
            "  export MODEL_DIR -o FILE.h5             masks of an already-pruned checkpoint\n"
            "  apply MODEL_DIR FILE.h5 -o OUT_DIR      zero the pruned places of another copy\n"
            "  info FILE.h5 [--json]                   sparsity, N:M, rows, column blocks\n"
            "  diff A.h5 B.h5 [--json]                 shared kept weights, agreement, Jaccard\n\n"
            "'spruce masks <command> --help' describes one command.\n");
}

int spruce_cmd_masks(int argc, char **argv)
{
    const char *sub;
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    sub = argv[1];
    if (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(sub, "export"))
        return masks_export(argc - 1, argv + 1);
    if (!strcmp(sub, "apply"))
        return masks_apply(argc - 1, argv + 1);
    if (!strcmp(sub, "info"))
        return masks_info(argc - 1, argv + 1);
    if (!strcmp(sub, "diff"))
        return masks_diff(argc - 1, argv + 1);
    cli_fail("masks: unknown command '%s' (try 'spruce masks --help')", sub);
    return 2;
}
