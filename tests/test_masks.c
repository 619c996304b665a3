/* test_masks.c: HDF5 mask files (round trip, independent readers, atomic
 * writes, bad files), mask statistics against direct computation, and the
 * `spruce masks` commands. */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hdf5.h>
#include <jansson.h>

#include "spruce_ckpt.h"
#include "spruce_masks.h"

/* ---- helpers ------------------------------------------------------------ */

static char tmpdir[256];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/spruce-test-masks-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
    char cmd[512];
    if (tmpdir[0]) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        cr_assert_eq(system(cmd), 0);
    }
}

static char *tpath(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static int exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

static int count_dir_entries(const char *dir)
{
    char cmd[512];
    FILE *p;
    int n = -1;
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", dir);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    cr_assert_eq(fscanf(p, "%d", &n), 1);
    pclose(p);
    return n;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

/* Random mask keeping each weight with probability keep_pct / 100. */
static uint8_t *random_mask(int64_t rows, int64_t cols, int keep_pct)
{
    uint8_t *m = malloc((size_t)(rows * cols));
    int64_t i;
    cr_assert_not_null(m);
    for (i = 0; i < rows * cols; i++)
        m[i] = (int)(rnd() % 100) < keep_pct;
    return m;
}

/* N:M mask keeping exactly n of each aligned group of m (random positions). */
static uint8_t *nm_mask(int64_t rows, int64_t cols, int n, int m)
{
    uint8_t *k = calloc((size_t)(rows * cols), 1);
    int64_t r, g;
    cr_assert_not_null(k);
    for (r = 0; r < rows; r++)
        for (g = 0; g < cols; g += m) {
            int placed = 0;
            while (placed < n) {
                int j = (int)(rnd() % (uint32_t)m);
                if (!k[r * cols + g + j]) {
                    k[r * cols + g + j] = 1;
                    placed++;
                }
            }
        }
    return k;
}

static int write_one(const char *path, const char *name, int64_t rows, int64_t cols,
                     const uint8_t *keep)
{
    spruce_maskfile *f;
    int rc = spruce_maskfile_create(path, &f);
    if (rc < 0)
        return rc;
    rc = spruce_maskfile_write(f, name, rows, cols, keep, NULL);
    if (rc < 0) {
        spruce_maskfile_abort(f);
        return rc;
    }
    return spruce_maskfile_commit(f);
}

/* Run a shell command, return its exit status (or -1). */
static int run(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Run a command and capture its standard output (caller frees). */
static char *capture(const char *cmd, int *status)
{
    FILE *p = popen(cmd, "r");
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap);
    int st;
    cr_assert_not_null(p);
    cr_assert_not_null(buf);
    while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (n + 1 >= cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            cr_assert_not_null(buf);
        }
    }
    buf[n] = '\0';
    st = pclose(p);
    if (status)
        *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return buf;
}

static const char *spruce_bin(void)
{
    const char *b = getenv("SPRUCE_BIN");
    if (!b || !*b || access(b, X_OK) != 0)
        cr_skip_test("SPRUCE_BIN not set or not executable (run through 'make check')");
    return b;
}

static int have_program(const char *name)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
    return run(cmd) == 0;
}

/* A Python 3 that has h5py and numpy (a pyenv shim may shadow Debian's
 * python3); NULL when none.  SPRUCE_PYTHON overrides. */
static const char *find_python(void)
{
    static const char *cands[] = {NULL, "python3", "/usr/bin/python3"};
    char cmd[512];
    size_t i;
    cands[0] = getenv("SPRUCE_PYTHON");
    for (i = 0; i < sizeof cands / sizeof cands[0]; i++) {
        if (!cands[i] || !*cands[i])
            continue;
        snprintf(cmd, sizeof cmd, "%s -c 'import h5py, numpy' >/dev/null 2>&1", cands[i]);
        if (run(cmd) == 0)
            return cands[i];
    }
    return NULL;
}

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
    cr_assert_eq(spruce_maskfile_create(tpath("no/such/dir.h5"), &f), SPRUCE_EIO);
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
             "assert f.attrs[\"format\"] == \"spruce-masks\", f.attrs[\"format\"]\n"
             "assert int(f.attrs[\"format_version\"]) == 1\n"
             "assert int(f.attrs[\"seqlen\"]) == 2048\n"
             "d = f[\"model.layers.0.mlp.gate_proj.weight\"]\n"
             "assert d.dtype == np.bool_, d.dtype\n"
             "assert d.shape == (%lld, %lld), d.shape\n"
             "m = d[()]\n"
             "assert m.dtype == np.bool_\n"
             "assert int(m.sum()) == %lld, m.sum()\n"
             "assert int((m[0] * np.arange(1, %lld + 1)).sum()) == %lld\n"
             "assert d.attrs[\"pattern\"] == \"unstructured\"\n"
             "assert d.attrs[\"method\"] == \"sparsegpt\"\n"
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
             "f.attrs[\"format\"] = \"spruce-masks\"\n"
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
        H5Tset_size(st, H5T_VARIABLE);
        s = H5Screate(H5S_SCALAR);
        a = H5Acreate2(f, "format", st, s, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(a, st, &fmt);
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
    k[5] = k[4] = k[6] = k[7] = 0; /* one group keeps nothing: still 2:4, not exact */
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

    /* 3:4 keeps more than half of each group: not reported as N:M. */
    k = nm_mask(8, 32, 3, 4);
    cr_assert_eq(spruce_mask_stats_compute(k, 8, 32, 0, &st), 0);
    cr_assert_eq(st.nm.m, 0);
    cr_assert_float_eq(st.sparsity, 0.25, 1e-12);
    free(k);

    /* 1:4 with one row entirely pruned: <=1:4. */
    k = nm_mask(8, 32, 1, 4);
    memset(k + 32, 0, 32);
    cr_assert_eq(spruce_mask_stats_compute(k, 8, 32, 0, &st), 0);
    cr_assert_eq(st.nm.n, 1);
    cr_assert_eq(st.nm.m, 4);
    cr_assert_not(st.nm.exact);
    cr_assert_float_eq(st.row_max, 1.0, 1e-12);
    cr_assert_float_eq(st.row_min, 0.75, 1e-12);
    free(k);

    /* All kept: not N:M at any M. */
    k = malloc(64);
    memset(k, 1, 64);
    cr_assert_eq(spruce_mask_stats_compute(k, 4, 16, 0, &st), 0);
    cr_assert_eq(st.nm.m, 0);
    cr_assert_float_eq(st.sparsity, 0.0, 1e-12);
    free(k);

    /* Columns not a multiple of 4: no N:M. */
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
