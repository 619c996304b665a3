/* outputs_testutil.h: what the output-path and interruption tests share: a
 * small synthetic checkpoint made by `spruce synth`, running the built program
 * with its exact wait status, and checks that a checkpoint or a mask file is
 * complete and that no temporary is left. */
#ifndef SPRUCE_OUTPUTS_TESTUTIL_H
#define SPRUCE_OUTPUTS_TESTUTIL_H

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "spruce_ckpt.h"
#include "spruce_masks.h"

/* The model's linear layers: what a complete mask file holds. */
#define OT_LAYERS 2
#define OT_NMASKS (OT_LAYERS * 7)

static char ot_dir[256];

/* snprintf that truncates silently (test messages and paths). */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static inline void ot_fmt(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
}

static inline const char *ot_bin(void)
{
    const char *b = getenv("SPRUCE_BIN");
    if (!b || !*b || access(b, X_OK) != 0)
        cr_skip_test("SPRUCE_BIN not set or not executable (run through 'make check')");
    return b;
}

/* ot_dir/name (one of four rotating buffers). */
static inline char *ot_path(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    ot_fmt(buf[k], sizeof buf[k], "%s/%s", ot_dir, name);
    return buf[k];
}

/* Start `spruce args...` (NULL-terminated) with its output to ot_dir/log;
 * the child's pid. */
static inline pid_t ot_start(const char *const *args)
{
    const char *argv[64];
    pid_t pid;
    int i, fd;
    argv[0] = ot_bin();
    for (i = 0; args[i] && i < 62; i++)
        argv[i + 1] = args[i];
    argv[i + 1] = NULL;
    pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        fd = open(ot_path("log"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static inline int ot_wait(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        cr_assert_eq(errno, EINTR, "waitpid: %s", strerror(errno));
    return st;
}

/* Run it to the end: the exit status; a death by signal fails the test. */
static inline int ot_run(const char *const *args)
{
    int st = ot_wait(ot_start(args));
    cr_assert(WIFEXITED(st), "spruce %s ... was killed by signal %d", args[0],
              WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return WEXITSTATUS(st);
}

/* What the last run printed (static buffer). */
static inline const char *ot_log(void)
{
    static char buf[16384];
    FILE *f = fopen(ot_path("log"), "r");
    size_t n = 0;
    buf[0] = '\0';
    if (f) {
        n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
    return buf;
}

static inline int ot_exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

/* The whole file (caller frees), *n its size. */
static inline unsigned char *ot_read(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    unsigned char *b;
    long len;
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    b = malloc((size_t)len + 1);
    cr_assert_not_null(b);
    cr_assert_eq(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* A copy of src at dst (a copy, not a link: an in-place overwrite of src
 * must not change it). */
static inline void ot_copy(const char *src, const char *dst)
{
    size_t n;
    unsigned char *b = ot_read(src, &n);
    FILE *f = fopen(dst, "wb");
    cr_assert_not_null(f, "%s: %s", dst, strerror(errno));
    cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
    free(b);
}

static inline int ot_same_file(const char *a, const char *b)
{
    size_t na, nb;
    unsigned char *x = ot_read(a, &na), *y = ot_read(b, &nb);
    int same = na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

/* Entries of ot_dir whose name contains ".tmp-" or ".old-" (0 = none), only
 * those of process pid when pid > 0; the first one's name in first (when not
 * NULL). */
static inline int ot_count_temps_of(long pid, char *first, size_t cap)
{
    DIR *d = opendir(ot_dir);
    struct dirent *e;
    int n = 0;
    cr_assert_not_null(d);
    while ((e = readdir(d))) {
        const char *t = strstr(e->d_name, ".tmp-");
        if (!t)
            t = strstr(e->d_name, ".old-");
        if (!t || (pid > 0 && strtol(t + 5, NULL, 10) != pid))
            continue;
        if (!n && first)
            ot_fmt(first, cap, "%s", e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static inline int ot_count_temps(char *first, size_t cap)
{
    return ot_count_temps_of(0, first, cap);
}

/* ot_dir/m: a 2-layer synthetic checkpoint, with m/calib.u16 beside its files. */
static inline void ot_setup(void)
{
    const char *t = getenv("TMPDIR");
    char m[512], calib[512];
    ot_fmt(ot_dir, sizeof ot_dir, "%s/spruce-test-outputs-XXXXXX", t && *t ? t : "/tmp");
    cr_assert_not_null(mkdtemp(ot_dir));
    if (!getenv("SPRUCE_BIN"))
        return; /* the tests skip */
    ot_fmt(m, sizeof m, "%s/m", ot_dir);
    ot_fmt(calib, sizeof calib, "%s/m/calib.u16", ot_dir);
    {
        const char *args[] = {"synth", m, "--hidden", "64", "--intermediate", "128",
                              "--layers", "2", "--heads", "4", "--kv-heads", "2", "--vocab",
                              "128", "--max-position", "64", "--calib", calib, "--count",
                              "4096", NULL};
        cr_assert_eq(ot_run(args), 0, "spruce synth failed: %s", ot_log());
    }
}

static inline void ot_teardown(void)
{
    char cmd[512];
    if (ot_dir[0]) {
        ot_fmt(cmd, sizeof cmd, "rm -rf '%s'", ot_dir);
        cr_assert_eq(system(cmd), 0);
    }
}

/* A complete checkpoint: it opens (every shard's header and data size are
 * checked) and holds every tensor of the input m. */
static inline int ot_ckpt_complete(const char *dir, char *why, size_t cap)
{
    spruce_ckpt *a = NULL, *b = NULL;
    int ok = 0;
    if (spruce_ckpt_open(dir, &a) < 0) {
        ot_fmt(why, cap, "%s does not open: %s", dir, spruce_errdetail());
        goto done;
    }
    cr_assert_eq(spruce_ckpt_open(ot_path("m"), &b), 0);
    if (spruce_ckpt_count(a) != spruce_ckpt_count(b)) {
        ot_fmt(why, cap, "%s holds %d tensors, the input %d", dir, spruce_ckpt_count(a),
                 spruce_ckpt_count(b));
        goto done;
    }
    ok = 1;
done:
    spruce_ckpt_close(a);
    spruce_ckpt_close(b);
    return ok;
}

/* A complete mask file: it opens and holds a mask for every linear layer. */
static inline int ot_masks_complete(const char *path, char *why, size_t cap)
{
    spruce_maskreader *r = NULL;
    int ok = 0;
    if (spruce_maskreader_open(path, &r) < 0) {
        ot_fmt(why, cap, "%s does not open: %s", path, spruce_errdetail());
        return 0;
    }
    if (spruce_maskreader_count(r) != OT_NMASKS)
        ot_fmt(why, cap, "%s holds %d masks, expected %d", path, spruce_maskreader_count(r),
                 OT_NMASKS);
    else
        ok = 1;
    spruce_maskreader_close(r);
    return ok;
}

#endif
