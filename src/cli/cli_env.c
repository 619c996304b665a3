/* cli_env.c: environment the spruce program needs before its libraries load.
 *
 * Two facts of this machine kind that only the environment can change, since
 * OpenBLAS and libgomp read it once when they are loaded:
 * - Debian 12's OpenBLAS (0.3.21, DYNAMIC_ARCH) does not know recent Xeons and
 *   falls back to its Prescott (SSE3) kernels, 3-5x slower than its AVX-512
 *   ones: OPENBLAS_CORETYPE fixes it.
 * - libgomp's idle threads spin after each parallel region and compete with
 *   OpenBLAS's threads for the cores during the sgemm that follows (the model
 *   forward alternates the two many times per block): OMP_WAIT_POLICY=passive
 *   makes them sleep instead.
 * When either is unset, the same command line is run again with them set. */
#if defined(__linux__)
#define _GNU_SOURCE /* sched_setaffinity, sched_getcpu, CPU_* */
#include <dirent.h>
#include <sched.h>
#include <sys/syscall.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <omp.h>

#include <cblas.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

#include "cli.h"
#include "cli_env.h"

void cli_tune_environment(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    const char *core = openblas_get_corename(), *want = NULL;
    unsigned int lo = 0, hi = 0, ea = 0, eb = 0, ec = 0, ed = 0;
    char buf[8192], *args[256];
    size_t len, i;
    int n = 0, change = 0;
    FILE *f;
    if (getenv("SPRUCE_NO_REEXEC"))
        return;
    if (!getenv("OPENBLAS_CORETYPE") && core &&
        (!strcmp(core, "Prescott") || !strcmp(core, "Core2") || !strcmp(core, "Nehalem"))) {
        __builtin_cpu_init();
        /* OSXSAVE (CPUID.1:ECX bit 27): xgetbv is available */
        if (__builtin_cpu_supports("avx") && __get_cpuid(1, &ea, &eb, &ec, &ed) &&
            (ec & (1u << 27))) {
            __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0)); /* what the OS saves */
            if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                (lo & 0xe6) == 0xe6)
                want = "SkylakeX";
            else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                     (lo & 0x6) == 0x6)
                want = "Haswell";
        }
    }
    if (want && !setenv("OPENBLAS_CORETYPE", want, 1))
        change = 1;
    if (!getenv("OMP_WAIT_POLICY") && !setenv("OMP_WAIT_POLICY", "passive", 1))
        change = 1;
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
    if (cli_verbose)
        fprintf(stderr, "spruce: running again with OPENBLAS_CORETYPE=%s OMP_WAIT_POLICY=%s "
                        "(OpenBLAS had chosen its %s kernels)\n",
                getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "(unset)",
                getenv("OMP_WAIT_POLICY"), core ? core : "?");
    fflush(NULL);
    execv("/proc/self/exe", args);
    /* exec failed: carry on as we are */
#endif
}

/* Thread placement.
 *
 * A product of a few milliseconds on two threads is only as fast as the later
 * of the two: when libgomp wakes its sleeping worker (OMP_WAIT_POLICY=passive)
 * Linux may place it on the CPU of the thread that woke it, where it waits
 * for a time slice or for the load balancer (milliseconds) while the other CPU
 * idles.  Measured on the 2-core machine kind: 11008x4096 bitmask products at
 * batch 1 took 3.5 ms or 6.8 ms, varying from call to call; with every thread
 * bound to one CPU, 3.5 ms on every call.  Binding at startup, after OpenBLAS
 * has created its workers (it does so when it is loaded), keeps them from
 * inheriting the main thread's binding. */
#if defined(__linux__)
static int pin(pid_t tid, int cpu)
{
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    return sched_setaffinity(tid, sizeof s, &s);
}
#endif

void cli_bind_threads(void)
{
#if defined(__linux__)
    cpu_set_t allowed;
    int cpus[CPU_SETSIZE], ncpu = 0, nteam, me, c, k, t;
    pid_t team[CPU_SETSIZE], self;
    DIR *d;
    struct dirent *e;
    if (getenv("SPRUCE_NO_BIND") || getenv("OMP_PROC_BIND") || getenv("OMP_PLACES") ||
        getenv("GOMP_CPU_AFFINITY"))
        return;
    if (sched_getaffinity(0, sizeof allowed, &allowed))
        return;
    nteam = omp_get_max_threads();
    me = sched_getcpu();
    /* the CPU the main thread is on first, then the others in order */
    if (me >= 0 && me < CPU_SETSIZE && CPU_ISSET(me, &allowed))
        cpus[ncpu++] = me;
    for (c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &allowed) && c != me)
            cpus[ncpu++] = c;
    if (ncpu < 2 || nteam < 2 || nteam > ncpu)
        return; /* one CPU, one thread, or oversubscribed: leave it to the OS */
    self = (pid_t)syscall(SYS_gettid);
    memset(team, 0, sizeof team);
#pragma omp parallel num_threads(nteam)
    {
        const int i = omp_get_thread_num();
        team[i] = (pid_t)syscall(SYS_gettid);
        pin(0, cpus[i]);
    }
    /* Every other thread of the process (OpenBLAS's workers) goes to the CPUs
     * other than the main thread's: OpenBLAS's main thread does its share of
     * the work, like OpenMP's. */
    if (!(d = opendir("/proc/self/task")))
        return;
    k = 0;
    while ((e = readdir(d))) {
        const pid_t tid = (pid_t)atoi(e->d_name);
        int ours = tid <= 0 || tid == self;
        for (t = 0; t < nteam && !ours; t++)
            ours = team[t] == tid;
        if (ours)
            continue;
        pin(tid, cpus[1 + k++ % (ncpu - 1)]);
    }
    closedir(d);
    if (cli_verbose)
        fprintf(stderr, "spruce: %d OpenMP threads bound one per CPU (main thread on CPU %d), "
                        "%d other thread(s) on the other CPUs (SPRUCE_NO_BIND=1 turns this off)\n",
                nteam, cpus[0], k);
#endif
}
