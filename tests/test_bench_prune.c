/* test_bench_prune.c: .npy files, the `spruce bench prune` command, and the
 * pruner against the published algorithm (numpy port). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "npy.h"
#include "python_testutil.h"
#include "prune_internal.h"
#include "prune_testutil.h"
#include "spruce_prune.h"
#include "spruce_sparse.h"

/* ---- .npy files ------------------------------------------------------------ */

static char *tmp_path(const char *name)
{
    static char buf[256];
    snprintf(buf, sizeof buf, "/tmp/spruce_test_%ld_%s", (long)getpid(), name);
    return buf;
}

Test(npy, round_trip)
{
    float data[15], *back = NULL;
    int64_t r = 0, c = 0;
    int i;
    char *p = tmp_path("rt.npy");
    for (i = 0; i < 15; i++)
        data[i] = 0.5f * i - 3.0f;
    cr_assert_eq(spruce__npy_write(p, data, 3, 5), 0);
    cr_assert_eq(spruce__npy_read(p, &back, &r, &c), 0, "%s", spruce_errdetail());
    cr_assert_eq(r, 3);
    cr_assert_eq(c, 5);
    cr_assert_eq(memcmp(back, data, sizeof data), 0);
    free(back);
    remove(p);
}

static void write_raw(const char *p, const char *hdr, size_t payload)
{
    FILE *f = fopen(p, "wb");
    size_t hl = strlen(hdr), i;
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)hl, 0};
    fwrite(pre, 1, 10, f);
    fwrite(hdr, 1, hl, f);
    for (i = 0; i < payload; i++)
        fputc(0, f);
    fclose(f);
}

Test(npy, rejects_wrong_headers_naming_the_file)
{
    struct {
        const char *hdr;
        size_t payload;
        int rc;
        const char *word;
    } cases[] = {
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }\n", 48, SPRUCE_EDTYPE, "<f8"},
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }\n", 24, SPRUCE_EFORMAT, "fortran"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }\n", 24, SPRUCE_ESHAPE, "2-D"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }\n", 96, SPRUCE_ESHAPE, "2-D"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n", 20, SPRUCE_EFORMAT, "bytes"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n", 28, SPRUCE_EFORMAT, "bytes"},
        {"{'descr': '<f4', 'shape': (2, 3), }\n", 24, SPRUCE_EFORMAT, "fortran_order"},
    };
    size_t i;
    char *p = tmp_path("bad.npy");
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float *d = NULL;
        int64_t r, c;
        int rc;
        write_raw(p, cases[i].hdr, cases[i].payload);
        rc = spruce__npy_read(p, &d, &r, &c);
        cr_assert_eq(rc, cases[i].rc, "case %zu: %s (%s)", i, spruce_strerror(rc), spruce_errdetail());
        cr_assert(strstr(spruce_errdetail(), p) != NULL, "detail names the file: %s", spruce_errdetail());
        cr_assert(strstr(spruce_errdetail(), cases[i].word) != NULL, "case %zu: %s", i,
                  spruce_errdetail());
        cr_assert_null(d);
    }
    {
        float *d = NULL;
        int64_t r, c;
        FILE *f = fopen(p, "wb");
        fputs("not numpy at all", f);
        fclose(f);
        cr_assert_eq(spruce__npy_read(p, &d, &r, &c), SPRUCE_EFORMAT);
        cr_assert_eq(spruce__npy_read("/nonexistent/x.npy", &d, &r, &c), SPRUCE_ENOTFOUND);
        cr_assert(strstr(spruce_errdetail(), "/nonexistent/x.npy") != NULL);
    }
    remove(p);
}

/* ---- the command and the published algorithm --------------------------------- */

static char *run_capture(const char *cmd, int *status)
{
    FILE *p = popen(cmd, "r");
    size_t cap = 1 << 16, len = 0, got;
    char *buf = malloc(cap);
    while ((got = fread(buf + len, 1, cap - 1 - len, p)) > 0) {
        len += got;
        if (len + 1 >= cap)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    *status = pclose(p);
    return buf;
}

Test(bench_prune, json_output_has_every_method)
{
    const char *bin = getenv("SPRUCE_BIN");
    char cmd[512], *out, *line, *save = NULL;
    int st, n = 0;
    double err[3] = {0};
    if (!bin || access(bin, X_OK))
        cr_skip_test("SPRUCE_BIN is not set to a built spruce program");
    snprintf(cmd, sizeof cmd, "%s bench prune --rows 64 --cols 128 --tokens 256 --sparsity 0.5 --json",
             bin);
    out = run_capture(cmd, &st);
    cr_assert_eq(st, 0, "%s failed", cmd);
    for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        const char *m;
        cr_assert_not_null(o, "not JSON: %s", line);
        m = json_string_value(json_object_get(o, "method"));
        cr_assert_not_null(m);
        cr_assert(json_is_number(json_object_get(o, "hessian_s")));
        cr_assert(json_is_number(json_object_get(o, "prune_s")));
        cr_assert_float_eq(json_number_value(json_object_get(o, "sparsity")), 0.5, 0.01);
        cr_assert(n < 3);
        err[n++] = json_number_value(json_object_get(o, "rel_error"));
        json_decref(o);
    }
    cr_assert_eq(n, 3, "one object per method");
    cr_assert_lt(err[0], err[1], "sparsegpt %g < wanda %g", err[0], err[1]);
    cr_assert_lt(err[1], err[2], "wanda %g < magnitude %g", err[1], err[2]);
    free(out);
    /* wrong usage exits 2 */
    snprintf(cmd, sizeof cmd, "%s bench prune --sparsity 1.5 2>/dev/null", bin);
    free(run_capture(cmd, &st));
    cr_assert_eq(WEXITSTATUS(st), 2);
    snprintf(cmd, sizeof cmd, "%s bench prune --pattern 4:8 --blocksize 12 --rows 8 --cols 48 --tokens 16 2>/dev/null", bin);
    free(run_capture(cmd, &st));
    cr_assert_neq(WEXITSTATUS(st), 0);
}

/* The relative output error of spruce's SparseGPT against a numpy port of the
 * published sparsegpt.py on the same layer: within 1%. */
Test(bench_prune, within_one_percent_of_published_code)
{
    const char *src = getenv("SPRUCE_SRCDIR"), *bin = getenv("SPRUCE_BIN");
    char cmd[1024], wpath[256], xpath[256], *out;
    int st, pat;
    float *W, *X;
    const char *py;
    if (!src || !bin || access(bin, X_OK))
        cr_skip_test("SPRUCE_SRCDIR / SPRUCE_BIN not set");
    py = find_python_with("numpy");
    if (!py)
        cr_skip_test("no python3 with numpy found: the published-algorithm check is skipped");
    snprintf(wpath, sizeof wpath, "%s", tmp_path("ref_w.npy"));
    snprintf(xpath, sizeof xpath, "%s", tmp_path("ref_x.npy"));
    W = make_weights(96, 256, 200);
    X = make_acts(512, 256, 201);
    cr_assert_eq(spruce__npy_write(wpath, W, 96, 256), 0);
    cr_assert_eq(spruce__npy_write(xpath, X, 512, 256), 0);
    for (pat = 0; pat < 2; pat++) {
        double ours = -1, ref = -1;
        json_error_t je;
        json_t *o;
        snprintf(cmd, sizeof cmd, "%s bench prune --weights %s --inputs %s %s --method sparsegpt --json",
                 bin, wpath, xpath, pat ? "--pattern 2:4" : "--sparsity 0.5");
        out = run_capture(cmd, &st);
        cr_assert_eq(st, 0, "%s", cmd);
        o = json_loads(out, 0, &je);
        cr_assert_not_null(o, "not JSON: %s", out);
        ours = json_number_value(json_object_get(o, "rel_error"));
        json_decref(o);
        free(out);
        snprintf(cmd, sizeof cmd, "%s %s/tests/ref/sparsegpt_ref.py %s %s %s", py, src, wpath, xpath,
                 pat ? "--pattern 2:4" : "--sparsity 0.5");
        out = run_capture(cmd, &st);
        cr_assert_eq(st, 0, "%s", cmd);
        cr_assert_eq(sscanf(out, "%lf", &ref), 1, "reference printed: %s", out);
        free(out);
        cr_assert(fabs(ours - ref) <= 0.01 * ref, "%s: spruce %g, published algorithm %g",
                  pat ? "2:4" : "50%", ours, ref);
    }
    remove(wpath);
    remove(xpath);
    free(W);
    free(X);
}

Test(bench_prune, example_program_runs)
{
    const char *bin = getenv("SPRUCE_BIN");
    char cmd[1100], prog[1024], *out, *slash;
    int st;
    double sp = 0, rel = -1;
    if (!bin || access(bin, X_OK))
        cr_skip_test("SPRUCE_BIN is not set to a built spruce program");
    snprintf(prog, sizeof prog, "%s", bin);
    slash = strrchr(prog, '/');
    cr_assert_not_null(slash);
    snprintf(slash + 1, sizeof prog - (size_t)(slash + 1 - prog), "examples/prune_matrix");
    snprintf(cmd, sizeof cmd, "%s 64 128 256", prog);
    if (access(prog, X_OK))
        cr_skip_test("examples/prune_matrix is not built next to %s", bin);
    out = run_capture(cmd, &st);
    cr_assert_eq(st, 0, "%s: %s", cmd, out);
    cr_assert_not_null(strstr(out, "sparsity "), "%s", out);
    cr_assert_eq(sscanf(strstr(out, "sparsity "), "sparsity %lf  loss %*f  relative output error %lf", &sp, &rel),
                 2, "%s", out);
    cr_assert_float_eq(sp, 0.5, 1e-3);
    cr_assert(rel > 0.0 && rel < 0.5, "relative error %g", rel);
    free(out);
}

Test(bench_prune, npy_inputs_save_and_errors_name_the_file)
{
    const char *bin = getenv("SPRUCE_BIN");
    char cmd[2048], w[256], x[256], x2[256], out[256], *o;
    float *W, *X, *P = NULL;
    int64_t r, c;
    int st, i, zeros = 0;
    if (!bin || access(bin, X_OK))
        cr_skip_test("SPRUCE_BIN is not set to a built spruce program");
    snprintf(w, sizeof w, "%s", tmp_path("cli_w.npy"));
    snprintf(x, sizeof x, "%s", tmp_path("cli_x.npy"));
    snprintf(x2, sizeof x2, "%s", tmp_path("cli_x2.npy"));
    snprintf(out, sizeof out, "%s", tmp_path("cli_out.npy"));
    W = make_weights(16, 64, 300);
    X = make_acts(128, 64, 301);
    cr_assert_eq(spruce__npy_write(w, W, 16, 64), 0);
    cr_assert_eq(spruce__npy_write(x, X, 128, 64), 0);
    cr_assert_eq(spruce__npy_write(x2, X, 64, 128), 0); /* wrong column count */
    snprintf(cmd, sizeof cmd, "%s bench prune --weights %s --inputs %s --pattern 2:4 --method sparsegpt "
             "--save-pruned %s", bin, w, x, out);
    free(run_capture(cmd, &st));
    cr_assert_eq(st, 0, "%s", cmd);
    cr_assert_eq(spruce__npy_read(out, &P, &r, &c), 0, "%s", spruce_errdetail());
    cr_assert_eq(r, 16);
    cr_assert_eq(c, 64);
    for (i = 0; i < 16 * 64; i++)
        zeros += P[i] == 0.0f;
    cr_assert_eq(zeros, 16 * 64 / 2);
    free(P);
    snprintf(cmd, sizeof cmd, "%s bench prune --weights %s --inputs %s 2>&1", bin, w, x2);
    o = run_capture(cmd, &st);
    cr_assert_eq(WEXITSTATUS(st), 1, "%s", o);
    cr_assert(strstr(o, x2) != NULL, "the message names the file: %s", o);
    free(o);
    snprintf(cmd, sizeof cmd, "%s bench prune --weights %s --inputs /nonexistent/in.npy 2>&1", bin, w);
    o = run_capture(cmd, &st);
    cr_assert_eq(WEXITSTATUS(st), 1, "%s", o);
    cr_assert(strstr(o, "/nonexistent/in.npy") != NULL, "%s", o);
    free(o);
    snprintf(cmd, sizeof cmd, "%s bench prune --weights %s 2>&1", bin, w);
    o = run_capture(cmd, &st);
    cr_assert_eq(WEXITSTATUS(st), 2, "--weights without --inputs is wrong usage: %s", o);
    free(o);
    snprintf(cmd, sizeof cmd, "%s bench prune --help", bin);
    o = run_capture(cmd, &st);
    cr_assert_eq(st, 0);
    cr_assert(strstr(o, "usage: spruce bench prune") != NULL);
    free(o);
    remove(w);
    remove(x);
    remove(x2);
    remove(out);
    free(W);
    free(X);
}
