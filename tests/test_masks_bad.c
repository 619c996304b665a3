/* Damaged mask files: the shared crash fixtures and files damaged here from a
 * good one (truncated, bytes changed at fixed offsets and with a fixed seed),
 * through the library reader and `spruce masks info`, `apply` and `diff`.
 * Each is refused with a message naming the file, or read consistently;
 * nothing crashes (run under the sanitizer build too). */
#include <dirent.h>
#include <fcntl.h>

#include "masks_testutil.h"

static char good[512], model[512];

/* A small checkpoint and its 2:4 masks, made by the spruce program. */
static void setup(void)
{
    char cmd[2048];
    const char *bin = spruce_bin();
    make_tmpdir();
    snprintf(model, sizeof model, "%s", tpath("m"));
    snprintf(good, sizeof good, "%s", tpath("good.h5"));
    snprintf(cmd, sizeof cmd,
             "'%s' synth '%s' --hidden 32 --intermediate 64 --layers 1 --heads 2 --kv-heads 1 "
             "--vocab 64 >/dev/null 2>&1 && '%s' prune '%s' -o '%s' --method magnitude "
             "--pattern 2:4 --masks '%s' >/dev/null 2>&1",
             bin, model, bin, model, tpath("p"), good);
    cr_assert_eq(run(cmd), 0, "%s", cmd);
}

static void teardown(void) { remove_tmpdir(); }

TestSuite(masks_bad, .init = setup, .fini = teardown);

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    uint8_t *b;
    long len;
    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    rewind(f);
    b = malloc((size_t)len + 1);
    cr_assert_not_null(b);
    cr_assert_eq(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

static void spill(const char *path, const uint8_t *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(b, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

/* Open path with the library: either refused with a message naming it, or
 * every mask reads, twice the same, with the shape the reader reported.
 * Nothing of HDF5's stays open either way.  Returns 1 when refused. */
static int read_all(const char *path)
{
    spruce_maskreader *r = NULL;
    int rc = spruce_maskreader_open(path, &r), i, refused = 0;
    if (rc < 0) {
        cr_assert_null(r);
        cr_assert_not_null(strstr(spruce_errdetail(), path), "no file name in: %s",
                           spruce_errdetail());
        cr_assert_eq(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0,
                     "%s: HDF5 objects left open after a refusal", path);
        return 1;
    }
    for (i = 0; i < spruce_maskreader_count(r); i++) {
        const char *name = spruce_maskreader_name_at(r, i);
        spruce_mask_meta meta;
        uint8_t *a, *b;
        size_t n;
        cr_assert_eq(spruce_maskreader_meta(r, name, &meta), 0);
        n = (size_t)meta.rows * (size_t)meta.cols;
        a = malloc(n);
        b = malloc(n);
        cr_assert(a && b);
        rc = spruce_maskreader_read(r, name, a, NULL);
        if (rc < 0) {
            cr_assert_not_null(strstr(spruce_errdetail(), name), "no dataset name in: %s",
                               spruce_errdetail());
            refused = 1;
        } else {
            size_t k;
            cr_assert_eq(spruce_maskreader_read(r, name, b, NULL), 0);
            cr_assert_eq(memcmp(a, b, n), 0, "%s: %s reads differently twice", path, name);
            for (k = 0; k < n; k++)
                cr_assert(a[k] <= 1);
        }
        free(a);
        free(b);
    }
    spruce_maskreader_close(r);
    cr_assert_eq(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0,
                 "%s: HDF5 objects left open after closing", path);
    return refused;
}

/* The spruce program on a damaged file: exit status 1 (not a signal) and a
 * message naming the file. */
static void cli_refuses(const char *what, const char *file)
{
    char cmd[4096], *out;
    int st;
    const char *bin = spruce_bin();
    if (!strcmp(what, "info"))
        snprintf(cmd, sizeof cmd, "'%s' masks info '%s' 2>&1 >/dev/null", bin, file);
    else if (!strcmp(what, "json"))
        snprintf(cmd, sizeof cmd, "'%s' masks info --json '%s' 2>&1 >/dev/null", bin, file);
    else if (!strcmp(what, "diff"))
        snprintf(cmd, sizeof cmd, "'%s' masks diff '%s' '%s' 2>&1 >/dev/null", bin, good, file);
    else
        snprintf(cmd, sizeof cmd, "rm -rf '%s'; '%s' masks apply '%s' '%s' -o '%s' 2>&1 >/dev/null",
                 tpath("out"), bin, model, file, tpath("out"));
    out = capture(cmd, &st);
    cr_assert_eq(st, 1, "masks %s %s: status %d (a crash is -1), output: %s", what, file, st, out);
    cr_assert_not_null(strstr(out, file), "masks %s: no file name in: %s", what, out);
    cr_assert_null(strstr(out, "HDF5-DIAG"), "raw HDF5 error stack printed: %s", out);
    cr_assert(!exists(tpath("out")), "masks apply left its output");
    free(out);
}

static int list_fixtures(char names[][1300], int cap)
{
    const char *root = getenv("SPRUCE_FIXTURES");
    char dir[1024];
    DIR *d;
    struct dirent *e;
    int n = 0;
    if (!root || !*root)
        cr_skip_test("SPRUCE_FIXTURES not set (run through 'make check')");
    snprintf(dir, sizeof dir, "%s/bad/masks", root);
    if (!(d = opendir(dir)))
        cr_skip_test("fixture directory %s absent", dir);
    while ((e = readdir(d)) && n < cap)
        if (strstr(e->d_name, ".h5"))
            snprintf(names[n++], 1300, "%s/%s", dir, e->d_name);
    closedir(d);
    cr_assert_gt(n, 0, "no .h5 files in %s", dir);
    return n;
}

Test(masks_bad, fixtures_refused_by_the_library)
{
    static char names[64][1300];
    int n = list_fixtures(names, 64), i;
    for (i = 0; i < n; i++)
        cr_assert_eq(read_all(names[i]), 1, "%s was not refused", names[i]);
}

Test(masks_bad, fixtures_refused_by_info_apply_diff)
{
    static char names[64][1300];
    int n = list_fixtures(names, 64), i;
    for (i = 0; i < n; i++) {
        cli_refuses("info", names[i]);
        cli_refuses("json", names[i]);
        cli_refuses("diff", names[i]);
        cli_refuses("apply", names[i]);
    }
}

Test(masks_bad, good_file_reads)
{
    cr_assert_eq(read_all(good), 0, "%s", spruce_errdetail());
}

Test(masks_bad, truncated_files_refused)
{
    size_t n, cuts[12], k;
    uint8_t *b = slurp(good, &n);
    const char *p = tpath("cut.h5");
    size_t i = 0;
    cuts[i++] = 0;
    cuts[i++] = 8;
    cuts[i++] = 96;
    cuts[i++] = 512;
    cuts[i++] = 1024;
    cuts[i++] = 2048;
    cuts[i++] = n / 4;
    cuts[i++] = n / 2;
    cuts[i++] = 3 * n / 4;
    cuts[i++] = n - 512;
    cuts[i++] = n - 1;
    for (k = 0; k < i; k++) {
        spill(p, b, cuts[k]);
        cr_assert_eq(read_all(p), 1, "truncated at %zu of %zu bytes: not refused", cuts[k], n);
    }
    spill(p, b, n / 2);
    cli_refuses("info", p);
    cli_refuses("diff", p);
    cli_refuses("apply", p);
    free(b);
}

/* Every third byte of the superblock and the root group's first object header
 * chunk (its attribute and link messages) changed in turn: each file is
 * refused or read consistently. */
Test(masks_bad, header_bytes_changed_refused_or_read_consistently)
{
    size_t n, off, lim;
    uint8_t *b = slurp(good, &n), *c = malloc(n);
    const char *p = tpath("flip.h5");
    int refused = 0;
    cr_assert_not_null(c);
    lim = n < 1200 ? n : 1200;
    for (off = 0; off < lim; off += 3) {
        memcpy(c, b, n);
        c[off] ^= 0x5a;
        spill(p, c, n);
        refused += read_all(p);
    }
    cr_assert_gt(refused, 0, "no changed file was refused");
    free(b);
    free(c);
}

/* 400 bytes anywhere in the file, chosen with a fixed seed, all in one
 * process.  Among them: a link message's name length (HDF5 1.10 then frees
 * memory it never set, and crashes or not depending on what earlier files
 * left on the heap), the length of the root header's continuation chunk
 * (HDF5 allocates it before anything checks it), and the data layout and fill
 * value messages of a dataset (HDF5 leaks what it decoded before them). */
Test(masks_bad, random_bytes_changed_refused_or_read_consistently)
{
    size_t n, off;
    uint8_t *b = slurp(good, &n), *c = malloc(n);
    const char *p = tpath("flip.h5");
    int k;
    cr_assert_not_null(c);
    rng_state = 0x5eed5eedull;
    for (k = 0; k < 400; k++) {
        memcpy(c, b, n);
        off = rnd() % n;
        c[off] ^= (uint8_t)(1 + rnd() % 255);
        spill(p, c, n);
        read_all(p);
    }
    free(b);
    free(c);
}
/* The fuzz target's seed corpus (tests/data/masks): the files spruce wrote
 * read, the damaged ones are refused.  Seven were found by the fuzzer, each
 * refused before HDF5 decodes or reads what is damaged: pline-type-damaged.h5
 * (the filter pipeline message's type changed, so HDF5 would read the deflated
 * chunks raw and copy past them), efl-damaged.h5 (an attribute message turned
 * external-file list, which HDF5 leaks on), layout-damaged.h5 (a layout
 * message HDF5 1.10 leaks on), chunk-dims-damaged.h5 (a chunk of 16 MiB over
 * a 16 x 16 dataset: HDF5 copies 16 MiB out of the 256 bytes inflated) and
 * continuation-damaged.h5 (the root header continued at address 0, over the
 * superblock: HDF5's metadata cache fails and leaks) and linfo-damaged.h5 (link
 * info flags changed, so HDF5 looks for dense links at address 0 and
 * dereferences NULL), chunk-size-damaged.h5 (a chunk of 4 GiB or more: HDF5
 * refuses it and leaks), pline-no-deflate-damaged.h5 (a pipeline of shuffle
 * alone over deflated chunks: HDF5 copies a whole chunk out of the 46 bytes
 * stored). */
Test(masks_bad, seed_corpus_read_or_refused)
{
    static const char *const good_files[] = {"export.h5", "prune-2of4.h5",
                                             "prune-unstructured.h5"};
    static const char *const bad_files[] = {"cut-1k.h5", "cut-half.h5", "pline-type-damaged.h5",
                                            "efl-damaged.h5", "chunk-dims-damaged.h5",
                                            "continuation-damaged.h5", "linfo-damaged.h5",
                                            "chunk-size-damaged.h5", "pline-no-deflate-damaged.h5",
                                            "layout-damaged.h5"};
    const char *src = getenv("SPRUCE_SRCDIR");
    char p[1024];
    size_t k;
    if (!src || !*src)
        cr_skip_test("SPRUCE_SRCDIR not set (run through 'make check')");
    for (k = 0; k < sizeof good_files / sizeof *good_files; k++) {
        snprintf(p, sizeof p, "%s/tests/data/masks/%s", src, good_files[k]);
        cr_assert_eq(read_all(p), 0, "%s: %s", p, spruce_errdetail());
    }
    for (k = 0; k < sizeof bad_files / sizeof *bad_files; k++) {
        snprintf(p, sizeof p, "%s/tests/data/masks/%s", src, bad_files[k]);
        cr_assert_eq(read_all(p), 1, "%s was not refused", p);
        if (strstr(p, "no-deflate"))
            cr_assert_not_null(strstr(spruce_errdetail(), "not deflated"), "%s",
                               spruce_errdetail());
    }
    cr_assert_not_null(strstr(spruce_errdetail(), "layout"), "%s", spruce_errdetail());
    cli_refuses("info", p);
}

/* Older mask files stored strings variable-length: refused with a message
 * saying so (reading them goes through HDF5's global heap, which crashes on
 * damage). */
Test(masks_bad, variable_length_strings_refused)
{
    const char *p = tpath("vlen.h5");
    hid_t f, t, s, a;
    const char *v = SPRUCE_MASKS_FORMAT;
    int64_t ver = 1;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    s = H5Screate(H5S_SCALAR);
    a = H5Acreate2(f, "format", t, s, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(H5Awrite(a, t, &v), 0);
    H5Aclose(a);
    a = H5Acreate2(f, "format_version", H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(H5Awrite(a, H5T_NATIVE_INT64, &ver), 0);
    H5Aclose(a);
    H5Sclose(s);
    H5Tclose(t);
    H5Fclose(f);
    cr_assert_eq(read_all(p), 1);
    cr_assert_not_null(strstr(spruce_errdetail(), "variable-length"), "%s", spruce_errdetail());
    cli_refuses("info", p);
}

/* The writer keeps every link in the root group's header, past HDF5's
 * default of 8 (the reader refuses dense link storage, which it cannot
 * check): a file of 40 masks reads. */
Test(masks_bad, many_masks_keep_their_links_in_the_header)
{
    spruce_maskfile *f;
    uint8_t *k = nm_mask(4, 16, 2, 4);
    char name[32];
    int i;
    cr_assert_eq(spruce_maskfile_create(tpath("many.h5"), &f), 0, "%s", spruce_errdetail());
    for (i = 0; i < 40; i++) {
        snprintf(name, sizeof name, "layer%d.weight", i);
        cr_assert_eq(spruce_maskfile_write(f, name, 4, 16, k, NULL), 0, "%s", spruce_errdetail());
    }
    cr_assert_eq(spruce_maskfile_commit(f), 0, "%s", spruce_errdetail());
    cr_assert_eq(read_all(tpath("many.h5")), 0, "%s", spruce_errdetail());
    free(k);
}

/* The offset of the first chunk index node ("TREE", node type 1) in b. */
static size_t first_chunk_node(const uint8_t *b, size_t n)
{
    size_t k;
    for (k = 0; k + 64 < n; k++)
        if (!memcmp(b + k, "TREE", 4) && b[k + 4] == 1)
            return k;
    cr_assert_fail("no chunk index node in the file");
    return 0;
}

static uint64_t get8(const uint8_t *p)
{
    uint64_t v = 0;
    int k;
    for (k = 7; k >= 0; k--)
        v = v << 8 | p[k];
    return v;
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
    while (n-- > 0) {
        *p++ = (uint8_t)v;
        v >>= 8;
    }
}

/* Damaged chunk records (a size of 3 GiB, an address past the end, a filter
 * mask naming filters the pipeline lacks, an offset off the chunk grid) and
 * damaged nodes (level, entries in use, signature) are refused by the
 * reader's own walk of the chunk index, before HDF5 would allocate what a
 * record claims. */
Test(masks_bad, damaged_chunk_index_refused_before_hdf5_reads_it)
{
    static const struct {
        const char *what;
        size_t at;   /* from the node's start; the first record's key is at 24 */
        uint64_t v;
        int n;
        const char *msg;
    } cases[] = {
        {"chunk size 3 GiB", 24, 0xC0000000u, 4, "chunk record's address or size"},
        {"chunk size past the file", 24, 0x10000000u, 4, "outside the file"},
        {"chunk address past the file", 56, 0x7fffffff0ull, 8, "outside the file"},
        {"filter mask", 28, 0x2, 4, "filter mask"},
        {"chunk offset off the grid", 32, 3, 8, "offset"},
        {"element offset", 48, 1, 8, "offset"},
        {"node level (children read as nodes)", 5, 7, 1, "chunk index node"},
        {"node level past the bound", 5, 200, 1, "level"},
        {"entries in use", 6, 0xffff, 2, "entries"},
        {"no entries", 6, 0, 2, "entries"},
        {"signature", 0, 'X', 1, "TREE"},
    };
    size_t n, node, i;
    uint64_t chunk;
    uint8_t *orig = slurp(good, &n), *b = malloc(n);
    const char *p = tpath("chunkindex.h5");
    cr_assert_not_null(b);
    node = first_chunk_node(orig, n);
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(b, orig, n);
        put_le(b + node + cases[i].at, cases[i].v, cases[i].n);
        spill(p, b, n);
        cr_assert_eq(read_all(p), 1, "%s: not refused", cases[i].what);
        cr_assert_not_null(strstr(spruce_errdetail(), cases[i].msg), "%s: %s", cases[i].what,
                           spruce_errdetail());
    }
    /* a size inside the file but beyond what a chunk of the shape can take */
    memcpy(b, orig, n);
    chunk = get8(b + node + 56);
    cr_assert_lt(chunk, n);
    cr_assert_gt(n - chunk, 2 * 1024 + 64, "the file is too short for this case");
    put_le(b + node + 24, n - chunk, 4);
    spill(p, b, n);
    cr_assert_eq(read_all(p), 1);
    cr_assert_not_null(strstr(spruce_errdetail(), "declared shape"), "%s", spruce_errdetail());
    cli_refuses("info", p);
    free(orig);
    free(b);
}

/* A dataset of 200 small chunks (a chunk index of more than one level),
 * written by HDF5 with shuffle, deflate and Fletcher-32, walks and reads back
 * exactly; without one chunk (never written) it is refused. */
Test(masks_bad, many_chunk_index_levels_read)
{
    const char *p = tpath("levels.h5");
    hsize_t dims[2] = {100, 8}, chunk[2] = {1, 4};
    hid_t f, t, s, a, dcpl, d, bt;
    int8_t data[100][8], v;
    int64_t ver = 1;
    spruce_maskreader *r;
    uint8_t back[800];
    int i, j;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    for (i = 0; i < 100; i++)
        for (j = 0; j < 8; j++)
            data[i][j] = (int8_t)((i * 7 + j * 3) % 5 < 2);
    f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(SPRUCE_MASKS_FORMAT) + 1);
    s = H5Screate(H5S_SCALAR);
    a = H5Acreate2(f, "format", t, s, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(H5Awrite(a, t, SPRUCE_MASKS_FORMAT), 0);
    H5Aclose(a);
    a = H5Acreate2(f, "format_version", H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(H5Awrite(a, H5T_NATIVE_INT64, &ver), 0);
    H5Aclose(a);
    H5Sclose(s);
    H5Tclose(t);
    bt = H5Tenum_create(H5T_NATIVE_INT8);
    v = 0;
    H5Tenum_insert(bt, "FALSE", &v);
    v = 1;
    H5Tenum_insert(bt, "TRUE", &v);
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, chunk);
    H5Pset_shuffle(dcpl);
    H5Pset_deflate(dcpl, 4);
    H5Pset_fletcher32(dcpl);
    s = H5Screate_simple(2, dims, NULL);
    d = H5Dcreate2(f, "w", bt, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    cr_assert_geq(H5Dwrite(d, bt, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), 0);
    H5Dclose(d);
    /* the same shape with only the first row written */
    d = H5Dcreate2(f, "partial", bt, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    {
        hsize_t start[2] = {0, 0}, count[2] = {1, 8};
        hid_t ms = H5Screate_simple(2, count, NULL);
        H5Sselect_hyperslab(s, H5S_SELECT_SET, start, NULL, count, NULL);
        cr_assert_geq(H5Dwrite(d, bt, ms, s, H5P_DEFAULT, data), 0);
        H5Sclose(ms);
    }
    H5Dclose(d);
    H5Sclose(s);
    H5Pclose(dcpl);
    H5Tclose(bt);
    H5Fclose(f);
    cr_assert_eq(read_all(p), 1, "the partly written dataset was not refused");
    cr_assert_not_null(strstr(spruce_errdetail(), "partial"), "%s", spruce_errdetail());
    cr_assert_not_null(strstr(spruce_errdetail(), "every chunk"), "%s", spruce_errdetail());
    /* without the partial dataset the file reads */
    f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert_geq(H5Ldelete(f, "partial", H5P_DEFAULT), 0);
    H5Fclose(f);
    cr_assert_eq(spruce_maskreader_open(p, &r), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_maskreader_read(r, "w", back, NULL), 0, "%s", spruce_errdetail());
    cr_assert_eq(memcmp(back, data, sizeof back), 0);
    spruce_maskreader_close(r);
}

/* A chunk whose deflate stream is valid but inflates short (the record's size
 * unchanged, the rest of the stored bytes zeros): refused before HDF5 reads it,
 * naming the dataset and the chunk.  h5py finds the chunk and rewrites it. */
Test(masks_bad, chunk_inflating_short_refused)
{
    char cmd[4096];
    const char *py = find_python(), *name = "model.layers.0.mlp.up_proj.weight";
    spruce_maskreader *r;
    uint8_t *buf;
    spruce_mask_meta meta;
    if (!py)
        cr_skip_test("python3 with h5py and numpy not available (Debian python3-h5py)");
    snprintf(cmd, sizeof cmd, "cp '%s' '%s' && %s -c '\n"
             "import h5py, zlib\n"
             "with h5py.File(\"%s\", \"r\") as f:\n"
             "    d = f[\"%s\"]\n"
             "    info = d.id.get_chunk_info(0)\n"
             "short = zlib.compress(bytes(7))\n"
             "assert len(short) < info.size\n"
             "with open(\"%s\", \"r+b\") as g:\n"
             "    g.seek(info.byte_offset)\n"
             "    g.write(short + bytes(info.size - len(short)))\n"
             "'", good, tpath("short.h5"), py, tpath("short.h5"), name, tpath("short.h5"));
    cr_assert_eq(run(cmd), 0, "%s", cmd);
    cr_assert_eq(spruce_maskreader_open(tpath("short.h5"), &r), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_maskreader_meta(r, name, &meta), 0);
    buf = malloc((size_t)(meta.rows * meta.cols));
    cr_assert_eq(spruce_maskreader_read(r, name, buf, NULL), SPRUCE_EFORMAT);
    cr_assert(strstr(spruce_errdetail(), name) && strstr(spruce_errdetail(), "does not inflate") &&
              strstr(spruce_errdetail(), "row 0, column 0"), "%s", spruce_errdetail());
    spruce_maskreader_close(r);
    free(buf);
    cli_refuses("info", tpath("short.h5"));
    cli_refuses("apply", tpath("short.h5"));
}

/* Files written by h5py with Fletcher-32 after deflate (its order) and before
 * it (the checksum inside the deflated bytes), and with a partial edge chunk:
 * read back exactly. */
Test(masks_bad, fletcher32_either_side_of_deflate_reads)
{
    char cmd[4096];
    const char *py = find_python();
    int order;
    if (!py)
        cr_skip_test("python3 with h5py and numpy not available (Debian python3-h5py)");
    for (order = 0; order < 2; order++) {
        spruce_maskreader *r;
        uint8_t back[37 * 50];
        int64_t i;
        snprintf(cmd, sizeof cmd, "%s -c '\n"
                 "import h5py, numpy as np\n"
                 "m = (np.arange(37 * 50).reshape(37, 50) %% 3 == 0)\n"
                 "f = h5py.File(\"%s\", \"w\")\n"
                 "f.attrs[\"format\"] = np.bytes_(b\"spruce-masks\")\n"
                 "f.attrs[\"format_version\"] = np.int32(1)\n"
                 "p = h5py.h5p.create(h5py.h5p.DATASET_CREATE)\n"
                 "p.set_chunk((16, 24))\n"
                 "p.set_shuffle()\n"
                 "%s\n"
                 "sp = h5py.h5s.create_simple((37, 50))\n"
                 "t = h5py.h5t.py_create(np.dtype(bool))\n"
                 "d = h5py.h5d.create(f.id, b\"m\", t, sp, p)\n"
                 "d.write(h5py.h5s.ALL, h5py.h5s.ALL, m)\n"
                 "f.close()\n"
                 "'", py, tpath("f.h5"),
                 order ? "p.set_fletcher32()\np.set_deflate(4)" : "p.set_deflate(4)\np.set_fletcher32()");
        cr_assert_eq(run(cmd), 0, "%s", cmd);
        cr_assert_eq(spruce_maskreader_open(tpath("f.h5"), &r), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_maskreader_read(r, "m", back, NULL), 0, "order %d: %s", order,
                     spruce_errdetail());
        for (i = 0; i < 37 * 50; i++)
            cr_assert_eq(back[i], i % 3 == 0, "order %d: element %lld", order, (long long)i);
        spruce_maskreader_close(r);
    }
}
