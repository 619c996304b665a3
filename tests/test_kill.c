/* test_kill.c: `spruce prune --masks` killed at random moments, a dozen times
 * with SIGKILL and a dozen with SIGINT.  Whatever the moment, no final path
 * holds a partial result: OUT and the masks file are each absent, the old
 * complete version or the new complete one; after SIGINT the process leaves no
 * temporary and ends by SIGINT (or had finished); what a SIGKILL left is
 * removed by a later run.  The moments come from a fixed seed (printed;
 * SPRUCE_KILL_SEED chooses another) spread over one uninterrupted run's
 * duration: they decide only where the signal lands, never what is asserted. */
#include <stdint.h>
#include <time.h>

#include "outputs_testutil.h"

TestSuite(kill, .init = ot_setup, .fini = ot_teardown, .timeout = 600);

static char M[512], OUT[512], CALIB[512], MASKS[512];

static const char *prune_args[] = {"prune", M, "-o", OUT, "--calib", CALIB, "--pattern", "2:4",
                                   "--seqlen", "32", "--nsamples", "16", "--threads", "1",
                                   "--masks", MASKS, "--force", NULL};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The next moment from the sequence s (a fixed linear congruential one), in
 * microseconds within [0, span seconds). */
static long next_moment(uint64_t *s, double span)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (long)((double)(*s >> 11) / 9007199254740992.0 * span * 1e6);
}

/* Each final path is absent or complete. */
static void assert_finals(const char *when)
{
    char why[512];
    if (ot_exists(OUT))
        cr_assert(ot_ckpt_complete(OUT, why, sizeof why), "%s: %s", when, why);
    if (ot_exists(MASKS))
        cr_assert(ot_masks_complete(MASKS, why, sizeof why), "%s: %s", when, why);
}

Test(kill, prune_killed_at_random_moments_never_leaves_a_partial_output)
{
    const char *env = getenv("SPRUCE_KILL_SEED");
    uint64_t seed = env && *env ? strtoull(env, NULL, 10) : 20261202u, s;
    double t0, span;
    char when[256], name[256];
    int i, st, caught = 0;

    ot_bin();
    ot_fmt(M, sizeof M, "%s/m", ot_dir);
    ot_fmt(OUT, sizeof OUT, "%s/out", ot_dir);
    ot_fmt(CALIB, sizeof CALIB, "%s/m/calib.u16", ot_dir);
    ot_fmt(MASKS, sizeof MASKS, "%s/masks.h5", ot_dir);
    fprintf(stderr, "test_kill: seed %llu (SPRUCE_KILL_SEED=%llu reproduces the moments)\n",
            (unsigned long long)seed, (unsigned long long)seed);

    /* one whole run: the old versions, and the span the moments cover */
    t0 = now();
    cr_assert_eq(ot_run(prune_args), 0, "%s", ot_log());
    span = (now() - t0) * 1.25;
    assert_finals("after the first run");
    s = seed;
    for (i = 0; i < 24; i++) {
        int sig = i % 2 ? SIGINT : SIGKILL;
        long us;
        pid_t pid;
        us = next_moment(&s, span);
        ot_fmt(when, sizeof when, "run %d (%s after %ld us, seed %llu)", i,
                 sig == SIGINT ? "SIGINT" : "SIGKILL", us, (unsigned long long)seed);
        pid = ot_start(prune_args);
        usleep((useconds_t)us); /* where the signal lands; nothing waits on it */
        kill(pid, sig);
        st = ot_wait(pid);
        if (sig == SIGINT) {
            cr_assert((WIFSIGNALED(st) && WTERMSIG(st) == SIGINT) ||
                          (WIFEXITED(st) && WEXITSTATUS(st) == 0),
                      "%s: status %#x: %s", when, st, ot_log());
            caught += strstr(ot_log(), "stopped by SIGINT") != NULL;
            /* its own: one killed earlier may have left some that this run
             * had no time to remove */
            cr_assert_eq(ot_count_temps_of((long)pid, name, sizeof name), 0, "%s: left %s (%s)",
                         when, name, ot_log());
        } else {
            cr_assert(WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) == 0),
                      "%s: status %#x: %s", when, st, ot_log());
        }
        assert_finals(when);
    }
    /* informative only: where the signals landed depends on the machine */
    fprintf(stderr, "test_kill: %d of 12 SIGINTs stopped spruce at a check point\n", caught);
    /* a last whole run cleans what the SIGKILLs left and publishes both */
    cr_assert_eq(ot_run(prune_args), 0, "%s", ot_log());
    cr_assert_eq(ot_count_temps(name, sizeof name), 0, "after the last run: left %s", name);
    cr_assert(ot_exists(OUT) && ot_exists(MASKS));
    assert_finals("after the last run");
}

/* `spruce synth` of a 58 M-parameter checkpoint interrupted by SIGINT at six
 * moments spread over one whole run: the write stops at its next piece (at
 * most 16 MiB), so whatever the moment the process ends by SIGINT (or had
 * finished), leaves no temporary, and OUT is absent or complete (the same
 * bytes as an uninterrupted run). */
Test(kill, synth_interrupted_inside_its_write_leaves_no_temporary)
{
    static char out[512], ref[512], a[600], b[600];
    const char *args[] = {"synth", out, "--hidden", "512", "--intermediate", "1376",
                          "--layers", "8", "--heads", "8", "--kv-heads", "4", "--vocab", "32000",
                          "--dtype", "bf16", "--force", NULL};
    uint64_t s = 20261203u;
    double t0, span;
    char when[256], name[256];
    int i, st, stopped = 0;
    ot_bin();
    ot_fmt(out, sizeof out, "%s/synth", ot_dir);
    t0 = now();
    cr_assert_eq(ot_run(args), 0, "%s", ot_log());
    span = now() - t0;
    /* synth is deterministic: a complete OUT is this run's bytes */
    ot_fmt(ref, sizeof ref, "%s/synth-ref", ot_dir);
    cr_assert_eq(rename(out, ref), 0);
    for (i = 0; i < 6; i++) {
        long us;
        pid_t pid;
        us = next_moment(&s, span);
        ot_fmt(when, sizeof when, "synth run %d (SIGINT after %ld us)", i, us);
        pid = ot_start(args);
        usleep((useconds_t)us); /* where the signal lands; nothing waits on it */
        kill(pid, SIGINT);
        st = ot_wait(pid);
        cr_assert((WIFSIGNALED(st) && WTERMSIG(st) == SIGINT) ||
                      (WIFEXITED(st) && WEXITSTATUS(st) == 0),
                  "%s: status %#x: %s", when, st, ot_log());
        stopped += WIFSIGNALED(st) && !ot_exists(out); /* stopped inside the write */
        cr_assert_eq(ot_count_temps_of((long)pid, name, sizeof name), 0, "%s: left %s (%s)",
                     when, name, ot_log());
        if (ot_exists(out)) {
            static const char *const files[] = {"config.json", "model.safetensors"};
            int f;
            for (f = 0; f < 2; f++) {
                ot_fmt(a, sizeof a, "%s/%s", out, files[f]);
                ot_fmt(b, sizeof b, "%s/%s", ref, files[f]);
                cr_assert(ot_exists(a) && ot_same_file(a, b), "%s: %s is not complete", when,
                          a);
            }
        }
    }
    /* informative only (where the signals land depends on the machine); that
     * the write itself stops is test_cancel's deterministic test */
    fprintf(stderr, "test_kill: %d of 6 SIGINTs stopped synth before it published\n", stopped);
}

/* `spruce bench --sweep --svg` stopped by SIGTERM at six moments spread over
 * one whole run: it stops at its next case (or inside the layer it is
 * timing), ends by SIGTERM (or had finished), leaves no FILE.tmp-PID, and the
 * chart is absent or complete. */
Test(kill, bench_sweep_stopped_leaves_no_temporary_chart)
{
    static char svg[512];
    const char *args[] = {"bench", "--sweep", "--svg", svg, "--shape", "256x512",
                          "--reps", "1", "--rotate-mb", "1", "--threads", "1", NULL};
    uint64_t s = 20261204u;
    double t0, span;
    char when[256], name[256];
    int i, st;
    ot_bin();
    ot_fmt(svg, sizeof svg, "%s/sweep.svg", ot_dir);
    t0 = now();
    cr_assert_eq(ot_run(args), 0, "%s", ot_log());
    span = now() - t0;
    cr_assert_eq(unlink(svg), 0);
    for (i = 0; i < 6; i++) {
        long us;
        pid_t pid;
        us = next_moment(&s, span);
        ot_fmt(when, sizeof when, "bench run %d (SIGTERM after %ld us)", i, us);
        pid = ot_start(args);
        usleep((useconds_t)us); /* where the signal lands; nothing waits on it */
        kill(pid, SIGTERM);
        st = ot_wait(pid);
        cr_assert((WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM) ||
                      (WIFEXITED(st) && WEXITSTATUS(st) == 0),
                  "%s: status %#x: %s", when, st, ot_log());
        cr_assert_eq(ot_count_temps_of((long)pid, name, sizeof name), 0, "%s: left %s (%s)",
                     when, name, ot_log());
        if (ot_exists(svg)) {
            size_t n;
            unsigned char *b = ot_read(svg, &n);
            b[n] = '\0'; /* ot_read leaves room for it */
            cr_assert(strstr((const char *)b, "</svg>"), "%s: a partial chart", when);
            free(b);
            cr_assert_eq(unlink(svg), 0);
        }
    }
}
