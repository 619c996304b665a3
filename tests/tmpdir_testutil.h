/* tmpdir_testutil.h: one temporary directory per test (a suite's .init and
 * .fini call tmpdir_make / tmpdir_remove), and the tokenizer fixtures under
 * $SPRUCE_FIXTURES/tokenizers. */
#ifndef SPRUCE_TMPDIR_TESTUTIL_H
#define SPRUCE_TMPDIR_TESTUTIL_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static char dir[4096];

/* $TMPDIR (or /tmp)/spruce-test-<tag>-XXXXXX into dir. */
static inline void tmpdir_make(const char *tag)
{
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/spruce-test-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    cr_assert_not_null(mkdtemp(dir), "mkdtemp %s", dir);
}

static inline void tmpdir_remove(void)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* $SPRUCE_FIXTURES/tokenizers/<sub>, or NULL; two results may be held at once. */
static inline const char *tokenizer_fixture(const char *sub)
{
    static char path[2][1024];
    static int k;
    const char *root = getenv("SPRUCE_FIXTURES");
    struct stat st;
    if (!root)
        return NULL;
    k ^= 1;
    snprintf(path[k], sizeof path[k], "%s/tokenizers/%s", root, sub);
    return stat(path[k], &st) == 0 ? path[k] : NULL;
}

/* const char *var = the fixture sub, or skip the test. */
#define NEED(var, sub)                                                                   \
    const char *var = tokenizer_fixture(sub);                                            \
    if (!var) {                                                                          \
        cr_skip_test("tokenizer fixture %s not found: set SPRUCE_FIXTURES to the "      \
                     "directory holding tokenizers/",                                    \
                     sub);                                                               \
        return;                                                                          \
    }

#endif
