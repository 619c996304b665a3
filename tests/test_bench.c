/* test_bench.c: the `spruce bench` command, run as a user runs it. */
#if defined(__linux__)
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <sched.h>
#endif

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

/* Run a shell command line with the spruce program; stdout and stderr are
 * captured into out/err (malloc'ed).  Returns the exit status. */
static int run_spruce(const char *env, const char *args, char **out, char **err)
{
    const char *bin = getenv("SPRUCE_BIN");
    char cmd[1024], of[] = "/tmp/spruce-bench-outXXXXXX", ef[] = "/tmp/spruce-bench-errXXXXXX";
    int fo = mkstemp(of), fe = mkstemp(ef), st;
    FILE *f;
    long n;
    cr_assert(fo >= 0 && fe >= 0);
    close(fo);
    close(fe);
    snprintf(cmd, sizeof cmd, "%s '%s' %s >%s 2>%s", env, bin, args, of, ef);
    st = system(cmd);
    for (int k = 0; k < 2; k++) {
        char **dst = k ? err : out;
        f = fopen(k ? ef : of, "r");
        fseek(f, 0, SEEK_END);
        n = ftell(f);
        rewind(f);
        *dst = calloc(n + 1, 1);
        if (fread(*dst, 1, n, f) != (size_t)n)
            cr_assert_fail("reading captured output");
        fclose(f);
    }
    unlink(of);
    unlink(ef);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int have_bin(void)
{
    if (!getenv("SPRUCE_BIN") || access(getenv("SPRUCE_BIN"), X_OK) != 0) {
        cr_skip_test("SPRUCE_BIN is not set to the built spruce program");
        return 0;
    }
    return 1;
}

Test(bench, json_rows_with_forced_scalar_isa)
{
    char *out, *err;
    json_error_t je;
    json_t *list;
    size_t i;
    if (!have_bin())
        return;
    cr_assert_eq(run_spruce("SPRUCE_ISA=scalar", "--verbose bench --shape 64x96 --sparsity 0.5,0.9 "
                            "--batch 1,3 --format auto,csr,bitmask,dense --reps 1 --rotate-mb 0.05 "
                            "--threads 2 --json", &out, &err), 0, "stderr: %s", err);
    cr_assert(strstr(err, "kernels scalar"), "stderr: %s", err);
    list = json_loads(out, 0, &je);
    cr_assert(json_is_array(list), "not a JSON list: %s", out);
    cr_assert_eq(json_array_size(list), 2 * 2 * 4);
    for (i = 0; i < json_array_size(list); i++) {
        json_t *o = json_array_get(list, i);
        double d = json_real_value(json_object_get(o, "dense_ms"));
        double s = json_real_value(json_object_get(o, "sparse_ms"));
        double sp = json_real_value(json_object_get(o, "speedup"));
        cr_assert(json_is_string(json_object_get(o, "format")));
        cr_assert_eq(json_integer_value(json_object_get(o, "rows")), 64);
        cr_assert_eq(json_integer_value(json_object_get(o, "cols")), 96);
        cr_assert(json_is_integer(json_object_get(o, "batch")));
        cr_assert(json_is_real(json_object_get(o, "sparsity")));
        cr_assert_str_eq(json_string_value(json_object_get(o, "pattern")), "unstructured");
        cr_assert(d > 0 && s > 0 && fabs(sp - d / s) < 1e-6 * sp);
        cr_assert_str_eq(json_string_value(json_object_get(o, "isa")), "scalar");
    }
    json_decref(list);
    free(out);
    free(err);
}

/* The spruce program binds its threads one per CPU (cli_env.c), and leaves
 * them alone when asked to or when the user placed threads. */
Test(bench, threads_are_bound_unless_told_not_to)
{
    char *out, *err;
    const char *args = "--verbose bench --shape 32x64 --batch 1 --format bitmask --reps 1 "
                       "--rotate-mb 0.05 --threads 2";
    if (!have_bin())
        return;
#if defined(__linux__)
    {
        cpu_set_t allowed;
        if (sched_getaffinity(0, sizeof allowed, &allowed) == 0 && CPU_COUNT(&allowed) < 2) {
            cr_skip_test("this process may use one CPU: nothing to bind");
            return;
        }
    }
#else
    cr_skip_test("threads are bound on Linux only");
    return;
#endif
    cr_assert_eq(run_spruce("OMP_NUM_THREADS=2", args, &out, &err), 0, "stderr: %s", err);
    cr_assert(strstr(err, "2 OpenMP threads bound one per CPU"), "stderr: %s", err);
    free(out);
    free(err);
    cr_assert_eq(run_spruce("OMP_NUM_THREADS=2 SPRUCE_NO_BIND=1", args, &out, &err), 0);
    cr_assert(!strstr(err, "bound one per CPU"), "stderr: %s", err);
    free(out);
    free(err);
    cr_assert_eq(run_spruce("OMP_NUM_THREADS=2 OMP_PROC_BIND=false", args, &out, &err), 0);
    cr_assert(!strstr(err, "bound one per CPU"), "stderr: %s", err);
    free(out);
    free(err);
}

Test(bench, nm_table_and_unknown_isa)
{
    char *out, *err;
    if (!have_bin())
        return;
    cr_assert_eq(run_spruce("", "bench --shape 32x40 --pattern 2:4 --batch 1 --format nm,auto "
                            "--reps 1 --rotate-mb 0.05 --threads 1", &out, &err), 0, "stderr: %s", err);
    cr_assert(strstr(out, "speedup") && strstr(out, "\nnm/bits ") && strstr(out, "\nnm/pairs ") &&
              strstr(out, "2:4"), "%s", out);
    free(out);
    free(err);
    cr_assert_eq(run_spruce("SPRUCE_ISA=sse9", "bench --shape 8x8 --reps 1", &out, &err), 1);
    cr_assert(strstr(err, "SPRUCE_ISA=sse9") && strstr(err, "available here: scalar"), "%s", err);
    free(out);
    free(err);
}

/* --dtype: rows of every value type, each with the dense kernel of its type
 * and dense OpenBLAS float32 of the same run, and the bytes each streams. */
Test(bench, dtype_rows)
{
    char *out, *err;
    json_error_t je;
    json_t *list;
    size_t i;
    int seen[4] = {0, 0, 0, 0};
    if (!have_bin())
        return;
    cr_assert_eq(run_spruce("", "bench --shape 40x100 --dtype f32,bf16,int8,int4 --groupsize 64 "
                            "--format dense --batch 1,3 --reps 1 --rotate-mb 0.05 --threads 2 "
                            "--json", &out, &err), 0, "stderr: %s", err);
    list = json_loads(out, 0, &je);
    cr_assert(json_is_array(list), "not a JSON list: %s", out);
    cr_assert_eq(json_array_size(list), 4 * 2);
    for (i = 0; i < json_array_size(list); i++) {
        json_t *o = json_array_get(list, i);
        const char *dt = json_string_value(json_object_get(o, "dtype"));
        double d = json_real_value(json_object_get(o, "dense_ms"));
        double f = json_real_value(json_object_get(o, "dense_f32_ms"));
        double s = json_real_value(json_object_get(o, "sparse_ms"));
        double c = json_real_value(json_object_get(o, "byte_ceiling"));
        cr_assert(dt, "a row without dtype");
        cr_assert_str_eq(json_string_value(json_object_get(o, "format")), "dense");
        cr_assert(d > 0 && f > 0 && s == d, "%s: dense %g, f32 %g, row %g", dt, d, f, s);
        if (!strcmp(dt, "f32")) {
            seen[0]++;
            cr_assert_eq(f, d);
            cr_assert_null(json_object_get(o, "groupsize"));
        } else if (!strcmp(dt, "bf16")) { /* 2 bytes a weight */
            seen[1]++;
            cr_assert_float_eq(c, 2.0, 1e-12);
        } else if (!strcmp(dt, "int8")) { /* 1 byte and a float scale per row */
            seen[2]++;
            cr_assert_float_eq(c, 16000.0 / (4000 + 40 * 4), 1e-12);
        } else { /* 50 bytes and 2 float scales per row */
            cr_assert_str_eq(dt, "int4");
            seen[3]++;
            cr_assert_eq(json_integer_value(json_object_get(o, "groupsize")), 64);
            cr_assert_float_eq(c, 16000.0 / (40 * 50 + 40 * 2 * 4), 1e-12);
        }
    }
    for (i = 0; i < 4; i++)
        cr_assert_eq(seen[i], 2, "dtype %zu: %d rows", i, seen[i]);
    json_decref(list);
    free(out);
    free(err);
}

/* --dtype with sparse formats: bitmask, nm (with --pattern) and auto
 * rows of the same values, each against the dense kernel of its type timed
 * in the same rounds (one dense_ms per batch), with the bytes each streams. */
Test(bench, dtype_sparse_rows)
{
    char *out, *err;
    json_error_t je;
    json_t *list;
    size_t i;
    int n24 = 0, nunstr = 0, nm_unstr = 0, nbits = 0, npairs = 0;
    double dense1 = -1;
    if (!have_bin())
        return;
    cr_assert_eq(run_spruce("", "bench --shape 40x128 --dtype int8 --pattern 2:4 --format "
                            "dense,bitmask,nm,auto --batch 1 --reps 1 --rotate-mb 0.05 "
                            "--threads 2 --json", &out, &err), 0, "stderr: %s", err);
    list = json_loads(out, 0, &je);
    cr_assert(json_is_array(list), "not a JSON list: %s", out);
    cr_assert_eq(json_array_size(list), 5, "%s", out); /* nm in both layouts */
    for (i = 0; i < json_array_size(list); i++) {
        json_t *o = json_array_get(list, i);
        const char *f = json_string_value(json_object_get(o, "format"));
        double d = json_real_value(json_object_get(o, "dense_ms"));
        double c = json_real_value(json_object_get(o, "byte_ceiling"));
        cr_assert_str_eq(json_string_value(json_object_get(o, "dtype")), "int8");
        if (dense1 < 0)
            dense1 = d;
        cr_assert_eq(d, dense1, "one dense int8 time for every row");
        if (!strcmp(f, "bitmask") || !strcmp(f, "nm")) /* half the values and bits: < dense */
            cr_assert(c > 16000.0 / (5120 + 40 * 4) * 1.3, "%s: ceiling %g", f, c);
        if (!strcmp(f, "nm")) {
            const char *l = json_string_value(json_object_get(o, "layout"));
            cr_assert(l, "an nm row without its layout");
            nbits += !strcmp(l, "bits");
            npairs += !strcmp(l, "pairs");
            if (!strcmp(l, "pairs")) /* 20 pairs x 16 blocks x (8 values + 2 bytes), scales */
                cr_assert_float_eq(c, 20480.0 / (20 * 16 * 10 + 40 * 4), 1e-9);
        }
        n24++;
    }
    json_decref(list);
    free(out);
    free(err);
    cr_assert_eq(run_spruce("", "bench --shape 40x128 --dtype bf16 --sparsity 0.5 --format "
                            "dense,bitmask --batch 1 --reps 1 --rotate-mb 0.05 --threads 2 "
                            "--json", &out, &err), 0, "stderr: %s", err);
    list = json_loads(out, 0, &je);
    cr_assert(json_is_array(list), "not a JSON list: %s", out);
    for (i = 0; i < json_array_size(list); i++) {
        const char *f = json_string_value(json_object_get(json_array_get(list, i), "format"));
        nunstr++;
        nm_unstr += !strcmp(f, "nm");
    }
    cr_assert(n24 == 5 && nunstr == 2 && nm_unstr == 0, "unstructured: %d rows, %d nm", nunstr,
              nm_unstr); /* dense and bitmask */
    cr_assert(nbits == 1 && npairs == 1, "nm rows: %d in bits, %d in pairs", nbits, npairs);
    json_decref(list);
    free(out);
    free(err);
}

/* --layout: which layouts the nm rows are timed in; a pattern the pair
 * layout cannot hold stays in bits; an unknown layout is a usage error. */
Test(bench, nm_layouts)
{
    static const struct {
        const char *args;
        int bits, pairs;
    } cases[] = {
        {"--pattern 2:4 --layout bits", 1, 0},
        {"--pattern 2:4 --layout pairs", 0, 1},
        {"--pattern 1:4", 1, 1},
        {"--pattern 2:8 --layout pairs", 1, 0},
    };
    char *out, *err, args[300];
    size_t c, i;
    if (!have_bin())
        return;
    for (c = 0; c < sizeof cases / sizeof *cases; c++) {
        json_error_t je;
        json_t *list;
        int bits = 0, pairs = 0;
        snprintf(args, sizeof args, "bench --shape 24x64 --format nm %s --batch 1,3 --reps 1 "
                 "--rotate-mb 0.05 --threads 2 --json", cases[c].args);
        cr_assert_eq(run_spruce("", args, &out, &err), 0, "%s: %s", args, err);
        list = json_loads(out, 0, &je);
        cr_assert(json_is_array(list), "%s: not a JSON list: %s", args, out);
        for (i = 0; i < json_array_size(list); i++) {
            json_t *o = json_array_get(list, i);
            const char *l = json_string_value(json_object_get(o, "layout"));
            cr_assert_str_eq(json_string_value(json_object_get(o, "format")), "nm");
            cr_assert(l, "%s: no layout", args);
            bits += !strcmp(l, "bits");
            pairs += !strcmp(l, "pairs");
            cr_assert_gt(json_real_value(json_object_get(o, "sparse_ms")), 0.0);
        }
        cr_assert(bits == 2 * cases[c].bits && pairs == 2 * cases[c].pairs,
                  "%s: %d rows in bits, %d in pairs", args, bits, pairs);
        json_decref(list);
        free(out);
        free(err);
    }
    cr_assert_eq(run_spruce("", "bench --pattern 2:4 --format nm --layout diagonal", &out, &err), 2);
    cr_assert(strstr(err, "--layout") && strstr(err, "diagonal"), "%s", err);
    free(out);
    free(err);
}

Test(bench, usage_errors_exit_2_and_help_exits_0)
{
    static const char *bad[] = {"bench --shape 12", "bench --sparsity 1.5", "bench --batch 0",
                                "bench --format coo", "bench --pattern 4:2", "bench --svg x.svg",
                                "bench --sparsity 0.5 --pattern 2:4", "bench extra",
                                "bench --dtype fp8", "bench --dtype int8,int8",
                                "bench --groupsize 48", "bench --groupsize 512",
                                "bench --dtype bf16,int8 --sweep"};
    char *out, *err;
    size_t i;
    if (!have_bin())
        return;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(run_spruce("", bad[i], &out, &err), 2, "%s", bad[i]);
        cr_assert(strlen(err) > 0);
        free(out);
        free(err);
    }
    cr_assert_eq(run_spruce("", "bench --help", &out, &err), 0);
    cr_assert(strstr(out, "usage: spruce bench"));
    free(out);
    free(err);
}

/* `bench --sweep OPTS --svg FILE --shape 48x80 ...` run quickly: its table in
 * *out, the chart in buf (cap bytes). */
static void sweep(const char *opts, char **out, char *buf, size_t cap)
{
    char *err, path[] = "/tmp/spruce-sweepXXXXXX", args[256];
    FILE *f;
    size_t n;
    int fd = mkstemp(path);
    close(fd);
    snprintf(args, sizeof args, "bench --sweep %s --svg %s --shape 48x80 --batch 4 --reps 1 "
             "--rotate-mb 0.05 --threads 1", opts, path);
    cr_assert_eq(run_spruce("", args, out, &err), 0, "stderr: %s", err);
    f = fopen(path, "r");
    cr_assert(f, "no chart at %s", path);
    n = fread(buf, 1, cap - 1, f);
    buf[n] = 0;
    fclose(f);
    unlink(path);
    free(err);
    cr_assert(strstr(buf, "<svg") && strstr(buf, "</svg>"));
}

Test(bench, sweep_writes_an_svg_chart)
{
    char *out, buf[65536];
    if (!have_bin())
        return;
    sweep("", &out, buf, sizeof buf);
    cr_assert(strstr(buf, "sparsity") && strstr(buf, "speedup over dense"));
    cr_assert(strstr(buf, "2:4"));
    cr_assert(strstr(out, "95%") && strstr(out, "2:4"), "%s", out);
    free(out);
}

/* With one --dtype the sweep measures that value type against its dense
 * kernel, and the chart says so. */
Test(bench, sweep_in_a_value_type)
{
    char *out, buf[65536];
    const char *p;
    int points = 0;
    if (!have_bin())
        return;
    sweep("--dtype int8", &out, buf, sizeof buf);
    cr_assert(strstr(buf, "against dense int8") && strstr(buf, "int8 values"), "%s", buf);
    cr_assert_null(strstr(buf, "OpenBLAS"), "the baseline is int8's dense kernel");
    /* one point per sparsity (8) and batch (2): the dense rows, the baseline,
     * are not drawn */
    for (p = buf; (p = strstr(p, "<circle")); p++)
        points++;
    cr_assert_eq(points, 16, "%d points", points);
    cr_assert(strstr(out, "int8") && strstr(out, "95%") && strstr(out, "2:4"), "%s", out);
    free(out);
}

/* The decode row named name ("dense f32", "auto int8", ...) after line: its
 * tokens/s, its ratio to dense f32, the sparse and all linear layers. */
static void decode_row(const char *line, const char *name, double *tps, double *ratio, int *used,
                       int *total)
{
    char key[64];
    const char *p;
    double mib;
    snprintf(key, sizeof key, "\n  %s ", name);
    p = strstr(line, key);
    cr_assert(p, "no decode row '%s':\n%s", name, line);
    p += strlen(key);
    cr_assert(sscanf(p, " %lf tokens/s %lfx weights %lf MiB %d of %d linear layers sparse", tps,
                     ratio, &mib, used, total) == 5, "cannot read the '%s' row:\n%s", name, line);
}

static double decode_mib(const char *line, const char *name)
{
    double tps, ratio, mib;
    int used, total;
    char key[64];
    const char *p;
    snprintf(key, sizeof key, "\n  %s ", name);
    cr_assert((p = strstr(line, key)));
    cr_assert(sscanf(p + strlen(key), " %lf tokens/s %lfx weights %lf MiB %d of %d", &tps, &ratio,
                     &mib, &used, &total) == 5);
    return mib;
}

/* `bench --model`: every linear layer of a pruned checkpoint in the table, then
 * end-to-end decoding dense against auto with a ratio that is the quotient of
 * the two rates it prints. */
Test(bench, model_table_and_decode_on_a_pruned_fixture)
{
    char *out, *err, args[1024], dir[] = "/tmp/spruce-bench-modelXXXXXX", *line;
    const char *root = getenv("SPRUCE_FIXTURES");
    char model[512];
    double dense, autos, ratio;
    int used, total, rows = 0;
    if (!have_bin())
        return;
    snprintf(model, sizeof model, "%s/stories260k", root ? root : "");
    if (!root || access(model, R_OK) != 0) {
        cr_skip_test("stories260k fixture not found: set SPRUCE_FIXTURES");
        return;
    }
    cr_assert(mkdtemp(dir));
    snprintf(args, sizeof args, "prune '%s' -o '%s/p' --method magnitude --pattern 2:4", model, dir);
    cr_assert_eq(run_spruce("", args, &out, &err), 0, "stderr: %s", err);
    free(out);
    free(err);
    snprintf(args, sizeof args, "bench --model '%s/p' --batch 1 --threads 2", dir);
    cr_assert_eq(run_spruce("", args, &out, &err), 0, "stderr: %s", err);
    for (line = out; (line = strstr(line, "\nmodel.layers.")); line++)
        rows++;
    cr_assert_eq(rows, 35, "expected the 35 linear layers of stories260k, found %d:\n%s", rows, out);
    line = strstr(out, "decode, batch 1");
    cr_assert(line, "no decode line:\n%s", out);
    decode_row(line, "dense f32", &dense, &ratio, &used, &total);
    cr_assert(dense > 0 && ratio == 1.0 && total == 35);
    decode_row(line, "auto f32", &autos, &ratio, &used, &total);
    cr_assert(autos > 0 && used >= 0 && used <= total && total == 35);
    cr_assert(fabs(ratio - autos / dense) < 0.006 + 0.005 * ratio, "%g vs %g", ratio, autos / dense);
    free(out);
    free(err);
    /* --dtype: each type's table rows, and its dense and auto decoders */
    snprintf(args, sizeof args, "bench --model '%s/p' --batch 1 --threads 2 --dtype bf16,int8",
             dir);
    cr_assert_eq(run_spruce("", args, &out, &err), 0, "stderr: %s", err);
    for (rows = 0, line = out; (line = strstr(line, "\nmodel.layers.")); line++)
        rows++;
    cr_assert_eq(rows, 70, "expected 35 linear layers in 2 types, found %d:\n%s", rows, out);
    cr_assert(strstr(out, "/int8 ") && strstr(out, "/bf16 "), "%s", out);
    line = strstr(out, "decode, batch 1");
    cr_assert(line, "no decode line:\n%s", out);
    {
        static const char *rowname[4] = {"dense bf16", "auto bf16", "dense int8", "auto int8"};
        double mib, mib_f32, tps, dense_f32;
        int k;
        decode_row(line, "dense f32", &dense_f32, &ratio, &used, &total);
        mib_f32 = decode_mib(line, "dense f32");
        for (k = 0; k < 4; k++) {
            decode_row(line, rowname[k], &tps, &ratio, &used, &total);
            cr_assert(tps > 0 && fabs(ratio - tps / dense_f32) < 0.006 + 0.005 * ratio,
                      "%s: %g vs %g", rowname[k], ratio, tps / dense_f32);
            mib = decode_mib(line, rowname[k]);
            if (k == 0) /* dense bf16: half of float32's weights */
                cr_assert(fabs(mib - mib_f32 / 2) < 0.002, "%g MiB against %g", mib, mib_f32);
            if (k == 2) /* dense int8: a quarter and a float32 scale a row of 64: 0.266 */
                cr_assert(mib < mib_f32 * 0.27, "%g MiB against %g", mib, mib_f32);
        }
    }
    free(out);
    free(err);
    snprintf(args, sizeof args, "rm -rf '%s'", dir);
    cr_assert_eq(system(args), 0);
}
