/* test_ckpt.c: safetensors reader and writer, the broken file corpus, sharded
 * checkpoints, output safety, and the stories260k fixture. */
#define _GNU_SOURCE
#include "ckpt_testutil.h"

/* ------------------------------------------------------- the corpus */

static spruce_ckpt *open_corpus(const char *name)
{
    char p[4200];
    spruce_ckpt *c = NULL;
    int rc;
    snprintf(p, sizeof p, "%s/%s.safetensors", corpus_dir(), name);
    rc = spruce_ckpt_open_file(p, &c);
    cr_assert_eq(rc, 0, "%s: %s", name, spruce_errdetail());
    return c;
}

Test(corpus, every_broken_file_gives_its_error)
{
    static const struct {
        const char *name;
        int code;
        const char *detail;
    } cases[] = {
        {"empty", SPRUCE_EFORMAT, "expected at least 8 bytes"},
        {"short", SPRUCE_EFORMAT, "found a 3-byte file"},
        {"hlen_past_end", SPRUCE_EFORMAT, "header length 4096 runs past the end"},
        {"hlen_huge", SPRUCE_EFORMAT, "18446744073709551615 runs past the end"},
        {"hlen_tiny", SPRUCE_EFORMAT, "too short for a JSON object"},
        {"bad_json", SPRUCE_EFORMAT, "header is not valid JSON"},
        {"not_object", SPRUCE_EFORMAT, "expected the header to be a JSON object, found an array"},
        {"duplicate_key", SPRUCE_EFORMAT, "duplicate object key"},
        {"bad_utf8", SPRUCE_EFORMAT, "not valid JSON"},
        {"nul_in_header", SPRUCE_EFORMAT, "not valid JSON"},
        {"entry_not_object", SPRUCE_EFORMAT, "tensor 'a': expected an object, found an array"},
        {"missing_dtype", SPRUCE_EFORMAT, "tensor 'a': expected \"dtype\" to be a string, found nothing"},
        {"dtype_not_string", SPRUCE_EFORMAT, "\"dtype\" to be a string, found an integer"},
        {"missing_shape", SPRUCE_EFORMAT, "\"shape\" to be an array, found nothing"},
        {"offsets_wrong_length", SPRUCE_EFORMAT, "\"data_offsets\" to be [begin, end]"},
        {"negative_shape", SPRUCE_EFORMAT, "shape[0] to be a non-negative integer, found -1"},
        {"float_shape", SPRUCE_EFORMAT, "shape[0] to be a non-negative integer, found a real number"},
        {"shape_overflow", SPRUCE_EFORMAT, "overflow at shape[1]"},
        {"too_many_dims", SPRUCE_EFORMAT, "at most 8 dimensions, found 9"},
        {"negative_offset", SPRUCE_EFORMAT, "non-negative integers, found [-4, 0]"},
        {"begin_after_end", SPRUCE_EFORMAT, "begin <= end, found [8, 4]"},
        {"range_past_end", SPRUCE_EFORMAT, "inside the 4-byte data section, found end 8"},
        {"truncated_data", SPRUCE_EFORMAT, "tensor 'b': expected data_offsets inside the 24-byte data section"},
        {"shape_bytes_mismatch", SPRUCE_ESHAPE, "expected 24 bytes (6 elements of F32), found data_offsets [0, 20]"},
        {"bf16_odd_bytes", SPRUCE_ESHAPE, "expected 4 bytes (2 elements of BF16)"},
        {"overlap", SPRUCE_EFORMAT, "tensor 'b': expected data_offsets not overlapping other tensors, found [4, 12] overlapping 'a' [0, 8]"},
        {"metadata_not_object", SPRUCE_EFORMAT, "__metadata__: expected an object, found a string"},
        {"metadata_not_string", SPRUCE_EFORMAT, "__metadata__: key 'format': expected a string, found an integer"},
    };
    size_t i;
    if (!corpus_dir())
        cr_skip_test("SPRUCE_SRCDIR/tests/data/safetensors not found");
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char p[4200];
        spruce_ckpt *c = (spruce_ckpt *)1;
        int rc;
        snprintf(p, sizeof p, "%s/%s.safetensors", corpus_dir(), cases[i].name);
        spruce_errclear();
        rc = spruce_ckpt_open(p, &c);
        cr_expect_eq(rc, cases[i].code, "%s: code %d, expected %d (%s)", cases[i].name, rc,
                     cases[i].code, spruce_errdetail());
        cr_expect_null(c, "%s: no checkpoint on failure", cases[i].name);
        cr_expect(strstr(spruce_errdetail(), cases[i].detail) != NULL, "%s: detail '%s' lacks '%s'",
                  cases[i].name, spruce_errdetail(), cases[i].detail);
        cr_expect(strstr(spruce_errdetail(), cases[i].name) != NULL, "%s: detail '%s' does not name the file",
                  cases[i].name, spruce_errdetail());
    }
}

Test(corpus, valid_files_read_back)
{
    spruce_ckpt *c;
    const spruce_tensor *t;
    float v[8];
    if (!corpus_dir())
        cr_skip_test("SPRUCE_SRCDIR/tests/data/safetensors not found");

    c = open_corpus("valid_f32");
    cr_assert_eq(spruce_ckpt_count(c), 2);
    cr_assert_str_eq(spruce_ckpt_tensor_at(c, 0)->name, "a"); /* header order */
    t = spruce_ckpt_find(c, "a");
    cr_assert_eq(t->ndim, 2);
    cr_assert_eq(t->shape[0], 2);
    cr_assert_eq(t->shape[1], 3);
    cr_assert_eq(spruce_tensor_read_f32(t, v), 0);
    cr_assert(v[0] == 1 && v[5] == 6);
    cr_assert_eq(spruce_tensor_read_f32_range(spruce_ckpt_find(c, "b"), 1, 2, v), 0);
    cr_assert(v[0] == 0.5f && v[1] == 0.0f);
    cr_assert_eq(spruce_tensor_read_f32_range(spruce_ckpt_find(c, "b"), 3, 2, v), SPRUCE_EINVAL);
    cr_assert_str_eq(spruce_ckpt_metadata(c, 0, "note"), "spruce test");
    cr_assert_null(spruce_ckpt_metadata(c, 0, "absent"));
    cr_assert_null(spruce_ckpt_find(c, "nope"));
    spruce_ckpt_close(c);

    c = open_corpus("valid_f16");
    cr_assert_eq(spruce_tensor_read_f32(spruce_ckpt_find(c, "w"), v), 0);
    cr_assert(v[0] == 1 && v[1] == -2 && v[2] == 0 && v[3] == 65504);
    spruce_ckpt_close(c);

    c = open_corpus("valid_bf16");
    cr_assert_eq(spruce_tensor_read_f32(spruce_ckpt_find(c, "w"), v), 0);
    cr_assert(v[0] == 1 && v[1] == -3 && v[2] == bitsf(0x00010000u));
    spruce_ckpt_close(c);

    c = open_corpus("valid_empty_tensor");
    cr_assert_eq(spruce_tensor_numel(spruce_ckpt_find(c, "e")), 0);
    t = spruce_ckpt_find(c, "s");
    cr_assert_eq(t->ndim, 0);
    cr_assert_eq(spruce_tensor_numel(t), 1);
    cr_assert_eq(spruce_tensor_read_f32(t, v), 0);
    cr_assert_eq(v[0], 3.5f);
    spruce_ckpt_close(c);

    c = open_corpus("valid_empty_header");
    cr_assert_eq(spruce_ckpt_count(c), 0);
    spruce_ckpt_close(c);
}

Test(corpus, other_dtypes_are_kept_but_not_read_as_float)
{
    spruce_ckpt *c;
    const spruce_tensor *t;
    float v[8];
    if (!corpus_dir())
        cr_skip_test("SPRUCE_SRCDIR/tests/data/safetensors not found");
    c = open_corpus("valid_other_dtypes");
    t = spruce_ckpt_find(c, "i");
    cr_assert_eq(t->dtype, SPRUCE_DTYPE_OTHER);
    cr_assert_str_eq(t->dtype_name, "I64");
    cr_assert_eq(t->nbytes, 16);
    cr_assert_eq(spruce_tensor_read_f32(t, v), SPRUCE_EDTYPE);
    cr_assert(strstr(spruce_errdetail(), "'i'") && strstr(spruce_errdetail(), "I64"), "%s",
              spruce_errdetail());
    t = spruce_ckpt_find(c, "q"); /* unknown dtype: any byte size */
    cr_assert_str_eq(t->dtype_name, "Q4_K");
    cr_assert_eq(t->nbytes, 7);
    cr_assert_eq(memcmp(t->data, "1234567", 7), 0);
    cr_assert_eq(spruce_tensor_read_f32(spruce_ckpt_find(c, "f"), v), 0);
    cr_assert_eq(v[0], 2.0f);
    spruce_ckpt_close(c);
}

/* ------------------------------------------------------- writer round trips */

static void roundtrip(spruce_dtype dt)
{
    char *tmp = mktmp(), *in = path2(tmp, "in"), *out = path2(tmp, "out");
    char *p1, *p2;
    spruce_synth_config cfg = small_cfg(dt);
    spruce_ckpt *a, *b;
    spruce_ckpt_writer *w;
    const char *qn = "model.layers.0.self_attn.q_proj.weight";
    const spruce_tensor *q;
    float *orig, *repl, *back;
    size_t n, i, nz = 0;
    int k;
    const float tol = dt == SPRUCE_DTYPE_F32 ? 0 : dt == SPRUCE_DTYPE_F16 ? 1.0f / 2048 : 1.0f / 256;

    cr_assert_eq(spruce_synth_write(in, &cfg, 0), 0, "%s", spruce_errdetail());
    p1 = path2(in, "tokenizer.json");
    write_bytes(p1, "{\"fake\": true}\n", 15);
    free(p1);
    cr_assert_eq(spruce_ckpt_open(in, &a), 0, "%s", spruce_errdetail());
    q = spruce_ckpt_find(a, qn);
    cr_assert_not_null(q);
    n = (size_t)spruce_tensor_numel(q);
    orig = malloc(n * 4);
    repl = malloc(n * 4);
    back = malloc(n * 4);
    cr_assert_eq(spruce_tensor_read_f32(q, orig), 0);
    for (i = 0; i < n; i++) /* a third pruned, a third as -0.0, the rest scaled */
        repl[i] = i % 3 == 0 ? 0.0f : i % 3 == 1 ? -0.0f : orig[i] * 1.5f;
    /* below half the smallest subnormal of the dtype: must round to +0.0 */
    repl[2] = dt == SPRUCE_DTYPE_F16 ? -1e-30f : dt == SPRUCE_DTYPE_BF16 ? -1e-45f : 0.0f;

    cr_assert_eq(spruce_ckpt_writer_begin(a, out, 0, &w), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_set_f32(w, qn, repl), 0, "%s", spruce_errdetail());
    cr_assert_not(exists(out), "nothing at OUT before commit");
    cr_assert_eq(spruce_ckpt_writer_commit(w), 0, "%s", spruce_errdetail());
    cr_assert_eq(count_entries_with(tmp, ".tmp-"), 0);

    cr_assert_eq(spruce_ckpt_open(out, &b), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_count(b), spruce_ckpt_count(a));
    for (k = 0; k < spruce_ckpt_count(a); k++) {
        const spruce_tensor *x = spruce_ckpt_tensor_at(a, k), *y = spruce_ckpt_tensor_at(b, k);
        cr_assert_str_eq(x->name, y->name);
        cr_assert_eq(x->dtype, y->dtype);
        cr_assert_eq(x->ndim, y->ndim);
        cr_assert_eq(memcmp(x->shape, y->shape, sizeof x->shape), 0);
        cr_assert_eq(x->nbytes, y->nbytes);
        if (strcmp(x->name, qn))
            cr_assert_eq(memcmp(x->data, y->data, x->nbytes), 0, "%s changed", x->name);
    }
    q = spruce_ckpt_find(b, qn);
    cr_assert_eq(spruce_tensor_read_f32(q, back), 0);
    for (i = 0; i < n; i++) {
        if (repl[i] == 0.0f || (dt == SPRUCE_DTYPE_F16 && fabsf(repl[i]) < 1e-20f) ||
            (dt == SPRUCE_DTYPE_BF16 && fabsf(repl[i]) < 1e-44f)) {
            cr_assert_eq(fbits(back[i]), 0u, "element %zu: zero must be +0.0, found %08x", i, fbits(back[i]));
            nz++;
        } else {
            /* relative half-ulp, plus half the smallest F16 subnormal */
            cr_assert(fabsf(back[i] - repl[i]) <= tol * fabsf(repl[i]) + (dt == SPRUCE_DTYPE_F16 ? 3e-8f : 0),
                      "element %zu: %g vs %g", i,
                      (double)back[i], (double)repl[i]);
        }
        if (dt == SPRUCE_DTYPE_F16) {
            uint16_t h;
            memcpy(&h, (const uint8_t *)q->data + 2 * i, 2);
            cr_assert_eq(h, f16_ref(repl[i]));
        } else if (dt == SPRUCE_DTYPE_BF16) {
            uint16_t h;
            memcpy(&h, (const uint8_t *)q->data + 2 * i, 2);
            cr_assert_eq(h, bf16_ref(repl[i]));
        }
    }
    cr_assert_geq(nz, 2 * n / 3);
    cr_assert_str_eq(spruce_ckpt_metadata(b, 0, "format"), "pt");
    /* the header bytes are the input's, byte for byte; other files copied */
    {
        size_t na, nb;
        uint8_t *x, *y;
        uint64_t hl = 0;
        p1 = path2(in, "model.safetensors");
        p2 = path2(out, "model.safetensors");
        x = read_bytes(p1, &na);
        y = read_bytes(p2, &nb);
        cr_assert_eq(na, nb);
        for (k = 7; k >= 0; k--)
            hl = hl << 8 | x[k];
        cr_assert_eq(memcmp(x, y, 8 + hl), 0);
        free(x);
        free(y);
        free(p1);
        free(p2);
    }
    p1 = path2(in, "tokenizer.json");
    p2 = path2(out, "tokenizer.json");
    cr_assert(files_equal(p1, p2));
    free(p1);
    free(p2);
    p1 = path2(in, "config.json");
    p2 = path2(out, "config.json");
    cr_assert(files_equal(p1, p2));
    free(p1);
    free(p2);
    spruce_ckpt_close(a);
    spruce_ckpt_close(b);
    free(orig);
    free(repl);
    free(back);
    rmrf(tmp);
    free(in);
    free(out);
    free(tmp);
}

Test(writer, roundtrip_f32) { roundtrip(SPRUCE_DTYPE_F32); }
Test(writer, roundtrip_f16) { roundtrip(SPRUCE_DTYPE_F16); }
Test(writer, roundtrip_bf16) { roundtrip(SPRUCE_DTYPE_BF16); }

/* ------------------------------------------------------- sharded checkpoints */

static const char *SHARD1 = "model-00001-of-00002.safetensors";
static const char *SHARD2 = "model-00002-of-00002.safetensors";

/* Two shards: a (F32 2x3), b (BF16 4) | c (F16 2x2), d (I64 2); an index; a
 * tokenizer file.  extra_json is appended inside the second shard's header. */
static void make_sharded(const char *dir, const char *index_json, const char *extra2)
{
    char *p, hdr[1024];
    float a[6] = {1, -2, 3, -4, 5, -6};
    uint16_t b[4] = {0x3f80, 0x4000, 0xbf80, 0x0000}, c[4] = {0x3c00, 0x4000, 0xc200, 0x3800};
    int64_t d[2] = {42, -7};
    uint8_t d2[16 + 8 + 24];
    mkdir(dir, 0777);
    p = path2(dir, SHARD1);
    {
        uint8_t buf[32];
        memcpy(buf, a, 24);
        memcpy(buf + 24, b, 8);
        write_st(p, "{\"__metadata__\":{\"format\":\"pt\"},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                    "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]}}",
                 buf, 32);
    }
    free(p);
    p = path2(dir, SHARD2);
    memcpy(d2, c, 8);
    memcpy(d2 + 8, d, 16);
    memcpy(d2 + 24, a, 24);
    snprintf(hdr, sizeof hdr,
             "{\"__metadata__\":{\"format\":\"pt\",\"shard\":\"two\"},"
             "\"c\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,8]},"
             "\"d\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[8,24]}%s}",
             extra2 ? extra2 : "");
    write_st(p, hdr, d2, sizeof d2);
    free(p);
    p = path2(dir, "model.safetensors.index.json");
    write_bytes(p, index_json, strlen(index_json));
    free(p);
    p = path2(dir, "tokenizer.model");
    write_bytes(p, "\x00\x01tok", 5);
    free(p);
    p = path2(dir, "config.json");
    write_bytes(p, "{}", 2);
    free(p);
}

#define GOOD_INDEX                                                                                  \
    "{\"metadata\":{\"total_size\":56},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","  \
    "\"b\":\"model-00001-of-00002.safetensors\",\"c\":\"model-00002-of-00002.safetensors\","        \
    "\"d\":\"model-00002-of-00002.safetensors\"}}"

Test(sharded, read_and_write_same_layout)
{
    char *tmp = mktmp(), *in = path2(tmp, "in"), *out = path2(tmp, "out"), *p1, *p2;
    spruce_ckpt *c, *o;
    spruce_ckpt_writer *w;
    float v[6], na[6] = {0, -0.0f, 0.25f, 0, 0, 9}, nc[4] = {-0.0f, 0.5f, 0, -1};
    const char *files[] = {"model.safetensors.index.json", "tokenizer.model", "config.json"};
    size_t i;

    make_sharded(in, GOOD_INDEX, NULL);
    cr_assert_eq(spruce_ckpt_open(in, &c), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_nshards(c), 2);
    cr_assert_eq(spruce_ckpt_count(c), 4);
    cr_assert_eq(spruce_ckpt_find(c, "a")->shard, 0);
    cr_assert_eq(spruce_ckpt_find(c, "c")->shard, 1);
    cr_assert(strstr(spruce_ckpt_file_of(c, spruce_ckpt_find(c, "d")), SHARD2));
    cr_assert_eq(spruce_tensor_read_f32(spruce_ckpt_find(c, "b"), v), 0);
    cr_assert(v[0] == 1 && v[1] == 2 && v[2] == -1 && v[3] == 0);
    cr_assert_eq(spruce_tensor_read_f32(spruce_ckpt_find(c, "c"), v), 0);
    cr_assert(v[0] == 1 && v[1] == 2 && v[2] == -3 && v[3] == 0.5f);
    cr_assert_str_eq(spruce_ckpt_metadata(c, 1, "shard"), "two");

    cr_assert_eq(spruce_ckpt_writer_begin(c, out, 0, &w), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_set_f32(w, "a", na), 0);
    cr_assert_eq(spruce_ckpt_writer_set_f32(w, "c", nc), 0);
    cr_assert_eq(spruce_ckpt_writer_set_f32(w, "d", nc), SPRUCE_EDTYPE);
    cr_assert(strstr(spruce_errdetail(), "'d'") && strstr(spruce_errdetail(), "I64"));
    cr_assert_eq(spruce_ckpt_writer_set_f32(w, "zz", nc), SPRUCE_ENOTFOUND);
    cr_assert_eq(spruce_ckpt_writer_set_raw(w, "d", "12345678", 8), SPRUCE_ESHAPE);
    cr_assert_eq(spruce_ckpt_writer_set_raw(w, "d", "0123456789abcdef", 16), 0);
    cr_assert_eq(spruce_ckpt_writer_commit(w), 0, "%s", spruce_errdetail());

    cr_assert_eq(spruce_ckpt_open(out, &o), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_nshards(o), 2);
    cr_assert_eq(spruce_ckpt_find(o, "c")->shard, 1);
    cr_assert_eq(spruce_tensor_read_f32(spruce_ckpt_find(o, "a"), v), 0);
    for (i = 0; i < 6; i++) {
        cr_assert_eq(v[i], na[i]);
        if (na[i] == 0)
            cr_assert_eq(fbits(v[i]), 0u);
    }
    cr_assert_eq(spruce_tensor_read_f32(spruce_ckpt_find(o, "c"), v), 0);
    cr_assert(fbits(v[0]) == 0 && v[1] == 0.5f && v[3] == -1);
    cr_assert_eq(memcmp(spruce_ckpt_find(o, "d")->data, "0123456789abcdef", 16), 0);
    cr_assert_eq(memcmp(spruce_ckpt_find(o, "b")->data, spruce_ckpt_find(c, "b")->data, 8), 0);
    cr_assert_str_eq(spruce_ckpt_metadata(o, 1, "shard"), "two");
    for (i = 0; i < 3; i++) {
        p1 = path2(in, files[i]);
        p2 = path2(out, files[i]);
        cr_assert(files_equal(p1, p2), "%s not copied", files[i]);
        free(p1);
        free(p2);
    }
    spruce_ckpt_close(o);
    spruce_ckpt_close(c);
    rmrf(tmp);
    free(in);
    free(out);
    free(tmp);
}

Test(sharded, inconsistent_indexes_are_refused)
{
    static const struct {
        const char *index, *extra2;
        int code;
        const char *detail;
    } cases[] = {
        {"{\"weight_map\":{\"a\":\"missing.safetensors\"}}", NULL, SPRUCE_ENOTFOUND, "missing.safetensors"},
        {"{\"weight_map\":{\"a\":\"../x.safetensors\"}}", NULL, SPRUCE_EFORMAT, "expected a file name in this directory"},
        {"{\"weight_map\":[]}", NULL, SPRUCE_EFORMAT, "\"weight_map\" to be an object"},
        {"{\"weight_map\":{}}", NULL, SPRUCE_EFORMAT, "is empty"},
        {"{\"weight_map\":{\"a\":", NULL, SPRUCE_EFORMAT, "not valid JSON"},
        {"{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\",\"b\":\"model-00001-of-00002.safetensors\","
         "\"c\":\"model-00002-of-00002.safetensors\",\"d\":\"model-00002-of-00002.safetensors\","
         "\"zz\":\"model-00002-of-00002.safetensors\"}}", NULL, SPRUCE_EFORMAT, "tensor 'zz': listed in"},
        {"{\"weight_map\":{\"a\":\"model-00002-of-00002.safetensors\",\"b\":\"model-00001-of-00002.safetensors\","
         "\"c\":\"model-00002-of-00002.safetensors\",\"d\":\"model-00002-of-00002.safetensors\"}}", NULL,
         SPRUCE_EFORMAT, "tensor 'a': expected in model-00002-of-00002.safetensors as the index says"},
        {"{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\",\"b\":\"model-00001-of-00002.safetensors\","
         "\"c\":\"model-00002-of-00002.safetensors\"}}", NULL, SPRUCE_EFORMAT, "tensor 'd': expected in the weight map"},
        {GOOD_INDEX, ",\"a\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[24,48]}", SPRUCE_EFORMAT,
         "tensor 'a': expected in one file only"},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *tmp = mktmp(), *in = path2(tmp, "in");
        spruce_ckpt *c = NULL;
        int rc;
        make_sharded(in, cases[i].index, cases[i].extra2);
        rc = spruce_ckpt_open(in, &c);
        cr_expect_eq(rc, cases[i].code, "case %zu: %d (%s)", i, rc, spruce_errdetail());
        cr_expect(strstr(spruce_errdetail(), cases[i].detail) != NULL, "case %zu: '%s' lacks '%s'", i,
                  spruce_errdetail(), cases[i].detail);
        cr_expect_null(c);
        rmrf(tmp);
        free(in);
        free(tmp);
    }
}

Test(sharded, missing_files_are_named)
{
    char *tmp = mktmp();
    spruce_ckpt *c = NULL;
    cr_assert_eq(spruce_ckpt_open(tmp, &c), SPRUCE_ENOTFOUND);
    cr_assert(strstr(spruce_errdetail(), "model.safetensors"));
    cr_assert_eq(spruce_ckpt_open("/nonexistent/spruce/dir", &c), SPRUCE_ENOTFOUND);
    cr_assert(strstr(spruce_errdetail(), "/nonexistent/spruce/dir"));
    rmrf(tmp);
    free(tmp);
}

/* ------------------------------------------------------- output safety */

static spruce_ckpt *synth_and_open(const char *dir)
{
    spruce_synth_config cfg = small_cfg(SPRUCE_DTYPE_BF16);
    spruce_ckpt *c;
    cr_assert_eq(spruce_synth_write(dir, &cfg, 0), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_open(dir, &c), 0, "%s", spruce_errdetail());
    return c;
}

Test(writer, refuses_existing_output_unless_forced)
{
    char *tmp = mktmp(), *in = path2(tmp, "in"), *out = path2(tmp, "out"), *keep = path2(out, "keep.txt");
    char *mp = path2(out, "model.safetensors");
    spruce_ckpt *c = synth_and_open(in);
    spruce_ckpt_writer *w = NULL;

    mkdir(out, 0777);
    write_bytes(keep, "x", 1);
    cr_assert_eq(spruce_ckpt_writer_begin(c, out, 0, &w), SPRUCE_EEXIST);
    cr_assert(strstr(spruce_errdetail(), "--force"), "%s", spruce_errdetail());
    cr_assert_null(w);
    cr_assert(exists(keep), "the existing output is untouched");
    cr_assert_eq(count_entries_with(tmp, ".tmp-"), 0);

    cr_assert_eq(spruce_ckpt_writer_begin(c, out, 1, &w), 0, "%s", spruce_errdetail());
    cr_assert(exists(keep), "replaced only at commit");
    cr_assert_eq(spruce_ckpt_writer_commit(w), 0, "%s", spruce_errdetail());
    cr_assert_not(exists(keep), "the old output is gone after commit");
    cr_assert(exists(mp));
    cr_assert_eq(count_entries_with(tmp, ".tmp-") + count_entries_with(tmp, ".old-"), 0);

    /* an existing empty directory is fine without force */
    rmrf(out);
    mkdir(out, 0777);
    cr_assert_eq(spruce_ckpt_writer_begin(c, out, 0, &w), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_commit(w), 0, "%s", spruce_errdetail());
    cr_assert(exists(mp));

    /* a regular file in the way is refused even with force */
    rmrf(out);
    write_bytes(out, "x", 1);
    cr_assert_eq(spruce_ckpt_writer_begin(c, out, 1, &w), SPRUCE_EEXIST);
    unlink(out);
    spruce_ckpt_close(c);
    rmrf(tmp);
    free(in);
    free(out);
    free(keep);
    free(mp);
    free(tmp);
}

Test(writer, refuses_the_input_directory)
{
    char *tmp = mktmp(), *in = path2(tmp, "in"), *alias = path2(tmp, "in/../in/"), *link = path2(tmp, "link");
    spruce_ckpt *c = synth_and_open(in);
    spruce_ckpt_writer *w = NULL;
    cr_assert_eq(spruce_ckpt_writer_begin(c, in, 1, &w), SPRUCE_EINVAL);
    cr_assert(strstr(spruce_errdetail(), "input checkpoint"), "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_begin(c, alias, 1, &w), SPRUCE_EINVAL);
    cr_assert_eq(symlink(in, link), 0);
    cr_assert_eq(spruce_ckpt_writer_begin(c, link, 1, &w), SPRUCE_EINVAL);
    /* a directory that contains the input would be deleted by --force */
    cr_assert_eq(spruce_ckpt_writer_begin(c, tmp, 1, &w), SPRUCE_EINVAL);
    cr_assert_null(w);
    cr_assert_eq(count_entries_with(tmp, ".tmp-"), 0);
    spruce_ckpt_close(c);
    rmrf(tmp);
    free(in);
    free(alias);
    free(link);
    free(tmp);
}

Test(writer, abort_and_failed_writes_leave_nothing)
{
    char *tmp = mktmp(), *in = path2(tmp, "in"), *out = path2(tmp, "out");
    spruce_ckpt *c = synth_and_open(in);
    spruce_ckpt_writer *w = NULL;
    const spruce_tensor *t = spruce_ckpt_find(c, "model.norm.weight");
    float *v = calloc((size_t)spruce_tensor_numel(t), sizeof *v);

    cr_assert_eq(spruce_ckpt_writer_begin(c, out, 0, &w), 0);
    cr_assert_eq(spruce_ckpt_writer_set_f32(w, t->name, v), 0);
    spruce_ckpt_writer_abort(w);
    cr_assert_not(exists(out));
    cr_assert_eq(count_entries_with(tmp, ".tmp-"), 0);
    spruce_ckpt_writer_abort(NULL);

    cr_assert_eq(spruce_ckpt_writer_begin(c, out, 0, &w), 0);
    v[5] = NAN;
    cr_assert_eq(spruce_ckpt_writer_set_f32(w, t->name, v), SPRUCE_ENAN);
    cr_assert(strstr(spruce_errdetail(), "model.norm.weight") && strstr(spruce_errdetail(), "element 5"),
              "%s", spruce_errdetail());
    cr_assert_neq(spruce_ckpt_writer_commit(w), 0);
    cr_assert_not(exists(out));
    cr_assert_eq(count_entries_with(tmp, ".tmp-"), 0);
    free(v);
    spruce_ckpt_close(c);
    rmrf(tmp);
    free(in);
    free(out);
    free(tmp);
}

Test(writer, unknown_dtypes_are_copied_byte_for_byte)
{
    char *tmp, *in, *out, *src, *dst;
    spruce_ckpt *c, *o;
    spruce_ckpt_writer *w;
    float one = 1.5f;
    if (!corpus_dir())
        cr_skip_test("SPRUCE_SRCDIR/tests/data/safetensors not found");
    tmp = mktmp();
    in = path2(tmp, "in");
    out = path2(tmp, "out");
    mkdir(in, 0777);
    src = path2(corpus_dir(), "valid_other_dtypes.safetensors");
    dst = path2(in, "model.safetensors");
    {
        size_t n;
        uint8_t *b = read_bytes(src, &n);
        write_bytes(dst, b, n);
        free(b);
    }
    cr_assert_eq(spruce_ckpt_open(in, &c), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_begin(c, out, 0, &w), 0);
    cr_assert_eq(spruce_ckpt_writer_set_f32(w, "f", &one), 0);
    cr_assert_eq(spruce_ckpt_writer_commit(w), 0);
    cr_assert_eq(spruce_ckpt_open(out, &o), 0);
    cr_assert_eq(memcmp(spruce_ckpt_find(o, "q")->data, "1234567", 7), 0);
    cr_assert_eq(memcmp(spruce_ckpt_find(o, "i")->data, spruce_ckpt_find(c, "i")->data, 16), 0);
    cr_assert_eq(*(const float *)spruce_ckpt_find(o, "f")->data, 1.5f);
    spruce_ckpt_close(o);
    spruce_ckpt_close(c);
    rmrf(tmp);
    free(src);
    free(dst);
    free(in);
    free(out);
    free(tmp);
}

/* ------------------------------------------------------- the real fixture */

Test(fixture, stories260k_reads_and_copies)
{
    const char *fx = getenv("SPRUCE_FIXTURES");
    char dir[4096], *tmp, *out;
    spruce_ckpt *c, *o;
    spruce_ckpt_writer *w;
    const spruce_tensor *t;
    float *v, *z;
    int i;
    const char *files[] = {"config.json", "README.md", "calib.u16", "eval.u16", "greedy_ids.txt"};
    snprintf(dir, sizeof dir, "%s/stories260k", fx ? fx : "");
    if (!fx || !exists(dir))
        cr_skip_test("fixture directory %s not found (set SPRUCE_FIXTURES)", dir);
    cr_assert_eq(spruce_ckpt_open(dir, &c), 0, "%s", spruce_errdetail());
    /* 5 layers x 9 tensors + embedding + final norm; the head is tied */
    cr_assert_eq(spruce_ckpt_count(c), 5 * 9 + 2);
    cr_assert_null(spruce_ckpt_find(c, "lm_head.weight"));
    cr_assert_eq(spruce_ckpt_find(c, "model.embed_tokens.weight")->shape[0], 512);
    cr_assert_eq(spruce_ckpt_find(c, "model.embed_tokens.weight")->shape[1], 64);
    cr_assert_eq(spruce_ckpt_find(c, "model.layers.4.self_attn.k_proj.weight")->shape[0], 32);
    cr_assert_eq(spruce_ckpt_find(c, "model.layers.2.mlp.down_proj.weight")->shape[1], 172);
    v = malloc(512 * 64 * 4);
    for (i = 0; i < spruce_ckpt_count(c); i++) {
        int64_t k;
        t = spruce_ckpt_tensor_at(c, i);
        cr_assert_eq(t->dtype, SPRUCE_DTYPE_F32, "%s", t->name);
        cr_assert_eq(spruce_tensor_read_f32(t, v), 0);
        for (k = 0; k < spruce_tensor_numel(t); k++)
            cr_assert(isfinite(v[k]), "%s[%lld]", t->name, (long long)k);
    }
    tmp = mktmp();
    out = path2(tmp, "pruned");
    t = spruce_ckpt_find(c, "model.layers.3.mlp.up_proj.weight");
    z = calloc((size_t)spruce_tensor_numel(t), 4);
    cr_assert_eq(spruce_ckpt_writer_begin(c, out, 0, &w), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_set_f32(w, t->name, z), 0);
    cr_assert_eq(spruce_ckpt_writer_commit(w), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_open(out, &o), 0);
    for (i = 0; i < spruce_ckpt_count(c); i++) {
        const spruce_tensor *x = spruce_ckpt_tensor_at(c, i), *y = spruce_ckpt_tensor_at(o, i);
        cr_assert_str_eq(x->name, y->name);
        if (strcmp(x->name, t->name))
            cr_assert_eq(memcmp(x->data, y->data, x->nbytes), 0);
        else
            cr_assert_eq(memcmp(y->data, z, y->nbytes), 0);
    }
    for (i = 0; i < 5; i++) {
        char *p1 = path2(dir, files[i]), *p2 = path2(out, files[i]);
        cr_assert(files_equal(p1, p2), "%s", files[i]);
        free(p1);
        free(p2);
    }
    spruce_ckpt_close(o);
    spruce_ckpt_close(c);
    rmrf(tmp);
    free(out);
    free(tmp);
    free(v);
    free(z);
}
