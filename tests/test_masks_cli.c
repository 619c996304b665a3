/* test_masks_cli.c: the `spruce masks` commands, and masks written by `spruce
 * prune` exported and applied again. */
#include "masks_testutil.h"
#include "spruce_ckpt_masks.h"

/* ---- the commands ------------------------------------------------------- */

/* A tensor of a test checkpoint: raw little-endian bytes. */
typedef struct {
    const char *name;
    const char *dtype; /* "F32", "F16", "BF16" */
    int ndim;
    int64_t shape[2];
    uint8_t *data;
    size_t nbytes;
} ttensor;

static size_t dtype_size(const char *dt) { return !strcmp(dt, "F32") ? 4 : 2; }

/* Write dir/model.safetensors (and a config.json) holding tensors t[0..n). */
static void write_ckpt(const char *dir, const ttensor *t, int n)
{
    char hdr[8192], path[512];
    size_t len = 0, off = 0, pad;
    uint64_t hl;
    FILE *f;
    int i;
    mkdir(dir, 0755);
    len += (size_t)snprintf(hdr + len, sizeof hdr - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (i = 0; i < n; i++) {
        if (t[i].ndim == 1)
            len += (size_t)snprintf(hdr + len, sizeof hdr - len,
                                    ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld],"
                                    "\"data_offsets\":[%zu,%zu]}",
                                    t[i].name, t[i].dtype, (long long)t[i].shape[0], off,
                                    off + t[i].nbytes);
        else
            len += (size_t)snprintf(hdr + len, sizeof hdr - len,
                                    ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld,%lld],"
                                    "\"data_offsets\":[%zu,%zu]}",
                                    t[i].name, t[i].dtype, (long long)t[i].shape[0],
                                    (long long)t[i].shape[1], off, off + t[i].nbytes);
        off += t[i].nbytes;
    }
    len += (size_t)snprintf(hdr + len, sizeof hdr - len, "}");
    pad = (8 - len % 8) % 8;
    memset(hdr + len, ' ', pad);
    len += pad;
    hl = len;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    f = fopen(path, "wb");
    cr_assert_not_null(f);
    fwrite(&hl, 8, 1, f);
    fwrite(hdr, 1, len, f);
    for (i = 0; i < n; i++)
        fwrite(t[i].data, 1, t[i].nbytes, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/config.json", dir);
    f = fopen(path, "w");
    fputs("{\"model_type\": \"llama\"}\n", f);
    fclose(f);
}

/* Random non-zero values with about zero_pct % zeros, a third of them -0.0. */
static void fill_tensor(ttensor *t, int zero_pct)
{
    size_t es = dtype_size(t->dtype), n = (size_t)(t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1));
    size_t i;
    t->nbytes = n * es;
    t->data = malloc(t->nbytes);
    cr_assert_not_null(t->data);
    for (i = 0; i < n; i++) {
        int z = (int)(rnd() % 100) < zero_pct, neg = rnd() % 3 == 0;
        uint32_t v = z ? 0 : (rnd() | 1u);
        if (es == 4) {
            uint32_t b = z ? (neg ? 0x80000000u : 0) : ((0x3f000000u + (v & 0x7fffff)) | (neg ? 0x80000000u : 0));
            memcpy(t->data + i * 4, &b, 4);
        } else {
            uint16_t b = z ? (neg ? 0x8000 : 0) : (uint16_t)((0x3800 + (v & 0x3ff)) | (neg ? 0x8000 : 0));
            memcpy(t->data + i * 2, &b, 2);
        }
    }
}

static int is_zero_bits(const uint8_t *p, size_t es)
{
    size_t b;
    for (b = 0; b + 1 < es; b++)
        if (p[b])
            return 0;
    return (p[es - 1] & 0x7f) == 0;
}

/* A four-tensor checkpoint: three linear layers in F32 / F16 / BF16, an
 * embedding (2-D, not a linear layer) and a norm (1-D). */
#define NT 5
static void make_model(ttensor *t, int zero_pct)
{
    ttensor spec[NT] = {
        {"model.embed_tokens.weight", "F32", 2, {16, 8}, NULL, 0},
        {"model.layers.0.mlp.up_proj.weight", "F32", 2, {24, 16}, NULL, 0},
        {"model.layers.0.norm.weight", "F32", 1, {16, 0}, NULL, 0},
        {"model.layers.0.self_attn.q_proj.weight", "F16", 2, {16, 16}, NULL, 0},
        {"model.layers.1.mlp.down_proj.weight", "BF16", 2, {8, 32}, NULL, 0},
    };
    int i;
    for (i = 0; i < NT; i++) {
        t[i] = spec[i];
        fill_tensor(&t[i], zero_pct);
    }
}

static void free_model(ttensor *t)
{
    int i;
    for (i = 0; i < NT; i++)
        free(t[i].data);
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *b;
    long n;
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    b = malloc((size_t)n + 1);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

TestSuite(cli, .init = make_tmpdir, .fini = remove_tmpdir);

Test(cli, help_and_usage_errors)
{
    const char *bin = spruce_bin();
    const char *subs[] = {"export", "apply", "info", "diff"};
    char cmd[1024];
    size_t i;
    snprintf(cmd, sizeof cmd, "'%s' masks --help >/dev/null", bin);
    cr_assert_eq(run(cmd), 0);
    for (i = 0; i < 4; i++) {
        snprintf(cmd, sizeof cmd, "'%s' masks %s --help | grep -q 'usage: spruce masks %s'", bin,
                 subs[i], subs[i]);
        cr_assert_eq(run(cmd), 0, "%s --help", subs[i]);
        snprintf(cmd, sizeof cmd, "'%s' masks %s 2>/dev/null", bin, subs[i]);
        cr_assert_eq(run(cmd), 2, "%s without arguments", subs[i]);
        snprintf(cmd, sizeof cmd, "'%s' masks %s --bogus x y 2>/dev/null", bin, subs[i]);
        cr_assert_eq(run(cmd), 2, "%s with an unknown option", subs[i]);
    }
    snprintf(cmd, sizeof cmd, "'%s' masks frobnicate 2>/dev/null", bin);
    cr_assert_eq(run(cmd), 2);
    snprintf(cmd, sizeof cmd, "'%s' masks info '%s' --block 0 2>/dev/null", bin, tpath("x.h5"));
    cr_assert_eq(run(cmd), 2);
    snprintf(cmd, sizeof cmd, "'%s' masks export '%s' -o '%s' --include '(' 2>/dev/null", bin,
             tmpdir, tpath("x.h5"));
    cr_assert_eq(run(cmd), 2);
    /* Runtime failure: exit 1 with the file named. */
    snprintf(cmd, sizeof cmd, "'%s' masks info '%s' 2>&1 >/dev/null | grep -q 'absent.h5'", bin,
             tpath("absent.h5"));
    cr_assert_eq(run(cmd), 0);
    snprintf(cmd, sizeof cmd, "'%s' masks info '%s' 2>/dev/null", bin, tpath("absent.h5"));
    cr_assert_eq(run(cmd), 1);
}

Test(cli, export_equals_the_zero_pattern_in_every_dtype)
{
    const char *bin = spruce_bin();
    ttensor t[NT];
    char cmd[2048], model[512];
    spruce_maskreader *r;
    uint8_t *keep;
    int i;
    size_t k;
    make_model(t, 40);
    snprintf(model, sizeof model, "%s", tpath("model"));
    write_ckpt(model, t, NT);
    snprintf(cmd, sizeof cmd, "'%s' masks export '%s' -o '%s' --method magnitude 2>/dev/null", bin,
             model, tpath("e.h5"));
    cr_assert_eq(run(cmd), 0);
    cr_assert_eq(spruce_maskreader_open(tpath("e.h5"), &r), 0, "%s", spruce_errdetail());
    /* The three linear layers, not the embedding or the norm. */
    cr_assert_eq(spruce_maskreader_count(r), 3);
    cr_assert_eq(spruce_maskreader_find(r, "model.embed_tokens.weight"), -1);
    cr_assert_eq(spruce_maskreader_find(r, "model.layers.0.norm.weight"), -1);
    cr_assert_str_eq(spruce_maskreader_attr(r, "method")->s, "magnitude");
    for (i = 0; i < NT; i++) {
        spruce_mask_meta meta;
        size_t es = dtype_size(t[i].dtype), n = t[i].nbytes / es, neg0 = 0;
        if (t[i].ndim != 2 || i == 0)
            continue;
        keep = malloc(n);
        cr_assert_eq(spruce_maskreader_read(r, t[i].name, keep, &meta), 0, "%s",
                     spruce_errdetail());
        cr_assert_eq(meta.rows, t[i].shape[0]);
        cr_assert_eq(meta.cols, t[i].shape[1]);
        for (k = 0; k < n; k++) {
            const uint8_t *p = t[i].data + k * es;
            cr_assert_eq(keep[k], !is_zero_bits(p, es), "%s element %zu", t[i].name, k);
            neg0 += is_zero_bits(p, es) && (p[es - 1] & 0x80);
        }
        cr_assert_gt(neg0, 0, "%s: the test needs some -0.0", t[i].name);
        free(keep);
    }
    spruce_maskreader_close(r);

    /* --include restricts, --exclude removes, --all adds the embedding. */
    snprintf(cmd, sizeof cmd,
             "'%s' masks export '%s' -o '%s' --include 'mlp' --exclude 'down_proj' 2>/dev/null",
             bin, model, tpath("i.h5"));
    cr_assert_eq(run(cmd), 0);
    cr_assert_eq(spruce_maskreader_open(tpath("i.h5"), &r), 0);
    cr_assert_eq(spruce_maskreader_count(r), 1);
    cr_assert_str_eq(spruce_maskreader_name_at(r, 0), "model.layers.0.mlp.up_proj.weight");
    spruce_maskreader_close(r);
    snprintf(cmd, sizeof cmd, "'%s' masks export '%s' -o '%s' --all 2>/dev/null", bin, model,
             tpath("all.h5"));
    cr_assert_eq(run(cmd), 0);
    cr_assert_eq(spruce_maskreader_open(tpath("all.h5"), &r), 0);
    cr_assert_eq(spruce_maskreader_count(r), 4);
    spruce_maskreader_close(r);
    /* Nothing selected: an error, no file. */
    snprintf(cmd, sizeof cmd, "'%s' masks export '%s' -o '%s' --include nomatch 2>/dev/null", bin,
             model, tpath("none.h5"));
    cr_assert_eq(run(cmd), 1);
    cr_assert_not(exists(tpath("none.h5")));
    free_model(t);
}

Test(cli, apply_zeroes_exactly_the_pruned_places)
{
    const char *bin = spruce_bin();
    ttensor t[NT];
    char cmd[2048], model[512], out[512];
    uint8_t *masks[NT] = {NULL}, *in, *got;
    size_t inlen, gotlen, hdr, off, k;
    spruce_maskfile *f;
    spruce_maskreader *r;
    int i, checked = 0;
    make_model(t, 0); /* no zeros: every zero in the output comes from the mask */
    snprintf(model, sizeof model, "%s", tpath("model"));
    snprintf(out, sizeof out, "%s", tpath("out"));
    write_ckpt(model, t, NT);
    cr_assert_eq(spruce_maskfile_create(tpath("m.h5"), &f), 0);
    for (i = 1; i < NT; i++) {
        if (t[i].ndim != 2)
            continue;
        masks[i] = random_mask(t[i].shape[0], t[i].shape[1], 50);
        cr_assert_eq(spruce_maskfile_write(f, t[i].name, t[i].shape[0], t[i].shape[1], masks[i],
                                           NULL), 0);
    }
    cr_assert_eq(spruce_maskfile_commit(f), 0);
    snprintf(cmd, sizeof cmd, "'%s' masks apply '%s' '%s' -o '%s' 2>/dev/null", bin, model,
             tpath("m.h5"), out);
    cr_assert_eq(run(cmd), 0);

    /* Byte for byte: the output file is the input with the pruned elements'
     * bytes cleared, nothing else. */
    snprintf(cmd, sizeof cmd, "%s/model.safetensors", model);
    in = read_file(cmd, &inlen);
    snprintf(cmd, sizeof cmd, "%s/model.safetensors", out);
    got = read_file(cmd, &gotlen);
    cr_assert_eq(gotlen, inlen);
    memcpy(&hdr, in, 8);
    off = 8 + hdr;
    for (i = 0; i < NT; i++) {
        size_t es = dtype_size(t[i].dtype);
        if (masks[i]) {
            for (k = 0; k < t[i].nbytes / es; k++)
                if (!masks[i][k]) {
                    memset(in + off + k * es, 0, es);
                    checked++;
                }
        }
        off += t[i].nbytes;
    }
    cr_assert_gt(checked, 100);
    cr_assert_eq(memcmp(in, got, inlen), 0, "output differs from input-with-pruned-zeros");
    snprintf(cmd, sizeof cmd, "cmp -s '%s/config.json' '%s/config.json'", model, out);
    cr_assert_eq(run(cmd), 0);
    free(in);
    free(got);

    /* Export of the result gives back the masks. */
    snprintf(cmd, sizeof cmd, "'%s' masks export '%s' -o '%s' 2>/dev/null", bin, out,
             tpath("back.h5"));
    cr_assert_eq(run(cmd), 0);
    cr_assert_eq(spruce_maskreader_open(tpath("back.h5"), &r), 0);
    for (i = 1; i < NT; i++) {
        uint8_t *b;
        if (!masks[i])
            continue;
        b = malloc((size_t)(t[i].shape[0] * t[i].shape[1]));
        cr_assert_eq(spruce_maskreader_read(r, t[i].name, b, NULL), 0);
        cr_assert_eq(memcmp(b, masks[i], (size_t)(t[i].shape[0] * t[i].shape[1])), 0, "%s",
                     t[i].name);
        free(b);
        free(masks[i]);
    }
    spruce_maskreader_close(r);
    free_model(t);
}

Test(cli, apply_refuses_missing_and_mismatched_tensors)
{
    const char *bin = spruce_bin();
    ttensor t[NT];
    char cmd[2048], model[512], *err;
    uint8_t *k1 = random_mask(24, 16, 50), *k2 = random_mask(16, 24, 50);
    spruce_maskfile *f;
    int st;
    make_model(t, 0);
    snprintf(model, sizeof model, "%s", tpath("model"));
    write_ckpt(model, t, NT);

    /* Only one of the three linear layers has a mask, plus one unknown mask. */
    cr_assert_eq(spruce_maskfile_create(tpath("few.h5"), &f), 0);
    cr_assert_eq(spruce_maskfile_write(f, "model.layers.0.mlp.up_proj.weight", 24, 16, k1, NULL), 0);
    cr_assert_eq(spruce_maskfile_write(f, "model.layers.9.mlp.up_proj.weight", 24, 16, k1, NULL), 0);
    cr_assert_eq(spruce_maskfile_commit(f), 0);
    snprintf(cmd, sizeof cmd, "'%s' masks apply '%s' '%s' -o '%s' 2>&1", bin, model,
             tpath("few.h5"), tpath("o1"));
    err = capture(cmd, &st);
    cr_assert_eq(st, 1, "%s", err);
    cr_assert(strstr(err, "model.layers.9.mlp.up_proj.weight"), "%s", err);
    cr_assert_not(exists(tpath("o1")));
    free(err);
    snprintf(cmd, sizeof cmd, "'%s' masks apply '%s' '%s' -o '%s' --partial 2>&1", bin, model,
             tpath("few.h5"), tpath("o2"));
    err = capture(cmd, &st);
    cr_assert_eq(st, 0, "%s", err);
    cr_assert(strstr(err, "model.layers.0.self_attn.q_proj.weight has no mask"), "%s", err);
    cr_assert(exists(tpath("o2/model.safetensors")));
    free(err);

    /* Every mask has a tensor, but a linear layer has no mask. */
    cr_assert_eq(spruce_maskfile_create(tpath("one.h5"), &f), 0);
    cr_assert_eq(spruce_maskfile_write(f, "model.layers.0.mlp.up_proj.weight", 24, 16, k1, NULL), 0);
    cr_assert_eq(spruce_maskfile_commit(f), 0);
    snprintf(cmd, sizeof cmd, "'%s' masks apply '%s' '%s' -o '%s' 2>&1", bin, model,
             tpath("one.h5"), tpath("o3"));
    err = capture(cmd, &st);
    cr_assert_eq(st, 1, "%s", err);
    cr_assert(strstr(err, "has no mask"), "%s", err);
    free(err);

    /* Transposed shape: an error naming the tensor and both shapes, even with --partial. */
    cr_assert_eq(spruce_maskfile_create(tpath("t.h5"), &f), 0);
    cr_assert_eq(spruce_maskfile_write(f, "model.layers.0.mlp.up_proj.weight", 16, 24, k2, NULL), 0);
    cr_assert_eq(spruce_maskfile_commit(f), 0);
    snprintf(cmd, sizeof cmd, "'%s' masks apply '%s' '%s' -o '%s' --partial 2>&1", bin, model,
             tpath("t.h5"), tpath("o4"));
    err = capture(cmd, &st);
    cr_assert_eq(st, 1, "%s", err);
    cr_assert(strstr(err, "model.layers.0.mlp.up_proj.weight"), "%s", err);
    cr_assert(strstr(err, "(16, 24)") && strstr(err, "(24, 16)"), "%s", err);
    cr_assert_not(exists(tpath("o4")));
    free(err);

    /* A bad mask file: error naming the file. */
    snprintf(cmd, sizeof cmd, "'%s' masks apply '%s' '%s/config.json' -o '%s' 2>&1", bin, model,
             model, tpath("o5"));
    err = capture(cmd, &st);
    cr_assert_eq(st, 1, "%s", err);
    cr_assert(strstr(err, "config.json: not an HDF5 file"), "%s", err);
    free(err);
    free(k1);
    free(k2);
    free_model(t);
}

static json_t *run_json(const char *cmd)
{
    int st;
    char *out = capture(cmd, &st);
    json_error_t e;
    json_t *j;
    cr_assert_eq(st, 0, "%s failed", cmd);
    j = json_loads(out, 0, &e);
    cr_assert_not_null(j, "%s: bad JSON: %s\n%s", cmd, e.text, out);
    free(out);
    return j;
}

static double jnum(json_t *o, const char *path)
{
    json_t *v = json_object_get(o, path);
    cr_assert_not_null(v, "missing %s", path);
    return json_number_value(v);
}

Test(cli, info_and_diff_numbers_match_direct_computation)
{
    const char *bin = spruce_bin();
    const int64_t rows = 40, cols = 256;
    uint8_t *a = random_mask(rows, cols, 30), *b = random_mask(rows, cols, 50),
            *c = nm_mask(rows, cols, 2, 4);
    spruce_maskfile *f;
    spruce_mask_stats st;
    char cmd[1024], *txt;
    json_t *j, *ts, *t0, *t1, *tot;
    int64_t i, both = 0, ka = 0, kb = 0, eq = 0;
    int status;

    cr_assert_eq(spruce_maskfile_create(tpath("a.h5"), &f), 0);
    cr_assert_eq(spruce_maskfile_set_attr_string(f, "method", "sparsegpt"), 0);
    cr_assert_eq(spruce_maskfile_write(f, "x.weight", rows, cols, a, NULL), 0);
    cr_assert_eq(spruce_maskfile_write(f, "y.weight", rows, cols, c, NULL), 0);
    cr_assert_eq(spruce_maskfile_write(f, "only_a.weight", 2, 4, c, NULL), 0);
    cr_assert_eq(spruce_maskfile_commit(f), 0);
    cr_assert_eq(spruce_maskfile_create(tpath("b.h5"), &f), 0);
    cr_assert_eq(spruce_maskfile_write(f, "x.weight", rows, cols, b, NULL), 0);
    cr_assert_eq(spruce_maskfile_write(f, "y.weight", rows, cols, c, NULL), 0);
    cr_assert_eq(spruce_maskfile_commit(f), 0);

    snprintf(cmd, sizeof cmd, "'%s' masks info '%s' --json", bin, tpath("a.h5"));
    j = run_json(cmd);
    ts = json_object_get(j, "tensors");
    cr_assert_eq(json_array_size(ts), 3);
    t0 = json_array_get(ts, 0);
    t1 = json_array_get(ts, 1);
    cr_assert_str_eq(json_string_value(json_object_get(t0, "name")), "x.weight");
    cr_assert_eq(spruce_mask_stats_compute(a, rows, cols, 0, &st), 0);
    for (i = 0; i < rows * cols; i++)
        ka += a[i];
    cr_assert_eq((int64_t)jnum(t0, "kept"), ka);
    cr_assert_float_eq(jnum(t0, "sparsity"), 1.0 - (double)ka / (rows * cols), 1e-12);
    cr_assert_float_eq(jnum(json_object_get(t0, "row_sparsity"), "min"), st.row_min, 1e-12);
    cr_assert_float_eq(jnum(json_object_get(t0, "row_sparsity"), "max"), st.row_max, 1e-12);
    cr_assert_float_eq(jnum(json_object_get(t0, "col_block_sparsity"), "mean"), st.blk_mean, 1e-12);
    cr_assert(json_is_null(json_object_get(t0, "nm")));
    cr_assert_eq((int)jnum(json_object_get(t1, "nm"), "n"), 2);
    cr_assert_eq((int)jnum(json_object_get(t1, "nm"), "m"), 4);
    cr_assert(json_is_true(json_object_get(json_object_get(t1, "nm"), "exact")));
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "attributes"), "method")),
                     "sparsegpt");
    tot = json_object_get(j, "total");
    cr_assert_eq((int64_t)jnum(tot, "numel"), 2 * rows * cols + 8);
    json_decref(j);

    /* The table names every tensor, the N:M pattern and the total. */
    snprintf(cmd, sizeof cmd, "'%s' masks info '%s'", bin, tpath("a.h5"));
    txt = capture(cmd, &status);
    cr_assert_eq(status, 0);
    cr_assert(strstr(txt, "x.weight") && strstr(txt, "only_a.weight") && strstr(txt, "2:4") &&
                  strstr(txt, "total") && strstr(txt, "40 x 256"), "%s", txt);
    free(txt);

    snprintf(cmd, sizeof cmd, "'%s' masks diff '%s' '%s' --json", bin, tpath("a.h5"),
             tpath("b.h5"));
    j = run_json(cmd);
    ts = json_object_get(j, "tensors");
    cr_assert_eq(json_array_size(ts), 2);
    t0 = json_array_get(ts, 0);
    t1 = json_array_get(ts, 1);
    for (i = 0; i < rows * cols; i++) {
        kb += b[i];
        both += a[i] && b[i];
        eq += a[i] == b[i];
    }
    cr_assert_eq((int64_t)jnum(t0, "kept_a"), ka);
    cr_assert_eq((int64_t)jnum(t0, "kept_b"), kb);
    cr_assert_eq((int64_t)jnum(t0, "shared"), both);
    cr_assert_float_eq(jnum(t0, "agreement"), (double)eq / (rows * cols), 1e-12);
    cr_assert_float_eq(jnum(t0, "jaccard"), (double)both / (ka + kb - both), 1e-12);
    cr_assert_float_eq(jnum(t1, "jaccard"), 1.0, 1e-12);
    cr_assert_float_eq(jnum(t1, "agreement"), 1.0, 1e-12);
    cr_assert_eq(json_array_size(json_object_get(j, "only_in_a")), 1);
    cr_assert_eq(json_array_size(json_object_get(j, "only_in_b")), 0);
    tot = json_object_get(j, "total");
    cr_assert_eq((int64_t)jnum(tot, "shared"), both + rows * cols / 2);
    json_decref(j);
    snprintf(cmd, sizeof cmd, "'%s' masks diff '%s' '%s'", bin, tpath("a.h5"), tpath("b.h5"));
    txt = capture(cmd, &status);
    cr_assert_eq(status, 0);
    cr_assert(strstr(txt, "only in") && strstr(txt, "only_a.weight") && strstr(txt, "Jaccard"),
              "%s", txt);
    free(txt);
    free(a);
    free(b);
    free(c);
}

/* ---- with the pruner ---------------------------------------------------- */

static const char *fixture(void)
{
    static char dir[1024];
    const char *f = getenv("SPRUCE_FIXTURES");
    if (!f || !*f)
        cr_skip_test("SPRUCE_FIXTURES not set (run through 'make check')");
    snprintf(dir, sizeof dir, "%s/stories260k", f);
    if (access(dir, R_OK) != 0)
        cr_skip_test("fixture %s absent", dir);
    return dir;
}

/* Every mask of a equals the mask of the same name in b, and both have the same names. */
static void assert_same_masks(const char *pa, const char *pb)
{
    spruce_maskreader *a, *b;
    int i;
    cr_assert_eq(spruce_maskreader_open(pa, &a), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_maskreader_open(pb, &b), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_maskreader_count(a), spruce_maskreader_count(b));
    cr_assert_gt(spruce_maskreader_count(a), 0);
    for (i = 0; i < spruce_maskreader_count(a); i++) {
        const char *name = spruce_maskreader_name_at(a, i);
        spruce_mask_meta ma, mb;
        uint8_t *ka, *kb;
        cr_assert_geq(spruce_maskreader_find(b, name), 0, "%s missing from %s", name, pb);
        spruce_maskreader_meta(a, name, &ma);
        spruce_maskreader_meta(b, name, &mb);
        cr_assert_eq(ma.rows, mb.rows);
        cr_assert_eq(ma.cols, mb.cols);
        ka = malloc((size_t)(ma.rows * ma.cols));
        kb = malloc((size_t)(ma.rows * ma.cols));
        cr_assert_eq(spruce_maskreader_read(a, name, ka, NULL), 0);
        cr_assert_eq(spruce_maskreader_read(b, name, kb, NULL), 0);
        cr_assert_eq(memcmp(ka, kb, (size_t)(ma.rows * ma.cols)), 0, "%s differs", name);
        free(ka);
        free(kb);
    }
    spruce_maskreader_close(a);
    spruce_maskreader_close(b);
}

Test(cli, prune_masks_export_apply_round_trip)
{
    const char *bin = spruce_bin(), *fx = fixture();
    char cmd[4096];
    spruce_maskreader *r;
    spruce_mask_meta meta;
    const spruce_mask_attr *a;
    spruce_ckpt *orig, *applied;
    int i, nm = 0;

    /* Prune 2:4 with SparseGPT, writing the masks as it goes. */
    snprintf(cmd, sizeof cmd,
             "'%s' prune '%s' -o '%s' --calib '%s/calib.u16' --pattern 2:4 --nsamples 4 "
             "--seqlen 64 --masks '%s' >/dev/null 2>&1",
             bin, fx, tpath("pruned"), fx, tpath("prune.h5"));
    cr_assert_eq(run(cmd), 0, "%s", cmd);
    cr_assert_eq(spruce_maskreader_open(tpath("prune.h5"), &r), 0, "%s", spruce_errdetail());
    a = spruce_maskreader_attr(r, "method");
    cr_assert(a && !strcmp(a->s, "sparsegpt"));
    for (i = 0; i < spruce_maskreader_count(r); i++) {
        uint8_t *k;
        spruce_mask_stats st;
        spruce_maskreader_meta(r, spruce_maskreader_name_at(r, i), &meta);
        k = malloc((size_t)(meta.rows * meta.cols));
        cr_assert_eq(spruce_maskreader_read(r, spruce_maskreader_name_at(r, i), k, NULL), 0);
        cr_assert_eq(spruce_mask_stats_compute(k, meta.rows, meta.cols, 0, &st), 0);
        cr_assert_eq(st.nm.n, 2, "%s", spruce_maskreader_name_at(r, i));
        cr_assert_eq(st.nm.m, 4);
        cr_assert_str_eq(meta.pattern, "2:4");
        free(k);
        nm++;
    }
    spruce_maskreader_close(r);
    cr_assert_eq(nm, 35); /* 5 blocks x 7 linear layers */

    /* Export of the pruned checkpoint equals the masks written while pruning. */
    snprintf(cmd, sizeof cmd, "'%s' masks export '%s' -o '%s' 2>/dev/null", bin, tpath("pruned"),
             tpath("export.h5"));
    cr_assert_eq(run(cmd), 0);
    assert_same_masks(tpath("prune.h5"), tpath("export.h5"));

    /* Applying the masks to the dense original reproduces the zero pattern, and
     * every kept weight keeps the original's bytes. */
    snprintf(cmd, sizeof cmd, "'%s' masks apply '%s' '%s' -o '%s' 2>/dev/null", bin, fx,
             tpath("prune.h5"), tpath("applied"));
    cr_assert_eq(run(cmd), 0);
    snprintf(cmd, sizeof cmd, "'%s' masks export '%s' -o '%s' 2>/dev/null", bin,
             tpath("applied"), tpath("reexport.h5"));
    cr_assert_eq(run(cmd), 0);
    assert_same_masks(tpath("prune.h5"), tpath("reexport.h5"));
    cr_assert_eq(spruce_ckpt_open(fx, &orig), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_open(tpath("applied"), &applied), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_count(orig), spruce_ckpt_count(applied));
    cr_assert_eq(spruce_maskreader_open(tpath("prune.h5"), &r), 0);
    for (i = 0; i < spruce_ckpt_count(orig); i++) {
        const spruce_tensor *to = spruce_ckpt_tensor_at(orig, i);
        const spruce_tensor *ta = spruce_ckpt_find(applied, to->name);
        cr_assert_not_null(ta);
        cr_assert_eq(ta->nbytes, to->nbytes);
        if (spruce_maskreader_find(r, to->name) < 0) {
            cr_assert_eq(memcmp(ta->data, to->data, to->nbytes), 0, "%s changed", to->name);
        } else {
            size_t n = (size_t)spruce_tensor_numel(to), es = to->nbytes / n, k;
            uint8_t *keep = malloc(n);
            const uint8_t *po = to->data, *pa = ta->data;
            cr_assert_eq(spruce_maskreader_read(r, to->name, keep, NULL), 0);
            for (k = 0; k < n; k++) {
                if (keep[k])
                    cr_assert_eq(memcmp(pa + k * es, po + k * es, es), 0, "%s[%zu]", to->name, k);
                else
                    cr_assert(is_zero_bits(pa + k * es, es), "%s[%zu] not zero", to->name, k);
            }
            free(keep);
        }
    }
    spruce_maskreader_close(r);
    spruce_ckpt_close(orig);
    spruce_ckpt_close(applied);
}

Test(cli, plot_masks_example_draws_a_png)
{
    const char *src = getenv("SPRUCE_SRCDIR"), *py = find_python();
    char cmd[2048];
    uint8_t *k = nm_mask(64, 128, 2, 4), *u = random_mask(32, 64, 40), sig[8];
    spruce_maskfile *f;
    FILE *png;
    if (!src || !*src)
        cr_skip_test("SPRUCE_SRCDIR not set (run through 'make check')");
    if (!py)
        cr_skip_test("python3 with h5py and numpy not available (Debian python3-h5py)");
    snprintf(cmd, sizeof cmd, "%s -c 'import matplotlib' >/dev/null 2>&1", py);
    if (run(cmd) != 0)
        cr_skip_test("matplotlib not available (Debian python3-matplotlib)");
    cr_assert_eq(spruce_maskfile_create(tpath("plot.h5"), &f), 0);
    cr_assert_eq(spruce_maskfile_write(f, "model.layers.0.mlp.up_proj.weight", 64, 128, k, NULL), 0);
    cr_assert_eq(spruce_maskfile_write(f, "model.layers.1.mlp.up_proj.weight", 32, 64, u, NULL), 0);
    cr_assert_eq(spruce_maskfile_commit(f), 0);
    snprintf(cmd, sizeof cmd,
             "MPLCONFIGDIR='%s' %s '%s/examples/plot_masks.py' '%s' '%s' "
             "--tensor model.layers.1.mlp.up_proj.weight >/dev/null 2>&1",
             tmpdir, py, src, tpath("plot.h5"), tpath("plot.png"));
    cr_assert_eq(run(cmd), 0, "%s", cmd);
    png = fopen(tpath("plot.png"), "rb");
    cr_assert_not_null(png);
    cr_assert_eq(fread(sig, 1, 8, png), 8);
    fclose(png);
    cr_assert_eq(memcmp(sig, "\x89PNG\r\n\x1a\n", 8), 0);
    /* A file that is not a mask file: the script refuses it. */
    snprintf(cmd, sizeof cmd, "%s '%s/examples/plot_masks.py' '%s/configure.ac' '%s' >/dev/null 2>&1",
             py, src, src, tpath("no.png"));
    cr_assert_neq(run(cmd), 0);
    free(k);
    free(u);
}

/* masks info's N:M is N pruned of every M, as --pattern N:M means: a
 * checkpoint pruned with each pattern shows that pattern for every mask, in
 * the library summary, the text and the JSON; unstructured shows none. */
Test(cli, info_shows_the_pruned_pattern)
{
    static const char *const pats[] = {"1:4", "2:4", "4:8", "1:2", "3:4", "unstructured"};
    const char *bin = spruce_bin();
    char cmd[4096], model[512], file[512];
    size_t k;
    snprintf(model, sizeof model, "%s", tpath("m"));
    snprintf(cmd, sizeof cmd,
             "'%s' synth '%s' --hidden 32 --intermediate 64 --layers 1 --heads 2 --kv-heads 1 "
             "--vocab 64 >/dev/null 2>&1", bin, model);
    cr_assert_eq(run(cmd), 0, "%s", cmd);
    for (k = 0; k < sizeof pats / sizeof *pats; k++) {
        int n = 0, m = 0, structured = strchr(pats[k], ':') != NULL, i, lines = 0, st;
        spruce_maskreader *r = NULL;
        spruce_masks_summary s;
        json_t *j, *ts;
        char *out, *line, expect[16];
        if (structured)
            cr_assert_eq(sscanf(pats[k], "%d:%d", &n, &m), 2);
        snprintf(expect, sizeof expect, "%s", structured ? pats[k] : "-");
        snprintf(file, sizeof file, "%s/%zu.h5", tmpdir, k);
        snprintf(cmd, sizeof cmd,
                 "rm -rf '%s'; '%s' prune '%s' -o '%s' --method magnitude %s %s --masks '%s' "
                 ">/dev/null 2>&1",
                 tpath("p"), bin, model, tpath("p"), structured ? "--pattern" : "--sparsity",
                 structured ? pats[k] : "0.5", file);
        cr_assert_eq(run(cmd), 0, "%s", cmd);

        /* the library */
        cr_assert_eq(spruce_maskreader_open(file, &r), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_masks_summarize(r, 0, &s), 0, "%s", spruce_errdetail());
        cr_assert_eq(s.count, 7);
        for (i = 0; i < s.count; i++) {
            const spruce_mask_nm *nm = &s.masks[i].stats.nm;
            cr_assert_eq(nm->n, n, "%s: %s: n %d", pats[k], s.masks[i].name, nm->n);
            cr_assert_eq(nm->m, m, "%s: %s: m %d", pats[k], s.masks[i].name, nm->m);
            cr_assert_eq(s.masks[i].nm_recorded, structured);
            if (structured) {
                cr_assert(nm->exact);
                cr_assert_float_eq(s.masks[i].stats.sparsity, (double)n / m, 1e-12);
            }
        }
        spruce_masks_summary_clear(&s);
        spruce_maskreader_close(r);

        /* the text: the N:M column of every mask line */
        snprintf(cmd, sizeof cmd, "'%s' masks info '%s'", bin, file);
        out = capture(cmd, &st);
        cr_assert_eq(st, 0, "%s", cmd);
        for (line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
            char name[256], col[16];
            long long rows, cols;
            double sp;
            if (!strstr(line, ".weight "))
                continue;
            cr_assert_eq(sscanf(line, "%255s %lld x %lld %lf%% %15s", name, &rows, &cols, &sp,
                                col), 5, "%s", line);
            cr_assert_str_eq(col, expect, "%s: %s", pats[k], line);
            lines++;
        }
        cr_assert_eq(lines, 7, "%s", pats[k]);
        free(out);

        /* the JSON */
        snprintf(cmd, sizeof cmd, "'%s' masks info --json '%s'", bin, file);
        j = run_json(cmd);
        ts = json_object_get(j, "tensors");
        cr_assert_eq(json_array_size(ts), 7);
        for (i = 0; i < 7; i++) {
            json_t *nm = json_object_get(json_array_get(ts, (size_t)i), "nm");
            if (!structured) {
                cr_assert(json_is_null(nm), "%s", pats[k]);
                continue;
            }
            cr_assert_eq(jnum(nm, "n"), n);
            cr_assert_eq(jnum(nm, "m"), m);
            cr_assert(json_is_true(json_object_get(nm, "exact")));
            cr_assert(json_is_true(json_object_get(nm, "recorded")));
        }
        json_decref(j);
    }
}
