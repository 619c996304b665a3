/* masks_testutil.h: temporary files, running commands and small checkpoints
 * shared by the mask file tests and the `spruce masks` command tests. */
#ifndef SPRUCE_MASKS_TESTUTIL_H
#define SPRUCE_MASKS_TESTUTIL_H

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
#include "python_testutil.h"


static char tmpdir[256];

static inline void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/spruce-test-masks-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static inline void remove_tmpdir(void)
{
    char cmd[512];
    if (tmpdir[0]) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        cr_assert_eq(system(cmd), 0);
    }
}

static inline char *tpath(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static inline int exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

static inline int count_dir_entries(const char *dir)
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
static inline uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

/* Random mask keeping each weight with probability keep_pct / 100. */
static inline uint8_t *random_mask(int64_t rows, int64_t cols, int keep_pct)
{
    uint8_t *m = malloc((size_t)(rows * cols));
    int64_t i;
    cr_assert_not_null(m);
    for (i = 0; i < rows * cols; i++)
        m[i] = (int)(rnd() % 100) < keep_pct;
    return m;
}

/* N:M mask keeping exactly n of each aligned group of m (random positions). */
static inline uint8_t *nm_mask(int64_t rows, int64_t cols, int n, int m)
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

static inline int write_one(const char *path, const char *name, int64_t rows, int64_t cols,
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
static inline int run(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Run a command and capture its standard output (caller frees). */
static inline char *capture(const char *cmd, int *status)
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

static inline const char *spruce_bin(void)
{
    const char *b = getenv("SPRUCE_BIN");
    if (!b || !*b || access(b, X_OK) != 0)
        cr_skip_test("SPRUCE_BIN not set or not executable (run through 'make check')");
    return b;
}

static inline int have_program(const char *name)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
    return run(cmd) == 0;
}

/* A Python 3 that has h5py and numpy; NULL when none. */
static inline const char *find_python(void) { return find_python_with("h5py, numpy"); }


#endif
