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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
