/* model_testutil.h: what the model, pipeline, non-finite and MPI tests share:
 * the stories260k fixture, its tokens and perplexity, temporary directories, a
 * copy of a checkpoint with one row poisoned, and the environment the forward
 * needs to be fast. */
#ifndef SPRUCE_MODEL_TESTUTIL_H
#define SPRUCE_MODEL_TESTUTIL_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cblas.h>

#include "spruce_ckpt.h"
#include "spruce_error.h"
#include "spruce_family.h"
#include "spruce_model.h"
#include "spruce_tokens.h"

/* Sanitizer builds run the same code paths on less data. */
#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

/* OpenBLAS and libgomp read their environment once, when loaded: Debian 12's
 * OpenBLAS does not recognise this machine's Xeon and falls back to its SSE3
 * kernels, and libgomp's spinning idle threads compete with OpenBLAS's threads
 * between the many small products of a tiny model.  As the spruce program
 * does, run the test program again with OPENBLAS_CORETYPE and
 * OMP_WAIT_POLICY=passive when they are unset. */
__attribute__((constructor)) static void model_test_environment(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    const char *core = openblas_get_corename();
    char buf[8192], *args[256];
    size_t len, i;
    int n = 0, change = 0;
    FILE *f;
    if (getenv("SPRUCE_NO_REEXEC"))
        return;
    if (!getenv("OPENBLAS_CORETYPE") && core && !strcmp(core, "Prescott")) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
            change |= !setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            change |= !setenv("OPENBLAS_CORETYPE", "Haswell", 1);
    }
    if (!getenv("OMP_WAIT_POLICY"))
        change |= !setenv("OMP_WAIT_POLICY", "passive", 1);
    if (!change || !(f = fopen("/proc/self/cmdline", "rb")))
        return;
    len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    if (len == 0 || len >= sizeof buf - 1)
        return;
    buf[len] = '\0';
    for (i = 0; i < len && n < 255; i += strlen(buf + i) + 1)
        args[n++] = buf + i;
    args[n] = NULL;
    fflush(NULL);
    execv("/proc/self/exe", args);
#endif
}

/* $SPRUCE_FIXTURES/stories260k, or NULL (the test is then skipped). */
static inline const char *fixture(void)
{
    static char path[1024];
    const char *root = getenv("SPRUCE_FIXTURES");
    struct stat st;
    if (!root)
        return NULL;
    snprintf(path, sizeof path, "%s/stories260k", root);
    if (stat(path, &st) != 0)
        return NULL;
    return path;
}

#define NEED_FIXTURE(dir)                                                               \
    const char *dir = fixture();                                                        \
    if (!dir) {                                                                         \
        cr_skip_test("stories260k fixture not found: set SPRUCE_FIXTURES to the "       \
                     "directory holding stories260k/");                                 \
        return;                                                                         \
    }

static inline int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* The token ids of dir/file. */
static inline uint32_t *fixture_tokens(const char *dir, const char *file, size_t *n)
{
    char path[1200];
    uint32_t *ids;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    cr_assert_eq(spruce_tokens_load(path, &ids, n), 0, "%s", spruce_errdetail());
    return ids;
}

/* The token ids of a fixture file (dir/file), at least n_min of them. */
static inline uint32_t *stories_ids(const char *dir, const char *file, size_t n_min)
{
    size_t n;
    uint32_t *ids = fixture_tokens(dir, file, &n);
    cr_assert(n >= n_min, "%s/%s holds %zu ids, expected at least %zu", dir, file, n, n_min);
    return ids;
}

/* The perplexity of m on the first nwin 256-token windows of dir/eval.u16. */
static inline double stories_ppl(spruce_model *m, const char *dir, int nwin)
{
    uint32_t *ids = stories_ids(dir, "eval.u16", (size_t)nwin * 256);
    double ppl = 0;
    int got;
    cr_assert_eq(spruce_model_perplexity(m, ids, (size_t)nwin * 256, 256, NULL, NULL, &ppl, &got),
                 0, "%s", spruce_errdetail());
    cr_assert_eq(got, nwin);
    free(ids);
    return ppl;
}

/* The spruce program the build made ($SPRUCE_BIN), or the test is skipped. */
#define NEED_SPRUCE_BIN(bin)                                                            \
    const char *bin = getenv("SPRUCE_BIN");                                             \
    if (!bin || !exists(bin)) {                                                         \
        cr_skip_test("SPRUCE_BIN does not name the built spruce program");              \
        return;                                                                         \
    }

/* A fresh temporary directory; removed by rm_tree. */
static inline char *tmp_dir(void)
{
    char *d = strdup("/tmp/spruce-test-model-XXXXXX");
    cr_assert(mkdtemp(d));
    return d;
}

static inline void rm_tree(const char *d)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    cr_assert(system(cmd) == 0);
}

/* A copy of base in out with every weight of row `row` of tensor `name` set
 * to `value` (finite, representable in BF16). */
static inline void poison(const char *base, const char *out, const char *name, int row, float value)
{
    spruce_ckpt *ck;
    spruce_ckpt_writer *w;
    const spruce_tensor *t;
    float *data;
    int64_t cols, j;
    cr_assert_eq(spruce_ckpt_open(base, &ck), 0, "%s", spruce_errdetail());
    cr_assert_not_null(t = spruce_ckpt_find(ck, name), "%s not in %s", name, base);
    cr_assert_eq(t->ndim, 2);
    cols = t->shape[1];
    cr_assert_not_null(data = malloc((size_t)spruce_tensor_numel(t) * sizeof(float)));
    cr_assert_eq(spruce_tensor_read_f32(t, data), 0, "%s", spruce_errdetail());
    for (j = 0; j < cols; j++)
        data[(size_t)row * cols + j] = value;
    cr_assert_eq(spruce_ckpt_writer_begin(ck, out, 0, &w), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_set_f32(w, name, data), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_commit(w), 0, "%s", spruce_errdetail());
    free(data);
    spruce_ckpt_close(ck);
}

/* Every tensor of the family table of config c is in ck with the table's
 * shape (and, for a prunable linear layer only, spruce_family_is_linear says
 * so); returns how many the table names. */
static inline size_t expect_table_in_ckpt(const spruce_config *c, const spruce_ckpt *ck)
{
    spruce_family_tensor t;
    size_t i;
    for (i = 0; spruce_family_tensor_at(c, i, &t) == 1; i++) {
        const spruce_tensor *st = spruce_ckpt_find(ck, t.name);
        cr_assert(st, "%s is not in the checkpoint", t.name);
        cr_assert_eq(st->ndim, t.ndim, "%s", t.name);
        cr_assert_eq((size_t)st->shape[0], t.shape[0], "%s", t.name);
        if (t.ndim == 2)
            cr_assert_eq((size_t)st->shape[1], t.shape[1], "%s", t.name);
        cr_assert_eq(spruce_family_is_linear(c->model_type, t.name),
                     t.role == SPRUCE_TENSOR_LINEAR, "%s", t.name);
    }
    return i;
}

/* Calibration samples and evaluation windows of stories260k: all of the
 * fixture, or under a sanitizer (several times slower) few enough to keep the
 * suite short; the published figures are then not compared, only the code
 * paths exercised. */
#define NCALIB (SANITIZED ? 6 : 128)
#define NEVAL (SANITIZED ? 6 : 64)

#endif
