/* test_cli.c: the spruce program's own code: what `spruce bench` times once the
 * linear layer has chosen a format (bench_kernels.c, linked in directly, so
 * that the choice can be fixed instead of left to a timing), and the JSON the
 * commands print (run through the built program), on file names JSON has to
 * escape and with numbers JSON cannot write. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cmd_bench.h"
#include "spruce_sparse.h"

/* ---- bench: the format the linear layer chose is the format timed -------- */

static void bench_ctx_small(bench_ctx *cx)
{
    memset(cx, 0, sizeof *cx);
    cx->threads = 1;
    cx->reps = 1;
    cx->json = 1;                /* rows into cx->res, no table */
    cx->rotate = 0.05e6;         /* --rotate-mb 0.05 */
    cx->llc = 32.0 * 1048576.0;
    cx->isa = "test";
}

/* Time format nm at batches 1 and 4, as `auto` would when the linear layer
 * chose N:M, for an unstructured case (no --pattern): the layer tried 2:4. */
static void measure_auto_nm(int rows, int cols, double sparsity)
{
    const bench_case c = {sparsity, 0, 0};
    const int formats[1] = {BENCH_AUTO}, batches[2] = {1, 4};
    const int chosen[1][BENCH_MAX_BATCHES] = {{SPRUCE_FMT_NM, SPRUCE_FMT_NM}};
    bench_ctx cx;
    int i;
    bench_ctx_small(&cx);
    cr_assert_eq(bench_case_measure(&cx, rows, cols, &c, formats, 1, chosen, batches, 2), 0,
                 "%dx%d %.0f%%: timing the format auto chose failed", rows, cols, 100 * sparsity);
    cr_assert_eq(cx.nres, 2);
    for (i = 0; i < cx.nres; i++) {
        const bench_result *r = &cx.res[i];
        cr_assert_str_eq(r->format, "auto(nm)");
        cr_assert_eq(r->rows, rows);
        cr_assert_eq(r->cols, cols);
        cr_assert_eq(r->batch, batches[i]);
        cr_assert_eq(r->n, 0, "the case stays unstructured");
        cr_assert_float_eq(r->sparsity, sparsity, 1e-12);
        cr_assert(r->dense_ms > 0 && r->sparse_ms > 0 && isfinite(r->speedup));
        cr_assert(r->rot_sparse >= 2 && r->rot_dense >= 2);
    }
    free(cx.res);
}

/* The case of `bench --sweep --shape 48x80`: its 95% matrix of seed 0 (the one
 * the linear layer inspects) fits 2:4, so the layer may choose N:M; other
 * matrices of the rotation do not fit. */
Test(bench_chosen, nm_on_an_unstructured_matrix_that_fits_2_4)
{
    const bench_case c = {0.95, 0, 0};
    const spruce_pack_opts po = {SPRUCE_FMT_NM, 2, 4, 1, SPRUCE_LAYOUT_BITS};
    float *W = malloc(sizeof *W * 48 * 80);
    spruce_sparse *S = NULL;
    int seed, misfits = 0;
    cr_assert_not_null(W);
    bench_gen_matrix(W, 48, 80, &c, 0);
    cr_assert_eq(spruce_sparse_pack(W, NULL, 48, 80, &po, &S), 0,
                 "the premise: seed 0 fits 2:4 (%s)", spruce_errdetail());
    spruce_sparse_free(S);
    for (seed = 1; seed < 8; seed++) {
        bench_gen_matrix(W, 48, 80, &c, (uint64_t)seed);
        if (spruce_sparse_pack(W, NULL, 48, 80, &po, &S) == SPRUCE_EPATTERN)
            misfits++;
        spruce_sparse_free(S);
        S = NULL;
    }
    spruce_errclear();
    cr_assert_gt(misfits, 0, "the premise: some matrix of the rotation does not fit 2:4");
    free(W);
    measure_auto_nm(48, 80, 0.95);
}

/* Two columns: every matrix fits 2:4 (a row is one short group). */
Test(bench_chosen, nm_on_a_matrix_that_always_fits_2_4)
{
    measure_auto_nm(48, 2, 0.5);
}

/* ---- JSON through the program --------------------------------------------- */

static int have_bin(const char **bin)
{
    struct stat st;
    *bin = getenv("SPRUCE_BIN");
    if (!*bin || stat(*bin, &st) != 0) {
        cr_skip_test("SPRUCE_BIN does not name the built spruce program");
        return 0;
    }
    return 1;
}

/* s in single quotes for sh, with every ' written as '\''. */
static void shell_quote(char *dst, size_t n, const char *s)
{
    size_t k = 0;
    cr_assert(n > 2);
    dst[k++] = '\'';
    for (; *s; s++) {
        cr_assert(k + 5 < n, "name too long");
        if (*s == '\'') {
            memcpy(dst + k, "'\\''", 4);
            k += 4;
        } else {
            dst[k++] = *s;
        }
    }
    dst[k++] = '\'';
    dst[k] = '\0';
}

/* Run "bin args"; stdout into *out (malloc'ed); the exit status. */
static int run_capture(const char *bin, const char *args, char **out)
{
    char cmd[8192], of[] = "/tmp/spruce-test-cli-outXXXXXX", qbin[1200];
    int fd = mkstemp(of), st;
    FILE *f;
    long n;
    cr_assert(fd >= 0);
    close(fd);
    shell_quote(qbin, sizeof qbin, bin);
    snprintf(cmd, sizeof cmd, "%s %s >%s", qbin, args, of);
    st = system(cmd);
    f = fopen(of, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    *out = calloc((size_t)n + 1, 1);
    cr_assert_not_null(*out);
    cr_assert_eq(fread(*out, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    unlink(of);
    cr_assert(WIFEXITED(st), "'%s' did not exit normally", cmd);
    return WEXITSTATUS(st);
}

/* A fresh directory whose name holds a double quote, a backslash, a single
 * quote, a tab and a non-ASCII letter: dst receives its path. */
static void odd_dir(char *dst, size_t n)
{
    char base[] = "/tmp/spruce-test-cli-XXXXXX";
    cr_assert_not_null(mkdtemp(base));
    snprintf(dst, n, "%s/a \"q\" b\\s 'x'\t\xc3\xa9", base);
    cr_assert_eq(mkdir(dst, 0777), 0);
}

static void rm_parent(const char *dir)
{
    char cmd[2400], q[1200], parent[1200];
    snprintf(parent, sizeof parent, "%s", dir);
    *strrchr(parent, '/') = '\0';
    shell_quote(q, sizeof q, parent);
    snprintf(cmd, sizeof cmd, "rm -rf %s", q);
    cr_assert_eq(system(cmd), 0);
}

/* W (rows, cols) as a float32 .npy file. */
static void write_npy(const char *path, const float *a, int rows, int cols)
{
    char hdr[128];
    int len = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': "
                                        "(%d, %d), }", rows, cols);
    int total = (10 + len + 1 + 63) / 64 * 64;
    uint16_t hl = (uint16_t)(total - 10);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot write %s", path);
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fputc(hl & 0xff, f);
    fputc(hl >> 8, f);
    fwrite(hdr, 1, (size_t)len, f);
    for (; 10 + len + 1 < total; len++)
        fputc(' ', f);
    fputc('\n', f);
    cr_assert_eq(fwrite(a, sizeof *a, (size_t)rows * cols, f), (size_t)rows * cols);
    cr_assert_eq(fclose(f), 0);
}

/* `bench prune --json` prints one object per line. */
static json_t *parse_lines(const char *text, size_t expect)
{
    json_t *list = json_array();
    const char *p = text;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        json_error_t je;
        json_t *o = json_loadb(p, len, 0, &je);
        cr_assert(json_is_object(o), "not a JSON object (%s): %.*s", je.text, (int)len, p);
        json_array_append_new(list, o);
        p += len + (e != NULL);
    }
    cr_assert_eq(json_array_size(list), expect, "%s", text);
    return list;
}

/* Inputs with a huge value overflow the Hessian, so that the relative error of
 * the magnitude pruner (which needs no Hessian) is 0/0 or inf/inf: null. */
Test(json, bench_prune_on_odd_file_names_and_a_nan)
{
    const char *bin;
    char dir[1024], wpath[1100], xpath[1100], qw[2300], qx[2300], args[6000], *out;
    float W[8 * 16], X[32 * 16];
    json_t *list, *o;
    int i;
    if (!have_bin(&bin))
        return;
    for (i = 0; i < 8 * 16; i++)
        W[i] = (float)((i * 37 % 17) - 8) / 8.0f;
    for (i = 0; i < 32 * 16; i++)
        X[i] = (float)((i * 53 % 29) - 14) / 14.0f;
    odd_dir(dir, sizeof dir);
    snprintf(wpath, sizeof wpath, "%s/w \"1\".npy", dir);
    snprintf(xpath, sizeof xpath, "%s/x\\1.npy", dir);
    write_npy(wpath, W, 8, 16);
    write_npy(xpath, X, 32, 16);
    shell_quote(qw, sizeof qw, wpath);
    shell_quote(qx, sizeof qx, xpath);

    snprintf(args, sizeof args, "bench prune --weights %s --inputs %s --threads 1 --json", qw, qx);
    cr_assert_eq(run_capture(bin, args, &out), 0, "%s", args);
    list = parse_lines(out, 3);
    for (i = 0; i < 3; i++) {
        o = json_array_get(list, (size_t)i);
        cr_assert(json_is_string(json_object_get(o, "method")));
        cr_assert_eq(json_integer_value(json_object_get(o, "rows")), 8);
        cr_assert_eq(json_integer_value(json_object_get(o, "cols")), 16);
        cr_assert_eq(json_integer_value(json_object_get(o, "tokens")), 32);
        cr_assert_str_eq(json_string_value(json_object_get(o, "target")), "0.5");
        cr_assert(json_is_number(json_object_get(o, "rel_error")));
        cr_assert(json_is_number(json_object_get(o, "sparsity")));
    }
    json_decref(list);
    free(out);

    X[5] = 1e20f;
    write_npy(xpath, X, 32, 16);
    snprintf(args, sizeof args, "bench prune --weights %s --inputs %s --method magnitude "
             "--pattern 2:4 --threads 1 --json", qw, qx);
    cr_assert_eq(run_capture(bin, args, &out), 0, "%s", args);
    list = parse_lines(out, 1);
    o = json_array_get(list, 0);
    cr_assert_str_eq(json_string_value(json_object_get(o, "method")), "magnitude");
    cr_assert_str_eq(json_string_value(json_object_get(o, "target")), "2:4");
    cr_assert(json_is_null(json_object_get(o, "rel_error")), "%s", out);
    json_decref(list);
    free(out);
    rm_parent(dir);
}

Test(json, run_on_an_odd_model_directory)
{
    const char *bin;
    char dir[1024], q[2300], args[6000], *out;
    json_error_t je;
    json_t *o, *ids;
    size_t i;
    if (!have_bin(&bin))
        return;
    odd_dir(dir, sizeof dir);
    shell_quote(q, sizeof q, dir);
    snprintf(args, sizeof args, "synth %s --layers 1 --hidden 64 --intermediate 128 --heads 4 "
             "--kv-heads 2 --vocab 64 --max-position 64 --force", q);
    cr_assert_eq(run_capture(bin, args, &out), 0, "%s", args);
    free(out);
    snprintf(args, sizeof args, "run %s --prompt '1 5' --steps 6 --threads 1 --json 2>/dev/null",
             q);
    cr_assert_eq(run_capture(bin, args, &out), 0, "%s", args);
    o = json_loads(out, 0, &je);
    cr_assert(json_is_object(o), "not JSON (%s): %s", je.text, out);
    cr_assert_eq(json_array_size(json_object_get(o, "prompt")), 2);
    cr_assert_eq(json_integer_value(json_array_get(json_object_get(o, "prompt"), 1)), 5);
    ids = json_object_get(o, "ids");
    cr_assert_eq(json_array_size(ids), 6);
    for (i = 0; i < json_array_size(ids); i++) {
        json_int_t v = json_integer_value(json_array_get(ids, i));
        cr_assert(json_is_integer(json_array_get(ids, i)) && v >= 0 && v < 64);
    }
    cr_assert(json_is_number(json_object_get(o, "tokens_per_s")));
    cr_assert(json_is_number(json_object_get(o, "prompt_tokens_per_s")));
    cr_assert_str_eq(json_string_value(json_object_get(o, "sparse")), "auto");
    cr_assert_eq(json_integer_value(json_object_get(o, "layers")), 7);
    json_decref(o);
    free(out);
    rm_parent(dir);
}

/* run --dtype: a BF16 checkpoint runs in bf16 (half the bytes of its float32
 * conversion), int8 when asked (a quarter, plus a scale a row); a bad type
 * is a usage error, CSR with int8 values a clear error. */
static json_t *run_json(const char *bin, const char *q, const char *extra)
{
    char args[4096], *out;
    json_error_t je;
    json_t *o;
    snprintf(args, sizeof args, "run %s --prompt '1 5' --steps 4 --threads 1 --json %s "
             "2>/dev/null", q, extra);
    cr_assert_eq(run_capture(bin, args, &out), 0, "%s", args);
    o = json_loads(out, 0, &je);
    cr_assert(json_is_object(o), "not JSON (%s): %s", je.text, out);
    free(out);
    return o;
}

Test(cli, run_dtype)
{
    const char *bin;
    char dir[1024], q[1200], args[4096], *out;
    json_t *own, *f32, *i8;
    json_int_t b_own, b_f32, b_i8;
    if (!have_bin(&bin))
        return;
    odd_dir(dir, sizeof dir);
    shell_quote(q, sizeof q, dir);
    snprintf(args, sizeof args, "synth %s --layers 1 --hidden 64 --intermediate 128 --heads 4 "
             "--kv-heads 2 --vocab 64 --max-position 64 --dtype bf16 --force", q);
    cr_assert_eq(run_capture(bin, args, &out), 0, "%s", args);
    free(out);
    own = run_json(bin, q, "");
    f32 = run_json(bin, q, "--dtype f32 --sparse off");
    i8 = run_json(bin, q, "--dtype int8 --sparse off");
    cr_assert_str_eq(json_string_value(json_object_get(own, "dtype")), "bf16");
    cr_assert_str_eq(json_string_value(json_object_get(f32, "dtype")), "f32");
    cr_assert_str_eq(json_string_value(json_object_get(i8, "dtype")), "int8");
    b_own = json_integer_value(json_object_get(own, "weight_bytes"));
    b_f32 = json_integer_value(json_object_get(f32, "weight_bytes"));
    b_i8 = json_integer_value(json_object_get(i8, "weight_bytes"));
    cr_assert(b_f32 > 0 && b_own > 0 && b_i8 > 0);
    /* f32: 4 bytes a weight; int8: 1 and 4 bytes a row of 64 or 128 */
    cr_assert(b_i8 <= b_f32 / 4 + b_f32 / 64, "int8 %lld bytes, f32 %lld", (long long)b_i8,
              (long long)b_f32);
    cr_assert(json_integer_value(json_object_get(own, "resident_bytes")) > 0);
    json_decref(own);
    json_decref(f32);
    json_decref(i8);
    own = run_json(bin, q, "--dtype own --sparse off");
    cr_assert_eq(2 * json_integer_value(json_object_get(own, "weight_bytes")), b_f32,
                 "dense bf16 is half of float32");
    json_decref(own);
    snprintf(args, sizeof args, "run %s --prompt 1 --dtype int3 2>/dev/null", q);
    cr_assert_eq(run_capture(bin, args, &out), 2, "%s", args);
    free(out);
    snprintf(args, sizeof args, "run %s --prompt 1 --dtype int4 --groupsize 48 2>/dev/null", q);
    cr_assert_eq(run_capture(bin, args, &out), 2, "%s", args);
    free(out);
    /* compressed rows of int8 values run, and say so */
    snprintf(args, sizeof args, "run %s --prompt 1 --steps 2 --dtype int8 --sparse csr --json "
             "2>/dev/null", q);
    cr_assert_eq(run_capture(bin, args, &out), 0, "%s", args);
    cr_assert(strstr(out, "\"dtype\": \"int8\"") && strstr(out, "\"sparse\": \"csr\""), "%s",
              out);
    free(out);
    rm_parent(dir);
}

/* ---- --help -------------------------------------------------------------- */

/* Every command (and `help COMMAND`) prints its usage on stdout and exits 0. */
Test(help, every_command_has_help)
{
    static const char *cmds[] = {"prune", "eval", "synth", "masks", "masks export",
                                 "masks apply", "masks info", "masks diff", "bench",
                                 "bench prune", "run", "demo"};
    const char *bin;
    char args[256], want[128], *out;
    size_t i;
    if (!have_bin(&bin))
        return;
    for (i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        snprintf(want, sizeof want, "usage: spruce %s", cmds[i]);
        snprintf(args, sizeof args, "%s --help", cmds[i]);
        cr_assert_eq(run_capture(bin, args, &out), 0, "%s", args);
        cr_assert(!strncmp(out, want, strlen(want)), "'%s' printed:\n%s", args, out);
        if (strcmp(cmds[i], "masks")) /* lists its commands instead */
            cr_assert_not_null(strstr(out, "\n  -"), "'%s' lists no options:\n%s", args, out);
        free(out);
        if (strchr(cmds[i], ' '))
            continue;
        snprintf(args, sizeof args, "help %s", cmds[i]);
        cr_assert_eq(run_capture(bin, args, &out), 0, "%s", args);
        cr_assert(!strncmp(out, want, strlen(want)), "'%s' printed:\n%s", args, out);
        free(out);
    }
    cr_assert_eq(run_capture(bin, "--help", &out), 0);
    for (i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strchr(cmds[i], ' ')) {
            snprintf(want, sizeof want, "\n  %s ", cmds[i]);
            cr_assert_not_null(strstr(out, want), "'spruce --help' does not list %s", cmds[i]);
        }
    free(out);
}
