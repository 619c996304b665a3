/* test_outputs.c: no output of a command destroys an input (prune -o and
 * --masks, masks export -o, masks apply -o), through symlinks and "..";
 * prune publishes the checkpoint and the masks together (a failure leaves
 * neither, and the old ones as they were); a failing mask write (the file size
 * limit standing in for a full disk) is an error naming the file and the
 * system's reason, not a crash; what a killed run left is removed by the next. */
#include <sys/resource.h>

#include "outputs_testutil.h"

TestSuite(outputs, .init = ot_setup, .fini = ot_teardown);

/* The input's files, byte for byte, are still what they were. */
static void keep_copies(void)
{
    char cmd[1200];
    ot_fmt(cmd, sizeof cmd, "cp -a '%s' '%s'", ot_path("m"), ot_path("m.orig"));
    cr_assert_eq(system(cmd), 0);
}

static void assert_input_intact(void)
{
    static const char *files[] = {"model.safetensors", "config.json", "calib.u16"};
    char a[512], b[512];
    size_t i;
    for (i = 0; i < sizeof files / sizeof files[0]; i++) {
        ot_fmt(a, sizeof a, "%s/m/%s", ot_dir, files[i]);
        ot_fmt(b, sizeof b, "%s/m.orig/%s", ot_dir, files[i]);
        cr_assert(ot_same_file(a, b), "%s was changed", a);
    }
}

static char M[512], OUT[512], CALIB[512];

static void names(void)
{
    ot_fmt(M, sizeof M, "%s/m", ot_dir);
    ot_fmt(OUT, sizeof OUT, "%s/out", ot_dir);
    ot_fmt(CALIB, sizeof CALIB, "%s/m/calib.u16", ot_dir);
}

/* spruce prune M -o out --calib CALIB --pattern 2:4 [extra...] */
static int prune(const char *out, const char *masks, int force)
{
    const char *args[24];
    int n = 0;
    args[n++] = "prune";
    args[n++] = M;
    args[n++] = "-o";
    args[n++] = out;
    args[n++] = "--calib";
    args[n++] = CALIB;
    args[n++] = "--pattern";
    args[n++] = "2:4";
    args[n++] = "--seqlen";
    args[n++] = "32";
    args[n++] = "--nsamples";
    args[n++] = "8";
    args[n++] = "--threads";
    args[n++] = "1";
    if (masks) {
        args[n++] = "--masks";
        args[n++] = masks;
    }
    if (force)
        args[n++] = "--force";
    args[n] = NULL;
    return ot_run(args);
}

Test(outputs, prune_masks_never_overwrite_the_input)
{
    char p[512], link[512];
    const char *bad[5];
    int i;
    ot_bin();
    names();
    keep_copies();
    ot_fmt(link, sizeof link, "%s/mlink", ot_dir);
    cr_assert_eq(symlink(M, link), 0);
    bad[0] = "model.safetensors";
    bad[1] = "config.json";
    bad[2] = "calib.u16";
    bad[3] = NULL; /* through a symlink to the input */
    bad[4] = NULL; /* through ".." */
    for (i = 0; i < 5; i++) {
        if (i < 3)
            ot_fmt(p, sizeof p, "%s/%s", M, bad[i]);
        else if (i == 3)
            ot_fmt(p, sizeof p, "%s/model.safetensors", link);
        else
            ot_fmt(p, sizeof p, "%s/m/../m/./config.json", ot_dir);
        cr_assert_eq(prune(OUT, p, 0), 2, "--masks %s: %s", p, ot_log());
        cr_assert(strstr(ot_log(), "the masks file lies inside the input checkpoint"),
                  "--masks %s: %s", p, ot_log());
        cr_assert(!ot_exists(OUT), "--masks %s: OUT was written", p);
    }
    /* the new checkpoint, inside the input */
    ot_fmt(p, sizeof p, "%s/sub", link);
    cr_assert_eq(prune(p, NULL, 0), 2, "%s", ot_log());
    cr_assert(strstr(ot_log(), "the output directory lies inside the input checkpoint"), "%s",
              ot_log());
    assert_input_intact();
    cr_assert_eq(ot_count_temps(NULL, 0), 0);
}

Test(outputs, masks_export_and_apply_never_overwrite_their_inputs)
{
    char masks[512], p[512], q[512];
    const char *ex[] = {"masks", "export", M, "-o", p, NULL};
    const char *ap[] = {"masks", "apply", M, masks, "-o", q, "--force", NULL};
    ot_bin();
    names();
    keep_copies();
    ot_fmt(p, sizeof p, "%s/model.safetensors", M);
    cr_assert_eq(ot_run(ex), 2, "%s", ot_log());
    cr_assert(strstr(ot_log(), "lies inside the input checkpoint"), "%s", ot_log());
    ot_fmt(p, sizeof p, "%s/mlink", ot_dir);
    cr_assert_eq(symlink(M, p), 0);
    ot_fmt(p, sizeof p, "%s/mlink/config.json", ot_dir);
    cr_assert_eq(ot_run(ex), 2, "%s", ot_log());
    assert_input_intact();

    /* a real mask file for apply: the masks of a pruned copy */
    cr_assert_eq(prune(OUT, NULL, 0), 0, "%s", ot_log());
    ot_fmt(masks, sizeof masks, "%s/d/masks.h5", ot_dir);
    ot_fmt(q, sizeof q, "%s/d", ot_dir);
    cr_assert_eq(mkdir(q, 0755), 0);
    {
        const char *ex2[] = {"masks", "export", OUT, "-o", masks, NULL};
        cr_assert_eq(ot_run(ex2), 0, "%s", ot_log());
    }
    /* apply -o the input, and -o the directory holding the mask file (with
     * --force it would be replaced, the mask file with it) */
    ot_fmt(q, sizeof q, "%s", M);
    cr_assert_eq(ot_run(ap), 2, "%s", ot_log());
    cr_assert(strstr(ot_log(), "the input checkpoint"), "%s", ot_log());
    ot_fmt(q, sizeof q, "%s/d/", ot_dir);
    cr_assert_eq(ot_run(ap), 2, "%s", ot_log());
    cr_assert(strstr(ot_log(), "contains the mask file"), "%s", ot_log());
    cr_assert(ot_exists(masks));
    assert_input_intact();
}

/* --force where the masks would go inside the OUT being replaced: refused,
 * the old OUT as it was. */
Test(outputs, prune_masks_inside_the_replaced_out_is_refused)
{
    char p[512], old[512], now[512];
    ot_bin();
    names();
    cr_assert_eq(prune(OUT, NULL, 0), 0, "%s", ot_log());
    ot_fmt(now, sizeof now, "%s/model.safetensors", OUT);
    ot_fmt(old, sizeof old, "%s/first.safetensors", ot_dir);
    ot_copy(now, old);
    ot_fmt(p, sizeof p, "%s/masks.h5", OUT);
    cr_assert_eq(prune(OUT, p, 1), 2, "%s", ot_log());
    cr_assert(strstr(ot_log(), "lies inside the output directory"), "%s", ot_log());
    cr_assert(ot_same_file(now, old));
    cr_assert_eq(ot_count_temps(NULL, 0), 0);
}

/* The masks cannot be published (a directory stands at their path): prune
 * fails and neither output changes: the old OUT stays, no new one appears. */
Test(outputs, masks_and_checkpoint_publish_together)
{
    char d[512], before[512], now[512], why[512], tmpname[256];
    struct stat st0, st1;
    ot_bin();
    names();
    cr_assert_eq(prune(OUT, NULL, 0), 0, "%s", ot_log());
    ot_fmt(now, sizeof now, "%s/model.safetensors", OUT);
    cr_assert_eq(stat(now, &st0), 0);
    ot_fmt(before, sizeof before, "%s/first.safetensors", ot_dir);
    cr_assert_eq(link(now, before), 0);
    ot_fmt(d, sizeof d, "%s/masks.h5", ot_dir);
    cr_assert_eq(mkdir(d, 0755), 0);
    cr_assert_neq(prune(OUT, d, 1), 0, "a directory as the masks path was accepted");
    cr_assert(strstr(ot_log(), "is a directory"), "%s", ot_log());
    cr_assert_eq(stat(now, &st1), 0);
    cr_assert(st0.st_ino == st1.st_ino, "the old OUT was replaced although the masks failed");
    cr_assert(ot_ckpt_complete(OUT, why, sizeof why), "%s", why);
    cr_assert_eq(ot_count_temps(tmpname, sizeof tmpname), 0, "left %s", tmpname);

    /* and without an old OUT: no OUT at all */
    ot_fmt(now, sizeof now, "%s/out2", ot_dir);
    cr_assert_neq(prune(now, d, 0), 0);
    cr_assert(!ot_exists(now), "a checkpoint was published without its masks");
    cr_assert_eq(ot_count_temps(tmpname, sizeof tmpname), 0, "left %s", tmpname);
}

/* The writers' two phases: after publish(), abort() puts the old OUT back. */
Test(outputs, a_published_checkpoint_rolls_back)
{
    spruce_ckpt *ck = NULL;
    spruce_ckpt_writer *w = NULL;
    char now[512], before[512], why[512];
    struct stat st0, st1;
    ot_bin();
    names();
    cr_assert_eq(prune(OUT, NULL, 0), 0, "%s", ot_log());
    ot_fmt(now, sizeof now, "%s/model.safetensors", OUT);
    ot_fmt(before, sizeof before, "%s/first.safetensors", ot_dir);
    cr_assert_eq(link(now, before), 0);
    cr_assert_eq(stat(now, &st0), 0);
    cr_assert_eq(spruce_ckpt_open(M, &ck), 0);
    cr_assert_eq(spruce_ckpt_writer_begin(ck, OUT, 1, &w), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_prepare(w), 0, "%s", spruce_errdetail());
    cr_assert_eq(spruce_ckpt_writer_publish(w), 0, "%s", spruce_errdetail());
    cr_assert_eq(stat(now, &st1), 0);
    cr_assert(st0.st_ino != st1.st_ino, "publish did not put the new checkpoint in place");
    spruce_ckpt_writer_abort(w);
    cr_assert_eq(stat(now, &st1), 0);
    cr_assert(st0.st_ino == st1.st_ino, "abort after publish did not restore the old OUT");
    cr_assert(ot_same_file(now, before));
    cr_assert(ot_ckpt_complete(OUT, why, sizeof why), "%s", why);
    cr_assert_eq(ot_count_temps(NULL, 0), 0);
    spruce_ckpt_close(ck);
}

/* A file size limit makes HDF5's writes fail as on a full disk (EFBIG instead
 * of ENOSPC), deterministically, for root too.  The limit is set in a child
 * of the test (with SIGXFSZ ignored, so the write fails instead of killing it)
 * and passes to spruce through exec. */
static int export_limited(const char *model, const char *out, rlim_t bytes)
{
    const char *args[] = {"masks", "export", model, "-o", out, NULL};
    pid_t pid;
    int st;
    fflush(NULL);
    pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        struct rlimit rl = {bytes, bytes};
        signal(SIGXFSZ, SIG_IGN);
        if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
            _exit(126);
        st = ot_wait(ot_start(args));
        _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    }
    st = ot_wait(pid);
    cr_assert(WIFEXITED(st));
    return WEXITSTATUS(st);
}

Test(outputs, a_failing_mask_write_is_an_error_not_a_crash)
{
    char masks[512], before[512], why[512], tmpname[256];
    const char *log;
    int st;
    ot_bin();
    names();
    cr_assert_eq(prune(OUT, NULL, 0), 0, "%s", ot_log());
    ot_fmt(masks, sizeof masks, "%s/masks.h5", ot_dir);
    {
        const char *ex[] = {"masks", "export", OUT, "-o", masks, NULL};
        cr_assert_eq(ot_run(ex), 0, "%s", ot_log());
    }
    ot_fmt(before, sizeof before, "%s/masks.first", ot_dir);
    ot_copy(masks, before);
    /* 4 KiB: the file's metadata fit, the masks (14 of 64 x 128) do not */
    st = export_limited(OUT, masks, 4096);
    log = ot_log();
    cr_assert_eq(st, 1, "masks export under a 4 KiB file size limit: status %d (%s)", st, log);
    cr_assert(strstr(log, masks) && strstr(log, "File too large"),
              "the message names neither the file nor the reason: %s", log);
    cr_assert(!strstr(log, "time =") && !strstr(log, "file descriptor"),
              "the message carries HDF5's raw text: %s", log);
    cr_assert(ot_same_file(masks, before), "the old mask file was changed");
    cr_assert(ot_masks_complete(masks, why, sizeof why), "%s", why);
    cr_assert_eq(ot_count_temps(tmpname, sizeof tmpname), 0, "left %s", tmpname);
}

/* The library's own path: a commit that cannot be written returns an error
 * and the process exits normally (HDF5's exit-time cleanup used to crash on
 * the half-closed file). */
Test(outputs, maskfile_commit_failure_exits_normally)
{
    char path[512];
    pid_t pid;
    int st;
    ot_fmt(path, sizeof path, "%s/lib.h5", ot_dir);
    fflush(NULL);
    pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        struct rlimit rl = {4096, 4096};
        spruce_maskfile *f = NULL;
        uint8_t *keep = malloc(256 * 1024);
        size_t i;
        int k, rc;
        uint32_t x = 12345;
        signal(SIGXFSZ, SIG_IGN);
        if (!keep || setrlimit(RLIMIT_FSIZE, &rl) < 0)
            _exit(10);
        for (i = 0; i < 256 * 1024; i++) {
            x = x * 1664525u + 1013904223u;
            keep[i] = (uint8_t)(x >> 31);
        }
        if (spruce_maskfile_create(path, &f) < 0)
            _exit(11);
        for (k = 0; k < 4; k++) {
            char name[16];
            ot_fmt(name, sizeof name, "m%d", k);
            if (spruce_maskfile_write(f, name, 256, 1024, keep, NULL) < 0) {
                spruce_maskfile_abort(f);
                exit(strstr(spruce_errdetail(), "File too large") ? 3 : 12);
            }
        }
        rc = spruce_maskfile_commit(f);
        free(keep);
        exit(rc == SPRUCE_EIO && strstr(spruce_errdetail(), path) &&
                     strstr(spruce_errdetail(), "File too large")
                 ? 3
                 : 13); /* exit(): HDF5's cleanup, if installed, runs now */
    }
    st = ot_wait(pid);
    cr_assert(WIFEXITED(st), "the writer's process was killed by signal %d",
              WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    cr_assert_eq(WEXITSTATUS(st), 3, "status %d", WEXITSTATUS(st));
    cr_assert(!ot_exists(path));
    cr_assert_eq(ot_count_temps(NULL, 0), 0);
}

/* A pid that no longer runs: a child that has exited and been reaped. */
static long dead_pid(void)
{
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0)
        _exit(0);
    ot_wait(pid);
    return (long)pid;
}

Test(outputs, a_killed_runs_temporaries_are_removed_by_the_next)
{
    char t1[512], t2[512], f[512], masks[512], old[512], why[512], name[256];
    long pid = dead_pid();
    FILE *fp;
    ot_bin();
    names();
    ot_fmt(masks, sizeof masks, "%s/masks.h5", ot_dir);
    ot_fmt(t1, sizeof t1, "%s.tmp-%ld", OUT, pid);
    ot_fmt(t2, sizeof t2, "%s.tmp-%ld", masks, pid);
    cr_assert_eq(mkdir(t1, 0755), 0);
    ot_fmt(f, sizeof f, "%s/model.safetensors", t1);
    fp = fopen(f, "w");
    cr_assert_not_null(fp);
    fputs("partial", fp);
    fclose(fp);
    fp = fopen(t2, "w");
    cr_assert_not_null(fp);
    fclose(fp);
    cr_assert_eq(prune(OUT, masks, 0), 0, "%s", ot_log());
    cr_assert(strstr(ot_log(), t1) && strstr(ot_log(), t2) && strstr(ot_log(), "removed"),
              "the removal was not reported: %s", ot_log());
    cr_assert_eq(ot_count_temps(name, sizeof name), 0, "left %s", name);
    cr_assert(ot_ckpt_complete(OUT, why, sizeof why), "%s", why);
    cr_assert(ot_masks_complete(masks, why, sizeof why), "%s", why);

    /* killed between moving the old OUT aside and renaming the new one: the
     * old one is put back, then replaced as asked */
    ot_fmt(old, sizeof old, "%s.old-%ld", OUT, pid);
    cr_assert_eq(rename(OUT, old), 0);
    cr_assert_eq(prune(OUT, masks, 1), 0, "%s", ot_log());
    cr_assert(strstr(ot_log(), "restored as"), "%s", ot_log());
    cr_assert_eq(ot_count_temps(name, sizeof name), 0, "left %s", name);
    cr_assert(ot_ckpt_complete(OUT, why, sizeof why), "%s", why);

    /* a live process's temporaries are left alone */
    ot_fmt(t1, sizeof t1, "%s.tmp-%ld", OUT, (long)getpid());
    cr_assert_eq(mkdir(t1, 0755), 0);
    cr_assert_eq(prune(OUT, masks, 1), 0, "%s", ot_log());
    cr_assert(ot_exists(t1), "a live process's temporary was removed");
    rmdir(t1);
}

/* bench prune: --save-pruned and --save-layer never overwrite --weights or --inputs. */
Test(outputs, bench_prune_never_overwrites_its_layer)
{
    char dir[512], w[512], x[512], wcopy[512];
    const char *save[] = {"bench", "prune", "--rows", "32", "--cols", "64", "--tokens", "64",
                          "--method", "magnitude", "--sparsity", "0.5", "--save-layer", dir,
                          NULL};
    const char *over[] = {"bench", "prune", "--weights", w, "--inputs", x, "--method",
                          "magnitude", "--sparsity", "0.5", "--save-pruned", w, NULL};
    const char *relayer[] = {"bench", "prune", "--weights", w, "--inputs", x, "--method",
                             "magnitude", "--sparsity", "0.5", "--save-layer", dir, NULL};
    ot_bin();
    ot_fmt(dir, sizeof dir, "%s/layer", ot_dir);
    ot_fmt(w, sizeof w, "%s/layer/weights.npy", ot_dir);
    ot_fmt(x, sizeof x, "%s/layer/../layer/inputs.npy", ot_dir);
    ot_fmt(wcopy, sizeof wcopy, "%s/weights.first", ot_dir);
    cr_assert_eq(mkdir(dir, 0755), 0);
    cr_assert_eq(ot_run(save), 0, "%s", ot_log());
    ot_copy(w, wcopy);
    cr_assert_eq(ot_run(over), 2, "%s", ot_log());
    cr_assert(strstr(ot_log(), "would overwrite the --weights file"), "%s", ot_log());
    cr_assert_eq(ot_run(relayer), 2, "%s", ot_log());
    cr_assert(ot_same_file(w, wcopy));
}
