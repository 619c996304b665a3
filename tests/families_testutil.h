/* families_testutil.h: the shared fixtures of the model families
 * ($SPRUCE_FIXTURES/families/<name>: a checkpoint, ids.txt and the golden
 * logits.f32 of NSEQ sequences of SEQ tokens), for test_families.c and
 * test_moe.c. */
#ifndef SPRUCE_FAMILIES_TESTUTIL_H
#define SPRUCE_FAMILIES_TESTUTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "model_testutil.h"
#include "spruce_tokens.h"

/* A correct float32 forward lands within about 1e-5 of the golden logits;
 * every mistake tried on these fixtures moved some logit by 0.48 or more. */
#define TOL 1e-4
#define NSEQ 2
#define SEQ 48

/* $SPRUCE_FIXTURES/families/<name> into buf, or 0 when absent. */
static inline int family_dir(const char *name, char *buf, size_t size)
{
    const char *root = getenv("SPRUCE_FIXTURES");
    if (!root)
        return 0;
    snprintf(buf, size, "%s/families/%s", root, name);
    return exists(buf);
}

#define NEED_FAMILY(dir, name)                                                          \
    char dir[1024];                                                                     \
    if (!family_dir(name, dir, sizeof dir)) {                                           \
        cr_skip_test("families fixture %s not found: set SPRUCE_FIXTURES to the "      \
                     "directory holding families/%s", name, name);                      \
        return;                                                                         \
    }

#define NEED_SPRUCE_BIN(bin)                                                            \
    const char *bin = getenv("SPRUCE_BIN");                                             \
    if (!bin || !exists(bin)) {                                                         \
        cr_skip_test("SPRUCE_BIN does not name the built spruce program");              \
        return;                                                                         \
    }

static inline int sh(const char *cmd)
{
    int st = system(cmd);
    cr_assert(st != -1 && WIFEXITED(st), "%s did not exit", cmd);
    return WEXITSTATUS(st);
}

/* The fixture's ids (NSEQ x SEQ) and golden logits (NSEQ x SEQ x vocab). */
static inline void load_golden(const char *dir, int vocab, uint32_t **ids, float **logits)
{
    char path[1200];
    size_t n = 0, nl;
    FILE *f;
    snprintf(path, sizeof path, "%s/ids.txt", dir);
    cr_assert_eq(spruce_tokens_load(path, ids, &n), 0, "%s", spruce_errdetail());
    cr_assert_eq(n, (size_t)NSEQ * SEQ, "%s: %zu ids", path, n);
    nl = (size_t)NSEQ * SEQ * (size_t)vocab;
    *logits = malloc(nl * sizeof(float));
    cr_assert_not_null(*logits);
    snprintf(path, sizeof path, "%s/logits.f32", dir);
    f = fopen(path, "rb");
    cr_assert(f, "%s", path);
    cr_assert_eq(fread(*logits, sizeof(float), nl, f), nl, "%s: short", path);
    fclose(f);
}

static inline double max_abs_diff(const float *a, const float *b, size_t n)
{
    double mx = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= mx))
            mx = d;   /* NaN counts as the largest */
    }
    return mx;
}

#endif
