/* test_masks.c: HDF5 mask files (round trip, independent readers, atomic
 * writes, bad files) and mask statistics against direct computation (the
 * `spruce masks` commands are in test_masks_cli.c). */
#include "masks_testutil.h"

static void expect_open_error(const char *path, int code, const char *needle);

/* ---- file round trip ---------------------------------------------------- */

TestSuite(maskfile, .init = make_tmpdir, .fini = remove_tmpdir);

Test(maskfile, round_trip_values_attributes_and_order)
{
    const int64_t r1 = 37, c1 = 300, r2 = 16, c2 = 8;
    uint8_t *a = random_mask(r1, c1, 40), *b = nm_mask(r2, c2, 2, 4), *back;
    spruce_maskfile *f;
    spruce_maskreader *r;
    spruce_mask_meta meta;
    spruce_mask_info ia = {"unstructured", "sparsegpt", -1, 12.5, 1};
    spruce_mask_info ib = {"2:4", "magnitude", 0.5, 0, 0};
    const spruce_mask_attr *at;
    int64_t i, kept = 0;
    const char *path = tpath("m.h5");

    /* A byte other than 0/1 counts as kept. */
    a[3] = 7;
    cr_assert_eq(spruce_maskfile_create(path, &f), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_maskfile_set_attr_string(f, "model", "/models/x"), 0);
    cr_assert_eq(spruce_maskfile_set_attr_double(f, "damp", 0.01), 0);
    cr_assert_eq(spruce_maskfile_set_attr_int(f, "nsamples", 128), 0);
    cr_assert_eq(spruce_maskfile_set_attr_int(f, "nsamples", 64), 0); /* replaced */
    cr_assert_eq(spruce_maskfile_set_attr_string(f, "format", "x"), SPRUCE_EINVAL);
    /* Written in model order, which is not name order. */
    cr_assert_eq(spruce_maskfile_write(f, "model.layers.1.mlp.down_proj.weight", r1, c1, a, &ia),
                 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_maskfile_write(f, "model.layers.0.self_attn.q_proj.weight", r2, c2, b, &ib),
                 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_maskfile_write(f, "model.layers.0.self_attn.q_proj.weight", r2, c2, b, &ib),
                 SPRUCE_EEXIST);
    cr_assert_eq(spruce_maskfile_write(f, "a/b", r2, c2, b, NULL), SPRUCE_EINVAL);
    cr_assert_eq(spruce_maskfile_write(f, "zero", 0, c2, b, NULL), SPRUCE_EINVAL);
    cr_assert_eq(spruce_maskfile_commit(f), 0, "%s", spruce_errdetail());

    cr_assert_eq(spruce_maskreader_open(path, &r), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_maskreader_count(r), 2);
    cr_assert_str_eq(spruce_maskreader_name_at(r, 0), "model.layers.1.mlp.down_proj.weight");
    cr_assert_str_eq(spruce_maskreader_name_at(r, 1), "model.layers.0.self_attn.q_proj.weight");
    cr_assert_null(spruce_maskreader_name_at(r, 2));
    cr_assert_eq(spruce_maskreader_find(r, "nope"), -1);

    back = malloc((size_t)(r1 * c1));
    cr_assert_eq(spruce_maskreader_read(r, "model.layers.1.mlp.down_proj.weight", back, &meta), 0,
                 "%s", spruce_errdetail());
    cr_assert_eq(meta.rows, r1);
    cr_assert_eq(meta.cols, c1);
    for (i = 0; i < r1 * c1; i++) {
        cr_assert_eq(back[i], a[i] != 0, "element %lld", (long long)i);
        kept += a[i] != 0;
    }
    /* sparsity < 0 in the info: computed from the mask. */
    cr_assert_float_eq(meta.sparsity, 1.0 - (double)kept / (double)(r1 * c1), 1e-12);
    cr_assert_str_eq(meta.pattern, "unstructured");
    cr_assert_str_eq(meta.method, "sparsegpt");
    cr_assert(meta.has_loss);
    cr_assert_float_eq(meta.loss, 12.5, 1e-12);

    cr_assert_eq(spruce_maskreader_meta(r, "model.layers.0.self_attn.q_proj.weight", &meta), 0);
    cr_assert_eq(meta.rows, r2);
    cr_assert_eq(meta.cols, c2);
    cr_assert_str_eq(meta.pattern, "2:4");
    cr_assert_str_eq(meta.method, "magnitude");
    cr_assert_float_eq(meta.sparsity, 0.5, 1e-12);
    cr_assert_not(meta.has_loss);
    cr_assert_eq(spruce_maskreader_read(r, "model.layers.0.self_attn.q_proj.weight", back, NULL), 0);
    cr_assert_eq(memcmp(back, b, (size_t)(r2 * c2)), 0);
    cr_assert_eq(spruce_maskreader_read(r, "missing", back, NULL), SPRUCE_ENOTFOUND);
    cr_assert(strstr(spruce_errdetail(), "missing"));

    at = spruce_maskreader_attr(r, "format");
    cr_assert_not_null(at);
    cr_assert_eq(at->type, SPRUCE_MASK_ATTR_STRING);
    cr_assert_str_eq(at->s, "spruce-masks");
    at = spruce_maskreader_attr(r, "format_version");
    cr_assert_eq(at->type, SPRUCE_MASK_ATTR_INT);
    cr_assert_eq(at->i, 1);
    at = spruce_maskreader_attr(r, "model");
    cr_assert_str_eq(at->s, "/models/x");
    at = spruce_maskreader_attr(r, "damp");
    cr_assert_eq(at->type, SPRUCE_MASK_ATTR_DOUBLE);
    cr_assert_float_eq(at->d, 0.01, 1e-15);
    at = spruce_maskreader_attr(r, "nsamples");
    cr_assert_eq(at->type, SPRUCE_MASK_ATTR_INT);
    cr_assert_eq(at->i, 64);
    cr_assert_eq(spruce_maskreader_nattrs(r), 5);
    spruce_maskreader_close(r);
    spruce_maskreader_close(NULL);
    free(a);
    free(b);
    free(back);
}

Test(maskfile, large_mask_crosses_chunks)
{
    /* 300 x 20000: more than one chunk in both directions. */
    const int64_t rows = 300, cols = 20000;
    uint8_t *a = random_mask(rows, cols, 50), *back = malloc((size_t)(rows * cols));
    spruce_maskreader *r;
    cr_assert_eq(write_one(tpath("big.h5"), "w", rows, cols, a), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_maskreader_open(tpath("big.h5"), &r), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_maskreader_read(r, "w", back, NULL), 0, "%s", spruce_errdetail());
    cr_assert_eq(memcmp(a, back, (size_t)(rows * cols)), 0);
    spruce_maskreader_close(r);
    free(a);
    free(back);
}

Test(maskfile, write_is_atomic)
{
    const char *path = tpath("atomic.h5");
    uint8_t k[8] = {1, 0, 1, 0, 1, 1, 0, 0};
    spruce_maskfile *f;
    char tmp[512];
    FILE *old;

    /* Nothing at the final name before commit; abort leaves nothing. */
    cr_assert_eq(spruce_maskfile_create(path, &f), 0);
    snprintf(tmp, sizeof tmp, "%s", spruce_maskfile_temp_path(f));
    cr_assert(exists(tmp));
    cr_assert_not(exists(path));
    cr_assert_eq(spruce_maskfile_write(f, "w", 2, 4, k, NULL), 0);
    cr_assert_not(exists(path));
    spruce_maskfile_abort(f);
    spruce_maskfile_abort(NULL);
    cr_assert_not(exists(tmp));
    cr_assert_eq(count_dir_entries(tmpdir), 0);

    /* An existing file is only replaced on commit. */
    old = fopen(path, "w");
    fputs("old contents", old);
    fclose(old);
    cr_assert_eq(spruce_maskfile_create(path, &f), 0);
    cr_assert_eq(spruce_maskfile_write(f, "w", 2, 4, k, NULL), 0);
    {
        spruce_maskreader *r;
        cr_assert_eq(spruce_maskreader_open(path, &r), SPRUCE_EFORMAT); /* still the old file */
    }
    snprintf(tmp, sizeof tmp, "%s", spruce_maskfile_temp_path(f));
    cr_assert_eq(spruce_maskfile_commit(f), 0);
    cr_assert_not(exists(tmp));
    cr_assert_eq(count_dir_entries(tmpdir), 1);
    {
        spruce_maskreader *r;
        cr_assert_eq(spruce_maskreader_open(path, &r), 0, "%s", spruce_errdetail());
        cr_assert_eq(spruce_maskreader_count(r), 1);
        spruce_maskreader_close(r);
    }
    /* A directory that does not exist: a clear error, nothing created. */
    cr_assert_eq(spruce_maskfile_create(tpath("no/such/dir.h5"), &f), SPRUCE_ENOTFOUND);
    cr_assert(strstr(spruce_errdetail(), "no/such/dir.h5"));
}

/* ---- independent readers ------------------------------------------------ */

Test(maskfile, h5dump_reads_bool_enum_and_attributes)
{
    uint8_t k[12] = {1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0};
    spruce_mask_info info = {"2:4", "wanda", 0.5, 0, 0};
    spruce_maskfile *f;
    char cmd[1024], *out;
    int st;
    if (!have_program("h5dump"))
        cr_skip_test("h5dump not installed (Debian package hdf5-tools)");
    cr_assert_eq(spruce_maskfile_create(tpath("d.h5"), &f), 0);
    cr_assert_eq(spruce_maskfile_set_attr_string(f, "method", "wanda"), 0);
    cr_assert_eq(spruce_maskfile_write(f, "model.layers.0.mlp.up_proj.weight", 3, 4, k, &info), 0);
    cr_assert_eq(spruce_maskfile_commit(f), 0);
    snprintf(cmd, sizeof cmd, "h5dump '%s'", tpath("d.h5"));
    out = capture(cmd, &st);
    cr_assert_eq(st, 0, "h5dump failed:\n%s", out);
    cr_assert(strstr(out, "DATASET \"model.layers.0.mlp.up_proj.weight\""), "%s", out);
    cr_assert(strstr(out, "H5T_ENUM"), "%s", out);
    cr_assert(strstr(out, "H5T_STD_I8LE"), "%s", out);
    cr_assert(strstr(out, "\"FALSE\"      0") || strstr(out, "\"FALSE\" 0") ||
                  strstr(out, "\"FALSE\""), "%s", out);
    cr_assert(strstr(out, "DATASPACE  SIMPLE { ( 3, 4 ) / ( 3, 4 ) }"), "%s", out);
    cr_assert(strstr(out, "TRUE, FALSE, FALSE, TRUE"), "%s", out);
    cr_assert(strstr(out, "FALSE, TRUE, TRUE, FALSE"), "%s", out);
    cr_assert(strstr(out, "\"spruce-masks\""), "%s", out);
    cr_assert(strstr(out, "\"2:4\""), "%s", out);
    free(out);
    /* The filters are recorded: shuffle and deflate. */
    snprintf(cmd, sizeof cmd, "h5dump -p -H '%s'", tpath("d.h5"));
    out = capture(cmd, &st);
    cr_assert_eq(st, 0);
    cr_assert(strstr(out, "SHUFFLE"), "%s", out);
    cr_assert(strstr(out, "DEFLATE"), "%s", out);
    cr_assert(strstr(out, "CHUNKED"), "%s", out);
    free(out);
}

Test(maskfile, h5py_reads_numpy_bool)
{
    const int64_t rows = 19, cols = 24;
    uint8_t *k = random_mask(rows, cols, 30);
    spruce_mask_info info = {"unstructured", "sparsegpt", -1, 3.25, 1};
    spruce_maskfile *f;
    char cmd[4096];
    int64_t i, kept = 0, first_row = 0;
    const char *py = find_python();
    if (!py)
        cr_skip_test("python3 with h5py and numpy not available (Debian python3-h5py)");
    for (i = 0; i < rows * cols; i++)
        kept += k[i];
    for (i = 0; i < cols; i++)
        first_row += (int64_t)k[i] * (i + 1);
    cr_assert_eq(spruce_maskfile_create(tpath("p.h5"), &f), 0);
    cr_assert_eq(spruce_maskfile_set_attr_int(f, "seqlen", 2048), 0);
    cr_assert_eq(spruce_maskfile_write(f, "model.layers.0.mlp.gate_proj.weight", rows, cols, k,
                                       &info), 0);
    cr_assert_eq(spruce_maskfile_commit(f), 0);
    /* dtype bool, shape, number kept, a position-weighted checksum of row 0,
     * attributes as Python str / float / int. */
    snprintf(cmd, sizeof cmd,
             "%s -c '\n"
             "import h5py, numpy as np\n"
             "f = h5py.File(\"%s\", \"r\")\n"
             "assert f.attrs[\"format\"] == b\"spruce-masks\", f.attrs[\"format\"]\n"
             "assert int(f.attrs[\"format_version\"]) == 1\n"
             "assert int(f.attrs[\"seqlen\"]) == 2048\n"
             "d = f[\"model.layers.0.mlp.gate_proj.weight\"]\n"
             "assert d.dtype == np.bool_, d.dtype\n"
             "assert d.shape == (%lld, %lld), d.shape\n"
             "m = d[()]\n"
             "assert m.dtype == np.bool_\n"
             "assert int(m.sum()) == %lld, m.sum()\n"
             "assert int((m[0] * np.arange(1, %lld + 1)).sum()) == %lld\n"
             "assert d.attrs[\"pattern\"] == b\"unstructured\"\n"
             "assert d.attrs[\"method\"] == b\"sparsegpt\"\n"
             "assert abs(float(d.attrs[\"loss\"]) - 3.25) < 1e-12\n"
             "assert abs(float(d.attrs[\"sparsity\"]) - (1 - %lld / %lld)) < 1e-12\n"
             "assert d.compression == \"gzip\" and d.shuffle and d.chunks is not None\n"
             "'",
             py, tpath("p.h5"), (long long)rows, (long long)cols, (long long)kept, (long long)cols,
             (long long)first_row, (long long)kept, (long long)(rows * cols));
    cr_assert_eq(run(cmd), 0, "python3/h5py check failed");
    free(k);
}

Test(maskfile, reads_a_file_written_by_h5py)
{
    /* A file made by someone else's tool (no creation order, fixed-length
     * strings) is read in name order. */
    char cmd[2048];
    spruce_maskreader *r;
    spruce_mask_meta meta;
    uint8_t back[6];
    const char *py = find_python();
    if (!py)
        cr_skip_test("python3 with h5py and numpy not available (Debian python3-h5py)");
    snprintf(cmd, sizeof cmd,
             "%s -c '\n"
             "import h5py, numpy as np\n"
             "f = h5py.File(\"%s\", \"w\")\n"
             "f.attrs[\"format\"] = np.bytes_(b\"spruce-masks\")\n"
             "f.attrs[\"format_version\"] = np.int32(1)\n"
             "f[\"z\"] = np.array([[True, False, True], [False, False, True]])\n"
             "f[\"z\"].attrs[\"pattern\"] = np.bytes_(b\"unstructured\")\n"
             "f[\"a\"] = np.zeros((1, 4), dtype=bool)\n"
             "f.create_group(\"notes\")\n"
             "'",
             py, tpath("h.h5"));
    cr_assert_eq(run(cmd), 0);
    cr_assert_eq(spruce_maskreader_open(tpath("h.h5"), &r), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_maskreader_count(r), 2);
    cr_assert_str_eq(spruce_maskreader_name_at(r, 0), "a");
    cr_assert_str_eq(spruce_maskreader_name_at(r, 1), "z");
    cr_assert_eq(spruce_maskreader_read(r, "z", back, &meta), 0, "%s", spruce_errdetail());
    cr_assert_eq(back[0], 1);
    cr_assert_eq(back[1], 0);
    cr_assert_eq(back[5], 1);
    cr_assert_str_eq(meta.pattern, "unstructured");
    cr_assert(isnan(meta.sparsity));
    spruce_maskreader_close(r);

    /* An empty mask is not a mask. */
    snprintf(cmd, sizeof cmd,
             "%s -c '\n"
             "import h5py, numpy as np\n"
             "f = h5py.File(\"%s\", \"w\")\n"
             "f.attrs[\"format\"] = np.bytes_(b\"spruce-masks\")\n"
             "f.attrs[\"format_version\"] = 1\n"
             "f[\"empty\"] = np.zeros((0, 4), dtype=bool)\n"
             "'",
             py, tpath("e.h5"));
    cr_assert_eq(run(cmd), 0);
    expect_open_error(tpath("e.h5"), SPRUCE_EFORMAT, "dataset empty: shape (0, 4)");
}

/* ---- bad files ---------------------------------------------------------- */

static void expect_open_error(const char *path, int code, const char *needle)
{
    spruce_maskreader *r = (spruce_maskreader *)1;
    int rc = spruce_maskreader_open(path, &r);
    cr_assert_eq(rc, code, "open %s: got %d (%s), expected %d", path, rc, spruce_errdetail(), code);
    cr_assert_null(r);
    cr_assert(strstr(spruce_errdetail(), path), "detail does not name the file: %s",
              spruce_errdetail());
    if (needle)
        cr_assert(strstr(spruce_errdetail(), needle), "detail lacks '%s': %s", needle,
                  spruce_errdetail());
}

/* An HDF5 file with the format attributes and one dataset of the given type
 * and rank, written with the HDF5 API directly. */
static void write_raw(const char *path, int with_format, hid_t type, int rank, const void *data)
{
    hid_t f, s, d, st, a;
    hsize_t dims[3] = {2, 3, 2};
    const char *fmt = "spruce-masks";
    long long v = 1;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    if (with_format) {
        st = H5Tcopy(H5T_C_S1);
        H5Tset_size(st, strlen(fmt) + 1); /* mask files hold fixed-length strings */
        s = H5Screate(H5S_SCALAR);
        a = H5Acreate2(f, "format", st, s, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(a, st, fmt);
        H5Aclose(a);
        a = H5Acreate2(f, "format_version", H5T_NATIVE_LLONG, s, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(a, H5T_NATIVE_LLONG, &v);
        H5Aclose(a);
        H5Sclose(s);
        H5Tclose(st);
    }
    s = H5Screate_simple(rank, dims, NULL);
    d = H5Dcreate2(f, "model.layers.0.mlp.down_proj.weight", type, s, H5P_DEFAULT, H5P_DEFAULT,
                   H5P_DEFAULT);
    cr_assert_geq(d, 0);
    cr_assert_geq(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), 0);
    H5Dclose(d);
    H5Sclose(s);
    H5Fclose(f);
}

static hid_t test_bool_type(void)
{
    hid_t t = H5Tenum_create(H5T_NATIVE_INT8);
    int8_t v = 0;
    H5Tenum_insert(t, "FALSE", &v);
    v = 1;
    H5Tenum_insert(t, "TRUE", &v);
    return t;
}

Test(maskfile, not_hdf5)
{
    FILE *f = fopen(tpath("text.h5"), "w");
    fputs("this is not an HDF5 file\n", f);
    fclose(f);
    expect_open_error(tpath("text.h5"), SPRUCE_EFORMAT, "not an HDF5 file");
    expect_open_error(tpath("absent.h5"), SPRUCE_ENOTFOUND, NULL);
    expect_open_error(tmpdir, SPRUCE_EFORMAT, "not a regular file");
}

Test(maskfile, hdf5_but_not_a_mask_file)
{
    uint8_t data[6] = {0, 1, 0, 1, 1, 0};
    hid_t t = test_bool_type();
    write_raw(tpath("other.h5"), 0, t, 2, data);
    H5Tclose(t);
    expect_open_error(tpath("other.h5"), SPRUCE_EFORMAT, "not a spruce mask file");
}

Test(maskfile, wrong_element_type_names_the_dataset)
{
    int32_t data[12] = {0};
    uint8_t bytes[12] = {0};
    hid_t t;
    write_raw(tpath("int.h5"), 1, H5T_NATIVE_INT32, 2, data);
    expect_open_error(tpath("int.h5"), SPRUCE_EFORMAT, "model.layers.0.mlp.down_proj.weight");
    cr_assert(strstr(spruce_errdetail(), "integer"), "%s", spruce_errdetail());
    write_raw(tpath("u8.h5"), 1, H5T_NATIVE_UINT8, 2, bytes);
    expect_open_error(tpath("u8.h5"), SPRUCE_EFORMAT, "expected the boolean enum");
    t = test_bool_type();
    write_raw(tpath("rank3.h5"), 1, t, 3, bytes);
    H5Tclose(t);
    expect_open_error(tpath("rank3.h5"), SPRUCE_EFORMAT, "rank 3");
}

Test(maskfile, values_other_than_0_1_are_rejected)
{
    uint8_t data[6] = {0, 1, 0, 2, 1, 0};
    uint8_t back[6];
    hid_t t = test_bool_type();
    spruce_maskreader *r;
    write_raw(tpath("two.h5"), 1, t, 2, data);
    H5Tclose(t);
    cr_assert_eq(spruce_maskreader_open(tpath("two.h5"), &r), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_maskreader_read(r, "model.layers.0.mlp.down_proj.weight", back, NULL),
                 SPRUCE_EFORMAT);
    cr_assert(strstr(spruce_errdetail(), "row 1, col 0"), "%s", spruce_errdetail());
    spruce_maskreader_close(r);
}

Test(maskfile, newer_format_version_is_refused)
{
    spruce_maskfile *f;
    uint8_t k[4] = {1, 0, 1, 0};
    hid_t file, a, s;
    long long v = 2;
    cr_assert_eq(spruce_maskfile_create(tpath("v2.h5"), &f), 0);
    cr_assert_eq(spruce_maskfile_write(f, "w", 1, 4, k, NULL), 0);
    cr_assert_eq(spruce_maskfile_commit(f), 0);
    file = H5Fopen(tpath("v2.h5"), H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert_geq(file, 0);
    H5Adelete(file, "format_version");
    s = H5Screate(H5S_SCALAR);
    a = H5Acreate2(file, "format_version", H5T_NATIVE_LLONG, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_LLONG, &v);
    H5Aclose(a);
    H5Sclose(s);
    H5Fclose(file);
    expect_open_error(tpath("v2.h5"), SPRUCE_EUNSUPPORTED, "format_version 2");
}

Test(maskfile, truncated_file_is_an_error)
{
    const int64_t rows = 64, cols = 512;
    uint8_t *k = random_mask(rows, cols, 50), *back = malloc((size_t)(rows * cols));
    struct stat sb;
    spruce_maskreader *r;
    int cuts[] = {2, 3, 10, 100}; /* keep 1/2, 1/3, 1/10, 1/100 of the file */
    size_t i;
    char p[512];
    for (i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        snprintf(p, sizeof p, "%s", tpath("trunc.h5"));
        cr_assert_eq(write_one(p, "w", rows, cols, k), 0);
        cr_assert_eq(stat(p, &sb), 0);
        cr_assert_eq(truncate(p, sb.st_size / cuts[i]), 0);
        /* The open or the read must fail, with a message naming the file. */
        if (spruce_maskreader_open(p, &r) == 0) {
            int rc = spruce_maskreader_read(r, "w", back, NULL);
            spruce_maskreader_close(r);
            cr_assert_lt(rc, 0, "read of a file cut to 1/%d succeeded", cuts[i]);
        }
        cr_assert(strstr(spruce_errdetail(), p), "%s", spruce_errdetail());
    }
    free(k);
    free(back);
}

/* ---- statistics --------------------------------------------------------- */

Test(stats, sparsity_rows_blocks_against_direct_computation)
{
    const int64_t rows = 23, cols = 300; /* 3 column blocks: 128, 128, 44 */
    uint8_t *k = random_mask(rows, cols, 35);
    spruce_mask_stats st;
    double rmin = 2, rmax = -1, rsum = 0, bmin = 2, bmax = -1, bsum = 0;
    int64_t r, c, b, kept = 0;
    int64_t widths[3] = {128, 128, 44};
    cr_assert_eq(spruce_mask_stats_compute(k, rows, cols, 0, &st), 0);
    for (r = 0; r < rows; r++) {
        int64_t kr = 0;
        for (c = 0; c < cols; c++)
            kr += k[r * cols + c];
        kept += kr;
        rsum += 1.0 - (double)kr / cols;
        rmin = fmin(rmin, 1.0 - (double)kr / cols);
        rmax = fmax(rmax, 1.0 - (double)kr / cols);
    }
    for (b = 0; b < 3; b++) {
        int64_t kb = 0;
        for (r = 0; r < rows; r++)
            for (c = b * 128; c < b * 128 + widths[b]; c++)
                kb += k[r * cols + c];
        double s = 1.0 - (double)kb / (double)(rows * widths[b]);
        bsum += s;
        bmin = fmin(bmin, s);
        bmax = fmax(bmax, s);
    }
    cr_assert_eq(st.kept, kept);
    cr_assert_float_eq(st.sparsity, 1.0 - (double)kept / (rows * cols), 1e-12);
    cr_assert_float_eq(st.row_min, rmin, 1e-12);
    cr_assert_float_eq(st.row_max, rmax, 1e-12);
    cr_assert_float_eq(st.row_mean, rsum / rows, 1e-12);
    cr_assert_eq(st.block, 128);
    cr_assert_eq(st.nblocks, 3);
    cr_assert_float_eq(st.blk_min, bmin, 1e-12);
    cr_assert_float_eq(st.blk_max, bmax, 1e-12);
    cr_assert_float_eq(st.blk_mean, bsum / 3, 1e-12);
    cr_assert_eq(st.nm.m, 0); /* 300 = 4 * 75 but random 35% has full groups of 4 ... */
    free(k);
}

Test(stats, nm_detection)
{
    spruce_mask_stats st;
    uint8_t *k = nm_mask(8, 32, 2, 4);
    cr_assert_eq(spruce_mask_stats_compute(k, 8, 32, 0, &st), 0);
    cr_assert_eq(st.nm.n, 2);
    cr_assert_eq(st.nm.m, 4);
    cr_assert(st.nm.exact);
    cr_assert_float_eq(st.sparsity, 0.5, 1e-12);
    k[5] = k[4] = k[6] = k[7] = 0; /* one group prunes all four: >=2:4, not exact */
    cr_assert_eq(spruce_mask_stats_compute(k, 8, 32, 0, &st), 0);
    cr_assert_eq(st.nm.n, 2);
    cr_assert_eq(st.nm.m, 4);
    cr_assert_not(st.nm.exact);
    free(k);

    /* 4:8 whose groups of 4 are sometimes full: reported as 4:8. */
    k = nm_mask(8, 32, 4, 8);
    memset(k, 0, 8);
    memset(k, 1, 4); /* row 0, group 0: the first four kept */
    cr_assert_eq(spruce_mask_stats_compute(k, 8, 32, 0, &st), 0);
    cr_assert_eq(st.nm.n, 4);
    cr_assert_eq(st.nm.m, 8);
    cr_assert(st.nm.exact);
    free(k);

    /* Keeping 3 of every 4 prunes 1 of every 4: 1:4 (not 2:8, the same ratio at a
     * larger M). */
    k = nm_mask(8, 32, 3, 4);
    cr_assert_eq(spruce_mask_stats_compute(k, 8, 32, 0, &st), 0);
    cr_assert_eq(st.nm.n, 1);
    cr_assert_eq(st.nm.m, 4);
    cr_assert(st.nm.exact);
    cr_assert_float_eq(st.sparsity, 0.25, 1e-12);
    free(k);

    /* Keeping 1 of every 2: 1:2, not 2:4 (the same ratio at a larger M). */
    k = nm_mask(8, 32, 1, 2);
    cr_assert_eq(spruce_mask_stats_compute(k, 8, 32, 0, &st), 0);
    cr_assert_eq(st.nm.n, 1);
    cr_assert_eq(st.nm.m, 2);
    cr_assert(st.nm.exact);
    free(k);

    /* Keeping 1 of every 4 (3:4) with one row entirely pruned: >=3:4 (its pairs
     * prune at least 1 of 2, a weaker claim, not shown). */
    k = nm_mask(8, 32, 1, 4);
    memset(k + 32, 0, 32);
    cr_assert_eq(spruce_mask_stats_compute(k, 8, 32, 0, &st), 0);
    cr_assert_eq(st.nm.n, 3);
    cr_assert_eq(st.nm.m, 4);
    cr_assert_not(st.nm.exact);
    cr_assert_float_eq(st.row_max, 1.0, 1e-12);
    cr_assert_float_eq(st.row_min, 0.75, 1e-12);
    free(k);

    /* spruce_mask_nm_check: at least n pruned of every group of m. */
    k = nm_mask(4, 16, 2, 4);
    {
        int exact;
        cr_assert_eq(spruce_mask_nm_check(k, 4, 16, 2, 4, &exact), 1);
        cr_assert(exact);
        cr_assert_eq(spruce_mask_nm_check(k, 4, 16, 1, 4, &exact), 1);
        cr_assert_not(exact);
        cr_assert_eq(spruce_mask_nm_check(k, 4, 16, 3, 4, &exact), 0);
        cr_assert_eq(spruce_mask_nm_check(k, 4, 16, 1, 3, NULL), 0); /* 3 does not divide 16 */
    }
    free(k);

    /* All kept: not N:M at any M. */
    k = malloc(64);
    memset(k, 1, 64);
    cr_assert_eq(spruce_mask_stats_compute(k, 4, 16, 0, &st), 0);
    cr_assert_eq(st.nm.m, 0);
    cr_assert_float_eq(st.sparsity, 0.0, 1e-12);
    free(k);

    /* Everything pruned: no N:M (not 2:2). */
    k = calloc(30, 1);
    cr_assert_eq(spruce_mask_stats_compute(k, 3, 10, 0, &st), 0);
    cr_assert_eq(st.nm.m, 0);
    cr_assert_eq(st.block, 10);
    cr_assert_eq(st.nblocks, 1);
    cr_assert_float_eq(st.sparsity, 1.0, 1e-12);
    free(k);
    cr_assert_eq(spruce_mask_stats_compute(NULL, 3, 10, 0, &st), SPRUCE_EINVAL);
}

Test(stats, diff_against_direct_computation)
{
    const int64_t n = 5000;
    uint8_t *a = random_mask(1, n, 50), *b = random_mask(1, n, 30);
    spruce_mask_diff d;
    int64_t i, ka = 0, kb = 0, both = 0, eq = 0;
    for (i = 0; i < n; i++) {
        ka += a[i];
        kb += b[i];
        both += a[i] && b[i];
        eq += a[i] == b[i];
    }
    spruce_mask_diff_compute(a, b, n, &d);
    cr_assert_eq(d.kept_a, ka);
    cr_assert_eq(d.kept_b, kb);
    cr_assert_eq(d.shared, both);
    cr_assert_eq(d.agree, eq);
    cr_assert_float_eq(d.agreement, (double)eq / n, 1e-12);
    cr_assert_float_eq(d.jaccard, (double)both / (ka + kb - both), 1e-12);
    spruce_mask_diff_compute(a, a, n, &d);
    cr_assert_float_eq(d.jaccard, 1.0, 1e-12);
    cr_assert_float_eq(d.agreement, 1.0, 1e-12);
    memset(a, 0, (size_t)n);
    memset(b, 0, (size_t)n);
    spruce_mask_diff_compute(a, b, n, &d);
    cr_assert_float_eq(d.jaccard, 1.0, 1e-12); /* both keep nothing: identical */
    free(a);
    free(b);
}
