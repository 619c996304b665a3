/* cmd_masks.c: `spruce masks export|apply|info|diff`: HDF5 mask files from and
 * onto checkpoints, and what they look like. */
#include <getopt.h>
#include <math.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "config.h"
#include "cli.h"
#include "spruce_ckpt.h"
#include "spruce_masks.h"

/* ---- which tensors have masks ------------------------------------------- */

/* By default every 2-D tensor except embeddings and the output head: in a
 * LLaMA-style checkpoint exactly the seven linear layers of each block (norms
 * are 1-D).  --exclude adds patterns, --include restricts, --all drops the
 * default exclusion. */
#define DEFAULT_EXCLUDE "(^|\\.)(embed_tokens|embed_positions|embeddings?|wte|wpe|lm_head)(\\.|$)"

#define MAX_PATTERNS 32

typedef struct {
    regex_t inc[MAX_PATTERNS], exc[MAX_PATTERNS + 1];
    int ninc, nexc;
} selector;

static int sel_add(regex_t *arr, int *n, const char *re, const char *opt)
{
    char msg[256];
    int e;
    if (*n >= MAX_PATTERNS) {
        cli_fail("%s: at most %d patterns", opt, MAX_PATTERNS);
        return -1;
    }
    e = regcomp(&arr[*n], re, REG_EXTENDED | REG_NOSUB);
    if (e) {
        regerror(e, &arr[*n], msg, sizeof msg);
        cli_fail("%s '%s': invalid regular expression: %s", opt, re, msg);
        return -1;
    }
    (*n)++;
    return 0;
}

static void sel_free(selector *s)
{
    int i;
    for (i = 0; i < s->ninc; i++)
        regfree(&s->inc[i]);
    for (i = 0; i < s->nexc; i++)
        regfree(&s->exc[i]);
    s->ninc = s->nexc = 0;
}

static int sel_match(const selector *s, const spruce_tensor *t)
{
    int i, ok;
    if (t->ndim != 2)
        return 0;
    for (i = 0; i < s->nexc; i++)
        if (regexec(&s->exc[i], t->name, 0, NULL, 0) == 0)
            return 0;
    if (s->ninc == 0)
        return 1;
    for (i = 0, ok = 0; i < s->ninc && !ok; i++)
        ok = regexec(&s->inc[i], t->name, 0, NULL, 0) == 0;
    return ok;
}

/* ---- zero test by bits -------------------------------------------------- */

/* Floating-point dtypes: a value is zero when every bit but the sign bit (the
 * top bit of the last, most significant byte: safetensors is little-endian)
 * is clear, so -0.0 counts as zero.  Integer dtypes: every bit clear. */
static int is_float_dtype(const char *dt)
{
    return dt[0] == 'F' || !strcmp(dt, "BF16");
}

/* keep[i] = element i is not zero.  t is (rows, cols) row-major. */
static void keep_from_tensor(const spruce_tensor *t, uint8_t *keep)
{
    size_t n = (size_t)spruce_tensor_numel(t), es = n ? t->nbytes / n : 0, i, b;
    const uint8_t *p = t->data;
    int fl = is_float_dtype(t->dtype_name);
    if (es == 4 && fl) {
        const uint32_t *v = t->data;
        for (i = 0; i < n; i++)
            keep[i] = (v[i] & 0x7fffffffu) != 0;
    } else if (es == 2 && fl) {
        const uint16_t *v = t->data;
        for (i = 0; i < n; i++)
            keep[i] = (v[i] & 0x7fffu) != 0;
    } else {
        for (i = 0; i < n; i++, p += es) {
            uint8_t acc = fl ? (uint8_t)(p[es - 1] & 0x7f) : p[es - 1];
            for (b = 0; b + 1 < es; b++)
                acc |= p[b];
            keep[i] = acc != 0;
        }
    }
}

static void now_iso(char *buf, size_t cap)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const char *fmt_pct(char *buf, double v)
{
    if (isnan(v))
        snprintf(buf, 16, "-");
    else
        snprintf(buf, 16, "%.1f%%", 100.0 * v);
    return buf;
}

/* ---- export ------------------------------------------------------------- */

static void export_usage(FILE *f)
{
    fprintf(f,
            "usage: spruce masks export MODEL_DIR -o FILE.h5 [options]\n\n"
            "Write the masks of an already-pruned checkpoint: kept = value != 0 (-0.0 is zero in\n"
            "every dtype).  By default every 2-D tensor except embeddings and the output head\n"
            "(lm_head) gets a mask, i.e. the linear layers of a LLaMA-style model.\n\n"
            "options:\n"
            "  -o, --output FILE.h5   the mask file to write (replaced atomically)\n"
            "      --include REGEX    only tensors whose name matches (POSIX extended regex;\n"
            "                         repeatable: any may match)\n"
            "      --exclude REGEX    skip tensors whose name matches (repeatable)\n"
            "      --all              do not skip embeddings and lm_head by default\n"
            "      --method NAME      the 'method' attribute to record (default: unknown)\n"
            "  -h, --help             this message\n");
}

enum { OPT_INCLUDE = 256, OPT_EXCLUDE, OPT_ALL, OPT_METHOD, OPT_PARTIAL, OPT_FORCE, OPT_JSON,
       OPT_BLOCK };

/* Parse the options shared by export and apply.  Returns 0, or the exit code. */
static int parse_select(int c, const char *arg, selector *s, int *all)
{
    switch (c) {
    case OPT_INCLUDE: return sel_add(s->inc, &s->ninc, arg, "--include") ? 2 : 0;
    case OPT_EXCLUDE: return sel_add(s->exc, &s->nexc, arg, "--exclude") ? 2 : 0;
    case OPT_ALL: *all = 1; return 0;
    default: return 2;
    }
}

static int finish_select(selector *s, int all)
{
    if (!all && sel_add(s->exc, &s->nexc, DEFAULT_EXCLUDE, "default exclusion"))
        return 2;
    return 0;
}

static int masks_export(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'}, {"include", required_argument, NULL, OPT_INCLUDE},
        {"exclude", required_argument, NULL, OPT_EXCLUDE}, {"all", no_argument, NULL, OPT_ALL},
        {"method", required_argument, NULL, OPT_METHOD}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *out = NULL, *method = "unknown";
    selector sel = {.ninc = 0, .nexc = 0};
    spruce_ckpt *ck = NULL;
    spruce_maskfile *mf = NULL;
    uint8_t *keep = NULL;
    size_t cap = 0;
    int c, all = 0, ret = 1, rc, i, nwritten = 0;
    int64_t tot = 0, totkept = 0;
    char date[64];
    double t0 = cli_now();

    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        if (c == 'h') {
            export_usage(stdout);
            sel_free(&sel);
            return 0;
        } else if (c == 'o') {
            out = optarg;
        } else if (c == OPT_METHOD) {
            method = optarg;
        } else if ((ret = parse_select(c, optarg, &sel, &all)) != 0) {
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
    if (finish_select(&sel, all))
        goto done;
    ret = 1;
    if ((rc = spruce_ckpt_open(argv[optind], &ck)) < 0) {
        cli_error(rc, "masks export: %s", argv[optind]);
        goto done;
    }
    if ((rc = spruce_maskfile_create(out, &mf)) < 0) {
        cli_error(rc, "masks export");
        goto done;
    }
    now_iso(date, sizeof date);
    if ((rc = spruce_maskfile_set_attr_string(mf, "model", argv[optind])) < 0 ||
        (rc = spruce_maskfile_set_attr_string(mf, "method", method)) < 0 ||
        (rc = spruce_maskfile_set_attr_string(mf, "source", "spruce masks export")) < 0 ||
        (rc = spruce_maskfile_set_attr_string(mf, "spruce_version", PACKAGE_VERSION)) < 0 ||
        (rc = spruce_maskfile_set_attr_string(mf, "date", date)) < 0) {
        cli_error(rc, "masks export");
        goto done;
    }
    for (i = 0; i < spruce_ckpt_count(ck); i++) {
        const spruce_tensor *t = spruce_ckpt_tensor_at(ck, i);
        spruce_mask_stats st;
        spruce_mask_info info;
        char pat[32];
        size_t n;
        if (!sel_match(&sel, t))
            continue;
        n = (size_t)spruce_tensor_numel(t);
        if (n == 0)
            continue;
        if (n > cap) {
            free(keep);
            keep = malloc(n);
            cap = n;
            if (!keep) {
                cli_fail("masks export: out of memory for tensor %s (%zu elements)", t->name, n);
                goto done;
            }
        }
        keep_from_tensor(t, keep);
        if ((rc = spruce_mask_stats_compute(keep, t->shape[0], t->shape[1], 0, &st)) < 0) {
            cli_error(rc, "masks export: %s", t->name);
            goto done;
        }
        /* The pattern attribute says what the zeros follow: N:M when every
         * aligned group keeps exactly N, else unstructured. */
        if (st.nm.m && st.nm.exact)
            snprintf(pat, sizeof pat, "%d:%d", st.nm.n, st.nm.m);
        else
            snprintf(pat, sizeof pat, "unstructured");
        info.pattern = pat;
        info.method = method;
        info.sparsity = st.sparsity;
        info.loss = 0;
        info.has_loss = 0;
        if ((rc = spruce_maskfile_write(mf, t->name, t->shape[0], t->shape[1], keep, &info)) < 0) {
            cli_error(rc, "masks export");
            goto done;
        }
        nwritten++;
        tot += (int64_t)n;
        totkept += st.kept;
        if (cli_verbose)
            fprintf(stderr, "masks export: %s (%lld x %lld) sparsity %.2f%% %s\n", t->name,
                    (long long)t->shape[0], (long long)t->shape[1], 100.0 * st.sparsity, pat);
    }
    if (nwritten == 0) {
        cli_fail("masks export: %s: no tensor matched the selection (2-D, not embeddings/lm_head, "
                 "--include/--exclude); nothing written", argv[optind]);
        goto done;
    }
    rc = spruce_maskfile_commit(mf);
    mf = NULL;
    if (rc < 0) {
        cli_error(rc, "masks export");
        goto done;
    }
    fprintf(stderr, "masks export: %d masks, %lld weights, sparsity %.2f%%, written to %s in %.1f s\n",
            nwritten, (long long)tot, tot ? 100.0 * (1.0 - (double)totkept / (double)tot) : 0.0,
            out, cli_now() - t0);
    ret = 0;
done:
    spruce_maskfile_abort(mf);
    spruce_ckpt_close(ck);
    sel_free(&sel);
    free(keep);
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
            "  -o, --output OUT_DIR   the checkpoint to write (created atomically)\n"
            "      --partial          allow masks without a tensor and tensors without a mask\n"
            "                         (they are listed and skipped); shapes must still match\n"
            "      --force            replace an existing non-empty OUT_DIR\n"
            "      --include REGEX    tensors expected to have a mask (repeatable)\n"
            "      --exclude REGEX    tensors not expected to have a mask (repeatable)\n"
            "      --all              expect masks for embeddings and lm_head too\n"
            "  -h, --help             this message\n");
}

static int masks_apply(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'}, {"partial", no_argument, NULL, OPT_PARTIAL},
        {"force", no_argument, NULL, OPT_FORCE}, {"include", required_argument, NULL, OPT_INCLUDE},
        {"exclude", required_argument, NULL, OPT_EXCLUDE}, {"all", no_argument, NULL, OPT_ALL},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *out = NULL, *mpath;
    selector sel = {.ninc = 0, .nexc = 0};
    spruce_ckpt *ck = NULL;
    spruce_maskreader *mr = NULL;
    spruce_ckpt_writer *w = NULL;
    uint8_t *keep = NULL, *buf = NULL;
    size_t cap = 0, bcap = 0;
    int c, all = 0, partial = 0, force = 0, ret = 1, rc, i, napplied = 0, nskipped = 0;
    int64_t tot = 0, zeroed = 0;
    double t0 = cli_now();

    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        if (c == 'h') {
            apply_usage(stdout);
            sel_free(&sel);
            return 0;
        } else if (c == 'o') {
            out = optarg;
        } else if (c == OPT_PARTIAL) {
            partial = 1;
        } else if (c == OPT_FORCE) {
            force = 1;
        } else if ((ret = parse_select(c, optarg, &sel, &all)) != 0) {
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
    if (finish_select(&sel, all))
        goto done;
    ret = 1;
    mpath = argv[optind + 1];
    if ((rc = spruce_ckpt_open(argv[optind], &ck)) < 0) {
        cli_error(rc, "masks apply: %s", argv[optind]);
        goto done;
    }
    if ((rc = spruce_maskreader_open(mpath, &mr)) < 0) {
        cli_error(rc, "masks apply");
        goto done;
    }
    /* Check both sides before writing anything. */
    for (i = 0; i < spruce_maskreader_count(mr); i++) {
        const char *name = spruce_maskreader_name_at(mr, i);
        const spruce_tensor *t = spruce_ckpt_find(ck, name);
        spruce_mask_meta meta;
        spruce_maskreader_meta(mr, name, &meta);
        if (!t) {
            if (!partial) {
                cli_fail("masks apply: %s: mask %s has no tensor in %s (use --partial to skip it)",
                         mpath, name, argv[optind]);
                goto done;
            }
            fprintf(stderr, "masks apply: skipping mask %s: no such tensor in %s\n", name,
                    argv[optind]);
            nskipped++;
            continue;
        }
        if (t->ndim != 2 || t->shape[0] != meta.rows || t->shape[1] != meta.cols) {
            char shape[128];
            int d, len = 0;
            for (d = 0; d < t->ndim && len < (int)sizeof shape - 24; d++)
                len += snprintf(shape + len, sizeof shape - (size_t)len, "%s%lld", d ? ", " : "",
                                (long long)t->shape[d]);
            shape[len] = '\0';
            cli_fail("masks apply: tensor %s: mask in %s is (%lld, %lld), tensor in %s is (%s)",
                     name, mpath, (long long)meta.rows, (long long)meta.cols,
                     spruce_ckpt_file_of(ck, t), shape);
            goto done;
        }
    }
    for (i = 0; i < spruce_ckpt_count(ck); i++) {
        const spruce_tensor *t = spruce_ckpt_tensor_at(ck, i);
        if (!sel_match(&sel, t) || spruce_maskreader_find(mr, t->name) >= 0)
            continue;
        if (!partial) {
            cli_fail("masks apply: tensor %s of %s has no mask in %s (use --partial to leave it "
                     "as it is, or --exclude)", t->name, argv[optind], mpath);
            goto done;
        }
        fprintf(stderr, "masks apply: tensor %s has no mask: copied unchanged\n", t->name);
    }
    if ((rc = spruce_ckpt_writer_begin(ck, out, force, &w)) < 0) {
        cli_error(rc, "masks apply: %s", out);
        goto done;
    }
    for (i = 0; i < spruce_maskreader_count(mr); i++) {
        const char *name = spruce_maskreader_name_at(mr, i);
        const spruce_tensor *t = spruce_ckpt_find(ck, name);
        size_t n, es, k;
        if (!t)
            continue;
        n = (size_t)spruce_tensor_numel(t);
        es = n ? t->nbytes / n : 0;
        if (n > cap) {
            free(keep);
            keep = malloc(n);
            cap = n;
        }
        if (t->nbytes > bcap) {
            free(buf);
            buf = malloc(t->nbytes);
            bcap = t->nbytes;
        }
        if (!keep || !buf) {
            cli_fail("masks apply: out of memory for tensor %s", name);
            goto done;
        }
        if ((rc = spruce_maskreader_read(mr, name, keep, NULL)) < 0) {
            cli_error(rc, "masks apply");
            goto done;
        }
        /* Copy the bytes, then clear the pruned elements. */
        memcpy(buf, t->data, t->nbytes);
        for (k = 0; k < n; k++)
            if (!keep[k]) {
                memset(buf + k * es, 0, es);
                zeroed++;
            }
        if ((rc = spruce_ckpt_writer_set_raw(w, name, buf, t->nbytes)) < 0) {
            cli_error(rc, "masks apply: %s", out);
            goto done;
        }
        napplied++;
        tot += (int64_t)n;
        if (cli_verbose)
            fprintf(stderr, "masks apply: %s\n", name);
    }
    rc = spruce_ckpt_writer_commit(w);
    w = NULL;
    if (rc < 0) {
        cli_error(rc, "masks apply: %s", out);
        goto done;
    }
    fprintf(stderr,
            "masks apply: %d masks applied, %d skipped, %lld of %lld weights zeroed (%.2f%%), "
            "written to %s in %.1f s\n",
            napplied, nskipped, (long long)zeroed, (long long)tot, tot ? 100.0 * (double)zeroed / (double)tot : 0.0,
            out, cli_now() - t0);
    ret = 0;
done:
    spruce_ckpt_writer_abort(w);
    spruce_maskreader_close(mr);
    spruce_ckpt_close(ck);
    sel_free(&sel);
    free(keep);
    free(buf);
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
            "N:M: for M in 4, 8, 16 (dividing the columns), N is the most weights kept in any\n"
            "aligned group of M columns of a row; the mask is N:M for the smallest M with\n"
            "N <= M/2.  Shown as '2:4' when every group keeps exactly N, '<=2:4' when some keep\n"
            "fewer (e.g. weights that were zero already), '-' when no M qualifies.\n\n"
            "options:\n"
            "      --json      machine-readable output\n"
            "      --block N   column block width (default 128)\n"
            "  -h, --help      this message\n");
}

static json_t *jreal(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static int masks_info(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, OPT_JSON},
                                         {"block", required_argument, NULL, OPT_BLOCK},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    spruce_maskreader *mr = NULL;
    uint8_t *keep = NULL;
    size_t cap = 0;
    int c, json = 0, ret = 1, rc, i, n, width = 6, anyloss = 0;
    long block = 128;
    int64_t tot = 0, totkept = 0;
    json_t *root = NULL;
    spruce_mask_stats *st = NULL;

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
    n = spruce_maskreader_count(mr);
    st = calloc((size_t)n + 1, sizeof *st);
    if (!st) {
        cli_fail("masks info: out of memory");
        goto done;
    }
    for (i = 0; i < n; i++) {
        const char *name = spruce_maskreader_name_at(mr, i);
        spruce_mask_meta meta;
        size_t ne;
        spruce_maskreader_meta(mr, name, &meta);
        ne = (size_t)meta.rows * (size_t)meta.cols;
        if (ne > cap) {
            free(keep);
            keep = malloc(ne);
            cap = ne;
            if (!keep) {
                cli_fail("masks info: out of memory for mask %s", name);
                goto done;
            }
        }
        if ((rc = spruce_maskreader_read(mr, name, keep, NULL)) < 0) {
            cli_error(rc, "masks info");
            goto done;
        }
        if ((rc = spruce_mask_stats_compute(keep, meta.rows, meta.cols, block, &st[i])) < 0) {
            cli_error(rc, "masks info: %s", name);
            goto done;
        }
        tot += (int64_t)ne;
        totkept += st[i].kept;
        if ((int)strlen(name) > width)
            width = (int)strlen(name);
        anyloss |= meta.has_loss;
    }

    if (json) {
        json_t *attrs = json_object(), *tensors = json_array(), *total = json_object();
        root = json_object();
        json_object_set_new(root, "file", json_string(argv[optind]));
        for (i = 0; i < spruce_maskreader_nattrs(mr); i++) {
            const spruce_mask_attr *a = spruce_maskreader_attr_at(mr, i);
            json_object_set_new(attrs, a->key,
                                a->type == SPRUCE_MASK_ATTR_INT      ? json_integer(a->i)
                                : a->type == SPRUCE_MASK_ATTR_DOUBLE ? jreal(a->d)
                                                                     : json_string(a->s));
        }
        json_object_set_new(root, "attributes", attrs);
        for (i = 0; i < n; i++) {
            const char *name = spruce_maskreader_name_at(mr, i);
            spruce_mask_meta meta;
            json_t *o = json_object(), *nm, *rs = json_object(), *bs = json_object();
            spruce_maskreader_meta(mr, name, &meta);
            json_object_set_new(o, "name", json_string(name));
            json_object_set_new(o, "shape", json_pack("[I, I]", (json_int_t)meta.rows,
                                                      (json_int_t)meta.cols));
            json_object_set_new(o, "numel", json_integer((json_int_t)(meta.rows * meta.cols)));
            json_object_set_new(o, "kept", json_integer((json_int_t)st[i].kept));
            json_object_set_new(o, "sparsity", jreal(st[i].sparsity));
            nm = st[i].nm.m ? json_pack("{s:i, s:i, s:b}", "n", st[i].nm.n, "m", st[i].nm.m,
                                        "exact", st[i].nm.exact)
                            : json_null();
            json_object_set_new(o, "nm", nm);
            json_object_set_new(rs, "min", jreal(st[i].row_min));
            json_object_set_new(rs, "mean", jreal(st[i].row_mean));
            json_object_set_new(rs, "max", jreal(st[i].row_max));
            json_object_set_new(o, "row_sparsity", rs);
            json_object_set_new(bs, "block", json_integer((json_int_t)st[i].block));
            json_object_set_new(bs, "blocks", json_integer((json_int_t)st[i].nblocks));
            json_object_set_new(bs, "min", jreal(st[i].blk_min));
            json_object_set_new(bs, "mean", jreal(st[i].blk_mean));
            json_object_set_new(bs, "max", jreal(st[i].blk_max));
            json_object_set_new(o, "col_block_sparsity", bs);
            json_object_set_new(o, "pattern", json_string(meta.pattern));
            json_object_set_new(o, "method", json_string(meta.method));
            json_object_set_new(o, "sparsity_attr", jreal(meta.sparsity));
            json_object_set_new(o, "loss", meta.has_loss ? jreal(meta.loss) : json_null());
            json_array_append_new(tensors, o);
        }
        json_object_set_new(root, "tensors", tensors);
        json_object_set_new(total, "tensors", json_integer(n));
        json_object_set_new(total, "numel", json_integer((json_int_t)tot));
        json_object_set_new(total, "kept", json_integer((json_int_t)totkept));
        json_object_set_new(total, "sparsity",
                            tot ? jreal(1.0 - (double)totkept / (double)tot) : json_null());
        json_object_set_new(root, "total", total);
        if (json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0) {
            cli_fail("masks info: cannot write JSON");
            goto done;
        }
        fputc('\n', stdout);
        ret = 0;
        goto done;
    }

    printf("%s: spruce mask file, %d masks\n", argv[optind], n);
    for (i = 0; i < spruce_maskreader_nattrs(mr); i++) {
        const spruce_mask_attr *a = spruce_maskreader_attr_at(mr, i);
        if (!strcmp(a->key, "format"))
            continue;
        printf("  %-16s %s\n", a->key, a->s);
    }
    {
        char blk[48];
        snprintf(blk, sizeof blk, "col blocks of %ld", block);
        printf("\n%-*s  %-13s  %8s  %-6s  %-20s    %-20s\n", width, "", "", "", "",
               "row sparsity", blk);
    }
    printf("%-*s  %-13s  %8s  %-6s  %6s %6s %6s    %6s %6s %6s%s\n", width, "tensor", "shape",
           "sparsity", "N:M", "min", "mean", "max", "min", "mean", "max", anyloss ? "        loss" : "");
    for (i = 0; i < n; i++) {
        const char *name = spruce_maskreader_name_at(mr, i);
        spruce_mask_meta meta;
        char shape[40], nm[16], b[6][16];
        spruce_maskreader_meta(mr, name, &meta);
        snprintf(shape, sizeof shape, "%lld x %lld", (long long)meta.rows, (long long)meta.cols);
        if (st[i].nm.m)
            snprintf(nm, sizeof nm, "%s%d:%d", st[i].nm.exact ? "" : "<=", st[i].nm.n, st[i].nm.m);
        else
            snprintf(nm, sizeof nm, "-");
        printf("%-*s  %-13s  %7.2f%%  %-6s  %6s %6s %6s    %6s %6s %6s", width, name, shape,
               100.0 * st[i].sparsity, nm, fmt_pct(b[0], st[i].row_min),
               fmt_pct(b[1], st[i].row_mean), fmt_pct(b[2], st[i].row_max),
               fmt_pct(b[3], st[i].blk_min), fmt_pct(b[4], st[i].blk_mean),
               fmt_pct(b[5], st[i].blk_max));
        if (meta.has_loss)
            printf("  %10.4g", meta.loss);
        putchar('\n');
    }
    printf("%-*s  %-13s  %7.2f%%\n", width, "total", "",
           tot ? 100.0 * (1.0 - (double)totkept / (double)tot) : 0.0);
    printf("\n%lld weights, %lld kept; row sparsity: per output row; column blocks: %ld columns, "
           "all rows\n", (long long)tot, (long long)totkept, block);
    ret = 0;
done:
    json_decref(root);
    free(st);
    free(keep);
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

static int masks_diff(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, OPT_JSON},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    spruce_maskreader *ra = NULL, *rb = NULL;
    uint8_t *ka = NULL, *kb = NULL;
    size_t cap = 0;
    int c, json = 0, ret = 1, rc, i, width = 6, nshared = 0;
    spruce_mask_diff tot = {0, 0, 0, 0, 0, 0, 0};
    json_t *root = NULL, *tensors = NULL, *only_a = NULL, *only_b = NULL;

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
    tensors = json_array();
    only_a = json_array();
    only_b = json_array();
    for (i = 0; i < spruce_maskreader_count(ra); i++) {
        const char *name = spruce_maskreader_name_at(ra, i);
        if ((int)strlen(name) > width)
            width = (int)strlen(name);
    }
    if (!json)
        printf("%-*s  %-13s  %12s  %12s  %12s  %9s  %7s\n", width, "tensor", "shape", "kept A",
               "kept B", "shared", "agreement", "Jaccard");
    for (i = 0; i < spruce_maskreader_count(ra); i++) {
        const char *name = spruce_maskreader_name_at(ra, i);
        spruce_mask_meta ma, mb;
        spruce_mask_diff d;
        size_t ne;
        spruce_maskreader_meta(ra, name, &ma);
        if (spruce_maskreader_find(rb, name) < 0) {
            json_array_append_new(only_a, json_string(name));
            continue;
        }
        spruce_maskreader_meta(rb, name, &mb);
        if (ma.rows != mb.rows || ma.cols != mb.cols) {
            cli_fail("masks diff: mask %s is (%lld, %lld) in %s but (%lld, %lld) in %s", name,
                     (long long)ma.rows, (long long)ma.cols, argv[optind], (long long)mb.rows,
                     (long long)mb.cols, argv[optind + 1]);
            goto done;
        }
        ne = (size_t)ma.rows * (size_t)ma.cols;
        if (ne > cap) {
            free(ka);
            free(kb);
            ka = malloc(ne);
            kb = malloc(ne);
            cap = ne;
            if (!ka || !kb) {
                cli_fail("masks diff: out of memory for mask %s", name);
                goto done;
            }
        }
        if ((rc = spruce_maskreader_read(ra, name, ka, NULL)) < 0 ||
            (rc = spruce_maskreader_read(rb, name, kb, NULL)) < 0) {
            cli_error(rc, "masks diff");
            goto done;
        }
        spruce_mask_diff_compute(ka, kb, (int64_t)ne, &d);
        tot.numel += d.numel;
        tot.kept_a += d.kept_a;
        tot.kept_b += d.kept_b;
        tot.shared += d.shared;
        tot.agree += d.agree;
        nshared++;
        if (json) {
            json_array_append_new(
                tensors, json_pack("{s:s, s:[I, I], s:I, s:I, s:I, s:I, s:o, s:o}", "name", name,
                                   "shape", (json_int_t)ma.rows, (json_int_t)ma.cols, "numel",
                                   (json_int_t)d.numel, "kept_a", (json_int_t)d.kept_a, "kept_b",
                                   (json_int_t)d.kept_b, "shared", (json_int_t)d.shared,
                                   "agreement", jreal(d.agreement), "jaccard", jreal(d.jaccard)));
        } else {
            char shape[40];
            snprintf(shape, sizeof shape, "%lld x %lld", (long long)ma.rows, (long long)ma.cols);
            printf("%-*s  %-13s  %12lld  %12lld  %12lld  %8.2f%%  %7.4f\n", width, name, shape,
                   (long long)d.kept_a, (long long)d.kept_b, (long long)d.shared,
                   100.0 * d.agreement, d.jaccard);
        }
    }
    for (i = 0; i < spruce_maskreader_count(rb); i++) {
        const char *name = spruce_maskreader_name_at(rb, i);
        if (spruce_maskreader_find(ra, name) < 0)
            json_array_append_new(only_b, json_string(name));
    }
    tot.agreement = tot.numel ? (double)tot.agree / (double)tot.numel : 1.0;
    tot.jaccard = tot.kept_a + tot.kept_b - tot.shared
                      ? (double)tot.shared / (double)(tot.kept_a + tot.kept_b - tot.shared)
                      : 1.0;
    if (json) {
        root = json_pack("{s:s, s:s, s:O, s:O, s:O, s:{s:i, s:I, s:I, s:I, s:I, s:o, s:o}}", "a",
                         argv[optind], "b", argv[optind + 1], "tensors", tensors, "only_in_a",
                         only_a, "only_in_b", only_b, "total", "tensors", nshared, "numel",
                         (json_int_t)tot.numel, "kept_a", (json_int_t)tot.kept_a, "kept_b",
                         (json_int_t)tot.kept_b, "shared", (json_int_t)tot.shared, "agreement",
                         jreal(tot.agreement), "jaccard", jreal(tot.jaccard));
        if (!root || json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0) {
            cli_fail("masks diff: cannot write JSON");
            goto done;
        }
        fputc('\n', stdout);
    } else {
        size_t k;
        printf("%-*s  %-13s  %12lld  %12lld  %12lld  %8.2f%%  %7.4f\n", width, "total",
               "", (long long)tot.kept_a, (long long)tot.kept_b, (long long)tot.shared,
               100.0 * tot.agreement, tot.jaccard);
        for (k = 0; k < json_array_size(only_a); k++)
            printf("only in %s: %s\n", argv[optind], json_string_value(json_array_get(only_a, k)));
        for (k = 0; k < json_array_size(only_b); k++)
            printf("only in %s: %s\n", argv[optind + 1],
                   json_string_value(json_array_get(only_b, k)));
    }
    ret = 0;
done:
    json_decref(root);
    json_decref(tensors);
    json_decref(only_a);
    json_decref(only_b);
    free(ka);
    free(kb);
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
